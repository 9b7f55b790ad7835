//! One HTTP watch, fed from the resource's [`WatchCache`]: newline-delimited JSON events
//! (`{"type":"ADDED","object":{...}}`), as upstream's watch handler writes them.
//!
//! - no resourceVersion: synthetic ADDED events for the objects at etcd's current revision
//!   (the cache waits until it has caught up with it), then changes after that;
//! - resourceVersion "0": the same from whatever the cache holds now;
//! - resourceVersion N: every change after N, or, if the cache's window (or etcd's compaction)
//!   no longer reaches back to N, one ERROR event with a 410 `Expired` Status;
//! - `sendInitialEvents=true` (WatchList): the state first, then a BOOKMARK annotated
//!   `k8s.io/initial-events-end`;
//! - `allowWatchBookmarks=true`: BOOKMARK events with the revision reached, about once a minute
//!   and two seconds before `timeoutSeconds` ends the stream.
//!
//! Selectors apply to both sides of a change, as upstream's `cacheWatcher` does: an object
//! that starts matching is ADDED, one that stops matching is DELETED (with its last matching
//! state at the revision of the change).

use std::time::Duration;

use axum::body::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::resources::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::storage::Storage;
use crate::watch_cache::{Event, Item, Subscription, WatchCache};

/// Upstream's `bookmarkFrequency`.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Start {
    /// resourceVersion unset: the state at etcd's current revision (a consistent read).
    Consistent,
    /// resourceVersion "0": any recent state, straight from the cache.
    Any,
    /// resourceVersion N: changes after N (or, with initial events, a state not older than N).
    After(i64),
}

pub struct WatchOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub start: Start,
    /// WatchList: the state as ADDED events and an initial-events-end bookmark, whatever
    /// `start` is (then it only bounds how old that state may be).
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Duration,
    /// Send each object as a one-row Table (for `kubectl get -w`).
    pub as_table: bool,
}

/// Which events one watcher gets.
struct Filter {
    /// The etcd key prefix of the watched namespace (or of the whole resource).
    prefix: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn passes(&self, key: &str, obj: &Value) -> bool {
        key.starts_with(&self.prefix) && self.labels.matches(&obj["metadata"]["labels"]) && self.fields.matches(obj)
    }
}

/// Sets up the watch (waiting for the cache where the request needs a fresher state than it
/// has): Err is an HTTP error before any event; Ok(Err) a 410 to send as the only event.
pub async fn subscribe(
    storage: &Storage,
    cache: &WatchCache,
    prefix: &str,
    opts: &WatchOptions,
) -> ApiResult<Result<Subscription, ApiError>> {
    let initial = opts.send_initial_events || matches!(opts.start, Start::Consistent | Start::Any);
    let min_rev = match opts.start {
        Start::Consistent => storage.etcd.revision().await?,
        Start::Any => 0,
        Start::After(x) => x,
    };
    cache.wait_for(min_rev).await?;
    if initial {
        return Ok(cache.subscribe(prefix, None));
    }
    let Start::After(x) = opts.start else { unreachable!("initial covers the other starts") };
    // The window may still hold events etcd has compacted away; a watch from there is answered
    // as etcd would (and as kube-rs/client-go expect after a compaction): 410, relist.
    if x < cache.rev() && storage.etcd.is_compacted(x).await? {
        cache.compacted_past(x);
    }
    Ok(cache.subscribe(prefix, Some(x)))
}

/// Runs one watcher until its timeout, the end of the cache's stream (a relist, a shutdown,
/// or this watcher falling [`crate::watch_cache::RING`] events behind) or the client going
/// away (a failed send).
pub async fn serve(
    res: &'static Resource,
    prefix: String,
    opts: WatchOptions,
    sub: Result<Subscription, ApiError>,
    tx: mpsc::Sender<Bytes>,
) {
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let sub = match sub {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(line("ERROR", &e.to_status().to_string())).await;
            return;
        }
    };
    let mut w = Watcher {
        res,
        filter: Filter { prefix, labels: opts.labels.clone(), fields: opts.fields.clone() },
        as_table: opts.as_table,
        tx,
        rev: sub.rev,
    };
    let _ = tokio::time::timeout_at(deadline, w.run(sub, &opts, deadline)).await;
}

struct Watcher {
    res: &'static Resource,
    filter: Filter,
    as_table: bool,
    tx: mpsc::Sender<Bytes>,
    /// The revision this watcher's client has everything up to (what a bookmark tells it).
    rev: i64,
}

/// What ended a send: the client went away.
struct Gone;

impl Watcher {
    async fn run(&mut self, sub: Subscription, opts: &WatchOptions, deadline: tokio::time::Instant) {
        let Subscription { snapshot, backlog, mut live, .. } = sub;
        if let Some(objects) = snapshot {
            for (key, o) in objects {
                if self.filter.passes(&key, &o) && self.send_object("ADDED", &o, None).await.is_err() {
                    return;
                }
            }
            if opts.send_initial_events && opts.bookmarks && self.bookmark(true).await.is_err() {
                return;
            }
        }
        for ev in backlog {
            if self.send_event(&ev).await.is_err() {
                return;
            }
        }
        let mut next_bookmark = next_bookmark_time(deadline);
        loop {
            let bookmark_due = async {
                match next_bookmark {
                    Some(t) if opts.bookmarks => tokio::time::sleep_until(t).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                item = live.recv() => match item {
                    Ok(Item::Change(ev)) => {
                        if self.send_event(&ev).await.is_err() {
                            return;
                        }
                    }
                    Ok(Item::Progress(rev)) => self.rev = self.rev.max(rev),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::info!("closing a {} watcher {n} events behind", self.res.plural);
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = bookmark_due => {
                    if self.bookmark(false).await.is_err() {
                        return;
                    }
                    next_bookmark = next_bookmark_time(deadline);
                }
                _ = self.tx.closed() => return,
            }
        }
    }

    /// upstream's `convertToWatchEvent`.
    async fn send_event(&mut self, ev: &Event) -> Result<(), Gone> {
        self.rev = self.rev.max(ev.rev);
        let now = ev.object.as_ref().is_some_and(|o| self.filter.passes(&ev.key, o));
        let before = ev.prev.as_ref().is_some_and(|o| self.filter.passes(&ev.key, o));
        match (before, now) {
            (false, true) => self.send_object("ADDED", ev.object.as_deref().unwrap_or(&Value::Null), Some(ev)).await,
            (true, true) => self.send_object("MODIFIED", ev.object.as_deref().unwrap_or(&Value::Null), Some(ev)).await,
            (true, false) => {
                if self.as_table {
                    self.send_object("DELETED", &ev.gone(), None).await
                } else {
                    self.send(line("DELETED", ev.gone_json())).await
                }
            }
            (false, false) => Ok(()),
        }
    }

    /// Sends `obj` (whose JSON `ev` may have serialized already) as a `kind` event.
    async fn send_object(&mut self, kind: &str, obj: &Value, ev: Option<&Event>) -> Result<(), Gone> {
        if self.as_table {
            let mut t = self.res.table(std::slice::from_ref(obj), json!({}));
            t["metadata"] = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
            return self.send(line(kind, &t.to_string())).await;
        }
        match ev {
            Some(ev) => self.send(line(kind, ev.object_json())).await,
            None => self.send(line(kind, &obj.to_string())).await,
        }
    }

    /// A BOOKMARK: an empty object of the kind carrying the revision reached.
    async fn bookmark(&mut self, initial_events_end: bool) -> Result<(), Gone> {
        let mut metadata = json!({"resourceVersion": self.rev.to_string(), "creationTimestamp": null});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = if self.as_table {
            json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": [], "rows": []})
        } else {
            json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": metadata})
        };
        self.send(line("BOOKMARK", &obj.to_string())).await
    }

    async fn send(&self, line: Bytes) -> Result<(), Gone> {
        self.tx.send(line).await.map_err(|_| Gone)
    }
}

fn line(kind: &str, object_json: &str) -> Bytes {
    Bytes::from(format!("{{\"type\":\"{kind}\",\"object\":{object_json}}}\n"))
}

/// upstream's `nextBookmarkTime`: a minute from now, or two seconds before the watch's
/// deadline if that comes first (so a client about to be cut off knows where to resume).
fn next_bookmark_time(deadline: tokio::time::Instant) -> Option<tokio::time::Instant> {
    let now = tokio::time::Instant::now();
    let heartbeat = now + BOOKMARK_EVERY;
    let pre_timeout = deadline.checked_sub(Duration::from_secs(2))?;
    let t = heartbeat.min(pre_timeout);
    (t > now).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_are_one_json_object_each() {
        let l = line("ADDED", "{\"a\":1}");
        let v: Value = serde_json::from_slice(&l[..l.len() - 1]).unwrap();
        assert_eq!(v, json!({"type": "ADDED", "object": {"a": 1}}));
        assert!(l.ends_with(b"\n"));
    }

    #[test]
    fn bookmarks_come_before_the_deadline() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let now = tokio::time::Instant::now();
            let t = next_bookmark_time(now + Duration::from_secs(5)).unwrap();
            assert!(t <= now + Duration::from_secs(3) + Duration::from_millis(50));
            assert!(next_bookmark_time(now + Duration::from_secs(1)).is_none());
            assert!(
                next_bookmark_time(now + Duration::from_secs(600)).unwrap()
                    <= now + BOOKMARK_EVERY + Duration::from_millis(50)
            );
        });
    }
}
