//! The clients: each one a loop of random operations over etcd v3 gRPC (through `kaname-proto`
//! only, like any client of the store), recording every invocation and completion.
//!
//! Keys: a handful of registers `/chaos/k/N` (get, put, delete, compare-and-set txn, and range
//! reads over all of them), checked for linearizability; plus an append-only set
//! `/chaos/set/...` whose acknowledged members must all be present at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kaname_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use kaname_proto::etcdserverpb::kv_client::KvClient;
use kaname_proto::etcdserverpb::request_op::Request as ReqOp;
use kaname_proto::etcdserverpb::response_op::Response as RespOp;
use kaname_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, TxnRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use crate::checker::{Input, Operation, Output};

pub const KEY_PREFIX: &str = "/chaos/k/";
pub const SET_PREFIX: &str = "/chaos/set/";

/// `prefix` -> the range end that covers every key starting with it.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub keys: usize,
    pub op_timeout: Duration,
    /// Reads with `serializable=true`: answered from the member's local state, NOT linearizable.
    /// Exists to show that the checker catches a system that is wrong in this way.
    pub serializable_reads: bool,
}

/// Something a run observed that is wrong without needing the linearizability search.
#[derive(Debug, Clone)]
pub struct Anomaly(pub String);

/// Everything the clients recorded.
#[derive(Default)]
pub struct Recorder {
    pub history: Vec<Operation>,
    /// Values of the append-only set whose put was acknowledged.
    pub acked_set: Vec<String>,
    /// value -> mod_revision, from put/txn responses and from reads: must be one per value.
    pub value_revisions: HashMap<String, i64>,
    pub anomalies: Vec<Anomaly>,
    /// Error message (truncated) -> count, for operations that failed or timed out.
    pub errors: std::collections::BTreeMap<String, usize>,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
}

impl Recorder {
    fn note_revision(&mut self, key: &str, value: &str, rev: i64) {
        match self.value_revisions.insert(value.to_string(), rev) {
            Some(prev) if prev != rev => self.anomalies.push(Anomaly(format!(
                "value {value:?} of {key} seen with mod_revision {prev} and {rev}: one write, one revision"
            ))),
            _ => {}
        }
    }
}

pub type Shared = Arc<Mutex<Recorder>>;

/// The members' client endpoints, shared by every client and watcher and replaced when the
/// membership changes: the tool plays the part of clientv3's endpoint sync (MemberList), so a
/// removed member's endpoint goes away and a new member's is used.
#[derive(Clone, Default)]
pub struct Endpoints(Arc<std::sync::RwLock<Vec<(String, Channel)>>>);

impl Endpoints {
    pub fn new(urls: &[String]) -> Endpoints {
        let e = Endpoints::default();
        e.set(urls);
        e
    }

    /// Replaces the list, keeping the channels of URLs that stay.
    pub fn set(&self, urls: &[String]) {
        let mut g = self.0.write().unwrap();
        let next = urls
            .iter()
            .map(|u| match g.iter().find(|(v, _)| v == u) {
                Some(kept) => kept.clone(),
                None => (u.clone(), crate::cluster::channel(u)),
            })
            .collect();
        *g = next;
    }

    pub fn urls(&self) -> Vec<String> {
        self.0.read().unwrap().iter().map(|(u, _)| u.clone()).collect()
    }

    /// The channel of the `k`-th endpoint, modulo the current count.
    pub fn pick(&self, k: usize) -> Channel {
        let g = self.0.read().unwrap();
        g[k % g.len()].1.clone()
    }
}

/// One client: sends to one endpoint, moving to the next after an error (as etcd's client
/// balancer would), until `stop` is set.
pub async fn client_loop(
    id: usize,
    seed: u64,
    endpoints: Endpoints,
    cfg: WorkloadConfig,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    rec: Shared,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut member = id;
    let mut counter = 0u64;
    let mut last_seen: HashMap<String, Option<String>> = HashMap::new();
    let mut max_revision = 0i64;
    while !stop.load(Ordering::Relaxed) {
        counter += 1;
        let key = format!("{KEY_PREFIX}{}", rng.gen_range(0..cfg.keys));
        let value = format!("c{id}-{counter}");
        let kv = KvClient::new(endpoints.pick(member));
        let roll = rng.gen_range(0..100);
        let now = || epoch.elapsed().as_nanos() as u64;
        let invoke = now();
        let (ops, header, ok) = match roll {
            0..=24 => {
                let r = get(kv, &cfg, key.clone(), false).await;
                let ops = reads_to_ops(id, std::slice::from_ref(&key), invoke, r.as_ref().ok().map(|x| &x.1), now());
                let header = r.as_ref().ok().map(|x| x.0);
                (ops, header, r.map(|x| x.1)).into_single(&mut last_seen)
            }
            25..=34 => {
                let keys: Vec<String> = (0..cfg.keys).map(|k| format!("{KEY_PREFIX}{k}")).collect();
                let r = get(kv, &cfg, KEY_PREFIX.to_string(), true).await;
                let done = now();
                let ops = reads_to_ops(id, &keys, invoke, r.as_ref().ok().map(|x| &x.1), done);
                let header = r.as_ref().ok().map(|x| x.0);
                (ops, header, r.map(|x| x.1)).into_single(&mut last_seen)
            }
            35..=59 => {
                let req = PutRequest {
                    key: key.clone().into_bytes(),
                    value: value.clone().into_bytes(),
                    ..Default::default()
                };
                let r = timed(&cfg, async { kv.clone().put(req).await.map(|r| r.into_inner().header) }).await;
                let done = now();
                let (output, complete) = match &r {
                    Ok(_) => (Some(Output::Put), Some(done)),
                    Err(_) => (None, None),
                };
                let header = r.as_ref().ok().cloned().flatten();
                if let Some(h) = &header {
                    rec.lock().unwrap().note_revision(&key, &value, h.revision);
                    last_seen.insert(key.clone(), Some(value.clone()));
                }
                let op = Operation {
                    client: id,
                    key: key.clone(),
                    input: Input::Put(value.clone()),
                    invoke,
                    complete,
                    output,
                };
                (vec![op], header, r.map(|_| vec![]))
            }
            60..=69 => {
                let req = DeleteRangeRequest { key: key.clone().into_bytes(), ..Default::default() };
                let r = timed(&cfg, async { kv.clone().delete_range(req).await.map(|r| r.into_inner()) }).await;
                let done = now();
                let (output, complete, header) = match &r {
                    Ok(d) => (Some(Output::Delete { deleted: d.deleted > 0 }), Some(done), d.header),
                    Err(_) => (None, None, None),
                };
                if r.is_ok() {
                    last_seen.insert(key.clone(), None);
                }
                let op = Operation { client: id, key: key.clone(), input: Input::Delete, invoke, complete, output };
                (vec![op], header, r.map(|_| vec![]))
            }
            70..=89 => {
                let expect = last_seen.get(&key).cloned().flatten();
                let r = cas(kv.clone(), &cfg, &key, expect.clone(), &value).await;
                let done = now();
                let (output, complete, header) = match &r {
                    Ok((h, true, _)) => {
                        rec.lock().unwrap().note_revision(&key, &value, h.revision);
                        last_seen.insert(key.clone(), Some(value.clone()));
                        (Some(Output::Cas { succeeded: true, current: None }), Some(done), Some(*h))
                    }
                    Ok((h, false, current)) => {
                        if let Some((v, rev)) = current {
                            rec.lock().unwrap().note_revision(&key, v, *rev);
                        }
                        let cur = current.as_ref().map(|(v, _)| v.clone());
                        last_seen.insert(key.clone(), cur.clone());
                        (Some(Output::Cas { succeeded: false, current: cur }), Some(done), Some(*h))
                    }
                    Err(_) => (None, None, None),
                };
                let input = Input::Cas { expect, new: value.clone() };
                let op = Operation { client: id, key: key.clone(), input, invoke, complete, output };
                (vec![op], header, r.map(|_| vec![]))
            }
            _ => {
                // The append-only set: outside the registers' history, checked at the end.
                let set_key = format!("{SET_PREFIX}{value}");
                let req = PutRequest { key: set_key.into_bytes(), value: b"x".to_vec(), ..Default::default() };
                let r = timed(&cfg, async { kv.clone().put(req).await.map(|r| r.into_inner().header) }).await;
                if r.is_ok() {
                    rec.lock().unwrap().acked_set.push(value.clone());
                }
                (vec![], r.as_ref().ok().cloned().flatten(), r.map(|_| vec![]))
            }
        };
        {
            let mut rec_guard = rec.lock().unwrap();
            if let Err(e) = &ok {
                // Error kinds for the report (truncated: no per-request details).
                let kind: String = e.chars().take(70).collect();
                *rec_guard.errors.entry(kind).or_default() += 1;
            }
            if let Ok(reads) = &ok {
                for (k, v, rev) in reads {
                    rec_guard.note_revision(k, v, *rev);
                }
                rec_guard.ok += 1;
                if let Some(h) = header {
                    if h.revision < max_revision {
                        rec_guard.anomalies.push(Anomaly(format!(
                            "client {id}: revision went backwards from {max_revision} to {} (op at {:.3} ms)",
                            h.revision,
                            invoke as f64 / 1e6
                        )));
                    }
                    max_revision = max_revision.max(h.revision);
                }
            } else {
                rec_guard.unknown += 1;
            }
            rec_guard.history.extend(ops);
        }
        if ok.is_err() {
            // Try another member, and do not spin on a dead one.
            member += 1;
            tokio::time::sleep(Duration::from_millis(rng.gen_range(20..100))).await;
        }
    }
}

/// (key, value, mod_revision) read by an operation.
type Reads = Vec<(String, String, i64)>;

trait IntoSingle {
    fn into_single(
        self,
        seen: &mut HashMap<String, Option<String>>,
    ) -> (Vec<Operation>, Option<ResponseHeader>, Result<Reads, String>);
}

impl IntoSingle for (Vec<Operation>, Option<ResponseHeader>, Result<Reads, String>) {
    /// Remembers what a read saw (clients base their CAS expectations on it).
    fn into_single(
        self,
        seen: &mut HashMap<String, Option<String>>,
    ) -> (Vec<Operation>, Option<ResponseHeader>, Result<Reads, String>) {
        for op in &self.0 {
            if let Some(Output::Get(v)) = &op.output {
                seen.insert(op.key.clone(), v.clone());
            }
        }
        self
    }
}

/// A range read over `keys` becomes one Get per key with the same times: sound for the per-key
/// check (a linearizable range is linearizable on each key), though it does not check that the
/// range was one snapshot across keys.
fn reads_to_ops(client: usize, keys: &[String], invoke: u64, reads: Option<&Reads>, done: u64) -> Vec<Operation> {
    keys.iter()
        .map(|k| {
            let output = reads.map(|r| Output::Get(r.iter().find(|(rk, _, _)| rk == k).map(|(_, v, _)| v.clone())));
            Operation {
                client,
                key: k.clone(),
                input: Input::Get,
                invoke,
                complete: output.as_ref().map(|_| done),
                output,
            }
        })
        .collect()
}

async fn timed<T>(
    cfg: &WorkloadConfig,
    f: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(cfg.op_timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Err("timeout".into()),
    }
}

/// Range read of one key, or of every key under `key` when `prefix`.
async fn get(
    mut kv: KvClient<Channel>,
    cfg: &WorkloadConfig,
    key: String,
    prefix: bool,
) -> Result<(ResponseHeader, Reads), String> {
    let req = RangeRequest {
        range_end: if prefix { prefix_end(&key) } else { vec![] },
        key: key.into_bytes(),
        serializable: cfg.serializable_reads,
        ..Default::default()
    };
    let r = timed(cfg, async { kv.range(req).await.map(|r| r.into_inner()) }).await?;
    let reads = r
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.mod_revision,
            )
        })
        .collect();
    Ok((r.header.unwrap_or_default(), reads))
}

/// if value(key) == expect (absent: version == 0) then put(key, new) else get(key):
/// (header, succeeded, current (value, mod_revision) on failure).
async fn cas(
    mut kv: KvClient<Channel>,
    cfg: &WorkloadConfig,
    key: &str,
    expect: Option<String>,
    new: &str,
) -> Result<(ResponseHeader, bool, Option<(String, i64)>), String> {
    let compare = match &expect {
        Some(v) => Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(TargetUnion::Value(v.clone().into_bytes())),
            ..Default::default()
        },
        None => Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Version as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(TargetUnion::Version(0)),
            ..Default::default()
        },
    };
    let put = PutRequest { key: key.as_bytes().to_vec(), value: new.as_bytes().to_vec(), ..Default::default() };
    let range = RangeRequest { key: key.as_bytes().to_vec(), serializable: false, ..Default::default() };
    let req = TxnRequest {
        compare: vec![compare],
        success: vec![RequestOp { request: Some(ReqOp::RequestPut(put)) }],
        failure: vec![RequestOp { request: Some(ReqOp::RequestRange(range)) }],
    };
    let r = timed(cfg, async { kv.txn(req).await.map(|r| r.into_inner()) }).await?;
    let current = if r.succeeded {
        None
    } else {
        r.responses
            .iter()
            .find_map(|op| match &op.response {
                Some(RespOp::ResponseRange(rr)) => {
                    Some(rr.kvs.first().map(|kv| (String::from_utf8_lossy(&kv.value).into_owned(), kv.mod_revision)))
                }
                _ => None,
            })
            .flatten()
    };
    Ok((r.header.unwrap_or_default(), r.succeeded, current))
}
