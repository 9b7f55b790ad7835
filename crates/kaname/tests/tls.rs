//! TLS on client and peer URLs, judged against real etcd 3.4 with real etcdctl 3.4: the same
//! certificates (made here with kaname-pki), the same flags and the same etcdctl commands against
//! both; normalized outputs and exit codes must match.
//!
//! The shared harness' `Cluster` speaks plain http, so this file keeps a small TLS cluster of
//! its own, started with the harness's member pieces (`MemberFlags`, `spawn_logged`, `log_tails`).

use kaname_testkit::*;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use kaname_pki::{Ca, CertSpec, ExtKeyUsage, KeyUsage};

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// PEM files of a test PKI: a CA, a server/peer certificate for 127.0.0.1 and localhost, a
/// client certificate (CN=root), and a client certificate from another CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::Builder::new().prefix("kaname-tls-pki-").tempdir().unwrap();
        let ca = make_ca("kaname test CA");
        let other_ca = make_ca("some other CA");
        let write = |name: &str, text: String| fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca.cert_pem().to_string());
        let server = leaf("server", &["127.0.0.1", "localhost"], true, &ca);
        write("server.pem", server.0);
        write("server-key.pem", server.1);
        let client = leaf("root", &[], false, &ca);
        write("client.pem", client.0);
        write("client-key.pem", client.1);
        // CN=alice names the user alice when auth is on (see the auth test below).
        let alice = leaf("alice", &[], false, &ca);
        write("alice.pem", alice.0);
        write("alice-key.pem", alice.1);
        let stranger = leaf("root", &[], false, &other_ca);
        write("other-client.pem", stranger.0);
        write("other-client-key.pem", stranger.1);
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// etcdctl flags of a client with a valid certificate.
    fn client_flags(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.path("ca.pem")),
            format!("--cert={}", self.path("client.pem")),
            format!("--key={}", self.path("client-key.pem")),
        ]
    }

    /// Server flags: client TLS with client certificate authentication, and (for https
    /// peer URLs) peer TLS with peer client certificate authentication.
    fn server_flags(&self) -> Vec<String> {
        vec![
            format!("--cert-file={}", self.path("server.pem")),
            format!("--key-file={}", self.path("server-key.pem")),
            format!("--trusted-ca-file={}", self.path("ca.pem")),
            "--client-cert-auth".into(),
            format!("--peer-cert-file={}", self.path("server.pem")),
            format!("--peer-key-file={}", self.path("server-key.pem")),
            format!("--peer-trusted-ca-file={}", self.path("ca.pem")),
            "--peer-client-cert-auth".into(),
        ]
    }
}

fn make_ca(cn: &str) -> Ca {
    Ca::generate(&CertSpec::new(cn).key_usages([KeyUsage::KeyCertSign, KeyUsage::CrlSign])).unwrap()
}

/// A certificate signed by `ca`: (cert PEM, key PEM).
fn leaf(cn: &str, sans: &[&str], server: bool, ca: &Ca) -> (String, String) {
    let mut usages = vec![ExtKeyUsage::ClientAuth];
    if server {
        // Members present the same certificate as server and (to peers) as client.
        usages.push(ExtKeyUsage::ServerAuth);
    }
    let spec = CertSpec::new(cn)
        .hosts(sans.iter().copied())
        .key_usages([KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment])
        .ext_key_usages(usages);
    let cert = ca.issue(&spec).unwrap();
    (cert.cert_pem(), cert.key_pem())
}

// ---------------------------------------------------------------------------------------------
// Clusters with https URLs
// ---------------------------------------------------------------------------------------------

struct TlsMember {
    name: String,
    client: PortClaim,
    peer: PortClaim,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// N members of one flavour, client URLs `https://`, peer URLs `peer_scheme://`.
struct TlsCluster {
    flavor: Flavor,
    members: Vec<TlsMember>,
    /// etcdctl flags that authenticate a client (certificates, or skip-verify for auto TLS).
    ctl_flags: Vec<String>,
    _root: tempfile::TempDir,
}

impl TlsCluster {
    fn start(flavor: Flavor, n: usize, peer_scheme: &str, server_flags: &[String], ctl_flags: &[String]) -> Self {
        Self::start_env(flavor, n, peer_scheme, server_flags, &[], ctl_flags)
    }

    /// Like [`TlsCluster::start`], with `ETCD_*` variables set for every member.
    fn start_env(
        flavor: Flavor,
        n: usize,
        peer_scheme: &str,
        server_flags: &[String],
        env: &[(&str, String)],
        ctl_flags: &[String],
    ) -> Self {
        let root = tempfile::Builder::new().prefix(&format!("kaname-tls-{}-", flavor.label())).tempdir().unwrap();
        let members: Vec<TlsMember> = (1..=n)
            .map(|i| TlsMember {
                name: format!("m{i}"),
                client: claim_port(),
                peer: claim_port(),
                data_dir: root.path().join(format!("m{i}")),
                log: root.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={peer_scheme}://127.0.0.1:{}", m.name, m.peer.port))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("tls-{}", std::process::id());
        let mut c = TlsCluster { flavor: flavor.clone(), members, ctl_flags: ctl_flags.to_vec(), _root: root };
        for m in &mut c.members {
            let flags = MemberFlags {
                name: m.name.clone(),
                data_dir: m.data_dir.clone(),
                client_url: format!("https://127.0.0.1:{}", m.client.port),
                peer_url: format!("{peer_scheme}://127.0.0.1:{}", m.peer.port),
                initial_cluster: initial.clone(),
                joining: false,
                token: token.clone(),
            };
            let args = flags.args(&flavor, server_flags);
            let mut cmd = flavor.command();
            cmd.args(&args).envs(env.iter().map(|(k, v)| (k, v)));
            let what = format!("{} {}", flavor.label(), args.join(" "));
            m.child = Some(spawn_logged(cmd, &m.log, "tls", &what, false).expect("start server"));
        }
        c.wait_healthy();
        c
    }

    fn endpoints(&self) -> String {
        self.members.iter().map(|m| format!("https://127.0.0.1:{}", m.client.port)).collect::<Vec<_>>().join(",")
    }

    fn endpoint(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.members[i - 1].client.port)
    }

    /// etcdctl against member `i` (0: all members) with this cluster's client flags.
    fn ctl(&self, i: usize, args: &[&str]) -> Output {
        let ep = if i == 0 { self.endpoints() } else { self.endpoint(i) };
        let mut all: Vec<&str> = self.ctl_flags.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        etcdctl_timeout(&ep, &all, None, "5s")
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.ctl(0, &["--dial-timeout=1s", "endpoint", "health"]);
            if out.success() {
                return;
            }
            for m in &self.members {
                let pid = m.child.as_ref().unwrap().id();
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                if stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')) {
                    panic!("{} {} exited:\n{}", self.flavor.label(), m.name, self.logs());
                }
            }
            if Instant::now() > deadline {
                panic!("{} not healthy: {}{}\n{}", self.flavor.label(), out.stdout, out.stderr, self.logs());
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn logs(&self) -> String {
        log_tails(self.members.iter().map(|m| (m.name.as_str(), m.log.as_path())), 30)
    }

    /// Masks ports by member and member/cluster IDs (learnt from `member list -w json`).
    fn masker(&self) -> Masker {
        let mut m = Masker::default();
        m.mask_leader = self.members.len() > 1;
        for mem in &self.members {
            m = m.with_port(mem.client.port, &format!("client:{}", mem.name));
            m = m.with_port(mem.peer.port, &format!("peer:{}", mem.name));
        }
        let out = self.ctl(1, &["member", "list", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("member list json");
        m = m.with_cluster_id(v["header"]["cluster_id"].as_u64().unwrap());
        for mem in v["members"].as_array().unwrap() {
            m = m.with_member_id(mem["ID"].as_u64().unwrap(), mem["name"].as_str().unwrap());
        }
        m
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                kill_and_reap(&mut c);
            }
        }
    }
}

/// Runs the same etcdctl commands on both clusters and asserts equal normalized output.
fn compare(etcd: &TlsCluster, kaname: &TlsCluster, steps: &[(usize, &[&str])]) {
    let (me, mk) = (etcd.masker(), kaname.masker());
    for (i, args) in steps {
        let (e, k) = (etcd.ctl(*i, args), kaname.ctl(*i, args));
        // Several endpoints answer in any order; `member list` is in member ID order, and IDs
        // derive from the (different) ports.
        let unordered = *i == 0 || args[0] == "member";
        let show = |o: &Output, m: &Masker| {
            format!("exit {}\n{}{}", o.code(), m.normalize(&o.stdout, unordered), m.normalize(&o.stderr, unordered))
        };
        assert_eq!(show(&e, &me), show(&k, &mk), "etcdctl {args:?} on member {i}: etcd (left) vs kaname (right)");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// One member, client TLS with client certificate authentication: etcdctl with a valid
/// certificate sees the same as on etcd; clients without one, or with one from another CA,
/// are refused as etcd refuses them; /health answers over HTTPS.
#[test]
fn client_tls_one_member_matches_etcd() {
    let pki = Pki::new();
    let (flags, ctl) = (pki.server_flags(), pki.client_flags());
    let etcd = TlsCluster::start(Flavor::etcd(), 1, "http", &flags, &ctl);
    let kaname = TlsCluster::start(kaname!(), 1, "http", &flags, &ctl);
    compare(
        &etcd,
        &kaname,
        &[
            (1, &["put", "foo", "bar"]),
            (1, &["get", "foo"]),
            (1, &["get", "foo", "-w", "json"]),
            (1, &["member", "list"]),
            (1, &["member", "list", "-w", "json"]),
            (1, &["endpoint", "health"]),
            (1, &["endpoint", "status"]),
        ],
    );

    // Refused clients: no certificate; a certificate from another CA; not trusting the
    // server's CA. etcdctl reports each as a failed connection.
    let ca = format!("--cacert={}", pki.path("ca.pem"));
    let refused: [Vec<String>; 3] = [
        vec![ca.clone()],
        vec![
            ca.clone(),
            format!("--cert={}", pki.path("other-client.pem")),
            format!("--key={}", pki.path("other-client-key.pem")),
        ],
        vec![format!("--cert={}", pki.path("client.pem")), format!("--key={}", pki.path("client-key.pem"))],
    ];
    for flags in &refused {
        let run = |c: &TlsCluster| {
            let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
            args.extend(["--dial-timeout=1s", "get", "foo"]);
            etcdctl_timeout(&c.endpoint(1), &args, None, "2s")
        };
        let (e, k) = (run(&etcd), run(&kaname));
        assert!(!e.success(), "etcd accepted {flags:?}");
        assert_eq!(e.code(), k.code(), "exit code with {flags:?}: etcd {e:?} kaname {k:?}");
        let gist = |o: &Output| o.stderr.lines().last().unwrap_or("").to_string();
        assert_eq!(gist(&e), gist(&k), "last error line with {flags:?}");
    }

    // HTTP/1.1 and HTTP/2 over TLS on the client port, as curl uses them.
    for c in [&etcd, &kaname] {
        let url = format!("{}/health", c.endpoint(1));
        let cert = ["--cert", &pki.path("client.pem"), "--key", &pki.path("client-key.pem")];
        let ok = curl(&[&["-sk", "--http1.1"], &cert[..], &[&url]].concat());
        assert!(ok.contains("\"health\":\"true\""), "{}: curl -k --http1.1 {url}: {ok}", c.flavor.label());
        let ok2 = curl(&[&["-s", "--cacert", &pki.path("ca.pem")], &cert[..], &[&url]].concat());
        assert!(ok2.contains("\"health\":\"true\""), "{}: curl (h2) {url}: {ok2}", c.flavor.label());
        let version = curl(&[&["-sk"], &cert[..], &[&format!("{}/version", c.endpoint(1))]].concat());
        assert!(version.contains("etcdserver"), "{}: /version: {version}", c.flavor.label());
    }
}

/// With `--client-cert-auth` and no token, the client certificate's CommonName is the user
/// (etcd's AuthInfoFromTLS). Checks: CN=root may administer and write once auth is on;
/// CN=alice reads what her role allows and is denied the rest ("permission denied" for a
/// put and for `user list`); a token (`--user`) takes precedence over the certificate.
#[test]
fn client_certificate_common_name_names_the_user_as_in_etcd() {
    let pki = Pki::new();
    let (flags, ctl) = (pki.server_flags(), pki.client_flags());
    let etcd = TlsCluster::start(Flavor::etcd(), 1, "http", &flags, &ctl);
    let kaname = TlsCluster::start(kaname!(), 1, "http", &flags, &ctl);
    let (cert, key) = (format!("--cert={}", pki.path("alice.pem")), format!("--key={}", pki.path("alice-key.pem")));
    let as_alice = |args: &[&'static str]| -> Vec<String> {
        [cert.clone(), key.clone()].into_iter().chain(args.iter().map(|s| s.to_string())).collect()
    };
    let alice_get = as_alice(&["get", "foo"]);
    let alice_put = as_alice(&["put", "other", "x"]);
    let alice_list = as_alice(&["user", "list"]);
    let alice_token = as_alice(&["put", "other", "y", "--user=root:rootpw"]);
    fn v(a: &[String]) -> Vec<&str> {
        a.iter().map(String::as_str).collect()
    }
    compare(
        &etcd,
        &kaname,
        &[
            (1, &["user", "add", "root", "--new-user-password=rootpw"]),
            (1, &["user", "add", "alice", "--new-user-password=alicepw"]),
            (1, &["role", "add", "r"]),
            (1, &["role", "grant-permission", "r", "read", "foo"]),
            (1, &["user", "grant-role", "alice", "r"]),
            (1, &["auth", "enable"]),
            (1, &["put", "foo", "bar"]),
            (1, &["user", "list"]),
            (1, &v(&alice_get)),
            (1, &v(&alice_put)),
            (1, &v(&alice_list)),
            (1, &v(&alice_token)),
            (1, &["get", "other"]),
        ],
    );
    // Not vacuous: the certificate really named alice, and root's token really wrote.
    let got = kaname.ctl(1, &v(&alice_get));
    assert!(got.success() && got.stdout.contains("bar"), "alice's get: {got:?}");
    let put = kaname.ctl(1, &v(&alice_put));
    assert!(put.stderr.contains("etcdserver: permission denied"), "alice's put: {put:?}");
    assert!(kaname.ctl(1, &["get", "other"]).stdout.contains('y'));
    compare(&etcd, &kaname, &[(1, &["auth", "disable"]), (1, &["get", "other"])]);
}

/// etcd requires client certificates as soon as `--trusted-ca-file` is given, even without
/// `--client-cert-auth`; so does kaname.
#[test]
fn trusted_ca_alone_requires_client_certificates() {
    let pki = Pki::new();
    let flags: Vec<String> = pki.server_flags().into_iter().filter(|f| !f.contains("cert-auth")).collect();
    let ctl = pki.client_flags();
    let etcd = TlsCluster::start(Flavor::etcd(), 1, "http", &flags, &ctl);
    let kaname = TlsCluster::start(kaname!(), 1, "http", &flags, &ctl);
    compare(&etcd, &kaname, &[(1, &["put", "k", "v"]), (1, &["get", "k"])]);
    let ca = format!("--cacert={}", pki.path("ca.pem"));
    let run = |c: &TlsCluster| etcdctl_timeout(&c.endpoint(1), &[&ca, "--dial-timeout=1s", "get", "k"], None, "2s");
    let (e, k) = (run(&etcd), run(&kaname));
    assert!(!e.success(), "etcd served a client without a certificate: {e:?}");
    assert_eq!(e.code(), k.code(), "etcd: {e:?}\nkaname: {k:?}");
}

fn curl(args: &[&str]) -> String {
    match Command::new("curl").args(args).output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => panic!("cannot run curl ({e}); run scripts/install-test-deps.sh"),
    }
}

/// Three members with TLS on client and peer URLs and peer client certificate
/// authentication: replication, member list with https URLs, status of every member.
#[test]
fn peer_tls_three_members_match_etcd() {
    let pki = Pki::new();
    let (flags, ctl) = (pki.server_flags(), pki.client_flags());
    let etcd = TlsCluster::start(Flavor::etcd(), 3, "https", &flags, &ctl);
    let kaname = TlsCluster::start(kaname!(), 3, "https", &flags, &ctl);
    compare(
        &etcd,
        &kaname,
        &[
            (1, &["put", "k1", "v1"]),
            (2, &["put", "k2", "v2"]),
            (3, &["get", "k", "--prefix"]),
            (2, &["get", "k1", "-w", "json"]),
            (1, &["member", "list"]),
            (3, &["member", "list", "-w", "table"]),
            (0, &["endpoint", "health"]),
            (0, &["endpoint", "status"]),
        ],
    );
    // --peer-client-cert-auth: the peer port refuses a TLS client without a certificate and
    // completes the handshake with one from the CA (what follows is the peer protocol, which
    // differs between etcd and kaname, so only the handshake is compared).
    let curl_code = |c: &TlsCluster, extra: &[&str]| {
        let url = format!("https://127.0.0.1:{}/", c.members[0].peer.port);
        Command::new("curl").args(["-sk", "-o", "/dev/null"]).args(extra).arg(url).status().unwrap().code()
    };
    let cert = ["--cert", &pki.path("client.pem"), "--key", &pki.path("client-key.pem")];
    // With TLS 1.3 the server's alert about the missing certificate arrives after curl's side
    // of the handshake, so curl reports it on its next send (55) or receive (56); 35 is a
    // failed handshake. Any other result got past TLS.
    let tls_failed = |code: Option<i32>| matches!(code, Some(35) | Some(55) | Some(56));
    for c in [&etcd, &kaname] {
        let (without, with) = (curl_code(c, &[]), curl_code(c, &cert));
        assert!(
            tls_failed(without),
            "{}: peer port served a client without a certificate ({without:?})",
            c.flavor.label()
        );
        assert!(!tls_failed(with), "{}: handshake with a client certificate failed ({with:?})", c.flavor.label());
    }
}

/// `--auto-tls --peer-auto-tls`: certificates generated under the data dir, clients connect
/// with `--insecure-skip-tls-verify`, peers over https without verification (as etcd).
#[test]
fn auto_tls_three_members_match_etcd() {
    let flags: Vec<String> = vec!["--auto-tls".into(), "--peer-auto-tls".into()];
    // etcdctl 3.4 uses TLS without certificate flags only with --insecure-transport=false.
    let ctl: Vec<String> = vec!["--insecure-transport=false".into(), "--insecure-skip-tls-verify".into()];
    let etcd = TlsCluster::start(Flavor::etcd(), 3, "https", &flags, &ctl);
    let kaname = TlsCluster::start(kaname!(), 3, "https", &flags, &ctl);
    compare(
        &etcd,
        &kaname,
        &[(1, &["put", "a", "1"]), (3, &["get", "a"]), (2, &["member", "list"]), (0, &["endpoint", "health"])],
    );
    for c in [&etcd, &kaname] {
        for side in ["client", "peer"] {
            for f in ["cert.pem", "key.pem"] {
                let p = c.members[0].data_dir.join("fixtures").join(side).join(f);
                assert!(p.exists(), "{}: {} missing", c.flavor.label(), p.display());
            }
        }
    }
    // kaname etcdctl with the same flags sees what etcdctl sees.
    for args in [&["get", "a"][..], &["member", "list"][..]] {
        let args: Vec<&str> = ctl.iter().map(String::as_str).chain(args.iter().copied()).collect();
        let (e, k) = (
            etcdctl(&kaname.endpoint(1), &args, None),
            kaname_etcdctl(kaname_bin!(), &kaname.endpoint(1), &args, None),
        );
        let mask = kaname.masker();
        assert_eq!(
            (mask.normalize(&e.stdout, false), e.code()),
            (mask.normalize(&k.stdout, false), k.code()),
            "etcdctl vs kaname etcdctl {args:?}: {}",
            k.stderr
        );
    }
    // Without skipping verification the self-signed certificate is refused, on both.
    let (e, k) = (
        etcdctl_timeout(
            &etcd.endpoint(1),
            &["--insecure-transport=false", "--dial-timeout=1s", "get", "a"],
            None,
            "2s",
        ),
        etcdctl_timeout(
            &kaname.endpoint(1),
            &["--insecure-transport=false", "--dial-timeout=1s", "get", "a"],
            None,
            "2s",
        ),
    );
    assert!(!e.success());
    assert_eq!(e.code(), k.code(), "etcd: {e:?}\nkaname: {k:?}");
}

/// `https://` URLs without a certificate: kaname refuses to start with etcd's message.
#[test]
fn https_without_certs_is_refused_as_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let (c, p) = (claim_port(), claim_port());
    let missing: &[&str] = &["--cert-file=/nonexistent/cert.pem", "--key-file=/nonexistent/key.pem"];
    let cases: [(&str, &str, &[&str], &str); 3] = [
        ("https", "http", &[], "TLS key/cert (--cert-file, --key-file) must be provided for client url"),
        ("http", "https", &[], "KeyFile and CertFile are not presented"),
        ("https", "http", missing, "open /nonexistent/cert.pem: no such file or directory"),
    ];
    for (n, (cs, ps, extra, msg)) in cases.iter().enumerate() {
        let client = format!("{cs}://127.0.0.1:{}", c.port);
        let peer = format!("{ps}://127.0.0.1:{}", p.port);
        for flavor in [Flavor::etcd(), kaname!()] {
            let data = dir.path().join(format!("{}-{n}", flavor.label()));
            let mut child = flavor
                .command()
                .args(["--data-dir", &data.display().to_string(), "--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client, "--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer, "--initial-cluster", &format!("default={peer}")])
                .args(extra.iter())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // A start that is not refused within 10 s has accepted what it should refuse.
            let deadline = Instant::now() + Duration::from_secs(10);
            let status = loop {
                if let Some(st) = child.try_wait().unwrap() {
                    break Some(st);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                thread::sleep(Duration::from_millis(20));
            };
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
            assert!(status.is_some_and(|s| !s.success()), "{} started with {client} {peer}:\n{err}", flavor.label());
            assert!(err.contains(msg), "{}: expected {msg:?} in:\n{err}", flavor.label());
            if flavor.is_kaname() {
                // Refused before the data dir was created, as etcd.
                assert!(!data.exists(), "kaname created {} before refusing", data.display());
            }
        }
    }
}

/// The TLS settings from `ETCD_*` variables instead of flags (kaname only: etcd reads the
/// same variables, the harness strips them from etcd's environment).
#[test]
fn tls_from_etcd_environment_variables() {
    let pki = Pki::new();
    let env = [
        ("ETCD_CERT_FILE", pki.path("server.pem")),
        ("ETCD_KEY_FILE", pki.path("server-key.pem")),
        ("ETCD_TRUSTED_CA_FILE", pki.path("ca.pem")),
        ("ETCD_CLIENT_CERT_AUTH", "true".to_string()),
        ("ETCD_PEER_AUTO_TLS", "true".to_string()),
    ];
    let kaname = TlsCluster::start_env(kaname!(), 1, "https", &[], &env, &pki.client_flags());
    let out = kaname.ctl(1, &["put", "k", "v"]);
    assert!(out.success(), "{out:?}");
    let peer_cert = kaname.members[0].data_dir.join("fixtures/peer/cert.pem");
    assert!(peer_cert.exists(), "ETCD_PEER_AUTO_TLS wrote no {}", peer_cert.display());
    // ETCD_CLIENT_CERT_AUTH took effect: a client without a certificate is refused.
    let ca = format!("--cacert={}", pki.path("ca.pem"));
    let out = etcdctl_timeout(&kaname.endpoint(1), &[&ca, "--dial-timeout=1s", "get", "k"], None, "2s");
    assert!(!out.success(), "a client without a certificate was served: {out:?}");
}
