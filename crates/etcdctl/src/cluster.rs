//! endpoint, member, alarm, defrag, snapshot and move-leader: the cluster and maintenance
//! commands.

use std::time::Instant;

use clap::{Args, Subcommand};
use kaname_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, DefragmentRequest, HashKvRequest,
    HashKvResponse, Member, MemberAddRequest, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberRemoveRequest, MemberUpdateRequest, MoveLeaderRequest, RangeRequest, ResponseHeader, SnapshotRequest,
    StatusRequest, StatusResponse,
};

use crate::client::{bad_args, exit_silent, fail, Format, Global, Res, EXIT_ERROR};
use crate::out::{go_quote, humanize_bytes, outln, table, Obj, J};
use crate::pr::*;

#[derive(Args, Debug)]
pub struct ClusterFlag {
    /// use all endpoints from the cluster member list
    #[arg(long)]
    cluster: bool,
}

#[derive(Subcommand, Debug)]
pub enum EndpointCmd {
    /// Checks the healthiness of endpoints specified in `--endpoints` flag
    Health(ClusterFlag),
    /// Prints out the status of endpoints specified in `--endpoints` flag
    Status(ClusterFlag),
    /// Prints the KV history hash for each endpoint in --endpoints
    Hashkv(HashKvArgs),
}

#[derive(Args, Debug)]
pub struct HashKvArgs {
    /// use all endpoints from the cluster member list
    #[arg(long)]
    cluster: bool,
    /// the revision to hash (default: latest)
    #[arg(long, default_value_t = 0)]
    rev: i64,
}

#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// Adds a member into the cluster
    Add(MemberArgs),
    /// Removes a member from the cluster
    Remove(MemberArgs),
    /// Updates a member in the cluster
    Update(MemberArgs),
    /// Lists all members in the cluster
    List(MemberArgs),
    /// Promotes a non-voting member in the cluster
    Promote(MemberArgs),
}

#[derive(Args, Debug)]
pub struct MemberArgs {
    /// comma separated peer URLs for the new member.
    #[arg(long, default_value = "")]
    peer_urls: String,
    /// indicates if the new member is raft learner
    #[arg(long)]
    learner: bool,
    args: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum AlarmCmd {
    /// Disarms all alarms
    Disarm,
    /// Lists all alarms
    List,
}

#[derive(Args, Debug)]
pub struct DefragArgs {
    /// defragment all members of the cluster
    #[arg(long)]
    cluster: bool,
    /// offline defragmentation of the data directory (not supported)
    #[arg(long, default_value = "")]
    data_dir: String,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Stores an etcd node backend snapshot to a given file
    Save { args: Vec<String> },
    /// Gets backend snapshot status of a given file
    Status { args: Vec<String> },
    /// Restores an etcd member snapshot to an etcd directory
    Restore(RestoreRequest),
}

/// `snapshot restore`'s arguments, with etcdctl 3.4's flags and defaults.
#[derive(Args, Clone, Debug)]
pub struct RestoreRequest {
    /// The snapshot file.
    pub snapshot: Option<String>,
    /// Path to the data directory (default: <name>.etcd)
    #[arg(long, default_value = "")]
    pub data_dir: String,
    /// Path to the WAL directory (kaname keeps its log in the data dir; must be empty)
    #[arg(long, default_value = "")]
    pub wal_dir: String,
    /// Initial cluster configuration for restore bootstrap
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,
    /// Initial cluster token for the etcd cluster during restore bootstrap
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    pub initial_advertise_peer_urls: Vec<String>,
    /// Human-readable name for this member
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Ignore snapshot integrity hash value (required if copied from data directory)
    #[arg(long)]
    pub skip_hash_check: bool,
}

/// Builds a member's data dir from a snapshot. The store provides it (the data dir format is
/// the server's business, not the client's); `kaname etcdctl` installs it at start.
pub type Restorer = fn(&RestoreRequest) -> Result<(), String>;

static RESTORER: std::sync::OnceLock<Restorer> = std::sync::OnceLock::new();

/// Installs the implementation of `snapshot restore`.
pub fn set_restorer(f: Restorer) {
    let _ = RESTORER.set(f);
}

#[derive(Args, Debug)]
pub struct MoveLeaderArgs {
    args: Vec<String>,
}

/// The endpoints to act on: `--endpoints`, or with --cluster every member's client URLs.
async fn endpoints(g: &Global, cluster: bool) -> Res<Vec<String>> {
    if !cluster {
        return Ok(g.endpoints.clone());
    }
    let mut g2 = g.clone();
    g2.user = None;
    let c = g2.connect().await?;
    let r = match g.timed(c.cluster().member_list(MemberListRequest { linearizable: false })).await {
        Ok(r) => r,
        Err(e) => {
            return fail(
                EXIT_ERROR,
                format!("failed to fetch endpoints from etcd cluster member list: {}", e.msg.unwrap_or_default()),
            )
        }
    };
    Ok(r.members.iter().flat_map(|m| m.client_ur_ls.clone()).collect())
}

fn hdr_or_default(h: &Option<ResponseHeader>) -> ResponseHeader {
    (*h).unwrap_or_default()
}

pub async fn endpoint(g: &Global, cmd: EndpointCmd) -> Res {
    let f = g.format()?;
    match cmd {
        EndpointCmd::Health(a) => {
            let eps = endpoints(g, a.cluster).await?;
            let mut tasks = Vec::new();
            for ep in eps {
                let g = g.clone();
                tasks.push(tokio::spawn(async move {
                    let c = match g.connect_to(std::slice::from_ref(&ep)).await {
                        Ok(c) => c,
                        Err(e) => return (ep, false, String::new(), e.msg.unwrap_or_default()),
                    };
                    let st = Instant::now();
                    let r = g.timed(c.kv().range(RangeRequest { key: b"health".to_vec(), ..Default::default() })).await;
                    let took = kaname_goflags::duration::format(st.elapsed());
                    let mut err = match r {
                        Ok(_) => String::new(),
                        Err(e) if e.msg.as_deref() == Some("etcdserver: permission denied") => String::new(),
                        Err(e) => e.msg.unwrap_or_default(),
                    };
                    if err.is_empty() {
                        match g.timed(c.maintenance().alarm(AlarmRequest::default())).await {
                            Ok(r) if !r.alarms.is_empty() => {
                                err = "Active Alarm(s): ".into();
                                for a in &r.alarms {
                                    err.push_str(match a.alarm {
                                        1 => "NOSPACE ",
                                        2 => "CORRUPT ",
                                        _ => "UNKNOWN ",
                                    });
                                }
                            }
                            Ok(_) => {}
                            Err(_) => err = "Unable to fetch the alarm list".into(),
                        }
                    }
                    (ep, err.is_empty(), took, err)
                }));
            }
            let mut list = Vec::new();
            for t in tasks {
                if let Ok(h) = t.await {
                    list.push(h);
                }
            }
            match f {
                Format::Simple => {
                    for (ep, _, took, err) in &list {
                        // etcdctl 3.4 prints both verdicts on stderr.
                        if err.is_empty() {
                            eprintln!("{ep} is healthy: successfully committed proposal: took = {took}");
                        } else {
                            eprintln!("{ep} is unhealthy: failed to commit proposal: {err}");
                        }
                    }
                }
                Format::Json => print_json(J::A(
                    list.iter()
                        .map(|(ep, h, took, err)| {
                            Obj::new()
                                .f("endpoint", J::S(ep.clone()))
                                .f("health", J::B(*h))
                                .f("took", J::S(took.clone()))
                                .o("error", J::S(err.clone()))
                                .j()
                        })
                        .collect(),
                )),
                Format::Fields => {
                    for (ep, h, took, err) in &list {
                        outln(&format!("\"Endpoint\" : {}", go_quote(ep.as_bytes())));
                        outln(&format!("\"Health\" : {h}"));
                        outln(&format!("\"Took\" : {took}"));
                        outln(&format!("\"Error\" : {err}"));
                        outln("");
                    }
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|(ep, h, took, err)| vec![ep.clone(), h.to_string(), took.clone(), err.clone()])
                        .collect();
                    table(&["endpoint", "health", "took", "error"], &rows);
                }
                Format::Protobuf => return unsupported(f),
            }
            if list.iter().any(|h| !h.3.is_empty()) {
                return fail(EXIT_ERROR, "unhealthy cluster");
            }
            Ok(())
        }
        EndpointCmd::Status(a) => {
            let eps = endpoints(g, a.cluster).await?;
            let mut list: Vec<(String, StatusResponse)> = Vec::new();
            let mut failed = false;
            for ep in eps {
                let r = match g.connect_to(std::slice::from_ref(&ep)).await {
                    Ok(c) => g.timed(c.maintenance().status(StatusRequest {})).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(r) => list.push((ep, r)),
                    Err(e) => {
                        failed = true;
                        eprintln!("Failed to get the status of endpoint {ep} ({})", e.msg.unwrap_or_default());
                    }
                }
            }
            print_status(f, &list)?;
            if failed {
                return exit_silent(EXIT_ERROR);
            }
            Ok(())
        }
        EndpointCmd::Hashkv(a) => {
            let eps = endpoints(g, a.cluster).await?;
            let mut list: Vec<(String, HashKvResponse)> = Vec::new();
            // etcdctl prints each failure, the hashes it got, then the last error.
            let mut failed = None;
            for ep in eps {
                let r = match g.connect_to(std::slice::from_ref(&ep)).await {
                    Ok(c) => g.timed(c.maintenance().hash_kv(HashKvRequest { revision: a.rev })).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(r) => list.push((ep, r)),
                    Err(e) => {
                        let msg = e.msg.unwrap_or_default();
                        eprintln!("Failed to get the hash of endpoint {ep} ({msg})");
                        failed = Some(msg);
                    }
                }
            }
            match f {
                Format::Simple => list.iter().for_each(|(ep, r)| outln(&format!("{ep}, {}", r.hash))),
                Format::Json => print_json(J::A(
                    list.iter()
                        .map(|(ep, r)| {
                            let h = Obj::new()
                                .opt("header", hdr_json(&r.header))
                                .o("hash", J::U(r.hash as u64))
                                .o("compact_revision", J::I(r.compact_revision))
                                .j();
                            Obj::new().f("Endpoint", J::S(ep.clone())).f("HashKV", h).j()
                        })
                        .collect(),
                )),
                Format::Fields => {
                    for (ep, r) in &list {
                        fields_hdr(&r.header);
                        outln(&format!("\"Endpoint\" : {}", go_quote(ep.as_bytes())));
                        outln(&format!("\"Hash\" : {}", r.hash));
                        outln("");
                    }
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> =
                        list.iter().map(|(ep, r)| vec![ep.clone(), r.hash.to_string()]).collect();
                    table(&["endpoint", "hash"], &rows);
                }
                Format::Protobuf => return unsupported(f),
            }
            match failed {
                Some(msg) => fail(EXIT_ERROR, msg),
                None => Ok(()),
            }
        }
    }
}

fn print_status(f: Format, list: &[(String, StatusResponse)]) -> Res {
    let row = |ep: &String, r: &StatusResponse| {
        let h = hdr_or_default(&r.header);
        vec![
            ep.clone(),
            format!("{:x}", h.member_id),
            r.version.clone(),
            humanize_bytes(r.db_size as u64),
            (r.leader == h.member_id).to_string(),
            r.is_learner.to_string(),
            r.raft_term.to_string(),
            r.raft_index.to_string(),
            r.raft_applied_index.to_string(),
            r.errors.join(", "),
        ]
    };
    match f {
        Format::Simple => list.iter().for_each(|(ep, r)| outln(&row(ep, r).join(", "))),
        Format::Table => {
            let rows: Vec<Vec<String>> = list.iter().map(|(ep, r)| row(ep, r)).collect();
            table(
                &[
                    "endpoint",
                    "ID",
                    "version",
                    "db size",
                    "is leader",
                    "is learner",
                    "raft term",
                    "raft index",
                    "raft applied index",
                    "errors",
                ],
                &rows,
            );
        }
        Format::Json => print_json(J::A(
            list.iter()
                .map(|(ep, r)| {
                    let s = Obj::new()
                        .opt("header", hdr_json(&r.header))
                        .o("version", J::S(r.version.clone()))
                        .o("dbSize", J::I(r.db_size))
                        .o("leader", J::U(r.leader))
                        .o("raftIndex", J::U(r.raft_index))
                        .o("raftTerm", J::U(r.raft_term))
                        .o("raftAppliedIndex", J::U(r.raft_applied_index))
                        .o("errors", J::A(r.errors.iter().map(|e| J::S(e.clone())).collect()))
                        .o("dbSizeInUse", J::I(r.db_size_in_use))
                        .o("isLearner", J::B(r.is_learner))
                        .j();
                    Obj::new().f("Endpoint", J::S(ep.clone())).f("Status", s).j()
                })
                .collect(),
        )),
        Format::Fields => {
            for (ep, r) in list {
                fields_hdr(&r.header);
                outln(&format!("\"Version\" : {}", go_quote(r.version.as_bytes())));
                outln(&format!("\"DBSize\" : {}", r.db_size));
                outln(&format!("\"Leader\" : {}", r.leader));
                outln(&format!("\"IsLearner\" : {}", r.is_learner));
                outln(&format!("\"RaftIndex\" : {}", r.raft_index));
                outln(&format!("\"RaftTerm\" : {}", r.raft_term));
                outln(&format!("\"RaftAppliedIndex\" : {}", r.raft_applied_index));
                outln(&format!("\"Errors\" : [{}]", r.errors.join(" ")));
                outln(&format!("\"Endpoint\" : {}", go_quote(ep.as_bytes())));
                outln("");
            }
        }
        Format::Protobuf => return unsupported(f),
    }
    Ok(())
}

fn member_json(m: &Member) -> J {
    Obj::new()
        .o("ID", J::U(m.id))
        .o("name", J::S(m.name.clone()))
        .o("peerURLs", J::A(m.peer_ur_ls.iter().map(|u| J::S(u.clone())).collect()))
        .o("clientURLs", J::A(m.client_ur_ls.iter().map(|u| J::S(u.clone())).collect()))
        .o("isLearner", J::B(m.is_learner))
        .j()
}

fn members_json(ms: &[Member]) -> J {
    J::A(ms.iter().map(member_json).collect())
}

fn print_member_list(f: Format, r: &MemberListResponse) -> Res {
    let rows: Vec<Vec<String>> = r
        .members
        .iter()
        .map(|m| {
            vec![
                format!("{:x}", m.id),
                if m.name.is_empty() { "unstarted" } else { "started" }.to_string(),
                m.name.clone(),
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect();
    match f {
        Format::Simple => rows.iter().for_each(|r| outln(&r.join(", "))),
        Format::Table => table(&["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"], &rows),
        Format::Json => {
            let s = Obj::new().opt("header", hdr_json(&r.header)).o("members", members_json(&r.members)).j().render();
            outln(&s);
        }
        Format::Fields => {
            fields_hdr(&r.header);
            for m in &r.members {
                outln(&format!("\"ID\" : {}", m.id));
                outln(&format!("\"Name\" : {}", go_quote(m.name.as_bytes())));
                for u in &m.peer_ur_ls {
                    outln(&format!("\"PeerURL\" : {}", go_quote(u.as_bytes())));
                }
                for u in &m.client_ur_ls {
                    outln(&format!("\"ClientURL\" : {}", go_quote(u.as_bytes())));
                }
                outln(&format!("\"IsLearner\" : {}", m.is_learner));
                outln("");
            }
        }
        Format::Protobuf => protobuf(r),
    }
    Ok(())
}

fn member_id(args: &[String]) -> Res<u64> {
    if args.len() != 1 {
        return bad_args("member ID is not provided");
    }
    u64::from_str_radix(&args[0], 16).or_else(|_| {
        bad_args(format!(
            "bad member ID arg (strconv.ParseUint: parsing {}: invalid syntax), expecting ID in Hex",
            go_quote(args[0].as_bytes())
        ))
    })
}

/// json (`{"header":...,"members":[...]}`) or unsupported, for remove/update/promote.
fn members_changed(f: Format, h: &Option<ResponseHeader>, ms: &[Member], simple: String) -> Res {
    match f {
        Format::Simple => outln(&simple),
        Format::Json => print_json(Obj::new().opt("header", hdr_json(h)).o("members", members_json(ms)).j()),
        _ => return unsupported(f),
    }
    Ok(())
}

pub async fn member(g: &Global, cmd: MemberCmd) -> Res {
    let f = g.format()?;
    match cmd {
        MemberCmd::List(_) => {
            let c = g.connect().await?;
            let r = g.timed(c.cluster().member_list(MemberListRequest { linearizable: false })).await?;
            print_member_list(f, &r)
        }
        MemberCmd::Add(a) => {
            if a.args.is_empty() {
                return bad_args("member name not provided");
            }
            if a.args.len() > 1 {
                let mut ev = "too many arguments".to_string();
                for s in &a.args {
                    if s.to_lowercase().starts_with("http") {
                        ev.push_str(&format!(", did you mean --peer-urls={s}"));
                    }
                }
                return bad_args(ev);
            }
            if a.peer_urls.is_empty() {
                return bad_args("member peer urls not provided");
            }
            let urls: Vec<String> = a.peer_urls.split(',').map(String::from).collect();
            let c = g.connect().await?;
            let r =
                g.timed(c.cluster().member_add(MemberAddRequest { peer_ur_ls: urls, is_learner: a.learner })).await?;
            let m = r.member.clone().unwrap_or_default();
            let h = hdr_or_default(&r.header);
            match f {
                Format::Simple => {
                    let as_learner = if m.is_learner { " as learner " } else { " " };
                    outln(&format!("Member {:16x} added{as_learner}to cluster {:16x}", m.id, h.cluster_id));
                    let list = g.timed(c.cluster().member_list(MemberListRequest { linearizable: false })).await?;
                    let mut conf = Vec::new();
                    for mm in &list.members {
                        for u in &mm.peer_ur_ls {
                            let n = if mm.id == m.id { a.args[0].clone() } else { mm.name.clone() };
                            conf.push(format!("{n}={u}"));
                        }
                    }
                    outln("");
                    outln(&format!("ETCD_NAME={}", go_quote(a.args[0].as_bytes())));
                    outln(&format!("ETCD_INITIAL_CLUSTER={}", go_quote(conf.join(",").as_bytes())));
                    outln(&format!("ETCD_INITIAL_ADVERTISE_PEER_URLS={}", go_quote(a.peer_urls.as_bytes())));
                    outln("ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
                }
                Format::Json => print_json(
                    Obj::new()
                        .opt("header", hdr_json(&r.header))
                        .opt("member", r.member.as_ref().map(member_json))
                        .o("members", members_json(&r.members))
                        .j(),
                ),
                Format::Protobuf => protobuf(&r),
                _ => return unsupported(f),
            }
            Ok(())
        }
        MemberCmd::Remove(a) => {
            let id = member_id(&a.args)?;
            let c = g.connect().await?;
            let r = g.timed(c.cluster().member_remove(MemberRemoveRequest { id })).await?;
            let cid = hdr_or_default(&r.header).cluster_id;
            members_changed(f, &r.header, &r.members, format!("Member {id:16x} removed from cluster {cid:16x}"))
        }
        MemberCmd::Update(a) => {
            let id = member_id(&a.args)?;
            if a.peer_urls.is_empty() {
                return bad_args("member peer urls not provided");
            }
            let urls: Vec<String> = a.peer_urls.split(',').map(String::from).collect();
            let c = g.connect().await?;
            let r = g.timed(c.cluster().member_update(MemberUpdateRequest { id, peer_ur_ls: urls })).await?;
            let cid = hdr_or_default(&r.header).cluster_id;
            members_changed(f, &r.header, &r.members, format!("Member {id:16x} updated in cluster {cid:16x}"))
        }
        MemberCmd::Promote(a) => {
            let id = member_id(&a.args)?;
            let c = g.connect().await?;
            let r = g.timed(c.cluster().member_promote(MemberPromoteRequest { id })).await?;
            let cid = hdr_or_default(&r.header).cluster_id;
            members_changed(f, &r.header, &r.members, format!("Member {id:16x} promoted in cluster {cid:16x}"))
        }
    }
}

fn alarm_name(a: i32) -> &'static str {
    match a {
        1 => "NOSPACE",
        2 => "CORRUPT",
        _ => "NONE",
    }
}

fn print_alarms(f: Format, r: &AlarmResponse) -> Res {
    match f {
        Format::Simple => {
            for a in &r.alarms {
                outln(&format!("memberID:{} alarm:{} ", a.member_id, alarm_name(a.alarm)));
            }
        }
        Format::Json => print_json(
            Obj::new()
                .opt("header", hdr_json(&r.header))
                .o(
                    "alarms",
                    J::A(
                        r.alarms
                            .iter()
                            .map(|a| Obj::new().o("memberID", J::U(a.member_id)).o("alarm", J::I(a.alarm as i64)).j())
                            .collect(),
                    ),
                )
                .j(),
        ),
        Format::Fields => {
            if r.header.is_none() {
                // etcdctl dereferences the missing header and panics (exit 2).
                eprintln!("panic: runtime error: invalid memory address or nil pointer dereference");
                return exit_silent(2);
            }
            fields_hdr(&r.header);
            for a in &r.alarms {
                outln(&format!("\"MemberID\" : {}", a.member_id));
                outln(&format!("\"AlarmType\" : {}", alarm_name(a.alarm)));
                outln("");
            }
        }
        Format::Protobuf => protobuf(r),
        Format::Table => return unsupported(f),
    }
    Ok(())
}

pub async fn alarm(g: &Global, cmd: AlarmCmd) -> Res {
    let f = g.format()?;
    let c = g.connect().await?;
    let list = AlarmRequest { action: AlarmAction::Get as i32, member_id: 0, alarm: 0 };
    let r = g.timed(c.maintenance().alarm(list)).await?;
    match cmd {
        AlarmCmd::List => print_alarms(f, &r),
        AlarmCmd::Disarm => {
            let mut ret = AlarmResponse::default();
            for a in &r.alarms {
                let AlarmMember { member_id, alarm } = *a;
                let req = AlarmRequest { action: AlarmAction::Deactivate as i32, member_id, alarm };
                let d = g.timed(c.maintenance().alarm(req)).await?;
                ret.alarms.extend(d.alarms);
            }
            print_alarms(f, &ret)
        }
    }
}

pub async fn defrag(g: &Global, a: DefragArgs) -> Res {
    if !a.data_dir.is_empty() {
        return fail(EXIT_ERROR, "offline defragmentation (--data-dir) is not supported by kaname etcdctl");
    }
    let mut failures = 0;
    for ep in endpoints(g, a.cluster).await? {
        let r = match g.connect_to(std::slice::from_ref(&ep)).await {
            Ok(c) => g.timed(c.maintenance().defragment(DefragmentRequest {})).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(_) => outln(&format!("Finished defragmenting etcd member[{ep}]")),
            Err(e) => {
                eprintln!("Failed to defragment etcd member[{ep}] ({})", e.msg.unwrap_or_default());
                failures += 1;
            }
        }
    }
    if failures > 0 {
        return exit_silent(EXIT_ERROR);
    }
    Ok(())
}

pub async fn snapshot(g: &Global, cmd: SnapshotCmd) -> Res {
    match cmd {
        SnapshotCmd::Save { args } => {
            if args.len() != 1 {
                return bad_args("snapshot save expects one argument");
            }
            if g.endpoints.len() != 1 {
                return bad_args(format!(
                    "snapshot must be requested to one selected node, not multiple [{}]",
                    g.endpoints.join(" ")
                ));
            }
            let path = &args[0];
            let part = format!("{path}.part");
            let c = g.connect().await?;
            let mut stream = match c.maintenance().snapshot(SnapshotRequest {}).await {
                Ok(s) => s.into_inner(),
                Err(s) => return crate::client::grpc(s),
            };
            let mut data = Vec::new();
            loop {
                match stream.message().await {
                    Ok(Some(m)) => data.extend_from_slice(&m.blob),
                    Ok(None) => break,
                    Err(s) => return crate::client::grpc(s),
                }
            }
            std::fs::write(&part, &data)
                .and_then(|_| std::fs::rename(&part, path))
                .or_else(|e| fail(EXIT_ERROR, e.to_string()))?;
            outln(&format!("Snapshot saved at {path}"));
            Ok(())
        }
        SnapshotCmd::Status { args } => {
            if args.len() != 1 {
                return bad_args("snapshot status requires exactly one argument");
            }
            let data = std::fs::read(&args[0]).or_else(|e| fail(EXIT_ERROR, e.to_string()))?;
            // bbolt's meta page: 16-byte page header, then the magic 0xED0CDAED.
            let magic = data.get(16..20).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            if magic != Some(0xED0C_DAED) {
                return fail(EXIT_ERROR, "invalid database");
            }
            fail(EXIT_ERROR, "snapshot status of bbolt files is not supported by kaname etcdctl yet")
        }
        SnapshotCmd::Restore(mut req) => {
            let Some(_) = &req.snapshot else {
                return bad_args("snapshot restore requires exactly one argument");
            };
            if !req.wal_dir.is_empty() {
                return fail(EXIT_ERROR, "--wal-dir is not supported: kaname keeps its log in the data dir");
            }
            if req.data_dir.is_empty() {
                req.data_dir = format!("{}.etcd", req.name);
            }
            let Some(restore) = RESTORER.get() else {
                return fail(EXIT_ERROR, "snapshot restore is not available in this build");
            };
            restore(&req).or_else(|e| fail(EXIT_ERROR, e))
        }
    }
}

pub async fn move_leader(g: &Global, a: MoveLeaderArgs) -> Res {
    if a.args.len() != 1 {
        return bad_args("move-leader command needs 1 argument");
    }
    let target = u64::from_str_radix(&a.args[0], 16).or_else(|_| {
        bad_args(format!("strconv.ParseUint: parsing {}: invalid syntax", go_quote(a.args[0].as_bytes())))
    })?;
    let f = g.format()?;
    let mut leader = None;
    for ep in &g.endpoints {
        let c = g.connect_to(std::slice::from_ref(ep)).await?;
        let s = g.timed(c.maintenance().status(StatusRequest {})).await?;
        if s.header.as_ref().is_some_and(|h| h.member_id == s.leader) {
            leader = Some((c, s.leader));
            break;
        }
    }
    let Some((c, leader_id)) = leader else {
        return bad_args(format!("no leader endpoint given at [{}]", g.endpoints.join(" ")));
    };
    let r = g.timed(c.maintenance().move_leader(MoveLeaderRequest { target_id: target })).await?;
    match f {
        Format::Simple => outln(&format!("Leadership transferred from {leader_id:x} to {target:x}")),
        Format::Json => print_json(Obj::new().opt("header", hdr_json(&r.header)).j()),
        Format::Protobuf => protobuf(&r),
        _ => return unsupported(f),
    }
    Ok(())
}
