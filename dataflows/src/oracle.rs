//! The test oracle: the read models computed from scratch, in plain Rust, from a list of events.
//!
//! This is the specification of the read models written as directly as possible (maps, sets,
//! loops; no differential dataflow), independently of the graph. Tests feed the same events to
//! the graph and compare, at every logical time, the graph's accumulated output with
//! [`read_models`] of the events received so far. Integration tests of the sinks can compare
//! ClickHouse tables with it too.
//!
//! Rules (the product's contract):
//! 1. Only basket changes, payments and `cancelled` status changes count (the others change
//!    no read model). Those with the same `(retailer_id, event_id)` count once within the
//!    de-duplication horizon: the first copy read (copies read at one time: the least by
//!    `Ord` on [`Event`]) counts, copies read less than the horizon after it do not, a copy
//!    read later counts again ([`counted`]; [`read_models`] takes every copy as read at one
//!    time). A page view or a `delivered` change sharing an order's `event_id` does not
//!    compete with it. An `event_id` is unique per retailer only: another retailer's
//!    event with the same id is another event, and each retailer's figures are what they would
//!    be if it were alone.
//! 2. An order is `(retailer_id, order_id)`; its lines and shopper come from its earliest
//!    `order_paid` (ties: smallest `event_id`, then the shopper and merged lines that sort
//!    first: copies of one payment event both count when read on both sides of the horizon). An order with any `cancelled` status change (same
//!    retailer and order id, any shopper, any time) counts in no sold-product figure.
//!    `delivered` changes nothing.
//! 3. Days are UTC days of the order's `occurred_at`.
//! 4. A basket line is `max(0, added - removed)` over the shopper's basket changes (per
//!    retailer, shopper, product) that occurred strictly after the shopper's latest `order_paid`
//!    at that retailer (any, cancelled or not); all changes count if there is none. Zero lines
//!    are absent.
//! 5. Order lines: every order with a payment has one line per `(product_id, category)` of its
//!    chosen payment (quantities and revenues summed), with the payment's shopper and instant,
//!    flagged `cancelled` when the order has any `cancelled` status change. An order without a
//!    payment has no lines, cancelled or not.
//! 6. Anonymous events (an empty `shopper_id`, which the contract refuses, so only privacy
//!    residues have one) count in the sold products, affinities and order lines, never in a
//!    purchase history or a basket. [`with_privacy`] computes which events are anonymous.
//! 7. Settlement ([`late`]): an order settles `settlement` after its first payment was read
//!    (or its first cancellation, when no payment was read before that); a payment or
//!    cancellation read at or after that is a late input and changes no order figure (a late
//!    payment still ends its shopper's basket). [`read_models_at`] applies rules 1 to 7.

use std::collections::{BTreeMap, BTreeSet};

use basketflow_vocab::{
    Event, EventBody, LateInput, LateReason, OrderLine, OrderStatus, Timestamp,
};

use crate::privacy::anonymous;
use crate::read_models::changes_read_models;
use basketflow_vocab::Retention;

use basketflow_vocab::read_models::{
    BasketLine, PaidOrderLine, ProductAffinity, ShopperPurchase, SoldProductDaily,
};

/// Units, revenue and the distinct order ids of one sold-product key.
type Figures<'a> = (i64, i64, BTreeSet<&'a str>);
/// Units, the distinct order ids and the latest order instant of one purchase key.
type History<'a> = (i64, BTreeSet<&'a str>, Timestamp);
/// Units, revenue and the chosen payment of one order line key.
type LineFigures<'a> = (i64, i64, &'a Event);

/// The five read models as sorted lists of rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadModelRows {
    /// Sorted by key.
    pub sold_products_daily: Vec<SoldProductDaily>,
    /// Sorted by key.
    pub shopper_purchases: Vec<ShopperPurchase>,
    /// Sorted by key.
    pub product_affinities: Vec<ProductAffinity>,
    /// Sorted by key.
    pub baskets: Vec<BasketLine>,
    /// Sorted by key.
    pub order_lines: Vec<PaidOrderLine>,
}

/// The events the read models see at logical time `at`, given every event with the time it
/// was read and every erasure `((retailer_id, shopper_id), time)`: an event that has left by
/// `at` (its retention period is over, or its shopper was erased at `F`, which it leaves at
/// `max(t, F)`) is replaced by its anonymous residue, if any. Events read after `at` are not
/// included.
pub fn with_privacy(
    events: &[(Event, u64)],
    erasures: &[((String, String), u64)],
    retention: &Retention,
    at: u64,
) -> Vec<Event> {
    let mut erased: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for ((retailer, shopper), time) in erasures {
        let least = erased.entry((retailer, shopper)).or_insert(*time);
        *least = (*least).min(*time);
    }
    events
        .iter()
        .filter(|(_, t)| *t <= at)
        .filter_map(|(event, t)| {
            let by_erasure = erased
                .get(&(event.retailer_id.as_str(), event.shopper_id.as_str()))
                .map_or(u64::MAX, |f| (*t).max(*f));
            let leaves = retention.leaves_at(event, *t).min(by_erasure);
            if leaves <= at {
                anonymous(event)
            } else {
                Some(event.clone())
            }
        })
        .collect()
}

/// Computes the read models from all the events received so far (any order, duplicates
/// allowed), as if all were read at one time: of the copies of an id, the least counts.
pub fn read_models(events: &[Event]) -> ReadModelRows {
    // Rule 1: one event per (retailer, id), the least copy.
    let mut by_id: BTreeMap<(&str, &str), &Event> = BTreeMap::new();
    for event in events.iter().filter(|e| changes_read_models(e)) {
        by_id
            .entry((&event.retailer_id, &event.event_id))
            .and_modify(|kept| {
                if event < *kept {
                    *kept = event;
                }
            })
            .or_insert(event);
    }
    let events: Vec<Event> = by_id.into_values().cloned().collect();
    read_models_of_counted(&events)
}

/// Rule 1 with its horizon, over events with the time each was read: of the events that
/// change a read model, per `(retailer_id, event_id)`, copies in (time, `Ord`) order; a copy
/// counts when no counted copy read less than `horizon` before it exists, and the counted
/// ones are returned with their times (the graph's [`basketflow_operators::first_within`]).
pub fn counted(events: &[(Event, u64)], horizon: u64) -> Vec<(Event, u64)> {
    let mut sorted: Vec<(u64, &Event)> = events
        .iter()
        .filter(|(e, _)| changes_read_models(e))
        .map(|(e, t)| (*t, e))
        .collect();
    sorted.sort();
    let mut open: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut out = Vec::new();
    for (t, e) in sorted {
        let id = (e.retailer_id.as_str(), e.event_id.as_str());
        if open.get(&id).is_some_and(|&end| t < end) {
            continue;
        }
        open.insert(id, t.saturating_add(horizon));
        out.push((e.clone(), t));
    }
    out
}

/// The read models of events that all count (rule 1 already applied: [`counted`], then
/// [`with_privacy`]); rules 2 to 6, without settlement.
pub fn read_models_of_counted(events: &[Event]) -> ReadModelRows {
    let events: Vec<&Event> = events.iter().collect();
    rows_of(&events, &events)
}

/// The horizons of the contract, in logical milliseconds (`u64::MAX`: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Horizons {
    /// Rule 1's de-duplication horizon ([`counted`]).
    pub dedup_ms: u64,
    /// Rule 7's settlement horizon ([`late`]).
    pub settlement_ms: u64,
}

impl Horizons {
    /// No horizon: de-duplication and orders forever (the contract before horizons).
    pub const NONE: Horizons = Horizons {
        dedup_ms: u64::MAX,
        settlement_ms: u64::MAX,
    };
}

/// What the graph shows at logical time `at`, given every event with the time it was read,
/// every erasure with its time, the retention periods and the horizons: the read models and
/// the late inputs read so far. Rule 1 with its horizon ([`counted`]), rule 7's settlement
/// ([`late`]: late inputs change no order figure, though a late payment still ends its
/// shopper's basket), then privacy ([`with_privacy`]), then rules 2 to 6.
pub fn read_models_at(
    received: &[(Event, u64)],
    erasures: &[((String, String), u64)],
    retention: &Retention,
    horizons: Horizons,
    at: u64,
) -> (ReadModelRows, Vec<LateInput>) {
    let counted: Vec<(Event, u64)> = counted(received, horizons.dedup_ms)
        .into_iter()
        .filter(|(_, t)| *t <= at)
        .collect();
    let late = late(&counted, horizons.settlement_ms);
    let mut orders = Vec::new();
    let mut baskets = Vec::new();
    let mut late_inputs = Vec::new();
    for (i, (event, t)) in counted.iter().enumerate() {
        if let Some(reason) = late[i] {
            late_inputs.push(late_input(event, *t, reason));
        }
        let seen = with_privacy(&counted[i..=i], erasures, retention, at);
        for e in seen {
            if late[i].is_none() {
                orders.push(e.clone());
            }
            baskets.push(e);
        }
    }
    late_inputs.sort();
    let orders: Vec<&Event> = orders.iter().collect();
    let baskets: Vec<&Event> = baskets.iter().collect();
    (rows_of(&orders, &baskets), late_inputs)
}

/// The record of a late input.
fn late_input(event: &Event, read_at: u64, reason: LateReason) -> LateInput {
    let (order_id, event_type) = match &event.body {
        EventBody::OrderPaid { order_id, .. } => (order_id, "order_paid"),
        EventBody::OrderStatusChanged { order_id, .. } => (order_id, "order_status_changed"),
        _ => unreachable!("only order facts are late"),
    };
    LateInput {
        retailer_id: event.retailer_id.clone(),
        order_id: order_id.clone(),
        event_id: event.event_id.clone(),
        event_type: event_type.to_owned(),
        reason,
        occurred_at: event.occurred_at,
        read_at,
    }
}

/// Rule 7, settlement, over counted events with their read times (aligned with `counted`:
/// the reason an event is late, or `None`). Per order `(retailer_id, order_id)`, facts
/// (payments, `cancelled` changes) in time order: the order settles at `S`, `settlement`
/// after its first payment was read, or `settlement` after its first cancellation was read
/// when no payment was read before that; facts read at or after `S` are late. An order
/// settles once: every fact read after `S` is late, however much later.
pub fn late(counted: &[(Event, u64)], settlement: u64) -> Vec<Option<LateReason>> {
    // Per order: (read time, index in `counted`, is a payment).
    type Facts = Vec<(u64, usize, bool)>;
    let mut by_order: BTreeMap<(&str, &str), Facts> = BTreeMap::new();
    for (i, (event, t)) in counted.iter().enumerate() {
        let (order_id, paid) = match &event.body {
            EventBody::OrderPaid { order_id, .. } => (order_id, true),
            EventBody::OrderStatusChanged {
                order_id,
                status: OrderStatus::Cancelled,
            } => (order_id, false),
            _ => continue,
        };
        by_order
            .entry((&event.retailer_id, order_id))
            .or_default()
            .push((*t, i, paid));
    }
    let mut late = vec![None; counted.len()];
    for mut facts in by_order.into_values() {
        facts.sort();
        // When the first payment and the first cancellation were read.
        let (mut first_paid, mut first_cancelled): (Option<u64>, Option<u64>) = (None, None);
        for (t, i, paid) in facts {
            // A payment is recorded only when read before the cancellations' settlement.
            let settles = first_paid
                .or(first_cancelled)
                .map_or(u64::MAX, |first| first.saturating_add(settlement));
            if t >= settles {
                late[i] = Some(if paid {
                    LateReason::PaymentAfterSettlement
                } else {
                    LateReason::CancellationAfterSettlement
                });
            } else if paid {
                first_paid.get_or_insert(t);
            } else {
                first_cancelled.get_or_insert(t);
            }
        }
    }
    late
}

/// Rules 2 to 6: the orders from `order_events`, the baskets from `basket_events`.
fn rows_of(order_events: &[&Event], basket_events: &[&Event]) -> ReadModelRows {
    let events: Vec<&Event> = order_events
        .iter()
        .copied()
        .filter(|e| changes_read_models(e))
        .collect();

    // Rule 2: orders, their chosen payment, cancellations.
    let mut payments: BTreeMap<(&str, &str), &Event> = BTreeMap::new();
    let mut cancelled: BTreeSet<(&str, &str)> = BTreeSet::new();
    for &event in &events {
        match &event.body {
            EventBody::OrderPaid { order_id, .. } => {
                let key = (event.retailer_id.as_str(), order_id.as_str());
                // Copies of one payment event may both count (read on both sides of the
                // de-duplication horizon): then the one whose shopper and merged lines sort
                // first, as the graph orders payments.
                let rank = |e: &Event| {
                    let mut lines: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
                    if let EventBody::OrderPaid { lines: l, .. } = &e.body {
                        for line in l {
                            let q = i64::from(line.quantity);
                            let entry = lines
                                .entry((line.product_id.clone(), line.category.clone()))
                                .or_default();
                            entry.0 += q;
                            entry.1 += q.saturating_mul(line.unit_price_cents);
                        }
                    }
                    (
                        e.occurred_at,
                        e.event_id.clone(),
                        e.shopper_id.clone(),
                        lines.into_iter().collect::<Vec<_>>(),
                    )
                };
                match payments.get(&key) {
                    Some(kept) if rank(kept) <= rank(event) => {}
                    _ => {
                        payments.insert(key, event);
                    }
                }
            }
            EventBody::OrderStatusChanged {
                order_id,
                status: OrderStatus::Cancelled,
            } => {
                cancelled.insert((event.retailer_id.as_str(), order_id.as_str()));
            }
            _ => {}
        }
    }

    // (day, retailer, product, category) -> (units, revenue, orders)
    let mut sold: BTreeMap<(i32, &str, &str, &str), Figures> = BTreeMap::new();
    // (retailer, shopper, product) -> (units, orders, latest)
    let mut purchases: BTreeMap<(&str, &str, &str), History> = BTreeMap::new();
    let mut affinities: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
    for (&(retailer, order), &payment) in &payments {
        if cancelled.contains(&(retailer, order)) {
            continue;
        }
        let EventBody::OrderPaid { lines, .. } = &payment.body else {
            unreachable!("payments holds order_paid events only")
        };
        let day = payment.occurred_at.day();
        let shopper = payment.shopper_id.as_str();
        for OrderLine {
            product_id,
            category,
            quantity,
            unit_price_cents,
            ..
        } in lines
        {
            let quantity = i64::from(*quantity);
            let row = sold
                .entry((day, retailer, product_id, category))
                .or_default();
            row.0 += quantity;
            row.1 += quantity.saturating_mul(*unit_price_cents);
            row.2.insert(order);

            if shopper.is_empty() {
                continue;
            }
            let row = purchases.entry((retailer, shopper, product_id)).or_insert((
                0,
                BTreeSet::new(),
                payment.occurred_at,
            ));
            row.0 += quantity;
            row.1.insert(order);
            row.2 = row.2.max(payment.occurred_at);
        }
        let products: BTreeSet<&str> = lines.iter().map(|l| l.product_id.as_str()).collect();
        for &a in &products {
            for &b in &products {
                if a < b {
                    *affinities.entry((retailer, a, b)).or_default() += 1;
                }
            }
        }
    }

    // Rule 5: the lines of every paid order, cancelled or not.
    // (retailer, order, product, category) -> (units, revenue, the chosen payment)
    let mut lines_of_orders: BTreeMap<(&str, &str, &str, &str), LineFigures> = BTreeMap::new();
    for (&(retailer, order), &payment) in &payments {
        let EventBody::OrderPaid { lines, .. } = &payment.body else {
            unreachable!("payments holds order_paid events only")
        };
        for line in lines {
            let quantity = i64::from(line.quantity);
            let row = lines_of_orders
                .entry((retailer, order, &line.product_id, &line.category))
                .or_insert((0, 0, payment));
            row.0 += quantity;
            row.1 += quantity.saturating_mul(line.unit_price_cents);
        }
    }

    // Rule 4: baskets since the latest payment.
    let events: Vec<&Event> = basket_events
        .iter()
        .copied()
        .filter(|e| changes_read_models(e))
        .collect();
    let mut latest_payment: BTreeMap<(&str, &str), Timestamp> = BTreeMap::new();
    for &event in &events {
        if let (EventBody::OrderPaid { .. }, false) = (&event.body, event.shopper_id.is_empty()) {
            let latest = latest_payment
                .entry((&event.retailer_id, &event.shopper_id))
                .or_insert(event.occurred_at);
            *latest = (*latest).max(event.occurred_at);
        }
    }
    let mut baskets: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
    for &event in &events {
        let (change, sign) = match &event.body {
            EventBody::ProductAdded(change) => (change, 1),
            EventBody::ProductRemoved(change) => (change, -1),
            _ => continue,
        };
        let counts =
            match latest_payment.get(&(event.retailer_id.as_str(), event.shopper_id.as_str())) {
                Some(latest) => event.occurred_at > *latest,
                None => true,
            };
        if counts {
            *baskets
                .entry((
                    &event.retailer_id,
                    &event.shopper_id,
                    &change.product.product_id,
                ))
                .or_default() += sign * i64::from(change.quantity);
        }
    }

    ReadModelRows {
        sold_products_daily: sold
            .into_iter()
            .map(
                |((day, retailer, product, category), (quantity, revenue, orders))| {
                    SoldProductDaily {
                        day,
                        retailer_id: retailer.to_owned(),
                        product_id: product.to_owned(),
                        category: category.to_owned(),
                        quantity,
                        revenue_cents: revenue,
                        orders: orders.len() as i64,
                    }
                },
            )
            .collect(),
        shopper_purchases: purchases
            .into_iter()
            .map(
                |((retailer, shopper, product), (quantity, orders, last))| ShopperPurchase {
                    retailer_id: retailer.to_owned(),
                    shopper_id: shopper.to_owned(),
                    product_id: product.to_owned(),
                    quantity,
                    orders: orders.len() as i64,
                    last_purchase_at: last,
                },
            )
            .collect(),
        product_affinities: affinities
            .into_iter()
            .map(|((retailer, a, b), n)| ProductAffinity {
                retailer_id: retailer.to_owned(),
                product_a: a.to_owned(),
                product_b: b.to_owned(),
                orders_together: n,
            })
            .collect(),
        baskets: baskets
            .into_iter()
            .filter(|&(_, quantity)| quantity > 0)
            .map(|((retailer, shopper, product), quantity)| BasketLine {
                retailer_id: retailer.to_owned(),
                shopper_id: shopper.to_owned(),
                product_id: product.to_owned(),
                quantity,
            })
            .collect(),
        order_lines: lines_of_orders
            .into_iter()
            .map(
                |((retailer, order, product, category), (quantity, revenue, payment))| {
                    PaidOrderLine {
                        retailer_id: retailer.to_owned(),
                        order_id: order.to_owned(),
                        product_id: product.to_owned(),
                        category: category.to_owned(),
                        shopper_id: payment.shopper_id.clone(),
                        quantity,
                        revenue_cents: revenue,
                        ordered_at: payment.occurred_at,
                        day: payment.occurred_at.day(),
                        cancelled: cancelled.contains(&(retailer, order)),
                    }
                },
            )
            .collect(),
    }
}
