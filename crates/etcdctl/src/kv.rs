//! put, get, del, txn and compaction: etcdctl 3.4's key-value commands.

use std::io::{BufRead, Read};

use clap::{Args, Parser};
use kaname_proto::etcdserverpb::{
    compare, range_request, request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};

use crate::client::{bad_args, fail, Global, Res, EXIT_BAD_FEATURE, EXIT_ERROR, EXIT_INVALID_INPUT};
use crate::out::{outln, Obj, J};
use crate::pr::*;

#[derive(Args, Debug, Clone)]
pub struct PutArgs {
    /// return the previous key-value pair before modification
    #[arg(long)]
    prev_kv: bool,
    /// lease ID (in hexadecimal) to attach to the key
    #[arg(long, default_value = "0")]
    lease: String,
    /// updates the key using its current value
    #[arg(long)]
    ignore_value: bool,
    /// updates the key using its current lease
    #[arg(long)]
    ignore_lease: bool,
    args: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l")]
    consistency: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default)
    #[arg(long, default_value = "")]
    order: String,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION
    #[arg(long, default_value = "")]
    sort_by: String,
    /// Maximum number of results
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    limit: i64,
    /// Get keys with matching prefix
    #[arg(long)]
    prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    from_key: bool,
    /// Specify the kv revision
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    rev: i64,
    /// Get only the keys
    #[arg(long)]
    keys_only: bool,
    /// Only write values when using the "simple" output format
    #[arg(long)]
    print_value_only: bool,
    args: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct DelArgs {
    /// delete keys with matching prefix
    #[arg(long)]
    prefix: bool,
    /// return deleted key-value pairs
    #[arg(long)]
    prev_kv: bool,
    /// delete keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    from_key: bool,
    args: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct TxnArgs {
    /// Input transaction in interactive mode
    #[arg(short, long)]
    interactive: bool,
    args: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct CompactionArgs {
    /// Use physical compaction
    #[arg(long)]
    physical: bool,
    args: Vec<String>,
}

fn put_req(a: &PutArgs, stdin_ok: bool) -> Res<PutRequest> {
    let needs = "put command needs 1 argument and input from stdin or 2 arguments";
    let Some(key) = a.args.first() else { return bad_args(needs) };
    if a.ignore_value && a.args.len() > 1 {
        return bad_args("put command needs only 1 argument when 'ignore-value' is set");
    }
    let mut value = Vec::new();
    if !a.ignore_value {
        if let Some(v) = a.args.get(1) {
            value = v.clone().into_bytes();
        } else if stdin_ok {
            let _ = std::io::stdin().read_to_end(&mut value);
            if value.is_empty() {
                return bad_args(needs);
            }
        } else {
            return bad_args(needs);
        }
    }
    let lease = match i64::from_str_radix(&a.lease, 16) {
        Ok(l) => l,
        Err(_) => {
            return bad_args(format!(
                "bad lease ID (strconv.ParseInt: parsing {}: invalid syntax), expecting ID in Hex",
                crate::out::go_quote(a.lease.as_bytes())
            ))
        }
    };
    Ok(PutRequest {
        key: key.clone().into_bytes(),
        value,
        lease,
        prev_kv: a.prev_kv,
        ignore_value: a.ignore_value,
        ignore_lease: a.ignore_lease,
    })
}

/// clientv3's WithPrefix: the end of the range of keys starting with `key`.
pub fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().unwrap() += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

fn key_range(args: &[String], prefix: bool, from_key: bool) -> (Vec<u8>, Vec<u8>) {
    let mut key = args[0].clone().into_bytes();
    let mut end = args.get(1).map(|s| s.clone().into_bytes()).unwrap_or_default();
    if prefix {
        if key.is_empty() {
            key = vec![0];
            end = vec![0];
        } else {
            end = prefix_end(&key);
        }
    }
    if from_key {
        if key.is_empty() {
            key = vec![0];
        }
        end = vec![0];
    }
    (key, end)
}

fn get_req(a: &GetArgs) -> Res<RangeRequest> {
    if a.args.is_empty() {
        return bad_args("get command needs one argument as key and an optional argument as range_end");
    }
    if a.prefix && a.from_key {
        return bad_args("`--prefix` and `--from-key` cannot be set at the same time, choose one");
    }
    let serializable = match a.consistency.as_str() {
        "s" => true,
        "l" => false,
        c => return fail(EXIT_BAD_FEATURE, format!("unknown consistency flag {}", crate::out::go_quote(c.as_bytes()))),
    };
    if a.args.len() > 1 && (a.prefix || a.from_key) {
        return bad_args("too many arguments, only accept one argument when `--prefix` or `--from-key` is set");
    }
    use range_request::{SortOrder, SortTarget};
    let mut order = match a.order.to_uppercase().as_str() {
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        "" => SortOrder::None,
        _ => return fail(EXIT_BAD_FEATURE, format!("bad sort order {}", a.order)),
    };
    let target = match a.sort_by.to_uppercase().as_str() {
        "CREATE" => SortTarget::Create,
        "KEY" | "" => SortTarget::Key,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => return fail(EXIT_BAD_FEATURE, format!("bad sort target {}", a.sort_by)),
    };
    if target == SortTarget::Key && order == SortOrder::Ascend {
        order = SortOrder::None;
    }
    let (key, range_end) = key_range(&a.args, a.prefix, a.from_key);
    Ok(RangeRequest {
        key,
        range_end,
        limit: a.limit,
        revision: a.rev.max(0),
        sort_order: order as i32,
        sort_target: target as i32,
        serializable,
        keys_only: a.keys_only,
        ..Default::default()
    })
}

fn del_req(a: &DelArgs) -> Res<DeleteRangeRequest> {
    if a.args.is_empty() {
        return bad_args("del command needs one argument as key and an optional argument as range_end");
    }
    if a.prefix && a.from_key {
        return bad_args("`--prefix` and `--from-key` cannot be set at the same time, choose one");
    }
    if a.args.len() > 1 && (a.prefix || a.from_key) {
        return bad_args("too many arguments, only accept one argument when `--prefix` or `--from-key` is set");
    }
    let (key, range_end) = key_range(&a.args, a.prefix, a.from_key);
    Ok(DeleteRangeRequest { key, range_end, prev_kv: a.prev_kv })
}

// ---------------------------------------------------------------------------
// printers
// ---------------------------------------------------------------------------

fn put_json(r: &PutResponse) -> J {
    Obj::new().opt("header", hdr_json(&r.header)).opt("prev_kv", r.prev_kv.as_ref().map(kv_json)).j()
}
fn get_json(r: &RangeResponse) -> J {
    Obj::new()
        .opt("header", hdr_json(&r.header))
        .o("kvs", kvs_json(&r.kvs))
        .o("more", J::B(r.more))
        .o("count", J::I(r.count))
        .j()
}
fn del_json(r: &DeleteRangeResponse) -> J {
    Obj::new().opt("header", hdr_json(&r.header)).o("deleted", J::I(r.deleted)).o("prev_kvs", kvs_json(&r.prev_kvs)).j()
}
fn txn_json(r: &TxnResponse) -> J {
    let resps = r
        .responses
        .iter()
        .map(|op| {
            let inner = match &op.response {
                Some(response_op::Response::ResponseRange(x)) => Some(Obj::new().f("ResponseRange", get_json(x)).j()),
                Some(response_op::Response::ResponsePut(x)) => Some(Obj::new().f("ResponsePut", put_json(x)).j()),
                Some(response_op::Response::ResponseDeleteRange(x)) => {
                    Some(Obj::new().f("ResponseDeleteRange", del_json(x)).j())
                }
                Some(response_op::Response::ResponseTxn(x)) => Some(Obj::new().f("ResponseTxn", txn_json(x)).j()),
                None => None,
            };
            Obj::new().opt("Response", inner).j()
        })
        .collect();
    Obj::new().opt("header", hdr_json(&r.header)).o("succeeded", J::B(r.succeeded)).o("responses", J::A(resps)).j()
}

#[derive(Clone, Copy)]
pub struct Disp {
    pub fmt: crate::client::Format,
    pub hex: bool,
    pub value_only: bool,
}

impl Disp {
    fn put(&self, r: &PutResponse) -> Res {
        use crate::client::Format::*;
        match self.fmt {
            Simple => {
                outln("OK");
                if let Some(kv) = &r.prev_kv {
                    simple_kv(kv, self.hex, false);
                }
            }
            Json => print_json(put_json(r)),
            Fields => {
                fields_hdr(&r.header);
                if let Some(kv) = &r.prev_kv {
                    fields_kv("Prev", kv, self.hex);
                }
            }
            Protobuf => protobuf(r),
            Table => return unsupported(self.fmt),
        }
        Ok(())
    }
    fn get(&self, r: &RangeResponse) -> Res {
        use crate::client::Format::*;
        match self.fmt {
            Simple => r.kvs.iter().for_each(|kv| simple_kv(kv, self.hex, self.value_only)),
            Json => print_json(get_json(r)),
            Fields => {
                fields_hdr(&r.header);
                r.kvs.iter().for_each(|kv| fields_kv("", kv, self.hex));
                outln(&format!("\"More\" : {}", r.more));
                outln(&format!("\"Count\" : {}", r.count));
            }
            Protobuf => protobuf(r),
            Table => return unsupported(self.fmt),
        }
        Ok(())
    }
    fn del(&self, r: &DeleteRangeResponse) -> Res {
        use crate::client::Format::*;
        match self.fmt {
            Simple => {
                outln(&r.deleted.to_string());
                r.prev_kvs.iter().for_each(|kv| simple_kv(kv, self.hex, self.value_only));
            }
            Json => print_json(del_json(r)),
            Fields => {
                fields_hdr(&r.header);
                outln(&format!("\"Deleted\" : {}", r.deleted));
                r.prev_kvs.iter().for_each(|kv| fields_kv("Prev", kv, self.hex));
            }
            Protobuf => protobuf(r),
            Table => return unsupported(self.fmt),
        }
        Ok(())
    }
    fn txn(&self, r: &TxnResponse) -> Res {
        use crate::client::Format::*;
        match self.fmt {
            Simple => {
                outln(if r.succeeded { "SUCCESS" } else { "FAILURE" });
                for op in &r.responses {
                    outln("");
                    match &op.response {
                        Some(response_op::Response::ResponseRange(x)) => self.get(x)?,
                        Some(response_op::Response::ResponsePut(x)) => self.put(x)?,
                        Some(response_op::Response::ResponseDeleteRange(x)) => self.del(x)?,
                        _ => outln("unexpected response"),
                    }
                }
            }
            Json => print_json(txn_json(r)),
            Fields => {
                fields_hdr(&r.header);
                outln(&format!("\"Succeeded\" : {}", r.succeeded));
                for op in &r.responses {
                    match &op.response {
                        Some(response_op::Response::ResponseRange(x)) => self.get(x)?,
                        Some(response_op::Response::ResponsePut(x)) => self.put(x)?,
                        Some(response_op::Response::ResponseDeleteRange(x)) => self.del(x)?,
                        _ => outln("\"Unknown\" : \"\""),
                    }
                }
            }
            Protobuf => protobuf(r),
            Table => return unsupported(self.fmt),
        }
        Ok(())
    }
}

fn disp(g: &Global) -> Res<Disp> {
    Ok(Disp { fmt: g.format()?, hex: g.hex, value_only: false })
}

// ---------------------------------------------------------------------------
// commands
// ---------------------------------------------------------------------------

pub async fn put(g: &Global, a: PutArgs) -> Res {
    let d = disp(g)?;
    let req = put_req(&a, true)?;
    let c = g.connect().await?;
    let r = g.timed(c.kv().put(req)).await?;
    d.put(&r)
}

pub async fn get(g: &Global, a: GetArgs) -> Res {
    let mut d = disp(g)?;
    let req = get_req(&a)?;
    let c = g.connect().await?;
    let r = g.timed(c.kv().range(req)).await?;
    if a.print_value_only {
        if d.fmt != crate::client::Format::Simple {
            return bad_args("print-value-only is only for `--write-out=simple`");
        }
        d.value_only = true;
    }
    d.get(&r)
}

pub async fn del(g: &Global, a: DelArgs) -> Res {
    let d = disp(g)?;
    let req = del_req(&a)?;
    let c = g.connect().await?;
    let r = g.timed(c.kv().delete_range(req)).await?;
    d.del(&r)
}

pub async fn compaction(g: &Global, a: CompactionArgs) -> Res {
    if a.args.len() != 1 {
        return bad_args("compaction command needs 1 argument");
    }
    let rev: i64 = match a.args[0].parse() {
        Ok(r) => r,
        Err(_) => {
            return fail(
                EXIT_ERROR,
                format!("strconv.ParseInt: parsing {}: invalid syntax", crate::out::go_quote(a.args[0].as_bytes())),
            )
        }
    };
    let c = g.connect().await?;
    g.timed(c.kv().compact(CompactionRequest { revision: rev, physical: a.physical })).await?;
    outln(&format!("compacted revision {rev}"));
    Ok(())
}

/// The request an op line of `txn` describes (`put k v`, `get k --prefix`, `del k`).
#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
enum TxnOp {
    Put(PutArgs),
    Get(GetArgs),
    Del(DelArgs),
}

/// etcdctl's Argify: words, "double-quoted" (Go escapes) and 'single-quoted' strings.
pub fn argify(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(&c) = it.peek() {
        if c.is_whitespace() {
            it.next();
            continue;
        }
        let mut w = String::new();
        if c == '"' {
            it.next();
            while let Some(c) = it.next() {
                match c {
                    '"' => break,
                    '\\' => match it.next() {
                        Some('n') => w.push('\n'),
                        Some('t') => w.push('\t'),
                        Some('r') => w.push('\r'),
                        Some(o) => w.push(o),
                        None => {}
                    },
                    c => w.push(c),
                }
            }
        } else if c == '\'' {
            it.next();
            for c in it.by_ref() {
                if c == '\'' {
                    break;
                }
                w.push(c);
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                w.push(c);
                it.next();
            }
        }
        out.push(w);
    }
    out
}

fn parse_op(line: &str) -> Res<RequestOp> {
    let args = argify(line);
    if args.len() < 2 {
        return fail(EXIT_INVALID_INPUT, format!("invalid txn compare request: {line}"));
    }
    let invalid =
        || crate::client::Exit { code: EXIT_INVALID_INPUT, msg: Some(format!("invalid txn request: {line}")) };
    let op = TxnOp::try_parse_from(&args).map_err(|_| invalid())?;
    let request = match op {
        TxnOp::Put(a) => request_op::Request::RequestPut(put_req(&a, false)?),
        TxnOp::Get(a) => request_op::Request::RequestRange(get_req(&a)?),
        TxnOp::Del(a) => request_op::Request::RequestDeleteRange(del_req(&a)?),
    };
    Ok(RequestOp { request: Some(request) })
}

/// Go's `%q` scan of a double-quoted string at the start of `s`; returns it and the rest.
fn scan_quoted(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    let rest = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &rest[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                o => out.push(o),
            },
            c => out.push(c),
        }
    }
    None
}

fn parse_compare(line: &str) -> Res<Compare> {
    let malformed = || fail(EXIT_INVALID_INPUT, format!("malformed comparison: {line}"));
    let Some((target, rest)) = line.split_once('(') else { return malformed() };
    let Some((key, rest)) = scan_quoted(rest) else { return malformed() };
    let Some(rest) = rest.strip_prefix(')') else { return malformed() };
    let rest = rest.trim_start();
    let op_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (op, rest) = rest.split_at(op_end);
    let Some((val, _)) = scan_quoted(rest) else { return malformed() };
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match op {
        "=" | "==" => R::Equal,
        "!=" => R::NotEqual,
        "<" => R::Less,
        ">" => R::Greater,
        _ => return fail(EXIT_INVALID_INPUT, format!("Unknown result op {op}")),
    };
    let num = |radix: u32| -> Res<i64> {
        i64::from_str_radix(&val, radix)
            .or_else(|_| fail(EXIT_INVALID_INPUT, format!("invalid txn compare request: {line}")))
    };
    let (target, union) = match target {
        "ver" | "version" => (T::Version, U::Version(num(10)?)),
        "c" | "create" => (T::Create, U::CreateRevision(num(10)?)),
        "m" | "mod" => (T::Mod, U::ModRevision(num(10)?)),
        "val" | "value" => (T::Value, U::Value(val.clone().into_bytes())),
        "lease" => (T::Lease, U::Lease(num(16)?)),
        t => return fail(EXIT_INVALID_INPUT, format!("malformed comparison: {line} (unknown target {t})")),
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key: key.into_bytes(),
        range_end: Vec::new(),
        target_union: Some(union),
    })
}

/// One line of stdin, trimmed; Go's ReadString('\n') fails with EOF on a last line without newline.
fn read_line(r: &mut impl BufRead) -> Res<String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(_) if line.ends_with('\n') => Ok(line.trim().to_string()),
        Ok(_) => fail(EXIT_INVALID_INPUT, "EOF"),
        Err(e) => fail(EXIT_INVALID_INPUT, e.to_string()),
    }
}

pub async fn txn(g: &Global, a: TxnArgs) -> Res {
    if !a.args.is_empty() {
        return bad_args("txn command does not accept argument");
    }
    let d = disp(g)?;
    let c = g.connect().await?;
    let stdin = std::io::stdin();
    let mut r = stdin.lock();
    let prompt = |s: &str| {
        if a.interactive {
            outln(s);
        }
    };
    let mut req = TxnRequest::default();
    prompt("compares:");
    loop {
        let line = read_line(&mut r)?;
        if line.is_empty() {
            break;
        }
        req.compare.push(parse_compare(&line)?);
    }
    prompt("success requests (get, put, del):");
    loop {
        let line = read_line(&mut r)?;
        if line.is_empty() {
            break;
        }
        req.success.push(parse_op(&line)?);
    }
    prompt("failure requests (get, put, del):");
    loop {
        let line = read_line(&mut r)?;
        if line.is_empty() {
            break;
        }
        req.failure.push(parse_op(&line)?);
    }
    let resp = g.timed(c.kv().txn(req)).await?;
    d.txn(&resp)
}
