//! The basketflow graph, as functions over differential collections.
//!
//! [`graph::build`] assembles the whole graph (its picture is in [`graph`]): the parse stage
//! (`basketflow_ingest::parse`: Kafka messages to events and dead letters), [`privacy`], the read models,
//! and [`experiences`] (each shopper's events move them along their experience tree; nodes with
//! an experience emit decisions; see that module for its state and determinism argument).
//!
//! [`read_models()`] turns a collection of validated [`Event`](basketflow_vocab::Event)s
//! (duplicates allowed, any arrival order, any totally ordered time) into five collections of rows
//! ([`basketflow_vocab::read_models`]) that ClickHouse stores: sold products per day, shopper purchase histories, product
//! affinities, current baskets, and the lines of every paid order with its cancellation flag.
//! [`oracle`] computes the same rows from scratch in plain
//! Rust; the tests check that the graph agrees with it at every logical time.
//!
//! # Design, and why it is exact
//!
//! Every step is a differential operator or a timely operator that processes completed times
//! in time order (orders, baskets, affinities: [`basketflow_operators::agenda`]), so each
//! output at each logical time is a function of the events received up to that time, whatever
//! the batching or the number of workers, and changes arrive as retractions and insertions at
//! the time that caused them.
//!
//! 1. **De-duplication** ([`unique_events`]): only events that can change a read model
//!    ([`changes_read_models`]: basket changes, payments, cancellations; about 40% of a typical
//!    stream) enter the read-model state at all. For each `(retailer_id, event_id)` (an event id
//!    is unique per retailer: two retailers may reuse each other's ids of every kind), the least
//!    of their copies with positive multiplicity ([`basketflow_operators::first_per_id`]).
//!    `reduce` sees the copies sorted, so the winner depends only on the set of copies, never on
//!    their order of arrival: every replay agrees. The arrangement is keyed by a 64-bit hash of
//!    `(retailer_id, event_id)` (integers are
//!    cheap to merge; colliding ids are still told apart, so this stays exact) and holds events behind
//!    an `Arc` (merges clone values; the input and output arrangements share one copy). The
//!    three projections below read the arrangement in place. Events are exchanged as
//!    [`WireEvent`](basketflow_vocab::WireEvent)s, because `Event`'s JSON-shaped serde (flatten, internally tagged
//!    body) is not bincode-encodable and timely uses bincode between processes.
//! 2. **Orders** ([`orders`]): each `order_paid` and each `cancelled` status change becomes a
//!    fact keyed by `(retailer_id, order_id)`; one operator keeps each order's facts and emits
//!    nothing while the order has no payment, and otherwise the first payment (the earliest,
//!    ties broken by the smallest `event_id`) with a `cancelled` flag; orders settle after
//!    `graph.settlement_ms`. A cancellation arriving after the payment therefore retracts the order at the
//!    time it arrives; `delivered` is not a fact at all. Payment lines are merged by
//!    `(product_id, category)` when the fact is made, so downstream never clones raw lines.
//! 3. **Sold-product figures** read the live orders arrangement:
//!    * `sold_products_daily`: each order contributes `(units, revenue, 1)` per
//!      `(day, retailer, product, category)`, summed per key
//!      ([`basketflow_operators::fold::fold_by_key`]), so the state per key is one triple and
//!      the `1` counts distinct orders (lines were merged per order first).
//!    * `shopper_purchases`: per `(retailer, shopper, product)`, units and orders summed and
//!      the orders' instants as a multiset (its greatest is the last purchase, exact when an
//!      order leaves), folded per key.
//!    * `product_affinities`: each order contributes `1` per pair `a < b` of its distinct
//!      products, counted per key on interned ids ([`affinities`]: pairs grow with the
//!      catalogue squared, so their state is kept compact).
//! 4. **Baskets** ([`baskets`]): one timely operator per `(retailer, shopper)` holds the
//!    shopper's payments and basket changes and emits the lines: per product, the signed units
//!    of the changes that occurred strictly after the latest payment, when positive. A later
//!    payment moves the cut-off and retracts what no longer counts; a change that arrives late
//!    but occurred before the cut-off never counts. The operator applies erasures and retention
//!    itself and folds its state: a change cut by a payment that outlives it, and a payment
//!    that never decides the cut-off alone, are dropped, so the state is the open baskets.
//!
//! Each output has at most one live row per key, and a change is a `-1` of the old row and a
//! `+1` of the new one at the same time.
//!
//! Privacy ([`privacy`]): erased shoppers and events past their retention period leave the
//! orders and the baskets, each in its own operator, on folded state; orders stay as
//! anonymous facts (an empty `shopper_id`), which count in the product figures and order
//! lines but in no shopper's purchases or basket.
//!
//! # State
//!
//! The aggregates hold one accumulated value per live key, in plain maps that checkpoints
//! write ([`basketflow_operators::checkpoint`]; the stateful operators are listed in
//! [`graph::CHECKPOINTED`]). In the graph's path the de-duplication
//! ([`basketflow_operators::first_within`]) holds the ids read within its horizon; [`orders`]
//! holds open orders, settled ones while a payment still names its shopper, and the ids of
//! ended ones; [`baskets`] holds the open baskets (changes since the latest payment, and that
//! payment). No stage holds every event for its retention period.
//!
//! `benches/read_models.rs` measures throughput (`cargo bench -p basketflow-dataflows`).

#![forbid(missing_docs)]

pub mod affinities;
pub mod baskets;
pub mod digest;
pub mod experiences;
pub mod graph;
pub mod oracle;
pub mod orders;
pub mod privacy;
pub mod read_models;

pub use read_models::{
    changes_read_models, count_first_copies, deduplicate, read_models, read_models_from_unique,
    read_models_of_counted, unique_events, unique_wire_events, ReadModels, UniqueEvents,
};
