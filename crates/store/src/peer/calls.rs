//! The answering end of call streams (the calling end, and the frame format, are
//! `raft::calls`): a member's per-request calls to us, each answered when it is done.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::PeerHandler;
use crate::raft::calls::{answer_frame, from_wire, split_header};
use crate::raft::stream::read_frame;

/// Serves one call stream: each call runs in a task of its own, and answers go back as they
/// are ready, several to a write when they pile up. Ends when the caller closes the connection.
pub async fn serve<T: AsyncRead + AsyncWrite + Send + 'static, H: PeerHandler>(io: T, member: Arc<H>) {
    let (reader, mut writer) = tokio::io::split(io);
    let (answers, mut ready) = mpsc::unbounded_channel::<Vec<u8>>();
    let read = async move {
        let mut reader = BufReader::new(reader);
        let mut calls = JoinSet::new();
        loop {
            let frame = match read_frame(&mut reader).await {
                Ok(f) => f,
                Err(e) => {
                    if e.kind() != io::ErrorKind::UnexpectedEof {
                        tracing::debug!("call stream ended: {e}");
                    }
                    return;
                }
            };
            let Some((id, code, _)) = split_header(&frame) else { return };
            let (member, answers) = (member.clone(), answers.clone());
            calls.spawn(async move {
                let answer = match from_wire(code) {
                    Some(rpc) => super::serve_call(&*member, rpc, &frame[9..]).await,
                    None => Err(format!("unknown peer call {code}")),
                };
                let _ = answers.send(answer_frame(id, answer));
            });
            while calls.try_join_next().is_some() {}
        }
    };
    let write = async move {
        while let Some(mut batch) = ready.recv().await {
            while let Ok(more) = ready.try_recv() {
                batch.extend_from_slice(&more);
            }
            if writer.write_all(&batch).await.is_err() {
                return;
            }
        }
    };
    // Either end stopping ends the stream; calls still running are dropped with it.
    tokio::select! {
        () = read => {}
        () = write => {}
    }
}
