//! The served kinds' OpenAPI schemas, generated from k8s-openapi's types (its `schemars`
//! feature) and completed with the list and patch metadata upstream's OpenAPI carries but
//! k8s-openapi's generated schemas leave out (`x-kubernetes-patch-merge-key`,
//! `x-kubernetes-patch-strategy`, `x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type`, `x-kubernetes-group-version-kind`).
//!
//! One source for three users: `/openapi/v3` (kubectl explain, kubectl's client-side apply
//! patch computation), strategic merge patch (merge keys and strategies) and server-side apply
//! (list types and keys), so they cannot disagree about a field.

use std::sync::LazyLock;

use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

/// How a list field merges, as upstream's OpenAPI says (copied from Kubernetes v1.33's
/// `api/openapi-spec`; lists not named here are atomic and replaced whole, as upstream's are
/// when they carry no metadata).
struct ListMeta {
    definition: &'static str,
    field: &'static str,
    /// `x-kubernetes-patch-strategy` (strategic merge patch): "merge", "merge,retainKeys" or "".
    patch_strategy: &'static str,
    /// `x-kubernetes-patch-merge-key`.
    merge_key: &'static str,
    /// `x-kubernetes-list-type` (server-side apply): "atomic", "set" or "map".
    list_type: &'static str,
    /// `x-kubernetes-list-map-keys`.
    map_keys: &'static [&'static str],
}

const fn list(
    definition: &'static str,
    field: &'static str,
    patch_strategy: &'static str,
    merge_key: &'static str,
    list_type: &'static str,
    map_keys: &'static [&'static str],
) -> ListMeta {
    ListMeta { definition, field, patch_strategy, merge_key, list_type, map_keys }
}

const LIST_META: &[ListMeta] = &[
    list("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "merge", "", "set", &[]),
    list("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", "uid", "map", &["uid"]),
    list("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "managedFields", "", "", "atomic", &[]),
    list("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name", "map", &["name"]),
    list("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", "name", "map", &["name"]),
    list("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", "name", "map", &["name"]),
    list("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", "name", "map", &["name"]),
    list("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", "name", "map", &["name"]),
    list("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip", "map", &["ip"]),
    list("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", "name", "map", &["name"]),
    list("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", "name", "map", &["name"]),
    list(
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        "topologyKey",
        "map",
        &["topologyKey", "whenUnsatisfiable"],
    ),
    list("io.k8s.api.core.v1.Container", "env", "merge", "name", "map", &["name"]),
    list("io.k8s.api.core.v1.Container", "ports", "merge", "containerPort", "map", &["containerPort", "protocol"]),
    list("io.k8s.api.core.v1.Container", "volumeMounts", "merge", "mountPath", "map", &["mountPath"]),
    list("io.k8s.api.core.v1.Container", "volumeDevices", "merge", "devicePath", "map", &["devicePath"]),
    list("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", "name", "map", &["name"]),
    list(
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "merge",
        "containerPort",
        "map",
        &["containerPort", "protocol"],
    ),
    list("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", "mountPath", "map", &["mountPath"]),
    list("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", "devicePath", "map", &["devicePath"]),
    list("io.k8s.api.core.v1.PodStatus", "conditions", "merge", "type", "map", &["type"]),
    list("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip", "map", &["ip"]),
    list("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip", "map", &["ip"]),
    list("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port", "map", &["port", "protocol"]),
    list("io.k8s.api.core.v1.ServiceStatus", "conditions", "merge", "type", "map", &["type"]),
    list("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", "type", "map", &["type"]),
    list("io.k8s.api.core.v1.ServiceAccount", "secrets", "merge", "name", "map", &["name"]),
    list("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", "type", "map", &["type"]),
    list("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", "type", "map", &["type"]),
    list("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", "", "set", &[]),
    list("io.k8s.api.core.v1.EndpointSubset", "addresses", "", "", "atomic", &[]),
    list("io.k8s.api.core.v1.ReplicationControllerStatus", "conditions", "merge", "type", "map", &["type"]),
    list("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", "merge", "type", "map", &["type"]),
    list("io.k8s.api.core.v1.LimitRangeSpec", "limits", "", "", "atomic", &[]),
    list("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", "type", "map", &["type"]),
    list("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", "type", "map", &["type"]),
    list("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "merge", "type", "map", &["type"]),
    list("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "merge", "type", "map", &["type"]),
    list("io.k8s.api.apps.v1.StatefulSetSpec", "volumeClaimTemplates", "", "", "atomic", &[]),
];

/// Maps and structs that upstream marks `x-kubernetes-map-type: atomic` (replaced whole by
/// server-side apply, owned as one field).
const ATOMIC_MAPS: &[(&str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "nodeSelector"),
    ("io.k8s.api.core.v1.ServiceSpec", "selector"),
    ("io.k8s.api.core.v1.ReplicationControllerSpec", "selector"),
];
const ATOMIC_DEFINITIONS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.api.core.v1.ObjectReference",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ResourceFieldSelector",
    "io.k8s.api.core.v1.TypedLocalObjectReference",
];

/// Every known kind's definitions, with the metadata above added.
pub struct Definitions {
    pub schemas: Map<String, Value>,
    /// (group, version, kind) → definition name.
    pub kinds: Vec<(String, String, String, String)>,
}

pub static DEFINITIONS: LazyLock<Definitions> = LazyLock::new(build);

fn build() -> Definitions {
    let mut gen = SchemaGenerator::new(SchemaSettings::openapi3());
    let mut kinds = Vec::new();
    // Each served kind brings its schema (`Resource::schema`, from its k8s-openapi type), so
    // the resource table stays the one list of what is served.
    for r in crate::resources::all() {
        let name = (r.schema)(&mut gen);
        kinds.push((r.group.to_string(), r.version.to_string(), r.kind.to_string(), name));
    }
    let mut schemas = gen.take_definitions(true);
    for (group, version, kind, name) in &kinds {
        if let Some(s) = schemas.get_mut(name).and_then(Value::as_object_mut) {
            // k8s-openapi marks a kind's metadata required; upstream's schemas do not (a
            // generateName is enough), and `kubectl explain` shows what the schema says.
            if let Some(Value::Array(required)) = s.get_mut("required") {
                required.retain(|f| f != "metadata");
            }
            if s.get("required").and_then(Value::as_array).is_some_and(Vec::is_empty) {
                s.remove("required");
            }
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": group, "version": version, "kind": kind}]),
            );
        }
    }
    for m in LIST_META {
        let Some(prop) = property_mut(&mut schemas, m.definition, m.field) else { continue };
        if !m.patch_strategy.is_empty() {
            prop.insert("x-kubernetes-patch-strategy".into(), json!(m.patch_strategy));
        }
        if !m.merge_key.is_empty() {
            prop.insert("x-kubernetes-patch-merge-key".into(), json!(m.merge_key));
        }
        prop.insert("x-kubernetes-list-type".into(), json!(m.list_type));
        if !m.map_keys.is_empty() {
            prop.insert("x-kubernetes-list-map-keys".into(), json!(m.map_keys));
        }
    }
    for (definition, field) in ATOMIC_MAPS {
        if let Some(prop) = property_mut(&mut schemas, definition, field) {
            prop.insert("x-kubernetes-map-type".into(), json!("atomic"));
        }
    }
    for d in ATOMIC_DEFINITIONS {
        if let Some(s) = schemas.get_mut(*d).and_then(Value::as_object_mut) {
            s.insert("x-kubernetes-map-type".into(), json!("atomic"));
        }
    }
    Definitions { schemas, kinds }
}

fn property_mut<'a>(schemas: &'a mut Map<String, Value>, def: &str, field: &str) -> Option<&'a mut Map<String, Value>> {
    schemas.get_mut(def)?.get_mut("properties")?.get_mut(field)?.as_object_mut()
}

/// The definition name a `$ref` (direct or through `allOf`) points to.
pub fn ref_name(schema: &Value) -> Option<&str> {
    let r = schema.get("$ref").or_else(|| schema.get("allOf")?.get(0)?.get("$ref"))?;
    r.as_str()?.strip_prefix("#/components/schemas/")
}

/// A place in a kind's schema: the schema of a field as its parent declares it (with the
/// field's list and patch metadata) and the type it resolves to.
#[derive(Clone, Copy)]
pub struct Node {
    own: &'static Value,
    resolved: &'static Value,
}

static EMPTY: Value = Value::Null;

impl Node {
    /// The schema of a served kind, if this server knows its type.
    pub fn kind(group: &str, version: &str, kind: &str) -> Option<Node> {
        let d = &*DEFINITIONS;
        let name = d.kinds.iter().find(|k| k.0 == group && k.1 == version && k.2 == kind)?.3.as_str();
        let s = d.schemas.get(name)?;
        Some(Node { own: s, resolved: s })
    }

    /// A node about which nothing is known: everything in it is treated as atomic and
    /// replaced whole, and lists have no merge key.
    pub fn unknown() -> Node {
        Node { own: &EMPTY, resolved: &EMPTY }
    }

    fn of(own: &'static Value) -> Node {
        let mut resolved = own;
        while let Some(name) = ref_name(resolved) {
            match DEFINITIONS.schemas.get(name) {
                Some(s) => resolved = s,
                None => break,
            }
        }
        Node { own, resolved }
    }

    /// The schema of field `name` of this object (a declared property, or a map's values).
    pub fn field(&self, name: &str) -> Node {
        if let Some(p) = self.resolved.get("properties").and_then(|p| p.get(name)) {
            return Node::of(p);
        }
        match self.resolved.get("additionalProperties") {
            Some(v) if v.is_object() => Node::of(v),
            _ => Node::unknown(),
        }
    }

    pub fn items(&self) -> Node {
        self.resolved.get("items").map(Node::of).unwrap_or_else(Node::unknown)
    }

    pub fn is_known(&self) -> bool {
        !self.resolved.is_null()
    }

    /// A struct with declared fields (as opposed to a map of arbitrary keys).
    pub fn is_struct(&self) -> bool {
        self.resolved.get("properties").is_some()
    }

    /// Whether a field name is one of the struct's declared fields.
    pub fn declares(&self, name: &str) -> bool {
        self.resolved.get("properties").is_some_and(|p| p.get(name).is_some())
    }

    /// The struct's required fields.
    pub fn required(&self) -> Vec<&'static str> {
        let r = self.resolved.get("required").and_then(Value::as_array);
        r.map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
    }

    pub fn is_map(&self) -> bool {
        self.resolved.get("additionalProperties").is_some_and(Value::is_object) && !self.is_struct()
    }

    pub fn is_list(&self) -> bool {
        self.resolved.get("type").and_then(Value::as_str) == Some("array")
    }

    fn ext(&self, name: &str) -> Option<&'static Value> {
        self.own.get(name).or_else(|| self.resolved.get(name))
    }

    pub fn patch_strategy(&self) -> &'static str {
        self.ext("x-kubernetes-patch-strategy").and_then(Value::as_str).unwrap_or("")
    }

    pub fn merge_key(&self) -> Option<&'static str> {
        self.ext("x-kubernetes-patch-merge-key").and_then(Value::as_str)
    }

    /// "atomic" (the default for lists without metadata), "set" or "map".
    pub fn list_type(&self) -> &'static str {
        self.ext("x-kubernetes-list-type").and_then(Value::as_str).unwrap_or("atomic")
    }

    pub fn list_map_keys(&self) -> Vec<&'static str> {
        self.ext("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// Replaced and owned as a whole by server-side apply.
    pub fn is_atomic_map(&self) -> bool {
        self.ext("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
    }

    /// The declared default of a list-map key field (e.g. a port's `protocol` is TCP), which
    /// upstream uses when an item leaves the key out.
    pub fn key_default(&self, key: &str) -> Option<Value> {
        let item = self.items();
        if item.resolved.get("properties")?.get(key).is_some() && key == "protocol" {
            return Some(json!("TCP"));
        }
        None
    }
}

/// Fields of `v` its schema does not declare, as dotted paths (a partial object, as an
/// applied configuration is, may leave out required fields, so decoding it through the typed
/// struct is no way to find them).
pub fn undeclared_fields(v: &Value, node: Node, path: &str, out: &mut Vec<String>) {
    let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match v {
        Value::Object(m) if node.is_struct() => {
            for (k, child) in m {
                if node.declares(k) {
                    undeclared_fields(child, node.field(k), &join(k), out);
                } else {
                    out.push(join(k));
                }
            }
        }
        Value::Object(m) if node.is_map() => {
            for (k, child) in m {
                undeclared_fields(child, node.field(k), &join(k), out);
            }
        }
        Value::Array(items) if node.is_list() => {
            for (i, item) in items.iter().enumerate() {
                undeclared_fields(item, node.items(), &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_resource_has_a_schema_with_its_group_version_kind() {
        for r in crate::resources::all() {
            let node = Node::kind(r.group, r.version, r.kind);
            assert!(node.is_some_and(|n| n.is_struct()), "{} has no schema", r.qualified_kind());
            let (_, _, _, name) = DEFINITIONS.kinds.iter().find(|k| k.2 == r.kind && k.0 == r.group).unwrap();
            let gvk = &DEFINITIONS.schemas[name.as_str()]["x-kubernetes-group-version-kind"][0];
            assert_eq!((gvk["group"].as_str(), gvk["kind"].as_str()), (Some(r.group), Some(r.kind)));
        }
    }

    #[test]
    fn pod_containers_merge_by_name_and_ports_by_container_port() {
        let pod = Node::kind("", "v1", "Pod").expect("pod schema");
        let containers = pod.field("spec").field("containers");
        assert!(containers.is_list());
        assert_eq!(containers.merge_key(), Some("name"));
        assert_eq!(containers.patch_strategy(), "merge");
        assert_eq!(containers.list_type(), "map");
        let ports = containers.items().field("ports");
        assert_eq!(ports.merge_key(), Some("containerPort"));
        assert_eq!(ports.list_map_keys(), vec!["containerPort", "protocol"]);
        assert_eq!(pod.field("spec").field("volumes").patch_strategy(), "merge,retainKeys");
        assert!(pod.field("metadata").field("labels").is_map());
        assert!(pod.field("spec").is_struct());
        assert_eq!(pod.field("spec").field("tolerations").list_type(), "atomic");
        assert_eq!(pod.field("spec").field("tolerations").merge_key(), None);
    }

    #[test]
    fn undeclared_fields_are_found_in_partial_objects() {
        let pod = Node::kind("", "v1", "Pod").unwrap();
        let v = json!({"apiVersion": "v1", "metadata": {"name": "p", "labels": {"any": "x"}, "bogus": 1},
            "spec": {"containers": [{"name": "c", "imagePullPolice": "x"}]}});
        let mut out = Vec::new();
        undeclared_fields(&v, pod, "", &mut out);
        assert_eq!(out, ["metadata.bogus", "spec.containers[0].imagePullPolice"]);
    }

    #[test]
    fn every_metadata_entry_names_an_existing_field() {
        let d = &*DEFINITIONS;
        for m in LIST_META {
            if d.schemas.contains_key(m.definition) {
                assert!(
                    d.schemas[m.definition]["properties"].get(m.field).is_some(),
                    "{}.{} is not a field",
                    m.definition,
                    m.field
                );
            }
        }
    }
}
