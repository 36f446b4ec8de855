//! The ClickHouse read-model sink: versioned upserts, a progress log and analyst views.
//!
//! # Storage
//! Database `basketflow` (configurable). For each read model `<name>` a storage table
//! `<name>_versions` (`ReplacingMergeTree(time)` ordered by the key, then `time`) receives one row per key
//! and graph time at which the key changed ([`crate::versions`]): the key's row as of that
//! time, or a tombstone (`deleted = 1`). After every version of every time `<= T` is inserted
//! in every table, a row with time `T` goes into `progress`; the committed time is
//! `max(time)` of `progress` (0 when empty).
//!
//! # Analyst views
//! `sold_products_daily`, `shopper_purchases`, `product_affinities`, `baskets` and
//! `order_lines` return, for
//! each key, the newest version at or before the committed time unless it is a tombstone
//! (`argMax(column, time) ... GROUP BY key HAVING argMax(deleted, time) = 0` over rows with
//! `time <= (SELECT max(time) FROM progress)`). They need neither `FINAL` nor sign arithmetic,
//! do not depend on whether ReplacingMergeTree has merged committed versions, hide versions
//! written after the last progress row, and all show the same committed time. The DDL lives in
//! `sinks/sql/*.sql` ([`TABLES`], [`VIEWS`]) and is also checked against a current ClickHouse
//! by `scripts/chdb_check.py`.
//!
//! # Recovery
//! A crash between the versions and the progress row leaves uncommitted versions behind;
//! [`ClickHouseSink::discard_uncommitted`] deletes them (a mutation) before the graph writes
//! those times again.
//!
//! # Why `time` is part of the sort key
//! ReplacingMergeTree keeps one row per sort key when it merges parts. Ordered by the key alone,
//! a merge of a part holding an uncommitted version (time > committed) with the part holding the
//! committed one would delete the committed version, and the views would lose that key until the
//! time is rewritten. Ordered by `(key, time)`, a merge only collapses identical versions (a
//! replay writing the same time again), so committed versions are never lost. The cost: every
//! version of a key is kept; compacting superseded committed versions is left to a maintenance
//! job (not built yet).

use std::time::{Duration, Instant};

use basketflow_dataflows::rows::{
    BasketLine, PaidOrderLine, ProductAffinity, ShopperPurchase, SoldProductDaily,
};
use clickhouse::{Client, Row, RowWrite};
use serde::Serialize;

use crate::decisions::DecisionRow;
use crate::versions::{Batch, ConvertError, ReadModelRow, Version};
use basketflow_dataflows::privacy::{Erasure, Retention};
use basketflow_kafka::Positions;

/// Where the database name goes in the statements of [`TABLES`] and [`VIEWS`].
pub const DATABASE_PLACEHOLDER: &str = "{database}";

/// The default database name.
pub const DEFAULT_DATABASE: &str = "basketflow";

/// Name and `CREATE TABLE IF NOT EXISTS` statement of every table, in creation order.
pub const TABLES: [(&str, &str); 8] = [
    ("progress", include_str!("../sql/table_progress.sql")),
    (
        "sold_products_daily_versions",
        include_str!("../sql/table_sold_products_daily_versions.sql"),
    ),
    (
        "shopper_purchases_versions",
        include_str!("../sql/table_shopper_purchases_versions.sql"),
    ),
    (
        "product_affinities_versions",
        include_str!("../sql/table_product_affinities_versions.sql"),
    ),
    (
        "baskets_versions",
        include_str!("../sql/table_baskets_versions.sql"),
    ),
    (
        "order_lines_versions",
        include_str!("../sql/table_order_lines_versions.sql"),
    ),
    (
        "experience_decisions_log",
        include_str!("../sql/table_experience_decisions_log.sql"),
    ),
    (
        "privacy_audit_log",
        include_str!("../sql/table_privacy_audit_log.sql"),
    ),
];

/// Name and `CREATE VIEW IF NOT EXISTS <db>.<name> AS ...` statement of every analyst view.
pub const VIEWS: [(&str, &str); 7] = [
    (
        "sold_products_daily",
        include_str!("../sql/view_sold_products_daily.sql"),
    ),
    (
        "shopper_purchases",
        include_str!("../sql/view_shopper_purchases.sql"),
    ),
    (
        "product_affinities",
        include_str!("../sql/view_product_affinities.sql"),
    ),
    ("baskets", include_str!("../sql/view_baskets.sql")),
    ("order_lines", include_str!("../sql/view_order_lines.sql")),
    (
        "experience_decisions",
        include_str!("../sql/view_experience_decisions.sql"),
    ),
    (
        "privacy_audit",
        include_str!("../sql/view_privacy_audit.sql"),
    ),
];

/// The tables that hold versions (every table of [`TABLES`] but `progress`).
pub const VERSION_TABLES: [&str; 5] = [
    "sold_products_daily_versions",
    "shopper_purchases_versions",
    "product_affinities_versions",
    "baskets_versions",
    "order_lines_versions",
];

/// The tables a batch writes rows with a `time` into: a crash before the progress row leaves
/// rows above the committed time in them, which [`ClickHouseSink::discard_uncommitted`]
/// deletes.
pub const BATCH_TABLES: [&str; 7] = [
    "sold_products_daily_versions",
    "shopper_purchases_versions",
    "product_affinities_versions",
    "baskets_versions",
    "order_lines_versions",
    "experience_decisions_log",
    "privacy_audit_log",
];

/// The tables whose rows name a shopper (`retailer_id`, `shopper_id`, `time` columns): an
/// erasure deletes the shopper's rows from each, retention the rows older than the period.
/// `order_lines_versions` also holds anonymous rows (empty `shopper_id`), which stay.
pub const PER_SHOPPER_TABLES: [&str; 4] = [
    "shopper_purchases_versions",
    "baskets_versions",
    "order_lines_versions",
    "experience_decisions_log",
];

/// The key columns of a per-shopper versions table (`None` for the decisions log).
fn version_key(table: &str) -> Option<&'static str> {
    match table {
        "shopper_purchases_versions" | "baskets_versions" => {
            Some("retailer_id, shopper_id, product_id")
        }
        "order_lines_versions" => Some("retailer_id, order_id, product_id, category"),
        _ => None,
    }
}

/// `sql` (one of [`TABLES`] or [`VIEWS`]) for database `database`.
pub fn statement(sql: &str, database: &str) -> String {
    sql.replace(DATABASE_PLACEHOLDER, database)
}

/// Views are compared and swapped under temporary names with these prefixes.
const PROBE_PREFIX: &str = "_bf_probe_";
const OLD_PREFIX: &str = "_bf_old_";

/// How long [`ClickHouseSink::discard_uncommitted`] waits for its mutations by default.
pub const DEFAULT_MUTATION_TIMEOUT: Duration = Duration::from_secs(300);

/// Errors of the ClickHouse sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The database name is not a plain identifier.
    #[error(
        "invalid database name {0:?}: use ASCII letters, digits and '_', not starting with a digit"
    )]
    InvalidDatabaseName(String),
    /// The server or the connection failed.
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// A value does not fit its ClickHouse column type.
    #[error("{table}: {field} = {value} does not fit ClickHouse {column_type}")]
    OutOfRange {
        /// The storage table.
        table: &'static str,
        /// The column.
        field: &'static str,
        /// The value.
        value: i64,
        /// The column's type.
        column_type: &'static str,
    },
    /// The batch is inconsistent (a version after the batch's time).
    #[error(transparent)]
    Batch(#[from] ConvertError),
    /// The progress table holds positions that are not the JSON this crate writes.
    #[error("progress.positions is not valid JSON positions: {0}")]
    BadProgress(String),
    /// A mutation did not finish in time (`system.mutations` still shows it not done).
    #[error("mutations of {table} not done after {waited:?}")]
    MutationTimeout {
        /// The table, `database.table`.
        table: String,
        /// How long the sink waited.
        waited: Duration,
    },
}

/// What [`ClickHouseSink::migrate`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Migration {
    /// Objects that did not exist and were created (`database`, then table and view names).
    pub created: Vec<String>,
    /// Existing views whose definition differed from [`VIEWS`] and were replaced.
    pub replaced_views: Vec<String>,
}

impl Migration {
    /// True when the schema was already as [`TABLES`] and [`VIEWS`] say.
    pub fn is_noop(&self) -> bool {
        self.created.is_empty() && self.replaced_views.is_empty()
    }
}

/// Writes read-model batches to ClickHouse (any version from 18.16 on) over HTTP.
///
/// One writer per database: the sink assumes nobody else writes its tables or `progress`.
#[derive(Clone)]
pub struct ClickHouseSink {
    client: Client,
    database: String,
    mutation_timeout: Duration,
}

impl ClickHouseSink {
    /// A sink for `database` on the server at `url` (e.g. `http://127.0.0.1:8123`), after
    /// checking that the server answers. The database need not exist yet ([`Self::migrate`]).
    pub async fn connect(
        url: &str,
        database: &str,
        user: &str,
        password: &str,
    ) -> Result<Self, SinkError> {
        let valid = database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && database.chars().next().is_some_and(|c| !c.is_ascii_digit());
        if !valid {
            return Err(SinkError::InvalidDatabaseName(database.to_owned()));
        }
        let client = Client::default()
            .with_url(url)
            .with_user(user)
            .with_password(password)
            // Schema validation sends `describe_include_subcolumns`, which 18.16 rejects; the
            // row types are checked by this crate's integration test instead.
            .with_validation(false);
        client.query("SELECT 1").execute().await?;
        Ok(ClickHouseSink {
            client,
            database: database.to_owned(),
            mutation_timeout: DEFAULT_MUTATION_TIMEOUT,
        })
    }

    /// The same sink, waiting at most `timeout` for mutations.
    pub fn with_mutation_timeout(mut self, timeout: Duration) -> Self {
        self.mutation_timeout = timeout;
        self
    }

    /// The database this sink writes.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The underlying client (no default database set: qualify table names).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the database, the tables and the views that do not exist, and replaces views
    /// whose definition differs from [`VIEWS`] (atomically, by `RENAME`). Idempotent. Existing
    /// tables are left as they are, even if their columns differ.
    pub async fn migrate(&self) -> Result<Migration, SinkError> {
        let db = &self.database;
        let mut migration = Migration::default();
        let exists: u64 = self
            .client
            .query("SELECT count() FROM system.databases WHERE name = ?")
            .bind(db)
            .fetch_one()
            .await?;
        if exists == 0 {
            self.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
                .await?;
            migration.created.push(db.clone());
        }
        for (name, sql) in TABLES {
            if !self.exists(name).await? {
                self.execute(&statement(sql, db)).await?;
                migration.created.push(name.to_owned());
            }
        }
        // Databases from before positions were recorded (18.16 has no ADD COLUMN IF NOT EXISTS).
        let has_positions: u64 = self
            .client
            .query("SELECT count() FROM system.columns WHERE database = ? AND table = 'progress' AND name = 'positions'")
            .bind(db)
            .fetch_one()
            .await?;
        if has_positions == 0 {
            self.execute(&format!(
                "ALTER TABLE {db}.progress ADD COLUMN positions String"
            ))
            .await?;
            migration.created.push("progress.positions".to_owned());
        }
        for (name, sql) in VIEWS {
            self.drop_if_exists(&format!("{PROBE_PREFIX}{name}"))
                .await?;
            self.drop_if_exists(&format!("{OLD_PREFIX}{name}")).await?;
            if !self.exists(name).await? {
                self.execute(&statement(sql, db)).await?;
                migration.created.push(name.to_owned());
            } else if self.replace_view_if_changed(name, sql).await? {
                migration.replaced_views.push(name.to_owned());
            }
        }
        Ok(migration)
    }

    /// Creates the view under a probe name, compares the server's rendering of both, and swaps
    /// them if they differ. True when the view was replaced.
    async fn replace_view_if_changed(&self, name: &str, sql: &str) -> Result<bool, SinkError> {
        let db = &self.database;
        let probe = format!("{PROBE_PREFIX}{name}");
        let probe_sql = probe_statement(name, sql);
        self.execute(&statement(&probe_sql, db)).await?;
        let current = self.create_query(name).await?;
        let wanted = self
            .create_query(&probe)
            .await?
            .replace(&format!("{db}.{probe}"), &format!("{db}.{name}"));
        if current == wanted {
            self.drop_if_exists(&probe).await?;
            return Ok(false);
        }
        let old = format!("{OLD_PREFIX}{name}");
        self.execute(&format!(
            "RENAME TABLE {db}.{name} TO {db}.{old}, {db}.{probe} TO {db}.{name}"
        ))
        .await?;
        self.drop_if_exists(&old).await?;
        Ok(true)
    }

    /// Inserts every version of `batch` (one RowBinary `INSERT` per non-empty table), but no
    /// progress row: until [`Self::write_progress`], the versions are invisible in the views.
    /// Writing the same versions again is harmless (identical rows).
    pub async fn write_versions(&self, batch: &Batch) -> Result<(), SinkError> {
        check_through(batch.through, &batch.sold_products_daily)?;
        check_through(batch.through, &batch.shopper_purchases)?;
        check_through(batch.through, &batch.product_affinities)?;
        check_through(batch.through, &batch.baskets)?;
        check_through(batch.through, &batch.order_lines)?;
        // Convert everything first, so that a value out of range writes nothing.
        let sold = batch
            .sold_products_daily
            .iter()
            .map(SoldProductDailyRow::new)
            .collect::<Result<Vec<_>, _>>()?;
        let bought = batch
            .shopper_purchases
            .iter()
            .map(ShopperPurchaseRow::new)
            .collect::<Result<Vec<_>, _>>()?;
        let pairs: Vec<_> = batch
            .product_affinities
            .iter()
            .map(ProductAffinityRow::new)
            .collect();
        let lines: Vec<_> = batch.baskets.iter().map(BasketLineRow::new).collect();
        let ordered = batch
            .order_lines
            .iter()
            .map(OrderLineRow::new)
            .collect::<Result<Vec<_>, _>>()?;
        self.insert::<SoldProductDailyRow>(&sold).await?;
        self.insert::<ShopperPurchaseRow>(&bought).await?;
        self.insert::<ProductAffinityRow>(&pairs).await?;
        self.insert::<BasketLineRow>(&lines).await?;
        self.insert::<OrderLineRow>(&ordered).await?;
        Ok(())
    }

    /// Records that every time `<= through` is completely written, with the sources'
    /// `positions` at that time: the views move to it.
    pub async fn write_progress(
        &self,
        through: u64,
        note: &str,
        positions: &Positions,
    ) -> Result<(), SinkError> {
        let db = &self.database;
        let positions = serde_json::to_string(positions).expect("positions serialize");
        self.client
            .query(&format!(
                "INSERT INTO {db}.progress (time, written_at, note, positions) VALUES (?, now(), ?, ?)"
            ))
            .bind(through)
            .bind(note)
            .bind(positions)
            .execute()
            .await?;
        Ok(())
    }

    /// Inserts the batch's decisions into `experience_decisions_log` (a crash's copies above
    /// the committed time are discarded on restart, and a replay's copies collapse).
    async fn write_decisions(&self, batch: &Batch) -> Result<(), SinkError> {
        if batch.decisions.is_empty() {
            return Ok(());
        }
        if let Some(d) = batch.decisions.iter().find(|d| d.time > batch.through) {
            return Err(SinkError::Batch(ConvertError::BeyondBatch {
                table: "experience_decisions",
                time: d.time,
                through: batch.through,
            }));
        }
        let mut insert = self
            .client
            .insert_unescaped::<DecisionRow>(&format!("{}.experience_decisions_log", self.database))
            .await?;
        for d in &batch.decisions {
            insert.write(&DecisionRow::from(d.clone())).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Forgets the shopper of `erasure` (read at logical time `time`): [`Self::erase_all`] of
    /// one request. Returns the rows removed per table of [`PER_SHOPPER_TABLES`].
    pub async fn erase(&self, erasure: &Erasure, time: u64) -> Result<[u64; 4], SinkError> {
        Ok(self.erase_all(&[(erasure.clone(), time)]).await?[0])
    }

    /// Forgets the shoppers of `erasures` (each read at its logical time) in every table of
    /// [`PER_SHOPPER_TABLES`]: counts each one's rows, deletes them all (one mutation per table,
    /// waited for), then acknowledges each request in `privacy_audit_log`. Call it after the
    /// versions of the erasures' times are written (the graph's tombstones and anonymous order
    /// lines are in the batch), so nothing of the shoppers is written after it. Idempotent.
    pub async fn erase_all(&self, erasures: &[(Erasure, u64)]) -> Result<Vec<[u64; 4]>, SinkError> {
        let db = &self.database;
        let mut removed = vec![[0u64; 4]; erasures.len()];
        for (i, table) in PER_SHOPPER_TABLES.iter().enumerate() {
            for (n, (erasure, _)) in erasures.iter().enumerate() {
                removed[n][i] = self
                    .client
                    .query(&format!(
                        "SELECT count() FROM {db}.{table} WHERE retailer_id = ? AND shopper_id = ?"
                    ))
                    .bind(&erasure.request.retailer_id)
                    .bind(&erasure.request.shopper_id)
                    .fetch_one()
                    .await?;
            }
            let present: Vec<&Erasure> = erasures
                .iter()
                .zip(&removed)
                .filter(|(_, r)| r[i] > 0)
                .map(|((e, _), _)| e)
                .collect();
            if present.is_empty() {
                continue;
            }
            // On 18.16 a mutation rewrites every part: one per table for all the requests.
            let condition =
                vec!["(retailer_id = ? AND shopper_id = ?)"; present.len()].join(" OR ");
            let mut query = self.client.query(&format!(
                "ALTER TABLE {db}.{table} DELETE WHERE {condition}"
            ));
            for e in &present {
                query = query
                    .bind(&e.request.retailer_id)
                    .bind(&e.request.shopper_id);
            }
            query.execute().await?;
        }
        for table in PER_SHOPPER_TABLES {
            self.wait_for_mutations(table).await?;
        }
        for ((erasure, time), removed) in erasures.iter().zip(&removed) {
            let r = &erasure.request;
            self.client
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
    pub async fn apply_retention(
        &self,
        through: u64,
        retention: &Retention,
    ) -> Result<u64, SinkError> {
        let db = &self.database;
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
                let n: u64 = bind(self.client.query(&format!(
                    "SELECT count() FROM {db}.{table} WHERE {condition}"
                )))
                .fetch_one()
                .await?;
                if n > 0 {
                    bind(self.client.query(&format!(
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
    ) -> Result<u64, SinkError> {
        let db = &self.database;
        let Some(cutoff) = through.checked_sub(retention.bounds_ms().1) else {
            return Ok(0);
        };
        let expired: Vec<(u32, u64)> = self
            .client
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

    /// Writes `batch`: its versions and decisions, then its erasures ([`Self::erase`]), then
    /// its progress row ([`Self::write_versions`], [`Self::write_progress`]). An empty batch
    /// only advances the progress.
    pub async fn write_batch(&self, batch: &Batch) -> Result<(), SinkError> {
        self.write_versions(batch).await?;
        self.write_decisions(batch).await?;
        if !batch.erasures.is_empty() {
            self.erase_all(&batch.erasures).await?;
        }
        let note = format!(
            "versions: sold_products_daily {} shopper_purchases {} product_affinities {} baskets {} \
             order_lines {}",
            batch.sold_products_daily.len(),
            batch.shopper_purchases.len(),
            batch.product_affinities.len(),
            batch.baskets.len(),
            batch.order_lines.len()
        );
        self.write_progress(batch.through, &note, &batch.positions)
            .await
    }

    /// The committed time and the sources' positions recorded with it (`(0, empty)` when
    /// nothing is committed).
    pub async fn committed_positions(&self) -> Result<(u64, Positions), SinkError> {
        let db = &self.database;
        let rows: Vec<(u64, String)> = self
            .client
            .query(&format!(
                "SELECT time, positions FROM {db}.progress ORDER BY time DESC LIMIT 1"
            ))
            .fetch_all()
            .await?;
        Ok(match rows.into_iter().next() {
            None => (0, Positions::new()),
            Some((t, json)) if json.is_empty() => (t, Positions::new()),
            Some((t, json)) => (
                t,
                serde_json::from_str(&json).map_err(|e| SinkError::BadProgress(e.to_string()))?,
            ),
        })
    }

    /// The committed time: the greatest progress row's, 0 when there is none.
    pub async fn committed(&self) -> Result<u64, SinkError> {
        let db = &self.database;
        Ok(self
            .client
            .query(&format!("SELECT max(time) FROM {db}.progress"))
            .fetch_one()
            .await?)
    }

    /// Deletes every version after the committed time from every versions table and waits
    /// until the mutations are done: call it on restart, before writing again. Returns how many
    /// versions it deleted.
    pub async fn discard_uncommitted(&self) -> Result<u64, SinkError> {
        let db = &self.database;
        let committed = self.committed().await?;
        let mut discarded = 0;
        for table in BATCH_TABLES {
            let n: u64 = self
                .client
                .query(&format!("SELECT count() FROM {db}.{table} WHERE time > ?"))
                .bind(committed)
                .fetch_one()
                .await?;
            if n > 0 {
                self.client
                    .query(&format!("ALTER TABLE {db}.{table} DELETE WHERE time > ?"))
                    .bind(committed)
                    .execute()
                    .await?;
                discarded += n;
            }
            // Also waits for the mutations of an earlier, interrupted discard.
            self.wait_for_mutations(table).await?;
        }
        Ok(discarded)
    }

    async fn wait_for_mutations(&self, table: &str) -> Result<(), SinkError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let pending: u64 = self
                .client
                .query(
                    "SELECT count() FROM system.mutations \
                     WHERE database = ? AND table = ? AND is_done = 0",
                )
                .bind(&self.database)
                .bind(table)
                .fetch_one()
                .await?;
            if pending == 0 {
                return Ok(());
            }
            if start.elapsed() >= self.mutation_timeout {
                return Err(SinkError::MutationTimeout {
                    table: format!("{}.{table}", self.database),
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    async fn insert<T: Row + RowWrite + StorageRow>(
        &self,
        rows: &[T::Value<'_>],
    ) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert_unescaped::<T>(&format!("{}.{}", self.database, T::TABLE))
            .await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    async fn execute(&self, sql: &str) -> Result<(), SinkError> {
        // `query_raw`: DDL is sent verbatim, without client-side `?` binding.
        self.client.query_raw(sql).execute().await?;
        Ok(())
    }

    async fn exists(&self, name: &str) -> Result<bool, SinkError> {
        let n: u64 = self
            .client
            .query("SELECT count() FROM system.tables WHERE database = ? AND name = ?")
            .bind(&self.database)
            .bind(name)
            .fetch_one()
            .await?;
        Ok(n > 0)
    }

    async fn create_query(&self, name: &str) -> Result<String, SinkError> {
        Ok(self
            .client
            .query("SELECT create_table_query FROM system.tables WHERE database = ? AND name = ?")
            .bind(&self.database)
            .bind(name)
            .fetch_one()
            .await?)
    }

    async fn drop_if_exists(&self, name: &str) -> Result<(), SinkError> {
        self.execute(&format!("DROP TABLE IF EXISTS {}.{name}", self.database))
            .await
    }
}

/// `sql` of view `name` creating the view under its probe name instead.
fn probe_statement(name: &str, sql: &str) -> String {
    let from = format!("{DATABASE_PLACEHOLDER}.{name} AS");
    let to = format!("{DATABASE_PLACEHOLDER}.{PROBE_PREFIX}{name} AS");
    debug_assert!(sql.contains(&from), "view {name}: unexpected statement");
    sql.replacen(&from, &to, 1)
}

fn check_through<R: ReadModelRow>(
    through: u64,
    versions: &[Version<R>],
) -> Result<(), ConvertError> {
    match versions.iter().find(|v| v.time > through) {
        Some(v) => Err(ConvertError::BeyondBatch {
            table: R::TABLE,
            time: v.time,
            through,
        }),
        None => Ok(()),
    }
}

/// A RowBinary row of one versions table.
trait StorageRow {
    /// The storage table's name.
    const TABLE: &'static str;
}

#[derive(Row, Serialize)]
struct SoldProductDailyRow<'a> {
    day: u16,
    retailer_id: &'a str,
    product_id: &'a str,
    category: &'a str,
    quantity: i64,
    revenue_cents: i64,
    orders: i64,
    deleted: u8,
    time: u64,
}

impl StorageRow for SoldProductDailyRow<'_> {
    const TABLE: &'static str = "sold_products_daily_versions";
}

impl<'a> SoldProductDailyRow<'a> {
    fn new(v: &'a Version<SoldProductDaily>) -> Result<Self, SinkError> {
        let r = &v.row;
        Ok(SoldProductDailyRow {
            day: u16::try_from(r.day).map_err(|_| SinkError::OutOfRange {
                table: Self::TABLE,
                field: "day",
                value: r.day.into(),
                column_type: "Date (days 0..=65535 since 1970-01-01)",
            })?,
            retailer_id: &r.retailer_id,
            product_id: &r.product_id,
            category: &r.category,
            quantity: r.quantity,
            revenue_cents: r.revenue_cents,
            orders: r.orders,
            deleted: v.deleted.into(),
            time: v.time,
        })
    }
}

#[derive(Row, Serialize)]
struct ShopperPurchaseRow<'a> {
    retailer_id: &'a str,
    shopper_id: &'a str,
    product_id: &'a str,
    quantity: i64,
    orders: i64,
    last_purchase_at: u32,
    deleted: u8,
    time: u64,
}

impl StorageRow for ShopperPurchaseRow<'_> {
    const TABLE: &'static str = "shopper_purchases_versions";
}

impl<'a> ShopperPurchaseRow<'a> {
    fn new(v: &'a Version<ShopperPurchase>) -> Result<Self, SinkError> {
        let r = &v.row;
        let seconds = r.last_purchase_at.unix_seconds();
        Ok(ShopperPurchaseRow {
            retailer_id: &r.retailer_id,
            shopper_id: &r.shopper_id,
            product_id: &r.product_id,
            quantity: r.quantity,
            orders: r.orders,
            last_purchase_at: u32::try_from(seconds).map_err(|_| SinkError::OutOfRange {
                table: Self::TABLE,
                field: "last_purchase_at",
                value: seconds,
                column_type: "DateTime (seconds 0..=4294967295 since the epoch)",
            })?,
            deleted: v.deleted.into(),
            time: v.time,
        })
    }
}

#[derive(Row, Serialize)]
struct ProductAffinityRow<'a> {
    retailer_id: &'a str,
    product_a: &'a str,
    product_b: &'a str,
    orders_together: i64,
    deleted: u8,
    time: u64,
}

impl StorageRow for ProductAffinityRow<'_> {
    const TABLE: &'static str = "product_affinities_versions";
}

impl<'a> ProductAffinityRow<'a> {
    fn new(v: &'a Version<ProductAffinity>) -> Self {
        let r = &v.row;
        ProductAffinityRow {
            retailer_id: &r.retailer_id,
            product_a: &r.product_a,
            product_b: &r.product_b,
            orders_together: r.orders_together,
            deleted: v.deleted.into(),
            time: v.time,
        }
    }
}

#[derive(Row, Serialize)]
struct BasketLineRow<'a> {
    retailer_id: &'a str,
    shopper_id: &'a str,
    product_id: &'a str,
    quantity: i64,
    deleted: u8,
    time: u64,
}

impl StorageRow for BasketLineRow<'_> {
    const TABLE: &'static str = "baskets_versions";
}

impl<'a> BasketLineRow<'a> {
    fn new(v: &'a Version<BasketLine>) -> Self {
        let r = &v.row;
        BasketLineRow {
            retailer_id: &r.retailer_id,
            shopper_id: &r.shopper_id,
            product_id: &r.product_id,
            quantity: r.quantity,
            deleted: v.deleted.into(),
            time: v.time,
        }
    }
}

#[derive(Row, Serialize)]
struct OrderLineRow<'a> {
    retailer_id: &'a str,
    order_id: &'a str,
    shopper_id: &'a str,
    product_id: &'a str,
    category: &'a str,
    quantity: i64,
    revenue_cents: i64,
    ordered_at: u32,
    day: u16,
    cancelled: u8,
    deleted: u8,
    time: u64,
}

impl StorageRow for OrderLineRow<'_> {
    const TABLE: &'static str = "order_lines_versions";
}

impl<'a> OrderLineRow<'a> {
    fn new(v: &'a Version<PaidOrderLine>) -> Result<Self, SinkError> {
        let r = &v.row;
        let seconds = r.ordered_at.unix_seconds();
        Ok(OrderLineRow {
            retailer_id: &r.retailer_id,
            order_id: &r.order_id,
            shopper_id: &r.shopper_id,
            product_id: &r.product_id,
            category: &r.category,
            quantity: r.quantity,
            revenue_cents: r.revenue_cents,
            ordered_at: u32::try_from(seconds).map_err(|_| SinkError::OutOfRange {
                table: Self::TABLE,
                field: "ordered_at",
                value: seconds,
                column_type: "DateTime (seconds 0..=4294967295 since the epoch)",
            })?,
            day: u16::try_from(r.day).map_err(|_| SinkError::OutOfRange {
                table: Self::TABLE,
                field: "day",
                value: r.day.into(),
                column_type: "Date (days 0..=65535 since 1970-01-01)",
            })?,
            cancelled: r.cancelled.into(),
            deleted: v.deleted.into(),
            time: v.time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sql_file_is_used_and_names_its_object() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".sql"))
            .collect();
        files.sort();
        let mut used: Vec<String> = TABLES
            .iter()
            .map(|(n, _)| format!("table_{n}.sql"))
            .chain(VIEWS.iter().map(|(n, _)| format!("view_{n}.sql")))
            .collect();
        used.sort();
        assert_eq!(files, used);
        for (name, sql) in TABLES {
            assert!(sql.contains(&format!("CREATE TABLE IF NOT EXISTS {{database}}.{name}\n")));
        }
        for (name, sql) in VIEWS {
            assert!(sql.contains(&format!(
                "CREATE VIEW IF NOT EXISTS {{database}}.{name} AS\n"
            )));
            let probe = probe_statement(name, sql);
            assert!(probe.contains(&format!("{{database}}.{PROBE_PREFIX}{name} AS\n")));
            assert!(!probe.contains(&format!("{{database}}.{name} AS")));
        }
        // The decisions log is not versioned: a replay's copy is the same decision.
        let versions: Vec<&str> = TABLES
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| n.ends_with("_versions"))
            .collect();
        assert_eq!(versions, VERSION_TABLES);
        assert_eq!(
            <SoldProductDaily as ReadModelRow>::TABLE,
            &SoldProductDailyRow::TABLE[..SoldProductDailyRow::TABLE.len() - "_versions".len()]
        );
    }

    #[test]
    fn values_out_of_range_are_errors() {
        let v = Version {
            row: SoldProductDaily {
                day: -1,
                retailer_id: "r".into(),
                product_id: "p".into(),
                category: "c".into(),
                quantity: 1,
                revenue_cents: 1,
                orders: 1,
            },
            deleted: false,
            time: 1,
        };
        assert!(matches!(
            SoldProductDailyRow::new(&v),
            Err(SinkError::OutOfRange { field: "day", .. })
        ));
        let v = Version {
            row: ShopperPurchase {
                retailer_id: "r".into(),
                shopper_id: "s".into(),
                product_id: "p".into(),
                quantity: 1,
                orders: 1,
                last_purchase_at: basketflow_vocab::Timestamp(-1),
            },
            deleted: false,
            time: 1,
        };
        assert!(matches!(
            ShopperPurchaseRow::new(&v),
            Err(SinkError::OutOfRange {
                field: "last_purchase_at",
                ..
            })
        ));
        let line = PaidOrderLine {
            retailer_id: "r".into(),
            order_id: "o".into(),
            product_id: "p".into(),
            category: "c".into(),
            shopper_id: "s".into(),
            quantity: 1,
            revenue_cents: 1,
            ordered_at: basketflow_vocab::Timestamp(-1),
            day: 0,
            cancelled: false,
        };
        let v = Version {
            row: line.clone(),
            deleted: false,
            time: 1,
        };
        assert!(matches!(
            OrderLineRow::new(&v),
            Err(SinkError::OutOfRange {
                field: "ordered_at",
                ..
            })
        ));
        let v = Version {
            row: PaidOrderLine {
                ordered_at: basketflow_vocab::Timestamp(0),
                day: 70_000,
                ..line
            },
            deleted: false,
            time: 1,
        };
        assert!(matches!(
            OrderLineRow::new(&v),
            Err(SinkError::OutOfRange { field: "day", .. })
        ));
    }
}
