//! The generic registry: one implementation of create/get/list/update/delete for every
//! resource, parameterized by its [`Resource`] entry, storing JSON at
//! `<prefix>/<plural>/<namespace>/<name>` (or `<prefix>/<plural>/<name>`) in etcd.
//!
//! Optimistic concurrency is etcd's: an object's `resourceVersion` is its key's mod_revision,
//! updates and deletes are transactions comparing it, and a list's resourceVersion is the etcd
//! revision it was read at (so a watch can start right after it).

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine;
use kaname_proto::etcdserverpb::{RequestOp, TxnRequest, TxnResponse};
use kaname_proto::mvccpb::KeyValue;
use serde_json::{json, Value};

use crate::etcd::{self, Etcd};
use crate::meta::{now_rfc3339, rfc3339};
use crate::resources::admission::{self, Attributes, ObjectReader, Operation};
pub use crate::resources::Part;
use crate::resources::{check_name, AllocContext, Resource, Subresource, NAMESPACES};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult, FieldError};

#[derive(Clone)]
pub struct Storage {
    pub etcd: Etcd,
    /// `--etcd-prefix`, without a trailing slash.
    pub prefix: String,
    /// `--service-cluster-ip-range`, where services' cluster IPs come from.
    pub service_range: Arc<crate::resources::service_ips::ServiceRange>,
    /// Upstream's `dryRun=All`: see [`Storage::dry_run`].
    pub dry_run: bool,
    /// A leader's write conditioned on its Lease: see [`Storage::fenced`].
    pub fence: Option<crate::fence::Fence>,
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
    /// Shared with the watch cache when the list is served from it: a list of 10,000 pods
    /// then costs pointers, not a deep copy of every object.
    pub items: Vec<Arc<Value>>,
    pub revision: i64,
    pub continue_token: Option<String>,
}

/// Generated-name suffix alphabet and length (upstream's `utilrand.String(5)`: no vowels, no
/// digits that look like letters, so names never spell words).
const NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

impl Storage {
    /// The same storage for a dry-run request (`?dryRun=All`, `kubectl --dry-run=server`,
    /// `kubectl diff`): every read, default, validation and admission check of a write runs
    /// as usual, and its final transaction is evaluated (so a conflict, an existing name or
    /// a taken cluster IP is reported as the real write would report it), but nothing is
    /// written (see [`Storage::commit`]).
    pub fn dry_run(&self) -> Storage {
        Storage { dry_run: true, ..self.clone() }
    }

    /// The same storage for a write of a leader's work ([`crate::fence`]): every write
    /// transaction also requires the Lease to be as the leader last wrote it.
    pub fn fenced(&self, fence: crate::fence::Fence) -> Storage {
        Storage { fence: Some(fence), ..self.clone() }
    }

    /// Runs a write transaction; in a dry run, only its compares and failure reads. A fenced
    /// write whose transaction failed because the Lease moved on is refused (409) here, before
    /// the caller reads the failure as its own (a conflict to retry, a name taken).
    async fn commit(&self, mut req: TxnRequest) -> ApiResult<TxnResponse> {
        if let Some(f) = &self.fence {
            req.compare.push(etcd::cmp_mod(&f.key, f.revision));
        }
        if self.dry_run {
            req.success = Vec::new();
        }
        let r = self.etcd.txn(req).await?;
        if let Some(f) = self.fence.as_ref().filter(|_| !r.succeeded) {
            let now = self.etcd.get(&f.key).await?.map_or(0, |kv| kv.mod_revision);
            if now != f.revision {
                return Err(f.refused(now));
            }
        }
        Ok(r)
    }

    pub fn key(&self, res: &Resource, ns: Option<&str>, name: &str) -> String {
        let plural = res.stored_plural();
        match ns {
            Some(ns) if res.namespaced => format!("{}/{plural}/{ns}/{name}", self.prefix),
            _ => format!("{}/{plural}/{name}", self.prefix),
        }
    }

    /// The prefix of a list: one namespace's objects, or all of them.
    pub fn collection(&self, res: &Resource, ns: Option<&str>) -> String {
        let plural = res.stored_plural();
        match ns {
            Some(ns) if res.namespaced => format!("{}/{plural}/{ns}/", self.prefix),
            _ => format!("{}/{plural}/", self.prefix),
        }
    }

    pub async fn get(&self, res: &Resource, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        match self.etcd.get(&self.key(res, ns, name)).await? {
            Some(kv) => decode_as(res, &kv),
            None => Err(ApiError::not_found(&res.qualified_plural(), name)),
        }
    }

    pub async fn create(&self, res: &'static Resource, ns: Option<&str>, body: Value) -> ApiResult<Value> {
        let mut obj = prepare_body(res, ns, body)?;
        // Mutating admission sees the decoded, defaulted body, as upstream's create handler
        // runs it before the strategy's PrepareForCreate and validation.
        let asked_name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let attrs = Attributes { res, op: Operation::Create, ns, name: &asked_name, reader: self };
        admission::admit(&attrs, &mut obj).await?;
        let meta = &mut obj["metadata"];
        if let Some(m) = meta.as_object_mut() {
            for server_owned in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
            ] {
                m.remove(server_owned);
            }
        }
        meta["uid"] = json!(new_uid());
        meta["creationTimestamp"] = json!(now_rfc3339());
        if res.generation {
            meta["generation"] = json!(1);
        }
        (res.prepare_create)(&mut obj);
        let generate = obj["metadata"]["name"].as_str().unwrap_or("").is_empty();
        let generate_prefix = obj["metadata"]["generateName"].as_str().unwrap_or("").to_string();
        let alloc = AllocContext { etcd: &self.etcd, prefix: &self.prefix, service_range: &self.service_range };
        if let Some(a) = res.allocator {
            a.prepare(&alloc, &mut obj);
        }
        // What the client asked for, kept only where an allocator writes into the object.
        let requested = res.allocator.map(|_| obj.clone());
        // Retried when a generated name or an allocated value collides, or the namespace
        // changed between reading it and writing, as upstream's registry retries.
        for _attempt in 0..16 {
            // Each attempt allocates afresh from what the client asked for.
            if let Some(r) = &requested {
                obj = r.clone();
            }
            if generate && !generate_prefix.is_empty() {
                let suffix: String =
                    (0..5).map(|_| NAME_CHARS[rand::random::<usize>() % NAME_CHARS.len()] as char).collect();
                obj["metadata"]["name"] = json!(format!("{generate_prefix}{suffix}"));
            }
            validate(res, &obj, true)?;
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            admission::validate(&Attributes { name: &name, ..attrs }, &obj).await?;
            let key = self.key(res, ns, &name);
            let mut compare = vec![etcd::cmp_absent(&key)];
            let mut failure = vec![etcd::op_get(&key)];
            let mut success = Vec::new();
            if let Some(ns) = ns.filter(|_| res.namespaced) {
                // Upstream's NamespaceLifecycle admission: the namespace must exist and not be
                // terminating, and stay so until the write (compared by mod revision).
                let ns_key = self.key(NAMESPACES, None, ns);
                let Some(kv) = self.etcd.get(&ns_key).await? else {
                    return Err(ApiError::not_found(NAMESPACES.plural, ns));
                };
                if decode(&kv)?["metadata"]["deletionTimestamp"].is_string() {
                    return Err(ApiError::forbidden_object(
                        &res.qualified_plural(),
                        &name,
                        &format!("unable to create new content in namespace {ns} because it is being terminated"),
                    ));
                }
                compare.push(etcd::cmp_mod(&ns_key, kv.mod_revision));
            }
            let claims = match res.allocator {
                Some(a) => a.claim(&alloc, ns, &name, &mut obj).await?,
                None => Vec::new(),
            };
            let mut conflicts = Vec::new();
            for c in claims {
                compare.push(etcd::cmp_absent(&c.key));
                success.push(etcd::op_put(&c.key, c.value));
                failure.push(etcd::op_get(&c.key));
                conflicts.push(c.conflict);
            }
            success.insert(0, etcd::op_put(&key, encode(res, &obj)?));
            let r = self.commit(TxnRequest { compare, success, failure }).await?;
            if r.succeeded {
                // A dry-run create has no revision of its own; upstream leaves it empty.
                if !self.dry_run {
                    let rev = r.header.map(|h| h.revision).unwrap_or(0);
                    obj["metadata"]["resourceVersion"] = json!(rev.to_string());
                }
                return Ok(obj);
            }
            let got = etcd::txn_ranges(&r);
            if got.first().is_some_and(Option::is_some) {
                if generate && !generate_prefix.is_empty() {
                    continue;
                }
                return Err(ApiError::already_exists(&res.qualified_plural(), &name));
            }
            // A value the client asked for is taken: that is its answer.
            for (i, conflict) in conflicts.into_iter().enumerate() {
                if let Some(e) = conflict.filter(|_| got.get(1 + i).is_some_and(Option::is_some)) {
                    return Err(e);
                }
            }
            // A picked value was taken meanwhile, or the namespace changed: go round again.
        }
        Err(ApiError::internal("too many concurrent changes; try again"))
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
                let obj = decode_as(res, kv)?;
                if opts.labels.matches(&obj["metadata"]["labels"]) && opts.fields.matches(&obj) {
                    items.push(Arc::new(obj));
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
        let part = if status { Part::Status } else { Part::Main };
        self.update_part(res, ns, name, body, part).await
    }

    pub async fn update_part(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        name: &str,
        body: Value,
        part: Part,
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
            let Some(kv) = self.etcd.get(&key).await? else {
                return Err(ApiError::not_found(&res.qualified_plural(), name));
            };
            let old = decode_as(res, &kv)?;
            if precondition.is_some_and(|rv| rv != kv.mod_revision) {
                return Err(ApiError::stale(&res.qualified_plural(), name));
            }
            let mut new = match part {
                Part::Main => obj.clone(),
                Part::Status | Part::Finalize => {
                    let field = if part == Part::Status { "status" } else { "spec" };
                    let mut n = old.clone();
                    n[field] = obj[field].clone();
                    n["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"].clone();
                    n
                }
            };
            // What clients may not change: identity, creation, deletion and generation, and
            // (for resources with a status subresource) the status.
            for f in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
                new["metadata"][f] = old["metadata"][f].clone();
            }
            if res.serves(Subresource::Status) && part == Part::Main {
                new["status"] = old["status"].clone();
            }
            // Admission sees updates of the main resource only, as upstream's plugins ignore
            // subresources.
            let attrs = Attributes { res, op: Operation::Update { old: &old }, ns, name, reader: self };
            if part == Part::Main {
                admission::admit(&attrs, &mut new).await?;
            }
            (res.prepare_update)(&old, &mut new, part);
            if let Some(a) = res.allocator.filter(|_| part == Part::Main) {
                a.keep_on_update(&old, &mut new);
            }
            strip_nulls(&mut new["metadata"]);
            let mut errs = finalizer_errors(&old, &new);
            errs.extend((res.validate_update)(&old, &new));
            if !errs.is_empty() {
                return Err(ApiError::invalid(&res.qualified_kind(), name, &errs));
            }
            validate(res, &new, false)?;
            if part == Part::Main {
                admission::validate(&attrs, &new).await?;
            }
            if res.generation && old["spec"] != new["spec"] {
                new["metadata"]["generation"] = json!(old["metadata"]["generation"].as_i64().unwrap_or(0) + 1);
            }
            new["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
            let mut stored_old = old.clone();
            stored_old["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
            if new == stored_old {
                // Upstream skips writing an unchanged object: the resourceVersion stays.
                return Ok(old);
            }
            // The last finalizer of an object being deleted is gone: the object goes too.
            let remove = new["metadata"]["deletionTimestamp"].is_string() && !has_finalizers(res, &new);
            let success = if remove {
                let mut ops = vec![etcd::op_delete(&key)];
                ops.extend(self.release_ops(res, &old));
                ops
            } else {
                vec![etcd::op_put(&key, encode(res, &new)?)]
            };
            let r = self
                .commit(TxnRequest { compare: vec![etcd::cmp_mod(&key, kv.mod_revision)], success, failure: vec![] })
                .await?;
            if r.succeeded {
                // A dry run leaves the object at the revision it was read at.
                let rev = if self.dry_run { kv.mod_revision } else { r.header.map(|h| h.revision).unwrap_or(0) };
                new["metadata"]["resourceVersion"] = json!(rev.to_string());
                return Ok(new);
            }
            if precondition.is_some() {
                return Err(ApiError::stale(&res.qualified_plural(), name));
            }
            // Unconditional update raced with another write: read again and retry.
        }
    }

    /// Deletes one object as upstream's registry does: with finalizers (or, for a pod on a
    /// node, a grace period) it is only marked (`deletionTimestamp`; a namespace also turns
    /// `Terminating`) and goes when the last finalizer is removed; otherwise it is removed
    /// now, with what it holds (a service's cluster IP) in the same transaction.
    pub async fn delete(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        let key = self.key(res, ns, name);
        loop {
            let Some(kv) = self.etcd.get(&key).await? else {
                return Err(ApiError::not_found(&res.qualified_plural(), name));
            };
            let old = decode_as(res, &kv)?;
            if let Some(rv) = opts.resource_version.filter(|rv| *rv != kv.mod_revision) {
                return Err(ApiError::conflict(
                    &res.qualified_plural(),
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    ),
                ));
            }
            if let Some(uid) = opts.uid.as_deref().filter(|u| Some(*u) != old["metadata"]["uid"].as_str()) {
                return Err(ApiError::conflict(
                    &res.qualified_plural(),
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old["metadata"]["uid"].as_str().unwrap_or("")
                    ),
                ));
            }
            let grace = (res.grace_period)(&old, opts.grace_period);
            let deleting = old["metadata"]["deletionTimestamp"].is_string();
            let (success, marked) = if !has_finalizers(res, &old) && grace == 0 {
                let mut ops = vec![etcd::op_delete(&key)];
                ops.extend(self.release_ops(res, &old));
                (ops, None)
            } else if deleting {
                return Ok(Deleted { object: old, gone: false });
            } else {
                let mut m = old.clone();
                let when = time::OffsetDateTime::now_utc() + time::Duration::seconds(grace);
                m["metadata"]["deletionTimestamp"] = json!(rfc3339(when));
                m["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                if let Some(g) = m["metadata"]["generation"].as_i64().filter(|g| *g > 0) {
                    m["metadata"]["generation"] = json!(g + 1);
                }
                (res.mark_deleting)(&mut m);
                m["metadata"].as_object_mut().map(|x| x.remove("resourceVersion"));
                (vec![etcd::op_put(&key, encode(res, &m)?)], Some(m))
            };
            let r = self
                .commit(TxnRequest { compare: vec![etcd::cmp_mod(&key, kv.mod_revision)], success, failure: vec![] })
                .await?;
            if r.succeeded {
                return Ok(match marked {
                    Some(mut m) => {
                        let rev =
                            if self.dry_run { kv.mod_revision } else { r.header.map(|h| h.revision).unwrap_or(0) };
                        m["metadata"]["resourceVersion"] = json!(rev.to_string());
                        Deleted { object: m, gone: false }
                    }
                    None => Deleted { object: old, gone: true },
                });
            }
        }
    }

    /// `deletecollection`: every listed object deleted (or marked) as [`Storage::delete`]
    /// does; objects that vanish meanwhile are skipped.
    pub async fn delete_collection(
        &self,
        res: &Resource,
        ns: Option<&str>,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> ApiResult<Vec<Value>> {
        let items = self.list(res, ns, list).await?.items;
        let mut out = Vec::new();
        for o in items {
            let name = o["metadata"]["name"].as_str().unwrap_or("");
            match self.delete(res, o["metadata"]["namespace"].as_str(), name, opts).await {
                Ok(d) => out.push(d.object),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Writes `obj` as is if the stored object is still at `mod_revision` (false if not):
    /// for subresources that change what an update may not (a binding sets a pod's node).
    pub async fn write_if_unchanged(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        mod_revision: i64,
        mut obj: Value,
    ) -> ApiResult<bool> {
        let key = self.key(res, ns, name);
        obj["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
        let value = encode(res, &obj)?;
        let r = self
            .commit(TxnRequest {
                compare: vec![etcd::cmp_mod(&key, mod_revision)],
                success: vec![etcd::op_put(&key, value)],
                failure: vec![],
            })
            .await?;
        Ok(r.succeeded)
    }

    /// What goes with an object when it is removed: what its kind's allocator handed out.
    fn release_ops(&self, res: &Resource, obj: &Value) -> Vec<RequestOp> {
        res.allocator.map(|a| a.release(&self.prefix, obj)).unwrap_or_default()
    }
}

/// What admission plugins read: the registry itself, so a plugin sees every committed write.
impl ObjectReader for Storage {
    fn get_object<'a>(
        &'a self,
        res: &'static Resource,
        ns: Option<&'a str>,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, ApiResult<Option<Value>>> {
        Box::pin(async move {
            match self.get(res, ns, name).await {
                Ok(obj) => Ok(Some(obj)),
                Err(e) if e.code == 404 => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn list_objects<'a>(
        &'a self,
        res: &'static Resource,
        ns: Option<&'a str>,
    ) -> futures::future::BoxFuture<'a, ApiResult<Vec<Value>>> {
        Box::pin(async move {
            let listed = self.list(res, ns, &ListOptions::default()).await?;
            Ok(listed.items.into_iter().map(Arc::unwrap_or_clone).collect())
        })
    }
}

/// The parts of upstream's DeleteOptions the registry honours.
#[derive(Default)]
pub struct DeleteOptions {
    pub resource_version: Option<i64>,
    pub uid: Option<String>,
    pub grace_period: Option<i64>,
}

/// The outcome of a delete: the object as it was removed, or as it now waits (marked).
pub struct Deleted {
    pub object: Value,
    pub gone: bool,
}

/// Whether something still holds the object back from removal: its finalizers, or what its
/// kind says holds it (a namespace's `spec.finalizers`, the namespace controller's).
fn has_finalizers(res: &Resource, obj: &Value) -> bool {
    obj["metadata"]["finalizers"].as_array().is_some_and(|a| !a.is_empty()) || (res.held_back)(obj)
}

/// Upstream's `ValidateObjectMetaUpdate` rule: no new finalizers once deletion has started.
fn finalizer_errors(old: &Value, new: &Value) -> Vec<FieldError> {
    if !old["metadata"]["deletionTimestamp"].is_string() {
        return Vec::new();
    }
    let had: HashSet<&str> =
        old["metadata"]["finalizers"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let added: Vec<&str> = new["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|f| !had.contains(f))
        .collect();
    if added.is_empty() {
        return Vec::new();
    }
    vec![FieldError::forbidden(
        "metadata.finalizers",
        &format!(
            "no new finalizers can be added if the object is being deleted, found new finalizers {}",
            json!(added)
        ),
    )]
}

/// Turns an etcd value into the API object: the resourceVersion is the key's mod_revision.
pub fn decode(kv: &KeyValue) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("undecodable object at {}: {e}", String::from_utf8_lossy(&kv.key))))?;
    obj["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(obj)
}

/// [`decode`] into the form `res` shows (a view converts from the stored form).
pub fn decode_as(res: &Resource, kv: &KeyValue) -> ApiResult<Value> {
    Ok(res.from_stored(decode(kv)?))
}

/// The bytes kept for `obj` (a view's objects in the stored form).
fn encode(res: &Resource, obj: &Value) -> ApiResult<Vec<u8>> {
    let stored = res.stored_as.map(|s| (s.to_stored)(obj.clone()));
    serde_json::to_vec(stored.as_ref().unwrap_or(obj)).map_err(ApiError::internal)
}

/// Checks the body's type, decodes it through the typed schema, applies the kind's defaults
/// and settles its namespace.
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
    (res.defaults)(&mut obj);
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

/// Upstream's `TotalAnnotationSizeLimitB`.
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

/// Name rules, then the resource's own validation (and its create-only rules on a
/// `create`): all errors reported at once (422).
fn validate(res: &Resource, obj: &Value, create: bool) -> ApiResult<()> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let mut errs = Vec::new();
    if name.is_empty() {
        errs.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else {
        for why in check_name(res.name_rule, name) {
            errs.push(FieldError::invalid("metadata.name", name, &why));
        }
    }
    // Upstream's `ValidateAnnotations`: keys and values together at most 256 KiB (the limit
    // `kubectl apply` meets with its last-applied-configuration of a big object).
    let annotations = obj["metadata"]["annotations"].as_object().into_iter().flatten();
    let size: usize = annotations.map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
    if size > MAX_ANNOTATION_BYTES {
        errs.push(FieldError::too_long("metadata.annotations", MAX_ANNOTATION_BYTES));
    }
    errs.extend((res.validate)(obj));
    if create {
        errs.extend((res.validate_create)(obj));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&res.qualified_kind(), name, &errs))
    }
}

/// A random (version 4) UUID, as upstream's `uuid.NewUUID` gives every object.
fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
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
