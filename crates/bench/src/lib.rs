//! `kaname bench`: load generator for any etcd v3 endpoint (kaname or real etcd), modeled on
//! etcd's own `benchmark` tool (same subcommands, flags and report), so both systems are
//! measured by the same client code.

mod apiserver;
mod report;
mod scheduler;
mod watch;

use std::future::Future;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use kaname_proto::etcdserverpb::kv_client::KvClient;
use kaname_proto::etcdserverpb::lease_client::LeaseClient;
use kaname_proto::etcdserverpb::{
    request_op, LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use tonic::transport::{Channel, Endpoint};

pub use report::Results;

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

/// Which keys the writes go to.
#[derive(Args, Clone, Debug)]
pub struct KeyFlags {
    /// Key size of put request.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of put request.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Maximum possible keys.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Use sequential keys.
    #[arg(long)]
    pub sequential_keys: bool,
}

impl KeyFlags {
    /// The key of request `n` of client `c`.
    fn key(&self, c: usize, n: usize, per_client: usize) -> Vec<u8> {
        self.keys(c, n, per_client, 1).pop().expect("one key")
    }

    /// `count` distinct keys (as distinct as the key space allows) for request `n` of client
    /// `c`: etcd refuses a txn that writes one key twice.
    fn keys(&self, c: usize, n: usize, per_client: usize, count: usize) -> Vec<Vec<u8>> {
        let space = self.key_space_size.max(1);
        let base = if self.sequential_keys {
            ((c * per_client + n) * count) as u64 % space
        } else {
            rand::random::<u64>() % space
        };
        (0..count as u64).map(|j| key_bytes((base + j) % space, self.key_size)).collect()
    }
}

#[derive(Subcommand, Clone, Debug)]
pub enum BenchCommand {
    /// Benchmark put.
    Put {
        #[command(flatten)]
        common: CommonFlags,
        #[command(flatten)]
        keys: KeyFlags,
    },
    /// Benchmark range.
    Range {
        #[command(flatten)]
        common: CommonFlags,
        /// Key to range over.
        key: String,
        /// Range end (exclusive); none reads the one key.
        range_end: Option<String>,
        /// Linearizable ('l') or serializable ('s').
        #[arg(long, default_value = "l")]
        consistency: String,
    },
    /// Benchmark txns that each put `--txn-ops` keys.
    TxnPut {
        #[command(flatten)]
        common: CommonFlags,
        #[command(flatten)]
        keys: KeyFlags,
        /// Number of puts per txn.
        #[arg(long, default_value_t = 1)]
        txn_ops: usize,
    },
    /// Benchmark the latency from a put to its event at many watchers.
    Watch(watch::WatchFlags),
    /// Benchmark a Kubernetes API server (`kaname apiserver`) through kube-rs: request latency
    /// at fixed rates, a 10,000-pod list, 1,000 watchers, memory.
    Apiserver(apiserver::ApiserverFlags),
    /// Benchmark a scheduler (`kaname scheduler`) end to end through the API server, as
    /// upstream's scheduler_perf: fake nodes, pods created, bound pods per second.
    Scheduler(scheduler::SchedulerFlags),
    /// Benchmark lease keep-alives (one lease per client, renewed over a keep-alive stream).
    LeaseKeepalive {
        #[command(flatten)]
        common: CommonFlags,
    },
}

fn key_bytes(i: u64, size: usize) -> Vec<u8> {
    let mut k = vec![0u8; size.max(8)];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k.truncate(size.max(1));
    k
}

/// Opens `conns` connections, spread over the endpoints.
pub(crate) async fn connect(endpoints: &[String], conns: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for i in 0..conns.max(1) {
        let ep = &endpoints[i % endpoints.len()];
        let url = if ep.contains("://") { ep.clone() } else { format!("http://{ep}") };
        out.push(Endpoint::from_shared(url)?.tcp_nodelay(true).connect().await?);
    }
    Ok(out)
}

/// Runs `--clients` closed loops sharing `--total` requests; `op(client, n, channel)` issues
/// one request and says whether it succeeded.
async fn closed_loop<F, Fut>(common: &CommonFlags, op: F) -> anyhow::Result<Results>
where
    F: Fn(usize, usize, Channel) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let conns = connect(&common.endpoints, common.conns).await?;
    let clients = common.clients.max(1);
    let per_client = common.total / clients;
    let start = Instant::now();
    let mut tasks: Vec<ClientTask> = Vec::new();
    for c in 0..clients {
        let ch = conns[c % conns.len()].clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per_client);
            let mut errors = 0usize;
            for n in 0..per_client {
                let t = Instant::now();
                if op(c, n, ch.clone()).await {
                    samples.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            Ok((samples, errors))
        }));
    }
    gather(tasks, start).await
}

/// What every client task returns: its latencies and its failed requests.
type ClientTask = tokio::task::JoinHandle<anyhow::Result<(Vec<Duration>, usize)>>;

/// Waits for the client tasks and merges their results.
async fn gather(tasks: Vec<ClientTask>, start: Instant) -> anyhow::Result<Results> {
    let mut results = Results { samples: Vec::new(), errors: 0, total: Duration::ZERO };
    for t in tasks {
        let (s, e) = t.await??;
        results.samples.extend(s);
        results.errors += e;
    }
    results.total = start.elapsed();
    Ok(results)
}

/// Runs the benchmark and prints a report in the shape of etcd's `benchmark`.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let results = match cmd {
        BenchCommand::Put { common, keys } => {
            let per_client = common.total / common.clients.max(1);
            closed_loop(&common, move |c, n, ch| {
                let req = PutRequest {
                    key: keys.key(c, n, per_client),
                    value: vec![b'x'; keys.val_size],
                    ..Default::default()
                };
                async move { KvClient::new(ch).put(req).await.is_ok() }
            })
            .await?
        }
        BenchCommand::Range { common, key, range_end, consistency } => {
            let req = RangeRequest {
                key: key.into_bytes(),
                range_end: range_end.map(String::into_bytes).unwrap_or_default(),
                serializable: consistency == "s",
                ..Default::default()
            };
            closed_loop(&common, move |_, _, ch| {
                let req = req.clone();
                async move { KvClient::new(ch).range(req).await.is_ok() }
            })
            .await?
        }
        BenchCommand::TxnPut { common, keys, txn_ops } => {
            let per_client = common.total / common.clients.max(1);
            closed_loop(&common, move |c, n, ch| {
                let success = keys
                    .keys(c, n, per_client, txn_ops.max(1))
                    .into_iter()
                    .map(|key| RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key,
                            value: vec![b'x'; keys.val_size],
                            ..Default::default()
                        })),
                    })
                    .collect();
                let req = TxnRequest { success, ..Default::default() };
                async move { KvClient::new(ch).txn(req).await.is_ok() }
            })
            .await?
        }
        BenchCommand::Watch(flags) => watch::run(flags).await?,
        // Prints its own report: several runs, as markdown tables.
        BenchCommand::Apiserver(flags) => return apiserver::run(flags).await,
        BenchCommand::Scheduler(flags) => return scheduler::run(flags).await,
        BenchCommand::LeaseKeepalive { common } => lease_keepalive(common).await?,
    };
    results.print();
    Ok(())
}

/// Each client grants a lease, then renews it over its own keep-alive stream, one request
/// in flight at a time (etcd's `benchmark lease-keepalive`).
async fn lease_keepalive(common: CommonFlags) -> anyhow::Result<Results> {
    let conns = connect(&common.endpoints, common.conns).await?;
    let clients = common.clients.max(1);
    let per_client = common.total / clients;
    let start = Instant::now();
    let mut tasks: Vec<ClientTask> = Vec::new();
    for c in 0..clients {
        let mut lease = LeaseClient::new(conns[c % conns.len()].clone());
        tasks.push(tokio::spawn(async move {
            let id = lease.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await?.into_inner().id;
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            // etcd (grpc-go) answers the call's headers only with its first response, so the
            // first request must be queued before the call is awaited.
            let mut t = Instant::now();
            tx.send(LeaseKeepAliveRequest { id }).await?;
            let mut responses =
                lease.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
            let mut samples = Vec::with_capacity(per_client);
            let mut errors = 0usize;
            for n in 0..per_client {
                if n > 0 {
                    t = Instant::now();
                }
                let sent = n == 0 || tx.send(LeaseKeepAliveRequest { id }).await.is_ok();
                let ok = sent && matches!(responses.message().await, Ok(Some(r)) if r.ttl > 0);
                if ok {
                    samples.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            Ok((samples, errors))
        }));
    }
    gather(tasks, start).await
}
