//! [`first_within`]: de-duplication with a horizon. The first copy of an id counts; copies
//! read within the horizon after it are dropped; a copy read later counts again.
//!
//! # What it computes
//!
//! Input: an insert-only collection of values carrying a scoped id (`id(v)`), at totally
//! ordered logical times (milliseconds of read time). For each id, copies are taken in time
//! order, and copies at the same time in `Ord` order. A copy at time `t` is **counted** when
//! no counted copy of its id has a window open at `t`, and it then opens the window
//! `[t, t + horizon)`; any other copy is a duplicate. Counted copies come out at their time,
//! with multiplicity one. Negative multiplicities are not expected (the graph's parsed events
//! are insert-only) and are dropped.
//!
//! # Why it is deterministic
//!
//! A time is decided only once the input frontier has passed it, when every copy at that time
//! has arrived. Times are decided in order, and ties are broken by `Ord`, so the output
//! depends only on the set of (value, time) pairs, never on arrival order or batching. Values
//! are exchanged by their id, so one worker decides each id.
//!
//! # State
//!
//! The copies of times not decided yet, and one window end per id whose window is still open
//! at the frontier. Windows behind the frontier are dropped: a later copy counts whatever they
//! said. The ids themselves are kept, not hashes, so the result is exact. With
//! `horizon = u64::MAX` windows never close: classic de-duplication, whose state grows with
//! the ids.

use crate::FastMap;
use std::collections::BTreeMap;
use std::hash::Hash;

use differential_dataflow::{AsCollection, ExchangeData, Hashable, VecCollection};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::checkpoint::{Checkpointer, Checkpointing, Sharded};

/// The operator's checkpointed state: per id, the end of its open window (the index of
/// windows by end is rebuilt from it).
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "I: Serialize",
    deserialize = "I: DeserializeOwned + Hash + Eq"
))]
struct Windows<I>(FastMap<I, u64>);

impl<I> Default for Windows<I> {
    fn default() -> Self {
        Windows(FastMap::default())
    }
}

impl<I> Sharded for Windows<I>
where
    I: Serialize + DeserializeOwned + Hash + Eq + Hashable,
{
    fn retain_owned(&mut self, owns: &dyn Fn(u64) -> bool) {
        self.0.retain(|id, _| owns(id.hashed().into()));
    }

    fn absorb(&mut self, other: Self) {
        self.0.extend(other.0);
    }
}

/// The counted copies of `values` under a de-duplication horizon of `horizon` (in units of
/// the logical time): see the module docs. With `checkpoints`, the open windows are written
/// at checkpoint times and restored from the checkpoint given (`name` names the parts).
///
/// # Examples
///
/// ```
/// use basketflow_operators::first_within;
/// use differential_dataflow::input::Input;
/// use timely::dataflow::operators::capture::{Capture, Extract};
///
/// let captured = timely::example(|scope| {
///     let (mut input, values) = scope.new_collection::<(u32, char), isize>();
///     // (id, payload) at read times 0, 5 and 20, horizon 10: the copy at 5 is a duplicate,
///     // the one at 20 counts again; at time 0, two copies of id 2: the least counts.
///     input.insert((1, 'a'));
///     input.insert((2, 'z'));
///     input.insert((2, 'y'));
///     input.advance_to(5);
///     input.insert((1, 'b'));
///     input.advance_to(20);
///     input.insert((1, 'c'));
///     first_within("Dedup", values, 10, |v: &(u32, char)| v.0, None)
///         .inner
///         .capture()
/// });
/// let mut rows: Vec<_> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
/// rows.sort();
/// assert_eq!(rows, vec![((1, 'a'), 0, 1), ((1, 'c'), 20, 1), ((2, 'y'), 0, 1)]);
/// ```
pub fn first_within<'scope, V, I, F>(
    name: &'static str,
    values: VecCollection<'scope, u64, V, isize>,
    horizon: u64,
    id: F,
    checkpoints: Option<&Checkpointing>,
) -> VecCollection<'scope, u64, V, isize>
where
    V: ExchangeData + Ord,
    I: Hash + Eq + Clone + Hashable + Serialize + DeserializeOwned + 'static,
    F: Fn(&V) -> I + Clone + 'static,
{
    let route = id.clone();
    let scope = values.scope();
    let mut checkpointer = Checkpointer::new(checkpoints, name, scope.index(), scope.peers());
    // Undecided copies by time, each time with a capability at it.
    let mut pending: BTreeMap<u64, (Capability<u64>, Vec<V>)> = BTreeMap::new();
    // Per id, the end of its open window; and the ids by window end, to drop closed ones.
    let mut open: Windows<I> = checkpointer.restore();
    let mut closing: BTreeMap<u64, Vec<I>> = BTreeMap::new();
    for (key, end) in &open.0 {
        closing.entry(*end).or_default().push(key.clone());
    }
    values
        .inner
        .unary_frontier(
            Exchange::new(move |(v, _t, _r): &(V, u64, isize)| route(v).hashed().into()),
            name,
            move |_cap, _info| {
                move |(input, frontier), output| {
                    input.for_each(|time, data| {
                        let from = time
                            .retain_least(0)
                            .expect("an input batch has a capability");
                        for (v, t, r) in data.drain(..) {
                            if r <= 0 {
                                continue; // insert-only input (see the module docs)
                            }
                            pending
                                .entry(t)
                                .or_insert_with(|| (from.delayed(&t), Vec::new()))
                                .1
                                .push(v);
                        }
                    });
                    // Times strictly before the frontier are complete: decide them in order.
                    let bound = frontier.frontier().first().copied();
                    while let Some(entry) = pending.first_entry() {
                        let t = *entry.key();
                        if bound.is_some_and(|b| t >= b) {
                            break;
                        }
                        let (cap, mut copies) = entry.remove();
                        checkpointer.pass(t, &open);
                        copies.sort();
                        let mut session = output.session(&cap);
                        for v in copies {
                            let key = id(&v);
                            if open.0.get(&key).is_some_and(|&end| t < end) {
                                continue; // a duplicate within the window
                            }
                            let end = t.saturating_add(horizon);
                            open.0.insert(key.clone(), end);
                            closing.entry(end).or_default().push(key);
                            session.give((v, t, 1));
                        }
                    }
                    if let Some(b) = bound {
                        checkpointer.pass(b, &open);
                    }
                    // Windows that end at or before the frontier can no longer drop a copy.
                    let bound = bound.unwrap_or(u64::MAX);
                    while let Some(entry) = closing.first_entry() {
                        if *entry.key() > bound {
                            break;
                        }
                        let end = *entry.key();
                        for key in entry.remove() {
                            // The id may have opened a later window since.
                            if open.0.get(&key) == Some(&end) {
                                open.0.remove(&key);
                            }
                        }
                    }
                }
            },
        )
        .as_collection()
}
