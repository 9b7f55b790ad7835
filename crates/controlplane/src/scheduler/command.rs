//! `kaname scheduler`: kube-scheduler's flags where they apply, and `run(flags, shutdown)`.
//!
//! Every copy runs; with `--leader-elect` (the default) one schedules and the others wait on
//! the `kube-system/kube-scheduler` Lease. A leader that loses the Lease logs "Leaderelection
//! lost" and exits 1, as upstream's; SIGTERM releases the Lease and exits 0.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use clap::Args;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::config::{self, SchedulerConfiguration};
use super::Scheduler;
use crate::leader_election::{Elector, LeaderElectionFlags, Outcome, Term};

/// Upstream's `leaderElection` health check tolerance (`leaderelection.NewLeaderHealthzAdaptor(20s)`).
const LEADER_HEALTH_TOLERANCE: Duration = Duration::from_secs(20);

#[derive(Args, Debug, Clone)]
pub struct SchedulerFlags {
    /// The path to the configuration file (a KubeSchedulerConfiguration,
    /// kubescheduler.config.k8s.io/v1).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// DEPRECATED: path to kubeconfig file with authorization and master location information.
    /// This parameter is ignored if a config file is specified in --config. (Without either:
    /// the in-cluster configuration, $KUBECONFIG or ~/.kube/config.)
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The port on which to serve HTTPS with authentication and authorization. If 0, don't
    /// serve HTTPS at all.
    #[arg(long, default_value_t = 10259)]
    pub secure_port: u16,
    /// The IP address on which to listen for the --secure-port port.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    #[command(flatten)]
    pub leader_election: LeaderElectionFlags,
    /// The ids of the flags given on the command line (filled by the caller from clap's
    /// matches): with --config, only the leader-election ones among them override the file.
    #[arg(skip)]
    pub explicit: Vec<String>,
}

impl SchedulerFlags {
    /// The configuration to run with: the --config file, or upstream's defaults with the flags.
    pub fn configuration(&self) -> Result<SchedulerConfiguration, String> {
        match &self.config {
            Some(path) => config::load(path, &self.leader_election, &self.explicit),
            None => {
                let errs = self.leader_election.validate();
                if !errs.is_empty() {
                    return Err(errs.join(", "));
                }
                let mut cfg = config::defaults(&self.leader_election);
                cfg.kubeconfig = self.kubeconfig.clone();
                Ok(cfg)
            }
        }
    }
}

/// What the health and metrics endpoints read.
struct Endpoints {
    elector: Option<Arc<Elector>>,
    registry: Mutex<Registry>,
}

pub async fn run(flags: SchedulerFlags, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = flags.configuration().map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = client_config(settings.kubeconfig.as_deref()).await?;
    let elector = if settings.leader_election.leader_elect {
        let cfg = settings
            .leader_election
            .config("kube-scheduler")
            .map_err(|e| anyhow::anyhow!("couldn't create leader elector: {e}"))?;
        let client = kube::Client::try_from(config.clone())?;
        Some(Elector::new(client, cfg).map_err(|e| anyhow::anyhow!("couldn't create leader elector: {e}"))?)
    } else {
        None
    };
    // The scheduling work's own client: with leader election, its writes are fenced on the
    // Lease (leader_election/fence.rs).
    let builder = kube::client::ClientBuilder::try_from(config)?;
    let client = match &elector {
        Some(e) => builder.with_layer(&e.fence().layer()).build(),
        None => builder.build(),
    };
    let mut registry = Registry::default();
    if let Some(e) = &elector {
        e.register_metrics(&mut registry);
    }
    let endpoints = Arc::new(Endpoints { elector: elector.clone(), registry: Mutex::new(registry) });
    let _serving = if flags.secure_port != 0 {
        let addr = SocketAddr::new(flags.bind_address, flags.secure_port);
        Some(crate::serving::serve(addr, "kube-scheduler", router(endpoints)).await?)
    } else {
        None
    };

    let scheduler = Scheduler::with_config(client, &settings);
    let stop = CancellationToken::new();
    let runner = schedule(scheduler, elector, stop.clone());
    tokio::pin!(runner);
    tokio::pin!(shutdown);
    tokio::select! {
        r = &mut runner => return r,
        _ = &mut shutdown => stop.cancel(),
    }
    // Stopping: the term ends, the work returns, the Lease is released.
    runner.await
}

async fn schedule(
    scheduler: Arc<Scheduler>,
    elector: Option<Arc<Elector>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Some(e) = elector else {
        scheduler.run(Term::unelected(stop)).await;
        return Ok(());
    };
    tracing::info!(identity = %e.identity(), "leader election: waiting for kube-system/{}", e.config().name);
    match e.run(stop, move |term| scheduler.run(term)).await {
        Outcome::Stopped => {
            tracing::info!("Requested to terminate, exiting");
            Ok(())
        }
        Outcome::Lost => {
            tracing::error!("Leaderelection lost");
            anyhow::bail!("Leaderelection lost")
        }
    }
}

/// The client configuration from `--kubeconfig`, or inferred as client-go's components do.
async fn client_config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("invalid kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(config)
}

fn router(endpoints: Arc<Endpoints>) -> Router {
    Router::new()
        .route("/healthz", get(|s, q| check("/healthz", s, q, true)))
        .route("/readyz", get(|s, q| check("/readyz", s, q, true)))
        .route("/livez", get(|s, q| check("/livez", s, q, false)))
        .route("/metrics", get(metrics))
        .with_state(endpoints)
}

async fn check(
    path: &'static str,
    State(e): State<Arc<Endpoints>>,
    RawQuery(q): RawQuery,
    leader: bool,
) -> impl IntoResponse {
    let mut checks = Vec::new();
    if leader {
        if let Some(el) = &e.elector {
            checks.push(("leaderElection", el.check(LEADER_HEALTH_TOLERANCE)));
        }
    }
    let verbose = q.as_deref().is_some_and(|q| q.split('&').any(|kv| kv == "verbose" || kv.starts_with("verbose=")));
    let (code, body) = crate::serving::health(path, &checks, verbose);
    (StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body)
}

async fn metrics(State(e): State<Arc<Endpoints>>) -> impl IntoResponse {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &e.registry.lock().unwrap());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out)
}
