//! The member's request path (etcd's `etcdserver`): writes are proposed through Raft and the
//! caller waits for them to be applied on *this* member; linearizable reads wait for a
//! read index confirmed by the leader; any member accepts any request.

use std::sync::Arc;
use std::time::Duration;

use kaname_proto::etcdserverpb::ResponseHeader;
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::error::{internal, EtcdError};
use crate::metrics::Metrics;
use crate::mvcc::MvccStore;
use crate::raft::network::{PeerChannels, PeerRpc};
use crate::raft::{Command, CommandResult, MemberNode, Proposal, Raft};

/// Limits and timing a member enforces on requests.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    pub max_txn_ops: usize,
    pub max_request_bytes: usize,
    /// How long a write or a linearizable read may wait for consensus (etcd: 5 s plus two
    /// election timeouts).
    pub request_timeout: Duration,
}

/// A forwarded request's outcome as the leader reports it.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardReply<T> {
    /// Done: the log index it was committed at, and the result.
    Done(u64, T),
    /// The callee is not the leader (any more); it may know who is.
    NotLeader(Option<u64>),
    Failed(EtcdError),
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
}

/// How often to look again for a leader while none is known.
const LEADER_POLL: Duration = Duration::from_millis(50);

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

    fn node_of(&self, id: u64) -> Option<MemberNode> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&id).cloned()
    }

    /// Waits until this member has applied `index`, so a client that wrote through it reads
    /// its own write here, even serializably (etcd applies before answering too).
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), EtcdError> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "wait for local apply")
            .await
            .map(|_| ())
            .map_err(|_| EtcdError::Timeout)
    }

    /// Sends `cmd` to the leader and returns the encoded response once it is applied here.
    pub async fn propose(&self, cmd: Command) -> Result<Vec<u8>, EtcdError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        let mut saw_leader = false;
        loop {
            if Instant::now() >= deadline {
                return Err(if saw_leader { EtcdError::Timeout } else { EtcdError::NoLeader });
            }
            let reply = match self.leader() {
                None => {
                    tokio::time::sleep(LEADER_POLL).await;
                    continue;
                }
                Some(id) if id == self.member_id => {
                    saw_leader = true;
                    match tokio::time::timeout_at(deadline, self.batcher.submit(cmd.clone())).await {
                        Ok(reply) => reply,
                        Err(_) => return Err(EtcdError::Timeout),
                    }
                }
                Some(id) => {
                    saw_leader = true;
                    let Some(node) = self.node_of(id) else {
                        tokio::time::sleep(LEADER_POLL).await;
                        continue;
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.peers.call(&node, PeerRpc::Forward, &cmd, left).await {
                        Ok(reply) => reply,
                        Err(_) => ForwardReply::NotLeader(None),
                    }
                }
            };
            match reply {
                ForwardReply::Done(index, result) => {
                    self.wait_applied(index, deadline).await?;
                    return result;
                }
                ForwardReply::Failed(e) => return Err(e),
                ForwardReply::NotLeader(_) => tokio::time::sleep(LEADER_POLL).await,
            }
        }
    }

    /// The leader side of a forwarded proposal.
    pub async fn propose_as_leader(&self, cmd: Command) -> ForwardReply<CommandResult> {
        self.batcher.submit(cmd).await
    }

    /// The leader side of a read index request: confirms leadership with a quorum round and
    /// returns the index a linearizable read must wait for.
    pub async fn read_index_as_leader(&self) -> ForwardReply<()> {
        match tokio::time::timeout(self.limits.request_timeout, self.raft.get_read_log_id()).await {
            Err(_) => ForwardReply::Failed(EtcdError::Timeout),
            Ok(Ok((read, _applied))) => ForwardReply::Done(read.map(|l| l.index).unwrap_or(0), ()),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)))) => {
                ForwardReply::NotLeader(f.leader_id)
            }
            Ok(Err(e)) => ForwardReply::Failed(internal(e)),
        }
    }

    /// Returns once this member has applied everything committed before the call, as
    /// confirmed by the current leader (ReadIndex): a read after it is linearizable.
    pub async fn linearizable_barrier(&self) -> Result<(), EtcdError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        let mut saw_leader = false;
        loop {
            if Instant::now() >= deadline {
                return Err(if saw_leader { EtcdError::Timeout } else { EtcdError::NoLeader });
            }
            let reply = match self.leader() {
                None => {
                    tokio::time::sleep(LEADER_POLL).await;
                    continue;
                }
                Some(id) if id == self.member_id => {
                    saw_leader = true;
                    self.read_index_as_leader().await
                }
                Some(id) => {
                    saw_leader = true;
                    let Some(node) = self.node_of(id) else {
                        tokio::time::sleep(LEADER_POLL).await;
                        continue;
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.peers.call(&node, PeerRpc::ReadIndex, &(), left).await {
                        Ok(r) => r,
                        Err(_) => ForwardReply::NotLeader(None),
                    }
                }
            };
            match reply {
                ForwardReply::Done(index, ()) => return self.wait_applied(index, deadline).await,
                ForwardReply::Failed(e) => return Err(e),
                ForwardReply::NotLeader(_) => tokio::time::sleep(LEADER_POLL).await,
            }
        }
    }
}

/// At most this many proposals are in Raft at once; what arrives meanwhile waits and goes
/// out as one batch when a slot frees up.
const MAX_IN_FLIGHT: usize = 4;
/// Bounds on one batch, so a burst of large requests does not make a giant log entry.
const MAX_BATCH_COMMANDS: usize = 2048;
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<ForwardReply<CommandResult>>,
}

/// Collects the commands of concurrent clients into [`Proposal`]s (see there for why).
/// Idle, a command goes out alone at once; under load, commands queue while
/// `MAX_IN_FLIGHT` proposals are in Raft and leave together.
pub struct Batcher {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Batcher {
    /// Starts the batching task; it ends when the batcher is dropped.
    pub fn start(raft: Raft, timeout: Duration) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
                let Some(first) = rx.recv().await else { return };
                let mut bytes = first.cmd.size();
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(p) => {
                            bytes += p.cmd.size();
                            batch.push(p);
                        }
                        Err(_) => break,
                    }
                }
                let raft = raft.clone();
                tokio::spawn(async move {
                    let (cmds, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
                    let outcome = tokio::time::timeout(timeout, raft.client_write(Proposal(cmds))).await;
                    drop(permit);
                    let fail = |replies: Vec<oneshot::Sender<_>>, r: &dyn Fn() -> ForwardReply<CommandResult>| {
                        for reply in replies {
                            let _ = reply.send(r());
                        }
                    };
                    match outcome {
                        Ok(Ok(resp)) => {
                            let index = resp.log_id.index;
                            for (reply, r) in replies.into_iter().zip(resp.data.0) {
                                let _ = reply.send(ForwardReply::Done(index, r));
                            }
                        }
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                            fail(replies, &|| ForwardReply::NotLeader(f.leader_id))
                        }
                        Ok(Err(e)) => fail(replies, &|| ForwardReply::Failed(internal(&e))),
                        Err(_) => fail(replies, &|| ForwardReply::Failed(EtcdError::Timeout)),
                    }
                });
            }
        });
        Batcher { tx }
    }

    /// Proposes `cmd` (this member must be the leader) and waits for its result.
    pub async fn submit(&self, cmd: Command) -> ForwardReply<CommandResult> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Pending { cmd, reply }).is_err() {
            return ForwardReply::Failed(EtcdError::Stopped);
        }
        rx.await.unwrap_or(ForwardReply::Failed(EtcdError::Stopped))
    }
}
