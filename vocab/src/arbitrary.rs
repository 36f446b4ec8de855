//! Proptest strategies for valid events (feature `arbitrary`).
//!
//! Every value drawn here satisfies the contract, so a property test can serialize it and expect
//! the ingest to accept it unchanged. Ids are short ASCII words from small alphabets, so that
//! random streams collide on shoppers, products and orders as real traffic does.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use crate::{BasketChange, Event, EventBody, OrderLine, OrderStatus, PageType, Product, Timestamp};

/// An id such as `p3`: `prefix` followed by a number below `n`.
pub fn id(prefix: &'static str, n: u32) -> impl Strategy<Value = String> {
    (0..n).prop_map(move |i| format!("{prefix}{i}"))
}

/// Free text without characters that could look like an email address.
pub fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 /:._?=-]{1,40}"
}

/// An instant between 2020 and 2030, to the microsecond.
pub fn timestamp() -> impl Strategy<Value = Timestamp> {
    (1_577_836_800_000_000i64..1_893_456_000_000_000).prop_map(Timestamp)
}

/// A product with an id among `n_products`.
pub fn product(n_products: u32) -> impl Strategy<Value = Product> {
    (
        id("p", n_products),
        id("c", 5),
        option::of(id("b", 4)),
        0i64..100_000,
    )
        .prop_map(|(product_id, category, brand, unit_price_cents)| Product {
            product_id,
            category,
            brand,
            unit_price_cents,
        })
}

fn order_line(n_products: u32) -> impl Strategy<Value = OrderLine> {
    (product(n_products), 1u32..5).prop_map(|(p, quantity)| OrderLine {
        product_id: p.product_id,
        category: p.category,
        brand: p.brand,
        quantity,
        unit_price_cents: p.unit_price_cents,
    })
}

/// Any event body, with products among `n_products` and orders among `n_orders`.
pub fn body(n_products: u32, n_orders: u32) -> impl Strategy<Value = EventBody> {
    prop_oneof![
        (
            text(),
            prop::sample::select(PageType::ALL.to_vec()),
            option::of(id("p", n_products)),
            option::of(id("c", 5))
        )
            .prop_map(
                |(url, page_type, product_id, category)| EventBody::PageViewed {
                    url,
                    page_type,
                    product_id,
                    category
                }
            ),
        (text(), option::of(text()), option::of(id("p", n_products))).prop_map(
            |(url, target_url, product_id)| EventBody::LinkClicked {
                url,
                target_url,
                product_id
            }
        ),
        (text(), option::of(0u64..1000)).prop_map(|(query, result_count)| {
            EventBody::SearchPerformed {
                query,
                result_count,
            }
        }),
        (product(n_products), 1u32..4).prop_map(|(product, quantity)| EventBody::ProductAdded(
            BasketChange { product, quantity }
        )),
        (product(n_products), 1u32..4).prop_map(|(product, quantity)| EventBody::ProductRemoved(
            BasketChange { product, quantity }
        )),
        (
            id("o", n_orders),
            vec(order_line(n_products), 1..4),
            0i64..1_000_000
        )
            .prop_map(|(order_id, lines, total_cents)| EventBody::OrderPaid {
                order_id,
                lines,
                total_cents
            }),
        (
            id("o", n_orders),
            prop::sample::select(OrderStatus::ALL.to_vec())
        )
            .prop_map(|(order_id, status)| EventBody::OrderStatusChanged { order_id, status }),
    ]
}

/// Any valid event.
pub fn event() -> impl Strategy<Value = Event> {
    (
        id("e", 1_000_000),
        id("r", 3),
        id("s", 50),
        option::of(id("x", 100)),
        timestamp(),
        body(30, 40),
    )
        .prop_map(
            |(event_id, retailer_id, shopper_id, session_id, occurred_at, body)| Event {
                event_id,
                retailer_id,
                shopper_id,
                session_id,
                occurred_at,
                body,
            },
        )
}
