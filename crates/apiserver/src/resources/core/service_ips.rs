//! Service cluster IPs from `--service-cluster-ip-range`.
//!
//! Each allocated address is its own key, `<prefix>/ipaddresses/<ip>`, holding a
//! `networking.k8s.io/v1` IPAddress whose parentRef names the service (upstream's
//! MultiCIDRServiceAllocator layout). The service and its address are written and deleted in
//! one etcd transaction that requires the address key to be absent, so two API servers on
//! one store can never hand out the same address, and a rejected create leaks nothing.

use std::collections::HashSet;
use std::net::IpAddr;

use futures::future::BoxFuture;
use kaname_proto::etcdserverpb::RequestOp;
use serde_json::{json, Value};

use crate::etcd::{self, Etcd};
use crate::resources::{AllocContext, Allocator, Claim};
use crate::status::{ApiError, ApiResult, FieldError};

/// The services' allocator: one cluster IP per service that needs one.
pub struct ClusterIps;

pub static CLUSTER_IPS: ClusterIps = ClusterIps;

impl Allocator for ClusterIps {
    fn prepare(&self, cx: &AllocContext<'_>, svc: &mut Value) {
        // A headless service holds no address: its IP fields say so, single-stack.
        if !needs_ip(svc) && svc["spec"]["clusterIP"] == "None" {
            let spec = &mut svc["spec"];
            spec["clusterIPs"] = json!(["None"]);
            spec["ipFamilies"] = json!([cx.service_range.family()]);
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
    }

    fn claim<'a>(
        &'a self,
        cx: &'a AllocContext<'a>,
        ns: Option<&'a str>,
        name: &'a str,
        svc: &'a mut Value,
    ) -> BoxFuture<'a, ApiResult<Vec<Claim>>> {
        Box::pin(async move {
            if !needs_ip(svc) {
                return Ok(Vec::new());
            }
            let range = cx.service_range;
            let requested =
                svc["spec"]["clusterIP"].as_str().filter(|s| !s.is_empty() && *s != "None").map(str::to_string);
            let ip = match &requested {
                Some(ip) => {
                    check_requested(range, svc, ip)?;
                    ip.clone()
                }
                None => {
                    let taken = allocated(cx.etcd, cx.prefix).await?;
                    range
                        .pick(&taken)
                        .ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full"))?
                        .to_string()
                }
            };
            set(svc, &ip, range.family());
            let rec = record(&ip, range.family(), ns.unwrap_or(""), name);
            Ok(vec![Claim {
                key: key(cx.prefix, &ip),
                value: rec.to_string().into_bytes(),
                // A picked address taken meanwhile is picked again; a requested one is refused.
                conflict: requested.map(|_| refused(svc, &ip, "provided IP is already allocated")),
            }])
        })
    }

    /// Upstream's `patchAllocatedValues` and `normalizeClusterIPs`: an update that leaves the
    /// cluster IP out keeps the allocated one, and `clusterIPs` follows `clusterIP`.
    fn keep_on_update(&self, old: &Value, new: &mut Value) {
        let spec = &mut new["spec"];
        if spec["clusterIP"].as_str().unwrap_or("").is_empty() {
            for f in ["clusterIP", "clusterIPs"] {
                spec[f] = old["spec"][f].clone();
            }
        } else if spec["clusterIPs"].as_array().is_none_or(|a| a.is_empty()) {
            spec["clusterIPs"] = json!([spec["clusterIP"]]);
        }
        for f in ["ipFamilies", "ipFamilyPolicy"] {
            if spec[f].is_null() {
                spec[f] = old["spec"][f].clone();
            }
        }
    }

    fn release(&self, prefix: &str, svc: &Value) -> Vec<RequestOp> {
        held(svc).iter().map(|ip| etcd::op_delete(&key(prefix, ip))).collect()
    }
}

/// The cluster IPs held by services now.
async fn allocated(etcd: &Etcd, prefix: &str) -> ApiResult<HashSet<IpAddr>> {
    let prefix = key(prefix, "");
    let r = etcd.range(&prefix, &prefix, 0, 0).await?;
    Ok(r.kvs.iter().filter_map(|kv| String::from_utf8_lossy(&kv.key)[prefix.len()..].parse().ok()).collect())
}

/// The parsed range. Hand-rolled rather than a CIDR crate: the prefix arithmetic needed is a
/// few lines over `std::net`, and no CIDR crate is in the workspace yet.
#[derive(Clone, Debug)]
pub struct ServiceRange {
    pub cidr: String,
    network: IpAddr,
    /// Host bits: the range holds 2^host_bits addresses.
    host_bits: u32,
}

impl ServiceRange {
    /// The first (primary) range of a comma-separated `--service-cluster-ip-range`.
    pub fn parse(flag: &str) -> Result<ServiceRange, String> {
        let cidr = flag.split(',').next().unwrap_or("").trim();
        let bad = || format!("invalid --service-cluster-ip-range {flag:?}");
        let (net, bits) = cidr.split_once('/').ok_or_else(bad)?;
        let network: IpAddr = net.parse().map_err(|_| bad())?;
        let bits: u32 = bits.parse().map_err(|_| bad())?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        if bits > width || width - bits < 2 {
            return Err(format!("{} (the range must hold at least 4 addresses)", bad()));
        }
        // Host bits in the flag are dropped, as Go's `net.ParseCIDR` does for upstream.
        let host_bits = width - bits;
        let host_mask = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
        let masked = Self::as_u128(network) & !host_mask;
        let network = match network {
            IpAddr::V4(_) => IpAddr::V4((masked as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(masked.into()),
        };
        Ok(ServiceRange { cidr: format!("{network}/{bits}"), network, host_bits })
    }

    fn as_u128(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v) => u32::from(v) as u128,
            IpAddr::V6(v) => u128::from(v),
        }
    }

    fn at(&self, offset: u128) -> IpAddr {
        let n = Self::as_u128(self.network) + offset;
        match self.network {
            IpAddr::V4(_) => IpAddr::V4((n as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(n.into()),
        }
    }

    /// Where `ip` sits in the range, if it is in it.
    fn offset(&self, ip: IpAddr) -> Option<u128> {
        if ip.is_ipv4() != self.network.is_ipv4() {
            return None;
        }
        let off = Self::as_u128(ip).checked_sub(Self::as_u128(self.network))?;
        (self.host_bits >= 128 || off < (1u128 << self.host_bits)).then_some(off)
    }

    /// Addresses a service may hold: all but the network address and (IPv4) the broadcast.
    fn usable(&self, ip: IpAddr) -> bool {
        let last = if self.host_bits >= 128 { u128::MAX } else { (1u128 << self.host_bits) - 1 };
        matches!(self.offset(ip), Some(o) if o != 0 && (ip.is_ipv6() || o != last))
    }

    pub fn family(&self) -> &'static str {
        if self.network.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        }
    }

    /// A random free address. The first one is left for the `kubernetes` service (as
    /// upstream's apiserver claims it), so dynamic allocation starts at the second; huge IPv6
    /// ranges are drawn from their first 2^20 addresses.
    pub fn pick(&self, taken: &HashSet<IpAddr>) -> Option<IpAddr> {
        let size = 1u128 << self.host_bits.min(20);
        let candidates = size.saturating_sub(if self.network.is_ipv4() { 3 } else { 2 });
        if candidates == 0 {
            return None;
        }
        let start = rand::random::<u64>() as u128 % candidates;
        (0..candidates)
            .map(|i| self.at(2 + (start + i) % candidates))
            .find(|ip| self.usable(*ip) && !taken.contains(ip))
    }
}

/// The key that holds an allocated address.
pub fn key(prefix: &str, ip: &str) -> String {
    format!("{prefix}/ipaddresses/{ip}")
}

/// The stored record of an allocation: upstream's IPAddress object.
pub fn record(ip: &str, family: &str, ns: &str, service: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip,
            "labels": {
                "ipaddress.kubernetes.io/ip-family": family,
                "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
            },
            "creationTimestamp": crate::meta::now_rfc3339(),
        },
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": ns, "name": service}},
    })
}

/// Whether a service gets a cluster IP: not ExternalName, not headless.
pub fn needs_ip(svc: &Value) -> bool {
    svc["spec"]["type"] != "ExternalName" && svc["spec"]["clusterIP"] != "None"
}

/// The addresses a stored service holds.
pub fn held(svc: &Value) -> Vec<String> {
    if !needs_ip(svc) {
        return Vec::new();
    }
    svc["spec"]["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .filter(|s| s != "None" && !s.is_empty())
        .collect()
}

/// Writes `ip` into the service as upstream's allocator leaves it (single-stack).
pub fn set(svc: &mut Value, ip: &str, family: &str) {
    let spec = &mut svc["spec"];
    spec["clusterIP"] = json!(ip);
    spec["clusterIPs"] = json!([ip]);
    spec["ipFamilies"] = json!([family]);
    spec["ipFamilyPolicy"] = json!("SingleStack");
}

/// Upstream's `Invalid` for a requested address that cannot be had.
pub fn refused(svc: &Value, ip: &str, why: &str) -> ApiError {
    let name = svc["metadata"]["name"].as_str().unwrap_or("");
    ApiError::invalid(
        "Service",
        name,
        &[FieldError::invalid_value("spec.clusterIPs", &json!([ip]), &format!("failed to allocate IP {ip}: {why}"))],
    )
}

/// Checks a requested address against the range before anything is written.
pub fn check_requested(range: &ServiceRange, svc: &Value, ip: &str) -> Result<(), ApiError> {
    let parsed: IpAddr = ip.parse().map_err(|_| refused(svc, ip, "invalid IP address"))?;
    if !range.usable(parsed) {
        return Err(refused(
            svc,
            ip,
            &format!("the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}", range.cidr),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = ServiceRange::parse("10.0.0.0/24").unwrap();
        assert!(r.usable("10.0.0.1".parse().unwrap()));
        assert!(!r.usable("10.0.0.0".parse().unwrap()));
        assert!(!r.usable("10.0.0.255".parse().unwrap()));
        assert!(!r.usable("10.0.1.1".parse().unwrap()));
        assert_eq!(ServiceRange::parse("10.0.0.1/24").unwrap().cidr, "10.0.0.0/24");
        assert!(ServiceRange::parse("10.0.0.0/31").is_err());
        let v6 = ServiceRange::parse("fd00::/108").unwrap();
        assert!(v6.usable("fd00::5".parse().unwrap()));
    }

    #[test]
    fn picks_skip_taken_and_reserved_addresses() {
        let r = ServiceRange::parse("10.0.0.0/29").unwrap();
        let mut taken = HashSet::new();
        for _ in 0..5 {
            let ip = r.pick(&taken).unwrap();
            assert!(r.usable(ip) && ip != "10.0.0.1".parse::<IpAddr>().unwrap(), "{ip}");
            assert!(taken.insert(ip));
        }
        assert_eq!(r.pick(&taken), None, "10.0.0.2-.6 are all taken");
    }
}
