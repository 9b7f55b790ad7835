//! Strategic merge patch (`application/strategic-merge-patch+json`), as apimachinery's
//! `strategicpatch.StrategicMergePatch` applies it: maps merge, lists of objects merge by the
//! field's `x-kubernetes-patch-merge-key` where its strategy says "merge", other lists are
//! replaced, and the directives kubectl emits are honoured: `$patch: replace|delete|merge`,
//! `$deleteFromPrimitiveList/<field>`, `$setElementOrder/<field>` and `$retainKeys`.
//!
//! Written here because no Rust crate implements strategic merge patch; the per-field
//! metadata comes from [`super::schema`].

use serde_json::{Map, Value};

use super::schema::Node;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

/// Applies `patch` to `original` (both objects) with the type's metadata.
pub fn apply(original: &Value, patch: &Value, schema: Node) -> Result<Value, String> {
    let (Value::Object(o), Value::Object(p)) = (original, patch) else {
        return Err("a strategic merge patch must be a JSON object".to_string());
    };
    merge_map(o.clone(), p, schema).map(Value::Object)
}

fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Node,
) -> Result<Map<String, Value>, String> {
    match patch.get(DIRECTIVE) {
        Some(Value::String(d)) if d == "replace" => return Ok(without_directives(patch)),
        Some(Value::String(d)) if d == "delete" => return Ok(Map::new()),
        Some(Value::String(d)) if d == "merge" => {}
        Some(other) => return Err(format!("Unknown patch type: {}, merge map", display(other))),
        None => {}
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let keys = retain.as_array().ok_or_else(|| "$retainKeys must be a list".to_string())?;
        let keep: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        original.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let remove = v.as_array().ok_or_else(|| format!("{k} must be a list"))?;
            if let Some(Value::Array(items)) = original.get_mut(field) {
                items.retain(|x| !remove.contains(x));
            }
        }
    }
    for (k, patch_v) in patch {
        if k.starts_with('$') {
            continue;
        }
        let field = schema.field(k);
        if patch_v.is_null() {
            original.remove(k);
            continue;
        }
        let merged = match original.remove(k) {
            None | Some(Value::Null) => clean_new(patch_v, field)?,
            Some(Value::Object(o)) if patch_v.is_object() => {
                let m = merge_map(o, patch_v.as_object().expect("object"), field)?;
                Value::Object(m)
            }
            Some(Value::Array(o)) if patch_v.is_array() => {
                let order = patch.get(&format!("{SET_ELEMENT_ORDER}{k}")).and_then(Value::as_array);
                merge_list(o, patch_v.as_array().expect("array"), field, order)?
            }
            Some(_) => clean_new(patch_v, field)?,
        };
        original.insert(k.clone(), merged);
    }
    // A `$setElementOrder` for a list the patch does not otherwise touch still reorders it.
    for (k, order) in patch {
        if let (Some(field), Some(order)) = (k.strip_prefix(SET_ELEMENT_ORDER), order.as_array()) {
            if patch.contains_key(field) {
                continue;
            }
            if let Some(Value::Array(items)) = original.get(field) {
                let key = schema.field(field).merge_key();
                let reordered = reorder(items.clone(), order, key);
                original.insert(field.to_string(), Value::Array(reordered));
            }
        }
    }
    Ok(original)
}

/// A patch value taken as is (nothing to merge with): directives are dropped.
fn clean_new(v: &Value, schema: Node) -> Result<Value, String> {
    match v {
        Value::Object(m) => {
            if m.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                return Ok(Value::Object(Map::new()));
            }
            merge_map(Map::new(), m, schema).map(Value::Object)
        }
        Value::Array(items) => merge_list(Vec::new(), items, schema, None),
        other => Ok(other.clone()),
    }
}

fn without_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn display(v: &Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
}

fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    schema: Node,
    order: Option<&Vec<Value>>,
) -> Result<Value, String> {
    let merging = schema.patch_strategy().split(',').any(|s| s == "merge");
    // `$patch: replace` as an element replaces the whole list with the other elements.
    let replace = patch.iter().any(|e| e.get(DIRECTIVE).and_then(Value::as_str) == Some("replace"));
    let plain: Vec<&Value> = patch.iter().filter(|e| e.get(DIRECTIVE).is_none()).collect();
    if replace || !merging {
        let items: Result<Vec<Value>, String> = plain.iter().map(|e| clean_new(e, schema.items())).collect();
        return Ok(Value::Array(items?));
    }
    let key = schema.merge_key();
    let mut result = original;
    match key {
        // Lists of scalars with strategy merge (e.g. finalizers): a union, in order.
        None => {
            for e in plain {
                if !result.contains(e) {
                    result.push(e.clone());
                }
            }
        }
        Some(key) => {
            for e in patch {
                let Some(id) = e.get(key) else {
                    return Err(format!("map: {} does not contain declared merge key: {key}", compact(e)));
                };
                let pos = result.iter().position(|x| x.get(key) == Some(id));
                match e.get(DIRECTIVE).and_then(Value::as_str) {
                    Some("delete") => {
                        result.retain(|x| x.get(key) != Some(id));
                        continue;
                    }
                    Some("merge") | None => {}
                    Some(other) => return Err(format!("Unknown patch type: {other}, merge list")),
                }
                let Value::Object(pm) = e else { return Err(format!("{} is not an object", compact(e))) };
                match pos {
                    Some(i) => {
                        let Value::Object(o) = result[i].take() else {
                            result[i] = clean_new(e, schema.items())?;
                            continue;
                        };
                        result[i] = Value::Object(merge_map(o, pm, schema.items())?);
                    }
                    None => result.push(clean_new(e, schema.items())?),
                }
            }
        }
    }
    match order {
        Some(order) => Ok(Value::Array(reorder(result, order, key))),
        None => Ok(Value::Array(result)),
    }
}

fn compact(v: &Value) -> String {
    let m = v.as_object().map(|m| m.iter().map(|(k, v)| format!("{k}:{}", display(v))).collect::<Vec<_>>());
    format!("map[{}]", m.unwrap_or_default().join(" "))
}

/// Upstream's `normalizeElementOrder`: the elements the patch names (in `$setElementOrder`)
/// come in that order; elements only the server has keep their place relative to them.
fn reorder(items: Vec<Value>, order: &[Value], key: Option<&str>) -> Vec<Value> {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let order_ids: Vec<Value> = order.iter().map(|o| if key.is_some() { id(o) } else { o.clone() }).collect();
    let server_order: Vec<Value> = items.iter().map(id).collect();
    let (mut named, mut server_only): (Vec<Value>, Vec<Value>) =
        items.into_iter().partition(|v| order_ids.contains(&id(v)));
    named.sort_by_key(|v| order_ids.iter().position(|o| *o == id(v)));
    server_only.sort_by_key(|v| server_order.iter().position(|o| *o == id(v)));
    // Merge the two sorted runs: a named element goes first unless the server-only one
    // stood before it on the server.
    let mut out = Vec::with_capacity(named.len() + server_only.len());
    let (mut i, mut j) = (0, 0);
    while i < named.len() && j < server_only.len() {
        let ni = server_order.iter().position(|o| *o == id(&named[i]));
        let sj = server_order.iter().position(|o| *o == id(&server_only[j]));
        match (ni, sj) {
            (Some(a), Some(b)) if b < a => {
                out.push(server_only[j].clone());
                j += 1;
            }
            _ => {
                out.push(named[i].clone());
                i += 1;
            }
        }
    }
    out.extend(named[i..].iter().cloned());
    out.extend(server_only[j..].iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Node {
        Node::kind("", "v1", "Pod").unwrap()
    }

    #[test]
    fn containers_merge_by_name() {
        let o = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let p = json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}]}});
        let r = apply(&o, &p, pod()).unwrap();
        assert_eq!(
            r["spec"]["containers"],
            json!([{"name": "a", "image": "x"}, {"name": "b", "image": "z"}, {"name": "c", "image": "w"}])
        );
    }

    #[test]
    fn kubectl_apply_patch_replaces_a_container() {
        // What kubectl apply sends when the last applied config had a and b, the new one a and c.
        let o = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let p = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "c"}],
            "containers": [{"name": "c", "image": "w"}, {"$patch": "delete", "name": "b"}]
        }});
        let r = apply(&o, &p, pod()).unwrap();
        assert_eq!(r["spec"]["containers"], json!([{"name": "a", "image": "x"}, {"name": "c", "image": "w"}]));
    }

    #[test]
    fn set_element_order_keeps_server_only_elements_in_place() {
        let o = json!({"spec": {"containers": [{"name": "a"}, {"name": "s"}, {"name": "b"}]}});
        let p = json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "b", "image": "n"}]}});
        let r = apply(&o, &p, pod()).unwrap();
        let names: Vec<&str> =
            r["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        // Upstream's mergeSortedSlice: s stood before b on the server, so it still does.
        assert_eq!(names, ["s", "b", "a"]);
    }

    #[test]
    fn directives() {
        let o = json!({"metadata": {"finalizers": ["x", "y"], "labels": {"a": "1"}}, "spec": {"tolerations": [{"key": "k"}]}});
        let p = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"], "finalizers": ["z"], "labels": {"$patch": "replace", "b": "2"}},
                       "spec": {"tolerations": [{"key": "j"}]}});
        let r = apply(&o, &p, pod()).unwrap();
        assert_eq!(r["metadata"]["finalizers"], json!(["y", "z"]));
        assert_eq!(r["metadata"]["labels"], json!({"b": "2"}));
        // No merge key: the list is replaced.
        assert_eq!(r["spec"]["tolerations"], json!([{"key": "j"}]));
        let p = json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only"}]}});
        let r = apply(&json!({"spec": {"containers": [{"name": "a"}]}}), &p, pod()).unwrap();
        assert_eq!(r["spec"]["containers"], json!([{"name": "only"}]));
    }

    #[test]
    fn retain_keys_clears_the_other_volume_source() {
        let o = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}});
        let p = json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/x"}}]}});
        let r = apply(&o, &p, pod()).unwrap();
        assert_eq!(r["spec"]["volumes"], json!([{"name": "v", "hostPath": {"path": "/x"}}]));
    }

    #[test]
    fn missing_merge_key_is_an_error() {
        let p = json!({"spec": {"containers": [{"image": "x"}]}});
        let e = apply(&json!({"spec": {"containers": []}}), &p, pod()).unwrap_err();
        assert_eq!(e, "map: map[image:x] does not contain declared merge key: name");
    }
}
