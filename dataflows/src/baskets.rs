//! Baskets on folded state: `fold_baskets`, rule 4 with privacy applied in the operator
//! itself, keeping only what can still change a basket.
//!
//! # What it computes
//!
//! A shopper `(retailer_id, shopper_id)` has *records*: their counted basket changes and
//! payments, each present from the time `t` it was read until it *leaves*: at
//! `retention.leaves_at(event, t)`, or at `max(t, F)` once the shopper is erased at `F`
//! (the privacy rule, [`crate::privacy`]). A payment of an anonymous order (empty
//! shopper) is no record: it ends no one's basket. At every time the basket is rule 4 over
//! the present records: per product, the signed units of the changes that occurred strictly
//! after the latest present payment, shown when positive. Each change of a basket line comes
//! out as a retraction of the old line and an insertion of the new one, at the time that
//! changed it. This is exactly what the read models computed from the events left after
//! privacy give, which the oracle checks ([`crate::oracle::read_models_at`]).
//!
//! # Folded state
//!
//! A record that can never change a basket again is dropped, which is what keeps the state
//! bounded by open baskets rather than by every basket change ever made:
//! * a change that occurred at or before a present payment's instant, when that payment
//!   leaves no earlier than the change: until the change leaves the payment is present, so
//!   the change is cut at every time it could count;
//! * a payment when another present payment occurred no earlier and leaves no earlier: it
//!   never decides the cut-off alone.
//!
//! Neither can come back: new payments only move the cut-off later, and an erasure removes
//! everything of the shopper. So after a payment a shopper's state is that payment and the
//! changes made since (with today's clocks the latest payment also leaves last). Erased
//! shoppers are kept as `(retailer_id, shopper_id) -> F`, so that their later events never
//! count.
//!
//! # Why it is deterministic
//!
//! Records and erasures are exchanged by shopper. A time is processed only once both input
//! frontiers have passed it, in time order, with its scheduled leavings; the output at a
//! time is a function of the records present then, and dropping a record never changes
//! that function. So the output is the same on one worker or many, whatever the batching.
//! Leavings are held, not sent ahead: one capability at the earliest scheduled leaving, and
//! one live schedule entry per shopper (its least leaving time; entries left by a move are
//! skipped when they come). When both inputs are exhausted
//! (the end of a bounded run), leavings after the last time processed are dropped, as no input
//! reaches them.

use basketflow_operators::FastMap;
use std::collections::BTreeMap;

use basketflow_operators::agenda::Agenda;
use basketflow_operators::checkpoint::{
    encode_into, set_or_remove, ChangedKeys, Checkpointer, Checkpointing, Incremental, Sharded,
};
use basketflow_vocab::read_models::BasketLine;
use basketflow_vocab::{Erasure, EventBody, Retention, WireEvent};
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::Map;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

/// A shopper: `(retailer_id, shopper_id)`.
type Shopper = (String, String);

/// What a counted event says about its shopper's basket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Fact {
    /// A basket change: its product and signed units (times the event's multiplicity).
    Change { product_id: String, units: i64 },
    /// A payment of the shopper (times the event's multiplicity).
    Paid { count: i64 },
}

/// A fact, with the instant it occurred (µs) and the time it leaves.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    occurred_at: i64,
    leave: u64,
    fact: Fact,
}

/// One shopper's present records, after folding (see the [module docs](self)).
#[derive(Serialize, Deserialize)]
struct Basket {
    /// Payments: `(occurred_at, leave, count)`, counts non-zero.
    payments: Vec<(i64, u64, i64)>,
    /// Changes not cut for good: `(occurred_at, leave, product) -> units`, units non-zero.
    changes: BTreeMap<(i64, u64, String), i64>,
    /// The time the shopper is scheduled at (its least leaving time; `u64::MAX`: none).
    scheduled: u64,
}

impl Default for Basket {
    fn default() -> Self {
        Basket {
            payments: Vec::new(),
            changes: BTreeMap::new(),
            scheduled: u64::MAX,
        }
    }
}

impl Basket {
    /// The basket lines now: per product the units of the changes after the latest payment,
    /// when positive.
    fn lines(&self) -> BTreeMap<&str, i64> {
        // The latest instant with a positive net count of payments (counts are positive
        // when folding; without folding a retraction may sit apart from its insertion).
        let mut net: BTreeMap<i64, i64> = BTreeMap::new();
        for (o, _, n) in &self.payments {
            *net.entry(*o).or_default() += n;
        }
        let cutoff = net.into_iter().rev().find(|(_, n)| *n > 0).map(|(o, _)| o);
        let mut lines: BTreeMap<&str, i64> = BTreeMap::new();
        for ((o, _, product), units) in &self.changes {
            if cutoff.is_none_or(|c| *o > c) {
                *lines.entry(product.as_str()).or_default() += units;
            }
        }
        lines.retain(|_, units| *units > 0);
        lines
    }

    /// Adds a record (merged with an equal one).
    fn add(&mut self, record: Record) {
        match record.fact {
            Fact::Paid { count } => {
                match self
                    .payments
                    .iter_mut()
                    .find(|(o, l, _)| *o == record.occurred_at && *l == record.leave)
                {
                    Some((_, _, n)) => *n += count,
                    None => self
                        .payments
                        .push((record.occurred_at, record.leave, count)),
                }
                self.payments.retain(|(_, _, n)| *n != 0);
            }
            Fact::Change { product_id, units } => {
                let key = (record.occurred_at, record.leave, product_id);
                let u = self.changes.entry(key.clone()).or_default();
                *u += units;
                if *u == 0 {
                    self.changes.remove(&key);
                }
            }
        }
    }

    /// Removes the records that have left by `time`.
    fn leave(&mut self, time: u64) {
        self.payments.retain(|(_, l, _)| *l > time);
        self.changes.retain(|(_, l, _), _| *l > time);
    }

    /// Drops the records that can never change the basket again (see the module docs).
    fn fold(&mut self) {
        let live: Vec<(i64, u64)> = self
            .payments
            .iter()
            .filter(|(_, _, n)| *n > 0)
            .map(|(o, l, _)| (*o, *l))
            .collect();
        self.changes
            .retain(|(o, l, _), _| !live.iter().any(|(po, pl)| po >= o && pl >= l));
        // Of payments equal in both, the first is kept; a strictly dominated one goes.
        let mut kept: Vec<(i64, u64, i64)> = Vec::with_capacity(self.payments.len());
        for (i, &(o, l, n)) in self.payments.iter().enumerate() {
            let dominated = n > 0
                && self.payments.iter().enumerate().any(|(j, &(qo, ql, qn))| {
                    j != i && qn > 0 && qo >= o && ql >= l && ((qo, ql) != (o, l) || j < i)
                });
            if !dominated {
                kept.push((o, l, n));
            }
        }
        self.payments = kept;
    }

    /// The least time a record leaves (`u64::MAX`: none).
    fn next_leaving(&self) -> u64 {
        let payments = self.payments.iter().map(|(_, l, _)| *l);
        let changes = self.changes.keys().map(|(_, l, _)| *l);
        payments.chain(changes).min().unwrap_or(u64::MAX)
    }

    fn is_empty(&self) -> bool {
        self.payments.is_empty() && self.changes.is_empty()
    }
}

/// The fact a counted event states about its shopper's basket, if any.
fn fact_of(event: &WireEvent, diff: isize) -> Option<(Shopper, i64, Fact)> {
    let event = &event.0;
    let n = diff as i64;
    let fact = match &event.body {
        EventBody::ProductAdded(change) => Fact::Change {
            product_id: change.product.product_id.clone(),
            units: i64::from(change.quantity) * n,
        },
        EventBody::ProductRemoved(change) => Fact::Change {
            product_id: change.product.product_id.clone(),
            units: -i64::from(change.quantity) * n,
        },
        // Anonymous orders (privacy residues) end no one's basket.
        EventBody::OrderPaid { .. } if !event.shopper_id.is_empty() => Fact::Paid { count: n },
        _ => return None,
    };
    Some((
        (event.retailer_id.clone(), event.shopper_id.clone()),
        event.occurred_at.0,
        fact,
    ))
}

/// The operator's checkpointed state (the agenda's due shoppers are rebuilt from it).
#[derive(Default, Serialize, Deserialize)]
struct Baskets {
    baskets: FastMap<Shopper, Basket>,
    /// Erased shoppers, with the least time of their erasure.
    forgotten: FastMap<Shopper, u64>,
    /// The shoppers whose entries changed since the last part (its parts of changes).
    #[serde(skip)]
    changed: ChangedKeys<Shopper>,
}

impl Incremental for Baskets {
    /// Per changed shopper: their basket and erasure time (absent ones are removed).
    type Changes = Vec<(Shopper, Option<Basket>, Option<u64>)>;

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
        for (shopper, basket, forgotten) in changes {
            set_or_remove(&mut self.forgotten, shopper.clone(), forgotten);
            set_or_remove(&mut self.baskets, shopper, basket);
        }
    }

    type Key = Shopper;

    fn start_slices(&mut self, _at: u64, out: &mut Vec<u8>) -> Vec<Shopper> {
        encode_into(out, &Baskets::default());
        let mut keys: Vec<Shopper> = self.baskets.keys().cloned().collect();
        keys.extend(
            self.forgotten
                .keys()
                .filter(|s| !self.baskets.contains_key(*s))
                .cloned(),
        );
        keys
    }

    fn write_entries(&self, keys: &[Shopper], out: &mut Vec<u8>) {
        self.write_of(keys, out);
    }

    fn settle_changes(&mut self) {
        self.changed.settle();
    }

    fn take_settled(&mut self, max: usize) -> Vec<Shopper> {
        self.changed.take_settled(max)
    }
}

impl Baskets {
    /// Writes the entries of `keys` as a part of changes lists them.
    fn write_of<'a>(&'a self, keys: impl IntoIterator<Item = &'a Shopper>, out: &mut Vec<u8>) {
        // The same bytes as `Changes`, borrowed.
        let changes: Vec<(&Shopper, Option<&Basket>, Option<&u64>)> = keys
            .into_iter()
            .map(|s| (s, self.baskets.get(s), self.forgotten.get(s)))
            .collect();
        encode_into(out, &changes);
    }
}

impl Sharded for Baskets {
    fn retain_owned(&mut self, owns: &dyn Fn(u64) -> bool) {
        self.baskets.retain(|shopper, _| owns(shopper.hashed()));
        self.forgotten.retain(|shopper, _| owns(shopper.hashed()));
    }

    fn absorb(&mut self, other: Self) {
        self.baskets.extend(other.baskets);
        self.forgotten.extend(other.forgotten);
    }
}

/// What the operator reads: a shopper's record, or the erasure of a shopper.
enum Input {
    Record(Shopper, Record),
    Erased(Shopper),
}

/// The baskets (rule 4) of the counted events `counted` (rule 1 applied, privacy not yet:
/// this operator applies `erasures` and `retention` itself), as a collection of basket lines.
/// See the [module docs](self).
///
/// With `retention`, `counted` must be insert-only (the graph's
/// [`basketflow_operators::first_within`] is): records are folded. Without one, nothing
/// leaves by retention and nothing is folded, so `counted` may retract (the least-copy
/// de-duplication of [`crate::read_models()`] does when a lesser copy arrives).
pub(crate) fn fold_baskets<'scope>(
    counted: &VecCollection<'scope, u64, WireEvent>,
    erasures: Stream<'scope, u64, Vec<Erasure>>,
    retention: Option<Retention>,
    checkpoints: Option<&Checkpointing>,
) -> VecCollection<'scope, u64, BasketLine> {
    let scope = counted.scope();
    let mut checkpointer = Checkpointer::new(checkpoints, "Baskets", scope.index(), scope.peers());
    let folds = retention.is_some();
    let facts = counted.inner.clone().flat_map(move |(event, time, diff)| {
        debug_assert!(
            retention.is_none() || diff > 0,
            "folded baskets need insert-only input"
        );
        let leave = retention
            .as_ref()
            .map_or(u64::MAX, |r| r.leaves_at(&event.0, time));
        fact_of(&event, diff).map(|(shopper, occurred_at, fact)| {
            (
                shopper,
                Record {
                    occurred_at,
                    leave,
                    fact,
                },
                time,
            )
        })
    });
    let erased = erasures.map(|e| e.shopper());
    let mut agenda: Agenda<Input, Shopper> = Agenda::default();
    let mut state: Baskets = checkpointer.restore_incremental();
    facts
        .binary_frontier(
            erased,
            Exchange::new(|(shopper, _, _): &(Shopper, Record, u64)| shopper.hashed()),
            Exchange::new(|shopper: &Shopper| shopper.hashed()),
            "Baskets",
            move |cap, _info| {
                // A restored basket keeps its due time.
                for (shopper, basket) in &state.baskets {
                    if basket.scheduled < u64::MAX {
                        agenda.schedule(&cap, basket.scheduled, shopper.clone());
                    }
                }
                move |(records_in, records_frontier), (erased_in, erased_frontier), output| {
                    records_in.for_each(|time, data| {
                        let from = time.retain_least(0).expect("a batch has a capability");
                        for (shopper, record, t) in data.drain(..) {
                            agenda.push(&from, t, Input::Record(shopper, record));
                        }
                    });
                    erased_in.for_each(|time, data| {
                        let from = time.retain_least(0).expect("a batch has a capability");
                        let t = *from.time();
                        for shopper in data.drain(..) {
                            agenda.push(&from, t, Input::Erased(shopper));
                        }
                    });
                    let (bound, exhausted) = agenda.bound(&[records_frontier, erased_frontier]);
                    while let Some((t, at)) = agenda.next_before(bound) {
                        checkpointer.pass_incremental(t, &mut state);
                        let Baskets {
                            baskets,
                            forgotten,
                            changed,
                        } = &mut state;
                        let mut touched: BTreeMap<Shopper, Vec<Record>> = BTreeMap::new();
                        for shopper in at.keys {
                            // An entry is stale when the shopper was scheduled elsewhere since.
                            if baskets.get(&shopper).is_some_and(|b| b.scheduled == t) {
                                touched.entry(shopper).or_default();
                            }
                        }
                        for input in at.inputs {
                            match input {
                                Input::Erased(shopper) => {
                                    // No chain written from now on reaches back before it.
                                    changed.whole();
                                    let least = forgotten.entry(shopper.clone()).or_insert(t);
                                    *least = (*least).min(t);
                                    touched.entry(shopper).or_default();
                                }
                                Input::Record(shopper, record) => {
                                    touched.entry(shopper).or_default().push(record);
                                }
                            }
                        }
                        let mut session = output.session(&at.cap);
                        for (shopper, records) in touched {
                            changed.touch(&shopper, baskets.len());
                            let basket = baskets.entry(shopper.clone()).or_default();
                            let before: BTreeMap<String, i64> = basket
                                .lines()
                                .into_iter()
                                .map(|(p, u)| (p.to_owned(), u))
                                .collect();
                            if forgotten.get(&shopper).is_some_and(|f| *f <= t) {
                                // Everything leaves at the erasure; nothing read since counts.
                                basket.payments.clear();
                                basket.changes.clear();
                            } else {
                                for record in records {
                                    basket.add(record);
                                }
                            }
                            basket.leave(t);
                            if folds {
                                basket.fold();
                            }
                            let after = basket.lines();
                            let line = |product_id: &str, quantity: i64| BasketLine {
                                retailer_id: shopper.0.clone(),
                                shopper_id: shopper.1.clone(),
                                product_id: product_id.to_owned(),
                                quantity,
                            };
                            for (product, units) in &before {
                                if after.get(product.as_str()) != Some(units) {
                                    session.give((line(product, *units), t, -1));
                                }
                            }
                            for (product, units) in &after {
                                if before.get(*product) != Some(units) {
                                    session.give((line(product, *units), t, 1));
                                }
                            }
                            let next = basket.next_leaving();
                            if basket.is_empty() {
                                baskets.remove(&shopper);
                            } else if next != basket.scheduled && next < u64::MAX {
                                basket.scheduled = next;
                                // Every leaving is after `t`, which `at.cap` covers.
                                agenda.schedule(&at.cap, next, shopper);
                            }
                        }
                    }
                    checkpointer.pass_incremental(bound, &mut state);
                    agenda.end_round(exhausted);
                }
            },
        )
        .as_collection()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(occurred_at: i64, leave: u64, product: &str, units: i64) -> Record {
        Record {
            occurred_at,
            leave,
            fact: Fact::Change {
                product_id: product.to_owned(),
                units,
            },
        }
    }

    fn paid(occurred_at: i64, leave: u64) -> Record {
        Record {
            occurred_at,
            leave,
            fact: Fact::Paid { count: 1 },
        }
    }

    fn basket(records: Vec<Record>) -> Basket {
        let mut basket = Basket::default();
        for record in records {
            basket.add(record);
        }
        basket
    }

    #[test]
    fn a_change_cut_by_a_payment_that_outlives_it_is_dropped() {
        let mut b = basket(vec![
            change(10, 100, "p1", 2),
            change(30, 120, "p2", 1),
            paid(20, 110),
        ]);
        b.fold();
        assert_eq!(b.changes, BTreeMap::from([((30, 120, "p2".to_owned()), 1)]));
        assert_eq!(b.payments, vec![(20, 110, 1)]);
        assert_eq!(b.lines(), BTreeMap::from([("p2", 1)]));
    }

    #[test]
    fn a_change_whose_payment_leaves_first_is_kept_and_counts_again() {
        // The payment occurred later but leaves earlier (a tracker clock ahead): once it
        // has left, the change counts again, so folding must keep it.
        let mut b = basket(vec![change(10, 100, "p1", 2), paid(20, 50)]);
        b.fold();
        assert_eq!(b.lines(), BTreeMap::new());
        assert_eq!(b.changes.len(), 1);
        b.leave(50);
        assert_eq!(b.lines(), BTreeMap::from([("p1", 2)]));
    }

    #[test]
    fn a_payment_that_never_decides_the_cutoff_alone_is_dropped() {
        let mut b = basket(vec![paid(20, 110), paid(30, 120), paid(40, 90)]);
        b.fold();
        // (20, 110) is dominated by (30, 120); (40, 90) occurred later but leaves earlier.
        assert_eq!(b.payments, vec![(30, 120, 1), (40, 90, 1)]);
        assert_eq!(b.next_leaving(), 90);
    }

    #[test]
    fn equal_records_merge_and_removals_net_out() {
        let b = basket(vec![
            change(10, 100, "p1", 2),
            change(10, 100, "p1", 1),
            change(11, 100, "p1", -3),
            change(12, 100, "p2", -1),
        ]);
        assert_eq!(b.changes.len(), 3);
        assert_eq!(b.lines(), BTreeMap::new());
    }

    #[test]
    fn without_folding_a_retracted_payment_no_longer_cuts() {
        // A retraction read later has another leaving time than its insertion; the cut-off
        // reads the net count per instant.
        let b = basket(vec![
            change(10, u64::MAX, "p1", 1),
            paid(20, u64::MAX),
            Record {
                occurred_at: 20,
                leave: u64::MAX - 1,
                fact: Fact::Paid { count: -1 },
            },
        ]);
        assert_eq!(b.lines(), BTreeMap::from([("p1", 1)]));
    }
}
