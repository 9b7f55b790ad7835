//! Renew and time-to-live, which only the leader can answer (deadlines are leader-local and
//! never replicated, as in etcd). Any other member forwards them to the leader over the peer
//! `Lease` RPC, as etcd's followers forward them over HTTP (`leasehttp`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::EtcdError;
use crate::lease::{LeaseStatus, RenewOutcome};
use crate::raft::network::{ForwardReply, PeerRpc};
use crate::server::leader_call::LeaderCall;
use crate::server::EtcdServer;

/// A lease question for the leader.
///
/// A peer message, in bincode (a variant is its position): add variants only at the end,
/// never reorder or remove one, and give each an example and golden bytes
/// (`src/encoding_tests.rs`), so members of different versions understand each other.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum LeaseCall {
    Renew(i64),
    TimeToLive { id: i64, keys: bool },
}

/// The leader's answer to a [`LeaseCall`].
///
/// A peer message, in bincode (a variant is its position): add variants only at the end,
/// never reorder or remove one, and give each an example and golden bytes
/// (`src/encoding_tests.rs`), so members of different versions understand each other.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LeaseAnswer {
    /// The TTL the lease was renewed for.
    Renewed(i64),
    /// `None`: no such lease.
    Status(Option<LeaseStatus>),
}

/// How often to look again while waiting (for a leader, a promotion, a pending revoke).
const POLL: Duration = Duration::from_millis(25);

impl EtcdServer {
    /// etcd's `LeaseRenew`: the lease's TTL once the leader renewed it.
    pub async fn lease_renew(&self, id: i64) -> Result<i64, EtcdError> {
        match self.lease_call(LeaseCall::Renew(id)).await? {
            LeaseAnswer::Renewed(ttl) => Ok(ttl),
            LeaseAnswer::Status(_) => Err(crate::error::internal("unexpected answer to renew")),
        }
    }

    /// etcd's `LeaseTimeToLive`, as the leader sees the lease; `None` if there is no such lease.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<Option<LeaseStatus>, EtcdError> {
        match self.lease_call(LeaseCall::TimeToLive { id, keys }).await? {
            LeaseAnswer::Status(s) => Ok(s),
            LeaseAnswer::Renewed(_) => Err(crate::error::internal("unexpected answer to time-to-live")),
        }
    }

    /// Asks whoever leads, retrying through leader changes until the request timeout. Both
    /// calls are idempotent, so a retry after a lost answer is harmless.
    async fn lease_call(&self, call: LeaseCall) -> Result<LeaseAnswer, EtcdError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        let forward = LeaderCall {
            rpc: PeerRpc::Lease,
            request: &call,
            idempotent: true,
            without_leader: EtcdError::NoLeader,
            poll: POLL,
        };
        let (_, answer) = self.on_leader(forward, deadline, || self.lease_as_leader(call, deadline)).await?;
        Ok(answer)
    }

    /// The leader side of a [`LeaseCall`], local or forwarded by a follower.
    pub async fn lease_as_leader(&self, call: LeaseCall, deadline: Instant) -> ForwardReply<LeaseAnswer> {
        let lessor = self.store.lessor();
        loop {
            if self.leader() != Some(self.member_id) {
                return ForwardReply::NotLeader(self.leader());
            }
            if Instant::now() >= deadline {
                return ForwardReply::Failed(EtcdError::Timeout);
            }
            // A fresh leader answers once it has applied the earlier terms and taken over
            // expiry (see `lease_expiry::run`); until then its view of the leases is incomplete.
            if !lessor.is_primary() {
                tokio::time::sleep(POLL).await;
                continue;
            }
            match call {
                LeaseCall::TimeToLive { id, keys } => {
                    return ForwardReply::Done(0, LeaseAnswer::Status(lessor.status(id, keys)))
                }
                LeaseCall::Renew(id) => {
                    // etcd's ensureLeadership before a renewal (its fix of etcd#15247): a
                    // leader cut off from the others believes it leads until it hears a higher
                    // term, and a renewal it answered meanwhile is one the real leader never
                    // saw, which then expires the lease while its client thinks it renewed
                    // (`kaname chaos --seed 5007 --faults all` caught an isolated leader doing
                    // this for 2 s). A quorum round in this term first, then the renewal.
                    let term = self.raft.metrics().borrow().current_term;
                    match self.read_index_as_leader().await {
                        ForwardReply::Done(..) => {}
                        ForwardReply::NotLeader(l) => return ForwardReply::NotLeader(l),
                        ForwardReply::Failed(e) => return ForwardReply::Failed(e),
                    }
                    if self.raft.metrics().borrow().current_term != term {
                        continue;
                    }
                    match lessor.renew(id) {
                        Ok(RenewOutcome::Renewed(ttl)) => return ForwardReply::Done(0, LeaseAnswer::Renewed(ttl)),
                        // etcd waits for the pending revoke and then reports the lease as gone.
                        Ok(RenewOutcome::Expired) | Ok(RenewOutcome::NotPrimary) => tokio::time::sleep(POLL).await,
                        Err(e) => return ForwardReply::Failed(e),
                    }
                }
            }
        }
    }

    /// The peer `Lease` RPC: a follower's forwarded call.
    pub async fn serve_forwarded_lease(&self, call: LeaseCall) -> ForwardReply<LeaseAnswer> {
        self.lease_as_leader(call, Instant::now() + self.limits.request_timeout).await
    }
}
