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
//!   de-duplication by `(retailer_id, event_id)` therefore has a horizon: a copy arriving after the first
//!   copy's period is counted again, anonymously or within its own period.
//!
//! For order facts both are one [`basketflow_operators::forget`] after the de-duplication
//! ([`apply_privacy`]): an event leaves the collection and its *residue* (the order event
//! without shopper or session) takes its place, so every downstream arrangement retracts the
//! shopper's records and compacts them away. Baskets apply the same rules on their own folded
//! state ([`crate::baskets`]), so basket changes never enter `forget`. The erasure is a fact of the `privacy-requests` topic, read again on every replay at
//! the same logical time, so a restart or a rebuild never brings the shopper back.

use basketflow_ingest::kafka_source::Millis;
use basketflow_vocab::{Erasure, Event, EventBody, Retention, WireEvent};
use differential_dataflow::VecCollection;
use timely::dataflow::operators::core::Map;
use timely::dataflow::Stream;

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
