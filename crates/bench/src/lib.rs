//! `kaname bench`: load generator for any etcd v3 endpoint (kaname or real etcd), modeled on
//! etcd's own `benchmark` tool, so both systems are measured by the same client code.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use kaname_proto::etcdserverpb::kv_client::KvClient;
use kaname_proto::etcdserverpb::{PutRequest, RangeRequest};
use tonic::transport::{Channel, Endpoint};

#[derive(Args, Clone, Debug)]
pub struct CommonFlags {
    /// gRPC endpoints (host:port), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Total number of gRPC connections.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Total number of concurrent clients.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Total number of requests.
    #[arg(long, default_value_t = 10000)]
    pub total: usize,
}

#[derive(Subcommand, Clone, Debug)]
pub enum BenchCommand {
    /// Benchmark put.
    Put {
        #[command(flatten)]
        common: CommonFlags,
        /// Key size of put request.
        #[arg(long, default_value_t = 8)]
        key_size: usize,
        /// Value size of put request.
        #[arg(long, default_value_t = 8)]
        val_size: usize,
        /// Maximum possible keys.
        #[arg(long, default_value_t = 1)]
        key_space_size: u64,
        /// Use sequential keys.
        #[arg(long)]
        sequential_keys: bool,
    },
    /// Benchmark range.
    Range {
        #[command(flatten)]
        common: CommonFlags,
        /// Key to range over.
        key: String,
        /// Linearizable ('l') or serializable ('s').
        #[arg(long, default_value = "l")]
        consistency: String,
    },
}

/// One measured request.
type Sample = Duration;

fn key_bytes(i: u64, size: usize) -> Vec<u8> {
    let mut k = vec![0u8; size.max(8)];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k.truncate(size.max(1));
    k
}

async fn connect(common: &CommonFlags) -> anyhow::Result<Vec<KvClient<Channel>>> {
    let mut out = Vec::new();
    for i in 0..common.conns.max(1) {
        let ep = &common.endpoints[i % common.endpoints.len()];
        let url = if ep.contains("://") { ep.clone() } else { format!("http://{ep}") };
        let ch = Endpoint::from_shared(url)?.tcp_nodelay(true).connect().await?;
        out.push(KvClient::new(ch));
    }
    Ok(out)
}

/// Runs the benchmark and prints a report in the shape of etcd's `benchmark`.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let common = match &cmd {
        BenchCommand::Put { common, .. } | BenchCommand::Range { common, .. } => common.clone(),
    };
    let conns = connect(&common).await?;
    let clients = common.clients.max(1);
    let per_client = common.total / clients;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut kv = conns[c % conns.len()].clone();
        let cmd = cmd.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples: Vec<Sample> = Vec::with_capacity(per_client);
            let mut errors = 0usize;
            for n in 0..per_client {
                let t = Instant::now();
                let ok = match &cmd {
                    BenchCommand::Put { key_size, val_size, key_space_size, sequential_keys, .. } => {
                        let i = if *sequential_keys {
                            (c * per_client + n) as u64 % key_space_size.max(&1)
                        } else {
                            rand::random::<u64>() % key_space_size.max(&1)
                        };
                        let req = PutRequest {
                            key: key_bytes(i, *key_size),
                            value: vec![b'x'; *val_size],
                            ..Default::default()
                        };
                        kv.put(req).await.is_ok()
                    }
                    BenchCommand::Range { key, consistency, .. } => {
                        let req = RangeRequest {
                            key: key.as_bytes().to_vec(),
                            serializable: consistency == "s",
                            ..Default::default()
                        };
                        kv.range(req).await.is_ok()
                    }
                };
                if ok {
                    samples.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (samples, errors)
        }));
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (s, e) = t.await?;
        samples.extend(s);
        errors += e;
    }
    report(&samples, errors, start.elapsed());
    Ok(())
}

fn report(samples: &[Sample], errors: usize, total: Duration) {
    let mut s: Vec<f64> = samples.iter().map(|d| d.as_secs_f64()).collect();
    s.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let pct = |p: f64| -> f64 {
        if s.is_empty() {
            return 0.0;
        }
        s[((p / 100.0) * (s.len() - 1) as f64).round() as usize]
    };
    let avg = s.iter().sum::<f64>() / s.len().max(1) as f64;
    println!("Summary:");
    println!("  Total:\t{:.4} secs.", total.as_secs_f64());
    println!("  Slowest:\t{:.4} secs.", s.last().copied().unwrap_or(0.0));
    println!("  Fastest:\t{:.4} secs.", s.first().copied().unwrap_or(0.0));
    println!("  Average:\t{avg:.4} secs.");
    println!("  Requests/sec:\t{:.4}", s.len() as f64 / total.as_secs_f64());
    if errors > 0 {
        println!("  Errors:\t{errors}");
    }
    println!("\nLatency distribution:");
    for p in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9] {
        println!("  {p}% in {:.4} secs.", pct(p));
    }
}
