//! [`Cluster`]: N members of real etcd or of kaname, each a process of its own, with
//! kill/restart, health and leader waits.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use crate::member::{agreed_leader, kill_and_reap, log_tails, spawn_logged, MemberFlags};
use crate::{claim_port, etcdctl_timeout, Flavor, PortClaim, HEALTHY_TIMEOUT};

/// One member's fixed identity and its running process, if any.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub client: PortClaim,
    pub peer: PortClaim,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    /// Joins a running cluster (`--initial-cluster-state existing`) instead of founding one.
    pub joining: bool,
    /// Removed from the cluster: left out of later members' `--initial-cluster`.
    pub removed: bool,
}

impl Member {
    /// Member `m{i}` with claimed ports and its directory under `root`, not started.
    fn new(root: &Path, i: usize, joining: bool) -> Member {
        let dir = root.join(format!("m{i}"));
        fs::create_dir_all(&dir).expect("create member dir");
        Member {
            name: format!("m{i}"),
            client: claim_port(),
            peer: claim_port(),
            data_dir: dir.join("data"),
            log_path: dir.join(format!("m{i}.log")),
            child: None,
            joining,
            removed: false,
        }
    }
}

/// N members (1 or 3) of one [`Flavor`], each in its own temp dir.
/// Members are numbered from 1, like their names `m1`, `m2`, `m3`.
/// Dropping it SIGKILLs the processes it started (by PID) and removes the dirs.
pub struct Cluster {
    pub flavor: Flavor,
    pub token: String,
    /// Flags added after the standard ones, for every member of either flavour.
    pub extra_args: Vec<String>,
    members: Vec<Member>,
    root: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` members and waits until all are healthy; panics (with the
    /// members' log tails) when that fails.
    pub fn start(flavor: Flavor, n: usize) -> Cluster {
        Cluster::try_start(flavor, n).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Cluster::start`] but returns the failure as text.
    pub fn try_start(flavor: Flavor, n: usize) -> Result<Cluster, String> {
        Cluster::try_start_with(flavor, n, &[])
    }

    /// Like [`Cluster::start`], adding `extra` flags (e.g. `--election-timeout=500`)
    /// to every member, on first start and on restarts.
    pub fn start_with(flavor: Flavor, n: usize, extra: &[&str]) -> Cluster {
        Cluster::try_start_with(flavor, n, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start_with(flavor: Flavor, n: usize, extra: &[&str]) -> Result<Cluster, String> {
        let c = Cluster::spawn_with(flavor, n, extra);
        c.try_wait_healthy(HEALTHY_TIMEOUT)?;
        Ok(c)
    }

    /// Starts `n` members without waiting for them.
    pub fn spawn(flavor: Flavor, n: usize) -> Cluster {
        Cluster::spawn_with(flavor, n, &[])
    }

    pub fn spawn_with(flavor: Flavor, n: usize, extra: &[&str]) -> Cluster {
        let mut c = Cluster::unstarted(flavor, n, extra);
        for i in 1..=n {
            c.spawn_member(i);
        }
        c
    }

    /// Ports and directories for `n` members, none started.
    fn unstarted(flavor: Flavor, n: usize, extra: &[&str]) -> Cluster {
        assert!(n >= 1, "a cluster needs at least one member");
        let root = tempfile::Builder::new()
            .prefix(&format!("kaname-it-{}-", flavor.label()))
            .tempdir()
            .expect("create temp dir");
        let token = format!(
            "it-{}-{}",
            std::process::id(),
            root.path().file_name().unwrap().to_string_lossy().replace('.', "")
        );
        let members = (1..=n).map(|i| Member::new(root.path(), i, false)).collect();
        let extra_args = extra.iter().map(|s| s.to_string()).collect();
        Cluster { flavor, token, extra_args, members, root }
    }

    /// Reserves ports and directories for `n` members without starting them (e.g. to restore
    /// a snapshot into their data dirs first); then [`Cluster::start_all`].
    pub fn prepare(flavor: Flavor, n: usize) -> Cluster {
        Cluster::unstarted(flavor, n, &[])
    }

    /// Starts every member that is not running and waits until the cluster is healthy.
    pub fn start_all(&mut self) {
        for i in 1..=self.members.len() {
            if self.member(i).child.is_none() && !self.member(i).removed {
                self.spawn_member(i);
            }
        }
        self.wait_healthy();
    }

    /// `--initial-cluster-token` of this cluster.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    pub fn member(&self, i: usize) -> &Member {
        assert!(i >= 1 && i <= self.members.len(), "members are numbered 1..={}, got {i}", self.members.len());
        &self.members[i - 1]
    }

    fn member_mut(&mut self, i: usize) -> &mut Member {
        assert!(i >= 1 && i <= self.members.len(), "members are numbered 1..={}, got {i}", self.members.len());
        &mut self.members[i - 1]
    }

    /// `--initial-cluster` value: m1=http://127.0.0.1:Q1,...
    pub fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .filter(|m| !m.removed)
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The flags member `i` runs with; the same on first start and restarts.
    pub fn member_args(&self, i: usize) -> Vec<String> {
        let m = self.member(i);
        let flags = MemberFlags {
            name: m.name.clone(),
            data_dir: m.data_dir.clone(),
            client_url: format!("http://127.0.0.1:{}", m.client.port),
            peer_url: format!("http://127.0.0.1:{}", m.peer.port),
            initial_cluster: self.initial_cluster(),
            joining: m.joining,
            token: self.token.clone(),
        };
        flags.args(&self.flavor, &self.extra_args)
    }

    fn spawn_member(&mut self, i: usize) {
        let args = self.member_args(i);
        let mut cmd = self.flavor.command();
        cmd.args(&args);
        let m = self.member(i);
        let what = format!("{} {} {}", self.flavor.label(), m.name, args.join(" "));
        let child = spawn_logged(cmd, &m.log_path, "harness", &what, false).unwrap_or_else(|e| {
            panic!(
                "cannot start {} member {}: {e} (binary missing? run scripts/install-test-deps.sh)",
                self.flavor.label(),
                m.name
            )
        });
        self.member_mut(i).child = Some(child);
    }

    /// Reserves ports and a directory for a new member `m{n+1}` (not started, not yet in the
    /// cluster: `etcdctl member add` it, then [`Cluster::start_joining`]); returns its number.
    pub fn add_member_slot(&mut self) -> usize {
        let i = self.members.len() + 1;
        self.members.push(Member::new(self.root.path(), i, true));
        i
    }

    /// Starts member `i` with `--initial-cluster-state existing`.
    pub fn start_joining(&mut self, i: usize) {
        self.member_mut(i).joining = true;
        self.spawn_member(i);
    }

    /// Records that member `i` was removed from the cluster; `wait_exit` then reaps it.
    pub fn mark_removed(&mut self, i: usize) {
        self.member_mut(i).removed = true;
    }

    /// Waits up to `timeout` for member `i`'s process to exit on its own; true if it did.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.member_mut(i).child.as_mut() else { return true };
            if let Ok(Some(_)) = child.try_wait() {
                self.member_mut(i).child = None;
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Comma-separated client endpoints of all members (dead or alive).
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| format!("127.0.0.1:{}", m.client.port)).collect::<Vec<_>>().join(",")
    }

    /// Comma-separated client endpoints of the members currently running.
    pub fn live_endpoints(&self) -> String {
        self.live_members().iter().map(|&i| self.member_endpoint(i)).collect::<Vec<_>>().join(",")
    }

    /// `127.0.0.1:PORT` of member `i` (1-based).
    pub fn member_endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.member(i).client.port)
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.member(i).child.as_ref().map(|c| c.id())
    }

    /// 1-based numbers of the members whose process is running.
    pub fn live_members(&self) -> Vec<usize> {
        (1..=self.members.len()).filter(|&i| self.member(i).child.is_some()).collect()
    }

    /// SIGKILLs member `i` (by its PID) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.member_mut(i).child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Starts member `i` again with the same flags and data dir (killing it first if running).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn_member(i);
    }

    /// Waits until every running member answers `etcdctl endpoint health`; panics otherwise.
    pub fn wait_healthy(&self) {
        if let Err(e) = self.try_wait_healthy(HEALTHY_TIMEOUT) {
            panic!("{e}");
        }
    }

    pub fn try_wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let out = etcdctl_timeout(&self.live_endpoints(), &["--dial-timeout=1s", "endpoint", "health"], None, "3s");
            if out.success() {
                return Ok(());
            }
            let last = format!("{}{}", out.stdout, out.stderr);
            if Instant::now() > deadline {
                return Err(format!(
                    "{} cluster of {} did not become healthy within {:?}; last `etcdctl endpoint health`:\n{}\n{}",
                    self.flavor.label(),
                    self.size(),
                    timeout,
                    last.trim_end(),
                    self.log_tails(40)
                ));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Err when a member that should run has exited on its own.
    pub fn check_alive(&self) -> Result<(), String> {
        for m in &self.members {
            // try_wait needs &mut; read /proc instead so &self suffices.
            if let Some(child) = &m.child {
                if let Some(state) = proc_state(child.id()) {
                    if state == 'Z' {
                        return Err(format!(
                            "{} member {} (pid {}) exited on its own (it should keep running as `{}`)\n{}",
                            self.flavor.label(),
                            m.name,
                            child.id(),
                            self.command_line(m),
                            self.log_tails(40)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn command_line(&self, m: &Member) -> String {
        let i = self.members.iter().position(|x| x.name == m.name).unwrap() + 1;
        format!("{} {}", self.flavor.program_line(), self.member_args(i).join(" "))
    }

    /// The last `lines` lines of every member's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let names: Vec<String> = self.members.iter().map(|m| format!("{} {}", self.flavor.label(), m.name)).collect();
        log_tails(names.iter().map(String::as_str).zip(self.members.iter().map(|m| m.log_path.as_path())), lines)
    }

    /// `endpoint status -w json` of member `i`: the `Status` object.
    pub fn status(&self, i: usize) -> Result<serde_json::Value, String> {
        let out = etcdctl_timeout(&self.member_endpoint(i), &["endpoint", "status", "-w", "json"], None, "3s");
        if !out.success() {
            return Err(format!("endpoint status of m{i} failed: {}{}", out.stdout, out.stderr));
        }
        let v: serde_json::Value =
            serde_json::from_str(out.stdout.trim()).map_err(|e| format!("bad status json ({e}): {}", out.stdout))?;
        Ok(v[0]["Status"].clone())
    }

    /// The 1-based number of the member the live members agree is leader (every live member
    /// must answer).
    pub fn leader(&self) -> Option<usize> {
        let live = self.live_members();
        let mut answers = Vec::new();
        for &i in &live {
            let st = self.status(i).ok()?;
            answers.push((i, st["header"]["member_id"].as_u64()?, st["leader"].as_u64()?));
        }
        agreed_leader(&answers, live.len())
    }

    /// Polls [`Cluster::leader`] until a leader is known.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            if Instant::now() > deadline {
                panic!("no agreed leader within {timeout:?}\n{}", self.log_tails(30));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                kill_and_reap(&mut child);
            }
        }
        if std::thread::panicking() && std::env::var_os("KANAME_IT_KEEP").is_some() {
            let p = self.root.path().to_path_buf();
            eprintln!("KANAME_IT_KEEP: leaving {}", p.display());
            std::mem::forget(std::mem::replace(&mut self.root, tempfile::tempdir().unwrap()));
        }
    }
}

fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ..." — comm may contain spaces, so split after the last ')'.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next())
}
