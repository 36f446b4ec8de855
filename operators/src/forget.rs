//! [`forget`]: records that leave a collection at a per-record expiry time, or when their key
//! is forgotten, leaving an optional residue behind.
//!
//! # What it computes
//!
//! Each input update `(d, t, r)` is present from `t` until its *leaving time*
//!
//! ```text
//! leave(d, t) = min( expiry(d, t),  max(t, F(key(d))) )
//! ```
//!
//! where `expiry(d, t) >= t` is the record's own horizon (a retention period; `None` = never)
//! and `F(k)` is the least time of a *forget* of key `k` (`∞` if none). At its leaving time the
//! record is retracted and `residue(d)`, if any, inserted instead, with the same multiplicity:
//! a temporal filter and a keyed erasure in one operator. A record of an already forgotten key
//! (`t >= F`) leaves at once: only its residue appears, at `t`.
//!
//! # Why it is deterministic
//!
//! `leave` is a function of the record, its time and the *set* of forget times of its key,
//! never of arrival order: a forget that arrives after a record reschedules the record's
//! leaving to `max(t, F)`, and one that arrives before is applied on arrival; both give the
//! same time. A scheduled leaving at time `x` is emitted only once both input frontiers have
//! passed `x`, when no forget that could move it earlier can still arrive (a forget at
//! `F >= x` gives `max(t, F) >= x`). The output is therefore the same on one worker or many,
//! whatever the batching.
//!
//! # Capabilities and state
//!
//! Scheduled retractions are *held*, not sent ahead: sending an update at a future time would
//! park it in the downstream arrangement's batcher, which re-examines pending updates at every
//! seal (a retention of years would keep every record pending there). The operator keeps one
//! capability at its earliest scheduled leaving, so downstream frontiers advance freely up to it.
//! Its state is every record that may still leave (by expiry or by a forget), per key, one
//! schedule entry per key (its least leaving time), and the least forget time per forgotten
//! key. Records are cloned into the state: use a cheaply
//! cloned `D` (an `Arc`). When both inputs are exhausted (the end of a bounded run), held
//! leavings after the last input time of any worker (each batch's greatest time is broadcast,
//! so every worker draws the same line) are dropped rather than emitted at future times that no
//! input will ever reach.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use differential_dataflow::{AsCollection, ExchangeData, Hashable, VecCollection};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::{Concat, Exchange as _, Map};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Capability;
use timely::dataflow::{Stream, StreamVec};

/// A record that may still leave: its data, time, multiplicity and scheduled leaving time
/// (`u64::MAX` while it has none).
struct Held<D> {
    data: D,
    time: u64,
    diff: isize,
    leave: u64,
}

/// The records of one key, and the time the key is scheduled at: its records' least leaving
/// time (`u64::MAX` when none is scheduled). One schedule entry per key, not per record.
struct Keyed<D> {
    records: Vec<Held<D>>,
    scheduled: u64,
}

impl<D> Default for Keyed<D> {
    fn default() -> Self {
        Keyed {
            records: Vec::new(),
            scheduled: u64::MAX,
        }
    }
}

impl<D> Keyed<D> {
    /// Schedules the key at `leave` if that is earlier than its current time; true if so.
    fn schedule(&mut self, leave: u64) -> bool {
        if leave < self.scheduled {
            self.scheduled = leave;
            true
        } else {
            false
        }
    }
}

/// Removes records from `records` at their leaving time (see the [module docs](self)),
/// replacing each by `residue(record)` if that is `Some`.
///
/// * `key(d)`: the key a forget names (records and forgets are exchanged by its hash);
/// * `expiry(d, t)`: the record's own leaving time, at least `t` (`None`: only a forget);
/// * `forgets`: keys to forget, at the time the forget takes effect.
///
/// # Examples
///
/// ```
/// use basketflow_operators::forget;
/// use differential_dataflow::input::Input;
/// use timely::dataflow::operators::capture::{Capture, Extract};
/// use timely::dataflow::operators::Input as _;
///
/// let (send, recv) = std::sync::mpsc::channel();
/// timely::execute_directly(move |worker| {
///     let (mut records, mut forgets) = worker.dataflow::<u64, _, _>(|scope| {
///         let (records_in, records) = scope.new_collection::<(char, i32), isize>();
///         let (forgets_in, forgets) = scope.new_input::<Vec<char>>();
///         forget(
///             "Forget",
///             records,
///             forgets,
///             |(k, _): &(char, i32)| *k,
///             |_, t| Some(t + 10),        // every record expires 10 after its time
///             |(_, v)| Some(('-', *v)),   // what a forgotten record leaves behind
///         )
///         .inner
///         .capture_into(send);
///         (records_in, forgets_in)
///     });
///     records.insert(('a', 1));
///     records.advance_to(2);
///     records.insert(('b', 2));
///     forgets.advance_to(5);
///     forgets.send('a');                  // "a" is forgotten at time 5
/// });
/// let mut updates: Vec<_> = recv.extract().into_iter().flat_map(|(_, u)| u).collect();
/// updates.sort_by_key(|(d, t, r)| (*t, *d, *r));
/// assert_eq!(
///     updates,
///     vec![
///         (('a', 1), 0, 1),
///         (('b', 2), 2, 1),
///         (('-', 1), 5, 1),
///         (('a', 1), 5, -1),
///         // "b" would expire at 12, after the last input time (5): dropped when the inputs end.
///     ]
/// );
/// ```
pub fn forget<'scope, K, D, KF, XF, RF>(
    name: &str,
    records: VecCollection<'scope, u64, D>,
    forgets: Stream<'scope, u64, Vec<K>>,
    key: KF,
    expiry: XF,
    residue: RF,
) -> VecCollection<'scope, u64, D>
where
    K: ExchangeData + Hashable + Hash + Eq,
    D: ExchangeData,
    KF: Fn(&D) -> K + Clone + 'static,
    XF: Fn(&D, u64) -> Option<u64> + 'static,
    RF: Fn(&D) -> Option<D> + 'static,
{
    let route = key.clone();
    let mut forgotten: HashMap<K, u64> = HashMap::new();
    let mut held: HashMap<K, Keyed<D>> = HashMap::new();
    // Leaving time -> keys scheduled then. An entry is stale when its key has been scheduled
    // earlier since (a forget); it is skipped.
    let mut schedule: BTreeMap<u64, Vec<K>> = BTreeMap::new();
    let mut cap: Option<Capability<u64>> = None;
    // The greatest time of any input (see the exhausted case below).
    let mut max_seen = 0u64;
    // Every worker must know the greatest input time of all workers (the exhausted case
    // below): each batch's greatest time is broadcast as `Err(time)` alongside the forgets
    // (`Ok(key)`, routed by key).
    let greatest = |name: &str,
                    times: StreamVec<'scope, u64, u64>|
     -> StreamVec<'scope, u64, Result<K, u64>> {
        times
            .unary(Pipeline, name, |_cap, _info| {
                move |input, output| {
                    input.for_each(|time, data| {
                        if let Some(max) = data.iter().max() {
                            output.session(&time).give(Err::<K, u64>(*max));
                        }
                    });
                }
            })
            .broadcast()
    };
    let record_times = greatest(
        "ForgetRecordTimes",
        records.inner.clone().map(|(_, t, _)| t),
    );
    let forget_times = forgets
        .clone()
        .unary(Pipeline, "ForgetTimes", |_cap, _info| {
            move |input, output| {
                input.for_each(|time, data| {
                    if !data.is_empty() {
                        output
                            .session(&time)
                            .give(*time.least().expect("an input batch has a time"));
                    }
                });
            }
        });
    let controls = forgets
        .map(Ok::<K, u64>)
        .exchange(|c: &Result<K, u64>| match c {
            Ok(k) => k.hashed().into(),
            Err(_) => 0,
        })
        .concat(record_times)
        .concat(greatest("ForgetForgetTimes", forget_times));
    records
        .inner
        .binary_frontier(
            controls,
            Exchange::new(move |(d, _t, _r): &(D, u64, isize)| route(d).hashed().into()),
            Pipeline,
            name,
            move |_cap, _info| {
                move |(records_in, records_frontier), (forgets_in, forgets_frontier), output| {
                    forgets_in.for_each(|time, keys| {
                        let from = time
                            .retain_least(0)
                            .expect("an input batch has a capability");
                        let f = *from.time();
                        max_seen = max_seen.max(f);
                        for control in keys.drain(..) {
                            let k = match control {
                                Ok(k) => k,
                                Err(seen) => {
                                    max_seen = max_seen.max(seen);
                                    continue;
                                }
                            };
                            let least = forgotten.entry(k.clone()).or_insert(f);
                            *least = (*least).min(f);
                            let Some(keyed) = held.get_mut(&k) else {
                                continue;
                            };
                            let mut least = u64::MAX;
                            for h in keyed.records.iter_mut() {
                                h.leave = h.leave.min(h.time.max(f));
                                least = least.min(h.leave);
                            }
                            if keyed.schedule(least) {
                                schedule.entry(least).or_default().push(k);
                                hold(&mut cap, &from, least);
                            }
                        }
                    });
                    records_in.for_each(|time, data| {
                        let from = time
                            .retain_least(0)
                            .expect("an input batch has a capability");
                        let mut session = output.session(&from);
                        for (d, t, r) in data.drain(..) {
                            max_seen = max_seen.max(t);
                            let k = key(&d);
                            let by_forget = forgotten.get(&k).map_or(u64::MAX, |f| t.max(*f));
                            let leave = expiry(&d, t).unwrap_or(u64::MAX).max(t).min(by_forget);
                            if leave == t {
                                if let Some(res) = residue(&d) {
                                    session.give((res, t, r));
                                }
                                continue;
                            }
                            session.give((d.clone(), t, r));
                            let keyed = held.entry(k.clone()).or_default();
                            keyed.records.push(Held {
                                data: d,
                                time: t,
                                diff: r,
                                leave,
                            });
                            if keyed.schedule(leave) {
                                schedule.entry(leave).or_default().push(k);
                                hold(&mut cap, &from, leave);
                            }
                        }
                    });
                    // Both frontiers are totally ordered: the least element of each bounds them.
                    let frontier = [records_frontier.frontier(), forgets_frontier.frontier()]
                        .iter()
                        .filter_map(|f| f.first().copied())
                        .min();
                    // Once both inputs are exhausted, leavings up to the last input time are
                    // emitted and later ones dropped: no input will ever reach them.
                    let (bound, exhausted) = match frontier {
                        Some(f) => (f, false),
                        None => (max_seen.saturating_add(1), true),
                    };
                    // Leavings strictly before the frontier are final (see the module docs).
                    while let Some(entry) = schedule.first_entry() {
                        let at = *entry.key();
                        if at >= bound {
                            break;
                        }
                        let keys = entry.remove();
                        let c = cap
                            .as_ref()
                            .expect("a capability is held for every scheduled leaving");
                        let mut session = output.session(c);
                        let mut later: Vec<(u64, K)> = Vec::new();
                        for k in keys {
                            let Some(keyed) = held.get_mut(&k) else {
                                continue;
                            };
                            if keyed.scheduled != at {
                                continue; // stale: scheduled earlier since
                            }
                            // `at` is the key's least leaving time: nothing of it leaves before.
                            let mut least = u64::MAX;
                            keyed.records.retain(|h| {
                                if h.leave != at {
                                    least = least.min(h.leave);
                                    return true;
                                }
                                if let Some(res) = residue(&h.data) {
                                    session.give((res, at, h.diff));
                                }
                                session.give((h.data.clone(), at, -h.diff));
                                false
                            });
                            keyed.scheduled = u64::MAX;
                            if keyed.records.is_empty() {
                                held.remove(&k);
                            } else if least < u64::MAX {
                                keyed.scheduled = least;
                                later.push((least, k));
                            }
                        }
                        drop(session);
                        // The keys' next leavings come after `at`, which the held capability
                        // (at or below `at`) covers.
                        for (least, k) in later {
                            schedule.entry(least).or_default().push(k);
                        }
                    }
                    if exhausted {
                        cap = None;
                        schedule.clear();
                        held.clear();
                        return;
                    }
                    match schedule.first_key_value() {
                        Some((&next, _)) => {
                            if let Some(c) = cap.as_mut() {
                                c.downgrade(&next);
                            }
                        }
                        None => cap = None,
                    }
                }
            },
        )
        .as_collection()
}

/// Keeps `cap` at or below `at`, from a capability `from <= at`.
fn hold(cap: &mut Option<Capability<u64>>, from: &Capability<u64>, at: u64) {
    if cap.as_ref().is_none_or(|c| *c.time() > at) {
        *cap = Some(from.delayed(&at));
    }
}
