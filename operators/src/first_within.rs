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
//! The copies of times not decided yet, and one window end per id. A window that has closed
//! drops nothing (a copy's time is compared with its end), so closed windows are swept out in
//! one pass once as many windows were opened since the last sweep as were left by it (at
//! least [`SWEEP_AFTER`]), which keeps the sweeps' cost at a few entries per window opened
//! and the map within about twice its open windows, without a second index of ids by end;
//! all at once when the frontier passes the last window's end (an idle input); and before
//! each checkpoint, which holds open windows only. Each window is kept under the id the
//! caller builds (the result is exact for ids that tell copies apart exactly; the graph
//! passes a 128-bit digest, see `count_first_copies` in the dataflows) and the copy's routing
//! hash, which re-shards the state on a restore. With `horizon = u64::MAX` windows never
//! close: classic de-duplication, whose state grows with the ids.

use crate::FastMap;
use std::collections::BTreeMap;
use std::hash::Hash;

use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::checkpoint::{Checkpointer, Checkpointing, Incremental, Sharded};

/// The fewest windows opened since the last sweep that start a sweep of closed ones.
pub const SWEEP_AFTER: usize = 4096;

/// The operator's checkpointed state: per (routing hash, id), the end of its window (a whole
/// part holds open windows only: closed ones are swept out before it is written). Its parts
/// of changes list the windows opened since the last part: closed windows are not written
/// away, since a closed window drops no copy (a restore sweeps them out).
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "I: Serialize + Hash + Eq",
    deserialize = "I: DeserializeOwned + Hash + Eq"
))]
struct Windows<I> {
    open: FastMap<(u64, I), u64>,
    /// The windows opened since the last part, in order, while they are kept track of.
    #[serde(skip)]
    opened: Vec<((u64, I), u64)>,
    /// Whether `opened` is kept up (checkpoints with parts of changes, and not too many).
    #[serde(skip)]
    tracking: bool,
    /// Changes were dropped since the last part (too many): the next part is whole.
    #[serde(skip)]
    overflowed: bool,
}

impl<I> Default for Windows<I> {
    fn default() -> Self {
        Windows {
            open: FastMap::default(),
            opened: Vec::new(),
            tracking: false,
            overflowed: false,
        }
    }
}

impl<I: Clone + Hash + Eq> Windows<I> {
    /// Opens (or moves) the window of `key` to end at `end`.
    fn open(&mut self, key: (u64, I), end: u64) {
        if self.tracking && !self.overflowed {
            // Changes as large as an eighth of the state are not worth keeping (the log costs
            // memory: ~40 bytes an entry; a catch-up would fill it with the whole state).
            if self.opened.len() >= (self.open.len() / 8).max(SWEEP_AFTER) {
                self.overflowed = true;
                self.opened = Vec::new();
            } else {
                self.opened.push((key.clone(), end));
            }
        }
        self.open.insert(key, end);
    }
}

impl<I> Sharded for Windows<I>
where
    I: Serialize + DeserializeOwned + Hash + Eq,
{
    fn retain_owned(&mut self, owns: &dyn Fn(u64) -> bool) {
        self.open.retain(|(route, _), _| owns(*route));
    }

    fn absorb(&mut self, other: Self) {
        self.open.extend(other.open);
    }
}

impl<I> Incremental for Windows<I>
where
    I: Serialize + DeserializeOwned + Hash + Eq + Clone + 'static,
{
    type Changes = Vec<((u64, I), u64)>;

    fn track_changes(&mut self, on: bool) {
        self.tracking = on;
        self.clear_changes();
    }

    fn wants_whole(&self) -> bool {
        self.overflowed
    }

    fn write_changes(&self, out: &mut Vec<u8>) {
        crate::checkpoint::encode_into(out, &self.opened);
    }

    fn clear_changes(&mut self) {
        self.opened = Vec::new();
        self.overflowed = false;
    }

    fn apply(&mut self, changes: Self::Changes) {
        self.open.extend(changes);
    }

    fn before_whole(&mut self, at: u64) {
        self.open.retain(|_, end| *end > at);
    }

    type Key = (u64, I);

    fn start_slices(&mut self, at: u64, out: &mut Vec<u8>) -> Vec<(u64, I)> {
        self.before_whole(at);
        crate::checkpoint::encode_into(out, &Self::default());
        self.open.keys().cloned().collect()
    }

    fn write_entries(&self, keys: &[(u64, I)], out: &mut Vec<u8>) {
        // The same bytes as `Self::Changes`, borrowed; windows closed since are left out (a
        // restore sweeps closed ones anyway).
        let entries: Vec<(&(u64, I), &u64)> = keys
            .iter()
            .filter_map(|k| self.open.get_key_value(k))
            .collect();
        crate::checkpoint::encode_into(out, &entries);
    }

    /// Every window opened has settled: it is written with its end then (a window moved
    /// later is in the log again).
    fn take_settled(&mut self, max: usize) -> Vec<(u64, I)> {
        let n = max.min(self.opened.len());
        self.opened.drain(..n).map(|(key, _)| key).collect()
    }
}

/// The counted copies of `values` under a de-duplication horizon of `horizon` (in units of
/// the logical time): see the module docs. `id` gives a copy's id (built once per copy,
/// kept for a counted one); `hash` routes a copy to its worker, and must give copies with
/// one id one hash (hash borrowed parts of the value: it runs twice for every copy, to route
/// it and to keep its window). With `checkpoints`, the open windows are written at checkpoint times and
/// restored from the checkpoint given, re-sharded by `hash` (`name` names the parts).
///
/// # Examples
///
/// ```
/// use basketflow_operators::first_within;
/// use differential_dataflow::input::Input;
/// use differential_dataflow::Hashable;
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
///     first_within("Dedup", values, 10, |v: &(u32, char)| v.0, |v| v.0.hashed(), None)
///         .inner
///         .capture()
/// });
/// let mut rows: Vec<_> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
/// rows.sort();
/// assert_eq!(rows, vec![((1, 'a'), 0, 1), ((1, 'c'), 20, 1), ((2, 'y'), 0, 1)]);
/// ```
pub fn first_within<'scope, V, I, F, H>(
    name: &'static str,
    values: VecCollection<'scope, u64, V, isize>,
    horizon: u64,
    id: F,
    hash: H,
    checkpoints: Option<&Checkpointing>,
) -> VecCollection<'scope, u64, V, isize>
where
    V: ExchangeData + Ord,
    I: Hash + Eq + Clone + Serialize + DeserializeOwned + 'static,
    F: Fn(&V) -> I + 'static,
    H: Fn(&V) -> u64 + Clone + 'static,
{
    let route = hash.clone();
    let scope = values.scope();
    let mut checkpointer = Checkpointer::new(checkpoints, name, scope.index(), scope.peers());
    // Undecided copies by time, each time with a capability at it.
    let mut pending: BTreeMap<u64, (Capability<u64>, Vec<V>)> = BTreeMap::new();
    // Per id, the end of its latest window (closed ones until a sweep).
    let mut open: Windows<I> = checkpointer.restore_incremental();
    // A restored chain may hold windows closed at its time: they drop nothing, out with them.
    if let Some(at) = checkpointer.restored_at() {
        open.open.retain(|_, end| *end > at);
    }
    // The sweeps' bookkeeping (see the module docs): windows opened since the last sweep,
    // windows it left, and the latest end of any window.
    let mut opened = 0usize;
    let mut left = open.open.len();
    let mut latest_end = open.open.values().copied().max().unwrap_or(0);
    values
        .inner
        .unary_frontier(
            Exchange::new(move |(v, _t, _r): &(V, u64, isize)| route(v)),
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
                        checkpointer.pass_incremental(t, &mut open);
                        copies.sort();
                        let mut session = output.session(&cap);
                        for v in copies {
                            let key = (hash(&v), id(&v));
                            if open.open.get(&key).is_some_and(|&end| t < end) {
                                continue; // a duplicate within the window
                            }
                            let end = t.saturating_add(horizon);
                            open.open(key, end);
                            opened += 1;
                            latest_end = latest_end.max(end);
                            session.give((v, t, 1));
                        }
                    }
                    if let Some(b) = bound {
                        checkpointer.pass_incremental(b, &mut open);
                    }
                    // Windows that end at or before the frontier can no longer drop a copy.
                    let bound = bound.unwrap_or(u64::MAX);
                    if bound >= latest_end {
                        // Every window has closed (an idle input): free the map at once (a
                        // `clear` would keep its buckets, and pay for them at every round).
                        if !open.open.is_empty() {
                            open.open = FastMap::default();
                        }
                    } else if opened >= left.max(SWEEP_AFTER) {
                        open.open.retain(|_, end| *end > bound);
                    } else {
                        return;
                    }
                    opened = 0;
                    left = open.open.len();
                }
            },
        )
        .as_collection()
}
