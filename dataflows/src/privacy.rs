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
//! The read models apply both where their state is, on folded state rather than on raw
//! events: the orders in [`crate::orders`] (a payment becomes its anonymous residue: the
//! order without its shopper), the baskets in [`crate::baskets`] (the shopper's records
//! leave). Each keeps the erased shoppers with the time of their erasure. The erasure is a
//! fact of the `privacy-requests` topic, read again on every replay at the same logical
//! time, so a restart or a rebuild never brings the shopper back.

use basketflow_vocab::{Event, EventBody};

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
