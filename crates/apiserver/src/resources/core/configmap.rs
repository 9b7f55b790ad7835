//! ConfigMaps: keys as upstream's `IsConfigMapKey`, at most 1 MiB of data.

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{json, Value};

use crate::resources::Resource;
use crate::status::FieldError;
use crate::table::{age, col, count, name, Column, AGE, NAME};

pub static CONFIGMAP: Resource = Resource {
    short_names: &["cm"],
    validate: validate_configmap,
    columns: configmap_columns,
    cells: configmap_cells,
    ..Resource::of::<ConfigMap>()
};

/// Upstream's `MaxSecretSize`: the most data a ConfigMap or a Secret may hold.
pub(super) const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Keys, and at most 1 MiB of `data` and `binaryData` together (upstream reports that on the
/// whole object, whose field path prints as `[]`).
fn validate_configmap(cm: &Value) -> Vec<FieldError> {
    let mut errs = validate_data_keys(cm);
    let text = cm["data"].as_object().into_iter().flatten().map(|(_, v)| v.as_str().map_or(0, str::len));
    let binary = cm["binaryData"].as_object().into_iter().flatten().map(|(_, v)| decoded_len(v));
    if text.chain(binary).sum::<usize>() > MAX_DATA_BYTES {
        errs.push(FieldError::too_long("[]", MAX_DATA_BYTES));
    }
    errs
}

/// The length of the bytes a base64 JSON string stands for.
pub(super) fn decoded_len(v: &Value) -> usize {
    let s = v.as_str().unwrap_or("");
    let padding = s.bytes().rev().take_while(|&b| b == b'=').count();
    (s.len() / 4 * 3).saturating_sub(padding)
}

/// ConfigMap and Secret keys: upstream's `IsConfigMapKey`.
pub(super) fn validate_data_keys(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for field in ["data", "binaryData", "stringData"] {
        if let Some(m) = obj.get(field).and_then(Value::as_object) {
            for k in m.keys() {
                let ok = !k.is_empty()
                    && k.len() <= 253
                    && k != "."
                    && k != ".."
                    && !k.starts_with("..")
                    && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
                if !ok {
                    errs.push(FieldError::invalid(
                        format!("{field}[{k}]"),
                        k,
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                    ));
                }
            }
        }
    }
    errs
}

pub fn configmap_columns() -> Vec<Column> {
    vec![NAME, col("Data", "string", "", "Data contains the configuration data.", 0), AGE]
}

pub fn configmap_cells(o: &Value) -> Vec<Value> {
    let n = count(&o["data"]) + count(&o["binaryData"]);
    vec![name(o), json!(n), age(o)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_at_most_one_mebibyte() {
        let mib = "a".repeat(MAX_DATA_BYTES);
        assert!(validate_configmap(&json!({"data": {"a": mib}})).is_empty());
        let errs = validate_configmap(&json!({"data": {"a": mib}, "binaryData": {"b": "AA=="}}));
        assert_eq!((errs[0].field.as_str(), errs[0].kind), ("[]", "FieldValueTooLong"));
    }
}
