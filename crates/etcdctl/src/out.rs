//! Output helpers that reproduce what etcdctl's Go code prints: Go's `encoding/json` (field
//! order kept, `[]byte` as base64), `%q` quoting, the tablewriter layout and humanize sizes.

use std::io::Write;

/// Writes raw bytes to stdout (keys and values are printed as the bytes they are).
pub fn out(bytes: &[u8]) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(bytes);
}

/// Writes `s` and a newline to stdout.
pub fn outln(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
    let _ = o.write_all(b"\n");
}

/// A JSON value whose objects keep their field order, like Go structs marshal.
pub enum J {
    U(u64),
    I(i64),
    B(bool),
    S(String),
    Bytes(Vec<u8>),
    A(Vec<J>),
    O(Vec<(&'static str, J)>),
}

/// Builds a JSON object, leaving out fields marked empty (Go's `omitempty`).
#[derive(Default)]
pub struct Obj(Vec<(&'static str, J)>);

impl Obj {
    pub fn new() -> Obj {
        Obj(Vec::new())
    }
    /// Always present.
    pub fn f(mut self, k: &'static str, v: J) -> Obj {
        self.0.push((k, v));
        self
    }
    /// `omitempty`: left out when zero, false, empty.
    pub fn o(mut self, k: &'static str, v: J) -> Obj {
        let empty = match &v {
            J::U(0) | J::I(0) | J::B(false) => true,
            J::S(s) => s.is_empty(),
            J::Bytes(b) => b.is_empty(),
            J::A(a) => a.is_empty(),
            _ => false,
        };
        if !empty {
            self.0.push((k, v));
        }
        self
    }
    pub fn opt(self, k: &'static str, v: Option<J>) -> Obj {
        match v {
            Some(v) => self.f(k, v),
            None => self,
        }
    }
    pub fn j(self) -> J {
        J::O(self.0)
    }
}

impl J {
    pub fn render(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }
    fn write(&self, s: &mut String) {
        match self {
            J::U(v) => s.push_str(&v.to_string()),
            J::I(v) => s.push_str(&v.to_string()),
            J::B(v) => s.push_str(if *v { "true" } else { "false" }),
            J::S(v) => json_str(s, v),
            J::Bytes(b) => {
                s.push('"');
                s.push_str(&base64(b));
                s.push('"');
            }
            J::A(a) => {
                s.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    v.write(s);
                }
                s.push(']');
            }
            J::O(fields) => {
                s.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    json_str(s, k);
                    s.push(':');
                    v.write(s);
                }
                s.push('}');
            }
        }
    }
}

/// Go's encoding/json string escaping (HTML characters escaped too).
fn json_str(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => s.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
}

pub fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for ch in b.chunks(3) {
        let n = (ch[0] as u32) << 16 | (*ch.get(1).unwrap_or(&0) as u32) << 8 | *ch.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= ch.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Go's `%q` of a byte string (strconv.Quote).
pub fn go_quote(b: &[u8]) -> String {
    let mut s = String::from("\"");
    let mut rest = b;
    while !rest.is_empty() {
        let (c, len) = match std::str::from_utf8(&rest[..rest.len().min(4)]) {
            Ok(t) => {
                let c = t.chars().next().unwrap();
                (Some(c), c.len_utf8())
            }
            Err(e) if e.valid_up_to() > 0 => {
                let t = std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap();
                let c = t.chars().next().unwrap();
                (Some(c), c.len_utf8())
            }
            Err(_) => (None, 1),
        };
        match c {
            None => s.push_str(&format!("\\x{:02x}", rest[0])),
            Some('"') => s.push_str("\\\""),
            Some('\\') => s.push_str("\\\\"),
            Some('\x07') => s.push_str("\\a"),
            Some('\x08') => s.push_str("\\b"),
            Some('\x0c') => s.push_str("\\f"),
            Some('\n') => s.push_str("\\n"),
            Some('\r') => s.push_str("\\r"),
            Some('\t') => s.push_str("\\t"),
            Some('\x0b') => s.push_str("\\v"),
            Some(c) if (c as u32) < 0x20 || c as u32 == 0x7f => s.push_str(&format!("\\x{:02x}", c as u32)),
            Some(c) if (c as u32) >= 0x80 && (c.is_control() || c.is_whitespace() && c != ' ') => {
                if (c as u32) < 0x10000 {
                    s.push_str(&format!("\\u{:04x}", c as u32))
                } else {
                    s.push_str(&format!("\\U{:08x}", c as u32))
                }
            }
            Some(c) => s.push(c),
        }
        rest = &rest[len..];
    }
    s.push('"');
    s
}

/// etcdctl's `--hex` form: `\x` before every byte's two hex digits.
pub fn hex_prefixed(b: &[u8]) -> String {
    b.iter().map(|x| format!("\\x{x:02x}")).collect()
}

/// go-humanize `Bytes`: SI units, one decimal under 10.
pub fn humanize_bytes(n: u64) -> String {
    if n < 10 {
        return format!("{n} B");
    }
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let val = ((n as f64) / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", units[e])
    } else {
        format!("{val:.0} {}", units[e])
    }
}

/// The olekukonko/tablewriter layout etcdctl prints for `-w table`: centered upper-case
/// headers, right-aligned cells.
pub fn table(hdr: &[&str], rows: &[Vec<String>]) {
    let w: Vec<usize> = (0..hdr.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([hdr[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let line: String = w.iter().map(|n| format!("+{}", "-".repeat(n + 2))).collect::<String>() + "+";
    let mut s = format!("{line}\n");
    for (i, h) in hdr.iter().enumerate() {
        let h = h.replace('_', " ").to_uppercase();
        let gap = w[i] - h.chars().count();
        let left = gap / 2;
        s.push_str(&format!("| {}{}{} ", " ".repeat(left), h, " ".repeat(gap - left)));
    }
    s.push_str(&format!("|\n{line}\n"));
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            s.push_str(&format!("| {}{} ", " ".repeat(w[i] - c.chars().count()), c));
        }
        s.push_str("|\n");
    }
    s.push_str(&line);
    outln(&s);
}
