//! `metadata.managedFields`: which manager owns which fields, kept on every write as
//! upstream's field manager does, and server-side apply on top of it (merge of the applied
//! configuration into the live object, conflicts between managers, and removal of fields an
//! applier stopped setting that nobody else owns).

use serde_json::{json, Map, Value};

use super::fieldset::{self, display_path, FieldSet};
use super::schema::Node;
use crate::resources::Resource;
use crate::status::{ApiError, ApiResult};

/// One `managedFields` entry.
#[derive(Clone, Debug)]
pub struct Manager {
    pub manager: String,
    /// "Apply" or "Update".
    pub operation: String,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Manager {
    fn same_entry(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    /// How upstream names a manager in conflict messages (`printManager`).
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        if self.operation == "Update" {
            s = match &self.time {
                Some(t) => format!("{s} using {} at {t}", self.api_version),
                None => format!("{s} using {}", self.api_version),
            };
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields.to_fields_v1(),
        });
        if let Some(t) = &self.time {
            v["time"] = json!(t);
        }
        if !self.subresource.is_empty() {
            v["subresource"] = json!(self.subresource);
        }
        v
    }
}

/// The entries stored on `obj`; entries that cannot be read are dropped (upstream resets
/// managed fields it cannot decode).
pub fn read(obj: &Value) -> Vec<Manager> {
    let Some(entries) = obj["metadata"]["managedFields"].as_array() else { return Vec::new() };
    entries
        .iter()
        .filter_map(|e| {
            Some(Manager {
                manager: e["manager"].as_str().unwrap_or("").to_string(),
                operation: e["operation"].as_str()?.to_string(),
                api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
                time: e["time"].as_str().map(str::to_string),
                subresource: e["subresource"].as_str().unwrap_or("").to_string(),
                fields: FieldSet::from_fields_v1(&e["fieldsV1"]).ok()?,
            })
        })
        .collect()
}

fn write(obj: &mut Value, mut managers: Vec<Manager>) {
    managers.retain(|m| !m.fields.is_empty());
    // Upstream's order: by operation (Apply first), time, manager, apiVersion, subresource.
    managers.sort_by(|a, b| {
        (&a.operation, &a.time, &a.manager, &a.api_version, &a.subresource).cmp(&(
            &b.operation,
            &b.time,
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    let entries: Vec<Value> = managers.iter().map(Manager::to_json).collect();
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = obj["metadata"].as_object_mut().expect("metadata object");
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

/// The manager of a request: `fieldManager`, or the user agent's program name as upstream
/// (`kubectl/v1.33.0 (linux/amd64) ...` → `kubectl`).
pub fn manager_name(field_manager: Option<&str>, user_agent: &str) -> String {
    match field_manager.filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => user_agent.split('/').next().unwrap_or("").chars().take(128).collect(),
    }
}

/// Fields nobody owns (upstream's `stripMeta`), and what a write through the main resource or
/// the status subresource may not own (upstream's reset fields).
fn ignored(res: &Resource, status: bool, set: &mut FieldSet) {
    if status {
        let keep = set.children.remove("f:status");
        set.children.clear();
        set.member = false;
        if let Some(k) = keep {
            set.children.insert("f:status".into(), k);
        }
        return;
    }
    if res.serves(crate::resources::Subresource::Status) {
        set.children.remove("f:status");
    }
    set.member = false;
    set.children.remove("f:apiVersion");
    set.children.remove("f:kind");
    if let Some(meta) = set.children.get_mut("f:metadata") {
        meta.member = false;
        for f in [
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "generation",
            "managedFields",
            "resourceVersion",
        ] {
            if let Some(c) = meta.children.get_mut(&format!("f:{f}")) {
                c.member = false;
            }
        }
        meta.children.retain(|_, c| !c.is_empty());
    }
    set.children.retain(|_, c| !c.is_empty());
}

fn without_managed_fields(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    o
}

/// The object a create starts from, as upstream's zero value of the kind serializes: the
/// metadata, spec and status structs exist with their required fields null, so a create
/// does not own those containers themselves (no `.` in their fieldsV1 entries), as upstream.
fn zero_object(node: Node, new: &Value) -> Value {
    let mut o = Map::new();
    for f in ["metadata", "spec", "status"] {
        let part = node.field(f);
        if node.declares(f) && part.is_struct() {
            let zero: Map<String, Value> = part.required().into_iter().map(|r| (r.to_string(), Value::Null)).collect();
            o.insert(f.into(), Value::Object(zero));
        }
    }
    for f in ["apiVersion", "kind"] {
        if let Some(v) = new.get(f) {
            o.insert(f.into(), v.clone());
        }
    }
    Value::Object(o)
}

/// The zero object's null placeholders are for comparing only, not for storing.
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, without_nulls(v))).collect())
        }
        other => other,
    }
}

fn schema(res: &Resource) -> Node {
    Node::kind(res.group, res.version, res.kind).unwrap_or_else(Node::unknown)
}

fn now() -> String {
    crate::meta::now_rfc3339()
}

/// Records an Update (create, update, or a patch other than apply) by `manager` in
/// `new.metadata.managedFields`: the fields it changed become its own and stop being
/// anybody else's. Managed fields sent in the body replace the live ones, as upstream.
pub fn record_update(res: &Resource, old: Option<&Value>, new: &mut Value, manager: &str, status: bool) {
    let node = schema(res);
    let sent = new["metadata"].get("managedFields").filter(|m| m.is_array()).is_some();
    let mut managers = if sent { read(new) } else { old.map(read).unwrap_or_default() };
    let new_plain = without_managed_fields(new);
    let old_plain = match old {
        Some(o) => without_managed_fields(o),
        None => zero_object(node, &new_plain),
    };
    let cmp = fieldset::compare(&old_plain, &new_plain, node);
    let mut changed = cmp.changed;
    ignored(res, status, &mut changed);
    let subresource = if status { "status" } else { "" };
    for m in managers.iter_mut() {
        m.fields.difference(&changed);
        m.fields.difference(&cmp.removed);
    }
    if !changed.is_empty() {
        let api_version = res.api_version();
        match managers.iter_mut().find(|m| m.same_entry(manager, "Update", subresource) && m.api_version == api_version)
        {
            Some(m) => {
                m.fields.union(&changed);
                m.time = Some(now());
            }
            None => managers.push(Manager {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version,
                time: Some(now()),
                subresource: subresource.into(),
                fields: changed,
            }),
        }
    }
    write(new, managers);
}

/// Server-side apply of `config` by `manager` to `live` (None: the object is created).
/// Returns the object to store, with its managed fields.
pub fn apply(
    res: &Resource,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    status: bool,
) -> ApiResult<Value> {
    let node = schema(res);
    let mut managers = live.map(read).unwrap_or_default();
    let live_plain = match live {
        Some(l) => without_managed_fields(l),
        None => zero_object(node, config),
    };
    let config = without_managed_fields(config);
    let subresource = if status { "status" } else { "" };

    let mut applied = fieldset::from_object(&config, node);
    ignored(res, status, &mut applied);
    let mut merged = merge(Some(&without_nulls(live_plain.clone())), &config, node);
    let previous = managers.iter().position(|m| m.same_entry(manager, "Apply", subresource));
    let last = previous.map(|i| managers[i].fields.clone()).unwrap_or_default();

    // Fields the applier set before and sets no more go, unless someone else owns them.
    let mut owned = applied.clone();
    for m in managers.iter().filter(|m| !m.same_entry(manager, "Apply", subresource)) {
        owned.union(&m.fields);
    }
    for path in last.paths() {
        if !owned.owns_within(&path) {
            fieldset::remove(&mut merged, &path, node);
        }
    }

    let cmp = fieldset::compare(&live_plain, &merged, node);
    let mut conflicts: Vec<(usize, FieldSet)> = Vec::new();
    for (i, m) in managers.iter().enumerate() {
        if m.same_entry(manager, "Apply", subresource) {
            continue;
        }
        let c = m.fields.intersection(&cmp.changed);
        if !c.is_empty() {
            conflicts.push((i, c));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&managers, &conflicts));
    }
    for (i, c) in &conflicts {
        managers[*i].fields.difference(c);
    }
    for (i, m) in managers.iter_mut().enumerate() {
        if Some(i) != previous {
            m.fields.difference(&cmp.removed);
        }
    }
    let changed = cmp.changed.paths().len() + cmp.removed.paths().len() > 0 || previous.is_none();
    match previous {
        Some(i) => {
            managers[i].fields = applied;
            managers[i].api_version = res.api_version();
            if changed || last != managers[i].fields {
                managers[i].time = Some(now());
            }
        }
        None => managers.push(Manager {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: res.api_version(),
            time: Some(now()),
            subresource: subresource.into(),
            fields: applied,
        }),
    }
    if let Some(l) = live {
        merged["metadata"]["resourceVersion"] = l["metadata"]["resourceVersion"].clone();
    }
    write(&mut merged, managers);
    Ok(merged)
}

/// upstream's `NewConflictError`: 409 with one cause per conflicting field.
fn conflict_error(managers: &[Manager], conflicts: &[(usize, FieldSet)]) -> ApiError {
    let mut causes = Vec::new();
    let mut listed: Vec<(String, String)> = Vec::new();
    for (i, set) in conflicts {
        let who = managers[*i].describe();
        for p in set.paths() {
            let path = display_path(&p);
            causes.push(
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {who}"), "field": path}),
            );
            listed.push((who.clone(), path));
        }
    }
    let message = if listed.len() == 1 {
        format!("Apply failed with 1 conflict: conflict with {}: {}", listed[0].0, listed[0].1)
    } else {
        let mut by_manager: Vec<&String> = listed.iter().map(|(m, _)| m).collect();
        by_manager.sort();
        by_manager.dedup();
        let mut lines = Vec::new();
        for m in by_manager {
            lines.push(format!("conflicts with {m}:"));
            for (_, p) in listed.iter().filter(|(w, _)| w == m) {
                lines.push(format!("- {p}"));
            }
        }
        format!("Apply failed with {} conflicts: {}", listed.len(), lines.join("\n"))
    };
    ApiError { code: 409, reason: "Conflict", message, details: Some(json!({"causes": causes})) }
}

/// Structured-merge-diff's merge of an applied configuration into the live object: structs
/// and granular maps merge field by field, list-maps and sets item by item (in upstream's
/// order), everything else is replaced by the configuration's value.
pub fn merge(live: Option<&Value>, config: &Value, node: Node) -> Value {
    match (live, config) {
        (Some(Value::Object(l)), Value::Object(c)) if !node.is_atomic_map() => {
            let mut out = l.clone();
            for (k, v) in c {
                let merged = merge(l.get(k), v, node.field(k));
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Some(Value::Array(l)), Value::Array(c)) if matches!(node.list_type(), "map" | "set") => {
            Value::Array(merge_list(l, c, node))
        }
        _ => config.clone(),
    }
}

/// Structured-merge-diff's `visitListItems` order: live items in place, shared items in the
/// configuration's order, new items where the configuration puts them.
fn merge_list(live: &[Value], config: &[Value], node: Node) -> Vec<Value> {
    let key = |v: &Value| fieldset::item_element(v, node).unwrap_or_default();
    let lk: Vec<String> = live.iter().map(key).collect();
    let rk: Vec<String> = config.iter().map(key).collect();
    let item_node = if node.list_type() == "set" { Node::unknown() } else { node.items() };
    let mut shared: std::collections::VecDeque<&String> = rk.iter().filter(|k| lk.contains(k)).collect();
    let mut merged_rhs: Vec<&String> = Vec::new();
    let mut out = Vec::new();
    let (mut li, mut ri) = (0, 0);
    while li < live.len() || ri < config.len() {
        if li < live.len() && ri < config.len() {
            if lk[li] == rk[ri] {
                merged_rhs.push(&rk[ri]);
                out.push(merge(Some(&live[li]), &config[ri], item_node));
                if shared.front() == Some(&&rk[ri]) {
                    shared.pop_front();
                }
                li += 1;
                ri += 1;
                continue;
            }
            if rk.contains(&lk[li]) && shared.front().is_some_and(|s| **s != lk[li]) {
                li += 1;
                continue;
            }
        }
        if li < live.len() {
            if !rk.contains(&lk[li]) {
                out.push(live[li].clone());
                li += 1;
                continue;
            } else if merged_rhs.contains(&&lk[li]) {
                li += 1;
                continue;
            }
        }
        if ri < config.len() {
            merged_rhs.push(&rk[ri]);
            let l = lk.iter().position(|k| *k == rk[ri]).map(|i| &live[i]);
            out.push(merge(l, &config[ri], item_node));
            if shared.front() == Some(&&rk[ri]) {
                shared.pop_front();
            }
            ri += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_plural;

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": data})
    }

    #[test]
    fn apply_creates_then_conflicts_with_another_manager_then_force_takes_over() {
        let res = by_plural("configmaps").unwrap();
        let a = apply(res, None, &cm(json!({"k": "1", "x": "1"})), "alice", false, false).unwrap();
        let mf = &a["metadata"]["managedFields"][0];
        assert_eq!((mf["manager"].as_str(), mf["operation"].as_str()), (Some("alice"), Some("Apply")));
        assert_eq!(mf["fieldsV1"], json!({"f:data": {"f:k": {}, "f:x": {}}}));
        // Same value: shared ownership, no conflict.
        let b = apply(res, Some(&a), &cm(json!({"k": "1"})), "bob", false, false).unwrap();
        assert_eq!(b["metadata"]["managedFields"].as_array().unwrap().len(), 2);
        let e = apply(res, Some(&b), &cm(json!({"k": "2"})), "bob", false, false).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (409, "Apply failed with 1 conflict: conflict with \"alice\": .data.k")
        );
        let forced = apply(res, Some(&b), &cm(json!({"k": "2"})), "bob", true, false).unwrap();
        assert_eq!(forced["data"], json!({"k": "2", "x": "1"}));
        let alice = read(&forced).into_iter().find(|m| m.manager == "alice").unwrap();
        assert_eq!(alice.fields.to_fields_v1(), json!({"f:data": {"f:x": {}}}));
        // alice stops setting x: nobody else owns it, so it goes.
        let pruned = apply(res, Some(&forced), &cm(json!({})), "alice", false, false).unwrap();
        assert_eq!(pruned["data"], json!({"k": "2"}));
    }

    #[test]
    fn updates_take_the_fields_they_change() {
        let res = by_plural("configmaps").unwrap();
        let a = apply(res, None, &cm(json!({"k": "1"})), "alice", false, false).unwrap();
        let mut edited = a.clone();
        edited["data"]["k"] = json!("9");
        edited["metadata"].as_object_mut().unwrap().remove("managedFields");
        record_update(res, Some(&a), &mut edited, "kubectl-edit", false);
        let ms = read(&edited);
        assert_eq!(ms.len(), 1, "{edited}");
        assert_eq!((ms[0].manager.as_str(), ms[0].operation.as_str()), ("kubectl-edit", "Update"));
        let e = apply(res, Some(&edited), &cm(json!({"k": "1"})), "alice", false, false).unwrap_err();
        assert!(
            e.message.starts_with("Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1 at "),
            "{}",
            e.message
        );
    }

    #[test]
    fn create_records_labels_map_as_a_member() {
        let res = by_plural("configmaps").unwrap();
        let mut new = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "b"}}, "data": {"k": "v"}});
        record_update(res, None, &mut new, "kubectl-create", false);
        assert_eq!(
            new["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
        );
    }

    #[test]
    fn list_merge_keeps_upstream_order() {
        let pod = Node::kind("", "v1", "Pod").unwrap();
        let c = pod.field("spec").field("containers");
        let live = vec![json!({"name": "a"}), json!({"name": "b"})];
        let cfg = vec![json!({"name": "a"}), json!({"name": "n"}), json!({"name": "b"})];
        let names: Vec<Value> = merge_list(&live, &cfg, c).iter().map(|v| v["name"].clone()).collect();
        assert_eq!(names, vec![json!("a"), json!("n"), json!("b")]);
    }
}
