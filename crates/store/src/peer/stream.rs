//! The serving end of the streams members open to each other's peer URL (their dialing end
//! is `raft::stream` and `raft::calls`): telling an accepted connection's kind by its first
//! bytes, and serving replication streams.
//!
//! A connection that opens with [`MAGIC`] is a replication stream, one that opens with
//! [`CALLS_MAGIC`] a call stream, and anything else (an HTTP/2 preface) goes to tonic with its
//! first bytes put back ([`Rewound`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use openraft::raft::AppendEntriesRequest;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};

use super::PeerHandler;
use crate::raft::network::REMOVED_MEMBER;
use crate::raft::stream::{encode_frame, read_frame, Reply, CALLS_MAGIC, MAGIC};
use crate::raft::TypeConfig;

/// How long an accepted connection may take to send its first bytes.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, String> {
    bincode::deserialize(frame).map_err(|e| format!("bad peer message: {e}"))
}

/// What an accepted peer connection turned out to be.
pub enum Accepted<T> {
    /// A replication stream, for [`serve`].
    Replication(T),
    /// A call stream, for [`super::calls::serve`].
    Calls(T),
    /// Anything else, for the gRPC server, its first bytes put back.
    Grpc(Rewound<T>),
}

/// Reads the first bytes of an accepted peer connection to tell our streams from gRPC.
pub async fn sniff<T: AsyncRead + Unpin>(mut io: T) -> io::Result<Accepted<T>> {
    let mut head = [0u8; MAGIC.len()];
    let mut got = 0;
    let read = async {
        while got < head.len() {
            let n = io.read(&mut head[got..]).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed before speaking"));
            }
            got += n;
            // An HTTP/2 preface is told apart by its first byte; don't wait for 8 of them.
            if head[0] != MAGIC[0] {
                break;
            }
        }
        Ok(())
    };
    tokio::time::timeout(SNIFF_TIMEOUT, read)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer sent nothing"))??;
    if got == MAGIC.len() && &head == MAGIC {
        Ok(Accepted::Replication(io))
    } else if got == MAGIC.len() && &head == CALLS_MAGIC {
        Ok(Accepted::Calls(io))
    } else {
        Ok(Accepted::Grpc(Rewound { head: head[..got].to_vec(), pos: 0, io }))
    }
}

/// Serves one replication stream: each frame is an AppendEntries for our Raft, answered in
/// order. Ends when the leader closes the connection or sends garbage.
pub async fn serve<T: AsyncRead + AsyncWrite + Unpin, H: PeerHandler>(io: T, member: Arc<H>) {
    let mut io = BufReader::new(io);
    let mut out = Vec::new();
    loop {
        let frame = match read_frame(&mut io).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return,
            Err(e) => {
                tracing::debug!("replication stream ended: {e}");
                return;
            }
        };
        let reply: Reply = match decode::<AppendEntriesRequest<TypeConfig>>(&frame) {
            Err(e) => Err(e),
            // A removed member does not learn of its removal from Raft; as etcd, tell it
            // when it next talks to us.
            Ok(req) if req.vote.leader_id().voted_for().is_some_and(|id| member.is_removed(id)) => {
                Err(REMOVED_MEMBER.to_string())
            }
            Ok(req) => Ok(member.append_entries(req).await),
        };
        let refused = reply.is_err();
        if let Err(e) = encode_frame(&mut out, &reply) {
            tracing::warn!("replication stream: cannot encode reply: {e}");
            return;
        }
        if io.get_mut().write_all(&out).await.is_err() || refused {
            return;
        }
    }
}

/// A connection whose first bytes were read to sniff it, handing them out again first.
pub struct Rewound<T> {
    head: Vec<u8>,
    pos: usize,
    io: T,
}

impl<T> tonic::transport::server::Connected for Rewound<T> {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewound<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pos < self.head.len() {
            let n = (self.head.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.head[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewound<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sniff_tells_a_replication_stream_from_http2_and_puts_bytes_back() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(MAGIC).await.unwrap();
        a.write_all(b"rest").await.unwrap();
        match sniff(b).await.unwrap() {
            Accepted::Replication(mut io) => {
                let mut rest = [0u8; 4];
                io.read_exact(&mut rest).await.unwrap();
                assert_eq!(&rest, b"rest");
            }
            _ => panic!("the magic was not recognized"),
        }
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(CALLS_MAGIC).await.unwrap();
        assert!(matches!(sniff(b).await.unwrap(), Accepted::Calls(_)));

        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(preface).await.unwrap();
        drop(a);
        match sniff(b).await.unwrap() {
            Accepted::Grpc(mut io) => {
                let mut all = Vec::new();
                io.read_to_end(&mut all).await.unwrap();
                assert_eq!(all, preface);
            }
            _ => panic!("HTTP/2 taken for a stream of ours"),
        }
    }
}
