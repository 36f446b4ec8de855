//! Late inputs: events the contract's settlement horizon leaves out of the figures.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Why an input came too late to change the figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LateReason {
    /// An `order_paid` for an order that had settled (`graph.settlement_ms` after its first
    /// payment was read, or after its first cancellation when no payment came by then).
    PaymentAfterSettlement,
    /// A `cancelled` status change for an order that had settled.
    CancellationAfterSettlement,
}

impl LateReason {
    /// Every reason, in a fixed order (the metrics' labels).
    pub const ALL: [LateReason; 2] = [
        LateReason::PaymentAfterSettlement,
        LateReason::CancellationAfterSettlement,
    ];

    /// The reason's name in `/metrics` and in ClickHouse.
    pub fn as_str(self) -> &'static str {
        match self {
            LateReason::PaymentAfterSettlement => "payment_after_settlement",
            LateReason::CancellationAfterSettlement => "cancellation_after_settlement",
        }
    }
}

/// An input the graph counted once (rule 1) but that changes no figure because its order had
/// settled: the settled figures stand, and this record says so. It names no shopper.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LateInput {
    /// The retailer.
    pub retailer_id: String,
    /// The order it is about.
    pub order_id: String,
    /// The event's id.
    pub event_id: String,
    /// The event's type (`order_paid`, `order_status_changed`).
    pub event_type: String,
    /// Why it is late.
    pub reason: LateReason,
    /// When the tracker says it happened.
    pub occurred_at: Timestamp,
    /// The logical time (ms) it was read at.
    pub read_at: u64,
}
