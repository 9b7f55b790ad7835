//! `kaname`: one binary for the whole control plane. This file only parses the command line
//! and dispatches; each subcommand lives in its own crate, flags included: a component is a
//! flags struct and `run(flags, shutdown)` (docs/architecture.md, "One shape per component").

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use kaname_store::EtcdFlags;

#[derive(Parser)]
#[command(name = "kaname", version, about = "A Kubernetes-style highly available control plane in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a member of the etcd-compatible store (etcd's flags and defaults).
    Etcd(Box<EtcdFlags>),
    /// Benchmark an etcd v3 endpoint (kaname or etcd) with the same client code.
    #[command(subcommand)]
    Bench(kaname_bench::BenchCommand),
    /// The Kubernetes API server over etcd v3 (kube-apiserver's flags and defaults).
    Apiserver(Box<kaname_apiserver::ApiserverFlags>),
    /// The scheduler: binds pods to nodes; several copies, one active (kube-scheduler's flags).
    Scheduler(Box<kaname_controlplane::scheduler::SchedulerFlags>),
    /// Fault injection with a linearizability check, against kaname or real etcd.
    Chaos(kaname_chaos::ChaosArgs),
    /// etcdctl v3 (3.4): the same commands, flags, output formats and exit codes.
    #[command(disable_help_flag = true)]
    Etcdctl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn init_logging(level: &str) {
    let level = match level {
        "panic" | "fatal" => "error",
        l => l,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KANAME_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},openraft=warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("received shutdown signal");
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Etcd(flags) => {
            init_logging(&flags.log_level);
            let rt = flags.runtime()?;
            rt.block_on(kaname_store::run(*flags, shutdown_signal()))
        }
        Command::Etcdctl { args } => {
            kaname_etcdctl::set_restorer(restore_snapshot);
            std::process::exit(kaname_etcdctl::run(args))
        }
        Command::Apiserver(flags) => {
            init_logging("info");
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(kaname_apiserver::run(*flags, shutdown_signal()))
        }
        Command::Scheduler(mut flags) => {
            init_logging("info");
            // Which flags were given (with --config only those override the file).
            if let Some(m) = matches.subcommand_matches("scheduler") {
                flags.explicit = m
                    .ids()
                    .filter(|id| m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine))
                    .map(|id| id.to_string())
                    .collect();
            }
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(kaname_controlplane::scheduler::run(*flags, shutdown_signal()))
        }
        Command::Chaos(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(kaname_chaos::main(args))
        }
        Command::Bench(cmd) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(kaname_bench::run(cmd))
        }
    }
}

/// `kaname etcdctl snapshot restore`: the client parses etcdctl's flags, the store builds the
/// data dir (its format is the store's business).
fn restore_snapshot(req: &kaname_etcdctl::RestoreRequest) -> Result<(), String> {
    let opts = kaname_store::restore::RestoreOptions {
        snapshot: PathBuf::from(req.snapshot.clone().unwrap_or_default()),
        name: req.name.clone(),
        data_dir: PathBuf::from(&req.data_dir),
        initial_cluster: req.initial_cluster.clone(),
        initial_cluster_token: req.initial_cluster_token.clone(),
        initial_advertise_peer_urls: req.initial_advertise_peer_urls.clone(),
        skip_hash_check: req.skip_hash_check,
    };
    let r = kaname_store::restore::restore(&opts).map_err(|e| e.to_string())?;
    eprintln!(
        "restored snapshot {} into {}: member {:x} of cluster {:x}, revision {}",
        opts.snapshot.display(),
        opts.data_dir.display(),
        r.member_id,
        r.cluster_id,
        r.revision
    );
    Ok(())
}
