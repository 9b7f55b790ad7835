//! Events: what `kubectl describe` looks up for an object (by involvedObject fields). The
//! same objects are served as events.k8s.io/v1 Events (`resources/events.rs`), kept in this
//! form; the validation here is upstream's for the internal type, which both versions share.

use k8s_openapi::api::core::v1::Event;
use serde_json::{json, Value};

use crate::resources::{check_name, NameRule, Resource};
use crate::status::FieldError;
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
    validate: legacy_validation,
    columns: event_columns,
    cells: event_cells,
    ..Resource::of::<Event>()
};

/// Upstream's `ReportingInstanceLengthLimit`, `ActionLengthLimit`, `ReasonLengthLimit` and
/// `NoteLengthLimit`.
const REPORTING_INSTANCE_MAX: usize = 128;
const ACTION_MAX: usize = 128;
const REASON_MAX: usize = 128;
const NOTE_MAX: usize = 1024;

fn text<'a>(ev: &'a Value, field: &str) -> &'a str {
    ev[field].as_str().unwrap_or("")
}

/// Upstream's `legacyValidateEvent`, which every write of an event passes whatever its
/// version: an event without `eventTime` (the old kind) must be in its object's namespace
/// (or `default`); one with it must also name its reporter and say what happened, within
/// upstream's lengths. `ev` is in the core/v1 form.
pub(crate) fn legacy_validation(ev: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = ev["metadata"]["namespace"].as_str().unwrap_or("");
    let involved_ns = ev["involvedObject"]["namespace"].as_str().unwrap_or("");
    let mismatch = || FieldError::invalid("involvedObject.namespace", involved_ns, "does not match event.namespace");
    let has_time = ev["eventTime"].as_str().is_some_and(|t| !t.is_empty());
    if !has_time {
        if (involved_ns.is_empty() && !ns.is_empty() && ns != "default") || (!involved_ns.is_empty() && ns != involved_ns) {
            errs.push(mismatch());
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(mismatch());
        }
        let controller = text(ev, "reportingComponent");
        if controller.is_empty() {
            errs.push(FieldError::required("reportingController", ""));
        }
        for why in crate::resources::is_qualified_name(controller) {
            errs.push(FieldError::invalid("reportingController", controller, &why));
        }
        for (field, limit) in [("reportingInstance", REPORTING_INSTANCE_MAX), ("action", ACTION_MAX), ("reason", REASON_MAX)] {
            let value = text(ev, field);
            if value.is_empty() {
                errs.push(FieldError::required(field, ""));
            }
            if value.len() > limit {
                errs.push(FieldError::invalid(field, "", &format!("can have at most {limit} characters")));
            }
        }
        if text(ev, "message").len() > NOTE_MAX {
            errs.push(FieldError::invalid("message", "", &format!("can have at most {NOTE_MAX} characters")));
        }
    }
    for why in check_name(NameRule::Dns1123Subdomain, ns) {
        errs.push(FieldError::invalid("namespace", ns, &why));
    }
    errs
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_style_events_must_be_in_their_objects_namespace() {
        let ev = |ns: &str, involved: &str| json!({"metadata": {"namespace": ns}, "involvedObject": {"namespace": involved}});
        assert!(legacy_validation(&ev("a", "a")).is_empty());
        assert!(legacy_validation(&ev("default", "")).is_empty());
        let errs = legacy_validation(&ev("a", "b"));
        assert_eq!(errs[0].field, "involvedObject.namespace");
        assert_eq!(errs[0].detail, r#"Invalid value: "b": does not match event.namespace"#);
        assert_eq!(legacy_validation(&ev("a", "")).len(), 1);
    }

    #[test]
    fn new_style_events_name_their_reporter_within_upstreams_limits() {
        let ev = json!({
            "metadata": {"namespace": "a"},
            "involvedObject": {"namespace": "a"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingComponent": "kubernetes.io/kubelet",
            "reportingInstance": "node-1",
            "action": "Pulling",
            "reason": "Pulled",
            "message": "x".repeat(1024),
        });
        assert!(legacy_validation(&ev).is_empty(), "{:?}", legacy_validation(&ev));
        let mut bad = ev.clone();
        bad["reportingComponent"] = json!("");
        bad["action"] = json!("a".repeat(129));
        bad["message"] = json!("x".repeat(1025));
        let got: Vec<String> = legacy_validation(&bad).iter().map(|e| format!("{}: {}", e.field, e.detail)).collect();
        assert_eq!(
            got,
            [
                "reportingController: Required value".to_string(),
                r#"reportingController: Invalid value: "": name part must be non-empty"#.to_string(),
                r#"reportingController: Invalid value: "": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"#.to_string(),
                r#"action: Invalid value: "": can have at most 128 characters"#.to_string(),
                r#"message: Invalid value: "": can have at most 1024 characters"#.to_string(),
            ]
        );
    }
}
