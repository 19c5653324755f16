//! The range of event times substrate accepts, and the one conversion from payload times
//! (epoch milliseconds) to stored times (epoch microseconds). A time must lie in the years
//! 0000–9999 UTC, what RFC 3339 can write and chrono can represent; the gateway refuses
//! anything else with a 400, so `ms * 1000` can never overflow downstream. Consumers convert
//! with `millis_to_micros`, which checks the same range, for events that did not come
//! through the gateway.

/// 0000-01-01T00:00:00Z in epoch milliseconds.
pub const MIN_MILLIS: i64 = -62_167_219_200_000;
/// 9999-12-31T23:59:59.999Z in epoch milliseconds.
pub const MAX_MILLIS: i64 = 253_402_300_799_999;

/// Why a time is refused.
pub const OUT_OF_RANGE: &str = "time out of range (years 0000 to 9999 UTC)";

/// Whether epoch milliseconds lie in the accepted range.
pub fn millis_in_range(ms: i64) -> bool {
    (MIN_MILLIS..=MAX_MILLIS).contains(&ms)
}

/// Whether epoch microseconds lie in the accepted range.
pub fn micros_in_range(us: i64) -> bool {
    (MIN_MILLIS * 1_000..=MAX_MILLIS * 1_000 + 999).contains(&us)
}

/// Epoch milliseconds as microseconds, when in range.
pub fn millis_to_micros(ms: i64) -> Option<i64> {
    millis_in_range(ms).then(|| ms * 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_matches_rfc3339() {
        let first = chrono::DateTime::parse_from_rfc3339("0000-01-01T00:00:00Z").unwrap();
        let last = chrono::DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999Z").unwrap();
        assert_eq!(first.timestamp_millis(), MIN_MILLIS);
        assert_eq!(last.timestamp_millis(), MAX_MILLIS);
    }

    #[test]
    fn conversion_is_checked() {
        assert_eq!(millis_to_micros(1), Some(1_000));
        assert_eq!(millis_to_micros(MAX_MILLIS), Some(MAX_MILLIS * 1_000));
        assert_eq!(millis_to_micros(MAX_MILLIS + 1), None);
        assert_eq!(millis_to_micros(i64::MAX), None);
        assert_eq!(millis_to_micros(i64::MIN), None);
        assert!(micros_in_range(0));
        assert!(!micros_in_range(i64::MAX));
    }
}
