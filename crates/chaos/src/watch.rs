//! Watchers: one per member, watching everything the workload writes from revision 1, resuming
//! after each disconnection from the revision after the last event seen (as etcd's clients do).
//! At the end each watcher's events must be exactly the committed events: none missing, none
//! twice, in revision order. The reference is a fresh watch from revision 1 on the healed
//! cluster's leader (which replays the whole history: the tool never compacts).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kaname_proto::etcdserverpb::watch_client::WatchClient;
use kaname_proto::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest};
use kaname_proto::mvccpb::event::EventType;
use tonic::transport::Channel;

use crate::workload::prefix_end;

/// What the watched events say: (mod_revision, key, value or None for a delete).
pub type Event = (i64, String, Option<String>);

pub const PREFIX: &str = "/chaos/";

/// Watches from `start` until `stop` is set and the watcher has seen `until` (set at the end),
/// reconnecting after errors. Returns the events in the order received.
pub async fn watcher(ch: Channel, stop: Arc<AtomicBool>, until: Arc<AtomicI64>) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    let done = |events: &Vec<Event>| {
        stop.load(Ordering::Relaxed) && events.last().map(|e| e.0).unwrap_or(0) >= until.load(Ordering::Relaxed)
    };
    while !done(&events) {
        let next = events.last().map(|e| e.0 + 1).unwrap_or(1);
        let _ = watch_once(ch.clone(), next, &mut events, &done).await;
        if !done(&events) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    events
}

/// One watch stream from `start`; returns when it breaks or `done` holds.
async fn watch_once(
    ch: Channel,
    start: i64,
    events: &mut Vec<Event>,
    done: &(dyn Fn(&Vec<Event>) -> bool + Sync),
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let create = WatchCreateRequest {
        key: PREFIX.as_bytes().to_vec(),
        range_end: prefix_end(PREFIX),
        start_revision: start,
        ..Default::default()
    };
    tx.send(WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) }).await?;
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        WatchClient::new(ch).watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await??
    .into_inner();
    loop {
        if done(events) {
            return Ok(());
        }
        // A short timeout so that `done` is re-checked and a silent (partitioned) member is
        // retried; the watch then resumes where it left off.
        let msg = match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
            Err(_) => continue,
            Ok(m) => m?,
        };
        let Some(resp) = msg else { anyhow::bail!("watch stream ended") };
        if resp.canceled {
            anyhow::bail!("watch canceled: {} (compact revision {})", resp.cancel_reason, resp.compact_revision);
        }
        for ev in resp.events {
            let Some(kv) = ev.kv else { continue };
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            let value = (ev.r#type == EventType::Put as i32).then(|| String::from_utf8_lossy(&kv.value).into_owned());
            events.push((kv.mod_revision, key, value));
        }
    }
}

/// For the watcher of a member removed mid-run: what it saw must be the start of the committed
/// events (none missing, none twice, in order), though it stopped early.
pub fn compare_prefix(name: &str, got: &[Event], reference: &[Event]) -> Option<String> {
    compare(name, got, &reference[..got.len().min(reference.len())])
}

/// Compares one watcher's events with the reference; None when they are the same.
pub fn compare(name: &str, got: &[Event], reference: &[Event]) -> Option<String> {
    for (i, (g, r)) in got.iter().zip(reference).enumerate() {
        if g != r {
            let prev = if i > 0 { format!("{:?}", got[i - 1]) } else { "nothing".into() };
            return Some(format!(
                "watcher on {name}: event #{i} is {g:?}, the committed event there is {r:?} (after {prev})"
            ));
        }
    }
    if got.len() != reference.len() {
        let (more, which) = if got.len() > reference.len() {
            ("extra", &got[reference.len()])
        } else {
            ("missing", &reference[got.len()])
        };
        return Some(format!(
            "watcher on {name}: {} events, the committed history has {}; first {more}: {which:?}",
            got.len(),
            reference.len()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rev: i64, v: Option<&str>) -> Event {
        (rev, "/chaos/k/0".into(), v.map(String::from))
    }

    #[test]
    fn compare_finds_gaps_duplicates_and_reordering() {
        let reference = vec![ev(2, Some("a")), ev(3, None), ev(4, Some("b"))];
        assert_eq!(compare("m1", &reference, &reference), None);
        let gap = vec![ev(2, Some("a")), ev(4, Some("b"))];
        assert!(compare("m1", &gap, &reference).unwrap().contains("event #1"));
        let dup = vec![ev(2, Some("a")), ev(3, None), ev(3, None), ev(4, Some("b"))];
        assert!(compare("m1", &dup, &reference).is_some());
        let short = vec![ev(2, Some("a")), ev(3, None)];
        assert!(compare("m1", &short, &reference).unwrap().contains("first missing"));
    }
}
