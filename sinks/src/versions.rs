//! From the graph's differential updates to the version rows the ClickHouse sink stores.
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

use std::fmt::Debug;

use basketflow_dataflows::rows::{
    BasketLine, PaidOrderLine, ProductAffinity, ShopperPurchase, SoldProductDaily,
};
use basketflow_vocab::Timestamp;

/// One differential update as the graph emits it: `(row, logical time, diff)`.
pub type Update<R> = (R, u64, isize);

/// A read-model row type with a key, as the sink stores it.
pub trait ReadModelRow: Ord + Clone + Debug {
    /// The key fields: at most one live row per key.
    type Key: Ord + Clone + Debug;
    /// The read model's name: its analyst view's, `<TABLE>_versions` for the storage table.
    const TABLE: &'static str;
    /// This row's key.
    fn key(&self) -> Self::Key;
    /// The row stored for a deleted key: the key fields, every value field zero.
    fn tombstone(key: Self::Key) -> Self;
}

impl ReadModelRow for SoldProductDaily {
    type Key = (i32, String, String, String);
    const TABLE: &'static str = "sold_products_daily";
    fn key(&self) -> Self::Key {
        (
            self.day,
            self.retailer_id.clone(),
            self.product_id.clone(),
            self.category.clone(),
        )
    }
    fn tombstone((day, retailer_id, product_id, category): Self::Key) -> Self {
        SoldProductDaily {
            day,
            retailer_id,
            product_id,
            category,
            quantity: 0,
            revenue_cents: 0,
            orders: 0,
        }
    }
}

impl ReadModelRow for ShopperPurchase {
    type Key = (String, String, String);
    const TABLE: &'static str = "shopper_purchases";
    fn key(&self) -> Self::Key {
        (
            self.retailer_id.clone(),
            self.shopper_id.clone(),
            self.product_id.clone(),
        )
    }
    fn tombstone((retailer_id, shopper_id, product_id): Self::Key) -> Self {
        ShopperPurchase {
            retailer_id,
            shopper_id,
            product_id,
            quantity: 0,
            orders: 0,
            last_purchase_at: Timestamp(0),
        }
    }
}

impl ReadModelRow for ProductAffinity {
    type Key = (String, String, String);
    const TABLE: &'static str = "product_affinities";
    fn key(&self) -> Self::Key {
        (
            self.retailer_id.clone(),
            self.product_a.clone(),
            self.product_b.clone(),
        )
    }
    fn tombstone((retailer_id, product_a, product_b): Self::Key) -> Self {
        ProductAffinity {
            retailer_id,
            product_a,
            product_b,
            orders_together: 0,
        }
    }
}

impl ReadModelRow for BasketLine {
    type Key = (String, String, String);
    const TABLE: &'static str = "baskets";
    fn key(&self) -> Self::Key {
        (
            self.retailer_id.clone(),
            self.shopper_id.clone(),
            self.product_id.clone(),
        )
    }
    fn tombstone((retailer_id, shopper_id, product_id): Self::Key) -> Self {
        BasketLine {
            retailer_id,
            shopper_id,
            product_id,
            quantity: 0,
        }
    }
}

impl ReadModelRow for PaidOrderLine {
    type Key = (String, String, String, String);
    const TABLE: &'static str = "order_lines";
    fn key(&self) -> Self::Key {
        (
            self.retailer_id.clone(),
            self.order_id.clone(),
            self.product_id.clone(),
            self.category.clone(),
        )
    }
    /// The shopper is empty, the instant and the day are the epoch, `cancelled` is false.
    fn tombstone((retailer_id, order_id, product_id, category): Self::Key) -> Self {
        PaidOrderLine {
            retailer_id,
            order_id,
            product_id,
            category,
            shopper_id: String::new(),
            quantity: 0,
            revenue_cents: 0,
            ordered_at: Timestamp(0),
            day: 0,
            cancelled: false,
        }
    }
}

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

/// Converts the updates of a set of completed times into versions, sorted by key then time.
///
/// See the [module documentation](self) for the rules.
pub fn to_versions<R: ReadModelRow>(
    updates: impl IntoIterator<Item = Update<R>>,
) -> Result<Vec<Version<R>>, ConvertError> {
    let mut sorted: Vec<(R::Key, u64, R, isize)> = updates
        .into_iter()
        .map(|(row, time, diff)| (row.key(), time, row, diff))
        .collect();
    sorted.sort_unstable_by(|a, b| (&a.0, a.1, &a.2).cmp(&(&b.0, b.1, &b.2)));

    // Consolidate: one entry per (key, time, row) with the sum of its diffs, zeros dropped.
    let mut consolidated: Vec<(R::Key, u64, R, isize)> = Vec::with_capacity(sorted.len());
    for (key, time, row, diff) in sorted {
        match consolidated.last_mut() {
            Some(last) if last.1 == time && last.2 == row => last.3 += diff,
            _ => {
                if consolidated.last().is_some_and(|last| last.3 == 0) {
                    consolidated.pop();
                }
                consolidated.push((key, time, row, diff));
            }
        }
    }
    if consolidated.last().is_some_and(|last| last.3 == 0) {
        consolidated.pop();
    }

    let mut versions = Vec::new();
    let mut rest = consolidated.as_slice();
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take_while(|u| u.1 == first.1 && u.0 == first.0)
            .count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        let (key, time) = (&first.0, first.1);
        if let Some(bad) = group.iter().find(|u| u.3.abs() != 1) {
            return Err(ConvertError::Multiplicity {
                table: R::TABLE,
                key: format!("{key:?}"),
                time,
                diff: bad.3,
            });
        }
        let inserted: Vec<&R> = group.iter().filter(|u| u.3 > 0).map(|u| &u.2).collect();
        let retracted = group.len() - inserted.len();
        let several = |count, what| ConvertError::SeveralRows {
            table: R::TABLE,
            key: format!("{key:?}"),
            time,
            count,
            what,
        };
        if inserted.len() > 1 {
            return Err(several(inserted.len(), "inserted"));
        }
        if retracted > 1 {
            return Err(several(retracted, "retracted"));
        }
        versions.push(match inserted.first() {
            Some(row) => Version {
                row: (*row).clone(),
                deleted: false,
                time,
            },
            None => Version {
                row: R::tombstone(key.clone()),
                deleted: true,
                time,
            },
        });
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
    pub erasures: Vec<(basketflow_dataflows::privacy::Erasure, u64)>,
}

impl Batch {
    /// Converts the updates of all times `<= through` that are not yet written (see
    /// [`to_versions`]). Every update must have a time `<= through`.
    pub fn from_updates(through: u64, updates: Updates) -> Result<Batch, ConvertError> {
        fn convert<R: ReadModelRow>(
            through: u64,
            updates: Vec<Update<R>>,
        ) -> Result<Vec<Version<R>>, ConvertError> {
            if let Some(&(_, time, _)) = updates.iter().find(|u| u.1 > through) {
                return Err(ConvertError::BeyondBatch {
                    table: R::TABLE,
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
    }

    /// True when the batch has no version rows (it may still advance the progress).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(shopper: &str, product: &str, quantity: i64) -> BasketLine {
        BasketLine {
            retailer_id: "r1".into(),
            shopper_id: shopper.into(),
            product_id: product.into(),
            quantity,
        }
    }

    fn live(row: BasketLine, time: u64) -> Version<BasketLine> {
        Version {
            row,
            deleted: false,
            time,
        }
    }

    fn gone(shopper: &str, product: &str, time: u64) -> Version<BasketLine> {
        Version {
            row: line(shopper, product, 0),
            deleted: true,
            time,
        }
    }

    #[test]
    fn inserts_changes_deletions_and_noops() {
        let updates = vec![
            // s1/p1: inserted at 1, changed at 2, deleted at 3, re-added at 4.
            (line("s1", "p1", 2), 1, 1),
            (line("s1", "p1", 2), 2, -1),
            (line("s1", "p1", 5), 2, 1),
            (line("s1", "p1", 5), 3, -1),
            (line("s1", "p1", 1), 4, 1),
            // s1/p2: a change to identical figures at 2: nothing. Deleted at 3.
            (line("s1", "p2", 7), 2, -1),
            (line("s1", "p2", 7), 2, 1),
            (line("s1", "p2", 7), 3, -1),
            // s2/p1: inserted and retracted at the same time: nothing; then the diffs of one
            // insertion arrive in pieces (+1 +1 -1) at 5.
            (line("s2", "p1", 3), 4, 1),
            (line("s2", "p1", 3), 4, -1),
            (line("s2", "p1", 4), 5, 1),
            (line("s2", "p1", 4), 5, 1),
            (line("s2", "p1", 4), 5, -1),
            // s3/p9: a deletion only (the row was written by an earlier batch).
            (line("s3", "p9", 8), 6, -1),
        ];
        // Order of the input does not matter.
        let mut reversed = updates.clone();
        reversed.reverse();
        let expected = vec![
            live(line("s1", "p1", 2), 1),
            live(line("s1", "p1", 5), 2),
            gone("s1", "p1", 3),
            live(line("s1", "p1", 1), 4),
            gone("s1", "p2", 3),
            live(line("s2", "p1", 4), 5),
            gone("s3", "p9", 6),
        ];
        assert_eq!(to_versions(updates).unwrap(), expected);
        assert_eq!(to_versions(reversed).unwrap(), expected);
        assert_eq!(
            to_versions(Vec::<Update<BasketLine>>::new()).unwrap(),
            vec![]
        );
    }

    #[test]
    fn tombstones_of_every_read_model_keep_the_key_and_zero_the_values() {
        let sold = SoldProductDaily {
            day: 20_000,
            retailer_id: "r".into(),
            product_id: "p".into(),
            category: "c".into(),
            quantity: 3,
            revenue_cents: 300,
            orders: 1,
        };
        assert_eq!(
            to_versions(vec![(sold.clone(), 9, -1)]).unwrap(),
            vec![Version {
                row: SoldProductDaily {
                    quantity: 0,
                    revenue_cents: 0,
                    orders: 0,
                    ..sold
                },
                deleted: true,
                time: 9,
            }]
        );
        let bought = ShopperPurchase {
            retailer_id: "r".into(),
            shopper_id: "s".into(),
            product_id: "p".into(),
            quantity: 2,
            orders: 2,
            last_purchase_at: Timestamp(1_700_000_000_000_000),
        };
        assert_eq!(
            to_versions(vec![(bought.clone(), 4, -1)]).unwrap()[0].row,
            ShopperPurchase {
                quantity: 0,
                orders: 0,
                last_purchase_at: Timestamp(0),
                ..bought
            }
        );
        let pair = ProductAffinity {
            retailer_id: "r".into(),
            product_a: "a".into(),
            product_b: "b".into(),
            orders_together: 5,
        };
        assert_eq!(
            to_versions(vec![(pair.clone(), 4, -1)]).unwrap()[0].row,
            ProductAffinity {
                orders_together: 0,
                ..pair
            }
        );
        let line = PaidOrderLine {
            retailer_id: "r".into(),
            order_id: "o".into(),
            product_id: "p".into(),
            category: "c".into(),
            shopper_id: "s".into(),
            quantity: 2,
            revenue_cents: 300,
            ordered_at: Timestamp(1_700_000_000_000_000),
            day: 19_675,
            cancelled: true,
        };
        assert_eq!(
            to_versions(vec![(line.clone(), 4, -1)]).unwrap()[0].row,
            PaidOrderLine {
                shopper_id: String::new(),
                quantity: 0,
                revenue_cents: 0,
                ordered_at: Timestamp(0),
                day: 0,
                cancelled: false,
                ..line
            }
        );
    }

    #[test]
    fn a_cancellation_of_a_paid_order_is_a_new_version_of_each_line() {
        let line = |cancelled| PaidOrderLine {
            retailer_id: "r".into(),
            order_id: "o".into(),
            product_id: "p".into(),
            category: "c".into(),
            shopper_id: "s".into(),
            quantity: 2,
            revenue_cents: 300,
            ordered_at: Timestamp(1_700_000_000_000_000),
            day: 19_675,
            cancelled,
        };
        let batch = Batch::from_updates(
            2,
            Updates {
                order_lines: vec![
                    (line(false), 1, 1),
                    (line(false), 2, -1),
                    (line(true), 2, 1),
                ],
                ..Updates::default()
            },
        )
        .unwrap();
        assert_eq!(
            batch.order_lines,
            vec![
                Version {
                    row: line(false),
                    deleted: false,
                    time: 1,
                },
                Version {
                    row: line(true),
                    deleted: false,
                    time: 2,
                },
            ]
        );
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn rejects_what_is_not_an_upsert_stream() {
        assert_eq!(
            to_versions(vec![(line("s", "p", 1), 1, 2)]),
            Err(ConvertError::Multiplicity {
                table: "baskets",
                key: r#"("r1", "s", "p")"#.into(),
                time: 1,
                diff: 2,
            })
        );
        assert_eq!(
            to_versions(vec![(line("s", "p", 1), 1, 1), (line("s", "p", 2), 1, 1)]),
            Err(ConvertError::SeveralRows {
                table: "baskets",
                key: r#"("r1", "s", "p")"#.into(),
                time: 1,
                count: 2,
                what: "inserted",
            })
        );
        assert!(matches!(
            to_versions(vec![(line("s", "p", 1), 1, -1), (line("s", "p", 2), 1, -1)]),
            Err(ConvertError::SeveralRows {
                what: "retracted",
                ..
            })
        ));
    }

    #[test]
    fn batches_convert_every_read_model_and_check_their_time() {
        let updates = Updates {
            baskets: vec![(line("s", "p", 1), 3, 1), (line("s", "q", 1), 5, -1)],
            ..Updates::default()
        };
        let batch = Batch::from_updates(5, updates.clone()).unwrap();
        assert_eq!(
            batch,
            Batch {
                through: 5,
                baskets: vec![live(line("s", "p", 1), 3), gone("s", "q", 5)],
                ..Batch::default()
            }
        );
        assert_eq!(batch.len(), 2);
        assert_eq!(
            Batch::from_updates(4, updates),
            Err(ConvertError::BeyondBatch {
                table: "baskets",
                time: 5,
                through: 4,
            })
        );
        assert!(Batch::from_updates(7, Updates::default())
            .unwrap()
            .is_empty());
    }
}
