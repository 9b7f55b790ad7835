//! `kaname apiserver`'s PATCH, apply and OpenAPI, driven by the real kubectl (1.33) on real
//! etcd 3.4 and on `kaname etcd`: the three patch types (a strategic merge patch merging a
//! container list by name), `label`, `annotate`, `edit` through `KUBE_EDITOR`, client-side
//! `apply -f` twice with a change, server-side apply with managedFields, a conflict between
//! two field managers and `--force-conflicts`, `explain`, and the error paths (a failing
//! JSON patch test, unknown fields) as kubectl prints them.
//!
//! Run: `cargo test -p kaname --test apiserver_patch`. Needs scripts/install-test-deps.sh
//! (etcd) and kubectl.

use kaname_testkit::*;

use serde_json::Value;

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| (m["manager"].as_str().unwrap().to_string(), m["operation"].as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn fields_of<'a>(obj: &'a Value, manager: &str) -> &'a Value {
    let all = obj["metadata"]["managedFields"].as_array().expect("managedFields");
    &all.iter().find(|m| m["manager"] == manager).unwrap_or_else(|| panic!("no manager {manager} in {obj}"))["fieldsV1"]
}

const TWO_CONTAINERS: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: nginx
    image: nginx:1.27
  - name: sidecar
    image: busybox:1.36
";

/// Every patch type through `kubectl patch`, plus `label`, `annotate` and `edit`, each
/// recorded in managedFields under kubectl's manager name for the command.
fn patch_types(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    let dir = api.dir.path().to_path_buf();
    let pod = dir.join("pod.yaml");
    std::fs::write(&pod, TWO_CONTAINERS).unwrap();
    assert_eq!(api.ok(&["create", "-f", pod.to_str().unwrap()]), "pod/web created\n");
    let created = json(&api.ok(&["get", "pod", "web", "-o", "json", "--show-managed-fields"]));
    assert_eq!(managers(&created), [("kubectl-create".to_string(), "Update".to_string())]);
    assert_eq!(
        fields_of(&created, "kubectl-create")["f:spec"]["f:containers"]["k:{\"name\":\"sidecar\"}"],
        json(r#"{".": {}, "f:image": {}, "f:name": {}}"#)
    );

    // Strategic merge patch: the containers list merges by name, so naming one container
    // changes only that one (a merge patch would replace the list, dropping nginx).
    assert_eq!(
        api.ok(&[
            "patch",
            "pod",
            "web",
            "-p",
            r#"{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.37"}]}}"#
        ]),
        "pod/web patched\n"
    );
    let images = api.ok(&["get", "pod", "web", "-o", "jsonpath={.spec.containers[*].image}"]);
    assert_eq!(images, "nginx:1.27 busybox:1.37");
    let p = json(&api.ok(&["get", "pod", "web", "-o", "json", "--show-managed-fields"]));
    assert_eq!(
        fields_of(&p, "kubectl-patch")["f:spec"]["f:containers"],
        json(r#"{"k:{\"name\":\"sidecar\"}": {"f:image": {}}}"#)
    );
    // ...and the creator no longer owns the image it does not set any more.
    assert_eq!(
        fields_of(&p, "kubectl-create")["f:spec"]["f:containers"]["k:{\"name\":\"sidecar\"}"],
        json(r#"{".": {}, "f:name": {}}"#)
    );
    // A merge patch replaces the list: without nginx the pod update is refused.
    let err = api.fails(&[
        "patch",
        "pod",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"containers":[{"name":"sidecar","image":"busybox:1"}]}}"#,
    ]);
    assert!(err.starts_with("The Pod \"web\" is invalid: spec: Forbidden: pod updates may not change fields"), "{err}");

    // JSON patch, then a failing `test` operation and a path that is not there.
    api.ok(&["create", "configmap", "settings", "--from-literal=color=blue"]);
    assert_eq!(
        api.ok(&[
            "patch",
            "cm",
            "settings",
            "--type=json",
            "-p",
            r#"[{"op":"test","path":"/data/color","value":"blue"},{"op":"add","path":"/data/size","value":"L"}]"#
        ]),
        "configmap/settings patched\n"
    );
    assert_eq!(api.ok(&["get", "cm", "settings", "-o", "jsonpath={.data}"]), r#"{"color":"blue","size":"L"}"#);
    assert_eq!(
        api.fails(&[
            "patch",
            "cm",
            "settings",
            "--type=json",
            "-p",
            r#"[{"op":"test","path":"/data/color","value":"red"}]"#
        ]),
        "The request is invalid: : testing value /data/color failed: test failed\n"
    );
    assert_eq!(
        api.fails(&["patch", "cm", "settings", "--type=json", "-p", r#"[{"op":"remove","path":"/data/nope"}]"#]),
        "The request is invalid: : error in remove for path: '/data/nope': Unable to remove nonexistent key: nope: missing value\n"
    );
    assert_eq!(
        api.ok(&["patch", "cm", "settings", "--type=merge", "-p", r#"{"data":{"size":null}}"#]),
        "configmap/settings patched\n"
    );
    assert_eq!(api.ok(&["get", "cm", "settings", "-o", "jsonpath={.data}"]), r#"{"color":"blue"}"#);

    assert_eq!(api.ok(&["label", "cm", "settings", "tier=front"]), "configmap/settings labeled\n");
    assert_eq!(api.ok(&["annotate", "cm", "settings", "owner=team-a"]), "configmap/settings annotated\n");

    // `kubectl edit` runs $KUBE_EDITOR on the object and sends the difference as a patch.
    let editor = dir.join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/color: blue/color: green/' \"$1\"\n").unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let edited = std::process::Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .env("KUBE_EDITOR", &editor)
        .arg(format!("--kubeconfig={}", api.kubeconfig.display()))
        .arg(format!("--cache-dir={}", dir.join("cache").display()))
        .args(["edit", "cm", "settings"])
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&edited.stdout), String::from_utf8_lossy(&edited.stderr));
    assert!(edited.status.success(), "{out}{err}");
    assert_eq!(out, "configmap/settings edited\n");

    let cm = json(&api.ok(&["get", "cm", "settings", "-o", "json", "--show-managed-fields"]));
    assert_eq!(cm["data"]["color"], "green");
    let mut names: Vec<String> = managers(&cm).into_iter().map(|m| m.0).collect();
    names.sort();
    // kubectl-patch added data.size and removed it again: it owns nothing, so it is gone.
    assert_eq!(names, ["kubectl-annotate", "kubectl-create", "kubectl-edit", "kubectl-label"]);
    assert_eq!(fields_of(&cm, "kubectl-create"), &json(r#"{"f:data": {}}"#));
    assert_eq!(fields_of(&cm, "kubectl-edit"), &json(r#"{"f:data": {"f:color": {}}}"#));
    assert_eq!(fields_of(&cm, "kubectl-label"), &json(r#"{"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}}"#));
}

#[test]
fn patch_types_on_etcd() {
    patch_types(Flavor::etcd());
}

#[test]
fn patch_types_on_kaname() {
    patch_types(kaname!());
}

/// `kubectl apply -f` twice with a change in between, client-side (a three-way strategic
/// merge patch from the last-applied annotation) and server-side (managedFields), then a
/// second field manager's conflict and `--force-conflicts`.
fn apply(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    let dir = api.dir.path().to_path_buf();
    let file = dir.join("app.yaml");
    let f = file.to_str().unwrap();

    // Client-side: the second apply changes an image, drops a data key and a label.
    std::fs::write(&file, TWO_CONTAINERS).unwrap();
    assert_eq!(api.ok(&["apply", "-f", f]), "pod/web created\n");
    std::fs::write(&file, TWO_CONTAINERS.replace("nginx:1.27", "nginx:1.28")).unwrap();
    assert_eq!(api.ok(&["apply", "-f", f]), "pod/web configured\n");
    assert_eq!(api.ok(&["get", "pod", "web", "-o", "jsonpath={.spec.containers[*].image}"]), "nginx:1.28 busybox:1.36");
    assert_eq!(api.ok(&["apply", "-f", f]), "pod/web unchanged\n");
    let p = json(&api.ok(&["get", "pod", "web", "-o", "json", "--show-managed-fields"]));
    assert_eq!(managers(&p), [("kubectl-client-side-apply".to_string(), "Update".to_string())]);

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  labels:\n    a: \"1\"\n    b: \"2\"\ndata:\n  k1: v1\n  k2: v2\n";
    std::fs::write(&file, cm).unwrap();
    api.ok(&["apply", "-f", f]);
    std::fs::write(&file, cm.replace("    b: \"2\"\n", "").replace("  k2: v2\n", "  k3: v3\n")).unwrap();
    assert_eq!(api.ok(&["apply", "-f", f]), "configmap/app configured\n");
    let got = json(&api.ok(&["get", "cm", "app", "-o", "json", "--show-managed-fields"]));
    assert_eq!(got["data"], json(r#"{"k1": "v1", "k3": "v3"}"#));
    assert_eq!(got["metadata"]["labels"], json(r#"{"a": "1"}"#));

    // Server-side: created through PATCH, owned by the manager "kubectl" (operation Apply).
    let ssa = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  labels:\n    app: demo\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    std::fs::write(&file, ssa).unwrap();
    assert_eq!(api.ok(&["apply", "--server-side", "-f", f]), "configmap/ssa serverside-applied\n");
    let obj = json(&api.ok(&["get", "cm", "ssa", "-o", "json", "--show-managed-fields"]));
    assert_eq!(managers(&obj), [("kubectl".to_string(), "Apply".to_string())]);
    assert_eq!(
        fields_of(&obj, "kubectl"),
        &json(r#"{"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}"#)
    );
    // Second apply without b: b goes (nobody else owns it); a changes.
    std::fs::write(&file, ssa.replace("  b: \"2\"\n", "").replace("a: \"1\"", "a: \"10\"")).unwrap();
    assert_eq!(api.ok(&["apply", "--server-side", "-f", f]), "configmap/ssa serverside-applied\n");
    assert_eq!(api.ok(&["get", "cm", "ssa", "-o", "jsonpath={.data}"]), r#"{"a":"10"}"#);

    // Another manager setting a's value differently conflicts; --force-conflicts takes it.
    let other = dir.join("other.yaml");
    std::fs::write(&other, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"20\"\n").unwrap();
    let o = other.to_str().unwrap();
    let err = api.fails(&["apply", "--server-side", "--field-manager=ops", "-f", o]);
    assert!(
        err.starts_with(&format!(
            "error: Apply failed with 1 conflict: conflict with \"kubectl\": .data.a\nPlease review the fields above--they currently have other managers."
        )),
        "{err}"
    );
    assert_eq!(
        api.ok(&["apply", "--server-side", "--field-manager=ops", "--force-conflicts", "-f", o]),
        "configmap/ssa serverside-applied\n"
    );
    let obj = json(&api.ok(&["get", "cm", "ssa", "-o", "json", "--show-managed-fields"]));
    assert_eq!(obj["data"]["a"], "20");
    assert_eq!(fields_of(&obj, "ops"), &json(r#"{"f:data": {"f:a": {}}}"#));
    assert_eq!(fields_of(&obj, "kubectl"), &json(r#"{"f:metadata": {"f:labels": {"f:app": {}}}}"#));

    // Raw requests for what kubectl does not send: apply without a field manager, and an
    // unknown field in an applied configuration.
    let (code, st) = raw(
        &api,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/ssa",
        "application/apply-patch+yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n",
    );
    assert_eq!(code, "422");
    assert_eq!(
        st["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let (code, st) = raw(
        &api,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/ssa?fieldManager=x",
        "application/apply-patch+yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\nbogus: 1\n",
    );
    assert_eq!(code, "400");
    assert_eq!(
        st["message"],
        "failed to create typed patch object (/v1, Kind=ConfigMap): .bogus: field not declared in schema"
    );
    let (code, st) = raw(&api, "PATCH", "/api/v1/namespaces/default/configmaps/ssa", "text/plain", "{}");
    assert_eq!((code.as_str(), st["reason"].as_str()), ("415", Some("UnsupportedMediaType")));
}

#[test]
fn apply_on_etcd() {
    apply(Flavor::etcd());
}

#[test]
fn apply_on_kaname() {
    apply(kaname!());
}

/// `kubectl explain` reads the schemas from /openapi/v3; `--validate=strict` (kubectl's
/// default) rejects unknown fields, nested ones too.
fn explain_and_validate(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    let out = api.ok(&["explain", "pod.spec.containers"]);
    assert!(out.starts_with("KIND:       Pod\nVERSION:    v1\n\nFIELD: containers <[]Container>\n"), "{out}");
    assert!(out.contains("DESCRIPTION:\n    List of containers belonging to the pod."), "{out}");
    assert!(out.contains("\n  image\t<string>\n"), "{out}");
    assert!(out.contains("\n  name\t<string> -required-\n") || out.contains("\n  name\t<string>\n"), "{out}");
    let out = api.ok(&["explain", "configmaps"]);
    assert!(out.starts_with("KIND:       ConfigMap\nVERSION:    v1\n"), "{out}");
    assert!(out.contains("\n  data\t<map[string]string>\n"), "{out}");
    let err = api.fails(&["explain", "pod.spec.nope"]);
    assert_eq!(err, "error: field \"nope\" does not exist\n");

    let file = api.dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        TWO_CONTAINERS.replace("    image: nginx:1.27\n", "    image: nginx:1.27\n    imagePullPolice: Always\n"),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    assert_eq!(
        api.fails(&["create", "-f", f]),
        format!("Error from server (BadRequest): error when creating \"{f}\": Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: unknown field \"spec.containers[0].imagePullPolice\"\n")
    );
    let err = api.fails(&["apply", "-f", f]);
    assert!(err.contains("unknown field \"spec.containers[0].imagePullPolice\""), "{err}");
}

#[test]
fn explain_and_validate_on_etcd() {
    explain_and_validate(Flavor::etcd());
}

#[test]
fn explain_and_validate_on_kaname() {
    explain_and_validate(kaname!());
}

/// A request with the admin certificate: (status code, Status body).
fn raw(api: &Apiserver, method: &str, path: &str, content_type: &str, body: &str) -> (String, Value) {
    let (code, body) = api.admin_send(method, path, Some((content_type, body)));
    (code.to_string(), json(&body))
}

/// Server-side dry run (`?dryRun=All`) through kubectl's `--dry-run=server` and `kubectl
/// diff`: create, label, apply (client- and server-side), scale and delete answer as the
/// real write would, a taken name is still an AlreadyExists, and afterwards the store holds
/// exactly what it held before (checked by the objects and their resourceVersions). A
/// dryRun value other than `All` is refused as upstream refuses it.
fn dry_run(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    api.ok(&["create", "configmap", "kept", "--from-literal=k=v"]);
    let before = json(&api.ok(&["get", "cm", "kept", "-o", "json"]));

    let created =
        json(&api.ok(&["create", "configmap", "ghost", "--from-literal=a=b", "--dry-run=server", "-o", "json"]));
    assert_eq!(created["data"]["a"], "b");
    assert_eq!(created["metadata"]["uid"].as_str().map(str::len), Some(36), "{created}");
    assert!(created["metadata"]["resourceVersion"].is_null(), "{created}");
    assert!(api.fails(&["get", "cm", "ghost"]).contains("configmaps \"ghost\" not found"));
    let taken = api.fails(&["create", "configmap", "kept", "--dry-run=server"]);
    assert_eq!(taken, "error: failed to create configmap: configmaps \"kept\" already exists\n");

    assert_eq!(
        api.ok(&["label", "cm", "kept", "tier=x", "--dry-run=server"]),
        "configmap/kept labeled (server dry run)\n"
    );
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\ndata:\n  k: changed\n";
    let out = api
        .kubectl_stdin(&["apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-"], Some(manifest));
    assert_eq!(out.stdout, "configmap/kept serverside-applied (server dry run)\n", "{}", out.stderr);
    // `kubectl diff` is a server-side dry-run apply compared with the live object.
    let diff = api.kubectl_stdin(&["diff", "-f", "-"], Some(manifest));
    assert_eq!(diff.status.code(), Some(1), "{}{}", diff.stdout, diff.stderr);
    assert!(diff.stdout.contains("-  k: v\n+  k: changed\n"), "{}", diff.stdout);
    assert!(diff.stdout.lines().all(|l| !l.starts_with("+  resourceVersion")), "{}", diff.stdout);
    assert_eq!(api.ok(&["delete", "cm", "kept", "--dry-run=server"]), "configmap \"kept\" deleted (server dry run)\n");
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n";
    let out =
        api.kubectl_stdin(&["create", "--dry-run=server", "-o", "jsonpath={.spec.clusterIP}", "-f", "-"], Some(svc));
    assert!(out.stdout.parse::<std::net::IpAddr>().is_ok(), "{}{}", out.stdout, out.stderr);

    api.ok(&["create", "deployment", "web", "--image=nginx"]);
    assert_eq!(
        api.ok(&["scale", "deployment", "web", "--replicas=3", "--dry-run=server"]),
        "deployment.apps/web scaled (server dry run)\n"
    );
    assert_eq!(api.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "1");

    let after = json(&api.ok(&["get", "cm", "kept", "-o", "json"]));
    assert_eq!(after, before, "a dry run changed the stored object");
    // Nothing the dry runs "created" exists: no configmap ghost, no service web.
    assert_eq!(api.ok(&["get", "cm,svc", "-o", "name"]), "configmap/kept\n");

    let (code, body) = api.admin_curl("POST", "/api/v1/namespaces/default/configmaps?dryRun=Sure");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains(r#""message":"CreateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{\"Sure\"}: supported values: \"All\"""#),
        "{body}"
    );
}

#[test]
fn dry_run_on_etcd() {
    dry_run(Flavor::etcd());
}

#[test]
fn dry_run_on_kaname() {
    dry_run(kaname!());
}
