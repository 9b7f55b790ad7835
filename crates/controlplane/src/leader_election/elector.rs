//! client-go's leader election over a Lease, with standbys that also watch the Lease.
//!
//! Expiry is judged only by this candidate's monotonic clock, from when it *observed* the
//! record change (by a read, a write of its own, or a watch event), never by the record's
//! times, which another machine's clock wrote: skew between machines does not matter, only the
//! rate of their clocks.
//!
//! Where it does better than client-go:
//! - standbys watch the Lease: a released (or deleted) Lease is tried at once, an unrenewed one
//!   at its expiry as seen from here, not at the next jittered poll (client-go: up to
//!   2.2 × retry-period later);
//! - a leader that sees another holder in the record stops at once instead of retrying until
//!   its renew deadline;
//! - the leader's work runs under a [`Term`] that says whether it may still act: only while its
//!   last successful renewal, counted from when the request was *sent*, is younger than the
//!   renew deadline. A standby cannot take over before lease-duration after it observed that
//!   renewal, which is later, so a leader that checks its term before each action never acts
//!   in a standby's term;
//! - the remaining window, a write already in flight when that check passed, is closed by the
//!   server: the work's writes are conditioned on the Lease's resourceVersion ([`Fence`]).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::Rng;
use tokio::sync::Notify;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::{Config, Fence, Record, JITTER_FACTOR};

/// What this candidate last saw of the Lease, and when.
struct Observed {
    record: Record,
    /// The Lease as last read, written or watched: its resourceVersion conditions the next
    /// update, so a write based on a stale read is refused (409) instead of overwriting.
    lease: Option<Lease>,
    /// When `record` last changed as seen from here (monotonic).
    at: Instant,
}

/// How a run of the election ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Asked to stop (e.g. SIGTERM): the work was ended and, if held, the Lease released.
    Stopped,
    /// The leader could not renew within the renew deadline, or saw another holder: the work
    /// was ended; upstream's components log "Leaderelection lost" and exit 1.
    Lost,
}

/// The leader's licence to act, handed to its work.
#[derive(Clone)]
pub struct Term {
    ended: CancellationToken,
    /// Last successful renewal's send time + renew deadline.
    valid_until: Arc<Mutex<Instant>>,
}

impl Term {
    fn new(sent: Instant, renew_deadline: Duration) -> Term {
        Term { ended: CancellationToken::new(), valid_until: Arc::new(Mutex::new(sent + renew_deadline)) }
    }

    /// The term of a component run with `--leader-elect=false`: current until `stop`.
    pub fn unelected(stop: CancellationToken) -> Term {
        let forever = Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600);
        Term { ended: stop, valid_until: Arc::new(Mutex::new(forever)) }
    }

    fn renewed(&self, sent: Instant, renew_deadline: Duration) {
        *self.valid_until.lock().unwrap() = sent + renew_deadline;
    }

    /// Whether the leader may still act: its term has not ended and its last renewal is
    /// younger than the renew deadline. Check it before every action.
    pub fn is_current(&self) -> bool {
        !self.ended.is_cancelled() && Instant::now() < *self.valid_until.lock().unwrap()
    }

    /// Resolves when the term ends (lost, or stopping): the work should return.
    pub async fn ended(&self) {
        self.ended.cancelled().await
    }
}

/// One candidate of one election.
pub struct Elector {
    cfg: Config,
    leases: Api<Lease>,
    events: Api<Event>,
    observed: Mutex<Observed>,
    /// Wakes a waiting candidate when the watch saw the Lease released or deleted.
    freed: Notify,
    /// `leader_election_master_status{name}`: 1 while leading.
    status: Family<Vec<(String, String)>, Gauge>,
    /// What the work's writes are conditioned on: the Lease as this candidate last wrote it.
    fence: Arc<Fence>,
}

impl Elector {
    /// A candidate for `cfg` (checked as client-go's `NewLeaderElector` checks).
    pub fn new(client: kube::Client, cfg: Config) -> Result<Arc<Elector>, String> {
        cfg.check()?;
        let e = Elector {
            leases: Api::namespaced(client.clone(), &cfg.namespace),
            events: Api::namespaced(client, &cfg.namespace),
            observed: Mutex::new(Observed { record: Record::default(), lease: None, at: Instant::now() }),
            freed: Notify::new(),
            status: Family::default(),
            fence: Fence::new(&cfg.namespace, &cfg.name),
            cfg,
        };
        e.set_status(false);
        Ok(Arc::new(e))
    }

    pub fn identity(&self) -> &str {
        &self.cfg.identity
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The fence the work's client must carry ([`Fence::layer`]): its writes then reach the
    /// store only while the Lease is still as this candidate last wrote it.
    pub fn fence(&self) -> &Arc<Fence> {
        &self.fence
    }

    /// Whether the last observed record names this candidate.
    pub fn is_leader(&self) -> bool {
        self.observed.lock().unwrap().record.holder == self.cfg.identity
    }

    /// The holder this candidate last observed (empty: none).
    pub fn leader(&self) -> String {
        self.observed.lock().unwrap().record.holder.clone()
    }

    /// Adds `leader_election_master_status` to a component's `/metrics`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name.",
            self.status.clone(),
        );
    }

    /// upstream's `leaderElection` health check: a leader whose last observed renewal is older
    /// than lease-duration + `tolerance` (upstream's adaptor: 20 s) is unhealthy; standbys are
    /// always healthy.
    pub fn check(&self, tolerance: Duration) -> Result<(), String> {
        let o = self.observed.lock().unwrap();
        if o.record.holder == self.cfg.identity && o.at.elapsed() > self.cfg.lease_duration + tolerance {
            return Err(format!("failed election to renew leadership on lease {}", self.cfg.name));
        }
        Ok(())
    }

    /// Campaigns until this candidate leads, then runs `lead` under a [`Term`] while renewing;
    /// returns when leadership is lost or `stop` is cancelled. On stop the term ends, `lead` is
    /// given the renew deadline to return, and the Lease is released (client-go's
    /// ReleaseOnCancel): holder emptied, leaseDurationSeconds 1, transitions kept.
    pub async fn run<F, Fut>(self: &Arc<Self>, stop: CancellationToken, lead: F) -> Outcome
    where
        F: FnOnce(Term) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Dropped with this future, as a crashed process's would be.
        let _watch = AbortOnDrop(tokio::spawn(self.clone().watch()));
        self.campaign(&stop, lead).await
    }

    async fn campaign<F, Fut>(&self, stop: &CancellationToken, lead: F) -> Outcome
    where
        F: FnOnce(Term) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(sent) = self.acquire(stop).await else { return Outcome::Stopped };
        self.set_status(true);
        self.event("became leader").await;
        let term = Term::new(sent, self.cfg.renew_deadline);
        let mut work = AbortOnDrop(tokio::spawn(lead(term.clone())));
        let outcome = self.renew(&term, stop).await;
        self.fence.set(None);
        term.ended.cancel();
        self.set_status(false);
        match outcome {
            Outcome::Lost => work.0.abort(),
            Outcome::Stopped => {
                if tokio::time::timeout(self.cfg.renew_deadline, &mut work.0).await.is_err() {
                    tracing::warn!("the leader's work did not end within the renew deadline; stopping it");
                    work.0.abort();
                }
                self.release().await;
            }
        }
        self.event("stopped leading").await;
        outcome
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.cfg.namespace, self.cfg.name)
    }

    fn set_status(&self, leading: bool) {
        self.status.get_or_create(&vec![("name".to_string(), self.cfg.name.clone())]).set(i64::from(leading));
    }

    /// Tries until this candidate holds the Lease; returns when the successful write was sent,
    /// or None when stopped.
    async fn acquire(&self, stop: &CancellationToken) -> Option<Instant> {
        let desc = self.describe();
        tracing::info!("attempting to acquire leader lease {desc}...");
        loop {
            let sent = Instant::now();
            if self.attempt().await {
                tracing::info!("successfully acquired lease {desc}");
                return Some(sent);
            }
            // Upstream's poll: retry-period plus up to 1.2 × more.
            let jitter = rand::thread_rng().gen_range(0.0..JITTER_FACTOR);
            let poll = self.cfg.retry_period.mul_f64(1.0 + jitter);
            // Better: wake when the record expires as seen from here, or when the watch sees
            // it released.
            let expiry = {
                let o = self.observed.lock().unwrap();
                let at = o.at + lease_duration(&o.record);
                (!o.record.holder.is_empty() && at > Instant::now()).then_some(at)
            };
            tokio::select! {
                _ = sleep(poll) => {}
                _ = sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {}
                _ = self.freed.notified() => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// Renews every retry period; each renewal may retry until the renew deadline. Lost when
    /// the deadline passes, or at once when the record names another holder.
    async fn renew(&self, term: &Term, stop: &CancellationToken) -> Outcome {
        loop {
            tokio::select! {
                _ = sleep(self.cfg.retry_period) => {}
                _ = stop.cancelled() => return Outcome::Stopped,
            }
            let deadline = Instant::now() + self.cfg.renew_deadline;
            loop {
                let sent = Instant::now();
                match tokio::time::timeout_at(deadline, self.attempt()).await {
                    Ok(true) => {
                        term.renewed(sent, self.cfg.renew_deadline);
                        break;
                    }
                    Ok(false) if !self.is_leader() => {
                        tracing::info!("lease {} is now held by {}", self.describe(), self.leader());
                        return Outcome::Lost;
                    }
                    Ok(false) => {}
                    Err(_) => return Outcome::Lost,
                }
                let next = (Instant::now() + self.cfg.retry_period).min(deadline);
                tokio::select! {
                    _ = sleep_until(next) => {}
                    _ = stop.cancelled() => return Outcome::Stopped,
                }
                if Instant::now() >= deadline {
                    return Outcome::Lost;
                }
            }
        }
    }

    /// One try to acquire or renew, with the work's writes held back while it runs (see
    /// [`Fence`]); on success the fence moves to the Lease's new resourceVersion.
    async fn attempt(&self) -> bool {
        let _gate = self.fence.hold(self.cfg.retry_period).await;
        if !self.try_acquire_or_renew().await {
            return false;
        }
        let rv = self.observed.lock().unwrap().lease.as_ref().and_then(|l| l.metadata.resource_version.clone());
        self.fence.set(rv.as_deref());
        true
    }

    /// client-go's `tryAcquireOrRenew`: the leader first updates optimistically from what it
    /// last saw; otherwise read (create if absent), and write only if the Lease is ours or has
    /// expired as seen from here. Every write carries the resourceVersion it was based on.
    async fn try_acquire_or_renew(&self) -> bool {
        let now = Timestamp::now();
        let id = self.cfg.identity.clone();
        let mut desired = Record {
            holder: id.clone(),
            lease_duration_seconds: self.cfg.lease_duration.as_secs() as i32,
            acquire_time: Some(now),
            renew_time: Some(now),
            transitions: 0,
        };

        // 1. The leader's fast path.
        let fast = {
            let o = self.observed.lock().unwrap();
            let valid = o.at + lease_duration(&o.record) > Instant::now();
            (o.record.holder == id && valid).then(|| o.lease.clone().map(|l| (l, o.record.clone()))).flatten()
        };
        if let Some((lease, seen)) = fast {
            desired.acquire_time = seen.acquire_time;
            desired.transitions = seen.transitions;
            match self.update(lease, &desired).await {
                Ok(l) => {
                    self.set_observed(desired, l);
                    return true;
                }
                Err(e) => tracing::info!("Failed to update lock optimistically: {e}, falling back to slow path"),
            }
        }

        // 2. Read, or create.
        let lease = match self.leases.get_opt(&self.cfg.name).await {
            Err(e) => {
                tracing::error!("error retrieving resource lock {}: {e}", self.describe());
                return false;
            }
            Ok(None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(desired.to_spec()),
                };
                return match self.leases.create(&PostParams::default(), &lease).await {
                    Ok(l) => {
                        self.set_observed(desired, l);
                        true
                    }
                    Err(e) => {
                        tracing::error!("error initially creating leader election record: {e}");
                        false
                    }
                };
            }
            Ok(Some(l)) => l,
        };

        // 3. What it says, and whether it is still valid as seen from here.
        let current = Record::from_spec(&lease.spec.clone().unwrap_or_default());
        {
            let mut o = self.observed.lock().unwrap();
            if o.record != current {
                o.record = current.clone();
                o.at = Instant::now();
            }
            o.lease = Some(lease.clone());
            let valid = o.at + lease_duration(&o.record) > Instant::now();
            if !current.holder.is_empty() && valid && current.holder != id {
                tracing::debug!("lock is held by {} and has not yet expired", current.holder);
                return false;
            }
        }

        // 4. Renew ours, or take it over.
        if current.holder == id {
            desired.acquire_time = current.acquire_time;
            desired.transitions = current.transitions;
        } else {
            desired.transitions = current.transitions + 1;
        }
        match self.update(lease, &desired).await {
            Ok(l) => {
                self.set_observed(desired, l);
                true
            }
            Err(e) => {
                tracing::info!("Failed to update lock: {e}");
                false
            }
        }
    }

    /// A PUT of `lease` with `record` as its spec, conditioned on `lease`'s resourceVersion.
    async fn update(&self, mut lease: Lease, record: &Record) -> Result<Lease, kube::Error> {
        lease.spec = Some(record.to_spec());
        self.leases.replace(&self.cfg.name, &PostParams::default(), &lease).await
    }

    fn set_observed(&self, record: Record, lease: Lease) {
        let mut o = self.observed.lock().unwrap();
        o.record = record;
        o.lease = Some(lease);
        o.at = Instant::now();
    }

    /// Gives the Lease up if this candidate holds it, so a standby takes it at once.
    async fn release(&self) {
        let (lease, seen) = {
            let o = self.observed.lock().unwrap();
            if o.record.holder != self.cfg.identity {
                return;
            }
            match &o.lease {
                Some(l) => (l.clone(), o.record.clone()),
                None => return,
            }
        };
        let now = Timestamp::now();
        let released = Record {
            holder: String::new(),
            lease_duration_seconds: 1,
            acquire_time: Some(now),
            renew_time: Some(now),
            transitions: seen.transitions,
        };
        match self.update(lease, &released).await {
            Ok(l) => self.set_observed(released, l),
            Err(e) => tracing::error!("Failed to release lock: {e}"),
        }
    }

    /// Follows the Lease so that changes are observed when they happen, not at the next poll.
    async fn watch(self: Arc<Self>) {
        let cfg = watcher::Config::default().fields(&format!("metadata.name={}", self.cfg.name));
        let mut events = watcher(self.leases.clone(), cfg).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) => self.saw(Some(l)),
                Ok(watcher::Event::Delete(_)) => self.saw(None),
                Ok(_) => {}
                Err(e) => tracing::debug!("watching lease {}: {e}", self.describe()),
            }
        }
    }

    fn saw(&self, lease: Option<Lease>) {
        let mut o = self.observed.lock().unwrap();
        let Some(lease) = lease else {
            o.lease = None;
            o.record = Record::default();
            drop(o);
            self.freed.notify_one();
            return;
        };
        // A watch event can be older than what a read or our own write already showed.
        if is_older(&lease, o.lease.as_ref()) {
            return;
        }
        let record = Record::from_spec(&lease.spec.clone().unwrap_or_default());
        if record != o.record {
            o.record = record.clone();
            o.at = Instant::now();
        }
        o.lease = Some(lease);
        drop(o);
        if record.holder.is_empty() {
            self.freed.notify_one();
        }
    }

    /// Records an Event on the Lease as client-go's resource lock does: reason LeaderElection,
    /// message "<identity> <what>".
    async fn event(&self, what: &str) {
        let Some(lease) = self.observed.lock().unwrap().lease.clone() else { return };
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", self.cfg.name, now.as_nanosecond())),
                namespace: Some(self.cfg.namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("coordination.k8s.io/v1".into()),
                kind: Some("Lease".into()),
                namespace: Some(self.cfg.namespace.clone()),
                name: Some(self.cfg.name.clone()),
                uid: lease.metadata.uid.clone(),
                resource_version: lease.metadata.resource_version.clone(),
                ..ObjectReference::default()
            },
            reason: Some("LeaderElection".into()),
            message: Some(format!("{} {what}", self.cfg.identity)),
            type_: Some("Normal".into()),
            source: Some(EventSource { component: Some(self.cfg.component.clone()), host: None }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Event::default()
        };
        if let Err(e) = self.events.create(&PostParams::default(), &event).await {
            tracing::warn!("could not record the event \"{what}\" on lease {}: {e}", self.describe());
        }
    }
}

/// A task that ends with its owner: the election's helpers never outlive the election.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lease_duration(r: &Record) -> Duration {
    Duration::from_secs(r.lease_duration_seconds.max(0) as u64)
}

/// Whether `lease` is older than `than`. resourceVersions are opaque by the API's contract, but
/// every API server we run against (ours, kube-apiserver) uses etcd revisions, which order
/// writes; where they do not parse, nothing is called older.
fn is_older(lease: &Lease, than: Option<&Lease>) -> bool {
    let rv = |l: &Lease| l.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok());
    match (rv(lease), than.and_then(rv)) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}
