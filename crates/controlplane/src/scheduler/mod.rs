//! The scheduler (`kaname scheduler`, in progress): what binds pods to nodes, built as upstream's
//! scheduling framework. Landed so far: the framework's types and the filters of the default
//! profile that need no other pods' placement (`framework.rs`, `plugins/`), with upstream's
//! reasons and `FailedScheduling` wording. Next: the queue, the informer caches, scores,
//! binding, and the command.

pub mod framework;
pub mod plugins;
pub mod quantity;
