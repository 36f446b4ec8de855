//! The rows of the read models, as the graph emits them and ClickHouse stores them.
//!
//! Each row type starts with its key fields; its derived `Ord` sorts by key first. In every
//! output collection of [`crate::read_models()`] a key has at most one live row: a change of
//! figures is the retraction (`-1`) of the old row and the insertion (`+1`) of the new one at
//! the same time.

use basketflow_vocab::Timestamp;
use serde::{Deserialize, Serialize};

/// Sales of one product on one UTC day at one retailer, over non-cancelled orders.
///
/// Key: `(day, retailer_id, product_id, category)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SoldProductDaily {
    /// UTC day of the order's `occurred_at`, in days since 1970-01-01 (ClickHouse `Date`).
    pub day: i32,
    /// The retailer.
    pub retailer_id: String,
    /// The product.
    pub product_id: String,
    /// The category the order lines gave the product.
    pub category: String,
    /// Units sold: sum of the lines' quantities.
    pub quantity: i64,
    /// Sum of `quantity * unit_price_cents` over the lines.
    pub revenue_cents: i64,
    /// Distinct orders with at least one such line that day.
    pub orders: i64,
}

/// A shopper's purchase history of one product at one retailer, over non-cancelled orders.
///
/// Key: `(retailer_id, shopper_id, product_id)`. The shopper is the `order_paid` event's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShopperPurchase {
    /// The retailer.
    pub retailer_id: String,
    /// The shopper who paid the orders.
    pub shopper_id: String,
    /// The product.
    pub product_id: String,
    /// Units bought, over all of the shopper's orders.
    pub quantity: i64,
    /// Distinct orders containing the product.
    pub orders: i64,
    /// The latest `occurred_at` of those orders.
    pub last_purchase_at: Timestamp,
}

/// How often two products were bought in the same non-cancelled order at one retailer.
///
/// Key: `(retailer_id, product_a, product_b)`, always with `product_a < product_b`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProductAffinity {
    /// The retailer.
    pub retailer_id: String,
    /// The smaller product id of the pair.
    pub product_a: String,
    /// The greater product id of the pair.
    pub product_b: String,
    /// Non-cancelled orders containing both products.
    pub orders_together: i64,
}

/// One line of a paid order, cancelled or not: what the order's winning `order_paid` says about
/// one `(product_id, category)`.
///
/// Key: `(retailer_id, order_id, product_id, category)`. The winning payment is the order's
/// earliest `order_paid` (ties: smallest `event_id`); its lines are summed per `(product_id,
/// category)`. An order cancelled before any payment has no lines; once paid, its lines are
/// present with `cancelled = true`. A cancellation arriving after the payment changes the
/// lines' `cancelled` (a retraction and an insertion at the cancellation's time).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PaidOrderLine {
    /// The retailer.
    pub retailer_id: String,
    /// The order, unique per retailer.
    pub order_id: String,
    /// The product.
    pub product_id: String,
    /// The category the order's lines gave the product.
    pub category: String,
    /// The shopper who paid (the winning `order_paid` event's).
    pub shopper_id: String,
    /// Units: sum of the matching lines' quantities.
    pub quantity: i64,
    /// Sum of `quantity * unit_price_cents` over the matching lines.
    pub revenue_cents: i64,
    /// The winning `order_paid` event's `occurred_at`.
    pub ordered_at: Timestamp,
    /// UTC day of `ordered_at`, in days since 1970-01-01 (ClickHouse `Date`).
    pub day: i32,
    /// True when the order has any `cancelled` status change (before or after the payment).
    pub cancelled: bool,
}

/// One line of a shopper's current basket at one retailer.
///
/// Key: `(retailer_id, shopper_id, product_id)`. Lines whose quantity would be zero or less are
/// absent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BasketLine {
    /// The retailer.
    pub retailer_id: String,
    /// The shopper.
    pub shopper_id: String,
    /// The product.
    pub product_id: String,
    /// Units added minus units removed since the shopper's latest order (always > 0).
    pub quantity: i64,
}
