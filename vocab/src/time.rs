//! Instants as basketflow stores them: microseconds since the Unix epoch, UTC.
//!
//! Trackers send RFC 3339 strings; the graph orders, buckets and compares integers. A
//! [`Timestamp`] serializes back to RFC 3339 in UTC (`2026-11-22T10:15:00.123456Z`), with as many
//! fractional digits as it needs, so that serializing and parsing again is the identity.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant in microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// Microseconds in one day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

impl Timestamp {
    /// The earliest instant the contract accepts (ClickHouse `DateTime` starts at the epoch).
    pub const MIN: Timestamp = Timestamp(0);
    /// The latest instant the contract accepts: 2100-01-01T00:00:00Z (exclusive).
    pub const MAX: Timestamp = Timestamp(4_102_444_800_000_000);

    /// Parses an RFC 3339 timestamp with any offset, normalized to UTC. Digits beyond the
    /// microsecond are truncated.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|dt| Timestamp(dt.with_timezone(&Utc).timestamp_micros()))
    }

    /// The instant as a chrono UTC date-time.
    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }

    /// The UTC day this instant falls in, as days since the epoch (ClickHouse `Date`).
    pub fn day(self) -> i32 {
        self.0.div_euclid(MICROS_PER_DAY) as i32
    }

    /// Whole seconds since the epoch, rounded down (ClickHouse `DateTime`).
    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// The current wall-clock instant.
    pub fn now() -> Timestamp {
        Timestamp(Utc::now().timestamp_micros())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &self
                .to_datetime()
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 timestamp: {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_into_utc_and_prints_utc() {
        let t = Timestamp::parse_rfc3339("2026-11-22T12:00:00.5+02:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-22T10:00:00.500Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Some(t));
    }

    #[test]
    fn days_and_seconds_round_down_before_the_epoch_too() {
        assert_eq!(Timestamp(MICROS_PER_DAY - 1).day(), 0);
        assert_eq!(Timestamp(MICROS_PER_DAY).day(), 1);
        assert_eq!(Timestamp(-1).day(), -1);
        assert_eq!(Timestamp(-1).unix_seconds(), -1);
    }

    #[test]
    fn rejects_what_is_not_rfc3339() {
        for bad in [
            "2026-11-22",
            "2026-11-22 10:00:00",
            "1732270000",
            "2026-13-01T00:00:00Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
    }
}
