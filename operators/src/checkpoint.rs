//! Checkpoints of operators' folded state: when an operator takes one, what it hands over,
//! and how it starts again from one (re-sharded when the cluster's shape changed).
//!
//! # A consistent cut without a barrier
//!
//! Checkpoint times are the multiples of [`Policy::interval_ms`] in logical time. An operator
//! that processes completed times in order (with [`crate::agenda`] or its own loop) asks its
//! [`Checkpointer`] before each time `t` it processes, and once more with its frontier after
//! the round, whether a checkpoint time `C < t` has been passed ([`Checkpointer::due`]). At
//! that moment its state is exactly the fold of its inputs at times `<= C`: every such time is
//! complete and processed, no later one is. Every operator on every worker passes `C` the same
//! way, so the parts of all operators at `C` together are the graph's state after the inputs
//! at times `<= C`, whatever the batching. Nothing waits for anything: each operator writes its
//! part when it gets there.
//!
//! An operator that passes several checkpoint times at once (a catch-up) writes only the
//! greatest, and with [`Policy::skip_older_than_ms`] it skips times far behind the wall clock
//! (a replay of history writes none): such a time is then incomplete (some parts missing),
//! and whoever collects the parts ignores it. Skipping changes no output.
//!
//! # Parts and restores
//!
//! A [`Part`] is one operator's state on one worker, serialized with `bincode`. A
//! [`Restore`] holds every part of one checkpoint time; each operator reads its state back
//! with [`Checkpointer::restore`]. When the cluster has the shape the parts were written with
//! (same number of workers, same routing hash), each worker reads its own part; otherwise each
//! reads every part of its operator and keeps the entries the current routing sends to it
//! ([`Sharded`]), so a checkpoint taken on 1 worker restores on 4 and the other way round.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use differential_dataflow::Hashable;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// When operators take checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Checkpoint times are the positive multiples of this (logical ms).
    pub interval_ms: u64,
    /// A checkpoint time further than this behind the wall clock when an operator passes it is
    /// skipped (catching up on history writes no checkpoint per interval); `None`: never
    /// skipped (tests, whose logical times are not wall-clock times).
    pub skip_older_than_ms: Option<u64>,
}

/// One operator's state on one worker at one checkpoint time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The operator's checkpoint name (unique in the graph).
    pub operator: &'static str,
    /// The worker that wrote it, and the number of workers then.
    pub worker: usize,
    /// The number of workers of the cluster that wrote it.
    pub peers: usize,
    /// The checkpoint time: the state is the fold of the inputs at times `<= at`.
    pub at: u64,
    /// The state, `bincode`-encoded.
    pub bytes: Vec<u8>,
    /// How long the worker spent encoding it (µs): the time its operator stalled.
    pub encode_us: u64,
}

/// The routing fingerprint of this build: the hash differential's exchange gives a fixed
/// value. Parts written by a build with another fingerprint are re-sharded on load, so a
/// changed hash never leaves a key on a worker that does not own it.
pub fn routing_fingerprint() -> u64 {
    ("basketflow routing", 1u64).hashed()
}

/// Every part of one checkpoint time, to start a graph from.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    /// The checkpoint time.
    pub at: u64,
    /// The number of workers that wrote the parts.
    pub peers: usize,
    /// The [`routing_fingerprint`] of the build that wrote them.
    pub fingerprint: u64,
    /// Per operator, its parts indexed by the worker that wrote them.
    pub parts: HashMap<String, Vec<Vec<u8>>>,
}

impl Restore {
    /// Collects `parts` (all of one time, from `peers` workers) into a restore; `None` unless
    /// every operator in `operators` has a part from every worker.
    pub fn complete(
        at: u64,
        peers: usize,
        fingerprint: u64,
        operators: &[&str],
        parts: impl IntoIterator<Item = Part>,
    ) -> Option<Restore> {
        let mut by_operator: HashMap<String, Vec<Option<Vec<u8>>>> = operators
            .iter()
            .map(|o| (o.to_string(), vec![None; peers]))
            .collect();
        for part in parts {
            if part.at != at || part.peers != peers || part.worker >= peers {
                return None;
            }
            *by_operator.get_mut(part.operator)?.get_mut(part.worker)? = Some(part.bytes);
        }
        let parts = by_operator
            .into_iter()
            .map(|(o, parts)| Some((o, parts.into_iter().collect::<Option<Vec<_>>>()?)))
            .collect::<Option<HashMap<_, _>>>()?;
        Some(Restore {
            at,
            peers,
            fingerprint,
            parts,
        })
    }
}

/// Checkpointing for a graph: the policy, where parts go, and the checkpoint to start from.
#[derive(Clone, Debug)]
pub struct Checkpointing {
    /// When parts are written.
    pub policy: Policy,
    /// Where they go (a writer collects them; a send to a writer that is gone is ignored).
    pub parts: Sender<Part>,
    /// The checkpoint the graph starts from, if any: its inputs are then the messages after
    /// the checkpoint's time only.
    pub restore: Option<Arc<Restore>>,
}

/// State an operator checkpoints: its entries can be re-sharded on load.
pub trait Sharded: Serialize + DeserializeOwned + Default {
    /// Keeps only the entries whose routing hash `owns` accepts (broadcast entries, which
    /// every worker holds, are kept).
    fn retain_owned(&mut self, owns: &dyn Fn(u64) -> bool);
    /// Adds the entries of another worker's part (after [`Sharded::retain_owned`]).
    fn absorb(&mut self, other: Self);
}

/// One operator's handle on checkpointing, on one worker (see the [module docs](self)).
pub struct Checkpointer {
    operator: &'static str,
    worker: usize,
    peers: usize,
    config: Option<Checkpointing>,
    /// The greatest checkpoint time considered (written or skipped), or restored from.
    considered: u64,
    /// The size of the last part written: the next one's buffer starts that large, so that
    /// encoding a large state does not grow its buffer by doubling (copies and fresh pages,
    /// on the worker thread).
    last_len: std::cell::Cell<usize>,
}

impl Checkpointer {
    /// The handle of `operator` on worker `worker` of `peers`; with `config` `None`, it never
    /// writes and restores nothing.
    pub fn new(
        config: Option<&Checkpointing>,
        operator: &'static str,
        worker: usize,
        peers: usize,
    ) -> Checkpointer {
        let considered = config.and_then(|c| c.restore.as_ref()).map_or(0, |r| r.at);
        Checkpointer {
            operator,
            worker,
            peers,
            config: config.cloned(),
            considered,
            last_len: std::cell::Cell::new(0),
        }
    }

    /// The checkpoint time to write before processing time `before` (or, with the frontier,
    /// after a round): the greatest positive multiple of the interval below `before`, when it
    /// was not considered yet and the policy does not skip it. Call it with every time the
    /// operator processes, in order, before processing it.
    pub fn due(&mut self, before: u64) -> Option<u64> {
        let policy = self.config.as_ref()?.policy;
        let interval = policy.interval_ms.max(1);
        let at = before.saturating_sub(1) / interval * interval;
        if at == 0 || at <= self.considered {
            return None;
        }
        self.considered = at;
        if let Some(max_age) = policy.skip_older_than_ms {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if now.saturating_sub(at) > max_age {
                return None;
            }
        }
        Some(at)
    }

    /// Writes `state` as this operator's part at the checkpoint time [`Checkpointer::due`]
    /// gives before `before`, if any: call it with every time the operator processes, in
    /// order, before processing it, and with its frontier after a round.
    pub fn pass<S: Serialize>(&mut self, before: u64, state: &S) {
        if let Some(at) = self.due(before) {
            self.write(at, state);
        }
    }

    /// Writes `state` as this operator's part at checkpoint time `at`.
    pub fn write<S: Serialize>(&self, at: u64, state: &S) {
        let Some(config) = &self.config else { return };
        let started = std::time::Instant::now();
        let last = self.last_len.get();
        let mut bytes = Vec::with_capacity(last + last / 8);
        bincode::serialize_into(&mut bytes, state).expect("operator state serializes");
        self.last_len.set(bytes.len());
        let encode_us = started.elapsed().as_micros() as u64;
        // A writer that is gone (the process is stopping) takes no part: nothing to do.
        let _ = config.parts.send(Part {
            operator: self.operator,
            worker: self.worker,
            peers: self.peers,
            at,
            bytes,
            encode_us,
        });
    }

    /// The operator's state from the restore, re-sharded when needed; the default state
    /// without a restore.
    ///
    /// # Panics
    ///
    /// If the restore has no parts for this operator, or a part does not decode: a restore is
    /// built only from complete checkpoints whose parts passed their digests
    /// ([`Restore::complete`]), so either is a bug.
    pub fn restore<S: Sharded>(&self) -> S {
        let Some(restore) = self.config.as_ref().and_then(|c| c.restore.as_ref()) else {
            return S::default();
        };
        let parts = restore
            .parts
            .get(self.operator)
            .unwrap_or_else(|| panic!("the checkpoint has no part of operator {}", self.operator));
        let decode = |bytes: &[u8]| -> S {
            bincode::deserialize(bytes).unwrap_or_else(|e| {
                panic!(
                    "a checkpoint part of operator {} does not decode: {e}",
                    self.operator
                )
            })
        };
        if restore.peers == self.peers && restore.fingerprint == routing_fingerprint() {
            return decode(&parts[self.worker]);
        }
        let (worker, peers) = (self.worker as u64, self.peers as u64);
        let owns = move |hash: u64| hash % peers == worker;
        let mut state = S::default();
        for bytes in parts {
            let mut part = decode(bytes);
            part.retain_owned(&owns);
            state.absorb(part);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    fn config(interval_ms: u64) -> (Checkpointing, std::sync::mpsc::Receiver<Part>) {
        let (parts, received) = channel();
        let policy = Policy {
            interval_ms,
            skip_older_than_ms: None,
        };
        let config = Checkpointing {
            policy,
            parts,
            restore: None,
        };
        (config, received)
    }

    #[test]
    fn each_checkpoint_time_is_due_once_and_only_the_greatest_of_a_jump() {
        let (config, _parts) = config(10);
        let mut c = Checkpointer::new(Some(&config), "op", 0, 1);
        assert_eq!(c.due(5), None); // no positive multiple below 5
        assert_eq!(c.due(10), None); // 10 itself is not below 10
        assert_eq!(c.due(11), Some(10));
        assert_eq!(c.due(12), None);
        assert_eq!(c.due(20), None);
        assert_eq!(c.due(45), Some(40)); // 20 and 30 passed in one jump: only 40
        assert_eq!(c.due(41), None);
    }

    #[test]
    fn a_time_far_behind_the_wall_clock_is_skipped_and_stays_considered() {
        let (mut config, _parts) = config(10);
        config.policy.skip_older_than_ms = Some(1_000);
        let mut c = Checkpointer::new(Some(&config), "op", 0, 1);
        assert_eq!(c.due(25), None); // 20 ms after the epoch: far behind
        assert_eq!(c.considered, 20);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let recent = now / 10 * 10;
        assert_eq!(c.due(recent + 1), Some(recent));
    }

    #[test]
    fn a_restored_operator_writes_nothing_at_or_before_its_restore_time() {
        let (mut config, _parts) = config(10);
        config.restore = Some(Arc::new(Restore {
            at: 30,
            peers: 1,
            ..Restore::default()
        }));
        let mut c = Checkpointer::new(Some(&config), "op", 0, 1);
        assert_eq!(c.due(31), None);
        assert_eq!(c.due(41), Some(40));
    }

    /// A toy state: key -> value, routed by the key's hash.
    #[derive(Default, Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Toy(Vec<(u32, u32)>);

    impl Sharded for Toy {
        fn retain_owned(&mut self, owns: &dyn Fn(u64) -> bool) {
            self.0.retain(|(k, _)| owns(k.hashed()));
        }
        fn absorb(&mut self, other: Self) {
            self.0.extend(other.0);
            self.0.sort();
        }
    }

    #[test]
    fn parts_restore_as_written_on_the_same_shape_and_re_shard_on_another() {
        let (config, parts) = config(10);
        // Two workers wrote their keys at 10.
        let mut written = Vec::new();
        for worker in 0..2u64 {
            let c = Checkpointer::new(Some(&config), "toy", worker as usize, 2);
            let mine: Vec<(u32, u32)> = (0..20u32)
                .filter(|k| k.hashed() % 2 == worker)
                .map(|k| (k, k * 7))
                .collect();
            c.write(10, &Toy(mine));
            written.push(parts.recv().unwrap());
        }
        assert!(Restore::complete(
            10,
            2,
            routing_fingerprint(),
            &["toy", "other"],
            written.clone()
        )
        .is_none());
        let restore = Arc::new(
            Restore::complete(10, 2, routing_fingerprint(), &["toy"], written.clone()).unwrap(),
        );
        let with = |restore: &Arc<Restore>| Checkpointing {
            restore: Some(restore.clone()),
            ..config.clone()
        };
        // Same shape: each worker its own part.
        for worker in 0..2usize {
            let c = Checkpointer::new(Some(&with(&restore)), "toy", worker, 2);
            let state: Toy = c.restore();
            assert!(state.0.iter().all(|(k, _)| k.hashed() % 2 == worker as u64));
        }
        // Three workers: every key lands once, on the worker that owns it.
        let mut all = Vec::new();
        for worker in 0..3usize {
            let c = Checkpointer::new(Some(&with(&restore)), "toy", worker, 3);
            let state: Toy = c.restore();
            assert!(state.0.iter().all(|(k, _)| k.hashed() % 3 == worker as u64));
            all.extend(state.0);
        }
        all.sort();
        assert_eq!(all, (0..20u32).map(|k| (k, k * 7)).collect::<Vec<_>>());
        // Another fingerprint (another build's routing): re-sharded even on the same shape.
        let mut other = (*restore).clone();
        other.fingerprint ^= 1;
        let other = Arc::new(other);
        let mut all = Vec::new();
        for worker in 0..2usize {
            let state: Toy = Checkpointer::new(Some(&with(&other)), "toy", worker, 2).restore();
            all.extend(state.0);
        }
        all.sort();
        assert_eq!(all.len(), 20);
    }
}
