//! Events: what `kubectl describe` looks up for an object (by involvedObject fields).

use k8s_openapi::api::core::v1::Event;
use serde_json::{json, Value};

use crate::resources::Resource;
use crate::table::{col, since, Column};

pub static EVENT: Resource = Resource {
    short_names: &["ev"],
    selectable: &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "type",
    ],
    columns: event_columns,
    cells: event_cells,
    ..Resource::of::<Event>()
};

pub fn event_columns() -> Vec<Column> {
    vec![
        col("Last Seen", "string", "", "Time when this Event was last observed.", 0),
        col("Type", "string", "", "Type of this event (Normal, Warning), new types could be added in the future.", 0),
        col("Reason", "string", "", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.", 0),
        col("Object", "string", "", "The object that this event is about.", 0),
        col("Message", "string", "", "A human-readable description of the status of this operation.", 0),
    ]
}

/// Upstream's `printEvent`: last seen from lastTimestamp, else eventTime, else creation;
/// OBJECT is `kind/name` in lower case.
pub fn event_cells(o: &Value) -> Vec<Value> {
    let seen = ["lastTimestamp", "eventTime"]
        .iter()
        .find_map(|f| o[*f].as_str())
        .or(o["metadata"]["creationTimestamp"].as_str());
    let obj = &o["involvedObject"];
    vec![
        json!(seen.map(since).unwrap_or_else(|| "<unknown>".into())),
        json!(o["type"].as_str().unwrap_or("")),
        json!(o["reason"].as_str().unwrap_or("")),
        json!(format!("{}/{}", obj["kind"].as_str().unwrap_or("").to_lowercase(), obj["name"].as_str().unwrap_or(""))),
        json!(o["message"].as_str().unwrap_or("").trim()),
    ]
}
