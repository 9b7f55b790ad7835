//! The API server's only path to its data: etcd v3 gRPC (KV and Watch), over `kaname-proto`'s
//! generated clients. Nothing here knows the store's internals, so it runs on real etcd too.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kaname_proto::etcdserverpb::{
    compare, kv_client::KvClient, request_op, watch_client::WatchClient, CompactionRequest, Compare,
    DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use kaname_proto::mvccpb::KeyValue;
use kaname_tls::rustls::ClientConfig;
use tonic::transport::{Channel, Endpoint};

/// How long one etcd call may take before the request fails (upstream's default request
/// timeout is 60s; shorter here so an unreachable etcd surfaces quickly to kubectl).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default)]
pub struct EtcdTls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

impl EtcdTls {
    /// How `https://` etcd servers are dialed: verified against `--etcd-cafile` (else the
    /// system's roots), presenting `--etcd-certfile`/`--etcd-keyfile` when given.
    fn client_config(&self) -> anyhow::Result<Arc<ClientConfig>> {
        let roots = match &self.ca_file {
            Some(ca) => kaname_tls::load_roots(Path::new(ca))?,
            None => kaname_tls::system_roots(),
        };
        let builder = ClientConfig::builder_with_provider(kaname_tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut cfg = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => builder.with_client_auth_cert(
                kaname_tls::load_certs(Path::new(cert))?,
                kaname_tls::load_key(Path::new(key))?,
            )?,
            (None, None) => builder.with_no_client_auth(),
            _ => anyhow::bail!("--etcd-certfile and --etcd-keyfile must be given together"),
        };
        // etcd (grpc-go) insists on ALPN h2.
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// One lazily connected channel per `--etcd-servers` endpoint and the one in use. A call
/// that finds its endpoint unreachable moves on to the next (as clientv3's balancer does), so
/// losing one member of a cluster costs a retry, not a failed request.
#[derive(Clone)]
pub struct Etcd {
    channels: Arc<Vec<Channel>>,
    current: Arc<AtomicUsize>,
}

impl Etcd {
    /// A lazily connecting, load-balanced channel over all `--etcd-servers`: the API server
    /// starts (and reports not ready) while etcd is down, and reconnects by itself.
    pub fn connect(servers: &[String], tls: &EtcdTls) -> anyhow::Result<Etcd> {
        let tls_cfg = tls.client_config()?;
        let mut channels = Vec::new();
        for s in servers {
            let url = if s.contains("://") { s.clone() } else { format!("http://{s}") };
            let e = Endpoint::from_shared(kaname_tls::connector_uri(&url))?
                .connect_timeout(Duration::from_secs(3))
                .timeout(CALL_TIMEOUT)
                .tcp_nodelay(true);
            let channel = if url.starts_with("https://") {
                e.connect_with_connector_lazy(kaname_tls::TlsConnector::new(tls_cfg.clone()))
            } else {
                e.connect_lazy()
            };
            channels.push(channel);
        }
        anyhow::ensure!(!channels.is_empty(), "--etcd-servers must not be empty");
        Ok(Etcd { channels: Arc::new(channels), current: Arc::new(AtomicUsize::new(0)) })
    }

    /// Runs `f` on the current endpoint; on `Unavailable` (the endpoint cannot be reached)
    /// tries the others in turn, and keeps the first that answers as the current one.
    async fn with_kv<T, Fut>(&self, f: impl Fn(KvClient<Channel>) -> Fut) -> Result<T, tonic::Status>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.channels.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            // Lists of large objects can exceed tonic's 4 MiB default; etcd bounds them itself.
            let kv = KvClient::new(self.channels[idx].clone()).max_decoding_message_size(usize::MAX);
            match f(kv).await {
                Ok(r) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(r.into_inner());
                }
                Err(s) if s.code() == tonic::Code::Unavailable => last = Some(s),
                Err(s) => return Err(s),
            }
        }
        Err(last.unwrap_or_else(|| tonic::Status::unavailable("no etcd endpoint")))
    }

    /// A watch client on the endpoint currently in use (a watch stream stays on one member).
    pub fn watch(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channels[self.current.load(Ordering::Relaxed) % self.channels.len()].clone())
            .max_decoding_message_size(usize::MAX)
    }

    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, tonic::Status> {
        let req = RangeRequest { key: key.into(), ..Default::default() };
        let r = self
            .with_kv(|mut kv| {
                let req = req.clone();
                async move { kv.range(req).await }
            })
            .await?;
        Ok(r.kvs.into_iter().next())
    }

    /// Keys in `[from, prefix_end(prefix))` at `revision` (0 = latest), at most `limit` (0 = all).
    pub async fn range(
        &self,
        from: &str,
        prefix: &str,
        revision: i64,
        limit: i64,
    ) -> Result<RangeResponse, tonic::Status> {
        let req = RangeRequest {
            key: from.into(),
            range_end: prefix_end(prefix.as_bytes()),
            revision,
            limit,
            ..Default::default()
        };
        self.with_kv(|mut kv| {
            let req = req.clone();
            async move { kv.range(req).await }
        })
        .await
    }

    pub async fn txn(&self, t: TxnRequest) -> Result<TxnResponse, tonic::Status> {
        self.with_kv(|mut kv| {
            let t = t.clone();
            async move { kv.txn(t).await }
        })
        .await
    }

    /// Whether etcd has compacted `revision` away: a one-key read at it (etcd checks the
    /// compaction before looking at keys, so this costs no scan).
    pub async fn is_compacted(&self, revision: i64) -> Result<bool, tonic::Status> {
        let req = RangeRequest { key: b"/".to_vec(), revision, count_only: true, ..Default::default() };
        let r = self
            .with_kv(|mut kv| {
                let req = req.clone();
                async move { kv.range(req).await }
            })
            .await;
        match r {
            Ok(_) => Ok(false),
            Err(s) if s.code() == tonic::Code::OutOfRange && s.message().contains("compacted") => Ok(true),
            Err(s) => Err(s),
        }
    }

    /// Compacts the history up to `revision` (not physically: etcd frees the space in the
    /// background, as upstream's compactor asks it to).
    pub async fn compact(&self, revision: i64) -> Result<(), tonic::Status> {
        let req = CompactionRequest { revision, physical: false };
        self.with_kv(|mut kv| async move { kv.compact(req).await }).await.map(|_| ())
    }

    /// The store's current revision (a cheap count-only range), also the readiness probe.
    pub async fn revision(&self) -> Result<i64, tonic::Status> {
        let req = RangeRequest { key: b"/".to_vec(), count_only: true, limit: 1, ..Default::default() };
        let r = self
            .with_kv(|mut kv| {
                let req = req.clone();
                async move { kv.range(req).await }
            })
            .await?;
        Ok(r.header.map(|h| h.revision).unwrap_or(0))
    }
}

pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub fn cmp_mod(key: &str, rev: i64) -> Compare {
    Compare {
        key: key.into(),
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        target_union: Some(compare::TargetUnion::ModRevision(rev)),
        ..Default::default()
    }
}

/// The key's version (number of writes since it was created; 0 when absent) equals `version`.
pub fn cmp_version(key: &str, version: i64) -> Compare {
    Compare {
        key: key.into(),
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Version as i32,
        target_union: Some(compare::TargetUnion::Version(version)),
        ..Default::default()
    }
}

pub fn cmp_absent(key: &str) -> Compare {
    Compare {
        key: key.into(),
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
        ..Default::default()
    }
}

pub fn cmp_present(key: &str) -> Compare {
    Compare {
        key: key.into(),
        result: compare::CompareResult::Greater as i32,
        target: compare::CompareTarget::Create as i32,
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
        ..Default::default()
    }
}

pub fn op_put(key: &str, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest { key: key.into(), value, ..Default::default() })),
    }
}

pub fn op_get(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest { key: key.into(), ..Default::default() })),
    }
}

pub fn op_delete(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

pub fn op_delete_prefix(prefix: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: prefix.into(),
            range_end: prefix_end(prefix.as_bytes()),
            ..Default::default()
        })),
    }
}

/// The key-values read by the range ops of a failed/succeeded txn, in op order.
pub fn txn_ranges(r: &TxnResponse) -> Vec<Option<KeyValue>> {
    use kaname_proto::etcdserverpb::response_op::Response;
    r.responses
        .iter()
        .filter_map(|op| match &op.response {
            Some(Response::ResponseRange(rr)) => Some(rr.kvs.first().cloned()),
            _ => None,
        })
        .collect()
}
