//! Reading the history back as events, for watchers that are behind (etcd's
//! `watchableStore.syncWatchers` reads the `key` bucket the same way).
//!
//! Rows of the `key` table sort by revision, so one range scan from a start revision yields
//! every change after it in order; tombstones are the rows with the `t` mark.

use kaname_proto::mvccpb::{event::EventType, Event, KeyValue};
use prost::Message;
use redb::ReadableDatabase;

use super::{bytes_to_rev, rev_to_bytes, MvccStore, Revision, KEY_TABLE};
use crate::error::{internal, EtcdError};

/// A stretch of history, see [`MvccStore::history`].
#[derive(Debug, Default)]
pub struct History {
    /// Events with `from <= mod_revision <= last_rev`, in revision order.
    pub events: Vec<Event>,
    /// The last revision the events are complete up to: `to`, or less when the read stopped
    /// at the row limit.
    pub last_rev: i64,
    /// The compacted revision when the read started: rows at or below it may be gone, so a
    /// reader that needed them must be told the history was compacted.
    pub compacted_rev: i64,
}

impl MvccStore {
    /// The events of revisions `from..=to`. Stops once `max_rows` rows or `max_bytes` of row
    /// values are read, but only at a revision boundary, so a revision's events are never
    /// split between two reads (one revision may exceed the limits).
    pub fn history(&self, from: i64, to: i64, max_rows: usize, max_bytes: usize) -> Result<History, EtcdError> {
        let db = self.db();
        let (compacted_rev, txn) = {
            let st = self.state.read().expect("index lock");
            // As in `range`: a compaction deletes rows only after taking this lock, so rows
            // above the compacted revision seen here are all in this transaction's snapshot.
            (st.compacted_rev, db.begin_read().map_err(internal)?)
        };
        let mut out = History { events: Vec::new(), last_rev: to, compacted_rev };
        if from > to {
            return Ok(out);
        }
        let table = txn.open_table(KEY_TABLE).map_err(internal)?;
        let start = rev_to_bytes(Revision { main: from.max(0), sub: 0 }, false);
        let mut bytes = 0;
        for row in table.range(start.as_slice()..).map_err(internal)? {
            let (k, v) = row.map_err(internal)?;
            let (rev, tombstone) = bytes_to_rev(k.value());
            if rev.main > to {
                break;
            }
            let full = out.events.len() >= max_rows || bytes >= max_bytes;
            if full && out.events.last().and_then(|e| e.kv.as_ref()).map(|kv| kv.mod_revision) != Some(rev.main) {
                out.last_rev = rev.main - 1;
                break;
            }
            bytes += v.value().len();
            let mut kv = KeyValue::decode(v.value()).map_err(internal)?;
            let kind = if tombstone {
                // Tombstones store only the key; the revision comes from the row key, as etcd
                // patches it in `kvsToEvents`.
                kv.mod_revision = rev.main;
                EventType::Delete
            } else {
                EventType::Put
            };
            out.events.push(Event { r#type: kind as i32, kv: Some(kv), prev_kv: None });
        }
        Ok(out)
    }
}
