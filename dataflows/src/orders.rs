//! Orders with a settlement horizon: `settle_orders`, the per-order state the four
//! order-based read models read.
//!
//! # What it computes
//!
//! An order is `(retailer_id, order_id)`. Its facts are its payments and `cancelled` status
//! changes, as counted (rule 1). While the order is *open*, its state is
//! rule 2 of the contract: the earliest payment (ties: `event_id`, then shopper and merged
//! lines) and whether any cancellation exists; every change of that state comes out as a
//! retraction of the old state and an insertion of the new one, at the logical time of the
//! facts that changed it.
//!
//! The order **settles** at `S`, which is `settlement` after its first payment was read, or
//! `settlement` after its first cancellation was read when no payment was read before that.
//! From `S` on its state stands: a payment or a cancellation read at or after `S` is a
//! **late input**: it changes nothing and comes out on the late output, with its reason
//! ([`LateReason`]). An order settles once.
//!
//! # Privacy, in the operator
//!
//! A payment names its shopper until it *leaves* them: at `retention.leaves_at(event, t)`
//! (`t`: when it was read), or at `max(t, F)` once its shopper is erased at `F`. It then
//! becomes its anonymous residue (the same payment with an empty `shopper_id`), open or
//! settled, and the state follows at that time: exactly what the privacy rule gives
//! ([`crate::privacy`]), which the oracle checks. Erasures are broadcast to every worker (an
//! order's worker is chosen by order, not by shopper); each worker indexes its orders by the
//! shoppers their payments name, so an erasure touches those orders only. Erased shoppers
//! are kept with the time of their erasure.
//!
//! The order **ends** once it is settled and no payment of it names a shopper: nothing can
//! change its state any more, and only a digest of its id is kept (any fact read for it later
//! is late).
//!
//! # Why it is deterministic
//!
//! Facts are exchanged by order, and a time is processed only once both input frontiers have
//! passed it, in time order, with what is due then (settling, a payment leaving its
//! shopper); what a time does depends only on the facts and erasures at it and at earlier
//! times, never on batching or on the number of workers. What is due is held, not sent
//! ahead: one capability at the earliest due time, one live schedule entry per order (entries left by a move are skipped when they come).
//!
//! # State
//!
//! Per open order its facts (usually one payment); per settled order its counted payments
//! and cancellation flag while a payment names its shopper (with the default retention,
//! that payment's retention period); per ended order a digest of its id (`EndedOrder`, the
//! one term that grows with the orders ever paid or cancelled: about 40 bytes each, with the
//! hash table's slack; it was the id itself, ~150 bytes). With `settlement = u64::MAX` no order settles: rule 2 forever, state
//! growing with the orders.

use basketflow_operators::{FastMap, FastSet};
use std::collections::BTreeMap;
use std::sync::Arc;

use basketflow_operators::agenda::Agenda;
use basketflow_operators::checkpoint::{
    encode_into, set_or_remove, ChangedKeys, Checkpointer, Checkpointing, Incremental, Sharded,
};
use basketflow_vocab::{
    Erasure, Event, EventBody, LateInput, LateReason, OrderLine, OrderStatus, Retention, Timestamp,
    WireEvent,
};
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::Map;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::Stream;

/// An `order_paid` event, reduced to what the read models use.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct PaidOrder {
    /// `occurred_at`, in microseconds (first: the earliest payment wins).
    pub(crate) occurred_at: i64,
    /// The event's id (second: it breaks ties between payments).
    pub(crate) event_id: String,
    /// Who paid (empty once anonymous).
    pub(crate) shopper_id: String,
    /// The lines, merged by `(product_id, category)` and sorted that way.
    pub(crate) lines: Vec<SoldLine>,
}

impl PaidOrder {
    /// The payment without its shopper (its anonymous residue).
    fn anonymous(&self) -> PaidOrder {
        PaidOrder {
            shopper_id: String::new(),
            ..self.clone()
        }
    }
}

/// The order's lines for one `(product_id, category)`, summed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct SoldLine {
    pub(crate) product_id: String,
    pub(crate) category: String,
    pub(crate) quantity: i64,
    pub(crate) revenue_cents: i64,
}

/// Merges lines by `(product_id, category)`, sorted that way.
fn sold_lines(lines: &[OrderLine]) -> Vec<SoldLine> {
    let mut merged: BTreeMap<(&str, &str), (i64, i64)> = BTreeMap::new();
    for line in lines {
        let quantity = i64::from(line.quantity);
        let entry = merged
            .entry((&line.product_id, &line.category))
            .or_default();
        entry.0 += quantity;
        entry.1 += quantity.saturating_mul(line.unit_price_cents);
    }
    merged
        .into_iter()
        .map(
            |((product_id, category), (quantity, revenue_cents))| SoldLine {
                product_id: product_id.to_owned(),
                category: category.to_owned(),
                quantity,
                revenue_cents,
            },
        )
        .collect()
}

/// A paid order's state: its winning payment, and whether it has a cancellation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct OrderState {
    /// True when the order has a `cancelled` status change (before or after the payment).
    pub(crate) cancelled: bool,
    /// The earliest payment (ties: smallest `event_id`, then shopper and lines).
    pub(crate) paid: Arc<PaidOrder>,
}

impl OrderState {
    /// The payment, when the order counts in the sold-product figures (rule 2).
    pub(crate) fn live(&self) -> Option<&PaidOrder> {
        (!self.cancelled).then_some(&*self.paid)
    }
}

/// Every paid order's state, keyed by `(retailer_id, order_id)`: one value per paid order.
pub(crate) type PaidOrders<'scope> =
    VecCollection<'scope, u64, ((String, String), OrderState), isize>;

/// What an event says about its order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Fact {
    /// A `cancelled` status change (its id and instant, for the late record; never its
    /// shopper, so that its anonymous residue is the same fact).
    Cancelled(Arc<(String, i64)>),
    /// A payment.
    Paid(Arc<PaidOrder>),
}

impl Fact {
    /// The fact an event states, with its order's key; `None` for other events.
    fn of(event: &Event) -> Option<((String, String), Fact)> {
        let (order_id, fact) = match &event.body {
            EventBody::OrderPaid {
                order_id, lines, ..
            } => (
                order_id,
                Fact::Paid(Arc::new(PaidOrder {
                    occurred_at: event.occurred_at.0,
                    event_id: event.event_id.clone(),
                    shopper_id: event.shopper_id.clone(),
                    lines: sold_lines(lines),
                })),
            ),
            EventBody::OrderStatusChanged {
                order_id,
                status: OrderStatus::Cancelled,
            } => (
                order_id,
                Fact::Cancelled(Arc::new((event.event_id.clone(), event.occurred_at.0))),
            ),
            _ => return None,
        };
        Some(((event.retailer_id.clone(), order_id.clone()), fact))
    }

    /// The record of this fact read late, at `read_at`.
    fn late(&self, (retailer_id, order_id): &(String, String), read_at: u64) -> LateInput {
        let (event_id, occurred_at, event_type, reason) = match self {
            Fact::Cancelled(c) => (
                c.0.clone(),
                c.1,
                "order_status_changed",
                LateReason::CancellationAfterSettlement,
            ),
            Fact::Paid(p) => (
                p.event_id.clone(),
                p.occurred_at,
                "order_paid",
                LateReason::PaymentAfterSettlement,
            ),
        };
        LateInput {
            retailer_id: retailer_id.clone(),
            order_id: order_id.clone(),
            event_id,
            event_type: event_type.to_owned(),
            reason,
            occurred_at: Timestamp(occurred_at),
            read_at,
        }
    }
}

/// A fact as the operator holds it: its count, and when its payment leaves its shopper
/// (retention; `u64::MAX`: never, or a cancellation, or anonymous already).
#[derive(Serialize, Deserialize)]
struct Held {
    fact: Fact,
    count: isize,
    leave: u64,
}

/// One order's state in the operator.
#[derive(Serialize, Deserialize)]
enum Phase {
    /// Before `S`: the facts.
    Open(Vec<Held>),
    /// From `S` on: what stands (the counted payments and whether a cancellation counted).
    Settled {
        payments: Vec<Held>,
        cancelled: bool,
    },
}

/// The least payment with a positive count, and the cancellation flag: rule 2's state.
fn state_of<'a>(
    held: impl Iterator<Item = &'a Held> + Clone,
    cancelled: bool,
) -> Option<OrderState> {
    let payments = held.filter_map(|h| match &h.fact {
        Fact::Paid(p) => Some((p, h.count)),
        Fact::Cancelled(_) => None,
    });
    let paid = if payments.clone().all(|(_, n)| n > 0) {
        // Insert-only input (the graph's path): every payment held is present.
        payments.map(|(p, _)| p).min()
    } else {
        // A retraction may sit apart from its insertion: net the counts per payment.
        let mut counts: BTreeMap<&Arc<PaidOrder>, isize> = BTreeMap::new();
        for (p, n) in payments {
            *counts.entry(p).or_default() += n;
        }
        counts.into_iter().find(|(_, n)| *n > 0).map(|(p, _)| p)
    };
    paid.map(|paid| OrderState {
        cancelled,
        paid: paid.clone(),
    })
}

#[derive(Serialize, Deserialize)]
struct Order {
    phase: Phase,
    /// When the first payment and the first cancellation were read.
    first_paid: Option<u64>,
    first_cancelled: Option<u64>,
    /// The time the order is scheduled at in the operator's `due` (`u64::MAX`: none).
    scheduled: u64,
}

impl Order {
    fn new() -> Order {
        Order {
            phase: Phase::Open(Vec::new()),
            first_paid: None,
            first_cancelled: None,
            scheduled: u64::MAX,
        }
    }

    /// `S` (see the module docs); `u64::MAX` while the order has no fact.
    fn settles_at(&self, settlement: u64) -> u64 {
        // A payment is only ever read before the `S` of the cancellations (later, it is
        // late and not recorded here), so the first payment, when there is one, decides.
        self.first_paid
            .or(self.first_cancelled)
            .map_or(u64::MAX, |first| first.saturating_add(settlement))
    }

    fn held(&self) -> &[Held] {
        match &self.phase {
            Phase::Open(held) | Phase::Settled { payments: held, .. } => held,
        }
    }

    fn held_mut(&mut self) -> &mut Vec<Held> {
        match &mut self.phase {
            Phase::Open(held) | Phase::Settled { payments: held, .. } => held,
        }
    }

    /// The state rule 2 gives (the settled one once settled).
    fn state(&self) -> Option<OrderState> {
        match &self.phase {
            Phase::Open(held) => {
                let cancelled = held
                    .iter()
                    .any(|h| matches!(h.fact, Fact::Cancelled(_)) && h.count > 0);
                state_of(held.iter(), cancelled)
            }
            Phase::Settled {
                payments,
                cancelled,
            } => state_of(payments.iter(), *cancelled),
        }
    }

    /// Settles the order (its cancellations give way to a flag).
    fn settle(&mut self) {
        if let Phase::Open(held) = &mut self.phase {
            let cancelled = held
                .iter()
                .any(|h| matches!(h.fact, Fact::Cancelled(_)) && h.count > 0);
            let payments = held
                .drain(..)
                .filter(|h| matches!(h.fact, Fact::Paid(_)) && h.count != 0)
                .collect();
            self.phase = Phase::Settled {
                payments,
                cancelled,
            };
        }
    }

    /// Applies the updates `updates` read at `time`, which is before `S`.
    fn apply_open(&mut self, updates: Vec<(Fact, isize, u64)>, time: u64) {
        let Phase::Open(held) = &mut self.phase else {
            unreachable!("apply_open on an order that is not open")
        };
        for (fact, count, leave) in updates {
            if count > 0 {
                let first = match fact {
                    Fact::Paid(_) => &mut self.first_paid,
                    Fact::Cancelled(_) => &mut self.first_cancelled,
                };
                first.get_or_insert(time);
            }
            // Without retention every leaving time is `u64::MAX`, so a retraction (the
            // least-copy de-duplication's) finds its insertion.
            match held.iter_mut().find(|h| h.fact == fact && h.leave == leave) {
                Some(h) => h.count += count,
                None => held.push(Held { fact, count, leave }),
            }
        }
        held.retain(|h| h.count != 0);
    }

    /// Moves to their anonymous residue the payments whose shopper has left by `time`
    /// (their retention is over, or `erased_by` says their shopper was erased by then).
    fn anonymise(&mut self, time: u64, erased_by: impl Fn(&str) -> bool) {
        for h in self.held_mut() {
            let Fact::Paid(paid) = &h.fact else { continue };
            if paid.shopper_id.is_empty() {
                h.leave = u64::MAX;
            } else if h.leave <= time || erased_by(&paid.shopper_id) {
                h.fact = Fact::Paid(Arc::new(paid.anonymous()));
                h.leave = u64::MAX;
            }
        }
    }

    /// The shoppers the order's payments still name (sorted, distinct).
    fn named_shoppers(&self) -> Vec<String> {
        let mut named: Vec<String> = self
            .held()
            .iter()
            .filter_map(|h| match &h.fact {
                Fact::Paid(p) if !p.shopper_id.is_empty() && h.count > 0 => {
                    Some(p.shopper_id.clone())
                }
                _ => None,
            })
            .collect();
        named.sort();
        named.dedup();
        named
    }

    /// The next time something is due: settling, or a payment leaving its shopper.
    fn next_due(&self, settlement: u64) -> u64 {
        let leaving = self
            .held()
            .iter()
            .map(|h| h.leave)
            .min()
            .unwrap_or(u64::MAX);
        match self.phase {
            Phase::Open(_) => leaving.min(self.settles_at(settlement)),
            Phase::Settled { .. } => leaving,
        }
    }
}

/// An order's key: `(retailer_id, order_id)`.
type OrderKey = (String, String);

/// Retailer -> shopper -> a value, looked up by `&str` without allocating.
type ByShopper<V> = FastMap<String, FastMap<String, V>>;

/// The orders of this worker whose payments name each shopper (retailer -> shopper -> order
/// ids): an erasure touches those orders only, rather than a pass over every order.
#[derive(Default)]
struct Named(ByShopper<Vec<String>>);

impl Named {
    fn orders_of(&self, retailer: &str, shopper: &str) -> &[String] {
        self.0
            .get(retailer)
            .and_then(|m| m.get(shopper))
            .map_or(&[], Vec::as_slice)
    }

    /// Records that `(retailer, order_id)` named `before` and now names `after` (both
    /// sorted and distinct).
    fn update(&mut self, (retailer, order_id): &OrderKey, before: &[String], after: &[String]) {
        for shopper in before.iter().filter(|s| after.binary_search(s).is_err()) {
            let Some(of_retailer) = self.0.get_mut(retailer) else {
                continue;
            };
            if let Some(orders) = of_retailer.get_mut(shopper) {
                orders.retain(|o| o != order_id);
                if orders.is_empty() {
                    of_retailer.remove(shopper);
                }
            }
            if of_retailer.is_empty() {
                self.0.remove(retailer);
            }
        }
        for shopper in after.iter().filter(|s| before.binary_search(s).is_err()) {
            self.0
                .entry(retailer.clone())
                .or_default()
                .entry(shopper.clone())
                .or_default()
                .push(order_id.clone());
        }
    }
}

/// An ended order as the state keeps it: the worker routing hash of its key (for
/// re-sharding) and a digest of the key ([`crate::digest::digest128`]): 24 bytes serialized
/// and ~40 in memory where the key itself took ~43 and ~150.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct EndedOrder {
    route: u64,
    digest: u128,
}

impl EndedOrder {
    fn of(key: &OrderKey) -> EndedOrder {
        EndedOrder {
            route: key.hashed(),
            digest: crate::digest::digest128(&[key.0.as_bytes(), key.1.as_bytes()]),
        }
    }
}

/// The operator's checkpointed state (the index of named shoppers and the agenda's due
/// orders are rebuilt from it).
#[derive(Default, Serialize, Deserialize)]
struct Orders {
    orders: FastMap<OrderKey, Order>,
    /// The orders that have ended (see the module docs).
    ended: FastSet<EndedOrder>,
    /// Erased shoppers, with the least time of their erasure (every worker holds them all).
    forgotten: ByShopper<u64>,
    /// The orders whose entries changed since the last part (its parts of changes).
    #[serde(skip)]
    changed: ChangedKeys<OrderKey>,
}

impl Incremental for Orders {
    /// Per changed order: its state, absent when it left, and its ended digest when it ended
    /// (the ended orders only grow).
    type Changes = Vec<(OrderKey, Option<Order>, Option<EndedOrder>)>;

    fn track_changes(&mut self, on: bool) {
        self.changed.track(on);
    }

    fn wants_whole(&self) -> bool {
        self.changed.wants_whole()
    }

    fn write_changes(&self, out: &mut Vec<u8>) {
        self.write_of(self.changed.keys(), out);
    }

    fn clear_changes(&mut self) {
        self.changed.clear();
    }

    fn apply(&mut self, changes: Self::Changes) {
        for (key, order, ended) in changes {
            set_or_remove(&mut self.orders, key, order);
            self.ended.extend(ended);
        }
    }

    type Key = OrderKey;

    /// The whole state but the orders (the ended digests and the erased shoppers: small).
    fn start_slices(&mut self, _at: u64, out: &mut Vec<u8>) -> Vec<OrderKey> {
        // The same bytes as `Orders` without its orders.
        let no_orders: FastMap<OrderKey, Order> = FastMap::default();
        encode_into(out, &(&no_orders, &self.ended, &self.forgotten));
        self.orders.keys().cloned().collect()
    }

    fn write_entries(&self, keys: &[OrderKey], out: &mut Vec<u8>) {
        self.write_of(keys, out);
    }

    fn settle_changes(&mut self) {
        self.changed.settle();
    }

    fn take_settled(&mut self, max: usize) -> Vec<OrderKey> {
        self.changed.take_settled(max)
    }
}

impl Orders {
    /// Writes the entries of `keys` as a part of changes lists them.
    fn write_of<'a>(&'a self, keys: impl IntoIterator<Item = &'a OrderKey>, out: &mut Vec<u8>) {
        // The same bytes as `Changes`, borrowed.
        let changes: Vec<(&OrderKey, Option<&Order>, Option<EndedOrder>)> = keys
            .into_iter()
            .map(|key| {
                let ended = Some(EndedOrder::of(key)).filter(|e| self.ended.contains(e));
                (key, self.orders.get(key), ended)
            })
            .collect();
        encode_into(out, &changes);
    }
}

impl Sharded for Orders {
    fn retain_owned(&mut self, owns: &dyn Fn(u64) -> bool) {
        self.orders.retain(|key, _| owns(key.hashed()));
        self.ended.retain(|e| owns(e.route));
    }

    fn absorb(&mut self, other: Self) {
        self.orders.extend(other.orders);
        self.ended.extend(other.ended);
        for (retailer, shoppers) in other.forgotten {
            let mine = self.forgotten.entry(retailer).or_default();
            for (shopper, at) in shoppers {
                let least = mine.entry(shopper).or_insert(at);
                *least = (*least).min(at);
            }
        }
    }
}

/// What the operator reads: an order's fact (with its count and leaving time), or the
/// erasure of a shopper `(retailer_id, shopper_id)`.
enum Input {
    Fact(OrderKey, Fact, isize, u64),
    Erased((String, String)),
}

/// The order-based part of the graph: the states of the paid orders of `counted` (rule 2,
/// settling `settlement` ms after the first payment: see the module docs), with privacy
/// (`erasures`, and `retention` when given), and the late inputs, at the times they were
/// read.
///
/// With `retention`, `counted` must be insert-only (the graph's
/// [`basketflow_operators::first_within`] is). Without one, no payment leaves by retention,
/// and `counted` may retract (the least-copy de-duplication of [`crate::read_models()`]).
///
/// # Panics
///
/// If `settlement` is 0 (an order would settle at the time of its own first fact), or if
/// it is finite without `retention`.
pub(crate) fn settle_orders<'scope>(
    counted: &VecCollection<'scope, u64, WireEvent>,
    erasures: Stream<'scope, u64, Vec<Erasure>>,
    settlement: u64,
    retention: Option<Retention>,
    checkpoints: Option<&Checkpointing>,
) -> (PaidOrders<'scope>, Stream<'scope, u64, Vec<LateInput>>) {
    let scope = counted.scope();
    let mut checkpointer =
        Checkpointer::new(checkpoints, "SettleOrders", scope.index(), scope.peers());
    assert!(settlement >= 1, "the settlement horizon is at least 1 ms");
    // A retraction can only empty an open order without retention, and an emptied order
    // forgets when its first fact was read: so no settlement there.
    assert!(
        retention.is_some() || settlement == u64::MAX,
        "without retention (a retracting input) orders never settle"
    );
    let facts = counted.inner.clone().flat_map(move |(event, time, diff)| {
        Fact::of(&event.0).map(|(key, fact)| {
            // Only a payment names its shopper; a cancellation's residue is itself.
            let leave = match (&fact, &retention) {
                (Fact::Paid(p), Some(r)) if !p.shopper_id.is_empty() => r.leaves_at(&event.0, time),
                _ => u64::MAX,
            };
            (key, fact, leave, time, diff)
        })
    });
    // Every worker holds orders of every shopper: erasures go to all of them.
    let erased = erasures.map(|e| e.shopper()).broadcast();
    let mut agenda: Agenda<Input, OrderKey> = Agenda::default();
    let mut state: Orders = checkpointer.restore_incremental();
    let mut named = Named::default();
    for (key, order) in &state.orders {
        named.update(key, &[], &order.named_shoppers());
    }
    type In = (OrderKey, Fact, u64, u64, isize);
    let out: Stream<'scope, u64, Vec<(OrderOut, u64, isize)>> = facts.binary_frontier(
        erased,
        Exchange::new(|(key, _, _, _, _): &In| key.hashed()),
        Pipeline,
        "SettleOrders",
        move |cap, _info| {
            // A restored order keeps its due time.
            for (key, order) in &state.orders {
                if order.scheduled < u64::MAX {
                    agenda.schedule(&cap, order.scheduled, key.clone());
                }
            }
            move |(facts_in, facts_frontier), (erased_in, erased_frontier), output| {
                facts_in.for_each(|time, data| {
                    let from = time.retain_least(0).expect("a batch has a capability");
                    for (key, fact, leave, t, diff) in data.drain(..) {
                        agenda.push(&from, t, Input::Fact(key, fact, diff, leave));
                    }
                });
                erased_in.for_each(|time, data| {
                    let from = time.retain_least(0).expect("a batch has a capability");
                    let t = *from.time();
                    for shopper in data.drain(..) {
                        agenda.push(&from, t, Input::Erased(shopper));
                    }
                });
                let (bound, exhausted) = agenda.bound(&[facts_frontier, erased_frontier]);
                while let Some((t, at)) = agenda.next_before(bound) {
                    checkpointer.pass_incremental(t, &mut state);
                    let Orders {
                        orders,
                        ended,
                        forgotten,
                        changed,
                    } = &mut state;
                    let mut touched: BTreeMap<OrderKey, Vec<(Fact, isize, u64)>> = BTreeMap::new();
                    for key in at.keys {
                        // An entry is stale when the order was scheduled elsewhere since.
                        if orders.get(&key).is_some_and(|o| o.scheduled == t) {
                            touched.entry(key).or_default();
                        }
                    }
                    for input in at.inputs {
                        match input {
                            Input::Fact(key, fact, diff, leave) => {
                                touched.entry(key).or_default().push((fact, diff, leave));
                            }
                            Input::Erased((retailer, shopper)) => {
                                // No chain written from now on reaches back before it, in
                                // any operator of the process (erasures come to every
                                // worker's orders).
                                changed.whole();
                                checkpointer.note_erasure();
                                for order_id in named.orders_of(&retailer, &shopper) {
                                    touched
                                        .entry((retailer.clone(), order_id.clone()))
                                        .or_default();
                                }
                                let least = forgotten
                                    .entry(retailer)
                                    .or_default()
                                    .entry(shopper)
                                    .or_insert(t);
                                *least = (*least).min(t);
                            }
                        }
                    }
                    let mut session = output.session(&at.cap);
                    for (key, updates) in touched {
                        changed.touch(&key, orders.len());
                        if ended.contains(&EndedOrder::of(&key)) {
                            for (fact, n, _) in updates {
                                for _ in 0..n.max(0) {
                                    session.give((OrderOut::Late(fact.late(&key, t)), t, 1));
                                }
                            }
                            continue;
                        }
                        let order = orders.entry(key.clone()).or_insert_with(Order::new);
                        if t >= order.settles_at(settlement) {
                            order.settle();
                        }
                        let before = order.state();
                        let named_before = order.named_shoppers();
                        if let Phase::Open(_) = order.phase {
                            order.apply_open(updates, t);
                        } else {
                            // Settled: whatever is read now is late and changes nothing.
                            for (fact, n, _) in updates {
                                for _ in 0..n.max(0) {
                                    session.give((OrderOut::Late(fact.late(&key, t)), t, 1));
                                }
                            }
                        }
                        let of_retailer = forgotten.get(&key.0);
                        order.anonymise(t, |shopper| {
                            of_retailer
                                .and_then(|m| m.get(shopper))
                                .is_some_and(|f| *f <= t)
                        });
                        let named_after = order.named_shoppers();
                        named.update(&key, &named_before, &named_after);
                        if t >= order.settles_at(settlement) {
                            order.settle();
                        }
                        let after = order.state();
                        if before != after {
                            if let Some(old) = before {
                                session.give((OrderOut::State(key.clone(), old), t, -1));
                            }
                            if let Some(new) = after {
                                session.give((OrderOut::State(key.clone(), new), t, 1));
                            }
                        }
                        let settled = matches!(order.phase, Phase::Settled { .. });
                        if settled && named_after.is_empty() {
                            // Nothing can change it any more: only its id is kept.
                            orders.remove(&key);
                            ended.insert(EndedOrder::of(&key));
                            continue;
                        }
                        if let Phase::Open(held) = &order.phase {
                            if held.is_empty() {
                                orders.remove(&key);
                                continue;
                            }
                        }
                        let next = order.next_due(settlement);
                        if next != order.scheduled && next < u64::MAX {
                            order.scheduled = next;
                            // Everything due is after `t`, which `at.cap` covers.
                            agenda.schedule(&at.cap, next, key);
                        }
                    }
                }
                checkpointer.pass_incremental(bound, &mut state);
                agenda.end_round(exhausted);
            }
        },
    );
    let states = out
        .clone()
        .flat_map(|(out, t, r)| match out {
            OrderOut::State(key, state) => Some(((key, state), t, r)),
            OrderOut::Late(_) => None,
        })
        .as_collection();
    let late = out.clone().flat_map(|(out, _t, _r)| match out {
        OrderOut::Late(late) => Some(late),
        OrderOut::State(..) => None,
    });
    (states, late)
}

/// What [`settle_orders`]' operator emits.
#[derive(Clone, Debug)]
enum OrderOut {
    State((String, String), OrderState),
    Late(LateInput),
}
