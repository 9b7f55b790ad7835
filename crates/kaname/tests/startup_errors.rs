//! `kaname etcd` refusing to start: bad flags, data directories it must not touch, and a
//! data directory that belongs to another member or cluster. Each case runs the real binary
//! and checks that it exits by itself, unsuccessfully, saying what is wrong, and that it left
//! every byte on disk as it was.
//!
//! Where etcd 3.4 refuses the same thing, the expectation follows etcd (its messages are
//! quoted in the cases); a flag value kaname accepts but etcd refuses is a kaname bug.

use kaname_testkit::*;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

const KANAME: &str = env!("CARGO_BIN_EXE_kaname");
/// A start that must be refused gets this long to exit by itself; one still running then has
/// accepted what it should have refused (and is killed).
const REFUSE_WITHIN: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// A `kaname etcd` process, SIGKILLed (by PID) if still running when dropped.
struct Proc {
    child: Option<Child>,
    out: Option<thread::JoinHandle<String>>,
    err: Option<thread::JoinHandle<String>>,
}

/// How a refused start ended.
#[derive(Debug)]
struct Ended {
    /// None: still running after [`REFUSE_WITHIN`], killed by the test.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

fn spawn(args: &[String]) -> Proc {
    // `kaname etcd` without ETCD_* variables (clap reads them as flags; the tests give every
    // flag explicitly).
    let mut cmd = kaname!().command();
    // Keep stderr to the error itself (anyhow appends a backtrace when these are set).
    cmd.env("RUST_BACKTRACE", "0").env("RUST_LIB_BACKTRACE", "0");
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {KANAME}: {e}"));
    let read = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    Proc { child: Some(child), out: Some(out), err: Some(err) }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits until the process exits or `limit` passes (then kills it).
    fn wait(mut self, limit: Duration) -> Ended {
        let mut child = self.child.take().expect("not yet waited for");
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(10));
        };
        Ended {
            status,
            stdout: self.out.take().unwrap().join().unwrap(),
            stderr: self.err.take().unwrap().join().unwrap(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One member's flags, on freshly claimed ports, with its data dir in a temp dir; the temp
/// dir and the port claims go when this drops.
struct Member {
    _root: tempfile::TempDir,
    client: PortClaim,
    peer: PortClaim,
    flags: BTreeMap<String, String>,
    extra: Vec<String>,
}

impl Member {
    fn new() -> Member {
        let root = tempfile::Builder::new().prefix("kaname-startup-").tempdir().expect("tempdir");
        let (client, peer) = (claim_port(), claim_port());
        let c = format!("http://127.0.0.1:{}", client.port);
        let p = format!("http://127.0.0.1:{}", peer.port);
        let mut flags = BTreeMap::new();
        for (k, v) in [
            ("--name", "m1".to_string()),
            ("--data-dir", root.path().join("data").display().to_string()),
            ("--listen-client-urls", c.clone()),
            ("--advertise-client-urls", c),
            ("--listen-peer-urls", p.clone()),
            ("--initial-advertise-peer-urls", p.clone()),
            ("--initial-cluster", format!("m1={p}")),
            ("--initial-cluster-state", "new".into()),
            ("--initial-cluster-token", "startup-test".into()),
        ] {
            flags.insert(k.to_string(), v);
        }
        Member { _root: root, client, peer, flags, extra: Vec::new() }
    }

    fn data_dir(&self) -> PathBuf {
        PathBuf::from(&self.flags["--data-dir"])
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer.port)
    }

    /// Sets (or replaces) one flag.
    fn set(mut self, flag: &str, value: impl Into<String>) -> Member {
        self.flags.insert(flag.to_string(), value.into());
        self
    }

    /// Adds raw arguments after the flags.
    fn with_raw(mut self, args: &[&str]) -> Member {
        self.extra.extend(args.iter().map(|s| s.to_string()));
        self
    }

    fn args(&self) -> Vec<String> {
        let mut v: Vec<String> = self.flags.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect();
        v.extend(self.extra.iter().cloned());
        v
    }

    fn spawn(&self) -> Proc {
        spawn(&self.args())
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client.port)
    }
}

/// Everything under `dir`: relative path -> (kind, permissions, modification time, bytes).
/// Equal snapshots mean nothing was created, removed, written, or even re-written.
type Tree = BTreeMap<PathBuf, (char, u32, SystemTime, Vec<u8>)>;

fn snapshot(dir: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        let md = fs::symlink_metadata(dir).expect("stat");
        let rel = dir.strip_prefix(root).unwrap().to_path_buf();
        out.insert(rel, ('d', md.permissions().mode(), md.modified().unwrap(), Vec::new()));
        for entry in fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            let md = fs::symlink_metadata(&path).expect("stat");
            if md.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, ('f', md.permissions().mode(), md.modified().unwrap(), fs::read(&path).expect("read")));
            }
        }
    }
    let mut out = Tree::new();
    walk(dir, dir, &mut out);
    out
}

fn assert_untouched(before: &Tree, dir: &Path, what: &str) {
    let after = snapshot(dir);
    if &after != before {
        let changed: Vec<_> = before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).collect();
        panic!("{what}: the data dir {} was modified: {changed:?}", dir.display());
    }
}

/// A refused start: exited by itself, unsuccessfully, with every `needles` in its stderr
/// (case-insensitive). Returns a description of what went wrong, if anything.
fn check_refused(what: &str, ended: &Ended, needles: &[&str]) -> Option<String> {
    eprintln!("--- {what}: {:?}\n{}", ended.status, ended.stderr.trim_end());
    let problem = match ended.status {
        None => format!("still running after {REFUSE_WITHIN:?}: it accepted what it must refuse"),
        Some(s) if s.success() => format!("exited successfully ({s})"),
        Some(_) => {
            let text = ended.stderr.to_lowercase();
            let missing: Vec<&&str> = needles.iter().filter(|n| !text.contains(&n.to_lowercase())).collect();
            if missing.is_empty() {
                return None;
            }
            format!("stderr lacks {missing:?}")
        }
    };
    Some(format!(
        "{what}: {problem}\n  stderr: {}\n  stdout: {}",
        ended.stderr.trim_end().replace('\n', "\n          "),
        ended.stdout.trim_end()
    ))
}

/// Starts every case at once (so the cases that wrongly start cost one timeout, not one
/// each), then checks each: refused, with its needles in stderr, and no data dir created.
fn expect_all_refused(cases: Vec<(&str, Member, Vec<&str>)>) {
    let running: Vec<_> = cases
        .into_iter()
        .map(|(what, m, needles)| {
            let p = m.spawn();
            (what, m, needles, p)
        })
        .collect();
    let deadline = Instant::now() + REFUSE_WITHIN;
    let mut problems = Vec::new();
    for (what, m, needles, p) in running {
        let ended = p.wait(deadline.saturating_duration_since(Instant::now()));
        if let Some(problem) = check_refused(what, &ended, &needles) {
            problems.push(problem);
        } else if m.data_dir().exists() {
            problems.push(format!("{what}: refused, but created the data dir {}", m.data_dir().display()));
        }
    }
    assert!(problems.is_empty(), "{} case(s) not refused as expected:\n\n{}", problems.len(), problems.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_flags_are_named() {
    // etcd: "flag provided but not defined: -bogus-flag", exit 2.
    expect_all_refused(vec![
        ("unknown flag", Member::new().with_raw(&["--bogus-flag", "x"]), vec!["--bogus-flag"]),
        ("unknown boolean flag", Member::new().with_raw(&["--no-such-thing"]), vec!["--no-such-thing"]),
        (
            "misspelt etcd flag",
            Member::new().with_raw(&["--listen-client-url", "http://127.0.0.1:1"]),
            vec!["--listen-client-url"],
        ),
        ("stray positional argument", Member::new().with_raw(&["extra"]), vec!["extra"]),
    ]);
}

#[test]
fn malformed_values_are_refused() {
    let m = Member::new;
    expect_all_refused(vec![
        // etcd: invalid value "abc" for flag -heartbeat-interval: parse error
        (
            "non-numeric --heartbeat-interval",
            m().set("--heartbeat-interval", "abc"),
            vec!["--heartbeat-interval", "abc"],
        ),
        ("non-numeric --election-timeout", m().set("--election-timeout", "1s"), vec!["--election-timeout", "1s"]),
        ("non-numeric --max-txn-ops", m().set("--max-txn-ops", "many"), vec!["--max-txn-ops", "many"]),
        // etcd: invalid value "bogus" for flag -initial-cluster-state: invalid value
        (
            "unknown --initial-cluster-state",
            m().set("--initial-cluster-state", "bogus"),
            vec!["--initial-cluster-state", "bogus"],
        ),
        ("unknown --log-level", m().set("--log-level", "verbose"), vec!["--log-level", "verbose"]),
        (
            "URL with an unknown scheme",
            m().set("--listen-client-urls", "ftp://127.0.0.1:1"),
            vec!["ftp://127.0.0.1:1", "--listen-client-urls"],
        ),
        ("not a URL", m().set("--listen-peer-urls", "not-a-url"), vec!["not-a-url", "--listen-peer-urls"]),
        ("--initial-cluster entry without '='", m().set("--initial-cluster", "m1"), vec!["--initial-cluster", "m1"]),
        (
            "heartbeat not below election timeout",
            m().set("--heartbeat-interval", "500").set("--election-timeout", "100"),
            vec!["--election-timeout", "--heartbeat-interval"],
        ),
    ]);
}

/// etcd 3.4 refuses these at flag parsing (`types.NewURLs`), whatever flag holds them.
#[test]
fn url_without_port_or_with_path_is_refused() {
    let m = Member::new;
    expect_all_refused(vec![
        // etcd: URL address does not have the form "host:port": http://127.0.0.1
        (
            "URL without port in --advertise-client-urls",
            m().set("--advertise-client-urls", "http://127.0.0.1"),
            vec!["http://127.0.0.1", "port"],
        ),
        (
            "URL without port in --initial-advertise-peer-urls",
            {
                let x = m();
                x.set("--initial-advertise-peer-urls", "http://127.0.0.1")
                    .set("--initial-cluster", "m1=http://127.0.0.1")
            },
            vec!["http://127.0.0.1", "port"],
        ),
        // etcd: URL must not contain a path: http://127.0.0.1:PORT/v3
        (
            "URL with a path in --advertise-client-urls",
            {
                let x = m();
                let u = format!("http://127.0.0.1:{}/v3", x.client.port);
                x.set("--advertise-client-urls", u)
            },
            vec!["/v3", "path"],
        ),
    ]);
}

#[test]
fn election_timeout_below_five_heartbeats_is_refused() {
    // etcd 3.4: "--election-timeout[200ms] should be at least as 5 times as
    // --heartbeat-interval[100ms]", exit 1.
    expect_all_refused(vec![(
        "election timeout under 5 heartbeats",
        Member::new().set("--heartbeat-interval", "100").set("--election-timeout", "200"),
        vec!["--election-timeout", "--heartbeat-interval"],
    )]);
}

#[test]
fn name_missing_from_initial_cluster_is_refused() {
    // etcd: couldn't find local name "m9" in the initial cluster configuration
    let m = Member::new();
    let m = m.set("--name", "m9");
    let m2 = Member::new();
    let other = format!("m1={},m2={}", m2.peer_url(), Member::new().peer_url());
    let m2 = m2.set("--name", "m3").set("--initial-cluster", other);
    expect_all_refused(vec![
        ("--name not in a one-member --initial-cluster", m, vec!["\"m9\"", "initial cluster"]),
        ("--name not in a two-member --initial-cluster", m2, vec!["\"m3\"", "initial cluster"]),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Data directories that are not ours
// ---------------------------------------------------------------------------------------------

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// Refused with `needles`, and the directory left exactly as it was.
fn expect_refused_untouched(what: &str, m: &Member, needles: &[&str]) {
    let dir = m.data_dir();
    let before = snapshot(&dir);
    let ended = m.spawn().wait(REFUSE_WITHIN);
    if let Some(problem) = check_refused(what, &ended, needles) {
        panic!("{problem}");
    }
    assert_untouched(&before, &dir, what);
}

#[test]
fn etcd_data_dir_is_refused_and_left_untouched() {
    let full = Member::new();
    let d = full.data_dir();
    write(&d.join("member/wal/0000000000000000-0000000000000000.wal"), &[0x11; 4096]);
    write(&d.join("member/snap/db"), b"bbolt database bytes");
    write(&d.join("member/snap/0000000000000002-0000000000000005.snap"), b"raft snapshot");
    let dir_str = d.display().to_string();
    expect_refused_untouched("etcd's member/wal and member/snap/db", &full, &["etcd", &dir_str]);

    let wal_only = Member::new();
    fs::create_dir_all(wal_only.data_dir().join("member/wal")).unwrap();
    expect_refused_untouched("etcd's empty member/wal", &wal_only, &["etcd"]);

    let db_only = Member::new();
    write(&db_only.data_dir().join("member/snap/db"), b"bbolt");
    expect_refused_untouched("etcd's member/snap/db alone", &db_only, &["etcd"]);
}

#[test]
fn foreign_non_empty_dir_is_refused_and_left_untouched() {
    let m = Member::new();
    let d = m.data_dir();
    write(&d.join("notes.txt"), b"not a kaname member\n");
    write(&d.join("sub/data.bin"), &[0u8, 1, 2, 3, 255]);
    let dir_str = d.display().to_string();
    expect_refused_untouched("a non-empty foreign dir", &m, &["not empty", &dir_str]);

    let hidden = Member::new();
    write(&hidden.data_dir().join(".keep"), b"");
    expect_refused_untouched("a dir holding only a hidden file", &hidden, &["not empty"]);
}

#[test]
fn marker_of_another_format_is_refused_and_left_untouched() {
    let newer = Member::new();
    let d = newer.data_dir();
    write(
        &d.join("member/kaname.json"),
        br#"{"format":"kaname-etcd-data","version":99,"name":"m1","member_id":1,"cluster_id":2}"#,
    );
    write(&d.join("member/db.redb"), b"written by a newer kaname");
    write(&d.join("member/raft-log/r-00_000_000_000_000_000_000.wal"), b"written by a newer kaname");
    expect_refused_untouched("a marker with format version 99", &newer, &["version 99"]);

    let other = Member::new();
    write(
        &other.data_dir().join("member/kaname.json"),
        br#"{"format":"something-else","version":1,"name":"m1","member_id":1,"cluster_id":2}"#,
    );
    expect_refused_untouched("a marker of another format", &other, &["something-else"]);

    let garbage = Member::new();
    write(&garbage.data_dir().join("member/kaname.json"), b"\x00\x01 not json");
    expect_refused_untouched("an unreadable marker", &garbage, &["unreadable marker"]);
}

// ---------------------------------------------------------------------------------------------
// A data dir of another member or cluster
// ---------------------------------------------------------------------------------------------

/// Waits until `m` reports healthy, failing at once if its process `p` exited.
fn wait_healthy(m: &Member, p: &Proc) {
    let alive = || match fs::read_to_string(format!("/proc/{}/stat", p.pid())).is_ok_and(|s| !s.contains(") Z ")) {
        true => Ok(()),
        false => Err("kaname exited instead of serving".to_string()),
    };
    let (timeout, poll) = (Duration::from_secs(30), Duration::from_millis(200));
    wait_serving(&m.endpoint(), &["--dial-timeout=1s", "endpoint", "health"], timeout, poll, alive, String::new);
}

/// SIGTERM, then waits for a clean exit.
fn stop(p: Proc) -> Ended {
    let st = Command::new("kill").arg("-TERM").arg(p.pid().to_string()).status().expect("kill");
    assert!(st.success());
    p.wait(Duration::from_secs(20))
}

#[test]
fn restart_with_another_identity_is_refused() {
    let m = Member::new();
    let first = m.spawn();
    wait_healthy(&m, &first);
    let put = etcdctl(&m.endpoint(), &["put", "k", "v"], None);
    assert!(put.success(), "put: {}", put.stderr);
    let ended = stop(first);
    assert!(matches!(ended.status, Some(s) if s.success()), "SIGTERM: {ended:?}");

    let dir = m.data_dir();
    let dir_str = dir.display().to_string();
    let before = snapshot(&dir);
    let (token, cluster) = (m.flags["--initial-cluster-token"].clone(), m.flags["--initial-cluster"].clone());
    let extra_member = format!("{cluster},m2=http://127.0.0.1:{}", claim_port().port);
    // The same peer URL under another name: the member IDs are the same, the name is not.
    let renamed = cluster.replacen("m1=", "m9=", 1);
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("another --initial-cluster-token", vec![("--initial-cluster-token", "another-token".into())]),
        ("another --initial-cluster (one more member)", vec![("--initial-cluster", extra_member)]),
        ("another --name", vec![("--name", "m9".into()), ("--initial-cluster", renamed)]),
    ];
    let mut m = m;
    for (what, changes) in cases {
        for (flag, value) in &changes {
            m.flags.insert(flag.to_string(), value.clone());
        }
        let ended = m.spawn().wait(REFUSE_WITHIN);
        if let Some(problem) = check_refused(what, &ended, &[&dir_str, "initial-cluster"]) {
            panic!("{problem}");
        }
        assert_untouched(&before, &dir, what);
        m.flags.insert("--initial-cluster-token".into(), token.clone());
        m.flags.insert("--initial-cluster".into(), cluster.clone());
        m.flags.insert("--name".into(), "m1".into());
    }

    // The same flags as at creation still work, with the data intact.
    let again = m.spawn();
    wait_healthy(&m, &again);
    let get = etcdctl(&m.endpoint(), &["get", "k"], None);
    assert_eq!(get.stdout, "k\nv\n", "after restart: {}", get.stderr);
    let ended = stop(again);
    assert!(matches!(ended.status, Some(s) if s.success()), "SIGTERM: {ended:?}");
}
