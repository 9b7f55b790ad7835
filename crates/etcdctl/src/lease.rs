//! lease grant | revoke | timetolive | list | keep-alive.

use clap::{Args, Subcommand};
use kaname_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
};

use crate::client::{bad_args, fail, status_msg, Format, Global, Res, EXIT_BAD_CONNECTION, EXIT_ERROR};
use crate::out::{go_quote, outln, Obj, J};
use crate::pr::*;

#[derive(Subcommand, Debug)]
pub enum LeaseCmd {
    /// Creates leases
    Grant(Plain),
    /// Revokes leases
    Revoke(Plain),
    /// Get lease information
    Timetolive(TtlArgs),
    /// List all active leases
    List(Plain),
    /// Keeps leases alive (renew)
    KeepAlive(KeepAliveArgs),
}

#[derive(Args, Debug)]
pub struct Plain {
    args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TtlArgs {
    /// Get keys attached to this lease
    #[arg(long)]
    keys: bool,
    args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KeepAliveArgs {
    /// Resets the keep-alive time to its original value and exits immediately
    #[arg(long)]
    once: bool,
    args: Vec<String>,
}

fn lease_id(arg: &str) -> Res<i64> {
    i64::from_str_radix(arg, 16).or_else(|_| {
        bad_args(format!(
            "bad lease ID arg (strconv.ParseInt: parsing {}: invalid syntax), expecting ID in Hex",
            go_quote(arg.as_bytes())
        ))
    })
}

/// A failed RPC as `failed to <what> (<err>)`.
fn failed<T>(what: &str, e: crate::client::Exit) -> Res<T> {
    fail(EXIT_ERROR, format!("failed to {what} ({})", e.msg.unwrap_or_default()))
}

fn keepalive_print(f: Format, r: &LeaseKeepAliveResponse) -> Res {
    match f {
        Format::Simple => outln(&format!("lease {:016x} keepalived with TTL({})", r.id, r.ttl)),
        Format::Json => print_json(
            hdr_fields(Obj::new(), &r.header.unwrap_or_default()).f("ID", J::I(r.id)).f("TTL", J::I(r.ttl)).j(),
        ),
        Format::Fields => {
            fields_hdr(&r.header);
            outln(&format!("\"ID\" : {}", r.id));
            outln(&format!("\"TTL\" : {}", r.ttl));
        }
        Format::Protobuf => protobuf(&r.header.unwrap_or_default()),
        Format::Table => return unsupported(f),
    }
    Ok(())
}

pub async fn lease(g: &Global, cmd: LeaseCmd) -> Res {
    let f = g.format()?;
    match cmd {
        LeaseCmd::Grant(a) => {
            if a.args.len() != 1 {
                return bad_args("lease grant command needs TTL argument");
            }
            let ttl: i64 = a.args[0].parse().or_else(|_| {
                bad_args(format!(
                    "bad TTL (strconv.ParseInt: parsing {}: invalid syntax)",
                    go_quote(a.args[0].as_bytes())
                ))
            })?;
            let c = g.connect().await?;
            let r = match g.timed(c.lease().lease_grant(LeaseGrantRequest { ttl, id: 0 })).await {
                Ok(r) => r,
                Err(e) => return failed("grant lease", e),
            };
            match f {
                Format::Simple => outln(&format!("lease {:016x} granted with TTL({}s)", r.id, r.ttl)),
                Format::Json => print_json(
                    hdr_fields(Obj::new(), &r.header.unwrap_or_default())
                        .f("ID", J::I(r.id))
                        .f("TTL", J::I(r.ttl))
                        .f("Error", J::S(r.error.clone()))
                        .j(),
                ),
                Format::Fields => {
                    fields_hdr(&r.header);
                    outln(&format!("\"ID\" : {}", r.id));
                    outln(&format!("\"TTL\" : {}", r.ttl));
                }
                Format::Protobuf => protobuf(&r.header.unwrap_or_default()),
                Format::Table => return unsupported(f),
            }
        }
        LeaseCmd::Revoke(a) => {
            if a.args.len() != 1 {
                return bad_args("lease revoke command needs 1 argument");
            }
            let id = lease_id(&a.args[0])?;
            let c = g.connect().await?;
            let r = match g.timed(c.lease().lease_revoke(LeaseRevokeRequest { id })).await {
                Ok(r) => r,
                Err(e) => return failed("revoke lease", e),
            };
            match f {
                Format::Simple => outln(&format!("lease {id:016x} revoked")),
                Format::Json => print_json(Obj::new().opt("header", hdr_json(&r.header)).j()),
                Format::Fields => fields_hdr(&r.header),
                Format::Protobuf => protobuf(&r),
                Format::Table => return unsupported(f),
            }
        }
        LeaseCmd::Timetolive(a) => {
            if a.args.len() != 1 {
                return bad_args("lease timetolive command needs lease ID as argument");
            }
            let id = lease_id(&a.args[0])?;
            let c = g.connect().await?;
            let r = match g.timed(c.lease().lease_time_to_live(LeaseTimeToLiveRequest { id, keys: a.keys })).await {
                Ok(r) => r,
                Err(e) => return failed("get TimeToLive of lease", e),
            };
            match f {
                Format::Simple => {
                    if r.granted_ttl == 0 && r.ttl == -1 {
                        outln(&format!("lease {:016x} already expired", r.id));
                    } else {
                        let mut txt =
                            format!("lease {:016x} granted with TTL({}s), remaining({}s)", r.id, r.granted_ttl, r.ttl);
                        if a.keys {
                            let ks: Vec<String> =
                                r.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
                            txt.push_str(&format!(", attached keys([{}])", ks.join(" ")));
                        }
                        outln(&txt);
                    }
                }
                Format::Json => {
                    let keys = if r.keys.is_empty() {
                        J::S(String::new())
                    } else {
                        J::A(r.keys.iter().map(|k| J::Bytes(k.clone())).collect())
                    };
                    let mut s = hdr_fields(Obj::new(), &r.header.unwrap_or_default())
                        .f("id", J::I(r.id))
                        .f("ttl", J::I(r.ttl))
                        .f("granted-ttl", J::I(r.granted_ttl))
                        .f("keys", keys)
                        .j()
                        .render();
                    if r.keys.is_empty() {
                        s = s.replace("\"keys\":\"\"", "\"keys\":null");
                    }
                    outln(&s);
                }
                Format::Fields => {
                    fields_hdr(&r.header);
                    outln(&format!("\"ID\" : {}", r.id));
                    outln(&format!("\"TTL\" : {}", r.ttl));
                    outln(&format!("\"GrantedTTL\" : {}", r.granted_ttl));
                    for k in &r.keys {
                        outln(&format!("\"Key\" : {}", go_quote(k)));
                    }
                }
                Format::Protobuf => protobuf(&r.header.unwrap_or_default()),
                Format::Table => return unsupported(f),
            }
        }
        LeaseCmd::List(_) => {
            let c = g.connect().await?;
            let r = match g.timed(c.lease().lease_leases(LeaseLeasesRequest {})).await {
                Ok(r) => r,
                Err(e) => return failed("list leases", e),
            };
            match f {
                Format::Simple => {
                    outln(&format!("found {} leases", r.leases.len()));
                    for l in &r.leases {
                        outln(&format!("{:016x}", l.id));
                    }
                }
                Format::Json => print_json(
                    hdr_fields(Obj::new(), &r.header.unwrap_or_default())
                        .f("leases", J::A(r.leases.iter().map(|l| Obj::new().f("id", J::I(l.id)).j()).collect()))
                        .j(),
                ),
                Format::Fields => {
                    fields_hdr(&r.header);
                    for l in &r.leases {
                        outln(&format!("\"ID\" : {}", l.id));
                    }
                }
                Format::Protobuf => protobuf(&r.header.unwrap_or_default()),
                Format::Table => return unsupported(f),
            }
        }
        LeaseCmd::KeepAlive(a) => {
            if a.args.len() != 1 {
                return bad_args("lease keep-alive command needs lease ID as argument");
            }
            let id = lease_id(&a.args[0])?;
            let c = g.connect().await?;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let _ = tx.send(LeaseKeepAliveRequest { id }).await;
            let mut stream = match c.lease().lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
                Ok(s) => s.into_inner(),
                Err(s) => return fail(EXIT_BAD_CONNECTION, status_msg(&s)),
            };
            loop {
                let r = match stream.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(s) => return fail(EXIT_BAD_CONNECTION, status_msg(&s)),
                };
                if r.ttl <= 0 {
                    if a.once {
                        return fail(EXIT_BAD_CONNECTION, "etcdserver: requested lease not found");
                    }
                    break;
                }
                keepalive_print(f, &r)?;
                if a.once {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis((r.ttl as u64 * 1000 / 3).max(500))).await;
                if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                    break;
                }
            }
            if f == Format::Simple {
                outln(&format!("lease {id:016x} expired or revoked."));
            }
        }
    }
    Ok(())
}
