//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! which kubectl's typed clients send (`kubectl create namespace|configmap|secret|
//! serviceaccount`) while accepting JSON back. Decoded here into the JSON object the rest of
//! the server works on.
//!
//! The envelope is `k8s\0` + `runtime.Unknown{typeMeta=1{apiVersion=1,kind=2}, raw=2}`, and
//! `raw` is the object in k8s.io/api's generated.proto layout. Only the kinds below are
//! mapped (field numbers from k8s.io/api/core/v1 and apimachinery meta/v1 generated.proto);
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
        _ => return Err(format!("protobuf bodies of {api_version}/{kind} are not supported; send JSON")),
    }
    Ok(out)
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
}
