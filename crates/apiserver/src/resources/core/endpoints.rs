//! Endpoints: a service's ready addresses (the endpoints controller's output).

use k8s_openapi::api::core::v1::Endpoints;
use serde_json::{json, Value};

use crate::resources::Resource;
use crate::table::{age, col, name, Column, AGE, NAME};

pub static ENDPOINTS: Resource = Resource {
    short_names: &["ep"],
    columns: endpoints_columns,
    cells: endpoints_cells,
    ..Resource::of::<Endpoints>()
};

pub fn endpoints_columns() -> Vec<Column> {
    vec![NAME, col("Endpoints", "string", "", "Endpoints of the service", 0), AGE]
}

/// Upstream's `formatEndpoints`: `ip:port` pairs, at most three, then `+ N more...`.
pub fn endpoints_cells(o: &Value) -> Vec<Value> {
    let mut pairs = Vec::new();
    for subset in o["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<i64> =
            subset["ports"].as_array().into_iter().flatten().filter_map(|p| p["port"].as_i64()).collect();
        for a in subset["addresses"].as_array().into_iter().flatten() {
            let ip = a["ip"].as_str().unwrap_or("");
            if ports.is_empty() {
                pairs.push(ip.to_string());
            }
            for p in &ports {
                pairs.push(format!("{ip}:{p}"));
            }
        }
    }
    let text = if pairs.is_empty() {
        "<none>".to_string()
    } else if pairs.len() > 3 {
        format!("{} + {} more...", pairs[..3].join(","), pairs.len() - 3)
    } else {
        pairs.join(",")
    };
    vec![name(o), json!(text), age(o)]
}
