//! The legacy core group, `/api/v1`: one file per kind.

pub mod service_ips;

super::kinds! {
    namespace => NAMESPACE,
    configmap => CONFIGMAP,
    secret => SECRET,
    pod => POD,
    serviceaccount => SERVICEACCOUNT,
    service => SERVICE,
    event => EVENT,
    node => NODE,
    endpoints => ENDPOINTS,
}
