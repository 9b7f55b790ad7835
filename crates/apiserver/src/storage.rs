//! The generic registry: one implementation of create/get/list/update/delete for every
//! resource, parameterized by its [`Resource`] entry, storing JSON at
//! `<prefix>/<plural>/<namespace>/<name>` (or `<prefix>/<plural>/<name>`) in etcd.
//!
//! Optimistic concurrency is etcd's: an object's `resourceVersion` is its key's mod_revision,
//! updates and deletes are transactions comparing it, and a list's resourceVersion is the etcd
//! revision it was read at (so a watch can start right after it).

use base64::Engine;
use kaname_proto::etcdserverpb::TxnRequest;
use kaname_proto::mvccpb::KeyValue;
use serde_json::{json, Value};

use crate::etcd::{self, Etcd};
use crate::resources::{check_name, Resource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult, FieldError};

#[derive(Clone)]
pub struct Storage {
    pub etcd: Etcd,
    /// `--etcd-prefix`, without a trailing slash.
    pub prefix: String,
}

#[derive(Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: i64,
    pub continue_token: Option<String>,
    /// A list at an exact resourceVersion (`resourceVersionMatch=Exact`).
    pub exact_rv: Option<i64>,
}

pub struct ListResult {
    pub items: Vec<Value>,
    pub revision: i64,
    pub continue_token: Option<String>,
}

/// Generated-name suffix alphabet and length (upstream's `utilrand.String(5)`: no vowels, no
/// digits that look like letters, so names never spell words).
const NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

impl Storage {
    pub fn key(&self, res: &Resource, ns: Option<&str>, name: &str) -> String {
        match ns {
            Some(ns) if res.namespaced => format!("{}/{}/{ns}/{name}", self.prefix, res.plural),
            _ => format!("{}/{}/{name}", self.prefix, res.plural),
        }
    }

    /// The prefix of a list: one namespace's objects, or all of them.
    pub fn collection(&self, res: &Resource, ns: Option<&str>) -> String {
        match ns {
            Some(ns) if res.namespaced => format!("{}/{}/{ns}/", self.prefix, res.plural),
            _ => format!("{}/{}/", self.prefix, res.plural),
        }
    }

    pub async fn get(&self, res: &Resource, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        match self.etcd.get(&self.key(res, ns, name)).await? {
            Some(kv) => decode(&kv),
            None => Err(ApiError::not_found(res.plural, name)),
        }
    }

    pub async fn create(&self, res: &'static Resource, ns: Option<&str>, body: Value) -> ApiResult<Value> {
        let mut obj = prepare_body(res, ns, body)?;
        let meta = &mut obj["metadata"];
        for server_owned in ["resourceVersion", "uid", "creationTimestamp", "deletionTimestamp", "selfLink"] {
            if let Some(m) = meta.as_object_mut() {
                m.remove(server_owned);
            }
        }
        meta["uid"] = json!(new_uid());
        meta["creationTimestamp"] = json!(now_rfc3339());
        (res.prepare_create)(&mut obj);
        let generate = obj["metadata"]["name"].as_str().unwrap_or("").is_empty();
        let generate_prefix = obj["metadata"]["generateName"].as_str().unwrap_or("").to_string();
        // A generated name that collides is retried, as upstream's registry does.
        for _attempt in 0..5 {
            if generate && !generate_prefix.is_empty() {
                let suffix: String =
                    (0..5).map(|_| NAME_CHARS[rand::random::<usize>() % NAME_CHARS.len()] as char).collect();
                obj["metadata"]["name"] = json!(format!("{generate_prefix}{suffix}"));
            }
            validate(res, &obj)?;
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            let key = self.key(res, ns, &name);
            let mut compare = vec![etcd::cmp_absent(&key)];
            let mut failure = vec![etcd::op_get(&key)];
            let ns_key = ns.filter(|_| res.namespaced).map(|ns| format!("{}/namespaces/{ns}", self.prefix));
            if let Some(k) = &ns_key {
                // The namespace must exist, checked in the same transaction as the write.
                compare.push(etcd::cmp_present(k));
                failure.push(etcd::op_get(k));
            }
            let value = serde_json::to_vec(&obj).map_err(ApiError::internal)?;
            let r = self.etcd.txn(TxnRequest { compare, success: vec![etcd::op_put(&key, value)], failure }).await?;
            if r.succeeded {
                let rev = r.header.map(|h| h.revision).unwrap_or(0);
                obj["metadata"]["resourceVersion"] = json!(rev.to_string());
                return Ok(obj);
            }
            let got = etcd::txn_ranges(&r);
            if got.first().is_some_and(Option::is_some) {
                if generate && !generate_prefix.is_empty() {
                    continue;
                }
                return Err(ApiError::already_exists(res.plural, &name));
            }
            return Err(ApiError::not_found("namespaces", ns.unwrap_or("")));
        }
        Err(ApiError::already_exists(res.plural, obj["metadata"]["name"].as_str().unwrap_or("")))
    }

    pub async fn list(&self, res: &Resource, ns: Option<&str>, opts: &ListOptions) -> ApiResult<ListResult> {
        let prefix = self.collection(res, ns);
        let (mut from, mut revision) = (prefix.clone(), opts.exact_rv.unwrap_or(0));
        if let Some(token) = &opts.continue_token {
            let (rv, start) = decode_continue(token)?;
            from = format!("{prefix}{start}");
            revision = rv;
        }
        let mut items = Vec::new();
        let mut next = None;
        loop {
            let r = self.etcd.range(&from, &prefix, revision, opts.limit).await.map_err(|s| compacted(s, revision))?;
            if revision == 0 {
                revision = r.header.as_ref().map(|h| h.revision).unwrap_or(0);
            }
            for kv in &r.kvs {
                if opts.limit > 0 && items.len() as i64 == opts.limit {
                    next = Some(String::from_utf8_lossy(&kv.key).to_string());
                    break;
                }
                let obj = decode(kv)?;
                if opts.labels.matches(&obj["metadata"]["labels"]) && opts.fields.matches(&obj) {
                    items.push(obj);
                }
            }
            if next.is_some() || !r.more || r.kvs.is_empty() {
                break;
            }
            let last = r.kvs.last().map(|kv| kv.key.clone()).unwrap_or_default();
            from = format!("{}\0", String::from_utf8_lossy(&last));
            if opts.limit > 0 && items.len() as i64 == opts.limit {
                // Full page and etcd has more keys: the next page starts after the last one.
                next = Some(from.clone());
                break;
            }
        }
        let continue_token = next.map(|k| encode_continue(revision, &k[prefix.len()..]));
        Ok(ListResult { items, revision, continue_token })
    }

    /// Replaces an object (`status` false: everything but its status) or only its status
    /// (`status` true: the `/status` subresource).
    pub async fn update(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        name: &str,
        body: Value,
        status: bool,
    ) -> ApiResult<Value> {
        let obj = prepare_body(res, ns, body)?;
        let body_name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let precondition: Option<i64> = match obj["metadata"]["resourceVersion"].as_str().filter(|s| !s.is_empty()) {
            Some(s) => Some(s.parse().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?),
            None => None,
        };
        let key = self.key(res, ns, name);
        loop {
            let Some(kv) = self.etcd.get(&key).await? else { return Err(ApiError::not_found(res.plural, name)) };
            let old = decode(&kv)?;
            if precondition.is_some_and(|rv| rv != kv.mod_revision) {
                return Err(ApiError::stale(res.plural, name));
            }
            let mut new = if status {
                let mut n = old.clone();
                n["status"] = obj["status"].clone();
                n["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"].clone();
                n
            } else {
                obj.clone()
            };
            // What clients may not change: identity, creation time, and (for resources with a
            // status subresource) the status.
            for f in ["uid", "creationTimestamp", "deletionTimestamp"] {
                new["metadata"][f] = old["metadata"][f].clone();
            }
            if res.has_status && !status {
                new["status"] = old["status"].clone();
            }
            if res.plural == "namespaces" && !status {
                new["spec"] = old["spec"].clone();
            }
            strip_nulls(&mut new["metadata"]);
            validate(res, &new)?;
            if res.plural == "pods" {
                check_pod_update(&old, &new)?;
            }
            new["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
            let mut stored_old = old.clone();
            stored_old["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
            if new == stored_old {
                // Upstream skips writing an unchanged object: the resourceVersion stays.
                return Ok(old);
            }
            let value = serde_json::to_vec(&new).map_err(ApiError::internal)?;
            let r = self
                .etcd
                .txn(TxnRequest {
                    compare: vec![etcd::cmp_mod(&key, kv.mod_revision)],
                    success: vec![etcd::op_put(&key, value)],
                    failure: vec![],
                })
                .await?;
            if r.succeeded {
                new["metadata"]["resourceVersion"] = json!(r.header.map(|h| h.revision).unwrap_or(0).to_string());
                return Ok(new);
            }
            if precondition.is_some() {
                return Err(ApiError::stale(res.plural, name));
            }
            // Unconditional update raced with another write: read again and retry.
        }
    }

    /// Deletes one object (with optional resourceVersion/uid preconditions from DeleteOptions)
    /// and returns it as it was. A namespace takes its contents with it, in one transaction:
    /// there is no namespace controller yet to finalize it asynchronously.
    pub async fn delete(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        pre_rv: Option<i64>,
        pre_uid: Option<String>,
    ) -> ApiResult<Value> {
        let key = self.key(res, ns, name);
        loop {
            let Some(kv) = self.etcd.get(&key).await? else { return Err(ApiError::not_found(res.plural, name)) };
            let old = decode(&kv)?;
            if let Some(rv) = pre_rv.filter(|rv| *rv != kv.mod_revision) {
                return Err(ApiError::conflict(
                    res.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    ),
                ));
            }
            if let Some(uid) = pre_uid.as_deref().filter(|u| Some(*u) != old["metadata"]["uid"].as_str()) {
                return Err(ApiError::conflict(
                    res.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old["metadata"]["uid"].as_str().unwrap_or("")
                    ),
                ));
            }
            let mut success = vec![etcd::op_delete(&key)];
            if res.plural == "namespaces" {
                for r in crate::resources::CORE_V1.iter().filter(|r| r.namespaced) {
                    success.push(etcd::op_delete_prefix(&self.collection(r, Some(name))));
                }
            }
            let r = self
                .etcd
                .txn(TxnRequest { compare: vec![etcd::cmp_mod(&key, kv.mod_revision)], success, failure: vec![] })
                .await?;
            if r.succeeded {
                return Ok(old);
            }
        }
    }
}

/// Turns an etcd value into the API object: the resourceVersion is the key's mod_revision.
pub fn decode(kv: &KeyValue) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("undecodable object at {}: {e}", String::from_utf8_lossy(&kv.key))))?;
    obj["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(obj)
}

/// Checks the body's type, decodes it through the typed schema and settles its namespace.
fn prepare_body(res: &Resource, ns: Option<&str>, body: Value) -> ApiResult<Value> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    }
    let api_version = res.api_version();
    for (field, want) in [("apiVersion", api_version.as_str()), ("kind", res.kind)] {
        if let Some(got) = body.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()) {
            if got != want {
                return Err(ApiError::bad_request(format!(
                    "the {} in the data ({got}) does not match the expected {} ({want})",
                    if field == "kind" { "kind" } else { "API version" },
                    if field == "kind" { "kind" } else { "API version" },
                )));
            }
        }
    }
    let mut obj = (res.normalize)(body).map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(res.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    strip_nulls(&mut obj["metadata"]);
    if res.namespaced {
        let ns = ns.unwrap_or("default");
        match obj["metadata"]["namespace"].as_str() {
            Some(b) if !b.is_empty() && b != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => obj["metadata"]["namespace"] = json!(ns),
        }
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    Ok(obj)
}

fn strip_nulls(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
}

/// Name rules, then the resource's own validation: all errors reported at once (422).
fn validate(res: &Resource, obj: &Value) -> ApiResult<()> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let mut errs = Vec::new();
    if name.is_empty() {
        errs.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else {
        for why in check_name(res.name_rule, name) {
            errs.push(FieldError::invalid("metadata.name", name, &why));
        }
    }
    errs.extend((res.validate)(obj));
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res.kind, name, &errs))
    }
}

/// Upstream lets a pod's spec change only in a few fields once created; here: images.
fn check_pod_update(old: &Value, new: &Value) -> ApiResult<()> {
    let blank = |spec: &Value| {
        let mut s = spec.clone();
        if let Some(cs) = s["containers"].as_array_mut() {
            for c in cs {
                c["image"] = json!("");
            }
        }
        s
    };
    if blank(&old["spec"]) != blank(&new["spec"]) {
        let name = new["metadata"]["name"].as_str().unwrap_or("");
        return Err(ApiError::invalid(
            "Pod",
            name,
            &[FieldError::forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`")],
        ));
    }
    Ok(())
}

/// A random (version 4) UUID, as upstream's `uuid.NewUUID` gives every object.
fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// RFC 3339 in UTC with second precision, as `metav1.Time` serializes.
pub fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Upstream's continue token: base64 of `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>"}`,
/// the key relative to the list's prefix.
fn encode_continue(rv: i64, start: &str) -> String {
    let t = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(t.to_string())
}

fn decode_continue(token: &str) -> ApiResult<(i64, String)> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE.decode(token).map_err(|_| bad())?;
    let t: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let (Some(rv), Some(start)) = (t["rv"].as_i64(), t["start"].as_str()) else { return Err(bad()) };
    if t["v"] != "meta.k8s.io/v1" || rv <= 0 || start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rv, start.to_string()))
}

/// A read at a compacted revision is a 410: the client must relist.
fn compacted(s: tonic::Status, revision: i64) -> ApiError {
    if s.code() == tonic::Code::OutOfRange {
        ApiError::expired(format!(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter. (resourceVersion {revision}: {})",
            s.message()
        ))
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "b\0");
        assert_eq!(decode_continue(&t).unwrap(), (42, "b\0".to_string()));
        assert!(decode_continue("!!!").is_err());
        assert!(decode_continue(&encode_continue(1, "../x")).is_err());
    }

    #[test]
    fn uids_look_like_v4() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
