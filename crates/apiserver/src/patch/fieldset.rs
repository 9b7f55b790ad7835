//! Field sets as structured-merge-diff defines them (`fieldpath.Set`), the unit of ownership
//! in `metadata.managedFields`: paths of `f:<field>`, `k:<key fields as JSON>` (items of
//! list-maps), `v:<value as JSON>` (items of sets) and `i:<index>` elements, serialized as
//! `fieldsV1` (a tree whose `.` entry marks that the node itself is in the set).
//!
//! Written here because structured-merge-diff is Go only and no Rust crate implements it; the
//! list and map semantics come from [`super::schema`].

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::schema::Node;

/// A set of field paths, as a tree of path elements (each in its fieldsV1 spelling).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    /// The path leading here is itself in the set.
    pub member: bool,
    pub children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    pub fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            Some((head, rest)) => self.children.entry(head.clone()).or_default().insert(rest),
        }
    }

    pub fn contains(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((head, rest)) => self.children.get(head).is_some_and(|c| c.contains(rest)),
        }
    }

    /// Whether the set holds `path` or anything under it.
    pub fn owns_within(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => !self.is_empty(),
            Some((head, rest)) => self.children.get(head).is_some_and(|c| c.owns_within(rest)),
        }
    }

    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            self.children.entry(k.clone()).or_default().union(c);
        }
    }

    pub fn difference(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (k, c) in &other.children {
            if let Some(mine) = self.children.get_mut(k) {
                mine.difference(c);
            }
        }
        self.children.retain(|_, c| !c.is_empty());
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && other.member, children: BTreeMap::new() };
        for (k, c) in &self.children {
            if let Some(o) = other.children.get(k) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(k.clone(), i);
                }
            }
        }
        out
    }

    /// Every path in the set, parents before children.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, c) in &self.children {
            if !c.is_empty() {
                m.insert(k.clone(), c.to_fields_v1());
            }
        }
        Value::Object(m)
    }

    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let m = v.as_object().ok_or_else(|| "fieldsV1 must be an object".to_string())?;
        let mut s = FieldSet { member: m.is_empty(), children: BTreeMap::new() };
        for (k, c) in m {
            if k == "." {
                s.member = true;
                continue;
            }
            if !(k.starts_with("f:") || k.starts_with("k:") || k.starts_with("v:") || k.starts_with("i:")) {
                return Err(format!("parsing JSON: unexpected key {k:?}"));
            }
            s.children.insert(k.clone(), FieldSet::from_fields_v1(c)?);
        }
        Ok(s)
    }
}

/// A path the way upstream prints it in conflicts: `.spec.containers[name="nginx"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for pe in path {
        if let Some(f) = pe.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = pe.strip_prefix("k:") {
            let fields: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = pe.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        } else if let Some(i) = pe.strip_prefix("i:") {
            out.push_str(&format!("[{i}]"));
        }
    }
    out
}

pub fn field(name: &str) -> String {
    format!("f:{name}")
}

/// The path element naming `item` in a list of type `list` ("map": by its keys; "set": by
/// its value); `None` for atomic lists, whose items are not addressed.
pub fn item_element(item: &Value, list: Node) -> Option<String> {
    match list.list_type() {
        "map" => {
            let mut key = Map::new();
            for k in list.list_map_keys() {
                match item.get(k).cloned().or_else(|| list.key_default(k)) {
                    Some(v) => {
                        key.insert(k.to_string(), v);
                    }
                    None => continue,
                }
            }
            Some(format!("k:{}", Value::Object(key)))
        }
        "set" => Some(format!("v:{item}")),
        _ => None,
    }
}

/// The fields an applied configuration sets (structured-merge-diff's `ToFieldSet`): every
/// leaf, every item of a list-map or set, map entries, and empty maps as leaves.
pub fn from_object(v: &Value, node: Node) -> FieldSet {
    let mut set = FieldSet::default();
    walk(v, node, &mut Vec::new(), &mut set);
    set
}

fn walk(v: &Value, node: Node, path: &mut Vec<String>, set: &mut FieldSet) {
    match v {
        Value::Object(m) if !node.is_atomic_map() || path.is_empty() => {
            for (k, child) in m {
                path.push(field(k));
                let empty = child.is_null() || child.as_object().is_some_and(Map::is_empty);
                if empty || !node.declares(k) {
                    set.insert(path);
                }
                walk(child, node.field(k), path, set);
                path.pop();
            }
        }
        Value::Array(items) if matches!(node.list_type(), "map" | "set") => {
            for item in items {
                let Some(pe) = item_element(item, node) else { continue };
                path.push(pe);
                set.insert(path);
                if node.list_type() == "map" {
                    walk(item, node.items(), path, set);
                }
                path.pop();
            }
        }
        _ => set.insert(path),
    }
}

/// What changed from `old` to `new` (structured-merge-diff's `Compare`): fields added or
/// modified, and fields removed.
#[derive(Default, Debug)]
pub struct Comparison {
    pub changed: FieldSet,
    pub removed: FieldSet,
}

pub fn compare(old: &Value, new: &Value, node: Node) -> Comparison {
    let mut c = Comparison::default();
    cmp(Some(old), Some(new), node, &mut Vec::new(), &mut c);
    c
}

fn is_empty_or_null(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn cmp(l: Option<&Value>, r: Option<&Value>, node: Node, path: &mut Vec<String>, c: &mut Comparison) {
    let objects = l.is_some_and(Value::is_object) || r.is_some_and(Value::is_object);
    let lists = l.is_some_and(Value::is_array) || r.is_some_and(Value::is_array);
    let leaf = (is_empty_or_null(l) && is_empty_or_null(r))
        || (objects && node.is_atomic_map() && !path.is_empty())
        || (lists && !matches!(node.list_type(), "map" | "set"))
        || (!objects && !lists);
    if leaf {
        match (l, r) {
            (None, _) => c.changed.insert(path),
            (_, None) => c.removed.insert(path),
            (Some(a), Some(b)) if a != b => c.changed.insert(path),
            _ => {}
        }
        return;
    }
    if objects {
        let empty = Map::new();
        let lm = l.and_then(Value::as_object).unwrap_or(&empty);
        let rm = r.and_then(Value::as_object).unwrap_or(&empty);
        let mut keys: Vec<&String> = lm.keys().chain(rm.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            path.push(field(k));
            cmp(lm.get(k), rm.get(k), node.field(k), path, c);
            path.pop();
        }
    } else {
        let index = |v: Option<&Value>| -> Vec<(String, Value)> {
            v.and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|i| Some((item_element(i, node)?, i.clone()))).collect())
                .unwrap_or_default()
        };
        let (li, ri) = (index(l), index(r));
        let mut keys: Vec<&String> = li.iter().map(|x| &x.0).chain(ri.iter().map(|x| &x.0)).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let lv = li.iter().find(|x| &x.0 == k).map(|x| &x.1);
            let rv = ri.iter().find(|x| &x.0 == k).map(|x| &x.1);
            path.push(k.clone());
            if node.list_type() == "set" {
                cmp(lv, rv, Node::unknown(), path, c);
            } else {
                cmp(lv, rv, node.items(), path, c);
            }
            path.pop();
        }
    }
    if l.is_none() {
        c.changed.insert(path);
    } else if r.is_none() {
        c.removed.insert(path);
    }
}

/// Removes the value at `path` from `v`, if it is there.
pub fn remove(v: &mut Value, path: &[String], node: Node) {
    let Some((head, rest)) = path.split_first() else { return };
    if let Some(f) = head.strip_prefix("f:") {
        let Some(m) = v.as_object_mut() else { return };
        if rest.is_empty() {
            m.remove(f);
        } else if let Some(child) = m.get_mut(f) {
            remove(child, rest, node.field(f));
        }
        return;
    }
    let Some(items) = v.as_array_mut() else { return };
    let Some(pos) = items.iter().position(|i| item_element(i, node).as_deref() == Some(head.as_str())) else {
        return;
    };
    if rest.is_empty() {
        items.remove(pos);
    } else {
        remove(&mut items[pos], rest, node.items());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Node {
        Node::kind("", "v1", "Pod").unwrap()
    }

    #[test]
    fn applied_config_field_set_matches_upstream_fields_v1() {
        let cfg = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}});
        let s = from_object(&cfg, pod());
        let f = s.to_fields_v1();
        assert_eq!(
            f,
            json!({
                "f:apiVersion": {}, "f:kind": {},
                "f:metadata": {"f:labels": {"f:app": {}}, "f:name": {}},
                "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}
            })
        );
        assert_eq!(FieldSet::from_fields_v1(&f).unwrap(), s);
    }

    #[test]
    fn compare_finds_changes_and_removals() {
        let old = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [{"name": "x", "image": "i"}]}});
        let new = json!({"metadata": {"labels": {"a": "1", "b": "3", "c": "4"}}, "spec": {"containers": [{"name": "y", "image": "i"}]}});
        let c = compare(&old, &new, pod());
        let changed: Vec<String> = c.changed.paths().iter().map(|p| display_path(p)).collect();
        assert_eq!(
            changed,
            [
                ".metadata.labels.b",
                ".metadata.labels.c",
                ".spec.containers[name=\"y\"]",
                ".spec.containers[name=\"y\"].image",
                ".spec.containers[name=\"y\"].name"
            ]
        );
        let removed: Vec<String> = c.removed.paths().iter().map(|p| display_path(p)).collect();
        assert_eq!(
            removed,
            [".spec.containers[name=\"x\"]", ".spec.containers[name=\"x\"].image", ".spec.containers[name=\"x\"].name"]
        );
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::default();
        a.insert(&["f:a".into(), "f:b".into()]);
        a.insert(&["f:c".into()]);
        let mut b = FieldSet::default();
        b.insert(&["f:a".into(), "f:b".into()]);
        assert_eq!(a.intersection(&b), b);
        a.difference(&b);
        assert_eq!(a.paths(), vec![vec!["f:c".to_string()]]);
        assert!(a.owns_within(&["f:c".into()]) && !a.owns_within(&["f:a".into()]));
    }

    #[test]
    fn remove_addresses_list_items_by_key() {
        let mut v = json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "image": "x"}]}});
        remove(&mut v, &["f:spec".into(), "f:containers".into(), "k:{\"name\":\"b\"}".into(), "f:image".into()], pod());
        assert_eq!(v["spec"]["containers"][1], json!({"name": "b"}));
        remove(&mut v, &["f:spec".into(), "f:containers".into(), "k:{\"name\":\"a\"}".into()], pod());
        assert_eq!(v["spec"]["containers"], json!([{"name": "b"}]));
    }
}
