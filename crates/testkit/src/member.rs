//! How one store member process is started, logged, reaped and reported: the part the tests'
//! [`Cluster`](crate::Cluster) and `kaname chaos`'s fault cluster share. The two differ in what
//! they do around a member (claimed ports on 127.0.0.1 here; one loopback address or network
//! namespace per member, libfaketime and pauses there), not in how a member is run, so that part
//! lives once, here.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::Flavor;

/// The flags every member takes, in either flavour (etcd 3.4 and kaname read the same ones).
#[derive(Clone, Debug)]
pub struct MemberFlags {
    pub name: String,
    pub data_dir: PathBuf,
    /// Listened on and advertised: `http://IP:PORT`.
    pub client_url: String,
    /// Listened on and advertised to peers: `http://IP:PORT`.
    pub peer_url: String,
    /// `--initial-cluster`: `m1=http://...,m2=...`.
    pub initial_cluster: String,
    /// `--initial-cluster-state existing` (joins a running cluster) instead of `new`.
    pub joining: bool,
    /// `--initial-cluster-token`.
    pub token: String,
}

impl MemberFlags {
    /// The command line after the program (`etcd`, or `kaname etcd`), `extra` last so that a
    /// caller's flag wins over a standard one.
    pub fn args(&self, flavor: &Flavor, extra: &[String]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--name".into(),
            self.name.clone(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--listen-client-urls".into(),
            self.client_url.clone(),
            "--advertise-client-urls".into(),
            self.client_url.clone(),
            "--listen-peer-urls".into(),
            self.peer_url.clone(),
            "--initial-advertise-peer-urls".into(),
            self.peer_url.clone(),
            "--initial-cluster".into(),
            self.initial_cluster.clone(),
            "--initial-cluster-state".into(),
            if self.joining { "existing" } else { "new" }.into(),
            "--initial-cluster-token".into(),
            self.token.clone(),
        ];
        if flavor.is_etcd() {
            // etcd 3.4's default logger is the deprecated capnslog; zap on stderr is what a
            // deployment uses, and what failure reports quote.
            args.extend(["--logger", "zap", "--log-outputs", "stderr"].map(String::from));
        }
        args.extend(extra.iter().cloned());
        args
    }
}

/// Starts `cmd` (a [`Flavor::command`] with its arguments) with stdin closed and stdout and
/// stderr appended to `log`, after a line `=== {who}: starting {what}` so that a restarted
/// member's log shows where each run begins.
///
/// With `die_with_parent`, the kernel SIGKILLs the member when the thread that started it goes
/// away (PR_SET_PDEATHSIG), so a tool that is itself SIGKILLed leaves nothing behind. That
/// follows the *thread*, so only callers that keep the starting thread alive as long as the
/// member (such as `kaname chaos`) may ask for it; tests rely on their `Drop` instead.
pub fn spawn_logged(mut cmd: Command, log: &Path, who: &str, what: &str, die_with_parent: bool) -> io::Result<Child> {
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let mut err = out.try_clone()?;
    writeln!(err, "=== {who}: starting {what}")?;
    cmd.env("RUST_BACKTRACE", "1").stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err));
    if die_with_parent {
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
    }
    cmd.spawn()
}

/// SIGKILLs a member this harness started (by its PID, through its `Child`) and reaps it.
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `n` lines of each member's log, headed by its name and path, for failure reports.
pub fn log_tails<'a>(logs: impl IntoIterator<Item = (&'a str, &'a Path)>, n: usize) -> String {
    let mut out = String::new();
    for (name, path) in logs {
        let text = fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        out.push_str(&format!("----- {name} ({}), last {} lines -----\n", path.display(), lines.len() - from));
        for l in &lines[from..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// The member all `answers` (index, member id, leader id it reports) agree is the leader, if
/// they agree, at least `quorum` answered and the leader is one of them.
pub fn agreed_leader(answers: &[(usize, u64, u64)], quorum: usize) -> Option<usize> {
    let &(_, _, first) = answers.first()?;
    if first == 0 || answers.len() < quorum || answers.iter().any(|&(_, _, l)| l != first) {
        return None;
    }
    answers.iter().find(|&&(_, id, _)| id == first).map(|&(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_needs_agreement_a_quorum_and_to_be_among_the_answers() {
        assert_eq!(agreed_leader(&[(1, 10, 20), (2, 20, 20), (3, 30, 20)], 2), Some(2));
        assert_eq!(agreed_leader(&[(1, 10, 20), (2, 20, 30)], 2), None, "disagreement");
        assert_eq!(agreed_leader(&[(1, 10, 20)], 2), None, "no quorum");
        assert_eq!(agreed_leader(&[(1, 10, 0), (2, 20, 0)], 2), None, "no leader yet");
        assert_eq!(agreed_leader(&[(1, 10, 30), (2, 20, 30)], 2), None, "leader did not answer");
        assert_eq!(agreed_leader(&[], 0), None);
    }

    #[test]
    fn extra_flags_come_last_and_etcd_logs_with_zap() {
        let f = MemberFlags {
            name: "m1".into(),
            data_dir: "/d".into(),
            client_url: "http://127.0.0.1:1".into(),
            peer_url: "http://127.0.0.1:2".into(),
            initial_cluster: "m1=http://127.0.0.1:2".into(),
            joining: true,
            token: "t".into(),
        };
        let a = f.args(&Flavor::etcd(), &["--election-timeout=500".into()]);
        assert_eq!(a.last().unwrap(), "--election-timeout=500");
        assert!(a.windows(2).any(|w| w == ["--initial-cluster-state", "existing"]));
        assert!(a.windows(2).any(|w| w == ["--logger", "zap"]));
        let k = f.args(&Flavor::Kaname("/k".into()), &[]);
        assert!(!k.contains(&"--logger".to_string()));
    }
}
