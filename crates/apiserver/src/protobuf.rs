//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! which kubectl's typed clients send (`kubectl create namespace|configmap|secret|
//! serviceaccount`) while accepting JSON back. Decoded here into the JSON object the rest of
//! the server works on.
//!
//! The envelope is `k8s\0` + `runtime.Unknown{typeMeta=1{apiVersion=1,kind=2}, raw=2}`, and
//! `raw` is the object in k8s.io/api's generated.proto layout. Only the kinds below (what
//! `kubectl create <kind>` sends) are mapped (field numbers from k8s.io/api/core/v1 and apimachinery meta/v1 generated.proto);
//! any other kind is a 415 so the client can resend JSON.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{json, Map, Value};

/// One field's raw values, in wire order (repeated fields and maps have several).
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

type Fields<'a> = BTreeMap<u32, Vec<Wire<'a>>>;

fn varint(b: &[u8], i: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i).ok_or("truncated varint")?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

fn parse(b: &[u8]) -> Result<Fields<'_>, String> {
    let mut out: Fields = BTreeMap::new();
    let mut i = 0;
    while i < b.len() {
        let tag = varint(b, &mut i)?;
        let (field, wt) = ((tag >> 3) as u32, tag & 7);
        let w = match wt {
            0 => Wire::Varint(varint(b, &mut i)?),
            2 => {
                let n = varint(b, &mut i)? as usize;
                let s = b.get(i..i + n).ok_or("truncated field")?;
                i += n;
                Wire::Bytes(s)
            }
            1 => {
                i += 8;
                continue;
            }
            5 => {
                i += 4;
                continue;
            }
            _ => return Err(format!("unsupported wire type {wt}")),
        };
        out.entry(field).or_default().push(w);
    }
    Ok(out)
}

/// A string field; empty counts as unset, as proto3/gogo encode the zero value.
fn string(f: &Fields, n: u32) -> Option<String> {
    f.get(&n)?.iter().rev().find_map(|w| match w {
        Wire::Bytes(b) if !b.is_empty() => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    })
}

fn strings(f: &Fields, n: u32) -> Vec<String> {
    f.get(&n)
        .map(|ws| {
            ws.iter()
                .filter_map(|w| match w {
                    Wire::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn message<'a>(f: &Fields<'a>, n: u32) -> Result<Option<Fields<'a>>, String> {
    match f.get(&n).and_then(|ws| ws.last()) {
        Some(Wire::Bytes(b)) => Ok(Some(parse(b)?)),
        _ => Ok(None),
    }
}

fn varint_field(f: &Fields, n: u32) -> Option<u64> {
    f.get(&n)?.iter().rev().find_map(|w| match w {
        Wire::Varint(v) => Some(*v),
        _ => None,
    })
}

/// A `map<string, string>` (or `map<string, bytes>` as base64, JSON's form of bytes).
fn map(f: &Fields, n: u32, bytes: bool) -> Result<Option<Value>, String> {
    let Some(entries) = f.get(&n) else { return Ok(None) };
    let mut m = Map::new();
    for e in entries {
        let Wire::Bytes(b) = e else { continue };
        let kv = parse(b)?;
        let k = string(&kv, 1).unwrap_or_default();
        let v = match kv.get(&2).and_then(|w| w.last()) {
            Some(Wire::Bytes(b)) if bytes => base64::engine::general_purpose::STANDARD.encode(b),
            Some(Wire::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        m.insert(k, json!(v));
    }
    Ok(Some(Value::Object(m)))
}

fn set(obj: &mut Value, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        obj[key] = v;
    }
}

/// meta/v1 ObjectMeta: the fields a client may set on create/update.
fn object_meta(f: &Fields) -> Result<Value, String> {
    let mut m = json!({});
    set(&mut m, "name", string(f, 1).map(Value::from));
    set(&mut m, "generateName", string(f, 2).map(Value::from));
    set(&mut m, "namespace", string(f, 3).map(Value::from));
    set(&mut m, "uid", string(f, 5).map(Value::from));
    set(&mut m, "resourceVersion", string(f, 6).map(Value::from));
    set(&mut m, "labels", map(f, 11, false)?);
    set(&mut m, "annotations", map(f, 12, false)?);
    let fin = strings(f, 14);
    if !fin.is_empty() {
        m["finalizers"] = json!(fin);
    }
    Ok(m)
}

/// Decodes a protobuf request body into the JSON form of the object.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let raw = body.strip_prefix(b"k8s\0").ok_or("missing the k8s protobuf envelope")?;
    let unknown = parse(raw)?;
    let type_meta = message(&unknown, 1)?.ok_or("missing typeMeta")?;
    let api_version = string(&type_meta, 1).unwrap_or_default();
    let kind = string(&type_meta, 2).unwrap_or_default();
    let obj = match unknown.get(&2).and_then(|w| w.last()) {
        Some(Wire::Bytes(b)) => parse(b)?,
        _ => BTreeMap::new(),
    };
    let mut out = json!({"apiVersion": api_version, "kind": kind});
    let meta = message(&obj, 1)?;
    out["metadata"] = match &meta {
        Some(m) => object_meta(m)?,
        None => json!({}),
    };
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap") => {
            set(&mut out, "data", map(&obj, 2, false)?);
            set(&mut out, "binaryData", map(&obj, 3, true)?);
            set(&mut out, "immutable", varint_field(&obj, 4).map(|v| json!(v != 0)));
        }
        ("v1", "Secret") => {
            set(&mut out, "data", map(&obj, 2, true)?);
            set(&mut out, "type", string(&obj, 3).map(Value::from));
            set(&mut out, "stringData", map(&obj, 4, false)?);
            set(&mut out, "immutable", varint_field(&obj, 5).map(|v| json!(v != 0)));
        }
        ("v1", "Namespace") => {
            if let Some(spec) = message(&obj, 2)? {
                out["spec"] = json!({"finalizers": strings(&spec, 1)});
            }
        }
        // secrets (2) and imagePullSecrets (3) are object references not mapped here: refused
        // rather than dropped.
        ("v1", "ServiceAccount") if !obj.contains_key(&2) && !obj.contains_key(&3) => {
            set(&mut out, "automountServiceAccountToken", varint_field(&obj, 4).map(|v| json!(v != 0)));
        }
        ("v1", "Service") => {
            only(&obj, &[1, 2, 3], "Service")?;
            if let Some(spec) = message(&obj, 2)? {
                out["spec"] = service_spec(&spec)?;
            }
        }
        ("v1", "Pod") => {
            only(&obj, &[1, 2, 3], "Pod")?;
            if let Some(spec) = message(&obj, 2)? {
                out["spec"] = pod_spec(&spec)?;
            }
        }
        ("apps/v1", "Deployment") => {
            only(&obj, &[1, 2, 3], "Deployment")?;
            if let Some(spec) = message(&obj, 2)? {
                out["spec"] = deployment_spec(&spec)?;
            }
        }
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => {
            only(&obj, &[1, 2], &kind)?;
            out["rules"] = repeated(&obj, 2, policy_rule)?;
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => {
            only(&obj, &[1, 2, 3], &kind)?;
            out["subjects"] = repeated(&obj, 2, subject)?;
            if let Some(r) = message(&obj, 3)? {
                out["roleRef"] = json!({"apiGroup": string(&r, 1), "kind": string(&r, 2), "name": string(&r, 3)});
            }
        }
        // scheduling.k8s.io/v1 generated.proto: value=2 (int32), globalDefault=3,
        // description=4, preemptionPolicy=5.
        ("scheduling.k8s.io/v1", "PriorityClass") => {
            only(&obj, &[1, 2, 3, 4, 5], "PriorityClass")?;
            // An int32 travels as a varint of its 64-bit sign extension.
            out["value"] = json!(varint_field(&obj, 2).map_or(0, |v| v as i32));
            set(&mut out, "globalDefault", varint_field(&obj, 3).map(|v| json!(v != 0)));
            set(&mut out, "description", string(&obj, 4).map(Value::from));
            set(&mut out, "preemptionPolicy", string(&obj, 5).map(Value::from));
        }
        _ => return Err(format!("protobuf bodies of {api_version}/{kind} are not supported; send JSON")),
    }
    Ok(out)
}

/// Refuses fields outside `mapped` that carry a value, rather than dropping them. gogo
/// protobuf encodes the zero values of plain (non-pointer) fields too, so those pass.
fn only(f: &Fields, mapped: &[u32], what: &str) -> Result<(), String> {
    for (n, ws) in f {
        let set = ws.iter().any(|w| match w {
            Wire::Varint(v) => *v != 0,
            Wire::Bytes(b) => !b.is_empty(),
        });
        if set && !mapped.contains(n) {
            return Err(format!("protobuf field {n} of {what} is not supported; send JSON"));
        }
    }
    Ok(())
}

fn repeated(f: &Fields, n: u32, each: fn(&Fields) -> Result<Value, String>) -> Result<Value, String> {
    let mut out = Vec::new();
    for w in f.get(&n).into_iter().flatten() {
        if let Wire::Bytes(b) = w {
            out.push(each(&parse(b)?)?);
        }
    }
    Ok(Value::Array(out))
}

/// Sets `key` to a string field's value when it is non-empty.
fn set_string(obj: &mut Value, key: &str, f: &Fields, n: u32) {
    set(obj, key, string(f, n).map(Value::from));
}

fn set_strings(obj: &mut Value, key: &str, f: &Fields, n: u32) {
    let v = strings(f, n);
    if !v.is_empty() {
        obj[key] = json!(v);
    }
}

/// util/intstr IntOrString: type 0 is intVal, 1 is strVal.
fn int_or_string(f: &Fields) -> Value {
    match varint_field(f, 1).unwrap_or(0) {
        1 => json!(string(f, 3).unwrap_or_default()),
        _ => json!(varint_field(f, 2).unwrap_or(0) as i32),
    }
}

fn policy_rule(f: &Fields) -> Result<Value, String> {
    only(f, &[1, 2, 3, 4, 5], "PolicyRule")?;
    let mut r = json!({"verbs": strings(f, 1)});
    set_strings(&mut r, "apiGroups", f, 2);
    set_strings(&mut r, "resources", f, 3);
    set_strings(&mut r, "resourceNames", f, 4);
    set_strings(&mut r, "nonResourceURLs", f, 5);
    Ok(r)
}

fn subject(f: &Fields) -> Result<Value, String> {
    only(f, &[1, 2, 3, 4], "Subject")?;
    let mut s = json!({});
    set_string(&mut s, "kind", f, 1);
    set_string(&mut s, "apiGroup", f, 2);
    set_string(&mut s, "name", f, 3);
    set_string(&mut s, "namespace", f, 4);
    Ok(s)
}

/// core/v1 ServiceSpec: what `kubectl create service` sets.
fn service_spec(f: &Fields) -> Result<Value, String> {
    only(f, &[1, 2, 3, 4, 5, 10, 18], "ServiceSpec")?;
    let mut spec = json!({});
    spec["ports"] = repeated(f, 1, |p| {
        only(p, &[1, 2, 3, 4, 5], "ServicePort")?;
        let mut port = json!({"port": varint_field(p, 3).unwrap_or(0) as i32});
        set_string(&mut port, "name", p, 1);
        set_string(&mut port, "protocol", p, 2);
        if let Some(t) = message(p, 4)? {
            let target = int_or_string(&t);
            if target != json!(0) && target != json!("") {
                port["targetPort"] = target;
            }
        }
        if let Some(np) = varint_field(p, 5).filter(|n| *n != 0) {
            port["nodePort"] = json!(np as i32);
        }
        Ok(port)
    })?;
    set(&mut spec, "selector", map(f, 2, false)?);
    set_string(&mut spec, "clusterIP", f, 3);
    set_string(&mut spec, "type", f, 4);
    set_strings(&mut spec, "externalIPs", f, 5);
    set_string(&mut spec, "externalName", f, 10);
    set_strings(&mut spec, "clusterIPs", f, 18);
    Ok(spec)
}

/// apps/v1 DeploymentSpec: what `kubectl create deployment` sets.
fn deployment_spec(f: &Fields) -> Result<Value, String> {
    only(f, &[1, 2, 3, 4, 5, 6, 7, 9], "DeploymentSpec")?;
    let mut spec = json!({});
    if let Some(Wire::Varint(n)) = f.get(&1).and_then(|w| w.last()) {
        spec["replicas"] = json!(*n as i32);
    }
    if let Some(sel) = message(f, 2)? {
        only(&sel, &[1, 2], "LabelSelector")?;
        let mut s = json!({});
        set(&mut s, "matchLabels", map(&sel, 1, false)?);
        let exprs = repeated(&sel, 2, |e| {
            Ok(
                json!({"key": string(e, 1).unwrap_or_default(), "operator": string(e, 2).unwrap_or_default(), "values": strings(e, 3)}),
            )
        })?;
        if exprs.as_array().is_some_and(|a| !a.is_empty()) {
            s["matchExpressions"] = exprs;
        }
        spec["selector"] = s;
    }
    if let Some(t) = message(f, 3)? {
        only(&t, &[1, 2], "PodTemplateSpec")?;
        let mut template = json!({});
        if let Some(m) = message(&t, 1)? {
            template["metadata"] = object_meta(&m)?;
        }
        if let Some(p) = message(&t, 2)? {
            template["spec"] = pod_spec(&p)?;
        }
        spec["template"] = template;
    }
    if let Some(st) = message(f, 4)? {
        only(&st, &[1], "DeploymentStrategy")?;
        if let Some(ty) = string(&st, 1) {
            spec["strategy"] = json!({"type": ty});
        }
    }
    for (n, key) in [(5, "minReadySeconds"), (6, "revisionHistoryLimit"), (9, "progressDeadlineSeconds")] {
        if let Some(v) = f.get(&n).and_then(|w| w.last()).and_then(|w| match w {
            Wire::Varint(v) => Some(*v),
            _ => None,
        }) {
            if n != 5 || v != 0 {
                spec[key] = json!(v as i32);
            }
        }
    }
    if varint_field(f, 7).is_some_and(|v| v != 0) {
        spec["paused"] = json!(true);
    }
    Ok(spec)
}

/// core/v1 PodSpec: containers and the scheduling basics.
fn pod_spec(f: &Fields) -> Result<Value, String> {
    only(f, &[2, 3, 4, 6, 7, 8, 10, 19], "PodSpec")?;
    let mut spec = json!({});
    spec["containers"] = repeated(f, 2, container)?;
    set_string(&mut spec, "restartPolicy", f, 3);
    if let Some(Wire::Varint(n)) = f.get(&4).and_then(|w| w.last()) {
        spec["terminationGracePeriodSeconds"] = json!(*n as i64);
    }
    set_string(&mut spec, "dnsPolicy", f, 6);
    set(&mut spec, "nodeSelector", map(f, 7, false)?);
    set_string(&mut spec, "serviceAccountName", f, 8);
    set_string(&mut spec, "nodeName", f, 10);
    set_string(&mut spec, "schedulerName", f, 19);
    Ok(spec)
}

fn container(f: &Fields) -> Result<Value, String> {
    only(f, &[1, 2, 3, 4, 5, 6, 7, 8, 13, 14, 20], "Container")?;
    let mut c = json!({});
    set_string(&mut c, "name", f, 1);
    set_string(&mut c, "image", f, 2);
    set_strings(&mut c, "command", f, 3);
    set_strings(&mut c, "args", f, 4);
    set_string(&mut c, "workingDir", f, 5);
    let ports = repeated(f, 6, |p| {
        only(p, &[1, 2, 3, 4, 5], "ContainerPort")?;
        let mut port = json!({"containerPort": varint_field(p, 3).unwrap_or(0) as i32});
        set_string(&mut port, "name", p, 1);
        set_string(&mut port, "protocol", p, 4);
        if let Some(h) = varint_field(p, 2).filter(|h| *h != 0) {
            port["hostPort"] = json!(h as i32);
        }
        Ok(port)
    })?;
    if ports.as_array().is_some_and(|a| !a.is_empty()) {
        c["ports"] = ports;
    }
    let env = repeated(f, 7, |e| {
        only(e, &[1, 2], "EnvVar")?;
        Ok(json!({"name": string(e, 1).unwrap_or_default(), "value": string(e, 2).unwrap_or_default()}))
    })?;
    if env.as_array().is_some_and(|a| !a.is_empty()) {
        c["env"] = env;
    }
    if let Some(r) = message(f, 8)? {
        only(&r, &[], "ResourceRequirements")?;
    }
    set_string(&mut c, "terminationMessagePath", f, 13);
    set_string(&mut c, "imagePullPolicy", f, 14);
    set_string(&mut c, "terminationMessagePolicy", f, 20);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((n << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn configmap_from_kubectl_create() {
        // ConfigMap{metadata{name:"c1", namespace:"ns"}, data{"a":"b"}} in an Unknown envelope.
        let meta = [field(1, b"c1"), field(3, b"ns")].concat();
        let entry = [field(1, b"a"), field(2, b"b")].concat();
        let cm = [field(1, &meta), field(2, &entry)].concat();
        let tm = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &tm), field(2, &cm)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1", "namespace": "ns"}, "data": {"a": "b"}})
        );
        assert!(decode(b"nope").is_err());
    }

    fn varint_field_bytes(n: u32, v: u8) -> Vec<u8> {
        vec![(n << 3) as u8, v]
    }

    #[test]
    fn priority_class_with_a_negative_value() {
        // PriorityClass{metadata{name:"low"}, value:-5, preemptionPolicy:"Never"}: -5 is the
        // ten-byte varint of its 64-bit sign extension.
        let minus_five = [vec![2 << 3], vec![0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]].concat();
        let pc = [field(1, &field(1, b"low")), minus_five, varint_field_bytes(3, 0), field(5, b"Never")].concat();
        let tm = [field(1, b"scheduling.k8s.io/v1"), field(2, b"PriorityClass")].concat();
        let v = decode(&[b"k8s\0".to_vec(), field(1, &tm), field(2, &pc)].concat()).unwrap();
        assert_eq!((v["value"].as_i64(), v["globalDefault"].as_bool()), (Some(-5), Some(false)));
        assert_eq!(v["preemptionPolicy"], "Never");
    }

    #[test]
    fn service_from_kubectl_create() {
        // Service{metadata{name:"a"}, spec{ports[{name:"80-8080", protocol:"TCP", port:80,
        // targetPort{intVal:8080}}], type:"ClusterIP", sessionAffinity:""}}.
        let target = [varint_field_bytes(1, 0), vec![2 << 3, 0x90, 0x3f]].concat();
        let port = [field(1, b"80-8080"), field(2, b"TCP"), varint_field_bytes(3, 80), field(4, &target)].concat();
        let spec = [field(1, &port), field(4, b"ClusterIP"), field(7, b"")].concat();
        let svc = [field(1, &field(1, b"a")), field(2, &spec)].concat();
        let tm = [field(1, b"v1"), field(2, b"Service")].concat();
        let v = decode(&[b"k8s\0".to_vec(), field(1, &tm), field(2, &svc)].concat()).unwrap();
        assert_eq!(
            v["spec"],
            json!({"ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}], "type": "ClusterIP"})
        );
        // A set field that is not mapped (sessionAffinity "ClientIP") is refused, not dropped.
        let spec = [field(1, &port), field(7, b"ClientIP")].concat();
        let svc = [field(1, &field(1, b"a")), field(2, &spec)].concat();
        assert!(decode(&[b"k8s\0".to_vec(), field(1, &tm), field(2, &svc)].concat()).is_err());
    }
}
