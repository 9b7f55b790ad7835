//! Leader election (`kaname-controlplane`) against real API servers on `kaname etcd`: three
//! candidates with short settings (lease 3 s, renew deadline 2 s, retry 500 ms), each in this
//! process with its own kube client, as the scheduler and controller manager will run it.
//!
//! Injected, in order, and checked after each:
//! - start: exactly one candidate leads, the Lease reads as client-go writes it (holder,
//!   leaseDurationSeconds, acquire/renew times, transitions 0) and carries the
//!   "<identity> became leader" Event;
//! - graceful stop of the leader: the Lease is released and a standby leads within 1 s,
//!   transitions 1;
//! - a crash of the leader (its task dropped: no release): a standby leads within
//!   lease-duration + retry-period (plus slack for a loaded machine), transitions 2;
//! - the leader's API server killed (it cannot renew): it loses (Outcome::Lost), its Term had
//!   stopped being current before the next leader started, and a standby leads.
//!
//! And the fence (`a_deposed_leaders_writes_are_refused_by_the_server`): a leader's writes
//! through its fenced client all succeed across its own renewals; once another holder has
//! written the Lease, the deposed leader's writes (create, patch, delete), sent before it
//! noticed, are refused by the API server with 409 and change nothing; once it noticed, they
//! are not sent at all.
//!
//! Run: `cargo test -p kaname --test leader_election`. Needs kubectl.

use kaname_testkit::*;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kaname_controlplane::leader_election::{Config, Elector, Outcome};
use tokio_util::sync::CancellationToken;

const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(500);

/// One term as the leader's work saw it.
#[derive(Clone, Debug)]
struct TermSeen {
    id: String,
    started: Instant,
    /// The last instant the work found its term current (it checks every 20 ms).
    last_current: Instant,
}

type Log = Arc<Mutex<Vec<TermSeen>>>;

struct Candidate {
    id: String,
    stop: CancellationToken,
    run: tokio::task::JoinHandle<Outcome>,
}

fn config(n: usize) -> Config {
    Config {
        lease_duration: LEASE,
        renew_deadline: RENEW,
        retry_period: RETRY,
        namespace: "kube-system".into(),
        name: "kaname-test".into(),
        identity: format!("host{n}_{}", std::process::id()),
        component: "kaname-test".into(),
    }
}

fn start(rt: &tokio::runtime::Runtime, client: kube::Client, n: usize, log: &Log) -> Candidate {
    let e = Elector::new(client, config(n)).unwrap();
    let stop = CancellationToken::new();
    let (id, log, s) = (e.identity().to_string(), log.clone(), stop.clone());
    let me = id.clone();
    let run = rt.spawn(async move {
        e.run(s, move |term| async move {
            let now = Instant::now();
            let i = {
                let mut l = log.lock().unwrap();
                l.push(TermSeen { id: me, started: now, last_current: now });
                l.len() - 1
            };
            // The work: act only while the term is current, as a scheduler binds.
            while term.is_current() {
                log.lock().unwrap()[i].last_current = Instant::now();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = term.ended() => break,
                }
            }
        })
        .await
    });
    Candidate { id, stop, run }
}

/// Waits until a term other than those in `before` has started; returns it.
fn next_term(log: &Log, before: usize, within: Duration) -> TermSeen {
    let deadline = Instant::now() + within;
    loop {
        if let Some(t) = log.lock().unwrap().get(before) {
            return t.clone();
        }
        assert!(Instant::now() < deadline, "no new leader within {within:?}: {:?}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lease(api: &Apiserver) -> serde_json::Value {
    json(&api.ok(&["-n", "kube-system", "get", "lease", "kaname-test", "-o", "json"]))
}

#[test]
fn one_leader_handover_failover_and_loss() {
    let _g = serial();
    let store = Cluster::start(kaname!(), 1);
    let a = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    let b = a.start_sibling();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log: Log = Arc::default();
    // Candidate 0 speaks to server a, the others to b (so that a can be taken away from it).
    let mut cands: Vec<Option<Candidate>> = (0..3)
        .map(|n| Some(start(&rt, if n == 0 { a.kube_client(&rt) } else { b.kube_client(&rt) }, n, &log)))
        .collect();

    // One leader; the others stay standbys while it renews.
    let first = next_term(&log, 0, Duration::from_secs(20));
    std::thread::sleep(LEASE * 2);
    assert_eq!(log.lock().unwrap().len(), 1, "a second leader while the first renewed: {:?}", log.lock().unwrap());
    let l = lease(&b);
    assert_eq!(l["spec"]["holderIdentity"], first.id.as_str(), "{l}");
    assert_eq!(l["spec"]["leaseDurationSeconds"], 3, "{l}");
    assert_eq!(l["spec"]["leaseTransitions"], 0, "{l}");
    assert!(l["spec"]["acquireTime"].is_string() && l["spec"]["renewTime"].is_string(), "{l}");
    assert_ne!(l["spec"]["acquireTime"], l["spec"]["renewTime"], "renewals move renewTime only: {l}");
    let events = b.ok(&["-n", "kube-system", "get", "events", "-o", "json"]);
    let events = json(&events);
    let became =
        events["items"].as_array().unwrap().iter().find(|e| {
            e["reason"] == "LeaderElection" && e["message"] == format!("{} became leader", first.id).as_str()
        });
    let became = became.unwrap_or_else(|| panic!("no LeaderElection event: {events}"));
    assert_eq!(became["involvedObject"]["kind"], "Lease");
    assert_eq!(became["source"]["component"], "kaname-test");

    let index =
        |id: &str, c: &[Option<Candidate>]| c.iter().position(|x| x.as_ref().is_some_and(|x| x.id == id)).unwrap();

    // Graceful stop: released, taken within 1 s.
    let i = index(&first.id, &cands);
    let c = cands[i].take().unwrap();
    let stopped = Instant::now();
    c.stop.cancel();
    assert_eq!(rt.block_on(c.run).unwrap(), Outcome::Stopped);
    let second = next_term(&log, 1, Duration::from_secs(10));
    let handover = second.started.saturating_duration_since(stopped);
    println!("release handover: {handover:?}");
    assert!(handover < Duration::from_secs(1), "handover took {handover:?}");
    assert_eq!(lease(&b)["spec"]["leaseTransitions"], 1);
    cands[i] = Some(start(&rt, if i == 0 { a.kube_client(&rt) } else { b.kube_client(&rt) }, i, &log));

    // Crash: the leader's task is dropped without releasing.
    let i = index(&second.id, &cands);
    let c = cands[i].take().unwrap();
    let crashed = Instant::now();
    c.run.abort();
    let third = next_term(&log, 2, Duration::from_secs(20));
    let failover = third.started.saturating_duration_since(crashed);
    println!("crash failover: {failover:?} (target <= lease + retry = {:?})", LEASE + RETRY);
    assert!(failover <= LEASE + RETRY + Duration::from_secs(2), "failover took {failover:?}");
    assert_eq!(lease(&b)["spec"]["leaseTransitions"], 2);
    cands[i] = Some(start(&rt, if i == 0 { a.kube_client(&rt) } else { b.kube_client(&rt) }, i, &log));

    // Loss: make candidate 0 the leader (the others stop gracefully, so it takes over), then
    // take its API server away.
    for slot in cands.iter_mut().skip(1) {
        if let Some(c) = slot.take() {
            c.stop.cancel();
            rt.block_on(c.run).unwrap();
        }
    }
    let zero = cands[0].as_ref().unwrap().id.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.lock().unwrap().last().map(|t| t.id.as_str()) != Some(zero.as_str()) {
        assert!(Instant::now() < deadline, "candidate 0 never led: {:?}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = log.lock().unwrap().len();
    for (n, slot) in cands.iter_mut().enumerate().skip(1) {
        *slot = Some(start(&rt, b.kube_client(&rt), n, &log));
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut a = a;
    a.kill();
    let c = cands[0].take().unwrap();
    let outcome = rt.block_on(async { tokio::time::timeout(RENEW + RETRY * 4, c.run).await });
    assert_eq!(outcome.expect("the cut-off leader did not give up").unwrap(), Outcome::Lost);
    let next = next_term(&log, before, Duration::from_secs(20));
    let cut_off = log.lock().unwrap()[before - 1].clone();
    assert_eq!(cut_off.id, zero);
    assert!(
        cut_off.last_current < next.started,
        "the cut-off leader acted at {:?} after the next leader started",
        cut_off.last_current - next.started
    );
    println!("cut-off leader's last act preceded the next term by {:?}", next.started - cut_off.last_current);

    for c in cands.into_iter().flatten() {
        c.stop.cancel();
        let _ = rt.block_on(c.run);
    }
}

/// The fence: see the module docs. Longer settings (lease 6 s, renew 4 s, retry 2 s) so that
/// the deposed leader has a window between the takeover and its next renewal attempt.
#[test]
fn a_deposed_leaders_writes_are_refused_by_the_server() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

    let _g = serial();
    let store = Cluster::start(kaname!(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cfg = Config {
        lease_duration: Duration::from_secs(6),
        renew_deadline: Duration::from_secs(4),
        retry_period: Duration::from_secs(2),
        name: "kaname-fence".into(),
        ..config(0)
    };
    let plain = api.kube_client(&rt);
    let e = Elector::new(plain.clone(), cfg).unwrap();
    let fenced = rt.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&api.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        kube::client::ClientBuilder::try_from(config).unwrap().with_layer(&e.fence().layer()).build()
    });
    let (leading_tx, leading_rx) = std::sync::mpsc::channel();
    let stop = CancellationToken::new();
    let run = {
        let (e, stop) = (e.clone(), stop.clone());
        rt.spawn(async move {
            e.run(stop, move |term| async move {
                leading_tx.send(()).unwrap();
                term.ended().await
            })
            .await
        })
    };
    leading_rx.recv_timeout(Duration::from_secs(20)).expect("the candidate leads");

    let cms: Api<ConfigMap> = Api::namespaced(fenced.clone(), "default");
    let cm = |name: &str, v: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"v": v}})).unwrap()
    };
    // Writes across several of its own renewals: none is fenced out by them.
    let leases: Api<Lease> = Api::namespaced(plain.clone(), "kube-system");
    let rv = |l: &Lease| l.metadata.resource_version.clone().unwrap();
    let first_rv = rv(&rt.block_on(leases.get("kaname-fence")).unwrap());
    rt.block_on(cms.create(&PostParams::default(), &cm("work", "0"))).unwrap();
    let started = Instant::now();
    let mut writes = 0;
    while started.elapsed() < Duration::from_secs(5) {
        writes += 1;
        let patch = Patch::Merge(serde_json::json!({"data": {"v": writes.to_string()}}));
        rt.block_on(cms.patch("work", &PatchParams::default(), &patch))
            .unwrap_or_else(|err| panic!("write {writes} of the leader refused: {err}"));
    }
    let renewed_rv = rv(&rt.block_on(leases.get("kaname-fence")).unwrap());
    assert_ne!(first_rv, renewed_rv, "the leader renewed during the writes");
    println!("{writes} writes of the leader across its renewals, none refused");

    // A takeover right after a renewal (so the leader notices only ~2 s later): another holder
    // writes the Lease, as a standby taking over would.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lease = loop {
        let l = rt.block_on(leases.get("kaname-fence")).unwrap();
        if rv(&l) != renewed_rv {
            break l;
        }
        assert!(Instant::now() < deadline, "no renewal");
        std::thread::sleep(Duration::from_millis(10));
    };
    lease.spec.as_mut().unwrap().holder_identity = Some("intruder".into());
    rt.block_on(leases.replace("kaname-fence", &PostParams::default(), &lease)).unwrap();
    let taken = Instant::now();
    let fenced_out = |r: Result<(), kube::Error>, what: &str| match r {
        Err(kube::Error::Api(s)) if s.code == 409 && s.message.contains("the write was fenced") => {}
        other => panic!("{what} of the deposed leader: {other:?}"),
    };
    fenced_out(rt.block_on(cms.create(&PostParams::default(), &cm("late", "x"))).map(|_| ()), "create");
    let patch = Patch::Merge(serde_json::json!({"data": {"v": "late"}}));
    fenced_out(rt.block_on(cms.patch("work", &PatchParams::default(), &patch)).map(|_| ()), "patch");
    fenced_out(rt.block_on(cms.delete("work", &DeleteParams::default())).map(|_| ()), "delete");
    assert!(taken.elapsed() < Duration::from_secs(1), "the checks outlasted the window: {:?}", taken.elapsed());
    let plain_cms: Api<ConfigMap> = Api::namespaced(plain, "default");
    let work = rt.block_on(plain_cms.get("work")).unwrap();
    assert_eq!(work.data.unwrap()["v"], writes.to_string(), "a fenced write changed the object");
    assert!(rt.block_on(plain_cms.get_opt("late")).unwrap().is_none(), "a fenced create was applied");

    // It notices at its next renewal and stops; then nothing is even sent.
    let outcome = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), run).await });
    assert_eq!(outcome.expect("the deposed leader did not stop").unwrap(), Outcome::Lost);
    match rt.block_on(cms.delete("work", &DeleteParams::default())) {
        Err(kube::Error::Service(err)) => assert!(err.to_string().contains("not the leader"), "{err}"),
        other => panic!("a write after the term: {other:?}"),
    }
    stop.cancel();
}
