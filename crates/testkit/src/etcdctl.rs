//! Runs the real `etcdctl` 3.4 (or `kaname etcdctl`) with API v3 and captures its output.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::ETCDCTL_BIN;

/// Hard limit on one etcdctl process (its own --command-timeout is shorter).
const ETCDCTL_WATCHDOG: Duration = Duration::from_secs(90);

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

/// Like [`etcdctl`], running `kaname etcdctl` of the binary `kaname` (the test's
/// [`kaname_bin!`](crate::kaname_bin)).
pub fn kaname_etcdctl(kaname: &Path, endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(kaname);
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
