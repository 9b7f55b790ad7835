//! Proposal batching: the commands of concurrent clients travel to the leader and through
//! Raft together (see [`crate::raft::Proposal`] for why this matters with openraft 0.9).
//!
//! Idle, a command goes out alone at once. Under load, commands queue while
//! `MAX_IN_FLIGHT` batches are out, and leave together when a slot frees up. On a follower a
//! batch becomes one `Forward` call to the leader; on the leader, the batches forwarded by
//! all followers join the leader's own queue, so one Raft entry carries the writes of the
//! whole cluster's clients.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::{internal, EtcdError};
use crate::raft::network::{ForwardReply, PeerChannels, PeerError, PeerRpc};
use crate::raft::{Command, CommandResult, Proposal, Raft};

/// Batches out at once, per member.
const MAX_IN_FLIGHT: usize = 4;
/// Bounds on one batch, so a burst of large requests does not make a giant log entry.
const MAX_BATCH_COMMANDS: usize = 2048;
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Commands submitted together (one client's request, or a batch forwarded by a follower),
/// answered together.
struct Pending {
    cmds: Vec<Command>,
    reply: oneshot::Sender<ForwardReply<Vec<CommandResult>>>,
}

impl Pending {
    fn size(&self) -> usize {
        self.cmds.iter().map(Command::size).sum()
    }
}

/// Handle to the batching task of one member; it ends when the handle is dropped.
pub struct Batcher {
    tx: mpsc::UnboundedSender<Pending>,
}

/// What a batch needs to reach the leader.
#[derive(Clone)]
pub struct Route {
    pub raft: Raft,
    pub peers: PeerChannels,
    pub member_id: u64,
    pub timeout: Duration,
    /// True while this leader hands leadership over (`MoveLeader`): new proposals wait, as
    /// etcd blocks proposals during a transfer, so the followers' leases can run out.
    pub transferring: tokio::sync::watch::Receiver<bool>,
}

impl Route {
    /// Proposes the batch here if this member leads, or forwards it to the leader.
    async fn send(&self, cmds: Vec<Command>) -> ForwardReply<Vec<CommandResult>> {
        let (leader, node) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let node = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
            (m.current_leader, node)
        };
        match leader {
            None => ForwardReply::NotLeader(None),
            Some(id) if id == self.member_id => self.propose_here(cmds).await,
            Some(id) => {
                let Some(node) = node else {
                    return ForwardReply::NotLeader(Some(id));
                };
                match self.peers.call(&node, PeerRpc::Forward, &cmds, self.timeout).await {
                    Ok(reply) => reply,
                    // Never delivered: safe to try again, with whoever leads by then.
                    Err(PeerError::Unreachable(_)) => ForwardReply::NotLeader(None),
                    // Maybe proposed, maybe not: sending it again could apply it twice, so the
                    // client gets etcd's timeout and decides.
                    Err(_) => ForwardReply::Failed(EtcdError::Timeout),
                }
            }
        }
    }

    /// Appends the batch as one Raft entry (this member must lead) and waits for its apply.
    async fn propose_here(&self, cmds: Vec<Command>) -> ForwardReply<Vec<CommandResult>> {
        if *self.transferring.borrow() {
            let mut t = self.transferring.clone();
            let _ = tokio::time::timeout(self.timeout, t.wait_for(|busy| !*busy)).await;
        }
        match tokio::time::timeout(self.timeout, self.raft.client_write(Proposal(cmds))).await {
            Ok(Ok(resp)) => ForwardReply::Done(resp.log_id.index, resp.data.0),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => ForwardReply::NotLeader(f.leader_id),
            Ok(Err(e)) => ForwardReply::Failed(internal(e)),
            Err(_) => ForwardReply::Failed(EtcdError::Timeout),
        }
    }
}

impl Batcher {
    pub fn start(route: Route) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let handle = Batcher { tx };
        tokio::spawn(async move {
            loop {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                let Some(first) = rx.recv().await else { return };
                let mut bytes = first.size();
                let mut count = first.cmds.len();
                let mut batch = vec![first];
                while count < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(p) => {
                            bytes += p.size();
                            count += p.cmds.len();
                            batch.push(p);
                        }
                        Err(_) => break,
                    }
                }
                let route = route.clone();
                tokio::spawn(async move {
                    let mut cmds = Vec::with_capacity(count);
                    let mut replies = Vec::with_capacity(batch.len());
                    for p in batch {
                        replies.push((p.cmds.len(), p.reply));
                        cmds.extend(p.cmds);
                    }
                    let started = std::time::Instant::now();
                    let outcome = route.send(cmds).await;
                    drop(permit);
                    tracing::trace!(count, us = started.elapsed().as_micros() as u64, "batch round trip");
                    match outcome {
                        ForwardReply::Done(index, results) if results.len() == count => {
                            let mut results = results.into_iter();
                            for (n, reply) in replies {
                                let _ = reply.send(ForwardReply::Done(index, results.by_ref().take(n).collect()));
                            }
                        }
                        ForwardReply::Done(..) => {
                            for (_, reply) in replies {
                                let _ = reply.send(ForwardReply::Failed(internal("result count mismatch")));
                            }
                        }
                        ForwardReply::NotLeader(l) => {
                            for (_, reply) in replies {
                                let _ = reply.send(ForwardReply::NotLeader(l));
                            }
                        }
                        ForwardReply::Failed(e) => {
                            for (_, reply) in replies {
                                let _ = reply.send(ForwardReply::Failed(e.clone()));
                            }
                        }
                    }
                });
            }
        });
        handle
    }

    /// Sends `cmds` towards the leader with whatever else is waiting, and returns their
    /// results with the log index they were committed at.
    pub async fn submit(&self, cmds: Vec<Command>) -> ForwardReply<Vec<CommandResult>> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Pending { cmds, reply }).is_err() {
            return ForwardReply::Failed(EtcdError::Stopped);
        }
        rx.await.unwrap_or(ForwardReply::Failed(EtcdError::Stopped))
    }
}
