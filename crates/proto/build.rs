//! Generates the etcd v3 API and Kaname peer stubs.
//!
//! The .proto files are parsed by `protox` (pure Rust), so no system `protoc`
//! is required; `tonic-prost-build` then emits prost messages plus tonic
//! client and server code from the resulting descriptor set.

const PROTO_ROOT: &str = "proto";

const PROTOS: &[&str] =
    &["proto/mvccpb/kv.proto", "proto/authpb/auth.proto", "proto/etcdserverpb/rpc.proto", "proto/kaname/peer.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let fds = protox::compile(PROTOS, [PROTO_ROOT])?;

    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;

    Ok(())
}
