//! Cluster alarms and the backend quota (etcd's `alarm` package and `etcdserver/quota.go`).
//!
//! An alarm is cluster state: it is raised and cleared through Raft and stored with the data,
//! so every member refuses the same writes at the same log position. The only alarm a member
//! raises by itself is `NOSPACE`, when a write would take its backend past
//! `--quota-backend-bytes`; from then on the cluster refuses every request that would add data
//! (puts, txns with puts) with etcd's `mvcc: database space exceeded`, while reads, deletes and
//! compaction keep working so an operator can free space, defragment and `alarm disarm`.

use kaname_proto::etcdserverpb::{request_op, AlarmMember, AlarmType, PutRequest, TxnRequest};
use serde::{Deserialize, Serialize};

/// The active alarms, in the order they were raised (etcd lists them by member, then type;
/// with one alarm type the difference never shows).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarms(Vec<(u64, i32)>);

impl Alarms {
    /// etcd's `AlarmStore.Activate`: returns the alarm, also when it was already active.
    pub fn activate(&mut self, member_id: u64, alarm: i32) -> AlarmMember {
        if !self.0.contains(&(member_id, alarm)) {
            self.0.push((member_id, alarm));
        }
        AlarmMember { member_id, alarm }
    }

    /// etcd's `AlarmStore.Deactivate`: returns the alarm if it was active.
    pub fn deactivate(&mut self, member_id: u64, alarm: i32) -> Option<AlarmMember> {
        let before = self.0.len();
        self.0.retain(|a| *a != (member_id, alarm));
        (self.0.len() < before).then_some(AlarmMember { member_id, alarm })
    }

    pub fn list(&self) -> Vec<AlarmMember> {
        self.0.iter().map(|&(member_id, alarm)| AlarmMember { member_id, alarm }).collect()
    }

    /// Whether writes that add data are refused (etcd switches to `applierV3Capped`).
    pub fn no_space(&self) -> bool {
        self.0.iter().any(|&(_, a)| a == AlarmType::Nospace as i32)
    }
}

/// etcd's per-request bookkeeping overhead in its quota estimate (`kvOverhead`).
const KV_OVERHEAD: u64 = 256;

/// What a put adds to the backend, as etcd estimates it (`costPut`).
pub fn put_cost(r: &PutRequest) -> u64 {
    KV_OVERHEAD + r.key.len() as u64 + r.value.len() as u64
}

/// What a txn may add: its costlier branch, nested txns included (etcd's `costTxn`).
pub fn txn_cost(t: &TxnRequest) -> u64 {
    let branch = |ops: &[kaname_proto::etcdserverpb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(request_op::Request::RequestPut(p)) => put_cost(p),
                Some(request_op::Request::RequestTxn(t)) => txn_cost(t),
                _ => 0,
            })
            .sum()
    };
    branch(&t.success).max(branch(&t.failure))
}

/// etcd's `backendQuota.Available`: the write fits if the backend file stays under the quota.
pub fn fits(db_size: u64, cost: u64, quota: u64) -> bool {
    db_size.saturating_add(cost) < quota
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activate_is_idempotent_and_deactivate_reports_only_active_alarms() {
        let mut a = Alarms::default();
        let nospace = AlarmType::Nospace as i32;
        assert_eq!(a.activate(7, nospace), AlarmMember { member_id: 7, alarm: nospace });
        assert_eq!(a.activate(7, nospace), AlarmMember { member_id: 7, alarm: nospace });
        assert_eq!(a.list().len(), 1);
        assert!(a.no_space());
        assert_eq!(a.deactivate(8, nospace), None);
        assert_eq!(a.deactivate(7, nospace), Some(AlarmMember { member_id: 7, alarm: nospace }));
        assert!(!a.no_space());
        assert!(a.list().is_empty());
    }

    #[test]
    fn txn_cost_counts_the_costlier_branch_including_nested_txns() {
        use kaname_proto::etcdserverpb::RequestOp;
        let put = |k: &str, v: &str| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            })),
        };
        let nested = TxnRequest { success: vec![put("a", "12345")], ..Default::default() };
        let t = TxnRequest {
            success: vec![put("k", "v")],
            failure: vec![RequestOp { request: Some(request_op::Request::RequestTxn(nested)) }, put("b", "")],
            ..Default::default()
        };
        assert_eq!(txn_cost(&t), (KV_OVERHEAD + 6) + (KV_OVERHEAD + 1));
        assert_eq!(txn_cost(&TxnRequest::default()), 0);
    }
}
