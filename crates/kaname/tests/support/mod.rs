//! Shared harness for the integration tests that judge `kaname etcd` against
//! real etcd 3.4, driven by Debian's real `etcdctl` 3.4.
//!
//! Used by test files through `mod support;`. It provides:
//! - port claiming that is safe across threads and across test binaries,
//! - [`Cluster`]: N members of real etcd or of kaname, with kill/restart,
//! - [`Frozen`]: members cut off by SIGSTOP, resumed on drop,
//! - [`etcdctl`]: runs `/usr/bin/etcdctl` (API v3) and captures its output,
//! - [`normalize`] / [`Masker`]: masks what legitimately differs,
//! - [`compare_session`]: runs one etcdctl script against etcd and kaname and
//!   asserts identical (normalized) stdout, stderr and exit codes.
//!
//! `scripts/install-test-deps.sh` installs etcd and etcdctl.
#![allow(dead_code)]

mod frozen;
mod normalize;
mod session;

#[allow(unused_imports)]
pub use frozen::{signal, Frozen};

#[allow(unused_imports)]
pub use normalize::{normalize, Masker};
#[allow(unused_imports)]
pub use session::{
    compare_flavors, compare_session, compare_tools, run_session, run_session_with, step, SessionRun, Step, StepResult,
    Target, Tool,
};

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const ETCD_BIN: &str = "/usr/bin/etcd";
pub const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";
/// How long a cluster gets to report healthy after (re)start.
pub const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);
/// Hard limit on one etcdctl process (its own --command-timeout is shorter).
const ETCDCTL_WATCHDOG: Duration = Duration::from_secs(90);

/// Which server implementation a [`Cluster`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// The real etcd 3.4 at /usr/bin/etcd.
    Etcd,
    /// `kaname etcd`, the binary built from this crate.
    Kaname,
}

impl Flavor {
    pub fn label(self) -> &'static str {
        match self {
            Flavor::Etcd => "etcd",
            Flavor::Kaname => "kaname",
        }
    }

    /// The command that starts a member of this flavor, without the caller's `ETCD_*`
    /// variables: both read them as flags.
    pub fn command(self) -> Command {
        let mut c = match self {
            Flavor::Etcd => Command::new(ETCD_BIN),
            Flavor::Kaname => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_kaname"));
                c.arg("etcd");
                c
            }
        };
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                c.env_remove(k);
            }
        }
        c
    }
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// A TCP port on 127.0.0.1 reserved for this process until dropped.
///
/// Ports are taken below the kernel's ephemeral range (so outgoing client
/// connections never grab them) and claimed with a lock file in
/// `$TMPDIR/kaname-test-ports/` (so parallel test binaries never share one);
/// a lock file whose owner process is gone is reclaimed.
#[derive(Debug)]
pub struct PortClaim {
    pub port: u16,
    lock: PathBuf,
}

impl Drop for PortClaim {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.lock);
    }
}

fn port_range() -> (u32, u32) {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u32>().ok()))
        .unwrap_or(32768);
    let hi = ephemeral_low.clamp(12_000, 65_000);
    (10_000, hi)
}

static PORT_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Claims a free port on 127.0.0.1 (see [`PortClaim`]).
pub fn claim_port() -> PortClaim {
    let dir = std::env::temp_dir().join("kaname-test-ports");
    fs::create_dir_all(&dir).expect("create port lock dir");
    let (lo, hi) = port_range();
    let span = hi - lo;
    // Per-process pseudo-random start, so binaries start far apart.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos;
    let start = seed % span;
    for _ in 0..span {
        let n = PORT_COUNTER.fetch_add(1, Ordering::Relaxed);
        let port = (lo + (start + n) % span) as u16;
        let lock = dir.join(port.to_string());
        if !try_lock(&lock) {
            continue;
        }
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => {
                drop(l);
                return PortClaim { port, lock };
            }
            Err(_) => {
                let _ = fs::remove_file(&lock);
            }
        }
    }
    panic!("no free port found in {lo}..{hi}");
}

fn try_lock(lock: &Path) -> bool {
    for _ in 0..2 {
        match OpenOptions::new().write(true).create_new(true).open(lock) {
            Ok(mut f) => {
                let _ = write!(f, "{}", std::process::id());
                return true;
            }
            Err(_) => {
                // Reclaim the lock of a process that no longer exists.
                let owner = fs::read_to_string(lock).unwrap_or_default();
                let alive = match owner.trim().parse::<u32>() {
                    Ok(pid) => Path::new(&format!("/proc/{pid}")).exists(),
                    Err(_) => {
                        // Being written right now, or garbage: young files count as alive.
                        fs::metadata(lock)
                            .and_then(|m| m.modified())
                            .map(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60))
                            .unwrap_or(false)
                    }
                };
                if alive {
                    return false;
                }
                let _ = fs::remove_file(lock);
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------
// etcdctl
// ---------------------------------------------------------------------------

/// What one etcdctl run printed and how it exited.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub status: ExitStatus,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
    /// Exit code, or -1 when killed by a signal (e.g. the watchdog).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

/// Runs `etcdctl --endpoints=E --command-timeout=10s ARGS` with API v3.
pub fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    etcdctl_timeout(endpoints, args, stdin, "10s")
}

/// Like [`etcdctl`] with a given `--command-timeout` (e.g. "2s").
pub fn etcdctl_timeout(endpoints: &str, args: &[&str], stdin: Option<&str>, timeout: &str) -> Output {
    run_ctl(Command::new(ETCDCTL_BIN), endpoints, args, stdin, timeout)
}

/// Like [`etcdctl`], running `kaname etcdctl` (the binary built from this crate).
pub fn kaname_etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kaname"));
    cmd.arg("etcdctl");
    run_ctl(cmd, endpoints, args, stdin, "10s")
}

fn run_ctl(mut cmd: Command, endpoints: &str, args: &[&str], stdin: Option<&str>, timeout: &str) -> Output {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--command-timeout={timeout}"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child =
        cmd.spawn().unwrap_or_else(|e| panic!("cannot run {ETCDCTL_BIN} ({e}); run scripts/install-test-deps.sh"));
    let writer = stdin.map(|text| {
        let mut pipe = child.stdin.take().unwrap();
        let text = text.to_owned();
        thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        })
    });
    let out_reader = reader(child.stdout.take().unwrap());
    let err_reader = reader(child.stderr.take().unwrap());
    let deadline = Instant::now() + ETCDCTL_WATCHDOG;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait etcdctl") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait etcdctl");
        }
        thread::sleep(Duration::from_millis(2));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Output { stdout: out_reader.join().unwrap(), stderr: err_reader.join().unwrap(), status }
}

fn reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

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
        let members = (1..=n)
            .map(|i| {
                let dir = root.path().join(format!("m{i}"));
                fs::create_dir_all(&dir).expect("create member dir");
                Member {
                    name: format!("m{i}"),
                    client: claim_port(),
                    peer: claim_port(),
                    data_dir: dir.join("data"),
                    log_path: dir.join(format!("m{i}.log")),
                    child: None,
                    joining: false,
                    removed: false,
                }
            })
            .collect();
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
        let client = format!("http://127.0.0.1:{}", m.client.port);
        let peer = format!("http://127.0.0.1:{}", m.peer.port);
        let mut args: Vec<String> = vec![
            "--name".into(),
            m.name.clone(),
            "--data-dir".into(),
            m.data_dir.display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer,
            "--initial-cluster".into(),
            self.initial_cluster(),
            "--initial-cluster-state".into(),
            if m.joining { "existing" } else { "new" }.into(),
            "--initial-cluster-token".into(),
            self.token.clone(),
        ];
        if self.flavor == Flavor::Etcd {
            args.extend(["--logger", "zap", "--log-outputs", "stderr"].map(String::from));
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    fn spawn_member(&mut self, i: usize) {
        let args = self.member_args(i);
        let mut cmd = self.flavor.command();
        let m = self.member(i);
        let log = OpenOptions::new().create(true).append(true).open(&m.log_path).expect("open member log");
        let mut log2 = log.try_clone().expect("clone log handle");
        let _ = writeln!(log2, "=== harness: starting {} {} {}", self.flavor.label(), m.name, args.join(" "));
        cmd.args(&args)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let child = cmd.spawn().unwrap_or_else(|e| {
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
        let dir = self.root.path().join(format!("m{i}"));
        fs::create_dir_all(&dir).expect("create member dir");
        self.members.push(Member {
            name: format!("m{i}"),
            client: claim_port(),
            peer: claim_port(),
            data_dir: dir.join("data"),
            log_path: dir.join(format!("m{i}.log")),
            child: None,
            joining: true,
            removed: false,
        });
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
            let _ = child.kill();
            let _ = child.wait();
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
        let bin = match self.flavor {
            Flavor::Etcd => ETCD_BIN.to_string(),
            Flavor::Kaname => format!("{} etcd", env!("CARGO_BIN_EXE_kaname")),
        };
        format!("{bin} {}", self.member_args(i).join(" "))
    }

    /// The last `lines` lines of every member's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut s = String::new();
        for m in &self.members {
            let text = fs::read_to_string(&m.log_path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            s.push_str(&format!(
                "----- {} {} log ({}), last {} lines -----\n",
                self.flavor.label(),
                m.name,
                m.log_path.display(),
                all.len() - from
            ));
            for l in &all[from..] {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
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

    /// The 1-based number of the member the live members agree is leader.
    pub fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for i in self.live_members() {
            let st = self.status(i).ok()?;
            ids.push((i, st["header"]["member_id"].as_u64()?));
            let l = st["leader"].as_u64()?;
            if l == 0 || leader.is_some_and(|x| x != l) {
                return None;
            }
            leader = Some(l);
        }
        let l = leader?;
        ids.into_iter().find(|&(_, id)| id == l).map(|(i, _)| i)
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
                let _ = child.kill();
                let _ = child.wait();
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

/// Keys under `prefix` as seen by `endpoint` (`--consistency=s` when `serializable`).
pub fn get_keys(endpoint: &str, prefix: &str, serializable: bool) -> Result<BTreeSet<String>, String> {
    let mut args = vec!["get", "--prefix", prefix, "--keys-only"];
    if serializable {
        args.push("--consistency=s");
    }
    let out = etcdctl_timeout(endpoint, &args, None, "20s");
    if !out.success() {
        return Err(format!("get --prefix {prefix} on {endpoint} failed ({}): {}", out.code(), out.stderr.trim()));
    }
    Ok(out.stdout.lines().filter(|l| !l.is_empty()).map(String::from).collect())
}
