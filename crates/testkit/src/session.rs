//! `compare_session`: the same etcdctl script against real etcd and kaname.

use super::{etcdctl, kaname_etcdctl, Cluster, Flavor, Masker};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

/// Which members one step's `--endpoints` names.
#[derive(Clone, Debug)]
pub enum Target {
    /// All members of the cluster, in order (etcdctl balances between them, so
    /// avoid outputs that show the answering member's ID with this).
    All,
    /// Only member `i` (1-based).
    Member(usize),
    /// These members, in this order.
    Members(Vec<usize>),
}

/// One etcdctl invocation of a script.
#[derive(Clone, Debug)]
pub struct Step {
    pub args: Vec<String>,
    pub stdin: Option<String>,
    pub target: Target,
    /// Sort output lines and JSON arrays before comparing.
    pub unordered: bool,
    /// Sleep this long before running the step.
    pub pause: Duration,
}

/// Member `i` when a cluster of `n` members has it, else member 1 (so one script serves 1 and
/// 3 members).
pub fn m(n: usize, i: usize) -> usize {
    if i <= n {
        i
    } else {
        1
    }
}

/// A step running `etcdctl txn` with `text` on its stdin (interactive mode's input).
pub fn txn(text: &str) -> Step {
    step(&["txn"]).stdin(text)
}

/// A step running `etcdctl ARGS` against member 1.
pub fn step(args: &[&str]) -> Step {
    Step {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: None,
        target: Target::Member(1),
        unordered: false,
        pause: Duration::ZERO,
    }
}

impl Step {
    /// Send to member `i` (1-based) only.
    pub fn on(mut self, i: usize) -> Self {
        self.target = Target::Member(i);
        self
    }
    /// Send with all members as `--endpoints`.
    pub fn all(mut self) -> Self {
        self.target = Target::All;
        self
    }
    pub fn on_members(mut self, ms: &[usize]) -> Self {
        self.target = Target::Members(ms.to_vec());
        self
    }
    pub fn stdin(mut self, text: &str) -> Self {
        self.stdin = Some(text.to_string());
        self
    }
    pub fn unordered(mut self) -> Self {
        self.unordered = true;
        self
    }
    pub fn after_ms(mut self, ms: u64) -> Self {
        self.pause = Duration::from_millis(ms);
        self
    }

    /// The `--endpoints` value of this step on cluster `c`.
    pub fn endpoints(&self, c: &Cluster) -> String {
        let list = match &self.target {
            Target::All => (1..=c.size()).collect(),
            Target::Member(i) => vec![*i],
            Target::Members(v) => v.clone(),
        };
        list.iter().map(|&i| c.member_endpoint(i)).collect::<Vec<_>>().join(",")
    }

    /// `etcdctl --endpoints=<m2> get a --prefix`, plus stdin when given.
    pub fn describe(&self) -> String {
        let target = match &self.target {
            Target::All => "<all members>".to_string(),
            Target::Member(i) => format!("<m{i}>"),
            Target::Members(v) => v.iter().map(|i| format!("<m{i}>")).collect::<Vec<_>>().join(","),
        };
        let args: Vec<String> = self.args.iter().map(|a| shell_quote(a)).collect();
        let mut s = format!("etcdctl --endpoints={target} {}", args.join(" "));
        if let Some(input) = &self.stdin {
            let lines: Vec<&str> = input.split_inclusive('\n').collect();
            let shown = if lines.len() > 8 || input.len() > 400 {
                let head: String = lines.iter().take(6).map(|l| clip(l)).collect();
                format!("{head}... ({} lines, {} bytes)", lines.len(), input.len())
            } else {
                input.clone()
            };
            let _ = write!(s, " <<'EOF'\n{}EOF", if shown.ends_with('\n') { shown } else { format!("{shown}\n") });
        }
        if self.unordered {
            s.push_str("   [lines sorted]");
        }
        s
    }
}

fn shell_quote(a: &str) -> String {
    if !a.is_empty() && a.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_=./:,@".contains(&c)) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// A step's normalized outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepResult {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// A finished run of a script on one flavour.
pub struct SessionRun {
    pub results: Vec<StepResult>,
    /// Problems noticed besides the outputs (a member crashed, IDs unknown).
    pub notes: Vec<String>,
    pub log_tails: String,
}

/// What a test adds around each step of a session, for values each server picks itself (e.g.
/// lease IDs: learned from a grant's output, substituted into later steps' arguments, masked in
/// every output). The default methods change nothing.
pub trait StepHook {
    /// The arguments the step runs with (e.g. `{L1}` replaced by the first lease's ID).
    fn args(&mut self, args: &[String]) -> Vec<String> {
        args.to_vec()
    }
    /// Sees a step's raw result before it is normalized (e.g. to learn an ID it printed).
    fn observe(&mut self, _args: &[String], _out: &crate::Output) {}
    /// Masks one output (stdout or stderr) before the standard normalization; may note a
    /// problem that the comparison reports.
    fn mask(&self, text: &str, _notes: &mut Vec<String>) -> String {
        text.to_string()
    }
}

/// The hook of sessions that need none.
pub struct NoHook;
impl StepHook for NoHook {}

/// Starts a fresh cluster of `flavor`, runs `script`, normalizes, stops it.
/// Err when the cluster cannot be started.
pub fn run_session(flavor: Flavor, members: usize, script: &[Step]) -> Result<SessionRun, String> {
    run_session_with(flavor, members, script, Tool::Etcdctl, false)
}

/// Which client runs a script's steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tool {
    /// The real etcdctl 3.4.
    Etcdctl,
    /// `kaname etcdctl` of this kaname binary.
    Kaname(PathBuf),
}

impl Tool {
    pub fn label(&self) -> &'static str {
        match self {
            Tool::Etcdctl => "etcdctl",
            Tool::Kaname(_) => "kaname etcdctl",
        }
    }
}

/// Lines etcdctl's Go client logs on stderr (zap JSON, e.g. "retrying of unary invoker
/// failed", snapshot progress) are dropped; `Error: ...` lines stay.
fn drop_client_logs(stderr: &str) -> String {
    stderr.lines().filter(|l| !l.starts_with("{\"level\":")).map(|l| format!("{l}\n")).collect()
}

/// [`run_session`] with the given client; `drop_logs` drops the Go client's log lines from stderr.
pub fn run_session_with(
    flavor: Flavor,
    members: usize,
    script: &[Step],
    tool: Tool,
    drop_logs: bool,
) -> Result<SessionRun, String> {
    run_session_hooked(flavor, members, script, tool, drop_logs, &mut NoHook)
}

/// [`run_session_with`] with `hook` around every step.
pub fn run_session_hooked(
    flavor: Flavor,
    members: usize,
    script: &[Step],
    tool: Tool,
    drop_logs: bool,
    hook: &mut dyn StepHook,
) -> Result<SessionRun, String> {
    let cluster = Cluster::try_start(flavor.clone(), members)?;
    let (masker, warning) = Masker::for_cluster(&cluster);
    let mut notes: Vec<String> = warning.into_iter().collect();
    let mut results = Vec::with_capacity(script.len());
    for (n, s) in script.iter().enumerate() {
        if !s.pause.is_zero() {
            thread::sleep(s.pause);
        }
        let owned = hook.args(&s.args);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        let out = match &tool {
            Tool::Etcdctl => etcdctl(&s.endpoints(&cluster), &args, s.stdin.as_deref()),
            Tool::Kaname(bin) => kaname_etcdctl(bin, &s.endpoints(&cluster), &args, s.stdin.as_deref()),
        };
        hook.observe(&owned, &out);
        let stderr = if drop_logs { drop_client_logs(&out.stderr) } else { out.stderr.clone() };
        let stdout = hook.mask(&out.stdout, &mut notes);
        let stderr = hook.mask(&stderr, &mut notes);
        let r = StepResult {
            stdout: masker.normalize(&stdout, s.unordered),
            stderr: masker.normalize(&stderr, s.unordered),
            code: out.code(),
        };
        if std::env::var_os("KANAME_IT_DUMP").is_some() {
            // Readable transcript for implementers: KANAME_IT_DUMP=1 cargo test ... -- --nocapture
            println!(
                "[{} {} step {}] {}\n{}{}[exit {}]\n",
                flavor.label(),
                tool.label(),
                n + 1,
                s.describe(),
                r.stdout,
                r.stderr,
                r.code
            );
        }
        results.push(r);
        if let Err(e) = cluster.check_alive() {
            notes.push(format!("after step {}: {e}", n + 1));
            break;
        }
    }
    Ok(SessionRun { results, notes, log_tails: cluster.log_tails(25) })
}

/// Runs `script` on a fresh real-etcd cluster, then on a fresh cluster of `kaname`
/// (the test's [`kaname!()`](crate::kaname)) of the same size, and asserts identical
/// normalized stdout, stderr and exit code at every step.
pub fn compare_session(kaname: Flavor, members: usize, script: &[Step]) {
    compare_flavors(Flavor::etcd(), kaname, members, script)
}

/// [`compare_session`] with any two flavours (etcd vs etcd proves the harness).
/// They run one after the other, never together.
pub fn compare_flavors(reference: Flavor, candidate: Flavor, members: usize, script: &[Step]) {
    compare_flavors_hooked(reference, candidate, members, script, || NoHook)
}

/// [`compare_flavors`] with a fresh hook from `hook` for each run (see [`StepHook`]).
pub fn compare_flavors_hooked<H: StepHook>(
    reference: Flavor,
    candidate: Flavor,
    members: usize,
    script: &[Step],
    hook: impl Fn() -> H,
) {
    let (r, c) = (reference.label(), candidate.label());
    let expected =
        run_session_hooked(reference, members, script, Tool::Etcdctl, false, &mut hook()).unwrap_or_else(|e| {
            panic!("reference {r} cluster of {members} failed to start; the harness or machine is broken:\n{e}")
        });
    // A reference that stopped early or noted a problem (a member crashed, member IDs
    // unknown, a masked value out of range) would make the comparison meaningless.
    assert!(
        expected.results.len() == script.len() && expected.notes.is_empty(),
        "reference {r} run failed: ran {} of {} steps; notes: {:?}\n{}",
        expected.results.len(),
        script.len(),
        expected.notes,
        expected.log_tails
    );
    let got = run_session_hooked(candidate, members, script, Tool::Etcdctl, false, &mut hook()).unwrap_or_else(|e| {
        panic!(
            "\n{c} cluster of {members} member(s) could not be started, so none of the {} etcdctl steps ran.\n{e}",
            script.len()
        )
    });
    report(r, c, members, script, &expected, &got);
}

/// Runs `script` with the real etcdctl on a fresh `flavor` cluster, then with
/// `kaname etcdctl` of the binary `kaname` (the test's [`kaname_bin!()`](crate::kaname_bin))
/// on another fresh one, and asserts identical normalized stdout, stderr (less the Go
/// client's log lines) and exit codes.
pub fn compare_tools(flavor: Flavor, kaname: &Path, members: usize, script: &[Step]) {
    let expected = run_session_with(flavor.clone(), members, script, Tool::Etcdctl, true)
        .unwrap_or_else(|e| panic!("{} cluster of {members} failed to start:\n{e}", flavor.label()));
    assert_eq!(expected.results.len(), script.len(), "etcdctl run stopped early: {:?}", expected.notes);
    let got = run_session_with(flavor.clone(), members, script, Tool::Kaname(kaname.to_path_buf()), true)
        .unwrap_or_else(|e| panic!("{} cluster of {members} failed to start:\n{e}", flavor.label()));
    report("etcdctl", "kaname etcdctl", members, script, &expected, &got);
}

fn report(r: &str, c: &str, members: usize, script: &[Step], expected: &SessionRun, got: &SessionRun) {
    let mut report = String::new();
    let mut differing = 0;
    for (i, s) in script.iter().enumerate() {
        let e = &expected.results[i];
        let Some(g) = got.results.get(i) else {
            differing += 1;
            let _ = writeln!(report, "\n=== step {}: {}\n  not run ({c} stopped early)", i + 1, s.describe());
            continue;
        };
        if e == g {
            continue;
        }
        differing += 1;
        if differing > 12 {
            continue;
        }
        let _ = writeln!(report, "\n=== step {}: {}", i + 1, s.describe());
        if e.code != g.code {
            let _ = writeln!(report, "  exit code: {r} {} / {c} {}", e.code, g.code);
        }
        diff_block(&mut report, "stdout", r, &e.stdout, c, &g.stdout);
        diff_block(&mut report, "stderr", r, &e.stderr, c, &g.stderr);
    }
    if differing == 0 && got.notes.is_empty() {
        return;
    }
    let mut msg = format!(
        "\netcdctl output differs between {r} (expected) and {c} (got) on a {members}-member cluster: {differing} of {} steps differ{}.\n",
        script.len(),
        if differing > 12 { " (first 12 shown)" } else { "" }
    );
    for n in &got.notes {
        let _ = writeln!(msg, "NOTE ({c}): {n}");
    }
    msg.push_str(&report);
    let _ = write!(msg, "\n{c} member logs:\n{}", got.log_tails);
    panic!("{msg}");
}

fn diff_block(out: &mut String, what: &str, r: &str, e: &str, c: &str, g: &str) {
    if e == g {
        return;
    }
    let el: Vec<&str> = e.lines().collect();
    let gl: Vec<&str> = g.lines().collect();
    let first = el.iter().zip(&gl).position(|(a, b)| a != b).unwrap_or(el.len().min(gl.len()));
    let _ = writeln!(out, "  {what} differs at line {}:", first + 1);
    let w = r.len().max(c.len());
    let _ = writeln!(out, "    {r:>w$} | {}", clip(el.get(first).copied().unwrap_or("<no line>")));
    let _ = writeln!(out, "    {c:>w$} | {}", clip(gl.get(first).copied().unwrap_or("<no line>")));
    if el.len() + gl.len() > 2 {
        for (name, lines) in [(r, &el), (c, &gl)] {
            let _ = writeln!(out, "  full {what} from {name} ({} lines):", lines.len());
            for l in lines.iter().take(30) {
                let _ = writeln!(out, "    | {}", clip(l));
            }
            if lines.len() > 30 {
                let _ = writeln!(out, "    | ... {} more", lines.len() - 30);
            }
        }
    }
}

/// Long lines (e.g. a 1.6 MB value) are cut for the report.
fn clip(l: &str) -> String {
    if l.chars().count() <= 400 {
        return l.to_string();
    }
    let head: String = l.chars().take(400).collect();
    format!("{head}... ({} chars)", l.chars().count())
}
