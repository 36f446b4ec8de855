//! From the graph's differential updates to the version rows the ClickHouse store keeps.
//!
//! Each read-model output of the graph is an upsert stream: a key has at most one live row, and
//! a change is the retraction (`-1`) of the old row and the insertion (`+1`) of the new one at
//! the same time. The sink stores such a stream as *versions*: for a key and a time at which
//! the key changed, the key's row as of that time, or a tombstone when the key has no row any
//! more (key fields, zero values, `deleted = 1`).
//!
//! [`to_versions`] is the conversion. It consolidates the updates per `(key, time)` and then,
//! for each `(key, time)`:
//! - a row with net diff `+1` → that row, `deleted = false`, at that time;
//! - only a row with net diff `-1` → the key's tombstone at that time;
//! - nothing left → nothing (e.g. a change to identical figures, or an insert and a retraction
//!   of the same row at the same time).
//!
//! A batch spanning several times gets one version per key **and per time** at which the key
//! changed (not only the last): the storage then holds every completed time exactly, whatever
//! time the progress row names, at the cost of a few more rows when a key changes several times
//! within one batch. Anything that is not an upsert stream (a net diff other than -1, 0 or +1,
//! two rows inserted or two retracted for one key at one time) is a [`ConvertError`]: it is a
//! bug upstream, and guessing would store wrong figures.

use std::hash::{BuildHasher, Hasher};

use basketflow_vocab::privacy::Erasure;
use basketflow_vocab::read_models::{
    BasketLine, PaidOrderLine, ProductAffinity, ReadModel, ShopperPurchase, SoldProductDaily,
};

/// The seed of the hash that orders the keys of a conversion ([`to_versions`]): fixed, so
/// that the same updates give the same rows in the same order.
const KEY_ORDER_SEED: u64 = 0x6261_736b_6574_666c;

/// One differential update as the graph emits it: `(row, logical time, diff)`.
pub type Update<R> = (R, u64, isize);

/// One stored version: the key's row as of `time`, or its tombstone.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version<R> {
    /// The row; for a tombstone, the key fields with zero values.
    pub row: R,
    /// True when the key has no row from `time` on.
    pub deleted: bool,
    /// The graph's logical time of the change.
    pub time: u64,
}

/// Updates that are not an upsert stream (at most one live row per key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// After consolidation, a row's net diff at one time is neither -1, 0 nor +1.
    #[error("{table}: key {key} at time {time}: net diff {diff} for one row (expected -1 or +1)")]
    Multiplicity {
        /// The read model.
        table: &'static str,
        /// The key, debug-formatted.
        key: String,
        /// The logical time.
        time: u64,
        /// The row's net diff.
        diff: isize,
    },
    /// Two or more distinct rows inserted (or retracted) for one key at one time.
    #[error("{table}: key {key} at time {time}: {count} rows {what} (at most one per key)")]
    SeveralRows {
        /// The read model.
        table: &'static str,
        /// The key, debug-formatted.
        key: String,
        /// The logical time.
        time: u64,
        /// How many distinct rows.
        count: usize,
        /// `"inserted"` or `"retracted"`.
        what: &'static str,
    },
    /// An update's time is after the time the batch claims to complete.
    #[error("{table}: update at time {time} is beyond the batch's time {through}")]
    BeyondBatch {
        /// The read model.
        table: &'static str,
        /// The update's time.
        time: u64,
        /// The batch's time.
        through: u64,
    },
}

/// Converts the updates of a set of completed times into versions: one per key and time at
/// which the key changed, in the order of a fixed hash of the key, then time, then key (the
/// same updates give the same versions in the same order).
///
/// See the [module documentation](self) for the rules.
pub fn to_versions<R: ReadModel>(
    updates: impl IntoIterator<Item = Update<R>>,
) -> Result<Vec<Version<R>>, ConvertError> {
    // Sorted by (hash of the key, time, key, row): two updates of different keys are told
    // apart by one integer comparison nearly always (sorted by the key's strings, the sort
    // compared long shared prefixes). The time before the key: a key's updates at different
    // times (most of a catch-up's batch) are told apart without comparing its strings. Every
    // (key, time) group is still contiguous, which is all the conversion needs (two keys of
    // one hash would interleave by time, each group whole). The key is hashed and compared
    // in place: a key built per update (its strings cloned) cost allocations and twice the
    // bytes moved.
    let hasher = foldhash::fast::FixedState::with_seed(KEY_ORDER_SEED);
    let mut keyed: Vec<(u64, Update<R>)> = updates
        .into_iter()
        .map(|u| {
            let mut h = hasher.build_hasher();
            u.0.hash_key(&mut h);
            (h.finish(), u)
        })
        .collect();
    keyed.sort_unstable_by(|(ha, a), (hb, b)| {
        ha.cmp(hb)
            .then(a.1.cmp(&b.1))
            .then_with(|| a.0.cmp_key(&b.0))
            .then_with(|| a.0.cmp(&b.0))
    });
    let sorted: Vec<Update<R>> = keyed.into_iter().map(|(_, u)| u).collect();

    // Consolidate in place (a catch-up's batch is hundreds of thousands of updates: a second
    // vector of them cost fresh pages each batch): one entry per (row, time) with the sum
    // of its diffs, zeros dropped.
    let mut consolidated = sorted;
    consolidated.dedup_by(|next, kept| {
        let same = kept.1 == next.1 && kept.0 == next.0;
        if same {
            kept.2 += next.2;
        }
        same
    });
    consolidated.retain(|u| u.2 != 0);

    // One version per (key, time) group, its row moved out of the batch (not cloned). At most
    // one per update: reserved once (a catch-up's batch grew it by doubling, each step a
    // copy into fresh pages: a quarter of the writer's samples).
    let mut versions = Vec::with_capacity(consolidated.len());
    let mut updates = consolidated.into_iter().peekable();
    while let Some((head, time, head_diff)) = updates.next() {
        let mut others = Vec::new();
        while let Some(u) = updates.next_if(|u| u.1 == time && u.0.cmp_key(&head).is_eq()) {
            others.push((u.0, u.2));
        }
        let key = || format!("{:?}", head.key());
        let diffs = std::iter::once(head_diff).chain(others.iter().map(|u| u.1));
        if let Some(bad) = diffs.clone().find(|d| d.abs() != 1) {
            return Err(ConvertError::Multiplicity {
                table: R::DEFINITION.name,
                key: key(),
                time,
                diff: bad,
            });
        }
        let inserted = diffs.clone().filter(|d| *d > 0).count();
        let retracted = diffs.count() - inserted;
        let several = |count, what| ConvertError::SeveralRows {
            table: R::DEFINITION.name,
            key: key(),
            time,
            count,
            what,
        };
        if inserted > 1 {
            return Err(several(inserted, "inserted"));
        }
        if retracted > 1 {
            return Err(several(retracted, "retracted"));
        }
        let (row, deleted) = if head_diff > 0 {
            (head, false)
        } else {
            match others.into_iter().find(|u| u.1 > 0) {
                Some((row, _)) => (row, false),
                None => (R::tombstone(head.key()), true),
            }
        };
        versions.push(Version { row, deleted, time });
    }
    Ok(versions)
}

/// The graph's updates to every read model for a set of completed times.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Updates {
    /// Updates to `sold_products_daily`.
    pub sold_products_daily: Vec<Update<SoldProductDaily>>,
    /// Updates to `shopper_purchases`.
    pub shopper_purchases: Vec<Update<ShopperPurchase>>,
    /// Updates to `product_affinities`.
    pub product_affinities: Vec<Update<ProductAffinity>>,
    /// Updates to `baskets`.
    pub baskets: Vec<Update<BasketLine>>,
    /// Updates to `order_lines`.
    pub order_lines: Vec<Update<PaidOrderLine>>,
}

/// What the sink writes for a set of completed times: the versions of every read model, then a
/// progress row with time `through`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Every time `<= through` is complete once this batch is written: the progress row's time.
    pub through: u64,
    /// Versions for `sold_products_daily_versions`.
    pub sold_products_daily: Vec<Version<SoldProductDaily>>,
    /// Versions for `shopper_purchases_versions`.
    pub shopper_purchases: Vec<Version<ShopperPurchase>>,
    /// Versions for `product_affinities_versions`.
    pub product_affinities: Vec<Version<ProductAffinity>>,
    /// Versions for `baskets_versions`.
    pub baskets: Vec<Version<BasketLine>>,
    /// Versions for `order_lines_versions`.
    pub order_lines: Vec<Version<PaidOrderLine>>,
    /// How far the sources had read at `through` (recorded in the progress row; a restart
    /// reclocks its replay by it, see `basketflow_ingest::kafka_source`).
    pub positions: basketflow_kafka::Positions,
    /// Decisions of the batch's times, for `experience_decisions_log`.
    pub decisions: Vec<basketflow_vocab::Decision>,
    /// Erasure requests of the batch's times, each with the time it was read: applied to every
    /// per-shopper table after the versions are written, before the progress row.
    pub erasures: Vec<(Erasure, u64)>,
    /// Late inputs of the batch's times, for `late_events_log`.
    pub late_inputs: Vec<basketflow_vocab::LateInput>,
}

impl Batch {
    /// Converts the updates of all times `<= through` that are not yet written (see
    /// [`to_versions`]). Every update must have a time `<= through`.
    pub fn from_updates(through: u64, updates: Updates) -> Result<Batch, ConvertError> {
        fn convert<R: ReadModel>(
            through: u64,
            updates: Vec<Update<R>>,
        ) -> Result<Vec<Version<R>>, ConvertError> {
            if let Some(&(_, time, _)) = updates.iter().find(|u| u.1 > through) {
                return Err(ConvertError::BeyondBatch {
                    table: R::DEFINITION.name,
                    time,
                    through,
                });
            }
            to_versions(updates)
        }
        Ok(Batch {
            through,
            sold_products_daily: convert(through, updates.sold_products_daily)?,
            shopper_purchases: convert(through, updates.shopper_purchases)?,
            product_affinities: convert(through, updates.product_affinities)?,
            baskets: convert(through, updates.baskets)?,
            order_lines: convert(through, updates.order_lines)?,
            positions: Default::default(),
            decisions: Vec::new(),
            erasures: Vec::new(),
            late_inputs: Vec::new(),
        })
    }

    /// The number of version rows in the batch (the progress row not counted).
    pub fn len(&self) -> usize {
        self.sold_products_daily.len()
            + self.shopper_purchases.len()
            + self.product_affinities.len()
            + self.baskets.len()
            + self.order_lines.len()
            + self.decisions.len()
            + self.late_inputs.len()
    }

    /// True when the batch has no version rows (it may still advance the progress).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the later batch `next` (its times all after this one's): one batch through
    /// `next.through`, with `next`'s positions.
    pub fn append(&mut self, next: Batch) {
        self.through = next.through;
        self.sold_products_daily.extend(next.sold_products_daily);
        self.shopper_purchases.extend(next.shopper_purchases);
        self.product_affinities.extend(next.product_affinities);
        self.baskets.extend(next.baskets);
        self.order_lines.extend(next.order_lines);
        self.decisions.extend(next.decisions);
        self.erasures.extend(next.erasures);
        self.late_inputs.extend(next.late_inputs);
        self.positions = next.positions;
    }
}

#[cfg(test)]
mod tests;
