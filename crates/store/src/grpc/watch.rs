//! `etcdserverpb.Watch` (etcd's `v3rpc/watch.go`): one task per stream turns requests into
//! watchers of the [`WatchHub`] and the hub's updates into responses.
//!
//! The task is the only writer of the stream, and it handles one thing at a time: a create
//! response is queued before the task looks at the hub's updates again, so a watcher's events
//! never overtake its create response (etcd buffers them per id for the same reason). When
//! the client reads slowly the task blocks on sending, stops draining the hub channel, and the
//! hub moves this stream's watchers to catch-up: the client's slowness stays with the client.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use kaname_proto::etcdserverpb::watch_create_request::FilterType;
use kaname_proto::etcdserverpb::watch_server::Watch;
use kaname_proto::etcdserverpb::{
    watch_request, ResponseHeader, WatchCancelRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use kaname_proto::mvccpb::event::EventType;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::PeerCommonName;
use crate::auth::Need;
use crate::error::EtcdError;
use crate::mvcc::RangeOptions;
use crate::server::EtcdServer;
use crate::watch::{Update, WatchHub, WatchSpec, WatcherId};

pub struct WatchService {
    pub server: Arc<EtcdServer>,
    pub hub: Arc<WatchHub>,
}

/// Responses queued towards the client; small, since the hub channel is the real buffer.
const OUT_BUFFER: usize = 16;

/// What etcd adds to `--max-request-bytes` for gRPC framing.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";
const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

    async fn watch(&self, req: Request<Streaming<WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let (out_tx, out_rx) = mpsc::channel(OUT_BUFFER);
        let (tx, rx) = mpsc::channel(self.hub.config().stream_buffer);
        let stream = StreamTask {
            server: self.server.clone(),
            hub: self.hub.clone(),
            out: out_tx,
            tx,
            watches: HashMap::new(),
            next_id: 0,
            deferred_progress: false,
            credentials: credentials_of(&req),
        };
        tokio::spawn(stream.run(req.into_inner(), rx));
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}

/// One watch of a stream.
struct WatchEntry {
    /// `None` once the hub dropped it (compacted); the id stays taken until cancelled, as etcd.
    hub_id: Option<WatcherId>,
    prev_kv: bool,
    fragment: bool,
    /// `Some` when the watch asked for progress notifications: whether the next tick should
    /// send one (no events went out since the last tick).
    progress: Option<bool>,
}

struct StreamTask {
    server: Arc<EtcdServer>,
    hub: Arc<WatchHub>,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    /// The hub's side of this stream's update channel.
    tx: mpsc::Sender<Update>,
    watches: HashMap<i64, WatchEntry>,
    next_id: i64,
    /// A progress request waits for all watchers to be synced (etcd 3.5).
    deferred_progress: bool,
    /// The stream's credentials (its `token` metadata and client certificate name): each
    /// create is checked against them, as etcd checks the stream's context.
    credentials: Request<()>,
}

/// A request carrying only what [`EtcdServer::auth_info`] looks at.
fn credentials_of<T>(req: &Request<T>) -> Request<()> {
    let mut probe = Request::new(());
    *probe.metadata_mut() = req.metadata().clone();
    if let Some(cn) = req.extensions().get::<axum::extract::ConnectInfo<PeerCommonName>>() {
        probe.extensions_mut().insert(cn.clone());
    }
    probe
}

/// The stream ended (client gone or the response side closed).
struct Closed;

impl StreamTask {
    async fn run(mut self, mut incoming: Streaming<WatchRequest>, mut rx: mpsc::Receiver<Update>) {
        self.hub.gauges().streams.inc();
        let every = self.hub.config().progress_interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                req = incoming.message() => match req {
                    Ok(Some(r)) => self.handle(r).await,
                    // EOF or a broken stream: etcd ends the whole watch either way.
                    Ok(None) | Err(_) => Err(Closed),
                },
                Some(u) = rx.recv() => self.deliver(u).await,
                _ = ticker.tick() => {
                    self.progress_tick();
                    Ok(())
                }
            };
            if step.is_err() {
                break;
            }
        }
        for w in self.watches.values() {
            if let Some(id) = w.hub_id {
                self.hub.cancel(id);
            }
        }
        self.hub.gauges().streams.dec();
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        let mut h = Some(ResponseHeader { revision, ..Default::default() });
        self.server.fill_header(&mut h);
        h
    }

    async fn send(&self, r: WatchResponse) -> Result<(), Closed> {
        self.out.send(Ok(r)).await.map_err(|_| Closed)
    }

    async fn handle(&mut self, req: WatchRequest) -> Result<(), Closed> {
        match req.request_union {
            Some(watch_request::RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(watch_request::RequestUnion::CancelRequest(c)) => self.cancel(c).await,
            Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                if !self.deferred_progress && !self.progress_all() {
                    self.deferred_progress = true;
                }
                Ok(())
            }
            // etcd ignores requests it does not know rather than ending the stream.
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: WatchCreateRequest) -> Result<(), Closed> {
        let failed = |this: &Self, reason: String| WatchResponse {
            header: this.header(this.hub.rev()),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        };
        if c.start_revision < 0 {
            return self.send(failed(self, EtcdError::Compacted.to_string())).await;
        }
        // etcd's isWatchPermitted: read on the watched range; any failure (an invalid token
        // too) cancels the watch with the gRPC text of "permission denied".
        let permitted = match self.server.auth_info_or_none(&self.credentials).await {
            Ok(ai) => self.server.store.auth().check(&ai, &c.key, &c.range_end, Need::Read).is_ok(),
            Err(_) => false,
        };
        if !permitted {
            let denied = tonic::Status::from(EtcdError::PermissionDenied);
            let reason = format!("rpc error: code = {:?} desc = {}", denied.code(), denied.message());
            let mut r = failed(self, reason);
            r.watch_id = c.watch_id;
            return self.send(r).await;
        }
        // \0 is the smallest key; an empty range end means one key, "\0" every key from `key`.
        let key = if c.key.is_empty() { vec![0] } else { c.key };
        let end = match c.range_end.as_slice() {
            [] => None,
            [0] => Some(Vec::new()),
            e => Some(e.to_vec()),
        };
        if matches!(&end, Some(e) if !e.is_empty() && key.as_slice() >= e.as_slice()) {
            return self.send(failed(self, ERR_EMPTY_RANGE.into())).await;
        }
        let id = if c.watch_id == 0 {
            // etcd's AutoWatchID: the next free id of this stream.
            while self.watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        } else if self.watches.contains_key(&c.watch_id) {
            return self.send(failed(self, ERR_DUPLICATE_ID.into())).await;
        } else {
            c.watch_id
        };
        let spec = WatchSpec {
            key,
            end,
            start_revision: c.start_revision,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            watch_id: id,
        };
        let (hub_id, rev) = self.hub.register(spec, self.tx.clone());
        self.watches.insert(
            id,
            WatchEntry {
                hub_id: Some(hub_id),
                prev_kv: c.prev_kv,
                fragment: c.fragment,
                progress: c.progress_notify.then_some(true),
            },
        );
        self.send(WatchResponse { header: self.header(rev), watch_id: id, created: true, ..Default::default() }).await
    }

    async fn cancel(&mut self, c: WatchCancelRequest) -> Result<(), Closed> {
        // Unknown ids get no answer, as etcd's `ErrWatcherNotExist` is swallowed.
        let Some(w) = self.watches.remove(&c.watch_id) else { return Ok(()) };
        if let Some(id) = w.hub_id {
            self.hub.cancel(id);
        }
        let r = WatchResponse {
            header: self.header(self.hub.rev()),
            watch_id: c.watch_id,
            canceled: true,
            ..Default::default()
        };
        self.send(r).await
    }

    /// Turns a hub update into a response (etcd's `sendLoop`).
    async fn deliver(&mut self, u: Update) -> Result<(), Closed> {
        let entry = if u.watch_id == -1 {
            None
        } else {
            match self.watches.get_mut(&u.watch_id) {
                Some(e) if e.hub_id.is_some() => Some(e),
                // Cancelled while the update was queued.
                _ => return Ok(()),
            }
        };
        let (prev_kv, fragment) = entry.as_ref().map_or((false, false), |e| (e.prev_kv, e.fragment));
        if let Some(e) = entry {
            if !u.events.is_empty() && e.progress.is_some() {
                e.progress = Some(false);
            }
            if u.compact_revision != 0 {
                e.hub_id = None;
            }
        }
        let mut events = u.events;
        if prev_kv {
            for ev in &mut events {
                let kv = ev.kv.as_ref().expect("events carry a kv");
                let created = ev.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
                if created {
                    continue;
                }
                // As etcd: the key's value just before this event, unless that is compacted.
                let opts = RangeOptions { rev: kv.mod_revision - 1, ..Default::default() };
                if let Ok(mut r) = self.server.store.range(&kv.key, None, &opts) {
                    ev.prev_kv = r.kvs.pop();
                }
            }
        }
        let r = WatchResponse {
            header: self.header(u.revision),
            watch_id: u.watch_id,
            events,
            compact_revision: u.compact_revision,
            canceled: u.compact_revision != 0,
            ..Default::default()
        };
        if fragment {
            // etcd splits at `MaxRequestBytesWithOverhead`: the request limit plus gRPC's overhead.
            for part in fragments(r, self.server.limits.max_request_bytes + GRPC_OVERHEAD_BYTES) {
                self.send(part).await?;
            }
        } else {
            self.send(r).await?;
        }
        if self.deferred_progress && self.progress_all() {
            self.deferred_progress = false;
        }
        Ok(())
    }

    fn progress_all(&self) -> bool {
        let ids: Vec<WatcherId> = self.watches.values().filter_map(|w| w.hub_id).collect();
        self.hub.progress_all(&ids)
    }

    /// etcd's progress ticker: a notification for each watch that asked for them and got no
    /// events since the last tick.
    fn progress_tick(&mut self) {
        for w in self.watches.values_mut() {
            if let Some(due) = w.progress {
                if due {
                    if let Some(id) = w.hub_id {
                        self.hub.progress(id);
                    }
                }
                w.progress = Some(true);
            }
        }
    }
}

/// etcd's `sendFragments`: splits a response whose encoding reaches `max_bytes` into parts
/// of at least one event each; all but the last are marked `fragment`.
fn fragments(r: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    if r.encoded_len() < max_bytes || r.events.len() < 2 {
        return vec![r];
    }
    let mut out = Vec::new();
    let mut rest = r.events.clone().into_iter().peekable();
    let empty = WatchResponse { events: Vec::new(), fragment: true, ..r };
    while rest.peek().is_some() {
        let mut cur = empty.clone();
        while let Some(ev) = rest.peek() {
            cur.events.push(ev.clone());
            if cur.events.len() > 1 && cur.encoded_len() >= max_bytes {
                cur.events.pop();
                break;
            }
            rest.next();
        }
        if rest.peek().is_none() {
            cur.fragment = false;
        }
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaname_proto::mvccpb::{Event, KeyValue};

    #[test]
    fn fragments_split_large_responses_like_etcd() {
        let ev = |i: u8| Event {
            kv: Some(KeyValue { key: vec![i], value: vec![0; 100], ..Default::default() }),
            ..Default::default()
        };
        let r = WatchResponse { watch_id: 3, events: (0..10).map(ev).collect(), ..Default::default() };
        let small = fragments(r.clone(), 1 << 20);
        assert_eq!(small.len(), 1);
        assert!(!small[0].fragment);
        let parts = fragments(r, 350);
        assert!(parts.len() > 1);
        assert_eq!(parts.iter().map(|p| p.events.len()).sum::<usize>(), 10);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment && p.encoded_len() < 350));
        assert!(!parts.last().unwrap().fragment);
        assert!(parts.iter().all(|p| p.watch_id == 3));
    }
}
