//! [`Agenda`]: the bookkeeping of a timely operator that processes completed times in time
//! order, with work of its own due at later times.
//!
//! Such an operator (the graph's folded orders and baskets are two) buffers its inputs by
//! time, each time with a capability at it, and keeps keys *due* at future times (a
//! settlement, a retention period ending), for which it holds one capability at the earliest
//! due time rather than one per entry. Once the input frontiers pass a time, the time's
//! inputs and due keys are taken together, in time order, so what the operator does at a
//! time depends only on what happened at it and before: never on batching or on the number
//! of workers.

use std::collections::BTreeMap;

use timely::dataflow::operators::Capability;
use timely::progress::frontier::MutableAntichain;

/// What one time brings: a capability at it, its inputs and its due keys.
pub struct Due<I, K> {
    /// A capability at the time.
    pub cap: Capability<u64>,
    /// The inputs read at the time.
    pub inputs: Vec<I>,
    /// The keys scheduled at the time (possibly stale: the caller checks).
    pub keys: Vec<K>,
}

/// Inputs by time and keys due by time, with the capabilities they need (see the
/// [module docs](self)).
pub struct Agenda<I, K> {
    pending: BTreeMap<u64, (Capability<u64>, Vec<I>)>,
    due: BTreeMap<u64, Vec<K>>,
    held: Option<Capability<u64>>,
}

impl<I, K> Default for Agenda<I, K> {
    fn default() -> Self {
        Agenda {
            pending: BTreeMap::new(),
            due: BTreeMap::new(),
            held: None,
        }
    }
}

impl<I, K> Agenda<I, K> {
    /// Buffers `input`, read at `time`, from a capability at or before it.
    pub fn push(&mut self, from: &Capability<u64>, time: u64, input: I) {
        self.pending
            .entry(time)
            .or_insert_with(|| (from.delayed(&time), Vec::new()))
            .1
            .push(input);
    }

    /// The least time both (totally ordered) frontiers have not passed; when every input is
    /// exhausted, the time after the last buffered input, so that it is processed too.
    pub fn bound(&self, frontiers: &[&MutableAntichain<u64>]) -> (u64, bool) {
        let least = frontiers
            .iter()
            .filter_map(|f| f.frontier().first().copied())
            .min();
        match least {
            Some(bound) => (bound, false),
            None => {
                let last = self.pending.last_key_value().map_or(0, |(t, _)| *t);
                (last.saturating_add(1), true)
            }
        }
    }

    /// Takes the earliest time before `bound` with inputs or due keys, if any.
    pub fn next_before(&mut self, bound: u64) -> Option<(u64, Due<I, K>)> {
        let next_input = self.pending.first_key_value().map(|(t, _)| *t);
        let next_due = self.due.first_key_value().map(|(t, _)| *t);
        let time = next_input.into_iter().chain(next_due).min()?;
        if time >= bound {
            return None;
        }
        let (cap, inputs) = match self.pending.first_entry() {
            Some(entry) if *entry.key() == time => entry.remove(),
            _ => (
                self.held
                    .as_ref()
                    .expect("a capability is held for every due key")
                    .delayed(&time),
                Vec::new(),
            ),
        };
        let keys = if next_due == Some(time) {
            self.due.remove(&time).unwrap_or_default()
        } else {
            Vec::new()
        };
        Some((time, Due { cap, inputs, keys }))
    }

    /// Schedules `key` at `at`, from a capability at or before it (`u64::MAX` never comes:
    /// ignored).
    pub fn schedule(&mut self, cap: &Capability<u64>, at: u64, key: K) {
        if at == u64::MAX {
            return;
        }
        self.due.entry(at).or_default().push(key);
        if self.held.as_ref().is_none_or(|c| *c.time() > at) {
            self.held = Some(cap.delayed(&at));
        }
        debug_assert!(
            self.held.as_ref().map(|c| *c.time()) <= self.due.keys().next().copied(),
            "the held capability is at or before every due time"
        );
    }

    /// Ends a round: the held capability moves to the earliest due time, or goes. When the
    /// inputs are `exhausted`, what is still due is dropped: no input will reach it.
    pub fn end_round(&mut self, exhausted: bool) {
        if exhausted {
            self.due.clear();
        }
        match self.due.first_key_value() {
            Some((&next, _)) => {
                if let Some(c) = self.held.as_mut() {
                    c.downgrade(&next);
                }
            }
            None => self.held = None,
        }
    }
}
