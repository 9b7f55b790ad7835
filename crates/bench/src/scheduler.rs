//! `kaname bench scheduler`: scheduling throughput end to end, modeled on upstream's
//! scheduler_perf (test/integration/scheduler_perf), but through a real API server and a real
//! `kaname scheduler` process rather than in one test binary:
//!
//! 1. `--nodes` fake nodes are created through the API (upstream's `node-default.yaml`: 4 CPUs,
//!    32 GiB, 110 pods, Ready; with a zone label over `--zones` zones);
//! 2. `--init-pods` pods are created and awaited (bound) first, unmeasured (upstream's
//!    `createPods` with `skipWaitToCompletion: false` before the measured op);
//! 3. `--pods` pods are created by `--concurrency` clients as fast as the API server takes
//!    them, while one watch records when each is first seen bound;
//! 4. reported: pods scheduled per second (measured pods over the time from the first create
//!    to the last binding), the latency created → bound (p50/p90/p99/max), and the
//!    scheduler's resident memory when given its PID.
//!
//! Workloads (upstream's templates): `basic` (`pod-default.yaml`: 100m CPU, 500 MiB),
//! `spread` (`pod-with-topology-spreading.yaml`-like: maxSkew 1 over zones, DoNotSchedule),
//! `anti-affinity` (`pod-with-pod-anti-affinity.yaml`: no two `color: green` pods on one
//! hostname; at most one pod per node fits, so `--init-pods` + `--pods` must stay ≤ `--nodes`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use crate::report::{percentile, rss};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Workload {
    Basic,
    Spread,
    AntiAffinity,
}

#[derive(Args, Clone, Debug)]
pub struct SchedulerFlags {
    /// Kubeconfig of the API server the scheduler under test reads.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// PID of the scheduler, to report its resident memory.
    #[arg(long)]
    pub scheduler_pid: Option<u32>,
    #[arg(long, value_enum, default_value = "basic")]
    pub workload: Workload,
    /// Fake nodes to create.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Zones the nodes are spread over (label topology.kubernetes.io/zone).
    #[arg(long, default_value_t = 3)]
    pub zones: usize,
    /// Pods created and bound before the measurement.
    #[arg(long, default_value_t = 0)]
    pub init_pods: usize,
    /// Pods measured.
    #[arg(long, default_value_t = 10000)]
    pub pods: usize,
    /// Concurrent creating clients.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Namespace of the pods (created; a fresh cluster is expected).
    #[arg(long, default_value = "sched-0")]
    pub namespace: String,
    /// Give up waiting for bindings after this many seconds without progress.
    #[arg(long, default_value_t = 60)]
    pub stall_timeout: u64,
}

fn node(i: usize, zones: usize) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": format!("scheduler-perf-{i}"), "labels": {
            "kubernetes.io/hostname": format!("scheduler-perf-{i}"),
            "topology.kubernetes.io/zone": format!("zone-{}", i % zones.max(1)),
        }},
        "spec": {},
        "status": {
            "capacity": {"pods": "110", "cpu": "4", "memory": "32Gi"},
            "allocatable": {"pods": "110", "cpu": "4", "memory": "32Gi"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "phase": "Running",
        },
    }))
    .expect("node template")
}

fn pod(name: &str, workload: Workload) -> Pod {
    let mut p = json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
            "ports": [{"containerPort": 80}],
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}, "limits": {"cpu": "100m", "memory": "500Mi"}}}]},
    });
    match workload {
        Workload::Basic => {}
        Workload::Spread => {
            p["metadata"]["labels"] = json!({"color": "blue"});
            p["spec"]["topologySpreadConstraints"] = json!([{
                "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"color": "blue"}},
            }]);
        }
        Workload::AntiAffinity => {
            p["metadata"]["labels"] = json!({"color": "green"});
            p["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"color": "green"}}, "topologyKey": "kubernetes.io/hostname",
            }]}});
        }
    }
    serde_json::from_value::<Pod>(p).expect("pod template")
}

/// Creates `names` with `concurrency` clients; returns when each create was sent.
async fn create_pods(
    api: &Api<Pod>,
    names: Vec<String>,
    workload: Workload,
    concurrency: usize,
) -> anyhow::Result<HashMap<String, Instant>> {
    let sent = Arc::new(Mutex::new(HashMap::with_capacity(names.len())));
    futures::stream::iter(names)
        .map(|name| {
            let (api, sent) = (api.clone(), sent.clone());
            async move {
                let p = pod(&name, workload);
                sent.lock().unwrap().insert(name, Instant::now());
                api.create(&PostParams::default(), &p).await.map(|_| ())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    Ok(sent)
}

/// When each pod was first seen bound, by name.
type BoundAt = Arc<Mutex<HashMap<String, Instant>>>;

/// Records, from one watch of the namespace, when each pod was first seen bound.
fn follow_bindings(api: Api<Pod>) -> (BoundAt, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let bound = Arc::new(Mutex::new(HashMap::new()));
    let b = bound.clone();
    let task = tokio::spawn(async move {
        let mut rv = "0".to_string();
        loop {
            let params = WatchParams::default().timeout(290);
            let mut events = api.watch(&params, &rv).await?.boxed();
            while let Some(e) = events.next().await {
                let p = match e? {
                    WatchEvent::Added(p) | WatchEvent::Modified(p) => p,
                    WatchEvent::Bookmark(bm) => {
                        rv = bm.metadata.resource_version;
                        continue;
                    }
                    WatchEvent::Deleted(_) => continue,
                    WatchEvent::Error(e) => anyhow::bail!("watch: {e:?}"),
                };
                rv = p.metadata.resource_version.clone().unwrap_or(rv);
                if p.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                    b.lock().unwrap().entry(p.metadata.name.unwrap_or_default()).or_insert_with(Instant::now);
                }
            }
        }
    });
    (bound, task)
}

/// Waits until every one of `names` is bound (or no progress for `stall`).
async fn await_bound(bound: &Mutex<HashMap<String, Instant>>, names: &[String], stall: Duration) -> anyhow::Result<()> {
    let mut last = (0, Instant::now());
    loop {
        let n = {
            let b = bound.lock().unwrap();
            names.iter().filter(|n| b.contains_key(*n)).count()
        };
        if n == names.len() {
            return Ok(());
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > stall {
            anyhow::bail!("{n} of {} pods bound; no progress for {stall:?}", names.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn run(flags: SchedulerFlags) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(&flags.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    if matches!(flags.workload, Workload::AntiAffinity) {
        anyhow::ensure!(
            flags.init_pods + flags.pods <= flags.nodes,
            "anti-affinity: at most one pod per node fits: --init-pods + --pods must be ≤ --nodes"
        );
    }

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": flags.namespace}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let started = Instant::now();
    futures::stream::iter(0..flags.nodes)
        .map(|i| {
            let nodes = nodes.clone();
            async move { nodes.create(&PostParams::default(), &node(i, flags.zones)).await.map(|_| ()) }
        })
        .buffer_unordered(flags.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    println!("{} nodes created in {:.1} s", flags.nodes, started.elapsed().as_secs_f64());

    let pods: Api<Pod> = Api::namespaced(client.clone(), &flags.namespace);
    let (bound, watch) = follow_bindings(pods.clone());
    let stall = Duration::from_secs(flags.stall_timeout);
    if flags.init_pods > 0 {
        let names: Vec<String> = (0..flags.init_pods).map(|i| format!("init-{i}")).collect();
        let t = Instant::now();
        create_pods(&pods, names.clone(), flags.workload, flags.concurrency).await?;
        await_bound(&bound, &names, stall).await?;
        println!("{} initial pods bound in {:.1} s", flags.init_pods, t.elapsed().as_secs_f64());
    }

    let names: Vec<String> = (0..flags.pods).map(|i| format!("pod-{i}")).collect();
    let first = Instant::now();
    let sent = create_pods(&pods, names.clone(), flags.workload, flags.concurrency).await?;
    let created = first.elapsed();
    let result = await_bound(&bound, &names, stall).await;
    watch.abort();
    result?;
    let b = bound.lock().unwrap();
    let last = names.iter().filter_map(|n| b.get(n)).max().copied().unwrap_or(first);
    let mut latencies: Vec<f64> =
        names.iter().map(|n| b[n].saturating_duration_since(sent[n]).as_secs_f64() * 1000.0).collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let total = last.duration_since(first).as_secs_f64();
    println!(
        "| workload | nodes | init pods | pods | created in (s) | scheduled in (s) | pods/s | p50 ms | p90 ms | p99 ms | max ms | scheduler RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {:?} | {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
        flags.workload,
        flags.nodes,
        flags.init_pods,
        flags.pods,
        created.as_secs_f64(),
        total,
        flags.pods as f64 / total.max(f64::MIN_POSITIVE),
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0.0),
        rss(flags.scheduler_pid),
    );
    Ok(())
}
