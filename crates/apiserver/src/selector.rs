//! Label and field selectors (k8s.io/apimachinery/pkg/labels and pkg/fields), as the list and
//! watch `labelSelector`/`fieldSelector` parameters carry them.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Exists,
    NotExists,
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
}

#[derive(Debug, Clone, Default)]
pub struct LabelSelector(Vec<(String, Op)>);

/// Splits on commas outside parentheses (`a in (x,y),b` is two requirements).
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63 && v.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top(s) {
            let p = part.trim();
            let bad = || format!("unable to parse requirement: invalid label selector: {p:?}");
            let (key, op) = if let Some(k) = p.strip_prefix('!') {
                (k.trim().to_string(), Op::NotExists)
            } else if let Some((k, v)) = p.split_once("!=") {
                (k.trim().to_string(), Op::NotEq(v.trim().to_string()))
            } else if let Some((k, v)) = p.split_once("==") {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = p.split_once('=') {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some((k, rest)) = split_set_op(p, " notin ") {
                (k, Op::NotIn(parse_set(rest).ok_or_else(bad)?))
            } else if let Some((k, rest)) = split_set_op(p, " in ") {
                (k, Op::In(parse_set(rest).ok_or_else(bad)?))
            } else {
                (p.to_string(), Op::Exists)
            };
            if !valid_key(&key) {
                return Err(bad());
            }
            let values: Vec<&String> = match &op {
                Op::Eq(v) | Op::NotEq(v) => vec![v],
                Op::In(vs) | Op::NotIn(vs) => vs.iter().collect(),
                _ => vec![],
            };
            if values.iter().any(|v| !valid_value(v)) {
                return Err(bad());
            }
            reqs.push((key, op));
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A `metav1.LabelSelector` object (matchLabels and matchExpressions, ANDed), as upstream's
    /// `LabelSelectorAsSelector` converts it.
    pub fn from_api(sel: &Value) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        if let Some(m) = sel["matchLabels"].as_object() {
            for (k, v) in m {
                reqs.push((k.clone(), Op::Eq(v.as_str().unwrap_or("").to_string())));
            }
        }
        for e in sel["matchExpressions"].as_array().into_iter().flatten() {
            let key = e["key"].as_str().unwrap_or("").to_string();
            let values: Vec<String> =
                e["values"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
            let op = match e["operator"].as_str().unwrap_or("") {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::NotExists,
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            reqs.push((key, op));
        }
        // Upstream sorts requirements by key, which is the order its String() prints.
        reqs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, labels: &Value) -> bool {
        self.0.iter().all(|(k, op)| {
            let v = labels.get(k).and_then(Value::as_str);
            match op {
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Eq(x) => v == Some(x.as_str()),
                // `!=` and `notin` also match objects without the label, as upstream.
                Op::NotEq(x) => v != Some(x.as_str()),
                Op::In(xs) => v.is_some_and(|v| xs.iter().any(|x| x == v)),
                Op::NotIn(xs) => !v.is_some_and(|v| xs.iter().any(|x| x == v)),
            }
        })
    }
}

/// The selector as upstream's `labels.Selector.String()` prints it (`app=web,tier in (a,b)`),
/// e.g. in a Scale's `status.selector` and the SELECTOR column of `-o wide`.
impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(k, op)| match op {
                Op::Exists => k.clone(),
                Op::NotExists => format!("!{k}"),
                Op::Eq(v) => format!("{k}={v}"),
                Op::NotEq(v) => format!("{k}!={v}"),
                Op::In(vs) => format!("{k} in ({})", sorted(vs).join(",")),
                Op::NotIn(vs) => format!("{k} notin ({})", sorted(vs).join(",")),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

fn sorted(vs: &[String]) -> Vec<String> {
    let mut v = vs.to_vec();
    v.sort();
    v
}

fn split_set_op(p: &str, op: &str) -> Option<(String, String)> {
    let i = p.find(op)?;
    Some((p[..i].trim().to_string(), p[i + op.len()..].trim().to_string()))
}

fn parse_set(s: String) -> Option<Vec<String>> {
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

/// A field selector: `field=value`, `field==value`, `field!=value`, comma-separated (ANDed).
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// `supported` is the resource's selectable fields beyond `metadata.name`/`metadata.namespace`.
    pub fn parse(s: &str, supported: &[&str]) -> Result<FieldSelector, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(reqs));
        }
        for part in s.split(',') {
            let (f, eq, v) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{part}'"));
            };
            let f = f.trim();
            if f != "metadata.name" && f != "metadata.namespace" && !supported.contains(&f) {
                return Err(format!("field label not supported: {f}"));
            }
            reqs.push((f.to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `metadata.name` an `=` requirement pins, so a get can replace a scan.
    pub fn name(&self) -> Option<&str> {
        self.0.iter().find(|(f, eq, _)| f == "metadata.name" && *eq).map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(f, eq, want)| {
            let mut cur = obj;
            for seg in f.split('.') {
                cur = &cur[seg];
            }
            let got = cur.as_str().unwrap_or("");
            (got == want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let l = json!({"app": "web", "tier": "front"});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&l);
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("env!=prod"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web)"));
        assert!(m("env notin (prod)"));
        assert!(m("!env"));
        assert!(!m("!app"));
        assert!(m(""));
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn api_label_selectors() {
        let sel = json!({"matchLabels": {"tier": "front", "app": "web"}, "matchExpressions": [{"key": "env", "operator": "In", "values": ["b", "a"]}]});
        let s = LabelSelector::from_api(&sel).unwrap();
        assert_eq!(s.to_string(), "app=web,env in (a,b),tier=front");
        assert!(s.matches(&json!({"app": "web", "tier": "front", "env": "a"})));
        assert!(!s.matches(&json!({"app": "web", "tier": "front"})));
    }

    #[test]
    fn field_selectors() {
        let o = json!({"metadata": {"name": "a", "namespace": "ns"}, "status": {"phase": "Pending"}});
        assert!(FieldSelector::parse("metadata.name=a", &[]).unwrap().matches(&o));
        assert!(!FieldSelector::parse("metadata.namespace!=ns", &[]).unwrap().matches(&o));
        assert!(FieldSelector::parse("status.phase=Pending", &["status.phase"]).unwrap().matches(&o));
        assert!(FieldSelector::parse("spec.x=1", &[]).is_err());
    }
}
