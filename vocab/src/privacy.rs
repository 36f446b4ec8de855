//! Privacy: a shopper's right to be forgotten and how long per-shopper data is kept.
//!
//! An [`ErasureRequest`] (a message on `privacy-requests`) names one shopper of one retailer.
//! Once the graph applies it, every derived state and table keyed by or containing that
//! `(retailer_id, shopper_id)` forgets them; anonymous product-level figures keep the shopper's
//! past orders without the id. The graph carries a request as an [`Erasure`], at the logical
//! time it read it. [`Retention`] says when per-shopper data leaves the graph's state and the
//! stored tables. The rules for later events of an erased id, and how an erasure survives
//! replays, are in `basketflow_dataflows::privacy`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::time::Timestamp;

/// Milliseconds in a day.
pub const MS_PER_DAY: u64 = 86_400_000;

/// The default retention period: 1095 days (three years, the article's history).
pub const DEFAULT_RETENTION_DAYS: u64 = 1095;

/// Ids in a request are at most this long (the event contract's limit).
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// An erasure request (JSON on `privacy-requests`, key = `shopper_id`).
///
/// ```json
/// {"request_id":"req-1","retailer_id":"r1","shopper_id":"s1","requested_at":"2026-12-01T10:00:00Z"}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    /// Unique id of the request (the audit table's key).
    pub request_id: String,
    /// The retailer the shopper belongs to.
    pub retailer_id: String,
    /// The shopper to forget.
    pub shopper_id: String,
    /// When the shopper asked (informational; the graph applies the request at the time it
    /// reads it).
    pub requested_at: Timestamp,
}

impl ErasureRequest {
    /// Parses and checks a request: JSON with exactly the four fields, ids of 1 to
    /// [`MAX_REQUEST_ID_BYTES`] bytes of non-blank printable text ([`crate::ids`]). The error says what is wrong, in one sentence.
    pub fn parse(bytes: &[u8]) -> Result<ErasureRequest, String> {
        let request: ErasureRequest =
            serde_json::from_slice(bytes).map_err(|e| format!("not an erasure request: {e}"))?;
        for (name, id) in [
            ("request_id", &request.request_id),
            ("retailer_id", &request.retailer_id),
            ("shopper_id", &request.shopper_id),
        ] {
            if id.is_empty() || id.len() > MAX_REQUEST_ID_BYTES {
                return Err(format!(
                    "{name} must have 1 to {MAX_REQUEST_ID_BYTES} bytes, got {}",
                    id.len()
                ));
            }
            if let Some(why) = crate::ids::id_problem(id) {
                return Err(format!("{name} {why}"));
            }
        }
        Ok(request)
    }
}

/// How long per-shopper data is kept, per retailer, in milliseconds of graph time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// The period of every retailer without its own.
    pub default_ms: u64,
    /// Retailers with their own period.
    pub per_retailer_ms: BTreeMap<String, u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            default_ms: DEFAULT_RETENTION_DAYS * MS_PER_DAY,
            per_retailer_ms: BTreeMap::new(),
        }
    }
}

impl Retention {
    /// The period of `retailer_id`, in milliseconds.
    pub fn period_ms(&self, retailer_id: &str) -> u64 {
        self.per_retailer_ms
            .get(retailer_id)
            .copied()
            .unwrap_or(self.default_ms)
    }

    /// The shortest and the longest period of any retailer, in milliseconds.
    pub fn bounds_ms(&self) -> (u64, u64) {
        self.per_retailer_ms
            .values()
            .fold((self.default_ms, self.default_ms), |(lo, hi), p| {
                (lo.min(*p), hi.max(*p))
            })
    }

    /// When an event read at logical time `time` (milliseconds) leaves the per-shopper state:
    /// `max(time, min(occurred_at, time) + period)`.
    pub fn leaves_at(&self, event: &Event, time: u64) -> u64 {
        let occurred_ms = u64::try_from(event.occurred_at.0.div_euclid(1000)).unwrap_or(0);
        time.max(
            occurred_ms
                .min(time)
                .saturating_add(self.period_ms(&event.retailer_id)),
        )
    }
}

/// An erasure request as the graph carries it, at the logical time it was read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Erasure {
    /// The request.
    pub request: ErasureRequest,
    /// Its partition of `privacy-requests`.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

impl Erasure {
    /// The key the graph forgets: `(retailer_id, shopper_id)`.
    pub fn shopper(&self) -> (String, String) {
        (
            self.request.retailer_id.clone(),
            self.request.shopper_id.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_say_why() {
        let json = br#"{"request_id":"q1","retailer_id":"r1","shopper_id":"s1","requested_at":"2026-12-01T10:00:00Z"}"#;
        let r = ErasureRequest::parse(json).unwrap();
        assert_eq!(r.shopper_id, "s1");
        assert_eq!(
            r.requested_at,
            Timestamp::parse_rfc3339("2026-12-01T10:00:00Z").unwrap()
        );
        assert_eq!(
            ErasureRequest::parse(serde_json::to_string(&r).unwrap().as_bytes()).unwrap(),
            r
        );
        let empty = br#"{"request_id":"q1","retailer_id":"r1","shopper_id":"","requested_at":"2026-12-01T10:00:00Z"}"#;
        assert_eq!(
            ErasureRequest::parse(empty).unwrap_err(),
            "shopper_id must have 1 to 128 bytes, got 0"
        );
        let escape = br#"{"request_id":"q1","retailer_id":"\u001b[31m","shopper_id":"s","requested_at":"2026-12-01T10:00:00Z"}"#;
        assert_eq!(
            ErasureRequest::parse(escape).unwrap_err(),
            "retailer_id contains U+001B at character 1: identifiers must be printable text, \
             without control or bidirectional formatting characters"
        );
        let blank = br#"{"request_id":"q1","retailer_id":"r1","shopper_id":"  ","requested_at":"2026-12-01T10:00:00Z"}"#;
        assert_eq!(
            ErasureRequest::parse(blank).unwrap_err(),
            "shopper_id must not be blank"
        );
        let extra = br#"{"request_id":"q1","retailer_id":"r1","shopper_id":"s","requested_at":"2026-12-01T10:00:00Z","email":"a@b.c"}"#;
        assert!(ErasureRequest::parse(extra)
            .unwrap_err()
            .starts_with("not an erasure request: unknown field `email`"));
        assert!(ErasureRequest::parse(b"{").is_err());
    }

    #[test]
    fn retention_counts_from_the_earlier_of_the_tracker_and_broker_clocks() {
        use crate::EventBody;
        let mut r = Retention {
            default_ms: 1_000,
            per_retailer_ms: BTreeMap::new(),
        };
        r.per_retailer_ms.insert("short".into(), 10);
        let event = |retailer: &str, occurred_ms: i64| Event {
            event_id: "e".into(),
            retailer_id: retailer.into(),
            shopper_id: "s".into(),
            session_id: None,
            occurred_at: Timestamp(occurred_ms * 1000),
            body: EventBody::SearchPerformed {
                query: "q".into(),
                result_count: None,
            },
        };
        assert_eq!(r.leaves_at(&event("r", 5_000), 5_000), 6_000);
        // A tracker clock in the future does not extend the period.
        assert_eq!(r.leaves_at(&event("r", 9_000), 5_000), 6_000);
        // One in the past shortens it, never below the time it was read.
        assert_eq!(r.leaves_at(&event("r", 4_500), 5_000), 5_500);
        assert_eq!(r.leaves_at(&event("r", 1), 5_000), 5_000);
        assert_eq!(r.leaves_at(&event("short", 5_000), 5_000), 5_010);
        assert_eq!(Retention::default().period_ms("x"), 1095 * MS_PER_DAY);
    }
}
