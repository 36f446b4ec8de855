//! [`ClickHouseReader`]: reads the stored data back, for whoever is not the writer (the
//! privacy CLI, the tree builder, tests) and for the writer's own restart.
//!
//! Read models are read from their analyst views into their own row types
//! ([`ClickHouseReader::read_model`]), through the same definition the writer inserts with, so
//! a reader never redeclares a read model's columns.

use std::marker::PhantomData;

use basketflow_kafka::Positions;
use basketflow_vocab::ReadModel;
use clickhouse::query::{Query, RowCursor};
use clickhouse::sql::Bind;
use clickhouse::Client;

use crate::clickhouse::rows::ViewRow;
use crate::clickhouse::ClickHouseError;

/// Reads a basketflow database in ClickHouse (any version from 18.16 on) over HTTP.
#[derive(Clone)]
pub struct ClickHouseReader {
    client: Client,
    database: String,
}

impl ClickHouseReader {
    /// A reader of `database` on the server at `url` (e.g. `http://127.0.0.1:8123`), after
    /// checking the database name and that the server answers (the database need not exist).
    pub async fn connect(
        url: &str,
        database: &str,
        user: &str,
        password: &str,
    ) -> Result<Self, ClickHouseError> {
        Ok(ClickHouseReader {
            client: super::connect(url, database, user, password).await?,
            database: database.to_owned(),
        })
    }

    /// The same server and credentials, reading `database` (a plain name, checked when the
    /// reader was made for another one; no round trip).
    pub fn with_database(&self, database: &str) -> ClickHouseReader {
        ClickHouseReader {
            client: self.client.clone(),
            database: database.to_owned(),
        }
    }

    /// The database this reader reads.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The underlying client (no default database set: qualify table names).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Rows of read model `R` from its analyst view: `SELECT <R's columns> FROM
    /// <database>.<R's view> <tail>`, where `tail` (e.g. `WHERE retailer_id IN ? ORDER BY
    /// shopper_id`) may hold `?` placeholders for [`ReadModelQuery::bind`].
    pub fn read_model<R: ReadModel>(&self, tail: &str) -> ReadModelQuery<R> {
        let sql = format!(
            "SELECT ?fields FROM {}.{} {tail}",
            self.database,
            R::DEFINITION.name
        );
        ReadModelQuery {
            query: self.client.query(&sql),
            row: PhantomData,
        }
    }

    /// The committed time and the sources' positions recorded with it (`(0, empty)` when
    /// nothing is committed).
    pub async fn committed_positions(&self) -> Result<(u64, Positions), ClickHouseError> {
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
                serde_json::from_str(&json)
                    .map_err(|e| ClickHouseError::BadProgress(e.to_string()))?,
            ),
        })
    }

    /// A graph setting recorded with the committed progress row, in column `column`
    /// (`tick_ms`, `dedup_horizon_ms`): `None` when nothing is committed, the database or table
    /// does not exist yet, or the row is from a version that did not record it.
    pub async fn committed_recorded(&self, column: &str) -> Result<Option<u64>, ClickHouseError> {
        let db = &self.database;
        let has_column: u64 = self
            .client
            .query("SELECT count() FROM system.columns WHERE database = ? AND table = 'progress' AND name = ?")
            .bind(db)
            .bind(column)
            .fetch_one()
            .await?;
        if has_column == 0 {
            return Ok(None);
        }
        let rows: Vec<u64> = self
            .client
            .query(&format!(
                "SELECT {column} FROM {db}.progress ORDER BY time DESC LIMIT 1"
            ))
            .fetch_all()
            .await?;
        Ok(rows.into_iter().next().filter(|t| *t > 0))
    }

    /// The committed time: the greatest progress row's, 0 when there is none.
    pub async fn committed(&self) -> Result<u64, ClickHouseError> {
        let db = &self.database;
        Ok(self
            .client
            .query(&format!("SELECT max(time) FROM {db}.progress"))
            .fetch_one()
            .await?)
    }
}

/// A query for rows of read model `R` ([`ClickHouseReader::read_model`]).
#[must_use]
pub struct ReadModelQuery<R> {
    query: Query,
    row: PhantomData<fn() -> R>,
}

impl<R: ReadModel> ReadModelQuery<R> {
    /// Binds the next `?` of the query's tail.
    pub fn bind(self, value: impl Bind) -> Self {
        ReadModelQuery {
            query: self.query.bind(value),
            row: PhantomData,
        }
    }

    /// Every row, in the query's order.
    pub async fn fetch_all(self) -> Result<Vec<R>, ClickHouseError> {
        let rows = self.query.fetch_all::<ViewRow<R>>().await?;
        Ok(rows.into_iter().map(|ViewRow(row)| row).collect())
    }

    /// A cursor over the rows, for results too large to hold at once.
    pub fn fetch(self) -> Result<ReadModelCursor<R>, ClickHouseError> {
        Ok(ReadModelCursor(self.query.fetch::<ViewRow<R>>()?))
    }
}

/// Rows of read model `R`, one at a time ([`ReadModelQuery::fetch`]).
pub struct ReadModelCursor<R>(RowCursor<ViewRow<R>>);

impl<R: ReadModel> ReadModelCursor<R> {
    /// The next row, `None` after the last.
    pub async fn next(&mut self) -> Result<Option<R>, ClickHouseError> {
        Ok(self.0.next().await?.map(|ViewRow(row)| row))
    }
}
