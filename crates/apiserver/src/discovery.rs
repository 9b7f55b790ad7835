//! API discovery: which groups, versions and resources this server serves, in both forms
//! kubectl reads: the classic documents (`/api`, `/apis`, `/apis/<group>`, and one
//! `APIResourceList` per group-version) and aggregated discovery (`apidiscovery.k8s.io/v2`,
//! every resource of `/api` or `/apis` in one response).

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::resources::{GroupVersion, Resource, GROUPS};

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

pub const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// Whether the client asked for aggregated discovery (apidiscovery.k8s.io/v2), which lists
/// every resource in one response instead of one request per group-version.
pub fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| m.contains("g=apidiscovery.k8s.io") && m.contains("v=v2;") && m.contains("as=APIGroupDiscoveryList"))
}

pub fn aggregated(items: Vec<Value>) -> Response {
    let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items});
    (StatusCode::OK, [(header::CONTENT_TYPE, AGGREGATED)], body.to_string()).into_response()
}

/// A subresource as discovery lists it: (name, what it answers with as (group, version,
/// kind), verbs).
type Listed = (&'static str, (&'static str, &'static str, &'static str), &'static [&'static str]);

/// A resource's subresources as discovery lists them, by name.
fn subresources(r: &Resource) -> Vec<Listed> {
    let mut subs: Vec<_> = r.subresources.iter().map(|s| (s.name(), s.response_kind(r), s.verbs())).collect();
    subs.sort_by_key(|s| s.0);
    subs
}

fn names(v: &mut Value, r: &Resource) {
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
}

/// The classic `APIResourceList` of one group-version.
pub fn resource_list(gv: &GroupVersion) -> Value {
    let mut resources = Vec::new();
    for r in gv.resources {
        let mut v = json!({"name": r.plural, "singularName": r.singular(), "namespaced": r.namespaced, "kind": r.kind, "verbs": VERBS});
        names(&mut v, r);
        resources.push(v);
        for (sub, (group, version, kind), verbs) in subresources(r) {
            let mut s = json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if (group, version) != (r.group, r.version) {
                s["group"] = json!(group);
                s["version"] = json!(version);
            }
            resources.push(s);
        }
    }
    let group_version =
        if gv.group.is_empty() { gv.version.to_string() } else { format!("{}/{}", gv.group, gv.version) };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// One group's entry of aggregated discovery.
pub fn aggregated_group(gv: &GroupVersion) -> Value {
    let resources: Vec<Value> = gv
        .resources
        .iter()
        .map(|r| {
            let mut v = json!({
                "resource": r.plural,
                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular(),
                "verbs": VERBS,
            });
            names(&mut v, r);
            let subs: Vec<Value> = subresources(r)
                .into_iter()
                .map(|(sub, (group, version, kind), verbs)| {
                    json!({"subresource": sub, "responseKind": {"group": group, "version": version, "kind": kind}, "verbs": verbs})
                })
                .collect();
            if !subs.is_empty() {
                v["subresources"] = json!(subs);
            }
            v
        })
        .collect();
    let mut meta = json!({"creationTimestamp": null});
    if !gv.group.is_empty() {
        meta["name"] = json!(gv.group);
    }
    json!({"metadata": meta, "versions": [{"version": gv.version, "resources": resources, "freshness": "Current"}]})
}

fn named_groups() -> impl Iterator<Item = &'static GroupVersion> {
    GROUPS.iter().filter(|g| !g.group.is_empty())
}

/// The classic `APIGroup` of one named group (one version each here).
pub fn group(gv: &GroupVersion) -> Value {
    let v = json!({"groupVersion": format!("{}/{}", gv.group, gv.version), "version": gv.version});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": gv.group, "versions": [v.clone()], "preferredVersion": v})
}

/// `/apis`: the named groups, classic or aggregated.
pub fn groups(headers: &HeaderMap) -> Response {
    if wants_aggregated(headers) {
        return aggregated(named_groups().map(aggregated_group).collect());
    }
    // The groups of an APIGroupList are APIGroups without their own kind and apiVersion.
    let groups: Vec<Value> = named_groups()
        .map(|g| {
            let mut v = group(g);
            if let Some(m) = v.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            v
        })
        .collect();
    crate::response::json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

/// A named group by its name.
pub fn find_group(name: &str) -> Option<&'static GroupVersion> {
    named_groups().find(|g| g.group == name)
}

/// A group-version by its names (the core group is `""`).
pub fn find_group_version(group: &str, version: &str) -> Option<&'static GroupVersion> {
    GROUPS.iter().find(|g| g.group == group && g.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_lists_scale_and_status_subresources() {
        let list = resource_list(find_group_version("apps", "v1").unwrap());
        let names: Vec<&str> =
            list["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"deployments/scale") && names.contains(&"deployments/status"), "{names:?}");
        let scale = list["resources"].as_array().unwrap().iter().find(|r| r["name"] == "deployments/scale").unwrap();
        assert_eq!((scale["group"].as_str(), scale["kind"].as_str()), (Some("autoscaling"), Some("Scale")));
        let agg = aggregated_group(find_group_version("apps", "v1").unwrap());
        assert_eq!(agg["metadata"]["name"], "apps");
    }
}
