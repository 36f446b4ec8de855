//! Rows for the unit tests of this module's files.

use basketflow_vocab::read_models::{PaidOrderLine, SoldProductDaily};
use basketflow_vocab::Timestamp;

/// Sales of product `p` (category `c`) at retailer `r` on day 20,000.
pub(crate) fn sold() -> SoldProductDaily {
    SoldProductDaily {
        day: 20_000,
        retailer_id: "r".into(),
        product_id: "p".into(),
        category: "c".into(),
        quantity: 3,
        revenue_cents: 300,
        orders: 1,
    }
}

/// The line of product `p` (category `c`) of order `o` of shopper `s` at retailer `r`.
pub(crate) fn paid_line(cancelled: bool) -> PaidOrderLine {
    PaidOrderLine {
        retailer_id: "r".into(),
        order_id: "o".into(),
        product_id: "p".into(),
        category: "c".into(),
        shopper_id: "s".into(),
        quantity: 2,
        revenue_cents: 300,
        ordered_at: Timestamp(1_700_000_000_000_000),
        day: 19_675,
        cancelled,
    }
}
