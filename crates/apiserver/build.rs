//! Compiles gnostic's OpenAPI v2 messages (`proto/openapiv2/OpenAPIv2.proto`), the protobuf
//! form of `/openapi/v2` kubectl asks for. The file is parsed by `protox` (pure Rust, which
//! also brings `google/protobuf/any.proto`), so no system `protoc` is needed; `prost-build`
//! emits the messages.

const PROTO: &str = "proto/openapiv2/OpenAPIv2.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let fds = protox::compile([PROTO], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
