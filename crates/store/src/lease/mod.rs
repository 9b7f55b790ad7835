//! Leases (etcd's `lease` package): the replicated lease table, which keys hang on which
//! lease, and the leader-local expiry clock.
//!
//! What a lease *is* (its ID, TTL and attached keys) is replicated state: it changes only when
//! the state machine applies a grant, a revoke or a write, so it is the same on every member.
//! When a lease *expires* is not: as in etcd, only the leader ("primary") keeps deadlines, in
//! memory; other members hold every lease forever. The leader proposes a revoke for each
//! expired lease, so expiry reaches every member as an ordinary replicated revoke. A new leader
//! first extends every lease to a full TTL plus an election timeout (`promote`), so a leader
//! change can make a lease live longer, never shorter.
//!
//! [`Lessor`] is the in-memory state, owned by the MVCC store (whose writes attach and detach
//! keys; the `lease` table itself is `mvcc/lease_rows.rs`). The rest lives in the layer that
//! uses it: `apply/lease.rs` is what a grant and a revoke do when applied;
//! `server/lease_expiry.rs` is the leader's loop; `server/lease.rs` answers renew and
//! time-to-live on the leader, forwarding them there from other members.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::EtcdError;

/// etcd's `MaxLeaseTTL`: about 285 years.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// etcd's `leaseRevokeRate`: at most this many expired leases are revoked per second.
pub const LEASE_REVOKE_RATE: usize = 1000;
/// An expired lease whose revoke is in flight is not proposed again before this (etcd's
/// `expiredLeaseRetryInterval`).
pub const EXPIRED_RETRY: Duration = Duration::from_secs(3);

/// One lease as the lessor keeps it.
#[derive(Debug, Clone)]
struct Lease {
    ttl: i64,
    keys: BTreeSet<Vec<u8>>,
    /// `None`: never expires on this member (a follower, or a leader not yet promoted).
    expiry: Option<Instant>,
    /// When the leader last proposed revoking it, so it is not proposed again at once.
    revoke_sent: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    leases: HashMap<i64, Lease>,
    /// Which lease each key is attached to (etcd's `itemMap`), so a write can detach a key
    /// from its previous lease without reading the previous value.
    items: HashMap<Vec<u8>, i64>,
    /// This member runs expiry (it leads and has applied everything of earlier terms).
    primary: bool,
    min_ttl: i64,
}

/// The answer to `TimeToLive`, as the leader sees a lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseStatus {
    pub granted_ttl: i64,
    /// Whole seconds left, truncated as etcd's `int64(Remaining().Seconds())`.
    pub remaining: i64,
    pub keys: Vec<Vec<u8>>,
}

/// The in-memory lease state of one member; see the module docs.
#[derive(Debug)]
pub struct Lessor {
    inner: Mutex<Inner>,
    /// `items.len()`, readable without the lock: a write without lease to a store where no key
    /// has one (the common case) then costs no locking. Only the apply task changes items.
    attached: AtomicUsize,
}

impl Default for Lessor {
    fn default() -> Self {
        Lessor::new()
    }
}

/// etcd's minimum TTL: 1.5 election timeouts counted in whole heartbeats, rounded up to
/// seconds (2 s with the default 100 ms / 1000 ms), so a lease outlives a leader election.
pub fn min_ttl(heartbeat_ms: u64, election_ms: u64) -> i64 {
    let ticks = election_ms / heartbeat_ms.max(1);
    let ms = (3 * ticks / 2) * heartbeat_ms;
    ms.div_ceil(1000) as i64
}

impl Lessor {
    pub fn new() -> Self {
        Lessor {
            inner: Mutex::new(Inner { min_ttl: min_ttl(100, 1000), ..Default::default() }),
            attached: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("lessor lock")
    }

    /// Also raises leases already loaded, as etcd does for leases it recovers.
    pub fn set_min_ttl(&self, ttl: i64) {
        let mut g = self.lock();
        g.min_ttl = ttl;
        for l in g.leases.values_mut() {
            l.ttl = l.ttl.max(ttl);
        }
    }

    /// Replaces the replicated state (start, snapshot install): leases with their TTL and the
    /// key → lease attachments found in the store. A key naming an unknown lease stays
    /// unattached, as etcd's restore does.
    pub fn restore(
        &self,
        leases: impl IntoIterator<Item = (i64, i64)>,
        items: impl IntoIterator<Item = (Vec<u8>, i64)>,
    ) {
        let mut g = self.lock();
        let now = Instant::now();
        let primary = g.primary;
        let min = g.min_ttl;
        g.leases = leases
            .into_iter()
            .map(|(id, ttl)| {
                let ttl = ttl.max(min);
                let expiry = primary.then(|| now + secs(ttl));
                (id, Lease { ttl, keys: BTreeSet::new(), expiry, revoke_sent: None })
            })
            .collect();
        g.items.clear();
        for (key, id) in items {
            if let Some(l) = g.leases.get_mut(&id) {
                l.keys.insert(key.clone());
                g.items.insert(key, id);
            }
        }
        self.attached.store(g.items.len(), Ordering::Relaxed);
    }

    pub fn exists(&self, id: i64) -> bool {
        self.lock().leases.contains_key(&id)
    }

    /// Applies a grant (etcd's `lessor.Grant`); returns the TTL actually granted.
    pub fn grant(&self, id: i64, ttl: i64) -> Result<i64, EtcdError> {
        if id == 0 {
            return Err(EtcdError::LeaseNotFound);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        let mut g = self.lock();
        if g.leases.contains_key(&id) {
            return Err(EtcdError::LeaseExists);
        }
        let ttl = ttl.max(g.min_ttl);
        let expiry = g.primary.then(|| Instant::now() + secs(ttl));
        g.leases.insert(id, Lease { ttl, keys: BTreeSet::new(), expiry, revoke_sent: None });
        Ok(ttl)
    }

    /// The keys a revoke must delete, sorted so every member deletes them in the same order
    /// (the history rows, and so the hash, must agree).
    pub fn keys_of(&self, id: i64) -> Result<Vec<Vec<u8>>, EtcdError> {
        let g = self.lock();
        let l = g.leases.get(&id).ok_or(EtcdError::LeaseNotFound)?;
        Ok(l.keys.iter().cloned().collect())
    }

    /// Forgets a lease once its keys are deleted.
    pub fn remove(&self, id: i64) {
        let mut g = self.lock();
        if let Some(l) = g.leases.remove(&id) {
            for k in l.keys {
                if g.items.get(&k) == Some(&id) {
                    g.items.remove(&k);
                }
            }
        }
        self.attached.store(g.items.len(), Ordering::Relaxed);
    }

    /// A write of `key` with `lease` (0: none): moves the key off its previous lease.
    pub fn attach(&self, key: &[u8], lease: i64) {
        if lease == 0 && self.attached.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut g = self.lock();
        let old = g.items.get(key).copied().unwrap_or(0);
        if old == lease {
            return;
        }
        if old != 0 {
            g.items.remove(key);
            if let Some(l) = g.leases.get_mut(&old) {
                l.keys.remove(key);
            }
        }
        if lease != 0 {
            if let Some(l) = g.leases.get_mut(&lease) {
                l.keys.insert(key.to_vec());
                g.items.insert(key.to_vec(), lease);
            }
        }
        self.attached.store(g.items.len(), Ordering::Relaxed);
    }

    /// A deleted key leaves its lease.
    pub fn detach(&self, key: &[u8]) {
        self.attach(key, 0)
    }

    pub fn is_primary(&self) -> bool {
        self.lock().primary
    }

    /// This member became leader and has applied all earlier entries (etcd's `Promote`):
    /// every lease gets a full TTL plus `extend`, because the previous leader's deadlines are
    /// unknown here.
    pub fn promote(&self, extend: Duration) {
        let mut g = self.lock();
        g.primary = true;
        let now = Instant::now();
        for l in g.leases.values_mut() {
            l.expiry = Some(now + extend + secs(l.ttl));
            l.revoke_sent = None;
        }
        spread_expiries(&mut g.leases, now);
    }

    /// This member no longer leads: its deadlines mean nothing any more (etcd's `Demote`).
    pub fn demote(&self) {
        let mut g = self.lock();
        g.primary = false;
        for l in g.leases.values_mut() {
            l.expiry = None;
            l.revoke_sent = None;
        }
    }

    /// A keep-alive on the leader (etcd's `Renew`): a full TTL from now.
    pub fn renew(&self, id: i64) -> Result<RenewOutcome, EtcdError> {
        let mut g = self.lock();
        if !g.primary {
            return Ok(RenewOutcome::NotPrimary);
        }
        let l = g.leases.get_mut(&id).ok_or(EtcdError::LeaseNotFound)?;
        let now = Instant::now();
        if l.expiry.is_some_and(|e| e <= now) {
            // Its revoke may already be on its way through Raft; renewing now would let a
            // client believe in a lease whose keys are about to go.
            return Ok(RenewOutcome::Expired);
        }
        l.expiry = Some(now + secs(l.ttl));
        Ok(RenewOutcome::Renewed(l.ttl))
    }

    /// `TimeToLive` as this member sees it; meaningful on the primary only.
    pub fn status(&self, id: i64, with_keys: bool) -> Option<LeaseStatus> {
        let g = self.lock();
        let l = g.leases.get(&id)?;
        let remaining = match l.expiry {
            Some(e) => e.saturating_duration_since(Instant::now()).as_secs() as i64,
            // etcd: a lease without deadline has math.MaxInt64 nanoseconds left.
            None => i64::MAX / 1_000_000_000,
        };
        let keys = if with_keys { l.keys.iter().cloned().collect() } else { Vec::new() };
        Some(LeaseStatus { granted_ttl: l.ttl, remaining, keys })
    }

    /// Every lease ID, soonest deadline first (etcd's `Leases`, sorted by expiry), ties by ID.
    pub fn ids(&self) -> Vec<i64> {
        let g = self.lock();
        let mut v: Vec<(Option<Instant>, i64)> = g.leases.iter().map(|(id, l)| (l.expiry, *id)).collect();
        v.sort_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => x.cmp(&y).then(a.1.cmp(&b.1)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.1.cmp(&b.1),
        });
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Up to `limit` expired leases whose revoke should be proposed now; each is marked so it
    /// is not proposed again for [`EXPIRED_RETRY`] (etcd's `findExpiredLeases`).
    pub fn take_expired(&self, limit: usize) -> Vec<i64> {
        let mut g = self.lock();
        if !g.primary {
            return Vec::new();
        }
        let now = Instant::now();
        let mut due: Vec<(Instant, i64)> = g
            .leases
            .iter()
            .filter(|(_, l)| l.expiry.is_some_and(|e| e <= now))
            .filter(|(_, l)| l.revoke_sent.is_none_or(|t| now.duration_since(t) >= EXPIRED_RETRY))
            .map(|(id, l)| (l.expiry.expect("filtered"), *id))
            .collect();
        due.sort();
        due.truncate(limit);
        for (_, id) in &due {
            if let Some(l) = g.leases.get_mut(id) {
                l.revoke_sent = Some(now);
            }
        }
        due.into_iter().map(|(_, id)| id).collect()
    }
}

/// What a renew on this member came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    Renewed(i64),
    /// Expired, its revoke pending: the caller waits for the revoke, then answers not found.
    Expired,
    /// This member does not run expiry: the leader must renew it.
    NotPrimary,
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

/// After a promotion many leases may share one deadline; as etcd's `Promote`, leases beyond
/// 3/4 of [`LEASE_REVOKE_RATE`] per second are pushed back, so their revokes do not pile up.
fn spread_expiries(leases: &mut HashMap<i64, Lease>, _now: Instant) {
    if leases.len() < LEASE_REVOKE_RATE {
        return;
    }
    let mut order: Vec<(Instant, i64)> = leases.iter().filter_map(|(id, l)| l.expiry.map(|e| (e, *id))).collect();
    order.sort();
    let Some(&(mut base, _)) = order.first() else { return };
    let mut next = base + Duration::from_secs(1);
    let mut expires = 0usize;
    let target = 3 * LEASE_REVOKE_RATE / 4;
    for (e, id) in order {
        if e > next {
            base = e;
            next = base + Duration::from_secs(1);
            expires = 1;
            continue;
        }
        expires += 1;
        if expires <= target {
            continue;
        }
        let delay = (expires as f64 / target as f64 - (e - base).as_secs_f64()).max(0.0);
        let delay = Duration::from_secs_f64(delay);
        next = base + delay;
        if let Some(l) = leases.get_mut(&id) {
            l.expiry = Some(e + delay);
        }
    }
}

#[cfg(test)]
mod tests;
