//! ServiceAccounts: stored as they are (tokens come with the API security work).

use k8s_openapi::api::core::v1::ServiceAccount;

use crate::resources::Resource;

pub static SERVICEACCOUNT: Resource = Resource { short_names: &["sa"], ..Resource::of::<ServiceAccount>() };
