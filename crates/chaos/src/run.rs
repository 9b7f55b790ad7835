//! One run: start a cluster, run the clients while the seeded schedule injects faults, heal,
//! wait for convergence, then check the history and the final state.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use kaname_proto::etcdserverpb::kv_client::KvClient;
use kaname_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use kaname_proto::etcdserverpb::{HashKvRequest, RangeRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::{self, Budget, Input, Operation, Output};
use crate::cluster::{Cluster, Flavor};
use crate::lease::{self, LeaseStops, Leases};
use crate::schedule::{self, FaultKind, Step};
use crate::watch;
use crate::workload::{self, prefix_end, Endpoints, Recorder, WorkloadConfig, KEY_PREFIX, SET_PREFIX};

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub flavor: Flavor,
    pub members: usize,
    pub seed: u64,
    pub duration: Duration,
    pub clients: usize,
    /// Clients that grant leases, attach keys and keep alive, revoke or let expire them.
    pub lease_clients: usize,
    pub faults: Vec<FaultKind>,
    pub election_timeout_ms: u64,
    pub workload: WorkloadConfig,
    /// Parent of the run directory (member data and logs, history.json).
    pub dir: PathBuf,
    pub keep: bool,
}

/// What a run found.
pub struct RunReport {
    pub seed: u64,
    pub flavor: &'static str,
    pub ops: usize,
    pub ok: usize,
    pub unknown: usize,
    pub faults: Vec<String>,
    /// Events in the committed history that every watcher had to see (0: not checked).
    pub watched_events: usize,
    /// What the lease check found, when there were lease clients.
    pub leases: Option<String>,
    /// Client errors by kind, with counts.
    pub errors: Vec<(String, usize)>,
    /// Empty when every check passed.
    pub violations: Vec<String>,
    pub dir: PathBuf,
    pub elapsed: Duration,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} seed {}: {} in {:.1}s; {} client ops ({} ok, {} failed/unknown), {} faults",
            self.flavor,
            self.seed,
            if self.passed() { "PASS" } else { "FAIL" },
            self.elapsed.as_secs_f64(),
            self.ops,
            self.ok,
            self.unknown,
            self.faults.iter().filter(|l| l.starts_with('[') && !l.contains("healed")).count()
        )?;
        if self.watched_events > 0 {
            writeln!(f, "  each member's watcher saw all {} committed events, in order, once", self.watched_events)?;
        }
        if let Some(l) = &self.leases {
            writeln!(f, "  {l}")?;
        }
        writeln!(f, "fault schedule (as executed):")?;
        for l in &self.faults {
            writeln!(f, "  {l}")?;
        }
        for (e, n) in &self.errors {
            writeln!(f, "  client errors: {n} x {e}")?;
        }
        if !self.passed() {
            for v in &self.violations {
                writeln!(f, "VIOLATION: {v}")?;
            }
            writeln!(f, "member logs and history.json kept in {}", self.dir.display())?;
            writeln!(f, "replay: kaname chaos --seed {} (same flags)", self.seed)?;
        }
        Ok(())
    }
}

/// A watcher task on one member, with its own stop: a removed member's watcher ends early.
struct Watcher {
    name: String,
    stop: Arc<AtomicBool>,
    until: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<Vec<watch::Event>>,
    /// Its member was removed: what it saw must be a prefix of the committed events.
    retired: bool,
}

impl Watcher {
    fn start(cluster: &Cluster, i: usize) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let until = Arc::new(AtomicI64::new(i64::MAX));
        let task = tokio::spawn(watch::watcher(cluster.channel(i), stop.clone(), until.clone()));
        Watcher { name: cluster.members[i].name.clone(), stop, until, task, retired: false }
    }
}

/// What the clients and watchers use that membership changes update.
struct Observers {
    endpoints: Endpoints,
    watchers: Vec<Watcher>,
}

pub async fn run_one(cfg: &RunConfig) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    std::fs::create_dir_all(&cfg.dir)?;
    let root = tempfile::Builder::new()
        .prefix(&format!("kaname-chaos-{}-seed{}-", cfg.flavor.label(), cfg.seed))
        .tempdir_in(&cfg.dir)?;
    let faults = FaultKind::expand(&cfg.faults);
    let namespaces = faults.contains(&FaultKind::Partition);
    let clock = faults.contains(&FaultKind::Clock);
    let mut cluster =
        Cluster::start(cfg.flavor.clone(), cfg.members, root.path(), cfg.election_timeout_ms, namespaces, clock)?;
    cluster.wait_all_up(Duration::from_secs(30)).await?;
    cluster.wait_leader(Duration::from_secs(30)).await?;

    let steps = schedule::generate(cfg.seed, &faults, cfg.duration, cluster.election_timeout());
    let rec = Arc::new(Mutex::new(Recorder::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let urls: Vec<String> = cluster.members.iter().map(|m| m.client_url()).collect();
    let mut obs = Observers { endpoints: Endpoints::new(&urls), watchers: Vec::new() };
    // Watchers first, from revision 1: they must see every event the clients cause.
    for i in 0..cluster.members.len() {
        obs.watchers.push(Watcher::start(&cluster, i));
    }
    let clients: Vec<_> = (0..cfg.clients)
        .map(|id| {
            tokio::spawn(workload::client_loop(
                id,
                cfg.seed,
                obs.endpoints.clone(),
                cfg.workload.clone(),
                epoch,
                stop.clone(),
                rec.clone(),
            ))
        })
        .collect();
    let leases: Leases = Arc::default();
    let lease_stops = LeaseStops::default();
    let lease_clients: Vec<_> = (0..cfg.lease_clients)
        .map(|id| {
            tokio::spawn(lease::lease_client(
                id,
                cfg.seed,
                obs.endpoints.clone(),
                cfg.workload.op_timeout,
                epoch,
                lease_stops.clone(),
                leases.clone(),
            ))
        })
        .collect();

    let mut violations = Vec::new();
    let mut log = Vec::new();
    let nemesis = inject(&mut cluster, &mut obs, &steps, epoch, cfg, &mut log, &mut violations).await;

    // Heal everything, let the clients see the recovered cluster for a while, then stop them.
    let healed = heal(&mut cluster, &mut log, epoch).await;
    let settled = epoch.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    lease_stops.grant.store(true, Ordering::Relaxed);
    for c in clients.into_iter().chain(lease_clients) {
        let _ = c.await;
    }
    if let Err(e) = nemesis.and(healed) {
        violations.push(format!("cluster did not recover: {e:#}"));
    }

    eprintln!("chaos: {} clients stopped; final checks", stamp(epoch));
    // The final checks need a recovered cluster, and run whatever the lease check finds.
    let recovered = violations.is_empty();
    let mut lease_summary = None;
    if cfg.lease_clients > 0 && recovered {
        let c = lease::check(&cluster, &leases, epoch, settled, cluster.election_timeout()).await;
        lease_summary = Some(c.summary);
        violations.extend(c.violations);
    }
    let mut final_revision = None;
    let mut watched_events = 0;
    if recovered {
        match final_checks(&cluster, cfg, epoch, &rec).await {
            Ok(r) => final_revision = Some(r),
            Err(e) => violations.push(format!("{e:#}")),
        }
    }
    lease_stops.keep.store(true, Ordering::Relaxed);
    for w in &obs.watchers {
        w.until.store(final_revision.unwrap_or(0), Ordering::Relaxed);
        w.stop.store(true, Ordering::Relaxed);
    }
    if let Some(revision) = final_revision {
        let (n, bad) = check_watchers(&cluster, obs.watchers, revision).await;
        watched_events = n;
        violations.extend(bad);
    } else {
        for w in obs.watchers {
            w.task.abort();
        }
    }
    violations.extend(cluster.crashed());

    let rec = std::mem::take(&mut *rec.lock().unwrap());
    eprintln!("chaos: {} checking {} operations for linearizability", stamp(epoch), rec.history.len());
    let report = checker::check(&rec.history, Budget::default());
    for cx in report.violations.iter().take(3) {
        violations.push(format!("linearizability: {cx}"));
    }
    if report.violations.len() > 3 {
        violations.push(format!("… and {} more keys not linearizable", report.violations.len() - 3));
    }
    for k in &report.undecided {
        violations.push(format!("linearizability of key {k:?} undecided within the search budget"));
    }
    violations.extend(rec.anomalies.iter().take(10).map(|a| a.0.clone()));

    let history_path = root.path().join("history.json");
    std::fs::write(&history_path, serde_json::to_vec(&rec.history)?)?;
    if cfg.lease_clients > 0 {
        std::fs::write(root.path().join("leases.json"), serde_json::to_vec_pretty(&*leases.lock().unwrap())?)?;
    }
    let dir = if violations.is_empty() && !cfg.keep { root.path().to_path_buf() } else { root.keep() };
    if !violations.is_empty() {
        violations.push(cluster.log_tails(15).to_string());
    }
    Ok(RunReport {
        seed: cfg.seed,
        flavor: cfg.flavor.label(),
        ops: rec.ok + rec.unknown,
        ok: rec.ok,
        unknown: rec.unknown,
        faults: log,
        watched_events,
        leases: lease_summary,
        errors: rec.errors.into_iter().collect(),
        violations,
        dir,
        elapsed: started.elapsed(),
    })
}

/// The fault log as it happens, on stderr (stdout gets the report).
fn progress(log: &[String]) {
    if let Some(l) = log.last() {
        eprintln!("chaos: {l}");
    }
}

fn stamp(epoch: Instant) -> String {
    format!("[{:>6.2}s]", epoch.elapsed().as_secs_f64())
}

/// Runs the schedule: each fault at its time, undone after its hold.
async fn inject(
    cluster: &mut Cluster,
    obs: &mut Observers,
    steps: &[Step],
    epoch: Instant,
    cfg: &RunConfig,
    log: &mut Vec<String>,
    violations: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(1));
    for step in steps {
        tokio::time::sleep_until((epoch + step.at).into()).await;
        violations.extend(cluster.crashed());
        let leader = cluster.leader().await;
        let n = cluster.members.len();
        let targets = schedule::resolve(step.target, leader, n, &mut rng);
        let names: Vec<String> = targets.iter().map(|&i| cluster.members[i].name.clone()).collect();
        log.push(format!("{} {step} -> {}", stamp(epoch), names.join(",")));
        progress(log);
        match step.kind {
            FaultKind::Partition => {
                let groups = schedule::partition_groups(step.target, &targets, n);
                let names =
                    |g: &Vec<usize>| g.iter().map(|&i| cluster.members[i].name.clone()).collect::<Vec<_>>().join(",");
                log.push(format!("    groups: {}", groups.iter().map(names).collect::<Vec<_>>().join(" | ")));
                progress(log);
                cluster.partition(&groups)?;
                tokio::time::sleep(step.hold).await;
                cluster.heal_network();
            }
            FaultKind::Membership => {
                if let Err(e) = change_membership(cluster, obs, targets[0], step.hold, epoch, log).await {
                    violations.push(format!("membership change: {e:#}"));
                    return Err(e);
                }
            }
            FaultKind::Clock => {
                for &i in &targets {
                    // Minutes to hours, either way.
                    let secs = rng.gen_range(60..=6 * 3600) * if rng.gen_bool(0.5) { 1 } else { -1 };
                    cluster.set_clock_offset(i, secs)?;
                    log.push(format!("    {} wall clock {secs:+} s", cluster.members[i].name));
                    progress(log);
                }
                tokio::time::sleep(step.hold).await;
                for &i in &targets {
                    cluster.set_clock_offset(i, 0)?;
                }
            }
            FaultKind::Kill | FaultKind::Pause => {
                let kill = step.kind == FaultKind::Kill;
                for &i in &targets {
                    if kill {
                        cluster.kill(i)
                    } else {
                        cluster.pause(i)
                    }
                }
                tokio::time::sleep(step.hold).await;
                for &i in &targets {
                    if kill {
                        cluster.restart(i)?
                    } else {
                        cluster.resume(i)
                    }
                }
            }
            FaultKind::All => unreachable!("expanded before the schedule is drawn"),
        }
    }
    tokio::time::sleep_until((epoch + cfg.duration).into()).await;
    Ok(())
}

/// Removes member `i` through the Cluster API, runs one member short for `hold`, then adds a
/// fresh member and waits for it to catch up. Clients and watchers follow: the endpoints come
/// from MemberList after each change, the removed member's watcher stops, the new one gets its
/// own watcher from revision 1.
async fn change_membership(
    cluster: &mut Cluster,
    obs: &mut Observers,
    i: usize,
    hold: Duration,
    epoch: Instant,
    log: &mut Vec<String>,
) -> anyhow::Result<()> {
    let removed = cluster.remove_member(i).await?;
    for w in obs.watchers.iter_mut().filter(|w| w.name == removed.name) {
        w.retired = true;
        w.until.store(0, Ordering::Relaxed);
        w.stop.store(true, Ordering::Relaxed);
    }
    log.push(format!(
        "{}     removed {}: MemberRemove answered in {:.2}s ({}), then {} {:.2}s later",
        stamp(epoch),
        removed.name,
        removed.request_took.as_secs_f64(),
        removed.refusals,
        if removed.exited_by_itself {
            "its process stopped by itself"
        } else {
            "its process was still running: killed"
        },
        removed.exit_took.as_secs_f64()
    ));
    progress(log);
    sync_endpoints(cluster, &obs.endpoints, log, epoch).await;
    tokio::time::sleep(hold).await;
    let (j, request_took, refusals, took) = cluster.add_member().await?;
    obs.watchers.push(Watcher::start(cluster, j));
    log.push(format!(
        "{}     added {} ({}): MemberAdd answered in {:.2}s ({refusals}), started, caught up in {:.2}s",
        stamp(epoch),
        cluster.members[j].name,
        cluster.members[j].ip,
        request_took.as_secs_f64(),
        took.as_secs_f64()
    ));
    progress(log);
    sync_endpoints(cluster, &obs.endpoints, log, epoch).await;
    Ok(())
}

/// Points the clients at the client URLs MemberList reports, once every current member has
/// published its own (up to 10 s; then whatever was listed last).
async fn sync_endpoints(cluster: &Cluster, endpoints: &Endpoints, log: &mut Vec<String>, epoch: Instant) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(urls) = cluster.client_urls().await {
            let complete = urls.len() == cluster.members.len();
            last = Some(urls);
            if complete {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(urls) = last.filter(|u| !u.is_empty()) {
        endpoints.set(&urls);
        log.push(format!("{}     client endpoints (MemberList): {}", stamp(epoch), urls.join(" ")));
        progress(log);
    }
}

async fn heal(cluster: &mut Cluster, log: &mut Vec<String>, epoch: Instant) -> anyhow::Result<()> {
    cluster.heal()?;
    cluster.wait_all_up(Duration::from_secs(30)).await?;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    log.push(format!("{} healed; leader {}", stamp(epoch), cluster.members[leader].name));
    progress(log);
    Ok(())
}

/// Every watcher must have seen exactly the committed events up to `revision`, in order (the
/// watcher of a removed member: the start of them).
async fn check_watchers(cluster: &Cluster, watchers: Vec<Watcher>, revision: i64) -> (usize, Vec<String>) {
    let mut out = Vec::new();
    let leader = cluster.leader().await.unwrap_or(0);
    let reference = watch::watcher(cluster.channel(leader), Arc::new(AtomicBool::new(true)), Arc::new(revision.into()));
    let Ok(reference) = tokio::time::timeout(Duration::from_secs(30), reference).await else {
        return (0, vec![format!("a fresh watch from revision 1 on the leader did not reach revision {revision}")]);
    };
    let upto = |mut v: Vec<watch::Event>| {
        v.retain(|e| e.0 <= revision);
        v
    };
    let reference = upto(reference);
    for w in watchers {
        match tokio::time::timeout(Duration::from_secs(30), w.task).await {
            Ok(Ok(events)) if w.retired => out.extend(watch::compare_prefix(&w.name, &upto(events), &reference)),
            Ok(Ok(events)) => out.extend(watch::compare(&w.name, &upto(events), &reference)),
            _ => out.push(format!("watcher on {} did not reach revision {revision} within 30 s of the end", w.name)),
        }
    }
    (reference.len(), out)
}

/// Retries `f` (a read on a healed cluster) for up to 20 s.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Each attempt bounded too: a member that never answers must not hang the run.
        let attempt = match tokio::time::timeout(Duration::from_secs(5), f()).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("no answer within 5s")),
        };
        match attempt {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e.context(what.to_string())),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// After healing: a final linearizable read of every key (added to the history, so a write
/// acknowledged and then lost shows up as a violation); every member converges to the same
/// HashKV at one revision; every acknowledged set element is on every member.
async fn final_checks(
    cluster: &Cluster,
    cfg: &RunConfig,
    epoch: Instant,
    rec: &workload::Shared,
) -> anyhow::Result<i64> {
    let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    let kv = KvClient::new(cluster.channel(leader));
    let final_client = cfg.clients;
    for k in 0..cfg.workload.keys {
        let key = format!("{KEY_PREFIX}{k}");
        let op = retry("final read", || {
            let mut kv = kv.clone();
            let key = key.clone();
            async move {
                let invoke = epoch.elapsed().as_nanos() as u64;
                let r = tokio::time::timeout(
                    Duration::from_secs(2),
                    kv.range(RangeRequest { key: key.clone().into_bytes(), ..Default::default() }),
                )
                .await??
                .into_inner();
                let value = r.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                let complete = epoch.elapsed().as_nanos() as u64;
                Ok(Operation {
                    client: final_client,
                    key,
                    input: Input::Get,
                    invoke,
                    complete: Some(complete),
                    output: Some(Output::Get(value)),
                })
            }
        })
        .await?;
        rec.lock().unwrap().history.push(op);
    }

    // One revision every member must reach, then the hash of the store up to it.
    let revision = retry("revision", || {
        let mut kv = kv.clone();
        async move {
            let r = kv
                .range(RangeRequest {
                    key: KEY_PREFIX.into(),
                    range_end: prefix_end(KEY_PREFIX),
                    count_only: true,
                    ..Default::default()
                })
                .await?;
            Ok(r.into_inner().header.context("no header")?.revision)
        }
    })
    .await?;
    let mut hashes = Vec::new();
    for i in 0..cluster.members.len() {
        let ch = cluster.channel(i);
        let h = retry(&format!("HashKV at revision {revision} on {}", cluster.members[i].name), || {
            let mut m = MaintenanceClient::new(ch.clone());
            async move { Ok(m.hash_kv(HashKvRequest { revision }).await?.into_inner().hash) }
        })
        .await?;
        hashes.push((cluster.members[i].name.clone(), h));
    }
    if hashes.iter().any(|(_, h)| *h != hashes[0].1) {
        anyhow::bail!("members disagree on HashKV at revision {revision}: {hashes:?}");
    }

    let acked = rec.lock().unwrap().acked_set.clone();
    for i in 0..cluster.members.len() {
        let ch = cluster.channel(i);
        let r = retry(&format!("read the set on {}", cluster.members[i].name), || {
            let mut kv = KvClient::new(ch.clone());
            async move {
                let req = RangeRequest {
                    key: SET_PREFIX.into(),
                    range_end: prefix_end(SET_PREFIX),
                    serializable: true,
                    keys_only: true,
                    revision,
                    ..Default::default()
                };
                Ok(kv.range(req).await?.into_inner())
            }
        })
        .await?;
        let present: std::collections::HashSet<Vec<u8>> = r.kvs.into_iter().map(|kv| kv.key).collect();
        let lost: Vec<&String> =
            acked.iter().filter(|v| !present.contains(format!("{SET_PREFIX}{v}").as_bytes())).collect();
        if !lost.is_empty() {
            anyhow::bail!(
                "{} acknowledged set writes missing on {} at revision {revision}: {:?}",
                lost.len(),
                cluster.members[i].name,
                &lost[..lost.len().min(10)]
            );
        }
    }
    Ok(revision)
}
