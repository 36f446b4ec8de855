//! The migration: [`ClickHouseStore::migrate`] creates what [`super::schema`] defines and does
//! not exist yet, and replaces views whose definition changed.

use super::schema::{
    probe_statement, statement, Migration, ADDED_COLUMNS, OLD_PREFIX, PROBE_PREFIX, TABLES, VIEWS,
};
use super::store::ClickHouseStore;
use super::ClickHouseError;

impl ClickHouseStore {
    /// Creates the database, the tables and the views that do not exist, and replaces views
    /// whose definition differs from [`VIEWS`] (atomically, by `RENAME`). Idempotent. Existing
    /// tables are left as they are, even if their columns differ.
    pub async fn migrate(&self) -> Result<Migration, ClickHouseError> {
        let db = self.database();
        let mut migration = Migration::default();
        let exists: u64 = self
            .client()
            .query("SELECT count() FROM system.databases WHERE name = ?")
            .bind(db)
            .fetch_one()
            .await?;
        if exists == 0 {
            self.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
                .await?;
            migration.created.push(db.to_owned());
        }
        for (name, sql) in TABLES {
            if !self.exists(name).await? {
                self.execute(&statement(sql, db)).await?;
                migration.created.push(name.to_owned());
            }
        }
        for (table, column, ty) in ADDED_COLUMNS {
            let present: u64 = self
                .client()
                .query("SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?")
                .bind(db)
                .bind(table)
                .bind(column)
                .fetch_one()
                .await?;
            if present == 0 {
                self.execute(&format!(
                    "ALTER TABLE {db}.{table} ADD COLUMN {column} {ty}"
                ))
                .await?;
                migration.created.push(format!("{table}.{column}"));
            }
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
    async fn replace_view_if_changed(
        &self,
        name: &str,
        sql: &str,
    ) -> Result<bool, ClickHouseError> {
        let db = self.database();
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

    /// True when table or view `name` exists in this store's database.
    pub async fn exists(&self, name: &str) -> Result<bool, ClickHouseError> {
        let n: u64 = self
            .client()
            .query("SELECT count() FROM system.tables WHERE database = ? AND name = ?")
            .bind(self.database())
            .bind(name)
            .fetch_one()
            .await?;
        Ok(n > 0)
    }

    async fn create_query(&self, name: &str) -> Result<String, ClickHouseError> {
        Ok(self
            .client()
            .query("SELECT create_table_query FROM system.tables WHERE database = ? AND name = ?")
            .bind(self.database())
            .bind(name)
            .fetch_one()
            .await?)
    }

    async fn drop_if_exists(&self, name: &str) -> Result<(), ClickHouseError> {
        self.execute(&format!("DROP TABLE IF EXISTS {}.{name}", self.database()))
            .await
    }
}
