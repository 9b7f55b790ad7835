//! The scheduler (`kaname scheduler`): what binds pods to nodes, built as upstream's
//! scheduling framework: the extension points and their per-cycle state (`framework.rs`), the
//! default profile's plugins with upstream's reasons and weights (`plugins/`) and how a cycle
//! runs them (`profile.rs`), the queue (`queue.rs`), the cache of nodes with their bound and
//! assumed pods, nominated pods and the other watched objects (`cache.rs`, `snapshot.rs`), and
//! the loop that binds and reports (`schedule.rs`), with preemption when a pod fits nowhere
//! (`preemption.rs`).

pub mod cache;
pub mod command;
pub mod config;
pub mod framework;
pub mod plugins;
pub mod preemption;
pub mod profile;
pub mod quantity;
pub mod queue;
pub mod schedule;
pub mod selector;
pub mod snapshot;

pub use command::{run, SchedulerFlags};
pub use schedule::{Scheduler, DEFAULT_SCHEDULER_NAME};
