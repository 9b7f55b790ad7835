//! Writes fenced on a leader's Lease: the server's half of the control-plane components'
//! fencing (their half is `kaname-controlplane`'s `leader_election/fence.rs`).
//!
//! A leader's write carries `Kaname-Lease-Fence: <namespace>/<name>@<resourceVersion>`, the
//! Lease as that leader last wrote it. The write's store transaction then also compares the
//! Lease key's mod_revision with that resourceVersion ([`crate::storage::Storage::fenced`]): the
//! write and the check are one atomic step in the store's order, so once a standby has taken
//! the Lease over (by writing it), no write of the deposed leader is applied, however late it
//! arrives; it gets 409 Conflict. Not upstream (kube-apiserver has no such check); requests
//! without the header are unaffected.

use axum::http::HeaderMap;

use crate::resources::LEASES as LEASE;
use crate::status::{ApiError, ApiResult, LEASE_FENCED as CAUSE};

pub const HEADER: &str = "kaname-lease-fence";

/// A write's condition: the Lease key must still be at `revision`.
#[derive(Clone, Debug)]
pub struct Fence {
    pub key: String,
    pub name: String,
    pub revision: i64,
}

impl Fence {
    /// The fence a request carries, if any; a malformed one is a bad request, never ignored.
    /// `key` gives a resource's store key (`Storage::key`, passed in so that this leaf does not
    /// import the registry that uses it).
    pub fn from_headers(
        headers: &HeaderMap,
        key: impl FnOnce(&'static crate::resources::Resource, &str, &str) -> String,
    ) -> ApiResult<Option<Fence>> {
        let Some(v) = headers.get(HEADER) else { return Ok(None) };
        let bad = || {
            ApiError::bad_request(format!("invalid {HEADER} header {v:?}: want <namespace>/<name>@<resourceVersion>"))
        };
        let s = v.to_str().map_err(|_| bad())?;
        let (lease, rv) = s.rsplit_once('@').ok_or_else(bad)?;
        let (ns, name) = lease.split_once('/').ok_or_else(bad)?;
        let revision: i64 = rv.parse().map_err(|_| bad())?;
        if ns.is_empty() || name.is_empty() || name.contains('/') || revision <= 0 {
            return Err(bad());
        }
        Ok(Some(Fence { key: key(LEASE, ns, name), name: name.to_string(), revision }))
    }

    /// Why a write failed, if it was the fence: the Lease moved on.
    pub fn refused(&self, now: i64) -> ApiError {
        let mut e = ApiError::conflict(
            &LEASE.qualified_plural(),
            &self.name,
            &format!(
                "the write was fenced: it was conditioned on the lease at resourceVersion {}, which is now at {} (another holder took it, or the writer renewed it since)",
                self.revision,
                if now == 0 { "none (deleted)".to_string() } else { now.to_string() }
            ),
        );
        // Marks it apart from a conflict on the object itself, which the server's own retry
        // loops (patches, scale) resolve by reading again: this one no retry can resolve.
        if let Some(d) = e.details.as_mut() {
            d["causes"] = serde_json::json!([{"reason": CAUSE, "message": "the lease moved on", "field": HEADER}]);
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;
    use std::sync::Arc;

    fn storage() -> Storage {
        let etcd = crate::etcd::Etcd::connect(&["127.0.0.1:1".into()], &Default::default()).unwrap();
        let range = crate::resources::service_ips::ServiceRange::parse("10.96.0.0/12").unwrap();
        Storage { etcd, prefix: "/registry".into(), service_range: Arc::new(range), dry_run: false, fence: None }
    }

    fn parse(v: &str) -> ApiResult<Option<Fence>> {
        let mut h = HeaderMap::new();
        h.insert(HEADER, v.parse().unwrap());
        Fence::from_headers(&h, |res, ns, name| storage().key(res, Some(ns), name))
    }

    #[tokio::test]
    async fn the_header_names_the_lease_key_and_revision_and_garbage_is_refused() {
        assert!(Fence::from_headers(&HeaderMap::new(), |_, _, _| unreachable!()).unwrap().is_none());
        let f = parse("kube-system/kube-scheduler@42").unwrap().unwrap();
        assert_eq!(
            (f.key.as_str(), f.name.as_str(), f.revision),
            ("/registry/leases/kube-system/kube-scheduler", "kube-scheduler", 42)
        );
        for bad in [
            "kube-scheduler@42",
            "kube-system/kube-scheduler",
            "kube-system/x@0",
            "kube-system/x@-1",
            "/x@3",
            "a/b/c@3",
            "a/b@x",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code, 400, "{bad}");
        }
        let refused = f.refused(50);
        assert_eq!(refused.code, 409);
        assert!(!refused.is_retryable_conflict());
        assert!(ApiError::stale("configmaps", "x").is_retryable_conflict());
        assert!(
            refused.message.starts_with(
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"kube-scheduler\": the write was fenced"
            ),
            "{}",
            refused.message
        );
    }
}
