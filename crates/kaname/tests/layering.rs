//! The layering docs/architecture.md describes, checked on the source: within the store and
//! the API server no two modules import each other, directly or through others (a cycle would
//! mean a lower layer reaches up), and crates reach the store and the API server only through
//! their protocols, never as Rust dependencies.
//!
//! A module's imports are the `crate::<module>` paths in its files, test code excepted (items
//! under `#[cfg(test)]`, and files declared only under it). Checked at two
//! depths: top-level modules (`raft`, `server`) and their children (`raft::network`).
//!
//! Run: `cargo test -p kaname --test layering`. Starts no process.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file relative to the crate's `src`: `raft/network.rs` → `raft::network`,
/// `server/mod.rs` → `server`, `lib.rs` → ``.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The names of modules a file declares as test-only (`#[cfg(test)] mod x;`).
fn test_only_declarations(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("#[cfg(test)]") {
        rest = &rest[i + "#[cfg(test)]".len()..];
        let decl = rest.trim_start();
        let decl = decl.strip_prefix("pub ").or_else(|| decl.strip_prefix("pub(crate) ")).unwrap_or(decl);
        if let Some(after) = decl.strip_prefix("mod ") {
            let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if after[name.len()..].trim_start().starts_with(';') {
                out.push(name);
            }
        }
    }
    out
}

/// What a file's non-test code imports from its own crate, as module paths.
fn imports(text: &str) -> Vec<Vec<String>> {
    // Comments out, then every item under `#[cfg(test)]` (a `mod tests { .. }` block, a
    // `mod x;` declaration, a test-only helper), wherever it stands.
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut kept = String::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("#[cfg(test)]") {
        kept.push_str(&rest[..i]);
        rest = skip_item(&rest[i + "#[cfg(test)]".len()..]);
    }
    kept.push_str(rest);
    let mut out = Vec::new();
    let mut rest = kept.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::B, c};`: each item's path.
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(|item| lowercase_path(item.trim())).filter(|p| !p.is_empty()));
        } else {
            let path = lowercase_path(rest);
            if !path.is_empty() {
                out.push(path);
            }
        }
    }
    out
}

/// What follows the item at the start of `s`: through its `;`, or its braces' match when a
/// `{` comes first.
fn skip_item(s: &str) -> &str {
    let (Some(open), semi) = (s.find('{'), s.find(';')) else {
        return s.find(';').map_or("", |i| &s[i + 1..]);
    };
    if semi.is_some_and(|i| i < open) {
        return &s[semi.unwrap() + 1..];
    }
    let mut depth = 0;
    for (i, c) in s[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &s[open + i + 1..];
                }
            }
            _ => {}
        }
    }
    ""
}

/// The leading module segments of a path (lower-case identifiers): `raft::network::X` →
/// `[raft, network]`.
fn lowercase_path(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    for seg in s.split("::") {
        let ident: String = seg.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if ident.is_empty() || !ident.starts_with(|c: char| c.is_ascii_lowercase()) || ident == "self" {
            break;
        }
        let whole = ident.len() == seg.len();
        parts.push(ident);
        if !whole {
            break;
        }
    }
    parts
}

/// The import graph of a crate at `depth` (1: top-level modules), test code excepted.
fn graph(krate: &str, depth: usize) -> BTreeMap<String, BTreeSet<String>> {
    let src = workspace().join("crates").join(krate).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut test_only: Vec<Vec<String>> = Vec::new();
    for f in &files {
        let module = module_of(&src, f);
        for name in test_only_declarations(&fs::read_to_string(f).unwrap()) {
            let mut m = module.clone();
            m.push(name);
            test_only.push(m);
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let module = module_of(&src, f);
        if module.is_empty() || test_only.iter().any(|t| module.starts_with(t)) {
            continue;
        }
        let from = module[..module.len().min(depth)].join("::");
        for path in imports(&fs::read_to_string(f).unwrap()) {
            let to = path[..path.len().min(depth)].join("::");
            // A module's own children and its parent chain are the same module at this depth.
            if to != from && !from.starts_with(&format!("{to}::")) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

/// The strongly connected components of more than one module (Tarjan's algorithm).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                s.low.entry(v).and_modify(|l| *l = (*l).min(lw));
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                s.low.entry(v).and_modify(|l| *l = (*l).min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn assert_no_cycles(krate: &str) {
    for depth in [1, 2] {
        let g = graph(krate, depth);
        assert!(!g.is_empty(), "no imports found in crates/{krate}: the check reads nothing");
        let found = cycles(&g);
        assert!(found.is_empty(), "crates/{krate}: modules that import each other (depth {depth}): {found:?}\n{g:#?}");
    }
}

#[test]
fn the_store_has_no_import_cycles() {
    assert_no_cycles("store");
}

#[test]
fn the_apiserver_has_no_import_cycles() {
    assert_no_cycles("apiserver");
}

#[test]
fn the_check_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("server".into()).or_default().insert("raft".into());
    g.entry("raft".into()).or_default().insert("mvcc".into());
    assert!(cycles(&g).is_empty());
    g.entry("mvcc".into()).or_default().insert("server".into());
    assert_eq!(cycles(&g), [["mvcc", "raft", "server"]]);
    assert_eq!(
        imports("use crate::raft::network::{Forward, X};\nlet a = crate::mvcc::Store::open();"),
        [vec!["raft".to_string(), "network".to_string()], vec!["mvcc".to_string()]]
    );
    assert_eq!(
        imports("use crate::{\n    auth::UserInfo,\n    status,\n};\n#[cfg(test)]\nmod tests;\nuse crate::meta;\n#[cfg(test)]\nmod t { use crate::etcd; }\nuse crate::selector;"),
        [vec!["auth".to_string()], vec!["status".to_string()], vec!["meta".to_string()], vec!["selector".to_string()]]
    );
}

/// Only the binary (and the store itself) may link the store; only the binary (and the API
/// server itself) may link the API server: every other crate speaks etcd v3 or HTTP to them.
#[test]
fn no_crate_links_the_store_or_the_apiserver() {
    let crates = workspace().join("crates");
    for entry in fs::read_dir(&crates).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(toml) = fs::read_to_string(dir.join("Cargo.toml")) else { continue };
        // Only [dependencies]: tests may start and link anything.
        // Comments may name the crates (to say they are not used).
        let toml: String = toml.lines().map(|l| l.split('#').next().unwrap_or("")).collect::<Vec<_>>().join("\n");
        let deps: String = toml
            .split("\n[")
            .filter(|section| section.starts_with("dependencies]") || section.starts_with("[dependencies]"))
            .collect();
        if name != "kaname" && name != "store" {
            assert!(!deps.contains("kaname-store"), "crates/{name} depends on kaname-store");
        }
        if name != "kaname" && name != "apiserver" {
            assert!(!deps.contains("kaname-apiserver"), "crates/{name} depends on kaname-apiserver");
        }
    }
}
