//! Leases, judged by etcdctl 3.4 against real etcd 3.4.
//!
//! - `lease_{1m,3m}_{etcd,kaname}`: the same etcdctl session (grant, attach, time-to-live,
//!   list, keep-alive, revoke, errors, expiry of a short lease) against etcd and kaname, with
//!   normalized output compared step by step, as `etcdctl_compat` does. Lease IDs are chosen
//!   by each server, so a step may use the ID a previous grant printed (`{L1}`, `{L2}`, ...) and
//!   every output masks them as `<lease:N>`. `*_etcd` runs etcd against etcd: the harness
//!   self-test.
//! - `lease_survives_leader_kill_and_restart_kaname`: kill -9 of the leader holding leases,
//!   then of every member; leases must neither expire early nor be lost.
//!
//! Tests run one at a time: expiry is judged to the second, and 2 cores are shared.

use kaname_testkit::*;

use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Sessions with lease IDs
// ---------------------------------------------------------------------------

/// The IDs printed by `lease grant` so far, in order; `{L1}` is the first.
#[derive(Default)]
struct Leases(Vec<u64>);

impl Leases {
    /// Substitutes `{Ln}` in an argument with the hex ID etcdctl takes.
    fn args(&self, args: &[String]) -> Vec<String> {
        args.iter()
            .map(|a| {
                let mut a = a.clone();
                for (i, id) in self.0.iter().enumerate() {
                    a = a.replace(&format!("{{L{}}}", i + 1), &format!("{id:x}"));
                }
                a
            })
            .collect()
    }

    /// Learns the ID of a `lease grant` output (simple or JSON).
    fn learn(&mut self, stdout: &str) {
        let t = stdout.trim();
        let id = if let Some(rest) = t.strip_prefix("lease ") {
            rest.split_whitespace().next().and_then(|h| u64::from_str_radix(h, 16).ok())
        } else {
            serde_json::from_str::<serde_json::Value>(t).ok().and_then(|v| v["ID"].as_u64())
        };
        if let Some(id) = id {
            self.0.push(id);
        }
    }

    /// Replaces every known ID (hex as etcdctl prints it, decimal inside JSON) by `<lease:N>`.
    fn mask(&self, text: &str) -> String {
        let mut out: Vec<String> = Vec::new();
        for line in text.split('\n') {
            let mut l = line.to_string();
            for (i, id) in self.0.iter().enumerate() {
                l = l.replace(&format!("{id:016x}"), &format!("<lease:{}>", i + 1));
                l = l.replace(&format!("{id:x}"), &format!("<lease:{}>", i + 1));
                let dec = if l.trim_start().starts_with('{') {
                    format!("\"<lease:{}>\"", i + 1)
                } else {
                    format!("<lease:{}>", i + 1)
                };
                l = l.replace(&id.to_string(), &dec);
            }
            out.push(l);
        }
        out.join("\n")
    }
}

/// `remaining(59s)` depends on when the step ran: it must lie within a few seconds below
/// the granted TTL, and is then masked. `attached keys([b a])` lists keys in map order in
/// etcd: sorted here.
fn mask_time_to_live(text: &str, notes: &mut Vec<String>) -> String {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let mut l = line.to_string();
        if let (Some(g), Some(r)) = (l.find("granted with TTL("), l.find(", remaining(")) {
            let granted: i64 = l[g + 17..].split('s').next().and_then(|x| x.parse().ok()).unwrap_or(-1);
            let rstart = r + ", remaining(".len();
            let rend = rstart + l[rstart..].find("s)").unwrap_or(0);
            let remaining: i64 = l[rstart..rend].parse().unwrap_or(i64::MIN);
            if remaining > granted || remaining < granted - 4 {
                notes.push(format!("remaining TTL {remaining}s out of range for granted {granted}s: {l}"));
            }
            l = format!("{}<remaining>{}", &l[..rstart], &l[rend..]);
        }
        // `TTL(60s)` would be masked as a duration: keep the number visible.
        if let Some(t) = l.find("TTL(") {
            let start = t + 4;
            let digits = l[start..].bytes().take_while(|c| c.is_ascii_digit() || *c == b'-').count();
            if digits > 0 && l[start + digits..].starts_with("s)") {
                l = format!("{}{} sec{}", &l[..start], &l[start..start + digits], &l[start + digits + 1..]);
            }
        }
        if let Some(k) = l.find("attached keys([") {
            let start = k + "attached keys([".len();
            if let Some(len) = l[start..].find("])") {
                let mut keys: Vec<&str> = l[start..start + len].split(' ').collect();
                keys.sort();
                l = format!("{}{}{}", &l[..start], keys.join(" "), &l[start + len..]);
            }
        }
        out.push(l);
    }
    out.join("\n")
}

/// Lease IDs and remaining TTLs around every step: steps whose output is a `lease grant`
/// (simple or JSON) teach the next `{Ln}`.
impl StepHook for Leases {
    fn args(&mut self, args: &[String]) -> Vec<String> {
        Leases::args(self, args)
    }
    fn observe(&mut self, args: &[String], out: &Output) {
        if args.len() >= 2 && args[0] == "lease" && args[1] == "grant" && out.success() {
            self.learn(&out.stdout);
        }
    }
    fn mask(&self, text: &str, notes: &mut Vec<String>) -> String {
        mask_time_to_live(&Leases::mask(self, text), notes)
    }
}

/// `compare_flavors` for sessions with lease IDs.
fn compare_lease_sessions(reference: Flavor, candidate: Flavor, members: usize, script: &[Step]) {
    let _g = serial();
    compare_flavors_hooked(reference, candidate, members, script, Leases::default);
}

fn lease_script(n: usize) -> Vec<Step> {
    let (m2, m3) = (m(n, 2), m(n, 3));
    vec![
        step(&["lease", "grant", "60"]),
        step(&["lease", "grant", "100", "-w", "json"]).on(m2),
        step(&["put", "k1", "v1", "--lease={L1}"]),
        step(&["put", "k2", "v2", "--lease={L1}"]).on(m3),
        step(&["put", "k3", "v3", "--lease={L2}"]).on(m2),
        step(&["get", "k1", "-w", "json"]),
        step(&["get", "k3", "-w", "json"]).on(m3),
        step(&["lease", "timetolive", "{L1}", "--keys"]).on(m2),
        step(&["lease", "timetolive", "{L2}"]).on(m3),
        step(&["lease", "timetolive", "{L2}", "--keys"]),
        step(&["lease", "list"]).unordered(),
        step(&["lease", "list"]).on(m2).unordered(),
        // moving a key to another lease, and off any lease
        step(&["put", "k3", "v3b", "--lease={L1}"]).on(m3),
        step(&["put", "k2", "v2b"]),
        step(&["lease", "timetolive", "{L1}", "--keys"]),
        step(&["lease", "timetolive", "{L2}", "--keys"]).on(m2),
        step(&["put", "k1", "v1b", "--ignore-lease"]).on(m2),
        step(&["get", "k1", "-w", "json"]),
        step(&["lease", "keep-alive", "--once", "{L1}"]).on(m2),
        step(&["lease", "keep-alive", "--once", "{L2}", "-w", "json"]).on(m3),
        // unknown leases
        step(&["put", "k4", "v", "--lease=1234"]),
        step(&["put", "k4", "v", "--lease=1234"]).on(m3),
        step(&["txn"]).stdin("\n\nput t1 v --lease=1234\n\n"),
        step(&["txn"]).stdin("\n\nput t1 v --lease={L2}\n\n").on(m2),
        step(&["get", "t1", "-w", "json"]),
        step(&["lease", "timetolive", "1234"]),
        step(&["lease", "keep-alive", "--once", "1234"]).on(m2),
        step(&["lease", "revoke", "1234"]).on(m3),
        step(&["lease", "grant", "9000000001"]),
        step(&["lease", "grant", "-5"]).on(m2),
        // revoke: attached keys go in one revision
        step(&["get", "", "--prefix", "-w", "json"]),
        step(&["lease", "revoke", "{L1}"]).on(m2),
        step(&["get", "", "--prefix", "-w", "json"]),
        step(&["get", "", "--prefix", "-w", "json"]).on(m3),
        step(&["lease", "timetolive", "{L1}", "--keys"]),
        step(&["lease", "revoke", "{L1}"]).on(m3),
        step(&["lease", "keep-alive", "--once", "{L1}"]),
        step(&["put", "k5", "v", "--lease={L1}"]),
        step(&["lease", "list"]).on(m3).unordered(),
        step(&["lease", "list", "-w", "json"]).on(m2),
        step(&["lease", "timetolive", "{L1}", "-w", "json"]).on(m3),
        step(&["lease", "revoke", "{L2}", "-w", "json"]),
        step(&["get", "", "--prefix", "--keys-only"]).on(m2),
        // expiry: a 3 s lease (above the 2 s minimum) takes its keys within a second of its
        // deadline; 1 s is raised to the minimum
        step(&["lease", "grant", "3"]),
        step(&["put", "e1", "v", "--lease={L3}"]).on(m2),
        step(&["put", "e2", "v", "--lease={L3}"]).on(m3),
        step(&["lease", "grant", "1", "-w", "json"]).on(m2),
        step(&["get", "e", "--prefix", "--keys-only"]).after_ms(1200),
        step(&["get", "e", "--prefix", "-w", "json"]).after_ms(2300),
        step(&["get", "e", "--prefix", "--keys-only"]).on(m3),
        step(&["lease", "timetolive", "{L3}"]).on(m2),
        step(&["lease", "timetolive", "{L4}"]),
        step(&["lease", "list"]),
    ]
}

#[test]
fn lease_1m_etcd() {
    compare_lease_sessions(Flavor::etcd(), Flavor::etcd(), 1, &lease_script(1));
}

#[test]
fn lease_1m_kaname() {
    compare_lease_sessions(Flavor::etcd(), kaname!(), 1, &lease_script(1));
}

#[test]
fn lease_3m_etcd() {
    compare_lease_sessions(Flavor::etcd(), Flavor::etcd(), 3, &lease_script(3));
}

#[test]
fn lease_3m_kaname() {
    compare_lease_sessions(Flavor::etcd(), kaname!(), 3, &lease_script(3));
}

// ---------------------------------------------------------------------------
// Failover and restart (kaname only: the timing bars are etcd's design, see lease/mod.rs)
// ---------------------------------------------------------------------------

fn ok(c: &Cluster, endpoint: &str, args: &[&str]) -> String {
    let out = etcdctl_timeout(endpoint, args, None, "15s");
    assert!(out.success(), "etcdctl {args:?} on {endpoint} failed: {}{}\n{}", out.stdout, out.stderr, c.log_tails(30));
    out.stdout
}

fn grant(c: &Cluster, endpoint: &str, ttl: &str) -> String {
    let out = ok(c, endpoint, &["lease", "grant", ttl]);
    out.split_whitespace().nth(1).expect("lease grant prints the ID").to_string()
}

fn keys(c: &Cluster, endpoint: &str) -> Vec<String> {
    let out = ok(c, endpoint, &["get", "f/", "--prefix", "--keys-only"]);
    out.lines().filter(|l| !l.is_empty()).map(String::from).collect()
}

/// Renews `lease` once through any live member.
fn keep_alive(c: &Cluster, lease: &str) {
    let out = ok(c, &c.live_endpoints(), &["lease", "keep-alive", "--once", lease]);
    assert!(out.contains("keepalived with TTL(6)"), "unexpected keep-alive answer: {out}");
}

/// The Raft term member `i` reports.
fn raft_term(c: &Cluster, i: usize) -> u64 {
    let st = c.status(i).unwrap_or_else(|e| panic!("{e}\n{}", c.log_tails(30)));
    st["raftTerm"].as_u64().or_else(|| st["header"]["raft_term"].as_u64()).unwrap_or(0)
}

/// Sleeps until `until`, renewing `lease` about every second meanwhile.
fn wait_keeping_alive(c: &Cluster, lease: &str, until: Instant) {
    loop {
        keep_alive(c, lease);
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        thread::sleep(left.min(Duration::from_secs(1)));
    }
}

#[test]
fn lease_survives_leader_kill_and_restart_kaname() {
    let _g = serial();
    let mut c = Cluster::start(kaname!(), 3);
    let leader = c.wait_leader(Duration::from_secs(15));
    let follower = if leader == 1 { 2 } else { 1 };
    let fe = c.member_endpoint(follower);

    // A 10 s lease left alone, and a 6 s lease kept alive throughout.
    let granted = Instant::now();
    let long = grant(&c, &fe, "10");
    let kept = grant(&c, &fe, "6");
    ok(&c, &fe, &["put", "f/long", "v", &format!("--lease={long}")]);
    ok(&c, &fe, &["put", "f/kept", "v", &format!("--lease={kept}")]);
    thread::sleep(Duration::from_millis(1000));

    c.kill(leader);
    let killed = Instant::now();
    let new_leader = c.wait_leader(Duration::from_secs(20));
    assert_ne!(new_leader, leader);
    // The new leader was promoted between the kill and now (elections on a busy machine
    // have been seen to take 9 s).
    let elected = Instant::now();
    let term_after_failover = raft_term(&c, new_leader);
    // Shortly after failover, and beyond the old leader's deadline for it (grant + 10 s),
    // nothing may have expired: the new leader counts a full TTL plus an election timeout
    // from its promotion, which comes after the kill.
    for wait_until in [killed + Duration::from_secs(3), killed + Duration::from_secs(10)] {
        wait_keeping_alive(&c, &kept, wait_until);
        let live = c.live_endpoints();
        assert_eq!(
            keys(&c, &live),
            ["f/kept", "f/long"],
            "{:?} after the grant, {:?} after kill -9 of leader m{leader}\n{}",
            granted.elapsed(),
            killed.elapsed(),
            c.log_tails(30)
        );
    }
    // The new leader does expire it: promotion + 1 s election timeout + 10 s TTL, checked
    // every 500 ms. Another election meanwhile rightly starts the count again, once.
    let mut expire_by = elected + Duration::from_secs(14);
    let mut extended = false;
    let mut gone = false;
    loop {
        if keys(&c, &c.live_endpoints()) == ["f/kept"] {
            gone = true;
            break;
        }
        if Instant::now() > expire_by {
            let term = raft_term(&c, new_leader);
            if extended || term == term_after_failover {
                break;
            }
            println!("raft term moved from {term_after_failover} to {term} after failover: waiting for a new count");
            extended = true;
            expire_by = Instant::now() + Duration::from_secs(13);
        }
        wait_keeping_alive(&c, &kept, Instant::now() + Duration::from_millis(500));
    }
    assert!(gone, "the 10 s lease never expired after failover\n{}", c.log_tails(40));
    println!(
        "10 s lease expired {:?} after the grant, {:?} after the leader kill ({:?} to elect a new leader)",
        granted.elapsed(),
        killed.elapsed(),
        elected.duration_since(killed)
    );
    if std::env::var_os("KANAME_IT_DEBUG").is_some() {
        println!("killed m{leader} at +{:?} after the grant\n{}", killed.duration_since(granted), c.log_tails(40));
    }
    let ttl = ok(&c, &c.live_endpoints(), &["lease", "timetolive", &long]);
    assert!(ttl.contains("already expired"), "{ttl}");

    // kill -9 every member: leases and their keys come back, and still expire.
    let before = ok(&c, &c.live_endpoints(), &["lease", "list"]);
    for i in 1..=3 {
        c.kill(i);
    }
    let spawned = Instant::now();
    for i in 1..=3 {
        c.restart(i);
    }
    c.wait_healthy();
    let restarted = Instant::now();
    assert_eq!(keys(&c, &c.endpoints()), ["f/kept"], "keys after restart\n{}", c.log_tails(30));
    let after = ok(&c, &c.endpoints(), &["lease", "list"]);
    assert_eq!(after, before, "lease list after restarting every member");
    for i in 1..=3 {
        let t = ok(&c, &c.member_endpoint(i), &["lease", "timetolive", &kept, "--keys"]);
        assert!(t.contains("granted with TTL(6s)") && t.contains("attached keys([f/kept])"), "m{i}: {t}");
    }
    // Not kept alive any more: it expires TTL + election timeout after the new leader's
    // promotion, which is after the processes started: never before 7 s from then.
    let mut gone_after = None;
    while restarted.elapsed() < Duration::from_secs(12) {
        if keys(&c, &c.endpoints()).is_empty() {
            gone_after = Some(spawned.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(300));
    }
    let gone_after =
        gone_after.unwrap_or_else(|| panic!("the 6 s lease survived 12 s after restart\n{}", c.log_tails(30)));
    assert!(gone_after >= Duration::from_secs(7), "expired early after restart: {gone_after:?}");
    println!("after restarting all members, the 6 s lease expired {gone_after:?} after they were started");
}

/// `endpoint hashkv` hashes of all members, once they agree (polled while one lags).
fn agreed_hash(c: &Cluster, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = etcdctl_timeout(&c.endpoints(), &["endpoint", "hashkv", "-w", "json"], None, "10s");
        let hashes: Vec<u64> = serde_json::from_str::<serde_json::Value>(out.stdout.trim())
            .ok()
            .and_then(|v| v.as_array().map(|a| a.iter().filter_map(|e| e["HashKV"]["hash"].as_u64()).collect()))
            .unwrap_or_default();
        if hashes.len() == c.size() && hashes.iter().all(|h| *h == hashes[0]) {
            return Some(hashes[0]);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(300));
    }
}

/// A follower that misses a grant and the puts that attach keys, and catches up from a Raft
/// snapshot, must know the lease and its keys: its own apply of the later revoke deletes them.
#[test]
fn lease_travels_in_snapshots_kaname() {
    let _g = serial();
    let mut c = Cluster::start_with(kaname!(), 3, &["--snapshot-count=20"]);
    let leader = c.wait_leader(Duration::from_secs(15));
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    c.kill(follower);
    let le = c.member_endpoint(leader);
    let lease = grant(&c, &le, "600");
    ok(&c, &le, &["put", "s/a", "v", &format!("--lease={lease}")]);
    ok(&c, &le, &["put", "s/b", "v", &format!("--lease={lease}")]);
    ok(&c, &le, &["put", "s/c", "v"]);
    // Enough entries for the leader to snapshot and purge its log past the follower.
    for i in 0..60 {
        ok(&c, &le, &["put", &format!("fill/{i}"), "v"]);
    }
    // The leader purges after building a snapshot, when it gets to it; a follower back before
    // that rightly catches up from the log (raft-log reports each purge at info level).
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&c.member(leader).log_path).unwrap_or_default().contains("RaftLog purge upto") {
        assert!(Instant::now() < deadline, "the leader did not purge its log\n{}", c.log_tails(30));
        thread::sleep(Duration::from_millis(100));
    }
    c.restart(follower);
    c.wait_healthy();
    let fe = c.member_endpoint(follower);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(&c.member(follower).log_path).unwrap_or_default();
        let since = log.rsplit("=== harness: starting").next().unwrap_or("");
        if since.contains("installed snapshot received from the leader") {
            break;
        }
        assert!(Instant::now() < deadline, "m{follower} caught up without a snapshot\n{}", c.log_tails(30));
        thread::sleep(Duration::from_millis(200));
    }
    let list = ok(&c, &fe, &["lease", "list"]);
    assert!(list.contains(&format!("{:0>16}", lease)), "m{follower} does not list the lease: {list}");

    ok(&c, &le, &["lease", "revoke", &lease]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ok(&c, &fe, &["get", "s/", "--prefix", "--keys-only", "--consistency=s"]);
        let keys: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        if keys == ["s/c"] {
            break;
        }
        assert!(Instant::now() < deadline, "m{follower} kept {keys:?} after the revoke\n{}", c.log_tails(30));
        thread::sleep(Duration::from_millis(200));
    }
    assert!(agreed_hash(&c, Duration::from_secs(10)).is_some(), "members disagree on hashkv\n{}", c.log_tails(30));
}

/// `etcdctl lease keep-alive` (the streaming form, clientv3's keep-alive loop) through a
/// follower keeps a 2 s lease alive for as long as it runs; afterwards the lease expires.
#[test]
fn keep_alive_stream_through_follower_kaname() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let _g = serial();
    let c = Cluster::start(kaname!(), 3);
    let leader = c.wait_leader(Duration::from_secs(15));
    let fe = c.member_endpoint(if leader == 1 { 2 } else { 1 });
    let lease = grant(&c, &fe, "2");
    ok(&c, &fe, &["put", "f/stream", "v", &format!("--lease={lease}")]);
    let mut child = Command::new(ETCDCTL_BIN)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={fe}"))
        .args(["lease", "keep-alive", &lease])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcdctl lease keep-alive");
    thread::sleep(Duration::from_millis(4000));
    let alive = keys(&c, &fe);
    let _ = child.kill();
    let _ = child.wait();
    let mut out = String::new();
    let _ = child.stdout.take().expect("piped").read_to_string(&mut out);
    assert_eq!(alive, ["f/stream"], "kept-alive lease expired; keep-alive printed:\n{out}\n{}", c.log_tails(30));
    let renewals = out.lines().filter(|l| l.contains("keepalived with TTL(2)")).count();
    assert!(renewals >= 3, "expected a renewal every ~TTL/3, got:\n{out}");
    let deadline = Instant::now() + Duration::from_secs(6);
    while !keys(&c, &fe).is_empty() {
        assert!(Instant::now() < deadline, "lease outlived its keep-alive by 6 s\n{}", c.log_tails(30));
        thread::sleep(Duration::from_millis(300));
    }
}
