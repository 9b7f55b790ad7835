//! The `lease` table: etcd's bucket of the same name, one row per lease, keyed by the lease ID
//! (8 bytes, big endian) with the encoded `leasepb.Lease` as value. It lives in the same redb
//! file as the history, so a grant or revoke commits atomically with the key deletions and
//! the Raft position of its apply round, and snapshots carry it.
//!
//! Which keys hang on a lease is not stored: as etcd, it is rebuilt from the `lease` field of
//! each key's latest revision when the store opens.

use std::collections::HashMap;

use kaname_proto::mvccpb::KeyValue;
use prost::Message;
use redb::{ReadTransaction, ReadableTable, TableDefinition};

use super::{MvccStore, TxnWrite, WriteBatch};
use crate::error::{internal, EtcdError};
use crate::lease::Lessor;

pub(crate) const LEASE_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("lease");

/// etcd's `leasepb.Lease`, so the rows are byte for byte what etcd writes.
#[derive(Clone, PartialEq, Message)]
struct LeaseRow {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    /// Only written by etcd's lease checkpointing, which is off by default; kept for layout.
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

/// Follows one history row (in revision order) into the key → lease map of live keys.
pub(super) fn track_lease(leased: &mut HashMap<Vec<u8>, i64>, kv: &KeyValue, tombstone: bool) {
    if !tombstone && kv.lease != 0 {
        leased.insert(kv.key.clone(), kv.lease);
    } else {
        leased.remove(&kv.key);
    }
}

impl MvccStore {
    /// The member's lessor: leases, their keys and (on the leader) their deadlines.
    pub fn lessor(&self) -> &Lessor {
        &self.lessor
    }

    pub(super) fn restore_leases(&self, txn: &ReadTransaction, leased: HashMap<Vec<u8>, i64>) -> Result<(), EtcdError> {
        let table = txn.open_table(LEASE_TABLE).map_err(internal)?;
        let mut leases = Vec::new();
        for row in table.iter().map_err(internal)? {
            let (_, v) = row.map_err(internal)?;
            let l = LeaseRow::decode(v.value()).map_err(internal)?;
            leases.push((l.id, l.ttl));
        }
        self.lessor.restore(leases, leased);
        Ok(())
    }
}

impl WriteBatch<'_> {
    pub fn lessor(&self) -> &Lessor {
        &self.store.lessor
    }

    /// Records a granted lease in this batch's transaction.
    pub fn put_lease(&mut self, id: i64, ttl: i64) -> Result<(), EtcdError> {
        let mut t = self.txn.open_table(LEASE_TABLE).map_err(internal)?;
        let row = LeaseRow { id, ttl, remaining_ttl: 0 }.encode_to_vec();
        t.insert(id.to_be_bytes().as_slice(), row.as_slice()).map_err(internal)?;
        Ok(())
    }

    pub fn delete_lease(&mut self, id: i64) -> Result<(), EtcdError> {
        let mut t = self.txn.open_table(LEASE_TABLE).map_err(internal)?;
        t.remove(id.to_be_bytes().as_slice()).map_err(internal)?;
        Ok(())
    }
}

impl TxnWrite<'_, '_> {
    pub fn lessor(&self) -> &Lessor {
        &self.batch.store.lessor
    }
}
