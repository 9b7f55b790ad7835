//! `kaname etcdctl`: a drop-in replacement for etcdctl v3 (3.4). It is a plain client of the
//! etcd v3 gRPC API (kaname-proto only), prints what etcdctl prints (simple, json, fields,
//! table, protobuf) and exits with etcdctl's codes.

mod auth;
mod client;
mod cluster;
mod kv;
mod lease;
mod out;
mod pr;
mod watch;

use std::ffi::OsString;

use clap::{Parser, Subcommand};

use client::{Global, Res};

#[derive(Parser, Debug)]
#[command(name = "etcdctl", about = "A simple command line client for etcd3.", disable_version_flag = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Puts the given key into the store
    Put(kv::PutArgs),
    /// Gets the key or a range of keys
    Get(kv::GetArgs),
    /// Removes the specified key or range of keys [key, range_end)
    Del(kv::DelArgs),
    /// Txn processes all the requests in one transaction
    Txn(kv::TxnArgs),
    /// Compacts the event history in etcd
    Compaction(kv::CompactionArgs),
    /// Watches events stream on keys or prefixes
    Watch(watch::WatchArgs),
    /// Endpoint related commands
    #[command(subcommand)]
    Endpoint(cluster::EndpointCmd),
    /// Membership related commands
    #[command(subcommand)]
    Member(cluster::MemberCmd),
    /// Lease related commands
    #[command(subcommand)]
    Lease(lease::LeaseCmd),
    /// Alarm related commands
    #[command(subcommand)]
    Alarm(cluster::AlarmCmd),
    /// Defragments the storage of the etcd members with given endpoints
    Defrag(cluster::DefragArgs),
    /// Manages etcd node snapshots
    #[command(subcommand)]
    Snapshot(cluster::SnapshotCmd),
    /// Transfers leadership to another etcd cluster member.
    MoveLeader(cluster::MoveLeaderArgs),
    /// User related commands
    #[command(subcommand)]
    User(auth::UserCmd),
    /// Role related commands
    #[command(subcommand)]
    Role(auth::RoleCmd),
    /// Enable or disable authentication
    #[command(subcommand)]
    Auth(auth::AuthCmd),
    /// Prints the version of etcdctl
    Version,
}

/// Runs etcdctl with `args` (without the program name) and returns the exit code.
pub use cluster::{set_restorer, RestoreRequest, Restorer};

pub fn run(args: Vec<OsString>) -> i32 {
    let mut argv = vec![OsString::from("etcdctl")];
    argv.extend(args);
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
                let _ = e.print();
                return 0;
            }
            // cobra's wording for the common cases; the usage text is not repeated.
            let msg = match e.kind() {
                ErrorKind::UnknownArgument => {
                    let arg = e.get(clap::error::ContextKind::InvalidArg).map(|a| a.to_string()).unwrap_or_default();
                    let flag = arg.split(['=', ' ']).next().unwrap_or_default().to_string();
                    if flag.starts_with("--") {
                        format!("unknown flag: {flag}")
                    } else {
                        format!("unknown shorthand flag: {:?} in {flag}", flag.chars().nth(1).unwrap_or(' '))
                            .replace('"', "'")
                    }
                }
                ErrorKind::InvalidSubcommand => {
                    let arg =
                        e.get(clap::error::ContextKind::InvalidSubcommand).map(|a| a.to_string()).unwrap_or_default();
                    format!("unknown command {arg:?} for \"etcdctl\"")
                }
                _ => e.render().to_string().lines().next().unwrap_or("").trim_start_matches("error: ").to_string(),
            };
            eprintln!("Error: {msg}");
            return 1;
        }
    };
    if let Ok(api) = std::env::var("ETCDCTL_API") {
        if api != "3" && !api.is_empty() {
            eprintln!("Error: kaname etcdctl only speaks the v3 API (ETCDCTL_API={api})");
            return 1;
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    let r = rt.block_on(dispatch(cli));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    match r {
        Ok(()) => 0,
        Err(e) => {
            if let Some(m) = e.msg {
                eprintln!("Error: {m}");
            }
            e.code
        }
    }
}

async fn dispatch(cli: Cli) -> Res {
    let g = &cli.global;
    match cli.command {
        Cmd::Put(a) => kv::put(g, a).await,
        Cmd::Get(a) => kv::get(g, a).await,
        Cmd::Del(a) => kv::del(g, a).await,
        Cmd::Txn(a) => kv::txn(g, a).await,
        Cmd::Compaction(a) => kv::compaction(g, a).await,
        Cmd::Watch(a) => watch::watch(g, a).await,
        Cmd::Endpoint(c) => cluster::endpoint(g, c).await,
        Cmd::Member(c) => cluster::member(g, c).await,
        Cmd::Lease(c) => lease::lease(g, c).await,
        Cmd::Alarm(c) => cluster::alarm(g, c).await,
        Cmd::Defrag(a) => cluster::defrag(g, a).await,
        Cmd::Snapshot(c) => cluster::snapshot(g, c).await,
        Cmd::MoveLeader(a) => cluster::move_leader(g, a).await,
        Cmd::User(c) => auth::user(g, c).await,
        Cmd::Role(c) => auth::role(g, c).await,
        Cmd::Auth(c) => auth::auth(g, c).await,
        Cmd::Version => {
            out::outln("etcdctl version: 3.4.23");
            out::outln("API version: 3.4");
            Ok(())
        }
    }
}
