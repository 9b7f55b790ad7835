//! The scheduling framework, after upstream's: a pod is checked against each node by filter
//! plugins (any one may rule a node out, with a reason users read in the `FailedScheduling`
//! event) and the nodes left are ranked by score plugins. Each plugin is one small trait
//! object, so a new rule is one file and one line in the profile.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::quantity;
use super::selector::PodAffinity;
pub use super::snapshot::Snapshot;

/// Resources as the scheduler adds them up: CPU in millicores, the rest in units; anything
/// beyond cpu, memory, ephemeral-storage and pods (extended resources, hugepages) by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Only meaningful for a node's allocatable: how many pods it takes.
    pub allowed_pods: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// A `ResourceList` (`requests`, `allocatable`, `overhead`) as numbers; unparsable
    /// quantities count as zero, as the API server would not have stored them.
    pub fn from_list(
        list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            let q = q.0.as_str();
            match name.as_str() {
                "cpu" => r.milli_cpu = quantity::milli(q).unwrap_or(0),
                "memory" => r.memory = quantity::value(q).unwrap_or(0),
                "ephemeral-storage" => r.ephemeral_storage = quantity::value(q).unwrap_or(0),
                "pods" => r.allowed_pods = quantity::value(q).unwrap_or(0),
                // `storage` is a volume's, never a pod's or a node's to schedule by.
                "storage" => {}
                other => {
                    r.scalar.insert(other.to_string(), quantity::value(q).unwrap_or(0));
                }
            }
        }
        r
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Each resource the larger of the two.
    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0 && self.memory == 0 && self.ephemeral_storage == 0 && self.scalar.values().all(|v| *v == 0)
    }
}

/// What a pod asks of a node, as upstream's `PodRequests` counts it: the sum of its
/// containers, or the largest init container if that is more (sidecars, init containers with
/// `restartPolicy: Always`, run beside everything after them and so add up), plus overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else { return Resources::default() };
    let requests = |c: &k8s_openapi::api::core::v1::Container| {
        Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
    };
    let mut reqs = Resources::default();
    for c in &spec.containers {
        reqs.add(&requests(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let own = requests(c);
        let during = if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&own);
            sidecars.add(&own);
            sidecars.clone()
        } else {
            let mut t = own;
            t.add(&sidecars);
            t
        };
        init_max.max_with(&during);
    }
    reqs.max_with(&init_max);
    if let Some(overhead) = &spec.overhead {
        reqs.add(&Resources::from_list(Some(overhead)));
    }
    reqs
}

/// Upstream's `DefaultMilliCPURequest` and `DefaultMemoryRequest`: what scoring counts for a
/// container that requests no CPU or memory, so that such pods still spread.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// [`pod_requests`] with the defaults above for every container that sets no CPU or memory
/// request (upstream's `NonMissingContainerRequests`): what the spreading scores count.
pub fn pod_requests_non_zero(pod: &Pod) -> Resources {
    let mut pod = pod.clone();
    if let Some(spec) = &mut pod.spec {
        let fill = |c: &mut k8s_openapi::api::core::v1::Container| {
            let requests =
                c.resources.get_or_insert_with(Default::default).requests.get_or_insert_with(Default::default);
            use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
            requests.entry("cpu".into()).or_insert_with(|| Quantity(format!("{DEFAULT_MILLI_CPU_REQUEST}m")));
            requests.entry("memory".into()).or_insert_with(|| Quantity(DEFAULT_MEMORY_REQUEST.to_string()));
        };
        spec.containers.iter_mut().for_each(fill);
        spec.init_containers.iter_mut().flatten().for_each(fill);
    }
    pod_requests(&pod)
}

/// A pod with what the plugins ask of it worked out once.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub requests: Resources,
    pub non_zero_requests: Resources,
    /// Its inter-pod (anti-)affinity terms, parsed (shared: snapshots clone every PodInfo).
    pub affinity: Arc<PodAffinity>,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let requests = pod_requests(&pod);
        let non_zero_requests = pod_requests_non_zero(&pod);
        let affinity = Arc::new(PodAffinity::of(&pod));
        PodInfo { pod, requests, non_zero_requests, affinity }
    }

    pub fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or("")
    }

    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("")
    }

    /// `spec.priority` (filled from the priority class at admission), 0 when unset.
    pub fn priority(&self) -> i32 {
        pod_priority(&self.pod)
    }
}

pub fn pod_priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// A node with the pods bound (or assumed bound) to it and what they request.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub pods: Vec<PodInfo>,
    pub requested: Resources,
    /// The pods' [`pod_requests_non_zero`], for scoring.
    pub non_zero_requested: Resources,
    pub allocatable: Resources,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let allocatable = Resources::from_list(node.status.as_ref().and_then(|s| s.allocatable.as_ref()));
        NodeInfo {
            node,
            pods: Vec::new(),
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            allocatable,
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    pub fn add_pod(&mut self, pod: PodInfo) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.add(&pod.non_zero_requests);
        self.pods.push(pod);
    }

    /// Takes the pod `namespace/name` off the node, if it is there.
    pub fn remove_pod(&mut self, key: &str) {
        let Some(i) = self.pods.iter().position(|p| super::queue::key(&p.pod) == key) else { return };
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.non_zero_requested.sub(&p.non_zero_requests);
    }
}

/// A filter's verdict on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Fits,
    /// Ruled out; preemption of lower-priority pods might change that.
    Unschedulable(Vec<String>),
    /// Ruled out whatever is preempted (a taint, a name, a selector).
    UnschedulableAndUnresolvable(Vec<String>),
}

impl Status {
    pub fn unschedulable(reason: impl Into<String>) -> Status {
        Status::Unschedulable(vec![reason.into()])
    }

    pub fn unresolvable(reason: impl Into<String>) -> Status {
        Status::UnschedulableAndUnresolvable(vec![reason.into()])
    }

    pub fn fits(&self) -> bool {
        matches!(self, Status::Fits)
    }

    pub fn reasons(&self) -> &[String] {
        match self {
            Status::Fits => &[],
            Status::Unschedulable(r) | Status::UnschedulableAndUnresolvable(r) => r,
        }
    }
}

/// What plugins work out once per scheduling cycle and read for every node (upstream's
/// `CycleState`), each under its plugin's key. Preemption clones it per node it tries, so
/// every entry can be cloned.
#[derive(Default)]
pub struct CycleState {
    data: HashMap<&'static str, Box<dyn StateData>>,
}

/// One plugin's entry in the [`CycleState`]: any clonable value.
pub trait StateData: Send + Sync {
    fn clone_data(&self) -> Box<dyn StateData>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_data(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Clone for CycleState {
    fn clone(&self) -> CycleState {
        CycleState { data: self.data.iter().map(|(k, v)| (*k, (**v).clone_data())).collect() }
    }
}

impl CycleState {
    pub fn write<T: StateData + 'static>(&mut self, key: &'static str, value: T) {
        self.data.insert(key, Box::new(value));
    }

    /// The entry, if the plugin wrote one this cycle (none: it skipped this pod).
    pub fn read<T: 'static>(&self, key: &str) -> Option<&T> {
        (**self.data.get(key)?).as_any().downcast_ref()
    }

    pub fn read_mut<T: 'static>(&mut self, key: &str) -> Option<&mut T> {
        (**self.data.get_mut(key)?).as_any_mut().downcast_mut()
    }
}

/// Work a filter does once per cycle over the whole cluster (upstream's PreFilterPlugin with
/// its PreFilterExtensions): it writes what its [`Filter`] reads into the [`CycleState`], or
/// nothing if the pod gives it nothing to check. `add_pod` / `remove_pod` keep that state
/// right when preemption takes pods off a node, or nominated pods are counted on one.
pub trait PreFilter: Send + Sync {
    fn name(&self) -> &'static str;
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot);
    fn add_pod(&self, _state: &mut CycleState, _pod: &PodInfo, _added: &PodInfo, _node: &NodeInfo) {}
    fn remove_pod(&self, _state: &mut CycleState, _pod: &PodInfo, _removed: &PodInfo, _node: &NodeInfo) {}
}

/// A rule that may keep a pod off a node (upstream's FilterPlugin).
pub trait Filter: Send + Sync {
    /// Upstream's plugin name (`NodeResourcesFit`, `TaintToleration`, ...).
    fn name(&self) -> &'static str;
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// Work a score does once per cycle (upstream's PreScorePlugin): over the nodes that passed
/// the filters and, where upstream looks further, the whole snapshot.
pub trait PreScore: Send + Sync {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot, feasible: &[&NodeInfo]);
}

/// Upstream's `MaxNodeScore`: every score plugin ranks a node in 0..=100.
pub const MAX_NODE_SCORE: i64 = 100;

/// A preference among the nodes that passed the filters (upstream's ScorePlugin with its
/// optional NormalizeScore). The profile weighs each plugin.
pub trait Score: Send + Sync {
    fn name(&self) -> &'static str;
    /// The raw score of one node (0..=100 unless [`Score::normalize`] maps it there).
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// Maps the raw scores of all candidate nodes (`nodes[i]` scored `scores[i]`) to 0..=100
    /// (default: already there).
    fn normalize(&self, _state: &CycleState, _nodes: &[&NodeInfo], _scores: &mut [i64]) {}
}

/// Upstream's `DefaultNormalizeScore`: scales so the highest is 100 (or, with `reverse`, so
/// the highest becomes 0 and zero becomes 100); all zero stays 0 (or becomes 100 reversed).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for s in scores.iter_mut() {
        let scaled = if max == 0 { 0 } else { MAX_NODE_SCORE * *s / max };
        *s = if reverse { MAX_NODE_SCORE - scaled } else { scaled };
    }
}

/// The index of a highest total, chosen uniformly among equals (upstream's reservoir sampling
/// in `selectHost`), so equal nodes share the load; `pick(n)` returns a number in 0..n.
pub fn select_host(totals: &[i64], mut pick: impl FnMut(usize) -> usize) -> Option<usize> {
    let max = *totals.iter().max()?;
    let best: Vec<usize> = (0..totals.len()).filter(|&i| totals[i] == max).collect();
    Some(best[pick(best.len())])
}

/// Why a pod fits no node, worded as upstream's `FitError`: "0/3 nodes are available: 1
/// node(s) had untolerated taint {k: v}, 2 Insufficient cpu." with each reason counted over
/// the nodes and the counts sorted as strings, then what preemption found, if anything, each
/// part followed by a period (upstream's `SeparatorFormat`; preemption's own message is a
/// FitError ending in one already, hence upstream's "... for incoming pod..").
pub fn fit_error(nodes: usize, statuses: &[Status], post_filter: Option<&str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in statuses {
        for r in s.reasons() {
            *counts.entry(r.as_str()).or_default() += 1;
        }
    }
    let mut reasons: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    reasons.sort();
    let mut msg = format!("0/{nodes} nodes are available:");
    if !reasons.is_empty() {
        msg.push_str(&format!(" {}.", reasons.join(", ")));
    }
    if let Some(p) = post_filter {
        msg.push_str(&format!(" {p}."));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn requests_count_containers_init_containers_sidecars_and_overhead() {
        let c = |cpu: &str, mem: &str| json!({"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}});
        // Two containers: 300m; one init container of 500m is more.
        let p = pod(
            json!({"spec": {"containers": [c("100m", "1Mi"), c("200m", "1Mi")], "initContainers": [c("500m", "1Mi")]}}),
        );
        assert_eq!((pod_requests(&p).milli_cpu, pod_requests(&p).memory), (500, 2 << 20));
        // A sidecar (restartPolicy Always) adds to the containers and to later init containers.
        let mut side = c("100m", "0");
        side["restartPolicy"] = json!("Always");
        let p = pod(
            json!({"spec": {"containers": [c("200m", "0")], "initContainers": [side, c("250m", "0")], "overhead": {"cpu": "10m"}}}),
        );
        // containers 200 + sidecar 100 = 300; the init container runs beside the sidecar: 350.
        assert_eq!(pod_requests(&p).milli_cpu, 350 + 10);
        let p =
            pod(json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": "2"}}}]}}));
        assert_eq!(pod_requests(&p).scalar.get("nvidia.com/gpu"), Some(&2));
    }

    #[test]
    fn scores_are_normalized_weighted_and_ties_shared() {
        let mut s = vec![0, 2, 4];
        default_normalize(&mut s, false);
        assert_eq!(s, [0, 50, 100]);
        let mut s = vec![0, 2, 4];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 50, 0]);
        let mut s = vec![0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 100]);
        assert_eq!(select_host(&[10, 30, 30], |n| n - 1), Some(2));
        assert_eq!(select_host(&[10, 30, 30], |_| 0), Some(1));
        assert_eq!(select_host(&[], |_| 0), None);
    }

    #[test]
    fn non_zero_requests_fill_only_what_is_missing() {
        let p = pod(json!({"spec": {"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"requests": {"cpu": "0", "memory": "1Gi"}}},
        ]}}));
        let r = pod_requests_non_zero(&p);
        assert_eq!((r.milli_cpu, r.memory), (100, DEFAULT_MEMORY_REQUEST + (1 << 30)));
        assert!(pod_requests(&p).milli_cpu == 0);
    }

    #[test]
    fn fit_error_reads_as_upstream() {
        let taint = Status::unresolvable("node(s) had untolerated taint {dedicated: gpu}");
        let cpu = Status::unschedulable("Insufficient cpu");
        let both = Status::Unschedulable(vec!["Insufficient cpu".into(), "Insufficient memory".into()]);
        assert_eq!(
            fit_error(3, &[taint, cpu, both], Some("preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.")),
            "0/3 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.."
        );
        assert_eq!(fit_error(0, &[], None), "0/0 nodes are available:");
    }
}
