//! Privacy in the graph: erasure requests and retention periods.
//!
//! # Rules
//!
//! * **Erasure.** A valid request on `privacy-requests` for `(retailer_id, shopper_id)`, read
//!   at logical time `F`, removes the shopper from every per-shopper read model at `F`: their
//!   purchase history and basket disappear, their order lines stay with an empty
//!   `shopper_id` (anonymous), and the sold-product figures and affinities keep their orders
//!   unchanged (those are anonymous). The experience-tree state of the shopper is dropped.
//! * **After an erasure** the id stays erased: later events of the same `(retailer_id,
//!   shopper_id)` count only anonymously (their orders in the product figures and anonymous
//!   order lines) and never build a basket, a purchase history, tree state or a decision. A
//!   shopper who wants to be known again gets a new id from the retailer.
//! * **Retention.** Per-shopper data leaves the graph's state a retailer's period after the
//!   event: an event read at time `t` that occurred at `o` leaves at
//!   `max(t, min(o, t) + period)` (the tracker's clock can only make it leave earlier, never
//!   later than `t + period`). Orders then stay as anonymous facts, as for an erasure. The
//!   de-duplication by `event_id` therefore has a horizon: a copy arriving after the first
//!   copy's period is counted again, anonymously or within its own period.
//!
//! Both are one [`basketflow_operators::forget`] before the de-duplication: an event leaves
//! the collection and its *residue* (the order event without shopper or session) takes its
//! place, so every downstream arrangement retracts the shopper's records and compacts them
//! away. The erasure is a fact of the `privacy-requests` topic, read again on every replay at
//! the same logical time, so a restart or a rebuild never brings the shopper back.

use std::collections::BTreeMap;

use basketflow_ingest::kafka_source::{Millis, SourceMessage};
use basketflow_vocab::{ErasureRequest, Event, EventBody};
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::core::{Map, OkErr};
use timely::dataflow::Stream;

use crate::parse::DeadLetter;
use crate::wire::WireEvent;

/// Milliseconds in a day.
pub const MS_PER_DAY: u64 = 86_400_000;

/// The default retention period: 1095 days (three years, the article's history).
pub const DEFAULT_RETENTION_DAYS: u64 = 1095;

/// The rejection code of a message on `privacy-requests` that is not a valid request.
pub const INVALID_PRIVACY_REQUEST: &str = "invalid_privacy_request";

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

    /// When an event read at logical time `time` leaves the per-shopper state:
    /// `max(time, min(occurred_at, time) + period)`.
    pub fn leaves_at(&self, event: &Event, time: Millis) -> Millis {
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

/// Splits the messages of `privacy-requests` into erasures and dead letters (code
/// [`INVALID_PRIVACY_REQUEST`]; no payload excerpt is kept, it names a shopper).
pub fn parse_requests<'scope>(
    messages: Stream<'scope, Millis, Vec<SourceMessage>>,
    topic: &str,
) -> (
    Stream<'scope, Millis, Vec<Erasure>>,
    Stream<'scope, Millis, Vec<DeadLetter>>,
) {
    let topic = topic.to_string();
    #[allow(clippy::result_large_err)]
    messages.ok_err(
        move |m: SourceMessage| match ErasureRequest::parse(&m.payload) {
            Ok(request) => Ok(Erasure {
                request,
                partition: m.partition,
                offset: m.offset,
            }),
            Err(reason) => Err(DeadLetter {
                topic: Some(topic.clone()),
                partition: m.partition,
                offset: m.offset,
                key: m.key.and_then(|k| String::from_utf8(k).ok()),
                code: INVALID_PRIVACY_REQUEST.to_string(),
                field: String::new(),
                reason,
                payload_excerpt: None,
            }),
        },
    )
}

/// What remains of an event once its shopper is forgotten: an order event without shopper
/// and session (it still counts in the anonymous product figures); nothing for other events.
pub fn anonymous(event: &Event) -> Option<Event> {
    match event.body {
        EventBody::OrderPaid { .. } | EventBody::OrderStatusChanged { .. } => Some(Event {
            shopper_id: String::new(),
            session_id: None,
            ..event.clone()
        }),
        _ => None,
    }
}

/// Applies erasures and retention to validated events (see the module docs): the result is
/// what the read models see.
pub fn apply_privacy<'scope>(
    events: VecCollection<'scope, Millis, WireEvent>,
    erasures: Stream<'scope, Millis, Vec<Erasure>>,
    retention: Retention,
) -> VecCollection<'scope, Millis, WireEvent> {
    basketflow_operators::forget(
        "Privacy",
        events,
        erasures.map(|e| e.shopper()),
        |e: &WireEvent| (e.0.retailer_id.clone(), e.0.shopper_id.clone()),
        move |e: &WireEvent, t| Some(retention.leaves_at(&e.0, t)),
        |e: &WireEvent| anonymous(&e.0).map(WireEvent::from),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use basketflow_vocab::Timestamp;

    #[test]
    fn retention_counts_from_the_earlier_of_the_tracker_and_broker_clocks() {
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
