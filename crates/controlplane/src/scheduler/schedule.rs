//! The scheduler's loop: watches feed the [`Queue`] and the [`Cache`]; each popped pod is
//! filtered against every node, the feasible ones scored, the best chosen (ties shared), the
//! pod assumed there and bound through `pods/<name>/binding`; the outcome is reported as
//! upstream reports it (`Scheduled` / `FailedScheduling` events, the `PodScheduled`
//! condition). It acts only while its leader [`Term`] is current.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference, Pod, ReplicationController, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use rand::Rng;
use serde_json::json;

use super::cache::{node_name, Cache};
use super::config::SchedulerConfiguration;
use super::framework::{fit_error, select_host, CycleState, NodeInfo, PodInfo, Snapshot, Status};
use super::preemption::{self, Candidate, Outcome};
use super::profile::Profile;
use super::queue::{key, Queue, QueuedPod};
use super::snapshot::Objects;
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

/// `namespace/name`, or the name of a cluster-scoped object.
fn object_key<K: kube::Resource>(o: &K) -> String {
    match o.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", o.meta().name.as_deref().unwrap_or("")),
        None => o.meta().name.clone().unwrap_or_default(),
    }
}

/// How many watches must list once before scheduling starts: nodes, pods, namespaces,
/// services, replication controllers, replica sets, stateful sets.
const WATCHES: usize = 7;

/// Follows every object of `api` until the task is dropped, calling `on` for each change;
/// counts the first complete list in `synced`. A kind the API server does not serve (404 on
/// the list) counts as listed, empty: there is nothing of it to wait for.
async fn follow<K>(api: Api<K>, synced: &tokio::sync::watch::Sender<usize>, mut on: impl FnMut(Change<K>))
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let mut known: HashMap<String, Arc<K>> = HashMap::new();
    let mut relist: Option<HashMap<String, Arc<K>>> = None;
    let mut first = true;
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(ev) = events.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) if s.code == 404 => {
                if std::mem::take(&mut first) {
                    tracing::info!("{} not served: none counted", K::plural(&()));
                    synced.send_modify(|n| *n += 1);
                }
                continue;
            }
            Err(_) => continue,
        };
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
                known.insert(object_key(o.as_ref()), o.clone());
                on(Change::Applied(o, false));
            }
            watcher::Event::Delete(o) => {
                known.remove(&object_key(&o));
                on(Change::Deleted(Arc::new(o)));
            }
        }
    }
}

/// The profile a pod asks for (`spec.schedulerName`; none: the default).
fn scheduler_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_SCHEDULER_NAME)
}

/// Upstream's default profile name: pods with no `schedulerName` get it.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// The scheduler: its profiles (one per `schedulerName` it serves) over one queue and one
/// cache, as upstream's (so profiles' decisions see each other's assumed pods), bound to one
/// API server client.
pub struct Scheduler {
    client: kube::Client,
    queue: Arc<Queue>,
    cache: Mutex<Cache>,
    profiles: HashMap<String, Profile>,
    /// This machine's name, for the events' reportingInstance.
    host: String,
    /// How many of the watches have listed once: scheduling waits for all of them, as
    /// upstream waits for its informers to sync (else a pod popped before the nodes are known
    /// would be judged against no nodes and wait out a backoff).
    synced: tokio::sync::watch::Sender<usize>,
}

impl Scheduler {
    /// Upstream's default configuration: the `default-scheduler` profile.
    pub fn new(client: kube::Client) -> Arc<Scheduler> {
        let profiles = HashMap::from([(DEFAULT_SCHEDULER_NAME.to_string(), super::plugins::default_profile())]);
        Scheduler::with_profiles(client, Queue::new(), profiles)
    }

    /// The scheduler a `KubeSchedulerConfiguration` describes.
    pub fn with_config(client: kube::Client, cfg: &SchedulerConfiguration) -> Arc<Scheduler> {
        let profiles = cfg
            .profiles
            .iter()
            .map(|p| (p.scheduler_name.clone(), super::plugins::profile(p, cfg.percentage_of_nodes_to_score)))
            .collect();
        Scheduler::with_profiles(client, Queue::with_backoff(cfg.pod_initial_backoff, cfg.pod_max_backoff), profiles)
    }

    fn with_profiles(client: kube::Client, queue: Arc<Queue>, profiles: HashMap<String, Profile>) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            client,
            queue,
            cache: Mutex::new(Cache::default()),
            profiles,
            host: hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
            synced: tokio::sync::watch::channel(0).0,
        })
    }

    /// Schedules until `term` ends: the leader's work.
    pub async fn run(self: Arc<Self>, term: Term) {
        let watches = [
            tokio::spawn(self.clone().watch_nodes()),
            tokio::spawn(self.clone().watch_pods()),
            tokio::spawn(self.clone().flush_unschedulable()),
            tokio::spawn(self.clone().watch_objects::<Namespace>(|o| &mut o.namespaces)),
            tokio::spawn(self.clone().watch_objects::<Service>(|o| &mut o.services)),
            tokio::spawn(self.clone().watch_objects::<ReplicationController>(|o| &mut o.replication_controllers)),
            tokio::spawn(self.clone().watch_objects::<ReplicaSet>(|o| &mut o.replica_sets)),
            tokio::spawn(self.clone().watch_objects::<StatefulSet>(|o| &mut o.stateful_sets)),
        ];
        let mut synced = self.synced.subscribe();
        tokio::select! {
            _ = synced.wait_for(|n| *n >= WATCHES) => {}
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

    /// Keeps one kind of the objects plugins look up (namespaces, the spreading defaults'
    /// selectors) in the cache.
    async fn watch_objects<K>(self: Arc<Self>, field: fn(&mut Objects) -> &mut HashMap<String, Arc<K>>)
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + k8s_openapi::serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        follow(Api::<K>::all(self.client.clone()), &self.synced, |change| {
            let mut cache = self.cache.lock().unwrap();
            match change {
                Change::Applied(o, _) => {
                    field(cache.objects_mut()).insert(object_key(o.as_ref()), o);
                }
                Change::Deleted(o) => {
                    field(cache.objects_mut()).remove(&object_key(o.as_ref()));
                }
                Change::Listed => {}
            }
        })
        .await
    }

    /// Whether this scheduler should place `pod` now: one of its profiles', not placed, not
    /// being deleted, and (with the SchedulingGates plugin, upstream's PreEnqueue) not gated.
    fn wants(&self, pod: &Pod) -> bool {
        let gated = pod.spec.as_ref().and_then(|s| s.scheduling_gates.as_ref()).is_some_and(|g| !g.is_empty());
        self.profiles.get(scheduler_name(pod)).is_some_and(|p| !(gated && p.scheduling_gates))
            && node_name(pod).is_none()
            && pod.metadata.deletion_timestamp.is_none()
    }

    fn pod_seen(&self, pod: Arc<Pod>) {
        if self.wants(&pod) {
            self.cache.lock().unwrap().pending_pod(pod.clone());
            self.queue.add(pod);
        } else {
            let k = key(&pod);
            self.queue.delete(&k);
            let (freed, arrived) = {
                let mut cache = self.cache.lock().unwrap();
                let known = cache.bound(&k);
                cache.set_pod(pod.clone());
                let holds = super::cache::holds_resources(&pod);
                (!holds, holds && !known)
            };
            // A pod that finished frees room others may be waiting for; a pod newly bound may
            // be what another's affinity waits for (upstream's AssignedPodAdded).
            if (freed && node_name(&pod).is_some()) || arrived {
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

    /// One scheduling cycle, under the pod's profile; if a node was found, the pod is assumed
    /// there and its binding cycle runs on its own task (as upstream's goroutine), so the next
    /// pod's cycle starts at once and already sees this one on its node.
    async fn schedule_one(self: &Arc<Self>, qp: QueuedPod, term: &Term) {
        let Some(profile) = self.profiles.get(scheduler_name(&qp.pod)) else {
            return self.queue.done(&key(&qp.pod));
        };
        let pod = PodInfo::new(qp.pod.clone());
        let snapshot = self.cache.lock().unwrap().snapshot();
        let mut state = profile.pre_filter(&pod, &snapshot);
        let (feasible, statuses) = self.find_nodes(profile, &state, &pod, &snapshot);
        if feasible.is_empty() {
            return self.unschedulable(profile, qp, &pod, &state, &snapshot, &statuses, term).await;
        }
        let totals = profile.prioritize(&mut state, &pod, &snapshot, &feasible);
        let chosen = select_host(&totals, |n| rand::thread_rng().gen_range(0..n)).unwrap_or(0);
        let node = feasible[chosen].name().to_string();
        let k = key(&qp.pod);
        self.cache.lock().unwrap().assume(qp.pod.clone(), &node);
        if !term.is_current() {
            self.cache.lock().unwrap().forget(&k);
            self.queue.retry(qp);
            return;
        }
        let (evaluated, feasible) = (statuses.len().max(1), feasible.len());
        let me = self.clone();
        tokio::spawn(async move { me.binding_cycle(qp, node, evaluated, feasible).await });
    }

    /// Binds an assumed pod; on failure it no longer counts and goes back to the queue.
    async fn binding_cycle(&self, qp: QueuedPod, node: String, evaluated: usize, feasible: usize) {
        let k = key(&qp.pod);
        let component = scheduler_name(&qp.pod);
        match self.bind(&qp.pod, &node).await {
            Ok(()) => {
                tracing::info!(pod = %k, node = %node, evaluatedNodes = evaluated, feasibleNodes = feasible, "Successfully bound pod to node");
                self.queue.done(&k);
                let ns = qp.pod.metadata.namespace.clone().unwrap_or_default();
                let name = qp.pod.metadata.name.clone().unwrap_or_default();
                let msg = format!("Successfully assigned {ns}/{name} to {node}");
                self.event(component, &qp.pod, None, "Normal", "Scheduled", "Binding", &msg).await;
            }
            Err(e) => {
                self.cache.lock().unwrap().forget(&k);
                let msg = format!("running Bind plugin \"DefaultBinder\": {e}");
                tracing::info!(pod = %k, "{msg}");
                self.event(component, &qp.pod, None, "Warning", "FailedScheduling", "Scheduling", &msg).await;
                self.queue.retry(qp);
            }
        }
    }

    /// The pod fits no node: PostFilter (preemption, while this scheduler leads), then the
    /// failure reported as upstream's `handleSchedulingFailure` does, and the pod queued as
    /// unschedulable (its victims' deletion will move it).
    #[allow(clippy::too_many_arguments)]
    async fn unschedulable(
        &self,
        profile: &Profile,
        qp: QueuedPod,
        pod: &PodInfo,
        state: &CycleState,
        snapshot: &Snapshot,
        statuses: &[Status],
        term: &Term,
    ) {
        if snapshot.nodes.is_empty() {
            let msg = "no nodes available to schedule pods";
            tracing::info!(pod = %key(&qp.pod), "unable to schedule pod: {msg}");
            self.report_unschedulable(&qp.pod, msg, None).await;
            return self.queue.unschedulable(qp);
        }
        // `nominate`: None leaves the pod's nomination as it is, Some(None) clears it.
        let (post, nominate) = match preemption::preempt(profile, state, pod, snapshot, statuses) {
            Outcome::NotEligible(msg) => (Some(msg), None),
            Outcome::NoCandidate(msg) => (Some(msg), Some(None)),
            Outcome::Preempt(c) => {
                if !term.is_current() {
                    return self.queue.retry(qp);
                }
                let node = c.node.clone();
                self.prepare_candidate(&qp.pod, c, snapshot).await;
                (None, Some(Some(node)))
            }
        };
        let msg = fit_error(snapshot.nodes.len(), statuses, post.as_deref());
        tracing::info!(pod = %key(&qp.pod), "unable to schedule pod: {msg}");
        // Cleared only if there is one to clear (upstream's ModeOverride with "").
        let had = qp.pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).is_some_and(|n| !n.is_empty());
        let nominate = nominate.filter(|n| n.is_some() || had);
        self.report_unschedulable(&qp.pod, &msg, nominate.as_ref().map(Option::as_deref)).await;
        self.queue.unschedulable(qp);
    }

    /// The nodes the pod passes the filters on, and every node's status. A pod nominated to a
    /// node by an earlier preemption tries that node alone first (upstream's
    /// `evaluateNominatedNode`): its victims made room there.
    fn find_nodes<'a>(
        &self,
        profile: &Profile,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &'a Snapshot,
    ) -> (Vec<&'a NodeInfo>, Vec<Status>) {
        let nominated = pod.pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref());
        if let Some(node) = nominated.and_then(|n| snapshot.node(n)) {
            if profile.filter_on(state, pod, node, snapshot).fits() {
                return (vec![node], Vec::new());
            }
        }
        profile.find_feasible(state, pod, snapshot)
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

    /// Upstream's `prepareCandidate`: each victim is marked `DisruptionTarget` (reason
    /// `PreemptionByScheduler`) and deleted gracefully, with a `Preempted` event; pods of lower
    /// priority nominated to the node lose their nomination (the room is taken); the pod is
    /// nominated there at once so that the next cycles keep the room for it.
    async fn prepare_candidate(&self, pod: &Arc<Pod>, c: Candidate, snapshot: &Snapshot) {
        self.cache.lock().unwrap().nominate(pod.clone(), &c.node);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        for v in &c.victims {
            let (ns, name) = (v.namespace().to_string(), v.name().to_string());
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let condition = json!({"status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": format!("{}: preempting to accommodate a higher priority pod", scheduler_name(pod)),
                "lastTransitionTime": Timestamp::now().to_string(),
            }]}});
            if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(condition)).await {
                tracing::info!(pod = %key(&v.pod), "could not mark the victim: {e}");
            }
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    let msg = format!("Preempted by pod {uid} on node {}", c.node);
                    self.event(scheduler_name(pod), &v.pod, Some(pod), "Normal", "Preempted", "Preempting", &msg).await;
                }
                Err(e) => tracing::info!(pod = %key(&v.pod), "could not preempt: {e}"),
            }
        }
        for p in preemption::lower_priority_nominated(pod, &c.node, snapshot) {
            self.cache.lock().unwrap().unnominate(&key(&p.pod));
            let api: Api<Pod> = Api::namespaced(self.client.clone(), p.namespace());
            let clear = json!({"status": {"nominatedNodeName": null}});
            if let Err(e) = api.patch_status(p.name(), &PatchParams::default(), &Patch::Merge(clear)).await {
                tracing::info!(pod = %key(&p.pod), "could not clear the nomination: {e}");
            }
        }
    }

    /// The pod fits nowhere: a `FailedScheduling` event and the `PodScheduled=False` condition
    /// with reason `Unschedulable`, as upstream writes them, with `status.nominatedNodeName`
    /// set or cleared (`Some(None)`) as preemption decided.
    async fn report_unschedulable(&self, pod: &Pod, msg: &str, nominate: Option<Option<&str>>) {
        self.event(scheduler_name(pod), pod, None, "Warning", "FailedScheduling", "Scheduling", msg).await;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if nominate == Some(None) {
            self.cache.lock().unwrap().unnominate(&key(pod));
        }
        let mut patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": msg,
            "lastProbeTime": null,
            "lastTransitionTime": Timestamp::now().to_string(),
        }]}});
        if let Some(node) = nominate {
            patch["status"]["nominatedNodeName"] = json!(node);
        }
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch)).await {
            tracing::info!(pod = %key(pod), "could not record PodScheduled=False: {e}");
        }
    }

    /// An event about `pod` (and the `related` one, e.g. a victim's preemptor), written as
    /// upstream's scheduler writes it: through events.k8s.io/v1, from the profile `component`
    /// (reportingController) and `<component>-<hostname>` (reportingInstance).
    #[allow(clippy::too_many_arguments)]
    async fn event(
        &self,
        component: &str,
        pod: &Pod,
        related: Option<&Pod>,
        type_: &str,
        reason: &str,
        action: &str,
        msg: &str,
    ) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let now = Timestamp::now();
        let reference = |p: &Pod| ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: p.metadata.namespace.clone(),
            name: p.metadata.name.clone(),
            uid: p.metadata.uid.clone(),
            resource_version: p.metadata.resource_version.clone(),
            ..ObjectReference::default()
        };
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            regarding: Some(reference(pod)),
            related: related.map(reference),
            reason: Some(reason.into()),
            note: Some(msg.into()),
            type_: Some(type_.into()),
            action: Some(action.into()),
            reporting_controller: Some(component.to_string()),
            reporting_instance: Some(format!("{component}-{}", self.host)),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::info!("could not record event {reason} for {}: {e}", msg);
        }
    }
}
