//! Membership changes during a run, made through the etcd v3 Cluster API as etcdctl makes
//! them: MemberRemove of a running member (possibly the leader), later MemberAdd of a fresh
//! member (new name, new data dir) that starts with `--initial-cluster-state existing` and must
//! catch up before the run goes on. etcd allows one change at a time and, with
//! `--strict-reconfig-check` (its default), refuses a change the cluster's health could not
//! take ("unhealthy cluster" shortly after a restart): every request is retried for a while, and
//! after an unknown outcome MemberList tells whether the change happened.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kaname_proto::etcdserverpb::cluster_client::ClusterClient;
use kaname_proto::etcdserverpb::{Member as PbMember, MemberAddRequest, MemberListRequest, MemberRemoveRequest};

use crate::cluster::{reap, Cluster};

/// How long a membership request may keep failing before the change counts as refused.
const CHANGE_PATIENCE: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of refused or failed attempts at one change: message -> count.
#[derive(Debug, Default)]
pub struct Refusals(pub Vec<(String, usize)>);

impl Refusals {
    fn note(&mut self, e: &anyhow::Error) {
        let msg: String = format!("{e:#}").chars().take(120).collect();
        match self.0.iter_mut().find(|(m, _)| *m == msg) {
            Some((_, n)) => *n += 1,
            None => self.0.push((msg, 1)),
        }
    }
}

impl std::fmt::Display for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return write!(f, "first try");
        }
        let parts: Vec<String> = self.0.iter().map(|(m, n)| format!("{n} x {m:?}")).collect();
        write!(f, "after {}", parts.join(", "))
    }
}

/// What happened to a removed member's process.
#[derive(Debug)]
pub struct Removed {
    pub name: String,
    /// True when the process stopped by itself after its removal (as etcd's does).
    pub exited_by_itself: bool,
    /// Until MemberRemove was answered (retries included).
    pub request_took: Duration,
    /// The errors of the attempts before (distinct messages, with counts).
    pub refusals: Refusals,
    /// Then until the process stopped (or was killed).
    pub exit_took: Duration,
}

impl Cluster {
    /// A member to send a Cluster API request to: the leader unless it is `avoid`, else any
    /// other member that answers.
    async fn via(&self, avoid: Option<usize>) -> Option<usize> {
        if let Some(l) = self.leader().await.filter(|&l| Some(l) != avoid) {
            return Some(l);
        }
        for i in (0..self.members.len()).filter(|&i| Some(i) != avoid) {
            if self.status(i).await.is_some() {
                return Some(i);
            }
        }
        None
    }

    async fn member_list(&self, via: usize) -> anyhow::Result<Vec<PbMember>> {
        let mut c = ClusterClient::new(self.channel(via));
        let r = tokio::time::timeout(REQUEST_TIMEOUT, c.member_list(MemberListRequest { linearizable: false }))
            .await
            .context("MemberList timed out")??;
        Ok(r.into_inner().members)
    }

    /// The client URLs of the started members, from MemberList on the leader (what etcd's
    /// clientv3 `Sync` uses to follow membership).
    pub async fn client_urls(&self) -> anyhow::Result<Vec<String>> {
        let via = self.via(None).await.context("no member answers")?;
        let mut urls: Vec<String> = self.member_list(via).await?.into_iter().flat_map(|m| m.client_ur_ls).collect();
        urls.sort();
        urls.dedup();
        Ok(urls)
    }

    /// MemberRemove of member `i` (0-based), then its process is reaped (after up to 10 s for
    /// it to stop by itself) and it moves to `retired`.
    pub async fn remove_member(&mut self, i: usize) -> anyhow::Result<Removed> {
        let name = self.members[i].name.clone();
        let peer = self.members[i].peer_url();
        let started = Instant::now();
        let deadline = started + CHANGE_PATIENCE;
        let mut refusals = Refusals::default();
        loop {
            let attempt = async {
                let via = self.via(Some(i)).await.context("no other member answers")?;
                let list = self.member_list(via).await?;
                let Some(m) = list.iter().find(|m| m.peer_ur_ls.contains(&peer)) else {
                    return Ok(true);
                };
                let mut c = ClusterClient::new(self.channel(via));
                tokio::time::timeout(REQUEST_TIMEOUT, c.member_remove(MemberRemoveRequest { id: m.id }))
                    .await
                    .context("MemberRemove timed out")??;
                anyhow::Ok(true)
            };
            match attempt.await {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("MemberRemove of {name} refused for {CHANGE_PATIENCE:?}")))
                }
                Err(e) => {
                    refusals.note(&e);
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
            }
        }
        let request_took = started.elapsed();
        let mut exited_by_itself = false;
        let stop_by = Instant::now() + Duration::from_secs(10);
        while Instant::now() < stop_by {
            match self.members[i].child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) | None => {
                    exited_by_itself = true;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        if self.members[i].paused {
            self.resume(i);
        }
        let mut m = self.members.remove(i);
        if let Some(child) = m.child.take() {
            reap(child, self.clock);
        }
        self.retired.push(m);
        Ok(Removed { name, exited_by_itself, request_took, refusals, exit_took: started.elapsed() - request_took })
    }

    /// MemberAdd of a fresh member, then starts it (`--initial-cluster-state existing`) and
    /// waits until it has applied everything the leader had when it first answered. Returns
    /// its index, how long MemberAdd took (retries included), the refusals before, and how
    /// long catching up took.
    pub async fn add_member(&mut self) -> anyhow::Result<(usize, Duration, Refusals, Duration)> {
        let slot = match &mut self.net {
            Some(net) => net.add_slot()?,
            None => 0,
        };
        let m = self.new_member(slot, true)?;
        if self.net.is_none() {
            let free = [2379, 2380].iter().all(|p| TcpListener::bind((m.ip.as_str(), *p)).is_ok());
            anyhow::ensure!(free, "{}:2379/2380 is in use", m.ip);
        }
        let peer = m.peer_url();
        let name = m.name.clone();
        let requested = Instant::now();
        let deadline = requested + CHANGE_PATIENCE;
        let mut refusals = Refusals::default();
        loop {
            let attempt = async {
                let via = self.via(None).await.context("no member answers")?;
                if self.member_list(via).await?.iter().any(|m| m.peer_ur_ls.contains(&peer)) {
                    return Ok(());
                }
                let mut c = ClusterClient::new(self.channel(via));
                let req = MemberAddRequest { peer_ur_ls: vec![peer.clone()], is_learner: false };
                tokio::time::timeout(REQUEST_TIMEOUT, c.member_add(req)).await.context("MemberAdd timed out")??;
                anyhow::Ok(())
            };
            match attempt.await {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("MemberAdd of {name} refused for {CHANGE_PATIENCE:?}")))
                }
                Err(e) => {
                    refusals.note(&e);
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
            }
        }
        let request_took = requested.elapsed();
        self.members.push(m);
        let i = self.members.len() - 1;
        self.spawn(i)?;
        let started = Instant::now();
        self.wait_caught_up(i, Duration::from_secs(60)).await?;
        Ok((i, request_took, refusals, started.elapsed()))
    }

    /// Waits until member `i` answers and has applied the leader's raft index as it was when
    /// `i` first answered.
    async fn wait_caught_up(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut target = None;
        loop {
            if target.is_none() && self.member_status(i).await.is_some() {
                if let Some(l) = self.leader().await {
                    target = self.member_status(l).await.map(|s| s.raft_index);
                }
            }
            if let (Some(t), Some(s)) = (target, self.member_status(i).await) {
                if s.applied_index >= t {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not catch up within {timeout:?} (leader's index {target:?})\n{}",
                    self.members[i].name,
                    self.log_tails(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
