//! The Raft log: an append-only, checksummed, chunked write-ahead log (the `raft-log` crate,
//! written by openraft's author for exactly this job), behind openraft's storage traits.
//!
//! Why not a B-tree: every Raft append is a sequential write that must be fsync'd before the
//! entry counts towards a majority. A B-tree (the redb file this replaced) pays for page
//! allocation, copy-on-write of the path to the root and a header write on every commit, on
//! the hottest path of the system; profiling put it at a third of a member's CPU. A WAL
//! appends one record per entry and syncs one file range.
//!
//! Appending only encodes the entry into the open chunk's buffer (on the caller's task); the
//! crate's flush worker thread writes and fsyncs in groups (everything queued shares one
//! fsync) and then fires the callbacks in order, which is when openraft counts the entry.
//! Recent entries stay in the crate's payload cache, so replication and apply read them from
//! memory without decoding.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, EntryPayload, OptionalSend, RaftLogReader, Vote};
use prometheus_client::metrics::histogram::Histogram;
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::RaftLog;
use tokio::sync::oneshot;

use super::{storage_io_err, LogId, StorageError, TypeConfig};

/// Chunk files are closed at this size; purging deletes whole chunks, so this bounds how much
/// disk a log behind its snapshot keeps (etcd's WAL segments are 64 MiB too).
const CHUNK_MAX_BYTES: usize = 64 << 20;
/// Entries kept decoded in memory for replication and apply; older ones are read from disk.
/// 32 MiB holds ~100k puts of 256 bytes: far more than a follower that keeps up lags by,
/// while each MiB here is a MiB of every member's RSS (issue 4 holds it to etcd's).
const CACHE_MAX_BYTES: usize = 32 << 20;
/// How far ahead of its writes the WAL allocates its chunk file (our patch of `chunked-wal`,
/// see vendor/README.md): an fdatasync after an append that grows the file must also write
/// the inode's new size, one after a write inside allocated space need not. Measured here
/// with 400-byte appends: fdatasync 122 µs when appending, 87 µs into allocated space. etcd
/// preallocates its 64 MB WAL segments for the same reason; allocating in 8 MiB steps keeps
/// a member's disk use close to what its log holds.
const PREALLOCATE_BYTES: usize = 8 << 20;
/// How long the flush worker waits for more writes to share an fsync with: not at all. It
/// still groups everything queued while the previous fsync ran (our patch of `chunked-wal`, see
/// vendor/README.md), which is all the grouping there is to get: a follower's Raft core sends
/// its next append only after this one is durable, and on this disk even a 10 µs timed wait
/// costs more (timer slack, a wakeup) than it saves. Measured: 1 client 1,295 req/s at 0 vs
/// 1,095 at 50 µs; 64 clients 11.2-11.7k vs 8.7-10.7k.
const FLUSH_BATCH_WAIT: std::time::Duration = std::time::Duration::ZERO;

/// The type family `raft-log` is instantiated with.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct WalTypes;

impl raft_log::Types for WalTypes {
    type LogId = WalLogId;
    type LogPayload = WalPayload;
    type Vote = WalVote;
    type Callback = Flushed;
    type UserData = ();

    fn log_index(log_id: &WalLogId) -> u64 {
        log_id.0.index
    }

    fn payload_size(payload: &WalPayload) -> u64 {
        match &payload.0 {
            EntryPayload::Normal(p) => p.0.iter().map(|c| c.size() as u64 + 16).sum(),
            _ => 64,
        }
    }
}

/// Encodes serde types as length-prefixed bincode, the record body format of our WAL types.
fn encode_bincode<T: serde::Serialize, W: io::Write>(value: &T, mut w: W) -> io::Result<usize> {
    let bytes = bincode::serialize(value).map_err(io::Error::other)?;
    w.write_all(&(bytes.len() as u32).to_be_bytes())?;
    w.write_all(&bytes)?;
    Ok(4 + bytes.len())
}

fn decode_bincode<T: serde::de::DeserializeOwned, R: io::Read>(mut r: R) -> io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let mut bytes = vec![0u8; u32::from_be_bytes(len) as usize];
    r.read_exact(&mut bytes)?;
    bincode::deserialize(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

macro_rules! bincode_codec {
    ($wrapper:ident) => {
        impl raft_log::codeq::Encode for $wrapper {
            fn encode<W: io::Write>(&self, w: W) -> io::Result<usize> {
                encode_bincode(&self.0, w)
            }
        }
        impl raft_log::codeq::Decode for $wrapper {
            fn decode<R: io::Read>(r: R) -> io::Result<Self> {
                decode_bincode(r).map($wrapper)
            }
        }
    };
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct WalLogId(LogId);
bincode_codec!(WalLogId);

#[derive(Debug, Clone)]
pub(crate) struct WalPayload(EntryPayload<TypeConfig>);
bincode_codec!(WalPayload);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd)]
pub(crate) struct WalVote(Vote<u64>);
bincode_codec!(WalVote);

/// Who is told when a flush is durable: openraft (appends) or a waiting storage call.
pub(crate) enum Flushed {
    Append(LogFlushed<TypeConfig>, Instant, Histogram),
    Waiter(oneshot::Sender<io::Result<()>>),
}

impl raft_log::Callback for Flushed {
    fn send(self, res: io::Result<()>) {
        match self {
            Flushed::Append(cb, started, histogram) => {
                histogram.observe(started.elapsed().as_secs_f64());
                cb.log_io_completed(res);
            }
            Flushed::Waiter(tx) => {
                let _ = tx.send(res);
            }
        }
    }
}

/// Handle on the log; cheap to clone (replication and apply read through clones).
///
/// The lock is held only to buffer a record or to read the in-memory index and cache; disk
/// writes and fsyncs happen on the flush worker thread without it.
#[derive(Clone)]
pub struct LogStore {
    log: Arc<RwLock<RaftLog<WalTypes>>>,
    /// Time from handing an append to the flush worker until it is durable.
    fsync_seconds: Histogram,
}

impl LogStore {
    /// Opens (or creates) the log directory and replays it.
    pub fn open(dir: &Path, fsync_seconds: Histogram) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(storage_io_err)?;
        let mut config = raft_log::Config::new(dir.to_string_lossy());
        config.wal.chunk_max_size = Some(CHUNK_MAX_BYTES);
        config.wal.flush_batch_wait = Some(FLUSH_BATCH_WAIT);
        config.wal.preallocate_size = Some(PREALLOCATE_BYTES);
        config.log_cache_capacity = Some(CACHE_MAX_BYTES);
        let log = RaftLog::open(Arc::new(config)).map_err(storage_io_err)?;
        Ok(LogStore { log: Arc::new(RwLock::new(log)), fsync_seconds })
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RaftLog<WalTypes>> {
        self.log.write().expect("raft log lock")
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RaftLog<WalTypes>> {
        self.log.read().expect("raft log lock")
    }

    /// Buffers a change with `change`, then waits until it (and all before it) is durable.
    async fn durably(&self, change: impl FnOnce(&mut RaftLog<WalTypes>) -> io::Result<()>) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut log = self.write();
            change(&mut log).map_err(storage_io_err)?;
            log.flush(true, Some(Flushed::Waiter(tx))).map_err(storage_io_err)?;
        }
        rx.await.map_err(|_| storage_io_err("raft log flush worker stopped"))?.map_err(storage_io_err)
    }
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
            Bound::Included(i) => *i + 1,
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let log = self.read();
        log.read(start, end)
            .map(|r| r.map(|(log_id, payload)| Entry { log_id: log_id.0, payload: payload.0 }).map_err(storage_io_err))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.read();
        let state = log.log_state();
        Ok(LogState { last_purged_log_id: state.purged().map(|l| l.0), last_log_id: state.last().map(|l| l.0) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let vote = WalVote(*vote);
        self.durably(|log| log.save_vote(vote).map(drop)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.read().log_state().vote().map(|v| v.0))
    }

    /// Only a hint that lets a restarted member re-apply without waiting for the leader, so
    /// it is buffered and reaches the disk with the next flush; nobody waits for it.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(committed) = committed {
            if let Err(e) = self.write().commit(WalLogId(committed)) {
                tracing::debug!(error = %e, "committed hint not recorded");
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read().log_state().committed().map(|l| l.0))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut log = self.write();
        log.append(entries.into_iter().map(|e| (WalLogId(e.log_id), WalPayload(e.payload)))).map_err(storage_io_err)?;
        let flushed = Flushed::Append(callback, Instant::now(), self.fsync_seconds.clone());
        log.flush(true, Some(flushed)).map_err(storage_io_err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.durably(|log| log.truncate(log_id.index).map(drop)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.durably(|log| log.purge(WalLogId(log_id)).map(drop)).await
    }
}
