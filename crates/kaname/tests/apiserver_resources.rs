//! Issue 5's resources and object lifecycle through the real kubectl (1.33), on real etcd
//! 3.4 and on `kaname etcd`: the apps, coordination, discovery and rbac groups, nodes,
//! endpoints and services (cluster IPs), tables and discovery as kubectl shows them, scale
//! and binding, finalizers, namespace termination and `kubectl delete --wait`.
//!
//! Every scenario runs once per store flavour with its own store and API server(s) on
//! loopback, stopped by PID when done.
//!
//! Run: `cargo test -p kaname --test apiserver_resources`. Needs scripts/install-test-deps.sh
//! (etcd) and kubectl.
//!
//! `create -f` runs with kubectl's default `--validate=strict`, which reads /openapi/v3: the
//! named groups' documents must be there too.

use kaname_testkit::*;

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// An HTTPS request with the admin certificate and a JSON body: (status code, JSON body).
fn raw(api: &Apiserver, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (code, body) = api.admin_send(method, path, Some(("application/json", body)));
    (code, json(&body))
}

/// Creates from a YAML file in the server's temp dir; returns kubectl's output.
fn create_yaml(api: &Apiserver, file: &str, yaml: &str, extra: &[&str]) -> Output {
    let path = api.dir.path().join(file);
    std::fs::write(&path, yaml).unwrap();
    let mut args = vec!["create", "-f", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    api.kubectl(&args)
}

/// Polls `check` until it holds (generous: the machine is shared).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: nginx, image: "nginx:1.27"}, {name: sidecar, image: busybox}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: postgres, image: "postgres:17"}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {nodeSelector: {disk: ssd}, containers: [{name: agent, image: "agent:2"}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: cache}
spec:
  replicas: 0
  selector: {matchExpressions: [{key: app, operator: In, values: [cache]}]}
  template:
    metadata: {labels: {app: cache}}
    spec: {containers: [{name: redis, image: "redis:7"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: leader}
spec: {holderIdentity: node-a, leaseDurationSeconds: 15}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.1.0.5]}, {addresses: [10.1.0.6]}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: 10.1.0.5}], ports: [{port: 8080}]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: read-pods}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects: [{kind: User, name: jane}, {kind: ServiceAccount, name: robot, namespace: default}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:health"}
rules: [{nonResourceURLs: [/healthz], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: health}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:health"}
subjects: [{kind: Group, name: devs, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {node-role.kubernetes.io/control-plane: ""}}
"#;

/// Every new kind through `create -f`, `get` tables (wide too), `get all`, `api-resources`,
/// `scale`, typed `kubectl create` commands (protobuf bodies), validation errors as kubectl
/// prints them, and pods/binding.
fn workloads(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));

    let out = create_yaml(&api, "all.yaml", WORKLOADS, &[]);
    assert!(out.success(), "{}{}\n{}", out.stdout, out.stderr, api.log());
    assert_eq!(
        out.stdout,
        "deployment.apps/web created\nstatefulset.apps/db created\ndaemonset.apps/agent created\n\
         replicaset.apps/cache created\nservice/web created\nlease.coordination.k8s.io/leader created\n\
         endpointslice.discovery.k8s.io/web-abc created\nendpoints/web created\n\
         role.rbac.authorization.k8s.io/reader created\nrolebinding.rbac.authorization.k8s.io/read-pods created\n\
         clusterrole.rbac.authorization.k8s.io/system:health created\n\
         clusterrolebinding.rbac.authorization.k8s.io/health created\nnode/node-a created\n"
    );

    // `get all` follows the "all" category, in upstream's order.
    assert_eq!(
        api.ok(&["get", "all", "-o", "name"]),
        "service/web\ndaemonset.apps/agent\ndeployment.apps/web\nreplicaset.apps/cache\nstatefulset.apps/db\n"
    );
    let all = api.ok(&["get", "all"]);
    assert!(
        all.contains(
            "NAME          TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE\nservice/web   ClusterIP   10.0.0."
        ),
        "{all}"
    );
    assert!(all.contains("NAME                  READY   UP-TO-DATE   AVAILABLE   AGE\ndeployment.apps/web   0/1     0            0           "), "{all}");

    // Tables: upstream's columns per kind, -o wide extras.
    let wide = api.ok(&["get", "deploy", "-o", "wide"]);
    let mut lines = wide.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[5], row[6], row[7]),
        ("web", "0/1", "nginx,sidecar", "nginx:1.27,busybox", "app=web")
    );
    let header = |args: &[&str]| api.ok(args).lines().next().unwrap().split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(header(&["get", "sts"]), "NAME READY AGE");
    assert_eq!(header(&["get", "ds"]), "NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE");
    assert!(api.ok(&["get", "ds"]).contains("disk=ssd"));
    assert_eq!(header(&["get", "rs", "-o", "wide"]), "NAME DESIRED CURRENT READY AGE CONTAINERS IMAGES SELECTOR");
    assert!(api.ok(&["get", "rs", "-o", "wide"]).contains("app in (cache)"));
    assert_eq!(header(&["get", "svc", "-o", "wide"]), "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE SELECTOR");
    assert!(api.ok(&["get", "lease"]).starts_with("NAME     HOLDER   AGE\nleader   node-a   "));
    assert!(api.ok(&["get", "endpointslices"]).contains("web-abc   IPv4          8080    10.1.0.5,10.1.0.6   "));
    assert!(api.ok(&["get", "ep"]).contains("web    10.1.0.5:8080   "));
    assert_eq!(header(&["get", "roles"]), "NAME CREATED AT");
    let rb = api.ok(&["get", "rolebinding", "read-pods", "-o", "wide"]);
    let rb: Vec<Vec<&str>> = rb.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rb[0], ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]);
    assert_eq!((rb[1][0], rb[1][1], rb[1][3], rb[1][4]), ("read-pods", "Role/reader", "jane", "default/robot"));
    assert!(api.ok(&["get", "clusterrolebinding", "health", "-o", "wide"]).contains("ClusterRole/system:health"));
    let nodes = api.ok(&["get", "no"]);
    assert!(
        nodes.starts_with("NAME     STATUS    ROLES           AGE   VERSION\nnode-a   Unknown   control-plane   "),
        "{nodes}"
    );

    // Discovery as kubectl shows it: new groups, short names, scope and kind.
    let resources = api.ok(&["api-resources"]);
    let mut lines = resources.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    let rows: HashSet<String> = lines.map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    for want in [
        "deployments deploy apps/v1 true Deployment",
        "statefulsets sts apps/v1 true StatefulSet",
        "daemonsets ds apps/v1 true DaemonSet",
        "replicasets rs apps/v1 true ReplicaSet",
        "nodes no v1 false Node",
        "endpoints ep v1 true Endpoints",
        "leases coordination.k8s.io/v1 true Lease",
        "endpointslices discovery.k8s.io/v1 true EndpointSlice",
        "clusterroles rbac.authorization.k8s.io/v1 false ClusterRole",
        "rolebindings rbac.authorization.k8s.io/v1 true RoleBinding",
    ] {
        assert!(rows.contains(want), "{want:?} missing from\n{resources}");
    }
    assert_eq!(
        api.ok(&["api-resources", "--api-group=apps", "-o", "name"]),
        "daemonsets.apps\ndeployments.apps\nreplicasets.apps\nstatefulsets.apps\n"
    );
    let apps = json(&api.ok(&["get", "--raw", "/apis/apps/v1"]));
    let names: Vec<&str> = apps["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"deployments/scale") && names.contains(&"statefulsets/status"), "{names:?}");

    // Generation moves with the spec only; scale goes through autoscaling/v1 Scale.
    let gen = |kind: &str| api.ok(&["get", kind, "-o", "jsonpath={.metadata.generation}"]);
    assert_eq!(gen("deploy/web"), "1");
    api.ok(&["label", "deploy", "web", "tier=front"]);
    assert_eq!(gen("deploy/web"), "1", "a label is not a spec change");
    assert_eq!(api.ok(&["scale", "deploy/web", "--replicas=3"]), "deployment.apps/web scaled\n");
    assert_eq!(gen("deploy/web"), "2");
    assert!(api.ok(&["get", "deploy", "web"]).contains("web    0/3     0            0           "));
    assert_eq!(api.ok(&["scale", "sts", "db", "--replicas=5"]), "statefulset.apps/db scaled\n");
    let scale = json(&api.ok(&["get", "--raw", "/apis/apps/v1/namespaces/default/statefulsets/db/scale"]));
    assert_eq!((scale["kind"].as_str(), scale["apiVersion"].as_str()), (Some("Scale"), Some("autoscaling/v1")));
    assert_eq!((scale["spec"]["replicas"].as_i64(), scale["status"]["selector"].as_str()), (Some(5), Some("app=db")));
    assert_eq!(
        api.fails(&["scale", "ds", "agent", "--replicas=2"]),
        "Error from server (NotFound): the server could not find the requested resource\n"
    );
    // Defaults as upstream fills them in.
    let d = json(&api.ok(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][1]["imagePullPolicy"], "Always");

    // Typed `kubectl create` commands send protobuf.
    assert_eq!(
        api.ok(&["create", "deployment", "api", "--image=api:1", "--replicas=2", "--port=8080"]),
        "deployment.apps/api created\n"
    );
    let d = json(&api.ok(&["get", "deploy", "api", "-o", "json"]));
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 8080);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "api");
    assert_eq!(
        api.ok(&["create", "role", "pod-reader", "--verb=get", "--resource=pods"]),
        "role.rbac.authorization.k8s.io/pod-reader created\n"
    );
    api.ok(&["create", "clusterrolebinding", "admins", "--clusterrole=cluster-admin", "--user=ops"]);

    // Validation errors as kubectl prints them; nothing is written.
    let bad = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\nspec:\n  selector: {matchLabels: {app: one}}\n  template:\n    metadata: {labels: {app: two}}\n    spec: {containers: [{name: c}]}\n";
    let out = create_yaml(&api, "bad.yaml", bad, &[]);
    assert_eq!(
        out.stderr,
        "The Deployment \"bad\" is invalid: \n* spec.template.metadata.labels: Invalid value: {\"app\":\"two\"}: `selector` does not match template `labels`\n* spec.template.spec.containers[0].image: Required value\n"
    );
    let no_selector = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: nosel}\nspec:\n  template:\n    spec: {containers: [{name: c, image: x}]}\n";
    let out = create_yaml(&api, "nosel.yaml", no_selector, &[]);
    assert_eq!(
        out.stderr,
        "The StatefulSet \"nosel\" is invalid: \n* spec.selector: Required value\n* spec.template.metadata.labels: Invalid value: null: `selector` does not match template `labels`\n"
    );
    assert_eq!(
        api.fails(&["get", "deploy", "bad"]),
        "Error from server (NotFound): deployments.apps \"bad\" not found\n"
    );
    let err = api.fails(&["create", "deployment", "Bad_Name", "--image=x"]);
    assert!(
        err.starts_with("error: failed to create deployment: Deployment.apps \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
        "{err}"
    );
    assert_eq!(
        api.fails(&["-n", "missing", "create", "deployment", "x", "--image=x"]),
        "error: failed to create deployment: namespaces \"missing\" not found\n"
    );
    // The selector is immutable; a role binding's roleRef too.
    let patched = api.fails(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"matchLabels":{"app":"x"}},"template":{"metadata":{"labels":{"app":"x"}}}}}"#,
    ]);
    assert!(
        patched.contains("spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"x\"}}: field is immutable"),
        "{patched}"
    );
    let patched =
        api.fails(&["patch", "rolebinding", "read-pods", "--type=merge", "-p", r#"{"roleRef":{"name":"other"}}"#]);
    assert!(patched.contains("cannot change roleRef"), "{patched}");

    // pods/binding: what a scheduler calls; a second binding is a conflict.
    api.ok(&["run", "one", "--image=nginx"]);
    let binding =
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"one"},"target":{"kind":"Node","name":"node-a"}}"#;
    let (code, st) = raw(&api, "POST", "/api/v1/namespaces/default/pods/one/binding", binding);
    assert_eq!((code, st["status"].as_str()), (201, Some("Success")), "{st}");
    assert_eq!(api.ok(&["get", "pod", "one", "-o", "jsonpath={.spec.nodeName}"]), "node-a");
    assert_eq!(api.ok(&["get", "pods", "--field-selector", "spec.nodeName=node-a", "-o", "name"]), "pod/one\n");
    let (code, st) = raw(&api, "POST", "/api/v1/namespaces/default/pods/one/binding", binding);
    assert_eq!(code, 409);
    assert_eq!(
        st["message"],
        "Operation cannot be fulfilled on pods/binding \"one\": pod one is already assigned to node \"node-a\""
    );
}

#[test]
fn workloads_on_etcd() {
    workloads(Flavor::etcd());
}

#[test]
fn workloads_on_kaname() {
    workloads(kaname!());
}

/// Cluster IPs: distinct, from the range, kept across updates, refused when taken or out of
/// range (upstream's messages), released on delete, and never handed out twice by two API
/// servers sharing one store.
fn service_ips(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let range = "--service-cluster-ip-range=10.96.0.0/28".to_string();
    let etcd = format!("--etcd-servers=http://{}", store.member_endpoint(1));
    let api = Apiserver::start_args(kaname_bin!(), &[etcd.clone(), range.clone()]);
    let api2 = Apiserver::start_args(kaname_bin!(), &[etcd, range]);

    // Twelve services, created concurrently through both servers: all get distinct IPs in
    // 10.96.0.2-14 (.0 is the network, .15 the broadcast, .1 is left for `kubernetes`).
    std::thread::scope(|s| {
        for i in 0..12 {
            let a = if i % 2 == 0 { &api } else { &api2 };
            s.spawn(move || a.ok(&["create", "service", "clusterip", &format!("s{i}"), "--tcp=80"]));
        }
    });
    let ips = api.ok(&["get", "svc", "-o", "jsonpath={range .items[*]}{.spec.clusterIP}{\"\\n\"}{end}"]);
    let ips: Vec<&str> = ips.lines().collect();
    let distinct: HashSet<&str> = ips.iter().copied().collect();
    assert_eq!((ips.len(), distinct.len()), (12, 12), "{ips:?}");
    for ip in &ips {
        let last: u8 = ip.strip_prefix("10.96.0.").unwrap().parse().unwrap();
        assert!((2..=14).contains(&last), "{ip}");
    }
    let s0 = json(&api.ok(&["get", "svc", "s0", "-o", "json"]));
    assert_eq!(s0["spec"]["clusterIPs"], serde_json::json!([s0["spec"]["clusterIP"]]));
    assert_eq!(s0["spec"]["ipFamilies"], serde_json::json!(["IPv4"]));
    assert_eq!(s0["spec"]["ports"][0]["targetPort"], 80);

    // A requested address that is taken, or outside the range, is refused as upstream does.
    let taken = ips[0];
    let svc = |name: &str, ip: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  clusterIP: {ip}\n  ports: [{{port: 80}}]\n")
    };
    let out = create_yaml(&api2, "dup.yaml", &svc("dup", taken), &[]);
    assert_eq!(
        out.stderr,
        format!("The Service \"dup\" is invalid: spec.clusterIPs: Invalid value: [\"{taken}\"]: failed to allocate IP {taken}: provided IP is already allocated\n")
    );
    let out = create_yaml(&api, "far.yaml", &svc("far", "10.0.0.9"), &[]);
    assert_eq!(
        out.stderr,
        "The Service \"far\" is invalid: spec.clusterIPs: Invalid value: [\"10.0.0.9\"]: failed to allocate IP 10.0.0.9: the provided IP (10.0.0.9) is not in the valid range. The range of valid IPs is 10.96.0.0/28\n"
    );
    // The range is full now (13 usable addresses less the reserved one): upstream's 500.
    api.ok(&["create", "service", "clusterip", "s12", "--tcp=80"]);
    let full = api.fails(&["create", "service", "clusterip", "s13", "--tcp=80"]);
    assert!(full.contains("failed to allocate a serviceIP: range is full"), "{full}");

    // The address may not change; an update without it keeps it.
    let s1_ip = api.ok(&["get", "svc", "s1", "-o", "jsonpath={.spec.clusterIP}"]);
    let replaced = api.kubectl_stdin(&["replace", "-f", "-"], Some(&svc("s1", "10.96.0.1")));
    assert!(
        replaced.stderr.contains("spec.clusterIPs[0]: Invalid value: [\"10.96.0.1\"]: may not change once set"),
        "{}",
        replaced.stderr
    );
    let no_ip = "apiVersion: v1\nkind: Service\nmetadata: {name: s1}\nspec:\n  ports: [{port: 81}]\n";
    let replaced = api.kubectl_stdin(&["replace", "-f", "-"], Some(no_ip));
    assert!(replaced.success(), "{}", replaced.stderr);
    assert_eq!(api.ok(&["get", "svc", "s1", "-o", "jsonpath={.spec.clusterIP}"]), s1_ip);

    // Deleting a service releases its address: it can be requested again at once.
    api.ok(&["delete", "svc", "s1"]);
    let out = create_yaml(&api2, "again.yaml", &svc("again", &s1_ip), &[]);
    assert!(out.success(), "{}", out.stderr);
    // Headless services hold none.
    api.ok(&["create", "service", "clusterip", "headless", "--clusterip=None"]);
    assert_eq!(api.ok(&["get", "svc", "headless", "-o", "jsonpath={.spec.clusterIPs}"]), r#"["None"]"#);
}

#[test]
fn service_ips_on_etcd() {
    service_ips(Flavor::etcd());
}

#[test]
fn service_ips_on_kaname() {
    service_ips(kaname!());
}

/// Finalizers hold an object (deletionTimestamp set) until they are removed; namespaces go
/// Terminating, refuse new objects, lose their contents and then themselves; `delete --wait`
/// returns once the object is gone; deletecollection deletes what a selector picks; a pod on
/// a node waits out its grace period.
fn deletion(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));

    api.ok(&["create", "configmap", "held", "--from-literal=a=1"]);
    api.ok(&["patch", "cm", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":["example.com/hold"]}}"#]);
    assert_eq!(api.ok(&["delete", "cm", "held", "--wait=false"]), "configmap \"held\" deleted\n");
    let held = json(&api.ok(&["get", "cm", "held", "-o", "json"]));
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    assert_eq!(held["metadata"]["deletionGracePeriodSeconds"], 0);
    let added = api.fails(&[
        "patch",
        "cm",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold","x/y"]}}"#,
    ]);
    assert!(
        added.contains("metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [\"x/y\"]"),
        "{added}"
    );
    api.ok(&["patch", "cm", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    assert_eq!(api.fails(&["get", "cm", "held"]), "Error from server (NotFound): configmaps \"held\" not found\n");

    // Namespace deletion: Terminating while a finalizer holds one of its objects.
    api.ok(&["create", "namespace", "team"]);
    api.ok(&["-n", "team", "create", "configmap", "plain"]);
    api.ok(&["-n", "team", "create", "deployment", "web", "--image=nginx"]);
    api.ok(&["-n", "team", "create", "service", "clusterip", "web", "--tcp=80"]);
    api.ok(&["-n", "team", "create", "configmap", "stuck"]);
    api.ok(&[
        "-n",
        "team",
        "patch",
        "cm",
        "stuck",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    assert_eq!(api.ok(&["delete", "ns", "team", "--wait=false"]), "namespace \"team\" deleted\n");
    assert!(api.ok(&["get", "ns", "team"]).contains("team   Terminating   "));
    assert_eq!(
        api.fails(&["-n", "team", "create", "configmap", "late"]),
        "error: failed to create configmap: configmaps \"late\" is forbidden: unable to create new content in namespace team because it is being terminated\n"
    );
    eventually("the namespace's contents to go", || {
        api.ok(&["-n", "team", "get", "cm,deploy,svc", "-o", "name"]) == "configmap/stuck\n"
    });
    assert_eq!(api.ok(&["get", "ns", "team", "-o", "jsonpath={.status.phase}"]), "Terminating");
    eventually("the namespace to say what remains", || {
        let d = api.ok(&["describe", "ns", "team"]);
        d.contains("Some resources are remaining: configmaps has 1 resource instances")
            && d.contains(
                "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances",
            )
    });
    api.ok(&["-n", "team", "patch", "cm", "stuck", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    let waited = api.kubectl(&["wait", "--for=delete", "ns/team", "--timeout=30s"]);
    assert!(waited.success(), "{}{}", waited.stdout, waited.stderr);
    assert_eq!(api.fails(&["get", "ns", "team"]), "Error from server (NotFound): namespaces \"team\" not found\n");

    // `kubectl delete` waits (its default) until the namespace is gone.
    api.ok(&["create", "namespace", "short"]);
    api.ok(&["-n", "short", "create", "configmap", "c"]);
    let started = Instant::now();
    assert_eq!(api.ok(&["delete", "ns", "short", "--wait"]), "namespace \"short\" deleted\n");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(api.fails(&["get", "ns", "short"]), "Error from server (NotFound): namespaces \"short\" not found\n");
    let (code, _) = raw(&api, "GET", "/api/v1/namespaces/short/configmaps", "");
    assert_eq!(code, 200);

    // deletecollection with a label selector.
    for (name, tier) in [("a", "x"), ("b", "x"), ("c", "y")] {
        api.ok(&["create", "configmap", name]);
        api.ok(&["label", "cm", name, &format!("tier={tier}")]);
    }
    let (code, list) = raw(&api, "DELETE", "/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dx", "");
    assert_eq!((code, list["kind"].as_str()), (200, Some("ConfigMapList")), "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(api.ok(&["get", "cm", "-l", "tier", "-o", "name"]), "configmap/c\n");

    // A pod on a node is deleted gracefully (its kubelet would stop it); --force removes it.
    api.ok(&["run", "p", "--image=nginx", "--overrides", r#"{"spec":{"nodeName":"node-a"}}"#]);
    api.ok(&["delete", "pod", "p", "--wait=false"]);
    let p = json(&api.ok(&["get", "pod", "p", "-o", "json"]));
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(api.ok(&["get", "pod", "p"]).contains("Terminating"));
    api.ok(&["delete", "pod", "p", "--grace-period=0", "--force"]);
    assert_eq!(api.fails(&["get", "pod", "p"]), "Error from server (NotFound): pods \"p\" not found\n");
}

#[test]
fn deletion_on_etcd() {
    deletion(Flavor::etcd());
}

#[test]
fn deletion_on_kaname() {
    deletion(kaname!());
}

/// `scheduling.k8s.io/v1` PriorityClass, the first kind added as one file plus one
/// registration line: discovery, the typed `kubectl create priorityclass`, its table,
/// upstream's validation and its immutable value.
fn priority_classes(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));

    let resources = api.ok(&["api-resources", "--api-group=scheduling.k8s.io"]);
    let row: Vec<String> =
        resources.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(row, ["priorityclasses pc scheduling.k8s.io/v1 false PriorityClass"], "{resources}");

    assert_eq!(
        api.ok(&["create", "priorityclass", "high", "--value=1000", "--description=batch jobs first"]),
        "priorityclass.scheduling.k8s.io/high created\n"
    );
    let yaml = "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: low}\nvalue: -5\npreemptionPolicy: Never\n";
    let out = create_yaml(&api, "pc.yaml", yaml, &[]);
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    let table = api.ok(&["get", "pc"]);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"], "{table}");
    assert_eq!((rows[1][0], rows[1][1], rows[1][2], rows[1][4]), ("high", "1000", "false", "PreemptLowerPriority"));
    assert_eq!((rows[2][0], rows[2][1], rows[2][4]), ("low", "-5", "Never"));

    assert_eq!(
        api.fails(&["create", "priorityclass", "too-high", "--value=1000000001"]),
        "error: failed to create priorityclass: PriorityClass.scheduling.k8s.io \"too-high\" is invalid: value: Forbidden: maximum allowed value of a user defined priority is 1000000000\n"
    );
    let err = api.fails(&["create", "priorityclass", "system-mine", "--value=1"]);
    assert!(err.contains("metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"), "{err}");
    let err = api.fails(&["patch", "pc", "high", "--type=merge", "-p", r#"{"value":7}"#]);
    assert!(err.contains("value: Forbidden: may not be changed in an update."), "{err}");
    assert_eq!(api.ok(&["delete", "pc", "low"]), "priorityclass.scheduling.k8s.io \"low\" deleted\n");
}

#[test]
fn priority_classes_on_etcd() {
    priority_classes(Flavor::etcd());
}

#[test]
fn priority_classes_on_kaname() {
    priority_classes(kaname!());
}
