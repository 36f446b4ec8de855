//! Experience trees: each shopper's events move them along their tree; nodes with an
//! experience emit decisions.
//!
//! # State
//! Per `(retailer_id, shopper_id)`, a [`Shopper`] holds what the conditions read:
//! - the basket as the shopper's events built it, in arrival order: adds minus removes since
//!   the last paid order, lines at zero dropped;
//! - the current session's searches and views (reset when `session_id` changes);
//! - the purchase history: per product, category and brand, the number of paid orders that
//!   contained it; a cancellation read within `graph.settlement_ms` of the payment (or before
//!   it, within settlement) takes the order out, a later one changes nothing, as in the read
//!   models; so the orders' items and the cancellations are kept within settlement only;
//! - the `event_id`s (as [`id_digest`]s) read within `graph.dedup_horizon_ms`, so a copy read
//!   within the horizon of the first never moves the shopper twice, and a copy read later
//!   counts again (rule 1, as in the read models).
//!
//! An agenda forgets ids, orders and cancellations when their horizon passes, so these are
//! bounded by the shopper's events within the horizons, not by their history
//! (`basketflow_tree_horizon_entries`); with the default horizons, the ids of a week and the
//! orders of a month.
//! - the tree and the shopper's node in it.
//!
//! State is kept for every shopper seen (a tree may arrive after their first events) and is
//! bounded per shopper by the distinct products they bought, never by the number of events.
//! A shopper without an event for their retailer's retention period loses all but their tree;
//! an erased shopper loses everything, and their id stays erased ([`crate::privacy`]).
//!
//! # Order and determinism
//! Events and trees are routed by `shopper_id` (a tree's from its key, [`split_tree_key`]).
//! The operator acts only on *complete* times (both input frontiers have passed them), in
//! time order; within a time, tree updates first
//! (a tree published at broker time `t` governs the shopper's events from `t` on), then events
//! in arrival order. All of a shopper's events come from one partition and one reading worker,
//! and timely's channels are FIFO, so the order is the partition's offset order whatever the
//! cluster shape: the same input gives the same decisions on 1 worker or many processes.
//!
//! # Moving along the tree
//! After an event updates the state, the children of the shopper's node are tried in order;
//! the first whose conditions all hold becomes the node (one step per event). If it carries an
//! experience, a [`Decision`] is emitted, with the conditions that held as readable reasons.
//! The journey starts again at the root when a new session starts and after a paid order (once
//! the order's own step is taken), so a shopper meets their tree on every visit.
//! `decision_id` is a digest of retailer, shopper, tree, version, node and event: a replay
//! yields the same ids.
//!
//! # Tree changes
//! A new version of the same `tree_id` keeps the shopper on the node of the same id if it still
//! exists, otherwise puts them back at the root; a different `tree_id` starts at its root; a
//! null tree message removes that retailer's shopper's tree (no more decisions until a new one
//! comes); another retailer's shopper with the same id keeps theirs.

use basketflow_operators::{FastMap, FastSet, StrPair};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use basketflow_ingest::kafka_source::{Millis, SourceMessage};
use basketflow_operators::checkpoint::{
    encode_into, set_or_remove, ChangedKeys, Checkpointer, Checkpointing, Incremental, Sharded,
};
use basketflow_vocab::{
    split_tree_key, Decision, Erasure, ExperienceKind, ExperienceTree, PositionedEvent, Retention,
};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::{Concat, Map};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

mod budget;
mod shopper;
#[cfg(test)]
mod tests;

pub use budget::{within_budgets, Spend, CAMPAIGN_BUDGETS};

pub use shopper::{decision_id, id_digest, prize, Horizons, Shopper};

/// Worker routing for a shopper id (both inputs use it, so a shopper lives on one worker;
/// routing by the shopper id alone keeps that true whatever the retailer).
fn route(shopper_id: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    shopper_id.hash(&mut h);
    h.finish()
}

/// Counters of the tree operator.
#[derive(Debug, Default)]
pub struct TreeStats {
    /// Tree messages that did not parse or check (ignored).
    pub bad_trees: std::sync::atomic::AtomicU64,
    /// Decisions emitted.
    pub decisions: std::sync::atomic::AtomicU64,
    /// Of those, decisions for shoppers in their campaign's holdout group (recorded in
    /// ClickHouse, never published).
    pub held_out: std::sync::atomic::AtomicU64,
    /// Of those, decisions a frequency cap stopped (recorded in ClickHouse, never published).
    pub capped: std::sync::atomic::AtomicU64,
    /// Decisions refused because their campaign's budget at the retailer was spent
    /// ([`within_budgets`]; recorded in ClickHouse, never published).
    pub over_budget: std::sync::atomic::AtomicU64,
    /// Of the decisions, games' wins ([`prize`]; counted when decided, before the
    /// budget check, which may still refuse the win with its game).
    pub games_won: std::sync::atomic::AtomicU64,
    /// Entries the shoppers' states keep within the horizons (event ids, paid orders and
    /// cancellations: [`Shopper::remembered`]), over this process's workers: a gauge.
    pub horizon_entries: std::sync::atomic::AtomicU64,
}

impl TreeStats {
    /// The gauge goes from `before` to `after` for one shopper.
    fn adjust(&self, before: usize, after: usize) {
        // Two's complement: adding the wrapped difference subtracts when it is negative.
        self.horizon_entries.fetch_add(
            after.wrapping_sub(before) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// What arrived at one time: tree messages, erasures and events, with a capability.
struct AtTime {
    cap: Capability<Millis>,
    trees: Vec<SourceMessage>,
    erasures: Vec<Erasure>,
    events: Vec<PositionedEvent>,
}

/// Inputs waiting for their time to complete.
type Stash = BTreeMap<Millis, AtTime>;

/// The stash entry for the time of an input batch, holding a capability for that time.
fn stash_at<'a>(
    stash: &'a mut Stash,
    cap: &timely::dataflow::operators::InputCapability<Millis>,
) -> &'a mut AtTime {
    let t = *cap.least().expect("an input batch has a time");
    stash.entry(t).or_insert_with(|| AtTime {
        cap: cap
            .retain_least(0)
            .expect("an input batch has a capability"),
        trees: Vec::new(),
        erasures: Vec::new(),
        events: Vec::new(),
    })
}

/// The tree operator's second input: tree messages and erasures, both routed by shopper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// A message of `experience-trees`.
    Tree(SourceMessage),
    /// An erasure request.
    Erase(Erasure),
}

impl Control {
    /// The shopper id to route by: a tree's from its key ([`split_tree_key`]; a key that does
    /// not split is routed whole, and refused where it lands).
    fn shopper_id(&self) -> &[u8] {
        match self {
            Control::Tree(m) => {
                let key = m.key.as_deref().unwrap_or_default();
                split_tree_key(key).map_or(key, |(_, shopper_id)| shopper_id.as_bytes())
            }
            Control::Erase(e) => e.request.shopper_id.as_bytes(),
        }
    }
}

/// Per-shopper bookkeeping of the tree operator's retention: when the shopper's last event
/// was, and whether a check is scheduled.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Seen {
    last: Millis,
    scheduled: bool,
}

/// A shopper's key: `(retailer_id, shopper_id)`.
type Key = (String, String);

/// The tree operator's checkpointed state (the retention checks are rebuilt from `seen`).
#[derive(Default, Serialize, Deserialize)]
struct Trees {
    shoppers: FastMap<Key, Shopper>,
    erased: FastSet<Key>,
    seen: FastMap<Key, Seen>,
    /// The keys changed since the last part (not written: parts of changes list them).
    #[serde(skip)]
    changes: Changed,
}

/// The shoppers' keys whose entries changed since the tree operator's last part.
type Changed = ChangedKeys<Key>;

/// One key's entries in a part of changes: its shopper, whether it is erased, its retention
/// bookkeeping (absent entries are removed).
type KeyEntries = (Key, Option<Shopper>, bool, Option<Seen>);

impl Sharded for Trees {
    fn retain_owned(&mut self, owns: &dyn Fn(u64) -> bool) {
        let mine = |key: &Key| owns(route(key.1.as_bytes()));
        self.shoppers.retain(|key, _| mine(key));
        self.erased.retain(|key| mine(key));
        self.seen.retain(|key, _| mine(key));
    }

    fn absorb(&mut self, other: Self) {
        self.shoppers.extend(other.shoppers);
        self.erased.extend(other.erased);
        self.seen.extend(other.seen);
    }
}

impl Incremental for Trees {
    type Changes = Vec<KeyEntries>;

    fn track_changes(&mut self, on: bool) {
        self.changes.track(on);
    }

    fn wants_whole(&self) -> bool {
        self.changes.wants_whole()
    }

    fn write_changes(&self, out: &mut Vec<u8>) {
        self.write_of(self.changes.keys(), out);
    }

    fn clear_changes(&mut self) {
        self.changes.clear();
    }

    fn apply(&mut self, changes: Self::Changes) {
        for (key, shopper, erased, seen) in changes {
            set_or_remove(&mut self.shoppers, key.clone(), shopper);
            if erased {
                self.erased.insert(key.clone());
            } else {
                self.erased.remove(&key);
            }
            set_or_remove(&mut self.seen, key, seen);
        }
    }

    type Key = Key;

    fn start_slices(&mut self, _at: u64, out: &mut Vec<u8>) -> Vec<Key> {
        encode_into(out, &Trees::default());
        let mut keys: Vec<Key> = self.shoppers.keys().cloned().collect();
        let elsewhere = |k: &&Key| !self.shoppers.contains_key(*k);
        keys.extend(self.seen.keys().filter(elsewhere).cloned());
        keys.extend(
            self.erased
                .iter()
                .filter(|k| elsewhere(k) && !self.seen.contains_key(*k))
                .cloned(),
        );
        keys
    }

    fn write_entries(&self, keys: &[Key], out: &mut Vec<u8>) {
        self.write_of(keys, out);
    }

    fn settle_changes(&mut self) {
        self.changes.settle();
    }

    fn take_settled(&mut self, max: usize) -> Vec<Key> {
        self.changes.take_settled(max)
    }
}

impl Trees {
    /// Writes the entries of `keys` as a part of changes lists them.
    fn write_of<'a>(&'a self, keys: impl IntoIterator<Item = &'a Key>, out: &mut Vec<u8>) {
        // The same bytes as `KeyEntries`, borrowed.
        let entries: Vec<(&Key, Option<&Shopper>, bool, Option<&Seen>)> = keys
            .into_iter()
            .map(|key| {
                (
                    key,
                    self.shoppers.get(key),
                    self.erased.contains(key),
                    self.seen.get(key),
                )
            })
            .collect();
        encode_into(out, &entries);
    }
}

/// The tree operator: shoppers' events, tree messages and erasures in, decisions out (at the
/// time of the event that caused them).
///
/// Within a complete time: erasures first (the shopper's state is dropped and the id stays
/// erased: later trees and events of it are ignored, see [`crate::privacy`]), then trees,
/// then retention (a shopper without an event for their retailer's period loses their state
/// but keeps their tree), then events.
///
/// With `checkpoints`, the state is written at checkpoint times and restored from the
/// checkpoint given. `horizons` are the graph's ([`Shopper::apply`]).
#[allow(clippy::too_many_arguments)]
pub fn decide<'scope>(
    events: Stream<'scope, Millis, Vec<PositionedEvent>>,
    trees: Stream<'scope, Millis, Vec<SourceMessage>>,
    erasures: Stream<'scope, Millis, Vec<Erasure>>,
    retention: Retention,
    horizons: Horizons,
    stats: Arc<TreeStats>,
    checkpoints: Option<&Checkpointing>,
) -> Stream<'scope, Millis, Vec<Decision>> {
    let scope = events.scope();
    let mut checkpointer =
        Checkpointer::new(checkpoints, "ExperienceTrees", scope.index(), scope.peers());
    let controls = trees
        .map(Control::Tree)
        .concat(erasures.map(Control::Erase));
    let mut stash: Stash = BTreeMap::new();
    let mut state: Trees = checkpointer.restore_incremental();
    let mut checks: BTreeMap<Millis, Vec<(String, String)>> = BTreeMap::new();
    for (key, s) in &state.seen {
        if s.scheduled {
            let due = s.last.saturating_add(retention.period_ms(&key.0));
            checks.entry(due).or_default().push(key.clone());
        }
    }
    // When the horizons next pass something each shopper's state remembers (an entry at
    // every shopper's `next_expiry`: see `forget`).
    let mut horizon_checks: BTreeMap<Millis, Vec<Key>> = BTreeMap::new();
    for (key, shopper) in &state.shoppers {
        stats.adjust(0, shopper.remembered());
        if let Some(due) = shopper.next_expiry(horizons) {
            horizon_checks.entry(due).or_default().push(key.clone());
        }
    }
    events.binary_frontier(
        controls,
        Exchange::new(|e: &PositionedEvent| route(e.event.0.shopper_id.as_bytes())),
        Exchange::new(|c: &Control| route(c.shopper_id())),
        "ExperienceTrees",
        move |_cap, _info| {
            move |(events_in, events_frontier), (controls_in, controls_frontier), output| {
                events_in.for_each(|cap, data| {
                    stash_at(&mut stash, &cap).events.append(data);
                });
                controls_in.for_each(|cap, data| {
                    let at = stash_at(&mut stash, &cap);
                    for c in data.drain(..) {
                        match c {
                            Control::Tree(m) => at.trees.push(m),
                            Control::Erase(e) => at.erasures.push(e),
                        }
                    }
                });
                while let Some((&t, _)) = stash.first_key_value() {
                    if events_frontier.less_equal(&t) || controls_frontier.less_equal(&t) {
                        break;
                    }
                    checkpointer.pass_incremental(t, &mut state);
                    let Trees {
                        shoppers,
                        erased,
                        seen,
                        changes,
                    } = &mut state;
                    let at = stash.remove(&t).expect("first key exists");
                    for e in at.erasures {
                        let key = e.shopper();
                        if let Some(gone) = shoppers.remove(&key) {
                            stats.adjust(gone.remembered(), 0);
                        }
                        seen.remove(&key);
                        erased.insert(key);
                        // No chain written from now on reaches back to the erased data.
                        changes.whole();
                    }
                    for m in at.trees {
                        apply_tree(shoppers, erased, changes, &m, &stats);
                    }
                    expire(&mut checks, seen, shoppers, changes, &retention, t, &stats);
                    forget(&mut horizon_checks, shoppers, changes, horizons, t, &stats);
                    let mut session = output.session(&at.cap);
                    for pe in at.events {
                        let e = &pe.event.0;
                        // Borrowed: a known shopper's key is not cloned (it was, three
                        // times per event: 16% of this operator's samples).
                        let key = StrPair(&e.retailer_id, &e.shopper_id);
                        if erased.contains(&key) {
                            continue;
                        }
                        changes.touch_by(&key, shoppers.len(), |k| k.owned());
                        let s = key.or_default_in(seen);
                        s.last = t;
                        if !s.scheduled {
                            s.scheduled = true;
                            checks
                                .entry(t.saturating_add(retention.period_ms(key.0)))
                                .or_default()
                                .push(key.owned());
                        }
                        let shopper = key.or_default_in(shoppers);
                        let (remembered, next) =
                            (shopper.remembered(), shopper.next_expiry(horizons));
                        let applied = shopper.apply(e, t, horizons);
                        stats.adjust(remembered, shopper.remembered());
                        match shopper.next_expiry(horizons) {
                            // The key is built again only then (rarely), not cloned per event.
                            Some(due) if Some(due) != next => horizon_checks
                                .entry(due)
                                .or_default()
                                .push((e.retailer_id.clone(), e.shopper_id.clone())),
                            _ => {}
                        }
                        if applied {
                            for d in shopper.step_with_prize(e, (pe.partition, pe.offset), t) {
                                stats
                                    .decisions
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                if d.held_out {
                                    stats
                                        .held_out
                                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                                if d.capped {
                                    stats
                                        .capped
                                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                                if d.experience.kind == ExperienceKind::GameWon {
                                    stats
                                        .games_won
                                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                                session.give(d);
                            }
                        }
                    }
                }
                let bound = [events_frontier, controls_frontier]
                    .iter()
                    .filter_map(|f| f.frontier().first().copied())
                    .min();
                if let Some(b) = bound {
                    checkpointer.pass_incremental(b, &mut state);
                }
            }
        },
    )
}

/// Retention of the tree state at time `t`: each shopper whose check is due and who has had no
/// event for their retailer's period loses all but their tree (and, without a tree, their
/// entry); a shopper seen since is checked again a period after their last event.
fn expire(
    checks: &mut BTreeMap<Millis, Vec<(String, String)>>,
    seen: &mut FastMap<(String, String), Seen>,
    shoppers: &mut FastMap<(String, String), Shopper>,
    changes: &mut Changed,
    retention: &Retention,
    t: Millis,
    stats: &TreeStats,
) {
    while let Some(entry) = checks.first_entry() {
        if *entry.key() > t {
            break;
        }
        for key in entry.remove() {
            let Some(s) = seen.get_mut(&key) else {
                continue;
            };
            let due = s.last.saturating_add(retention.period_ms(&key.0));
            if due > t {
                checks.entry(due).or_default().push(key);
                continue;
            }
            seen.remove(&key);
            changes.touch(&key, shoppers.len());
            if let Some(shopper) = shoppers.get_mut(&key) {
                stats.adjust(shopper.remembered(), 0);
                shopper.forget_all_but_the_tree();
                if !shopper.has_tree() {
                    shoppers.remove(&key);
                }
            }
        }
    }
}

/// The horizons at time `t`: each shopper whose state remembers something they have passed
/// forgets it ([`Shopper::forget`]), and is checked again at their next expiry.
///
/// Every shopper that remembers something has an entry at their current
/// [`Shopper::next_expiry`]: one is added whenever that changes (an event, or here). Entries
/// it has moved away from (and those of shoppers whose state retention or erasure dropped)
/// no longer match it and are skipped. Forgetting changes no verdict, only memory.
fn forget(
    horizon_checks: &mut BTreeMap<Millis, Vec<Key>>,
    shoppers: &mut FastMap<Key, Shopper>,
    changes: &mut Changed,
    horizons: Horizons,
    t: Millis,
    stats: &TreeStats,
) {
    let live = shoppers.len();
    while let Some(entry) = horizon_checks.first_entry() {
        let due = *entry.key();
        if due > t {
            break;
        }
        for key in entry.remove() {
            let Some(shopper) = shoppers.get_mut(&key) else {
                continue;
            };
            if shopper.next_expiry(horizons) != Some(due) {
                continue;
            }
            changes.touch(&key, live);
            let before = shopper.remembered();
            shopper.forget(t, horizons);
            stats.adjust(before, shopper.remembered());
            if let Some(next) = shopper.next_expiry(horizons) {
                horizon_checks.entry(next).or_default().push(key);
            }
        }
    }
}

/// Applies one message of `experience-trees` (key [`basketflow_vocab::tree_key`]): a tree for
/// the key's retailer and shopper, or a null value that removes it. A key that does not split,
/// a payload that is not a valid tree, or a tree for another retailer or shopper than its key
/// is counted in [`TreeStats::bad_trees`], logged and skipped.
fn apply_tree(
    shoppers: &mut FastMap<(String, String), Shopper>,
    erased: &FastSet<(String, String)>,
    changes: &mut Changed,
    m: &SourceMessage,
    stats: &TreeStats,
) {
    let refuse = |why: String| {
        stats
            .bad_trees
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        log::warn!(partition = m.partition, offset = m.offset; "experience trees: {why}");
    };
    let key = m.key.as_deref().unwrap_or_default();
    let Some((retailer_id, shopper_id)) = split_tree_key(key) else {
        refuse(format!(
            "key {:?} is not retailer_id, U+001F, shopper_id; skipped",
            String::from_utf8_lossy(key)
        ));
        return;
    };
    let key = (retailer_id.to_owned(), shopper_id.to_owned());
    if m.payload.is_empty() {
        // A null value: this retailer's shopper no longer has a tree.
        if let Some(state) = shoppers.get_mut(&key) {
            state.set_tree(None);
            changes.touch(&key, shoppers.len());
        }
        return;
    }
    let tree: ExperienceTree = match serde_json::from_slice(&m.payload) {
        Ok(tree) => tree,
        Err(e) => return refuse(format!("not a tree, skipped: {e}")),
    };
    if let Err(e) = tree.check().and_then(|()| {
        (tree.retailer_id == key.0 && tree.shopper_id == key.1)
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "key ({:?}, {:?}) is not the tree's retailer and shopper ({:?}, {:?})",
                    key.0, key.1, tree.retailer_id, tree.shopper_id
                )
            })
    }) {
        return refuse(format!("invalid tree, skipped: {e}"));
    }
    if erased.contains(&key) {
        return;
    }
    changes.touch(&key, shoppers.len());
    shoppers
        .entry(key)
        .or_default()
        .set_tree(Some(Arc::new(tree)));
}
