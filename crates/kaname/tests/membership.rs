//! Membership changes judged by real etcd 3.4: `etcdctl member add/remove/update/promote`, a new
//! member joining with `--initial-cluster-state existing`, learners, etcd's strict
//! reconfiguration checks, removing the leader, and restarting members with the current members
//! in `--initial-cluster` after changes. Each scenario runs on etcd, then on kaname;
//! the normalized transcripts must be equal.

use kaname_testkit::*;
use std::time::{Duration, Instant};

/// What one scenario printed, step by step, normalized.
type Transcript = Vec<(String, String)>;

struct Run {
    c: Cluster,
    masker: Masker,
    out: Transcript,
}

impl Run {
    fn start(flavor: Flavor) -> Run {
        let c = Cluster::start(flavor.clone(), 3);
        let (masker, _) = Masker::for_cluster(&c);
        // etcd refuses membership changes ("unhealthy cluster") until every peer has been
        // connected for its HealthInterval (5 s); kaname applies the same rule.
        std::thread::sleep(Duration::from_millis(5500));
        Run { c, masker, out: Vec::new() }
    }

    /// Runs etcdctl against member `on` and records its normalized output under `label`.
    fn step(&mut self, label: &str, on: usize, args: &[&str]) -> Output {
        let o = etcdctl(&self.c.member_endpoint(on), args, None);
        let stderr: String = o.stderr.lines().filter(|l| l.starts_with("Error")).map(|l| format!("{l}\n")).collect();
        let text = unpad(&format!("{}{}[exit {}]", o.stdout, stderr, o.code()));
        let mut norm = self.masker.normalize(&text, args.first() == Some(&"member") && args.get(1) == Some(&"list"));
        // etcdctl prints ETCD_INITIAL_CLUSTER in the order of the member IDs, which differ.
        norm = norm
            .lines()
            .map(|l| match l.strip_prefix("ETCD_INITIAL_CLUSTER=\"") {
                Some(rest) => {
                    let mut parts: Vec<&str> = rest.trim_end_matches('"').split(',').collect();
                    parts.sort();
                    format!("ETCD_INITIAL_CLUSTER=\"{}\"", parts.join(","))
                }
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        self.out.push((label.to_string(), norm));
        o
    }

    fn note(&mut self, label: &str, what: impl ToString) {
        self.out.push((label.to_string(), what.to_string()));
    }

    fn peer_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.c.member(i).peer.port)
    }

    fn id_of(&self, i: usize) -> String {
        self.c.status(i).expect("status")["header"]["member_id"]
            .as_u64()
            .map(|id| format!("{id:x}"))
            .expect("member id")
    }

    /// Retries `etcdctl args` on member `on` until it succeeds (elections, catch-up); the last
    /// failure's text otherwise.
    fn until_ok(&self, on: usize, args: &[&str], within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let o = etcdctl(&self.c.member_endpoint(on), args, None);
            if o.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("etcdctl {args:?} on m{on}: {}{}\n{:?}", o.stdout, o.stderr, self.out));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// etcdctl prints IDs with `%16x`, so an ID with leading zeros gets padded with spaces.
fn unpad(t: &str) -> String {
    let mut out = t.to_string();
    while out.contains("  ") && (out.contains("Member ") || out.contains("cluster ")) {
        let next = out.replace("Member  ", "Member ").replace("cluster  ", "cluster ");
        if next == out {
            break;
        }
        out = next;
    }
    out
}

/// Member labels and etcdctl's `%16x` padding made neutral, for outputs about a member that
/// differs between runs.
fn generic_ids(t: &str) -> String {
    let mut out = unpad(t);
    for i in 1..=9 {
        out = out.replace(&format!("<id:m{i}>"), "<id>");
    }
    out
}

fn compare(scenario: fn(Flavor) -> Transcript) {
    let expected = scenario(Flavor::etcd());
    let got = scenario(kaname!());
    let mut report = String::new();
    for (e, g) in expected.iter().zip(&got) {
        if e != g {
            report.push_str(&format!("\n== {}\n-- etcd:\n{}\n-- kaname ({}):\n{}\n", e.0, e.1, g.0, g.1));
        }
    }
    assert!(report.is_empty() && expected.len() == got.len(), "kaname differs from etcd 3.4:{report}");
}

/// Add a voter, start it with `--initial-cluster-state existing`, use it, update its peer URLs,
/// remove it (it stops); members that never start count against etcd's strict reconfiguration
/// check.
fn add_join_update_remove(flavor: Flavor) -> Transcript {
    let mut r = Run::start(flavor.clone());
    r.step("put", 1, &["put", "before", "1"]);
    let m4 = r.c.add_member_slot();
    let url4 = r.peer_url(m4);
    r.step("member add m4", 1, &["member", "add", "m4", &format!("--peer-urls={url4}")]);
    r.step("member list, m4 unstarted", 2, &["member", "list"]);
    r.c.start_joining(m4);
    r.c.wait_healthy();
    r.step("m4 reads what was written before it joined", m4, &["get", "before", "--print-value-only"]);
    r.step("put through m4", m4, &["put", "via-m4", "ok"]);
    r.step("m1 reads it", 1, &["get", "via-m4", "--print-value-only"]);
    // A joined member restarts from its data (its ID came from `member add`, not the flags).
    r.c.restart(m4);
    r.c.wait_healthy();
    r.step("m4 after a restart", m4, &["get", "via-m4", "--print-value-only"]);
    r.step("member list, 4 started", 3, &["member", "list"]);
    let id4 = r.id_of(m4);

    r.step("member add with a used peer URL", 1, &["member", "add", "dup", &format!("--peer-urls={url4}")]);
    r.step("member add with a bad URL", 1, &["member", "add", "bad", "--peer-urls=127.0.0.1"]);
    // Update m4's peer URLs to include a second URL, then back.
    let spare = claim_port();
    let both = format!("{url4},http://127.0.0.1:{}", spare.port);
    r.step("member update", 2, &["member", "update", &id4, &format!("--peer-urls={both}")]);
    r.step("member list after update", 1, &["member", "list"]);
    r.step("member update back", 2, &["member", "update", &id4, &format!("--peer-urls={url4}")]);

    r.step("member remove m4", 1, &["member", "remove", &id4]);
    r.c.mark_removed(m4);
    let exited = r.c.wait_exit(m4, Duration::from_secs(20));
    r.note("the removed member stopped", exited);
    r.step("member list without m4", 2, &["member", "list"]);
    r.step("member remove m4 again", 1, &["member", "remove", &id4]);

    // Two members added but never started: 3 of 5 started is still a quorum, 3 of 6 is not.
    let (a, b, c) = (claim_port(), claim_port(), claim_port());
    let url = |p: &PortClaim| format!("--peer-urls=http://127.0.0.1:{}", p.port);
    r.step("add unstarted m5", 1, &["member", "add", "m5", &url(&a)]);
    r.step("add unstarted m6", 1, &["member", "add", "m6", &url(&b)]);
    r.step("add m7: not enough started", 1, &["member", "add", "m7", &url(&c)]);
    r.step("writes still commit with 3 of 5", 2, &["put", "k", "v"]);
    r.out
}

/// A learner: added, started, refused as a second learner, promoted once in sync.
fn learner(flavor: Flavor) -> Transcript {
    let mut r = Run::start(flavor.clone());
    for i in 0..50 {
        etcdctl(&r.c.member_endpoint(1), &["put", &format!("k{i}"), "v"], None);
    }
    let m4 = r.c.add_member_slot();
    let url4 = r.peer_url(m4);
    r.step("member add --learner", 1, &["member", "add", "m4", "--learner", &format!("--peer-urls={url4}")]);
    let spare = claim_port();
    let url5 = format!("--peer-urls=http://127.0.0.1:{}", spare.port);
    r.step("a second learner", 1, &["member", "add", "m5", "--learner", &url5]);
    r.c.start_joining(m4);
    if let Err(e) = r.until_ok(m4, &["get", "k49", "--consistency=s"], Duration::from_secs(15)) {
        panic!("{}: the learner never caught up: {e}\n{}", flavor.label(), r.c.log_tails(15));
    }
    r.step("learner serves serializable reads", m4, &["get", "k49", "--consistency=s", "--print-value-only"]);
    r.step("member list with a learner", 2, &["member", "list"]);
    let id4 = r.id_of(m4);
    if let Err(e) = r.until_ok(1, &["member", "promote", &id4], Duration::from_secs(15)) {
        panic!("{}: promote never succeeded: {e}", flavor.label());
    }
    r.step("promote again", 1, &["member", "promote", &id4]);
    r.step("member list after promote", 3, &["member", "list"]);
    r.step("put through the promoted member", m4, &["put", "x", "y"]);
    r.out
}

/// Removing the current leader: the others elect a new one and keep serving; the old leader stops.
fn remove_leader(flavor: Flavor) -> Transcript {
    let mut r = Run::start(flavor.clone());
    let leader = r.c.wait_leader(Duration::from_secs(10));
    let other = if leader == 1 { 2 } else { 1 };
    let id = r.id_of(leader);
    r.step("member remove <leader>", other, &["member", "remove", &id]);
    r.c.mark_removed(leader);
    let exited = r.c.wait_exit(leader, Duration::from_secs(20));
    r.note("the removed leader stopped", exited);
    let ok = r.until_ok(other, &["put", "after", "1"], Duration::from_secs(10));
    r.note("writes work again within 10 s", ok.is_ok());
    // Which member led differs between runs: compare what is left, not who.
    let list = etcdctl(&r.c.member_endpoint(other), &["member", "list"], None).stdout;
    let leader_name = format!(", m{leader},");
    r.note("two members left, the leader not among them", list.lines().count() == 2 && !list.contains(&leader_name));
    r.out.iter().map(|(l, t)| (l.clone(), generic_ids(t))).collect()
}

/// `move-leader` hands leadership to the member asked for, while writes keep succeeding.
fn move_leader(flavor: Flavor) -> Transcript {
    let mut r = Run::start(flavor.clone());
    let leader = r.c.wait_leader(Duration::from_secs(10));
    let target = if leader == 3 { 2 } else { 3 };
    let target_id = r.id_of(target);
    let endpoints = r.c.endpoints();
    let writer = std::thread::spawn(move || {
        (0..30).filter(|i| !etcdctl(&endpoints, &["put", &format!("w{i}"), "v"], None).success()).count()
    });
    let all = r.c.endpoints();
    let o = etcdctl(&all, &["move-leader", &target_id], None);
    r.note("move-leader", generic_ids(&r.masker.normalize(&unpad(&format!("{}[exit {}]", o.stdout, o.code())), false)));
    r.note("the target leads", r.c.wait_leader(Duration::from_secs(5)) == target);
    r.note("failed writes during the transfer", writer.join().unwrap());
    let o = etcdctl(&all, &["move-leader", "1234"], None);
    let err: String = o.stderr.lines().filter(|l| l.starts_with("Error")).collect();
    r.note("move-leader to a stranger", format!("{err} [exit {}]", o.code()));
    r.out
}

/// After MemberAdd and then MemberRemove, members restart with an `--initial-cluster` that
/// lists the current members (an operator's updated unit file; the harness always passes the
/// current ones), not those they were founded with. etcd ignores the flag on restart; kaname
/// accepts it because it matches the latest membership in the data (the founding members are
/// accepted too, anything else is refused: `startup_errors`). Both must start and serve.
fn restart_with_current_members(flavor: Flavor) -> Transcript {
    let mut r = Run::start(flavor.clone());
    r.step("put", 1, &["put", "before", "1"]);
    let m4 = r.c.add_member_slot();
    let url4 = r.peer_url(m4);
    r.step("member add m4", 1, &["member", "add", "m4", &format!("--peer-urls={url4}")]);
    r.c.start_joining(m4);
    r.c.wait_healthy();
    r.step("m4 joined", m4, &["get", "before", "--print-value-only"]);

    // m1 was founded with m1..m3; its flags now list m1..m4.
    r.c.restart(1);
    if let Err(e) = r.c.try_wait_healthy(HEALTHY_TIMEOUT) {
        panic!("{}: m1 restarted with m1..m4 in --initial-cluster: {e}", flavor.label());
    }
    r.step("m1 after a restart listing m1..m4", 1, &["get", "before", "--print-value-only"]);
    r.step("put through m1", 1, &["put", "after-add", "1"]);

    // Right after a restart etcd refuses removals for 5 s ("unhealthy cluster"): retry.
    let id2 = r.id_of(2);
    let removed = r.until_ok(3, &["member", "remove", &id2], Duration::from_secs(30));
    r.note("member remove m2", removed.is_ok());
    r.c.mark_removed(2);
    let stopped = r.c.wait_exit(2, Duration::from_secs(20));
    r.note("m2 stopped", stopped);
    // m3 was founded with m1..m3 too; its flags now list m1, m3, m4. It stops cleanly, so
    // kaname reads its membership before opening its data for writing; m1 was SIGKILLed, so
    // its backend needed a repair and it was checked once its data was open.
    let pid3 = r.c.pid(3).expect("m3 runs");
    signal(pid3, "TERM").unwrap_or_else(|e| panic!("{e}"));
    assert!(r.c.wait_exit(3, Duration::from_secs(20)), "{}: m3 did not stop on SIGTERM", flavor.label());
    r.c.restart(3);
    if let Err(e) = r.c.try_wait_healthy(HEALTHY_TIMEOUT) {
        panic!("{}: m3 restarted with m1,m3,m4 in --initial-cluster: {e}", flavor.label());
    }
    r.step("m3 after a restart listing m1,m3,m4", 3, &["get", "after-add", "--print-value-only"]);
    r.step("put through m3", 3, &["put", "after-remove", "1"]);
    r.step("member list", 4, &["member", "list"]);
    r.out
}

#[test]
fn restart_with_current_members_matches_etcd() {
    compare(restart_with_current_members);
}

#[test]
fn move_leader_matches_etcd() {
    compare(move_leader);
}

#[test]
fn add_join_update_remove_matches_etcd() {
    compare(add_join_update_remove);
}

#[test]
fn learner_add_promote_matches_etcd() {
    compare(learner);
}

#[test]
fn remove_leader_matches_etcd() {
    compare(remove_leader);
}
