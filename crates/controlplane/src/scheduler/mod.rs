//! The scheduler (`kaname scheduler`, in progress): what binds pods to nodes, built as upstream's
//! scheduling framework. Landed so far: the framework's traits, the filters and scores of the
//! default profile that need no other pods' placement (`framework.rs`, `plugins/`), with
//! upstream's reasons, weights and `FailedScheduling` wording, and the queue (`queue.rs`).
//! Next: the informer caches, binding with an assume cache, events, and the command.

pub mod framework;
pub mod plugins;
pub mod quantity;
pub mod queue;
