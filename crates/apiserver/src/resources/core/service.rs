//! Services: defaults and validation as upstream's, and a cluster IP from
//! `--service-cluster-ip-range` allocated with the service ([`super::service_ips`]).

use k8s_openapi::api::core::v1::Service;
use serde_json::{json, Value};

use super::service_ips::CLUSTER_IPS;
use crate::resources::{check_name, NameRule, Resource, Subresource};
use crate::status::FieldError;
use crate::table::{age, col, format_labels, name, Column, AGE, NAME};

pub static SERVICE: Resource = Resource {
    short_names: &["svc"],
    categories: &["all"],
    subresources: &[Subresource::Status],
    validate: validate_service,
    validate_update: service_update_rules,
    defaults: default_service,
    prepare_create: prepare_service,
    allocator: Some(&CLUSTER_IPS),
    name_rule: NameRule::Dns1123Label,
    columns: service_columns,
    cells: service_cells,
    ..Resource::of::<Service>()
};

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

/// Upstream's service defaults (`SetDefaults_Service`): type ClusterIP, session affinity
/// None, TCP ports whose targetPort is the port. The cluster IP itself is allocated by the
/// registry (`service_ips`), in the same transaction that stores the service.
fn default_service(svc: &mut Value) {
    let spec = &mut svc["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    if spec["type"].is_null() {
        spec["type"] = json!("ClusterIP");
    }
    if spec["sessionAffinity"].is_null() {
        spec["sessionAffinity"] = json!("None");
    }
    let external_name = spec["type"] == "ExternalName";
    if !external_name && spec["internalTrafficPolicy"].is_null() {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    for p in spec["ports"].as_array_mut().into_iter().flatten() {
        if p["protocol"].is_null() {
            p["protocol"] = json!("TCP");
        }
        if p["targetPort"].is_null() {
            p["targetPort"] = p["port"].clone();
        }
    }
}

fn prepare_service(svc: &mut Value) {
    svc["status"] = json!({"loadBalancer": {}});
}

/// The part of upstream's `ValidateService` for the fields served: type, ports, cluster IP.
fn validate_service(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &svc["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", ty, SERVICE_TYPES));
    }
    let cluster_ip = spec["clusterIP"].as_str().unwrap_or("");
    let headless = cluster_ip == "None";
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    if ty == "ExternalName" && spec["externalName"].as_str().unwrap_or("").is_empty() {
        errs.push(FieldError::required("spec.externalName", ""));
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let name = p["name"].as_str().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        } else if !name.is_empty() {
            for why in check_name(NameRule::Dns1123Label, name) {
                errs.push(FieldError::invalid(format!("{path}.name"), name, &why));
            }
            if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{path}.name"), name));
            }
        }
        let port = p["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid_value(
                format!("{path}.port"),
                &p["port"],
                "must be between 1 and 65535, inclusive",
            ));
        }
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        if !["SCTP", "TCP", "UDP"].contains(&proto) {
            errs.push(FieldError::not_supported(format!("{path}.protocol"), proto, &["SCTP", "TCP", "UDP"]));
        }
    }
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<std::net::IpAddr>().is_err() {
        errs.push(FieldError::invalid_value(
            "spec.clusterIPs[0]",
            &json!(cluster_ip),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    errs
}

/// A service's cluster IP may not change once set (upstream's `ValidateServiceUpdate`); the
/// registry copies it from the stored object when an update leaves it out.
fn service_update_rules(old: &Value, new: &Value) -> Vec<FieldError> {
    if old["spec"]["clusterIP"] != new["spec"]["clusterIP"] {
        return vec![FieldError::invalid_value(
            "spec.clusterIPs[0]",
            &new["spec"]["clusterIPs"],
            "may not change once set",
        )];
    }
    Vec::new()
}

pub fn service_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Type", "string", "", "The type of the service", 0),
        col("Cluster-IP", "string", "", "The cluster IP of the service", 0),
        col("External-IP", "string", "", "The external IP of the service", 0),
        col("Port(s)", "string", "", "The ports of the service", 0),
        AGE,
        col("Selector", "string", "", "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/", 1),
    ]
}

/// Upstream's `printService`: EXTERNAL-IP by type (`<pending>` for a load balancer without
/// ingress), PORT(S) as `port[:nodePort]/protocol`.
pub fn service_cells(o: &Value) -> Vec<Value> {
    let spec = &o["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_string)).collect()
    };
    let external_ips = strings(&spec["externalIPs"]);
    let external = match ty {
        "ExternalName" => spec["externalName"].as_str().unwrap_or("").to_string(),
        "LoadBalancer" => {
            let mut ips: Vec<String> = o["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()).map(str::to_string))
                .collect();
            ips.extend(external_ips);
            if ips.is_empty() {
                "<pending>".to_string()
            } else {
                ips.join(",")
            }
        }
        _ if !external_ips.is_empty() => external_ips.join(","),
        _ => "<none>".to_string(),
    };
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64().filter(|n| *n > 0) {
                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    let or_none = |s: String| json!(if s.is_empty() { "<none>".to_string() } else { s });
    vec![
        name(o),
        json!(ty),
        or_none(spec["clusterIP"].as_str().unwrap_or("").to_string()),
        json!(external),
        or_none(ports.join(",")),
        age(o),
        or_none(format_labels(&spec["selector"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_need_ports_and_keep_their_cluster_ip() {
        let errs = validate_service(&json!({"spec": {"type": "ClusterIP"}}));
        assert_eq!(errs[0].field, "spec.ports");
        assert!(validate_service(&json!({"spec": {"clusterIP": "None"}})).is_empty());
        let old = json!({"spec": {"clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"]}});
        let new = json!({"spec": {"clusterIP": "10.0.0.6", "clusterIPs": ["10.0.0.6"]}});
        assert_eq!(
            service_update_rules(&old, &new)[0].detail,
            r#"Invalid value: ["10.0.0.6"]: may not change once set"#
        );
    }

    #[test]
    fn service_rows() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.0.0.7",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "web"}}});
        let c = service_cells(&svc);
        assert_eq!(&c[1..5], &[json!("NodePort"), json!("10.0.0.7"), json!("<none>"), json!("80:30080/TCP,53/UDP")]);
        assert_eq!(c[6], "app=web");
        let lb = json!({"spec": {"type": "LoadBalancer", "ports": []}});
        assert_eq!(service_cells(&lb)[3], "<pending>");
    }
}
