//! `scheduling.k8s.io/v1`: priority classes, which the scheduler's queue and preemption read
//! and the Priority admission plugin (`priority.rs`) fills pods' `priority` from.

use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde_json::{json, Value};

use futures::future::BoxFuture;

use super::admission::{Admission, Attributes, ObjectReader, Operation};
use super::Resource;
use crate::status::{ApiError, ApiResult, FieldError};
use crate::table::{age, col, name, Column, AGE, NAME};

pub static PRIORITYCLASS: Resource = Resource {
    short_names: &["pc"],
    validate: validate_priority_class,
    validate_update: priority_class_update_rules,
    defaults: default_priority_class,
    admission: &[&ONE_DEFAULT_CLASS],
    normalize: priority_class_from_json,
    columns: priority_class_columns,
    cells: priority_class_cells,
    ..Resource::of::<PriorityClass>()
};

pub static V1: &[&Resource] = &[&PRIORITYCLASS];

/// Upstream's `HighestUserDefinablePriority`: above it, only the system classes.
const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;
const SYSTEM_PREFIX: &str = "system-";
const PREEMPTION_POLICIES: &[&str] = &["Never", "PreemptLowerPriority"];

/// Upstream's `SystemPriorityClasses()`: (name, value, description); neither is a global
/// default. The values are also what `ValidatePriorityClass` insists on for these names.
pub const SYSTEM_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The built-in classes as the API server creates them at start (upstream's post-start hook
/// `scheduling/bootstrap-system-priority-classes`).
pub fn system_priority_classes() -> Vec<Value> {
    SYSTEM_CLASSES
        .iter()
        .map(|(name, value, description)| {
            json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
                "description": description,
            })
        })
        .collect()
}

/// The priority classes' half of upstream's `Priority` admission plugin (validating).
pub struct OneDefaultClass;
pub static ONE_DEFAULT_CLASS: OneDefaultClass = OneDefaultClass;

/// Upstream's `getDefaultPriorityClass`: the `globalDefault` class; if a race left several,
/// the one with the lowest value.
pub(crate) async fn default_class(reader: &dyn ObjectReader) -> ApiResult<Option<Value>> {
    let classes = reader.list_objects(&PRIORITYCLASS, None).await?;
    let defaults = classes.into_iter().filter(|c| c["globalDefault"].as_bool() == Some(true));
    Ok(defaults.min_by_key(|c| c["value"].as_i64().unwrap_or(0)))
}

impl OneDefaultClass {
    /// Upstream's `validatePriorityClass`: a second default class cannot be created, nor can
    /// another class be made the default while one is.
    async fn check(&self, a: &Attributes<'_>, pc: &Value) -> ApiResult<()> {
        if pc["globalDefault"].as_bool() != Some(true) {
            return Ok(());
        }
        let current = default_class(a.reader)
            .await
            .map_err(|e| ApiError::internal(format!("failed to get default priority class: {}", e.message)))?;
        let Some(current) = current else { return Ok(()) };
        let current = current["metadata"]["name"].as_str().unwrap_or("");
        if matches!(a.op, Operation::Create) || current != a.name {
            return Err(a.forbidden(&format!(
                "PriorityClass {current} is already marked as default. Only one default can exist"
            )));
        }
        Ok(())
    }
}

impl Admission for OneDefaultClass {
    fn validate<'a>(&'a self, a: &'a Attributes<'a>, obj: &'a Value) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(self.check(a, obj))
    }
}


/// Go decodes a missing `value` (an int32 without omitempty) as 0, where k8s-openapi's field
/// is required: a class without a value is a class of priority 0, as upstream stores it.
fn priority_class_from_json(mut v: Value) -> Result<Value, String> {
    if let Some(o) = v.as_object_mut() {
        o.entry("value").or_insert(json!(0));
    }
    super::typed::<PriorityClass>(v)
}

/// Upstream's `SetDefaults_PriorityClass` (and the zero `value` Go's decoding gives).
fn default_priority_class(pc: &mut Value) {
    if pc["value"].is_null() {
        pc["value"] = json!(0);
    }
    if pc["preemptionPolicy"].is_null() {
        pc["preemptionPolicy"] = json!("PreemptLowerPriority");
    }
}

/// Upstream's `IsKnownSystemPriorityClass`: why a `system-` class is not one of the built-ins.
fn not_a_system_class(name: &str, value: i64, global_default: bool) -> Option<String> {
    match SYSTEM_CLASSES.iter().find(|(n, _, _)| *n == name) {
        None => Some(format!("{name} is not a known system priority class")),
        Some((_, v, _)) if *v != value => Some(format!("value of {name} PriorityClass must be {v}")),
        Some(_) if global_default => Some(format!("globalDefault of {name} PriorityClass must be false")),
        Some(_) => None,
    }
}

/// Upstream's `ValidatePriorityClass`.
fn validate_priority_class(pc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = pc["metadata"]["name"].as_str().unwrap_or("");
    let value = pc["value"].as_i64().unwrap_or(0);
    if name.starts_with(SYSTEM_PREFIX) {
        if let Some(why) = not_a_system_class(name, value, pc["globalDefault"].as_bool().unwrap_or(false)) {
            errs.push(FieldError::forbidden(
                "metadata.name",
                &format!(
                    "priority class names with '{SYSTEM_PREFIX}' prefix are reserved for system use only. error: {why}"
                ),
            ));
        }
    } else if value > HIGHEST_USER_DEFINABLE_PRIORITY {
        errs.push(FieldError::forbidden(
            "value",
            &format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"),
        ));
    }
    if let Some(p) = pc["preemptionPolicy"].as_str() {
        if !PREEMPTION_POLICIES.contains(&p) {
            errs.push(FieldError::not_supported("preemptionPolicy", p, PREEMPTION_POLICIES));
        }
    }
    errs
}

/// Upstream's `ValidatePriorityClassUpdate`: value and preemption policy are fixed.
fn priority_class_update_rules(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if old["value"] != new["value"] {
        errs.push(FieldError::forbidden("value", "may not be changed in an update."));
    }
    errs.extend(super::immutable(old, new, "preemptionPolicy", "field is immutable"));
    errs
}

fn priority_class_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Value", "integer", "", "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec.", 0),
        col("Global-Default", "boolean", "", "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority.", 0),
        AGE,
        col("PreemptionPolicy", "string", "", "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset.", 0),
    ]
}

/// Upstream's `printPriorityClass`.
fn priority_class_cells(o: &Value) -> Vec<Value> {
    vec![
        name(o),
        json!(o["value"].as_i64().unwrap_or(0)),
        json!(o["globalDefault"].as_bool().unwrap_or(false)),
        age(o),
        json!(o["preemptionPolicy"].as_str().unwrap_or("")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::admission::testing::{run, Objects};

    #[test]
    fn a_class_without_value_has_priority_zero() {
        let v = (PRIORITYCLASS.normalize)(json!({"metadata": {"name": "low"}})).unwrap();
        assert_eq!(v["value"], 0);
        let mut stored = json!({"metadata": {"name": "low"}});
        (PRIORITYCLASS.defaults)(&mut stored);
        assert_eq!((stored["value"].clone(), stored["preemptionPolicy"].clone()), (json!(0), json!("PreemptLowerPriority")));
    }

    #[test]
    fn system_names_and_user_values_are_checked_as_upstream() {
        let pc = |name: &str, value: i64| json!({"metadata": {"name": name}, "value": value});
        assert!(validate_priority_class(&pc("high", 1_000_000_000)).is_empty());
        assert_eq!(
            validate_priority_class(&pc("high", 1_000_000_001))[0].detail,
            "Forbidden: maximum allowed value of a user defined priority is 1000000000"
        );
        assert!(validate_priority_class(&pc("system-node-critical", 2_000_001_000)).is_empty());
        assert_eq!(
            validate_priority_class(&pc("system-mine", 5))[0].detail,
            "Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"
        );
        let errs = priority_class_update_rules(&pc("a", 1), &pc("a", 2));
        assert_eq!((errs[0].field.as_str(), errs[0].detail.as_str()), ("value", "Forbidden: may not be changed in an update."));
    }

    fn class(name: &str, value: i64, default: bool) -> Value {
        json!({"metadata": {"name": name}, "value": value, "globalDefault": default, "preemptionPolicy": "Never"})
    }

    #[test]
    fn only_one_class_may_be_the_default() {
        let classes = Objects(vec![class("a", 1, true), class("c", 0, true)]);
        let check = |op, name: &'static str, default: bool| {
            let a = Attributes { res: &PRIORITYCLASS, op, ns: None, name, reader: &classes };
            run(ONE_DEFAULT_CLASS.check(&a, &class(name, 2, default)))
        };
        // Two defaults already (a race): the lower value is the one named.
        let e = check(Operation::Create, "b", true).unwrap_err();
        assert_eq!(
            e.message,
            r#"priorityclasses.scheduling.k8s.io "b" is forbidden: PriorityClass c is already marked as default. Only one default can exist"#
        );
        assert!(check(Operation::Create, "b", false).is_ok());
        let old = class("c", 0, true);
        assert!(check(Operation::Update { old: &old }, "c", true).is_ok());
        assert!(check(Operation::Update { old: &old }, "b", true).is_err());
    }
}
