//! What the server knows about each resource, and everything that differs by kind (upstream's
//! per-resource strategy and REST storage): its names (for URLs, discovery and errors), its
//! scope, its subresources, how to check a body against its typed schema (`k8s-openapi`), its
//! defaults, validation and update rules, how it is deleted (grace periods, what holds it
//! back, what a delete answers), what the registry allocates for it, and its `kubectl get`
//! table columns. The generic registry (`storage`), the routes, discovery and OpenAPI work
//! from these entries only; none of them names a kind.
//!
//! One module per API group (`core` is the legacy group under `/api/v1`, one file per kind);
//! [`GROUPS`] lists them all, in upstream's discovery order. Adding a kind: a file that
//! defines its `static` [`Resource`] (start from [`Resource::of`], which derives group,
//! version, kind, plural, scope, decoding and OpenAPI schema from the k8s-openapi type), and
//! one line in its group's `kinds!` list.

pub use self::core::service_ips;

pub mod admission;
pub(crate) mod priority;

use futures::future::BoxFuture;
use kaname_proto::etcdserverpb::RequestOp;
use schemars::{JsonSchema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::etcd::Etcd;
use crate::status::{ApiResult, FieldError};
use crate::table::Column;

/// One served resource; the generic registry (`storage`), the routes and discovery (`http`)
/// and the printers (`table`) all work from this entry rather than per-kind code.
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// URL and storage segment: `/registry/<plural>/...`, `/api/v1/.../<plural>`.
    pub plural: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Discovery categories (`kubectl get all` lists the `all` category).
    pub categories: &'static [&'static str],
    /// The subresources served below an object of this kind. With `Status`, the main
    /// resource cannot change the status and the subresource changes nothing else.
    pub subresources: &'static [Subresource],
    /// `metadata.generation` starts at 1 and is bumped by every change of the spec (and by
    /// the start of a graceful deletion), as upstream's strategies do for these kinds.
    pub generation: bool,
    /// Fields a list or watch can select on besides metadata.name/namespace (upstream's
    /// field label conversions for the kind).
    pub selectable: &'static [&'static str],
    /// Decodes a body through the typed struct and back, so wrong field types are a 400 and
    /// unknown fields are dropped, as upstream's decoder does.
    pub normalize: fn(Value) -> Result<Value, String>,
    /// Adds the kind's OpenAPI schema (and the types it refers to) to the generator and
    /// returns its definition's name: `/openapi/v3`, strategic merge and server-side apply
    /// all read it.
    pub schema: fn(&mut SchemaGenerator) -> String,
    /// Type-specific validation beyond the name (upstream's `ValidateX`), on every write.
    pub validate: fn(&Value) -> Vec<FieldError>,
    /// What only a create must satisfy besides `validate` (where upstream's strategy
    /// validates a create more strictly than an update: events.k8s.io Events).
    pub validate_create: fn(&Value) -> Vec<FieldError>,
    /// What an update may not change (upstream's `ValidateXUpdate`): `(old, new)`.
    pub validate_update: fn(&Value, &Value) -> Vec<FieldError>,
    /// Upstream's defaulting (`SetDefaults_<Kind>`): fills in what a client left out, on
    /// every decoded write (create, update, and the body a patch produces), so a PUT of a
    /// minimal manifest compares equal to the defaulted object stored at create.
    pub defaults: fn(&mut Value),
    /// Fills in what the server owns on create (upstream's `PrepareForCreate`): status and
    /// the like; runs after `defaults`.
    pub prepare_create: fn(&mut Value),
    /// What an update of `part` keeps from the stored object besides identity, status and
    /// generation (upstream's `PrepareForUpdate`): `(old, new, part)`.
    pub prepare_update: fn(&Value, &mut Value, Part),
    /// Upstream's `CheckGracefulDeleteStrategy`: how long a delete (with the requested grace
    /// period, if any) leaves the object marked before it goes; 0 removes it at once.
    pub grace_period: fn(&Value, Option<i64>) -> i64,
    /// What else changes when the object is marked for deletion (a namespace turns
    /// `Terminating`).
    pub mark_deleting: fn(&mut Value),
    /// Whether something besides `metadata.finalizers` holds the object back from removal
    /// (a namespace's `spec.finalizers`).
    pub held_back: fn(&Value) -> bool,
    /// A delete answers with the object removed rather than a `Status` (upstream's
    /// `ReturnDeletedObject`).
    pub returns_deleted_object: bool,
    /// Values the registry hands out on create and takes back on removal (a service's cluster
    /// IPs), in the same transaction as the object.
    pub allocator: Option<&'static dyn Allocator>,
    /// Set when this resource is another version's view of objects kept in that version's
    /// form and place (events.k8s.io/v1 Events are core/v1 Events at `<prefix>/events/`, as
    /// upstream keeps both): the registry converts on every read and write.
    pub stored_as: Option<&'static StoredAs>,
    /// The admission plugins a create or an update of the main resource passes through
    /// (mutating before validation, validating after it; see [`admission`]).
    pub admission: &'static [&'static dyn admission::Admission],
    pub name_rule: NameRule,
    pub columns: fn() -> Vec<Column>,
    pub cells: fn(&Value) -> Vec<Value>,
}

#[derive(Clone, Copy)]
pub enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
    /// Upstream's `path.ValidatePathSegmentName` (RBAC objects: anything but `.`, `..`, `/`, `%`).
    PathSegment,
}

/// A subresource: a path below an object (`.../pods/p/status`) with its own verbs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Subresource {
    /// `pods/binding`: the scheduler's way of setting a pod's node.
    Binding,
    /// `namespaces/finalize`: the only way to change a namespace's `spec.finalizers`.
    Finalize,
    /// `autoscaling/v1` Scale over `spec.replicas`.
    Scale,
    Status,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Binding => "binding",
            Subresource::Finalize => "finalize",
            Subresource::Scale => "scale",
            Subresource::Status => "status",
        }
    }

    /// What the subresource answers with, for discovery: (group, version, kind).
    pub fn response_kind(self, r: &Resource) -> (&'static str, &'static str, &'static str) {
        match self {
            Subresource::Binding => ("", "v1", "Binding"),
            Subresource::Finalize => ("", "v1", "Namespace"),
            Subresource::Scale => ("autoscaling", "v1", "Scale"),
            Subresource::Status => (r.group, r.version, r.kind),
        }
    }

    /// The verbs discovery lists for it.
    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Subresource::Binding => &["create"],
            Subresource::Finalize => &["update"],
            Subresource::Scale | Subresource::Status => &["get", "patch", "update"],
        }
    }

    pub fn parse(s: &str) -> Option<Subresource> {
        [Subresource::Binding, Subresource::Finalize, Subresource::Scale, Subresource::Status]
            .into_iter()
            .find(|x| x.name() == s)
    }
}

/// How a view's objects are kept: in `resource`'s form, at `resource`'s keys.
pub struct StoredAs {
    pub resource: &'static Resource,
    /// The view's object in the stored form.
    pub to_stored: fn(Value) -> Value,
    /// A stored object as the view shows it.
    pub from_stored: fn(Value) -> Value,
}

/// Which part of an object an update replaces.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Part {
    /// Everything the client owns (not the status of a resource with a status subresource).
    Main,
    /// Only the status (the `/status` subresource).
    Status,
    /// Only a namespace's `spec.finalizers` (`/finalize`).
    Finalize,
}

/// What an [`Allocator`] may read and is configured with.
pub struct AllocContext<'a> {
    pub etcd: &'a Etcd,
    /// The etcd key prefix (`--etcd-prefix`).
    pub prefix: &'a str,
    pub service_range: &'a service_ips::ServiceRange,
}

/// A value an object claims in its create transaction: `key` must be absent and is written
/// with `value`. When it is present after all, `conflict` is the error to answer with (a
/// value the client asked for); `None` means a picked value was taken meanwhile: try again.
pub struct Claim {
    pub key: String,
    pub value: Vec<u8>,
    pub conflict: Option<crate::status::ApiError>,
}

/// Values the registry hands out with an object (upstream's allocators in a kind's REST
/// storage: service cluster IPs, and next node ports). Each held value is a key of its own,
/// claimed and released in the object's own transactions, so API servers sharing a store can
/// never hand out one value twice.
pub trait Allocator: Sync {
    /// Settles what the object asks for before validation (e.g. a headless service's IP
    /// fields).
    fn prepare(&self, cx: &AllocContext<'_>, obj: &mut Value);
    /// Picks (or checks the requested) values for one create attempt, writes them into the
    /// object and returns the claims the create transaction must make.
    fn claim<'a>(
        &'a self,
        cx: &'a AllocContext<'a>,
        ns: Option<&'a str>,
        name: &'a str,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, ApiResult<Vec<Claim>>>;
    /// An update keeps what the stored object holds when the new one leaves it out.
    fn keep_on_update(&self, old: &Value, new: &mut Value);
    /// The operations that release what `obj` holds, in its removal's transaction.
    fn release(&self, prefix: &str, obj: &Value) -> Vec<RequestOp>;
}

impl Resource {
    /// The entry every kind starts from: names, scope, decoding and schema from its
    /// k8s-openapi type, no subresources and no kind-specific rules. Kinds override fields
    /// with `..Resource::of::<T>()`.
    pub const fn of<T>() -> Resource
    where
        T: k8s_openapi::Resource + DeserializeOwned + Serialize + JsonSchema,
        T::Scope: Scope,
    {
        Resource {
            group: T::GROUP,
            version: T::VERSION,
            kind: T::KIND,
            plural: T::URL_PATH_SEGMENT,
            namespaced: <T::Scope as Scope>::NAMESPACED,
            short_names: &[],
            categories: &[],
            subresources: &[],
            generation: false,
            selectable: &[],
            normalize: typed::<T>,
            schema: schema_of::<T>,
            validate: no_validation,
            validate_create: no_validation,
            validate_update: no_update_rules,
            defaults: no_defaults,
            prepare_create: nothing_to_prepare,
            prepare_update: keep_nothing,
            grace_period: no_grace,
            mark_deleting: nothing_to_mark,
            held_back: nothing_holds,
            returns_deleted_object: false,
            allocator: None,
            stored_as: None,
            admission: &[],
            name_rule: NameRule::Dns1123Subdomain,
            columns: crate::table::name_age_columns,
            cells: crate::table::name_age_cells,
        }
    }

    /// Upstream's discovery `singularName`: the kind in lower case.
    pub fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    pub fn serves(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The resource as errors name it: `configmaps`, `deployments.apps`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The kind as `Invalid` errors name it: `Pod`, `Deployment.apps`. A view's objects are
    /// validated in the stored form, as upstream validates its internal type, and named so
    /// (an invalid events.k8s.io Event is an invalid `Event`).
    pub fn qualified_kind(&self) -> String {
        if let Some(s) = self.stored_as {
            return s.resource.qualified_kind();
        }
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// The plural of the keys the objects are kept at (the stored resource's, for a view).
    pub fn stored_plural(&self) -> &'static str {
        self.stored_as.map_or(self.plural, |s| s.resource.plural)
    }

    /// A stored object as this resource shows it.
    pub fn from_stored(&self, obj: Value) -> Value {
        match self.stored_as {
            Some(s) => (s.from_stored)(obj),
            None => obj,
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// The row of one object: its cells and, as upstream's default `includeObject=Metadata`,
    /// its metadata as a `PartialObjectMetadata` (kubectl reads labels and namespace from it).
    pub fn table_row(&self, obj: &Value) -> Value {
        json!({
            "cells": (self.cells)(obj),
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            },
        })
    }

    /// The `meta.k8s.io/v1` Table of `objs` that kubectl's server-side printing asks for.
    pub fn table<V: std::borrow::Borrow<Value>>(&self, objs: &[V], list_meta: Value) -> Value {
        let cols: Vec<Value> = (self.columns)()
            .iter()
            .map(|c| {
                json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority})
            })
            .collect();
        json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": list_meta,
            "columnDefinitions": cols,
            "rows": objs.iter().map(|o| self.table_row(o.borrow())).collect::<Vec<_>>(),
        })
    }
}

/// The resources of one group-version, as served under `/api/v1` or `/apis/<group>/<version>`.
pub struct GroupVersion {
    pub group: &'static str,
    pub version: &'static str,
    pub resources: &'static [&'static Resource],
}

/// Declares a group's kinds: one `module => STATIC` line each, giving the module (a file
/// beside the group's) and its `Resource` static; expands to the modules and the group's
/// `V1` list in the order given (upstream's discovery order).
macro_rules! kinds {
    ($($module:ident => $resource:ident),* $(,)?) => {
        $(pub(crate) mod $module;)*
        pub static V1: &[&crate::resources::Resource] = &[$(&$module::$resource),*];
    };
}
pub(crate) use kinds;

/// Declares the served groups: one `module => ("group", "version")` line each, giving the
/// group's module and its group-version; expands to the modules and [`GROUPS`].
macro_rules! groups {
    ($($module:ident => ($group:literal, $version:literal)),* $(,)?) => {
        $(pub(crate) mod $module;)*
        /// Every served group-version: the legacy core group first, then the named groups in
        /// upstream's discovery order.
        pub static GROUPS: &[GroupVersion] =
            &[$(GroupVersion { group: $group, version: $version, resources: $module::V1 }),*];
    };
}

groups! {
    core => ("", "v1"),
    apps => ("apps", "v1"),
    events => ("events.k8s.io", "v1"),
    rbac => ("rbac.authorization.k8s.io", "v1"),
    scheduling => ("scheduling.k8s.io", "v1"),
    coordination => ("coordination.k8s.io", "v1"),
    discovery => ("discovery.k8s.io", "v1"),
}

/// The namespaces resource, which the registry's namespace checks and the namespace
/// controller need by name.
pub static NAMESPACES: &Resource = &core::namespace::NAMESPACE;

/// The leases resource, which fenced writes ([`crate::fence`]) are conditioned on.
pub static LEASES: &Resource = &coordination::LEASE;

/// A core (`/api/v1`) resource by its plural.
pub fn by_plural(plural: &str) -> Option<&'static Resource> {
    find("", "v1", plural)
}

/// A resource of any group by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    GROUPS
        .iter()
        .filter(|g| g.group == group && g.version == version)
        .flat_map(|g| g.resources.iter().copied())
        .find(|r| r.plural == plural)
}

/// Every served resource of every group.
pub fn all() -> impl Iterator<Item = &'static Resource> {
    GROUPS.iter().flat_map(|g| g.resources.iter().copied())
}

/// A k8s-openapi scope as a constant, so [`Resource::of`] can read it at compile time.
pub trait Scope {
    const NAMESPACED: bool;
}
impl Scope for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl Scope for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

fn typed<T: DeserializeOwned + Serialize>(v: Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
    serde_json::to_value(t).map_err(|e| e.to_string())
}

fn schema_of<T: JsonSchema>(gen: &mut SchemaGenerator) -> String {
    gen.subschema_for::<T>();
    T::schema_name().into_owned()
}

fn no_validation(_: &Value) -> Vec<FieldError> {
    Vec::new()
}
fn no_update_rules(_: &Value, _: &Value) -> Vec<FieldError> {
    Vec::new()
}
fn nothing_to_prepare(_: &mut Value) {}
fn no_defaults(_: &mut Value) {}
fn keep_nothing(_: &Value, _: &mut Value, _: Part) {}
fn no_grace(_: &Value, _: Option<i64>) -> i64 {
    0
}
fn nothing_to_mark(_: &mut Value) {}
fn nothing_holds(_: &Value) -> bool {
    false
}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && alnum(b[0]) && alnum(b[b.len() - 1]) && b.iter().all(|&c| alnum(c) || c == b'-')
}

/// Upstream's `IsDNS1123Label`/`IsDNS1123Subdomain`/`ValidatePathSegmentName`: the list of
/// reasons `value` fails.
pub fn check_name(rule: NameRule, value: &str) -> Vec<String> {
    let mut why = Vec::new();
    match rule {
        NameRule::Dns1123Label => {
            if value.len() > 63 {
                why.push("must be no more than 63 characters".to_string());
            }
            if !is_label(value) {
                why.push(DNS1123_LABEL_MSG.to_string());
            }
        }
        NameRule::Dns1123Subdomain => {
            if value.len() > 253 {
                why.push("must be no more than 253 characters".to_string());
            }
            if !value.split('.').all(is_label) {
                why.push(DNS1123_SUBDOMAIN_MSG.to_string());
            }
        }
        NameRule::PathSegment => {
            if value == "." || value == ".." {
                why.push(format!("may not be '{value}'"));
            }
            for bad in ["/", "%"] {
                if value.contains(bad) {
                    why.push(format!("may not contain '{bad}'"));
                }
            }
        }
    }
    why
}

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// Upstream's `IsQualifiedName` (label keys, an event's reporting controller): an optional
/// DNS subdomain prefix and `/`, then a name of at most 63 characters.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let regex_error = format!(
        "{QUALIFIED_NAME_MSG} (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{QUALIFIED_NAME_FMT}')"
    );
    let parts: Vec<&str> = value.split('/').collect();
    let mut why = Vec::new();
    let name = match parts[..] {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                why.push("prefix part must be non-empty".to_string());
            } else {
                why.extend(
                    check_name(NameRule::Dns1123Subdomain, prefix).into_iter().map(|m| format!("prefix part {m}")),
                );
            }
            name
        }
        _ => {
            return vec![format!(
            "a qualified name {regex_error} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        )]
        }
    };
    if name.is_empty() {
        why.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        why.push("name part must be no more than 63 characters".to_string());
    }
    let b = name.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    let matches = !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter().all(|&c| alnum(c) || c == b'-' || c == b'_' || c == b'.');
    if !matches {
        why.push(format!("name part {regex_error}"));
    }
    why
}

/// Upstream's `ValidateLabelSelector` plus the workload rule that the selector must be
/// non-empty and select the pod template's labels (`ValidateDeploymentSpec` and its kin).
fn validate_workload_selector(obj: &Value, empty_msg: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sel = &obj["spec"]["selector"];
    let empty = sel["matchLabels"].as_object().is_none_or(|m| m.is_empty())
        && sel["matchExpressions"].as_array().is_none_or(|a| a.is_empty());
    let labels = &obj["spec"]["template"]["metadata"]["labels"];
    let mismatch = || {
        FieldError::invalid_value(
            "spec.template.metadata.labels",
            labels,
            "`selector` does not match template `labels`",
        )
    };
    // The typed round trip turns a missing selector into `{}`: both count as not given, and
    // (as upstream's nil selector, which selects nothing) match no template either.
    if sel.as_object().is_none_or(|m| m.is_empty()) {
        errs.push(FieldError::required("spec.selector", ""));
        errs.push(mismatch());
        return errs;
    }
    if empty {
        errs.push(FieldError::invalid_value("spec.selector", sel, empty_msg));
        return errs;
    }
    match crate::selector::LabelSelector::from_api(sel) {
        Ok(s) if s.matches(labels) => {}
        Ok(_) => errs.push(mismatch()),
        Err(why) => errs.push(FieldError::invalid_value("spec.selector", sel, &why)),
    }
    errs
}

/// The error for a field at dotted `path` that an update changed though it may not, with
/// upstream's per-field `message` ("field is immutable", "cannot change roleRef").
fn immutable(old: &Value, new: &Value, path: &str, message: &str) -> Vec<FieldError> {
    let at = |v: &Value| path.split('.').fold(v.clone(), |v, k| v[k].clone());
    let (before, after) = (at(old), at(new));
    if before != after {
        return vec![FieldError::invalid_value(path, &after, message)];
    }
    Vec::new()
}

/// A workload's selector cannot change once created (apps/v1).
fn selector_unchanged(old: &Value, new: &Value) -> Vec<FieldError> {
    immutable(old, new, "spec.selector", "field is immutable")
}

/// `spec.replicas` must not be negative (upstream's `ValidateNonnegativeField`).
fn validate_replicas(obj: &Value) -> Vec<FieldError> {
    match obj["spec"]["replicas"].as_i64() {
        Some(n) if n < 0 => vec![FieldError::invalid_value(
            "spec.replicas",
            &obj["spec"]["replicas"],
            "must be greater than or equal to 0",
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(check_name(NameRule::Dns1123Subdomain, "a.b-c").is_empty());
        assert_eq!(check_name(NameRule::Dns1123Subdomain, "Bad_Name").len(), 1);
        assert_eq!(check_name(NameRule::Dns1123Label, "a.b").len(), 1);
        assert_eq!(check_name(NameRule::Dns1123Label, &"a".repeat(64)).len(), 1);
        assert!(check_name(NameRule::PathSegment, "system:admin").is_empty());
        assert_eq!(check_name(NameRule::PathSegment, "a/b"), ["may not contain '/'"]);
    }

    #[test]
    fn every_resource_is_found_by_its_group_and_plural() {
        for g in GROUPS {
            for r in g.resources {
                assert_eq!((r.group, r.version), (g.group, g.version), "{}", r.plural);
                assert!(std::ptr::eq(find(g.group, g.version, r.plural).unwrap(), *r));
            }
        }
        assert!(find("apps", "v1", "pods").is_none());
    }

    #[test]
    fn workload_selectors_must_match_the_template() {
        let d = |sel: Value, labels: Value| json!({"spec": {"selector": sel, "template": {"metadata": {"labels": labels}}}});
        assert!(
            validate_workload_selector(&d(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"})), "").is_empty()
        );
        let errs = validate_workload_selector(&d(json!({"matchLabels": {"app": "a"}}), json!({"app": "b"})), "");
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
        assert_eq!(errs[0].detail, r#"Invalid value: {"app":"b"}: `selector` does not match template `labels`"#);
        assert_eq!(validate_workload_selector(&json!({"spec": {}}), "")[0].detail, "Required value");
    }

    #[test]
    fn typed_decoding_rejects_wrong_types_and_drops_unknown_fields() {
        let v = (by_plural("configmaps").unwrap().normalize)(
            json!({"metadata": {"name": "a"}, "data": {"k": "v"}, "bogus": 1}),
        )
        .unwrap();
        assert!(v.get("bogus").is_none());
        assert!((by_plural("configmaps").unwrap().normalize)(json!({"data": {"k": 1}})).is_err());
    }
}
