//! The pods' half of upstream's `Priority` admission plugin (plugin/pkg/admission/priority;
//! its priority classes' half, one `globalDefault` class at most, is `scheduling.rs`'s):
//! on create, `spec.priority` and `spec.preemptionPolicy` come from the class
//! `spec.priorityClassName` names, or from the `globalDefault` class (whose name is then
//! filled in), or are 0 and `PreemptLowerPriority` when there is none; a class that does not
//! exist, or a priority or policy the client set that differs from the class's, is a 403. On
//! update, a body without them keeps the stored ones (so `kubectl replace` of a manifest
//! passes the pod's update rules, which forbid changing either).

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::admission::{Admission, Attributes, Operation};
use super::scheduling::{default_class, PRIORITYCLASS};
use crate::status::{ApiError, ApiResult};

/// Upstream's `DefaultPriorityWhenNoDefaultClassExists`.
const DEFAULT_PRIORITY: i64 = 0;
const PREEMPT_LOWER_PRIORITY: &str = "PreemptLowerPriority";

pub struct PodPriority;
pub static POD_PRIORITY: PodPriority = PodPriority;

/// What a pod gets from a class: (class name, priority, preemption policy).
type Resolved = (String, i64, Option<String>);

/// Upstream's `establishPriority`: the named class, or the default one, or none.
async fn establish(a: &Attributes<'_>, class_name: &str) -> ApiResult<Resolved> {
    let of = |pc: &Value| {
        (
            pc["metadata"]["name"].as_str().unwrap_or("").to_string(),
            pc["value"].as_i64().unwrap_or(0),
            pc["preemptionPolicy"].as_str().map(str::to_string),
        )
    };
    if class_name.is_empty() {
        return match default_class(a.reader).await {
            Ok(Some(pc)) => Ok(of(&pc)),
            Ok(None) => Ok((String::new(), DEFAULT_PRIORITY, Some(PREEMPT_LOWER_PRIORITY.to_string()))),
            Err(e) => Err(ApiError::internal(format!(
                "error occurred while retrieving default priority class: {}",
                e.message
            ))),
        };
    }
    match a.reader.get_object(&PRIORITYCLASS, None, class_name).await {
        Ok(Some(pc)) => Ok(of(&pc)),
        Ok(None) => Err(a.forbidden(&format!("no PriorityClass with name {class_name} was found"))),
        Err(e) => {
            Err(ApiError::internal(format!("failed to resolve PriorityClass with name {class_name}: {}", e.message)))
        }
    }
}

impl PodPriority {
    async fn admit_pod(&self, a: &Attributes<'_>, pod: &mut Value) -> ApiResult<()> {
        if let Operation::Update { old } = a.op {
            // Set at create; a body that leaves them out keeps them (the pod's update rules
            // refuse any other change of either).
            for field in ["priority", "preemptionPolicy"] {
                if pod["spec"][field].is_null() && !old["spec"][field].is_null() {
                    pod["spec"][field] = old["spec"][field].clone();
                }
            }
            return Ok(());
        }
        let spec = &mut pod["spec"];
        let asked = spec["priorityClassName"].as_str().unwrap_or("").to_string();
        let (class_name, priority, policy) = establish(a, &asked).await?;
        if class_name.is_empty() {
            spec.as_object_mut().map(|s| s.remove("priorityClassName"));
        } else {
            spec["priorityClassName"] = json!(class_name);
        }
        if let Some(given) = spec["priority"].as_i64().filter(|p| *p != priority) {
            return Err(a.forbidden(&format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
            )));
        }
        spec["priority"] = json!(priority);
        if let Some(policy) = policy {
            if let Some(given) = spec["preemptionPolicy"].as_str().filter(|p| *p != policy) {
                return Err(a.forbidden(&format!(
                    "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
                )));
            }
            spec["preemptionPolicy"] = json!(policy);
        }
        Ok(())
    }
}

impl Admission for PodPriority {
    fn admit<'a>(&'a self, a: &'a Attributes<'a>, obj: &'a mut Value) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(self.admit_pod(a, obj))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::admission::testing::{run, Objects as Classes};

    fn class(name: &str, value: i64, default: bool, policy: &str) -> Value {
        json!({"metadata": {"name": name}, "value": value, "globalDefault": default, "preemptionPolicy": policy})
    }

    fn create_pod(classes: &Classes, spec: Value) -> ApiResult<Value> {
        let a = Attributes {
            res: &crate::resources::core::pod::POD,
            op: Operation::Create,
            ns: Some("default"),
            name: "p",
            reader: classes,
        };
        let mut pod = json!({"metadata": {"name": "p"}, "spec": spec});
        run(POD_PRIORITY.admit_pod(&a, &mut pod)).map(|_| pod["spec"].clone())
    }

    #[test]
    fn a_pod_gets_its_class_the_default_class_or_zero() {
        let none = Classes(vec![]);
        let spec = create_pod(&none, json!({})).unwrap();
        assert_eq!(spec, json!({"priority": 0, "preemptionPolicy": "PreemptLowerPriority"}));

        let classes = Classes(vec![
            class("high", 1000, false, "Never"),
            class("low-default", 10, true, "PreemptLowerPriority"),
            class("lower-default", 5, true, "Never"),
        ]);
        let spec = create_pod(&classes, json!({"priorityClassName": "high"})).unwrap();
        assert_eq!((spec["priority"].clone(), spec["preemptionPolicy"].clone()), (json!(1000), json!("Never")));
        // Two defaults (a race between API servers): the lower value wins, and its name is set.
        let spec = create_pod(&classes, json!({})).unwrap();
        assert_eq!(spec["priorityClassName"], "lower-default");
        assert_eq!(spec["priority"], 5);
    }

    #[test]
    fn unknown_classes_and_contradicting_values_are_forbidden_as_upstream() {
        let classes = Classes(vec![class("high", 1000, false, "PreemptLowerPriority")]);
        let e = create_pod(&classes, json!({"priorityClassName": "foo"})).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (403, r#"pods "p" is forbidden: no PriorityClass with name foo was found"#)
        );
        let e = create_pod(&classes, json!({"priorityClassName": "high", "priority": 7})).unwrap_err();
        assert_eq!(
            e.message,
            r#"pods "p" is forbidden: the integer value of priority (7) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"#
        );
        assert!(create_pod(&classes, json!({"priorityClassName": "high", "priority": 1000})).is_ok());
        let e = create_pod(&classes, json!({"priorityClassName": "high", "preemptionPolicy": "Never"})).unwrap_err();
        assert_eq!(
            e.message,
            r#"pods "p" is forbidden: the string value of PreemptionPolicy (Never) must not be provided in pod spec; priority admission controller computed PreemptLowerPriority from the given PriorityClass name"#
        );
    }

    #[test]
    fn an_update_keeps_the_priority_set_at_create() {
        let old = json!({"spec": {"priority": 5, "preemptionPolicy": "Never"}});
        let none = Classes(vec![]);
        let a = Attributes {
            res: &crate::resources::core::pod::POD,
            op: Operation::Update { old: &old },
            ns: Some("default"),
            name: "p",
            reader: &none,
        };
        let mut pod = json!({"spec": {"containers": []}});
        run(POD_PRIORITY.admit_pod(&a, &mut pod)).unwrap();
        assert_eq!(
            (pod["spec"]["priority"].clone(), pod["spec"]["preemptionPolicy"].clone()),
            (json!(5), json!("Never"))
        );
    }
}
