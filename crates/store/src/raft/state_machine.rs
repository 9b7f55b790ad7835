//! The Raft state machine: committed entries applied to the MVCC store, and snapshots of it.
//!
//! Each apply round is one redb transaction that also records the applied log position and
//! the last membership, so a restart neither applies an entry twice nor skips one.
//!
//! Snapshots are files, streamed row by row, never held in memory whole. A snapshot file is:
//! the magic line, then records `[table u8][key len u32][key][value len u32][value]`, then a
//! single `0xFF` byte. Its openraft metadata sits beside it in a small JSON file.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kaname_proto::etcdserverpb::alarm_request::AlarmAction;
use kaname_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, CompactionRequest, CompactionResponse, DeleteRangeRequest, LeaseRevokeRequest,
    PutRequest, TxnRequest,
};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StoredMembership};
use prometheus_client::metrics::histogram::Histogram;
use prost::Message;
use serde::{Deserialize, Serialize};

use super::{storage_io_err, Command, LogId, MemberNode, ProposalResult, StorageError, TypeConfig};
use crate::auth::{AuthInfo, Need};
use crate::error::{internal, EtcdError};
use crate::mvcc::{MvccStore, WriteBatch};
use crate::watch::WatchHub;
use crate::{alarm, apply};

const MAGIC: &[u8] = b"KANAME-SNAPSHOT-1\n";
const END: u8 = 0xFF;

const META_APPLIED: &str = "raft_applied";
const META_MEMBERSHIP: &str = "raft_membership";
/// Members a membership change removed (etcd's `RemovedMemberIDs`): their messages are refused,
/// which is how a removed member learns it is out (see `peer/`).
const META_REMOVED_MEMBERS: &str = "removed_members";

/// Meta rows that describe the cluster a snapshot came from, not its data: a restore into a new
/// cluster drops them.
pub(crate) const OLD_CLUSTER_META: [&str; 4] = [META_APPLIED, META_MEMBERSHIP, META_REMOVED_MEMBERS, META_MEMBER_ATTRS];

/// The IDs of the members removed from the cluster so far.
pub fn removed_members(store: &MvccStore) -> std::collections::BTreeSet<u64> {
    store
        .get_meta(META_REMOVED_MEMBERS)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}
/// Member attributes published through Raft: JSON map of member id to [`MemberAttributes`].
pub const META_MEMBER_ATTRS: &str = "member_attributes";

/// What a member publishes about itself once it serves clients.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemberAttributes {
    pub name: String,
    pub client_urls: Vec<String>,
}

pub type Membership = StoredMembership<u64, MemberNode>;

/// The members in the last membership this state machine applied or installed from a
/// snapshot, read from the backend at `db_path` without modifying it (see
/// [`crate::mvcc::read_meta_read_only`]).
pub(crate) fn applied_members_read_only(db_path: &Path) -> Result<BTreeMap<u64, MemberNode>, EtcdError> {
    let m: Membership = match crate::mvcc::read_meta_read_only(db_path, META_MEMBERSHIP)? {
        Some(b) => bincode::deserialize(&b).map_err(internal)?,
        None => Membership::default(),
    };
    Ok(m.membership().nodes().map(|(id, n)| (*id, n.clone())).collect())
}

/// Reads the member attributes map from the store.
pub fn member_attributes(store: &MvccStore) -> std::collections::BTreeMap<u64, MemberAttributes> {
    store.get_meta(META_MEMBER_ATTRS).ok().flatten().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// The state machine handle openraft drives; the MVCC store inside is shared with readers.
pub struct StateMachine {
    store: Arc<MvccStore>,
    snap_dir: PathBuf,
    /// Duration of each apply round's commit.
    commit_seconds: Histogram,
    /// Tells request handlers how far this member has applied.
    applied_tx: tokio::sync::watch::Sender<u64>,
    /// When the store was last fsync'd; applies in between commit without waiting for the
    /// disk (the Raft log already holds every applied entry durably).
    last_sync: std::time::Instant,
    quota: Quota,
    /// Receives the events of every committed batch.
    watch: Option<Arc<WatchHub>>,
}

/// etcd's quota applier: each member checks *its own* backend when it applies a write that
/// adds data, and past the quota asks (through `exceeded`) for its `NOSPACE` alarm to be
/// raised, unless one is already active. The write is applied either way (the log decided it).
///
/// Unlike etcd, the client's answer does not change: in kaname the answer of a forwarded write
/// is the leader's, and a member past its quota must not fail writes sent to a member that is
/// not (etcd answers from the receiving member's own apply). The receiving member's own quota
/// check happens before proposing (`EtcdServer::check_quota`), as in etcd.
#[derive(Clone, Default)]
pub struct Quota {
    /// `--quota-backend-bytes`; 0 turns the check off.
    pub bytes: u64,
    pub exceeded: Arc<tokio::sync::Notify>,
}

impl Quota {
    fn check(&self, batch: &WriteBatch, cost: u64) {
        if self.bytes > 0 && cost > 0 && !alarm::fits(batch.db_size(), cost, self.bytes) && !batch.alarms().no_space() {
            self.exceeded.notify_one();
        }
    }
}

/// How long applied state may stay only in the page cache; bounds the replay after a crash.
const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl StateMachine {
    /// Turns on the apply-time quota check (see [`Quota`]).
    pub fn set_quota(&mut self, quota: Quota) {
        self.quota = quota;
    }

    pub fn new(
        store: Arc<MvccStore>,
        snap_dir: &Path,
        applied_tx: tokio::sync::watch::Sender<u64>,
        commit_seconds: Histogram,
    ) -> Result<Self, EtcdError> {
        std::fs::create_dir_all(snap_dir).map_err(internal)?;
        let sm = StateMachine {
            store,
            snap_dir: snap_dir.to_path_buf(),
            applied_tx,
            commit_seconds,
            last_sync: std::time::Instant::now(),
            quota: Quota::default(),
            watch: None,
        };
        // Entries applied before a restart count as applied: reads must not wait for them.
        let applied = sm.read_meta::<Option<LogId>>(META_APPLIED).map_err(internal)?.flatten();
        sm.applied_tx.send_replace(applied.map(|l| l.index).unwrap_or(0));
        Ok(sm)
    }

    /// Feeds `hub` with the events of everything applied from now on.
    pub fn with_watch_hub(mut self, hub: Arc<WatchHub>) -> Self {
        self.watch = Some(hub);
        self
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StorageError> {
        match self.store.get_meta(name).map_err(storage_io_err)? {
            Some(b) => Ok(Some(bincode::deserialize(&b).map_err(storage_io_err)?)),
            None => Ok(None),
        }
    }

    /// The newest complete snapshot on disk: (data path, metadata).
    fn latest_snapshot(&self) -> Option<(PathBuf, SnapshotMeta<u64, MemberNode>)> {
        let mut best: Option<(PathBuf, SnapshotMeta<u64, MemberNode>)> = None;
        for entry in std::fs::read_dir(&self.snap_dir).ok()?.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("meta") {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(meta) = serde_json::from_slice::<SnapshotMeta<u64, MemberNode>>(&bytes) else {
                continue;
            };
            let data = path.with_extension("snap");
            if data.exists() && best.as_ref().is_none_or(|(_, b)| b.last_log_id < meta.last_log_id) {
                best = Some((data, meta));
            }
        }
        best
    }

    fn remove_snapshots_except(&self, keep_id: &str) {
        remove_snapshots_except(&self.snap_dir, keep_id)
    }

    fn write_meta_file(&self, meta: &SnapshotMeta<u64, MemberNode>) -> Result<(), StorageError> {
        write_meta_file(&self.snap_dir, meta)
    }
}

/// Keeps only the newest snapshot: older ones can no longer be sent or restored from.
fn remove_snapshots_except(snap_dir: &Path, keep_id: &str) {
    let Ok(dir) = std::fs::read_dir(snap_dir) else {
        return;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        if stem != keep_id {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Writes a snapshot's metadata beside its data file, atomically.
fn write_meta_file(snap_dir: &Path, meta: &SnapshotMeta<u64, MemberNode>) -> Result<(), StorageError> {
    let path = snap_dir.join(format!("{}.meta", meta.snapshot_id));
    let tmp = path.with_extension("meta.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(storage_io_err)?;
    f.write_all(&serde_json::to_vec(meta).map_err(storage_io_err)?).map_err(storage_io_err)?;
    f.sync_all().map_err(storage_io_err)?;
    std::fs::rename(&tmp, &path).map_err(storage_io_err)
}

/// One row of a snapshot file: table id, then length-prefixed key and value.
fn write_row(w: &mut impl Write, table: u8, k: &[u8], v: &[u8]) -> std::io::Result<()> {
    w.write_all(&[table])?;
    w.write_all(&(k.len() as u32).to_be_bytes())?;
    w.write_all(k)?;
    w.write_all(&(v.len() as u32).to_be_bytes())?;
    w.write_all(v)
}

/// Writes the whole store in the snapshot file format (what `Maintenance.Snapshot` streams,
/// and what a restore reads), from one read transaction.
pub fn export_snapshot(store: &MvccStore, w: &mut impl Write) -> Result<(), EtcdError> {
    w.write_all(MAGIC).map_err(internal)?;
    store.for_each_row(|table, k, v| write_row(w, table, k, v))?;
    w.write_all(&[END]).map_err(internal)
}

/// etcd's `authApplierV3`: whether `ai` may make the write `cmd`, by the auth state of now.
fn check_write(batch: &WriteBatch, ai: &AuthInfo, cmd: &Command) -> Result<(), EtcdError> {
    let auth = batch.auth();
    if !auth.enabled {
        return Ok(());
    }
    match cmd {
        Command::Put(b) => {
            let req = PutRequest::decode(b.as_slice()).map_err(internal)?;
            let lease_keys =
                if req.lease != 0 { batch.lessor().keys_of(req.lease).unwrap_or_default() } else { vec![] };
            auth.check_put(ai, &req, &lease_keys)
        }
        Command::DeleteRange(b) => auth.check_delete(ai, &DeleteRangeRequest::decode(b.as_slice()).map_err(internal)?),
        Command::Txn(b) => auth.check_txn(ai, &TxnRequest::decode(b.as_slice()).map_err(internal)?),
        Command::LeaseRevoke(b) => {
            // Revoking deletes the attached keys: the user must be able to write each of them.
            let req = LeaseRevokeRequest::decode(b.as_slice()).map_err(internal)?;
            for key in batch.lessor().keys_of(req.id).unwrap_or_default() {
                auth.check(ai, &key, &[], Need::Write)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Applies one command (from the entry at log `index`) inside the batch and encodes its
/// response.
fn apply_command(batch: &mut WriteBatch, cmd: &Command, quota: &Quota, index: u64) -> Result<Vec<u8>, EtcdError> {
    match cmd {
        Command::Auth { user, auth_revision, op } => {
            let ai = AuthInfo { user: user.clone(), revision: *auth_revision };
            crate::apply::auth::apply(batch, &ai, op, index)
        }
        Command::AsUser { user, auth_revision, cmd } => {
            let ai = AuthInfo { user: user.clone(), revision: *auth_revision };
            check_write(batch, &ai, cmd)?;
            apply_command(batch, cmd, quota, index)
        }
        Command::Put(b) => {
            let req = PutRequest::decode(b.as_slice()).map_err(internal)?;
            // etcd's applierV3Capped: with NOSPACE raised, nothing that adds data applies.
            if batch.alarms().no_space() {
                return Err(EtcdError::NoSpace);
            }
            quota.check(batch, alarm::put_cost(&req));
            let mut txn = batch.txn();
            Ok(apply::apply_put(&mut txn, &req)?.encode_to_vec())
        }
        Command::DeleteRange(b) => {
            let req = DeleteRangeRequest::decode(b.as_slice()).map_err(internal)?;
            let mut txn = batch.txn();
            Ok(apply::apply_delete_range(&mut txn, &req)?.encode_to_vec())
        }
        Command::Txn(b) => {
            let req = TxnRequest::decode(b.as_slice()).map_err(internal)?;
            if alarm::txn_cost(&req) > 0 && batch.alarms().no_space() {
                return Err(EtcdError::NoSpace);
            }
            quota.check(batch, alarm::txn_cost(&req));
            let mut txn = batch.txn();
            Ok(apply::apply_txn(&mut txn, &req)?.encode_to_vec())
        }
        Command::Compact(b) => {
            let req = CompactionRequest::decode(b.as_slice()).map_err(internal)?;
            batch.compact(req.revision)?;
            let header =
                Some(kaname_proto::etcdserverpb::ResponseHeader { revision: batch.rev(), ..Default::default() });
            Ok(CompactionResponse { header }.encode_to_vec())
        }
        Command::Alarm(b) => {
            let req = AlarmRequest::decode(b.as_slice()).map_err(internal)?;
            let mut alarms = batch.alarms();
            let changed = match AlarmAction::try_from(req.action) {
                Ok(AlarmAction::Activate) => Some(alarms.activate(req.member_id, req.alarm)),
                Ok(AlarmAction::Deactivate) => alarms.deactivate(req.member_id, req.alarm),
                _ => None,
            };
            let list = match AlarmAction::try_from(req.action) {
                Ok(AlarmAction::Get) => alarms.list(),
                _ => changed.into_iter().collect(),
            };
            if alarms != batch.alarms() {
                batch.set_alarms(alarms)?;
            }
            let header =
                Some(kaname_proto::etcdserverpb::ResponseHeader { revision: batch.rev(), ..Default::default() });
            Ok(AlarmResponse { header, alarms: list }.encode_to_vec())
        }
        // etcd's applierV3Capped refuses new leases too while NOSPACE is raised.
        Command::LeaseGrant(_) if batch.alarms().no_space() => Err(EtcdError::NoSpace),
        Command::LeaseGrant(b) => crate::apply::lease::grant(batch, b),
        Command::LeaseRevoke(b) => crate::apply::lease::revoke(batch, b),
        Command::PublishAttributes { .. } => Ok(Vec::new()),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let applied = self.read_meta::<Option<LogId>>(META_APPLIED)?.flatten();
        let membership = self.read_meta::<Membership>(META_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProposalResult>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = self.store.write_batch().map_err(storage_io_err)?;
        let mut results = Vec::new();
        let mut last_applied = None;
        let mut membership = None;
        let mut attrs = None;
        let mut removed = None;
        for entry in entries {
            last_applied = Some(entry.log_id);
            let result = match &entry.payload {
                EntryPayload::Blank => ProposalResult::default(),
                EntryPayload::Membership(m) => {
                    let before =
                        membership.clone().or_else(|| self.read_meta::<Membership>(META_MEMBERSHIP).ok().flatten());
                    if let Some(before) = before {
                        let gone: Vec<u64> = before
                            .membership()
                            .nodes()
                            .map(|(id, _)| *id)
                            .filter(|id| m.get_node(id).is_none())
                            .collect();
                        if !gone.is_empty() {
                            removed.get_or_insert_with(|| removed_members(&self.store)).extend(gone);
                        }
                    }
                    membership = Some(Membership::new(Some(entry.log_id), m.clone()));
                    ProposalResult::default()
                }
                EntryPayload::Normal(proposal) => {
                    let mut out = Vec::with_capacity(proposal.0.len());
                    for cmd in &proposal.0 {
                        if let Command::PublishAttributes { member_id, name, client_urls } = cmd {
                            let map = attrs.get_or_insert_with(|| member_attributes(&self.store));
                            map.insert(
                                *member_id,
                                MemberAttributes { name: name.clone(), client_urls: client_urls.clone() },
                            );
                        }
                        out.push(
                            apply_command(&mut batch, cmd, &self.quota, entry.log_id.index)
                                .map(serde_bytes::ByteBuf::from),
                        );
                    }
                    ProposalResult(out)
                }
            };
            results.push(result);
        }
        batch.set_meta(META_APPLIED, &ser(&last_applied)).map_err(storage_io_err)?;
        if let Some(m) = &membership {
            batch.set_meta(META_MEMBERSHIP, &ser(m)).map_err(storage_io_err)?;
        }
        if let Some(r) = &removed {
            batch
                .set_meta(META_REMOVED_MEMBERS, &serde_json::to_vec(r).map_err(storage_io_err)?)
                .map_err(storage_io_err)?;
        }
        if let Some(a) = &attrs {
            batch
                .set_meta(META_MEMBER_ATTRS, &serde_json::to_vec(a).map_err(storage_io_err)?)
                .map_err(storage_io_err)?;
        }
        let durable = membership.is_some() || self.last_sync.elapsed() >= SYNC_INTERVAL;
        let (events, rev) = (batch.take_events(), batch.rev());
        let commit_start = std::time::Instant::now();
        batch.commit(durable).map_err(storage_io_err)?;
        self.commit_seconds.observe(commit_start.elapsed().as_secs_f64());
        // Only now: watchers must not see a revision readers cannot.
        if let Some(hub) = &self.watch {
            hub.notify(events, rev);
        }
        if durable {
            self.last_sync = std::time::Instant::now();
        }
        if let Some(l) = last_applied {
            self.applied_tx.send_replace(l.index);
        }
        tracing::trace!(entries = results.len(), "applied");
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { store: self.store.clone(), snap_dir: self.snap_dir.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.snap_dir.join(format!("receiving-{}.part", rand::random::<u64>()));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(storage_io_err)?;
        // The name only matters while receiving; the open handle keeps the data.
        let _ = std::fs::remove_file(&path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, MemberNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let mut file = snapshot.into_std().await;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0)).map_err(storage_io_err)?;
        // Keep a copy as our current snapshot, so it can be sent on to others.
        let data_path = self.snap_dir.join(format!("{}.snap", meta.snapshot_id));
        {
            let mut out = std::fs::File::create(&data_path).map_err(storage_io_err)?;
            std::io::copy(&mut file, &mut out).map_err(storage_io_err)?;
            out.sync_all().map_err(storage_io_err)?;
        }
        let mut reader = BufReader::new(std::fs::File::open(&data_path).map_err(storage_io_err)?);
        let store = self.store.clone();
        store.replace_with(|put| read_snapshot_rows(&mut reader, put)).map_err(storage_io_err)?;
        if let Some(hub) = &self.watch {
            hub.store_replaced();
        }
        self.write_meta_file(meta)?;
        self.remove_snapshots_except(&meta.snapshot_id);
        tracing::info!(snapshot = %meta.snapshot_id, last_log_id = ?meta.last_log_id, "installed snapshot received from the leader");
        if let Some(l) = meta.last_log_id {
            self.applied_tx.send_replace(l.index);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some((path, meta)) = self.latest_snapshot() else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(&path).await.map_err(storage_io_err)?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(file) }))
    }
}

pub(crate) fn read_snapshot_rows(
    r: &mut impl Read,
    put: &mut dyn FnMut(u8, &[u8], &[u8]) -> Result<(), EtcdError>,
) -> Result<(), EtcdError> {
    let mut magic = vec![0u8; MAGIC.len()];
    r.read_exact(&mut magic).map_err(internal)?;
    if magic != MAGIC {
        return Err(internal("not a kaname snapshot"));
    }
    let read_chunk = |r: &mut dyn Read| -> Result<Vec<u8>, EtcdError> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).map_err(internal)?;
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        r.read_exact(&mut buf).map_err(internal)?;
        Ok(buf)
    };
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag).map_err(internal)?;
        if tag[0] == END {
            return Ok(());
        }
        let k = read_chunk(r)?;
        let v = read_chunk(r)?;
        put(tag[0], &k, &v)?;
    }
}

/// Builds a snapshot file from a consistent read of the store.
pub struct SnapshotBuilder {
    store: Arc<MvccStore>,
    snap_dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Writing out the whole keyspace takes seconds with a million keys: on the runtime's
        // threads it would hold up heartbeats and client requests (on a current-thread
        // runtime, all of them) long enough for the followers to elect another leader.
        let (store, snap_dir) = (self.store.clone(), self.snap_dir.clone());
        let (meta, data_path) =
            tokio::task::spawn_blocking(move || write_snapshot(&store, &snap_dir)).await.map_err(storage_io_err)??;
        let file = tokio::fs::File::open(&data_path).await.map_err(storage_io_err)?;
        Ok(Snapshot { meta, snapshot: Box::new(file) })
    }
}

/// Writes a snapshot of everything applied (see the module's format) and its metadata file,
/// and removes older snapshots.
fn write_snapshot(
    store: &MvccStore,
    snap_dir: &Path,
) -> Result<(SnapshotMeta<u64, MemberNode>, PathBuf), StorageError> {
    let tmp = snap_dir.join(format!("building-{}.part", rand::random::<u64>()));
    // The log up to this snapshot may be purged once it exists, so everything applied
    // must be on disk first (applies commit without fsync, see `SYNC_INTERVAL`).
    store.sync().map_err(storage_io_err)?;
    let mut applied: Option<LogId> = None;
    let mut membership = Membership::default();
    {
        let mut w = BufWriter::new(std::fs::File::create(&tmp).map_err(storage_io_err)?);
        w.write_all(MAGIC).map_err(storage_io_err)?;
        store
            .for_each_row(|table, k, v| {
                // The Raft position of the snapshot comes from the same read transaction
                // as the data.
                if table == 0 && k == META_APPLIED.as_bytes() {
                    applied = bincode::deserialize::<Option<LogId>>(v).ok().flatten();
                }
                if table == 0 && k == META_MEMBERSHIP.as_bytes() {
                    membership = bincode::deserialize(v).unwrap_or_default();
                }
                write_row(&mut w, table, k, v)
            })
            .map_err(storage_io_err)?;
        w.write_all(&[END]).map_err(storage_io_err)?;
        let f = w.into_inner().map_err(storage_io_err)?;
        f.sync_all().map_err(storage_io_err)?;
    }
    let snapshot_id = match &applied {
        Some(l) => format!("{:016x}-{:08x}", l.index, rand::random::<u32>()),
        None => format!("empty-{:08x}", rand::random::<u32>()),
    };
    let meta = SnapshotMeta { last_log_id: applied, last_membership: membership, snapshot_id: snapshot_id.clone() };
    let data_path = snap_dir.join(format!("{snapshot_id}.snap"));
    std::fs::rename(&tmp, &data_path).map_err(storage_io_err)?;
    write_meta_file(snap_dir, &meta)?;
    remove_snapshots_except(snap_dir, &snapshot_id);
    tracing::info!(snapshot = %snapshot_id, last_log_id = ?meta.last_log_id, "built snapshot");
    Ok((meta, data_path))
}

fn ser<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("raft metadata serializes")
}

#[cfg(test)]
mod auth_tests {
    use super::*;
    use crate::auth::AuthOp;

    fn put(key: &str) -> Command {
        Command::Put(PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() }.encode_to_vec())
    }

    fn as_user(user: &str, auth_revision: u64, cmd: Command) -> Command {
        Command::AsUser { user: user.into(), auth_revision, cmd: Box::new(cmd) }
    }

    /// Writes are checked when applied, against the state of that moment: a write checked by
    /// the edge before a permission change fails with "revision of auth store is old".
    #[test]
    fn writes_are_checked_at_apply_time_against_the_auth_revision() {
        let dir = tempfile::tempdir().unwrap();
        let store = MvccStore::open(&dir.path().join("db")).unwrap();
        let mut batch = store.write_batch().unwrap();
        let q = Quota::default();
        let admin = AuthInfo::default();
        let ops = [
            AuthOp::UserAdd { name: "root".into(), hash: String::new(), no_password: false },
            AuthOp::UserGrantRole { user: "root".into(), role: "root".into() },
            AuthOp::UserAdd { name: "alice".into(), hash: String::new(), no_password: false },
            AuthOp::RoleAdd { name: "w".into() },
            AuthOp::RoleGrantPermission {
                name: "w".into(),
                perm: crate::auth::Perm { perm_type: 1, key: b"k".to_vec(), range_end: Vec::new() },
            },
            AuthOp::UserGrantRole { user: "alice".into(), role: "w".into() },
            AuthOp::Enable,
        ];
        for op in ops {
            crate::apply::auth::apply(&mut batch, &admin, &op, 1).unwrap();
        }
        let rev = batch.auth().revision;
        // A client without credentials (the edge wraps every client write).
        assert_eq!(apply_command(&mut batch, &as_user("", 0, put("k")), &q, 2).err(), Some(EtcdError::UserEmpty));
        assert!(apply_command(&mut batch, &as_user("alice", rev, put("k")), &q, 3).is_ok());
        assert_eq!(
            apply_command(&mut batch, &as_user("alice", rev, put("other")), &q, 4).err(),
            Some(EtcdError::PermissionDenied)
        );
        let root = AuthInfo { user: "root".into(), revision: rev };
        let revoke = AuthOp::RoleRevokePermission { role: "w".into(), key: b"k".to_vec(), range_end: Vec::new() };
        crate::apply::auth::apply(&mut batch, &root, &revoke, 5).unwrap();
        assert_eq!(
            apply_command(&mut batch, &as_user("alice", rev, put("k")), &q, 6).err(),
            Some(EtcdError::AuthOldRevision)
        );
        let alice = AuthInfo { user: "alice".into(), revision: batch.auth().revision };
        let denied = crate::apply::auth::apply(&mut batch, &alice, &AuthOp::Disable, 7);
        assert_eq!(denied.err(), Some(EtcdError::PermissionDenied));
        batch.commit(false).unwrap();
        assert!(store.auth().enabled, "the state is published on commit");
    }
}
