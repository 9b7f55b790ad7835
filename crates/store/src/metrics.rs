//! Prometheus metrics, named after etcd's where etcd has the same measurement, so existing
//! dashboards keep working.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub grpc_service: String,
    pub grpc_method: String,
    pub grpc_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub grpc_service: String,
    pub grpc_method: String,
}

/// All metrics of one member, registered once at start.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub grpc_handled: Family<GrpcLabels, Counter>,
    pub grpc_seconds: Family<MethodLabels, Histogram>,
    pub has_leader: Gauge,
    pub is_leader: Gauge,
    pub leader_changes: Counter,
    pub term: Gauge,
    pub committed_index: Gauge,
    pub applied_index: Gauge,
    pub db_size: Gauge,
    /// Time of each Raft log group commit (write + fsync), as etcd's WAL fsync histogram.
    pub wal_fsync_seconds: Histogram,
    /// Time of each state machine commit, as etcd's backend commit histogram.
    pub backend_commit_seconds: Histogram,
}

fn disk_buckets() -> Histogram {
    // etcd's buckets for disk latencies: 1 ms doubling up to ~8 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let grpc_handled = Family::<GrpcLabels, Counter>::default();
        let grpc_seconds = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        let m = Metrics {
            grpc_handled,
            grpc_seconds,
            has_leader: Gauge::default(),
            is_leader: Gauge::default(),
            leader_changes: Counter::default(),
            term: Gauge::default(),
            committed_index: Gauge::default(),
            applied_index: Gauge::default(),
            db_size: Gauge::default(),
            wal_fsync_seconds: disk_buckets(),
            backend_commit_seconds: disk_buckets(),
            registry: Mutex::new(Registry::default()),
        };
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server",
            m.grpc_handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Histogram of response latency of gRPC handled by the server",
            m.grpc_seconds.clone(),
        );
        registry.register(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not",
            m.has_leader.clone(),
        );
        registry.register("etcd_server_is_leader", "Whether or not this member is a leader", m.is_leader.clone());
        registry.register(
            "etcd_server_leader_changes_seen",
            "The number of leader changes seen",
            m.leader_changes.clone(),
        );
        registry.register(
            "etcd_server_proposals_committed",
            "The index of the last committed proposal (raft log index)",
            m.committed_index.clone(),
        );
        registry.register(
            "etcd_server_proposals_applied",
            "The index of the last applied proposal",
            m.applied_index.clone(),
        );
        registry.register("etcd_server_term", "The current raft term", m.term.clone());
        registry.register(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes",
            m.db_size.clone(),
        );
        registry.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by the Raft log",
            m.wal_fsync_seconds.clone(),
        );
        registry.register(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend",
            m.backend_commit_seconds.clone(),
        );
        *m.registry.lock().expect("registry") = registry;
        m
    }

    /// Records one finished RPC.
    pub fn observe(&self, service: &str, method: &str, code: tonic::Code, seconds: f64) {
        self.grpc_handled
            .get_or_create(&GrpcLabels {
                grpc_service: service.into(),
                grpc_method: method.into(),
                grpc_code: format!("{code:?}"),
            })
            .inc();
        self.grpc_seconds
            .get_or_create(&MethodLabels { grpc_service: service.into(), grpc_method: method.into() })
            .observe(seconds);
    }

    /// Registers a gauge owned by another part of the member (e.g. the watch hub).
    pub fn register_gauge(&self, name: &str, help: &str, gauge: Gauge) {
        self.registry.lock().expect("registry").register(name, help, gauge);
    }

    /// The text exposition format Prometheus scrapes.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock().expect("registry"))
            .expect("metrics encode");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
