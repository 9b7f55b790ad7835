//! `coordination.k8s.io/v1`: leases, what leader election and node heartbeats write.

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::{json, Value};

use super::Resource;
use crate::status::FieldError;
use crate::table::{age, col, name, Column, AGE, NAME};

pub static LEASE: Resource = Resource {
    validate: validate_lease,
    columns: lease_columns,
    cells: lease_cells,
    ..Resource::of::<Lease>()
};

pub static V1: &[&Resource] = &[&LEASE];

/// Upstream's `ValidateLeaseSpec`: durations and transitions are positive when set.
fn validate_lease(l: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (field, min, why) in [
        ("leaseDurationSeconds", 1, "must be greater than 0"),
        ("leaseTransitions", 0, "must be greater than or equal to 0"),
    ] {
        if let Some(n) = l["spec"][field].as_i64().filter(|n| *n < min) {
            errs.push(FieldError::invalid_value(format!("spec.{field}"), &json!(n), why));
        }
    }
    errs
}

fn lease_columns() -> Vec<Column> {
    vec![NAME, col("Holder", "string", "", "The holder of the lease", 0), AGE]
}

fn lease_cells(o: &Value) -> Vec<Value> {
    vec![name(o), json!(o["spec"]["holderIdentity"].as_str().unwrap_or("")), age(o)]
}
