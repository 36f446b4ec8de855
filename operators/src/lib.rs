//! Reusable differential-dataflow operators that know nothing about shoppers.
//!
//! [`first_per_id`] is a composition of differential's own `reduce`, whose state is an
//! arrangement that differential compacts as the frontier advances. The others are timely
//! operators that process completed times in order and keep their state in plain maps,
//! which [`checkpoint`] writes and restores: the memory an operator holds is bounded by the
//! keys that are live, never by the number of updates ever seen.
//!
//! * [`first_per_id`]: de-duplication of values by a scoped id they contain (an id unique
//!   within its tenant), arranged by the pair's hash so that the (unbounded) set of ids costs
//!   integers, not strings, in the arrangement.
//! * [`first_within`]: de-duplication with a horizon in logical time (the first copy of an id
//!   counts, copies within the horizon after it do not, a later copy counts again), as a
//!   stream: no arrangement holds the values.
//! * [`fold::fold_by_key`]: per key, an accumulator of its updates (sums, multisets), one
//!   output row per key, on state that is a plain map and is checkpointed.
//! * [`checkpoint`]: when operators write their state, and how they start again from it.
//! * [`agenda`]: not an operator but the bookkeeping of one: inputs by time with their
//!   capabilities, and keys due at later times under one held capability, for timely
//!   operators that process completed times in order and keep their own folded state.
//!
//! All of them produce collections in which each key has at most one live row, and a change
//! of that row appears as the retraction of the old row and the insertion of the new one at the
//! same time, which is exactly what an upsert-style sink needs.
//!
//! All inputs use `isize` multiplicities.

#![forbid(missing_docs)]

pub mod agenda;
pub mod checkpoint;
mod first_within;
pub mod fold;
pub use first_within::{first_within, SWEEP_AFTER as FIRST_WITHIN_SWEEP_AFTER};

/// The hash map of operator state keyed by input data (shopper, order and event ids): foldhash,
/// seeded at random per map. SipHash, std's default, was 2-3% of a catch-up's CPU on these
/// short string keys; foldhash is hashbrown's default hasher and, randomly seeded, keeps the
/// minimal resistance to crafted colliding keys that a map fed by trackers needs. Iteration
/// order is arbitrary, as with std's `RandomState`: nothing may depend on it.
///
/// hashbrown's map (the one std wraps): the same table and the same serialized form, plus
/// lookups by any [`Equivalent`] of the key, such as a pair of borrowed strings for a
/// `(String, String)` key ([`StrPair`]).
pub type FastMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// The hash set counterpart of [`FastMap`].
pub type FastSet<K> = hashbrown::HashSet<K, foldhash::fast::RandomState>;

pub use hashbrown::Equivalent;

/// A `(String, String)` key borrowed: looks up a [`FastMap`] or [`FastSet`] keyed by the
/// owned pair without building it (it hashes as the pair does: each string in turn).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StrPair<'a>(pub &'a str, pub &'a str);

impl StrPair<'_> {
    /// The owned key.
    pub fn owned(self) -> (String, String) {
        (self.0.to_string(), self.1.to_string())
    }

    /// The value of this key in `map`, a default one inserted when absent (the key made
    /// owned only then).
    pub fn or_default_in<V: Default>(self, map: &mut FastMap<(String, String), V>) -> &mut V {
        map.raw_entry_mut()
            .from_key(&self)
            .or_insert_with(|| (self.owned(), V::default()))
            .1
    }
}

impl Equivalent<(String, String)> for StrPair<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

use differential_dataflow::lattice::Lattice;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::{ExchangeData, Hashable, VecCollection};
use timely::progress::Timestamp;

/// The arrangements these operators return: `(key, value)` pairs with `isize` multiplicities.
pub type ValArrangement<'scope, T, K, V> = Arranged<'scope, TraceAgent<ValSpine<K, V, T, isize>>>;

/// For each distinct scoped id `id(value)` = `(scope, id)`, the least value (by `Ord`) with
/// positive multiplicity, with multiplicity one: de-duplication by an id that is part of the
/// value and unique only within its scope.
///
/// The scope is the tenant that guarantees the id's uniqueness: for shopper events it is the
/// retailer (`(retailer_id, event_id)`), since two retailers may reuse each other's ids. Values
/// with the same id in different scopes are different values, both kept.
///
/// The result is arranged by a 64-bit hash of `(scope, id)` ([`Hashable::hashed`], the same in
/// every worker and process of one build) rather than by the pair itself, so that the
/// arrangement's keys are integers, cheap to sort, merge and exchange whatever the ids are.
/// Pairs whose hashes collide share a key but are still told apart (by `Eq` on scope and id):
/// the result is exact. The values are stored once per distinct live value; make them cheap to
/// clone (e.g. behind an `Arc`) when they are large, since arrangements clone values as they
/// merge batches.
///
/// # Examples
///
/// ```
/// use basketflow_operators::first_per_id;
/// use differential_dataflow::input::Input;
/// use timely::dataflow::operators::capture::{Capture, Extract};
///
/// let captured = timely::example(|scope| {
///     // (scope, id, payload): two copies of id 1 in scope 'a' (the least wins), one of id 2,
///     // and id 1 again in scope 'b' (another tenant's id 1: kept).
///     let copies = vec![('a', 1u32, 9i32), ('a', 1, 4), ('a', 2, 7), ('b', 1, 3)];
///     let (_input, values) = scope.new_collection_from(copies);
///     first_per_id("Dedup", values, |v: &(char, u32, i32)| (&v.0, &v.1))
///         .as_collection(|_hash, v| *v)
///         .inner
///         .capture()
/// });
/// let mut rows: Vec<_> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
/// rows.sort();
/// assert_eq!(
///     rows,
///     vec![(('a', 1, 4), 0, 1), (('a', 2, 7), 0, 1), (('b', 1, 3), 0, 1)]
/// );
/// ```
pub fn first_per_id<'scope, T, V, S, I, F>(
    name: &str,
    values: VecCollection<'scope, T, V, isize>,
    id: F,
) -> ValArrangement<'scope, T, u64, V>
where
    T: Timestamp + Lattice + Ord,
    V: ExchangeData,
    S: std::hash::Hash + Eq + ?Sized,
    I: std::hash::Hash + Eq + ?Sized,
    F: Fn(&V) -> (&S, &I) + Clone + 'static,
{
    let id_of = id.clone();
    values
        .map(move |value| (id_of(&value).hashed(), value))
        .arrange_by_key_named(&format!("Arrange: {name}"))
        .reduce_abelian::<_, ValBuilder<u64, V, T, isize>, ValSpine<u64, V, T, isize>, _, _>(
            name,
            move |_hash, input, output| {
                // Usually one scoped id per hash. Values are sorted: the first positive value
                // of a scoped id is its least.
                let mut done: Vec<(&S, &I)> = Vec::new();
                for (value, diff) in input {
                    let value_id = id(value);
                    if *diff > 0 && !done.contains(&value_id) {
                        done.push(value_id);
                        output.push(((*value).clone(), 1));
                    }
                }
            },
            |buffer, key, updates| {
                buffer.clear();
                buffer.extend(
                    updates
                        .drain(..)
                        .map(|(value, time, diff)| ((*key, value), time, diff)),
                );
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn a_borrowed_pair_hashes_and_finds_as_the_owned_pair() {
        let mut map: FastMap<(String, String), u32> = FastMap::default();
        map.insert(("r1".into(), "s1".into()), 1);
        map.insert(("r1s".into(), "1".into()), 2);
        map.insert(("r2".into(), "s1".into()), 3);
        for (pair, want) in [
            (StrPair("r1", "s1"), Some(1)),
            (StrPair("r1s", "1"), Some(2)),
            (StrPair("r2", "s1"), Some(3)),
            (StrPair("r1", "s2"), None),
            (StrPair("", "r1s1"), None),
        ] {
            assert_eq!(map.get(&pair).copied(), want, "{pair:?}");
            let owned = pair.owned();
            assert_eq!(
                map.hasher().hash_one(pair),
                map.hasher().hash_one(&owned),
                "{pair:?}"
            );
        }
        *StrPair("r1", "s1").or_default_in(&mut map) += 10;
        *StrPair("r3", "s3").or_default_in(&mut map) += 5;
        assert_eq!(map[&("r1".to_string(), "s1".to_string())], 11);
        assert_eq!(map[&("r3".to_string(), "s3".to_string())], 5);
        assert_eq!(map.len(), 4);
        let set: FastSet<(String, String)> = map.keys().cloned().collect();
        assert!(set.contains(&StrPair("r2", "s1")));
        assert!(!set.contains(&StrPair("r2", "s")));
    }
}
