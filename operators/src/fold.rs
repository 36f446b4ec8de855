//! [`fold_by_key`]: per key, an [`Accumulator`] of the key's updates, one output row per key.
//!
//! # What it computes
//!
//! Input: a collection of `(key, update)` records with multiplicities, at totally ordered
//! logical times. Per key, the accumulator folds every record (`add(update, multiplicity)`),
//! and the output holds the row the accumulator gives (none: the key is absent), with
//! multiplicity one. A time's changes come out at that time as the old row's retraction and
//! the new row's insertion, as an upsert sink needs.
//!
//! # Why it is deterministic
//!
//! Records are exchanged by key, and a time is folded once the input frontier has passed it,
//! in time order ([`crate::agenda`]), so the row after each time depends only on the records
//! at or before it. An accumulator must be a commutative fold (sums, counts, multisets), so
//! the order of records within a time does not matter either.
//!
//! # State
//!
//! One accumulator per key that is not empty ([`Accumulator::is_empty`]); nothing per
//! record. The state is checkpointed ([`crate::checkpoint`]) when given a [`Checkpointing`],
//! incrementally: a part of changes holds the keys folded since the last part.

use crate::FastMap;
use std::collections::BTreeMap;
use std::hash::Hash;

use differential_dataflow::{AsCollection, ExchangeData, Hashable, VecCollection};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::agenda::Agenda;
use crate::checkpoint::{
    encode_into, set_or_remove, ChangedKeys, Checkpointer, Checkpointing, Incremental, Sharded,
};

/// A key's fold of its updates (see the [module docs](self)).
pub trait Accumulator: Default + Serialize + DeserializeOwned + 'static {
    /// What an input record carries besides its key.
    type Update: ExchangeData;
    /// The output row's value for the key.
    type Row: ExchangeData + PartialEq;
    /// Folds `update` with multiplicity `diff`.
    fn add(&mut self, update: &Self::Update, diff: isize);
    /// The row now, or `None` when the key has no row.
    fn row(&self) -> Option<Self::Row>;
    /// True when the accumulator is back to its default (the key's entry can go).
    fn is_empty(&self) -> bool;
}

/// Three integer sums: each update adds its components times its multiplicity; the row is
/// the sums, absent when every sum is zero (what a differential `count` of tuple differences
/// gives).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sums3(
    /// The sums.
    pub [i64; 3],
);

impl Accumulator for Sums3 {
    type Update = [i64; 3];
    type Row = [i64; 3];

    fn add(&mut self, update: &[i64; 3], diff: isize) {
        for (sum, value) in self.0.iter_mut().zip(update) {
            *sum += value * diff as i64;
        }
    }

    fn row(&self) -> Option<[i64; 3]> {
        (!self.is_empty()).then_some(self.0)
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|s| *s == 0)
    }
}

/// The operator's state: one accumulator per key, and the keys changed since its last part
/// (its parts of changes hold those keys' accumulators; absent ones are removed).
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize + Hash + Eq, A: Serialize",
    deserialize = "K: DeserializeOwned + Hash + Eq, A: DeserializeOwned"
))]
struct Folded<K, A> {
    map: FastMap<K, A>,
    #[serde(skip)]
    changed: ChangedKeys<K>,
}

impl<K, A> Default for Folded<K, A> {
    fn default() -> Self {
        Folded {
            map: FastMap::default(),
            changed: ChangedKeys::default(),
        }
    }
}

impl<K, A> Sharded for Folded<K, A>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Hashable<Output = u64>,
    A: Serialize + DeserializeOwned,
{
    fn retain_owned(&mut self, owns: &dyn Fn(u64) -> bool) {
        self.map.retain(|k, _| owns(k.hashed()));
    }

    fn absorb(&mut self, other: Self) {
        self.map.extend(other.map);
    }
}

impl<K, A> Incremental for Folded<K, A>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + Hashable<Output = u64> + 'static,
    A: Serialize + DeserializeOwned,
{
    type Changes = Vec<(K, Option<A>)>;

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
        for (k, a) in changes {
            set_or_remove(&mut self.map, k, a);
        }
    }

    type Key = K;

    fn start_slices(&mut self, _at: u64, out: &mut Vec<u8>) -> Vec<K> {
        encode_into(out, &Self::default());
        self.map.keys().cloned().collect()
    }

    fn write_entries(&self, keys: &[K], out: &mut Vec<u8>) {
        self.write_of(keys, out);
    }

    fn settle_changes(&mut self) {
        self.changed.settle();
    }

    fn take_settled(&mut self, max: usize) -> Vec<K> {
        self.changed.take_settled(max)
    }
}

impl<K: Serialize + Hash + Eq, A: Serialize> Folded<K, A> {
    /// Writes the entries of `keys` as a part of changes lists them.
    fn write_of<'a>(&'a self, keys: impl IntoIterator<Item = &'a K>, out: &mut Vec<u8>) {
        // The same bytes as `Changes`, borrowed.
        let changes: Vec<(&K, Option<&A>)> =
            keys.into_iter().map(|k| (k, self.map.get(k))).collect();
        encode_into(out, &changes);
    }
}

/// Per key of `updates`, the row of its [`Accumulator`] `A` (see the [module docs](self)).
/// `name` names the operator and its checkpoint parts.
///
/// # Examples
///
/// ```
/// use basketflow_operators::fold::{fold_by_key, Sums3};
/// use differential_dataflow::input::Input;
/// use timely::dataflow::operators::capture::{Capture, Extract};
///
/// let captured = timely::example(|scope| {
///     // (product, [units, revenue, orders]): two sales of 1, one of 2.
///     let sales = vec![(1u32, [2i64, 10, 1]), (1, [3, 15, 1]), (2, [1, 4, 1])];
///     let (_input, sales) = scope.new_collection_from(sales);
///     fold_by_key::<_, Sums3>("Sales", sales, None).inner.capture()
/// });
/// let mut rows: Vec<_> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
/// rows.sort();
/// assert_eq!(rows, vec![((1, [5, 25, 2]), 0, 1), ((2, [1, 4, 1]), 0, 1)]);
/// ```
pub fn fold_by_key<'scope, K, A>(
    name: &'static str,
    updates: VecCollection<'scope, u64, (K, A::Update), isize>,
    checkpoints: Option<&Checkpointing>,
) -> VecCollection<'scope, u64, (K, A::Row), isize>
where
    K: ExchangeData + Hash + Ord + Hashable<Output = u64> + Serialize + DeserializeOwned,
    A: Accumulator,
{
    let scope = updates.scope();
    let mut checkpointer = Checkpointer::new(checkpoints, name, scope.index(), scope.peers());
    let mut state: Folded<K, A> = checkpointer.restore_incremental();
    let mut agenda: Agenda<(K, A::Update, isize), ()> = Agenda::default();
    updates
        .inner
        .unary_frontier(
            Exchange::new(|((key, _), _, _): &((K, A::Update), u64, isize)| key.hashed()),
            name,
            move |_cap, _info| {
                move |(input, frontier), output| {
                    input.for_each(|time, data| {
                        let from = time.retain_least(0).expect("a batch has a capability");
                        for ((key, update), t, diff) in data.drain(..) {
                            agenda.push(&from, t, (key, update, diff));
                        }
                    });
                    let (bound, exhausted) = agenda.bound(&[frontier]);
                    while let Some((t, at)) = agenda.next_before(bound) {
                        checkpointer.pass_incremental(t, &mut state);
                        let mut by_key: BTreeMap<K, Vec<(A::Update, isize)>> = BTreeMap::new();
                        for (key, update, diff) in at.inputs {
                            by_key.entry(key).or_default().push((update, diff));
                        }
                        let mut session = output.session(&at.cap);
                        for (key, updates) in by_key {
                            let live = state.map.len();
                            state.changed.touch(&key, live);
                            let acc = state.map.entry(key.clone()).or_default();
                            let old = acc.row();
                            for (update, diff) in &updates {
                                acc.add(update, *diff);
                            }
                            let new = acc.row();
                            if acc.is_empty() {
                                state.map.remove(&key);
                            }
                            if old == new {
                                continue;
                            }
                            if let Some(old) = old {
                                session.give(((key.clone(), old), t, -1));
                            }
                            if let Some(new) = new {
                                session.give(((key, new), t, 1));
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
