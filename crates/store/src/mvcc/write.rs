//! The write side of the MVCC store: one [`WriteBatch`] per Raft apply round, one
//! [`TxnWrite`] per etcd request inside it (etcd's `TxnWrite`: all changes of a request share
//! one main revision and are numbered by sub revision).

use kaname_proto::mvccpb::{event::EventType, Event, KeyValue};
use prost::Message;
use redb::WriteTransaction;

use super::{bytes_to_rev, check_read_rev, load_values, rev_to_bytes, MvccStore, RangeOptions, RangeResult, Revision};
use super::{KEY_TABLE, META_ALARMS, META_COMPACTED_REV, META_CURRENT_REV, META_TABLE};
use crate::alarm::Alarms;
use crate::auth::tokens::Tokens;
use crate::auth::AuthState;
use crate::error::{internal, EtcdError};

/// All changes of one apply round, committed to disk in a single redb transaction together
/// with whatever the caller records through [`WriteBatch::set_meta`] (the Raft applied
/// position), so a crash can never separate the data from the log position it came from.
pub struct WriteBatch<'s> {
    pub(super) store: &'s MvccStore,
    /// Keeps whole-file rewrites out until this round is committed (see `MvccStore::writer`).
    _writer: std::sync::MutexGuard<'s, ()>,
    /// New alarm state to publish once committed.
    pending_alarms: Option<Alarms>,
    /// New auth state to publish once committed.
    pending_auth: Option<std::sync::Arc<AuthState>>,
    pub(super) txn: WriteTransaction,
    /// Current revision including the requests already applied in this batch.
    rev: i64,
    /// Compacted revision including compactions applied in this batch.
    compacted: i64,
    /// A compaction to carry out on the index and the rows once the batch is committed and
    /// published; doing it earlier could drop revisions that readers of the still-published
    /// older revision need.
    pending_compact: Option<i64>,
    /// The changes of the batch as watch events, in revision order (see [`WriteBatch::take_events`]).
    events: Vec<Event>,
}

impl<'s> WriteBatch<'s> {
    pub(super) fn begin(store: &'s MvccStore) -> Result<Self, EtcdError> {
        let writer = store.writer.lock().expect("writer lock");
        let txn = store.db().begin_write().map_err(internal)?;
        let (rev, compacted) = {
            let st = store.state.read().expect("index lock");
            (st.current_rev, st.compacted_rev)
        };
        Ok(WriteBatch {
            store,
            _writer: writer,
            pending_alarms: None,
            pending_auth: None,
            txn,
            rev,
            compacted,
            pending_compact: None,
            events: Vec::new(),
        })
    }

    /// The current revision as requests in this batch see it.
    pub fn rev(&self) -> i64 {
        self.rev
    }

    /// Starts the changes of one request.
    pub fn txn(&mut self) -> TxnWrite<'_, 's> {
        let begin_rev = self.rev;
        TxnWrite { batch: self, begin_rev, changes: 0 }
    }

    /// etcd's `Compact`: validated now, carried out after commit (see `pending_compact`).
    pub fn compact(&mut self, rev: i64) -> Result<(), EtcdError> {
        if rev <= self.compacted {
            return Err(EtcdError::Compacted);
        }
        if rev > self.rev {
            return Err(EtcdError::FutureRev);
        }
        self.compacted = rev;
        self.pending_compact = Some(rev);
        self.set_meta(META_COMPACTED_REV, &rev.to_be_bytes())
    }

    /// Size of the backend file (what the quota is checked against).
    pub fn db_size(&self) -> u64 {
        self.store.db_size()
    }

    /// The alarms as requests in this batch see them.
    pub fn alarms(&self) -> Alarms {
        self.pending_alarms.clone().unwrap_or_else(|| self.store.alarms())
    }

    /// Records the cluster's alarms with this batch; they take effect for the requests after
    /// it in the batch at once, and for everyone else once committed.
    pub fn set_alarms(&mut self, alarms: Alarms) -> Result<(), EtcdError> {
        self.set_meta(META_ALARMS, &serde_json::to_vec(&alarms).map_err(internal)?)?;
        self.pending_alarms = Some(alarms);
        Ok(())
    }

    /// The auth state as requests in this batch see it.
    pub fn auth(&self) -> std::sync::Arc<AuthState> {
        self.pending_auth.clone().unwrap_or_else(|| self.store.auth())
    }

    /// Records the auth state with this batch (in the `auth` table), visible as
    /// [`WriteBatch::set_alarms`] is.
    pub fn set_auth(&mut self, auth: AuthState) -> Result<(), EtcdError> {
        super::auth_rows::store(&self.txn, &auth)?;
        self.pending_auth = Some(std::sync::Arc::new(auth));
        Ok(())
    }

    /// The member's simple tokens (not persisted; see `auth::tokens`).
    pub fn tokens(&self) -> &Tokens {
        self.store.tokens()
    }

    /// The events of every change so far (etcd's `watchableStoreTxnWrite.End` builds the same
    /// list): PUTs carry the written kv, DELETEs a kv with only the key and the revision.
    /// Handed to the watchers only after [`WriteBatch::commit`], so no watcher ever sees a
    /// revision that readers cannot.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Persists a named value in the same transaction as the batch's data.
    pub fn set_meta(&mut self, name: &str, value: &[u8]) -> Result<(), EtcdError> {
        let mut meta = self.txn.open_table(META_TABLE).map_err(internal)?;
        meta.insert(name, value).map_err(internal)?;
        Ok(())
    }

    /// Commits the batch, then makes it visible to readers, then finishes a compaction.
    ///
    /// With `durable == false` the commit is not fsync'd (etcd's backend likewise commits
    /// its batches without waiting for the disk): a crash rolls the store back to its last
    /// durable commit, whose recorded Raft position makes openraft re-apply the rest from the
    /// log. The caller must make the store durable before the log behind it is purged.
    pub fn commit(mut self, durable: bool) -> Result<(), EtcdError> {
        let rev = self.rev;
        self.set_meta(META_CURRENT_REV, &rev.to_be_bytes())?;
        let durability = if durable { redb::Durability::Immediate } else { redb::Durability::None };
        self.txn.set_durability(durability).map_err(internal)?;
        self.txn.commit().map_err(internal)?;
        self.store.refresh_size();
        self.store.state.write().expect("index lock").current_rev = rev;
        if let Some(alarms) = self.pending_alarms.take() {
            *self.store.alarms.write().expect("alarms lock") = alarms;
        }
        if let Some(auth) = self.pending_auth.take() {
            *self.store.auth.write().expect("auth lock") = auth;
        }
        if let Some(compact_rev) = self.pending_compact {
            self.store.finish_compaction(compact_rev)?;
        }
        Ok(())
    }
}

impl MvccStore {
    /// Drops from the index and from disk the history a compaction at `rev` discards
    /// (etcd's `scheduleCompaction`). Also run at start, to finish a compaction that a crash
    /// interrupted after its revision was recorded.
    pub(super) fn finish_compaction(&self, rev: i64) -> Result<(), EtcdError> {
        let keep = {
            let mut st = self.state.write().expect("index lock");
            st.compacted_rev = st.compacted_rev.max(rev);
            st.index.compact(rev)
        };
        let txn = self.db().begin_write().map_err(internal)?;
        {
            let mut table = txn.open_table(KEY_TABLE).map_err(internal)?;
            let upper = rev_to_bytes(Revision { main: rev, sub: i64::MAX }, true);
            table.retain_in(..=upper.as_slice(), |k, _| keep.contains(&bytes_to_rev(k).0)).map_err(internal)?;
        }
        txn.commit().map_err(internal)
    }
}

/// The changes of one etcd request: a put, a delete or a whole txn.
pub struct TxnWrite<'b, 's> {
    pub(super) batch: &'b mut WriteBatch<'s>,
    begin_rev: i64,
    /// Number of changes so far: the next change's sub revision.
    changes: i64,
}

impl TxnWrite<'_, '_> {
    /// The revision reads inside this request observe: its own changes count.
    pub fn rev(&self) -> i64 {
        if self.changes > 0 {
            self.begin_rev + 1
        } else {
            self.begin_rev
        }
    }

    /// The revision this request's changes are written at.
    pub fn write_rev(&self) -> i64 {
        self.begin_rev + 1
    }

    pub fn has_changes(&self) -> bool {
        self.changes > 0
    }

    /// A range read that sees this request's earlier changes.
    pub fn range(&self, key: &[u8], end: Option<&[u8]>, opts: &RangeOptions) -> Result<RangeResult, EtcdError> {
        let cur = self.rev();
        let rev = check_read_rev(opts.rev, cur, self.batch.compacted)?;
        let limit = if opts.count_only { 1 } else { opts.limit };
        let (found, count) = self.batch.store.state.read().expect("index lock").index.range(key, end, rev, limit);
        if opts.count_only {
            return Ok(RangeResult { kvs: Vec::new(), count, rev: cur });
        }
        let table = self.batch.txn.open_table(KEY_TABLE).map_err(internal)?;
        let kvs = load_values(&table, &found)?;
        Ok(RangeResult { kvs, count, rev: cur })
    }

    /// The live value of one key as this request sees it.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, EtcdError> {
        Ok(self.range(key, None, &RangeOptions::default())?.kvs.pop())
    }

    /// Writes `key` (etcd's `storeTxnWrite.put`): keeps the create revision and bumps the
    /// version of a live key, starts a new generation otherwise.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> Result<(), EtcdError> {
        let rev = self.write_rev();
        let existing = self.batch.store.state.read().expect("index lock").index.get(key, rev).ok();
        let (create_revision, version) = match existing {
            Some(at) => (at.created.main, at.version + 1),
            None => (rev, 1),
        };
        let at = Revision { main: rev, sub: self.changes };
        let kv = KeyValue { key: key.to_vec(), create_revision, mod_revision: rev, version, value, lease };
        let mut table = self.batch.txn.open_table(KEY_TABLE).map_err(internal)?;
        table.insert(rev_to_bytes(at, false).as_slice(), kv.encode_to_vec().as_slice()).map_err(internal)?;
        drop(table);
        self.batch.store.state.write().expect("index lock").index.put(key, at);
        self.batch.store.lessor.attach(key, lease);
        self.batch.events.push(Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: None });
        self.changes += 1;
        Ok(())
    }

    /// Deletes every live key in the range, one tombstone each; returns how many.
    pub fn delete_range(&mut self, key: &[u8], end: Option<&[u8]>) -> Result<i64, EtcdError> {
        let rev = self.rev();
        let (found, _) = self.batch.store.state.read().expect("index lock").index.range(key, end, rev, 0);
        let mut table = self.batch.txn.open_table(KEY_TABLE).map_err(internal)?;
        let mut index = self.batch.store.state.write().expect("index lock");
        for (k, _) in &found {
            let at = Revision { main: self.write_rev(), sub: self.changes };
            let tomb = KeyValue { key: k.clone(), ..Default::default() };
            table.insert(rev_to_bytes(at, true).as_slice(), tomb.encode_to_vec().as_slice()).map_err(internal)?;
            index.index.tombstone(k, at).map_err(|e| internal(format!("tombstone {k:?}: {e:?}")))?;
            let kv = KeyValue { key: k.clone(), mod_revision: at.main, ..Default::default() };
            self.batch.events.push(Event { r#type: EventType::Delete as i32, kv: Some(kv), prev_kv: None });
            self.changes += 1;
        }
        drop(index);
        for (k, _) in &found {
            self.batch.store.lessor.detach(k);
        }
        Ok(found.len() as i64)
    }
}

impl Drop for TxnWrite<'_, '_> {
    /// A request's revision becomes the batch's current revision once it wrote anything
    /// (etcd's `storeTxnWrite.End`).
    fn drop(&mut self) {
        if self.changes > 0 {
            self.batch.rev = self.begin_rev + 1;
        }
    }
}
