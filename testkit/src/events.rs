//! Event builders for hand-written scenarios (retailer `r1` unless said otherwise).

use basketflow_vocab::{
    BasketChange, Event, EventBody, OrderLine, OrderStatus, Product, Timestamp,
};

/// An instant from RFC 3339.
pub fn at(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).expect("valid RFC 3339")
}

/// The UTC day of an RFC 3339 date (`2026-11-22`).
pub fn day(date: &str) -> i32 {
    at(&format!("{date}T00:00:00Z")).day()
}

/// An event of retailer `r1`.
pub fn ev(event_id: &str, shopper_id: &str, occurred_at: &str, body: EventBody) -> Event {
    ev_at("r1", event_id, shopper_id, occurred_at, body)
}

/// An event of any retailer.
pub fn ev_at(
    retailer_id: &str,
    event_id: &str,
    shopper_id: &str,
    occurred_at: &str,
    body: EventBody,
) -> Event {
    Event {
        event_id: event_id.into(),
        retailer_id: retailer_id.into(),
        shopper_id: shopper_id.into(),
        session_id: None,
        occurred_at: at(occurred_at),
        body,
    }
}

fn change(product_id: &str, quantity: u32) -> BasketChange {
    BasketChange {
        product: Product {
            product_id: product_id.into(),
            category: "c".into(),
            brand: None,
            unit_price_cents: 100,
        },
        quantity,
    }
}

/// `product_added` of `quantity` units of `product_id` (category `c`, 100 cents).
pub fn added(product_id: &str, quantity: u32) -> EventBody {
    EventBody::ProductAdded(change(product_id, quantity))
}

/// `product_removed` of `quantity` units of `product_id`.
pub fn removed(product_id: &str, quantity: u32) -> EventBody {
    EventBody::ProductRemoved(change(product_id, quantity))
}

/// `order_paid` with lines `(product_id, category, quantity, unit_price_cents)`.
pub fn paid(order_id: &str, lines: &[(&str, &str, u32, i64)]) -> EventBody {
    EventBody::OrderPaid {
        order_id: order_id.into(),
        lines: lines
            .iter()
            .map(
                |&(product_id, category, quantity, unit_price_cents)| OrderLine {
                    product_id: product_id.into(),
                    category: category.into(),
                    brand: None,
                    quantity,
                    unit_price_cents,
                },
            )
            .collect(),
        total_cents: 0,
    }
}

/// `order_status_changed` to `status`.
pub fn status(order_id: &str, status: OrderStatus) -> EventBody {
    EventBody::OrderStatusChanged {
        order_id: order_id.into(),
        status,
    }
}

/// `order_status_changed` to `cancelled`.
pub fn cancelled(order_id: &str) -> EventBody {
    status(order_id, OrderStatus::Cancelled)
}

/// `order_status_changed` to `delivered`.
pub fn delivered(order_id: &str) -> EventBody {
    status(order_id, OrderStatus::Delivered)
}
