//! The watch cache (upstream's `Cacher`/`watchCache`): per resource, one etcd watch keeps the
//! current objects and a bounded window of recent events in memory, and every watcher of this
//! instance is fed from it, so a thousand watchers cost the store one etcd watch.
//!
//! - A watch from resourceVersion X is served from the window when X is at or after the
//!   window's floor (the oldest revision whose later events are all still held); older is a
//!   410 `too old resource version: X (floor)`, which kube-rs and client-go answer by relisting.
//! - Live events go out through a `broadcast` ring: sending never blocks, and a watcher that
//!   falls more than [`RING`] events behind is closed (as upstream closes unresponsive
//!   watchers); its client re-watches from its last resourceVersion.
//! - If the etcd watch breaks it is re-established from the last revision seen, so no event is
//!   lost; if etcd compacted past that revision, the cache relists and ends all its watchers,
//!   whose clients then get 410 and relist too.
//! - etcd progress notifications (requested every [`PROGRESS_EVERY`] and on demand) move the
//!   cache's revision forward while the resource is idle: bookmarks and "not older than" reads
//!   use it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kaname_proto::etcdserverpb::{
    watch_request, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use kaname_proto::mvccpb::event::EventType;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch, Notify};

use crate::etcd::prefix_end;
use crate::resources::{Resource, GROUPS};
use crate::status::{ApiError, ApiResult};
use crate::storage::{decode_as, Storage};

/// Upstream's minimum watch cache capacity; it doubles while the oldest event is younger than
/// [`EVENT_FRESH`], up to [`MAX_CAPACITY`] (upstream's `defaultLowerBoundCapacity`,
/// `eventFreshDuration` and `defaultUpperBoundCapacity`).
const MIN_CAPACITY: usize = 100;
const MAX_CAPACITY: usize = 100 * 1024;
const EVENT_FRESH: Duration = Duration::from_secs(75);
/// How many live events a watcher may lag behind before it is closed.
pub const RING: usize = 4096;
/// How often the cache asks etcd for its revision while no event arrives.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long a read or watch waits for the cache to reach a revision (upstream: 3s, then 504).
pub const FRESH_WAIT: Duration = Duration::from_secs(3);

/// One change to one object, shared by every watcher (and the window) behind an `Arc`.
pub struct Event {
    pub rev: i64,
    pub key: String,
    /// The object after a put; None for a delete.
    pub object: Option<Arc<Value>>,
    /// The object before the change (None for a create).
    pub prev: Option<Arc<Value>>,
    /// When it arrived, for the window's growth rule.
    at: Instant,
    /// JSON of `object`, serialized once for all watchers.
    object_json: OnceLock<String>,
    /// JSON of `prev` stamped with this event's revision: what DELETED carries (upstream sends
    /// the last state at the revision of the delete, or of the change that left a selector).
    gone_json: OnceLock<String>,
}

impl Event {
    pub fn object_json(&self) -> &str {
        self.object_json.get_or_init(|| self.object.as_ref().map(|o| o.to_string()).unwrap_or_default())
    }
    pub fn gone(&self) -> Value {
        let mut o = self.prev.as_deref().cloned().unwrap_or(Value::Null);
        o["metadata"]["resourceVersion"] = json!(self.rev.to_string());
        o
    }
    pub fn gone_json(&self) -> &str {
        self.gone_json.get_or_init(|| self.gone().to_string())
    }
}

/// What the ring carries: changes, and the revision reached while idle (for bookmarks).
#[derive(Clone)]
pub enum Item {
    Change(Arc<Event>),
    Progress(i64),
}

/// Where a new watcher starts: the objects at `rev` (served as synthetic ADDED events) or the
/// window's events after the requested revision; then everything `live` brings.
pub struct Subscription {
    pub rev: i64,
    /// The objects by etcd key.
    pub snapshot: Option<Vec<(String, Arc<Value>)>>,
    pub backlog: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Item>,
}

struct State {
    /// False until the first list is in (and while relisting after a lost etcd watch).
    ready: bool,
    /// The revision everything below reflects.
    rev: i64,
    /// A watch from any revision >= floor can be served from the window.
    floor: i64,
    objects: BTreeMap<String, Arc<Value>>,
    window: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Replaced on relist: dropping the old sender ends the watchers that were fed from it.
    ring: broadcast::Sender<Item>,
}

/// One resource's cache; see the module docs.
pub struct WatchCache {
    pub res: &'static Resource,
    prefix: String,
    state: Mutex<State>,
    /// The cache's revision, for those waiting for it to reach one.
    rev_tx: watch::Sender<i64>,
    /// Asks the etcd loop for a progress notification now.
    progress_wanted: Notify,
}

impl WatchCache {
    fn new(res: &'static Resource, prefix: String) -> WatchCache {
        let (ring, _) = broadcast::channel(RING);
        WatchCache {
            res,
            prefix,
            state: Mutex::new(State {
                ready: false,
                rev: 0,
                floor: 0,
                objects: BTreeMap::new(),
                window: VecDeque::new(),
                capacity: MIN_CAPACITY,
                ring,
            }),
            rev_tx: watch::channel(0).0,
            progress_wanted: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn rev(&self) -> i64 {
        *self.rev_tx.borrow()
    }

    /// Waits until the cache is ready and at `rev` or later (asking etcd for progress so an
    /// idle resource gets there too); upstream's "Too large resource version" 504 otherwise.
    pub async fn wait_for(&self, rev: i64) -> ApiResult<()> {
        let mut rx = self.rev_tx.subscribe();
        let deadline = tokio::time::Instant::now() + FRESH_WAIT;
        loop {
            let ready = self.lock().ready;
            let current = *rx.borrow_and_update();
            if ready && current >= rev {
                return Ok(());
            }
            self.progress_wanted.notify_one();
            let tick = tokio::time::Instant::now() + Duration::from_millis(200);
            match tokio::time::timeout_at(deadline.min(tick), rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ApiError::internal("watch cache stopped")),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    if !self.lock().ready {
                        return Err(ApiError::storage_initializing());
                    }
                    return Err(ApiError::too_large_resource_version(rev, current));
                }
                Err(_) => {}
            }
        }
    }

    /// The current objects under `prefix` (a namespace's or all), with the cache's revision.
    pub fn snapshot(&self, prefix: &str) -> (i64, Vec<Arc<Value>>) {
        let st = self.lock();
        let items = st.objects.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix));
        (st.rev, items.map(|(_, v)| v.clone()).collect())
    }

    /// Joins the live stream: with `from` None at the current state (of the objects under
    /// `prefix`), else after revision `from` (Err: older than the window's floor, as upstream's
    /// 410 message says).
    pub fn subscribe(&self, prefix: &str, from: Option<i64>) -> ApiResult<Subscription> {
        let st = self.lock();
        let live = st.ring.subscribe();
        match from {
            None => Ok(Subscription {
                rev: st.rev,
                snapshot: Some(
                    st.objects
                        .range(prefix.to_string()..)
                        .take_while(|(k, _)| k.starts_with(prefix))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                backlog: Vec::new(),
                live,
            }),
            Some(x) if x < st.floor => Err(ApiError::expired(format!("too old resource version: {x} ({})", st.floor))),
            Some(x) => {
                let start = st.window.partition_point(|e| e.rev <= x);
                let backlog: Vec<Arc<Event>> = st.window.range(start..).cloned().collect();
                Ok(Subscription { rev: x.max(st.rev), snapshot: None, backlog, live })
            }
        }
    }

    /// etcd says revision `x` is compacted: the window cannot serve a watch from there any
    /// more (etcd's own watch would refuse it), so its floor moves past `x`.
    pub fn compacted_past(&self, x: i64) {
        let mut st = self.lock();
        if st.floor <= x {
            st.floor = x + 1;
            while st.window.front().is_some_and(|e| e.rev <= x + 1) {
                st.window.pop_front();
            }
        }
    }

    /// Installs a fresh list (first start, or after the etcd watch lost events).
    fn replace(&self, rev: i64, objects: BTreeMap<String, Arc<Value>>) {
        let mut st = self.lock();
        st.objects = objects;
        st.rev = rev;
        st.floor = rev;
        st.window.clear();
        st.ready = true;
        // Watchers of the old state end; their clients come back and get 410 if they missed
        // something.
        st.ring = broadcast::channel(RING).0;
        drop(st);
        self.rev_tx.send_replace(rev);
    }

    fn apply(&self, resp: &WatchResponse) {
        let mut st = self.lock();
        let mut last = st.rev;
        for ev in &resp.events {
            let Some(kv) = &ev.kv else { continue };
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            let rev = kv.mod_revision;
            let prev = st
                .objects
                .get(&key)
                .cloned()
                .or_else(|| ev.prev_kv.as_ref().and_then(|p| decode_as(self.res, p).ok()).map(Arc::new));
            let object = if ev.r#type == EventType::Delete as i32 {
                st.objects.remove(&key);
                if prev.is_none() {
                    continue;
                }
                None
            } else {
                match decode_as(self.res, kv) {
                    Ok(o) => {
                        let o = Arc::new(o);
                        st.objects.insert(key.clone(), o.clone());
                        Some(o)
                    }
                    Err(e) => {
                        tracing::warn!("watch cache {}: {}", self.res.plural, e.message);
                        continue;
                    }
                }
            };
            let event = Arc::new(Event {
                rev,
                key,
                object,
                prev,
                at: Instant::now(),
                object_json: OnceLock::new(),
                gone_json: OnceLock::new(),
            });
            push_window(&mut st, event.clone());
            let _ = st.ring.send(Item::Change(event));
            last = last.max(rev);
        }
        st.rev = last;
        drop(st);
        self.rev_tx.send_replace(last);
    }

    fn progress(&self, rev: i64) {
        let mut st = self.lock();
        if rev <= st.rev {
            return;
        }
        st.rev = rev;
        let _ = st.ring.send(Item::Progress(rev));
        drop(st);
        self.rev_tx.send_replace(rev);
    }

    /// Lists the resource at the current revision, in pages so a large collection does not
    /// make one huge etcd response.
    async fn list(&self, storage: &Storage) -> Result<(i64, BTreeMap<String, Arc<Value>>), tonic::Status> {
        let mut objects = BTreeMap::new();
        let (mut from, mut rev) = (self.prefix.clone(), 0);
        loop {
            let r = storage.etcd.range(&from, &self.prefix, rev, 1000).await?;
            if rev == 0 {
                rev = r.header.as_ref().map(|h| h.revision).unwrap_or(0);
            }
            for kv in &r.kvs {
                match decode_as(self.res, kv) {
                    Ok(o) => {
                        objects.insert(String::from_utf8_lossy(&kv.key).into_owned(), Arc::new(o));
                    }
                    Err(e) => tracing::warn!("watch cache {}: {}", self.res.plural, e.message),
                }
            }
            match r.kvs.last() {
                Some(last) if r.more => from = format!("{}\0", String::from_utf8_lossy(&last.key)),
                _ => return Ok((rev, objects)),
            }
        }
    }

    /// Lists, then follows the etcd watch for as long as the cache lives.
    async fn run(self: Arc<Self>, storage: Storage) {
        let mut listed = false;
        loop {
            if !listed {
                match self.list(&storage).await {
                    Ok((rev, objects)) => {
                        self.replace(rev, objects);
                        listed = true;
                    }
                    Err(e) => {
                        tracing::debug!("watch cache {}: list: {e}", self.res.plural);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            match self.follow(&storage).await {
                Follow::Compacted => {
                    tracing::info!("watch cache {}: etcd compacted past the cache; relisting", self.res.plural);
                    self.lock().ready = false;
                    listed = false;
                }
                Follow::Broken(why) => {
                    tracing::debug!("watch cache {}: etcd watch ended: {why}", self.res.plural);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    // A read moves the client to a member that answers (the watch stays on the
                    // one in use), so a dead member is not watched again.
                    let _ = storage.etcd.revision().await;
                }
            }
        }
    }

    /// One etcd watch from the cache's revision + 1 until it breaks.
    async fn follow(&self, storage: &Storage) -> Follow {
        let (req_tx, req_rx) = mpsc::channel(4);
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
                key: self.prefix.clone().into_bytes(),
                range_end: prefix_end(self.prefix.as_bytes()),
                start_revision: self.rev() + 1,
                prev_kv: true,
                progress_notify: true,
                ..Default::default()
            })),
        };
        let _ = req_tx.send(create).await;
        let mut client = storage.etcd.watch();
        let mut stream = match client.watch(tokio_stream::wrappers::ReceiverStream::new(req_rx)).await {
            Ok(s) => s.into_inner(),
            Err(e) => return Follow::Broken(e.to_string()),
        };
        let progress_request = || WatchRequest {
            request_union: Some(watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})),
        };
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        loop {
            let resp = tokio::select! {
                r = stream.message() => r,
                _ = tick.tick() => {
                    let _ = req_tx.try_send(progress_request());
                    continue;
                }
                _ = self.progress_wanted.notified() => {
                    let _ = req_tx.try_send(progress_request());
                    continue;
                }
            };
            let resp = match resp {
                Ok(Some(r)) => r,
                Ok(None) => return Follow::Broken("stream closed".into()),
                Err(e) => return Follow::Broken(e.to_string()),
            };
            if resp.compact_revision != 0 {
                return Follow::Compacted;
            }
            if resp.canceled {
                return Follow::Broken(format!("canceled: {}", resp.cancel_reason));
            }
            if resp.created {
                continue;
            }
            if resp.events.is_empty() {
                // A progress notification: nothing under the prefix changed up to this revision.
                if let Some(h) = &resp.header {
                    self.progress(h.revision);
                }
            } else {
                self.apply(&resp);
            }
        }
    }
}

enum Follow {
    Compacted,
    Broken(String),
}

/// Appends to the window, growing it while its oldest event is fresh, else dropping the oldest
/// (which moves the floor).
fn push_window(st: &mut State, event: Arc<Event>) {
    if st.window.len() >= st.capacity {
        let oldest_fresh = st.window.front().is_some_and(|e| e.at.elapsed() < EVENT_FRESH);
        if oldest_fresh && st.capacity < MAX_CAPACITY {
            st.capacity = (st.capacity * 2).min(MAX_CAPACITY);
        } else if let Some(old) = st.window.pop_front() {
            st.floor = st.floor.max(old.rev);
        }
    }
    st.window.push_back(event);
}

/// The caches of all resources of one API server, started with it and stopped with it.
pub struct Caches {
    caches: Vec<Arc<WatchCache>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Caches {
    /// Starts one cache (one etcd watch) per resource.
    pub fn start(storage: &Storage) -> Caches {
        let mut caches = Vec::new();
        let mut tasks = Vec::new();
        for res in GROUPS.iter().flat_map(|gv| gv.resources.iter()) {
            let cache = Arc::new(WatchCache::new(res, storage.collection(res, None)));
            tasks.push(tokio::spawn(cache.clone().run(storage.clone())));
            caches.push(cache);
        }
        Caches { caches, tasks }
    }

    pub fn get(&self, res: &Resource) -> ApiResult<&Arc<WatchCache>> {
        self.caches
            .iter()
            .find(|c| c.res.group == res.group && c.res.plural == res.plural)
            .ok_or_else(|| ApiError::internal(format!("no watch cache for {}", res.plural)))
    }

    /// Stops the etcd watches; the watchers end when their ring senders go.
    pub fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
        for c in &self.caches {
            c.lock().ring = broadcast::channel(1).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(rev: i64, age: Duration) -> Arc<Event> {
        Arc::new(Event {
            rev,
            key: format!("/k/{rev}"),
            object: None,
            prev: None,
            at: Instant::now() - age,
            object_json: OnceLock::new(),
            gone_json: OnceLock::new(),
        })
    }

    fn state() -> State {
        State {
            ready: true,
            rev: 0,
            floor: 0,
            objects: BTreeMap::new(),
            window: VecDeque::new(),
            capacity: MIN_CAPACITY,
            ring: broadcast::channel(4).0,
        }
    }

    #[test]
    fn the_window_grows_while_fresh_and_then_drops_its_oldest() {
        let mut st = state();
        for rev in 1..=150 {
            push_window(&mut st, event(rev, Duration::ZERO));
        }
        assert_eq!((st.window.len(), st.capacity, st.floor), (150, 200, 0));
        let mut st = state();
        for rev in 1..=150 {
            push_window(&mut st, event(rev, EVENT_FRESH * 2));
        }
        assert_eq!((st.window.len(), st.capacity, st.floor), (100, 100, 50));
    }
}
