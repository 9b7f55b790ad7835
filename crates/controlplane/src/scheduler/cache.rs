//! What the scheduler knows of the cluster: every node with the pods on it (bound, or
//! *assumed*: chosen by this scheduler and being bound, not yet seen bound by the watch), kept
//! up to date incrementally from the Node and Pod watches, so that each decision sees the
//! previous ones at once; the pods nominated to nodes by preemption (upstream keeps these in
//! the queue's nominator); and the other watched objects plugins look up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::framework::{NodeInfo, PodInfo};
use super::queue::{key, Key};
use super::snapshot::{Objects, Snapshot};

#[derive(Default)]
pub struct Cache {
    /// Pending pods nominated to a node: the node and the pod.
    nominated: HashMap<Key, (String, PodInfo)>,
    /// Shared with the snapshots taken since it last changed.
    objects: Arc<Objects>,
    /// By name, so that a snapshot comes out in order without sorting. Shared with the
    /// snapshots: a snapshot costs one reference count per node, and a node changed while a
    /// snapshot still holds it is copied then (`Arc::make_mut`), not before every cycle.
    nodes: BTreeMap<String, Arc<NodeInfo>>,
    /// Which node each counted pod is on (bound or assumed).
    placed: HashMap<Key, String>,
    /// Pods assumed but not yet seen bound.
    assumed: HashMap<Key, Arc<Pod>>,
    /// Bound pods seen on nodes the cache does not know (yet): added when the node comes.
    orphans: HashMap<Key, Arc<Pod>>,
}

/// Pods that hold resources on their node: assigned and not finished.
pub fn holds_resources(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    node_name(pod).is_some() && !matches!(phase, Some("Succeeded" | "Failed"))
}

pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

impl Cache {
    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        match self.nodes.get_mut(&name) {
            Some(info) => {
                let mut fresh = NodeInfo::new(node);
                for p in &info.pods {
                    fresh.add_pod(p.clone());
                }
                *info = Arc::new(fresh);
            }
            None => {
                self.nodes.insert(name.clone(), Arc::new(NodeInfo::new(node)));
                let waiting: Vec<Arc<Pod>> =
                    self.orphans.values().filter(|p| node_name(p) == Some(name.as_str())).cloned().collect();
                for p in waiting {
                    self.orphans.remove(&key(&p));
                    self.place(p, &name);
                }
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.remove(name) {
            for p in &info.pods {
                let k = key(&p.pod);
                self.placed.remove(&k);
                if !self.assumed.contains_key(&k) {
                    self.orphans.insert(k, p.pod.clone());
                }
            }
        }
    }

    /// A pod as the watch shows it now: counted on its node while it holds resources.
    pub fn set_pod(&mut self, pod: Arc<Pod>) {
        let k = key(&pod);
        self.remove_pod(&k);
        if !holds_resources(&pod) {
            return;
        }
        let node = node_name(&pod).unwrap_or_default().to_string();
        if self.nodes.contains_key(&node) {
            self.place(pod, &node);
        } else {
            self.orphans.insert(k, pod);
        }
    }

    /// The pod is gone (or no longer holds resources, or is placed): it no longer counts, nor
    /// is it nominated anywhere.
    pub fn remove_pod(&mut self, k: &str) {
        self.nominated.remove(k);
        self.assumed.remove(k);
        self.orphans.remove(k);
        if let Some(node) = self.placed.remove(k) {
            if let Some(info) = self.nodes.get_mut(&node) {
                Arc::make_mut(info).remove_pod(k);
            }
        }
    }

    /// Whether the pod is counted on a node as the watch showed it bound (not only assumed).
    pub fn bound(&self, k: &str) -> bool {
        self.placed.contains_key(k) && !self.assumed.contains_key(k)
    }

    /// Counts `pod` on `node` before the binding is confirmed.
    pub fn assume(&mut self, pod: Arc<Pod>, node: &str) {
        let k = key(&pod);
        self.remove_pod(&k);
        self.assumed.insert(k, pod.clone());
        self.place(pod, node);
    }

    /// The binding failed: the assumed pod no longer counts.
    pub fn forget(&mut self, k: &str) {
        if self.assumed.contains_key(k) {
            self.remove_pod(k);
        }
    }

    fn place(&mut self, pod: Arc<Pod>, node: &str) {
        let k = key(&pod);
        if let Some(info) = self.nodes.get_mut(node) {
            Arc::make_mut(info).add_pod(PodInfo::new(pod));
            self.placed.insert(k, node.to_string());
        }
    }

    /// A pending pod as the watch shows it: nominated where its `status.nominatedNodeName`
    /// says, or no longer if the field went away. A nomination made here that the watch does
    /// not show yet is kept while no object shows one (upstream's nominator does the same).
    pub fn pending_pod(&mut self, pod: Arc<Pod>) {
        let nominated =
            |p: &Pod| p.status.as_ref().and_then(|s| s.nominated_node_name.clone()).filter(|n| !n.is_empty());
        let k = key(&pod);
        match nominated(&pod) {
            Some(node) => self.nominate(pod, &node),
            None => match self.nominated.get_mut(&k) {
                Some((_, before)) if nominated(&before.pod).is_some() => {
                    self.nominated.remove(&k);
                }
                Some((_, before)) => *before = PodInfo::new(pod),
                None => {}
            },
        }
    }

    /// Reserves room on `node` for `pod` (preemption chose it): later cycles count it there
    /// for pods of lower or equal priority.
    pub fn nominate(&mut self, pod: Arc<Pod>, node: &str) {
        self.nominated.insert(key(&pod), (node.to_string(), PodInfo::new(pod)));
    }

    pub fn unnominate(&mut self, k: &str) {
        self.nominated.remove(k);
    }

    /// The watched objects other than nodes and pods, to change.
    pub fn objects_mut(&mut self) -> &mut Objects {
        Arc::make_mut(&mut self.objects)
    }

    /// The cluster as it is now, for one scheduling decision.
    pub fn snapshot(&self) -> Snapshot {
        let nodes: Vec<Arc<NodeInfo>> = self.nodes.values().cloned().collect();
        let mut nominated: HashMap<String, Vec<PodInfo>> = HashMap::new();
        for (node, p) in self.nominated.values() {
            nominated.entry(node.clone()).or_default().push(p.clone());
        }
        Snapshot { nodes, objects: self.objects.clone(), nominated }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": "2", "pods": "10"}}}),
            )
            .unwrap(),
        )
    }

    fn pod(name: &str, node: Option<&str>, cpu: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}))
            .unwrap(),
        )
    }

    fn used(c: &Cache, n: &str) -> i64 {
        c.snapshot().nodes.into_iter().find(|i| i.name() == n).unwrap().requested.milli_cpu
    }

    #[test]
    fn pods_count_where_they_are_bound_or_assumed() {
        let mut c = Cache::default();
        c.set_pod(pod("early", Some("n1"), "100m")); // before its node
        c.set_node(node("n1"));
        c.set_node(node("n2"));
        assert_eq!(used(&c, "n1"), 100);
        c.assume(pod("a", None, "500m"), "n2");
        assert_eq!(used(&c, "n2"), 500);
        // The watch confirms the binding: counted once.
        c.set_pod(pod("a", Some("n2"), "500m"));
        assert_eq!(used(&c, "n2"), 500);
        c.assume(pod("b", None, "1"), "n1");
        c.forget("default/b");
        assert_eq!(used(&c, "n1"), 100);
        // A node update keeps its pods; a finished pod frees its share.
        c.set_node(node("n1"));
        assert_eq!(used(&c, "n1"), 100);
        let mut done = (*pod("early", Some("n1"), "100m")).clone();
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        c.set_pod(Arc::new(done));
        assert_eq!(used(&c, "n1"), 0);
        c.remove_pod("default/a");
        assert_eq!(used(&c, "n2"), 0);
    }

    #[test]
    fn nominations_follow_the_pods_status() {
        let nominated_to = |node: Option<&str>| {
            let mut p = (*pod("p", None, "1")).clone();
            p.status = Some(serde_json::from_value(json!({"nominatedNodeName": node})).unwrap());
            Arc::new(p)
        };
        let on = |c: &Cache| c.snapshot().nominated.keys().cloned().collect::<Vec<_>>();
        let mut c = Cache::default();
        c.set_node(node("n1"));
        // Nominated here; the watch still shows the pod without: kept.
        c.nominate(pod("p", None, "1"), "n1");
        c.pending_pod(nominated_to(None));
        assert_eq!(on(&c), ["n1"]);
        // Shown, then cleared through the API: gone.
        c.pending_pod(nominated_to(Some("n1")));
        c.pending_pod(nominated_to(None));
        assert!(on(&c).is_empty());
        // Bound: no longer nominated.
        c.pending_pod(nominated_to(Some("n1")));
        c.set_pod(pod("p", Some("n1"), "1"));
        assert!(on(&c).is_empty());
    }
}
