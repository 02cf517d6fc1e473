//! Istio's duration format: `7s`, `0.5s`, `3m`, `1h30m`, `250ms` (Go's `time.ParseDuration`,
//! which is also what protobuf's JSON form `1.5s` is a subset of).

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration as StdDuration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub fn as_std(self) -> StdDuration {
        self.0
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let s = text.trim();
        if s.is_empty() {
            return Err("empty duration".into());
        }
        if s == "0" {
            return Ok(Duration(StdDuration::ZERO));
        }
        if s.starts_with('-') {
            return Err(format!("duration {text:?} is negative"));
        }
        let mut total = 0f64;
        let mut rest = s;
        while !rest.is_empty() {
            let num_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| {
                    format!("duration {text:?} has no unit (use s, ms, m or h, e.g. \"5s\")")
                })?;
            let value: f64 = rest[..num_end]
                .parse()
                .map_err(|_| format!("duration {text:?} has a malformed number"))?;
            rest = &rest[num_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let seconds_per_unit = match &rest[..unit_end] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                unit => {
                    return Err(format!(
                        "duration {text:?} has unknown unit {unit:?} (use ns, us, ms, s, m or h)"
                    ))
                }
            };
            total += value * seconds_per_unit;
            rest = &rest[unit_end..];
        }
        if !total.is_finite() || total > 315_576_000_000.0 {
            return Err(format!("duration {text:?} is out of range"));
        }
        Ok(Duration(StdDuration::from_secs_f64(total)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.as_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}s", d.as_secs_f64())
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A string, as Istio's schema has it: the format is checked when the spec loads.
impl schemars::JsonSchema for Duration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string"})
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_forms() {
        let ms = |t| Duration::parse(t).unwrap().0.as_millis();
        assert_eq!(ms("7s"), 7000);
        assert_eq!(ms("0.5s"), 500);
        assert_eq!(ms("3m"), 180_000);
        assert_eq!(ms("1h"), 3_600_000);
        assert_eq!(ms("1h30m"), 5_400_000);
        assert_eq!(ms("250ms"), 250);
        assert_eq!(ms("0"), 0);
    }

    #[test]
    fn rejects_with_reason() {
        assert!(Duration::parse("5").unwrap_err().contains("no unit"));
        assert!(Duration::parse("5d").unwrap_err().contains("unknown unit"));
        assert!(Duration::parse("-1s").unwrap_err().contains("negative"));
        assert!(Duration::parse("").is_err());
    }
}
