//! The one harness for tests (and tools) that run kaname, or real etcd 3.4, as processes:
//! `crates/kaname/tests` use it as `use kaname_testkit::*;`, and `kaname chaos` shares its
//! [`Flavor`]. It speaks to the servers only through processes and their protocols, never
//! through the store's or the API server's code.
//!
//! It provides:
//! - [`Flavor`]: which server a member runs (kaname or real etcd) and from which binary,
//! - [`claim_port`]: port claiming that is safe across threads and across test binaries,
//! - [`Cluster`]: N members of real etcd or of kaname, with kill/restart and health waits,
//! - [`MemberFlags`] / [`spawn_logged`] / [`log_tails`] / [`agreed_leader`]: how one member is
//!   started, logged and reported, shared with `kaname chaos`'s fault cluster,
//! - [`Frozen`] / [`signal`]: members cut off by SIGSTOP, resumed on drop,
//! - [`etcdctl`]: runs `/usr/bin/etcdctl` (API v3) and captures its output,
//! - [`normalize`] / [`Masker`]: masks what legitimately differs,
//! - [`compare_session`]: runs one etcdctl script against etcd and kaname and
//!   asserts identical (normalized) stdout, stderr and exit codes,
//! - [`Apiserver`] (feature `apiserver`): `kaname apiserver` processes, kubectl, admin requests,
//! - [`grpc_channel`] / [`grpc_endpoint`] (feature `grpc`): a tonic channel to one member,
//! - [`serial`]: one process-wide lock for the tests that must not overlap, and
//!   [`wait_serving`]: the wait until a member answers.
//!
//! A library cannot name another crate's binary with `env!("CARGO_BIN_EXE_kaname")`, so the
//! binary is always a parameter: tests write [`kaname!()`](kaname) for the kaname flavour and
//! [`kaname_bin!()`](kaname_bin) where only the path is wanted; both expand in the test crate.
//!
//! `scripts/install-test-deps.sh` installs etcd and etcdctl.

mod cluster;
mod etcdctl;
mod frozen;
mod member;
mod normalize;
mod ports;
mod session;

#[cfg(feature = "apiserver")]
mod apiserver;

#[cfg(feature = "apiserver")]
pub use apiserver::{json, Apiserver};
pub use cluster::{Cluster, Member};
pub use etcdctl::{etcdctl, etcdctl_timeout, get_keys, kaname_etcdctl, Output};
pub use frozen::{signal, Frozen};
pub use member::{agreed_leader, kill_and_reap, log_tails, spawn_logged, MemberFlags};
pub use normalize::{normalize, Masker};
pub use ports::{claim_port, PortClaim};
pub use session::{
    compare_flavors, compare_flavors_hooked, compare_session, compare_tools, m, run_session, run_session_hooked,
    run_session_with, step, txn, NoHook, SessionRun, Step, StepHook, StepResult, Target, Tool,
};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

pub const ETCD_BIN: &str = "/usr/bin/etcd";
pub const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";
/// How long a cluster gets to report healthy after (re)start.
pub const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `kaname` binary cargo built for the calling test crate, as a `&'static Path`.
/// (`env!` expands in the crate that invokes the macro: integration tests of `crates/kaname`.)
#[macro_export]
macro_rules! kaname_bin {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_kaname"))
    };
}

/// [`Flavor::Kaname`] with [`kaname_bin!`]: the kaname the calling test crate built.
#[macro_export]
macro_rules! kaname {
    () => {
        $crate::Flavor::Kaname($crate::kaname_bin!().to_path_buf())
    };
}

/// Which server implementation a member runs, and from which binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// A real etcd binary (Debian's 3.4 at [`ETCD_BIN`]: [`Flavor::etcd`]).
    Etcd(PathBuf),
    /// `<binary> etcd ...`: kaname's store (tests: [`kaname!`]).
    Kaname(PathBuf),
}

impl Flavor {
    /// The real etcd 3.4 at [`ETCD_BIN`].
    pub fn etcd() -> Flavor {
        Flavor::Etcd(PathBuf::from(ETCD_BIN))
    }

    pub fn label(&self) -> &'static str {
        match self {
            Flavor::Etcd(_) => "etcd",
            Flavor::Kaname(_) => "kaname",
        }
    }

    pub fn is_etcd(&self) -> bool {
        matches!(self, Flavor::Etcd(_))
    }

    pub fn is_kaname(&self) -> bool {
        matches!(self, Flavor::Kaname(_))
    }

    /// The binary this flavour runs.
    pub fn bin(&self) -> &Path {
        match self {
            Flavor::Etcd(bin) | Flavor::Kaname(bin) => bin,
        }
    }

    /// How the member command line starts, for messages: `/usr/bin/etcd` or `<bin> etcd`.
    pub fn program_line(&self) -> String {
        match self {
            Flavor::Etcd(bin) => bin.display().to_string(),
            Flavor::Kaname(bin) => format!("{} etcd", bin.display()),
        }
    }

    /// The command that starts a member of this flavor, without the caller's `ETCD_*`
    /// variables: both read them as flags.
    pub fn command(&self) -> Command {
        self.command_with(|bin| Command::new(bin))
    }

    /// Like [`Flavor::command`], with `program` making the command that runs the binary (e.g.
    /// inside a network namespace).
    pub fn command_with(&self, program: impl FnOnce(&Path) -> Command) -> Command {
        let mut c = program(self.bin());
        if self.is_kaname() {
            c.arg("etcd");
        }
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                c.env_remove(k);
            }
        }
        c
    }
}

static SERIAL: Mutex<()> = Mutex::new(());

/// The process-wide lock of the tests that must not run beside each other in one test binary
/// (3-member clusters under timing checks: one at a time is plenty for 2 cores). A test that
/// panicked while holding it does not poison it for the others.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tonic endpoint (not connected, tonic's defaults) of member `i` of `c`.
#[cfg(feature = "grpc")]
pub fn grpc_endpoint(c: &Cluster, i: usize) -> tonic::transport::Endpoint {
    tonic::transport::Endpoint::from_shared(format!("http://{}", c.member_endpoint(i))).unwrap()
}

/// A connected gRPC channel to member `i` of `c` (TCP_NODELAY, 3 s to connect), for tests
/// that speak the etcd v3 API directly.
#[cfg(feature = "grpc")]
pub async fn grpc_channel(c: &Cluster, i: usize) -> tonic::transport::Channel {
    grpc_endpoint(c, i).tcp_nodelay(true).connect_timeout(Duration::from_secs(3)).connect().await.expect("connect")
}

/// Polls `etcdctl ARGS` (with a 3 s `--command-timeout`) on `endpoint` every `poll` until it
/// succeeds. Panics when `alive` says the server is gone, or after `timeout` with the last
/// output and `context()` (e.g. the member's log tail).
pub fn wait_serving(
    endpoint: &str,
    args: &[&str],
    timeout: Duration,
    poll: Duration,
    alive: impl Fn() -> Result<(), String>,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = etcdctl_timeout(endpoint, args, None, "3s");
        if out.success() {
            return;
        }
        if let Err(e) = alive() {
            panic!("{endpoint} exited instead of serving: {e}");
        }
        assert!(Instant::now() < deadline, "{endpoint} does not serve: {}{}\n{}", out.stdout, out.stderr, context());
        thread::sleep(poll);
    }
}
