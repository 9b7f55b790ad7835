//! `kaname apiserver` driven by the real kubectl (/usr/bin/kubectl, which runs the kubectl of
//! the server's minor version: 1.33), on real etcd 3.4 and on `kaname etcd`.
//!
//! Every scenario runs once per store flavour; each starts its own single-member store and
//! its own API server on loopback ports, and stops both by PID when done. kubectl's stdout,
//! stderr and exit code are checked as a user sees them (`Error from server (NotFound): ...`).
//!
//! Run: `cargo test -p kaname --test apiserver_kubectl`. Needs scripts/install-test-deps.sh
//! (etcd) and kubectl.

use kaname_testkit::*;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Namespaces, configmaps and secrets through kubectl's everyday commands: create (typed
/// clients send protobuf), get in every output format, -A, label selectors, field selectors,
/// paging, delete, and the NotFound/AlreadyExists errors as kubectl prints them.
fn crud(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));

    assert_eq!(api.ok(&["create", "namespace", "team-a"]), "namespace/team-a created\n");
    let ns = api.ok(&["get", "ns"]);
    let names: Vec<&str> = ns.lines().skip(1).map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(names, ["default", "kube-node-lease", "kube-public", "kube-system", "team-a"], "{ns}");
    assert!(ns.starts_with("NAME              STATUS   AGE\n"), "{ns}");
    assert!(ns.contains("team-a            Active   "), "{ns}");

    assert_eq!(
        api.ok(&["-n", "team-a", "create", "configmap", "web", "--from-literal=color=blue", "--from-literal=size=L"]),
        "configmap/web created\n"
    );
    api.ok(&["-n", "team-a", "create", "configmap", "db", "--from-literal=x=1"]);
    api.ok(&["-n", "default", "create", "configmap", "other", "--from-literal=y=2"]);
    api.ok(&["-n", "team-a", "create", "secret", "generic", "creds", "--from-literal=password=s3cret"]);
    assert_eq!(api.ok(&["-n", "team-a", "create", "serviceaccount", "robot"]), "serviceaccount/robot created\n");
    assert!(api.ok(&["-n", "team-a", "get", "sa"]).starts_with("NAME    AGE\nrobot   "));
    assert_eq!(
        api.ok(&["-n", "team-a", "label", "configmap", "web", "tier=front", "app=shop"]),
        "configmap/web labeled\n"
    );
    api.ok(&["-n", "team-a", "label", "configmap", "db", "tier=back", "app=shop"]);

    // Server-side table: NAME DATA AGE, -A adds NAMESPACE, -o wide the same columns here.
    let t = api.ok(&["-n", "team-a", "get", "configmaps"]);
    assert!(t.starts_with("NAME   DATA   AGE\ndb     1      "), "{t}");
    assert!(t.contains("\nweb    2      "), "{t}");
    let all = api.ok(&["get", "cm", "-A"]);
    assert!(all.starts_with("NAMESPACE   NAME    DATA   AGE\n"), "{all}");
    assert!(all.contains("\ndefault     other   1      "), "{all}");
    assert!(api.ok(&["get", "cm", "-A", "-o", "wide"]).contains("team-a      web     2      "));
    let s = api.ok(&["-n", "team-a", "get", "secrets"]);
    assert!(s.starts_with("NAME    TYPE     DATA   AGE\ncreds   Opaque   1      "), "{s}");

    // Full objects: resourceVersion is etcd's mod_revision (a number), uid and time are set.
    let web = json(&api.ok(&["-n", "team-a", "get", "cm", "web", "-o", "json"]));
    assert_eq!(web["data"]["color"], "blue");
    assert_eq!(web["metadata"]["labels"]["tier"], "front");
    assert!(web["metadata"]["resourceVersion"].as_str().unwrap().parse::<i64>().unwrap() > 0);
    assert_eq!(web["metadata"]["uid"].as_str().unwrap().len(), 36);
    let yaml = api.ok(&["-n", "team-a", "get", "cm", "web", "-o", "yaml"]);
    assert!(yaml.starts_with("apiVersion: v1\ndata:\n  color: blue\n  size: L\nkind: ConfigMap\n"), "{yaml}");
    assert!(yaml.contains("  namespace: team-a\n"), "{yaml}");
    let secret = json(&api.ok(&["-n", "team-a", "get", "secret", "creds", "-o", "json"]));
    assert_eq!(secret["data"]["password"], "czNjcmV0", "secret data is base64 of s3cret");
    assert_eq!(api.ok(&["get", "cm", "-A", "-o", "name"]), "configmap/other\nconfigmap/db\nconfigmap/web\n");
    assert_eq!(
        api.ok(&[
            "get",
            "cm",
            "-A",
            "-o",
            "custom-columns=NS:.metadata.namespace,NAME:.metadata.name,TIER:.metadata.labels.tier"
        ]),
        "NS        NAME    TIER\ndefault   other   <none>\nteam-a    db      back\nteam-a    web     front\n"
    );

    // Label selectors: =, !=, in, notin, exists, !exists; field selectors.
    let sel = |s: &str| api.ok(&["get", "cm", "-A", "-l", s, "-o", "name"]);
    assert_eq!(sel("tier=front"), "configmap/web\n");
    assert_eq!(sel("tier!=front"), "configmap/other\nconfigmap/db\n");
    assert_eq!(sel("tier in (front,back)"), "configmap/db\nconfigmap/web\n");
    assert_eq!(sel("tier notin (front)"), "configmap/other\nconfigmap/db\n");
    assert_eq!(sel("app"), "configmap/db\nconfigmap/web\n");
    assert_eq!(sel("!app"), "configmap/other\n");
    assert_eq!(
        api.ok(&["get", "cm", "-A", "--field-selector", "metadata.namespace=team-a,metadata.name!=db", "-o", "name"]),
        "configmap/web\n"
    );
    let none = api.kubectl(&["-n", "team-a", "get", "cm", "-l", "tier=none"]);
    assert_eq!((none.stdout.as_str(), none.stderr.as_str()), ("", "No resources found in team-a namespace.\n"));
    // Paging: --chunk-size=1 makes kubectl follow continue tokens page by page.
    assert_eq!(
        api.ok(&["get", "cm", "-A", "--chunk-size=1", "-o", "name"]),
        "configmap/other\nconfigmap/db\nconfigmap/web\n"
    );

    // Errors as kubectl prints them.
    assert_eq!(
        api.fails(&["-n", "team-a", "get", "cm", "nope"]),
        "Error from server (NotFound): configmaps \"nope\" not found\n"
    );
    assert_eq!(
        api.fails(&["-n", "team-a", "create", "configmap", "web"]),
        "error: failed to create configmap: configmaps \"web\" already exists\n"
    );
    assert_eq!(
        api.fails(&["-n", "missing", "create", "configmap", "x"]),
        "error: failed to create configmap: namespaces \"missing\" not found\n"
    );

    // Errors kubectl does not provoke, as raw requests with the admin certificate.
    let raw = |method: &str, path: &str, content_type: &str, body: &str| {
        let (code, body) = api.admin_send(method, path, Some((content_type, body)));
        (code.to_string(), json(&body))
    };
    let (code, st) = raw("POST", "/api/v1/namespaces/team-a/configmaps/web", "application/json", "{}");
    assert_eq!((code.as_str(), st["reason"].as_str()), ("405", Some("MethodNotAllowed")), "{st}");
    let (code, st) = raw("POST", "/api/v1/namespaces/team-a/configmaps", "text/plain", "x");
    assert_eq!((code.as_str(), st["reason"].as_str()), ("415", Some("UnsupportedMediaType")), "{st}");
    assert_eq!(
        st["message"],
        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf"
    );
    // Leniency other clients rely on, as upstream's: no Content-Type is JSON (the Python and
    // JavaScript clients send none), media types are case-insensitive with parameters, YAML
    // bodies are decoded, and discovery paths take a trailing slash.
    let (code, st) = raw("POST", "/api/v1/namespaces/team-a/configmaps", "", r#"{"metadata":{"name":"untyped"}}"#);
    assert_eq!((code.as_str(), st["metadata"]["name"].as_str()), ("201", Some("untyped")), "{st}");
    let (code, st) = raw(
        "PUT",
        "/api/v1/namespaces/team-a/configmaps/untyped",
        "",
        r#"{"metadata":{"name":"untyped"},"data":{"k":"v"}}"#,
    );
    assert_eq!((code.as_str(), st["data"]["k"].as_str()), ("200", Some("v")), "{st}");
    let (code, st) = raw(
        "POST",
        "/api/v1/namespaces/team-a/configmaps",
        "Application/JSON; charset=utf-8",
        r#"{"metadata":{"name":"cased"}}"#,
    );
    assert_eq!(code, "201", "{st}");
    let (code, st) = raw(
        "POST",
        "/api/v1/namespaces/team-a/configmaps",
        "application/yaml",
        "metadata:\n  name: yaml\ndata:\n  k: v\n",
    );
    assert_eq!((code.as_str(), st["data"]["k"].as_str()), ("201", Some("v")), "{st}");
    let (code, st) = raw("PATCH", "/api/v1/namespaces/team-a/configmaps/yaml", "", "{}");
    assert_eq!((code.as_str(), st["reason"].as_str()), ("415", Some("UnsupportedMediaType")), "{st}");
    assert_eq!(
        st["message"],
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"
    );
    for path in ["/version/", "/api/", "/apis/", "/api/v1/", "/apis/apps/", "/apis/apps/v1/", "/openapi/v3/"] {
        let (code, body) = api.admin_curl("GET", path);
        let trimmed = api.admin_curl("GET", path.trim_end_matches('/'));
        assert_eq!((code, &body), (200, &trimmed.1), "{path}");
    }
    api.ok(&["-n", "team-a", "delete", "configmap", "untyped", "cased", "yaml"]);
    let (code, st) = raw("POST", "/api/v1/namespaces/team-a/configmaps", "application/json", "{not json");
    assert_eq!((code.as_str(), st["reason"].as_str()), ("400", Some("BadRequest")), "{st}");
    let (code, st) = raw(
        "POST",
        "/api/v1/namespaces/team-a/configmaps",
        "application/json",
        r#"{"metadata":{"name":"x","namespace":"other"}}"#,
    );
    assert_eq!(code, "400");
    assert_eq!(st["message"], "the namespace of the provided object does not match the namespace sent on the request");
    let (code, st) = raw(
        "POST",
        "/api/v1/namespaces/team-a/configmaps",
        "application/json",
        r#"{"metadata":{"generateName":"gen-"},"data":{"bad key":"v"}}"#,
    );
    assert_eq!(code, "422");
    assert_eq!(st["details"]["causes"][0]["field"], "data[bad key]");
    let (code, st) = raw("GET", "/api/v1/namespaces/team-a/configmaps?labelSelector=a%20b", "application/json", "");
    assert_eq!((code.as_str(), st["reason"].as_str()), ("400", Some("BadRequest")), "{st}");

    // Delete, then the object is gone.
    assert_eq!(api.ok(&["-n", "team-a", "delete", "cm", "db"]), "configmap \"db\" deleted\n");
    assert_eq!(
        api.fails(&["-n", "team-a", "delete", "cm", "db"]),
        "Error from server (NotFound): configmaps \"db\" not found\n"
    );
    assert_eq!(api.ok(&["get", "cm", "-A", "-o", "name"]), "configmap/other\nconfigmap/web\n");
    // Deleting a namespace takes its objects with it.
    assert_eq!(api.ok(&["delete", "ns", "team-a"]), "namespace \"team-a\" deleted\n");
    assert_eq!(api.ok(&["get", "cm", "-A", "-o", "name"]), "configmap/other\n");
    assert_eq!(api.fails(&["get", "ns", "team-a"]), "Error from server (NotFound): namespaces \"team-a\" not found\n");
}

#[test]
fn crud_on_etcd() {
    crud(Flavor::etcd());
}

#[test]
fn crud_on_kaname() {
    crud(kaname!());
}

/// `kubectl create -f` with YAML: kubectl finds `fieldValidation` in /openapi/v3 and leaves
/// validation to the server (unknown fields: 400 with Strict, warnings with
/// `--validate=warn`). Pods get server-side validation (422 Invalid with the field errors)
/// and the pod table (NAME READY STATUS RESTARTS AGE). Merge patches apply, to the status
/// through the status subresource only. Events serve
/// `kubectl get events` and `kubectl describe`. Too large bodies and objects get 413.
fn create_from_files(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    let dir = api.dir.path().to_path_buf();
    let cm = dir.join("cm.yaml");
    std::fs::write(&cm, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  k: v\n").unwrap();
    let cm = cm.to_str().unwrap();
    assert_eq!(api.ok(&["create", "-f", cm]), "configmap/settings created\n");
    assert_eq!(
        api.fails(&["create", "-f", cm, "--validate=false"]),
        format!(
            "Error from server (AlreadyExists): error when creating \"{cm}\": configmaps \"settings\" already exists\n"
        )
    );

    let unknown = dir.join("unknown.yaml");
    std::fs::write(&unknown, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: loose\n  bogus: 1\ndata:\n  k: v\n")
        .unwrap();
    let unknown = unknown.to_str().unwrap();
    assert_eq!(
        api.fails(&["create", "-f", unknown]),
        format!("Error from server (BadRequest): error when creating \"{unknown}\": ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"metadata.bogus\"\n")
    );
    let warned = api.kubectl(&["create", "-f", unknown, "--validate=warn"]);
    assert_eq!(
        (warned.stdout.as_str(), warned.stderr.as_str()),
        ("configmap/loose created\n", "Warning: unknown field \"metadata.bogus\"\n")
    );
    assert_eq!(
        api.ok(&["patch", "cm", "loose", "--type=merge", "-p", r#"{"data":{"k":null,"n":"1"}}"#]),
        "configmap/loose patched\n"
    );
    assert_eq!(api.ok(&["get", "cm", "loose", "-o", "jsonpath={.data}"]), r#"{"n":"1"}"#);

    // Too large: over the API server's 3 MiB body limit and over etcd's 1.5 MiB request limit
    // (both 413 RequestEntityTooLarge, as upstream answers them), over a ConfigMap's 1 MiB of
    // data and over 256 KiB of annotations (422 Invalid).
    let big = dir.join("big.txt");
    std::fs::write(&big, "x".repeat(3_300_000)).unwrap();
    let from_big = format!("--from-file=big={}", big.display());
    assert_eq!(
        api.fails(&["create", "configmap", "huge", &from_big]),
        "error: failed to create configmap: Request entity too large: limit is 3145728\n"
    );
    std::fs::write(&big, "x".repeat(1_100_000)).unwrap();
    assert_eq!(
        api.fails(&["create", "configmap", "huge", &from_big]),
        "error: failed to create configmap: ConfigMap \"huge\" is invalid: []: Too long: may not be more than 1048576 bytes\n"
    );
    let annotated = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: huge\n  annotations:\n    note: {}\n",
        "y".repeat(300_000)
    );
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(&annotated));
    assert_eq!(
        out.stderr,
        "The ConfigMap \"huge\" is invalid: metadata.annotations: Too long: may not be more than 262144 bytes\n"
    );
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\nspec:\n  containers:\n  - name: c\n    image: busybox\n    env:\n    - name: BLOB\n      value: {}\n",
        "z".repeat(1_700_000)
    );
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(&pod));
    assert_eq!(
        out.stderr,
        "Error from server (RequestEntityTooLarge): error when creating \"STDIN\": etcdserver: request is too large\n"
    );
    assert!(api.fails(&["get", "cm", "huge"]).contains("not found"));
    assert!(api.fails(&["get", "pod", "huge"]).contains("not found"));

    let bad = dir.join("bad-pod.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers:\n  - name: c\n")
        .unwrap();
    let err = api.fails(&["create", "-f", bad.to_str().unwrap()]);
    assert!(
        err.starts_with(&format!(
            "The Pod \"Bad_Name\" is invalid: \n* metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of"
        )),
        "{err}"
    );
    assert!(err.contains("\n* spec.containers[0].image: Required value"), "{err}");

    let pod = dir.join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  generateName: web-\n  labels:\n    app: web\nspec:\n  containers:\n  - name: nginx\n    image: nginx:1.27\n",
    )
    .unwrap();
    let created = api.ok(&["create", "-f", pod.to_str().unwrap(), "-o", "name"]);
    assert!(created.starts_with("pod/web-") && created.len() == "pod/web-xxxxx\n".len(), "{created}");
    let pods = api.ok(&["get", "pods"]);
    assert!(pods.starts_with("NAME        READY   STATUS    RESTARTS   AGE\nweb-"), "{pods}");
    assert!(pods.contains("   0/1     Pending   0          "), "{pods}");
    let wide = api.ok(&["get", "pods", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().ends_with("AGE   IP       NODE     NOMINATED NODE   READINESS GATES"),
        "{wide}"
    );
    let p = json(&api.ok(&["get", "pods", "-l", "app=web", "-o", "json"]));
    assert_eq!(p["items"][0]["status"]["qosClass"], "BestEffort");
    // `get all` follows the "all" discovery category.
    assert_eq!(api.ok(&["get", "all", "-o", "name"]), created);

    // Events: `kubectl get events` table, and `kubectl describe` finds an object's events
    // through the involvedObject field selectors.
    let name = p["items"][0]["metadata"]["name"].as_str().unwrap();
    let uid = p["items"][0]["metadata"]["uid"].as_str().unwrap();
    let event = format!(
        r#"{{"apiVersion":"v1","kind":"Event","metadata":{{"name":"{name}.1"}},"involvedObject":{{"kind":"Pod","name":"{name}","namespace":"default","uid":"{uid}"}},"reason":"Tested","message":"hello from a test","type":"Normal","firstTimestamp":"2026-01-01T00:00:00Z","lastTimestamp":"2026-01-01T00:00:00Z"}}"#
    );
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(&event));
    assert!(out.success(), "{}", out.stderr);
    let events = api.ok(&["get", "events"]);
    assert!(events.starts_with("LAST SEEN   TYPE     REASON   OBJECT"), "{events}");
    assert!(events.contains(&format!("Normal   Tested   pod/{name}   hello from a test")), "{events}");
    // The status subresource changes the status (what a kubelet will report); the main
    // resource cannot.
    let status = r#"{"status":{"phase":"Running","containerStatuses":[{"name":"nginx","ready":true,"restartCount":2,"image":"nginx:1.27","imageID":""}]}}"#;
    assert_eq!(
        api.ok(&["patch", "pod", name, "--subresource=status", "--type=merge", "-p", status]),
        format!("pod/{name} patched\n")
    );
    assert_eq!(
        api.ok(&["patch", "pod", name, "--type=merge", "-p", r#"{"status":{"phase":"Failed"}}"#]),
        format!("pod/{name} patched (no change)\n")
    );
    assert!(api.ok(&["get", "pods"]).contains("   1/1     Running   2          "));

    let described = api.ok(&["describe", "pod", name]);
    assert!(described.contains("\nStatus:       Running\n"), "{described}");
    assert!(described.contains("  Normal  Tested") && described.contains("hello from a test"), "{described}");
}

#[test]
fn create_from_files_on_etcd() {
    create_from_files(Flavor::etcd());
}

#[test]
fn create_from_files_on_kaname() {
    create_from_files(kaname!());
}

/// Two updates from the same read (same resourceVersion): the first wins, the second is a
/// 409 Conflict, because an update is an etcd compare-and-swap on the mod_revision.
fn update_conflict(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    api.ok(&["create", "configmap", "shared", "--from-literal=v=0"]);
    let read = api.ok(&["get", "cm", "shared", "-o", "json"]);
    let first = read.replace("\"v\": \"0\"", "\"v\": \"1\"");
    let second = read.replace("\"v\": \"0\"", "\"v\": \"2\"");
    let r1 = api.kubectl_stdin(&["replace", "-f", "-"], Some(&first));
    assert!(r1.success(), "{}", r1.stderr);
    assert_eq!(r1.stdout, "configmap/shared replaced\n");
    let r2 = api.kubectl_stdin(&["replace", "-f", "-"], Some(&second));
    assert!(!r2.success());
    assert_eq!(
        r2.stderr,
        "Error from server (Conflict): error when replacing \"STDIN\": Operation cannot be fulfilled on configmaps \"shared\": the object has been modified; please apply your changes to the latest version and try again\n"
    );
    let now = json(&api.ok(&["get", "cm", "shared", "-o", "json"]));
    assert_eq!(now["data"]["v"], "1");
    assert_ne!(now["metadata"]["resourceVersion"], json(&read)["metadata"]["resourceVersion"]);
}

#[test]
fn update_conflict_on_etcd() {
    update_conflict(Flavor::etcd());
}

#[test]
fn update_conflict_on_kaname() {
    update_conflict(kaname!());
}

/// `kubectl replace -f` of the same minimal manifests that created the objects, with no
/// resourceVersion (an unconditional update): the server applies the kind's defaults to the
/// update as it did to the create, so a pod whose only change is its image is replaced, not
/// refused as a change of defaulted fields (imagePullPolicy, dnsPolicy, ...). A real change of
/// an immutable pod field is still a 422, and a service keeps its allocated cluster IP.
fn replace_minimal_manifests(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    let pod = |image: &str, policy: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  restartPolicy: {policy}\n  initContainers:\n  - name: init\n    image: busybox\n  containers:\n  - name: nginx\n    image: {image}\n"
        )
    };
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(&pod("nginx:1.27", "Always")));
    assert!(out.success(), "{}", out.stderr);
    let created = json(&api.ok(&["get", "pod", "web", "-o", "json"]));
    let out = api.kubectl_stdin(&["replace", "-f", "-"], Some(&pod("nginx:1.28", "Always")));
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("pod/web replaced\n", ""));
    let replaced = json(&api.ok(&["get", "pod", "web", "-o", "json"]));
    assert_eq!(replaced["spec"]["containers"][0]["image"], "nginx:1.28");
    // Defaults are filled in again, per container, from the new image's tag.
    assert_eq!(replaced["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(replaced["spec"]["initContainers"][0]["imagePullPolicy"], "Always");
    assert_eq!(replaced["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(replaced["metadata"]["uid"], created["metadata"]["uid"]);
    let out = api.kubectl_stdin(&["replace", "-f", "-"], Some(&pod("nginx:1.28", "Never")));
    assert!(!out.success());
    assert!(
        out.stderr
            .starts_with("The Pod \"web\" is invalid: spec: Forbidden: pod updates may not change fields other than"),
        "{}",
        out.stderr
    );

    let deploy = |replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: nginx\n        image: nginx\n"
        )
    };
    assert!(api.kubectl_stdin(&["create", "-f", "-"], Some(&deploy(1))).success());
    let out = api.kubectl_stdin(&["replace", "-f", "-"], Some(&deploy(1)));
    assert_eq!(out.stdout, "deployment.apps/web replaced\n", "{}", out.stderr);
    // Nothing changed once defaulted: the generation stays.
    assert_eq!(api.ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.generation}"]), "1");
    assert!(api.kubectl_stdin(&["replace", "-f", "-"], Some(&deploy(3))).success());
    let d = json(&api.ok(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!((d["metadata"]["generation"].as_i64(), d["spec"]["replicas"].as_i64()), (Some(2), Some(3)));
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"], "/dev/termination-log");

    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n";
    assert!(api.kubectl_stdin(&["create", "-f", "-"], Some(svc)).success());
    let ip = api.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let out = api.kubectl_stdin(&["replace", "-f", "-"], Some(svc));
    assert_eq!(out.stdout, "service/web replaced\n", "{}", out.stderr);
    let s = json(&api.ok(&["get", "svc", "web", "-o", "json"]));
    assert_eq!(s["spec"]["clusterIP"].as_str(), Some(ip.as_str()));
    assert_eq!(
        (s["spec"]["ports"][0]["protocol"].as_str(), s["spec"]["ports"][0]["targetPort"].as_i64()),
        (Some("TCP"), Some(80))
    );
}

#[test]
fn replace_minimal_manifests_on_etcd() {
    replace_minimal_manifests(Flavor::etcd());
}

#[test]
fn replace_minimal_manifests_on_kaname() {
    replace_minimal_manifests(kaname!());
}

/// Watch from a resourceVersion: every later change as ADDED/MODIFIED/DELETED lines, ending
/// at timeoutSeconds; `kubectl get -w` rows; from a compacted revision, one ERROR event with
/// a 410 Expired Status.
fn watch(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    let list = json(&api.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"]));
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    api.ok(&["create", "configmap", "w1", "--from-literal=a=1"]);
    api.ok(&["label", "configmap", "w1", "x=y"]);
    api.ok(&["delete", "configmap", "w1"]);
    let path = format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=2");
    let started = Instant::now();
    let out = api.ok(&["get", "--raw", &path]);
    assert!(started.elapsed() >= Duration::from_secs(2), "watch ended before its timeout");
    let events: Vec<serde_json::Value> = out.lines().map(json).collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"], "{out}");
    assert_eq!(events[1]["object"]["metadata"]["labels"]["x"], "y");
    let rvs: Vec<i64> =
        events.iter().map(|e| e["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()).collect();
    assert!(rvs[0] > rv.parse().unwrap() && rvs[0] < rvs[1] && rvs[1] < rvs[2], "{rvs:?}");

    // `kubectl get -w` watches with server-side tables: one row per event.
    let w = Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg(format!("--kubeconfig={}", api.kubeconfig.display()))
        .arg(format!("--cache-dir={}", api.dir.path().join("cache").display()))
        .args(["get", "configmaps", "-w", "--request-timeout=4s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    api.ok(&["create", "configmap", "w2", "--from-literal=a=1", "--from-literal=b=2"]);
    api.ok(&["delete", "configmap", "w2"]);
    let out = w.wait_with_output().unwrap();
    let rows = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines.len(), 3, "{rows}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines[0], "NAME   DATA   AGE");
    assert!(lines[1].starts_with("w2     2      ") && lines[2].starts_with("w2     2      "), "{rows}");

    // Compact the store past rv: a watch from there is told to relist.
    let latest = json(&api.ok(&["get", "--raw", "/api/v1/namespaces"]))["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let c = etcdctl(&store.member_endpoint(1), &["compact", &latest], None);
    assert!(c.success(), "{}", c.stderr);
    let out = api.ok(&["get", "--raw", &path]);
    let ev = json(out.trim());
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    assert!(
        ev["object"]["message"].as_str().unwrap().starts_with(&format!("too old resource version: {rv} (")),
        "{out}"
    );
}

#[test]
fn watch_on_etcd() {
    watch(Flavor::etcd());
}

#[test]
fn watch_on_kaname() {
    watch(kaname!());
}

/// Anonymous requests: 401 Status everywhere but the health checks; other users than
/// system:masters: discovery only (403 otherwise); /readyz turns 500 while etcd is unreachable
/// and back to ok when it returns. The generated serving certificate verifies against the
/// generated CA for 127.0.0.1; `--tls-cert-file`/`--tls-private-key-file`/`--client-ca-file`
/// serve with given certificates instead.
fn auth_and_health(flavor: Flavor) {
    let mut store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    let (code, body) = api.curl("/api", true);
    assert_eq!(code, 401);
    assert_eq!(
        json(&body),
        json(
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#
        )
    );
    assert_eq!(api.curl("/api/v1/namespaces", true).0, 401);
    for p in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(api.curl(p, true), (200, "ok".to_string()), "{p}");
    }
    // A user outside system:masters (CN=jane, O=dev, signed by the same CA) may read
    // discovery but nothing else: there is no RBAC yet.
    let pki = api.dir.path().join("pki");
    let ca = kaname_pki::Ca::load(&pki.join("ca.crt"), &pki.join("ca.key")).unwrap();
    let jane = ca.issue(&kaname_pki::CertSpec::new("jane").organization("dev")).unwrap();
    jane.write(&pki.join("jane.crt"), &pki.join("jane.key")).unwrap();
    let as_jane = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", "-w", "\n%{http_code}", "--cacert"])
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join("jane.crt"))
            .arg("--key")
            .arg(pki.join("jane.key"))
            .arg(format!("https://127.0.0.1:{}{path}", api.port.port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    assert_eq!(as_jane("/api").0, "200");
    let (code, body) = as_jane("/api/v1/namespaces/default/configmaps");
    assert_eq!(code, "403");
    assert_eq!(
        json(&body)["message"],
        "configmaps is forbidden: User \"jane\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );

    // Given certificates instead of generated ones: a second server with this one's serving
    // certificate and client CA accepts the same admin kubeconfig.
    let port2 = claim_port();
    let mut second = Proc(
        Command::new(env!("CARGO_BIN_EXE_kaname"))
            .arg("apiserver")
            .arg(format!("--etcd-servers=http://{}", store.member_endpoint(1)))
            .args(["--bind-address=127.0.0.1", &format!("--secure-port={}", port2.port)])
            .arg(format!("--tls-cert-file={}", pki.join("apiserver.crt").display()))
            .arg(format!("--tls-private-key-file={}", pki.join("apiserver.key").display()))
            .arg(format!("--client-ca-file={}", pki.join("ca.crt").display()))
            .arg(format!("--cert-dir={}", api.dir.path().join("unused").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let server2 = format!("--server=https://127.0.0.1:{}", port2.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = api.kubectl(&[&server2, "get", "ns", "default", "-o", "name"]);
        if out.success() {
            assert_eq!(out.stdout, "namespace/default\n");
            break;
        }
        assert!(second.0.try_wait().unwrap().is_none(), "second apiserver exited: {}", out.stderr);
        assert!(Instant::now() < deadline, "second apiserver never answered: {}", out.stderr);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!api.dir.path().join("unused").exists(), "no PKI is generated when certificates are given");
    drop(second);

    // The admin (CN=kubernetes-admin, O=system:masters) may do everything; kubectl finds the
    // resources through aggregated discovery.
    let resources = api.ok(&["api-resources"]);
    assert!(
        resources.starts_with("NAME                  SHORTNAMES   APIVERSION                     NAMESPACED   KIND\n")
    );
    assert!(resources
        .contains("\nconfigmaps            cm           v1                             true         ConfigMap\n"));
    assert_eq!(json(&api.ok(&["get", "--raw", "/api"]))["versions"], json(r#"["v1"]"#));

    store.kill(1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.curl("/readyz", true).0 != 500 {
        assert!(Instant::now() < deadline, "readyz stayed ok with etcd down");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(api.curl("/livez", true), (200, "ok".to_string()));
    store.restart(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.curl("/readyz", true) != (200, "ok".to_string()) {
        assert!(Instant::now() < deadline, "readyz not ok after etcd came back");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn auth_and_health_on_etcd() {
    auth_and_health(Flavor::etcd());
}

#[test]
fn auth_and_health_on_kaname() {
    auth_and_health(kaname!());
}

/// A store process started by a test (not through `Cluster`), killed by PID on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The API server reaches an etcd that serves only TLS and requires client certificates,
/// with `--etcd-cafile`, `--etcd-certfile` and `--etcd-keyfile`.
fn etcd_over_tls(flavor: Flavor) {
    let dir = tempfile::Builder::new().prefix("kaname-apiserver-etcd-tls-").tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let ca = kaname_pki::Ca::generate(&kaname_pki::CertSpec::new("etcd test CA")).unwrap();
    std::fs::write(path("ca.pem"), ca.cert_pem()).unwrap();
    for (name, sans, server) in [("server", vec!["127.0.0.1"], true), ("apiserver", vec![], false)] {
        use kaname_pki::ExtKeyUsage::{ClientAuth, ServerAuth};
        let usages = if server { vec![ClientAuth, ServerAuth] } else { vec![ClientAuth] };
        let cert = ca.issue(&kaname_pki::CertSpec::new(name).hosts(sans).ext_key_usages(usages)).unwrap();
        let file = |n: String| std::path::PathBuf::from(path(&n));
        cert.write(&file(format!("{name}.pem")), &file(format!("{name}-key.pem"))).unwrap();
    }
    let (client, peer) = (claim_port(), claim_port());
    let client_url = format!("https://127.0.0.1:{}", client.port);
    let peer_url = format!("http://127.0.0.1:{}", peer.port);
    let mut cmd = flavor.command();
    let _store = Proc(
        cmd.args(["--name", "m1", "--data-dir", &path("data")])
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("m1={peer_url}")])
            .args(["--cert-file", &path("server.pem"), "--key-file", &path("server-key.pem")])
            .args(["--trusted-ca-file", &path("ca.pem"), "--client-cert-auth"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path("store.log")).unwrap())
            .spawn()
            .expect("start store"),
    );
    let api = Apiserver::start_args(
        kaname_bin!(),
        &[
            format!("--etcd-servers={client_url}"),
            format!("--etcd-cafile={}", path("ca.pem")),
            format!("--etcd-certfile={}", path("apiserver.pem")),
            format!("--etcd-keyfile={}", path("apiserver-key.pem")),
        ],
    );
    assert_eq!(api.ok(&["create", "namespace", "secure"]), "namespace/secure created\n");
    assert_eq!(api.ok(&["get", "ns", "secure", "-o", "jsonpath={.status.phase}"]), "Active");
}

#[test]
fn etcd_over_tls_on_etcd() {
    etcd_over_tls(Flavor::etcd());
}

#[test]
fn etcd_over_tls_on_kaname() {
    etcd_over_tls(kaname!());
}

/// With every member in `--etcd-servers`, the API server keeps working when one member of a
/// three-member store is killed (the others still form a quorum): requests that find the
/// dead member unreachable move on to another.
fn survives_a_member_failure(flavor: Flavor) {
    let mut store = Cluster::start(flavor.clone(), 3);
    let servers: Vec<String> = (1..=3).map(|i| format!("http://{}", store.member_endpoint(i))).collect();
    let api = Apiserver::start_args(kaname_bin!(), &[format!("--etcd-servers={}", servers.join(","))]);
    api.ok(&["create", "configmap", "before", "--from-literal=a=1"]);
    store.kill(1);
    // Writes wait for a leader if the killed member led (etcd answers "request timed out"
    // during the election; the API server does not hide that).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !store.leader().is_some_and(|l| l != 1) {
        assert!(Instant::now() < deadline, "no new leader\n{}", store.log_tails(20));
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..10 {
        let name = format!("after-{i}");
        assert_eq!(
            api.ok(&["create", "configmap", &name, "--from-literal=a=1"]),
            format!("configmap/{name} created\n")
        );
    }
    assert_eq!(api.ok(&["get", "cm", "before", "-o", "name"]), "configmap/before\n");
}

#[test]
fn survives_a_member_failure_on_etcd() {
    survives_a_member_failure(Flavor::etcd());
}

#[test]
fn survives_a_member_failure_on_kaname() {
    survives_a_member_failure(kaname!());
}

/// `kubectl wait` as a script waits for a controller: for a condition and for a jsonpath value
/// that another client (here a second kubectl, as a kubelet would) writes through `/status`
/// while kubectl watches; and a wait that cannot succeed times out with kubectl's error.
fn wait_for_condition(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    api.ok(&["run", "web", "--image=nginx"]);
    let timed_out = api.kubectl(&["wait", "--for=condition=Ready", "pod/web", "--timeout=2s"]);
    assert!(!timed_out.success());
    assert_eq!(timed_out.stderr, "error: timed out waiting for the condition on pods/web\n");

    let status = r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#;
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(2));
            api.ok(&["patch", "pod", "web", "--subresource=status", "--type=merge", "-p", status]);
        });
        assert_eq!(api.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]), "pod/web condition met\n");
    });
    assert_eq!(
        api.ok(&["wait", "--for=jsonpath={.status.phase}=Running", "pod/web", "--timeout=30s"]),
        "pod/web condition met\n"
    );
}

#[test]
fn wait_for_condition_on_etcd() {
    wait_for_condition(Flavor::etcd());
}

#[test]
fn wait_for_condition_on_kaname() {
    wait_for_condition(kaname!());
}
