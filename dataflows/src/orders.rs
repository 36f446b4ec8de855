//! Orders with a settlement horizon: [`settle_orders`], the per-order state the four
//! order-based read models read.
//!
//! # What it computes
//!
//! An order is `(retailer_id, order_id)`. Its facts are its payments and `cancelled` status
//! changes, as counted (rule 1) and after privacy. While the order is *open*, its state is
//! rule 2 of the contract: the earliest payment (ties: `event_id`, then shopper and merged
//! lines) and whether any cancellation exists; every change of that state comes out as a
//! retraction of the old state and an insertion of the new one, at the logical time of the
//! facts that changed it.
//!
//! The order **settles** at `S`, which is `settlement` after its first payment was read, or
//! `settlement` after its first cancellation was read when no payment was read before that.
//! From `S` on its state stands:
//! * a payment or a cancellation read at or after `S` is a **late input**: it changes nothing
//!   and comes out on the late output, with its reason ([`LateReason`]);
//! * privacy still applies: the privacy stage moves a fact to its anonymous residue (a
//!   retraction and the residue's insertion at one time), and the settled state follows
//!   exactly (its winning payment loses its shopper), so an erasure or the end of a retention
//!   period reaches a settled order too. A late fact's move changes nothing.
//!
//! The order **ends** at `E = max(S, last read) + period`, where `period` is its retailer's
//! retention period: by then the privacy stage has moved every fact read for it (an event
//! leaves by `read + period`), so nothing can change its state any more, and only its id is
//! kept: any fact read for it later is late too. An order settles once.
//!
//! # Why it is deterministic
//!
//! Facts are exchanged by order, and a time is processed only once the input frontier has
//! passed it, in time order; what a time does depends only on the facts at it and at earlier
//! times, never on batching or on the number of workers.
//!
//! # State
//!
//! Per open order its facts (usually one payment); per settled order its counted payments
//! and cancellation flag, until `E`; per ended order its id (`(retailer_id, order_id)`, the
//! one term that grows with the orders ever paid or cancelled: about 150 bytes each, with the
//! hash table's slack); one schedule entry per order with something due.
//! With `settlement = u64::MAX` no order settles: rule 2 forever, state growing with the
//! orders.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use basketflow_vocab::{
    Event, EventBody, LateInput, LateReason, OrderLine, OrderStatus, Retention, Timestamp,
    WireEvent,
};
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::Map;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
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
    /// The payment without its shopper (what the privacy stage leaves of it).
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

    /// The fact's anonymous residue (the privacy stage's move of it).
    fn anonymous(&self) -> Fact {
        match self {
            Fact::Cancelled(c) => Fact::Cancelled(c.clone()),
            Fact::Paid(p) => Fact::Paid(Arc::new(p.anonymous())),
        }
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

/// One order's state in the operator.
enum Phase {
    /// Before `S`: the facts, consolidated.
    Open(Vec<(Fact, isize)>),
    /// From `S` on: what stands (the counted payments and whether a cancellation counted).
    Settled {
        payments: Vec<(Arc<PaidOrder>, isize)>,
        cancelled: bool,
    },
}

/// The least payment with a positive count, and the cancellation flag: rule 2's state.
fn state_of<'a>(
    payments: impl Iterator<Item = (&'a Arc<PaidOrder>, isize)>,
    cancelled: bool,
) -> Option<OrderState> {
    payments
        .filter(|(_, n)| *n > 0)
        .map(|(p, _)| p)
        .min()
        .map(|paid| OrderState {
            cancelled,
            paid: paid.clone(),
        })
}

struct Order {
    phase: Phase,
    /// When the first payment and the first cancellation were read.
    first_paid: Option<u64>,
    first_cancelled: Option<u64>,
    /// The latest time a fact was read for it (before `S` privacy moves count too, which
    /// changes nothing: `E` takes the greater of `S` and this).
    last_read: u64,
    /// The order's retention period (its retailer's).
    period: u64,
    /// The time the order is scheduled at in the operator's `due` (`u64::MAX`: none).
    scheduled: u64,
}

impl Order {
    fn new(period: u64) -> Order {
        Order {
            phase: Phase::Open(Vec::new()),
            first_paid: None,
            first_cancelled: None,
            last_read: 0,
            period,
            scheduled: u64::MAX,
        }
    }

    /// An order that has ended: settled, nothing standing on it any more.
    fn ended() -> Order {
        Order {
            phase: Phase::Settled {
                payments: Vec::new(),
                cancelled: false,
            },
            first_paid: None,
            first_cancelled: None,
            last_read: 0,
            period: 0,
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

    /// `E`: after it nothing can change the order.
    fn ends_at(&self, settlement: u64) -> u64 {
        self.settles_at(settlement)
            .max(self.last_read)
            .saturating_add(self.period)
    }

    /// The state rule 2 gives (the settled one once settled).
    fn state(&self) -> Option<OrderState> {
        match &self.phase {
            Phase::Open(facts) => {
                let cancelled = facts
                    .iter()
                    .any(|(f, n)| matches!(f, Fact::Cancelled(_)) && *n > 0);
                let payments = facts.iter().filter_map(|(f, n)| match f {
                    Fact::Paid(p) => Some((p, *n)),
                    Fact::Cancelled(_) => None,
                });
                state_of(payments, cancelled)
            }
            Phase::Settled {
                payments,
                cancelled,
                ..
            } => state_of(payments.iter().map(|(p, n)| (p, *n)), *cancelled),
        }
    }

    /// Settles the order (its cancellations give way to a flag).
    fn settle(&mut self) {
        if let Phase::Open(facts) = &mut self.phase {
            let cancelled = facts
                .iter()
                .any(|(f, n)| matches!(f, Fact::Cancelled(_)) && *n > 0);
            let payments = facts
                .drain(..)
                .filter_map(|(f, n)| match f {
                    Fact::Paid(p) if n > 0 => Some((p, n)),
                    _ => None,
                })
                .collect();
            self.phase = Phase::Settled {
                payments,
                cancelled,
            };
        }
    }

    /// Applies the updates `updates` read at `time`, which is before `S`.
    fn apply_open(&mut self, updates: Vec<(Fact, isize)>, time: u64) {
        let Phase::Open(facts) = &mut self.phase else {
            unreachable!("apply_open on an order that is not open")
        };
        for (fact, diff) in updates {
            if diff > 0 {
                let first = match fact {
                    Fact::Paid(_) => &mut self.first_paid,
                    Fact::Cancelled(_) => &mut self.first_cancelled,
                };
                first.get_or_insert(time);
            }
            match facts.iter_mut().find(|(f, _)| *f == fact) {
                Some((_, n)) => *n += diff,
                None => facts.push((fact, diff)),
            }
        }
        facts.retain(|(_, n)| *n != 0);
        self.last_read = time;
    }

    /// Applies the updates read at `time`, at or after `S`: privacy moves follow, the rest
    /// is late (returned).
    ///
    /// A move of a payment that is both counted and late (identical copies) is the counted
    /// one's: an event read earlier leaves the privacy stage no later than one read after it.
    fn apply_settled(&mut self, updates: Vec<(Fact, isize)>, time: u64) -> Vec<Fact> {
        let Phase::Settled { payments, .. } = &mut self.phase else {
            unreachable!("apply_settled on an order that is not settled")
        };
        let mut inserted: Vec<(Fact, isize)> = Vec::new();
        let mut retracted: Vec<(Fact, isize)> = Vec::new();
        for (fact, diff) in updates {
            if diff > 0 {
                inserted.push((fact, diff));
            } else {
                retracted.push((fact, -diff));
            }
        }
        for (fact, mut n) in retracted {
            let residue = fact.anonymous();
            // A move is the retraction of a fact and its residue's insertion at one time.
            for (ins, m) in inserted.iter_mut().filter(|(f, _)| *f == residue) {
                let paired = n.min(*m);
                *m -= paired;
                n -= paired;
                let (Fact::Paid(paid), Fact::Paid(moved)) = (&fact, &*ins) else {
                    continue; // a cancellation's residue is the same cancellation
                };
                for _ in 0..paired {
                    if let Some(i) = payments.iter().position(|(p, c)| p == paid && *c > 0) {
                        payments[i].1 -= 1;
                        match payments.iter_mut().find(|(p, _)| p == moved) {
                            Some((_, c)) => *c += 1,
                            None => payments.push((moved.clone(), 1)),
                        }
                        payments.retain(|(_, c)| *c != 0);
                    }
                    // Otherwise the move of a late payment: nothing stands on it.
                }
            }
        }
        let mut late = Vec::new();
        for (fact, m) in inserted {
            for _ in 0..m {
                late.push(fact.clone());
            }
            if m > 0 {
                self.last_read = time;
            }
        }
        late
    }
}

/// The order-based part of the graph: the states of the paid orders of `counted` (rule 2,
/// settling `settlement` ms after the first payment: see the module docs), and the late
/// inputs, at the times they were read.
///
/// # Panics
///
/// If `settlement` is 0 (an order would settle at the time of its own first fact).
pub(crate) fn settle_orders<'scope>(
    counted: &VecCollection<'scope, u64, WireEvent>,
    settlement: u64,
    retention: Retention,
) -> (PaidOrders<'scope>, Stream<'scope, u64, Vec<LateInput>>) {
    assert!(settlement >= 1, "the settlement horizon is at least 1 ms");
    let facts = counted.inner.clone().flat_map(|(event, time, diff)| {
        Fact::of(&event.0).map(|(key, fact)| (key, fact, time, diff))
    });
    // Facts of times not processed yet, each time with a capability at it.
    type Updates = Vec<((String, String), Fact, isize)>;
    let mut pending: BTreeMap<u64, (Capability<u64>, Updates)> = BTreeMap::new();
    let mut orders: HashMap<(String, String), Order> = HashMap::new();
    // The orders that have ended (see the module docs).
    let mut ended: HashSet<(String, String)> = HashSet::new();
    // Orders by the time something is due for them (settling, ending): checked when due.
    let mut due: BTreeMap<u64, Vec<(String, String)>> = BTreeMap::new();
    let out: Stream<'scope, u64, Vec<(OrderOut, u64, isize)>> = facts.unary_frontier(
        Exchange::new(|(key, _, _, _): &((String, String), Fact, u64, isize)| key.hashed()),
        "SettleOrders",
        move |_cap, _info| {
            move |(input, frontier), output| {
                input.for_each(|time, data| {
                    let from = time.retain_least(0).expect("a batch has a capability");
                    for (key, fact, t, diff) in data.drain(..) {
                        pending
                            .entry(t)
                            .or_insert_with(|| (from.delayed(&t), Vec::new()))
                            .1
                            .push((key, fact, diff));
                    }
                });
                let bound = frontier.frontier().first().copied();
                while let Some(entry) = pending.first_entry() {
                    let t = *entry.key();
                    if bound.is_some_and(|b| t >= b) {
                        break;
                    }
                    let (cap, mut updates) = entry.remove();
                    updates.sort_by(|a, b| a.0.cmp(&b.0));
                    let mut session = output.session(&cap);
                    let mut updates = updates.into_iter().peekable();
                    while let Some((key, fact, diff)) = updates.next() {
                        let mut of_key = vec![(fact, diff)];
                        while let Some((_, fact, diff)) = updates.next_if(|(k, _, _)| *k == key) {
                            of_key.push((fact, diff));
                        }
                        // The order may have ended: its id alone says any fact is late.
                        let order = match orders.get_mut(&key) {
                            Some(order) if t > order.ends_at(settlement) => {
                                orders.remove(&key);
                                ended.insert(key.clone());
                                None
                            }
                            order => order,
                        };
                        if order.is_none() && ended.contains(&key) {
                            let mut gone = Order::ended();
                            for fact in gone.apply_settled(of_key, t) {
                                session.give((OrderOut::Late(fact.late(&key, t)), t, 1));
                            }
                            continue;
                        }
                        let order = orders
                            .entry(key.clone())
                            .or_insert_with(|| Order::new(retention.period_ms(&key.0)));
                        if t >= order.settles_at(settlement) {
                            order.settle();
                        }
                        let before = order.state();
                        if let Phase::Open(_) = order.phase {
                            order.apply_open(of_key, t);
                            let at = order.settles_at(settlement);
                            schedule(&mut due, order, at, &key);
                        } else {
                            for fact in order.apply_settled(of_key, t) {
                                session.give((OrderOut::Late(fact.late(&key, t)), t, 1));
                            }
                            let at = order.ends_at(settlement);
                            schedule(&mut due, order, at, &key);
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
                        if let Phase::Open(facts) = &order.phase {
                            if facts.is_empty() {
                                orders.remove(&key);
                            }
                        }
                    }
                }
                // Every time before the frontier is processed: what is due before it can
                // happen now (no fact before it can arrive any more).
                let Some(bound) = bound else { return };
                while let Some(entry) = due.first_entry() {
                    if *entry.key() >= bound {
                        break;
                    }
                    for key in entry.remove() {
                        let Some(order) = orders.get_mut(&key) else {
                            continue;
                        };
                        if order.ends_at(settlement) < bound {
                            orders.remove(&key);
                            ended.insert(key);
                        } else if order.settles_at(settlement) < bound {
                            if let Phase::Open(_) = order.phase {
                                order.settle();
                                let at = order.ends_at(settlement);
                                schedule(&mut due, order, at, &key);
                            }
                        }
                    }
                }
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

/// Schedules `order` (of `key`) at `at`, unless it is scheduled there already (never at
/// `u64::MAX`: that never comes). An entry left at an earlier time finds the order due later
/// and does nothing.
fn schedule(
    due: &mut BTreeMap<u64, Vec<(String, String)>>,
    order: &mut Order,
    at: u64,
    key: &(String, String),
) {
    if at < u64::MAX && at != order.scheduled {
        order.scheduled = at;
        due.entry(at).or_default().push(key.clone());
    }
}

/// What [`settle_orders`]' operator emits.
#[derive(Clone, Debug)]
enum OrderOut {
    State((String, String), OrderState),
    Late(LateInput),
}
