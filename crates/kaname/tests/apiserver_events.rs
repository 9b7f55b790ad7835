//! `events.k8s.io/v1` beside core/v1 Events through the real kubectl (1.33), on real etcd
//! 3.4 and on `kaname etcd`: one set of objects (kept once, at `/registry/events/`) read and
//! written through both versions, with each version's field names, upstream's validation of
//! events.k8s.io creates, discovery, field selectors, tables, and `kubectl events`.
//!
//! Run: `cargo test -p kaname --test apiserver_events`. Needs scripts/install-test-deps.sh
//! (etcd) and kubectl.

use kaname_testkit::*;

const V1_EVENT: &str = r#"
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: web.1, namespace: default}
eventTime: "2026-01-01T00:00:00.000000Z"
reportingController: kaname.io/scheduler
reportingInstance: scheduler-1
action: Binding
reason: Scheduled
type: Normal
regarding: {apiVersion: v1, kind: Pod, namespace: default, name: web}
related: {apiVersion: v1, kind: Node, name: node-a}
note: Successfully assigned default/web to node-a
"#;

const CORE_EVENT: &str = r#"
apiVersion: v1
kind: Event
metadata: {name: lease.1, namespace: default}
involvedObject: {apiVersion: coordination.k8s.io/v1, kind: Lease, namespace: default, name: leader}
reason: LeaderElection
message: node-a became leader
type: Normal
source: {component: kaname-scheduler, host: node-a}
count: 3
firstTimestamp: "2026-01-01T00:00:00Z"
lastTimestamp: "2026-01-01T00:05:00Z"
"#;

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn both_versions(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));

    // Discovery: the group, after apps as upstream lists it, and its resource.
    let groups = json(&api.ok(&["get", "--raw", "/apis"]));
    let names: Vec<&str> = groups["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(&names[..2], ["apps", "events.k8s.io"], "{names:?}");
    // explain finds the group's schema in both documents.
    for output in ["plaintext", "plaintext-openapiv2"] {
        let explained = api.ok(&["explain", "events.note", "--api-version=events.k8s.io/v1", "--output", output]);
        // v3's form names the group, v2's the group-version.
        assert!(explained.contains("events.k8s.io") && explained.contains("KIND:"), "{explained}");
        assert!(explained.contains("note <string>"), "{explained}");
    }
    let resources = api.ok(&["api-resources", "--api-group=events.k8s.io"]);
    assert_eq!(words(resources.lines().nth(1).unwrap()), ["events", "ev", "events.k8s.io/v1", "true", "Event"]);

    for (file, yaml) in [("v1.yaml", V1_EVENT), ("core.yaml", CORE_EVENT)] {
        let out = api.kubectl_stdin(&["create", "-f", "-"], Some(yaml));
        assert!(out.success(), "{file}: {}{}", out.stdout, out.stderr);
    }
    // Kept once, in the core form.
    let keys = etcdctl(&store.member_endpoint(1), &["get", "--prefix", "--keys-only", "/registry/events/"], None);
    assert_eq!(
        keys.stdout.split_whitespace().collect::<Vec<_>>(),
        ["/registry/events/default/lease.1", "/registry/events/default/web.1"]
    );

    // The events.k8s.io event as core/v1 sees it.
    let core = json(&api.ok(&["get", "events", "web.1", "-o", "json"]));
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "Successfully assigned default/web to node-a");
    assert_eq!(core["involvedObject"]["name"], "web");
    assert_eq!(core["reportingComponent"], "kaname.io/scheduler");
    assert_eq!((core["reportingInstance"].as_str(), core["action"].as_str()), (Some("scheduler-1"), Some("Binding")));
    assert_eq!(core["related"]["kind"], "Node");
    assert_eq!(core["eventTime"], "2026-01-01T00:00:00.000000Z");
    // The core event as events.k8s.io/v1 sees it.
    let v1 = json(&api.ok(&["get", "events.events.k8s.io", "lease.1", "-o", "json"]));
    assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
    assert_eq!(v1["note"], "node-a became leader");
    assert_eq!(v1["regarding"]["kind"], "Lease");
    assert_eq!(v1["deprecatedSource"], json(r#"{"component":"kaname-scheduler","host":"node-a"}"#));
    assert_eq!(v1["deprecatedCount"], 3);
    assert_eq!(v1["deprecatedFirstTimestamp"], "2026-01-01T00:00:00Z");
    assert_eq!(v1["deprecatedLastTimestamp"], "2026-01-01T00:05:00Z");
    assert!(v1.get("message").is_none() && v1.get("involvedObject").is_none(), "{v1}");
    // One object: the same uid and resourceVersion through both.
    let again = json(&api.ok(&["get", "events.events.k8s.io", "web.1", "-o", "json"]));
    assert_eq!(again["metadata"]["uid"], core["metadata"]["uid"]);
    assert_eq!(again["metadata"]["resourceVersion"], core["metadata"]["resourceVersion"]);

    // Tables: the same columns and rows through both versions.
    let table = api.ok(&["get", "events"]);
    assert_eq!(table, api.ok(&["get", "events.events.k8s.io"]));
    let rows: Vec<Vec<&str>> = table.lines().map(words).collect();
    assert_eq!(rows[0], ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], "{table}");
    assert!(table.contains("Normal   LeaderElection   lease/leader   node-a became leader"), "{table}");
    assert!(
        table.contains("Normal   Scheduled        pod/web        Successfully assigned default/web to node-a"),
        "{table}"
    );
    let events = api.ok(&["events"]);
    assert!(events.starts_with("LAST SEEN"), "{events}");
    assert!(events.contains("Scheduled") && events.contains("LeaderElection"), "{events}");
    let for_pod = api.ok(&["events", "--for", "pod/web"]);
    assert!(for_pod.contains("Scheduled") && !for_pod.contains("LeaderElection"), "{for_pod}");

    // Field selectors in each version's names.
    let sel = |args: &[&str]| api.ok(&[&["get", "-o", "name"], args].concat());
    assert_eq!(
        sel(&["events.events.k8s.io", "--field-selector", "regarding.kind=Lease"]),
        "event.events.k8s.io/lease.1\n"
    );
    assert_eq!(
        sel(&["events.events.k8s.io", "--field-selector", "reportingController=kaname.io/scheduler"]),
        "event.events.k8s.io/web.1\n"
    );
    assert_eq!(sel(&["events", "--field-selector", "involvedObject.kind=Pod"]), "event/web.1\n");
    let err = api.fails(&["get", "events.events.k8s.io", "--field-selector", "involvedObject.kind=Pod"]);
    assert!(err.contains("involvedObject.kind"), "{err}");

    // Upstream's validation of events.k8s.io creates, with the core field names.
    let bad =
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: bad}\nreason: R\ntype: Info\ndeprecatedCount: 2\n";
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(bad));
    assert_eq!(
        out.stderr,
        "The Event \"bad\" is invalid: \n* eventTime: Required value\n* type: Invalid value: \"\": has invalid value: Info\n* count: Invalid value: \"\": needs to be unset\n"
    );
    let missing = V1_EVENT
        .replace("web.1", "web.2")
        .replace("reportingController: kaname.io/scheduler\n", "")
        .replace("action: Binding\n", "");
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(&missing));
    assert!(
        out.stderr.starts_with("The Event \"web.2\" is invalid: \n* reportingController: Required value\n"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("* action: Required value\n"), "{}", out.stderr);
    let long =
        V1_EVENT.replace("web.1", "web.3").replace("Successfully assigned default/web to node-a", &"n".repeat(1025));
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(&long));
    assert_eq!(
        out.stderr,
        "The Event \"web.3\" is invalid: message: Invalid value: \"\": can have at most 1024 characters\n"
    );
    // The core version keeps its lenient rules (no eventTime, deprecated fields allowed), but
    // not an event outside its object's namespace.
    let elsewhere = CORE_EVENT
        .replace("lease.1", "lease.2")
        .replace("namespace: default, name: leader", "namespace: other, name: leader");
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(&elsewhere));
    assert_eq!(out.stderr, "The Event \"lease.2\" is invalid: involvedObject.namespace: Invalid value: \"other\": does not match event.namespace\n");

    // Updates: through events.k8s.io what happened is fixed; a series may be added.
    let err = api.fails(&["patch", "events.events.k8s.io", "web.1", "--type=merge", "-p", r#"{"note":"changed"}"#]);
    assert!(err.contains("message: Invalid value: \"changed\": field is immutable"), "{err}");
    api.ok(&[
        "patch",
        "events.events.k8s.io",
        "web.1",
        "--type=merge",
        "-p",
        r#"{"series":{"count":2,"lastObservedTime":"2026-01-01T00:01:00.000000Z"}}"#,
    ]);
    assert_eq!(api.ok(&["get", "events", "web.1", "-o", "jsonpath={.series.count}"]), "2");
    // Through core/v1 the legacy rules only.
    api.ok(&["patch", "events", "lease.1", "--type=merge", "-p", r#"{"count":4}"#]);
    assert_eq!(api.ok(&["get", "ev.events.k8s.io", "lease.1", "-o", "jsonpath={.deprecatedCount}"]), "4");

    // A delete through one version is gone from both.
    assert_eq!(api.ok(&["delete", "events.events.k8s.io", "lease.1"]), "event.events.k8s.io \"lease.1\" deleted\n");
    assert_eq!(
        api.fails(&["get", "events", "lease.1"]),
        "Error from server (NotFound): events \"lease.1\" not found\n"
    );
    assert_eq!(
        api.fails(&["get", "events.events.k8s.io", "lease.1"]),
        "Error from server (NotFound): events.events.k8s.io \"lease.1\" not found\n"
    );
}

#[test]
fn both_versions_on_etcd() {
    both_versions(Flavor::etcd());
}

#[test]
fn both_versions_on_kaname() {
    both_versions(kaname!());
}

/// A watch through events.k8s.io sees writes made through core/v1, in its own form.
fn watch(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    let w = std::process::Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg(format!("--kubeconfig={}", api.kubeconfig.display()))
        .args(["get", "events.events.k8s.io", "-w", "-o", "json", "--request-timeout=8s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Give the watch time to start before the write.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(CORE_EVENT));
    assert!(out.success(), "{}", out.stderr);
    let out = w.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"apiVersion\": \"events.k8s.io/v1\""), "{text}");
    assert!(text.contains("\"note\": \"node-a became leader\""), "{text}");
}

#[test]
fn watch_on_etcd() {
    watch(Flavor::etcd());
}

#[test]
fn watch_on_kaname() {
    watch(kaname!());
}
