//! Times as Kubernetes and Envoy write them: RFC 3339 in UTC (`2026-12-01T20:06:16.123Z`),
//! without a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// How many digits of the second's fraction to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fraction {
    /// Whole seconds, as certificates' validity is written (`2026-12-04T07:15:25Z`).
    None,
    /// Envoy's access-log `START_TIME`.
    Millis,
    /// `creationTimestamp` as Weft writes it, so objects made in one second keep their order
    /// (a fixed width, so the text sorts as the time does).
    Micros,
}

pub fn rfc3339(t: SystemTime, fraction: Fraction) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let fraction = match fraction {
        Fraction::None => String::new(),
        Fraction::Millis => format!(".{:03}", since.subsec_millis()),
        Fraction::Micros => format!(".{:06}", since.subsec_micros()),
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_read_as_kubernetes_and_envoy_write_them() {
        assert_eq!(
            rfc3339(UNIX_EPOCH, Fraction::Micros),
            "1970-01-01T00:00:00.000000Z"
        );
        let t = UNIX_EPOCH + Duration::from_micros(1_796_155_576_123_042);
        assert_eq!(rfc3339(t, Fraction::Micros), "2026-12-01T20:06:16.123042Z");
        assert_eq!(rfc3339(t, Fraction::Millis), "2026-12-01T20:06:16.123Z");
        assert_eq!(rfc3339(t, Fraction::None), "2026-12-01T20:06:16Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap, Fraction::Millis), "2000-02-29T00:00:00.000Z");
    }
}
