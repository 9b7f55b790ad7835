//! Watchers of one member (etcd's `watchableStore`): who watches which keys from which
//! revision, fed by the apply path with the events of every committed batch.
//!
//! A watcher is in one of two groups, as in etcd:
//! - *synced*: it has seen everything up to the hub's revision; the apply path hands it the
//!   events of each new revision directly ([`WatchHub::notify`]).
//! - *unsynced*: it is behind (it asked for a historical start revision, its stream's buffer
//!   was full, or the store was replaced by a Raft snapshot); a background loop
//!   ([`WatchHub::run_sync_loop`]) reads its missing history from the `key` table and moves
//!   it back to synced once it has caught up.
//!
//! Every stream has one bounded channel shared by its watchers. The apply path only ever
//! `try_send`s into it: when a stream's buffer is full, the watcher is moved to unsynced at
//! the revision it failed to receive, instead of waiting or buffering more (etcd keeps such
//! "victims" with their pending events; we drop the events and reread them from storage,
//! which keeps memory bounded by the channel sizes). So a stuck client never slows writes or
//! other watchers, and still gets every event exactly once, in order, when it reads again.
//!
//! The hub's lock is held only for in-memory work; the history read of the sync loop happens
//! outside it (see [`WatchHub::sync_once`] for why that cannot lose or repeat an event).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaname_proto::mvccpb::{event::EventType, Event};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;

use crate::error::EtcdError;
use crate::metrics::Metrics;
use crate::mvcc::MvccStore;

/// What a watcher's stream receives (etcd's `mvcc.WatchResponse`).
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// The stream-local watch id, or -1 for a progress notification on behalf of the whole
    /// stream.
    pub watch_id: i64,
    pub events: Vec<Event>,
    /// The header revision: the revision of the events when synced, the store's revision
    /// when catching up (it may then be above the last event), as etcd.
    pub revision: i64,
    /// Set when the watcher was cancelled because the history it needs was compacted.
    pub compact_revision: i64,
}

/// Tunables; the defaults are etcd's.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// How often a watch with `progress_notify` hears about the revision when nothing
    /// happened (etcd: 10 minutes).
    pub progress_interval: Duration,
    /// Responses buffered per stream before its watchers fall back to catch-up (etcd's
    /// `chanBufLen`).
    pub stream_buffer: usize,
    /// Pause between catch-up rounds that made no progress (etcd: 100 ms).
    pub sync_interval: Duration,
    /// Unsynced watchers served per catch-up round (etcd's `maxWatchersPerSync`).
    pub max_watchers_per_sync: usize,
    /// History rows read per catch-up round; with `max_bytes_per_sync`, bounds the memory
    /// one round needs (etcd reads all the missing history at once).
    pub max_rows_per_sync: usize,
    pub max_bytes_per_sync: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            progress_interval: Duration::from_secs(600),
            stream_buffer: 128,
            sync_interval: Duration::from_millis(100),
            max_watchers_per_sync: 512,
            max_rows_per_sync: 10_000,
            max_bytes_per_sync: 4 << 20,
        }
    }
}

impl WatchConfig {
    /// The defaults, with `KANAME_WATCH_PROGRESS_NOTIFY_INTERVAL_MS` overriding the progress
    /// interval, so tests can see progress notifications without waiting 10 minutes.
    pub fn from_env() -> Self {
        let mut c = WatchConfig::default();
        if let Some(ms) =
            std::env::var("KANAME_WATCH_PROGRESS_NOTIFY_INTERVAL_MS").ok().and_then(|v| v.parse::<u64>().ok())
        {
            c.progress_interval = Duration::from_millis(ms.max(1));
        }
        c
    }
}

/// What a new watcher watches.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub key: Vec<u8>,
    /// `None`: just `key`; empty: every key from `key` on; else `[key, end)`.
    pub end: Option<Vec<u8>>,
    /// 0: from the next revision.
    pub start_revision: i64,
    pub no_put: bool,
    pub no_delete: bool,
    pub watch_id: i64,
}

impl WatchSpec {
    fn contains(&self, k: &[u8]) -> bool {
        match &self.end {
            None => k == self.key.as_slice(),
            Some(end) => k >= self.key.as_slice() && (end.is_empty() || k < end.as_slice()),
        }
    }

    fn wants(&self, ev: &Event) -> bool {
        let put = ev.r#type == EventType::Put as i32;
        !(put && self.no_put || !put && self.no_delete)
    }
}

/// Identifies a watcher in the hub (unique per member, unlike watch ids).
pub type WatcherId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Synced,
    Unsynced,
    /// Picked by a catch-up round whose history read is in flight.
    Syncing,
}

struct Watcher {
    spec: WatchSpec,
    /// The next revision this watcher must receive.
    min_rev: i64,
    group: Group,
    tx: mpsc::Sender<Update>,
}

#[derive(Default)]
struct HubState {
    /// The newest revision handed to the synced watchers.
    rev: i64,
    next_id: WatcherId,
    watchers: HashMap<WatcherId, Watcher>,
    /// Synced single-key watchers by key (most watches are of one key or a prefix).
    synced_keys: HashMap<Vec<u8>, Vec<WatcherId>>,
    /// Synced range and prefix watchers.
    synced_ranges: BTreeSet<WatcherId>,
    synced_count: usize,
    unsynced: BTreeSet<WatcherId>,
    /// Where the next catch-up round starts picking unsynced watchers.
    sync_cursor: WatcherId,
    /// Bumped when the store is replaced: a catch-up read started before belongs to the old
    /// store and must not be delivered.
    epoch: u64,
}

impl HubState {
    fn add_synced(&mut self, id: WatcherId) {
        let w = self.watchers.get_mut(&id).expect("watcher exists");
        w.group = Group::Synced;
        self.synced_count += 1;
        if w.spec.end.is_none() {
            self.synced_keys.entry(w.spec.key.clone()).or_default().push(id);
        } else {
            self.synced_ranges.insert(id);
        }
    }

    fn remove_synced(&mut self, id: WatcherId) {
        let Some(w) = self.watchers.get(&id) else { return };
        if w.group != Group::Synced {
            return;
        }
        self.synced_count -= 1;
        if w.spec.end.is_none() {
            if let Some(ids) = self.synced_keys.get_mut(&w.spec.key) {
                ids.retain(|x| *x != id);
                if ids.is_empty() {
                    self.synced_keys.remove(&w.spec.key);
                }
            }
        } else {
            self.synced_ranges.remove(&id);
        }
    }

    /// Moves a synced watcher to unsynced, to resume at `min_rev`.
    fn demote(&mut self, id: WatcherId, min_rev: i64) {
        self.remove_synced(id);
        if let Some(w) = self.watchers.get_mut(&id) {
            w.group = Group::Unsynced;
            w.min_rev = min_rev;
            self.unsynced.insert(id);
        }
    }
}

/// The watchers of one member.
pub struct WatchHub {
    store: Arc<MvccStore>,
    config: WatchConfig,
    state: Mutex<HubState>,
    /// Wakes the catch-up loop when a watcher becomes unsynced.
    wake: tokio::sync::Notify,
    gauges: WatchGauges,
}

/// etcd's watch gauges (`etcd_debugging_mvcc_*`); tests also use them to learn when a
/// client's watch is in place.
#[derive(Default, Clone)]
pub struct WatchGauges {
    pub streams: Gauge,
    pub watchers: Gauge,
    pub slow_watchers: Gauge,
}

/// Publishes the gauges when dropped, i.e. when the hub lock is released.
struct Locked<'a> {
    st: std::sync::MutexGuard<'a, HubState>,
    gauges: &'a WatchGauges,
}

impl std::ops::Deref for Locked<'_> {
    type Target = HubState;
    fn deref(&self) -> &HubState {
        &self.st
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut HubState {
        &mut self.st
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let n = self.st.watchers.len();
        self.gauges.watchers.set(n as i64);
        self.gauges.slow_watchers.set((n - self.st.synced_count) as i64);
    }
}

impl WatchHub {
    pub fn new(store: Arc<MvccStore>, config: WatchConfig) -> Arc<Self> {
        let rev = store.current_rev();
        Arc::new(WatchHub {
            store,
            config,
            state: Mutex::new(HubState { rev, ..Default::default() }),
            wake: tokio::sync::Notify::new(),
            gauges: WatchGauges::default(),
        })
    }

    /// Registers the hub's gauges under etcd's names.
    pub fn register_metrics(&self, m: &Metrics) {
        let g = &self.gauges;
        m.register_gauge("etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams.", g.streams.clone());
        m.register_gauge("etcd_debugging_mvcc_watcher_total", "Total number of watchers.", g.watchers.clone());
        m.register_gauge(
            "etcd_debugging_mvcc_slow_watcher_total",
            "Total number of unsynced slow watchers.",
            g.slow_watchers.clone(),
        );
    }

    pub fn gauges(&self) -> &WatchGauges {
        &self.gauges
    }

    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<MvccStore> {
        &self.store
    }

    fn lock(&self) -> Locked<'_> {
        Locked { st: self.state.lock().expect("watch hub lock"), gauges: &self.gauges }
    }

    /// The revision watchers are synced to (etcd's `watchStream.Rev`).
    pub fn rev(&self) -> i64 {
        self.lock().rev
    }

    /// (watchers, of which not synced).
    pub fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.watchers.len(), st.watchers.len() - st.synced_count)
    }

    /// Adds a watcher whose updates go to `tx`; returns its id and the revision the create
    /// response reports (etcd's `watchableStore.watch`).
    pub fn register(&self, spec: WatchSpec, tx: mpsc::Sender<Update>) -> (WatcherId, i64) {
        let mut st = self.lock();
        let rev = st.rev;
        let id = st.next_id;
        st.next_id += 1;
        let start = spec.start_revision;
        let synced = start == 0 || start > rev;
        let min_rev = if synced { start.max(rev + 1) } else { start };
        st.watchers.insert(id, Watcher { spec, min_rev, group: Group::Unsynced, tx });
        if synced {
            st.add_synced(id);
        } else {
            st.unsynced.insert(id);
            self.wake.notify_one();
        }
        (id, rev)
    }

    /// Removes a watcher; nothing more is sent for it.
    pub fn cancel(&self, id: WatcherId) {
        let mut st = self.lock();
        st.remove_synced(id);
        st.unsynced.remove(&id);
        st.watchers.remove(&id);
    }

    /// Hands the events of a committed batch to the synced watchers, one update per revision
    /// (as etcd notifies once per txn); `rev` is the store's revision after the batch. Never
    /// blocks: a watcher whose stream is full falls back to catch-up.
    pub fn notify(&self, events: Vec<Event>, rev: i64) {
        let mut st = self.lock();
        if st.watchers.is_empty() {
            st.rev = rev.max(st.rev);
            return;
        }
        let mut events = events.into_iter().peekable();
        let mut demoted = false;
        while let Some(first) = events.next() {
            let r = first.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            let mut group = vec![first];
            while let Some(e) = events.next_if(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision) == r) {
                group.push(e);
            }
            demoted |= notify_revision(&mut st, r, group);
            st.rev = r.max(st.rev);
        }
        st.rev = rev.max(st.rev);
        drop(st);
        if demoted {
            self.wake.notify_one();
        }
    }

    /// After a Raft snapshot replaced the store: every watcher rereads what it misses from
    /// the new store (or learns it was compacted), since the events between the old and the
    /// new state were never applied here.
    pub fn store_replaced(&self) {
        let mut st = self.lock();
        let old_rev = st.rev;
        st.rev = self.store.current_rev();
        st.epoch += 1;
        let ids: Vec<WatcherId> = st.watchers.keys().copied().collect();
        for id in ids {
            let group = st.watchers[&id].group;
            match group {
                Group::Synced => {
                    // A synced watcher has seen everything up to the old revision.
                    let min = st.watchers[&id].min_rev.max(old_rev + 1);
                    st.demote(id, min);
                }
                // Its catch-up result is discarded by the epoch check; it rereads.
                Group::Syncing | Group::Unsynced => {}
            }
        }
        self.wake.notify_one();
    }

    /// A progress notification for one watcher (etcd's `watchableStore.progress`): only a
    /// synced watcher can vouch that it has seen everything up to the hub's revision.
    pub fn progress(&self, id: WatcherId) {
        let st = self.lock();
        if let Some(w) = st.watchers.get(&id) {
            if w.group == Group::Synced {
                let _ = w.tx.try_send(Update { watch_id: w.spec.watch_id, revision: st.rev, ..Default::default() });
            }
        }
    }

    /// etcd 3.5's `progressAll`: when every watcher of a stream is synced, one notification
    /// with watch id -1 goes to the stream (behind any events already queued, so the
    /// revision it reports never runs ahead of what the client received). Returns false
    /// when it could not be sent yet; the caller retries later.
    pub fn progress_all(&self, ids: &[WatcherId]) -> bool {
        let st = self.lock();
        let mut tx = None;
        for id in ids {
            match st.watchers.get(id) {
                Some(w) if w.group == Group::Synced => tx = tx.or(Some(&w.tx)),
                Some(_) => return false,
                None => {}
            }
        }
        match tx {
            Some(tx) => tx.try_send(Update { watch_id: -1, revision: st.rev, ..Default::default() }).is_ok(),
            None => true,
        }
    }

    /// Serves unsynced watchers until the hub is dropped: a round whenever one is waiting,
    /// at most every `sync_interval` when rounds make no progress.
    pub async fn run_sync_loop(self: Arc<Self>) {
        loop {
            let pending = !self.lock().unsynced.is_empty();
            if !pending {
                self.wake.notified().await;
            }
            let hub = self.clone();
            let progressed = match tokio::task::spawn_blocking(move || hub.sync_once()).await {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    tracing::warn!("watch catch-up: {e}");
                    false
                }
                Err(e) => {
                    tracing::error!("watch catch-up task: {e}");
                    false
                }
            };
            if !progressed {
                tokio::select! {
                    _ = tokio::time::sleep(self.config.sync_interval) => {}
                    _ = self.wake.notified() => {}
                }
            }
        }
    }

    /// One catch-up round (etcd's `syncWatchers`); returns whether any watcher advanced.
    ///
    /// The picked watchers are marked `Syncing` and the lock is released for the read, so
    /// writes go on. That is safe because the read covers up to the hub revision at pick
    /// time, and on the way back, under the lock again, a watcher joins the synced group only
    /// if no revision was notified since; otherwise it stays unsynced and the next round
    /// reads the rest. Revisions above the hub revision are committed (notify runs after the
    /// commit), so the read never misses a row that was still being written.
    pub fn sync_once(&self) -> Result<bool, EtcdError> {
        let (picked, from, to, epoch) = {
            let mut st = self.lock();
            let rev = st.rev;
            // Round robin from where the last round stopped, so watchers that cannot be served
            // (their stream is full) never starve the others.
            let cursor = st.sync_cursor;
            let ids: Vec<WatcherId> = st
                .unsynced
                .range(cursor..)
                .chain(st.unsynced.range(..cursor))
                .take(self.config.max_watchers_per_sync)
                .copied()
                .collect();
            st.sync_cursor = ids.last().map_or(0, |id| id + 1);
            let mut picked = Vec::new();
            let mut from = i64::MAX;
            let mut progressed = false;
            for id in ids {
                let w = st.watchers.get_mut(&id).expect("unsynced watcher exists");
                if w.tx.capacity() == 0 {
                    // No room for what it would be sent: not worth a history read.
                    continue;
                }
                st.unsynced.remove(&id);
                let w = st.watchers.get_mut(&id).expect("unsynced watcher exists");
                if w.min_rev > rev {
                    st.add_synced(id);
                    progressed = true;
                    continue;
                }
                w.group = Group::Syncing;
                from = from.min(w.min_rev);
                picked.push(id);
            }
            if picked.is_empty() {
                return Ok(progressed);
            }
            (picked, from, rev, st.epoch)
        };
        let read = self.store.history(from, to, self.config.max_rows_per_sync, self.config.max_bytes_per_sync);
        let mut st = self.lock();
        let history = match read {
            Ok(h) => h,
            Err(e) => {
                for id in picked {
                    if let Some(w) = st.watchers.get_mut(&id) {
                        w.group = Group::Unsynced;
                        st.unsynced.insert(id);
                    }
                }
                return Err(e);
            }
        };
        let stale = st.epoch != epoch;
        let revision = if history.last_rev < to { history.last_rev } else { to };
        let mut progressed = false;
        for id in picked {
            let hub_rev = st.rev;
            let Some(w) = st.watchers.get_mut(&id) else { continue };
            w.group = Group::Unsynced;
            let outcome = if stale {
                Outcome::Retry
            } else if w.min_rev < history.compacted_rev {
                let u =
                    Update { watch_id: w.spec.watch_id, compact_revision: history.compacted_rev, ..Default::default() };
                if w.tx.try_send(u).is_ok() {
                    Outcome::Gone
                } else {
                    Outcome::Retry
                }
            } else {
                let events: Vec<Event> = history
                    .events
                    .iter()
                    .filter(|e| {
                        let kv = e.kv.as_ref().expect("events carry a kv");
                        kv.mod_revision >= w.min_rev && w.spec.contains(&kv.key) && w.spec.wants(e)
                    })
                    .cloned()
                    .collect();
                let sent = events.is_empty() || {
                    let u = Update { watch_id: w.spec.watch_id, events, revision, compact_revision: 0 };
                    w.tx.try_send(u).is_ok()
                };
                if sent {
                    w.min_rev = w.min_rev.max(history.last_rev + 1);
                    if w.min_rev > hub_rev {
                        Outcome::Synced
                    } else {
                        Outcome::Advanced
                    }
                } else {
                    Outcome::Retry
                }
            };
            match outcome {
                Outcome::Retry => {
                    st.unsynced.insert(id);
                }
                Outcome::Advanced => {
                    progressed = true;
                    st.unsynced.insert(id);
                }
                Outcome::Synced => {
                    progressed = true;
                    st.add_synced(id);
                }
                Outcome::Gone => {
                    progressed = true;
                    st.watchers.remove(&id);
                }
            }
        }
        Ok(progressed)
    }
}

/// Where a watcher goes after a catch-up round.
enum Outcome {
    /// Not served (its stream was full, or the read is stale): try again next round.
    Retry,
    /// Got what was read, still behind.
    Advanced,
    Synced,
    /// Cancelled: its history was compacted.
    Gone,
}

/// Sends one revision's events to the synced watchers that want them; true when a watcher
/// fell behind.
fn notify_revision(st: &mut HubState, rev: i64, events: Vec<Event>) -> bool {
    let mut demoted = false;
    // Per watcher, its events in order; a Vec keeps the order of first appearance.
    let mut slot: HashMap<WatcherId, usize> = HashMap::new();
    let mut batches: Vec<(WatcherId, Vec<Event>)> = Vec::new();
    let mut add = |id: WatcherId, ev: &Event| {
        let i = *slot.entry(id).or_insert_with(|| {
            batches.push((id, Vec::new()));
            batches.len() - 1
        });
        batches[i].1.push(ev.clone());
    };
    for ev in &events {
        let key = &ev.kv.as_ref().expect("events carry a kv").key;
        if let Some(ids) = st.synced_keys.get(key.as_slice()) {
            for id in ids {
                let w = &st.watchers[id];
                if w.min_rev <= rev && w.spec.wants(ev) {
                    add(*id, ev);
                }
            }
        }
        for id in &st.synced_ranges {
            let w = &st.watchers[id];
            if w.min_rev <= rev && w.spec.contains(key) && w.spec.wants(ev) {
                add(*id, ev);
            }
        }
    }
    for (id, events) in batches {
        let w = st.watchers.get_mut(&id).expect("synced watcher exists");
        let u = Update { watch_id: w.spec.watch_id, events, revision: rev, compact_revision: 0 };
        match w.tx.try_send(u) {
            Ok(()) => w.min_rev = rev + 1,
            // Behind: catch up from storage, starting with this revision.
            Err(mpsc::error::TrySendError::Full(_)) => {
                st.demote(id, rev);
                demoted = true;
            }
            // The stream is closing and cancels its watchers itself.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
    demoted
}

#[cfg(test)]
mod tests;
