//! `kaname chaos`: fault injection against a cluster of real processes (kaname, or real etcd
//! with `--etcd`), with concurrent clients whose history is checked for linearizability.
//! See docs/fault-testing.md.

pub mod checker;
pub mod cluster;
pub mod lease;
pub mod membership;
pub mod netns;
pub mod run;
pub mod schedule;
pub mod watch;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

pub use run::{run_one, RunConfig, RunReport};
pub use schedule::FaultKind;

#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    /// Test a real etcd (at --etcd-bin) instead of kaname.
    #[arg(long)]
    pub etcd: bool,
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd_bin: PathBuf,
    /// The kaname binary to run members with [default: this binary].
    #[arg(long)]
    pub kaname_bin: Option<PathBuf>,
    /// Cluster size (3 or 5).
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Seed of the fault schedule and the workload [default: random]; run k uses seed + k.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of runs (one fresh cluster each).
    #[arg(long, default_value_t = 1)]
    pub runs: u64,
    /// Seconds of workload under faults per run.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 6)]
    pub clients: usize,
    /// Clients that grant leases (TTL 2-5 s), attach keys, and keep them alive, revoke them or
    /// let them expire (checked at the end).
    #[arg(long, default_value_t = 2)]
    pub lease_clients: usize,
    /// Number of registers the clients share (few keys: much contention).
    #[arg(long, default_value_t = 5)]
    pub keys: usize,
    /// Faults to inject: kill, pause, partition (each member in its own network namespace:
    /// needs root), membership (member remove + add), clock (libfaketime), or all.
    #[arg(long, value_delimiter = ',', default_value = "kill,pause")]
    pub faults: Vec<FaultKind>,
    /// Members' --election-timeout in ms (heartbeat is a tenth).
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// Client timeout per operation, in ms; a write that times out has an unknown outcome.
    #[arg(long, default_value_t = 2000)]
    pub op_timeout: u64,
    /// Read with serializable=true (local, not linearizable): a deliberately wrong client,
    /// to see the checker catch it.
    #[arg(long)]
    pub serializable_reads: bool,
    /// Keep run directories even when the run passes.
    #[arg(long)]
    pub keep: bool,
    /// Where run directories go [default: the system temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl ChaosArgs {
    pub fn config(&self, seed: u64) -> anyhow::Result<RunConfig> {
        let flavor = if self.etcd {
            cluster::Flavor::Etcd(self.etcd_bin.clone())
        } else {
            cluster::Flavor::Kaname(match &self.kaname_bin {
                Some(p) => p.clone(),
                // Linux names a replaced binary "<path> (deleted)": a rebuild during a long
                // `--runs` must not break the runs after it; they use the new binary.
                None => {
                    let exe = std::env::current_exe()?;
                    let text = exe.to_string_lossy();
                    match text.strip_suffix(" (deleted)") {
                        Some(p) => PathBuf::from(p),
                        None => exe,
                    }
                }
            })
        };
        anyhow::ensure!(self.members >= 3, "--members must be at least 3 for faults to be survivable");
        Ok(RunConfig {
            flavor,
            members: self.members,
            seed,
            duration: Duration::from_secs_f64(self.duration),
            clients: self.clients,
            lease_clients: self.lease_clients,
            faults: self.faults.clone(),
            election_timeout_ms: self.election_timeout,
            workload: workload::WorkloadConfig {
                keys: self.keys,
                op_timeout: Duration::from_millis(self.op_timeout),
                serializable_reads: self.serializable_reads,
            },
            dir: self.dir.clone().unwrap_or_else(std::env::temp_dir),
            keep: self.keep,
        })
    }
}

/// Runs `--runs` seeds one after another; Err (non-zero exit) if any run fails.
/// Ctrl-C drops the run in progress, whose cluster then SIGKILLs the members it started.
pub async fn main(args: ChaosArgs) -> anyhow::Result<()> {
    let first = args.seed.unwrap_or_else(|| rand::random::<u32>() as u64);
    let mut failed = Vec::new();
    for k in 0..args.runs {
        let seed = first + k;
        let cfg = args.config(seed)?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let report = tokio::select! {
            r = run_one(&cfg) => r?,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted during seed {seed}; members killed"),
            _ = term.recv() => anyhow::bail!("terminated during seed {seed}; members killed"),
        };
        println!("{report}");
        if !report.passed() {
            failed.push(seed);
        }
    }
    if !failed.is_empty() {
        // A finding, not a crash of the tool: a plain line and exit code 1, no backtrace.
        eprintln!("chaos: {} of {} runs failed; seeds {failed:?}", failed.len(), args.runs);
        std::process::exit(1);
    }
    println!("all {} runs passed (seeds {first}..={})", args.runs, first + args.runs - 1);
    Ok(())
}
