//! `kaname scheduler --config` as a process: a KubeSchedulerConfiguration with two profiles,
//! its own Lease name and its kubeconfig in `clientConnection`, on an API server over
//! `kaname etcd`, with nodes registered through the API (the test plays the kubelets).
//!
//! Injected: the file, then pods for each profile and one for a profile nobody serves.
//! Checked: the Lease named in the file is taken (not `kube-scheduler`), pods of both profiles
//! are bound with events from their own profile (events.k8s.io/v1, read through core/v1), the unserved pod stays pending, a pod with
//! scheduling gates waits until they are removed; a flag given
//! on the command line (`--leader-elect-resource-name`) overrides the file; a file with an
//! unknown field makes the scheduler exit 1 with upstream's strict-decoding message.
//!
//! Run: `cargo test -p kaname --test scheduler_config`. Needs kubectl.

#[path = "support/scheduling.rs"]
mod scheduling;

use kaname_testkit::*;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use scheduling::*;

fn start(api: &Apiserver, config: &std::path::Path, extra: &[&str], n: usize) -> (Child, std::path::PathBuf) {
    let log = api.dir.path().join(format!("scheduler-{n}.log"));
    let mut cmd = Command::new(kaname_bin!());
    cmd.arg("scheduler").arg(format!("--config={}", config.display())).args(["--secure-port=0"]).args(extra);
    (spawn_logged(cmd, &log, "test", "scheduler", false).expect("start kaname scheduler"), log)
}

fn pod(name: &str, scheduler: &str) -> String {
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"schedulerName": scheduler, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}})
    .to_string()
}

fn lease_holder(api: &Apiserver, name: &str) -> String {
    api.kubectl(&["-n", "kube-system", "get", "lease", name, "-o", "jsonpath={.spec.holderIdentity}"]).stdout
}

#[test]
fn profiles_lease_and_precedence_from_the_file() {
    let _g = serial();
    let store = Cluster::start(kaname!(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    for n in ["n1", "n2"] {
        create(&api, &node_manifest(n, "4", "8Gi", serde_json::json!({}), serde_json::json!([])));
    }
    let file = api.dir.path().join("scheduler.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: {}
leaderElection:
  leaseDuration: 3s
  renewDeadline: 2s
  retryPeriod: 500ms
  resourceName: from-file
percentageOfNodesToScore: 50
profiles:
- schedulerName: default-scheduler
- schedulerName: packed
  plugins:
    score:
      disabled:
      - name: '*'
      enabled:
      - name: NodeResourcesFit
        weight: 5
",
            api.kubeconfig.display()
        ),
    )
    .unwrap();

    let (mut child, log) = start(&api, &file, &[], 0);
    wait_until("the lease named in the file is held", Duration::from_secs(30), || {
        !lease_holder(&api, "from-file").is_empty()
    });
    assert!(api.kubectl(&["-n", "kube-system", "get", "lease", "kube-scheduler"]).stdout.is_empty());
    create(&api, &pod("a", "default-scheduler"));
    create(&api, &pod("b", "packed"));
    create(&api, &pod("c", "nobody"));
    let gated = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gated"},
        "spec": {"schedulingGates": [{"name": "example.com/wait"}], "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}});
    create(&api, &gated.to_string());
    for p in ["a", "b"] {
        wait_bound(&api, p);
    }
    let events = json(&api.ok(&["get", "events", "-o", "json"]));
    let source = |pod: &str| {
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["reason"] == "Scheduled" && e["involvedObject"]["name"] == pod)
            .map(|e| e["reportingComponent"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(source("a").as_deref(), Some("default-scheduler"));
    assert_eq!(source("b").as_deref(), Some("packed"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node_of(&api, "c"), "", "a pod of a profile nobody serves was bound");
    assert_eq!(node_of(&api, "gated"), "", "a gated pod was bound");
    api.ok(&["patch", "pod", "gated", "--type=json", "-p", r#"[{"op": "remove", "path": "/spec/schedulingGates"}]"#]);
    wait_bound(&api, "gated");
    kill_and_reap(&mut child);
    assert!(std::fs::read_to_string(&log).unwrap().contains("Successfully bound pod to node"));

    // An explicit flag wins over the file.
    let (mut child, _) = start(&api, &file, &["--leader-elect-resource-name=from-flag"], 1);
    wait_until("the lease named by the flag is held", Duration::from_secs(30), || {
        !lease_holder(&api, "from-flag").is_empty()
    });
    kill_and_reap(&mut child);

    // An unknown field: refused at start, with upstream's message.
    let bad = api.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- schedulerName: x\n  foo: 1\n",
    )
    .unwrap();
    let (mut child, log) = start(&api, &bad, &[], 2);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "a bad config file did not stop the scheduler");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("strict decoding error: unknown field \"profiles[0].foo\""), "{text}");
}
