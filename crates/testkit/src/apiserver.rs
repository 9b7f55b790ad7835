//! The `kaname apiserver` harness: start a server on a claimed loopback port with its own
//! cert dir, run the real kubectl against it, and make admin and anonymous HTTPS requests.

use crate::{claim_port, kill_and_reap, Output, PortClaim};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `kaname apiserver` with its own cert dir; killed (by PID) on drop.
pub struct Apiserver {
    pub child: Child,
    pub port: PortClaim,
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
    /// The kaname binary and what it was started with, for [`Apiserver::restart`].
    bin: PathBuf,
    args: Vec<String>,
    /// Where its certificates are (its own, or those of the instance it shares them with).
    pub pki: PathBuf,
}

impl Apiserver {
    /// A kube-rs client on this server's admin kubeconfig (client certificate auth).
    #[cfg(feature = "kube")]
    pub fn kube_client(&self, rt: &tokio::runtime::Runtime) -> kube::Client {
        rt.block_on(async {
            let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
            let options = kube::config::KubeConfigOptions::default();
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap();
            kube::Client::try_from(config).unwrap()
        })
    }

    /// Starts `kaname apiserver` of the binary `kaname` (the test's
    /// [`kaname_bin!()`](crate::kaname_bin)) on the etcd at `etcd_endpoint`.
    pub fn start(kaname: &Path, etcd_endpoint: &str) -> Apiserver {
        Apiserver::start_args(kaname, &[format!("--etcd-servers=http://{etcd_endpoint}")])
    }

    /// Starts with `args` (at least `--etcd-servers`) on a claimed port and its own cert dir.
    pub fn start_args(kaname: &Path, args: &[String]) -> Apiserver {
        let dir = tempfile::Builder::new().prefix("kaname-apiserver-it-").tempdir().unwrap();
        let pki = dir.path().join("pki");
        Apiserver::start_in(kaname.to_path_buf(), dir, pki, args.to_vec())
    }

    /// A second instance that uses this one's certificates (so one kubeconfig's client
    /// certificate works on both, as behind a load balancer), on its own port.
    pub fn start_sibling(&self) -> Apiserver {
        let dir = tempfile::Builder::new().prefix("kaname-apiserver-it-").tempdir().unwrap();
        Apiserver::start_in(self.bin.clone(), dir, self.pki.clone(), self.args.clone())
    }

    fn start_in(bin: PathBuf, dir: tempfile::TempDir, pki: PathBuf, args: Vec<String>) -> Apiserver {
        let port = claim_port();
        let (child, kubeconfig) = spawn(&bin, &dir, &pki, &args, port.port);
        let a = Apiserver { child, port, kubeconfig, dir, bin, args, pki };
        a.wait_ready();
        a
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and certificates.
    pub fn restart(&mut self) {
        self.kill();
        let (child, _) = spawn(&self.bin, &self.dir, &self.pki, &self.args, self.port.port);
        self.child = child;
        self.wait_ready();
    }

    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }

    fn wait_ready(&self) {
        let a = self;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = a.curl("/readyz", false);
            if code == 200 && body == "ok" && a.kubectl(&["get", "ns", "default", "-o", "name"]).success() {
                break;
            }
            assert!(Instant::now() < deadline, "apiserver not ready: {code} {body}\n{}", a.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A request as the admin (client certificate of `system:masters`): (status, body).
    pub fn admin_curl(&self, method: &str, path: &str) -> (u16, String) {
        self.admin_send(method, path, None)
    }

    /// The same with a body of the given content type (`Some((content_type, body))`), for
    /// requests kubectl never sends (wrong media types, malformed bodies).
    pub fn admin_send(&self, method: &str, path: &str, body: Option<(&str, &str)>) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "20", "-w", "\n%{http_code}", "-X", method, "--cacert"])
            .arg(self.pki.join("ca.crt"))
            .arg("--cert")
            .arg(self.pki.join("admin.crt"))
            .arg("--key")
            .arg(self.pki.join("admin.key"));
        if let Some((content_type, data)) = body {
            // An empty type sends none (`Content-Type:` removes the header curl would add).
            let header = if content_type.is_empty() {
                "Content-Type:".to_string()
            } else {
                format!("Content-Type: {content_type}")
            };
            cmd.args(["-H", &header, "--data-binary", data]);
        }
        let out = cmd.arg(format!("https://127.0.0.1:{}{path}", self.port.port)).output().expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.env_remove("KUBECONFIG")
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!("--cache-dir={}", self.dir.path().join("cache").display()))
            .arg("--request-timeout=20s")
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl (/usr/bin/kubectl, preinstalled on the project's machines)");
        if let Some(text) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        Output {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            status: out.status,
        }
    }

    /// kubectl that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.success(), "kubectl {args:?} failed: {}{}\n{}", out.stdout, out.stderr, self.log());
        out.stdout
    }

    /// kubectl that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(!out.success(), "kubectl {args:?} succeeded: {}", out.stdout);
        out.stderr
    }

    /// An anonymous (no client certificate) HTTPS request: (status, body).
    pub fn curl(&self, path: &str, with_ca: bool) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "5", "-w", "\n%{http_code}"]);
        if with_ca {
            cmd.arg("--cacert").arg(self.pki.join("ca.crt"));
        } else {
            cmd.arg("-k");
        }
        let out = cmd.arg(format!("https://127.0.0.1:{}{path}", self.port.port)).output().expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

/// Starts `<bin> apiserver` with `args` on `port`, its certificates in `pki`; returns the
/// child and the admin kubeconfig it wrote (the first line it prints).
fn spawn(bin: &Path, dir: &tempfile::TempDir, pki: &Path, args: &[String], port: u16) -> (Child, PathBuf) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join("apiserver.log")).unwrap();
    let mut child = Command::new(bin)
        .arg("apiserver")
        .args(args)
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!("--cert-dir={}", pki.display()))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start kaname apiserver");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // Keep reading so the server's later lines never meet a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let written = PathBuf::from(line.trim().strip_prefix("admin kubeconfig: ").expect("kubeconfig path line"));
    // Siblings share the cert dir and each writes its own address into it: keep this one's.
    let kubeconfig = dir.path().join("admin.conf");
    std::fs::copy(&written, &kubeconfig).unwrap();
    (child, kubeconfig)
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}
