//! The read-model part of the graph: validated events in, the five read models out.
//!
//! See the crate documentation for the rules and why this computes them exactly. The fifth
//! read model, `order_lines`, reads the same per-order reduction as the sold-product figures:
//! that reduction emits every paid order (its winning payment) with a `cancelled` flag, and
//! the sold-product figures skip the cancelled ones as they read it, so the orders' facts are
//! arranged and reduced once for all four order-based read models.

use std::collections::BTreeMap;

use basketflow_operators::checkpoint::Checkpointing;
use basketflow_operators::fold::{fold_by_key, Accumulator, Sums3};
use basketflow_operators::{first_per_id, first_within, ValArrangement};
use basketflow_vocab::{Erasure, Event, EventBody, LateInput, OrderStatus, Retention, Timestamp};
use differential_dataflow::lattice::Lattice;
use differential_dataflow::{Hashable, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::Stream;
use timely::order::TotalOrder;
use timely::progress::Timestamp as LogicalTime;

use crate::affinities::count_pairs;
use crate::baskets::fold_baskets;
use crate::digest::digest128;
use crate::orders::{settle_orders, PaidOrders, SoldLine};

use basketflow_vocab::read_models::{
    BasketLine, PaidOrderLine, ProductAffinity, ShopperPurchase, SoldProductDaily,
};
use basketflow_vocab::WireEvent;

/// The five read models, as differential collections of rows: defined with the rows in
/// [`basketflow_vocab::read_models`], which the ClickHouse sink also reads.
pub use basketflow_vocab::read_models::ReadModels;

/// Rule 1 with its horizon, as the graph applies it: of the `events` (those that change a
/// read model), the first copy of each `(retailer_id, event_id)` counts, and so does a copy
/// read `dedup_horizon` or more after the counted one ([`first_within`]). Copies are routed
/// by a hash of the borrowed pair; a window is kept under the pair's 128-bit digest
/// ([`digest128`]: 16 bytes instead of two strings, in the largest state of a deployment with
/// the default horizon, a week of event ids, and in its checkpoints).
pub fn count_first_copies<'scope>(
    events: VecCollection<'scope, u64, WireEvent>,
    dedup_horizon: u64,
    checkpoints: Option<&Checkpointing>,
) -> VecCollection<'scope, u64, WireEvent> {
    first_within(
        "Deduplicate",
        events,
        dedup_horizon,
        |e: &WireEvent| {
            digest128(&[e.0.retailer_id.as_bytes(), e.0.event_id.as_bytes()]).to_be_bytes()
        },
        |e: &WireEvent| (e.0.retailer_id.as_str(), e.0.event_id.as_str()).hashed(),
        checkpoints,
    )
}

/// Events with the same `(retailer_id, event_id)` reduced to one: the least copy by `Ord` on
/// [`Event`]. An `event_id` is unique per retailer only: two retailers' events with the same
/// id are different events.
///
/// Arranged by a hash of `(retailer_id, event_id)` (see [`first_per_id`]). Events cross worker (and process)
/// boundaries here as [`WireEvent`]s.
pub type UniqueEvents<'scope, T> = ValArrangement<'scope, T, u64, WireEvent>;

/// De-duplicates the events that change a read model ([`changes_read_models`]) by
/// `(retailer_id, event_id)` (rule 1), keeping the copy that sorts first; the other events are dropped.
///
/// The result is an arrangement that several parts of the graph can read without copying it;
/// [`deduplicate`] gives it as a collection of events.
pub fn unique_events<'scope, T>(events: &VecCollection<'scope, T, Event>) -> UniqueEvents<'scope, T>
where
    T: LogicalTime + Lattice + TotalOrder + Ord,
{
    unique_wire_events(events.clone().map(WireEvent::from))
}

/// As [`unique_events`], for events already shared as [`WireEvent`]s.
pub fn unique_wire_events<'scope, T>(
    events: VecCollection<'scope, T, WireEvent>,
) -> UniqueEvents<'scope, T>
where
    T: LogicalTime + Lattice + TotalOrder + Ord,
{
    first_per_id(
        "UniqueEvents",
        events.filter(|event: &WireEvent| changes_read_models(&event.0)),
        |event: &WireEvent| (event.0.retailer_id.as_str(), event.0.event_id.as_str()),
    )
}

/// True for the events that can change a read model: basket changes, payments and
/// cancellations (rule 1 de-duplicates these only).
///
/// Page views, clicks, searches and `delivered` status changes feed the experience trees, never
/// a read model, so the graph drops them before any read-model state (the privacy operator's
/// included) holds them: that state is then proportional to these events alone.
pub fn changes_read_models(event: &Event) -> bool {
    matches!(
        event.body,
        EventBody::ProductAdded(_)
            | EventBody::ProductRemoved(_)
            | EventBody::OrderPaid { .. }
            | EventBody::OrderStatusChanged {
                status: OrderStatus::Cancelled,
                ..
            }
    )
}

/// De-duplicates the events that change a read model by `(retailer_id, event_id)` (rule 1),
/// as a collection of events.
pub fn deduplicate<'scope, T>(
    events: &VecCollection<'scope, T, Event>,
) -> VecCollection<'scope, T, Event>
where
    T: LogicalTime + Lattice + TotalOrder + Ord,
{
    unique_events(events).as_collection(|_hash, event| Event::clone(&event.0))
}

/// Builds the read models from validated events (duplicates allowed, any arrival order).
///
/// Orders never settle here (the contract without horizons).
pub fn read_models<'scope>(events: &VecCollection<'scope, u64, Event>) -> ReadModels<'scope, u64> {
    read_models_from_unique(&unique_events(events))
}

/// As [`read_models`], from events already de-duplicated by [`unique_events`] (so that other
/// parts of the graph can share that arrangement).
pub fn read_models_from_unique<'scope>(
    unique: &UniqueEvents<'scope, u64>,
) -> ReadModels<'scope, u64> {
    let counted = unique.clone().as_collection(|_hash, event| event.clone());
    // The least copy wins, so `counted` retracts: baskets without folding or privacy.
    let (orders, _late) = settle_orders(&counted, empty(counted.scope()), u64::MAX, None, None);
    let baskets = fold_baskets(&counted, empty(counted.scope()), None, None);
    models_of(&orders, baskets, None)
}

/// The read models of events already de-duplicated (every event of `counted` counts: the
/// graph's [`basketflow_operators::first_within`] decides which copies count), with privacy
/// (`erasures`, `retention`) and orders settling `settlement_ms` after their first payment
/// was read ([`crate::orders`]; `u64::MAX`: never). Also returns the late inputs, at the
/// times they were read.
///
/// Orders ([`crate::orders`]) and baskets ([`crate::baskets`]) apply privacy on their own
/// folded state: no stage holds every event for its retention period. With `checkpoints`,
/// every operator here writes its state at checkpoint times and starts from the one given.
pub fn read_models_of_counted<'scope>(
    counted: &VecCollection<'scope, u64, WireEvent>,
    erasures: Stream<'scope, u64, Vec<Erasure>>,
    settlement_ms: u64,
    retention: &Retention,
    checkpoints: Option<&Checkpointing>,
) -> (ReadModels<'scope, u64>, Stream<'scope, u64, Vec<LateInput>>) {
    let (orders, late) = settle_orders(
        counted,
        erasures.clone(),
        settlement_ms,
        Some(retention.clone()),
        checkpoints,
    );
    let baskets = fold_baskets(counted, erasures, Some(retention.clone()), checkpoints);
    (models_of(&orders, baskets, checkpoints), late)
}

/// The four order-based read models of `orders`, with `baskets`.
fn models_of<'scope>(
    orders: &PaidOrders<'scope>,
    baskets: VecCollection<'scope, u64, BasketLine>,
    checkpoints: Option<&Checkpointing>,
) -> ReadModels<'scope, u64> {
    ReadModels {
        sold_products_daily: sold_products_daily(orders, checkpoints),
        shopper_purchases: shopper_purchases(orders, checkpoints),
        product_affinities: product_affinities(orders, checkpoints),
        baskets,
        order_lines: order_lines(orders),
    }
}

fn sold_products_daily<'scope>(
    orders: &PaidOrders<'scope>,
    checkpoints: Option<&Checkpointing>,
) -> VecCollection<'scope, u64, SoldProductDaily> {
    // Each order contributes (units, revenue, 1) once per (product, category) it contains.
    let contributions = orders
        .clone()
        .flat_map(|((retailer_id, _order_id), order)| {
            let Some(paid) = order.live() else {
                return Vec::new();
            };
            let day = Timestamp(paid.occurred_at).day();
            paid.lines
                .iter()
                .map(|line| {
                    (
                        (
                            day,
                            retailer_id.clone(),
                            line.product_id.clone(),
                            line.category.clone(),
                        ),
                        [line.quantity, line.revenue_cents, 1],
                    )
                })
                .collect::<Vec<_>>()
        });
    fold_by_key::<_, Sums3>("SoldProductsDaily", contributions, checkpoints).map(
        |((day, retailer_id, product_id, category), [quantity, revenue_cents, orders])| {
            SoldProductDaily {
                day,
                retailer_id,
                product_id,
                category,
                quantity,
                revenue_cents,
                orders,
            }
        },
    )
}

/// Units per product in an order, whatever the categories its lines give it.
fn units_per_product(lines: &[SoldLine]) -> impl Iterator<Item = (&String, i64)> {
    // Lines are sorted by product first: merge neighbours.
    let mut merged: Vec<(&String, i64)> = Vec::with_capacity(lines.len());
    for line in lines {
        match merged.last_mut() {
            Some((product, units)) if *product == &line.product_id => *units += line.quantity,
            _ => merged.push((&line.product_id, line.quantity)),
        }
    }
    merged.into_iter()
}

fn shopper_purchases<'scope>(
    orders: &PaidOrders<'scope>,
    checkpoints: Option<&Checkpointing>,
) -> VecCollection<'scope, u64, ShopperPurchase> {
    // One record per order and product: (occurred_at, units), folded per key.
    let purchases = orders
        .clone()
        .flat_map(|((retailer_id, _order_id), order)| {
            // Anonymous orders (privacy residues) have no purchase history.
            let Some(paid) = order.live().filter(|p| !p.shopper_id.is_empty()) else {
                return Vec::new();
            };
            units_per_product(&paid.lines)
                .map(|(product_id, units)| {
                    (
                        (
                            retailer_id.clone(),
                            paid.shopper_id.clone(),
                            product_id.clone(),
                        ),
                        (paid.occurred_at, units),
                    )
                })
                .collect::<Vec<_>>()
        });
    fold_by_key::<_, Purchases>("ShopperPurchases", purchases, checkpoints).map(
        |((retailer_id, shopper_id, product_id), (quantity, orders, last))| ShopperPurchase {
            retailer_id,
            shopper_id,
            product_id,
            quantity,
            orders,
            last_purchase_at: Timestamp(last),
        },
    )
}

/// A shopper's purchases of one product: units and orders summed, and the instants of the
/// orders (a multiset: the latest is the last purchase, and stays exact when an order leaves).
#[derive(Default, Serialize, Deserialize)]
struct Purchases {
    units: i64,
    orders: i64,
    /// `occurred_at` (µs) -> orders at that instant.
    times: BTreeMap<i64, i64>,
}

impl Accumulator for Purchases {
    /// One order's `(occurred_at, units)` of the product.
    type Update = (i64, i64);
    /// `(units, orders, last occurred_at)`.
    type Row = (i64, i64, i64);

    fn add(&mut self, &(occurred_at, units): &(i64, i64), diff: isize) {
        let n = diff as i64;
        self.units += units * n;
        self.orders += n;
        let count = self.times.entry(occurred_at).or_default();
        *count += n;
        if *count == 0 {
            self.times.remove(&occurred_at);
        }
    }

    fn row(&self) -> Option<(i64, i64, i64)> {
        let last = self.times.iter().rev().find(|(_, n)| **n > 0)?.0;
        (self.orders > 0).then_some((self.units, self.orders, *last))
    }

    fn is_empty(&self) -> bool {
        self.units == 0 && self.orders == 0 && self.times.is_empty()
    }
}

fn product_affinities<'scope>(
    orders: &PaidOrders<'scope>,
    checkpoints: Option<&Checkpointing>,
) -> VecCollection<'scope, u64, ProductAffinity> {
    // Each live order contributes one to each pair `a < b` of its distinct products.
    let pairs = orders
        .clone()
        .flat_map(|((retailer_id, _order_id), order)| {
            let Some(paid) = order.live() else {
                return Vec::new();
            };
            let products: Vec<&String> = units_per_product(&paid.lines).map(|(p, _)| p).collect();
            let mut pairs = Vec::new();
            for (i, a) in products.iter().enumerate() {
                for b in &products[i + 1..] {
                    // `products` is sorted and distinct, so `a < b`.
                    pairs.push((retailer_id.clone(), (*a).clone(), (*b).clone()));
                }
            }
            pairs
        });
    count_pairs(pairs, checkpoints)
}

/// Every line of every paid order, with the order's cancellation flag. The order reduction
/// emits one value per order and lines are merged per `(product_id, category)`, so each key
/// `(retailer, order, product, category)` has at most one live row; a cancellation arriving
/// after the payment retracts the lines with `cancelled = false` and inserts them with `true`.
fn order_lines<'scope>(orders: &PaidOrders<'scope>) -> VecCollection<'scope, u64, PaidOrderLine> {
    orders.clone().flat_map(|((retailer_id, order_id), order)| {
        let paid = &order.paid;
        let ordered_at = Timestamp(paid.occurred_at);
        let day = ordered_at.day();
        paid.lines
            .iter()
            .map(|line| PaidOrderLine {
                retailer_id: retailer_id.clone(),
                order_id: order_id.clone(),
                product_id: line.product_id.clone(),
                category: line.category.clone(),
                shopper_id: paid.shopper_id.clone(),
                quantity: line.quantity,
                revenue_cents: line.revenue_cents,
                ordered_at,
                day,
                cancelled: order.cancelled,
            })
            .collect::<Vec<_>>()
    })
}
