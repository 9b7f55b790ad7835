//! `etcdctl watch` compatibility: the same sessions of etcdctl 3.4 watch processes (running in
//! the background while other etcdctl processes write) against real etcd 3.4 and against
//! `kaname etcd`; what each watch printed must match after normalization.
//!
//! A session only writes once the server reports the watches in place
//! (`etcd_debugging_mvcc_watcher_total` on `/metrics`, which both serve), and a watch is
//! stopped once it printed its expected last line (plus a grace period, so extra output would
//! still show up), so the outputs do not depend on timing.
//!
//! Run: `cargo test -p kaname --test watch_compat`. Needs scripts/install-test-deps.sh.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kaname_testkit::*;

/// How long to wait for a watch to print what the session expects before giving up (the
/// comparison then shows what is missing).
const AWAIT: Duration = Duration::from_secs(15);
/// Output a watch prints after what the session waited for still counts.
const GRACE: Duration = Duration::from_millis(300);

/// One action of a session.
enum Act {
    /// `etcdctl ARGS` on member `i`, to completion; its output is compared.
    Ctl(usize, Vec<String>, Option<String>),
    /// Starts a background `etcdctl watch ...` named `name` on member `i`.
    Watch(&'static str, usize, Vec<String>),
    /// Waits until member `i` has `n` watchers, all caught up (none catching up from history:
    /// when that finishes is timing, and it decides how events are grouped into responses).
    Watchers(usize, i64),
    /// Waits until watch `name` printed `text` `count` times in all.
    Await(&'static str, &'static str, usize),
    /// Writes a line to an interactive watch's stdin.
    Input(&'static str, &'static str),
    /// Stops a watch (kill after the grace period, or close stdin and let an interactive one
    /// exit) and compares what it printed.
    Stop(&'static str),
    /// Waits for a watch to exit by itself and compares what it printed.
    Exited(&'static str),
}

fn ctl(i: usize, args: &[&str]) -> Act {
    Act::Ctl(i, args.iter().map(|s| s.to_string()).collect(), None)
}

fn watch(name: &'static str, i: usize, args: &[&str]) -> Act {
    Act::Watch(name, i, args.iter().map(|s| s.to_string()).collect())
}

struct WatchProc {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
}

fn pump(mut r: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}

fn spawn_watch(endpoint: &str, args: &[String]) -> WatchProc {
    let mut cmd = Command::new(ETCDCTL_BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("watch")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run etcdctl (scripts/install-test-deps.sh)");
    let out = Arc::new(Mutex::new(String::new()));
    let err = Arc::new(Mutex::new(String::new()));
    let readers =
        vec![pump(child.stdout.take().unwrap(), out.clone()), pump(child.stderr.take().unwrap(), err.clone())];
    WatchProc { stdin: child.stdin.take(), child, out, err, readers }
}

impl WatchProc {
    fn stop(mut self, wait_exit: bool) -> (String, String, i32) {
        if wait_exit {
            // etcdctl's interactive mode ends at EOF on stdin.
            drop(self.stdin.take());
            let deadline = Instant::now() + AWAIT;
            while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        } else {
            thread::sleep(GRACE);
        }
        // Exited on its own (e.g. cancelled by the server) or killed by us: -1.
        let code = match self.child.try_wait().unwrap() {
            Some(st) => st.code().unwrap_or(-1),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                -1
            }
        };
        for r in std::mem::take(&mut self.readers) {
            let _ = r.join();
        }
        let out = self.out.lock().unwrap().clone();
        let err = self.err.lock().unwrap().clone();
        (out, err, code)
    }
}

impl Drop for WatchProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (`etcd_debugging_mvcc_watcher_total`, `etcd_debugging_mvcc_slow_watcher_total`) of the
/// member at `port`, over HTTP/1.0 (no chunking).
fn watcher_totals(port: u16) -> Option<(i64, i64)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let gauge = |name: &str| -> Option<i64> {
        body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    };
    Some((gauge("etcd_debugging_mvcc_watcher_total")?, gauge("etcd_debugging_mvcc_slow_watcher_total")?))
}

/// Runs a session on a fresh cluster of `flavor`; returns (label, normalized output) per
/// compared action.
fn run(flavor: Flavor, members: usize, script: &[Act]) -> Vec<(String, String)> {
    let cluster = Cluster::start(flavor.clone(), members);
    let (masker, _) = Masker::for_cluster(&cluster);
    let mut watches: HashMap<&str, (WatchProc, bool)> = HashMap::new();
    let mut results = Vec::new();
    for (n, act) in script.iter().enumerate() {
        match act {
            Act::Ctl(i, args, stdin) => {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = etcdctl(&cluster.member_endpoint(*i), &a, stdin.as_deref());
                results.push((
                    format!("step {}: etcdctl <m{i}> {}", n + 1, args.join(" ")),
                    format!(
                        "{}{}[exit {}]",
                        masker.normalize(&out.stdout, false),
                        masker.normalize(&out.stderr, false),
                        out.code()
                    ),
                ));
            }
            Act::Watch(name, i, args) => {
                let interactive = args.iter().any(|a| a == "-i" || a == "--interactive");
                watches.insert(name, (spawn_watch(&cluster.member_endpoint(*i), args), interactive));
            }
            Act::Watchers(i, want) => {
                let port = cluster.member(*i).client.port;
                let deadline = Instant::now() + AWAIT;
                while watcher_totals(port) != Some((*want, 0)) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(20));
                }
                // Only the number of watchers is compared: the slow-watcher gauge is a readiness
                // hint, and etcd updates it lazily (seen in CI: etcd still reported 1 slow
                // watcher after its historical watch had caught up).
                let got = watcher_totals(port).map(|(total, _slow)| total);
                results.push((format!("step {}: watchers on m{i}", n + 1), format!("{got:?}")));
            }
            Act::Await(name, text, count) => {
                let w = &watches[name].0;
                let deadline = Instant::now() + AWAIT;
                let seen = || w.out.lock().unwrap().matches(text).count();
                while seen() < *count && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(10));
                }
                let ok = seen() >= *count;
                assert!(ok || !flavor.is_etcd(), "reference etcd: watch {name} never printed {text:?} x{count}");
                results.push((format!("step {}: watch {name} printed {text:?} x{count}", n + 1), ok.to_string()));
            }
            Act::Input(name, text) => {
                let w = watches.get_mut(name).unwrap();
                let stdin = w.0.stdin.as_mut().unwrap();
                stdin.write_all(text.as_bytes()).unwrap();
                stdin.flush().unwrap();
            }
            Act::Stop(name) | Act::Exited(name) => {
                let (w, interactive) = watches.remove(name).unwrap();
                let (out, err, code) = w.stop(interactive || matches!(act, Act::Exited(_)));
                results.push((
                    format!("step {}: output of watch {name}", n + 1),
                    format!("{}{}[exit {code}]", masker.normalize(&out, false), masker.normalize(&err, false)),
                ));
            }
        }
    }
    results
}

/// Runs `script` on real etcd, then on kaname, and asserts the same outputs.
fn compare(members: usize, script: &[Act]) {
    let expected = run(Flavor::etcd(), members, script);
    let got = run(kaname!(), members, script);
    if std::env::var_os("KANAME_IT_DUMP").is_some() {
        // Readable transcript: KANAME_IT_DUMP=1 cargo test ... -- --nocapture
        for (label, out) in &got {
            println!("[kaname {label}]\n{out}\n");
        }
    }
    let mut report = String::new();
    for ((label, e), (_, g)) in expected.iter().zip(&got) {
        if e != g {
            let _ = writeln!(report, "\n=== {label}\n--- etcd:\n{e}\n--- kaname:\n{g}");
        }
    }
    assert!(report.is_empty(), "watch output differs between etcd and kaname ({members} members):{report}");
}

/// Key, prefix, range, --prev-kv, --rev and -w json watches, spread over the members (so
/// followers serve watches too), while puts, deletes and multi-key txns go to other members.
fn basic_script(n: usize) -> Vec<Act> {
    let per_member = |i: usize| -> i64 {
        // watches a..f below go to members 2, 3, 1, 2, 3, 1
        [2, 3, 1, 2, 3, 1].iter().filter(|&&x| m(n, x) == i).count() as i64
    };
    let mut s = vec![
        ctl(1, &["put", "foo", "v0"]),
        ctl(m(n, 2), &["put", "foo/a", "a0"]),
        watch("a", m(n, 2), &["foo"]),
        watch("b", m(n, 3), &["--prefix", "foo", "--prev-kv"]),
        watch("c", 1, &["foo", "-w", "json"]),
        watch("d", m(n, 2), &["foo", "--rev", "2", "--prev-kv"]),
        watch("e", m(n, 3), &["a", "g", "-w", "json", "--rev", "1"]),
        watch("f", 1, &["--prefix", "foo/", "-w", "fields", "--prev-kv"]),
    ];
    for i in 1..=n {
        s.push(Act::Watchers(i, per_member(i)));
    }
    s.extend([
        ctl(1, &["put", "foo", "v1"]),
        ctl(m(n, 2), &["put", "foo/a", "a1"]),
        ctl(m(n, 3), &["del", "foo"]),
        ctl(1, &["put", "bar", "b1"]),
        Act::Ctl(1, vec!["txn".into()], Some("\nput foo v2\nput foo/b b2\nput zoo z\n\n\n".into())),
        ctl(m(n, 2), &["del", "foo", "--prefix"]),
        ctl(m(n, 3), &["put", "foo", "last"]),
        Act::Await("a", "last", 1),
        Act::Await("b", "last", 1),
        Act::Await("c", "bGFzdA==", 1),
        Act::Await("d", "last", 1),
        Act::Await("e", "bGFzdA==", 1),
        // foo/ ends with the deletes of foo/a and foo/b (rev of `del foo --prefix`)
        Act::Await("f", "\"Key\" : \"foo/b\"", 2),
        Act::Stop("a"),
        Act::Stop("b"),
        Act::Stop("c"),
        Act::Stop("d"),
        Act::Stop("e"),
        Act::Stop("f"),
    ]);
    s
}

#[test]
fn watch_basic_1m() {
    compare(1, &basic_script(1));
}

#[test]
fn watch_basic_3m() {
    compare(3, &basic_script(3));
}

/// A watch from a compacted revision is cancelled (etcdctl prints the compaction error and
/// exits); from the compacted revision itself it works.
fn compacted_script(n: usize) -> Vec<Act> {
    let mut s: Vec<Act> = (1..=5).map(|i| ctl(1, &["put", "k", &format!("v{i}")])).collect();
    s.extend([
        ctl(m(n, 2), &["compact", "4"]),
        watch("old", m(n, 2), &["k", "--rev", "2"]),
        watch("at", m(n, 3), &["k", "--rev", "4", "--prev-kv"]),
        Act::Await("at", "v5", 1),
        ctl(1, &["put", "k", "last"]),
        Act::Await("at", "last", 1),
        Act::Stop("at"),
    ]);
    s.push(Act::Exited("old"));
    s
}

#[test]
fn watch_compacted_1m() {
    compare(1, &compacted_script(1));
}

#[test]
fn watch_compacted_3m() {
    compare(3, &compacted_script(3));
}

/// `etcdctl watch -i`: watches added from stdin, and `progress` (WatchProgressRequest).
fn interactive_script() -> Vec<Act> {
    vec![
        ctl(1, &["put", "foo", "a"]),
        watch("i", 1, &["-i"]),
        Act::Input("i", "watch foo\n"),
        Act::Watchers(1, 1),
        ctl(1, &["put", "foo", "b"]),
        Act::Await("i", "\nb\n", 1),
        Act::Input("i", "progress\n"),
        Act::Await("i", "progress notify", 1),
        Act::Input("i", "watch bar --rev 1\n"),
        Act::Watchers(1, 2),
        Act::Input("i", "progress\n"),
        Act::Await("i", "progress notify", 3),
        ctl(1, &["put", "bar", "last"]),
        Act::Await("i", "last", 1),
        Act::Stop("i"),
    ]
}

#[test]
fn watch_interactive_1m() {
    compare(1, &interactive_script());
}
