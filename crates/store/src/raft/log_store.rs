//! The Raft log on redb, in its own file beside the state machine's.
//!
//! A separate file lets log appends (fsync'd before an entry counts towards a majority) and
//! state machine commits proceed without contending for redb's single writer. Entries are
//! stored by index; openraft hands appends over in batches, so one fsync covers many client
//! requests (group commit).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, OptionalSend, RaftLogReader, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{storage_io_err, LogId, StorageError, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// Handle on the log file; cheap to clone (readers for replication share the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let db = Database::create(path).map_err(storage_io_err)?;
        let txn = db.begin_write().map_err(storage_io_err)?;
        txn.open_table(LOG).map_err(storage_io_err)?;
        txn.open_table(STATE).map_err(storage_io_err)?;
        txn.commit().map_err(storage_io_err)?;
        Ok(LogStore { db: Arc::new(db) })
    }

    fn get_state<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StorageError> {
        let txn = self.db.begin_read().map_err(storage_io_err)?;
        let table = txn.open_table(STATE).map_err(storage_io_err)?;
        match table.get(name).map_err(storage_io_err)? {
            Some(v) => Ok(Some(bincode::deserialize(v.value()).map_err(storage_io_err)?)),
            None => Ok(None),
        }
    }

    fn put_state<T: serde::Serialize>(&self, name: &str, value: &T, durability: Durability) -> Result<(), StorageError> {
        let bytes = bincode::serialize(value).map_err(storage_io_err)?;
        let mut txn = self.db.begin_write().map_err(storage_io_err)?;
        txn.set_durability(durability).map_err(storage_io_err)?;
        txn.open_table(STATE).map_err(storage_io_err)?.insert(name, bytes.as_slice()).map_err(storage_io_err)?;
        txn.commit().map_err(storage_io_err)
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
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let txn = self.db.begin_read().map_err(storage_io_err)?;
        let table = txn.open_table(LOG).map_err(storage_io_err)?;
        let mut out = Vec::new();
        for row in table.range::<u64>((Bound::Included(start), end)).map_err(storage_io_err)? {
            let (_, v) = row.map_err(storage_io_err)?;
            out.push(bincode::deserialize(v.value()).map_err(storage_io_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged = self.get_state::<Option<LogId>>(LAST_PURGED)?.flatten();
        let txn = self.db.begin_read().map_err(storage_io_err)?;
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
        self.put_state(VOTE, vote, Durability::Immediate)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.get_state(VOTE)
    }

    /// The committed position is only a hint that lets a restarted member re-apply without
    /// waiting for the leader, so it rides along with the next fsync'd append.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_state(COMMITTED, &committed, Durability::None)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_state::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let txn = self.db.begin_write().map_err(storage_io_err)?;
        {
            let mut table = txn.open_table(LOG).map_err(storage_io_err)?;
            for entry in entries {
                let bytes = bincode::serialize(&entry).map_err(storage_io_err)?;
                table.insert(entry.log_id.index, bytes.as_slice()).map_err(storage_io_err)?;
            }
        }
        // Immediate durability: the entry is on disk before openraft counts this member.
        let res = txn.commit().map_err(std::io::Error::other);
        let failed = res.as_ref().err().map(storage_io_err);
        callback.log_io_completed(res);
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(storage_io_err)?;
        txn.open_table(LOG).map_err(storage_io_err)?.retain_in(log_id.index.., |_, _| false).map_err(storage_io_err)?;
        txn.commit().map_err(storage_io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = bincode::serialize(&Some(log_id)).map_err(storage_io_err)?;
        let txn = self.db.begin_write().map_err(storage_io_err)?;
        txn.open_table(STATE).map_err(storage_io_err)?.insert(LAST_PURGED, bytes.as_slice()).map_err(storage_io_err)?;
        txn.open_table(LOG).map_err(storage_io_err)?.retain_in(..=log_id.index, |_, _| false).map_err(storage_io_err)?;
        txn.commit().map_err(storage_io_err)
    }
}
