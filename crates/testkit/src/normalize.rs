//! Masks what legitimately differs between two clusters (real etcd vs kaname,
//! or two etcd clusters): ports, member and cluster IDs, raft term and index,
//! db sizes, server version, hashes, durations, timestamps, client UUIDs.
//!
//! Masks are stable placeholders such as `<id:m2>`, `<cluster-id>`,
//! `<client:m1>`, `<n>`, `<db-size>`, `<version>`, `<hash#1>`, `<duration>`.
//! Hashes are numbered in order of first appearance within one output, so
//! "all members report the same hash" is still checked. Zero values stay zero
//! (etcd leaves e.g. inner txn headers' cluster_id at 0, kaname must too).
//!
//! All output formatting is etcdctl's, so JSON lines are parsed, masked and
//! re-serialized (keys sorted), table cells are trimmed (column widths depend
//! on masked values), and everything else is masked token by token.

use super::{etcdctl_timeout, Cluster};
use serde_json::Value;

/// Context-free normalization: masks by pattern only.
pub fn normalize(text: &str) -> String {
    Masker::default().normalize(text, false)
}

/// Normalization with knowledge of one cluster: its ports and member IDs map
/// to per-member labels (`<client:m1>`, `<id:m1>`), so a member answering for
/// another, or a wrong advertised URL, still shows up as a difference.
#[derive(Clone, Debug, Default)]
pub struct Masker {
    ids: Vec<(u64, String)>,
    cluster_id: Option<u64>,
    ports: Vec<(u16, String)>,
    /// Mask which member is leader (elections make it vary in multi-member clusters).
    pub mask_leader: bool,
}

impl Masker {
    pub fn with_port(mut self, port: u16, label: &str) -> Self {
        self.ports.push((port, format!("<{label}>")));
        self
    }

    pub fn with_member_id(mut self, id: u64, name: &str) -> Self {
        self.ids.push((id, format!("<id:{name}>")));
        self
    }

    pub fn with_cluster_id(mut self, id: u64) -> Self {
        self.cluster_id = Some(id);
        self
    }

    /// Ports from the cluster, IDs from `member list -w json`. The second
    /// value explains why IDs could not be learnt (then IDs are masked by
    /// pattern only).
    pub fn for_cluster(c: &Cluster) -> (Masker, Option<String>) {
        let mut m = Masker { mask_leader: c.size() > 1, ..Masker::default() };
        for i in 1..=c.size() {
            let mem = c.member(i);
            m = m.with_port(mem.client.port, &format!("client:{}", mem.name));
            m = m.with_port(mem.peer.port, &format!("peer:{}", mem.name));
        }
        let out = etcdctl_timeout(&c.live_endpoints(), &["member", "list", "-w", "json"], None, "5s");
        if !out.success() {
            return (m, Some(format!("member list failed: {}{}", out.stdout, out.stderr)));
        }
        let v: Value = match serde_json::from_str(out.stdout.trim()) {
            Ok(v) => v,
            Err(e) => return (m, Some(format!("member list -w json is not JSON ({e}): {}", out.stdout))),
        };
        if let Some(cid) = v["header"]["cluster_id"].as_u64() {
            m = m.with_cluster_id(cid);
        }
        // Map IDs to names through the peer URL, which a member has from the
        // start (its name and client URLs appear only once it has published them).
        let mut unmapped = Vec::new();
        for mem in v["members"].as_array().into_iter().flatten() {
            let Some(id) = mem["ID"].as_u64() else {
                continue;
            };
            let peer = mem["peerURLs"][0].as_str().unwrap_or("");
            let name = (1..=c.size())
                .map(|i| c.member(i))
                .find(|x| peer == format!("http://127.0.0.1:{}", x.peer.port))
                .map(|x| x.name.clone());
            match name {
                Some(name) => m = m.with_member_id(id, &name),
                None => unmapped.push(id),
            }
        }
        let warning = (!unmapped.is_empty())
            .then(|| format!("member IDs {unmapped:?} have no peer URL of this cluster: {}", out.stdout.trim()));
        (m, warning)
    }

    /// Normalizes a whole output. `unordered` sorts lines and JSON arrays, for
    /// commands whose order is not deterministic (e.g. `--cluster`, health).
    pub fn normalize(&self, text: &str, unordered: bool) -> String {
        let mut st = State { m: self, hashes: Vec::new(), header: None };
        let mut lines: Vec<String> = text.lines().map(|l| st.line(l, unordered)).collect();
        if unordered {
            lines.sort();
        }
        let mut out = lines.join("\n");
        if text.ends_with('\n') {
            out.push('\n');
        }
        out
    }

    fn id_label(&self, v: u64) -> Option<String> {
        if self.cluster_id == Some(v) {
            return Some("<cluster-id>".into());
        }
        self.ids.iter().find(|(id, _)| *id == v).map(|(_, l)| l.clone())
    }

    /// Port and ID substitution plus the pattern masks, for free text.
    fn subst(&self, s: &str) -> String {
        let s = self.subst_ports(s);
        let s = self.subst_tokens(&s);
        let s = mask_db_sizes(&s);
        let s = mask_versions(&s);
        mask_durations(&s)
    }

    fn subst_ports(&self, s: &str) -> String {
        const HOST: &str = "127.0.0.1:";
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(pos) = rest.find(HOST) {
            let after = pos + HOST.len();
            out.push_str(&rest[..after]);
            let digits = rest[after..].bytes().take_while(|b| b.is_ascii_digit()).count();
            let port = &rest[after..after + digits];
            match port.parse::<u16>().ok().and_then(|p| self.ports.iter().find(|(q, _)| *q == p)) {
                Some((_, label)) => out.push_str(label),
                None if digits > 0 => out.push_str("<port>"),
                None => {}
            }
            rest = &rest[after + digits..];
        }
        out.push_str(rest);
        out
    }

    fn subst_tokens(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !b[i].is_ascii_alphanumeric() {
                let ch = s[i..].chars().next().unwrap();
                out.push(ch);
                i += ch.len_utf8();
                continue;
            }
            let start = i;
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let tok = &s[start..i];
            out.push_str(&self.token(tok).unwrap_or_else(|| tok.to_string()));
        }
        out
    }

    fn token(&self, tok: &str) -> Option<String> {
        if tok.bytes().all(|c| c.is_ascii_digit()) {
            // A decimal ID (JSON output), or a hex ID that happens to have no letters (one in
            // about 1,800 for 16 digits; member IDs derive from random ports).
            return tok
                .parse::<u64>()
                .ok()
                .and_then(|v| self.id_label(v))
                .or_else(|| u64::from_str_radix(tok, 16).ok().and_then(|v| self.id_label(v)))
                // A member added during the session has an ID the masker never learned; printed
                // in hex it is 16 digits, which no revision, size or count here reaches.
                .or_else(|| (tok.len() == 16).then(|| "<hex-id>".into()));
        }
        let hex = tok.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
        if !hex {
            return None;
        }
        if let Some(l) = u64::from_str_radix(tok, 16).ok().and_then(|v| self.id_label(v)) {
            return Some(l);
        }
        (tok.len() >= 12 && tok.bytes().any(|c| c.is_ascii_alphabetic())).then(|| "<hex-id>".into())
    }

    fn member_number(&self, key: &str, v: u64) -> String {
        if v == 0 {
            return "0".into();
        }
        match key {
            "leader" | "Leader" if self.mask_leader => "<leader>".into(),
            "cluster_id" | "ClusterID" => self.id_label(v).unwrap_or_else(|| "<cluster-id>".into()),
            _ => self.id_label(v).unwrap_or_else(|| "<member-id>".into()),
        }
    }
}

struct State<'a> {
    m: &'a Masker,
    hashes: Vec<String>,
    header: Option<Vec<String>>,
}

impl State<'_> {
    fn hash(&mut self, v: &str) -> String {
        let n = match self.hashes.iter().position(|h| h == v) {
            Some(n) => n,
            None => {
                self.hashes.push(v.to_string());
                self.hashes.len() - 1
            }
        };
        format!("<hash#{}>", n + 1)
    }

    fn line(&mut self, line: &str, unordered: bool) -> String {
        let t = line.trim();
        if t.starts_with('|') {
            return self.table_row(t);
        }
        if t.starts_with('+') && t.bytes().all(|c| c == b'+' || c == b'-') {
            return format!("+{}", "---+".repeat(t.matches('+').count().saturating_sub(1)));
        }
        self.header = None;
        if t.starts_with('{') || t.starts_with('[') {
            if let Ok(v) = serde_json::from_str::<Value>(t) {
                let mut v = self.json(None, v);
                if unordered {
                    sort_arrays(&mut v);
                }
                return v.to_string();
            }
        }
        if let Some(masked) = self.fields_line(line) {
            return masked;
        }
        self.simple_line(line)
    }

    /// `-w fields` lines: `"Name" : value`.
    fn fields_line(&mut self, line: &str) -> Option<String> {
        let rest = line.strip_prefix('"')?;
        let (name, value) = rest.split_once("\" : ")?;
        let num = value.parse::<u64>().ok();
        let masked = match (name, num) {
            ("ClusterID", Some(v)) => self.m.member_number("cluster_id", v),
            ("MemberID" | "ID", Some(v)) => self.m.member_number("member_id", v),
            ("Leader", Some(v)) => self.m.member_number("leader", v),
            ("RaftTerm" | "RaftIndex" | "RaftAppliedIndex", Some(v)) => mask_nonzero(v, "<n>"),
            ("DBSize" | "DBSizeInUse", Some(v)) => mask_nonzero(v, "<db-size>"),
            ("Hash", Some(_)) => self.hash(value),
            ("Version", None) if value.starts_with('"') => "\"<version>\"".into(),
            _ => self.m.subst(value),
        };
        Some(format!("\"{name}\" : {masked}"))
    }

    /// Simple (comma separated) output of endpoint status / hashkv, or free text.
    fn simple_line(&mut self, line: &str) -> String {
        let s = self.m.subst(line);
        let mut f: Vec<String> = s.split(", ").map(String::from).collect();
        let is_bool = |x: &str| x == "true" || x == "false";
        if f.len() == 10 && is_bool(&f[4]) && is_bool(&f[5]) {
            // endpoint, id, version, db size, is leader, is learner, term, index, applied, errors
            for x in &mut f[6..9] {
                if x.parse::<u64>().is_ok_and(|v| v != 0) {
                    *x = "<n>".into();
                }
            }
            if self.m.mask_leader {
                f[4] = "<leader>".into();
            }
            return f.join(", ");
        }
        if f.len() == 2 && f[0].contains("127.0.0.1:") && !f[1].is_empty() && f[1].bytes().all(|c| c.is_ascii_digit()) {
            // endpoint hashkv: endpoint, hash
            f[1] = self.hash(&f[1].clone());
            return f.join(", ");
        }
        s
    }

    fn table_row(&mut self, t: &str) -> String {
        let inner = t.strip_prefix('|').unwrap_or(t);
        let inner = inner.strip_suffix('|').unwrap_or(inner);
        let cells: Vec<String> = inner.split('|').map(|c| c.trim().to_string()).collect();
        let Some(header) = self.header.clone() else {
            self.header = Some(cells.clone());
            return format!("| {} |", cells.join(" | "));
        };
        let masked: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let col = header.get(i).map(String::as_str).unwrap_or("");
                if c.is_empty() {
                    return String::new();
                }
                match col {
                    "VERSION" => "<version>".into(),
                    "DB SIZE" => "<db-size>".into(),
                    "RAFT TERM" | "RAFT INDEX" | "RAFT APPLIED INDEX" => match c.parse::<u64>() {
                        Ok(v) => mask_nonzero(v, "<n>"),
                        Err(_) => self.m.subst(c),
                    },
                    "HASH" => self.hash(c),
                    "TOOK" => "<duration>".into(),
                    "IS LEADER" if self.m.mask_leader => "<leader>".into(),
                    _ => self.m.subst(c),
                }
            })
            .collect();
        format!("| {} |", masked.join(" | "))
    }

    fn json(&mut self, key: Option<&str>, v: Value) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| {
                        let nv = self.json(Some(&k), v);
                        (k, nv)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(|x| self.json(key, x)).collect()),
            Value::Number(n) => {
                let Some(u) = n.as_u64() else {
                    return Value::Number(n);
                };
                let k = key.unwrap_or("");
                match k {
                    "cluster_id" | "member_id" | "ID" | "leader" => Value::String(self.m.member_number(k, u)),
                    "raft_term" | "raftTerm" | "raftIndex" | "raftAppliedIndex" => str_value(mask_nonzero(u, "<n>")),
                    "dbSize" | "dbSizeInUse" => str_value(mask_nonzero(u, "<db-size>")),
                    "hash" => Value::String(self.hash(&u.to_string())),
                    _ => Value::Number(n),
                }
            }
            Value::String(s) => match key.unwrap_or("") {
                // base64 data: never masked.
                "key" | "value" => Value::String(s),
                "version" => Value::String("<version>".into()),
                "took" => Value::String("<duration>".into()),
                "ts" => Value::String("<ts>".into()),
                _ => Value::String(self.m.subst(&mask_client_uuid(&s))),
            },
            other => other,
        }
    }
}

fn str_value(s: String) -> Value {
    match s.parse::<u64>() {
        Ok(v) => Value::from(v),
        Err(_) => Value::String(s),
    }
}

fn mask_nonzero(v: u64, placeholder: &str) -> String {
    if v == 0 {
        "0".into()
    } else {
        placeholder.into()
    }
}

fn sort_arrays(v: &mut Value) {
    match v {
        Value::Array(a) => {
            a.iter_mut().for_each(sort_arrays);
            a.sort_by_key(|x| x.to_string());
        }
        Value::Object(m) => m.values_mut().for_each(sort_arrays),
        _ => {}
    }
}

/// `endpoint://client-<uuid>/...` in etcdctl's zap warnings.
fn mask_client_uuid(s: &str) -> String {
    let Some(pos) = s.find("client-") else {
        return s.to_string();
    };
    let start = pos + "client-".len();
    let len = s[start..].bytes().take_while(|c| c.is_ascii_hexdigit() || *c == b'-').count();
    if len < 32 {
        return s.to_string();
    }
    format!("{}<uuid>{}", &s[..start], &s[start + len..])
}

fn prev_is(s: &[u8], i: usize, f: impl Fn(u8) -> bool) -> bool {
    i > 0 && f(s[i - 1])
}

fn digits(s: &[u8], i: usize) -> usize {
    s[i..].iter().take_while(|c| c.is_ascii_digit()).count()
}

/// Replaces every match found by `matcher` (start -> Some(end)) with `with`;
/// matches only start at a digit not preceded by an alphanumeric or '.'.
fn replace_at_digits(s: &str, with: &str, matcher: impl Fn(&[u8], usize) -> Option<usize>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && !prev_is(b, i, |c| c.is_ascii_alphanumeric() || c == b'.') {
            if let Some(end) = matcher(b, i) {
                out.push_str(&s[last..i]);
                out.push_str(with);
                last = end;
                i = end;
                continue;
            }
            i += digits(b, i);
            continue;
        }
        i += 1;
    }
    out.push_str(&s[last..]);
    out
}

fn boundary_after(b: &[u8], end: usize) -> bool {
    end >= b.len() || !(b[end].is_ascii_alphanumeric() || b[end] == b'.' || b[end] >= 0x80)
}

/// Go durations: `1.5ms`, `851.35µs`, `2m3.1s`.
fn mask_durations(s: &str) -> String {
    replace_at_digits(s, "<duration>", |b, mut i| {
        let mut parts = 0;
        loop {
            let d = digits(b, i);
            if d == 0 {
                break;
            }
            let mut j = i + d;
            if j < b.len() && b[j] == b'.' {
                let f = digits(b, j + 1);
                if f == 0 {
                    return None;
                }
                j += 1 + f;
            }
            let rest = &b[j..];
            let unit = ["ns", "us", "\u{b5}s", "\u{3bc}s", "ms", "s", "m", "h"]
                .iter()
                .find(|u| rest.starts_with(u.as_bytes()))
                .map(|u| u.len());
            match unit {
                Some(u) => i = j + u,
                None => return (parts > 0 && boundary_after(b, i)).then_some(i),
            }
            parts += 1;
        }
        (parts > 0 && boundary_after(b, i)).then_some(i)
    })
}

/// Three-part versions `3.4.23` (with an optional `-suffix`), not IPv4 addresses.
fn mask_versions(s: &str) -> String {
    replace_at_digits(s, "<version>", |b, i| {
        let mut j = i;
        for part in 0..3 {
            let d = digits(b, j);
            if d == 0 {
                return None;
            }
            j += d;
            if part < 2 {
                if j >= b.len() || b[j] != b'.' {
                    return None;
                }
                j += 1;
            }
        }
        if j < b.len() && b[j] == b'.' && digits(b, j + 1) > 0 {
            return None; // a fourth part: an IP address
        }
        if j < b.len() && (b[j] == b'-' || b[j] == b'+') {
            j += 1 + b[j + 1..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'.' || **c == b'-').count();
        }
        boundary_after(b, j).then_some(j)
    })
}

/// humanize.Bytes sizes as etcdctl prints them: `20 kB`, `1.0 MB`.
fn mask_db_sizes(s: &str) -> String {
    replace_at_digits(s, "<db-size>", |b, i| {
        let mut j = i + digits(b, i);
        if j < b.len() && b[j] == b'.' {
            let f = digits(b, j + 1);
            if f == 0 {
                return None;
            }
            j += 1 + f;
        }
        if j >= b.len() || b[j] != b' ' {
            return None;
        }
        j += 1;
        let unit = ["B", "kB", "MB", "GB", "TB"].iter().find(|u| b[j..].starts_with(u.as_bytes()))?;
        let end = j + unit.len();
        boundary_after(b, end).then_some(end)
    })
}
