//! `kaname chaos`: fault injection against a real cluster (kaname or etcd) with a recorded
//! client history, checked for linearizability. See docs/fault-testing.md.

pub mod checker;
