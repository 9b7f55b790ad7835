//! A member cut off from the majority, for both flavours: the `*_etcd` variant proves the
//! test against real etcd 3.4, the `*_kaname` variant judges kaname.
//! Run one group: `cargo test -p kaname --test partition _etcd` (or `_kaname`).
//!
//! The cut is made by SIGSTOPping the two other members of a 3-member cluster (their sockets
//! stay open, they just never answer), once with the leader as the lone survivor and once
//! with a follower. On the survivor, a put and a linearizable get must fail, while a
//! serializable get still answers from its local copy; after SIGCONT the cluster takes
//! writes again.

use kaname_testkit::*;

use std::thread;
use std::time::{Duration, Instant};

/// etcdctl's `--command-timeout` for requests that are expected to hang on the minority.
const MINORITY_TIMEOUT: &str = "3s";
/// How long the cluster gets to take writes again once every member runs.
const RECOVERY: Duration = Duration::from_secs(30);

fn minority(flavor: Flavor) {
    let _g = serial();
    let c = Cluster::start(flavor.clone(), 3);
    let leader = c.wait_leader(Duration::from_secs(30));
    isolate_and_check(&c, leader, "the leader", "partition/leader");

    let leader = c.wait_leader(Duration::from_secs(30));
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    isolate_and_check(&c, follower, "a follower", "partition/follower");
}

/// Leaves member `survivor` alone with the two others stopped and checks what it answers.
fn isolate_and_check(c: &Cluster, survivor: usize, role: &str, key: &str) {
    let label = format!("{} m{survivor} ({role})", c.flavor.label());
    let ep = c.member_endpoint(survivor);
    let put = etcdctl(&ep, &["put", key, "before"], None);
    assert!(put.success(), "{label}: put before the partition failed: {}{}", put.stdout, put.stderr);

    let others: Vec<usize> = (1..=c.size()).filter(|&i| i != survivor).collect();
    let frozen = Frozen::stop(c, &others);
    eprintln!("{label}: stopped m{} and m{}", others[0], others[1]);

    let t = Instant::now();
    let put = etcdctl_timeout(&ep, &["put", key, "during"], None, MINORITY_TIMEOUT);
    eprintln!("{label}: put on the minority: exit {} after {:?}: {}", put.code(), t.elapsed(), put.stderr.trim());
    assert!(
        !put.success(),
        "{label}: a put on a member cut off from the majority succeeded: {}\n{}",
        put.stdout.trim(),
        c.log_tails(30)
    );

    let t = Instant::now();
    let get = etcdctl_timeout(&ep, &["get", key], None, MINORITY_TIMEOUT);
    eprintln!(
        "{label}: linearizable get on the minority: exit {} after {:?}: {}",
        get.code(),
        t.elapsed(),
        get.stderr.trim()
    );
    assert!(
        !get.success(),
        "{label}: a linearizable get on a member cut off from the majority answered: {:?}\n{}",
        get.stdout,
        c.log_tails(30)
    );

    let sget = etcdctl_timeout(&ep, &["get", key, "--consistency=s"], None, MINORITY_TIMEOUT);
    assert!(
        sget.success(),
        "{label}: a serializable get on the minority failed: {}{}\n{}",
        sget.stdout,
        sget.stderr,
        c.log_tails(30)
    );
    assert_eq!(sget.stdout, format!("{key}\nbefore\n"), "{label}: serializable get on the minority");

    frozen.resume();
    eprintln!("{label}: resumed m{} and m{}", others[0], others[1]);

    // The put that timed out may or may not have been committed; a new one must succeed.
    let deadline = Instant::now() + RECOVERY;
    let resumed = Instant::now();
    loop {
        let put = etcdctl_timeout(&ep, &["put", key, "after"], None, MINORITY_TIMEOUT);
        if put.success() {
            eprintln!("{label}: put succeeded {:?} after resuming", resumed.elapsed());
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "{label}: no put succeeded within {RECOVERY:?} of resuming the others; last: {}\n{}",
                put.stderr.trim(),
                c.log_tails(30)
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    for i in 1..=c.size() {
        let deadline = Instant::now() + RECOVERY;
        loop {
            let get = etcdctl_timeout(&c.member_endpoint(i), &["get", key], None, MINORITY_TIMEOUT);
            if get.success() && get.stdout == format!("{key}\nafter\n") {
                break;
            }
            if Instant::now() > deadline {
                panic!("{label}: linearizable get on m{i} after recovery: {:?} {}", get.stdout, get.stderr.trim());
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
    c.wait_healthy();
}

#[test]
fn minority_member_etcd() {
    minority(Flavor::etcd());
}

#[test]
fn minority_member_kaname() {
    minority(kaname!());
}
