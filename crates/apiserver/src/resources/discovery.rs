//! `discovery.k8s.io/v1`: endpoint slices, the scalable successor of core endpoints.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};

use super::Resource;
use crate::status::FieldError;
use crate::table::{age, col, name, Column, AGE, NAME};

pub static ENDPOINTSLICE: Resource = Resource {
    validate: validate_endpointslice,
    validate_update: address_type_unchanged,
    columns: endpointslice_columns,
    cells: endpointslice_cells,
    ..Resource::of::<EndpointSlice>()
};

pub static V1: &[&Resource] = &[&ENDPOINTSLICE];

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];

/// Upstream's `ValidateEndpointSlice`, for the address type and the endpoints' addresses.
fn validate_endpointslice(s: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match s["addressType"].as_str().unwrap_or("") {
        "" => errs.push(FieldError::required("addressType", "")),
        t if !ADDRESS_TYPES.contains(&t) => errs.push(FieldError::not_supported("addressType", t, ADDRESS_TYPES)),
        _ => {}
    }
    for (i, e) in s["endpoints"].as_array().into_iter().flatten().enumerate() {
        let n = e["addresses"].as_array().map(|a| a.len()).unwrap_or(0);
        if n == 0 {
            errs.push(FieldError::required(format!("endpoints[{i}].addresses"), "must contain at least 1 address"));
        } else if n > 1 {
            errs.push(FieldError {
                kind: "FieldValueTooMany",
                field: format!("endpoints[{i}].addresses"),
                detail: format!("Too many: {n}: must have at most 1 item"),
            });
        }
    }
    errs
}

fn address_type_unchanged(old: &Value, new: &Value) -> Vec<FieldError> {
    super::immutable(old, new, "addressType", "field is immutable")
}

fn endpointslice_columns() -> Vec<Column> {
    vec![
        NAME,
        col("AddressType", "string", "", "Type of address carried by this EndpointSlice", 0),
        col("Ports", "string", "", "Ports present in this EndpointSlice", 0),
        col("Endpoints", "string", "", "Addresses of endpoints in this EndpointSlice", 0),
        AGE,
    ]
}

/// Upstream's `formatDiscoveryPorts`/`formatDiscoveryEndpoints`: at most three, then `+ N more...`.
fn first_three(items: Vec<String>) -> String {
    if items.is_empty() {
        return "<unset>".to_string();
    }
    let more = items.len().saturating_sub(3);
    let mut s = items.into_iter().take(3).collect::<Vec<_>>().join(",");
    if more > 0 {
        s.push_str(&format!(" + {more} more..."));
    }
    s
}

fn endpointslice_cells(o: &Value) -> Vec<Value> {
    let ports = o["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["port"].as_i64().map(|n| n.to_string()).unwrap_or_else(|| "<unset>".into()))
        .collect();
    let addrs = o["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    vec![
        name(o),
        json!(o["addressType"].as_str().unwrap_or("")),
        json!(first_three(ports)),
        json!(first_three(addrs)),
        age(o),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_three_then_more() {
        let s = json!({"addressType": "IPv4", "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["10.1.0.1"]}, {"addresses": ["10.1.0.2"]}, {"addresses": ["10.1.0.3"]}, {"addresses": ["10.1.0.4"]}]});
        let c = endpointslice_cells(&s);
        assert_eq!((c[2].as_str().unwrap(), c[3].as_str().unwrap()), ("80", "10.1.0.1,10.1.0.2,10.1.0.3 + 1 more..."));
        assert!(validate_endpointslice(&s).is_empty());
        assert_eq!(validate_endpointslice(&json!({}))[0].field, "addressType");
    }
}
