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
//! And `no_two_copies_bind_in_overlapping_terms`: pods created steadily while the leader is
//! stopped (SIGSTOP) for longer than the lease and then continued, and later killed (-9).
//! Checked: the stopped leader exits 1 ("Leaderelection lost") after it is continued, every pod
//! is bound exactly once, and each binding was written (store revision of the bound pod) while
//! the Lease, as a watch from the start recorded every version of it, was held by the copy that
//! logged the binding.
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

/// Nodes n1 and n2 with this allocatable room, registered as a kubelet would.
fn create_nodes(api: &Apiserver, cpu: &str, memory: &str, pods: &str) {
    for n in ["n1", "n2"] {
        let room = serde_json::json!({"cpu": cpu, "memory": memory, "pods": pods});
        let node = serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n},
            "status": {"allocatable": room, "capacity": room}});
        assert!(api.kubectl_stdin(&["create", "-f", "-"], Some(&node.to_string())).success());
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
    create_nodes(&api, "4", "8Gi", "110");
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

/// Every version of the scheduler's Lease, in order: (resourceVersion, holder).
type LeaseHistory = std::sync::Arc<std::sync::Mutex<Vec<(i64, String)>>>;

/// Follows the Lease from before any copy starts, with one watch that must never break (a gap
/// would make the overlap check unsound).
fn record_lease_history(rt: &tokio::runtime::Runtime, client: kube::Client, history: LeaseHistory) {
    use futures::StreamExt;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Api, WatchEvent, WatchParams};
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    rt.spawn(async move {
        let params = WatchParams::default().fields("metadata.name=kube-scheduler").timeout(290);
        let mut events = leases.watch(&params, "0").await.expect("watch the lease").boxed();
        while let Some(e) = events.next().await {
            match e.expect("lease watch") {
                WatchEvent::Added(l) | WatchEvent::Modified(l) => {
                    let rv = l.metadata.resource_version.unwrap().parse().unwrap();
                    let holder = l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
                    history.lock().unwrap().push((rv, holder));
                }
                WatchEvent::Bookmark(_) => {}
                other => panic!("unexpected lease watch event {other:?}"),
            }
        }
    });
}

/// The pods a copy logged as bound ("Successfully bound pod to node pod=default/x ...").
fn logged_bindings(c: &Copy) -> Vec<String> {
    let text = std::fs::read_to_string(&c.log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("Successfully bound pod to node"))
        .filter_map(|l| l.split("pod=default/").nth(1)?.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn no_two_copies_bind_in_overlapping_terms() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams, PostParams};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let _g = serial();
    let store = Cluster::start(kaname!(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    create_nodes(&api, "100", "100Gi", "1000");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = api.kube_client(&rt);
    let history: LeaseHistory = Default::default();
    record_lease_history(&rt, client.clone(), history.clone());

    let mut copies: Vec<Copy> = (0..3).map(|n| Copy::start(&api, n)).collect();
    wait("a copy holds the lease", Duration::from_secs(20), || !holder(&api).is_empty());
    let leader = |copies: &[Copy]| {
        let h = holder(&api);
        copies.iter().position(|c| c.identity().as_deref() == Some(h.as_str()))
    };

    // Pods, one every 100 ms, for the whole run.
    let creating = Arc::new(AtomicBool::new(true));
    let creator = {
        let (pods, creating) = (Api::<Pod>::namespaced(client.clone(), "default"), creating.clone());
        rt.spawn(async move {
            let mut n = 0;
            while creating.load(Ordering::Relaxed) {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("p-{n}")},
                    "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
                }))
                .unwrap();
                pods.create(&PostParams::default(), &pod).await.expect("create pod");
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_secs(2));

    // SIGSTOP the leader for longer than its lease; a standby takes over; SIGCONT: it must find
    // out and exit 1 without binding anything in the other's term.
    let stopped = leader(&copies).expect("the holder is a copy");
    let stopped_id = copies[stopped].identity().unwrap();
    signal(copies[stopped].pid(), "STOP").unwrap();
    wait("a standby holds the lease", Duration::from_secs(20), || {
        let h = holder(&api);
        !h.is_empty() && h != stopped_id
    });
    std::thread::sleep(Duration::from_secs(2));
    signal(copies[stopped].pid(), "CONT").unwrap();
    let mut child = copies[stopped].child.take().unwrap();
    let exited = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(exited.elapsed() < Duration::from_secs(15), "the continued ex-leader did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1), "the continued ex-leader's exit status");
    assert!(std::fs::read_to_string(&copies[stopped].log).unwrap().contains("Leaderelection lost"));
    let stopped_copy = copies.remove(stopped);
    copies.push(Copy::start(&api, 3));
    std::thread::sleep(Duration::from_secs(2));

    // kill -9 of the current leader.
    let killed = leader(&copies).expect("the holder is a copy");
    let mut killed_copy = copies.remove(killed);
    kill_and_reap(&mut killed_copy.child.take().unwrap());
    std::thread::sleep(Duration::from_secs(6));

    creating.store(false, Ordering::Relaxed);
    let created = rt.block_on(creator).unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut listed = Vec::new();
    wait("every pod bound", Duration::from_secs(30), || {
        listed = rt.block_on(pods.list(&ListParams::default())).unwrap().items;
        listed.iter().all(|p| p.spec.as_ref().unwrap().node_name.is_some())
    });
    assert_eq!(listed.len(), created);

    // Who bound what: each pod exactly once, by one copy.
    let mut binder = std::collections::HashMap::new();
    for c in copies.iter().chain([&stopped_copy, &killed_copy]) {
        let id = c.identity().unwrap();
        for pod in logged_bindings(c) {
            if let Some(other) = binder.insert(pod.clone(), id.clone()) {
                panic!("pod {pod} bound by both {other} and {id}");
            }
        }
    }
    let history = history.lock().unwrap().clone();
    assert!(history.len() >= 3, "lease history: {history:?}");
    let holders: std::collections::BTreeSet<_> =
        history.iter().map(|(_, h)| h.as_str()).filter(|h| !h.is_empty()).collect();
    assert!(holders.len() >= 3, "three terms expected (first, after SIGSTOP, after kill): {history:?}");
    let mut per_holder = std::collections::BTreeMap::<String, usize>::new();
    for p in &listed {
        let name = p.metadata.name.clone().unwrap();
        // Nothing writes a pod after its binding here: its resourceVersion is the binding's
        // store revision.
        let bound_at: i64 = p.metadata.resource_version.clone().unwrap().parse().unwrap();
        let by = binder.get(&name).unwrap_or_else(|| panic!("no copy logged binding {name}"));
        let held = history.iter().take_while(|(rv, _)| *rv < bound_at).last();
        let held_by = held.map(|(_, h)| h.as_str()).unwrap_or("");
        assert_eq!(held_by, by, "{name} bound at revision {bound_at} by {by} while the lease was {held:?}");
        *per_holder.entry(by.clone()).or_default() += 1;
    }
    println!("{created} pods; bindings per term holder: {per_holder:?}; lease versions seen: {}", history.len());
    assert!(per_holder.len() >= 3, "bindings in at least three terms: {per_holder:?}");
}
