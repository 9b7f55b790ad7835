//! The history compactor of `--etcd-compaction-interval`, as kube-apiserver runs it: etcd keeps
//! every revision until someone compacts, so without this a long-lived cluster's history fills
//! the backend quota and the store refuses writes (NOSPACE).
//!
//! Every interval, each API server tries a compare-and-swap on `compact_rev_key` (outside
//! `--etcd-prefix`, as upstream): the version of that key counts the intervals the cluster has
//! compacted. Only the server whose view of that count is current wins the swap; it writes the
//! revision it saw one interval ago and compacts to it. Losers learn the current count and try
//! again next interval. So however many API servers share the store, it is compacted once per
//! interval, always to a revision at least one interval old: watchers and paginated lists get
//! that long to catch up before they meet a 410.

use std::time::Duration;

use kaname_proto::etcdserverpb::{response_op, TxnRequest};

use crate::etcd::{cmp_version, op_get, op_put, Etcd};

/// Upstream's key (`k8s.io/apiserver/pkg/storage/etcd3`'s `compactRevKey`).
pub const COMPACT_REV_KEY: &str = "compact_rev_key";

/// What one server remembers between intervals: the version of [`COMPACT_REV_KEY`] it last
/// saw (the cluster's compaction count) and the store's revision then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub version: i64,
    pub revision: i64,
}

/// What one round did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    /// Another server compacted (or started counting) this interval; nothing done here.
    Lost,
    /// This server won the swap on its first round: it only started counting (upstream does
    /// not compact on bootstrap).
    Started,
    /// Won and compacted the history up to this revision.
    Compacted(i64),
}

/// One round of upstream's `compact`: swap the count, then compact to the revision of the
/// last round. Returns the progress to remember (unchanged if the swap failed; advanced once it
/// succeeded, even if the compaction then failed, as upstream) and what happened.
pub async fn round(etcd: &Etcd, last: Progress) -> (Progress, Result<Round, tonic::Status>) {
    let txn = TxnRequest {
        compare: vec![cmp_version(COMPACT_REV_KEY, last.version)],
        success: vec![op_put(COMPACT_REV_KEY, last.revision.to_string().into_bytes())],
        failure: vec![op_get(COMPACT_REV_KEY)],
    };
    let r = match etcd.txn(txn).await {
        Ok(r) => r,
        Err(e) => return (last, Err(e)),
    };
    let revision = r.header.as_ref().map(|h| h.revision).unwrap_or(0);
    if !r.succeeded {
        let version = r
            .responses
            .first()
            .and_then(|op| match &op.response {
                Some(response_op::Response::ResponseRange(range)) => range.kvs.first().map(|kv| kv.version),
                _ => None,
            })
            .unwrap_or(0);
        return (Progress { version, revision }, Ok(Round::Lost));
    }
    let next = Progress { version: last.version + 1, revision };
    if last.revision == 0 {
        return (next, Ok(Round::Started));
    }
    (next, etcd.compact(last.revision).await.map(|()| Round::Compacted(last.revision)))
}

/// Runs a round every `interval` until the task is aborted; a failed round is logged, as
/// upstream logs it, and the next interval tries again.
pub async fn run(etcd: Etcd, interval: Duration) {
    let mut progress = Progress::default();
    loop {
        tokio::time::sleep(interval).await;
        let (next, what) = round(&etcd, progress).await;
        progress = next;
        match what {
            Ok(Round::Compacted(rev)) => tracing::info!(revision = rev, "etcd: compacted history"),
            Ok(_) => {}
            Err(s) => tracing::error!("etcd: compact failed: {}", s.message()),
        }
    }
}
