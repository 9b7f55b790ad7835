//! Requests only the leader can carry out (read index, lease renewals and time-to-live,
//! membership changes), received by any member.
//!
//! Each of them runs locally when this member leads and is sent over a peer RPC otherwise,
//! and each must survive leader changes the same way: look for a leader, ask it, and ask
//! again (the new one) until the request deadline. That loop lives here once, so its rules,
//! above all when a forwarded request may be sent a second time, cannot drift apart.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::error::EtcdError;
use crate::raft::network::{ForwardReply, PeerError, PeerRpc};
use crate::server::EtcdServer;

/// How one kind of leader-only request travels.
pub(crate) struct LeaderCall<'a, Req> {
    /// The peer RPC a follower forwards it with.
    pub rpc: PeerRpc,
    pub request: &'a Req,
    /// Whether a forwarded request that may have reached the leader, but whose answer was
    /// lost, may be sent again. True for idempotent requests; false where a repeat could
    /// apply the request twice (the client then gets a timeout, as from etcd).
    pub idempotent: bool,
    /// The error when the deadline passes and this member never knew a leader: etcd answers
    /// reads and lease calls with `no leader`, but proposals (membership) with a timeout.
    pub without_leader: EtcdError,
    /// How long to wait before asking again.
    pub poll: Duration,
}

impl EtcdServer {
    /// Carries out `call` on the leader: `local` when this member leads, the peer RPC
    /// otherwise, retrying through leader changes until `deadline`. Returns the leader's
    /// log index for the request and its answer.
    pub(crate) async fn on_leader<Req, Resp, Local, Fut>(
        &self,
        call: LeaderCall<'_, Req>,
        deadline: Instant,
        local: Local,
    ) -> Result<(u64, Resp), EtcdError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        Local: Fn() -> Fut,
        Fut: Future<Output = ForwardReply<Resp>>,
    {
        let mut saw_leader = false;
        loop {
            if Instant::now() >= deadline {
                return Err(if saw_leader { EtcdError::Timeout } else { call.without_leader });
            }
            let reply = match self.leader() {
                None => ForwardReply::NotLeader(None),
                Some(id) if id == self.member_id => {
                    saw_leader = true;
                    local().await
                }
                Some(id) => {
                    saw_leader = true;
                    match self.node_of(id) {
                        None => ForwardReply::NotLeader(None),
                        Some(node) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            match self.peers.call(&node, call.rpc, call.request, left).await {
                                Ok(reply) => reply,
                                Err(PeerError::NoAnswer(e)) if !call.idempotent => {
                                    tracing::debug!("{:?} to the leader may have been delivered: {e}", call.rpc);
                                    return Err(EtcdError::Timeout);
                                }
                                Err(e) => {
                                    tracing::debug!("{:?} to the leader: {e}", call.rpc);
                                    ForwardReply::NotLeader(None)
                                }
                            }
                        }
                    }
                }
            };
            match reply {
                ForwardReply::Done(index, answer) => return Ok((index, answer)),
                ForwardReply::Failed(e) => return Err(e),
                ForwardReply::NotLeader(_) => tokio::time::sleep(call.poll).await,
            }
        }
    }
}
