//! `/openapi/v2` through the real kubectl (1.33), on real etcd 3.4 and on `kaname etcd`:
//! kubectl's client-side validation reads it (protobuf) for what the v3 document cannot
//! vouch for, first of all a `kind: List`, so the CKA habit "`get -o yaml` to a file,
//! delete, `create -f` the file" works for several kinds at once; `--validate=strict` refuses
//! unknown fields with upstream's messages (client-side for a List, server-side for one
//! object); `kubectl apply` and `kubectl explain --output plaintext-openapiv2` work. Also the
//! endpoint itself: negotiation, ETag and 304, 406.
//!
//! Run: `cargo test -p kaname --test apiserver_openapi_v2`. Needs
//! scripts/install-test-deps.sh (etcd) and kubectl.

use kaname_testkit::*;

use std::process::Command;

/// An admin GET with extra headers: (status, response headers in lower case, body).
fn get(api: &Apiserver, path: &str, headers: &[&str]) -> (u16, String, Vec<u8>) {
    let dir = api.dir.path();
    let head = dir.join("headers.txt");
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "20", "-o", "-", "-D"])
        .arg(&head)
        .arg("--cacert")
        .arg(api.pki.join("ca.crt"))
        .arg("--cert")
        .arg(api.pki.join("admin.crt"))
        .arg("--key")
        .arg(api.pki.join("admin.key"));
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(format!("{}{path}", api.url())).output().expect("run curl");
    let head = std::fs::read_to_string(&head).unwrap_or_default().to_lowercase();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head, out.stdout)
}

fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).map(str::trim).unwrap_or("")
}

fn endpoint(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));

    let (code, head, body) = get(&api, "/openapi/v2", &[]);
    assert_eq!(code, 200, "{head}");
    assert_eq!(header(&head, "content-type"), "application/json");
    assert_eq!(header(&head, "vary"), "accept");
    let doc = json(&String::from_utf8(body).unwrap());
    assert_eq!(doc["swagger"], "2.0");
    assert_eq!(doc["info"]["version"], "v1.33.0");
    let gvk = &doc["definitions"]["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"];
    assert_eq!(gvk[0]["kind"], "Deployment");
    assert!(doc["definitions"]["io.k8s.api.events.v1.Event"].is_object());
    assert_eq!(
        doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]["operationId"],
        "patchCoreV1NamespacedPod"
    );

    // Upstream's ETag: the JSON's SHA-512, upper-case hex, quoted; the same for protobuf,
    // which kubectl asks for under the deprecated `@` media type.
    let etag = header(&head, "etag").to_string();
    assert_eq!(etag.len(), 130, "{etag}");
    let (code, head, pb) =
        get(&api, "/openapi/v2", &["Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf"]);
    assert_eq!(code, 200);
    assert_eq!(header(&head, "content-type"), "application/com.github.proto-openapi.spec.v2.v1.0+protobuf");
    assert_eq!(header(&head, "etag"), etag);
    assert!(pb.len() > 10_000 && pb.starts_with(&[0x0a, 0x03, b'2', b'.', b'0']), "swagger = \"2.0\" first");
    let (code, _, body) = get(&api, "/openapi/v2", &[&format!("If-None-Match: {}", etag.to_uppercase())]);
    assert_eq!((code, body.len()), (304, 0));
    assert_eq!(get(&api, "/openapi/v2", &["Accept: text/html"]).0, 406);
}

#[test]
fn endpoint_on_etcd() {
    endpoint(Flavor::etcd());
}

#[test]
fn endpoint_on_kaname() {
    endpoint(kaname!());
}

const OBJECTS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: nginx, image: "nginx:1.27", ports: [{containerPort: 80}], resources: {limits: {memory: 128Mi}}}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {color: blue}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: solo, labels: {app: solo}}
spec: {containers: [{name: c, image: busybox, command: [sleep, "3600"]}]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: leader}
spec: {holderIdentity: node-a, leaseDurationSeconds: 15}
"#;

const OBJECT_NAMES: &[&str] =
    &["deploy/web", "svc/web", "cm/settings", "secret/creds", "pod/solo", "role/reader", "lease/leader"];

/// `kubectl get` of every object in `OBJECT_NAMES` with `args`.
fn get_all<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [&["get"], OBJECT_NAMES, args].concat()
}

/// Backup and restore as CKA candidates do it, with kubectl's default (strict) validation.
fn backup_and_restore(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(OBJECTS));
    assert!(out.success(), "{}{}", out.stdout, out.stderr);

    let backup = api.ok(&get_all(&["-o", "yaml"]));
    assert!(backup.starts_with("apiVersion: v1\nitems:\n"), "{backup}");
    assert!(backup.contains("\nkind: List\n"), "{backup}");
    let file = api.dir.path().join("backup.yaml");
    std::fs::write(&file, &backup).unwrap();
    let file = file.to_str().unwrap();
    let names = api.ok(&get_all(&["-o", "name"]));
    assert_eq!(names.lines().count(), 7, "{names}");
    api.ok(&["delete", "-f", file, "--wait=false"]);
    assert_eq!(api.ok(&get_all(&["-o", "name", "--ignore-not-found"])), "");

    let restored = api.kubectl(&["create", "-f", file]);
    assert!(restored.success(), "{}{}\n{}", restored.stdout, restored.stderr, api.log());
    assert_eq!(
        restored.stdout,
        "deployment.apps/web created\nservice/web created\nconfigmap/settings created\nsecret/creds created\n\
         pod/solo created\nrole.rbac.authorization.k8s.io/reader created\nlease.coordination.k8s.io/leader created\n"
    );
    assert_eq!(api.ok(&get_all(&["-o", "name"])), names);
    assert_eq!(api.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.color}"]), "blue");

    // `apply` of the manifests (client-side apply: a strategic merge patch computed from the
    // schemas, with the same validation) and again with --server-side. (The backup itself
    // holds resourceVersions, which an apply sends as preconditions: a 409, as upstream.)
    let changed = OBJECTS.replace("color: blue", "color: green");
    let applied = api.kubectl_stdin(&["apply", "-f", "-"], Some(&changed));
    assert!(applied.success(), "{}{}", applied.stdout, applied.stderr);
    assert!(applied.stdout.contains("configmap/settings configured\n"), "{}", applied.stdout);
    assert_eq!(api.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.color}"]), "green");
    let ssa = api.kubectl_stdin(&["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(OBJECTS));
    assert!(ssa.success(), "{}{}", ssa.stdout, ssa.stderr);
    assert_eq!(api.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.color}"]), "blue");

    // A List with a field no schema has is refused by kubectl itself, from the v2 document.
    let bad = backup.replacen("  data:\n    color: blue\n", "  data:\n    color: blue\n  bogus: 1\n", 1);
    assert_ne!(bad, backup, "the backup holds the config map's data");
    let bad_file = api.dir.path().join("bad.yaml");
    std::fs::write(&bad_file, &bad).unwrap();
    let out = api.kubectl(&["create", "--validate=strict", "-f", bad_file.to_str().unwrap()]);
    assert!(!out.success());
    assert!(
        out.stderr.contains(
            "error validating data: ValidationError(ConfigMap): unknown field \"bogus\" in io.k8s.api.core.v1.ConfigMap; if you choose to ignore these errors, turn validation off with --validate=false"
        ),
        "{}",
        out.stderr
    );
    // A wrong type, too.
    let typed = backup.replacen("replicas: 2", "replicas: two", 1);
    std::fs::write(&bad_file, &typed).unwrap();
    let out = api.kubectl(&["create", "--validate=strict", "-f", bad_file.to_str().unwrap()]);
    assert!(
        out.stderr.contains("ValidationError(Deployment.spec.replicas): invalid type for io.k8s.api.apps.v1.DeploymentSpec.replicas: got \"string\", expected \"integer\""),
        "{}",
        out.stderr
    );
    // One object with an unknown field: kubectl leaves the check to the server (v3 says it
    // supports fieldValidation), which answers with upstream's strict decoding error.
    let one = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\ndata: {a: b}\nbogus: 1\n";
    let out = api.kubectl_stdin(&["create", "--validate=strict", "-f", "-"], Some(one));
    assert_eq!(
        out.stderr,
        "Error from server (BadRequest): error when creating \"STDIN\": ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"bogus\"\n"
    );

    // explain through the v2 document.
    let explained = api.ok(&["explain", "deployments.spec.replicas", "--output=plaintext-openapiv2"]);
    assert!(
        explained.contains("KIND:     Deployment") && explained.contains("FIELD:    replicas <integer>"),
        "{explained}"
    );
}

#[test]
fn backup_and_restore_on_etcd() {
    backup_and_restore(Flavor::etcd());
}

#[test]
fn backup_and_restore_on_kaname() {
    backup_and_restore(kaname!());
}
