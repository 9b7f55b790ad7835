//! Multi-version key-value storage: etcd's `mvcc` layer on top of redb.
//!
//! History lives in the redb table `key`, exactly as etcd keeps it in its bbolt bucket of the
//! same name: the row key is the revision (`main` and `sub`, big endian, so rows sort in
//! history order, plus a `t` mark on tombstones) and the row value is the encoded
//! `mvccpb.KeyValue`. Keeping etcd's layout byte for byte makes `HashKV` comparable with real
//! etcd's, and keeps the data a plain, inspectable history.
//!
//! Which revision of a key is visible at a given point is answered by the in-memory
//! [`index::TreeIndex`], rebuilt from the table at start, as etcd does.
//!
//! Concurrency: only the Raft apply task writes (through [`WriteBatch`]); readers never wait
//! for a disk write. A batch updates the index as it goes, but readers only look at revisions
//! up to the *published* current revision, which moves forward after the batch's redb commit,
//! so a reader never sees a revision whose row is not durable.

mod auth_rows;
mod history;
pub mod index;
mod lease_rows;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use kaname_proto::mvccpb::KeyValue;
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::alarm::Alarms;
use crate::auth::tokens::Tokens;
use crate::auth::AuthState;
use crate::error::{internal, EtcdError};
use auth_rows::AUTH_TABLE;
pub use history::History;
pub use index::{KeyAt, Revision, TreeIndex};
use lease_rows::LEASE_TABLE;
pub use write::{TxnWrite, WriteBatch};

/// History rows, named and laid out as etcd's bbolt bucket (see the module docs).
pub(crate) const KEY_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("key");
/// Small named values persisted atomically with the history (current and compacted revision,
/// the Raft applied position and membership, member attributes).
pub(crate) const META_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const META_CURRENT_REV: &str = "current_rev";
const META_ALARMS: &str = "alarms";
const META_COMPACTED_REV: &str = "compacted_rev";

/// Length of a revision row key without the tombstone mark: 8 + 1 + 8 bytes, as etcd's.
const REV_BYTES_LEN: usize = 17;

pub(crate) fn rev_to_bytes(rev: Revision, tombstone: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(REV_BYTES_LEN + 1);
    b.extend_from_slice(&rev.main.to_be_bytes());
    b.push(b'_');
    b.extend_from_slice(&rev.sub.to_be_bytes());
    if tombstone {
        b.push(b't');
    }
    b
}

pub(crate) fn bytes_to_rev(b: &[u8]) -> (Revision, bool) {
    let main = i64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
    let sub = i64::from_be_bytes(b[9..17].try_into().expect("8 bytes"));
    (Revision { main, sub }, b.len() > REV_BYTES_LEN && b[REV_BYTES_LEN] == b't')
}

/// What a range read asks for, beyond the key range (etcd's `mvcc.RangeOptions`).
#[derive(Debug, Clone, Default)]
pub struct RangeOptions {
    /// 0: no limit.
    pub limit: usize,
    /// 0 or negative: the current revision.
    pub rev: i64,
    pub count_only: bool,
}

/// The answer to a range read: `count` is the number of keys in the range at `rev`
/// regardless of the limit, and `rev` is the store's current revision (not the revision read
/// at), as etcd reports it in the response header.
#[derive(Debug, Clone, Default)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    pub count: usize,
    pub rev: i64,
}

/// The answer of [`MvccStore::hash_by_rev`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    /// The revision the hash covers.
    pub hash_rev: i64,
    pub current_rev: i64,
    /// -1 if the store was never compacted.
    pub compacted_rev: i64,
}

/// The index plus the two revisions that bound what readers may look at. Kept under one lock
/// so a reader sees them consistently.
struct IndexState {
    index: TreeIndex,
    /// The newest revision whose rows are committed to disk.
    current_rev: i64,
    /// Reads below this revision fail with `ErrCompacted`; -1 until the first compaction
    /// (etcd's `compactMainRev`, so that compacting at revision 0 works once, as in etcd).
    compacted_rev: i64,
}

/// The multi-version store of one member.
pub struct MvccStore {
    path: PathBuf,
    /// Replaced wholesale when a Raft snapshot is installed; readers clone the `Arc` so the old
    /// file stays readable until they finish.
    db: RwLock<Arc<Database>>,
    state: RwLock<IndexState>,
    /// The cluster's active alarms as of the published revision (replicated state, written
    /// with [`WriteBatch::set_alarms`]).
    alarms: RwLock<Alarms>,
    /// Size of the backend file as of the last commit or rewrite: the quota is checked on
    /// every write, and a `stat` per request would cost more than the check is worth.
    size: std::sync::atomic::AtomicU64,
    /// Held by each apply round and by whole-file rewrites (defragment, snapshot install), so a
    /// rewrite never copies a file that an apply round is still changing, and no round writes
    /// to a file that was just replaced.
    writer: Mutex<()>,
    /// Leases and the keys attached to them (etcd's mvcc holds its lessor the same way).
    lessor: crate::lease::Lessor,
    /// The auth state as of the published revision (replicated, written with
    /// [`WriteBatch::set_auth`]); readers share it without copying.
    auth: RwLock<Arc<AuthState>>,
    /// Simple tokens, recorded when Authenticate entries are applied (in memory only).
    tokens: Tokens,
}

/// redb's page cache (read cache plus write buffer). redb's default is 1 GiB, which a member
/// fills while writing and while rebuilding its index at start: with 1M keys of 256 bytes that
/// put its RSS at ~970 MiB where etcd's is ~560 MiB. Pages that fall out of this cache are
/// still in the kernel's page cache (as bbolt's mmap'd pages are for etcd), so a smaller cache
/// costs a pread, not a disk read, and it keeps the RSS to the index plus this bound. Any full
/// scan (a Raft snapshot being built, `etcdctl snapshot save`) fills the read cache to its
/// bound, so the bound shows in every member's RSS sooner or later: with 1M keys 677 MiB at
/// 128 MiB, 466 MiB at 32 MiB (etcd: 537-551), with the same put and range throughput in an
/// A/B run (docs/benchmarks.md, session 7).
const BACKEND_CACHE_BYTES: usize = 32 << 20;

fn open_backend(path: &Path) -> Result<Database, EtcdError> {
    redb::Builder::new().set_cache_size(BACKEND_CACHE_BYTES).create(path).map_err(internal)
}

/// Reads one meta row of the backend at `path` without writing to the file (a read-write open
/// updates its header). Fails when the backend needs a repair first, i.e. after a crash.
pub fn read_meta_read_only(path: &Path, name: &str) -> Result<Option<Vec<u8>>, EtcdError> {
    use redb::ReadableDatabase;
    let db = redb::ReadOnlyDatabase::open(path).map_err(internal)?;
    let txn = db.begin_read().map_err(internal)?;
    let meta = txn.open_table(META_TABLE).map_err(internal)?;
    let row = meta.get(name).map_err(internal)?.map(|v| v.value().to_vec());
    Ok(row)
}

impl MvccStore {
    /// Opens (or creates) the backend file and rebuilds the index from it.
    pub fn open(path: &Path) -> Result<Self, EtcdError> {
        let db = open_backend(path)?;
        let store = MvccStore {
            path: path.to_path_buf(),
            db: RwLock::new(Arc::new(db)),
            state: RwLock::new(IndexState { index: TreeIndex::new(), current_rev: 1, compacted_rev: -1 }),
            alarms: RwLock::new(Alarms::default()),
            size: Default::default(),
            writer: Mutex::new(()),
            lessor: crate::lease::Lessor::new(),
            auth: RwLock::new(Arc::new(AuthState::default())),
            tokens: Tokens::default(),
        };
        store.refresh_size();
        store.ensure_tables()?;
        store.rebuild_index()?;
        Ok(store)
    }

    fn db(&self) -> Arc<Database> {
        self.db.read().expect("db lock").clone()
    }

    fn ensure_tables(&self) -> Result<(), EtcdError> {
        let txn = self.db().begin_write().map_err(internal)?;
        txn.open_table(KEY_TABLE).map_err(internal)?;
        txn.open_table(META_TABLE).map_err(internal)?;
        txn.open_table(LEASE_TABLE).map_err(internal)?;
        txn.open_table(AUTH_TABLE).map_err(internal)?;
        txn.commit().map_err(internal)
    }

    /// Replays the history rows into a fresh index (etcd's `store.restore`).
    fn rebuild_index(&self) -> Result<(), EtcdError> {
        let db = self.db();
        let txn = db.begin_read().map_err(internal)?;
        let meta = txn.open_table(META_TABLE).map_err(internal)?;
        let read_i64 = |name: &str| -> Result<Option<i64>, EtcdError> {
            Ok(meta.get(name).map_err(internal)?.map(|v| i64::from_be_bytes(v.value().try_into().unwrap_or([0; 8]))))
        };
        let current_rev = read_i64(META_CURRENT_REV)?.unwrap_or(1);
        let compacted_rev = read_i64(META_COMPACTED_REV)?.unwrap_or(-1);
        let alarms = match meta.get(META_ALARMS).map_err(internal)? {
            Some(v) => serde_json::from_slice(v.value()).map_err(internal)?,
            None => Alarms::default(),
        };
        let auth = auth_rows::load(&txn)?;
        let mut index = TreeIndex::new();
        let mut leased = std::collections::HashMap::new();
        let table = txn.open_table(KEY_TABLE).map_err(internal)?;
        for row in table.iter().map_err(internal)? {
            let (k, v) = row.map_err(internal)?;
            let (rev, tombstone) = bytes_to_rev(k.value());
            let kv = KeyValue::decode(v.value()).map_err(internal)?;
            lease_rows::track_lease(&mut leased, &kv, tombstone);
            if tombstone {
                // After compaction a tombstone may be the only row left of its key; it must
                // still be indexed so re-running that compaction finds it (etcd #19179).
                index.restore_tombstone(&kv.key, rev).map_err(|e| internal(format!("restore tombstone: {e}")))?;
            } else {
                index.restore(&kv.key, Revision { main: kv.create_revision, sub: 0 }, rev, kv.version);
            }
        }
        self.restore_leases(&txn, leased)?;
        drop((table, meta, txn));
        *self.state.write().expect("index lock") = IndexState { index, current_rev, compacted_rev };
        *self.alarms.write().expect("alarms lock") = alarms;
        *self.auth.write().expect("auth lock") = Arc::new(auth);
        if compacted_rev >= 0 {
            // Finishes a compaction a crash interrupted after recording its revision.
            self.finish_compaction(compacted_rev)?;
        }
        Ok(())
    }

    /// The newest committed revision.
    pub fn current_rev(&self) -> i64 {
        self.state.read().expect("index lock").current_rev
    }

    pub fn compacted_rev(&self) -> i64 {
        self.state.read().expect("index lock").compacted_rev
    }

    /// The cluster's active alarms.
    pub fn alarms(&self) -> Alarms {
        self.alarms.read().expect("alarms lock").clone()
    }

    /// The auth state as of the published revision.
    pub fn auth(&self) -> Arc<AuthState> {
        self.auth.read().expect("auth lock").clone()
    }

    /// This member's simple tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// A new, already unlinked file beside the backend (same file system, so as much room as
    /// the data itself has) for a temporary copy; gone when the handle is dropped.
    pub fn scratch_file(&self, tag: &str) -> std::io::Result<std::fs::File> {
        let path = self.path.with_extension(format!("{tag}-{:016x}", rand::random::<u64>()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(file)
    }

    /// Size of the backend file, reported as etcd's `dbSize`.
    pub fn db_size(&self) -> u64 {
        self.size.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Re-reads the backend file's size (after a commit or a rewrite).
    pub(crate) fn refresh_size(&self) {
        let len = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        self.size.store(len, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes actually holding data, reported as etcd's `dbSizeInUse`.
    pub fn db_size_in_use(&self) -> u64 {
        let db = self.db();
        let Ok(txn) = db.begin_read() else { return 0 };
        let stored = |t: Result<redb::ReadOnlyTable<_, _>, _>| {
            t.ok()
                .and_then(|t: redb::ReadOnlyTable<&[u8], &[u8]>| t.stats().ok())
                .map(|s| s.stored_bytes() + s.metadata_bytes())
        };
        let key = stored(txn.open_table(KEY_TABLE)).unwrap_or(0);
        key + 4096
    }

    /// A committed read (etcd's `TxnRead.Range`).
    pub fn range(&self, key: &[u8], end: Option<&[u8]>, opts: &RangeOptions) -> Result<RangeResult, EtcdError> {
        let db = self.db();
        let (found, count, current_rev, txn) = {
            let st = self.state.read().expect("index lock");
            let rev = check_read_rev(opts.rev, st.current_rev, st.compacted_rev)?;
            let limit = if opts.count_only { 1 } else { opts.limit };
            let (found, count) = st.index.range(key, end, rev, limit);
            // The read transaction opens while the index lock is held: a compaction that
            // deletes rows must first take this lock, so every row the index just pointed at
            // is still in this transaction's snapshot.
            let txn = db.begin_read().map_err(internal)?;
            (found, count, st.current_rev, txn)
        };
        if opts.count_only {
            return Ok(RangeResult { kvs: Vec::new(), count, rev: current_rev });
        }
        let table = txn.open_table(KEY_TABLE).map_err(internal)?;
        let kvs = load_values(&table, &found)?;
        Ok(RangeResult { kvs, count, rev: current_rev })
    }

    /// Reads a value persisted with [`WriteBatch::set_meta`].
    pub fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        let db = self.db();
        let txn = db.begin_read().map_err(internal)?;
        let meta = txn.open_table(META_TABLE).map_err(internal)?;
        Ok(meta.get(name).map_err(internal)?.map(|v| v.value().to_vec()))
    }

    /// etcd's `HashByRev`: a CRC-32C over the history rows a compaction at `rev` would keep,
    /// computed exactly as etcd does so that members (and etcd itself) can be compared.
    pub fn hash_by_rev(&self, rev: i64) -> Result<KvHash, EtcdError> {
        let db = self.db();
        let (keep, rev, current, compacted, txn) = {
            let st = self.state.read().expect("index lock");
            if rev > 0 && rev <= st.compacted_rev {
                return Err(EtcdError::Compacted);
            }
            if rev > 0 && rev > st.current_rev {
                return Err(EtcdError::FutureRev);
            }
            let rev = if rev == 0 { st.current_rev } else { rev };
            let keep = st.index.keep(rev);
            let txn = db.begin_read().map_err(internal)?;
            (keep, rev, st.current_rev, st.compacted_rev, txn)
        };
        let table = txn.open_table(KEY_TABLE).map_err(internal)?;
        let mut hash = crc32c::crc32c(b"key");
        for row in table.iter().map_err(internal)? {
            let (k, v) = row.map_err(internal)?;
            let (r, _) = bytes_to_rev(k.value());
            if r.main > rev {
                break;
            }
            if r.main <= compacted && !keep.is_empty() && !keep.contains(&r) {
                continue;
            }
            hash = crc32c::crc32c_append(hash, k.value());
            hash = crc32c::crc32c_append(hash, v.value());
        }
        Ok(KvHash { hash, hash_rev: rev, current_rev: current, compacted_rev: compacted })
    }

    /// Makes every earlier commit durable (an empty fsync'd commit; redb persists all earlier
    /// non-durable commits with it).
    pub fn sync(&self) -> Result<(), EtcdError> {
        let mut txn = self.db().begin_write().map_err(internal)?;
        txn.set_durability(redb::Durability::Immediate).map_err(internal)?;
        txn.commit().map_err(internal)
    }

    /// Starts the write batch for one apply round of the Raft state machine.
    pub fn write_batch(&self) -> Result<WriteBatch<'_>, EtcdError> {
        WriteBatch::begin(self)
    }

    /// Streams every row of the backend, for a Raft snapshot, from one read transaction so the
    /// copy is consistent. `f` gets (table id, key, value); ids: 0 = meta, 1 = key, 2 = lease,
    /// 3 = auth.
    pub fn for_each_row(&self, mut f: impl FnMut(u8, &[u8], &[u8]) -> std::io::Result<()>) -> Result<(), EtcdError> {
        let db = self.db();
        let txn = db.begin_read().map_err(internal)?;
        let meta = txn.open_table(META_TABLE).map_err(internal)?;
        for row in meta.iter().map_err(internal)? {
            let (k, v) = row.map_err(internal)?;
            f(0, k.value().as_bytes(), v.value()).map_err(internal)?;
        }
        let table = txn.open_table(KEY_TABLE).map_err(internal)?;
        for row in table.iter().map_err(internal)? {
            let (k, v) = row.map_err(internal)?;
            f(1, k.value(), v.value()).map_err(internal)?;
        }
        let leases = txn.open_table(LEASE_TABLE).map_err(internal)?;
        for row in leases.iter().map_err(internal)? {
            let (k, v) = row.map_err(internal)?;
            f(2, k.value(), v.value()).map_err(internal)?;
        }
        let auth = txn.open_table(AUTH_TABLE).map_err(internal)?;
        for row in auth.iter().map_err(internal)? {
            let (k, v) = row.map_err(internal)?;
            f(3, k.value(), v.value()).map_err(internal)?;
        }
        Ok(())
    }

    /// Replaces the whole store with the rows produced by `fill` (a Raft snapshot being
    /// installed). The new file is built beside the old one and renamed over it, so a crash
    /// midway leaves the old store intact.
    pub fn replace_with(
        &self,
        fill: impl FnOnce(&mut dyn FnMut(u8, &[u8], &[u8]) -> Result<(), EtcdError>) -> Result<(), EtcdError>,
    ) -> Result<(), EtcdError> {
        {
            let _writer = self.writer.lock().expect("writer lock");
            self.rewrite_file(fill)?;
        }
        self.rebuild_index()
    }

    /// etcd's `Defragment`: rewrites the backend file with only the live pages, so the space
    /// that compactions and deletes freed goes back to the file system (and under the quota).
    /// Apply rounds wait meanwhile, as etcd's defragmentation blocks writes; readers keep
    /// reading the old file until they finish.
    pub fn defragment(&self) -> Result<(), EtcdError> {
        let _writer = self.writer.lock().expect("writer lock");
        self.rewrite_file(|put| {
            self.for_each_row(|t, k, v| put(t, k, v).map_err(|e| std::io::Error::other(e.to_string())))
        })
    }

    /// Builds a new backend file from `fill`, fsyncs it and renames it over the current one.
    /// The caller holds `writer`.
    fn rewrite_file(
        &self,
        fill: impl FnOnce(&mut dyn FnMut(u8, &[u8], &[u8]) -> Result<(), EtcdError>) -> Result<(), EtcdError>,
    ) -> Result<(), EtcdError> {
        let tmp = self.path.with_extension("installing");
        let _ = std::fs::remove_file(&tmp);
        {
            let db = open_backend(&tmp)?;
            let txn = db.begin_write().map_err(internal)?;
            {
                let mut meta = txn.open_table(META_TABLE).map_err(internal)?;
                let mut table = txn.open_table(KEY_TABLE).map_err(internal)?;
                let mut leases = txn.open_table(LEASE_TABLE).map_err(internal)?;
                let mut auth = txn.open_table(AUTH_TABLE).map_err(internal)?;
                let mut put = |t: u8, k: &[u8], v: &[u8]| -> Result<(), EtcdError> {
                    match t {
                        0 => {
                            let name = std::str::from_utf8(k).map_err(internal)?;
                            meta.insert(name, v).map_err(internal)?;
                        }
                        2 => {
                            leases.insert(k, v).map_err(internal)?;
                        }
                        3 => {
                            auth.insert(k, v).map_err(internal)?;
                        }
                        _ => {
                            table.insert(k, v).map_err(internal)?;
                        }
                    }
                    Ok(())
                };
                fill(&mut put)?;
            }
            txn.commit().map_err(internal)?;
        }
        {
            let mut guard = self.db.write().expect("db lock");
            std::fs::rename(&tmp, &self.path).map_err(internal)?;
            *guard = Arc::new(open_backend(&self.path)?);
        }
        self.refresh_size();
        Ok(())
    }
}

/// Reads the stored values of the revisions the index found.
pub(crate) fn load_values(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    found: &[(Vec<u8>, KeyAt)],
) -> Result<Vec<KeyValue>, EtcdError> {
    let mut kvs = Vec::with_capacity(found.len());
    for (_, at) in found {
        let row = table
            .get(rev_to_bytes(at.modified, false).as_slice())
            .map_err(internal)?
            .ok_or_else(|| internal(format!("index points at missing revision {:?}", at.modified)))?;
        kvs.push(KeyValue::decode(row.value()).map_err(internal)?);
    }
    Ok(kvs)
}

/// Validates the revision a read asks for (etcd's `rangeKeys` checks) and resolves 0 to the
/// current revision.
fn check_read_rev(rev: i64, current: i64, compacted: i64) -> Result<i64, EtcdError> {
    if rev > current {
        return Err(EtcdError::FutureRev);
    }
    let rev = if rev <= 0 { current } else { rev };
    if rev < compacted {
        return Err(EtcdError::Compacted);
    }
    Ok(rev)
}

#[cfg(test)]
mod tests;
