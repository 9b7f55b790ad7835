//! `events.k8s.io/v1`: the newer view of the core/v1 Events. Upstream serves both versions
//! from one storage (`/registry/events/<namespace>/<name>`, kept in the core form), so an
//! event written through either is read through both; here the view converts on every read
//! and write ([`StoredAs`]), and validates in the core form as upstream validates its
//! internal type: every write passes the core's legacy rules, and a create through this
//! version also upstream's stricter ones (`ValidateEventCreate` for events.k8s.io/v1), an
//! update the fields it may not change (`ValidateEventUpdate`).
//!
//! The fields that differ (events.k8s.io ↔ core): `note` ↔ `message`, `regarding` ↔
//! `involvedObject`, `reportingController` ↔ `reportingComponent`, `deprecatedSource` ↔
//! `source`, `deprecatedFirstTimestamp` ↔ `firstTimestamp`, `deprecatedLastTimestamp` ↔
//! `lastTimestamp`, `deprecatedCount` ↔ `count`; the rest (`eventTime`, `series`, `action`,
//! `reason`, `type`, `related`, `reportingInstance`, metadata) are the same in both.

use k8s_openapi::api::events::v1::Event;
use serde_json::{json, Map, Value};

use super::core::event::{event_cells, event_columns, legacy_validation, EVENT as CORE_EVENT};
use super::{Resource, StoredAs};
use crate::status::FieldError;

pub static EVENT: Resource = Resource {
    short_names: &["ev"],
    // Upstream's field label conversions for events.k8s.io/v1 Events.
    selectable: &[
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "regarding.apiVersion",
        "regarding.resourceVersion",
        "regarding.fieldPath",
        "reason",
        "reportingController",
        "type",
    ],
    validate: |ev| legacy_validation(&to_core(ev.clone())),
    validate_create: |ev| create_rules(&to_core(ev.clone())),
    validate_update: |old, new| update_rules(&to_core(old.clone()), &to_core(new.clone())),
    stored_as: Some(&STORED),
    columns: event_columns,
    // The same table as core events, printed from the same (core) form, as upstream's one
    // printer for the internal type.
    cells: |ev| event_cells(&to_core(ev.clone())),
    ..Resource::of::<Event>()
};

static STORED: StoredAs = StoredAs { resource: &CORE_EVENT, to_stored: to_core, from_stored: from_core };

pub static V1: &[&Resource] = &[&EVENT];

/// (events.k8s.io field, core field) for the fields named differently.
const RENAMED: &[(&str, &str)] = &[
    ("note", "message"),
    ("regarding", "involvedObject"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Copies `ev` with its fields renamed by `rename` and the type meta of the other version.
fn convert(ev: Value, rename: impl Fn(&str) -> Option<&'static str>, api_version: &str) -> Value {
    let Value::Object(fields) = ev else { return ev };
    let mut out = Map::new();
    for (k, v) in fields {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            _ => {
                let name = rename(&k).map(str::to_string).unwrap_or(k);
                out.insert(name, v);
            }
        }
    }
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

/// An events.k8s.io/v1 Event in the core/v1 form (upstream's `Convert_v1_Event_To_core_Event`).
pub fn to_core(ev: Value) -> Value {
    let mut core = convert(ev, |k| RENAMED.iter().find(|(v1, _)| *v1 == k).map(|(_, c)| *c), "v1");
    // Required in core/v1 (a struct, always present there).
    if core["involvedObject"].is_null() {
        core["involvedObject"] = json!({});
    }
    core
}

/// A core/v1 Event as events.k8s.io/v1 shows it (upstream's `Convert_core_Event_To_v1_Event`).
pub fn from_core(ev: Value) -> Value {
    convert(ev, |k| RENAMED.iter().find(|(_, c)| *c == k).map(|(v1, _)| *v1), "events.k8s.io/v1")
}

fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_i64() != Some(0),
        _ => true,
    }
}

/// Upstream's `validateV1EventSeries`.
fn series_rules(ev: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let series = &ev["series"];
    if series.is_object() {
        if series["count"].as_i64().unwrap_or(0) < 2 {
            errs.push(FieldError::invalid("series.count", "", "should be at least 2"));
        }
        if !is_set(&series["lastObservedTime"]) {
            errs.push(FieldError::required("series.lastObservedTime", ""));
        }
    }
    errs
}

/// What `ValidateEventCreate` adds for events.k8s.io/v1 (on the core form, so the paths are
/// the core's): an event time, a known type, a valid series, and none of the deprecated
/// fields only the core version writes.
fn create_rules(ev: &Value) -> Vec<FieldError> {
    let mut errs = series_rules(ev);
    if !is_set(&ev["eventTime"]) {
        errs.push(FieldError::required("eventTime", ""));
    }
    let ty = ev["type"].as_str().unwrap_or("");
    if ty != "Normal" && ty != "Warning" {
        errs.push(FieldError::invalid("type", "", &format!("has invalid value: {ty}")));
    }
    for field in ["firstTimestamp", "lastTimestamp", "count"] {
        if is_set(&ev[field]) {
            errs.push(FieldError::invalid(field, "", "needs to be unset"));
        }
    }
    if is_set(&ev["source"]["component"]) || is_set(&ev["source"]["host"]) {
        errs.push(FieldError::invalid("source", "", "needs to be unset"));
    }
    errs
}

/// What `ValidateEventUpdate` adds for events.k8s.io/v1: a changed series is valid, and what
/// the event says happened does not change.
fn update_rules(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if old["series"] != new["series"] {
        errs.extend(series_rules(new));
    }
    for field in [
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "reason",
        "type",
        "eventTime",
        "action",
        "related",
        "reportingComponent",
        "reportingInstance",
    ] {
        // Upstream names the core field by its internal (events.k8s.io) name here.
        let path = if field == "reportingComponent" { "reportingController" } else { field };
        if old[field] != new[field] {
            errs.push(FieldError::invalid_value(path, &new[field], "field is immutable"));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_event() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "e", "namespace": "a"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"},
            "reportingController": "kaname.io/scheduler",
            "reportingInstance": "scheduler-1",
            "action": "Binding",
            "reason": "Scheduled",
            "regarding": {"kind": "Pod", "namespace": "a", "name": "p"},
            "related": {"kind": "Node", "name": "n"},
            "note": "Successfully assigned a/p to n",
            "type": "Normal",
            "deprecatedSource": {"component": "old", "host": "h"},
            "deprecatedFirstTimestamp": "2026-01-01T00:00:00Z",
            "deprecatedLastTimestamp": "2026-01-01T00:01:00Z",
            "deprecatedCount": 3,
        })
    }

    #[test]
    fn conversion_maps_every_field_both_ways() {
        let core = to_core(v1_event());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["message"], "Successfully assigned a/p to n");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["related"]["kind"], "Node");
        assert_eq!(core["reportingComponent"], "kaname.io/scheduler");
        assert_eq!(core["reportingInstance"], "scheduler-1");
        assert_eq!(core["source"], json!({"component": "old", "host": "h"}));
        assert_eq!((core["firstTimestamp"].as_str(), core["lastTimestamp"].as_str()), (Some("2026-01-01T00:00:00Z"), Some("2026-01-01T00:01:00Z")));
        assert_eq!(core["count"], 3);
        assert_eq!(core["series"]["count"], 2);
        for same in ["eventTime", "action", "reason", "type"] {
            assert_eq!(core[same], v1_event()[same], "{same}");
        }
        for gone in ["note", "regarding", "reportingController", "deprecatedSource", "deprecatedCount"] {
            assert!(core.get(gone).is_none(), "{gone}");
        }
        assert_eq!(from_core(core), v1_event());
    }

    #[test]
    fn a_core_event_reads_as_events_k8s_io() {
        let core = json!({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "a"},
            "involvedObject": {"kind": "Lease", "name": "l"}, "message": "m", "reason": "LeaderElection",
            "source": {"component": "kube-scheduler"}, "count": 1, "type": "Normal",
        });
        let v1 = from_core(core.clone());
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!((v1["note"].as_str(), v1["regarding"]["kind"].as_str()), (Some("m"), Some("Lease")));
        assert_eq!((v1["deprecatedSource"]["component"].as_str(), v1["deprecatedCount"].as_i64()), (Some("kube-scheduler"), Some(1)));
        assert_eq!(to_core(v1), core);
        // A view without `regarding` still stores the object reference core/v1 requires.
        assert_eq!(to_core(json!({"metadata": {}}))["involvedObject"], json!({}));
    }

    fn details(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| format!("{}: {}", e.field, e.detail)).collect()
    }

    #[test]
    fn creates_through_events_k8s_io_are_checked_as_upstream() {
        let mut ev = v1_event();
        for deprecated in ["deprecatedSource", "deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount"] {
            ev.as_object_mut().unwrap().remove(deprecated);
        }
        assert!((EVENT.validate)(&ev).is_empty() && (EVENT.validate_create)(&ev).is_empty());
        let got = details(&(EVENT.validate_create)(&v1_event()));
        assert_eq!(
            got,
            [
                r#"firstTimestamp: Invalid value: "": needs to be unset"#,
                r#"lastTimestamp: Invalid value: "": needs to be unset"#,
                r#"count: Invalid value: "": needs to be unset"#,
                r#"source: Invalid value: "": needs to be unset"#,
            ]
        );
        let bare = json!({"metadata": {"name": "e", "namespace": "default"}, "type": "Info", "series": {"count": 1}});
        assert_eq!(
            details(&(EVENT.validate_create)(&bare)),
            [
                r#"series.count: Invalid value: "": should be at least 2"#,
                "series.lastObservedTime: Required value",
                "eventTime: Required value",
                r#"type: Invalid value: "": has invalid value: Info"#,
            ]
        );
        // Without an event time the legacy rules only ask for a matching namespace (an event
        // about no object in particular belongs in `default`).
        assert!((EVENT.validate)(&bare).is_empty());
        let mut elsewhere = bare.clone();
        elsewhere["metadata"]["namespace"] = json!("a");
        assert_eq!(
            details(&(EVENT.validate)(&elsewhere)),
            [r#"involvedObject.namespace: Invalid value: "": does not match event.namespace"#]
        );
        let mut timed = bare.clone();
        timed["eventTime"] = json!("2026-01-01T00:00:00.000000Z");
        let legacy = details(&(EVENT.validate)(&timed));
        assert!(legacy.contains(&"reportingController: Required value".to_string()), "{legacy:?}");
        assert!(legacy.contains(&"action: Required value".to_string()), "{legacy:?}");
        let mut long = ev.clone();
        long["note"] = json!("n".repeat(1025));
        assert_eq!(details(&(EVENT.validate)(&long)), [r#"message: Invalid value: "": can have at most 1024 characters"#]);
    }

    #[test]
    fn updates_through_events_k8s_io_keep_what_happened() {
        let old = v1_event();
        let mut new = old.clone();
        new["note"] = json!("changed");
        new["reportingController"] = json!("other");
        new["series"] = json!({"count": 3, "lastObservedTime": "2026-01-01T00:02:00.000000Z"});
        assert_eq!(
            details(&(EVENT.validate_update)(&old, &new)),
            [r#"message: Invalid value: "changed": field is immutable"#, r#"reportingController: Invalid value: "other": field is immutable"#]
        );
    }
}
