//! `kaname etcd`: an etcd v3 compatible, Raft replicated key-value store.
//!
//! Layers, top to bottom (as etcd's): [`grpc`] (the v3 API: checks, headers), [`http`] and
//! [`peer`] (what other members call) → [`server`] (propose through Raft, linearizable reads)
//! → [`raft`] (openraft: log, network, state machine) → [`apply`] (etcd request semantics) →
//! [`mvcc`] (revisions, index, history on redb). A layer uses only the ones below it (see
//! docs/architecture.md). [`flags`] is `kaname etcd`'s command line and its entry point
//! [`run`]`(flags, shutdown)`; [`mod@run`] wires a member together from its [`config`].

pub mod alarm;
pub mod apply;
pub mod auth;
pub mod config;
pub mod datadir;
#[cfg(test)]
mod encoding_tests;
pub mod error;
pub mod flags;
pub mod grpc;
pub mod http;
pub mod lease;
pub mod membership;
pub mod metrics;
pub mod mvcc;
pub mod peer;
pub mod raft;
pub mod restore;
pub mod run;
pub mod server;
pub mod tls;
pub mod watch;

pub use config::{ClusterState, EtcdConfig};
pub use flags::{run, EtcdFlags};
pub use run::Member;
