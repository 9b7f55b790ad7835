//! A cluster of real member processes (kaname or etcd) that the fault tool can kill, restart,
//! pause and resume. Each member has its own loopback address (127.a.b.N, ports 2379/2380 as
//! in a real deployment), its own data dir and log file under the run's directory.
//!
//! Only processes this struct started are ever signalled, by their PID; dropping it resumes
//! and SIGKILLs them, so a failing or panicking run leaves nothing behind.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kaname_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use kaname_proto::etcdserverpb::StatusRequest;
use tonic::transport::{Channel, Endpoint};

use crate::netns::Netns;

/// Which server the cluster runs.
#[derive(Clone, Debug)]
pub enum Flavor {
    /// `<binary> etcd ...`: kaname's store.
    Kaname(PathBuf),
    /// A real etcd binary (Debian's 3.4 at /usr/bin/etcd).
    Etcd(PathBuf),
}

impl Flavor {
    pub fn label(&self) -> &'static str {
        match self {
            Flavor::Kaname(_) => "kaname",
            Flavor::Etcd(_) => "etcd",
        }
    }
}

pub struct Member {
    pub name: String,
    pub ip: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
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
    pub members: Vec<Member>,
    /// Namespaces per member, when partitions are wanted (dropped after the members).
    net: Option<Netns>,
    token: String,
    election_timeout_ms: u64,
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
    pub fn start(
        flavor: Flavor,
        n: usize,
        dir: &Path,
        election_timeout_ms: u64,
        namespaces: bool,
    ) -> anyhow::Result<Cluster> {
        let net = if namespaces { Some(Netns::create(n)?) } else { None };
        let prefix = if net.is_some() { String::new() } else { free_subnet(n)? };
        let members = (1..=n)
            .map(|i| {
                let d = dir.join(format!("m{i}"));
                fs::create_dir_all(&d)?;
                Ok(Member {
                    name: format!("m{i}"),
                    ip: match &net {
                        Some(net) => net.ip(i - 1),
                        None => format!("{prefix}.{}", 10 + i),
                    },
                    data_dir: d.join("data"),
                    log_path: d.join("member.log"),
                    child: None,
                    paused: false,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let token = format!("chaos-{}-{}", std::process::id(), members[0].ip.replace('.', "-"));
        let mut c = Cluster { flavor, members, net, token, election_timeout_ms };
        for i in 0..n {
            c.spawn(i)?;
        }
        Ok(c)
    }

    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.election_timeout_ms)
    }

    fn initial_cluster(&self) -> String {
        self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect::<Vec<_>>().join(",")
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let initial_cluster = self.initial_cluster();
        let m = &self.members[i];
        let program = |bin: &Path| match &self.net {
            Some(net) => net.command(i, bin),
            None => Command::new(bin),
        };
        let mut cmd = match &self.flavor {
            Flavor::Kaname(bin) => {
                let mut c = program(bin);
                c.arg("etcd");
                c
            }
            Flavor::Etcd(bin) => {
                let mut c = program(bin);
                c.args(["--logger", "zap", "--log-outputs", "stderr"]);
                c
            }
        };
        // etcd and kaname both read ETCD_* variables as flags: keep the user's out.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url(), "--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url(), "--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &initial_cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", &(self.election_timeout_ms / 10).max(10).to_string()])
            .args(["--election-timeout", &self.election_timeout_ms.to_string()]);
        let log = OpenOptions::new().create(true).append(true).open(&m.log_path)?;
        let mut log2 = log.try_clone()?;
        writeln!(log2, "=== chaos: starting {} {}", self.flavor.label(), m.name)?;
        cmd.stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log2));
        // If the tool itself is SIGKILLed (Drop never runs), the kernel kills the members.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("start {} member {}", self.flavor.label(), m.name))?;
        self.members[i].child = Some(child);
        self.members[i].paused = false;
        Ok(())
    }

    fn signal(&self, i: usize, sig: &str) {
        if let Some(child) = &self.members[i].child {
            let _ = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status();
        }
    }

    /// kill -9 member `i` (0-based) and reap it.
    pub fn kill(&mut self, i: usize) {
        if self.members[i].paused {
            self.resume(i);
        }
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
        match &self.net {
            Some(net) => net.partition(groups),
            None => bail!("partitions need the members in network namespaces"),
        }
    }

    pub fn heal_network(&self) {
        if let Some(net) = &self.net {
            net.heal();
        }
    }

    /// Undoes every fault: heals the network, resumes paused members, restarts dead ones.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        self.heal_network();
        for i in 0..self.members.len() {
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
                    m.child = None;
                }
            }
        }
        out
    }

    pub fn channel(&self, i: usize) -> Channel {
        Endpoint::from_shared(self.members[i].client_url())
            .expect("valid url")
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .connect_lazy()
    }

    /// (member_id, leader_id) as member `i` reports them, if it answers in time.
    pub async fn status(&self, i: usize) -> Option<(u64, u64)> {
        let mut c = MaintenanceClient::new(self.channel(i));
        let r = tokio::time::timeout(Duration::from_millis(500), c.status(StatusRequest {})).await.ok()?.ok()?;
        let r = r.into_inner();
        Some((r.header?.member_id, r.leader))
    }

    /// The 0-based index of the member all answering members agree is the leader.
    pub async fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for i in 0..self.members.len() {
            if let Some((id, leader)) = self.status(i).await {
                ids.push((i, id));
                leaders.push(leader);
            }
        }
        let first = *leaders.first()?;
        if first == 0 || leaders.iter().any(|&l| l != first) || leaders.len() * 2 <= self.members.len() {
            return None;
        }
        ids.iter().find(|&&(_, id)| id == first).map(|&(i, _)| i)
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

    /// The last `n` lines of each member's log, for failure reports.
    pub fn log_tails(&self, n: usize) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = fs::read_to_string(&m.log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {} ({}) last {n} lines:\n", m.name, m.log_path.display()));
            for l in &lines[lines.len().saturating_sub(n)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
