//! `kaname bench apiserver`: the Kubernetes API server under a kube-rs client (the Rust
//! counterpart of client-go), whatever store is behind it:
//!
//! 1. create / get / update / list latency at fixed request rates, open loop (a request is
//!    sent on schedule whether or not earlier ones answered, and its latency counts from its
//!    scheduled time, so a stall shows up in the percentiles instead of slowing the load);
//! 2. listing a namespace of many pods, from etcd (no resourceVersion) and from the watch
//!    cache (resourceVersion=0);
//! 3. many concurrent watchers of one namespace, and the latency from an update being sent to
//!    each watcher receiving its event;
//! 4. the API server's resident memory (RSS) after each step, when given its PID.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use crate::report::{percentile, rss};

#[derive(Args, Clone, Debug)]
pub struct ApiserverFlags {
    /// Kubeconfig of the API server to measure (e.g. its --cert-dir's admin.conf).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// PID of the API server, to report its resident memory.
    #[arg(long)]
    pub apiserver_pid: Option<u32>,
    /// Request rates (per second) of the fixed-rate runs, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "50,200")]
    pub rates: Vec<u32>,
    /// Seconds each operation runs at each rate.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Pods in the namespace the fixed-rate lists read.
    #[arg(long, default_value_t = 100)]
    pub list_size: usize,
    /// Pods in the big list.
    #[arg(long, default_value_t = 10000)]
    pub pods: usize,
    /// Concurrent watchers.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Updates the watchers are sent (one every 100 ms).
    #[arg(long, default_value_t = 50)]
    pub watch_events: usize,
    /// Prefix of the namespaces the benchmark creates (a fresh store is expected).
    #[arg(long, default_value = "bench")]
    pub namespace_prefix: String,
}

/// Latencies of one run and how many requests failed.
struct Run {
    label: String,
    samples: Vec<f64>,
    errors: usize,
}

impl Run {
    fn print(&mut self) {
        self.samples.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        let ms = |p: f64| percentile(&self.samples, p) * 1000.0;
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            self.label,
            self.samples.len(),
            ms(50.0),
            ms(90.0),
            ms(99.0),
            self.samples.last().copied().unwrap_or(0.0) * 1000.0,
            self.errors
        );
    }
}

fn header() {
    println!("| run | requests | p50 ms | p90 ms | p99 ms | max ms | errors |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "load"}},
        "spec": {"containers": [{"name": "c", "image": "registry.example/bench:1",
                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }))
    .expect("a valid pod")
}

async fn ensure_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates `n` pods named `<prefix><i>`, `parallel` at a time.
async fn create_pods(api: &Api<Pod>, prefix: &str, n: usize, parallel: usize) -> anyhow::Result<()> {
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}{i}");
            async move { api.create(&PostParams::default(), &pod(&name)).await.map(|_| ()) }
        })
        .buffer_unordered(parallel)
        .try_collect::<()>()
        .await?;
    Ok(())
}

/// `rate` requests per second for `duration`, open loop: request i is sent at start + i/rate
/// and its latency counts from then.
async fn fixed_rate<F, Fut>(label: String, rate: u32, duration: Duration, op: F) -> Run
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let n = (rate as u64 * duration.as_secs()) as usize;
    let start = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let at = start + interval * i as u32;
        tokio::time::sleep_until(at).await;
        let fut = op(i);
        tasks.spawn(async move {
            let ok = fut.await.is_ok();
            (at.elapsed().as_secs_f64(), ok)
        });
    }
    let mut run = Run { label, samples: Vec::with_capacity(n), errors: 0 };
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((latency, true)) => run.samples.push(latency),
            _ => run.errors += 1,
        }
    }
    run
}

pub async fn run(flags: ApiserverFlags) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(&flags.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let prefix = &flags.namespace_prefix;
    let duration = Duration::from_secs(flags.duration);
    println!("API server RSS at start: {}", rss(flags.apiserver_pid));

    // 1. Fixed-rate single-object requests and small lists.
    let list_ns = format!("{prefix}-list");
    ensure_namespace(&client, &list_ns).await?;
    create_pods(&Api::namespaced(client.clone(), &list_ns), "p", flags.list_size, 16).await?;
    println!("\n### Requests at fixed rates (open loop, {}s per operation and rate)\n", flags.duration);
    header();
    for &rate in &flags.rates {
        let ns = format!("{prefix}-rw-{rate}");
        ensure_namespace(&client, &ns).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let created = (rate as u64 * flags.duration) as usize;
        let api = pods.clone();
        fixed_rate(format!("create pod @ {rate}/s"), rate, duration, move |i| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &pod(&format!("p{i}"))).await.map(|_| ()).map_err(Into::into) }
        })
        .await
        .print();
        let api = pods.clone();
        fixed_rate(format!("get pod @ {rate}/s"), rate, duration, move |i| {
            let api = api.clone();
            async move { api.get(&format!("p{}", i % created)).await.map(|_| ()).map_err(Into::into) }
        })
        .await
        .print();
        let api = pods.clone();
        fixed_rate(format!("update pod @ {rate}/s"), rate, duration, move |i| {
            let api = api.clone();
            async move {
                // An unconditional update (no resourceVersion): one request, no conflicts.
                let mut p = pod(&format!("p{}", i % created));
                p.metadata.annotations = Some([("bench/round".to_string(), i.to_string())].into());
                api.replace(&format!("p{}", i % created), &PostParams::default(), &p)
                    .await
                    .map(|_| ())
                    .map_err(Into::into)
            }
        })
        .await
        .print();
        let api: Api<Pod> = Api::namespaced(client.clone(), &list_ns);
        fixed_rate(format!("list {} pods @ {rate}/s", flags.list_size), rate, duration, move |_| {
            let api = api.clone();
            async move { api.list(&ListParams::default()).await.map(|_| ()).map_err(Into::into) }
        })
        .await
        .print();
    }
    println!("\nAPI server RSS after the fixed-rate runs: {}", rss(flags.apiserver_pid));

    // 2. A big namespace, listed whole.
    let big_ns = format!("{prefix}-big");
    ensure_namespace(&client, &big_ns).await?;
    let big: Api<Pod> = Api::namespaced(client.clone(), &big_ns);
    let started = Instant::now();
    create_pods(&big, "p", flags.pods, 32).await?;
    println!(
        "\nCreated {} pods in {:.1}s (32 in flight): {:.0}/s; API server RSS now {}\n",
        flags.pods,
        started.elapsed().as_secs_f64(),
        flags.pods as f64 / started.elapsed().as_secs_f64(),
        rss(flags.apiserver_pid)
    );
    header();
    for (label, params) in [
        ("etcd (no resourceVersion)", ListParams::default()),
        ("watch cache (resourceVersion=0)", ListParams::default().match_any()),
    ] {
        let mut run = Run { label: format!("list {} pods from {label}", flags.pods), samples: Vec::new(), errors: 0 };
        for _ in 0..5 {
            let t = Instant::now();
            match big.list(&params).await {
                Ok(l) if l.items.len() == flags.pods => run.samples.push(t.elapsed().as_secs_f64()),
                _ => run.errors += 1,
            }
        }
        run.print();
    }
    println!("\nAPI server RSS after the lists: {}", rss(flags.apiserver_pid));

    // 3. Many watchers of one namespace; each update carries the time it was sent.
    let watch_ns = format!("{prefix}-watch");
    ensure_namespace(&client, &watch_ns).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &watch_ns);
    let mut cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "ticker"}, "data": {"sent": "0"}}))?;
    let rv = cms.create(&PostParams::default(), &cm).await?.metadata.resource_version.unwrap_or_default();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let streams = futures::stream::iter(0..flags.watchers)
        .map(|_| {
            let cms = cms.clone();
            let rv = rv.clone();
            async move { cms.watch(&WatchParams::default().timeout(290), &rv).await }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    println!(
        "\n{} watchers established in {:.1}s; API server RSS now {}",
        flags.watchers,
        started.elapsed().as_secs_f64(),
        rss(flags.apiserver_pid)
    );
    let mut tasks = tokio::task::JoinSet::new();
    for stream in streams {
        let latencies = latencies.clone();
        let want = flags.watch_events;
        tasks.spawn(async move {
            let mut stream = stream.boxed();
            let mut got = 0;
            while got < want {
                match stream.next().await {
                    Some(Ok(WatchEvent::Modified(cm))) => {
                        let sent: u128 = cm.data.and_then(|d| d.get("sent").and_then(|s| s.parse().ok())).unwrap_or(0);
                        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
                        latencies.lock().unwrap_or_else(|p| p.into_inner()).push(now.saturating_sub(sent) as f64 / 1e9);
                        got += 1;
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            got
        });
    }
    for _ in 0..flags.watch_events {
        let sent = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        cm.data = Some([("sent".to_string(), sent.to_string())].into());
        cm.metadata.resource_version = None;
        cms.replace("ticker", &PostParams::default(), &cm).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        received += r.unwrap_or(0);
    }
    tasks.abort_all();
    let expected = flags.watchers * flags.watch_events;
    let samples = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    println!("\n{received} of {expected} events received; API server RSS {}\n", rss(flags.apiserver_pid));
    header();
    Run {
        label: format!("update → event at {} watchers", flags.watchers),
        samples,
        errors: expected.saturating_sub(received),
    }
    .print();
    Ok(())
}
