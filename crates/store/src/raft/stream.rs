//! The replication stream: AppendEntries over a dedicated connection per leader→follower
//! pair, as length-prefixed bincode frames, instead of one unary gRPC call each.
//!
//! Why not gRPC: AppendEntries is the one peer message sent for every write, twice per
//! follower (the entries, then the new commit index). A unary HTTP/2 call costs a stream, HPACK
//! headers, trailers, and hops through hyper's connection task on both sides; measured, that was
//! most of the leader's ~11 `writev` per put and much of its CPU. etcd also keeps a long-lived
//! stream per peer for its append messages (`msgappv2`) next to plain HTTP for the rest. openraft
//! sends AppendEntries to one follower strictly one after another (the next only once the last
//! is answered), so a connection serves them in order with no request IDs: one frame out, one
//! frame back. Votes and snapshots stay on gRPC; our own per-request calls have call streams
//! (`raft::calls`).
//!
//! This is the leader's (dialing) end and the wire format both ends share; the follower's end
//! is `peer::stream`. The streams share the peer URL with the gRPC service: a connection that
//! opens with [`MAGIC`] is a replication stream, one that opens with [`CALLS_MAGIC`] a call
//! stream, and anything else goes to tonic (see `peer::stream::sniff`). With `https://` peer
//! URLs all of them run inside the same TLS.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::network::PeerError;
use super::{MemberNode, TypeConfig};

/// The first bytes a replication stream sends. An HTTP/2 connection starts with `PRI * HTTP`,
/// so neither this nor [`CALLS_MAGIC`] can be confused with gRPC.
pub const MAGIC: &[u8; 8] = b"KNMRAFT1";
/// The first bytes a call stream (`raft::calls`) sends.
pub const CALLS_MAGIC: &[u8; 8] = b"KNMCALL1";

/// A frame larger than this is refused as garbage. Entries are bounded by the batcher and
/// openraft's `max_payload_entries`; this only guards against a corrupt length.
const MAX_FRAME: usize = 1 << 30;

/// What the follower answers: the Raft reply, or why the message was not handed to Raft.
pub(crate) type Reply = Result<Result<AppendEntriesResponse<u64>, RaftError<u64>>, String>;

/// A peer connection, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Io for T {}

/// One open replication stream, as the leader reads and writes it.
type Conn = BufReader<Box<dyn Io>>;

/// Idle replication streams, per peer URL. openraft asks for a new connection for every
/// leadership check (each read-index round sends its heartbeats on fresh clients), while the
/// replication task keeps its own for the whole term; without the pool every linearizable
/// read round would dial (and with TLS, handshake) once per follower.
#[derive(Clone, Default)]
pub struct StreamPool {
    idle: Arc<Mutex<HashMap<String, Vec<Conn>>>>,
}

/// Idle streams kept per peer: about one per member's concurrent read-index round.
const MAX_IDLE_PER_PEER: usize = 4;

impl StreamPool {
    fn take(&self, url: &str) -> Option<Conn> {
        self.idle.lock().expect("stream pool").get_mut(url)?.pop()
    }

    fn put(&self, url: &str, conn: Conn) {
        let mut idle = self.idle.lock().expect("stream pool");
        let conns = idle.entry(url.to_string()).or_default();
        if conns.len() < MAX_IDLE_PER_PEER {
            conns.push(conn);
        }
    }
}

/// The leader's end of a stream to one follower, taken from the pool or dialed on first use,
/// dropped after any error (a half-done exchange leaves the stream's position unknown;
/// openraft retries and the next call dials again), and given back to the pool when openraft
/// drops this client.
pub struct ReplicationStream {
    node: MemberNode,
    tls: Option<Arc<rustls::ClientConfig>>,
    pool: StreamPool,
    conn: Option<Conn>,
    /// The frame being written, kept to reuse its allocation.
    out: Vec<u8>,
}

impl Drop for ReplicationStream {
    fn drop(&mut self) {
        if let (Some(conn), Some(url)) = (self.conn.take(), self.node.peer_urls.first()) {
            self.pool.put(url, conn);
        }
    }
}

impl ReplicationStream {
    pub fn new(node: MemberNode, tls: Option<Arc<rustls::ClientConfig>>, pool: StreamPool) -> Self {
        ReplicationStream { node, tls, pool, conn: None, out: Vec::new() }
    }

    pub async fn append_entries(
        &mut self,
        req: &AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<Result<AppendEntriesResponse<u64>, RaftError<u64>>, PeerError> {
        let attempts = async {
            // A pooled stream may have died while idle (the follower restarted): then
            // dial once more. AppendEntries may be delivered twice; Raft allows that.
            if self.conn.is_none() {
                if let Some(pooled) = self.node.peer_urls.first().and_then(|u| self.pool.take(u)) {
                    self.conn = Some(pooled);
                    match self.exchange(req).await {
                        Err(PeerError::NoAnswer(_)) => {}
                        done => return done,
                    }
                }
            }
            self.exchange(req).await
        };
        let reply = match tokio::time::timeout(timeout, attempts).await {
            Ok(r) => r,
            Err(_) => Err(PeerError::NoAnswer(format!("AppendEntries to {} timed out", self.node.name))),
        };
        if reply.is_err() {
            self.conn = None;
        }
        match reply? {
            Ok(r) => Ok(r),
            Err(refused) => {
                self.conn = None;
                Err(PeerError::Protocol(refused))
            }
        }
    }

    /// One request and its reply. The connection is out of `self.conn` while the exchange
    /// runs and goes back only once the reply is read: if this future is dropped half way (a
    /// caller's timeout), the connection is dropped with it, so no later request can read the
    /// reply meant for this one.
    async fn exchange(&mut self, req: &AppendEntriesRequest<TypeConfig>) -> Result<Reply, PeerError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let mut io = dial(&self.node, self.tls.clone()).await?;
                io.write_all(MAGIC).await.map_err(|e| PeerError::Unreachable(e.to_string()))?;
                BufReader::new(io)
            }
        };
        encode_frame(&mut self.out, req).map_err(PeerError::Protocol)?;
        let lost = |e: io::Error| PeerError::NoAnswer(format!("AppendEntries stream: {e}"));
        conn.get_mut().write_all(&self.out).await.map_err(lost)?;
        let frame = read_frame(&mut conn).await.map_err(lost)?;
        self.conn = Some(conn);
        bincode::deserialize(&frame).map_err(|e| PeerError::Protocol(e.to_string()))
    }
}

/// Opens a connection to a member's peer URL (TLS for `https://`).
pub(crate) async fn dial(node: &MemberNode, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Box<dyn Io>, PeerError> {
    let url = node.peer_urls.first().ok_or_else(|| PeerError::Unreachable(format!("{} has no peer URL", node.name)))?;
    let unreachable = |e: String| PeerError::Unreachable(format!("{url}: {e}"));
    if url.starts_with("https://") {
        let tls = tls.ok_or_else(|| unreachable("https peer URL but no peer TLS configured".into()))?;
        let uri: tonic::codegen::http::Uri =
            kaname_tls::connector_uri(url).parse().map_err(|e| unreachable(format!("{e}")))?;
        let mut connector = kaname_tls::TlsConnector::new(tls);
        let io = tokio::time::timeout(CONNECT_TIMEOUT, tower_service::Service::call(&mut connector, uri))
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Box::new(io.into_inner()))
    } else {
        let addr = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        // Each frame is one write that must leave at once, not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        Ok(Box::new(tcp))
    }
}

/// As the gRPC channels' connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

pub(crate) fn encode_frame<T: Serialize>(out: &mut Vec<u8>, msg: &T) -> Result<(), String> {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    bincode::serialize_into(&mut *out, msg).map_err(|e| e.to_string())?;
    let len = u32::try_from(out.len() - 4).map_err(|_| "peer message over 4 GiB".to_string())?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let len = r.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("peer frame of {len} bytes")));
    }
    let mut frame = vec![0; len];
    r.read_exact(&mut frame).await?;
    Ok(frame)
}

/// Whether a connection we accepted opens with `magic` (what `peer::stream::sniff` tells
/// apart), for stand-ins of the other end in tests.
#[cfg(test)]
pub(crate) async fn opens_with<R: AsyncRead + Unpin>(r: &mut R, magic: &[u8; 8]) -> bool {
    let mut head = [0u8; 8];
    r.read_exact(&mut head).await.is_ok() && &head == magic
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A follower stand-in on a real listener: answers `Success` to a request without a
    /// commit index and `Conflict` to one with, its first answer on each connection only after
    /// `delay`.
    async fn fake_follower(delay: Duration) -> MemberNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut io = BufReader::new(tcp);
                    if !opens_with(&mut io, MAGIC).await {
                        return;
                    }
                    let mut first = true;
                    while let Ok(frame) = read_frame(&mut io).await {
                        let req: AppendEntriesRequest<TypeConfig> = bincode::deserialize(&frame).unwrap();
                        let answer: AppendEntriesResponse<u64> = match req.leader_commit {
                            None => AppendEntriesResponse::Success,
                            Some(_) => AppendEntriesResponse::Conflict,
                        };
                        if std::mem::take(&mut first) {
                            tokio::time::sleep(delay).await;
                        }
                        let mut out = Vec::new();
                        encode_frame(&mut out, &Ok::<_, String>(Ok::<_, RaftError<u64>>(answer))).unwrap();
                        if io.get_mut().write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        MemberNode { name: "m2".into(), peer_urls: vec![url] }
    }

    /// A heartbeat, with or without a commit index (telling the fake follower's answers apart).
    fn heartbeat(committed: bool) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: openraft::Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: vec![],
            leader_commit: committed.then(|| openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 1)),
        }
    }

    #[tokio::test]
    async fn a_reply_that_came_too_late_is_never_taken_for_the_next_one() {
        use AppendEntriesResponse::{Conflict, Success};
        let node = fake_follower(Duration::from_millis(300)).await;
        let pool = StreamPool::default();
        let mut stream = ReplicationStream::new(node.clone(), None, pool.clone());
        let (uncommitted, committed) = (heartbeat(false), heartbeat(true));
        // Requests given up while the follower still owes its (Success) reply: by our own
        // timeout, and by the caller dropping the call (as openraft's timeouts do)...
        let late = stream.append_entries(&uncommitted, Duration::from_millis(50)).await;
        assert!(matches!(late, Err(PeerError::NoAnswer(_))), "{late:?}");
        let dropped = tokio::time::timeout(
            Duration::from_millis(50),
            stream.append_entries(&uncommitted, Duration::from_secs(5)),
        );
        assert!(dropped.await.is_err());
        // ...must not answer the next request (which gets Conflict).
        let next = stream.append_entries(&committed, Duration::from_secs(5)).await.unwrap().unwrap();
        assert_eq!(next, Conflict);
        assert_eq!(stream.append_entries(&uncommitted, Duration::from_secs(5)).await.unwrap().unwrap(), Success);

        // A client dropped by openraft leaves its connection, in step, to the next one.
        drop(stream);
        let mut reuse = ReplicationStream::new(node, None, pool.clone());
        assert!(pool.idle.lock().unwrap().values().any(|c| c.len() == 1));
        assert_eq!(reuse.append_entries(&committed, Duration::from_secs(5)).await.unwrap().unwrap(), Conflict);
    }

    #[tokio::test]
    async fn frames_round_trip_and_a_corrupt_length_is_refused() {
        let mut out = Vec::new();
        encode_frame(&mut out, &("hello", 42u64)).unwrap();
        let mut r = &out[..];
        let frame = read_frame(&mut r).await.unwrap();
        assert_eq!(bincode::deserialize::<(String, u64)>(&frame).unwrap(), ("hello".to_string(), 42));

        let huge = (u32::MAX).to_be_bytes();
        let mut r = &huge[..];
        assert_eq!(read_frame(&mut r).await.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
