//! Product affinities on compact state: `count_pairs`, the number of live orders per
//! `(retailer, product_a, product_b)`, held as interned ids rather than as an arrangement of
//! strings.
//!
//! # Why not `fold_by_key` on strings
//!
//! Pairs are the one read model whose keys grow with the catalogue squared: with 3,000
//! products a retailer has up to 4.5 M pairs, and an arrangement keeps each as three
//! `String`s with a time and a difference (about 140 bytes, and twice that while a merge is in
//! progress). Here each worker interns the strings it has seen (retailers and products: a
//! table bounded by the catalogue) and keeps one `(u32, u32, u32) -> count` entry per live
//! pair (about 40 bytes with the hash table's slack).
//!
//! # What it computes, and why it is deterministic
//!
//! Exactly what a sum per key gives: per key the sum of its updates' differences, as one row
//! with multiplicity one, absent when zero. Updates are exchanged by key, a time is processed
//! once the input frontier has passed it, in time order ([`basketflow_operators::agenda`]),
//! and its changes come out as the old row's retraction and the new row's insertion at that
//! time. Interned ids never leave the worker, so they need not agree between workers.
//!
//! # State
//!
//! One entry per live pair, and the interned strings (never dropped: bounded by the
//! retailers and products ever seen on the worker).

use basketflow_operators::FastMap;
use std::collections::BTreeMap;

use basketflow_operators::agenda::Agenda;
use basketflow_operators::checkpoint::{Checkpointer, Checkpointing, Sharded};
use basketflow_vocab::read_models::ProductAffinity;
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

/// A pair's key: `(retailer_id, product_a, product_b)`, with `product_a < product_b`.
pub(crate) type Pair = (String, String, String);

/// Strings interned as dense ids.
#[derive(Default)]
struct Interner {
    ids: FastMap<String, u32>,
    strings: Vec<String>,
}

/// Pair counts on interned ids: the operator's state, as checkpointed.
type Counts = FastMap<(u32, u32, u32), i64>;

/// The operator's checkpointed state: the interned names and the counts on their ids.
#[derive(Default, Deserialize)]
struct Affinities {
    names: Vec<String>,
    counts: Counts,
}

/// [`Affinities`] borrowed from the operator, to write (the same encoding).
#[derive(Serialize)]
struct AffinitiesRef<'a> {
    names: &'a [String],
    counts: &'a Counts,
}

impl<'a> AffinitiesRef<'a> {
    /// The operator's state, borrowed.
    fn of(names: &'a Interner, counts: &'a Counts) -> AffinitiesRef<'a> {
        AffinitiesRef {
            names: &names.strings,
            counts,
        }
    }
}

impl Serialize for Affinities {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        AffinitiesRef {
            names: &self.names,
            counts: &self.counts,
        }
        .serialize(s)
    }
}

impl Sharded for Affinities {
    fn retain_owned(&mut self, owns: &dyn Fn(u64) -> bool) {
        let names = &self.names;
        self.counts.retain(|(r, a, b), _| {
            let pair = (
                &names[*r as usize],
                &names[*a as usize],
                &names[*b as usize],
            );
            owns(pair.hashed())
        });
    }

    fn absorb(&mut self, other: Self) {
        let mut names = Interner::from_names(std::mem::take(&mut self.names));
        for ((r, a, b), n) in other.counts {
            let mut id = |i: u32| names.id(other.names[i as usize].clone());
            let key = (id(r), id(a), id(b));
            *self.counts.entry(key).or_default() += n;
        }
        self.names = names.strings;
    }
}

impl Interner {
    /// The interner whose ids are the positions of `names`.
    fn from_names(names: Vec<String>) -> Interner {
        let ids = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        Interner {
            ids,
            strings: names,
        }
    }

    fn id(&mut self, s: String) -> u32 {
        if let Some(id) = self.ids.get(&s) {
            return *id;
        }
        let id = u32::try_from(self.strings.len()).expect("fewer than 2^32 distinct names");
        self.strings.push(s.clone());
        self.ids.insert(s, id);
        id
    }

    fn name(&self, id: u32) -> &str {
        &self.strings[id as usize]
    }
}

/// Per pair of `pairs` (a collection of keys, with multiplicities), the sum of its
/// multiplicities, as affinity rows (see the [module docs](self)).
pub(crate) fn count_pairs<'scope>(
    pairs: VecCollection<'scope, u64, Pair>,
    checkpoints: Option<&Checkpointing>,
) -> VecCollection<'scope, u64, ProductAffinity> {
    let scope = pairs.scope();
    let mut checkpointer = Checkpointer::new(
        checkpoints,
        "ProductAffinities",
        scope.index(),
        scope.peers(),
    );
    let restored: Affinities = checkpointer.restore();
    let mut names = Interner::from_names(restored.names);
    let mut counts = restored.counts;
    let mut agenda: Agenda<(Pair, isize), ()> = Agenda::default();
    pairs
        .inner
        .unary_frontier(
            Exchange::new(|(pair, _, _): &(Pair, u64, isize)| pair.hashed()),
            "ProductAffinities",
            move |_cap, _info| {
                move |(input, frontier), output| {
                    input.for_each(|time, data| {
                        let from = time.retain_least(0).expect("a batch has a capability");
                        for (pair, t, diff) in data.drain(..) {
                            agenda.push(&from, t, (pair, diff));
                        }
                    });
                    let (bound, exhausted) = agenda.bound(&[frontier]);
                    while let Some((t, at)) = agenda.next_before(bound) {
                        checkpointer.pass(t, &AffinitiesRef::of(&names, &counts));
                        let mut deltas: BTreeMap<(u32, u32, u32), i64> = BTreeMap::new();
                        for ((retailer, a, b), diff) in at.inputs {
                            let key = (names.id(retailer), names.id(a), names.id(b));
                            *deltas.entry(key).or_default() += diff as i64;
                        }
                        let mut session = output.session(&at.cap);
                        for (key, delta) in deltas {
                            if delta == 0 {
                                continue;
                            }
                            let row = |n: i64| ProductAffinity {
                                retailer_id: names.name(key.0).to_owned(),
                                product_a: names.name(key.1).to_owned(),
                                product_b: names.name(key.2).to_owned(),
                                orders_together: n,
                            };
                            let old = counts.get(&key).copied().unwrap_or(0);
                            let new = old + delta;
                            if old != 0 {
                                session.give((row(old), t, -1isize));
                            }
                            if new != 0 {
                                session.give((row(new), t, 1isize));
                                counts.insert(key, new);
                            } else {
                                counts.remove(&key);
                            }
                        }
                    }
                    checkpointer.pass(bound, &AffinitiesRef::of(&names, &counts));
                    agenda.end_round(exhausted);
                }
            },
        )
        .as_collection()
}
