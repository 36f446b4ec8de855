//! Privacy in the stored tables: erasure of a shopper and the retention period, as methods of
//! [`ClickHouseStore`].
//!
//! Erasures run inside a batch ([`ClickHouseStore::write_batch`]): after its versions, before
//! its progress row, so nothing of the shopper is written after them and a crash repeats them.
//! Retention runs between batches ([`crate::clickhouse::writer`]); it never changes a view.

use basketflow_vocab::privacy::{Erasure, Retention};

use crate::clickhouse::copies::ERASING;
use crate::clickhouse::schema::{version_key, PER_SHOPPER_TABLES};
use crate::clickhouse::store::ClickHouseStore;
use crate::clickhouse::ClickHouseError;

impl ClickHouseStore {
    /// Forgets the shopper of `erasure` (read at logical time `time`): [`Self::erase_all`] of
    /// one request. Returns the rows removed per table of [`PER_SHOPPER_TABLES`].
    pub async fn erase(&self, erasure: &Erasure, time: u64) -> Result<[u64; 4], ClickHouseError> {
        Ok(self.erase_all(&[(erasure.clone(), time)]).await?[0])
    }

    /// Forgets the shoppers of `erasures` (each read at its logical time) in every table of
    /// [`PER_SHOPPER_TABLES`]: counts each one's rows, deletes them all (one mutation per table,
    /// waited for), then acknowledges each request in `privacy_audit_log`. Call it after the
    /// versions of the erasures' times are written (the graph's tombstones and anonymous order
    /// lines are in the batch), so nothing of the shoppers is written after it. Idempotent.
    pub async fn erase_all(
        &self,
        erasures: &[(Erasure, u64)],
    ) -> Result<Vec<[u64; 4]>, ClickHouseError> {
        let db = self.database();
        let mut removed = vec![[0u64; 4]; erasures.len()];
        if erasures.is_empty() {
            return Ok(removed);
        }
        // The shoppers go in the body of an insert, and the statements name them by a
        // subquery: never in a statement's text, which every user may read for its own
        // database in `system.mutations` (a retailer copy's analysts, `super::copies`).
        self.create_copy_tables().await?;
        self.execute(&format!("TRUNCATE TABLE {db}.{ERASING}"))
            .await?;
        let mut insert = self
            .client()
            .insert_unescaped::<ErasingRow>(&format!("{db}.{ERASING}"))
            .await?;
        for (erasure, _) in erasures {
            insert
                .write(&ErasingRow {
                    retailer_id: erasure.request.retailer_id.clone(),
                    shopper_id: erasure.request.shopper_id.clone(),
                })
                .await?;
        }
        insert.end().await?;
        let named = format!(
            "(retailer_id, shopper_id) IN (SELECT retailer_id, shopper_id FROM {db}.{ERASING})"
        );
        // The main database, then each filled retailer copy, each counted on its own: a retry
        // after the main tables were done still finds a copy's rows. On 18.16 a mutation
        // rewrites every part: one per table and database for all the requests.
        for (n, (store, _)) in self.stores().await?.iter().enumerate() {
            let sdb = store.database();
            for (i, table) in PER_SHOPPER_TABLES.iter().enumerate() {
                let counts: Vec<(String, String, u64)> = store
                    .client()
                    .query(&format!(
                        "SELECT retailer_id, shopper_id, count() FROM {sdb}.{table} \
                         WHERE {named} GROUP BY retailer_id, shopper_id"
                    ))
                    .fetch_all()
                    .await?;
                if counts.is_empty() {
                    continue;
                }
                if n == 0 {
                    for ((erasure, _), removed) in erasures.iter().zip(removed.iter_mut()) {
                        let r = &erasure.request;
                        removed[i] = counts
                            .iter()
                            .find(|(rid, sid, _)| *rid == r.retailer_id && *sid == r.shopper_id)
                            .map_or(0, |c| c.2);
                    }
                }
                store
                    .execute(&format!("ALTER TABLE {sdb}.{table} DELETE WHERE {named}"))
                    .await?;
            }
            for table in PER_SHOPPER_TABLES {
                store.wait_for_mutations(table).await?;
            }
        }
        self.execute(&format!("TRUNCATE TABLE {db}.{ERASING}"))
            .await?;
        for ((erasure, time), removed) in erasures.iter().zip(&removed) {
            let r = &erasure.request;
            self.client()
                .query(&format!(
                    "INSERT INTO {db}.privacy_audit_log (request_id, retailer_id, received_at, \
                     applied_at, removed_shopper_purchases, removed_baskets, removed_order_lines, \
                     removed_experience_decisions, time) VALUES (?, ?, toDateTime(?), now(), ?, ?, ?, ?, ?)"
                ))
                .bind(&r.request_id)
                .bind(&r.retailer_id)
                .bind(time / 1000)
                .bind(removed[0])
                .bind(removed[1])
                .bind(removed[2])
                .bind(removed[3])
                .bind(time)
                .execute()
                .await?;
            log::info!(request_id = r.request_id.as_str(), time, removed_shopper_purchases = removed[0], removed_baskets = removed[1], removed_order_lines = removed[2], removed_experience_decisions = removed[3]; "erasure applied");
        }
        Ok(removed)
    }

    /// Deletes the per-shopper rows older than each retailer's retention period at committed
    /// time `through`: whole monthly partitions of the decisions log when every row in them is
    /// past the longest period, then rows of [`PER_SHOPPER_TABLES`] with a shopper and
    /// `time < through - period` (mutations). Such a version is always superseded by one at or below `through` (every event
    /// leaves the graph's state within its period, which changes the row), so the views do
    /// not change; only the history that still names the shopper goes. Returns the rows
    /// deleted.
    ///
    /// Applied to every retailer copy too (`super::copies`); the count is the main database's.
    pub async fn apply_retention(
        &self,
        through: u64,
        retention: &Retention,
    ) -> Result<u64, ClickHouseError> {
        let mut deleted = 0;
        for (i, (store, copy)) in self.stores().await?.iter().enumerate() {
            // A copy holds one retailer: its period alone, and no other retailer named in the
            // statements (their text is readable in the copy's `system.mutations`).
            let retention = match copy {
                None => retention.clone(),
                Some(c) => Retention {
                    default_ms: retention.period_ms(&c.retailer_id),
                    per_retailer_ms: Default::default(),
                },
            };
            let n = store.apply_retention_here(through, &retention).await?;
            if i == 0 {
                deleted = n;
            }
        }
        Ok(deleted)
    }

    /// [`Self::apply_retention`] on this store's database alone.
    async fn apply_retention_here(
        &self,
        through: u64,
        retention: &Retention,
    ) -> Result<u64, ClickHouseError> {
        let db = self.database();
        let own: Vec<String> = retention.per_retailer_ms.keys().cloned().collect();
        let mut deleted = self
            .drop_expired_decision_partitions(through, retention)
            .await?;
        for table in PER_SHOPPER_TABLES {
            let mut mutated = false;
            let mut groups: Vec<(Option<&str>, u64)> = vec![(None, retention.default_ms)];
            groups.extend(
                retention
                    .per_retailer_ms
                    .iter()
                    .map(|(r, p)| (Some(r.as_str()), *p)),
            );
            for (retailer, period) in groups {
                let Some(cutoff) = through.checked_sub(period) else {
                    continue;
                };
                // (An empty array literal has type Array(Nothing), which `has` refuses.)
                let base = match (retailer, own.is_empty()) {
                    (Some(_), _) => "shopper_id != '' AND time < ? AND retailer_id = ?",
                    (None, true) => "shopper_id != '' AND time < ?",
                    (None, false) => "shopper_id != '' AND time < ? AND NOT has(?, retailer_id)",
                };
                // A key's newest committed version, when live, is never deleted: it may be
                // unchanged since an event left (a duplicate copy took over), and the view
                // shows it. Decisions are not versioned.
                let condition = match version_key(table) {
                    Some(key) => format!(
                        "{base} AND ({key}, time) NOT IN (SELECT {key}, max(time) FROM {db}.{table} \
                         WHERE time <= {through} GROUP BY {key} HAVING argMax(deleted, time) = 0)"
                    ),
                    None => base.to_string(),
                };
                let bind = |q: clickhouse::query::Query| match (retailer, own.is_empty()) {
                    (Some(r), _) => q.bind(cutoff).bind(r),
                    (None, true) => q.bind(cutoff),
                    (None, false) => q.bind(cutoff).bind(own.clone()),
                };
                let n: u64 = bind(self.client().query(&format!(
                    "SELECT count() FROM {db}.{table} WHERE {condition}"
                )))
                .fetch_one()
                .await?;
                if n > 0 {
                    bind(self.client().query(&format!(
                        "ALTER TABLE {db}.{table} DELETE WHERE {condition}"
                    )))
                    .execute()
                    .await?;
                    deleted += n;
                    mutated = true;
                }
            }
            if mutated {
                self.wait_for_mutations(table).await?;
            }
        }
        Ok(deleted)
    }

    /// Retention by partitions where it can be: drops each monthly partition of
    /// `experience_decisions_log` whose every row is older than the longest retention period
    /// at `through` (instant, unlike a mutation, which rewrites parts). Returns the rows
    /// dropped.
    async fn drop_expired_decision_partitions(
        &self,
        through: u64,
        retention: &Retention,
    ) -> Result<u64, ClickHouseError> {
        let db = self.database();
        let Some(cutoff) = through.checked_sub(retention.bounds_ms().1) else {
            return Ok(0);
        };
        let expired: Vec<(u32, u64)> = self
            .client()
            .query(&format!(
                "SELECT toYYYYMM(occurred_at) AS month, count() FROM {db}.experience_decisions_log \
                 GROUP BY month HAVING max(time) < ? ORDER BY month"
            ))
            .bind(cutoff)
            .fetch_all()
            .await?;
        let mut dropped = 0;
        for (month, rows) in expired {
            self.execute(&format!(
                "ALTER TABLE {db}.experience_decisions_log DROP PARTITION {month}"
            ))
            .await?;
            dropped += rows;
        }
        Ok(dropped)
    }
}

/// A shopper being erased, as `erasing_shoppers` holds it.
#[derive(clickhouse::Row, serde::Serialize)]
struct ErasingRow {
    retailer_id: String,
    shopper_id: String,
}
