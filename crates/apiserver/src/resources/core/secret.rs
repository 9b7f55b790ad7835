//! Secrets: type `Opaque` by default, keys and size as ConfigMaps' (`stringData` counts).

use k8s_openapi::api::core::v1::Secret;
use serde_json::{json, Value};

use super::configmap::{decoded_len, validate_data_keys, MAX_DATA_BYTES};
use crate::resources::Resource;
use crate::status::FieldError;
use crate::table::{age, col, count, name, Column, AGE, NAME};

pub static SECRET: Resource = Resource {
    selectable: &["type"],
    validate: validate_secret,
    defaults: default_secret,
    columns: secret_columns,
    cells: secret_cells,
    ..Resource::of::<Secret>()
};

fn default_secret(obj: &mut Value) {
    if obj.get("type").and_then(Value::as_str).unwrap_or("").is_empty() {
        obj["type"] = json!("Opaque");
    }
}

/// Keys, and at most 1 MiB of data (`stringData` counts, as upstream merges it into `data`
/// before validating).
fn validate_secret(secret: &Value) -> Vec<FieldError> {
    let mut errs = validate_data_keys(secret);
    let data = secret["data"].as_object();
    let strings = secret["stringData"].as_object();
    let mut total: usize = strings.into_iter().flatten().map(|(_, v)| v.as_str().map_or(0, str::len)).sum();
    for (k, v) in data.into_iter().flatten() {
        if strings.is_none_or(|s| !s.contains_key(k)) {
            total += decoded_len(v);
        }
    }
    if total > MAX_DATA_BYTES {
        errs.push(FieldError::too_long("data", MAX_DATA_BYTES));
    }
    errs
}

pub fn secret_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Type", "string", "", "The type of the secret", 0),
        col("Data", "string", "", "The number of entries in the secret", 0),
        AGE,
    ]
}

pub fn secret_cells(o: &Value) -> Vec<Value> {
    vec![name(o), json!(o["type"].as_str().unwrap_or("")), json!(count(&o["data"])), age(o)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_counts_decoded() {
        // Secret data counts decoded: 4 base64 characters are 3 bytes.
        let b64 = "QUJD".repeat(MAX_DATA_BYTES / 3);
        assert!(validate_secret(&json!({"data": {"a": b64}})).is_empty());
        let errs = validate_secret(&json!({"data": {"a": b64}, "stringData": {"b": "xy"}}));
        assert_eq!(errs[0].detail, "Too long: may not be more than 1048576 bytes");
    }
}
