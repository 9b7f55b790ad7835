//! Watch: an etcd watch on the collection's prefix turned into Kubernetes watch events,
//! one JSON object per line (`{"type":"ADDED","object":{...}}`).
//!
//! - no resourceVersion (or "0"): the current objects as ADDED, then changes after that list;
//! - resourceVersion N: every change after revision N (etcd start_revision N+1);
//! - a compacted N: one ERROR event carrying a 410 Expired Status, then the stream ends.
//!
//! Selectors are applied to both sides of a change, as upstream's cacher does: an object that
//! starts matching is ADDED, one that stops matching is DELETED.

use std::time::Duration;

use kaname_proto::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest};
use kaname_proto::mvccpb::event::EventType;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::etcd::prefix_end;
use crate::resources::Resource;
use crate::status::ApiError;
use crate::storage::{decode, ListOptions, Storage};

pub struct WatchOptions {
    pub list: ListOptions,
    /// Start after this revision; None = list first, then watch.
    pub from: Option<i64>,
    pub timeout: Duration,
    /// Send each object as a one-row Table (for `kubectl get -w`).
    pub as_table: bool,
}

/// Runs the watch until the timeout, the end of the etcd stream or the client going away
/// (a failed send); each event goes to `tx` as one line.
pub async fn run(
    storage: Storage,
    res: &'static Resource,
    ns: Option<String>,
    opts: WatchOptions,
    tx: mpsc::Sender<String>,
) {
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let _ = tokio::time::timeout_at(deadline, watch(storage, res, ns, &opts, &tx)).await;
}

fn event(res: &Resource, kind: &str, obj: Value, as_table: bool) -> String {
    let object = if as_table && kind != "ERROR" {
        let mut t = crate::table::table(res, std::slice::from_ref(&obj), json!({}));
        t["metadata"] = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
        t
    } else {
        obj
    };
    format!("{}\n", json!({"type": kind, "object": object}))
}

async fn watch(
    storage: Storage,
    res: &'static Resource,
    ns: Option<String>,
    opts: &WatchOptions,
    tx: &mpsc::Sender<String>,
) {
    let matches = |o: &Value| opts.list.labels.matches(&o["metadata"]["labels"]) && opts.list.fields.matches(o);
    let start = match opts.from {
        Some(rv) => rv,
        None => {
            let list = ListOptions {
                labels: opts.list.labels.clone(),
                fields: opts.list.fields.clone(),
                ..Default::default()
            };
            match storage.list(res, ns.as_deref(), &list).await {
                Ok(l) => {
                    for o in l.items {
                        if tx.send(event(res, "ADDED", o, opts.as_table)).await.is_err() {
                            return;
                        }
                    }
                    l.revision
                }
                Err(e) => {
                    let _ = tx.send(event(res, "ERROR", e.to_status(), false)).await;
                    return;
                }
            }
        }
    };
    let prefix = storage.collection(res, ns.as_deref());
    let (req_tx, req_rx) = mpsc::channel(1);
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.clone().into_bytes(),
            range_end: prefix_end(prefix.as_bytes()),
            start_revision: start + 1,
            prev_kv: true,
            ..Default::default()
        })),
    };
    if req_tx.send(create).await.is_err() {
        return;
    }
    let mut client = storage.etcd.watch();
    let mut stream = match client.watch(tokio_stream::wrappers::ReceiverStream::new(req_rx)).await {
        Ok(s) => s.into_inner(),
        Err(e) => {
            let _ = tx.send(event(res, "ERROR", ApiError::from(e).to_status(), false)).await;
            return;
        }
    };
    // Keep the request side open: dropping it would end the etcd watch stream.
    let _keep = req_tx;
    loop {
        let resp = tokio::select! {
            r = stream.message() => r,
            _ = tx.closed() => return,
        };
        let resp = match resp {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(event(res, "ERROR", ApiError::from(e).to_status(), false)).await;
                return;
            }
        };
        if resp.compact_revision != 0 {
            let err = ApiError::expired(format!("too old resource version: {start} ({})", resp.compact_revision));
            let _ = tx.send(event(res, "ERROR", err.to_status(), false)).await;
            return;
        }
        if resp.canceled {
            let err = ApiError::internal(format!("etcd watch canceled: {}", resp.cancel_reason));
            let _ = tx.send(event(res, "ERROR", err.to_status(), false)).await;
            return;
        }
        for ev in resp.events {
            let Some(kv) = ev.kv else { continue };
            let prev = ev.prev_kv.as_ref().and_then(|p| decode(p).ok());
            let line = if ev.r#type == EventType::Delete as i32 {
                // A deleted object is its last state, at the revision of the delete.
                let Some(mut o) = prev else { continue };
                o["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
                matches(&o).then(|| event(res, "DELETED", o, opts.as_table))
            } else {
                let Ok(cur) = decode(&kv) else { continue };
                let was = prev.as_ref().is_some_and(&matches);
                match (was, matches(&cur)) {
                    (false, true) => Some(event(res, "ADDED", cur, opts.as_table)),
                    (true, true) => Some(event(res, "MODIFIED", cur, opts.as_table)),
                    (true, false) => Some(event(res, "DELETED", cur, opts.as_table)),
                    (false, false) => None,
                }
            };
            if let Some(line) = line {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        }
    }
}
