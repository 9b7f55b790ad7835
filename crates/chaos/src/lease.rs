//! Leases in the workload. Lease clients grant leases with short TTLs (2–5 s), attach keys
//! `/chaos/lease/...` to them (apart from the linearizability registers), and then either keep
//! them alive with a LeaseKeepAlive stream (a request every TTL/3, as clientv3 does, moving to
//! another member when the stream breaks), let them expire, or revoke them.
//!
//! What etcd promises and what is checked:
//! - A lease renewed by a request sent at time s (a grant or a keepalive answered with TTL t)
//!   does not expire before s + t (expiry is measured on the leader's monotonic clock, and a
//!   new leader only extends leases). A keepalive that answers "gone" (TTL 0) earlier than
//!   that is a violation.
//! - At the end, after healing and waiting longer than the longest TTL plus the election timeout
//!   (a new leader gives every lease its TTL again): keys of leases let expire or revoked are
//!   gone on every member; keys of leases still renewed without a gap are on every member.
//!   A kept-alive lease whose client could not renew it within its TTL (its member was cut off
//!   long enough) may legitimately have expired: it is counted, not checked.
//!
//! Every lease operation is recorded (leases.json in the run directory) so that a failure can
//! print the lease, its keys, and its grant/keepalive/revoke/expiry times.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kaname_proto::etcdserverpb::kv_client::KvClient;
use kaname_proto::etcdserverpb::lease_client::LeaseClient;
use kaname_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::cluster::Cluster;
use crate::workload::{prefix_end, Endpoints};

pub const LEASE_PREFIX: &str = "/chaos/lease/";

/// Kept-alive leases per lease client at once (each has its own stream).
const MAX_KEPT_PER_CLIENT: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Fate {
    KeepAlive,
    Expire,
    Revoke,
}

/// One lease as its client saw it. Times are seconds since the start of the workload.
#[derive(Clone, Debug, Serialize)]
pub struct LeaseRecord {
    pub client: usize,
    pub id: i64,
    pub ttl: i64,
    pub fate: Fate,
    /// Grant sent, answered.
    pub granted: (f64, f64),
    /// Keys put with this lease: (key, when the put was acknowledged; None: outcome unknown).
    pub keys: Vec<(String, Option<f64>)>,
    /// Keepalives answered with TTL > 0.
    pub keepalives: Vec<Renewal>,
    pub keepalive_errors: usize,
    /// LeaseRevoke sent, answered (None: outcome unknown).
    pub revoke: Option<(f64, Option<f64>)>,
    /// The keepalive that said the lease is gone (TTL 0).
    pub gone: Option<Renewal>,
}

/// One keepalive answer, with who answered (the response header's member and raft term): the
/// evidence when a lease vanishes early.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Renewal {
    pub sent: f64,
    pub answered: f64,
    pub ttl: i64,
    pub member: u64,
    pub term: u64,
}

impl fmt::Display for Renewal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "keepalive sent {:.3} answered {:.3} TTL {} by member {:x} (term {})",
            self.sent, self.answered, self.ttl, self.member, self.term
        )
    }
}

impl LeaseRecord {
    /// Renewals the server acknowledged, as (sent, TTL): the grant, then each keepalive.
    fn renewals(&self) -> impl Iterator<Item = (f64, f64, i64)> + '_ {
        std::iter::once((self.granted.0, self.granted.1, self.ttl))
            .chain(self.keepalives.iter().map(|r| (r.sent, r.answered, r.ttl)))
    }

    /// The lease may not expire before this time.
    pub fn guaranteed_until(&self) -> f64 {
        self.renewals().map(|(sent, _, ttl)| sent + ttl as f64).fold(f64::MIN, f64::max)
    }

    /// True when every renewal was answered before the one before it ran out (so the lease
    /// was covered without a gap from its grant until the last renewal's TTL).
    pub fn renewed_without_gap(&self) -> bool {
        let r: Vec<_> = self.renewals().collect();
        r.windows(2).all(|w| w[1].1 < w[0].0 + w[0].2 as f64)
    }
}

impl fmt::Display for LeaseRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lease {:x} (client {}, TTL {} s, {:?}): granted [{:.3} .. {:.3}] s; keys:",
            self.id, self.client, self.ttl, self.fate, self.granted.0, self.granted.1
        )?;
        for (k, acked) in &self.keys {
            match acked {
                Some(t) => write!(f, " {k} (put acked at {t:.3} s)")?,
                None => write!(f, " {k} (put outcome unknown)")?,
            }
        }
        if self.fate == Fate::KeepAlive {
            write!(f, "; {} keepalives answered, {} errors", self.keepalives.len(), self.keepalive_errors)?;
            let tail = &self.keepalives[self.keepalives.len().saturating_sub(4)..];
            for r in tail {
                write!(f, "; {r}")?;
            }
            write!(f, "; renewed without a gap: {}", self.renewed_without_gap())?;
        }
        if let Some((s, a)) = self.revoke {
            match a {
                Some(a) => write!(f, "; revoke sent {s:.3} answered {a:.3}")?,
                None => write!(f, "; revoke sent {s:.3}, outcome unknown")?,
            }
        }
        if let Some(r) = self.gone {
            write!(f, "; {r}: lease gone")?;
        }
        write!(f, "; guaranteed until {:.3} s", self.guaranteed_until())
    }
}

pub type Leases = Arc<Mutex<Vec<LeaseRecord>>>;

/// Stops of the lease workload: `grant` ends the granting loops (with the other clients);
/// `keep` ends the keepalive streams (after the final checks).
#[derive(Clone, Default)]
pub struct LeaseStops {
    pub grant: Arc<AtomicBool>,
    pub keep: Arc<AtomicBool>,
}

fn secs(epoch: Instant) -> f64 {
    epoch.elapsed().as_secs_f64()
}

/// One lease client: grant, attach keys, choose the lease's fate; until `stops.grant`.
pub async fn lease_client(
    id: usize,
    seed: u64,
    endpoints: Endpoints,
    op_timeout: Duration,
    epoch: Instant,
    stops: LeaseStops,
    leases: Leases,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x1ea5e ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut member = id;
    let mut n = 0u64;
    let mut kept = 0usize;
    while !stops.grant.load(Ordering::Relaxed) {
        n += 1;
        let ttl = rng.gen_range(2..=5);
        let sent = secs(epoch);
        let mut lc = LeaseClient::new(endpoints.pick(member));
        let granted = tokio::time::timeout(op_timeout, lc.lease_grant(LeaseGrantRequest { ttl, id: 0 })).await;
        let lease_id = match granted {
            Ok(Ok(r)) if r.get_ref().error.is_empty() => r.into_inner().id,
            _ => {
                member += 1;
                tokio::time::sleep(Duration::from_millis(rng.gen_range(50..150))).await;
                continue;
            }
        };
        let roll = rng.gen_range(0..100);
        let fate = match roll {
            0..=39 if kept < MAX_KEPT_PER_CLIENT => Fate::KeepAlive,
            0..=69 => Fate::Expire,
            _ => Fate::Revoke,
        };
        let idx = {
            let mut g = leases.lock().unwrap();
            g.push(LeaseRecord {
                client: id,
                id: lease_id,
                ttl,
                fate,
                granted: (sent, secs(epoch)),
                keys: Vec::new(),
                keepalives: Vec::new(),
                keepalive_errors: 0,
                revoke: None,
                gone: None,
            });
            g.len() - 1
        };
        if fate == Fate::KeepAlive {
            kept += 1;
            tokio::spawn(keep_alive(
                idx,
                lease_id,
                ttl,
                endpoints.clone(),
                member,
                epoch,
                stops.keep.clone(),
                leases.clone(),
            ));
        }
        for j in 0..rng.gen_range(1..=2) {
            let key = format!("{LEASE_PREFIX}c{id}-{n}-{j}");
            let req = PutRequest {
                key: key.clone().into_bytes(),
                value: b"l".to_vec(),
                lease: lease_id,
                ..Default::default()
            };
            let r = tokio::time::timeout(op_timeout, KvClient::new(endpoints.pick(member)).put(req)).await;
            let acked = matches!(r, Ok(Ok(_))).then(|| secs(epoch));
            leases.lock().unwrap()[idx].keys.push((key, acked));
            if acked.is_none() {
                member += 1;
            }
        }
        if fate == Fate::Revoke {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..ttl as u64 * 500))).await;
            let sent = secs(epoch);
            let r = tokio::time::timeout(
                op_timeout,
                LeaseClient::new(endpoints.pick(member)).lease_revoke(LeaseRevokeRequest { id: lease_id }),
            )
            .await;
            let answered = matches!(r, Ok(Ok(_))).then(|| secs(epoch));
            leases.lock().unwrap()[idx].revoke = Some((sent, answered));
            if answered.is_none() {
                member += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..800))).await;
    }
}

/// Keeps lease `id` alive until `stop`: a keepalive every TTL/3 on one stream, reopened on
/// another member when it breaks or stays silent for TTL/3 (as clientv3's keepalive loop).
#[allow(clippy::too_many_arguments)]
async fn keep_alive(
    idx: usize,
    id: i64,
    ttl: i64,
    endpoints: Endpoints,
    mut member: usize,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    leases: Leases,
) {
    let interval = Duration::from_millis(ttl as u64 * 1000 / 3);
    let error = |leases: &Leases| leases.lock().unwrap()[idx].keepalive_errors += 1;
    while !stop.load(Ordering::Relaxed) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        // The first request goes in before the call: etcd (grpc-go) sends the response headers
        // with the first answer, so waiting for the call to open before sending would hang.
        let mut sent_at = Instant::now();
        let mut sent = secs(epoch);
        tx.send(LeaseKeepAliveRequest { id }).await.expect("receiver alive");
        let mut lc = LeaseClient::new(endpoints.pick(member));
        let opened =
            tokio::time::timeout(interval, lc.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))).await;
        let mut stream = match opened {
            Ok(Ok(s)) => s.into_inner(),
            _ => {
                error(&leases);
                member += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let left = interval.saturating_sub(sent_at.elapsed());
            match tokio::time::timeout(left, stream.message()).await {
                Ok(Ok(Some(r))) => {
                    let h = r.header.unwrap_or_default();
                    let renewal =
                        Renewal { sent, answered: secs(epoch), ttl: r.ttl, member: h.member_id, term: h.raft_term };
                    if r.ttl <= 0 {
                        leases.lock().unwrap()[idx].gone = Some(renewal);
                        return;
                    }
                    leases.lock().unwrap()[idx].keepalives.push(renewal);
                    tokio::time::sleep_until((sent_at + interval).into()).await;
                }
                _ => break,
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            sent_at = Instant::now();
            sent = secs(epoch);
            if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                break;
            }
        }
        error(&leases);
        member += 1;
    }
}

/// What the end-of-run lease check found.
pub struct LeaseCheck {
    pub summary: String,
    pub violations: Vec<String>,
}

/// The checks described in the module comment. `settled` is when the healed cluster had an
/// agreed leader (seconds since the epoch): leases may be extended by one election timeout
/// from a leader change, so expiries are awaited from then on.
pub async fn check(
    cluster: &Cluster,
    leases: &Leases,
    epoch: Instant,
    settled: f64,
    election_timeout: Duration,
) -> LeaseCheck {
    let mut violations = Vec::new();
    let snapshot = leases.lock().unwrap().clone();
    for l in &snapshot {
        if let (Fate::KeepAlive, Some(gone)) = (l.fate, l.gone) {
            let answered = gone.answered;
            if answered < l.guaranteed_until() {
                violations.push(format!(
                    "lease expired {:.3} s before its last renewal ran out: {l}",
                    l.guaranteed_until() - answered
                ));
            }
        }
    }
    let max_ttl = snapshot.iter().map(|l| l.ttl).max().unwrap_or(0) as f64;
    let et = election_timeout.as_secs_f64();
    // etcd revokes expired leases in a loop every 500 ms, and the revocation must commit.
    let slack = 1.5;
    let wait_until = snapshot
        .iter()
        .filter(|l| l.fate != Fate::KeepAlive)
        // Expiry is at most the grant's answer + TTL (later only through a leader change).
        .map(|l| l.granted.1 + l.ttl as f64)
        .fold(settled + max_ttl + et, f64::max)
        + slack;
    let wait = wait_until - secs(epoch);
    if wait > 0.0 {
        eprintln!("chaos: waiting {wait:.1} s for unrenewed leases to expire");
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }

    let expect_gone: Vec<&LeaseRecord> =
        snapshot.iter().filter(|l| l.fate != Fate::KeepAlive || l.gone.is_some()).collect();
    let poll_until = Instant::now() + Duration::from_secs(15);
    let mut kept_checked;
    let mut kept_lapsed;
    loop {
        let now = secs(epoch);
        // Kept-alive leases renewed without a gap up to now (their streams still run).
        let current = leases.lock().unwrap().clone();
        let must_stay: Vec<&LeaseRecord> = current
            .iter()
            .filter(|l| l.fate == Fate::KeepAlive && l.gone.is_none())
            .filter(|l| l.renewed_without_gap() && l.guaranteed_until() > now + 0.5)
            .collect();
        kept_checked = must_stay.len();
        kept_lapsed = current.iter().filter(|l| l.fate == Fate::KeepAlive).count() - must_stay.len();
        let mut problems = Vec::new();
        for i in 0..cluster.members.len() {
            let name = &cluster.members[i].name;
            let keys = match member_lease_keys(cluster, i).await {
                Ok(k) => k,
                Err(e) => {
                    problems.push(format!("reading {LEASE_PREFIX} on {name}: {e:#}"));
                    continue;
                }
            };
            for l in &expect_gone {
                let left: Vec<&String> = l.keys.iter().map(|(k, _)| k).filter(|k| keys.contains(*k)).collect();
                if !left.is_empty() {
                    problems.push(format!(
                        "{name} still has {left:?} at {now:.3} s ({:.3} s after the lease's guaranteed time): {l}",
                        now - l.guaranteed_until()
                    ));
                }
            }
            for l in &must_stay {
                let missing: Vec<&String> = l
                    .keys
                    .iter()
                    .filter(|(_, acked)| acked.is_some())
                    .map(|(k, _)| k)
                    .filter(|k| !keys.contains(*k))
                    .collect();
                if !missing.is_empty() {
                    problems.push(format!("{name} lacks {missing:?} of a lease kept alive without a gap: {l}"));
                }
            }
        }
        if problems.is_empty() {
            break;
        }
        if Instant::now() > poll_until {
            violations.extend(problems.into_iter().take(10).map(|p| format!("leases: {p}")));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let count = |f: Fate| snapshot.iter().filter(|l| l.fate == f).count();
    let summary = format!(
        "leases: {} granted ({} kept alive, {} let expire, {} revoked); at the end the keys of {} leases \
         renewed without a gap were on every member and the keys of {} expired/revoked leases on none \
         ({} kept-alive leases not renewed in time, unchecked)",
        snapshot.len(),
        count(Fate::KeepAlive),
        count(Fate::Expire),
        count(Fate::Revoke),
        kept_checked,
        expect_gone.len(),
        kept_lapsed
    );
    LeaseCheck { summary, violations }
}

/// The lease keys member `i` has (its own state: serializable).
async fn member_lease_keys(cluster: &Cluster, i: usize) -> anyhow::Result<std::collections::HashSet<String>> {
    let req = RangeRequest {
        key: LEASE_PREFIX.into(),
        range_end: prefix_end(LEASE_PREFIX),
        serializable: true,
        keys_only: true,
        ..Default::default()
    };
    let r = tokio::time::timeout(Duration::from_secs(5), KvClient::new(cluster.channel(i)).range(req)).await??;
    Ok(r.into_inner().kvs.into_iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(keepalives: Vec<(f64, f64, i64)>) -> LeaseRecord {
        let keepalives = keepalives
            .into_iter()
            .map(|(sent, answered, ttl)| Renewal { sent, answered, ttl, member: 1, term: 2 })
            .collect();
        LeaseRecord {
            client: 0,
            id: 1,
            ttl: 3,
            fate: Fate::KeepAlive,
            granted: (1.0, 1.1),
            keys: vec![("/chaos/lease/a".into(), Some(1.2))],
            keepalives,
            keepalive_errors: 0,
            revoke: None,
            gone: None,
        }
    }

    #[test]
    fn renewal_gaps_and_guarantees() {
        let l = lease(vec![(2.0, 2.1, 3), (3.0, 3.05, 3)]);
        assert!(l.renewed_without_gap());
        assert_eq!(l.guaranteed_until(), 6.0);
        // Answered at 4.5, after the grant's 1.0 + 3 ran out: a gap.
        let l = lease(vec![(4.4, 4.5, 3)]);
        assert!(!l.renewed_without_gap());
        assert!(l.to_string().contains("renewed without a gap: false"));
    }
}
