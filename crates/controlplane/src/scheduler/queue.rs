//! The scheduling queue, as upstream's `PriorityQueue`: pods waiting for a node, in three
//! places.
//!
//! - **active**: ready to be tried, highest priority first, then the one waiting longest;
//! - **backoff**: failed recently; each waits 1 s, doubling per attempt up to 10 s, before it
//!   is active again;
//! - **unschedulable**: fit no node last time; it waits for a cluster event that may help (a
//!   node added or changed, a pod deleted), or 5 minutes, then goes back through backoff.
//!
//! A cluster event that happens while a pod is being tried sends that pod to backoff rather
//! than unschedulable when it fails (upstream's move-request cycle), so the event is not lost.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Upstream's defaults (`podInitialBackoffSeconds`, `podMaxBackoffSeconds`,
/// `podMaxInUnschedulablePodsDuration`).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(5 * 60);

/// `namespace/name`.
pub type Key = String;

pub fn key(pod: &Pod) -> Key {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or(""))
}

/// Whether the pod changed beyond its status and bookkeeping (resourceVersion, generation,
/// managed fields, finalizers).
fn updated(old: &Pod, new: &Pod) -> bool {
    let strip = |p: &Pod| {
        let mut meta = p.metadata.clone();
        meta.resource_version = None;
        meta.generation = None;
        meta.managed_fields = None;
        meta.finalizers = None;
        (meta, p.spec.clone())
    };
    strip(old) != strip(new)
}

/// A pod in the queue with its history.
#[derive(Clone, Debug)]
pub struct QueuedPod {
    pub pod: Arc<Pod>,
    /// Scheduling attempts so far (failed ones; the next is attempts + 1).
    pub attempts: u32,
    /// When it first entered the queue (for the wait-longest-first order and latency metrics).
    pub initial: Instant,
    /// When it last entered the active queue or failed.
    pub timestamp: Instant,
    /// The move-request cycle when it was popped.
    cycle: u64,
}

impl QueuedPod {
    fn priority(&self) -> i32 {
        self.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
    }

    /// Upstream's `calculateBackoffDuration`: the initial backoff (1 s by default) doubled per
    /// further attempt, at most the maximum (10 s).
    pub fn backoff(&self, (initial, max): (Duration, Duration)) -> Duration {
        let mut d = initial;
        for _ in 1..self.attempts {
            d *= 2;
            if d >= max {
                return max;
            }
        }
        d
    }
}

/// Heap order: higher priority, then earlier `timestamp` (upstream's PrioritySort).
struct Active(QueuedPod);

impl PartialEq for Active {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Active {}
impl PartialOrd for Active {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Active {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.priority().cmp(&o.0.priority()).then_with(|| o.0.timestamp.cmp(&self.0.timestamp))
    }
}

struct Inner {
    /// `podInitialBackoffSeconds` and `podMaxBackoffSeconds`.
    limits: (Duration, Duration),
    active: BinaryHeap<Active>,
    /// (ready at, key) → the pod.
    backoff: BTreeSet<(Instant, Key)>,
    backoff_pods: HashMap<Key, QueuedPod>,
    unschedulable: HashMap<Key, QueuedPod>,
    /// Keys in active (the heap cannot be searched), and keys being tried now.
    in_active: HashMap<Key, ()>,
    in_flight: HashMap<Key, ()>,
    /// Bumped by every cluster event that may make pods schedulable.
    move_cycle: u64,
    closed: bool,
}

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            limits: (INITIAL_BACKOFF, MAX_BACKOFF),
            active: BinaryHeap::new(),
            backoff: BTreeSet::new(),
            backoff_pods: HashMap::new(),
            unschedulable: HashMap::new(),
            in_active: HashMap::new(),
            in_flight: HashMap::new(),
            move_cycle: 0,
            closed: false,
        }
    }
}

/// The queue; shared by the informers that feed it and the loop that pops it.
#[derive(Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    wake: Notify,
}

impl Queue {
    /// A queue with the given `podInitialBackoffSeconds` and `podMaxBackoffSeconds`.
    pub fn with_backoff(initial: Duration, max: Duration) -> Arc<Queue> {
        let q = Queue::default();
        q.inner.lock().unwrap().limits = (initial, max);
        Arc::new(q)
    }

    pub fn new() -> Arc<Queue> {
        Arc::new(Queue::default())
    }

    /// A new pending pod (or one seen again): active, unless it is already queued or tried.
    pub fn add(&self, pod: Arc<Pod>) {
        let k = key(&pod);
        let mut q = self.inner.lock().unwrap();
        if q.in_active.contains_key(&k) || q.in_flight.contains_key(&k) {
            return;
        }
        if q.backoff_pods.contains_key(&k) || q.unschedulable.contains_key(&k) {
            drop(q);
            return self.update(pod);
        }
        let now = Instant::now();
        q.in_active.insert(k, ());
        q.active.push(Active(QueuedPod { pod, attempts: 0, initial: now, timestamp: now, cycle: 0 }));
        drop(q);
        self.wake.notify_one();
    }

    /// A queued pod changed (labels, tolerations, resources...): it may fit now, so an
    /// unschedulable one goes back to backoff (or active if its backoff is over); elsewhere only
    /// its object is refreshed. A change of status alone (the scheduler's own `PodScheduled`
    /// and `nominatedNodeName` writes) changes nothing it is judged by, so it stays put
    /// (upstream's `isPodUpdated`); else every failure would retry itself.
    pub fn update(&self, pod: Arc<Pod>) {
        let k = key(&pod);
        let mut q = self.inner.lock().unwrap();
        if let Some(qp) = q.unschedulable.get_mut(&k) {
            if !updated(&qp.pod, &pod) {
                qp.pod = pod;
                return;
            }
            let mut qp = q.unschedulable.remove(&k).unwrap();
            qp.pod = pod;
            q.enqueue_after_failure(k, qp);
            drop(q);
            self.wake.notify_one();
        } else if let Some(qp) = q.backoff_pods.get_mut(&k) {
            qp.pod = pod;
        } else if q.in_active.contains_key(&k) {
            let items: Vec<Active> = std::mem::take(&mut q.active).into_vec();
            q.active = items
                .into_iter()
                .map(|mut a| {
                    if key(&a.0.pod) == k {
                        a.0.pod = pod.clone();
                    }
                    a
                })
                .collect();
        }
    }

    /// The pod is gone, or bound (by us or anyone): it leaves the queue. If it is being tried
    /// now, the attempt's outcome is dropped (a failed bind of a pod bound elsewhere meanwhile
    /// must not bring it back).
    pub fn delete(&self, k: &str) {
        let mut q = self.inner.lock().unwrap();
        q.in_flight.remove(k);
        q.unschedulable.remove(k);
        if let Some(qp) = q.backoff_pods.remove(k) {
            let at = qp.timestamp + qp.backoff(q.limits);
            q.backoff.remove(&(at, k.to_string()));
        }
        if q.in_active.remove(k).is_some() {
            q.active.retain(|a| key(&a.0.pod) != k);
        }
    }

    /// A cluster event that may make unschedulable pods fit (node added or changed, a pod
    /// deleted): every unschedulable pod goes to backoff (or active if its backoff is over).
    pub fn move_all(&self) {
        let mut q = self.inner.lock().unwrap();
        q.move_cycle += 1;
        let pods: Vec<(Key, QueuedPod)> = q.unschedulable.drain().collect();
        for (k, qp) in pods {
            q.enqueue_after_failure(k, qp);
        }
        drop(q);
        self.wake.notify_one();
    }

    /// The next pod to try, waiting until one is active; None once closed.
    pub async fn pop(&self) -> Option<QueuedPod> {
        loop {
            let next_due = {
                let mut q = self.inner.lock().unwrap();
                if q.closed {
                    return None;
                }
                q.flush(Instant::now());
                if let Some(Active(mut qp)) = q.active.pop() {
                    let k = key(&qp.pod);
                    q.in_active.remove(&k);
                    q.in_flight.insert(k, ());
                    qp.cycle = q.move_cycle;
                    return Some(qp);
                }
                q.backoff.first().map(|(at, _)| *at)
            };
            match next_due {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// The popped pod fit nowhere: unschedulable until an event, or straight to backoff if an
    /// event came while it was tried.
    pub fn unschedulable(&self, mut qp: QueuedPod) {
        let k = key(&qp.pod);
        let mut q = self.inner.lock().unwrap();
        if q.in_flight.remove(&k).is_none() {
            return; // deleted meanwhile
        }
        qp.attempts += 1;
        qp.timestamp = Instant::now();
        if q.move_cycle > qp.cycle {
            q.enqueue_after_failure(k, qp);
            drop(q);
            self.wake.notify_one();
        } else {
            q.unschedulable.insert(k, qp);
        }
    }

    /// The popped pod failed for another reason (binding refused, API error): backoff.
    pub fn retry(&self, mut qp: QueuedPod) {
        let k = key(&qp.pod);
        let mut q = self.inner.lock().unwrap();
        if q.in_flight.remove(&k).is_none() {
            return;
        }
        qp.attempts += 1;
        qp.timestamp = Instant::now();
        q.enqueue_after_failure(k, qp);
        drop(q);
        self.wake.notify_one();
    }

    /// The popped pod was bound (or assumed so): done with it.
    pub fn done(&self, k: &str) {
        self.inner.lock().unwrap().in_flight.remove(k);
    }

    /// Unschedulable pods waiting longer than [`MAX_IN_UNSCHEDULABLE`] go back through backoff
    /// (upstream flushes them every 30 s).
    pub fn flush_unschedulable(&self) {
        let mut q = self.inner.lock().unwrap();
        let now = Instant::now();
        let stale: Vec<Key> = q
            .unschedulable
            .iter()
            .filter(|(_, p)| now - p.timestamp >= MAX_IN_UNSCHEDULABLE)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(qp) = q.unschedulable.remove(&k) {
                q.enqueue_after_failure(k, qp);
            }
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Ends [`Queue::pop`] for good (the scheduler stops).
    pub fn close(&self) {
        self.inner.lock().unwrap().closed = true;
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    /// (active, backoff, unschedulable) counts, for `/metrics` and tests.
    pub fn lengths(&self) -> (usize, usize, usize) {
        let q = self.inner.lock().unwrap();
        (q.active.len(), q.backoff_pods.len(), q.unschedulable.len())
    }
}

impl Inner {
    /// Into backoff until `timestamp + backoff`, or active if that has passed.
    fn enqueue_after_failure(&mut self, k: Key, qp: QueuedPod) {
        let at = qp.timestamp + qp.backoff(self.limits);
        if at <= Instant::now() {
            self.in_active.insert(k, ());
            self.active.push(Active(qp));
        } else {
            self.backoff.insert((at, k.clone()));
            self.backoff_pods.insert(k, qp);
        }
    }

    /// Backoffs that have run out become active.
    fn flush(&mut self, now: Instant) {
        while let Some((at, k)) = self.backoff.first().cloned() {
            if at > now {
                break;
            }
            self.backoff.pop_first();
            if let Some(qp) = self.backoff_pods.remove(&k) {
                self.in_active.insert(k, ());
                self.active.push(Active(qp));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"containers": [], "priority": priority}}))
                .unwrap(),
        )
    }

    fn name(qp: &QueuedPod) -> &str {
        qp.pod.metadata.name.as_deref().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn priority_then_longest_waiting() {
        let q = Queue::new();
        q.add(pod("low-first", 0));
        tokio::time::advance(Duration::from_millis(1)).await;
        q.add(pod("high", 10));
        q.add(pod("low-second", 0));
        q.add(pod("high", 10)); // already queued: no duplicate
        let order: Vec<String> = [q.pop().await, q.pop().await, q.pop().await]
            .iter()
            .map(|p| name(p.as_ref().unwrap()).to_string())
            .collect();
        assert_eq!(order, ["high", "low-first", "low-second"]);
        assert_eq!(q.lengths(), (0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_ten_seconds() {
        let mut qp =
            QueuedPod { pod: pod("p", 0), attempts: 1, initial: Instant::now(), timestamp: Instant::now(), cycle: 0 };
        let mut seen = Vec::new();
        for a in 1..=6 {
            qp.attempts = a;
            seen.push(qp.backoff((INITIAL_BACKOFF, MAX_BACKOFF)).as_secs());
        }
        assert_eq!(seen, [1, 2, 4, 8, 10, 10]);

        let q = Queue::new();
        q.add(pod("p", 0));
        let p = q.pop().await.unwrap();
        q.retry(p);
        assert_eq!(q.lengths(), (0, 1, 0));
        let start = Instant::now();
        let p = q.pop().await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(1), "one attempt: 1 s");
        q.retry(p);
        let start = Instant::now();
        q.pop().await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(2), "two attempts: 2 s");
    }

    #[tokio::test(start_paused = true)]
    async fn configured_backoff_limits_apply() {
        let q = Queue::with_backoff(Duration::from_secs(3), Duration::from_secs(4));
        q.add(pod("p", 0));
        let mut waited = Vec::new();
        for _ in 0..3 {
            let p = q.pop().await.unwrap();
            q.retry(p);
            let start = Instant::now();
            q.pop().await.map(|p| q.retry(p)).unwrap();
            waited.push((Instant::now() - start).as_secs());
        }
        // Attempts 1, 3, 5 wait 3 s, then the 4 s cap (3 s doubled is over it).
        assert_eq!(waited, [3, 4, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_wait_for_an_event() {
        let q = Queue::new();
        q.add(pod("p", 0));
        let p = q.pop().await.unwrap();
        q.unschedulable(p);
        assert_eq!(q.lengths(), (0, 0, 1));
        // Nothing happens without an event...
        assert!(tokio::time::timeout(Duration::from_secs(60), q.pop()).await.is_err());
        // ...a node added moves it; its backoff (1 s from the failure) is long over.
        q.move_all();
        assert_eq!(name(&q.pop().await.unwrap()), "p");

        // An event while the pod is tried sends it to backoff, not to wait for another event.
        q.add(pod("r", 0));
        let r = q.pop().await.unwrap();
        q.move_all();
        q.unschedulable(r);
        assert_eq!(q.lengths(), (0, 1, 0));
        let start = Instant::now();
        assert_eq!(name(&q.pop().await.unwrap()), "r");
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn updates_deletes_flush_and_close() {
        let q = Queue::new();
        q.add(pod("u", 0));
        let u = q.pop().await.unwrap();
        q.unschedulable(u);
        tokio::time::advance(Duration::from_secs(2)).await;
        let mut status_only = (*pod("u", 0)).clone();
        status_only.metadata.resource_version = Some("7".into());
        status_only.status = Some(Default::default());
        q.update(Arc::new(status_only));
        assert_eq!(q.lengths(), (0, 0, 1), "its own PodScheduled=False does not retry it");
        q.update(pod("u", 5)); // changed: may fit now
        let u = q.pop().await.unwrap();
        assert_eq!(u.pod.spec.as_ref().unwrap().priority, Some(5));
        q.unschedulable(u);
        q.delete("default/u");
        assert_eq!(q.lengths(), (0, 0, 0));

        // Bound elsewhere while being tried: the failed attempt does not requeue it.
        q.add(pod("taken", 0));
        let taken = q.pop().await.unwrap();
        q.delete("default/taken");
        q.retry(taken);
        assert_eq!(q.lengths(), (0, 0, 0));

        q.add(pod("old", 0));
        let old = q.pop().await.unwrap();
        q.unschedulable(old);
        tokio::time::advance(MAX_IN_UNSCHEDULABLE).await;
        q.flush_unschedulable();
        assert_eq!(name(&q.pop().await.unwrap()), "old");

        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.pop().await })
        };
        tokio::task::yield_now().await;
        q.close();
        assert!(waiter.await.unwrap().is_none());
    }
}
