//! ClickHouse: where the read models, the decisions log and the privacy audit are stored, and
//! how they are read back.
//!
//! | module | job |
//! | --- | --- |
//! | [`operator`] | the timely operator: collects the graph's updates on worker 0, cuts batches of completed times, exposes the durable frontier |
//! | [`writer`] | the writer thread: writes each batch, retries forever, sweeps retention |
//! | [`versions`] | the graph's updates to a read model become versions of its keys |
//! | [`store`] | [`ClickHouseStore`]: writes batches (versions, decisions, progress), discards uncommitted versions |
//! | [`privacy`] | erasure and retention on the stored tables (methods of [`ClickHouseStore`]) |
//! | [`schema`] | the DDL of `sinks/sql/`, checked against the read models' definitions; migration |
//! | [`rows`] | RowBinary rows: a read model's versions and view rows (from its definition), decisions |
//! | [`reader`] | [`ClickHouseReader`]: reads (views, committed time) for the CLI and the tree builder |
//! | [`copies`] | retailer copies: each retailer's rows in a database its analysts alone may read |
//! | [`analysts`] | provisioning of the retailers' analysts (users file, copies wanted) |
//!
//! # Storage
//! Database `basketflow` (configurable). For each read model `<name>` (one definition each, in
//! [`basketflow_vocab::read_models`]) a storage table `<name>_versions`
//! (`ReplacingMergeTree(time)` ordered by the key, then `time`) receives one row per key and
//! graph time at which the key changed ([`versions`]): the key's row as of that time, or a
//! tombstone (`deleted = 1`). After every version of every time `<= T` is inserted in every
//! table, a row with time `T` goes into `progress`; the committed time is `max(time)` of
//! `progress` (0 when empty).
//!
//! # Analyst views
//! `sold_products_daily`, `shopper_purchases`, `product_affinities`, `baskets` and
//! `order_lines` return, for each key, the newest version at or before the committed time
//! unless it is a tombstone (`argMax(column, time) ... GROUP BY key HAVING argMax(deleted,
//! time) = 0` over rows with `time <= (SELECT max(time) FROM progress)`). They need neither
//! `FINAL` nor sign arithmetic, do not depend on whether ReplacingMergeTree has merged
//! committed versions, hide versions written after the last progress row, and all show the
//! same committed time. The DDL lives in `sinks/sql/*.sql` ([`schema::TABLES`],
//! [`schema::VIEWS`]) and is also checked against a current ClickHouse by
//! `scripts/chdb_check.py`.
//!
//! # Recovery
//! A crash between the versions and the progress row leaves uncommitted versions behind;
//! [`ClickHouseStore::discard_uncommitted`] deletes them (a mutation) before the graph writes
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

use std::time::Duration;

use clickhouse::Client;

use crate::clickhouse::versions::ConvertError;

pub mod analysts;
pub mod campaigns;
pub mod copies;
#[cfg(test)]
mod fixtures;
mod migrate;
pub mod operator;
pub mod privacy;
pub mod reader;
pub mod rows;
pub mod schema;
pub mod store;
pub mod versions;
pub mod writer;

pub use operator::{committed, prepare, write_read_models, PrivateOutputs};
pub use reader::{ClickHouseReader, ReadModelCursor, ReadModelQuery};
pub use rows::ViewRow;
pub use schema::Migration;
pub use store::ClickHouseStore;
pub use writer::SinkStats;

/// Where the read models go: a ClickHouse server and database.
#[derive(Clone, Debug)]
pub struct Target {
    /// ClickHouse HTTP URL.
    pub url: String,
    /// Database.
    pub database: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
    /// The graph's `graph.tick_ms`, recorded with each progress row (0: not recorded).
    pub tick_ms: u64,
    /// The graph's `graph.dedup_horizon_ms`, recorded likewise.
    pub dedup_horizon_ms: u64,
    /// The graph's `graph.settlement_ms`, recorded likewise.
    pub settlement_ms: u64,
}

impl Target {
    /// A store on this target (checks that the server answers).
    pub async fn connect(&self) -> Result<ClickHouseStore, ClickHouseError> {
        Ok(
            ClickHouseStore::connect(&self.url, &self.database, &self.user, &self.password)
                .await?
                .with_tick_ms(self.tick_ms)
                .with_dedup_horizon_ms(self.dedup_horizon_ms)
                .with_settlement_ms(self.settlement_ms),
        )
    }
}

/// Errors of ClickHouse reads and writes.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
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
        /// How long the store waited.
        waited: Duration,
    },
}

/// A client for `database` on the server at `url` (e.g. `http://127.0.0.1:8123`), after
/// checking the database name and that the server answers. The database need not exist yet.
async fn connect(
    url: &str,
    database: &str,
    user: &str,
    password: &str,
) -> Result<Client, ClickHouseError> {
    let valid = database
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        && database.chars().next().is_some_and(|c| !c.is_ascii_digit());
    if !valid {
        return Err(ClickHouseError::InvalidDatabaseName(database.to_owned()));
    }
    let client = Client::default()
        .with_url(url)
        .with_user(user)
        .with_password(password)
        // Schema validation sends `describe_include_subcolumns`, which 18.16 rejects; the
        // row types are checked by this crate's integration test instead.
        .with_validation(false);
    client.query("SELECT 1").execute().await?;
    Ok(client)
}
