//! The call stream: our own per-request peer RPCs (forwarded writes, read-index and lease
//! calls) multiplexed over one long-lived connection per member→member pair, instead of one
//! unary gRPC call each.
//!
//! Why: a follower forwards its clients' writes and linearizable reads to the leader, so at low
//! concurrency every such request pays a peer round trip. Over gRPC that round trip was an HTTP/2
//! stream with HPACK headers and trailers, and hops through hyper's connection tasks on both
//! ends. Here a call is one frame each way: `[len u32][id u64][rpc u8][body]` out and
//! `[len u32][id u64][ok u8][body or error text]` back, answered in any order (a forwarded write
//! waits for its commit while a read-index call overtakes it). Bodies are the same bincode as
//! on gRPC, which stays for the rare calls (hello, membership, campaign) and for votes and
//! snapshots.
//!
//! This is the calling end and the frame format both ends share; the answering end is
//! `peer::calls`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWriteExt, BufReader, WriteHalf};
use tokio::sync::oneshot;

use super::network::{PeerError, PeerRpc};
use super::stream::{dial, read_frame, Io, CALLS_MAGIC};
use super::MemberNode;

/// The RPCs sent on call streams, with their wire codes.
const ROUTED: [(PeerRpc, u8); 3] = [(PeerRpc::Forward, 1), (PeerRpc::ReadIndex, 2), (PeerRpc::Lease, 3)];

pub fn is_routed(rpc: PeerRpc) -> bool {
    wire_code(rpc).is_some()
}

fn wire_code(rpc: PeerRpc) -> Option<u8> {
    ROUTED.iter().find(|(r, _)| std::mem::discriminant(r) == std::mem::discriminant(&rpc)).map(|(_, c)| *c)
}

pub(crate) fn from_wire(code: u8) -> Option<PeerRpc> {
    ROUTED.iter().find(|(_, c)| *c == code).map(|(r, _)| *r)
}

pub(crate) type Answer = Result<Vec<u8>, String>;

/// The calls waiting for an answer on one connection. `open` turns false when the connection
/// fails, so the next call dials a new one.
struct Waiting {
    open: bool,
    calls: HashMap<u64, oneshot::Sender<Answer>>,
}

/// One connection to a member: callers write their frames under `writer`'s lock, a reader task
/// hands each answer to its caller.
struct CallConn {
    writer: tokio::sync::Mutex<WriteHalf<Box<dyn Io>>>,
    waiting: Arc<Mutex<Waiting>>,
    next_id: AtomicU64,
    /// Dropped with the connection, which stops its reader task and closes the socket.
    _stop_reader: oneshot::Sender<()>,
}

impl CallConn {
    fn is_open(&self) -> bool {
        self.waiting.lock().expect("waiting calls").open
    }
}

/// Marks a connection closed when dropped before [`CloseUnlessDone::finish`].
struct CloseUnlessDone<'a> {
    waiting: &'a Mutex<Waiting>,
    done: bool,
}

impl CloseUnlessDone<'_> {
    fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for CloseUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.waiting.lock().expect("waiting calls").open = false;
        }
    }
}

/// The call streams to every member we talk to, one per peer URL, dialed on first use and
/// replaced after a failure.
#[derive(Default)]
pub struct CallStreams {
    slots: Mutex<HashMap<String, Slot>>,
}

/// The connection to one peer URL, if any; locked while it is dialed.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<CallConn>>>>;

impl CallStreams {
    /// Sends one call and waits for its answer. Errors say whether the call surely did not
    /// reach the peer (`Unreachable`) or may have (`NoAnswer`), as for gRPC calls.
    pub async fn call(
        &self,
        node: &MemberNode,
        tls: Option<Arc<rustls::ClientConfig>>,
        rpc: PeerRpc,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, PeerError> {
        let code = wire_code(rpc).ok_or_else(|| PeerError::Protocol(format!("{rpc:?} is not a call-stream RPC")))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let conn = tokio::time::timeout_at(deadline, self.connection(node, tls))
            .await
            .map_err(|_| PeerError::Unreachable(format!("{rpc:?} to {}: connect timed out", node.name)))??;
        let run = async {
            let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            let closed = || PeerError::Unreachable(format!("call stream to {} closed", node.name));
            {
                let mut waiting = conn.waiting.lock().expect("waiting calls");
                if !waiting.open {
                    return Err(closed());
                }
                waiting.calls.insert(id, tx);
            }
            let frame = frame(id, code, body);
            let mut writer = conn.writer.lock().await;
            if !conn.is_open() {
                return Err(closed());
            }
            // Should this future be dropped (the caller's timeout) or fail in mid-frame, the
            // stream is out of step: nothing more may be written to it.
            let unfinished = CloseUnlessDone { waiting: &conn.waiting, done: false };
            if let Err(e) = writer.write_all(&frame).await {
                return Err(PeerError::NoAnswer(format!("{rpc:?} to {}: {e}", node.name)));
            }
            unfinished.finish();
            drop(writer);
            let answer =
                rx.await.map_err(|_| PeerError::NoAnswer(format!("{rpc:?} to {}: connection lost", node.name)))?;
            answer.map_err(|e| PeerError::Protocol(format!("{rpc:?} to {}: {e}", node.name)))
        };
        match tokio::time::timeout_at(deadline, run).await {
            Ok(r) => r,
            Err(_) => {
                // The peer may be cut off with the connection still looking open (dropped
                // packets, no reset): the next call dials afresh, and fails fast as
                // unreachable if the peer is. A late answer here finds no caller.
                conn.waiting.lock().expect("waiting calls").open = false;
                Err(PeerError::NoAnswer(format!("{rpc:?} to {} timed out", node.name)))
            }
        }
    }

    async fn connection(
        &self,
        node: &MemberNode,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Arc<CallConn>, PeerError> {
        let url =
            node.peer_urls.first().ok_or_else(|| PeerError::Unreachable(format!("{} has no peer URL", node.name)))?;
        let slot = self.slots.lock().expect("call stream slots").entry(url.clone()).or_default().clone();
        // Held while dialing, so concurrent callers share one new connection.
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| c.is_open()) {
            return Ok(conn.clone());
        }
        let mut io = dial(node, tls).await?;
        io.write_all(CALLS_MAGIC).await.map_err(|e| PeerError::Unreachable(e.to_string()))?;
        let (reader, writer) = tokio::io::split(io);
        let waiting = Arc::new(Mutex::new(Waiting { open: true, calls: HashMap::new() }));
        let (stop_reader, stopped) = oneshot::channel();
        tokio::spawn(read_answers(BufReader::new(reader), waiting.clone(), stopped));
        let conn = Arc::new(CallConn {
            writer: tokio::sync::Mutex::new(writer),
            waiting,
            next_id: AtomicU64::new(0),
            _stop_reader: stop_reader,
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

/// Hands the answers read from a call stream to their callers, until the connection fails or
/// is dropped; then every call still waiting learns that its answer is lost.
async fn read_answers<R: AsyncRead + Unpin>(mut r: R, waiting: Arc<Mutex<Waiting>>, mut stop: oneshot::Receiver<()>) {
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut r) => f,
            _ = &mut stop => break,
        };
        let Ok(frame) = frame else { break };
        let Some((id, ok, body)) = split_header(&frame) else { break };
        let answer = if ok == 1 { Ok(body.to_vec()) } else { Err(String::from_utf8_lossy(body).into_owned()) };
        if let Some(caller) = waiting.lock().expect("waiting calls").calls.remove(&id) {
            let _ = caller.send(answer);
        }
    }
    let mut waiting = waiting.lock().expect("waiting calls");
    waiting.open = false;
    waiting.calls.clear();
}

/// `[id u64][byte][body]` of a frame.
pub(crate) fn split_header(frame: &[u8]) -> Option<(u64, u8, &[u8])> {
    if frame.len() < 9 {
        return None;
    }
    let id = u64::from_be_bytes(frame[..8].try_into().ok()?);
    Some((id, frame[8], &frame[9..]))
}

/// An answer's frame: `ok` 1 and the body, or 0 and the error text.
pub(crate) fn answer_frame(id: u64, answer: Answer) -> Vec<u8> {
    match answer {
        Ok(body) => frame(id, 1, &body),
        Err(e) => frame(id, 0, e.as_bytes()),
    }
}

/// `[len u32][id u64][byte][body]`: a call (the byte is its RPC) or an answer (1 = ok).
fn frame(id: u64, byte: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(13 + body.len());
    frame.extend_from_slice(&u32::try_from(9 + body.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.push(byte);
    frame.extend_from_slice(body);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_round_trip_and_only_routed_rpcs_have_one() {
        for (rpc, code) in ROUTED {
            assert_eq!(wire_code(rpc), Some(code));
            assert!(
                matches!((from_wire(code), rpc), (Some(a), b) if std::mem::discriminant(&a) == std::mem::discriminant(&b))
            );
        }
        assert!(!is_routed(PeerRpc::Hello));
        assert!(!is_routed(PeerRpc::Vote));
        assert!(from_wire(0).is_none());
    }

    /// A member stand-in on a real listener that never answers a call whose body is
    /// `swallow` (as if the peer were cut off without a reset) and answers the others; it counts
    /// the connections it accepted.
    async fn peer_that_swallows_calls() -> (MemberNode, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut io = BufReader::new(tcp);
                    if !super::super::stream::opens_with(&mut io, CALLS_MAGIC).await {
                        return;
                    }
                    while let Ok(frame) = read_frame(&mut io).await {
                        let (id, _, body) = split_header(&frame).unwrap();
                        if body == b"swallow" {
                            continue;
                        }
                        if io.get_mut().write_all(&answer_frame(id, Ok(b"ok".to_vec()))).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (MemberNode { name: "m2".into(), peer_urls: vec![url] }, accepted)
    }

    #[tokio::test]
    async fn a_call_that_times_out_leaves_its_stream_and_the_next_call_dials_again() {
        let (node, accepted) = peer_that_swallows_calls().await;
        let streams = CallStreams::default();
        let lost = streams.call(&node, None, PeerRpc::ReadIndex, b"swallow", Duration::from_millis(100)).await;
        assert!(matches!(lost, Err(PeerError::NoAnswer(_))), "{lost:?}");
        // The stream that swallowed a call is not trusted again: the next call dials anew.
        let answered = streams.call(&node, None, PeerRpc::ReadIndex, b"", Duration::from_secs(5)).await;
        assert_eq!(answered.unwrap(), b"ok".to_vec());
        assert_eq!(accepted.load(Ordering::Relaxed), 2, "the timed-out call's stream was left");
    }

    #[tokio::test]
    async fn answers_reach_their_callers_in_any_order_and_a_lost_connection_fails_the_rest() {
        let waiting = Arc::new(Mutex::new(Waiting { open: true, calls: HashMap::new() }));
        let mut rx = Vec::new();
        for id in 0..3u64 {
            let (tx, r) = oneshot::channel();
            waiting.lock().unwrap().calls.insert(id, tx);
            rx.push(r);
        }
        // Answers for 2 then 0, then the connection ends with 1 unanswered.
        let mut wire = answer_frame(2, Ok(b"two".to_vec()));
        wire.extend(answer_frame(0, Err("refused".into())));
        let (_keep, stop) = oneshot::channel();
        read_answers(&wire[..], waiting.clone(), stop).await;
        let mut rx = rx.into_iter();
        assert_eq!(rx.next().unwrap().await.unwrap(), Err("refused".to_string()));
        assert!(rx.next().unwrap().await.is_err(), "call 1 must learn its answer is lost");
        assert_eq!(rx.next().unwrap().await.unwrap(), Ok(b"two".to_vec()));
        assert!(!waiting.lock().unwrap().open);
    }
}
