//! etcdctl compatibility: the same etcdctl 3.4 scripts run against real etcd
//! 3.4 and against `kaname etcd`; normalized stdout, stderr and exit codes
//! must match step by step.
//!
//! Every session exists twice:
//! - `*_etcd`: etcd vs etcd. Proves the script and the masks are deterministic
//!   (the harness self-test); must always pass.
//! - `*_kaname`: etcd (expected) vs kaname (got).
//!
//! Run one group: `cargo test -p kaname --test etcdctl_compat _etcd`
//! or `... _kaname`. Needs scripts/install-test-deps.sh.

use kaname_testkit::*;

/// A linearizable read on every member: afterwards each has applied all
/// earlier writes, so member-local answers (status, hashkv) are deterministic.
fn sync_all(n: usize, key: &str) -> Vec<Step> {
    (1..=n).map(|i| step(&["get", key]).on(i)).collect()
}

macro_rules! session {
    ($etcd:ident, $kaname:ident, $members:expr, $script:expr) => {
        #[test]
        fn $etcd() {
            compare_flavors(Flavor::etcd(), Flavor::etcd(), $members, &$script($members));
        }
        #[test]
        fn $kaname() {
            compare_session(kaname!(), $members, &$script($members));
        }
    };
}

// ---------------------------------------------------------------------------
// put / get
// ---------------------------------------------------------------------------

fn get_script(n: usize) -> Vec<Step> {
    let mut s = vec![
        step(&["put", "foo", "bar"]),
        step(&["put", "foo/a", "1"]).on(m(n, 2)),
        step(&["put", "foo/b", "2"]).on(m(n, 3)),
        step(&["put", "foo/c", "3"]),
        step(&["put", "zoo", "z1"]).on(m(n, 2)),
        step(&["put", "foo/a", "11"]).on(m(n, 3)),
        step(&["put", "apple", "red"]),
        step(&["put", "foo/b", "22"]).on(m(n, 2)),
        step(&["put", "foo/b", "0"]),
        step(&["put", "sp", "a value with spaces"]),
        step(&["get", "foo"]),
        step(&["get", "foo"]).on(m(n, 2)),
        step(&["get", "foo", "-w", "json"]).on(m(n, 3)),
        step(&["get", "foo", "--prefix"]),
        step(&["get", "foo/", "--prefix", "--keys-only"]).on(m(n, 2)),
        step(&["get", "foo/", "--prefix", "--print-value-only"]),
        step(&["get", "foo/", "--prefix", "--limit", "2"]),
        step(&["get", "foo/", "--prefix", "--limit", "2", "-w", "json"]),
        step(&["get", "foo/a", "foo/c"]),
        step(&["get", "foo/a", "foo/c", "-w", "json"]),
        step(&["get", "--from-key", "foo/b"]).on(m(n, 3)),
        step(&["get", "--from-key", ""]),
        step(&["get", "--from-key", "b", "--keys-only"]),
        step(&["get", "--prefix", ""]),
        step(&["get", "foo/a", "--rev", "3"]),
        step(&["get", "foo/a", "--rev", "2"]),
        step(&["get", "foo/", "--prefix", "--rev", "4", "-w", "json"]),
        step(&["get", "foo/a", "--rev", "0"]),
        step(&["get", "foo/a", "--rev", "-5"]),
        step(&["get", "nothing"]),
        step(&["get", "nothing", "-w", "json"]).on(m(n, 2)),
        step(&["get", "nothing", "--prefix", "-w", "json"]),
        step(&["get", "foo", "-w", "fields"]),
        step(&["get", "foo/", "--prefix", "--limit", "1", "-w", "fields"]),
        step(&["get", "foo/a", "--hex"]),
        step(&["get", "foo/a", "-w", "table"]),
        step(&["get", "foo/", "--prefix", "--count-only"]),
        step(&["get", "foo", "--sort-by=BOGUS"]),
        step(&["get", "foo", "--from-key", "--prefix"]),
        step(&["get", "foo/a", "--consistency=s"]).on(m(n, 2)),
        step(&["get", "foo/", "--prefix", "--consistency=s", "-w", "json"]).on(m(n, 3)),
        step(&["get", "--from-key", "", "--order=DESCEND"]),
        step(&["get", "--from-key", "", "--order=DESCEND", "--keys-only"]),
        step(&["get", "--from-key", "", "--sort-by=MODIFY"]),
    ];
    for target in ["KEY", "CREATE", "MODIFY", "VALUE", "VERSION"] {
        for order in ["ASCEND", "DESCEND"] {
            s.push(step(&["get", "--prefix", "", &format!("--sort-by={target}"), &format!("--order={order}")]));
        }
    }
    s.extend([
        step(&["get", "foo/", "--prefix", "--sort-by=VALUE", "--order=DESCEND", "--limit", "2"]),
        step(&["get", "foo/", "--prefix", "--sort-by=VERSION", "--order=DESCEND", "--limit", "1", "-w", "json"])
            .on(m(n, 2)),
        step(&["get", "--from-key", "", "--sort-by=CREATE", "--order=DESCEND", "--keys-only", "--limit", "3"]),
        step(&["get", "foo/", "--prefix", "--sort-by=MODIFY", "--order=ASCEND", "--rev", "6", "-w", "json"]),
        step(&["get", "foo", "--rev", "1000"]),
        step(&["get", "", "--prefix", "--limit", "1", "-w", "json"]).on(m(n, 3)),
    ]);
    s
}

session!(get_1m_etcd, get_1m_kaname, 1, get_script);
session!(get_3m_etcd, get_3m_kaname, 3, get_script);

// ---------------------------------------------------------------------------
// put --prev-kv / del
// ---------------------------------------------------------------------------

fn put_del_script(n: usize) -> Vec<Step> {
    vec![
        step(&["put", "k1", "v1", "--prev-kv"]),
        step(&["put", "k1", "v2", "--prev-kv"]).on(m(n, 2)),
        step(&["put", "k1", "v3", "--prev-kv", "-w", "json"]),
        step(&["put", "k2", "v1", "-w", "json"]).on(m(n, 3)),
        step(&["put", "k2", "--ignore-value"]),
        step(&["put", "k2", "--ignore-value", "--prev-kv", "-w", "json"]),
        step(&["put", "nokey", "--ignore-value"]).on(m(n, 2)),
        step(&["put", "k3", ""]),
        step(&["get", "k3", "-w", "json"]),
        step(&["put", "", "v"]),
        step(&["put", "", "v"]).on(m(n, 3)),
        step(&["put", "onlykey"]).stdin(""),
        step(&["put", "fromstdin"]).stdin("value read from stdin"),
        step(&["get", "fromstdin"]),
        step(&["del", "k1"]),
        step(&["del", "k1"]).on(m(n, 2)),
        step(&["del", "nonexistent", "-w", "json"]),
        step(&["put", "d/1", "a"]),
        step(&["put", "d/2", "b"]).on(m(n, 2)),
        step(&["put", "d/3", "c"]).on(m(n, 3)),
        step(&["put", "d0", "x"]),
        step(&["put", "e", "y"]),
        step(&["del", "d/", "--prefix"]).on(m(n, 2)),
        step(&["get", "d", "--prefix"]),
        step(&["put", "r/1", "one"]),
        step(&["put", "r/2", "two"]),
        step(&["put", "r/3", "three"]),
        step(&["del", "r/1", "--prev-kv"]),
        step(&["del", "r/2", "--prev-kv", "-w", "json"]).on(m(n, 3)),
        step(&["del", "r/", "--prefix", "--prev-kv"]),
        step(&["del", "r/", "--prefix", "--prev-kv", "-w", "json"]),
        step(&["put", "x1", "1"]),
        step(&["put", "x2", "2"]),
        step(&["put", "x3", "3"]),
        step(&["del", "--from-key", "x2", "--prev-kv"]).on(m(n, 2)),
        step(&["get", "--from-key", "x"]),
        step(&["put", "a", "1"]),
        step(&["put", "b", "2"]),
        step(&["put", "c", "3"]),
        step(&["del", "a", "c"]),
        step(&["get", "--from-key", ""]),
        step(&["del", ""]),
        step(&["del", "a", "--from-key", "--prefix"]),
        step(&["del", "k2", "-w", "fields"]),
        step(&["get", "--from-key", "", "-w", "json"]).on(m(n, 3)),
        step(&["del", "--prefix", ""]),
        step(&["get", "--from-key", "", "-w", "json"]),
        step(&["del", "--from-key", ""]),
        step(&["put", "after", "all", "-w", "json"]).on(m(n, 2)),
        step(&["get", "after", "-w", "json"]).on(m(n, 3)),
    ]
}

session!(put_del_1m_etcd, put_del_1m_kaname, 1, put_del_script);
session!(put_del_3m_etcd, put_del_3m_kaname, 3, put_del_script);

// ---------------------------------------------------------------------------
// txn
// ---------------------------------------------------------------------------

fn txn_script(n: usize) -> Vec<Step> {
    vec![
        step(&["put", "k", "v"]),
        step(&["put", "n", "0"]),
        // success branch
        txn("mod(\"k\") > \"0\"\nvalue(\"k\") = \"v\"\n\nput k v2\nget k\n\nput k fail\n\n"),
        // failure branch
        txn("version(\"k\") > \"5\"\n\nput s 1\n\nput f 1\nget f\n\n").on(m(n, 2)),
        txn("create(\"k\") < \"5\"\nversion(\"k\") = \"2\"\n\nput k v3 --prev-kv\nget k\n\nput f 2\n\n").on(m(n, 3)),
        step(&["txn", "-w", "json"]).stdin("create(\"k\") < \"5\"\n\nput k v4\nget k\ndel n\n\nput f 3\n\n"),
        step(&["txn", "-w", "json"]).stdin("mod(\"k\") = \"0\"\n\nput t 1\n\nget k\nput f 4 --prev-kv\ndel f --prev-kv\n\n").on(m(n, 2)),
        step(&["txn", "-w", "fields"]).stdin("value(\"k\") != \"x\"\n\nput g 1\nget g\n\n\n"),
        step(&["txn", "--interactive=false"]).stdin("mod(\"zz\") = \"0\"\n\nput zz 1\n\nput zz 2\n\n"),
        step(&["txn", "--interactive=false"]).stdin("mod(\"zz\") = \"0\"\n\nput zz 1\n\nput zz 2\n\n").on(m(n, 3)),
        step(&["txn", "--interactive=false", "-w", "json"]).stdin("value(\"zz\") = \"2\"\n\ndel zz --prev-kv\n\n\n"),
        // compares on a missing key
        txn("mod(\"missing\") = \"0\"\nversion(\"missing\") = \"0\"\ncreate(\"missing\") = \"0\"\n\nput m yes\n\nput m no\n\n"),
        txn("value(\"missing\") = \"\"\n\nput m2 yes\n\nput m2 no\n\n"),
        // ranges and reads of own writes inside a txn
        step(&["put", "p/1", "a"]),
        step(&["put", "p/2", "b"]),
        step(&["txn", "-w", "json"]).stdin("\nget p --prefix --limit 1\nput q 1\nget q\n\n\n").on(m(n, 2)),
        txn("\nget p --prefix\nput k v5 --prev-kv\ndel p/1 --prev-kv\n\n\n"),
        txn("\ndel q\ndel q\n\n\n"),
        txn("\nput k --ignore-value\nget k --print-value-only\n\n\n"),
        txn("version(\"k\") = \"6\"\ncreate(\"k\") = \"2\"\nmod(\"k\") > \"10\"\n\nget k\n\nget n\n\n").on(m(n, 3)),
        // empty txn, txn on revisions
        txn("\n\n\n"),
        step(&["txn", "-w", "json"]).stdin("\n\n\n"),
        txn("value(\"k\") = \"nope\"\n\n\n\n"),
        txn("\nget k --rev 2\n\n\n"),
        // client-side parse errors
        txn("bogus\n\n"),
        txn("mod(\"k\") = \"0\"\n\nput zz 1\n"),
        txn("\nfrobnicate k\n\n\n"),
        step(&["txn", "-w", "table"]).stdin("\nput d 1\n\n\n"),
        step(&["get", "--from-key", "", "-w", "json"]).on(m(n, 2)),
    ]
}

session!(txn_1m_etcd, txn_1m_kaname, 1, txn_script);
session!(txn_3m_etcd, txn_3m_kaname, 3, txn_script);

// ---------------------------------------------------------------------------
// compaction
// ---------------------------------------------------------------------------

fn compaction_script(n: usize) -> Vec<Step> {
    let mut s: Vec<Step> = (1..=6).map(|i| step(&["put", "c", &format!("v{i}")])).collect();
    s.extend([
        step(&["put", "other", "o"]),
        step(&["compaction", "4"]),
        step(&["compaction", "4"]),
        step(&["compaction", "3"]).on(m(n, 2)),
        step(&["compaction", "100"]),
        step(&["get", "c", "--rev", "3"]),
        step(&["get", "c", "--rev", "3", "-w", "json"]).on(m(n, 3)),
        step(&["get", "c", "--rev", "4"]),
        step(&["get", "c", "--rev", "5", "-w", "json"]),
        step(&["get", "c", "--rev", "8"]),
        step(&["get", "c", "--rev", "9"]),
        step(&["get", "c", "--rev", "100"]).on(m(n, 2)),
        step(&["get", "c", "-w", "json"]),
        step(&["endpoint", "hashkv", "-w", "json"]),
        step(&["endpoint", "hashkv", "--rev", "3"]),
        step(&["endpoint", "hashkv", "--rev", "100"]),
        step(&["compaction", "6", "--physical"]).on(m(n, 3)),
        step(&["get", "c", "--rev", "5"]),
        step(&["get", "c", "--rev", "6"]),
        step(&["endpoint", "hashkv", "-w", "json"]),
        step(&["del", "c"]),
        step(&["get", "c", "--rev", "7"]),
        step(&["get", "c"]),
        step(&["compaction", "1"]),
        step(&["compaction", "0"]),
        step(&["compaction", "9"]),
        step(&["get", "c", "--rev", "8"]),
        step(&["get", "--from-key", "", "-w", "json"]),
        txn("\nget c --rev 3\n\n\n"),
        step(&["compaction", "abc"]),
        step(&["compaction"]),
    ]);
    s
}

session!(compaction_1m_etcd, compaction_1m_kaname, 1, compaction_script);

// ---------------------------------------------------------------------------
// request validation errors
// ---------------------------------------------------------------------------

fn puts(prefix: &str, count: usize) -> String {
    (1..=count).map(|i| format!("put {prefix}{i} v\n")).collect()
}

fn errors_script(_n: usize) -> Vec<Step> {
    let compares: String = (1..=129).map(|i| format!("mod(\"c{i}\") = \"0\"\n")).collect();
    vec![
        step(&["put", "", "v"]),
        step(&["get", ""]),
        step(&["del", ""]),
        // 128 ops is the limit per branch; 129 is too many
        txn(&format!("\n{}\n\n", puts("ok/", 128))),
        step(&["get", "ok/", "--prefix", "--limit", "1", "-w", "json"]),
        txn(&format!("\n{}\n\n", puts("bad/", 129))),
        txn(&format!("\n\n{}\n", puts("badf/", 129))),
        txn(&format!("{compares}\nput a 1\n\n\n")),
        txn(&format!("\n{}\n{}\n", puts("s/", 100), puts("f/", 100))),
        step(&["get", "bad/", "--prefix", "-w", "json"]),
        // duplicate keys in one branch
        txn("\nput d 1\nput d 2\n\n\n"),
        txn("\n\nput d 1\nput d 2\n\n"),
        txn("\nput d 1\ndel d\n\n\n"),
        txn("\ndel d --prefix\nput d/9 1\n\n\n"),
        txn("\ndel a z\nput m 1\n\n\n"),
        txn("\ndel q\ndel q\n\n\n"),
        txn("\nput q 1\n\nput q 2\n\n"),
        txn("\nput q 1\nget q\nput r 1\n\n\n"),
        step(&["txn", "-w", "json"]).stdin("\nput d 1\nput d 2\n\n\n"),
        // request size: 1.5 MiB is etcd's default --max-request-bytes
        step(&["put", "big"]).stdin(&"a".repeat(1_600_000)),
        step(&["put", "medium"]).stdin(&"b".repeat(100_000)),
        step(&["get", "medium", "--print-value-only"]),
        step(&["get", "--from-key", "", "--keys-only", "--limit", "5"]),
    ]
}

session!(errors_1m_etcd, errors_1m_kaname, 1, errors_script);

// ---------------------------------------------------------------------------
// cluster information: member list, endpoint status / health / hashkv
// ---------------------------------------------------------------------------

fn cluster_info_script(n: usize) -> Vec<Step> {
    let multi = n > 1;
    let ml = |s: Step| if multi { s.unordered() } else { s };
    let mut s = vec![
        step(&["put", "a", "1"]).on(m(n, 2)),
        step(&["put", "b", "2"]).on(m(n, 3)),
        ml(step(&["member", "list"])),
        ml(step(&["member", "list", "-w", "table"]).on(m(n, 2))),
        ml(step(&["member", "list", "-w", "json"]).on(m(n, 3))),
        ml(step(&["member", "list", "-w", "fields"])),
    ];
    s.extend(sync_all(n, "b"));
    for i in 1..=n {
        s.extend([
            step(&["endpoint", "status"]).on(i),
            step(&["endpoint", "status", "-w", "table"]).on(i),
            step(&["endpoint", "status", "-w", "json"]).on(i),
            step(&["endpoint", "status", "-w", "fields"]).on(i),
            step(&["endpoint", "health"]).on(i),
            step(&["endpoint", "health", "-w", "json"]).on(i),
            step(&["endpoint", "health", "-w", "table"]).on(i),
            step(&["endpoint", "hashkv"]).on(i),
            step(&["endpoint", "hashkv", "-w", "json"]).on(i),
            step(&["endpoint", "hashkv", "-w", "table"]).on(i),
            step(&["endpoint", "hashkv", "-w", "fields"]).on(i),
            step(&["endpoint", "hashkv", "--rev", "2"]).on(i),
        ]);
    }
    s.extend([
        step(&["endpoint", "status"]).all(),
        step(&["endpoint", "status", "-w", "json"]).all(),
        step(&["endpoint", "hashkv"]).all(),
        step(&["endpoint", "hashkv", "-w", "json"]).all(),
        step(&["endpoint", "health"]).all().unordered(),
        step(&["endpoint", "health", "-w", "json"]).all().unordered(),
        step(&["endpoint", "status", "--cluster"]).unordered(),
        step(&["endpoint", "status", "--cluster", "-w", "table"]).on(m(n, 2)).unordered(),
        step(&["endpoint", "status", "--cluster", "-w", "json"]).on(m(n, 3)).unordered(),
        step(&["endpoint", "health", "--cluster"]).unordered(),
        step(&["endpoint", "health", "--cluster", "-w", "json"]).on(m(n, 2)).unordered(),
        step(&["endpoint", "hashkv", "--cluster"]).unordered(),
        step(&["endpoint", "hashkv", "--cluster", "-w", "json"]).on(m(n, 3)).unordered(),
        step(&["endpoint", "hashkv", "--cluster", "-w", "table"]).unordered(),
        step(&["put", "c", "3"]).on(m(n, 3)),
        step(&["compaction", "3"]),
    ]);
    s.extend(sync_all(n, "c"));
    s.extend([
        step(&["endpoint", "hashkv", "--cluster", "-w", "json"]).unordered(),
        step(&["endpoint", "hashkv", "--rev", "4"]).all(),
        step(&["endpoint", "hashkv", "--rev", "2"]).on(m(n, 2)),
    ]);
    s
}

session!(cluster_info_1m_etcd, cluster_info_1m_kaname, 1, cluster_info_script);
session!(cluster_info_3m_etcd, cluster_info_3m_kaname, 3, cluster_info_script);

// ---------------------------------------------------------------------------
// Checks beyond output equality
// ---------------------------------------------------------------------------

/// etcd lists members sorted by ID (so `--cluster` commands visit them in that
/// order); the sessions above sort lines, so check the order here.
fn member_list_sorted(flavor: Flavor) {
    let c = Cluster::start(flavor.clone(), 3);
    for i in 1..=3 {
        let out = etcdctl(&c.member_endpoint(i), &["member", "list", "-w", "json"], None);
        assert!(out.success(), "member list on m{i}: {}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        let ids: Vec<u64> = v["members"].as_array().unwrap().iter().map(|m| m["ID"].as_u64().unwrap()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids.len(), 3, "{}", out.stdout);
        assert_eq!(ids, sorted, "{} lists members in ID order", flavor.label());
        assert!(v["header"].get("revision").is_none(), "member list header carries no revision: {}", out.stdout);
    }
}

#[test]
fn member_list_sorted_by_id_etcd() {
    member_list_sorted(Flavor::etcd());
}

#[test]
fn member_list_sorted_by_id_kaname() {
    member_list_sorted(kaname!());
}

/// Pure normalization checks on real etcd 3.4.23 output (no processes).
#[test]
fn normalize_masks_etcd_output() {
    let status = "127.0.0.1:23791, bb7d371eb677b2bf, 3.4.23, 20 kB, true, false, 2, 6, 6, \n";
    assert_eq!(normalize(status), "127.0.0.1:<port>, <hex-id>, <version>, <db-size>, true, false, <n>, <n>, <n>, \n");
    let json = r#"{"header":{"cluster_id":10209395086029371855,"member_id":13510015062231200447,"revision":3,"raft_term":2},"kvs":[{"key":"YQ==","create_revision":2,"mod_revision":2,"version":1,"value":"MQ=="}],"count":1}"#;
    assert_eq!(
        normalize(json),
        r#"{"count":1,"header":{"cluster_id":"<cluster-id>","member_id":"<member-id>","raft_term":"<n>","revision":3},"kvs":[{"create_revision":2,"key":"YQ==","mod_revision":2,"value":"MQ==","version":1}]}"#
    );
    assert_eq!(
        normalize("127.0.0.1:23791 is healthy: successfully committed proposal: took = 1.717121ms"),
        "127.0.0.1:<port> is healthy: successfully committed proposal: took = <duration>"
    );
    let hashes = "127.0.0.1:1, 1827592406\n127.0.0.1:2, 1827592406\n127.0.0.1:3, 5\n";
    assert_eq!(
        normalize(hashes),
        "127.0.0.1:<port>, <hash#1>\n127.0.0.1:<port>, <hash#1>\n127.0.0.1:<port>, <hash#2>\n"
    );
    let table = "+-----+------+\n|  ENDPOINT | TOOK |\n+--+--+\n| 127.0.0.1:5 | 794.891µs |\n+--+--+\n";
    assert_eq!(
        normalize(table),
        "+---+---+\n| ENDPOINT | TOOK |\n+---+---+\n| 127.0.0.1:<port> | <duration> |\n+---+---+\n"
    );
    let fields = "\"ClusterID\" : 10209395086029371855\n\"MemberID\" : 0\n\"RaftTerm\" : 2\n\"Version\" : \"3.4.23\"\n\"DBSize\" : 20480\n";
    assert_eq!(
        normalize(fields),
        "\"ClusterID\" : <cluster-id>\n\"MemberID\" : 0\n\"RaftTerm\" : <n>\n\"Version\" : \"<version>\"\n\"DBSize\" : <db-size>\n"
    );
    // Values, revisions and IP addresses are left alone.
    assert_eq!(normalize("a\n1\nhttp://127.0.0.1:2380\n"), "a\n1\nhttp://127.0.0.1:<port>\n");
    let warn = r#"{"level":"warn","ts":"2026-11-27T06:52:16.192Z","caller":"clientv3/retry_interceptor.go:62","msg":"retrying of unary invoker failed","target":"endpoint://client-b31e05cc-0ddb-489d-96be-90c4e5bf12d1/127.0.0.1:23791","attempt":0,"error":"rpc error: code = InvalidArgument desc = etcdserver: key is not provided"}"#;
    assert_eq!(
        normalize(warn),
        r#"{"attempt":0,"caller":"clientv3/retry_interceptor.go:62","error":"rpc error: code = InvalidArgument desc = etcdserver: key is not provided","level":"warn","msg":"retrying of unary invoker failed","target":"endpoint://client-<uuid>/127.0.0.1:<port>","ts":"<ts>"}"#
    );
}
