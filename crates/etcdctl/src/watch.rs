//! watch: key, range, --prefix, --rev, --prev-kv, -i (interactive), and `-- command` exec.

use std::io::BufRead;

use clap::{Args, Parser};
use kaname_proto::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest, WatchResponse};
use kaname_proto::mvccpb::Event;

use crate::client::{bad_args, fail, status_msg, Client, Format, Global, Res, EXIT_BAD_ARGS, EXIT_INTERRUPTED};
use crate::out::{outln, Obj, J};
use crate::pr::*;

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// Interactive mode
    #[arg(short, long)]
    interactive: bool,
    /// Watch on a prefix if prefix is set
    #[arg(long)]
    prefix: bool,
    /// Revision to start watching
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// get the previous key-value pair before the event happens
    #[arg(long)]
    prev_kv: bool,
    /// key [range_end]
    args: Vec<String>,
    /// command to run for every event (after `--`)
    #[arg(last = true)]
    exec: Vec<String>,
}

/// A `watch ...` line of interactive mode.
#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
enum Line {
    Watch(WatchArgs),
}

fn event_type(e: &Event) -> &'static str {
    if e.r#type == 1 {
        "DELETE"
    } else {
        "PUT"
    }
}

fn print(f: Format, hex: bool, r: &WatchResponse) -> Res {
    match f {
        Format::Simple => {
            for e in &r.events {
                outln(event_type(e));
                if let Some(p) = &e.prev_kv {
                    simple_kv(p, hex, false);
                }
                simple_kv(&e.kv.clone().unwrap_or_default(), hex, false);
            }
        }
        Format::Json => {
            let events = if r.events.is_empty() {
                None
            } else {
                Some(J::A(
                    r.events
                        .iter()
                        .map(|e| {
                            Obj::new()
                                .o("type", J::I(e.r#type as i64))
                                .opt("kv", e.kv.as_ref().map(kv_json))
                                .opt("prev_kv", e.prev_kv.as_ref().map(kv_json))
                                .j()
                        })
                        .collect(),
                ))
            };
            let h = hdr_obj(&r.header.unwrap_or_default());
            let mut s = Obj::new().f("Header", h).f("Events", events.unwrap_or(J::S(String::new()))).j().render();
            if r.events.is_empty() {
                s = s.replace("\"Events\":\"\"", "\"Events\":null");
            }
            s.pop();
            s.push_str(&format!(
                ",\"CompactRevision\":{},\"Canceled\":{},\"Created\":{}}}",
                r.compact_revision, r.canceled, false
            ));
            outln(&s);
        }
        Format::Fields => {
            fields_hdr(&r.header);
            for e in &r.events {
                outln(&format!("\"Type\" : {}", event_type(e)));
                if let Some(p) = &e.prev_kv {
                    fields_kv("Prev", p, hex);
                }
                fields_kv("", &e.kv.clone().unwrap_or_default(), hex);
            }
        }
        Format::Protobuf => protobuf(r),
        Format::Table => return unsupported(f),
    }
    Ok(())
}

/// Splits `key [range_end] -- cmd args` and builds the create request.
fn create_req(a: &WatchArgs) -> Res<(WatchCreateRequest, Vec<String>)> {
    let (keys, exec) = (a.args.clone(), a.exec.clone());
    if keys.is_empty() || keys.len() > 2 {
        return bad_args("bad number of arguments");
    }
    if keys.len() == 2 && a.prefix {
        return bad_args("`range_end` and `--prefix` are mutually exclusive");
    }
    let key = keys[0].clone().into_bytes();
    let mut range_end = keys.get(1).map(|s| s.clone().into_bytes()).unwrap_or_default();
    let mut k = key.clone();
    if a.prefix {
        if key.is_empty() {
            k = vec![0];
            range_end = vec![0];
        } else {
            range_end = crate::kv::prefix_end(&key);
        }
    }
    let req = WatchCreateRequest { key: k, range_end, start_revision: a.rev, prev_kv: a.prev_kv, ..Default::default() };
    Ok((req, exec))
}

/// Runs one watch until the server cancels it; prints every response with events.
async fn run_watch(g: &Global, c: &Client, req: WatchCreateRequest, exec: Vec<String>) -> Res {
    let f = g.format()?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let create = WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(req)) };
    let _ = tx.send(create).await;
    let mut w = c.watch();
    let mut stream = match w.watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Ok(s) => s.into_inner(),
        Err(s) => return fail(EXIT_INTERRUPTED, status_msg(&s)),
    };
    loop {
        let r = match stream.message().await {
            Ok(Some(r)) => r,
            _ => break,
        };
        if r.created && r.events.is_empty() && !r.canceled {
            continue;
        }
        if r.canceled {
            let why = if r.compact_revision > 0 {
                "etcdserver: mvcc: required revision has been compacted".to_string()
            } else {
                r.cancel_reason.clone()
            };
            eprintln!("watch was canceled ({why})");
        }
        print(f, g.hex, &r)?;
        if !exec.is_empty() {
            for e in &r.events {
                let kv = e.kv.clone().unwrap_or_default();
                let _ = std::process::Command::new(&exec[0])
                    .args(&exec[1..])
                    .env("ETCD_WATCH_REVISION", r.header.unwrap_or_default().revision.to_string())
                    .env("ETCD_WATCH_EVENT_TYPE", event_type(e))
                    .env("ETCD_WATCH_KEY", String::from_utf8_lossy(&kv.key).as_ref())
                    .env("ETCD_WATCH_VALUE", String::from_utf8_lossy(&kv.value).as_ref())
                    .status();
            }
        }
        if r.canceled {
            break;
        }
    }
    drop(tx);
    Ok(())
}

pub async fn watch(g: &Global, a: WatchArgs) -> Res {
    g.format()?;
    if a.interactive {
        let c = g.connect().await?;
        let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel::<std::io::Result<String>>();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            let mut r = stdin.lock();
            loop {
                let mut l = String::new();
                match r.read_line(&mut l) {
                    Ok(0) => {
                        let _ = lines_tx.send(Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "EOF")));
                        return;
                    }
                    Ok(_) => {
                        if lines_tx.send(Ok(l)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = lines_tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let c = std::sync::Arc::new(c);
        while let Some(line) = lines_rx.recv().await {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    return fail(crate::client::EXIT_INVALID_INPUT, format!("Error reading watch request line: {e}"))
                }
            };
            let l = line.trim();
            let args = crate::kv::argify(l);
            if args.is_empty() || args[0] != "watch" {
                eprintln!("Invalid command {l} (only support watch)");
                continue;
            }
            let parsed = match Line::try_parse_from(&args) {
                Ok(Line::Watch(w)) => create_req(&w),
                Err(e) => {
                    eprintln!("Invalid command: {l} ({})", e.kind());
                    continue;
                }
            };
            match parsed {
                Ok((req, exec)) => {
                    let (g2, c2) = (g.clone(), c.clone());
                    tokio::spawn(async move {
                        let _ = run_watch(&g2, &c2, req, exec).await;
                    });
                }
                Err(e) => eprintln!("Invalid command {l} ({})", e.msg.unwrap_or_default()),
            }
        }
        return Ok(());
    }
    let (req, exec) = create_req(&a)?;
    let c = g.connect().await?;
    run_watch(g, &c, req, exec).await?;
    let _ = EXIT_BAD_ARGS;
    fail(EXIT_INTERRUPTED, "watch is canceled by the server")
}
