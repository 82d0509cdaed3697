//! Serde for durations as Centrifugo writes them: Go duration strings (`"25s"`, `"1m30s"`,
//! `"720h"`, `"500ms"`) or bare numbers. A bare integer means **seconds** (Centrifugo reads it
//! as nanoseconds, which is never what a config author meant; `"300ns"` still works).

use serde::{de, Deserializer, Serializer};
use std::time::Duration;

/// The longest duration accepted: Go's `time.Duration` maximum (~292 years), so every value
/// Centrifugo takes is taken, and deadlines computed from a setting (`Instant + d`) cannot
/// overflow.
pub const MAX: Duration = Duration::new(9_223_372_036, 854_775_807);

fn in_range(d: Duration) -> Result<Duration, String> {
    if d <= MAX {
        Ok(d)
    } else {
        Err("duration out of range (at most 2562047h)".into())
    }
}

/// Whole seconds, then `f64` seconds (of a unit sum or a JSON number), checked against [`MAX`].
fn from_secs_f64(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| "duration out of range (at most 2562047h)".to_string())
        .and_then(in_range)
}

/// Parses a Go duration string such as `1h2m3.5s`, `250ms`, `10us`, `0`.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if let Ok(secs) = s.parse::<u64>() {
        return in_range(Duration::from_secs(secs));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        if num_end == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let value: f64 = rest[..num_end].parse().map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        total += value * mult;
        rest = &rest[unit_end..];
    }
    from_secs_f64(total)
}

/// Formats as a Go-style duration string (`"25s"`, `"1.5s"`, `"720h0m0s"` style is not needed).
pub fn format(d: &Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0s".into()
    } else if ns.is_multiple_of(1_000_000_000) {
        let s = ns / 1_000_000_000;
        if s.is_multiple_of(3600) {
            format!("{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            format!("{}m", s / 60)
        } else {
            format!("{s}s")
        }
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else {
        format!("{ns}ns")
    }
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration such as \"25s\" or a number of seconds")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            in_range(Duration::from_secs(v)).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            let secs = u64::try_from(v).map_err(|_| E::custom("negative duration"))?;
            in_range(Duration::from_secs(secs)).map_err(E::custom)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            if v.is_finite() && v >= 0.0 {
                from_secs_f64(v).map_err(E::custom)
            } else {
                Err(E::custom("invalid duration"))
            }
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn go_durations() {
        assert_eq!(parse("25s").unwrap(), Duration::from_secs(25));
        assert_eq!(parse("720h").unwrap(), Duration::from_secs(720 * 3600));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("300").unwrap(), Duration::from_secs(300));
        assert!(parse("5x").is_err());
        assert!(parse("s").is_err());
    }

    /// Found by the `config` fuzz target: a duration past `Duration`'s range panicked in
    /// `from_secs_f64`, and one past `Instant`'s range was accepted and later panicked a
    /// worker (`Instant + ping_interval`).
    #[test]
    fn out_of_range_durations_are_errors() {
        assert_eq!(parse("2562047h").unwrap(), Duration::from_secs(2562047 * 3600));
        assert_eq!(parse("9223372036").unwrap(), Duration::from_secs(9223372036));
        for s in ["18446744073709551615s", "99999999999999999999999s", "2562048h", "9223372037", "18446744073709551615"]
        {
            assert!(parse(s).unwrap_err().contains("out of range"), "{s}");
        }
        let de = |v: serde_json::Value| deserialize(&v).map_err(|e| e.to_string());
        assert!(de(serde_json::json!(1e300)).unwrap_err().contains("out of range"));
        assert!(de(serde_json::json!(u64::MAX)).unwrap_err().contains("out of range"));
        assert!(de(serde_json::json!(i64::MAX)).unwrap_err().contains("out of range"));
        assert_eq!(de(serde_json::json!(1.5)).unwrap(), Duration::from_millis(1500));
    }
}
