//! `kaname scheduler` as processes: three copies with short election settings (lease 3 s,
//! renew deadline 2 s, retry 500 ms) on one API server over `kaname etcd`, nodes registered
//! through the API (the test plays the kubelets).
//!
//! Injected, in order, and checked after each:
//! - start: one copy holds `kube-system/kube-scheduler`, pods get bound, `/healthz` answers
//!   `ok` on every copy and `/metrics` shows `leader_election_master_status` 1 on the leader
//!   only;
//! - `kill -9` of the leader: another copy binds a new pod within lease-duration +
//!   retry-period (plus slack for a loaded machine);
//! - SIGTERM to the new leader: it exits 0 having released the Lease, and a standby holds it
//!   within a second.
//!
//! Run: `cargo test -p kaname --test scheduler_ha`. Needs kubectl and curl.

use kaname_testkit::*;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Copy {
    child: Option<Child>,
    port: PortClaim,
    log: PathBuf,
}

impl Copy {
    fn start(api: &Apiserver, n: usize) -> Copy {
        let port = claim_port();
        let log = api.dir.path().join(format!("scheduler-{n}.log"));
        let mut cmd = Command::new(kaname_bin!());
        cmd.arg("scheduler")
            .arg(format!("--kubeconfig={}", api.kubeconfig.display()))
            .args(["--bind-address=127.0.0.1", &format!("--secure-port={}", port.port)])
            .args([
                "--leader-elect-lease-duration=3s",
                "--leader-elect-renew-deadline=2s",
                "--leader-elect-retry-period=500ms",
            ]);
        let child = spawn_logged(cmd, &log, "test", &format!("scheduler {n}"), false).expect("start kaname scheduler");
        Copy { child: Some(child), port, log }
    }

    /// The identity it logged (`<hostname>_<uuid>`).
    fn identity(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let at = text.find("identity=")?;
        Some(text[at + "identity=".len()..].split_whitespace().next()?.to_string())
    }

    fn get(&self, path: &str) -> String {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "5"])
            .arg(format!("https://127.0.0.1:{}{path}", self.port.port))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }
}

fn holder(api: &Apiserver) -> String {
    api.kubectl(&["-n", "kube-system", "get", "lease", "kube-scheduler", "-o", "jsonpath={.spec.holderIdentity}"])
        .stdout
}

fn create_pod(api: &Apiserver, name: &str) {
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
            "spec": {{"containers": [{{"name": "c", "image": "registry.k8s.io/pause:3.10", "resources": {{"requests": {{"cpu": "100m"}}}}}}]}}}}"#
    );
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(&manifest));
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
}

fn bound(api: &Apiserver, name: &str) -> bool {
    !api.ok(&["get", "pod", name, "-o", "jsonpath={.spec.nodeName}"]).is_empty()
}

fn wait(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
fn one_active_copy_failover_and_release() {
    let _g = serial();
    let store = Cluster::start(kaname!(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    for n in ["n1", "n2"] {
        let manifest = format!(
            r#"{{"apiVersion": "v1", "kind": "Node", "metadata": {{"name": "{n}"}},
                "status": {{"allocatable": {{"cpu": "4", "memory": "8Gi", "pods": "110"}}, "capacity": {{"cpu": "4", "memory": "8Gi", "pods": "110"}}}}}}"#
        );
        assert!(api.kubectl_stdin(&["create", "-f", "-"], Some(&manifest)).success());
    }
    let mut copies: Vec<Copy> = (0..3).map(|n| Copy::start(&api, n)).collect();
    wait("every copy logged its identity", Duration::from_secs(20), || copies.iter().all(|c| c.identity().is_some()));
    wait("a copy holds the lease", Duration::from_secs(20), || !holder(&api).is_empty());
    let leader_of = |copies: &[Copy], h: &str| copies.iter().position(|c| c.identity().as_deref() == Some(h));
    let first = leader_of(&copies, &holder(&api)).expect("the holder is one of the copies");

    create_pod(&api, "a");
    wait("pod a bound", Duration::from_secs(20), || bound(&api, "a"));
    for (i, c) in copies.iter().enumerate() {
        assert_eq!(c.get("/healthz"), "ok", "copy {i}");
        let metrics = c.get("/metrics");
        let want = format!("leader_election_master_status{{name=\"kube-scheduler\"}} {}", i32::from(i == first));
        assert!(metrics.contains(&want), "copy {i} (leader {first}): {metrics}");
    }

    // kill -9 of the leader: a standby binds new pods.
    let killed = Instant::now();
    drop(copies.remove(first));
    create_pod(&api, "b");
    wait("pod b bound after the leader was killed", Duration::from_secs(20), || bound(&api, "b"));
    let failover = killed.elapsed();
    println!("failover (kill -9 → next pod bound): {failover:?}");
    assert!(failover < Duration::from_millis(3500) + Duration::from_secs(3), "failover took {failover:?}");
    let second = leader_of(&copies, &holder(&api)).expect("a remaining copy holds the lease");

    // SIGTERM: released, exit 0, a standby holds the lease within a second.
    let pid = copies[second].pid();
    let terminated = Instant::now();
    signal(pid, "TERM").unwrap();
    let mut child = copies[second].child.take().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let other = copies[1 - second].identity().unwrap();
    let handover = wait("the standby holds the lease", Duration::from_secs(10), || holder(&api) == other);
    println!("release handover (SIGTERM → standby holds the lease, polled): {:?}", terminated.elapsed());
    assert!(
        terminated.elapsed() < Duration::from_secs(2),
        "handover took {:?} ({handover:?} after exit)",
        terminated.elapsed()
    );
    create_pod(&api, "c");
    wait("pod c bound by the last copy", Duration::from_secs(20), || bound(&api, "c"));
}
