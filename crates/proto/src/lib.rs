//! Generated protobuf / gRPC types for Kaname.
//!
//! This crate exists so that the server, the etcd-compatible API layer and our
//! `etcdctl` all share one set of generated types: the etcd v3 API
//! (`etcdserverpb`, `mvccpb`, `authpb`, wire-compatible with etcd 3.5) and
//! Kaname's internal member-to-member service (`peer`). The code is generated
//! at build time with `protox` + `tonic-prost-build`, so no system `protoc` is
//! needed.
//!
//! Module layout mirrors the protobuf packages, all at the crate root, so the
//! `super::mvccpb::…` / `super::authpb::…` paths emitted by prost inside
//! `etcdserverpb` resolve.

/// etcd MVCC types (`mvccpb` package): `KeyValue`, `Event`.
#[allow(clippy::all)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd auth storage types (`authpb` package): `User`, `Role`, `Permission`.
#[allow(clippy::all)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// etcd v3 client API (`etcdserverpb` package): messages plus tonic
/// clients/servers for KV, Watch, Lease, Cluster, Maintenance and Auth.
#[allow(clippy::all)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// Kaname's internal Raft transport (`kanamepeer` package).
#[allow(clippy::all)]
pub mod peer {
    tonic::include_proto!("kanamepeer");
}

#[cfg(test)]
mod tests {
    use super::etcdserverpb::{
        self, compare, request_op, Compare, PutRequest, RangeResponse, RequestOp, ResponseHeader,
    };
    use super::mvccpb::KeyValue;
    use prost::Message;

    #[test]
    fn put_request_wire_layout() {
        let req = PutRequest { key: b"foo".to_vec(), value: b"bar".to_vec(), ..Default::default() };
        assert_eq!(req.encode_to_vec(), [0x0a, 0x03, b'f', b'o', b'o', 0x12, 0x03, b'b', b'a', b'r']);

        // lease = 3 (varint), prev_kv = 4 (bool), ignore_value = 5, ignore_lease = 6.
        let req = PutRequest {
            key: b"k".to_vec(),
            lease: 0x7b,
            prev_kv: true,
            ignore_value: true,
            ignore_lease: true,
            ..Default::default()
        };
        assert_eq!(req.encode_to_vec(), [0x0a, 0x01, b'k', 0x18, 0x7b, 0x20, 0x01, 0x28, 0x01, 0x30, 0x01]);
        assert_eq!(PutRequest::decode(&req.encode_to_vec()[..]).unwrap(), req);
    }

    #[test]
    fn range_response_wire_layout() {
        let resp = RangeResponse {
            header: Some(ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 }),
            kvs: vec![KeyValue {
                key: b"a".to_vec(),
                create_revision: 2,
                mod_revision: 3,
                version: 1,
                value: b"b".to_vec(),
                lease: 0,
            }],
            more: true,
            count: 5,
        };
        let expected: &[u8] = &[
            // header (field 1, len 8): cluster_id=1 member_id=2 revision=3 raft_term=4
            0x0a, 0x08, 0x08, 0x01, 0x10, 0x02, 0x18, 0x03, 0x20, 0x04,
            // kvs (field 2, len 12): key="a" create=2 mod=3 version=1 value="b"
            0x12, 0x0c, 0x0a, 0x01, b'a', 0x10, 0x02, 0x18, 0x03, 0x20, 0x01, 0x2a, 0x01, b'b',
            // more (field 3) = true
            0x18, 0x01, // count (field 4) = 5
            0x20, 0x05,
        ];
        assert_eq!(resp.encode_to_vec(), expected);
        assert_eq!(RangeResponse::decode(expected).unwrap(), resp);
    }

    #[test]
    fn oneofs_and_high_tags() {
        // Compare: target_union lease is tag 8, range_end is tag 64 (0x202 -> varint 0x82 0x04).
        let cmp = Compare {
            result: etcdserverpb::compare::CompareResult::Equal as i32,
            target: etcdserverpb::compare::CompareTarget::Lease as i32,
            key: b"k".to_vec(),
            range_end: b"z".to_vec(),
            target_union: Some(compare::TargetUnion::Lease(7)),
        };
        assert_eq!(cmp.encode_to_vec(), [0x10, 0x04, 0x1a, 0x01, b'k', 0x40, 0x07, 0x82, 0x04, 0x01, b'z']);

        // RequestOp oneof: request_put is field 2.
        let op = RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest { key: b"x".to_vec(), ..Default::default() })),
        };
        assert_eq!(op.encode_to_vec(), [0x12, 0x03, 0x0a, 0x01, b'x']);
    }

    #[test]
    fn generated_services_are_nameable() {
        use super::etcdserverpb::{
            auth_client::AuthClient, auth_server::AuthServer, cluster_client::ClusterClient,
            cluster_server::ClusterServer, kv_client::KvClient, kv_server::KvServer, lease_client::LeaseClient,
            lease_server::LeaseServer, maintenance_client::MaintenanceClient, maintenance_server::MaintenanceServer,
            watch_client::WatchClient, watch_server::WatchServer,
        };
        use super::peer::{raft_peer_client::RaftPeerClient, raft_peer_server::RaftPeerServer};
        use tonic::transport::Channel;

        fn nameable<T>() -> &'static str {
            std::any::type_name::<T>()
        }
        // Trait objects prove the server traits exist under the expected names.
        fn _kv_trait(_: &dyn super::etcdserverpb::kv_server::Kv) {}
        fn _peer_trait(_: &dyn super::peer::raft_peer_server::RaftPeer) {}

        for name in [
            nameable::<KvClient<Channel>>(),
            nameable::<WatchClient<Channel>>(),
            nameable::<LeaseClient<Channel>>(),
            nameable::<ClusterClient<Channel>>(),
            nameable::<MaintenanceClient<Channel>>(),
            nameable::<AuthClient<Channel>>(),
            nameable::<RaftPeerClient<Channel>>(),
        ] {
            assert!(name.contains("Client"));
        }
        // Server wrappers are generic over the service implementation.
        let _ = nameable::<fn() -> Option<KvServer<()>>>;
        let _ = nameable::<fn() -> Option<WatchServer<()>>>;
        let _ = nameable::<fn() -> Option<LeaseServer<()>>>;
        let _ = nameable::<fn() -> Option<ClusterServer<()>>>;
        let _ = nameable::<fn() -> Option<MaintenanceServer<()>>>;
        let _ = nameable::<fn() -> Option<AuthServer<()>>>;
        let _ = nameable::<fn() -> Option<RaftPeerServer<()>>>;

        assert_eq!(<KvServer<()> as tonic::server::NamedService>::NAME, "etcdserverpb.KV");
        assert_eq!(<RaftPeerServer<()> as tonic::server::NamedService>::NAME, "kanamepeer.RaftPeer");
    }
}
