//! `kaname bench` drives real etcd and kaname with the same client code: every workload runs
//! against both and reports without errors. (It measures nothing here; the numbers come from
//! bench/compare.sh on a quiet machine.)

use kaname_testkit::*;
use std::process::Command;

fn bench(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kaname"))
        .arg("bench")
        .args(args)
        .args(["--endpoints", endpoint])
        .output()
        .expect("run kaname bench");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "kaname bench {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn every_workload(flavor: Flavor) {
    let c = Cluster::start(flavor.clone(), 1);
    let ep = c.member_endpoint(1);
    let workloads: [&[&str]; 6] = [
        &["put", "--clients", "4", "--total", "200", "--val-size", "64", "--key-space-size", "100"],
        &["txn-put", "--clients", "2", "--total", "100", "--txn-ops", "4", "--key-space-size", "100"],
        &["range", "k", "--clients", "2", "--total", "100"],
        &["range", "k", "--clients", "2", "--total", "100", "--consistency", "s"],
        &["lease-keepalive", "--clients", "2", "--total", "100"],
        &["watch", "--streams", "2", "--watchers-per-stream", "5", "--put-total", "20", "--put-rate", "200"],
    ];
    for args in workloads {
        let report = bench(&ep, args);
        assert!(report.contains("Requests/sec:"), "{args:?}: {report}");
        assert!(report.contains("Response time histogram:") && report.contains("99.9% in"), "{args:?}: {report}");
        assert!(!report.contains("Errors:"), "{}: {args:?} had errors:\n{report}", flavor.label());
    }
}

#[test]
fn every_workload_runs_against_etcd() {
    every_workload(Flavor::etcd());
}

#[test]
fn every_workload_runs_against_kaname() {
    every_workload(kaname!());
}
