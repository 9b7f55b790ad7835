//! The member's request path (etcd's `etcdserver`): writes are proposed through Raft and the
//! caller waits for them to be applied on *this* member; linearizable reads wait for a
//! read index confirmed by the leader; any member accepts any request.
//!
//! The layer's parts: [`batcher`] (proposals of concurrent clients travel together),
//! [`read_index`] (linearizable reads share read-index rounds), `leader_call` (requests
//! only the leader can carry out, sent to it over the peer calls of [`crate::raft::network`]),
//! and the leader-local side of leases: [`lease`] (renew and time-to-live, answered by the
//! leader) and [`lease_expiry`] (the leader's loop revoking expired leases).

pub mod batcher;
pub(crate) mod leader_call;
pub mod lease;
pub mod lease_expiry;
pub mod read_index;

use std::sync::Arc;
use std::time::Duration;

use kaname_proto::etcdserverpb::alarm_request::AlarmAction;
use kaname_proto::etcdserverpb::{AlarmRequest, AlarmType, ResponseHeader};
use openraft::error::RaftError;
use prost::Message;
use tokio::sync::watch;
use tokio::time::Instant;

use self::batcher::Batcher;
use crate::alarm;
use crate::error::{internal, EtcdError};
use crate::metrics::Metrics;
use crate::mvcc::MvccStore;
use crate::raft::network::{ForwardReply, PeerChannels};
use crate::raft::{Command, CommandResult, MemberNode, Raft};

/// Limits and timing a member enforces on requests.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    pub max_txn_ops: usize,
    pub max_request_bytes: usize,
    /// How long a write or a linearizable read may wait for consensus (etcd: 5 s plus two
    /// election timeouts).
    pub request_timeout: Duration,
    /// `--quota-backend-bytes`: past it this member raises the `NOSPACE` alarm.
    pub quota_backend_bytes: u64,
    /// How long followers keep trusting a silent leader (openraft's leader lease).
    pub leader_lease: Duration,
}

/// One member's server: the Raft handle, the store it applies to, and the identity used in
/// response headers.
pub struct EtcdServer {
    pub raft: Raft,
    pub store: Arc<MvccStore>,
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
    pub limits: RequestLimits,
    pub peers: PeerChannels,
    pub metrics: Arc<Metrics>,
    pub batcher: Batcher,
    /// The last log index applied to `store`, published by the state machine.
    pub applied: watch::Receiver<u64>,
    /// Set while this leader transfers leadership (see `batcher::Route::transferring`).
    pub transferring: watch::Sender<bool>,
    /// Linearizable reads share read-index rounds through it.
    pub read_rounds: read_index::ReadIndexRounds,
    pub auth_cfg: crate::auth::AuthConfig,
}

/// How often to look again for a leader while none is known.
pub(crate) const LEADER_POLL: Duration = Duration::from_millis(50);

impl EtcdServer {
    /// Fills the identity fields of a response header, keeping the revision the apply step set.
    pub fn fill_header(&self, header: &mut Option<ResponseHeader>) {
        let h = header.get_or_insert_with(Default::default);
        h.cluster_id = self.cluster_id;
        h.member_id = self.member_id;
        h.raft_term = self.raft.metrics().borrow().current_term;
    }

    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    pub(crate) fn node_of(&self, id: u64) -> Option<MemberNode> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&id).cloned()
    }

    /// Waits until this member has applied `index`, so a client that wrote through it reads
    /// its own write here, even serializably (etcd applies before answering too).
    pub(crate) async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), EtcdError> {
        let mut applied = self.applied.clone();
        let outcome = tokio::time::timeout_at(deadline, applied.wait_for(|a| *a >= index)).await;
        match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::Timeout),
        }
    }

    /// Sends `cmd` to the leader and returns the encoded response once it is applied here.
    pub async fn propose(&self, cmd: Command) -> Result<Vec<u8>, EtcdError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        let mut saw_leader = false;
        loop {
            if Instant::now() >= deadline {
                return Err(if saw_leader { EtcdError::Timeout } else { EtcdError::NoLeader });
            }
            if self.leader().is_none() {
                tokio::time::sleep(LEADER_POLL).await;
                continue;
            }
            saw_leader = true;
            let submitted = self.batcher.submit(vec![cmd.clone()]);
            let reply = match tokio::time::timeout_at(deadline, submitted).await {
                Ok(reply) => reply,
                Err(_) => return Err(EtcdError::Timeout),
            };
            match reply {
                ForwardReply::Done(index, mut results) => {
                    self.wait_applied(index, deadline).await?;
                    return match results.pop() {
                        Some(r) => r.map(serde_bytes::ByteBuf::into_vec),
                        None => Err(internal("no result for a proposed command")),
                    };
                }
                ForwardReply::Failed(e) => return Err(e),
                ForwardReply::NotLeader(_) => tokio::time::sleep(LEADER_POLL).await,
            }
        }
    }

    /// Proposes `cmd` from this member only while it still leads in `term`, and never
    /// forwards it: for proposals that are right only coming from that leadership, the
    /// lessor's revokes of the leases it saw expire. [`EtcdServer::propose`] would hand such
    /// a revoke to the new leader after this member lost leadership (a partitioned or paused
    /// leader's batch waits, then is forwarded), revoking a lease the new leader had just
    /// renewed: etcd's bug #12528, which `kaname chaos --seed 4004 --faults all` reproduced.
    /// Proposed here, an entry of a deposed leader's term can never commit.
    pub async fn propose_as_leader(&self, cmd: Command, term: u64) -> Result<Vec<u8>, EtcdError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        {
            let m = self.raft.metrics();
            let m = m.borrow();
            if m.current_leader != Some(self.member_id) || !m.state.is_leader() || m.current_term != term {
                return Err(EtcdError::NotLeader);
            }
        }
        let written = tokio::time::timeout_at(deadline, self.raft.client_write(crate::raft::Proposal(vec![cmd])));
        let resp = match written.await {
            Err(_) => return Err(EtcdError::Timeout),
            Ok(Err(RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(_)))) => {
                return Err(EtcdError::NotLeader)
            }
            Ok(Err(e)) => return Err(internal(e)),
            Ok(Ok(resp)) => resp,
        };
        if resp.log_id.leader_id.term != term {
            return Err(EtcdError::NotLeader);
        }
        self.wait_applied(resp.log_id.index, deadline).await?;
        match resp.data.0.into_iter().next() {
            Some(r) => r.map(serde_bytes::ByteBuf::into_vec),
            None => Err(internal("no result for a proposed command")),
        }
    }

    /// etcd's quota check before a write that adds `cost` bytes: if this member's backend
    /// would pass the quota, it raises the cluster-wide `NOSPACE` alarm and refuses the write.
    pub async fn check_quota(&self, cost: u64) -> Result<(), EtcdError> {
        if cost == 0 || alarm::fits(self.store.db_size(), cost, self.limits.quota_backend_bytes) {
            return Ok(());
        }
        self.raise_nospace().await;
        Err(EtcdError::NoSpace)
    }

    /// Raises this member's `NOSPACE` alarm through Raft, unless a `NOSPACE` alarm is already
    /// active (etcd raises at most one at a time).
    pub async fn raise_nospace(&self) {
        if self.store.alarms().no_space() {
            return;
        }
        tracing::warn!(
            db_size = self.store.db_size(),
            quota = self.limits.quota_backend_bytes,
            "backend quota exceeded, raising the NOSPACE alarm"
        );
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.member_id,
            alarm: AlarmType::Nospace as i32,
        };
        if let Err(e) = self.propose(Command::Alarm(raise.encode_to_vec())).await {
            tracing::warn!(error = %e, "could not raise the NOSPACE alarm");
        }
    }

    /// The leader side of a forwarded batch: it joins the leader's own queue, so the batches
    /// of all followers leave in one Raft entry.
    pub async fn propose_forwarded(&self, cmds: Vec<Command>) -> ForwardReply<Vec<CommandResult>> {
        if self.leader() != Some(self.member_id) {
            return ForwardReply::NotLeader(self.leader());
        }
        self.batcher.submit(cmds).await
    }

    /// The leader side of a read index request: confirms leadership with a quorum round and
    /// returns the index a linearizable read must wait for.
    pub async fn read_index_as_leader(&self) -> ForwardReply<()> {
        match tokio::time::timeout(self.limits.request_timeout, self.raft.get_read_log_id()).await {
            Err(_) => ForwardReply::Failed(EtcdError::Timeout),
            Ok(Ok((read, _applied))) => {
                // openraft returns max(committed, this leadership's first entry). A member that
                // restarts and resumes leadership in the same term (openraft restores a
                // committed vote for itself) starts from the committed index it last persisted,
                // which may lag writes already acknowledged before the crash, so a read at it
                // could miss them (the kill-all durability test caught this). Everything in a
                // leader's log is kept and will be committed by it, so waiting for its last
                // log index is always safe; it only costs waiting for in-flight writes.
                let last_log = self.raft.metrics().borrow().last_log_index;
                let index = read.map(|l| l.index).max(last_log).unwrap_or(0);
                ForwardReply::Done(index, ())
            }
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)))) => {
                ForwardReply::NotLeader(f.leader_id)
            }
            // No quorum answered (a partitioned leader): like etcd, keep trying until the
            // request times out rather than failing at once.
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_)))) => {
                ForwardReply::NotLeader(None)
            }
            Ok(Err(e)) => ForwardReply::Failed(internal(e)),
        }
    }

    /// Returns once this member has applied everything committed before the call, as
    /// confirmed by the current leader (ReadIndex): a read after it is linearizable.
    pub async fn linearizable_barrier(&self) -> Result<(), EtcdError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        let index = self.read_rounds.read_index(deadline).await?;
        self.wait_applied(index, deadline).await
    }
}
