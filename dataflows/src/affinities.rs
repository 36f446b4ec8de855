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
use basketflow_operators::checkpoint::{
    encode_into, ChangedKeys, Checkpointer, Checkpointing, Incremental, Sharded,
};
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

/// The operator's checkpointed state: the interned names and the counts on their ids, and
/// what changed since its last part (names interned since, pairs whose counts changed).
#[derive(Default)]
struct Affinities {
    names: Interner,
    counts: Counts,
    changed: ChangedKeys<(u32, u32, u32)>,
    /// Names interned before the last part (a part of changes lists the later ones).
    names_written: usize,
}

/// [`Affinities`] as written and read: the names in id order, and the counts.
#[derive(Serialize)]
struct AffinitiesRef<'a> {
    names: &'a [String],
    counts: &'a Counts,
}

/// [`AffinitiesRef`] read back.
#[derive(Deserialize)]
struct AffinitiesOwned {
    names: Vec<String>,
    counts: Counts,
}

impl Serialize for Affinities {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        AffinitiesRef {
            names: &self.names.strings,
            counts: &self.counts,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Affinities {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let owned = AffinitiesOwned::deserialize(d)?;
        Ok(Affinities {
            names: Interner::from_names(owned.names),
            counts: owned.counts,
            ..Affinities::default()
        })
    }
}

impl Sharded for Affinities {
    fn retain_owned(&mut self, owns: &dyn Fn(u64) -> bool) {
        let names = &self.names.strings;
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
        for ((r, a, b), n) in other.counts {
            let mut id = |i: u32| self.names.id(other.names.name(i).to_owned());
            let key = (id(r), id(a), id(b));
            *self.counts.entry(key).or_default() += n;
        }
    }
}

impl Incremental for Affinities {
    /// The names interned since the last part (their ids follow the earlier ones), and the
    /// pairs whose counts changed (0: the pair left).
    type Changes = (Vec<String>, Vec<((u32, u32, u32), i64)>);

    fn track_changes(&mut self, on: bool) {
        self.changed.track(on);
        self.names_written = self.names.strings.len();
    }

    fn wants_whole(&self) -> bool {
        self.changed.wants_whole()
    }

    fn write_changes(&self, out: &mut Vec<u8>) {
        self.write_of(
            &self.names.strings[self.names_written..],
            self.changed.keys(),
            out,
        );
    }

    fn clear_changes(&mut self) {
        self.changed.clear();
        self.names_written = self.names.strings.len();
    }

    fn apply(&mut self, (names, counts): Self::Changes) {
        for name in names {
            self.names.id(name);
        }
        for (key, n) in counts {
            if n == 0 {
                self.counts.remove(&key);
            } else {
                self.counts.insert(key, n);
            }
        }
    }

    type Key = (u32, u32, u32);

    /// The names (all of them so far: the next part of changes lists the later ones), no
    /// counts.
    fn start_slices(&mut self, _at: u64, out: &mut Vec<u8>) -> Vec<(u32, u32, u32)> {
        encode_into(
            out,
            &AffinitiesRef {
                names: &self.names.strings,
                counts: &Counts::default(),
            },
        );
        self.counts.keys().copied().collect()
    }

    fn write_entries(&self, keys: &[(u32, u32, u32)], out: &mut Vec<u8>) {
        self.write_of(&[], keys, out);
    }

    fn settle_changes(&mut self) {
        self.changed.settle();
    }

    fn take_settled(&mut self, max: usize) -> Vec<(u32, u32, u32)> {
        self.changed.take_settled(max)
    }
}

impl Affinities {
    /// Writes `names` and the counts of `keys` as a part of changes lists them.
    fn write_of<'a>(
        &'a self,
        names: &[String],
        keys: impl IntoIterator<Item = &'a (u32, u32, u32)>,
        out: &mut Vec<u8>,
    ) {
        // The same bytes as `Changes`, borrowed.
        let counts: Vec<(&(u32, u32, u32), i64)> = keys
            .into_iter()
            .map(|k| (k, self.counts.get(k).copied().unwrap_or(0)))
            .collect();
        encode_into(out, &(names, counts));
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
    let mut state: Affinities = checkpointer.restore_incremental();
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
                        checkpointer.pass_incremental(t, &mut state);
                        let Affinities {
                            names,
                            counts,
                            changed,
                            ..
                        } = &mut state;
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
                            changed.touch(&key, counts.len());
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
                    checkpointer.pass_incremental(bound, &mut state);
                    agenda.end_round(exhausted);
                }
            },
        )
        .as_collection()
}
