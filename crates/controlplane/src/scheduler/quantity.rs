//! Kubernetes resource quantities (`100m`, `128Mi`, `1.5G`, `1e3`) as the scheduler counts them:
//! CPU in millicores and everything else in units, rounded up as upstream's `MilliValue` and
//! `Value` round.
//!
//! Written here: k8s-openapi carries a `Quantity` as its string only, and the scheduler needs
//! exactly upstream's arithmetic (suffixes, exponents, rounding up), nothing more.

/// `ceil(q × 10^scale)` for the quantity `q`, saturating at i64's bounds; None when `s` is not
/// a quantity.
fn scaled(s: &str, scale: i32) -> Option<i64> {
    let s = s.trim();
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest.bytes().take_while(|c| c.is_ascii_digit() || *c == b'.').count();
    let (number, suffix) = rest.split_at(number_len);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    // value = digits × 10^(exp10 - frac.len()) × 2^(exp2)
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        e if e.starts_with(['e', 'E']) => (e[1..].parse().ok()?, 0),
        _ => return None,
    };
    let digits = format!("{int}{frac}");
    let mut v: i128 = digits.trim_start_matches('0').parse().unwrap_or(0);
    v = v.checked_mul(1i128 << exp2)?;
    let exp = exp10 + scale - frac.len() as i32;
    let clamp = |x: i128| x.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    let result = if exp >= 0 {
        match 10i128.checked_pow(exp as u32).and_then(|p| v.checked_mul(p)) {
            Some(x) => x,
            None => return Some(if negative { i64::MIN } else { i64::MAX }),
        }
    } else {
        let Some(p) = 10i128.checked_pow((-exp) as u32) else {
            return Some(if v == 0 {
                0
            } else if negative {
                -1
            } else {
                1
            });
        };
        // Round away from zero, as upstream's Value/MilliValue round up the magnitude.
        (v + p - 1) / p
    };
    Some(clamp(if negative { -result } else { result }))
}

/// The quantity in millis (`MilliValue`): `100m` → 100, `1` → 1000.
pub fn milli(s: &str) -> Option<i64> {
    scaled(s, 3)
}

/// The quantity in units (`Value`), rounded up: `128Mi` → 134217728, `100m` → 1.
pub fn value(s: &str) -> Option<i64> {
    scaled(s, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_upstream_counts_them() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("1"), Some(1000));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("0.1"), Some(100));
        assert_eq!(milli("250u"), Some(1), "rounded up");
        assert_eq!(value("128Mi"), Some(128 << 20));
        assert_eq!(value("1Gi"), Some(1 << 30));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("1.5Gi"), Some(3 << 29));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("2E2"), Some(200));
        assert_eq!(value("100m"), Some(1), "Value rounds up");
        assert_eq!(value("0"), Some(0));
        assert_eq!(value("110"), Some(110));
        assert_eq!(value("-1"), Some(-1));
        assert_eq!(value("9Ei"), Some(i64::MAX), "saturates");
        for bad in ["", "abc", "1.2.3", "1Xi", "."] {
            assert_eq!(value(bad), None, "{bad}");
        }
    }
}
