//! The scheduler's loop: watches feed the [`Queue`] and the [`Cache`]; each popped pod is
//! filtered against every node, the feasible ones scored, the best chosen (ties shared), the
//! pod assumed there and bound through `pods/<name>/binding`; the outcome is reported as
//! upstream reports it (`Scheduled` / `FailedScheduling` events, the `PodScheduled`
//! condition). It acts only while its leader [`Term`] is current.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use rand::Rng;
use serde_json::json;

use super::cache::{node_name, Cache};
use super::framework::{fit_error, prioritize, select_host, Filter, NodeInfo, PodInfo, Score, Status};
use super::plugins::{default_filters, default_scores};
use super::queue::{key, Queue, QueuedPod};
use crate::leader_election::Term;

/// What a watch says, with each relist turned into the applies and deletes it implies (a
/// relist follows a lost watch: objects missing from it were deleted meanwhile).
enum Change<K> {
    /// Added or changed; `true` when it came from a (re)list.
    Applied(Arc<K>, bool),
    Deleted(Arc<K>),
    /// A (re)list has been applied in full.
    Listed,
}

/// Follows every object of `api` until the task is dropped, calling `on` for each change;
/// counts the first complete list in `synced`.
async fn follow<K>(api: Api<K>, synced: &tokio::sync::watch::Sender<usize>, mut on: impl FnMut(Change<K>))
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let object_key =
        |o: &K| format!("{}/{}", o.meta().namespace.as_deref().unwrap_or(""), o.meta().name.as_deref().unwrap_or(""));
    let mut known: HashMap<String, Arc<K>> = HashMap::new();
    let mut relist: Option<HashMap<String, Arc<K>>> = None;
    let mut first = true;
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(ev) = events.next().await {
        let Ok(ev) = ev else { continue };
        match ev {
            watcher::Event::Init => relist = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                if let Some(r) = relist.as_mut() {
                    r.insert(object_key(&o), Arc::new(o));
                }
            }
            watcher::Event::InitDone => {
                let fresh = relist.take().unwrap_or_default();
                for (_, gone) in known.iter().filter(|(k, _)| !fresh.contains_key(*k)) {
                    on(Change::Deleted(gone.clone()));
                }
                for o in fresh.values() {
                    on(Change::Applied(o.clone(), true));
                }
                known = fresh;
                on(Change::Listed);
                if std::mem::take(&mut first) {
                    synced.send_modify(|n| *n += 1);
                }
            }
            watcher::Event::Apply(o) => {
                let o = Arc::new(o);
                known.insert(object_key(&o), o.clone());
                on(Change::Applied(o, false));
            }
            watcher::Event::Delete(o) => {
                known.remove(&object_key(&o));
                on(Change::Deleted(Arc::new(o)));
            }
        }
    }
}

/// Upstream's default profile name: pods with no `schedulerName` get it.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// One scheduler profile bound to one API server client.
pub struct Scheduler {
    client: kube::Client,
    /// The `schedulerName` this scheduler serves.
    pub name: String,
    queue: Arc<Queue>,
    cache: Mutex<Cache>,
    filters: Vec<Box<dyn Filter>>,
    scores: Vec<(Box<dyn Score>, i64)>,
    /// How many of the two watches (nodes, pods) have listed once: scheduling waits for both,
    /// as upstream waits for its informers to sync (else a pod popped before the nodes are
    /// known would be judged against no nodes and wait out a backoff).
    synced: tokio::sync::watch::Sender<usize>,
    /// `percentageOfNodesToScore` (0: upstream's adaptive default).
    pub percentage_of_nodes_to_score: i32,
    /// Where the next cycle starts filtering (upstream's `nextStartNodeIndex`): cycles that
    /// stop early at enough feasible nodes take turns over all of them.
    next_start: AtomicUsize,
}

/// Upstream's `minFeasibleNodesToFind` and `minFeasibleNodesPercentageToFind`.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: i32 = 5;

/// Upstream's `numFeasibleNodesToFind`: how many feasible nodes a cycle looks for before it
/// stops filtering (all of them below 100 nodes; by default 50 % minus 1 % per 125 nodes, at
/// least 5 % and at least 100 nodes).
pub fn num_feasible_nodes_to_find(percentage: i32, all: usize) -> usize {
    if all < MIN_FEASIBLE_NODES_TO_FIND {
        return all;
    }
    let percentage =
        if percentage == 0 { (50 - (all / 125) as i32).max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND) } else { percentage };
    (all * percentage as usize / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

impl Scheduler {
    /// The default profile (upstream's default filters and score weights).
    pub fn new(client: kube::Client) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            client,
            name: DEFAULT_SCHEDULER_NAME.into(),
            queue: Queue::new(),
            cache: Mutex::new(Cache::default()),
            filters: default_filters(),
            scores: default_scores(),
            synced: tokio::sync::watch::channel(0).0,
            percentage_of_nodes_to_score: 0,
            next_start: AtomicUsize::new(0),
        })
    }

    /// Schedules until `term` ends: the leader's work.
    pub async fn run(self: Arc<Self>, term: Term) {
        let watches = [
            tokio::spawn(self.clone().watch_nodes()),
            tokio::spawn(self.clone().watch_pods()),
            tokio::spawn(self.clone().flush_unschedulable()),
        ];
        let mut synced = self.synced.subscribe();
        tokio::select! {
            _ = synced.wait_for(|n| *n >= 2) => {}
            _ = term.ended() => {}
        }
        loop {
            let popped = tokio::select! {
                p = self.queue.pop() => p,
                _ = term.ended() => None,
            };
            let Some(qp) = popped else { break };
            if !term.is_current() {
                self.queue.retry(qp);
                break;
            }
            self.schedule_one(qp, &term).await;
            // Bindings run on their own tasks; the cycles must not starve them (nor the
            // watches) on a busy runtime.
            tokio::task::yield_now().await;
        }
        self.queue.close();
        for w in watches {
            w.abort();
        }
    }

    async fn watch_nodes(self: Arc<Self>) {
        follow(Api::<Node>::all(self.client.clone()), &self.synced, |change| match change {
            Change::Applied(n, relisted) => {
                self.cache.lock().unwrap().set_node(n);
                // A node added or changed may take pods that fit nowhere before.
                if !relisted {
                    self.queue.move_all();
                }
            }
            Change::Deleted(n) => self.cache.lock().unwrap().remove_node(n.metadata.name.as_deref().unwrap_or("")),
            Change::Listed => self.queue.move_all(),
        })
        .await
    }

    async fn watch_pods(self: Arc<Self>) {
        follow(Api::<Pod>::all(self.client.clone()), &self.synced, |change| match change {
            Change::Applied(p, _) => self.pod_seen(p),
            Change::Deleted(p) => self.pod_deleted(&key(&p)),
            Change::Listed => {}
        })
        .await
    }

    /// Whether this scheduler should place `pod`: not placed, not being deleted, ours.
    fn wants(&self, pod: &Pod) -> bool {
        let ours =
            pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or(DEFAULT_SCHEDULER_NAME) == self.name;
        ours && node_name(pod).is_none() && pod.metadata.deletion_timestamp.is_none()
    }

    fn pod_seen(&self, pod: Arc<Pod>) {
        if self.wants(&pod) {
            self.queue.add(pod);
        } else {
            let k = key(&pod);
            self.queue.delete(&k);
            let freed = {
                let mut cache = self.cache.lock().unwrap();
                cache.set_pod(pod.clone());
                !super::cache::holds_resources(&pod)
            };
            if freed && node_name(&pod).is_some() {
                // A pod that finished frees room others may be waiting for.
                self.queue.move_all();
            }
        }
    }

    fn pod_deleted(&self, k: &str) {
        self.queue.delete(k);
        self.cache.lock().unwrap().remove_pod(k);
        // A deleted pod may free what another was waiting for.
        self.queue.move_all();
    }

    async fn flush_unschedulable(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            self.queue.flush_unschedulable();
        }
    }

    /// One scheduling cycle; if a node was found, the pod is assumed there and its binding
    /// cycle runs on its own task (as upstream's goroutine), so the next pod's cycle starts
    /// at once and already sees this one on its node.
    async fn schedule_one(self: &Arc<Self>, qp: QueuedPod, term: &Term) {
        let pod = PodInfo::new(qp.pod.clone());
        let nodes = self.cache.lock().unwrap().snapshot();
        let (feasible, statuses) = self.filter(&pod, &nodes);
        if feasible.is_empty() {
            let msg = if nodes.is_empty() {
                "no nodes available to schedule pods".to_string()
            } else {
                fit_error(nodes.len(), &statuses, None)
            };
            tracing::info!(pod = %key(&qp.pod), "unable to schedule pod: {msg}");
            let me = self.clone();
            let pod = qp.pod.clone();
            tokio::spawn(async move { me.report_unschedulable(&pod, &msg).await });
            self.queue.unschedulable(qp);
            return;
        }
        let totals = prioritize(&pod, &feasible, &self.scores);
        let chosen = select_host(&totals, |n| rand::thread_rng().gen_range(0..n)).unwrap_or(0);
        let node = feasible[chosen].name().to_string();
        let k = key(&qp.pod);
        self.cache.lock().unwrap().assume(qp.pod.clone(), &node);
        if !term.is_current() {
            self.cache.lock().unwrap().forget(&k);
            self.queue.retry(qp);
            return;
        }
        let (evaluated, feasible) = (statuses.len(), feasible.len());
        let me = self.clone();
        tokio::spawn(async move { me.binding_cycle(qp, node, evaluated, feasible).await });
    }

    /// Binds an assumed pod; on failure it no longer counts and goes back to the queue.
    async fn binding_cycle(&self, qp: QueuedPod, node: String, evaluated: usize, feasible: usize) {
        let k = key(&qp.pod);
        match self.bind(&qp.pod, &node).await {
            Ok(()) => {
                tracing::info!(pod = %k, node = %node, evaluatedNodes = evaluated, feasibleNodes = feasible, "Successfully bound pod to node");
                self.queue.done(&k);
                let ns = qp.pod.metadata.namespace.clone().unwrap_or_default();
                let name = qp.pod.metadata.name.clone().unwrap_or_default();
                let msg = format!("Successfully assigned {ns}/{name} to {node}");
                self.event(&qp.pod, "Normal", "Scheduled", "Binding", &msg).await;
            }
            Err(e) => {
                self.cache.lock().unwrap().forget(&k);
                let msg = format!("running Bind plugin \"DefaultBinder\": {e}");
                tracing::info!(pod = %k, "{msg}");
                self.event(&qp.pod, "Warning", "FailedScheduling", "Scheduling", &msg).await;
                self.queue.retry(qp);
            }
        }
    }

    /// Nodes through the filters in order (the first that rules a node out gives its
    /// reasons), from where the last cycle stopped, until enough are feasible
    /// ([`num_feasible_nodes_to_find`]): the feasible nodes, and the status of each node
    /// looked at (all of them when too few fit, so a failure's message counts every node).
    fn filter<'a>(&self, pod: &PodInfo, nodes: &'a [Arc<NodeInfo>]) -> (Vec<&'a NodeInfo>, Vec<Status>) {
        let want = num_feasible_nodes_to_find(self.percentage_of_nodes_to_score, nodes.len());
        let start = if nodes.is_empty() { 0 } else { self.next_start.load(Ordering::Relaxed) % nodes.len() };
        let mut feasible = Vec::new();
        let mut statuses = Vec::with_capacity(nodes.len());
        for i in 0..nodes.len() {
            if feasible.len() >= want {
                break;
            }
            let n = &nodes[(start + i) % nodes.len()];
            let status = self.filters.iter().map(|f| f.filter(pod, n)).find(|s| !s.fits()).unwrap_or(Status::Fits);
            if status.fits() {
                feasible.push(&**n);
            }
            statuses.push(status);
        }
        if !nodes.is_empty() {
            self.next_start.store((start + statuses.len()) % nodes.len(), Ordering::Relaxed);
        }
        (feasible, statuses)
    }

    /// upstream's DefaultBinder: a Binding of the pod (by uid) to the node.
    async fn bind(&self, pod: &Pod, node: &str) -> Result<(), kube::Error> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": ns, "uid": pod.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        api.create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
            .await
            .map(|_| ())
    }

    /// The pod fits nowhere: a `FailedScheduling` event and the `PodScheduled=False` condition
    /// with reason `Unschedulable`, as upstream writes them.
    async fn report_unschedulable(&self, pod: &Pod, msg: &str) {
        self.event(pod, "Warning", "FailedScheduling", "Scheduling", msg).await;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": msg,
            "lastProbeTime": null,
            "lastTransitionTime": Timestamp::now().to_string(),
        }]}});
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch)).await {
            tracing::info!(pod = %key(pod), "could not record PodScheduled=False: {e}");
        }
    }

    async fn event(&self, pod: &Pod, type_: &str, reason: &str, action: &str, msg: &str) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(ns.clone()),
                name: Some(name),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(msg.into()),
            type_: Some(type_.into()),
            action: Some(action.into()),
            source: Some(EventSource { component: Some(self.name.clone()), host: None }),
            reporting_component: Some(self.name.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::info!("could not record event {reason} for {}: {e}", msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::num_feasible_nodes_to_find as find;

    #[test]
    fn feasible_nodes_to_find_as_upstream() {
        assert_eq!(find(0, 50), 50);
        assert_eq!(find(0, 100), 100);
        assert_eq!(find(0, 1000), 420);
        assert_eq!(find(0, 5000), 500);
        assert_eq!(find(0, 10000), 500);
        assert_eq!(find(100, 1000), 1000);
        assert_eq!(find(1, 1000), 100);
    }
}
