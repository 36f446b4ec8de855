//! Read-model row builders for hand-written scenarios (retailer `r1`).

use basketflow_vocab::read_models::{
    BasketLine, PaidOrderLine, ProductAffinity, ShopperPurchase, SoldProductDaily,
};

use crate::events::at;

/// A `SoldProductDaily` row of `r1`.
pub fn sold(
    day: i32,
    product_id: &str,
    category: &str,
    quantity: i64,
    revenue_cents: i64,
    orders: i64,
) -> SoldProductDaily {
    SoldProductDaily {
        day,
        retailer_id: "r1".into(),
        product_id: product_id.into(),
        category: category.into(),
        quantity,
        revenue_cents,
        orders,
    }
}

/// A `ShopperPurchase` row of `r1`, last bought at `last` (RFC 3339).
pub fn purchase(
    shopper_id: &str,
    product_id: &str,
    quantity: i64,
    orders: i64,
    last: &str,
) -> ShopperPurchase {
    ShopperPurchase {
        retailer_id: "r1".into(),
        shopper_id: shopper_id.into(),
        product_id: product_id.into(),
        quantity,
        orders,
        last_purchase_at: at(last),
    }
}

/// A `ProductAffinity` row of `r1`.
pub fn affinity(product_a: &str, product_b: &str, orders_together: i64) -> ProductAffinity {
    ProductAffinity {
        retailer_id: "r1".into(),
        product_a: product_a.into(),
        product_b: product_b.into(),
        orders_together,
    }
}

/// A `BasketLine` of `r1`.
pub fn basket(shopper_id: &str, product_id: &str, quantity: i64) -> BasketLine {
    BasketLine {
        retailer_id: "r1".into(),
        shopper_id: shopper_id.into(),
        product_id: product_id.into(),
        quantity,
    }
}

/// A `PaidOrderLine` of `r1`, ordered at `ordered_at` (RFC 3339).
#[allow(clippy::too_many_arguments)]
pub fn order_line(
    order_id: &str,
    product_id: &str,
    category: &str,
    shopper_id: &str,
    quantity: i64,
    revenue_cents: i64,
    ordered_at: &str,
    cancelled: bool,
) -> PaidOrderLine {
    PaidOrderLine {
        retailer_id: "r1".into(),
        order_id: order_id.into(),
        product_id: product_id.into(),
        category: category.into(),
        shopper_id: shopper_id.into(),
        quantity,
        revenue_cents,
        ordered_at: at(ordered_at),
        day: at(ordered_at).day(),
        cancelled,
    }
}
