//! The leader's lessor loop (etcd's `lessor.runLoop` plus the server's revoke of expired
//! leases): take over expiry on becoming leader, give it up on losing leadership, and every
//! 500 ms propose a revoke for each expired lease, rate limited as etcd.

use std::sync::Arc;
use std::time::Duration;

use kaname_proto::etcdserverpb::LeaseRevokeRequest;
use prost::Message;

use crate::error::EtcdError;
use crate::lease::LEASE_REVOKE_RATE;
use crate::raft::Command;
use crate::server::EtcdServer;

/// etcd checks for expired leases this often.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Runs for the life of the member. `extend` is what a promotion adds on top of each lease's
/// TTL (etcd: the election timeout).
pub async fn run(server: Arc<EtcdServer>, extend: Duration) {
    let lessor = server.store.lessor();
    let mut metrics = server.raft.metrics();
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (term, log index) seen on becoming leader: promote once that index is applied, i.e. once
    // everything earlier terms committed is applied, as etcd promotes on the leader's first
    // (empty) entry of its term.
    let mut pending: Option<(u64, u64)> = None;
    let mut promoted_term: Option<u64> = None;
    loop {
        let ticked = tokio::select! {
            _ = tick.tick() => true,
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
        };
        let (leads, term, last_log) = {
            let m = metrics.borrow_and_update();
            (m.current_leader == Some(server.member_id) && m.state.is_leader(), m.current_term, m.last_log_index)
        };
        if !leads {
            if lessor.is_primary() {
                lessor.demote();
                tracing::info!("lessor demoted: not the leader any more");
            }
            pending = None;
            promoted_term = None;
            continue;
        }
        if promoted_term != Some(term) {
            if promoted_term.is_some() {
                lessor.demote();
                promoted_term = None;
            }
            let target = match pending {
                Some((t, index)) if t == term => index,
                _ => {
                    let index = last_log.unwrap_or(0);
                    pending = Some((term, index));
                    index
                }
            };
            if *server.applied.borrow() < target {
                continue;
            }
            lessor.promote(extend);
            promoted_term = Some(term);
            pending = None;
            tracing::info!(term, "lessor promoted: this member now expires leases");
            continue;
        }
        if ticked {
            revoke_expired(&server, term);
        }
    }
}

/// Proposes a revoke for each expired lease; half the per-second rate per check (etcd's
/// `revokeExpiredLeases`). Revokes run concurrently so the batcher sends them together.
fn revoke_expired(server: &Arc<EtcdServer>, term: u64) {
    for id in server.store.lessor().take_expired(LEASE_REVOKE_RATE / 2) {
        let server = server.clone();
        tokio::spawn(async move {
            // Only from this leadership: a member that lost it must not have its stale
            // deadlines reach the new leader as revokes (see `propose_as_leader`).
            let cmd = Command::LeaseRevoke(LeaseRevokeRequest { id }.encode_to_vec());
            match server.propose_as_leader(cmd, term).await {
                Ok(_) => tracing::debug!("revoked expired lease {id:016x}"),
                // Revoked meanwhile by a client: nothing left to do.
                Err(EtcdError::LeaseNotFound) => {}
                Err(EtcdError::NotLeader) => {
                    tracing::debug!("lease {id:016x} not revoked: no longer the leader of term {term}")
                }
                Err(e) => tracing::warn!("revoke of expired lease {id:016x} failed: {e}; will retry"),
            }
        });
    }
}
