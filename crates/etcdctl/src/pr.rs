//! Printing pieces shared by the commands: etcdctl's simple, json and fields forms of
//! response headers and key-values.

use kaname_proto::etcdserverpb::ResponseHeader;
use kaname_proto::mvccpb::KeyValue;

use crate::client::{fail, Format, Res, EXIT_BAD_FEATURE};
use crate::out::{go_quote, hex_prefixed, out, outln, Obj, J};

/// `<format> not supported as output format` (exit 4) for formats a command lacks.
pub fn unsupported<T>(f: Format) -> Res<T> {
    let name = match f {
        Format::Simple => "simple",
        Format::Json => "json",
        Format::Fields => "fields",
        Format::Table => "table",
        Format::Protobuf => "protobuf",
    };
    fail(EXIT_BAD_FEATURE, format!("{name} not supported as output format"))
}

/// `-w protobuf`: the response's wire encoding, no newline.
pub fn protobuf<M: prost::Message>(m: &M) {
    out(&m.encode_to_vec());
}

pub fn hdr_json(h: &Option<ResponseHeader>) -> Option<J> {
    h.as_ref().map(hdr_obj)
}

pub fn hdr_obj(h: &ResponseHeader) -> J {
    hdr_fields(Obj::new(), h).j()
}

/// The header's fields inline (Go structs that embed `*pb.ResponseHeader`).
pub fn hdr_fields(o: Obj, h: &ResponseHeader) -> Obj {
    o.o("cluster_id", J::U(h.cluster_id))
        .o("member_id", J::U(h.member_id))
        .o("revision", J::I(h.revision))
        .o("raft_term", J::U(h.raft_term))
}

pub fn kv_json(kv: &KeyValue) -> J {
    Obj::new()
        .o("key", J::Bytes(kv.key.clone()))
        .o("create_revision", J::I(kv.create_revision))
        .o("mod_revision", J::I(kv.mod_revision))
        .o("version", J::I(kv.version))
        .o("value", J::Bytes(kv.value.clone()))
        .o("lease", J::I(kv.lease))
        .j()
}

pub fn kvs_json(kvs: &[KeyValue]) -> J {
    J::A(kvs.iter().map(kv_json).collect())
}

pub fn fields_hdr(h: &Option<ResponseHeader>) {
    let h = (*h).unwrap_or_default();
    outln(&format!("\"ClusterID\" : {}", h.cluster_id));
    outln(&format!("\"MemberID\" : {}", h.member_id));
    outln(&format!("\"Revision\" : {}", h.revision));
    outln(&format!("\"RaftTerm\" : {}", h.raft_term));
}

pub fn fields_kv(pfx: &str, kv: &KeyValue, hex: bool) {
    outln(&format!("\"{pfx}Key\" : {}", go_quote(&kv.key)));
    outln(&format!("\"{pfx}CreateRevision\" : {}", kv.create_revision));
    outln(&format!("\"{pfx}ModRevision\" : {}", kv.mod_revision));
    outln(&format!("\"{pfx}Version\" : {}", kv.version));
    outln(&format!("\"{pfx}Value\" : {}", go_quote(&kv.value)));
    let _ = hex; // etcdctl 3.4 prints the lease in decimal even with --hex
    outln(&format!("\"{pfx}Lease\" : {}", kv.lease));
}

/// simple: the key (unless value-only) and the value, each on its own line.
pub fn simple_kv(kv: &KeyValue, hex: bool, value_only: bool) {
    let (k, v) = if hex {
        (hex_prefixed(&kv.key).into_bytes(), hex_prefixed(&kv.value).into_bytes())
    } else {
        (kv.key.clone(), kv.value.clone())
    };
    if !value_only {
        out(&k);
        out(b"\n");
    }
    out(&v);
    out(b"\n");
}

pub fn print_json(j: J) {
    outln(&j.render());
}
