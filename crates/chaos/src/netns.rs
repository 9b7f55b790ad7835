//! Network partitions: each member in its own network namespace, linked by a veth pair to a
//! bridge that this tool creates (the tool's clients reach members through the bridge's own
//! address). A partition is an nftables input rule inside a member's namespace that drops
//! packets from the peers it must not hear; healing deletes the rules. Dropping (not rejecting)
//! is what a real partition looks like: connections hang instead of failing fast.
//!
//! Needs root (ip netns, nft). Every name carries this process's id and a counter, and `Drop`
//! deletes the namespaces and the bridge this struct made, so runs never touch anything else.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    /// Unique tag (pid + letter), in every interface and namespace name (≤ 15 chars each).
    tag: String,
    prefix: String,
    /// Namespaces ("slots") made so far: one per member, including members added mid-run.
    n: usize,
    created_ns: Vec<String>,
    bridge: Option<String>,
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("run {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Netns {
    pub fn create(n: usize) -> anyhow::Result<Netns> {
        reclaim_stale();
        let pid = std::process::id();
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{pid}{}", (b'a' + (k % 26) as u8) as char);
        // 10.237.X.0/24 per run, X not on any interface yet (parallel runs stay apart).
        let in_use = Command::new("ip").args(["-4", "-o", "addr"]).output().map(|o| o.stdout).unwrap_or_default();
        let in_use = String::from_utf8_lossy(&in_use);
        let start = pid.wrapping_mul(7).wrapping_add(k);
        let prefix = (0..250)
            .map(|d| format!("10.237.{}", (start + d) % 250 + 1))
            .find(|p| !in_use.contains(&format!(" {p}.")))
            .context("no free 10.237.X.0/24")?;
        let mut net = Netns { tag, prefix, n: 0, created_ns: Vec::new(), bridge: None };
        net.setup(n).context("create network namespaces (needs root, ip and nft)")?;
        Ok(net)
    }

    fn ns(&self, i: usize) -> String {
        format!("kc{}m{i}", self.tag)
    }

    fn setup(&mut self, n: usize) -> anyhow::Result<()> {
        let br = format!("kcb{}", self.tag);
        run(&["ip", "link", "add", &br, "type", "bridge"])?;
        self.bridge = Some(br.clone());
        run(&["ip", "addr", "add", &format!("{}.1/24", self.prefix), "dev", &br])?;
        run(&["ip", "link", "set", &br, "up"])?;
        for _ in 0..n {
            self.add_slot()?;
        }
        Ok(())
    }

    /// One more namespace on the bridge (for a member added mid-run); returns its slot.
    pub fn add_slot(&mut self) -> anyhow::Result<usize> {
        let i = self.n;
        anyhow::ensure!(i < 200, "too many namespaces in one run");
        let br = self.bridge.clone().context("no bridge")?;
        let ns = self.ns(i);
        run(&["ip", "netns", "add", &ns])?;
        self.created_ns.push(ns.clone());
        self.n += 1;
        let host = format!("kcv{}{i}", self.tag);
        let inside = format!("kcp{}{i}", self.tag);
        run(&["ip", "link", "add", &host, "type", "veth", "peer", "name", &inside])?;
        run(&["ip", "link", "set", &inside, "netns", &ns])?;
        run(&["ip", "link", "set", &host, "master", &br, "up"])?;
        run(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", self.ip(i)), "dev", &inside])?;
        run(&["ip", "-n", &ns, "link", "set", &inside, "up"])?;
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        Ok(i)
    }

    /// Member `i`'s address (0-based).
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 11 + i)
    }

    /// A command that runs `program` inside member `i`'s namespace. nsenter execs (no fork for
    /// a network namespace), so the child's PID is the member's: kill and SIGSTOP hit it.
    pub fn command(&self, i: usize, program: &std::path::Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/var/run/netns/{}", self.ns(i))).arg("--").arg(program);
        c
    }

    fn nft(&self, i: usize, script: &str) -> anyhow::Result<()> {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.ns(i)))
            .args(["--", "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("piped").write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("nft in {}: {}", self.ns(i), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// Cuts the network so that members only hear the members of their own groups (a member
    /// in two groups is a bridge). Groups hold slots; slots in no group (members removed from
    /// the cluster) are left alone. Client traffic (from the bridge address) still flows.
    pub fn partition(&self, groups: &[Vec<usize>]) -> anyhow::Result<()> {
        self.heal();
        let mut slots: Vec<usize> = groups.iter().flatten().copied().collect();
        slots.sort_unstable();
        slots.dedup();
        for &i in &slots {
            let hears = |j: usize| groups.iter().any(|g| g.contains(&i) && g.contains(&j));
            let deaf: Vec<String> = slots.iter().filter(|&&j| j != i && !hears(j)).map(|&j| self.ip(j)).collect();
            if deaf.is_empty() {
                continue;
            }
            let script = format!(
                "table inet kchaos {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    ip saddr {{ {} }} drop\n  }}\n}}\n",
                deaf.join(", ")
            );
            self.nft(i, &script)?;
        }
        Ok(())
    }

    /// Removes every partition rule.
    pub fn heal(&self) {
        for i in 0..self.n {
            let _ = self.nft(i, "delete table inet kchaos\n");
        }
    }
}

/// Deletes namespaces and bridges left by a run of this tool that was SIGKILLed (its Drop never
/// ran): names `kc<pid><letter>m<i>` / `kcb<pid><letter>` whose process no longer exists.
fn reclaim_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    let parse = |name: &str| -> Option<(u32, String)> {
        let rest = name.strip_prefix("kc")?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let tail = &rest[digits.len()..];
        let mut chars = tail.chars();
        let letter = chars.next().filter(|c| c.is_ascii_lowercase())?;
        let m = chars.as_str().strip_prefix('m')?;
        (!digits.is_empty() && !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()))
            .then(|| (digits.parse().ok(), format!("{digits}{letter}")))
            .and_then(|(pid, tag)| pid.map(|p| (p, tag)))
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some((pid, tag)) = parse(name) {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = run(&["ip", "netns", "del", name]);
                let _ = run(&["ip", "link", "del", &format!("kcb{tag}")]);
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for ns in &self.created_ns {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        if let Some(br) = &self.bridge {
            let _ = run(&["ip", "link", "del", br]);
        }
    }
}
