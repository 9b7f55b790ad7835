//! `kaname bench watch`: many watchers on one key, puts at a steady rate, and the latency from
//! sending each put to each watcher receiving its event (etcd's `benchmark watch-latency`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use kaname_proto::etcdserverpb::kv_client::KvClient;
use kaname_proto::etcdserverpb::watch_client::WatchClient;
use kaname_proto::etcdserverpb::{watch_request, PutRequest, WatchCreateRequest, WatchRequest};

use crate::{connect, Results};

#[derive(Args, Clone, Debug)]
pub struct WatchFlags {
    /// gRPC endpoints (host:port), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Total number of gRPC connections (streams are spread over them).
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Number of watch streams.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Watchers on each stream.
    #[arg(long, default_value_t = 10)]
    pub watchers_per_stream: usize,
    /// Number of puts.
    #[arg(long, default_value_t = 100)]
    pub put_total: usize,
    /// Puts per second.
    #[arg(long, default_value_t = 100)]
    pub put_rate: u64,
    /// Value size of the puts.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
}

const KEY: &[u8] = b"kaname-bench-watch";

pub async fn run(f: WatchFlags) -> anyhow::Result<Results> {
    let conns = connect(&f.endpoints, f.conns).await?;
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; f.put_total]));
    let samples: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let expected = f.put_total * f.streams * f.watchers_per_stream;

    let mut readers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(f.streams.max(1));
    for s in 0..f.streams {
        let mut client = WatchClient::new(conns[s % conns.len()].clone());
        let (tx, rx) = tokio::sync::mpsc::channel(f.watchers_per_stream + 1);
        for _ in 0..f.watchers_per_stream {
            let create = WatchCreateRequest { key: KEY.to_vec(), ..Default::default() };
            tx.send(WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) }).await?;
        }
        let mut events = client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
        let (sent, samples, ready_tx, watchers) =
            (sent.clone(), samples.clone(), ready_tx.clone(), f.watchers_per_stream);
        readers.push(tokio::spawn(async move {
            let _keep_open = tx;
            let mut created = 0;
            while let Ok(Some(resp)) = events.message().await {
                if resp.created {
                    created += 1;
                    if created == watchers {
                        let _ = ready_tx.send(()).await;
                    }
                }
                let now = Instant::now();
                for ev in resp.events {
                    let Some(kv) = ev.kv else { continue };
                    let Some(i) = kv.value.get(..8).map(|b| u64::from_be_bytes(b.try_into().expect("8")) as usize)
                    else {
                        continue;
                    };
                    if let Some(Some(t)) = sent.lock().expect("sent").get(i) {
                        samples.lock().expect("samples").push(now - *t);
                    }
                }
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..f.streams {
        ready_rx
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("a watch stream closed before its watchers were created"))?;
    }

    let start = Instant::now();
    let mut kv = KvClient::new(conns[0].clone());
    let mut errors = 0;
    let interval = Duration::from_secs_f64(1.0 / f.put_rate.max(1) as f64);
    let mut ticker = tokio::time::interval(interval);
    for i in 0..f.put_total {
        ticker.tick().await;
        let mut value = (i as u64).to_be_bytes().to_vec();
        value.resize(f.val_size.max(8), b'x');
        sent.lock().expect("sent")[i] = Some(Instant::now());
        if kv.put(PutRequest { key: KEY.to_vec(), value, ..Default::default() }).await.is_err() {
            errors += f.streams * f.watchers_per_stream;
        }
    }
    // Wait for the events still on their way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while samples.lock().expect("samples").len() + errors < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = start.elapsed();
    for r in readers {
        r.abort();
    }
    let samples = std::mem::take(&mut *samples.lock().expect("samples"));
    let missing = expected.saturating_sub(samples.len() + errors);
    Ok(Results { samples, errors: errors + missing, total })
}
