//! The control plane's active/standby components: every control-plane node runs a copy of
//! each, one copy acts, chosen by [`leader_election`]. The scheduler and the controller manager
//! come next, on the same election and the same kube-rs client.
//!
//! Like upstream's kube-scheduler and kube-controller-manager, these talk to the API server
//! only over HTTPS (`--kubeconfig`) through the `kube` client: never through the API server's
//! or the store's code.

pub mod leader_election;
pub mod scheduler;
pub mod serving;
