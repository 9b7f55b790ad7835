//! Membership changes (etcd's `MemberAdd`/`MemberRemove`/`MemberUpdate`/`MemberPromote`) on
//! openraft's joint consensus, and the cluster view a joining member learns its identity from.
//!
//! Changes run on the leader (openraft changes membership only there); any member accepts them
//! and forwards them over the peer `Membership` RPC, as it forwards writes. Before changing the
//! voters, the leader applies etcd's strict reconfiguration checks, so that adding a member that
//! never starts, or removing a started one, cannot cost the cluster its quorum: the members that
//! are started (have published their attributes) must still be a quorum of the new voters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{internal, EtcdError};
use crate::raft::network::{ForwardReply, PeerRpc};
use crate::raft::state_machine::member_attributes;
use crate::raft::MemberNode;
use crate::server::leader_call::LeaderCall;
use crate::server::EtcdServer;

/// A membership change as the Cluster service asks for it.
///
/// A peer message, in bincode (a variant is its position): add variants only at the end,
/// never reorder or remove one, and give each an example and golden bytes
/// (`src/encoding_tests.rs`), so members of different versions understand each other.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipChange {
    Add { id: u64, peer_urls: Vec<String>, learner: bool },
    Remove(u64),
    Update { id: u64, peer_urls: Vec<String> },
    Promote(u64),
}

/// What a member tells another about the cluster: enough for a new member started with
/// `--initial-cluster-state existing` to find its own ID (etcd's `GetClusterFromRemotePeers`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterView {
    pub cluster_id: u64,
    /// (member ID, node, is learner)
    pub members: Vec<(u64, MemberNode, bool)>,
}

/// etcd's `readyPercent`: a learner may be promoted once it has 90% of the leader's log.
const LEARNER_READY_FRACTION: f64 = 0.9;
/// etcd allows one learner at a time (`maxLearners`).
const MAX_LEARNERS: usize = 1;
/// etcd's `HealthInterval`: a peer counts as connected once it has answered for this long.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// How often every member says hello to every other one (see [`probe_peers`]).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps [`crate::raft::network::PeerChannels::active_since`] meaning what etcd's
/// `ActiveSince` means. etcd's members hold streams to every peer whatever their role, so
/// after an election the new leader has long known which peers are reachable. Ours talk mostly
/// leader to follower, so a new leader's view of the other followers started at the election,
/// and the strict reconfiguration checks refused membership changes as "unhealthy cluster" for
/// `HEALTH_INTERVAL` and more after every leader change (`kaname chaos --faults membership`
/// found it: etcd took the same MemberAdd at the first try). A hello to every other member
/// each second keeps the view current from any role; a failed one ends the peer's active
/// stretch, as a broken etcd stream does.
pub async fn probe_peers(server: std::sync::Arc<EtcdServer>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let others: Vec<MemberNode> = {
            let metrics = server.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            membership.nodes().filter(|(id, _)| **id != server.member_id).map(|(_, n)| n.clone()).collect()
        };
        let hellos =
            others.iter().map(|node| server.peers.call::<(), ClusterView>(node, PeerRpc::Hello, &(), PROBE_INTERVAL));
        futures::future::join_all(hellos).await;
    }
}

fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

fn same_urls(a: &[String], b: &[String]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

/// Whether `--initial-cluster` (`flags`) lists exactly the members of `current`, the latest
/// membership in a member's data. A member restarted after MemberAdd/MemberRemove is usually
/// given the cluster as it is now, not as it was founded; the IDs cannot be compared (an added
/// member's ID came from `member add`, not from the flags), so members are matched by peer
/// URLs, and by name where the member has published one (an added member that never started
/// has none yet).
pub(crate) fn flags_list_current(flags: &[crate::config::InitialMember], current: &BTreeMap<u64, MemberNode>) -> bool {
    flags.len() == current.len()
        && flags.iter().all(|f| {
            current.values().any(|n| same_urls(&n.peer_urls, &f.peer_urls) && (n.name.is_empty() || n.name == f.name))
        })
        && current.values().all(|n| flags.iter().any(|f| same_urls(&n.peer_urls, &f.peer_urls)))
}

impl EtcdServer {
    /// This member's view of the membership.
    pub fn cluster_view(&self) -> ClusterView {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<u64> = m.membership().voter_ids().collect();
        let members = m.membership().nodes().map(|(id, n)| (*id, n.clone(), !voters.contains(id))).collect();
        ClusterView { cluster_id: self.cluster_id, members }
    }

    /// Carries out `change` on the leader, wherever it was received.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), EtcdError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        let forward = LeaderCall {
            rpc: PeerRpc::Membership,
            request: &change,
            // A change whose answer was lost may have been made: repeating it could, say,
            // add the member twice.
            idempotent: false,
            without_leader: EtcdError::Timeout,
            poll: Duration::from_millis(50),
        };
        self.on_leader(forward, deadline, || self.change_membership_as_leader(change.clone())).await.map(|_| ())
    }

    /// The leader side of [`EtcdServer::change_membership`].
    pub async fn change_membership_as_leader(&self, change: MembershipChange) -> ForwardReply<()> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.member_id) {
            return ForwardReply::NotLeader(metrics.current_leader);
        }
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let nodes: BTreeMap<u64, MemberNode> = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let attrs = member_attributes(&self.store);
        let started = |ids: &BTreeSet<u64>| ids.iter().filter(|id| attrs.contains_key(id)).count();
        // etcd's numConnectedSince: this member, plus the peers reachable for HEALTH_INTERVAL.
        let healthy_since = std::time::Instant::now().checked_sub(HEALTH_INTERVAL);
        let connected = |id: &u64| {
            *id == self.member_id
                || nodes.get(id).and_then(|n| self.peers.active_since(n)).is_some_and(|t| Some(t) <= healthy_since)
        };

        let changes: ChangeMembers<u64, MemberNode> = match change {
            MembershipChange::Add { id, peer_urls, learner } => {
                // etcd's order: its strict reconfiguration checks before proposing, the
                // validation of the change itself (URLs, learner count) when applying it.
                if !learner {
                    // isReadyToAddVotingMember: the started voters must be a quorum of the
                    // voters after the change, or the new member's absence stops the cluster
                    // (a one-member cluster may always take a second).
                    let single = voters.len() == 1 && started(&voters) == 1;
                    if !single && started(&voters) < quorum(voters.len() + 1) {
                        return ForwardReply::Failed(EtcdError::NotEnoughStarted);
                    }
                }
                // isConnectedFullySince: every voter has been reachable for a while.
                if !voters.iter().all(connected) {
                    return ForwardReply::Failed(EtcdError::Unhealthy);
                }
                if nodes.values().any(|n| n.peer_urls.iter().any(|u| peer_urls.contains(u))) {
                    return ForwardReply::Failed(EtcdError::PeerUrlExists);
                }
                if learner && nodes.len() - voters.len() >= MAX_LEARNERS {
                    return ForwardReply::Failed(EtcdError::TooManyLearners);
                }
                let node = MemberNode { name: String::new(), peer_urls };
                if learner {
                    ChangeMembers::AddNodes([(id, node)].into())
                } else {
                    ChangeMembers::AddVoters([(id, node)].into())
                }
            }
            MembershipChange::Remove(id) => {
                if !nodes.contains_key(&id) {
                    return ForwardReply::Failed(EtcdError::MemberNotFound);
                }
                if voters.contains(&id) {
                    let after: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != id).collect();
                    // etcd's isReadyToRemoveVotingMember.
                    if started(&after) < quorum(after.len()) {
                        return ForwardReply::Failed(EtcdError::NotEnoughStarted);
                    }
                    // A member that is down may go; otherwise the rest must still reach a quorum.
                    let down =
                        id != self.member_id && nodes.get(&id).and_then(|n| self.peers.active_since(n)).is_none();
                    let active = voters.iter().filter(|v| connected(v)).count();
                    if !down && active.saturating_sub(1) < 1 + (voters.len() - 1) / 2 {
                        return ForwardReply::Failed(EtcdError::Unhealthy);
                    }
                    ChangeMembers::RemoveVoters([id].into())
                } else {
                    ChangeMembers::RemoveNodes([id].into())
                }
            }
            MembershipChange::Update { id, peer_urls } => {
                let Some(node) = nodes.get(&id) else {
                    return ForwardReply::Failed(EtcdError::MemberNotFound);
                };
                if nodes.iter().any(|(other, n)| *other != id && n.peer_urls.iter().any(|u| peer_urls.contains(u))) {
                    return ForwardReply::Failed(EtcdError::PeerUrlExists);
                }
                if same_urls(&node.peer_urls, &peer_urls) {
                    return ForwardReply::Done(0, ());
                }
                ChangeMembers::SetNodes([(id, MemberNode { name: node.name.clone(), peer_urls })].into())
            }
            MembershipChange::Promote(id) => {
                if !nodes.contains_key(&id) {
                    return ForwardReply::Failed(EtcdError::MemberNotFound);
                }
                if voters.contains(&id) {
                    return ForwardReply::Failed(EtcdError::MemberNotLearner);
                }
                // etcd's isLearnerReady: the learner has most of the leader's committed log.
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index)
                    .unwrap_or(0);
                let committed = metrics.last_applied.map(|l| l.index).unwrap_or(0);
                if (matched as f64) < committed as f64 * LEARNER_READY_FRACTION {
                    return ForwardReply::Failed(EtcdError::LearnerNotReady);
                }
                ChangeMembers::AddVoterIds([id].into())
            }
        };
        tracing::info!(?changes, "changing membership");
        match tokio::time::timeout(self.limits.request_timeout, self.raft.change_membership(changes, false)).await {
            Err(_) => ForwardReply::Failed(EtcdError::Timeout),
            Ok(Ok(resp)) => ForwardReply::Done(resp.log_id.index, ()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => ForwardReply::NotLeader(f.leader_id),
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => match e {
                // Another change is still in its joint phase (etcd serializes conf changes too).
                ChangeMembershipError::InProgress(_) => ForwardReply::NotLeader(None),
                other => ForwardReply::Failed(internal(other)),
            },
            Ok(Err(e)) => ForwardReply::Failed(internal(e)),
        }
    }
}

impl EtcdServer {
    /// etcd's `MoveLeader`, on the leader: hands leadership to the voter `target`.
    ///
    /// openraft 0.9 has no TimeoutNow message, so the transfer is done with what it has: new
    /// proposals wait and heartbeats stop (as etcd blocks proposals during a transfer), the
    /// target is let catch up, the followers' leader lease runs out, and then the target is
    /// told to campaign at once, ahead of every other member's election timer. With an
    /// up-to-date log it wins; the old leader steps down when it hears from it.
    pub async fn move_leader(&self, target: u64) -> Result<(), EtcdError> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.member_id) {
            return Err(EtcdError::NotLeader);
        }
        if target == self.member_id {
            return Ok(());
        }
        if !m.membership_config.membership().voter_ids().any(|v| v == target) {
            return Err(EtcdError::BadLeaderTransferee);
        }
        let node = self.node_of(target).ok_or(EtcdError::BadLeaderTransferee)?;
        let deadline = Instant::now() + self.limits.request_timeout;
        self.transferring.send_replace(true);
        self.raft.runtime_config().heartbeat(false);
        let outcome = self.hand_over(target, &node, deadline).await;
        self.raft.runtime_config().heartbeat(true);
        self.transferring.send_replace(false);
        outcome
    }

    async fn hand_over(&self, target: u64, node: &MemberNode, deadline: Instant) -> Result<(), EtcdError> {
        // The target must hold the whole log, or it cannot win.
        let mut metrics = self.raft.metrics();
        let caught_up = metrics.wait_for(|m| {
            let last = m.last_log_index;
            let matched = m.replication.as_ref().and_then(|r| r.get(&target).cloned().flatten()).map(|l| l.index);
            last.is_some() && matched >= last
        });
        if tokio::time::timeout_at(deadline, caught_up).await.is_err() {
            return Err(EtcdError::Timeout);
        }
        // Let the followers' leader lease expire, so they vote for the target.
        tokio::time::sleep(self.limits.leader_lease + Duration::from_millis(50)).await;
        let left = deadline.saturating_duration_since(Instant::now());
        match self.peers.call::<(), Result<(), String>>(node, PeerRpc::Campaign, &(), left).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(internal(e)),
            Err(_) => return Err(EtcdError::Timeout),
        }
        let mut metrics = self.raft.metrics();
        let elected = matches!(
            tokio::time::timeout_at(deadline, metrics.wait_for(|m| m.current_leader == Some(target))).await,
            Ok(Ok(_))
        );
        if elected {
            Ok(())
        } else {
            Err(EtcdError::Timeout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_sizes_match_raft() {
        assert_eq!([quorum(1), quorum(2), quorum(3), quorum(4), quorum(5)], [1, 2, 2, 3, 3]);
    }

    #[test]
    fn peer_url_sets_compare_unordered() {
        let a = vec!["http://b:2".to_string(), "http://a:1".to_string()];
        let b = vec!["http://a:1".to_string(), "http://b:2".to_string()];
        assert!(same_urls(&a, &b));
        assert!(!same_urls(&a, &b[..1]));
    }

    #[test]
    fn restart_flags_match_the_current_members() {
        use crate::config::InitialMember;
        let flag = |name: &str, url: &str| InitialMember { id: 0, name: name.into(), peer_urls: vec![url.into()] };
        let node = |name: &str, url: &str| MemberNode { name: name.into(), peer_urls: vec![url.into()] };
        let current: BTreeMap<u64, MemberNode> =
            [(1, node("m1", "http://a:1")), (7, node("m2", "http://b:1")), (9, node("", "http://d:1"))].into();
        let flags = [flag("m1", "http://a:1"), flag("m2", "http://b:1"), flag("m4", "http://d:1")];
        assert!(flags_list_current(&flags, &current), "an added member that never published its name");
        assert!(!flags_list_current(&flags[..2], &current), "a current member left out");
        let extra = [&flags[..], &[flag("m5", "http://e:1")]].concat();
        assert!(!flags_list_current(&extra, &current), "an unknown member");
        let renamed = [flag("m1", "http://a:1"), flag("x", "http://b:1"), flag("m4", "http://d:1")];
        assert!(!flags_list_current(&renamed, &current), "a published name differs");
        let moved = [flag("m1", "http://a:1"), flag("m2", "http://c:1"), flag("m4", "http://d:1")];
        assert!(!flags_list_current(&moved, &current), "other peer URLs");
    }
}
