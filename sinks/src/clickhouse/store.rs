//! [`ClickHouseStore`]: writes the graph's batches into ClickHouse (any version from 18.16 on)
//! over HTTP, and discards what a crash left uncommitted.
//!
//! A batch ([`Batch`]) is written as its versions (one RowBinary `INSERT` per read model, from
//! its definition: `StoredVersion`), its decisions, its erasures
//! ([`crate::clickhouse::privacy`]), then its progress row, which makes it visible in the
//! views. The schema is [`crate::clickhouse::schema`]'s.

use std::time::{Duration, Instant};

use basketflow_kafka::Positions;
use basketflow_vocab::ReadModel;
use clickhouse::Client;

use crate::clickhouse::reader::ClickHouseReader;
use crate::clickhouse::rows::{check_range, DecisionRow, LateEventRow, StoredVersion};
use crate::clickhouse::schema::BATCH_TABLES;
use crate::clickhouse::versions::{Batch, ConvertError, Version};
use crate::clickhouse::ClickHouseError;

/// How long [`ClickHouseStore::discard_uncommitted`] waits for its mutations by default.
pub const DEFAULT_MUTATION_TIMEOUT: Duration = Duration::from_secs(300);

/// Writes read-model batches to ClickHouse (any version from 18.16 on) over HTTP.
///
/// One writer per database: the store assumes nobody else writes its tables or `progress`.
#[derive(Clone)]
pub struct ClickHouseStore {
    reader: ClickHouseReader,
    mutation_timeout: Duration,
    tick_ms: u64,
    dedup_horizon_ms: u64,
    settlement_ms: u64,
}

impl ClickHouseStore {
    /// A store for `database` on the server at `url` (e.g. `http://127.0.0.1:8123`), after
    /// checking that the server answers. The database need not exist yet ([`Self::migrate`]).
    pub async fn connect(
        url: &str,
        database: &str,
        user: &str,
        password: &str,
    ) -> Result<Self, ClickHouseError> {
        Ok(ClickHouseStore {
            reader: ClickHouseReader::connect(url, database, user, password).await?,
            mutation_timeout: DEFAULT_MUTATION_TIMEOUT,
            tick_ms: 0,
            dedup_horizon_ms: 0,
            settlement_ms: 0,
        })
    }

    /// The same store, recording `tick_ms` (the graph's `graph.tick_ms`) with each progress
    /// row (0, the default, records "unknown").
    pub fn with_tick_ms(mut self, tick_ms: u64) -> Self {
        self.tick_ms = tick_ms;
        self
    }

    /// The same store, recording `dedup_horizon_ms` (`graph.dedup_horizon_ms`) with each
    /// progress row (0, the default, records "unknown").
    pub fn with_dedup_horizon_ms(mut self, dedup_horizon_ms: u64) -> Self {
        self.dedup_horizon_ms = dedup_horizon_ms;
        self
    }

    /// The same store, recording `settlement_ms` (`graph.settlement_ms`) with each progress
    /// row (0, the default, records "unknown").
    pub fn with_settlement_ms(mut self, settlement_ms: u64) -> Self {
        self.settlement_ms = settlement_ms;
        self
    }

    /// The same store, waiting at most `timeout` for mutations.
    pub fn with_mutation_timeout(mut self, timeout: Duration) -> Self {
        self.mutation_timeout = timeout;
        self
    }

    /// The same store on another database of the same server (no round trip).
    pub fn on(&self, database: &str) -> ClickHouseStore {
        ClickHouseStore {
            reader: self.reader.with_database(database),
            mutation_timeout: self.mutation_timeout,
            tick_ms: self.tick_ms,
            dedup_horizon_ms: self.dedup_horizon_ms,
            settlement_ms: self.settlement_ms,
        }
    }

    /// The database this store writes.
    pub fn database(&self) -> &str {
        self.reader.database()
    }

    /// The underlying client (no default database set: qualify table names).
    pub fn client(&self) -> &Client {
        self.reader.client()
    }

    /// Reads of the same database.
    pub fn reader(&self) -> &ClickHouseReader {
        &self.reader
    }

    /// Inserts every version of `batch` (one RowBinary `INSERT` per non-empty table), but no
    /// progress row: until [`Self::write_progress`], the versions are invisible in the views.
    /// Writing the same versions again is harmless (identical rows).
    pub async fn write_versions(&self, batch: &Batch) -> Result<(), ClickHouseError> {
        check_through(batch.through, &batch.sold_products_daily)?;
        check_through(batch.through, &batch.shopper_purchases)?;
        check_through(batch.through, &batch.product_affinities)?;
        check_through(batch.through, &batch.baskets)?;
        check_through(batch.through, &batch.order_lines)?;
        // Check every value first, so that a value out of range writes nothing.
        check_range(&batch.sold_products_daily)?;
        check_range(&batch.shopper_purchases)?;
        check_range(&batch.product_affinities)?;
        check_range(&batch.baskets)?;
        check_range(&batch.order_lines)?;
        self.insert_versions(&batch.sold_products_daily).await?;
        self.insert_versions(&batch.shopper_purchases).await?;
        self.insert_versions(&batch.product_affinities).await?;
        self.insert_versions(&batch.baskets).await?;
        self.insert_versions(&batch.order_lines).await?;
        Ok(())
    }

    /// Inserts `versions` into their read model's table, in one `INSERT` (none when empty).
    async fn insert_versions<R: ReadModel>(
        &self,
        versions: &[Version<R>],
    ) -> Result<(), ClickHouseError> {
        if versions.is_empty() {
            return Ok(());
        }
        let table = R::DEFINITION.versions_table;
        let mut insert = self
            .client()
            .insert_unescaped::<StoredVersion<'static, R>>(&format!("{}.{table}", self.database()))
            .await?;
        for version in versions {
            insert.write(&StoredVersion(version)).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Records that every time `<= through` is completely written, with the sources'
    /// `positions` at that time: the views move to it.
    pub async fn write_progress(
        &self,
        through: u64,
        note: &str,
        positions: &Positions,
    ) -> Result<(), ClickHouseError> {
        let db = self.database();
        let positions = serde_json::to_string(positions).expect("positions serialize");
        self.client()
            .query(&format!(
                "INSERT INTO {db}.progress (time, written_at, note, positions, tick_ms, \
                 dedup_horizon_ms, settlement_ms) VALUES (?, now(), ?, ?, ?, ?, ?)"
            ))
            .bind(through)
            .bind(note)
            .bind(positions)
            .bind(self.tick_ms)
            .bind(self.dedup_horizon_ms)
            .bind(self.settlement_ms)
            .execute()
            .await?;
        Ok(())
    }

    /// Inserts `items` (each at the logical time `time(item)`, at most the batch's `through`)
    /// as rows of the log table `<table>_log` in one insert. A crash's copies above the
    /// committed time are discarded on restart, and a replay's copies collapse in the view.
    async fn write_log<T, R>(
        &self,
        table: &'static str,
        through: u64,
        items: &[T],
        time: impl Fn(&T) -> u64,
    ) -> Result<(), ClickHouseError>
    where
        T: Clone,
        R: clickhouse::RowOwned + clickhouse::RowWrite + From<T>,
    {
        if items.is_empty() {
            return Ok(());
        }
        if let Some(t) = items.iter().map(&time).find(|t| *t > through) {
            return Err(ClickHouseError::Batch(ConvertError::BeyondBatch {
                table,
                time: t,
                through,
            }));
        }
        let log = format!("{}.{table}_log", self.database());
        let mut insert = self.client().insert_unescaped::<R>(&log).await?;
        for item in items {
            insert.write(&R::from(item.clone())).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Writes `batch`: its versions and decisions, then its erasures ([`Self::erase`]), then
    /// its progress row ([`Self::write_versions`], [`Self::write_progress`]). An empty batch
    /// only advances the progress.
    pub async fn write_batch(&self, batch: &Batch) -> Result<(), ClickHouseError> {
        self.write_versions(batch).await?;
        let decisions = &batch.decisions;
        self.write_log::<_, DecisionRow>("experience_decisions", batch.through, decisions, |d| {
            d.time
        })
        .await?;
        let late = &batch.late_inputs;
        self.write_log::<_, LateEventRow>("late_events", batch.through, late, |l| l.read_at)
            .await?;
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

    /// The committed time and the sources' positions recorded with it
    /// ([`ClickHouseReader::committed_positions`]).
    pub async fn committed_positions(&self) -> Result<(u64, Positions), ClickHouseError> {
        self.reader.committed_positions().await
    }

    /// The tick recorded with the committed progress row
    /// ([`ClickHouseReader::committed_tick_ms`]).
    pub async fn committed_tick_ms(&self) -> Result<Option<u64>, ClickHouseError> {
        self.reader.committed_recorded("tick_ms").await
    }

    /// The `dedup_horizon_ms` recorded with the committed progress row (as
    /// [`Self::committed_tick_ms`]).
    pub async fn committed_dedup_horizon_ms(&self) -> Result<Option<u64>, ClickHouseError> {
        self.reader.committed_recorded("dedup_horizon_ms").await
    }

    /// The `settlement_ms` recorded with the committed progress row (as
    /// [`Self::committed_tick_ms`]).
    pub async fn committed_settlement_ms(&self) -> Result<Option<u64>, ClickHouseError> {
        self.reader.committed_recorded("settlement_ms").await
    }

    /// The committed time ([`ClickHouseReader::committed`]).
    pub async fn committed(&self) -> Result<u64, ClickHouseError> {
        self.reader.committed().await
    }

    /// Deletes every version after the committed time from every versions table and waits
    /// until the mutations are done: call it on restart, before writing again. Returns how many
    /// versions it deleted.
    pub async fn discard_uncommitted(&self) -> Result<u64, ClickHouseError> {
        let committed = self.committed().await?;
        let mut discarded = 0;
        // The main database first (its count is what is returned), then each retailer copy
        // (`super::copies`): their feeders copied the same uncommitted rows.
        for (i, (store, _)) in self.stores().await?.iter().enumerate() {
            let db = store.database();
            for table in BATCH_TABLES {
                let n: u64 = store
                    .client()
                    .query(&format!("SELECT count() FROM {db}.{table} WHERE time > ?"))
                    .bind(committed)
                    .fetch_one()
                    .await?;
                if n > 0 {
                    store
                        .client()
                        .query(&format!("ALTER TABLE {db}.{table} DELETE WHERE time > ?"))
                        .bind(committed)
                        .execute()
                        .await?;
                    if i == 0 {
                        discarded += n;
                    }
                }
                // Also waits for the mutations of an earlier, interrupted discard.
                store.wait_for_mutations(table).await?;
            }
        }
        Ok(discarded)
    }

    /// Waits until no mutation of `table` is pending, at most the mutation timeout.
    pub(crate) async fn wait_for_mutations(&self, table: &str) -> Result<(), ClickHouseError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let pending: u64 = self
                .client()
                .query(
                    "SELECT count() FROM system.mutations \
                     WHERE database = ? AND table = ? AND is_done = 0",
                )
                .bind(self.database())
                .bind(table)
                .fetch_one()
                .await?;
            if pending == 0 {
                return Ok(());
            }
            if start.elapsed() >= self.mutation_timeout {
                return Err(ClickHouseError::MutationTimeout {
                    table: format!("{}.{table}", self.database()),
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    pub(crate) async fn execute(&self, sql: &str) -> Result<(), ClickHouseError> {
        // `query_raw`: DDL is sent verbatim, without client-side `?` binding.
        self.client().query_raw(sql).execute().await?;
        Ok(())
    }
}

fn check_through<R: ReadModel>(through: u64, versions: &[Version<R>]) -> Result<(), ConvertError> {
    match versions.iter().find(|v| v.time > through) {
        Some(v) => Err(ConvertError::BeyondBatch {
            table: R::DEFINITION.name,
            time: v.time,
            through,
        }),
        None => Ok(()),
    }
}
