//! The etcd v3 gRPC API (etcd's `v3rpc`): decode, check, hand to the server, fill headers.

/// Responses that come back encoded from the apply step, whose header the edge completes
/// (`fill_header`) after the layers below set the revision.
pub(crate) trait Headed: prost::Message + Default {
    fn header(&mut self) -> &mut Option<kaname_proto::etcdserverpb::ResponseHeader>;
}

/// Implements [`Headed`] for response types with a `header` field. Defined before the
/// services' modules so they can use it.
macro_rules! headed {
    ($($t:ty),* $(,)?) => {$(impl $crate::grpc::Headed for $t {
        fn header(&mut self) -> &mut Option<kaname_proto::etcdserverpb::ResponseHeader> {
            &mut self.header
        }
    })*};
}

pub mod auth;
pub mod cluster;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod validate;
pub mod watch;

use std::future::Future;
use std::time::Instant;

use tonic::Status;

use crate::server::EtcdServer;

/// Runs one RPC body and records its outcome in the metrics.
pub(crate) async fn observed<T>(
    server: &EtcdServer,
    service: &str,
    method: &str,
    body: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let start = Instant::now();
    let result = body.await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    server.metrics.observe(service, method, code, start.elapsed().as_secs_f64());
    result
}
