//! The scheduler (`kaname scheduler`, in progress): what binds pods to nodes, built as upstream's
//! scheduling framework. Landed so far: the framework's traits, the filters and scores of the
//! default profile that need no other pods' placement (`framework.rs`, `plugins/`), with
//! upstream's reasons, weights and `FailedScheduling` wording, the queue (`queue.rs`), the cache of nodes with their bound and
//! assumed pods (`cache.rs`), and the loop that binds and reports (`schedule.rs`). Next: the
//! command (`kaname scheduler` with its flags and secure serving), the filters that look at
//! other pods (NodePorts, InterPodAffinity, PodTopologySpread), preemption.

pub mod cache;
pub mod command;
pub mod framework;
pub mod plugins;
pub mod profile;
pub mod quantity;
pub mod queue;
pub mod schedule;
pub mod selector;
pub mod snapshot;

pub use command::{run, SchedulerFlags};
pub use schedule::{Scheduler, DEFAULT_SCHEDULER_NAME};
