//! The value syntax of Go flags, for the commands that take upstream's flags: etcd's and
//! Kubernetes' components are Go programs, so `--leader-elect-lease-duration=15s`,
//! `--etcd-compaction-interval=5m0s` or `--command-timeout=1.5s` must parse (and be printed)
//! as Go's `time.ParseDuration` and `time.Duration.String` do, errors included.
//!
//! Written here rather than taken from a crate: the crates that parse durations (humantime and
//! the like) accept other spellings (`5min`, spaces) and word their errors differently, and a
//! flag that takes what upstream refuses, or refuses with other words, is a difference users see.

pub mod duration;
