//! Go's `time.ParseDuration` and `time.Duration.String` for non-negative durations.

use std::time::Duration;

/// Go's units, longest spelling first where one is a prefix of another.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a duration as Go's `time.ParseDuration`: a sequence of decimal numbers, each with
/// an optional fraction and a unit (`300ms`, `1.5h`, `2h45m`), or `0`. A leading `+` is
/// allowed; a negative duration is refused (no flag of ours means one), with Go's wording
/// for what Go refuses too.
pub fn parse(s: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration \"{s}\"");
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err(format!("time: negative duration \"{s}\" is not allowed here"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac = "";
        if let Some(after) = rest.strip_prefix('.') {
            let n = after.bytes().take_while(u8::is_ascii_digit).count();
            frac = &after[..n];
            rest = &after[n..];
        }
        if int.is_empty() && frac.is_empty() {
            // No digits at all ("." or "s").
            return Err(invalid());
        }
        let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration \"{s}\""));
        }
        let Some(&(_, scale)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(format!("time: unknown unit \"{unit}\" in duration \"{s}\""));
        };
        let whole: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| invalid())? };
        // The fraction's digits beyond what nanoseconds can hold are dropped, as Go drops them.
        let mut part = whole.checked_mul(scale).ok_or_else(invalid)?;
        let mut unit_of_digit = scale;
        for d in frac.bytes() {
            unit_of_digit /= 10;
            if unit_of_digit == 0 {
                break;
            }
            part += u128::from(d - b'0') * unit_of_digit;
        }
        total = total.checked_add(part).ok_or_else(invalid)?;
        // Go's durations are int64 nanoseconds.
        if total > i64::MAX as u128 {
            return Err(invalid());
        }
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Formats `d` as Go's `time.Duration.String`: `0s`, `1.5µs`, `300ms`, `2.5s`, `5m0s`,
/// `1h0m0s`.
pub fn format(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return decimal(ns, 1_000, "µs");
    }
    if ns < 1_000_000_000 {
        return decimal(ns, 1_000_000, "ms");
    }
    let secs = decimal(ns % 60_000_000_000, 1_000_000_000, "s");
    let mins = ns / 60_000_000_000;
    if mins == 0 {
        return secs;
    }
    let (h, m) = (mins / 60, mins % 60);
    if h == 0 {
        format!("{m}m{secs}")
    } else {
        format!("{h}h{m}m{secs}")
    }
}

/// `v / div` with the fraction's trailing zeros dropped, then `unit`.
fn decimal(v: u128, div: u128, unit: &str) -> String {
    let (whole, rest) = (v / div, v % div);
    let digits = div.to_string().len() - 1;
    let frac = format!("{rest:0digits$}");
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{whole}{unit}")
    } else {
        format!("{whole}.{frac}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_go_parses() {
        let ms = Duration::from_millis;
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("15s"), Ok(ms(15_000)));
        assert_eq!(parse("5m0s"), Ok(ms(300_000)));
        assert_eq!(parse("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse(".5s"), Ok(ms(500)));
        assert_eq!(parse("2h45m"), Ok(ms((2 * 3600 + 45 * 60) * 1000)));
        assert_eq!(parse("300ms"), Ok(ms(300)));
        assert_eq!(parse("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("+1s"), Ok(ms(1000)));
        assert_eq!(parse("1.0000000001s"), Ok(ms(1000)), "digits past nanoseconds are dropped");
    }

    #[test]
    fn refuses_with_go_words() {
        assert_eq!(parse(""), Err("time: invalid duration \"\"".into()));
        assert_eq!(parse("abc"), Err("time: invalid duration \"abc\"".into()));
        assert_eq!(parse("5"), Err("time: missing unit in duration \"5\"".into()));
        assert_eq!(parse("5x"), Err("time: unknown unit \"x\" in duration \"5x\"".into()));
        assert_eq!(parse("5min"), Err("time: unknown unit \"min\" in duration \"5min\"".into()));
        assert_eq!(parse("5 s"), Err("time: unknown unit \" s\" in duration \"5 s\"".into()));
        assert!(parse("-5s").is_err());
        assert!(parse("9999999999h").is_err(), "past int64 nanoseconds");
    }

    #[test]
    fn formats_as_go() {
        let ms = Duration::from_millis;
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_nanos(12)), "12ns");
        assert_eq!(format(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(format(ms(300)), "300ms");
        assert_eq!(format(ms(2_500)), "2.5s");
        assert_eq!(format(ms(300_000)), "5m0s");
        assert_eq!(format(ms(3_600_000)), "1h0m0s");
        assert_eq!(format(ms(3_725_500)), "1h2m5.5s");
        for s in ["15s", "5m0s", "1h0m0s", "2.5s", "300ms"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
