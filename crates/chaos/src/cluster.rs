//! A cluster of real member processes (kaname or etcd) that the fault tool can kill, restart,
//! pause and resume. Each member has its own loopback address (127.a.b.N, ports 2379/2380 as
//! in a real deployment), its own data dir and log file under the run's directory.
//!
//! Only processes this struct started are ever signalled, by their PID; dropping it resumes
//! and SIGKILLs them, so a failing or panicking run leaves nothing behind.
//!
//! Membership changes go through the etcd v3 Cluster API (MemberRemove, MemberAdd, MemberList),
//! as etcdctl does them; a removed member's process leaves `members` for `retired`.
//! With clock faults every member runs under libfaketime (offset 0 until a fault moves it).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kaname_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use kaname_proto::etcdserverpb::StatusRequest;
use kaname_testkit::{agreed_leader, kill_and_reap, log_tails, spawn_logged, MemberFlags};
use tonic::transport::{Channel, Endpoint};

use crate::netns::Netns;

/// Which server the cluster runs: the test harness's, so that `kaname chaos` and the tests
/// start members the same way (flags, logs and reaping are the harness's too: this file adds
/// only what faults need around a member).
pub use kaname_testkit::Flavor;

/// libfaketime as Debian's `faketime` package installs it (scripts/install-test-deps.sh).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

pub struct Member {
    pub name: String,
    pub ip: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Its network namespace, when partitions are on (added members get new ones).
    pub(crate) slot: usize,
    /// Added mid-run: starts with `--initial-cluster-state existing`.
    pub(crate) joined: bool,
    /// libfaketime's FAKETIME_TIMESTAMP_FILE for this member (clock faults on): its offset.
    clock_file: Option<PathBuf>,
    /// `--initial-cluster` of its first start, passed again on restarts.
    initial_cluster: Option<String>,
    pub(crate) child: Option<Child>,
    pub(crate) paused: bool,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("http://{}:2379", self.ip)
    }
    pub fn peer_url(&self) -> String {
        format!("http://{}:2380", self.ip)
    }
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Cluster {
    pub flavor: Flavor,
    /// The current members, in the order they joined.
    pub members: Vec<Member>,
    /// Members removed by a membership change (their logs stay for reports).
    pub retired: Vec<Member>,
    /// Namespaces per member, when partitions are wanted (dropped after the members).
    pub(crate) net: Option<Netns>,
    token: String,
    election_timeout_ms: u64,
    dir: PathBuf,
    /// 127.a.b (loopback) when members are not in namespaces.
    pub(crate) prefix: String,
    /// Ordinal of the next member's name (m<N>): names are never reused.
    next_ordinal: usize,
    pub(crate) clock: bool,
}

/// What Maintenance.Status says about one member.
#[derive(Clone, Copy, Debug)]
pub struct MemberStatus {
    pub id: u64,
    pub leader: u64,
    pub raft_index: u64,
    pub applied_index: u64,
}

static SUBNET: AtomicU32 = AtomicU32::new(0);

/// A 127.a.b.0/24 block whose member addresses are free (nothing listens on :2379/:2380).
/// `a` comes from the PID, `b` from a per-process counter, so parallel runs and consecutive
/// runs in one process do not collide.
fn free_subnet(n: usize) -> anyhow::Result<String> {
    let a = 100 + std::process::id() % 100;
    for _ in 0..250 {
        let b = SUBNET.fetch_add(1, Ordering::Relaxed) % 250 + 1;
        let prefix = format!("127.{a}.{b}");
        let free = (1..=n).all(|i| {
            [2379, 2380].iter().all(|p| TcpListener::bind((format!("{prefix}.{}", 10 + i).as_str(), *p)).is_ok())
        });
        if free {
            return Ok(prefix);
        }
    }
    bail!("no free loopback subnet 127.{a}.*")
}

impl Cluster {
    /// Creates `n` members under `dir` and starts them (does not wait for health).
    /// With `namespaces`, each member runs in its own network namespace (see [`Netns`]) so that
    /// partitions can be made; otherwise members share the host's loopback.
    /// With `clock`, every member runs under libfaketime (see [`Cluster::set_clock_offset`]).
    pub fn start(
        flavor: Flavor,
        n: usize,
        dir: &Path,
        election_timeout_ms: u64,
        namespaces: bool,
        clock: bool,
    ) -> anyhow::Result<Cluster> {
        if clock {
            anyhow::ensure!(
                Path::new(LIBFAKETIME).exists(),
                "clock faults need {LIBFAKETIME}: run scripts/install-test-deps.sh (Debian package faketime)"
            );
        }
        let net = if namespaces { Some(Netns::create(n)?) } else { None };
        let prefix = if net.is_some() { String::new() } else { free_subnet(n)? };
        let mut c = Cluster {
            flavor,
            members: Vec::new(),
            retired: Vec::new(),
            net,
            token: String::new(),
            election_timeout_ms,
            dir: dir.to_path_buf(),
            prefix,
            next_ordinal: 1,
            clock,
        };
        for slot in 0..n {
            let m = c.new_member(slot, false)?;
            c.members.push(m);
        }
        c.token = format!("chaos-{}-{}", std::process::id(), c.members[0].ip.replace('.', "-"));
        for i in 0..n {
            c.spawn(i)?;
        }
        Ok(c)
    }

    /// A member with the next unused name, its directory and (for `slot`) address.
    pub(crate) fn new_member(&mut self, slot: usize, joined: bool) -> anyhow::Result<Member> {
        let k = self.next_ordinal;
        self.next_ordinal += 1;
        let name = format!("m{k}");
        let d = self.dir.join(&name);
        fs::create_dir_all(&d)?;
        let ip = match &self.net {
            Some(net) => net.ip(slot),
            None => {
                anyhow::ensure!(k + 10 < 255, "out of loopback addresses in {}.*", self.prefix);
                format!("{}.{}", self.prefix, 10 + k)
            }
        };
        let clock_file = if self.clock {
            let f = d.join("faketime.rc");
            fs::write(&f, "+0\n")?;
            Some(f)
        } else {
            None
        };
        Ok(Member {
            name,
            ip,
            data_dir: d.join("data"),
            log_path: d.join("member.log"),
            slot,
            joined,
            clock_file,
            initial_cluster: None,
            child: None,
            paused: false,
        })
    }

    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.election_timeout_ms)
    }

    fn initial_cluster(&self) -> String {
        self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect::<Vec<_>>().join(",")
    }

    pub(crate) fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        // A restart passes the flags of the member's first start, as an unchanged unit file
        // would. (kaname accepts the current members in --initial-cluster only once its data
        // holds that membership, which a member killed or cut off during a change may not;
        // the founding members are always accepted. etcd ignores these flags on a restart.)
        let current = self.initial_cluster();
        let initial_cluster = self.members[i].initial_cluster.get_or_insert(current).clone();
        let m = &self.members[i];
        let flags = MemberFlags {
            name: m.name.clone(),
            data_dir: m.data_dir.clone(),
            client_url: m.client_url(),
            peer_url: m.peer_url(),
            initial_cluster,
            joining: m.joined,
            token: self.token.clone(),
        };
        let timing = [
            format!("--heartbeat-interval={}", (self.election_timeout_ms / 10).max(10)),
            format!("--election-timeout={}", self.election_timeout_ms),
        ];
        let mut cmd = self.flavor.command_with(|bin| match &self.net {
            Some(net) => net.command(m.slot, bin),
            None => Command::new(bin),
        });
        cmd.args(flags.args(&self.flavor, &timing));
        if let Some(f) = &m.clock_file {
            // The member's wall clock follows the offset in its file, re-read on every call
            // (FAKETIME_NO_CACHE) so that a jump takes effect at once; monotonic clocks are real.
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_NO_CACHE", "1")
                .env("FAKETIME_TIMESTAMP_FILE", f)
                .env_remove("FAKETIME")
                .env_remove("FAKETIME_SHARED");
        }
        // If the tool itself is SIGKILLed (Drop never runs), the kernel kills the members: the
        // run's thread starts them and outlives them.
        let what = format!("{} {}", self.flavor.label(), m.name);
        let child = spawn_logged(cmd, &m.log_path, "chaos", &what, true)
            .with_context(|| format!("start {} member {}", self.flavor.label(), m.name))?;
        self.members[i].child = Some(child);
        self.members[i].paused = false;
        Ok(())
    }

    fn signal(&self, i: usize, sig: &str) {
        if let Some(child) = &self.members[i].child {
            let _ = kaname_testkit::signal(child.id(), sig);
        }
    }

    /// kill -9 member `i` (0-based) and reap it.
    pub fn kill(&mut self, i: usize) {
        if self.members[i].paused {
            self.resume(i);
        }
        if let Some(child) = self.members[i].child.take() {
            reap(child, self.clock);
        }
    }

    /// Sets member `i`'s wall-clock offset (seconds, either sign): libfaketime in the running
    /// process reads it on its next clock call.
    pub fn set_clock_offset(&self, i: usize, secs: i64) -> anyhow::Result<()> {
        let f = self.members[i].clock_file.as_ref().context("clock faults are off")?;
        // Replace, not rewrite in place: the member must never read a half-written offset.
        let tmp = f.with_extension("tmp");
        fs::write(&tmp, format!("{secs:+}\n"))?;
        fs::rename(&tmp, f)?;
        Ok(())
    }

    /// Starts a killed member again with its data dir.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.members[i].child.is_none() {
            self.spawn(i)?;
        }
        Ok(())
    }

    pub fn pause(&mut self, i: usize) {
        self.signal(i, "STOP");
        self.members[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.signal(i, "CONT");
        self.members[i].paused = false;
    }

    /// Members hear only the members of their own groups (needs namespaces).
    pub fn partition(&self, groups: &[Vec<usize>]) -> anyhow::Result<()> {
        let slots: Vec<Vec<usize>> = groups.iter().map(|g| g.iter().map(|&i| self.members[i].slot).collect()).collect();
        match &self.net {
            Some(net) => net.partition(&slots),
            None => bail!("partitions need the members in network namespaces"),
        }
    }

    pub fn heal_network(&self) {
        if let Some(net) = &self.net {
            net.heal();
        }
    }

    /// Undoes every fault: heals the network, resets clocks, resumes paused members, restarts
    /// dead ones.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        self.heal_network();
        for i in 0..self.members.len() {
            if self.clock {
                self.set_clock_offset(i, 0)?;
            }
            if self.members[i].paused {
                self.resume(i);
            }
            self.restart(i)?;
        }
        Ok(())
    }

    /// Members that died on their own (not killed by us): a crash is a finding in itself.
    pub fn crashed(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &mut self.members {
            if let Some(child) = &mut m.child {
                if let Ok(Some(status)) = child.try_wait() {
                    out.push(format!("{} exited on its own: {status}", m.name));
                    if let Some(child) = m.child.take() {
                        reap(child, self.clock);
                    }
                }
            }
        }
        out
    }

    pub fn channel(&self, i: usize) -> Channel {
        channel(&self.members[i].client_url())
    }

    /// (member_id, leader_id) as member `i` reports them, if it answers in time.
    pub async fn status(&self, i: usize) -> Option<(u64, u64)> {
        self.member_status(i).await.map(|s| (s.id, s.leader))
    }

    pub async fn member_status(&self, i: usize) -> Option<MemberStatus> {
        let mut c = MaintenanceClient::new(self.channel(i));
        let r = tokio::time::timeout(Duration::from_millis(500), c.status(StatusRequest {})).await.ok()?.ok()?;
        let r = r.into_inner();
        Some(MemberStatus {
            id: r.header?.member_id,
            leader: r.leader,
            raft_index: r.raft_index,
            applied_index: r.raft_applied_index,
        })
    }

    /// The 0-based index of the member all answering members agree is the leader (a majority
    /// of the members must answer).
    pub async fn leader(&self) -> Option<usize> {
        let mut answers = Vec::new();
        for i in 0..self.members.len() {
            if let Some((id, leader)) = self.status(i).await {
                answers.push((i, id, leader));
            }
        }
        agreed_leader(&answers, self.members.len() / 2 + 1)
    }

    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if Instant::now() > deadline {
                bail!("no agreed leader within {timeout:?}\n{}", self.log_tails(20));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every member answers Status.
    pub async fn wait_all_up(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.members.len() {
            while self.status(i).await.is_none() {
                if Instant::now() > deadline {
                    bail!("{} does not answer within {timeout:?}\n{}", self.members[i].name, self.log_tails(20));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// The last `n` lines of each member's log (retired members too), for failure reports.
    pub fn log_tails(&self, n: usize) -> String {
        log_tails(self.members.iter().chain(&self.retired).map(|m| (m.name.as_str(), m.log_path.as_path())), n)
    }
}

/// A lazily connecting client channel to one member's client URL.
pub fn channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_string())
        .expect("valid url")
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy()
}

/// Reaps a member process that was killed or has exited. libfaketime leaves a shared-memory
/// segment and a semaphore named after the process's PID in /dev/shm when the process dies
/// (also on a normal exit): remove exactly those of this PID, which this tool started.
pub(crate) fn reap(mut child: Child, faketime: bool) {
    let pid = child.id();
    kill_and_reap(&mut child);
    if faketime {
        let _ = fs::remove_file(format!("/dev/shm/faketime_shm_{pid}"));
        let _ = fs::remove_file(format!("/dev/shm/sem.faketime_sem_{pid}"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for m in &mut self.retired {
            if let Some(child) = m.child.take() {
                reap(child, self.clock);
            }
        }
    }
}
