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
//!
//! # Incremental parts
//!
//! An operator whose state is [`Incremental`] writes, most of the time, only what changed
//! since its previous part: such a part names that part's time as its [`Part::base`], and the
//! state at its time is the base's state with the changes applied. A part holds the whole
//! state again after at most [`Policy::full_every`] parts of changes (the first chain of each
//! operator is shortened by its [`stagger`], so that operators write their whole parts at
//! different checkpoints), sooner when the changes since the last whole part outweigh it (a
//! restore reads at most about twice the state), when the state asks (too many changes to keep
//! track of), and after an erasure anywhere in the process ([`Checkpointer::note_erasure`]): no
//! chain written after an erasure reaches back to data from before it.
//!
//! # Whole parts written in slices
//!
//! A whole part of a large state takes the worker thread long enough to delay everything
//! behind it (decisions included). So when an operator's next part will be whole by count (its
//! chain is full), it starts that part right after writing the previous one and writes it a
//! slice at a time, each time it is asked whether a checkpoint is due and none is, for about
//! [`SLICE_BUDGET_US`] each time (four times that when it is behind schedule): first the state
//! without its keyed entries, then the current entries of the keys it had when it started, a
//! few dozen keys per record. The entries of a key are thus written at different moments, a
//! fuzzy copy; but the changes since the previous part are kept track of as for a part of
//! changes, and the whole part ends with them when the checkpoint comes: every key whose
//! entries differ from the ones sliced was touched, so the records together are exactly the
//! state at the checkpoint's time. Whatever is left to slice then is written at once. A whole
//! part that was started before an erasure in the process, or whose changes were not all
//! kept, is dropped and the whole state written at once instead.
//!
//! # Parts written between checkpoints
//!
//! A part of changes, too, is written as the interval goes, so that the checkpoint itself
//! has little left to write (with the default interval of a minute, the changes of a minute
//! written at once stalled the worker about as long as a whole part). Changes go by
//! generations, [`SETTLE_PER_INTERVAL`] per interval (in logical time): a key changed in one
//! generation and not in the next has settled, and is then written with its current entries,
//! a few dozen keys per record, in the same slices as a whole part's; it no longer counts as
//! changed until it changes again (a key that keeps changing is written once it pauses). At the checkpoint, the keys changed since they were written (or not
//! written yet) end the part. Records are applied in order, so the last record of each key
//! holds its entries at the checkpoint's time: the part is exactly the changes since its
//! base. A key that changes in many generations is written more than once; when the part
//! under way outgrows what its chain allows, it becomes a whole part written in slices,
//! started then. Changes are written early only while the operator is live (within
//! [`Policy::skip_older_than_ms`] of the wall clock): a catch-up passes no checkpoint. A part
//! under way when an erasure comes in the process is dropped, as a whole part in slices is.
//!
//! An incremental part's bytes are a sequence of records (a tag, then the whole state or a
//! set of changes), so a chain is restored from the concatenation of its parts' bytes, oldest
//! first ([`Restore::chained`]); and a writer that does not write a part (it fell behind, or
//! the write failed) folds it into the same operator's next one ([`Part::follow`]), whose
//! chain then skips it.

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
    /// For [`Incremental`] state: at most this many parts of changes follow a part of the
    /// whole state; 0: every part holds the whole state.
    pub full_every: u32,
}

impl Policy {
    /// Whether logical time `t` is further behind the wall clock than
    /// [`Policy::skip_older_than_ms`].
    fn too_old(&self, t: u64) -> bool {
        self.skip_older_than_ms.is_some_and(|max_age| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            now.saturating_sub(t) > max_age
        })
    }
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
    /// `None`: the whole state. `Some(b)`: the changes since this operator's part on this
    /// worker at time `b < at` (see [Incremental parts](self#incremental-parts)).
    pub base: Option<u64>,
    /// The state, `bincode`-encoded (for [`Incremental`] state, a sequence of records).
    pub bytes: Vec<u8>,
    /// How long the worker spent encoding it (µs), in all (for a whole part written in
    /// slices, the slices' time too).
    pub encode_us: u64,
    /// The longest the worker spent encoding it in one go (µs): how long its operator stalled
    /// at most.
    pub stall_us: u64,
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

impl Part {
    /// Folds `previous`, this operator's part on this worker just before this one, into this
    /// one, for a writer that will not write `previous`: when this part holds changes since
    /// `previous`, it becomes `previous` followed by them (with `previous`'s base); when it
    /// holds the whole state, `previous` is simply dropped.
    pub fn follow(&mut self, previous: Part) {
        debug_assert!(
            self.base.is_none() || self.base == Some(previous.at),
            "a part follows the part just before it"
        );
        if self.base == Some(previous.at) {
            let mut bytes = previous.bytes;
            bytes.extend_from_slice(&self.bytes);
            self.bytes = bytes;
            self.base = previous.base;
            self.encode_us += previous.encode_us;
            self.stall_us = self.stall_us.max(previous.stall_us);
        }
    }
}

impl Restore {
    /// Collects the parts of time `at` from `parts` (parts of any times, complete or not)
    /// into a restore, each [`Incremental`] part preceded by the parts its chain of bases
    /// names, oldest first; `None` unless every operator in `operators` has a part from every
    /// worker whose chain is all there.
    pub fn chained(
        at: u64,
        peers: usize,
        fingerprint: u64,
        operators: &[&str],
        parts: impl IntoIterator<Item = Part>,
    ) -> Option<Restore> {
        let mut by_key: HashMap<(&'static str, usize, u64), Part> = HashMap::new();
        for part in parts {
            if part.peers == peers {
                by_key.insert((part.operator, part.worker, part.at), part);
            }
        }
        let tips: Vec<(&'static str, usize)> = by_key
            .keys()
            .filter(|(_, _, t)| *t == at)
            .map(|(o, w, _)| (*o, *w))
            .collect();
        let mut resolved = Vec::new();
        for (operator, worker) in tips {
            let mut chain = vec![by_key.remove(&(operator, worker, at))?];
            while let Some(last) = chain.last().filter(|p| p.base.is_some()) {
                let base = last.base.filter(|b| *b < last.at)?;
                chain.push(by_key.get(&(operator, worker, base))?.clone());
            }
            let mut whole = chain.pop().expect("a chain has a part");
            while let Some(next) = chain.pop() {
                whole.bytes.extend_from_slice(&next.bytes);
            }
            whole.at = at;
            whole.base = None;
            resolved.push(whole);
        }
        Restore::complete(at, peers, fingerprint, operators, resolved)
    }

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
    /// Erasures applied in this process ([`Checkpointer::note_erasure`]): an incremental
    /// operator's next part after one holds the whole state.
    pub erasures: Arc<std::sync::atomic::AtomicU64>,
}

/// State an operator checkpoints: its entries can be re-sharded on load.
pub trait Sharded: Serialize + DeserializeOwned + Default {
    /// Keeps only the entries whose routing hash `owns` accepts (broadcast entries, which
    /// every worker holds, are kept).
    fn retain_owned(&mut self, owns: &dyn Fn(u64) -> bool);
    /// Adds the entries of another worker's part (after [`Sharded::retain_owned`]).
    fn absorb(&mut self, other: Self);
}

/// State an operator checkpoints incrementally (see [Incremental parts](self#incremental-parts)):
/// it keeps track of what changed since its last part, and can write and apply just that.
pub trait Incremental: Sharded {
    /// The changes as [`Incremental::write_changes`] writes them, read back.
    type Changes: DeserializeOwned;
    /// Starts (`true`) or stops keeping track of changes (no checkpoints: nothing to track).
    fn track_changes(&mut self, on: bool);
    /// Whether the next part must hold the whole state: the changes were not all kept (too
    /// many to be worth it), or the state asks for it (e.g. after an erasure, so that no
    /// chain written from now on reaches back to the erased data).
    fn wants_whole(&self) -> bool;
    /// Serializes the changes since the last part (a `Self::Changes`) into `out`.
    fn write_changes(&self, out: &mut Vec<u8>);
    /// Forgets the changes: a part was written, and the next changes are relative to it.
    fn clear_changes(&mut self);
    /// Applies changes read back, in the order they were written.
    fn apply(&mut self, changes: Self::Changes);
    /// Called before the whole state is written at checkpoint time `at` (e.g. to sweep out
    /// what no longer matters at `at`).
    fn before_whole(&mut self, _at: u64) {}
    /// A key of the state's entries, as a whole part written in slices lists them.
    type Key: 'static;
    /// Starts a whole part written in slices (see [Whole parts written in
    /// slices](self#whole-parts-written-in-slices)) right after the part at `at`: writes into
    /// `out` the state without the entries of the keys it returns (usually the empty state),
    /// which [`Incremental::write_entries`] then writes a slice at a time.
    fn start_slices(&mut self, at: u64, out: &mut Vec<u8>) -> Vec<Self::Key>;
    /// Writes into `out` a `Self::Changes` holding the current entries of `keys` (those
    /// without any as removed, or left out).
    fn write_entries(&self, keys: &[Self::Key], out: &mut Vec<u8>);
    /// Starts a new generation of changes: the keys changed before it and not since have
    /// settled, and [`Incremental::take_settled`] gives them (see [Parts written between
    /// checkpoints](self#parts-written-between-checkpoints)). Without it, nothing settles:
    /// every change is written at the checkpoint.
    fn settle_changes(&mut self) {}
    /// Up to `max` keys whose changes settled, no longer counted as changed: the caller
    /// writes their current entries ([`Incremental::write_entries`]) right away.
    fn take_settled(&mut self, _max: usize) -> Vec<Self::Key> {
        Vec::new()
    }
}

/// Appends `value`, `bincode`-encoded as parts are, to `out` (for
/// [`Incremental::write_changes`]).
pub fn encode_into<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    bincode::serialize_into(out, value).expect("checkpointed state serializes");
}

/// The keys of an [`Incremental`] state that changed since its last part: what its parts of
/// changes list (each with its current entries). Between checkpoints, changes settle in
/// generations: a key changed in one generation and not in the next has settled, and
/// [`ChangedKeys::take_settled`] gives it to be written early (a key that keeps changing is
/// written once it pauses, not at each change).
#[derive(Debug)]
pub struct ChangedKeys<K> {
    /// Changed in the current generation.
    keys: crate::FastSet<K>,
    /// Changed in the previous generation (and maybe in this one too).
    previous: crate::FastSet<K>,
    /// Changed in earlier generations and not since (a key changed again is also in `keys`
    /// or `previous`: it is then not taken).
    settled: crate::FastSet<K>,
    /// Whether changes are kept track of (checkpoints with parts of changes).
    tracking: bool,
    /// Keys were dropped since the last part (too many), or the state asked: the next part
    /// is whole.
    whole: bool,
}

impl<K> Default for ChangedKeys<K> {
    fn default() -> Self {
        ChangedKeys {
            keys: crate::FastSet::default(),
            previous: crate::FastSet::default(),
            settled: crate::FastSet::default(),
            tracking: false,
            whole: false,
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> ChangedKeys<K> {
    /// Notes that the entries of `key` changed, in a state of `live` keys: past half of them
    /// (and 1,024), the next part is whole and the keys are no longer kept.
    pub fn touch(&mut self, key: &K, live: usize) {
        self.touch_by(key, live, K::clone);
    }

    /// [`ChangedKeys::touch`] by a borrowed form of the key (e.g. [`crate::StrPair`]), made
    /// owned only when it is kept.
    pub fn touch_by<Q>(&mut self, key: &Q, live: usize, owned: impl FnOnce(&Q) -> K)
    where
        Q: std::hash::Hash + crate::Equivalent<K> + ?Sized,
    {
        if !self.tracking || self.whole || self.keys.contains(key) {
            return;
        }
        let kept = self.keys.len() + self.previous.len() + self.settled.len();
        if kept >= (live / 2).max(1024) {
            self.whole();
        } else {
            self.keys.insert(owned(key));
        }
    }

    /// Makes the next part whole (e.g. after an erasure).
    pub fn whole(&mut self) {
        if self.tracking {
            self.clear();
            self.whole = true;
        }
    }

    /// For [`Incremental::track_changes`].
    pub fn track(&mut self, on: bool) {
        self.tracking = on;
        self.clear();
    }

    /// For [`Incremental::wants_whole`].
    pub fn wants_whole(&self) -> bool {
        self.whole
    }

    /// For [`Incremental::clear_changes`].
    pub fn clear(&mut self) {
        self.keys = crate::FastSet::default();
        self.previous = crate::FastSet::default();
        self.settled = crate::FastSet::default();
        self.whole = false;
    }

    /// The keys changed since the last part and not taken since.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        let (keys, previous) = (&self.keys, &self.previous);
        let settled = self
            .settled
            .iter()
            .filter(move |k| !keys.contains(*k) && !previous.contains(*k));
        let previous = self.previous.iter().filter(move |k| !keys.contains(*k));
        settled.chain(previous).chain(self.keys.iter())
    }

    /// For [`Incremental::settle_changes`]: the keys changed in the previous generation and
    /// not in this one have settled; this one becomes the previous one.
    pub fn settle(&mut self) {
        if self.whole {
            return;
        }
        let previous = std::mem::replace(&mut self.previous, std::mem::take(&mut self.keys));
        let again = &self.previous;
        self.settled
            .extend(previous.into_iter().filter(|k| !again.contains(k)));
    }

    /// For [`Incremental::take_settled`]: up to `max` settled keys (not changed since), no
    /// longer counted as changed.
    pub fn take_settled(&mut self, max: usize) -> Vec<K> {
        let ChangedKeys {
            keys,
            previous,
            settled,
            ..
        } = self;
        settled
            .extract_if(|k| !keys.contains(k) && !previous.contains(k))
            .take(max)
            .collect()
    }
}

/// Sets `key` to `value` in `map`, or removes it when `value` is `None` (how a part of changes
/// gives an entry back: [`Incremental::apply`]).
pub fn set_or_remove<K: std::hash::Hash + Eq, V>(
    map: &mut crate::FastMap<K, V>,
    key: K,
    value: Option<V>,
) {
    match value {
        Some(v) => map.insert(key, v),
        None => map.remove(&key),
    };
}

/// Microseconds since `started`.
fn micros_since(started: std::time::Instant) -> u64 {
    started.elapsed().as_micros() as u64
}

/// The tag of a record of the whole state in an incremental part.
const WHOLE: u32 = 0;
/// The tag of a record of changes in an incremental part.
const CHANGES: u32 = 1;

/// Reads an incremental part's records (a chain's concatenation): the state they build.
pub fn decode_incremental<S: Incremental>(mut bytes: &[u8]) -> Result<S, String> {
    let mut state = S::default();
    while !bytes.is_empty() {
        let tag: u32 = bincode::deserialize_from(&mut bytes).map_err(|e| e.to_string())?;
        match tag {
            WHOLE => state = bincode::deserialize_from(&mut bytes).map_err(|e| e.to_string())?,
            CHANGES => {
                let changes: S::Changes =
                    bincode::deserialize_from(&mut bytes).map_err(|e| e.to_string())?;
                state.apply(changes);
            }
            other => return Err(format!("unknown record tag {other}")),
        }
    }
    Ok(state)
}

/// How many parts of changes the first chain of `operator` skips (below `full_every`): a
/// fixed offset per operator name, so that operators write their whole parts at different
/// checkpoints.
pub fn stagger(operator: &str, full_every: u32) -> u32 {
    if full_every == 0 {
        return 0;
    }
    (routing_fingerprint() ^ (operator, "stagger").hashed()).wrapping_rem(u64::from(full_every))
        as u32
}

/// Where an incremental operator's chain of parts stands.
#[derive(Debug, Default)]
struct Chain {
    /// The time of its last part (the base of the next part of changes).
    last: Option<u64>,
    /// The size of its last part of the whole state.
    whole_len: usize,
    /// Bytes of changes written since.
    changes_len: usize,
    /// Parts of changes written since (starting at the operator's [`stagger`] in its first
    /// chain).
    changes: u32,
    /// [`Checkpointing::erasures`] when its last whole part was written.
    erasures: u64,
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
    /// The same for its parts of changes (incremental state).
    last_changes_len: usize,
    /// For incremental state: where its chain stands, and how many parts of changes its
    /// first chain skips ([`stagger`]).
    chain: Chain,
    stagger: u32,
    /// The whole part being written in slices, if any.
    sliced: Option<Sliced>,
}

/// How long a whole part written in slices may keep the worker thread each time (µs).
pub const SLICE_BUDGET_US: u64 = 1_000;

/// The keys per record of a whole part written in slices (the clock is read after each).
const SLICE_KEYS: usize = 64;

/// How many times per checkpoint interval the changes settle (see [Parts written between
/// checkpoints](self#parts-written-between-checkpoints)).
pub const SETTLE_PER_INTERVAL: u64 = 16;

/// The part under way between checkpoints: a whole part written in slices, or a part of
/// changes (see [Parts written between checkpoints](self#parts-written-between-checkpoints)).
struct Sliced {
    /// A whole part (else a part of changes).
    whole: bool,
    /// Its records so far.
    bytes: Vec<u8>,
    /// The keys whose entries a whole part writes (a `Vec<S::Key>` of the operator's state
    /// `S`; empty for a part of changes).
    keys: Box<dyn std::any::Any>,
    /// How many of them there are, and how many were written.
    len: usize,
    next: usize,
    /// The time of the part that started it (or of the switch to a whole part).
    from: u64,
    /// The logical time at which the state's changes settle next.
    settle_at: u64,
    /// [`Checkpointing::erasures`] when it started.
    erasures: u64,
    /// The worker's time spent on it so far (µs), and its longest stretch.
    spent_us: u64,
    stall_us: u64,
    /// Bytes of its records of changes written before the checkpoint.
    early_len: usize,
}

/// A whole part to send ([`Checkpointer::sent_whole`]): its bytes, how many of them are
/// changes written before the checkpoint, and [`Checkpointing::erasures`] when it was checked.
struct Written {
    bytes: Vec<u8>,
    early: usize,
    erasures: u64,
}

impl Sliced {
    /// A part under way from the part at `at` (a whole one, with the `keys` it writes the
    /// entries of, after `bytes`), that took `spent_us` to start.
    fn new<K: 'static>(
        whole: bool,
        bytes: Vec<u8>,
        keys: Vec<K>,
        at: u64,
        erasures: u64,
        spent_us: u64,
    ) -> Sliced {
        Sliced {
            whole,
            bytes,
            len: keys.len(),
            keys: Box::new(keys),
            next: 0,
            from: at,
            settle_at: at,
            erasures,
            spent_us,
            stall_us: spent_us,
            early_len: 0,
        }
    }

    /// Writes slices for about `budget_us` (at least one record; all that is left with
    /// `u64::MAX`): with `settle` (the logical time now, and how often changes settle), the
    /// changes that settled (in a whole part, at most as many bytes as its own entries: the
    /// rest is left to the checkpoint), then, for a whole part, the entries of the keys it
    /// started with.
    fn write_slices<S: Incremental>(
        &mut self,
        state: &mut S,
        budget_us: u64,
        settle: Option<(u64, u64)>,
    ) {
        let started = std::time::Instant::now();
        if let Some((now, every)) = settle {
            if now >= self.settle_at {
                state.settle_changes();
                self.settle_at = now + every;
            }
            while micros_since(started) < budget_us
                && (!self.whole || 2 * self.early_len <= self.bytes.len())
            {
                let keys = state.take_settled(SLICE_KEYS);
                if keys.is_empty() {
                    break;
                }
                let before = self.bytes.len();
                encode_into(&mut self.bytes, &CHANGES);
                state.write_entries(&keys, &mut self.bytes);
                self.early_len += self.bytes.len() - before;
            }
        }
        let keys = self
            .keys
            .downcast_ref::<Vec<S::Key>>()
            .expect("an operator's state has one type");
        while self.next < keys.len() {
            let end = (self.next + SLICE_KEYS).min(keys.len());
            encode_into(&mut self.bytes, &CHANGES);
            state.write_entries(&keys[self.next..end], &mut self.bytes);
            self.next = end;
            if micros_since(started) >= budget_us {
                break;
            }
        }
        let spent = micros_since(started);
        self.spent_us += spent;
        self.stall_us = self.stall_us.max(spent);
    }
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
            last_changes_len: 0,
            chain: Chain::default(),
            stagger: config.map_or(0, |c| stagger(operator, c.policy.full_every)),
            sliced: None,
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
        (!policy.too_old(at)).then_some(at)
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
        self.send(config, at, None, bytes, started);
    }

    fn send(
        &self,
        config: &Checkpointing,
        at: u64,
        base: Option<u64>,
        bytes: Vec<u8>,
        started: std::time::Instant,
    ) {
        self.send_spent(config, at, base, bytes, micros_since(started), (0, 0));
    }

    /// [`Checkpointer::send`] of a part that took `now_us` now, and `(spent, stall)` µs
    /// before (its slices).
    fn send_spent(
        &self,
        config: &Checkpointing,
        at: u64,
        base: Option<u64>,
        bytes: Vec<u8>,
        now_us: u64,
        (spent_us, stall_us): (u64, u64),
    ) {
        // A writer that is gone (the process is stopping) takes no part: nothing to do.
        let _ = config.parts.send(Part {
            operator: self.operator,
            worker: self.worker,
            peers: self.peers,
            at,
            base,
            bytes,
            encode_us: spent_us + now_us,
            stall_us: stall_us.max(now_us),
        });
    }

    /// [`Checkpointer::pass`] for [`Incremental`] state: writes its changes since its last
    /// part, or the whole state (see [Incremental parts](self#incremental-parts)); when no
    /// checkpoint is due, goes on with the part under way (see [Parts written between
    /// checkpoints](self#parts-written-between-checkpoints)).
    pub fn pass_incremental<S: Incremental>(&mut self, before: u64, state: &mut S) {
        match self.due(before) {
            Some(at) => self.write_incremental(at, state),
            None => {
                let budget = self.slice_budget(before);
                self.slice(state, budget, before);
                self.switch_if_too_large(before, state);
            }
        }
    }

    /// The time a slice may take before `before`: [`SLICE_BUDGET_US`] while the part under
    /// way is on schedule to be written by three quarters of the interval (in logical time,
    /// from the part that started it), four times that when it is behind (so that little is
    /// left to write at once at the checkpoint when the operator is asked seldom).
    fn slice_budget(&self, before: u64) -> u64 {
        let (Some(sliced), Some(config)) = (&self.sliced, &self.config) else {
            return 0;
        };
        let elapsed = before.saturating_sub(sliced.from);
        let schedule = 3 * config.policy.interval_ms.max(1);
        let behind = (sliced.next as u128) * u128::from(schedule)
            < (sliced.len as u128) * 4 * u128::from(elapsed);
        if behind {
            4 * SLICE_BUDGET_US
        } else {
            SLICE_BUDGET_US
        }
    }

    /// Whether the operator, at logical time `now`, is live (not catching up on history far
    /// behind the wall clock): only then are settled changes written between checkpoints
    /// (a catch-up passes no checkpoint, and would write its whole history of changes).
    fn live(&self, now: u64) -> bool {
        self.config.as_ref().is_none_or(|c| !c.policy.too_old(now))
    }

    /// Writes slices of the part under way, if any, for about `budget_us` (at least one
    /// record): at logical time `now`, the changes that settled (see [Parts written between
    /// checkpoints](self#parts-written-between-checkpoints)), then, for a whole part, the
    /// entries of the keys it started with.
    fn slice<S: Incremental>(&mut self, state: &mut S, budget_us: u64, now: u64) {
        if self.sliced.is_none() {
            return;
        }
        let settle = self
            .config
            .as_ref()
            .filter(|_| self.live(now))
            .map(|c| (now, (c.policy.interval_ms / SETTLE_PER_INTERVAL).max(1)));
        if let Some(sliced) = &mut self.sliced {
            sliced.write_slices(state, budget_us, settle);
        }
    }

    /// A part of changes under way that outgrew what its chain allows (a whole part would be
    /// smaller: many keys changed more than once since it started) becomes a whole part
    /// written in slices, started at `now`, unless an erasure came since the chain's whole
    /// part (the checkpoint then writes the whole state at once).
    fn switch_if_too_large<S: Incremental>(&mut self, now: u64, state: &mut S) {
        let Some(config) = &self.config else { return };
        let Some(sliced) = &self.sliced else { return };
        let erasures = config.erasures.load(std::sync::atomic::Ordering::Acquire);
        if sliced.erasures != erasures {
            // The checkpoint writes the whole state at once: nothing more to write before.
            self.sliced = None;
            return;
        }
        if sliced.whole || self.chain.changes_len + sliced.bytes.len() <= self.chain.whole_len {
            return;
        }
        // Every key is in the whole part: what changed before is written with it.
        let (spent_us, stall_us) = (sliced.spent_us, sliced.stall_us);
        state.clear_changes();
        self.start_whole(now, state, erasures);
        if let Some(whole) = &mut self.sliced {
            whole.spent_us += spent_us;
            whole.stall_us = whole.stall_us.max(stall_us);
        }
    }

    /// Writes `state`'s part at checkpoint time `at`: its changes since the last part when
    /// they are worth it (with those written since, see [Parts written between
    /// checkpoints](self#parts-written-between-checkpoints)), else the whole state (finishing
    /// the one written in slices, if it still holds); then starts the next part.
    pub fn write_incremental<S: Incremental>(&mut self, at: u64, state: &mut S) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let started = std::time::Instant::now();
        let erasures = config.erasures.load(std::sync::atomic::Ordering::Acquire);
        // What was written since the last part holds when no erasure came since it started
        // and every change since was kept track of.
        let under_way = self
            .sliced
            .take()
            .filter(|s| s.erasures == erasures && !state.wants_whole());
        let changes_hold =
            self.chain.last.is_some() && !state.wants_whole() && erasures == self.chain.erasures;
        match under_way {
            Some(mut sliced) if !sliced.whole && changes_hold => {
                encode_into(&mut sliced.bytes, &CHANGES);
                state.write_changes(&mut sliced.bytes);
                let chain = &mut self.chain;
                if chain.changes < config.policy.full_every {
                    let base = chain.last;
                    chain.changes_len += sliced.bytes.len();
                    chain.changes += 1;
                    // A chain reads at most about twice the whole state (three times when
                    // its last part of changes outgrew it before the switch to a whole part
                    // caught it): past that, the next part is whole, written in slices.
                    if chain.changes_len > chain.whole_len {
                        chain.changes = config.policy.full_every;
                    }
                    chain.last = Some(at);
                    self.last_changes_len = sliced.bytes.len();
                    state.clear_changes();
                    let spent = (sliced.spent_us, sliced.stall_us);
                    self.send_spent(
                        &config,
                        at,
                        base,
                        sliced.bytes,
                        micros_since(started),
                        spent,
                    );
                    self.start_next(at, state, erasures);
                    return;
                }
            }
            Some(mut sliced) if sliced.whole => {
                // What is left of it, then the changes since it started.
                sliced.write_slices(state, u64::MAX, None);
                let early = sliced.early_len;
                encode_into(&mut sliced.bytes, &CHANGES);
                state.write_changes(&mut sliced.bytes);
                let spent = (sliced.spent_us, sliced.stall_us);
                let written = Written {
                    bytes: sliced.bytes,
                    early,
                    erasures,
                };
                self.sent_whole(&config, at, state, written, started, spent);
                self.start_next(at, state, erasures);
                return;
            }
            _ => {}
        }
        state.before_whole(at);
        let last = self.last_len.get();
        let mut bytes = Vec::with_capacity(last + last / 8);
        encode_into(&mut bytes, &WHOLE);
        encode_into(&mut bytes, &*state);
        let written = Written {
            bytes,
            early: 0,
            erasures,
        };
        self.sent_whole(&config, at, state, written, started, (0, 0));
        self.start_next(at, state, erasures);
    }

    /// Sends a whole part at `at` and starts a chain from it.
    fn sent_whole<S: Incremental>(
        &mut self,
        config: &Checkpointing,
        at: u64,
        state: &mut S,
        written: Written,
        started: std::time::Instant,
        before: (u64, u64),
    ) {
        let Written {
            bytes,
            early,
            erasures,
        } = written;
        // The state's size, without the changes written into it before the checkpoint.
        let whole_len = bytes.len() - early;
        self.last_len.set(whole_len);
        // The first chain of each operator is shortened by its own offset, so that the
        // operators' whole parts fall on different checkpoints (one whole state per
        // checkpoint stalls the worker thread, not all of them at once).
        let first = self.chain.last.is_none();
        self.chain = Chain {
            last: Some(at),
            whole_len,
            changes_len: 0,
            changes: if first { self.stagger } else { 0 },
            erasures,
        };
        state.clear_changes();
        self.send_spent(config, at, None, bytes, micros_since(started), before);
    }

    /// Starts the next part right after the part at `at`: a whole part written in slices
    /// when the next part will be whole by count (see [Whole parts written in
    /// slices](self#whole-parts-written-in-slices)), else a part of changes.
    fn start_next<S: Incremental>(&mut self, at: u64, state: &mut S, erasures: u64) {
        let full_every = self.config.as_ref().map_or(0, |c| c.policy.full_every);
        if full_every == 0 {
            return;
        }
        if self.chain.changes >= full_every {
            self.start_whole(at, state, erasures);
            return;
        }
        let previous = self.last_changes_len;
        let bytes = Vec::with_capacity(previous + previous / 4);
        self.sliced = Some(Sliced::new(
            false,
            bytes,
            Vec::<S::Key>::new(),
            at,
            erasures,
            0,
        ));
    }

    /// Starts a whole part written in slices at `at`.
    fn start_whole<S: Incremental>(&mut self, at: u64, state: &mut S, erasures: u64) {
        let started = std::time::Instant::now();
        // Room for the state's growth and the changes that end the part, so that no slice
        // copies the part so far to a larger buffer.
        let last = self.last_len.get();
        let mut bytes = Vec::with_capacity(last + last / 4 + self.last_changes_len);
        encode_into(&mut bytes, &WHOLE);
        let keys = state.start_slices(at, &mut bytes);
        let spent = micros_since(started);
        self.sliced = Some(Sliced::new(true, bytes, keys, at, erasures, spent));
    }

    /// Notes an erasure applied by this operator: every incremental operator of the process
    /// writes its next part whole (see [Incremental parts](self#incremental-parts)).
    pub fn note_erasure(&self) {
        if let Some(c) = &self.config {
            c.erasures
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
    }

    /// The time of the checkpoint the operator starts from, if any.
    pub fn restored_at(&self) -> Option<u64> {
        self.config.as_ref()?.restore.as_ref().map(|r| r.at)
    }

    /// [`Checkpointer::restore`] for [`Incremental`] state (its parts are chains of records),
    /// with change tracking on when this operator writes parts of changes.
    pub fn restore_incremental<S: Incremental>(&self) -> S {
        let mut state: S = self.restore_with(decode_incremental::<S>);
        let tracking = self
            .config
            .as_ref()
            .is_some_and(|c| c.policy.full_every > 0);
        state.track_changes(tracking);
        state
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
        self.restore_with(|bytes| bincode::deserialize(bytes).map_err(|e| e.to_string()))
    }

    fn restore_with<S: Sharded>(&self, decode: impl Fn(&[u8]) -> Result<S, String>) -> S {
        let Some(restore) = self.config.as_ref().and_then(|c| c.restore.as_ref()) else {
            return S::default();
        };
        let parts = restore
            .parts
            .get(self.operator)
            .unwrap_or_else(|| panic!("the checkpoint has no part of operator {}", self.operator));
        let decode = |bytes: &[u8]| -> S {
            decode(bytes).unwrap_or_else(|e| {
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
            full_every: 3,
        };
        let config = Checkpointing {
            policy,
            parts,
            restore: None,
            erasures: Default::default(),
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

    /// A toy incremental state: key -> value, with the keys changed since the last part.
    #[derive(Default, Serialize, serde::Deserialize, Debug)]
    struct Counts {
        values: std::collections::BTreeMap<u32, u32>,
        #[serde(skip)]
        changed: ChangedKeys<u32>,
    }

    impl PartialEq for Counts {
        fn eq(&self, other: &Counts) -> bool {
            self.values == other.values
        }
    }

    impl Counts {
        fn set(&mut self, k: u32, v: Option<u32>) {
            match v {
                Some(v) => self.values.insert(k, v),
                None => self.values.remove(&k),
            };
            self.changed.touch(&k, self.values.len().max(10_000));
        }
    }

    impl Sharded for Counts {
        fn retain_owned(&mut self, owns: &dyn Fn(u64) -> bool) {
            self.values.retain(|k, _| owns(k.hashed()));
        }
        fn absorb(&mut self, other: Self) {
            self.values.extend(other.values);
        }
    }

    impl Incremental for Counts {
        type Changes = Vec<(u32, Option<u32>)>;
        fn track_changes(&mut self, on: bool) {
            self.changed.track(on);
        }
        fn wants_whole(&self) -> bool {
            self.changed.wants_whole()
        }
        fn write_changes(&self, out: &mut Vec<u8>) {
            let mut changed: Vec<u32> = self.changed.keys().copied().collect();
            changed.sort_unstable();
            self.write_entries(&changed, out);
        }
        fn clear_changes(&mut self) {
            self.changed.clear();
        }
        fn settle_changes(&mut self) {
            self.changed.settle();
        }
        fn take_settled(&mut self, max: usize) -> Vec<u32> {
            self.changed.take_settled(max)
        }
        fn apply(&mut self, changes: Self::Changes) {
            for (k, v) in changes {
                match v {
                    Some(v) => self.values.insert(k, v),
                    None => self.values.remove(&k),
                };
            }
        }
        type Key = u32;
        fn start_slices(&mut self, _at: u64, out: &mut Vec<u8>) -> Vec<u32> {
            encode_into(out, &Counts::default());
            self.values.keys().copied().collect()
        }
        fn write_entries(&self, keys: &[u32], out: &mut Vec<u8>) {
            let entries: Vec<(u32, Option<u32>)> = keys
                .iter()
                .map(|k| (*k, self.values.get(k).copied()))
                .collect();
            encode_into(out, &entries);
        }
    }

    /// 100 keys, then at each later time one key changed and one removed.
    fn counts_run(full_every: u32, times: u64) -> (Vec<Part>, Vec<Counts>) {
        let (mut config, parts) = config(1);
        config.policy.full_every = full_every;
        let mut c = Checkpointer::new(Some(&config), "counts", 0, 1);
        c.stagger = 0;
        let mut state: Counts = c.restore_incremental();
        let mut states = Vec::new();
        for t in 1..=times {
            c.pass_incremental(t, &mut state);
            if t == 1 {
                (0..100).for_each(|k| state.set(k, Some(k)));
            } else {
                state.set(t as u32, Some(1000 + t as u32));
                state.set(99 - t as u32, None);
            }
            states.push(Counts {
                values: state.values.clone(),
                ..Counts::default()
            });
        }
        c.pass_incremental(times + 1, &mut state);
        (parts.try_iter().collect(), states)
    }

    #[test]
    fn incremental_parts_follow_their_base_and_a_chain_restores_the_state() {
        let (parts, states) = counts_run(3, 9);
        let bases: Vec<(u64, Option<u64>)> = parts.iter().map(|p| (p.at, p.base)).collect();
        // Whole at 1 (the first part), then changes, a whole part after 3 of them.
        assert_eq!(
            bases,
            vec![
                (1, None),
                (2, Some(1)),
                (3, Some(2)),
                (4, Some(3)),
                (5, None),
                (6, Some(5)),
                (7, Some(6)),
                (8, Some(7)),
                (9, None),
            ]
        );
        assert!(parts[1].bytes.len() * 10 < parts[0].bytes.len());
        for at in 1..=9u64 {
            let restore =
                Restore::chained(at, 1, routing_fingerprint(), &["counts"], parts.clone()).unwrap();
            let (config, _) = config(1);
            let with = Checkpointing {
                restore: Some(Arc::new(restore)),
                ..config
            };
            let restored: Counts =
                Checkpointer::new(Some(&with), "counts", 0, 1).restore_incremental();
            assert_eq!(restored.values, states[at as usize - 1].values, "at {at}");
            assert!(restored.changed.tracking);
        }
        // A part whose base is missing gives no restore.
        let gapped: Vec<Part> = parts.iter().filter(|p| p.at != 7).cloned().collect();
        assert!(Restore::chained(8, 1, routing_fingerprint(), &["counts"], gapped).is_none());
        // Without parts of changes (`full_every` 0), every part is whole.
        let (parts, _) = counts_run(0, 5);
        assert!(parts.iter().all(|p| p.base.is_none()));
    }

    /// A checkpointer (interval 10, `full_every`) and a state of 3,000 keys.
    fn three_thousand_keys(
        full_every: u32,
    ) -> (Checkpointer, Counts, std::sync::mpsc::Receiver<Part>) {
        let (mut config, parts) = config(10);
        config.policy.full_every = full_every;
        let mut c = Checkpointer::new(Some(&config), "counts", 0, 1);
        c.stagger = 0;
        let mut state: Counts = c.restore_incremental();
        (0..3_000).for_each(|k| state.set(k, Some(k)));
        (c, state, parts)
    }

    /// Each part, with the parts its chain follows, restores the state at its time.
    fn assert_each_part_restores(
        parts: &[Part],
        states: &HashMap<u64, std::collections::BTreeMap<u32, u32>>,
    ) {
        for part in parts {
            let chain: Vec<Part> = parts.iter().filter(|p| p.at <= part.at).cloned().collect();
            let restore =
                Restore::chained(part.at, 1, routing_fingerprint(), &["counts"], chain).unwrap();
            let state: Counts = decode_incremental(&restore.parts["counts"][0]).unwrap();
            assert_eq!(state.values, states[&part.at], "at {}", part.at);
        }
    }

    #[test]
    fn a_whole_part_written_in_slices_as_the_state_changes_is_the_state_at_its_time() {
        let (mut c, mut state, parts) = three_thousand_keys(1);
        let mut states = HashMap::new();
        for t in 1..=60u64 {
            match c.due(t) {
                Some(at) => c.write_incremental(at, &mut state),
                // One record (64 keys) between two times: slices and changes interleave.
                None => c.slice(&mut state, 0, t),
            }
            if t == 45 {
                c.note_erasure();
            }
            // Keys sliced already and not yet, changed and removed; and new keys.
            let k = (t as u32 * 97) % 3_000;
            state.set(k, Some(7 * k + t as u32));
            state.set((k + 1_500) % 3_000, None);
            state.set(3_000 + t as u32, Some(1));
            states.insert(t, state.values.clone());
        }
        let parts: Vec<Part> = parts.try_iter().collect();
        let bases: Vec<(u64, Option<u64>)> = parts.iter().map(|p| (p.at, p.base)).collect();
        // 10: the first part, whole; 20: changes, then the next whole part starts in slices;
        // 30: that part; 40: changes; 50: whole again, at once (an erasure at 45).
        let expected = vec![
            (10, None),
            (20, Some(10)),
            (30, None),
            (40, Some(30)),
            (50, None),
        ];
        assert_eq!(bases, expected);
        let at_once = |at: u64| {
            let mut bytes = Vec::new();
            encode_into(&mut bytes, &WHOLE);
            encode_into(
                &mut bytes,
                &Counts {
                    values: states[&at].clone(),
                    ..Counts::default()
                },
            );
            bytes
        };
        assert_eq!(parts[0].bytes, at_once(10));
        assert_ne!(parts[2].bytes, at_once(30), "written in slices");
        assert!(parts[2].stall_us <= parts[2].encode_us);
        assert_eq!(parts[4].bytes, at_once(50), "after an erasure, at once");
        assert_each_part_restores(&parts, &states);
    }

    /// The records of a part: how many hold the whole state, how many changes.
    fn records(mut bytes: &[u8]) -> (usize, usize) {
        let (mut wholes, mut changes) = (0, 0);
        while !bytes.is_empty() {
            let tag: u32 = bincode::deserialize_from(&mut bytes).unwrap();
            if tag == WHOLE {
                let _: Counts = bincode::deserialize_from(&mut bytes).unwrap();
                wholes += 1;
            } else {
                let _: Vec<(u32, Option<u32>)> = bincode::deserialize_from(&mut bytes).unwrap();
                changes += 1;
            }
        }
        (wholes, changes)
    }

    #[test]
    fn changes_that_settled_are_written_between_checkpoints_and_a_part_is_the_state_at_its_time() {
        let (mut c, mut state, parts) = three_thousand_keys(3);
        let mut states = HashMap::new();
        for t in 1..=75u64 {
            match c.due(t) {
                Some(at) => c.write_incremental(at, &mut state),
                // As `pass_incremental` does, with no time at even times (changes settle
                // then, and are left to the next time or the checkpoint).
                None => {
                    c.slice(&mut state, if t % 2 == 1 { u64::MAX } else { 0 }, t);
                    c.switch_if_too_large(t, &mut state);
                }
            }
            // A few keys a time, some changed again after they were written (settled at the
            // next time, written then), some removed; from 52 to 58, many keys a time: the part
            // of changes under way outgrows its chain and becomes a whole part in slices.
            let many = if (52..59).contains(&t) { 1_000 } else { 3 };
            for i in 0..many {
                let k = (t as u32 * 13 + i * 7) % 3_000;
                state.set(k, Some(7 * k + t as u32));
            }
            state.set((t as u32 * 31) % 3_000, None);
            states.insert(t, state.values.clone());
        }
        let parts: Vec<Part> = parts.try_iter().collect();
        let bases: Vec<(u64, Option<u64>)> = parts.iter().map(|p| (p.at, p.base)).collect();
        // 10: the first part, whole; 20, 30, 40: changes; 50: whole by count (in slices);
        // 60: changes that outgrew the chain between 50 and 60: whole (switched to slices);
        // 70: changes again.
        let expected = vec![
            (10, None),
            (20, Some(10)),
            (30, Some(20)),
            (40, Some(30)),
            (50, None),
            (60, None),
            (70, Some(60)),
        ];
        assert_eq!(bases, expected);
        // Parts of changes: the changes that settled, a record each time, then the rest.
        let (wholes, changes) = records(&parts[2].bytes);
        assert_eq!(wholes, 0);
        assert!(changes >= 5, "{changes} records of changes at 30");
        // The switch: the whole state, then its entries and changes in records.
        let (wholes, changes) = records(&parts[5].bytes);
        assert_eq!(wholes, 1);
        assert!(changes > 3_000 / SLICE_KEYS, "{changes} records at 60");
        assert_each_part_restores(&parts, &states);
    }

    #[test]
    fn a_catching_up_operator_writes_a_whole_part_a_slice_at_a_time_and_no_changes_early() {
        let (mut c, mut state, _parts) = three_thousand_keys(1);
        // Logical times near 0 are far behind the wall clock: a catch-up.
        c.config.as_mut().unwrap().policy.skip_older_than_ms = Some(1_000);
        c.write_incremental(10, &mut state);
        c.write_incremental(20, &mut state);
        // A whole part is under way (every part whole by count).
        state.set(5, Some(1));
        c.slice(&mut state, 0, 21);
        let sliced = c.sliced.as_ref().unwrap();
        assert!(sliced.whole);
        assert_eq!(
            sliced.next, SLICE_KEYS,
            "one record within the budget, not all"
        );
        assert_eq!(sliced.early_len, 0, "no changes written early");
    }

    #[test]
    fn a_part_not_written_is_folded_into_the_next_one() {
        let (parts, states) = counts_run(5, 6);
        // Parts at 3, 4, 5: changes since 2, 3, 4. A writer drops 3 and 4.
        let mut five = parts[4].clone();
        assert_eq!(five.base, Some(4));
        let mut four = parts[3].clone();
        four.follow(parts[2].clone());
        five.follow(four);
        assert_eq!(five.base, Some(2));
        let kept = vec![parts[0].clone(), parts[1].clone(), five.clone()];
        let restore = Restore::chained(5, 1, routing_fingerprint(), &["counts"], kept).unwrap();
        let state: Counts = decode_incremental(&restore.parts["counts"][0]).unwrap();
        assert_eq!(state.values, states[4].values);
        // A whole part drops what it follows.
        let (parts, _) = counts_run(3, 6);
        assert_eq!((parts[4].at, parts[4].base), (5, None));
        let mut whole = parts[4].clone();
        whole.follow(parts[3].clone());
        assert_eq!(whole, parts[4]);
    }

    #[test]
    fn a_state_that_wants_it_writes_a_whole_part_and_large_changes_do_too() {
        let (mut config, parts) = config(1);
        config.policy.full_every = 100;
        let mut c = Checkpointer::new(Some(&config), "counts", 0, 1);
        c.stagger = 0;
        let mut state: Counts = c.restore_incremental();
        (0..10).for_each(|k| state.set(k, Some(k)));
        c.pass_incremental(2, &mut state);
        state.set(1, Some(7));
        state.changed.whole();
        c.pass_incremental(3, &mut state);
        state.set(2, Some(7));
        c.pass_incremental(4, &mut state);
        // Changes of half the keys, twice: the second time the chain would pass the whole
        // state's size.
        (0..5).for_each(|k| state.set(k, Some(k + 1)));
        c.pass_incremental(5, &mut state);
        (0..5).for_each(|k| state.set(k, Some(k + 2)));
        c.pass_incremental(6, &mut state);
        // That part is still written as changes (most of it was written before the
        // checkpoint, in production), and the next part is whole.
        state.set(3, Some(9));
        c.pass_incremental(7, &mut state);
        let bases: Vec<Option<u64>> = parts.try_iter().map(|p| p.base).collect();
        assert_eq!(bases, vec![None, None, Some(2), Some(3), Some(4), None]);
    }

    #[test]
    fn operators_write_their_first_whole_parts_apart() {
        let (mut config, parts) = config(1);
        config.policy.full_every = 10;
        let names = [
            "Baskets",
            "Deduplicate",
            "ExperienceTrees",
            "SettleOrders",
            "Sales",
        ];
        let offsets: std::collections::BTreeSet<u32> =
            names.iter().map(|n| stagger(n, 10)).collect();
        assert!(offsets.len() > 1, "{offsets:?}");
        assert!(offsets.iter().all(|o| *o < 10));
        // The second whole part of an operator comes after 10 - its stagger parts of changes.
        let mut c = Checkpointer::new(Some(&config), "Deduplicate", 0, 1);
        let mut state: Counts = c.restore_incremental();
        (0..100).for_each(|k| state.set(k, Some(k)));
        for t in 2..=13 {
            c.pass_incremental(t, &mut state);
            state.set(t as u32, Some(0));
        }
        let wholes: Vec<u64> = parts
            .try_iter()
            .filter(|p| p.base.is_none())
            .map(|p| p.at)
            .collect();
        assert_eq!(
            wholes,
            vec![1, 1 + 11 - u64::from(stagger("Deduplicate", 10))]
        );
    }

    #[test]
    fn after_an_erasure_in_the_process_every_incremental_operator_writes_a_whole_part() {
        let (mut config, parts) = config(1);
        config.policy.full_every = 100;
        let mut a = Checkpointer::new(Some(&config), "a", 0, 1);
        let mut b = Checkpointer::new(Some(&config), "b", 0, 1);
        a.stagger = 0;
        b.stagger = 0;
        let mut sa: Counts = a.restore_incremental();
        let mut sb: Counts = b.restore_incremental();
        (0..100).for_each(|k| sa.set(k, Some(k)));
        (0..100).for_each(|k| sb.set(k, Some(k)));
        for t in 2..=3 {
            a.pass_incremental(t, &mut sa);
            b.pass_incremental(t, &mut sb);
        }
        // Another operator of the process applies an erasure.
        Checkpointer::new(Some(&config), "orders", 0, 1).note_erasure();
        for t in 4..=5 {
            a.pass_incremental(t, &mut sa);
            b.pass_incremental(t, &mut sb);
        }
        let bases: Vec<(&str, u64, Option<u64>)> = parts
            .try_iter()
            .map(|p| (p.operator, p.at, p.base))
            .collect();
        assert_eq!(
            bases,
            vec![
                ("a", 1, None),
                ("b", 1, None),
                ("a", 2, Some(1)),
                ("b", 2, Some(1)),
                ("a", 3, None),
                ("b", 3, None),
                ("a", 4, Some(3)),
                ("b", 4, Some(3)),
            ]
        );
    }
}
