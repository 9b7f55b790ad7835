//! What one scheduling cycle sees: the nodes with their pods, the pods nominated to nodes by
//! preemption, and the other objects plugins look up (namespaces' labels for affinity's
//! namespace selectors; the Services, ReplicaSets, ReplicationControllers and StatefulSets
//! whose selectors make the default spreading constraints).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, ReplicationController, Service};

use super::framework::{NodeInfo, PodInfo};
use super::queue::Key;
use super::selector::{labels_of, Labels};

/// The watched objects other than nodes and pods, by `namespace/name` (namespaces by name).
#[derive(Clone, Default)]
pub struct Objects {
    pub namespaces: HashMap<String, Arc<Namespace>>,
    pub services: HashMap<Key, Arc<Service>>,
    pub replication_controllers: HashMap<Key, Arc<ReplicationController>>,
    pub replica_sets: HashMap<Key, Arc<ReplicaSet>>,
    pub stateful_sets: HashMap<Key, Arc<StatefulSet>>,
}

impl Objects {
    /// A namespace's labels; an unknown namespace has none (upstream's
    /// `GetNamespaceLabelsSnapshot`).
    pub fn namespace_labels(&self, ns: &str) -> Labels {
        self.namespaces.get(ns).map(|n| labels_of(&n.metadata).clone()).unwrap_or_default()
    }

    pub fn namespaces_with_labels(&self) -> impl Iterator<Item = (&String, &Labels)> {
        self.namespaces.iter().map(|(name, n)| (name, labels_of(&n.metadata)))
    }
}

/// One cycle's view of the cluster.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Sorted by name; shared with the cache until it changes them.
    pub nodes: Vec<Arc<NodeInfo>>,
    pub objects: Arc<Objects>,
    /// Node name → the pods nominated to it (waiting for their victims to go).
    pub nominated: HashMap<String, Vec<PodInfo>>,
}

impl Snapshot {
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.binary_search_by(|n| n.name().cmp(name)).ok().map(|i| &*self.nodes[i])
    }
}
