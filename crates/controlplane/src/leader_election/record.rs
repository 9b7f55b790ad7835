//! client-go's `LeaderElectionRecord` and how it maps onto a Lease's spec
//! (`LeaseSpecToLeaderElectionRecord` / `LeaderElectionRecordToLeaseSpec`), so that our Leases
//! read the same to `kubectl get lease -o yaml` and to upstream components sharing them.

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;

/// What a Lease says about leadership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Empty: nobody holds it (released), anyone may take it.
    pub holder: String,
    pub lease_duration_seconds: i32,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub transitions: i32,
}

impl Record {
    pub fn from_spec(spec: &LeaseSpec) -> Record {
        Record {
            holder: spec.holder_identity.clone().unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    /// The spec client-go writes: every field set, the holder even when empty.
    pub fn to_spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time.map(micro),
            renew_time: self.renew_time.map(micro),
            lease_transitions: Some(self.transitions),
            ..LeaseSpec::default()
        }
    }
}

/// MicroTime carries microseconds on the wire: truncate here so that what we remember equals
/// what we read back.
fn micro(t: Timestamp) -> MicroTime {
    let us = t.as_microsecond();
    MicroTime(Timestamp::from_microsecond(us).unwrap_or(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_the_lease_spec() {
        let now = Timestamp::now();
        let r = Record {
            holder: "host_1".into(),
            lease_duration_seconds: 15,
            acquire_time: Some(Timestamp::from_microsecond(now.as_microsecond()).unwrap()),
            renew_time: Some(Timestamp::from_microsecond(now.as_microsecond()).unwrap()),
            transitions: 3,
        };
        assert_eq!(Record::from_spec(&r.to_spec()), r);
        let released = Record { holder: String::new(), lease_duration_seconds: 1, ..r };
        assert_eq!(released.to_spec().holder_identity.as_deref(), Some(""), "client-go writes an empty holder");
    }
}
