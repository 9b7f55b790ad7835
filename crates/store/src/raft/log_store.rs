//! The Raft log on redb, in its own file beside the state machine's, written by one
//! dedicated thread that commits in groups.
//!
//! openraft hands us appends and moves on; the entry counts towards a majority only when the
//! callback fires, after the fsync. The writer thread drains everything queued while the
//! previous fsync ran and commits it in one redb transaction (group commit), so many client
//! requests share one fsync and Raft's core task never blocks on the disk.
//!
//! Until an entry is committed to the file it is served from `unflushed`, because openraft
//! replicates (and may even apply) entries before the local fsync completes.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, OptionalSend, RaftLogReader, Vote};
use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use super::{storage_io_err, LogId, StorageError, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// How long the writer waits for more appends when the log is busy (see `writer_loop`).
const LINGER: std::time::Duration = std::time::Duration::from_micros(150);

/// Upper bound on queued operations folded into one disk commit.
const MAX_GROUP: usize = 4096;

/// A change to the log file, applied by the writer thread in queue order.
enum Op {
    Append(Vec<(LogId, Vec<u8>)>, LogFlushed<TypeConfig>),
    Truncate(u64, oneshot::Sender<Result<(), String>>),
    Purge(LogId, oneshot::Sender<Result<(), String>>),
    SetState(&'static str, Vec<u8>, oneshot::Sender<Result<(), String>>),
}

struct Shared {
    db: Database,
    /// The latest committed position openraft reported, written with the next group commit
    /// (it never costs an fsync of its own).
    committed: Mutex<Option<Vec<u8>>>,
    /// Entries appended but not yet committed to the file, by index.
    unflushed: Mutex<BTreeMap<u64, (LogId, Arc<Vec<u8>>)>>,
}

/// Handle on the log; cheap to clone (replication readers share it).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    writer: mpsc::Sender<Op>,
}

impl LogStore {
    /// Opens the log; each group commit's duration goes into `fsync_seconds`.
    pub fn open(path: &Path, fsync_seconds: Histogram) -> Result<Self, StorageError> {
        let db = Database::create(path).map_err(storage_io_err)?;
        let txn = db.begin_write().map_err(storage_io_err)?;
        txn.open_table(LOG).map_err(storage_io_err)?;
        txn.open_table(STATE).map_err(storage_io_err)?;
        txn.commit().map_err(storage_io_err)?;
        let shared = Arc::new(Shared { db, committed: Mutex::new(None), unflushed: Mutex::new(BTreeMap::new()) });
        let (tx, rx) = mpsc::channel();
        let for_writer = shared.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(for_writer, rx, fsync_seconds))
            .map_err(storage_io_err)?;
        Ok(LogStore { shared, writer: tx })
    }

    fn get_state<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StorageError> {
        let txn = self.shared.db.begin_read().map_err(storage_io_err)?;
        let table = txn.open_table(STATE).map_err(storage_io_err)?;
        match table.get(name).map_err(storage_io_err)? {
            Some(v) => Ok(Some(bincode::deserialize(v.value()).map_err(storage_io_err)?)),
            None => Ok(None),
        }
    }

    fn send(&self, op: Op) -> Result<(), StorageError> {
        self.writer.send(op).map_err(|_| storage_io_err("raft log writer stopped"))
    }

    async fn send_and_wait(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Op,
    ) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| storage_io_err("raft log writer stopped"))?.map_err(storage_io_err)
    }
}

/// The writer thread: take what is queued, write it in one transaction, fsync once, report.
fn writer_loop(shared: Arc<Shared>, rx: mpsc::Receiver<Op>, fsync_seconds: Histogram) {
    // Whether appends kept arriving while the previous group was being written: then more
    // are likely on their way, and waiting a moment for them saves fsyncs.
    let mut busy = false;
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        let linger_until = std::time::Instant::now() + LINGER;
        while ops.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(mpsc::TryRecvError::Empty) if busy => {
                    let left = linger_until.saturating_duration_since(std::time::Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(op) => ops.push(op),
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            }
        }
        busy = ops.iter().filter(|op| matches!(op, Op::Append(..))).count() > 1;
        let t0 = std::time::Instant::now();
        let result = shared.db.begin_write().map_err(|e| e.to_string()).and_then(|txn| {
            write_ops(&txn, &ops)?;
            if let Some(committed) = shared.committed.lock().expect("committed lock").take() {
                let mut state = txn.open_table(STATE).map_err(|e| e.to_string())?;
                state.insert(COMMITTED, committed.as_slice()).map_err(|e| e.to_string())?;
            }
            txn.commit().map_err(|e| e.to_string())
        });
        fsync_seconds.observe(t0.elapsed().as_secs_f64());
        tracing::trace!(ops = ops.len(), us = t0.elapsed().as_micros() as u64, "raft log group commit");
        if result.is_ok() {
            // Now in the file: drop the in-memory copies (unless a newer entry replaced one).
            let mut unflushed = shared.unflushed.lock().expect("unflushed lock");
            for op in &ops {
                if let Op::Append(entries, _) = op {
                    for (log_id, _) in entries {
                        if unflushed.get(&log_id.index).is_some_and(|(l, _)| l == log_id) {
                            unflushed.remove(&log_id.index);
                        }
                    }
                }
            }
        }
        for op in ops {
            let r = result.clone();
            match op {
                Op::Append(_, cb) => cb.log_io_completed(r.map_err(std::io::Error::other)),
                Op::Truncate(_, tx) | Op::Purge(_, tx) | Op::SetState(_, _, tx) => {
                    let _ = tx.send(r);
                }
            }
        }
    }
}

fn write_ops(txn: &WriteTransaction, ops: &[Op]) -> Result<(), String> {
    let mut log = txn.open_table(LOG).map_err(|e| e.to_string())?;
    let mut state = txn.open_table(STATE).map_err(|e| e.to_string())?;
    for op in ops {
        match op {
            Op::Append(entries, _) => {
                for (log_id, bytes) in entries {
                    log.insert(log_id.index, bytes.as_slice()).map_err(|e| e.to_string())?;
                }
            }
            Op::Truncate(from, _) => {
                log.retain_in(*from.., |_, _| false).map_err(|e| e.to_string())?;
            }
            Op::Purge(upto, _) => {
                let b = bincode::serialize(&Some(*upto)).map_err(|e| e.to_string())?;
                state.insert(LAST_PURGED, b.as_slice()).map_err(|e| e.to_string())?;
                log.retain_in(..=upto.index, |_, _| false).map_err(|e| e.to_string())?;
            }
            Op::SetState(name, bytes, _) => {
                state.insert(*name, bytes.as_slice()).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => *i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        // Snapshot the in-memory tail and open the file read under one lock: the writer drops
        // an entry from memory only after its commit, so each entry is in one or the other.
        let (pending, txn) = {
            let unflushed = self.shared.unflushed.lock().expect("unflushed lock");
            let pending: Vec<(u64, Arc<Vec<u8>>)> =
                unflushed.range((Bound::Included(start), end)).map(|(i, (_, b))| (*i, b.clone())).collect();
            (pending, self.shared.db.begin_read().map_err(storage_io_err)?)
        };
        let mut by_index: BTreeMap<u64, Entry<TypeConfig>> = BTreeMap::new();
        let table = txn.open_table(LOG).map_err(storage_io_err)?;
        for row in table.range::<u64>((Bound::Included(start), end)).map_err(storage_io_err)? {
            let (k, v) = row.map_err(storage_io_err)?;
            by_index.insert(k.value(), bincode::deserialize(v.value()).map_err(storage_io_err)?);
        }
        for (i, b) in pending {
            by_index.insert(i, bincode::deserialize(&b).map_err(storage_io_err)?);
        }
        Ok(by_index.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged = self.get_state::<Option<LogId>>(LAST_PURGED)?.flatten();
        if let Some((_, (log_id, _))) = self.shared.unflushed.lock().expect("unflushed lock").last_key_value() {
            return Ok(LogState { last_purged_log_id: last_purged, last_log_id: Some(*log_id) });
        }
        let txn = self.shared.db.begin_read().map_err(storage_io_err)?;
        let table = txn.open_table(LOG).map_err(storage_io_err)?;
        let last = match table.last().map_err(storage_io_err)? {
            Some((_, v)) => Some(bincode::deserialize::<Entry<TypeConfig>>(v.value()).map_err(storage_io_err)?.log_id),
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let bytes = bincode::serialize(vote).map_err(storage_io_err)?;
        self.send_and_wait(|tx| Op::SetState(VOTE, bytes, tx)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.get_state(VOTE)
    }

    /// Only a hint that lets a restarted member re-apply without waiting for the leader, so
    /// it rides along with the next group commit and nobody waits for it.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = bincode::serialize(&committed).map_err(storage_io_err)?;
        *self.shared.committed.lock().expect("committed lock") = Some(bytes);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_state::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Vec::new();
        {
            let mut unflushed = self.shared.unflushed.lock().expect("unflushed lock");
            for entry in entries {
                let bytes = Arc::new(bincode::serialize(&entry).map_err(storage_io_err)?);
                unflushed.insert(entry.log_id.index, (entry.log_id, bytes.clone()));
                batch.push((entry.log_id, Arc::unwrap_or_clone(bytes)));
            }
        }
        self.send(Op::Append(batch, callback))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.shared.unflushed.lock().expect("unflushed lock").retain(|i, _| *i < log_id.index);
        self.send_and_wait(|tx| Op::Truncate(log_id.index, tx)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.shared.unflushed.lock().expect("unflushed lock").retain(|i, _| *i > log_id.index);
        self.send_and_wait(|tx| Op::Purge(log_id, tx)).await
    }
}
