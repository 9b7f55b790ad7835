//! `kaname etcdctl` judged by the real etcdctl 3.4.
//!
//! Two kinds of checks:
//! - sessions: the same script run with real etcdctl on one fresh cluster and with
//!   `kaname etcdctl` on another fresh cluster of the same flavour (real etcd, and
//!   `kaname etcd`); normalized stdout, stderr (less the Go client's log lines) and exit
//!   codes must match step by step.
//! - byte for byte: read-only commands run by both clients against the same cluster must
//!   print exactly the same bytes (JSON field order, table layout, quoting).
//!
//! Run: `cargo test -p kaname --test etcdctl_cli`. Needs scripts/install-test-deps.sh.

use kaname_testkit::*;

fn kv_script() -> Vec<Step> {
    let mut s = vec![
        step(&["put", "foo", "bar"]),
        step(&["put", "foo/a", "1"]),
        step(&["put", "foo/b", "2", "-w", "json"]),
        step(&["put", "foo/c", "3", "-w", "fields"]),
        step(&["put", "foo/a", "11", "--prev-kv"]),
        step(&["put", "foo/a", "12", "--prev-kv", "-w", "json"]),
        step(&["put", "foo/a", "13", "--prev-kv", "-w", "fields"]),
        step(&["put", "foo/b", "--ignore-value", "--prev-kv"]),
        step(&["put", "nokey", "--ignore-value"]),
        step(&["put", "foo/c", "x", "--ignore-lease"]),
        step(&["put", "fromstdin"]).stdin("value read from stdin"),
        step(&["put", "onlykey"]).stdin(""),
        step(&["put", "", "v"]),
        step(&["put"]),
        step(&["put", "k", "v", "--lease=zz"]),
        step(&["put", "k", "v", "--lease=123"]),
        step(&["put", "k", "v", "-w", "table"]),
        step(&["put", "k", "v", "-w", "bogus"]),
        step(&["put", "sp", "a value with spaces\tand \"quotes\""]),
        step(&["get", "foo"]),
        step(&["get", "foo", "-w", "json"]),
        step(&["get", "foo", "-w", "fields"]),
        step(&["get", "foo", "-w", "table"]),
        step(&["get", "foo", "--prefix"]),
        step(&["get", "foo/", "--prefix", "--keys-only"]),
        step(&["get", "foo/", "--prefix", "--print-value-only"]),
        step(&["get", "foo/", "--prefix", "--print-value-only", "-w", "json"]),
        step(&["get", "foo/", "--prefix", "--limit", "2", "-w", "json"]),
        step(&["get", "foo/a", "foo/c"]),
        step(&["get", "--from-key", "foo/b"]),
        step(&["get", "--from-key", ""]),
        step(&["get", "--prefix", "", "-w", "fields"]),
        step(&["get", "foo/a", "--rev", "3"]),
        step(&["get", "foo/a", "--rev", "100"]),
        step(&["get", "foo/a", "--rev", "-5"]),
        step(&["get", "foo/a", "--hex"]),
        step(&["get", "sp", "-w", "fields"]),
        step(&["get", "sp", "-w", "json"]),
        step(&["get", "nothing"]),
        step(&["get", "nothing", "-w", "json"]),
        step(&["get"]),
        step(&["get", "foo", "--sort-by=BOGUS"]),
        step(&["get", "foo", "--order=up"]),
        step(&["get", "foo", "--from-key", "--prefix"]),
        step(&["get", "foo", "bar", "--prefix"]),
        step(&["get", "foo", "--consistency=x"]),
        step(&["get", "foo/", "--prefix", "--consistency=s", "-w", "json"]),
    ];
    for target in ["KEY", "CREATE", "MODIFY", "VALUE", "VERSION"] {
        for order in ["ASCEND", "DESCEND"] {
            s.push(step(&["get", "--prefix", "", &format!("--sort-by={target}"), &format!("--order={order}")]));
        }
    }
    s.extend([
        step(&["get", "--prefix", "foo", "--order=DESCEND", "--keys-only", "--limit=2"]),
        txn("mod(\"foo\") > \"0\"\nvalue(\"foo/a\") = \"13\"\n\nput foo/t yes\nget foo/a\ndel nokey\n\nput foo/f no\n\n"),
        txn("version(\"foo\") = \"5\"\n\nput foo/t yes\n\nput foo/f no\nget foo --prefix --keys-only\n\n"),
        step(&["txn", "-w", "json"])
            .stdin("create(\"foo\") != \"0\"\n\nput foo/t2 v --prev-kv\nget foo/t\ndel foo/t --prev-kv\n\n\n"),
        step(&["txn", "-w", "fields"]).stdin("val(\"foo\") < \"c\"\n\nget foo\nput x y\ndel x\n\n\n"),
        step(&["txn", "-i"]).stdin("ver(\"foo\") > \"0\"\n\nget foo\n\n\n"),
        txn("\n\n\n"),
        txn("value(\"foo\") = \"bar\"\n\nput a\n\n\n"),
        txn("bogus line\n\n\n"),
        txn("mod(\"foo\") > \"x\"\n\n\n"),
        txn("mod(\"foo\") > \"0\"\n\nput a b\n"),
        step(&["txn", "extra"]).stdin("\n\n\n"),
        step(&["del", "foo/t2"]),
        step(&["del", "foo/t2"]),
        step(&["del", "foo/a", "--prev-kv"]),
        step(&["del", "foo/", "--prefix", "--prev-kv", "-w", "json"]),
        step(&["del", "sp", "-w", "fields"]),
        step(&["del", "f", "--from-key"]),
        step(&["del"]),
        step(&["del", "a", "--prefix", "--from-key"]),
        step(&["get", "--from-key", "", "-w", "json"]),
        step(&["put", "c", "1"]),
        step(&["put", "c", "2"]),
        step(&["compaction"]),
        step(&["compaction", "x"]),
        step(&["compaction", "3"]),
        step(&["compaction", "3"]),
        step(&["compaction", "4", "--physical"]),
        step(&["get", "c", "--rev", "2"]),
        step(&["del", "", "--prefix"]),
    ]);
    s
}

fn lease_script() -> Vec<Step> {
    vec![
        step(&["lease", "grant"]),
        step(&["lease", "grant", "x"]),
        step(&["lease", "grant", "100"]),
        step(&["lease", "grant", "200", "-w", "json"]),
        step(&["lease", "grant", "300", "-w", "fields"]),
        step(&["lease", "list"]).unordered(),
        step(&["lease", "list", "-w", "fields"]).unordered(),
        step(&["lease", "timetolive", "1"]),
        step(&["lease", "timetolive", "1", "-w", "json"]),
        step(&["lease", "timetolive", "zz"]),
        step(&["lease", "timetolive"]),
        step(&["lease", "revoke", "1"]),
        step(&["lease", "revoke"]),
        step(&["lease", "keep-alive", "--once", "1"]),
        step(&["lease", "keep-alive"]),
        step(&["lease", "list", "-w", "table"]),
    ]
}

fn maintenance_script() -> Vec<Step> {
    vec![
        step(&["put", "a", "1"]),
        step(&["alarm", "list"]),
        step(&["alarm", "list", "-w", "json"]),
        step(&["alarm", "disarm"]),
        step(&["defrag"]),
        step(&["endpoint", "health"]),
        step(&["endpoint", "health", "-w", "json"]),
        step(&["endpoint", "health", "-w", "fields"]),
        step(&["endpoint", "health", "-w", "table"]),
        step(&["endpoint", "status"]),
        step(&["endpoint", "status", "-w", "json"]),
        step(&["endpoint", "status", "-w", "fields"]),
        step(&["endpoint", "status", "-w", "table"]),
        step(&["endpoint", "hashkv"]),
        step(&["endpoint", "hashkv", "-w", "json"]),
        step(&["endpoint", "hashkv", "-w", "table"]),
        step(&["member", "list"]),
        step(&["member", "list", "-w", "json"]),
        step(&["member", "list", "-w", "fields"]),
        step(&["member", "list", "-w", "table"]),
        step(&["member", "add"]),
        step(&["member", "add", "x", "http://127.0.0.1:1"]),
        step(&["member", "add", "x"]),
        step(&["member", "remove"]),
        step(&["member", "remove", "zz"]),
        step(&["member", "update", "1"]),
        step(&["member", "promote", "1"]),
        step(&["move-leader"]),
        step(&["move-leader", "zz"]),
        step(&["snapshot", "save"]),
        step(&["version"]).after_ms(0),
    ]
}

fn cluster_script() -> Vec<Step> {
    vec![
        step(&["put", "a", "1"]),
        step(&["get", "a"]).on(2),
        step(&["get", "a"]).on(3),
        step(&["member", "list"]).unordered(),
        step(&["member", "list", "-w", "table"]).on(2).unordered(),
        step(&["member", "list", "-w", "fields"]).on(3).unordered(),
        step(&["endpoint", "health", "--cluster"]).unordered(),
        step(&["endpoint", "health", "--cluster", "-w", "table"]).unordered(),
        step(&["endpoint", "status", "--cluster"]).unordered(),
        step(&["endpoint", "status", "--cluster", "-w", "json"]).unordered(),
        step(&["endpoint", "hashkv", "--cluster"]).unordered(),
        step(&["endpoint", "status"]).all(),
        step(&["endpoint", "hashkv", "-w", "fields"]).all(),
        step(&["defrag", "--cluster"]).unordered(),
        step(&["get", "a", "-w", "json"]).on(2),
    ]
}

/// user, role and auth; real etcd only (kaname has no auth yet).
fn auth_script() -> Vec<Step> {
    let root = ["--user", "root:rootpw"];
    let with = |args: &[&str], user: &[&str]| {
        let mut v: Vec<&str> = user.to_vec();
        v.extend_from_slice(args);
        step(&v)
    };
    vec![
        step(&["user", "add", "root:rootpw"]),
        step(&["user", "add", "root:again"]),
        step(&["user", "add", ":pw"]),
        step(&["user", "add"]),
        step(&["user", "add", "alice:alicepw", "-w", "json"]),
        step(&["user", "add", "bob", "--new-user-password=bobpw"]),
        step(&["user", "add", "carol", "--interactive=false"]).stdin("carolpw\n"),
        step(&["role", "add", "reader"]),
        step(&["role", "add", "writer", "-w", "json"]),
        step(&["role", "add", "reader"]),
        step(&["role", "grant-permission", "reader", "read", "foo"]),
        step(&["role", "grant-permission", "reader", "read", "pre/", "--prefix"]),
        step(&["role", "grant-permission", "reader", "readwrite", "a", "c"]),
        step(&["role", "grant-permission", "writer", "write", "w", "--from-key"]),
        step(&["role", "grant-permission", "writer", "write", "", "--prefix"]),
        step(&["role", "grant-permission", "writer", "bogus", "x"]),
        step(&["role", "grant-permission", "writer", "read"]),
        step(&["role", "grant-permission", "writer", "read", "x", "y", "--prefix"]),
        step(&["role", "get", "reader"]),
        step(&["role", "get", "writer"]),
        step(&["role", "get", "reader", "-w", "json"]),
        step(&["role", "get", "nobody"]),
        step(&["role", "list"]),
        step(&["role", "list", "-w", "json"]),
        step(&["user", "grant-role", "alice", "reader"]),
        step(&["user", "grant-role", "alice", "writer", "-w", "json"]),
        step(&["user", "grant-role", "alice"]),
        step(&["user", "grant-role", "alice", "nope"]),
        step(&["user", "get", "alice"]),
        step(&["user", "get", "alice", "--detail"]),
        step(&["user", "get", "alice", "-w", "json"]),
        step(&["user", "list"]),
        step(&["user", "list", "-w", "json"]),
        step(&["user", "revoke-role", "alice", "writer"]),
        step(&["role", "revoke-permission", "reader", "foo"]),
        step(&["role", "revoke-permission", "reader", "a", "c"]),
        step(&["role", "revoke-permission", "writer", "w", "--from-key"]),
        step(&["role", "revoke-permission", "reader", "nothing"]),
        step(&["auth", "enable"]),
        step(&["put", "foo", "1"]),
        with(&["put", "foo", "1"], &root),
        with(&["get", "foo"], &["--user", "alice:alicepw"]),
        with(&["get", "foo"], &["--user", "alice:wrong"]),
        with(&["get", "foo"], &["--user", "alice", "--password", "alicepw"]),
        with(&["put", "foo", "2"], &["--user", "alice:alicepw"]),
        with(&["get", "pre/x"], &["--user", "alice:alicepw"]),
        with(&["user", "list"], &root),
        with(&["endpoint", "health"], &["--user", "alice:alicepw"]),
        with(&["user", "delete", "bob"], &root),
        with(&["user", "delete", "bob"], &root),
        with(&["role", "delete", "writer"], &root),
        with(&["auth", "disable"], &root),
        step(&["auth", "disable"]),
        step(&["auth", "enable", "x"]),
        step(&["user", "passwd", "carol", "--interactive=false"]).stdin("newpw\n"),
        step(&["user", "list"]),
    ]
}

#[test]
fn auth_on_etcd() {
    compare_tools(Flavor::etcd(), kaname_bin!(), 1, &auth_script());
}

#[test]
fn kv_on_etcd() {
    compare_tools(Flavor::etcd(), kaname_bin!(), 1, &kv_script());
}

#[test]
fn kv_on_kaname() {
    compare_tools(kaname!(), kaname_bin!(), 1, &kv_script());
}

#[test]
fn lease_on_etcd() {
    compare_tools(Flavor::etcd(), kaname_bin!(), 1, &lease_script());
}

#[test]
fn lease_on_kaname() {
    compare_tools(kaname!(), kaname_bin!(), 1, &lease_script());
}

#[test]
fn maintenance_on_etcd() {
    compare_tools(Flavor::etcd(), kaname_bin!(), 1, &maintenance_script());
}

#[test]
fn maintenance_on_kaname() {
    compare_tools(kaname!(), kaname_bin!(), 1, &maintenance_script());
}

#[test]
fn cluster_on_kaname_3m() {
    compare_tools(kaname!(), kaname_bin!(), 3, &cluster_script());
}

/// Both clients against one cluster: outputs must be the same bytes.
fn same_bytes(flavor: Flavor) {
    let c = Cluster::start(flavor.clone(), 1);
    let ep = c.endpoints();
    for (k, v) in [("a", "1"), ("b", "two words"), ("c/\u{e9}", "tab\there"), ("d", "<&>\"")] {
        assert!(etcdctl(&ep, &["put", k, v], None).success());
    }
    let grant = etcdctl(&ep, &["lease", "grant", "600"], None);
    assert!(grant.success(), "{grant:?}");
    let leased = format!("--lease={}", grant.stdout.split_whitespace().nth(1).unwrap());
    assert!(etcdctl(&ep, &["put", "l", "v", &leased], None).success());
    let mut cmds: Vec<Vec<&str>> = Vec::new();
    for w in ["simple", "json", "fields", "protobuf", "table"] {
        cmds.push(vec!["get", "", "--prefix", "-w", w]);
        cmds.push(vec!["get", "a", "--hex", "-w", w]);
        cmds.push(vec!["member", "list", "-w", w]);
        cmds.push(vec!["endpoint", "status", "-w", w]);
        cmds.push(vec!["endpoint", "hashkv", "-w", w]);
        cmds.push(vec!["alarm", "list", "-w", w]);
        cmds.push(vec!["lease", "list", "-w", w]);
    }
    cmds.push(vec!["get", "", "--prefix", "--keys-only"]);
    cmds.push(vec!["get", "", "--prefix", "--hex", "-w", "fields"]);
    cmds.push(vec!["member", "list", "--hex", "-w", "json"]);
    for args in &cmds {
        let e = etcdctl(&ep, args, None);
        let k = kaname_etcdctl(kaname_bin!(), &ep, args, None);
        assert_eq!(
            (e.stdout.as_bytes(), e.code()),
            (k.stdout.as_bytes(), k.code()),
            "{} `etcdctl {}`: etcdctl vs kaname etcdctl\n{}\n{}",
            flavor.label(),
            args.join(" "),
            e.stdout,
            k.stdout
        );
    }
    // Leased keys: the ID is the same on both sides.
    let lid = grant.stdout.split_whitespace().nth(1).unwrap().to_string();
    for args in [
        vec!["lease", "timetolive", &lid, "--keys"],
        vec!["lease", "timetolive", &lid, "--keys", "-w", "json"],
        vec!["get", "l", "-w", "json"],
    ] {
        let e = etcdctl(&ep, &args, None);
        let k = kaname_etcdctl(kaname_bin!(), &ep, &args, None);
        // remaining TTL may tick between the two runs
        let mask = |s: &str| s.replace("remaining(599s)", "remaining(600s)").replace("\"ttl\":599", "\"ttl\":600");
        assert_eq!(mask(&e.stdout), mask(&k.stdout), "{} `etcdctl {}`", flavor.label(), args.join(" "));
    }
    // keep-alive streams until killed; then on a revoked lease it ends by itself.
    for revoke in [false, true] {
        if revoke {
            assert!(etcdctl(&ep, &["lease", "revoke", &lid], None).success());
        }
        for w in ["simple", "json"] {
            let args = ["lease", "keep-alive", &lid, "-w", w];
            let e = run_for(false, &ep, &args, "", 1.0);
            let k = run_for(true, &ep, &args, "", 1.0);
            assert_eq!(e, k, "{} `etcdctl {}` (revoked: {revoke})", flavor.label(), args.join(" "));
        }
    }
}

#[test]
fn same_bytes_on_etcd() {
    same_bytes(Flavor::etcd());
}

#[test]
fn same_bytes_on_kaname() {
    same_bytes(kaname!());
}

/// Runs a client for `secs` (watch never ends on its own) and returns stdout, stderr
/// without Go client log lines, and the exit code (-1 when it had to be killed).
fn run_for(kaname: bool, ep: &str, args: &[&str], stdin: &str, secs: f64) -> (String, String, i32) {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let mut cmd = if kaname {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kaname"));
        c.arg("etcdctl");
        c
    } else {
        Command::new(ETCDCTL_BIN)
    };
    let mut child = cmd
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut pipe = child.stdin.take().unwrap();
    let _ = pipe.write_all(stdin.as_bytes());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code().unwrap_or(-1);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    drop(pipe);
    let (mut out, mut err) = (String::new(), String::new());
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let err = err.lines().filter(|l| !l.starts_with("{\"level\":")).map(|l| format!("{l}\n")).collect();
    (out, err, code)
}

/// watch: historical events from one cluster, both clients, same bytes.
fn watch_same_bytes(flavor: Flavor) {
    let c = Cluster::start(flavor.clone(), 1);
    let ep = c.endpoints();
    for args in [["put", "w/a", "1"], ["put", "w/b", "2"], ["del", "w/a", ""], ["put", "x", "3"]] {
        let args: Vec<&str> = args.iter().copied().filter(|a| !a.is_empty()).collect();
        assert!(etcdctl(&ep, &args, None).success());
    }
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["watch", "w/", "--prefix", "--rev", "2"], ""),
        (vec!["watch", "w/", "--prefix", "--rev", "2", "--prev-kv", "-w", "json"], ""),
        (vec!["watch", "w/", "--prefix", "--rev", "2", "-w", "fields"], ""),
        (vec!["watch", "w/a", "w/z", "--rev", "2", "--prev-kv"], ""),
        (vec!["watch", "x", "--rev", "1", "--hex"], ""),
        (vec!["watch"], ""),
        (vec!["watch", "a", "b", "--prefix"], ""),
        (vec!["watch", "-i"], "watch w/ --prefix --rev 2\n"),
    ];
    for (args, stdin) in &cases {
        let e = run_for(false, &ep, args, stdin, 1.0);
        let k = run_for(true, &ep, args, stdin, 1.0);
        assert_eq!(e, k, "{} `etcdctl {}`: etcdctl (left) vs kaname etcdctl (right)", flavor.label(), args.join(" "));
    }
    assert!(etcdctl(&ep, &["compaction", "4"], None).success());
    let args = ["watch", "w/", "--prefix", "--rev", "2"];
    let e = run_for(false, &ep, &args, "", 5.0);
    let k = run_for(true, &ep, &args, "", 5.0);
    assert_eq!(e, k, "{} watch from a compacted revision", flavor.label());
}

#[test]
fn watch_on_etcd() {
    watch_same_bytes(Flavor::etcd());
}

#[test]
fn watch_on_kaname() {
    watch_same_bytes(kaname!());
}

/// member add (as learner, so quorum stays), update, remove and move-leader errors; real
/// etcd only (kaname has no membership changes yet).
fn membership_script() -> Vec<Step> {
    vec![
        step(&["member", "add", "l1", "--peer-urls=http://127.0.0.1:1", "--learner"]),
        step(&["member", "list"]).unordered(),
        step(&["member", "list", "-w", "json"]).unordered(),
        step(&["member", "add", "l2", "--peer-urls=http://127.0.0.1:2", "--learner", "-w", "json"]).unordered(),
        step(&["member", "add", "l3", "--peer-urls=http://127.0.0.1:3", "--learner", "-w", "fields"]),
        step(&["member", "add", "l4", "--peer-urls=http://127.0.0.1:1", "--learner"]),
        step(&["member", "promote", "1"]),
        step(&["member", "update", "1", "--peer-urls=http://127.0.0.1:9"]),
        step(&["member", "remove", "1"]),
        // Only with every member as endpoint is the answer independent of who leads.
        step(&["move-leader", "1"]).all(),
    ]
}

#[test]
fn membership_on_etcd_3m() {
    compare_tools(Flavor::etcd(), kaname_bin!(), 3, &membership_script());
}

/// snapshot save, environment variables, dead endpoints.
fn misc(flavor: Flavor) {
    let c = Cluster::start(flavor.clone(), 1);
    let ep = c.endpoints();
    assert!(etcdctl(&ep, &["put", "a", "1"], None).success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.db");
    let p = path.to_str().unwrap();
    let e = etcdctl(&ep, &["snapshot", "save", p], None);
    let e_size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    std::fs::remove_file(&path).unwrap();
    let k = kaname_etcdctl(kaname_bin!(), &ep, &["snapshot", "save", p], None);
    let k_size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert_eq!((e.stdout.as_str(), e.code()), (k.stdout.as_str(), k.code()), "{} snapshot save", flavor.label());
    assert!(e_size > 0 && e_size == k_size, "snapshot sizes: etcdctl {e_size}, kaname etcdctl {k_size}");
    // Flags from ETCDCTL_* variables.
    let k = std::process::Command::new(env!("CARGO_BIN_EXE_kaname"))
        .args(["etcdctl", "get", "a"])
        .env("ETCDCTL_API", "3")
        .env("ETCDCTL_ENDPOINTS", &ep)
        .env("ETCDCTL_WRITE_OUT", "fields")
        .env("ETCDCTL_COMMAND_TIMEOUT", "3s")
        .output()
        .unwrap();
    let e = etcdctl(&ep, &["get", "a", "-w", "fields"], None);
    assert_eq!(String::from_utf8_lossy(&k.stdout), e.stdout, "ETCDCTL_* variables");
    // Unreachable endpoint: etcdctl's dial timeout error.
    let dead = format!("127.0.0.1:{}", claim_port().port);
    for args in [vec!["--dial-timeout=500ms", "get", "a"], vec!["--dial-timeout=500ms", "endpoint", "status"]] {
        let e = etcdctl(&dead, &args, None);
        let k = kaname_etcdctl(kaname_bin!(), &dead, &args, None);
        let errs = |s: &str| s.lines().filter(|l| !l.starts_with("{\"level\"")).collect::<Vec<_>>().join("\n");
        assert_eq!(
            (e.stdout.as_str(), errs(&e.stderr), e.code()),
            (k.stdout.as_str(), errs(&k.stderr), k.code()),
            "{args:?} on a dead endpoint"
        );
    }
}

#[test]
fn misc_on_etcd() {
    misc(Flavor::etcd());
}

#[test]
fn misc_on_kaname() {
    misc(kaname!());
}

/// A real etcd serving clients over TLS (certificates made with openssl), killed on drop.
struct TlsEtcd {
    child: std::process::Child,
    dir: tempfile::TempDir,
    ep: String,
    _ports: (PortClaim, PortClaim),
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_etcd() -> TlsEtcd {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sh = |args: &[&str]| {
        let st = Command::new("openssl").args(args).current_dir(d).stderr(Stdio::null()).status().expect("openssl");
        assert!(st.success(), "openssl {args:?}");
    };
    sh(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]
        .iter()
        .copied()
        .chain(["-subj", "/CN=test-ca"])
        .collect::<Vec<_>>());
    sh(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(d.join("ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n").unwrap();
    sh(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    let (client, peer) = (claim_port(), claim_port());
    let cu = format!("https://127.0.0.1:{}", client.port);
    let pu = format!("http://127.0.0.1:{}", peer.port);
    let log = std::fs::File::create(d.join("etcd.log")).unwrap();
    let child = Command::new(ETCD_BIN)
        .args([
            "--data-dir",
            d.join("data").to_str().unwrap(),
            "--listen-client-urls",
            &cu,
            "--advertise-client-urls",
            &cu,
        ])
        .args(["--listen-peer-urls", &pu, "--initial-advertise-peer-urls", &pu])
        .args(["--initial-cluster", &format!("default={pu}"), "--cert-file", "server.pem", "--key-file", "server.key"])
        .current_dir(d)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start etcd");
    let t = TlsEtcd { child, ep: cu, _ports: (client, peer), dir };
    let ca = t.dir.path().join("ca.pem");
    for _ in 0..100 {
        if etcdctl(&t.ep, &["--cacert", ca.to_str().unwrap(), "endpoint", "health"], None).success() {
            return t;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("TLS etcd did not become healthy");
}

#[test]
fn tls_on_etcd() {
    let t = tls_etcd();
    let d = t.dir.path();
    let ca = format!("--cacert={}", d.join("ca.pem").display());
    let cert = format!("--cert={}", d.join("server.pem").display());
    let key = format!("--key={}", d.join("server.key").display());
    let bare = t.ep.trim_start_matches("https://").to_string();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (t.ep.clone(), vec![&ca, "put", "a", "1"]),
        (t.ep.clone(), vec![&ca, "get", "a", "-w", "json"]),
        (bare.clone(), vec![&ca, &cert, &key, "get", "a"]),
        (t.ep.clone(), vec![&ca, "member", "list"]),
        (t.ep.clone(), vec!["--dial-timeout=500ms", "get", "a"]),
        // Skipping verification applies to the TLS the flags configure: a bare endpoint with
        // --insecure-transport=false connects without a CA ...
        (bare.clone(), vec!["--insecure-transport=false", "--insecure-skip-tls-verify", "get", "a"]),
        (bare.clone(), vec![&cert, &key, "--insecure-skip-tls-verify", "get", "a"]),
        // ... but not without skipping, and not to an https:// endpoint when no flag configures
        // TLS (clientv3 then dials with a default, verifying config).
        (bare.clone(), vec!["--insecure-transport=false", "--dial-timeout=500ms", "get", "a"]),
        (t.ep.clone(), vec!["--insecure-skip-tls-verify", "--dial-timeout=500ms", "get", "a"]),
    ];
    for (ep, args) in &cases {
        let e = etcdctl(ep, args, None);
        let k = kaname_etcdctl(kaname_bin!(), ep, args, None);
        let errs = |s: &str| s.lines().filter(|l| !l.starts_with("{\"level\"")).collect::<Vec<_>>().join("\n");
        assert_eq!(
            (e.stdout.as_str(), errs(&e.stderr), e.code()),
            (k.stdout.as_str(), errs(&k.stderr), k.code()),
            "TLS: {args:?}"
        );
    }
}
