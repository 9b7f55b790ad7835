//! Namespaces: created `Active` with the `kubernetes` finalizer in `spec.finalizers`, which
//! only `/finalize` may change; a delete marks them `Terminating` until the namespace
//! controller has emptied them and removed that finalizer.

use k8s_openapi::api::core::v1::Namespace;
use serde_json::{json, Value};

use crate::resources::{NameRule, Part, Resource, Subresource};
use crate::table::{age, col, name, Column, AGE, NAME};

pub static NAMESPACE: Resource = Resource {
    short_names: &["ns"],
    subresources: &[Subresource::Finalize, Subresource::Status],
    selectable: &["status.phase"],
    prepare_create: prepare_namespace,
    prepare_update: keep_finalizers,
    mark_deleting: terminating,
    held_back: spec_finalizers,
    name_rule: NameRule::Dns1123Label,
    columns: namespace_columns,
    cells: namespace_cells,
    ..Resource::of::<Namespace>()
};

fn prepare_namespace(obj: &mut Value) {
    // Upstream's namespace strategy: phase Active and the `kubernetes` finalizer.
    obj["spec"] = json!({"finalizers": ["kubernetes"]});
    obj["status"] = json!({"phase": "Active"});
}

/// A namespace's finalizers change only through `/finalize`.
fn keep_finalizers(old: &Value, new: &mut Value, part: Part) {
    if part != Part::Finalize {
        new["spec"] = old["spec"].clone();
    }
}

fn terminating(ns: &mut Value) {
    ns["status"]["phase"] = json!("Terminating");
}

/// The namespace controller's finalizers (`spec.finalizers`) hold a namespace as
/// `metadata.finalizers` hold any object.
fn spec_finalizers(ns: &Value) -> bool {
    ns["spec"]["finalizers"].as_array().is_some_and(|a| !a.is_empty())
}

pub fn namespace_columns() -> Vec<Column> {
    vec![NAME, col("Status", "string", "", "The status of the namespace", 0), AGE]
}

pub fn namespace_cells(o: &Value) -> Vec<Value> {
    vec![name(o), json!(o["status"]["phase"].as_str().unwrap_or("")), age(o)]
}
