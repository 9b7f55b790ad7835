//! Linearizable reads share read-index rounds (etcd's `linearizableReadLoop`).
//!
//! A linearizable read needs the leader to confirm, with a quorum round, that it still leads
//! after the read arrived; the read then waits until this member has applied the index the
//! leader returned. One round serves every read that arrived before it started, so the reads
//! that queue while a round is out all leave together in the next one: under load a member
//! makes one round (one peer RPC on a follower, one heartbeat round on the leader) per batch
//! instead of one per read.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::EtcdError;
use crate::raft::network::PeerRpc;
use crate::server::leader_call::LeaderCall;
use crate::server::EtcdServer;

/// A read waiting for the next round: its deadline, and where to send the confirmed index.
type Waiter = (Instant, oneshot::Sender<Result<u64, EtcdError>>);

/// How long past its deadline a read waits for its round's answer: the round itself gives up
/// at the deadline with the precise error (`no leader` or a timeout), which should win.
const ANSWER_GRACE: Duration = Duration::from_millis(500);

/// The readers' side of the read-index loop of one member; the loop ends with it.
pub struct ReadIndexRounds {
    tx: mpsc::UnboundedSender<Waiter>,
}

impl ReadIndexRounds {
    /// The handle, and the queue to hand to [`run`] once the server exists.
    pub fn new() -> (Self, ReadQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ReadIndexRounds { tx }, ReadQueue(rx))
    }

    /// The index a read arriving now must wait for, from a round started after this call.
    pub async fn read_index(&self, deadline: Instant) -> Result<u64, EtcdError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((deadline, tx)).map_err(|_| EtcdError::Stopped)?;
        match tokio::time::timeout_at(deadline + ANSWER_GRACE, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::Timeout),
        }
    }
}

/// The reads waiting for a round, consumed by [`run`].
pub struct ReadQueue(mpsc::UnboundedReceiver<Waiter>);

/// Runs rounds while reads wait, until the server is gone.
pub async fn run(server: Weak<EtcdServer>, ReadQueue(mut queue): ReadQueue) {
    while let Some(first) = queue.recv().await {
        // Everyone queued so far arrived before this round starts, so its index serves them.
        let mut waiters = vec![first];
        while let Ok(w) = queue.try_recv() {
            waiters.push(w);
        }
        // The round may run until the latest of their deadlines; each read stops waiting
        // at its own.
        let deadline = waiters.iter().map(|(d, _)| *d).max().expect("one waiter at least");
        let Some(server) = server.upgrade() else { return };
        let result = server.confirmed_read_index(deadline).await;
        drop(server);
        for (_, w) in waiters {
            let _ = w.send(result.clone());
        }
    }
}

impl EtcdServer {
    /// One read-index round: asks whoever leads to confirm its leadership with a quorum and
    /// return its commit index, retrying through leader changes until `deadline`.
    async fn confirmed_read_index(&self, deadline: Instant) -> Result<u64, EtcdError> {
        let call = LeaderCall {
            rpc: PeerRpc::ReadIndex,
            request: &(),
            idempotent: true,
            without_leader: EtcdError::NoLeader,
            poll: crate::server::LEADER_POLL,
        };
        let (index, ()) = self.on_leader(call, deadline, || self.read_index_as_leader()).await?;
        Ok(index)
    }
}
