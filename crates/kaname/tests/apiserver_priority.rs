//! The Priority admission plugin and the built-in priority classes, through the real kubectl
//! (1.33), on real etcd 3.4 and on `kaname etcd`: pods get their priority and preemption
//! policy from their class (or the global default, or 0), with upstream's refusals; the
//! `system-` classes exist as soon as the API server is ready, also when several start
//! together on one store.
//!
//! Run: `cargo test -p kaname --test apiserver_priority`. Needs scripts/install-test-deps.sh
//! (etcd) and kubectl.

use kaname_testkit::*;

/// `kubectl create -f -` of `yaml`.
fn create(api: &Apiserver, yaml: &str) -> Output {
    api.kubectl_stdin(&["create", "-f", "-"], Some(yaml))
}

fn pod(name: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: \"nginx:1.27\"}}]\n{spec_extra}"
    )
}

/// (priorityClassName, priority, preemptionPolicy) of a pod, as kubectl reads them.
fn priority(api: &Apiserver, name: &str) -> String {
    api.ok(&["get", "pod", name, "-o", "jsonpath={.spec.priorityClassName}|{.spec.priority}|{.spec.preemptionPolicy}"])
}

fn admission(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));

    // The built-in classes are there once the server is ready, as upstream's post-start hook
    // makes them (written by kube-apiserver).
    let table = api.ok(&["get", "pc"]);
    let rows: Vec<Vec<&str>> = table.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!((rows[0][0], rows[0][1], rows[0][2]), ("system-cluster-critical", "2000000000", "false"));
    assert_eq!((rows[1][0], rows[1][1], rows[1][4]), ("system-node-critical", "2000001000", "PreemptLowerPriority"));
    let node = json(&api.ok(&["get", "pc", "system-node-critical", "-o", "json", "--show-managed-fields"]));
    assert_eq!(node["description"], "Used for system critical pods that must not be moved from their current node.");
    assert_eq!(node["metadata"]["managedFields"][0]["manager"], "kube-apiserver");
    let described = api.ok(&["describe", "pc", "system-cluster-critical"]);
    assert!(
        described.contains("Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
        "{described}"
    );

    // No class and no default class: priority 0, PreemptLowerPriority, no class name.
    assert!(create(&api, &pod("plain", "")).success());
    assert_eq!(priority(&api, "plain"), "|0|PreemptLowerPriority");
    // A named class gives its value and policy; a system class is usable in any namespace.
    api.ok(&["create", "priorityclass", "batch", "--value=1000", "--preemption-policy=Never"]);
    assert!(create(&api, &pod("batch", "  priorityClassName: batch\n")).success());
    assert_eq!(priority(&api, "batch"), "batch|1000|Never");
    assert!(create(&api, &pod("critical", "  priorityClassName: system-node-critical\n")).success());
    assert_eq!(priority(&api, "critical"), "system-node-critical|2000001000|PreemptLowerPriority");

    // Upstream's refusals, word for word.
    let out = create(&api, &pod("lost", "  priorityClassName: foo\n"));
    assert_eq!(
        out.stderr,
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"lost\" is forbidden: no PriorityClass with name foo was found\n"
    );
    let out = create(&api, &pod("greedy", "  priorityClassName: batch\n  priority: 5\n"));
    assert_eq!(
        out.stderr,
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"greedy\" is forbidden: the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name\n"
    );
    let out = create(&api, &pod("pushy", "  preemptionPolicy: PreemptLowerPriority\n  priorityClassName: batch\n"));
    assert!(
        out.stderr.contains("pods \"pushy\" is forbidden: the string value of PreemptionPolicy (PreemptLowerPriority) must not be provided in pod spec; priority admission controller computed Never from the given PriorityClass name"),
        "{}",
        out.stderr
    );
    // The value the class gives may be repeated.
    assert!(create(&api, &pod("same", "  priorityClassName: batch\n  priority: 1000\n")).success());
    // A server-side dry run is admitted the same way.
    let dry = api.kubectl_stdin(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(&pod("dry", "  priorityClassName: batch\n")),
    );
    assert_eq!(json(&dry.stdout)["spec"]["priority"], 1000, "{}", dry.stderr);

    // The global default class names itself into pods without a class; only one may exist.
    let default = "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: everyone}\nvalue: 50\nglobalDefault: true\n";
    assert!(create(&api, default).success());
    assert!(create(&api, &pod("defaulted", "")).success());
    assert_eq!(priority(&api, "defaulted"), "everyone|50|PreemptLowerPriority");
    let second = default.replace("everyone", "second");
    assert_eq!(
        create(&api, &second).stderr,
        "Error from server (Forbidden): error when creating \"STDIN\": priorityclasses.scheduling.k8s.io \"second\" is forbidden: PriorityClass everyone is already marked as default. Only one default can exist\n"
    );
    let err = api.fails(&["patch", "pc", "batch", "--type=merge", "-p", r#"{"globalDefault":true}"#]);
    assert!(err.contains("PriorityClass everyone is already marked as default. Only one default can exist"), "{err}");
    // The default itself may be updated.
    api.ok(&["label", "pc", "everyone", "team=a"]);

    // A replace from a manifest without the computed fields keeps them (the pod's update
    // rules would refuse their removal); the image may change.
    let replaced = api.kubectl_stdin(
        &["replace", "-f", "-"],
        Some(&pod("batch", "  priorityClassName: batch\n").replace("nginx:1.27", "nginx:1.28")),
    );
    assert!(replaced.success(), "{}", replaced.stderr);
    assert_eq!(priority(&api, "batch"), "batch|1000|Never");
    assert_eq!(api.ok(&["get", "pod", "batch", "-o", "jsonpath={.spec.containers[0].image}"]), "nginx:1.28");
    api.ok(&["label", "pod", "plain", "x=y"]);
    assert_eq!(priority(&api, "plain"), "|0|PreemptLowerPriority");
}

#[test]
fn admission_on_etcd() {
    admission(Flavor::etcd());
}

#[test]
fn admission_on_kaname() {
    admission(kaname!());
}

/// Three API servers started at once on an empty store race to create the built-in classes:
/// all of them become ready (a lost race is an AlreadyExists, as good as a create) and see
/// both classes.
fn concurrent_bootstrap(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let endpoint = store.member_endpoint(1);
    let servers: Vec<Apiserver> = std::thread::scope(|s| {
        let started: Vec<_> = (0..3)
            .map(|_| s.spawn(|| Apiserver::start_args(kaname_bin!(), &[format!("--etcd-servers=http://{endpoint}")])))
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for api in &servers {
        assert_eq!(api.curl("/readyz", true), (200, "ok".to_string()), "{}", api.log());
        assert_eq!(
            api.ok(&["get", "pc", "-o", "name"]),
            "priorityclass.scheduling.k8s.io/system-cluster-critical\npriorityclass.scheduling.k8s.io/system-node-critical\n"
        );
    }
}

#[test]
fn concurrent_bootstrap_on_etcd() {
    concurrent_bootstrap(Flavor::etcd());
}

#[test]
fn concurrent_bootstrap_on_kaname() {
    concurrent_bootstrap(kaname!());
}
