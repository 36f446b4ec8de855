//! Retailer copies: each retailer whose analysts get access has its rows, physically, in a
//! database of its own, which its analysts' ClickHouse user is the only user allowed to read.
//!
//! # Why copies (ClickHouse 18.16)
//! Measured on 18.16 (`docs/design/2026-12-03-tenants.md`): `users.xml` row filters are
//! ignored; a view over another database is checked against the querying user, so a filtered
//! view cannot be handed out; and a `Distributed` indirection runs forwarded `IN` subqueries
//! with the internal user's rights. What isolates on any release is a user whose only
//! database holds only its retailer's rows, so that is what a copy is:
//!
//! ```text
//!  <db>.<table>  ──insert──►  <db>.copy__<copy>__<table>   (MATERIALIZED VIEW ... TO,
//!   (the writer)                 WHERE retailer_id = 'r')     one per table; progress: all rows)
//!                                        │
//!                                        ▼
//!                               <copy>.<table>  ◄── <copy>.<view>  ◄── analyst user of <copy>
//!                               (same DDL as <db>)  (same DDL as <db>)  (allow_databases: <copy>,
//!                                                                         readonly = 1)
//! ```
//!
//! - A copy is the whole schema ([`super::schema`]) in database `<copy>`, created by the same
//!   migration; its views read its own tables, which a user allowed `<copy>` alone may do.
//! - Inserts reach the copy through materialized views ("feeders") that live in `<db>` (which
//!   analysts cannot read), in the same insert as the main table's rows: the copy's versions
//!   are in before the main `progress` row, and the copy's `progress` row (all rows are copied)
//!   comes with it, so a copy's views show exactly the committed time the main views show.
//! - What is not an insert is applied to every copy by the writer itself: erasures, retention
//!   and the discard of uncommitted versions ([`ClickHouseStore::stores`]). An erasure names
//!   its shoppers through `<db>.erasing_shoppers`, never in a statement's text: every user can
//!   read the mutations of its own database in `system.mutations`.
//! - The registry `<db>.retailer_copies` lists the copies. `basketflow analysts provision`
//!   registers a copy; **the graph's ClickHouse writer fills it**, between two batches or when
//!   it starts ([`ClickHouseStore::maintain_copies`]): feeders, then the rows already in
//!   the main tables, then the mark `filled`. Only the writer writes, so nothing it does can
//!   interleave with a fill. When it starts, it also brings every copy's schema and feeders to
//!   the current schema ([`ClickHouseStore::repair_copies`]), and refills a copy whose database
//!   is gone.
//!
//! On a current release, row policies (`CREATE ROW POLICY ... USING retailer_id = 'r'`) are the
//! native alternative; copies work there too.

use std::fmt::Write as _;

use basketflow_vocab::ids::id_problem;

use super::schema::{TABLES, VIEWS};
use super::store::ClickHouseStore;
use super::ClickHouseError;

/// The registry of copies, in the main database.
pub const REGISTRY: &str = "retailer_copies";

/// The shoppers of the erasure being applied, in the main database (see the module docs).
pub const ERASING: &str = "erasing_shoppers";

/// One retailer's analyst access: its copy and the user that reads it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetailerAccess {
    /// The retailer whose rows the copy holds.
    pub retailer_id: String,
    /// The ClickHouse user (letters, digits, `_`; not starting with a digit).
    pub user: String,
    /// The copy's database (same rule as `user`), the only one the user may read.
    pub database: String,
    /// SHA-256 of the user's password, 64 hex digits (`printf %s "$PASSWORD" | sha256sum`).
    pub password_sha256_hex: String,
}

/// A registered copy.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub struct Copy {
    /// The copy's database.
    pub database: String,
    /// The retailer whose rows it holds.
    pub retailer_id: String,
    /// [`PENDING`], [`FILLED`] or [`REMOVING`] (the registry's greatest for the database).
    pub filled: u8,
}

/// A registered copy the writer has not filled yet.
pub const PENDING: u8 = 0;
/// A copy the writer filled: it keeps it (erasures, retention, discards, repairs).
pub const FILLED: u8 = 1;
/// A copy to take out: the writer drops its feeders and database, then its registration.
pub const REMOVING: u8 = 2;

/// The copies of one main database as the access file lists them: checks and the users file
/// (the pure part, unit-tested; `basketflow analysts provision` runs it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyPlan {
    /// The basketflow database (`clickhouse.database`).
    pub database: String,
    /// The writer's user (`clickhouse.user`), which no analyst may be.
    pub writer_user: String,
    /// One entry per retailer with analysts.
    pub retailers: Vec<RetailerAccess>,
}

/// True for names ClickHouse takes unquoted and our XML can hold verbatim.
pub fn is_plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

/// `s` as a ClickHouse string literal.
pub fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' | '\'' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The tables a copy receives rows of (every table of the schema), and whether their rows are
/// filtered by retailer (`progress` has no retailer: all of it is copied).
pub fn copied_tables() -> impl Iterator<Item = (&'static str, bool)> {
    TABLES.iter().map(|(name, _)| (*name, *name != "progress"))
}

/// The feeder of `table` into copy `copy`: `<main>.copy__<copy>__<table>`.
pub fn feeder(main: &str, copy: &str, table: &str) -> String {
    format!("{main}.copy__{copy}__{table}")
}

/// The rows of main `table` that `copy` holds: `SELECT <columns> FROM <main>.<table>`,
/// filtered by the retailer unless the table has no retailer (`progress`).
fn select_for_copy(main: &str, copy: &Copy, table: &str, columns: &[String]) -> String {
    let filtered = copied_tables().any(|(t, f)| t == table && f);
    // `progress` tells the copy its committed time; its note (row counts of every retailer)
    // and the sources' positions (platform-wide offsets) stay out.
    let selected: Vec<String> = columns
        .iter()
        .map(|c| match (table, c.as_str()) {
            ("progress", "note" | "positions") => format!("'' AS {c}"),
            _ => c.clone(),
        })
        .collect();
    format!(
        "SELECT {} FROM {main}.{table}{}",
        selected.join(", "),
        if filtered {
            format!(" WHERE retailer_id = {}", literal(&copy.retailer_id))
        } else {
            String::new()
        }
    )
}

/// The feeder of `table` (whose columns are `columns`, as in the main table) of `copy`.
pub fn feeder_statement(main: &str, copy: &Copy, table: &str, columns: &[String]) -> String {
    format!(
        "CREATE MATERIALIZED VIEW {} TO {}.{table} AS {}",
        feeder(main, &copy.database, table),
        copy.database,
        select_for_copy(main, copy, table, columns),
    )
}

/// Fills `table` of `copy` from the main table (run after its feeder exists).
pub fn backfill_statement(main: &str, copy: &Copy, table: &str, columns: &[String]) -> String {
    format!(
        "INSERT INTO {}.{table} ({}) {}",
        copy.database,
        columns.join(", "),
        select_for_copy(main, copy, table, columns),
    )
}

/// Drops the feeders of copy `copy`, then its database (its registration goes last, see
/// [`ClickHouseStore::maintain_copies`]).
pub fn removal(main: &str, copy: &str) -> Vec<String> {
    let mut s: Vec<String> = copied_tables()
        .map(|(table, _)| format!("DROP TABLE IF EXISTS {}", feeder(main, copy, table)))
        .collect();
    s.push(format!("DROP DATABASE IF EXISTS {copy}"));
    s
}

impl CopyPlan {
    /// The name of the file written in the server's `users.d/`.
    pub fn file_name(&self) -> String {
        format!("basketflow-analysts-{}.xml", self.database)
    }

    /// Every problem of the plan, each a sentence; empty when it can be provisioned.
    /// `registered` are the copies that exist: a database may not change retailer (its user
    /// would read the new retailer's rows before the copy is rebuilt): take it out first.
    pub fn problems(&self, registered: &[Copy]) -> Vec<String> {
        let mut p = Vec::new();
        if !is_plain_name(&self.database) {
            p.push(format!(
                "database {:?}: letters, digits and _ only",
                self.database
            ));
        }
        let mut users = std::collections::BTreeSet::new();
        let mut databases = std::collections::BTreeSet::new();
        let mut retailers = std::collections::BTreeSet::new();
        for (i, r) in self.retailers.iter().enumerate() {
            let at = format!("retailer[{i}]");
            if let Some(why) = id_problem(&r.retailer_id) {
                p.push(format!("{at}.retailer_id {why}"));
            }
            for (key, name) in [("user", &r.user), ("database", &r.database)] {
                if !is_plain_name(name) {
                    p.push(format!(
                        "{at}.{key} {name:?}: letters, digits and _ only, not starting with a \
                         digit, at most 64"
                    ));
                }
            }
            if r.user == "default" || r.user == self.writer_user {
                p.push(format!(
                    "{at}.user {:?} is reserved (the default user or the writer's)",
                    r.user
                ));
            }
            if r.database == self.database || r.database == "system" || r.database == "default" {
                p.push(format!("{at}.database {:?} is reserved", r.database));
            }
            if let Some(c) = registered
                .iter()
                .find(|c| c.database == r.database && c.retailer_id != r.retailer_id)
            {
                p.push(format!(
                    "{at}.database {:?} holds retailer {:?}'s copy: take that retailer out (run \
                     without it) before giving the database to another",
                    r.database, c.retailer_id
                ));
            }
            if r.password_sha256_hex.len() != 64
                || !r.password_sha256_hex.chars().all(|c| c.is_ascii_hexdigit())
            {
                p.push(format!(
                    "{at}.password_sha256_hex: 64 hex digits (printf %s \"$PASSWORD\" | sha256sum)"
                ));
            }
            if !users.insert(&r.user) {
                p.push(format!("{at}.user {:?} appears twice", r.user));
            }
            if !databases.insert(&r.database) {
                p.push(format!("{at}.database {:?} appears twice", r.database));
            }
            if !retailers.insert(&r.retailer_id) {
                p.push(format!(
                    "{at}.retailer_id {:?} appears twice",
                    r.retailer_id
                ));
            }
        }
        p
    }

    /// `users.d/<file_name>`: the analyst profile (`readonly = 1`: no writes, no `SET`, no table
    /// functions), a user for each retailer of `retailers`, allowed its copy's database only,
    /// and the user `marker` (no database; `marker_hash` the SHA-256 of a password no one
    /// knows, random), whose presence tells that the server has loaded this version of the file.
    pub fn users_xml<'a>(
        &self,
        retailers: impl IntoIterator<Item = &'a RetailerAccess>,
        marker: &str,
        marker_hash: &str,
    ) -> String {
        let mut x = format!(
            "<?xml version=\"1.0\"?>\n\
             <!-- Written by `basketflow analysts provision` for database {}: do not edit. -->\n\
             <yandex>\n\
             \x20   <profiles>\n\
             \x20       <basketflow_analyst><readonly>1</readonly></basketflow_analyst>\n\
             \x20   </profiles>\n\
             \x20   <users>\n",
            self.database
        );
        for r in retailers {
            let _ = write!(
                x,
                "\x20       <{user}>\n\
                 \x20           <password_sha256_hex>{hash}</password_sha256_hex>\n\
                 \x20           <networks><ip>::/0</ip></networks>\n\
                 \x20           <profile>basketflow_analyst</profile>\n\
                 \x20           <quota>default</quota>\n\
                 \x20           <allow_databases><database>{database}</database></allow_databases>\n\
                 \x20       </{user}>\n",
                user = r.user,
                hash = r.password_sha256_hex.to_ascii_lowercase(),
                database = r.database,
            );
        }
        let _ = write!(
            x,
            "\x20       <{marker}>\n\
             \x20           <password_sha256_hex>{hash}</password_sha256_hex>\n\
             \x20           <networks><ip>127.0.0.1</ip></networks>\n\
             \x20           <profile>basketflow_analyst</profile>\n\
             \x20           <quota>default</quota>\n\
             \x20           <allow_databases><database>{marker}</database></allow_databases>\n\
             \x20       </{marker}>\n",
            hash = marker_hash,
        );
        x.push_str("    </users>\n</yandex>\n");
        x
    }

    /// The analyst views a copy holds.
    pub fn views() -> impl Iterator<Item = &'static str> {
        VIEWS.iter().map(|(name, _)| *name)
    }
}

impl ClickHouseStore {
    /// Creates the registry and the erasure table if they do not exist (idempotent).
    pub async fn create_copy_tables(&self) -> Result<(), ClickHouseError> {
        let db = self.database();
        self.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.{REGISTRY} (database String, retailer_id String, \
             filled UInt8) ENGINE = MergeTree() ORDER BY database"
        ))
        .await?;
        self.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.{ERASING} (retailer_id String, shopper_id String) \
             ENGINE = MergeTree() ORDER BY (retailer_id, shopper_id)"
        ))
        .await
    }

    /// The registered copies, by database (one entry each; `filled` once any row says so).
    pub async fn copies(&self) -> Result<Vec<Copy>, ClickHouseError> {
        let db = self.database();
        if !self.exists(REGISTRY).await? {
            return Ok(Vec::new());
        }
        Ok(self
            .client()
            .query(&format!(
                "SELECT database, any(retailer_id) AS retailer_id, max(filled) AS filled \
                 FROM {db}.{REGISTRY} GROUP BY database ORDER BY database"
            ))
            .fetch_all()
            .await?)
    }

    /// This store and one per filled copy (with the copy): what erasure, retention and the
    /// discard of uncommitted versions apply to.
    pub async fn stores(&self) -> Result<Vec<(ClickHouseStore, Option<Copy>)>, ClickHouseError> {
        let mut all = vec![(self.clone(), None)];
        // A copy not filled yet is left alone: its fill copies the main tables as they are then.
        for c in self
            .copies()
            .await?
            .into_iter()
            .filter(|c| c.filled == FILLED)
        {
            all.push((self.on(&c.database), Some(c)));
        }
        Ok(all)
    }

    /// Registers `retailer`'s copy in database `copy` ([`PENDING`]; idempotent).
    pub async fn register_copy(&self, copy: &str, retailer: &str) -> Result<(), ClickHouseError> {
        self.create_copy_tables().await?;
        if self.copies().await?.iter().any(|c| c.database == copy) {
            return Ok(());
        }
        self.record_copy(copy, retailer, PENDING).await
    }

    /// Marks `copy` [`REMOVING`]: the writer stops maintaining it at once and takes it out
    /// (feeders, database, then registration) between two batches or at its start.
    pub async fn mark_removing(&self, copy: &Copy) -> Result<(), ClickHouseError> {
        self.record_copy(&copy.database, &copy.retailer_id, REMOVING)
            .await
    }

    async fn record_copy(
        &self,
        copy: &str,
        retailer: &str,
        state: u8,
    ) -> Result<(), ClickHouseError> {
        self.client()
            .query(&format!(
                "INSERT INTO {}.{REGISTRY} (database, retailer_id, filled) VALUES (?, ?, ?)",
                self.database()
            ))
            .bind(copy)
            .bind(retailer)
            .bind(state)
            .execute()
            .await?;
        Ok(())
    }

    /// The writer's work on the copies, between two batches or before the first: takes out
    /// the copies marked [`REMOVING`], then fills the [`PENDING`] ones (schema, feeders, the
    /// rows already in the main tables, then the mark [`FILLED`]). Call only from the writer:
    /// nothing may write the main tables meanwhile. A copy that fails is logged and tried
    /// again next time; the others go on. Returns the copies filled.
    pub async fn maintain_copies(&self) -> Result<Vec<String>, ClickHouseError> {
        let mut filled = Vec::new();
        for copy in self.copies().await? {
            let done = match copy.filled {
                REMOVING => self.take_out(&copy.database).await.map(|()| false),
                PENDING => self.fill(&copy).await.map(|()| true),
                _ => continue,
            };
            match done {
                Ok(true) => filled.push(copy.database),
                Ok(false) => log::info!(copy = copy.database.as_str(); "retailer copy taken out"),
                Err(e) => {
                    log::warn!(copy = copy.database.as_str(), state = copy.filled; "retailer copy: maintenance failed, retried later: {e}");
                }
            }
        }
        Ok(filled)
    }

    async fn fill(&self, copy: &Copy) -> Result<(), ClickHouseError> {
        let target = self.on(&copy.database);
        target.migrate().await?;
        // Empty it first: a fill interrupted by a crash is done again from the start.
        for (table, _) in copied_tables() {
            self.execute(&format!(
                "TRUNCATE TABLE IF EXISTS {}.{table}",
                copy.database
            ))
            .await?;
        }
        self.replace_feeders(copy).await?;
        for (table, _) in copied_tables() {
            let columns = self.columns(table).await?;
            self.execute(&backfill_statement(self.database(), copy, table, &columns))
                .await?;
        }
        self.record_copy(&copy.database, &copy.retailer_id, FILLED)
            .await
    }

    /// Feeders, database, then registration: interrupted anywhere, the copy is still
    /// [`REMOVING`] and the next maintenance finishes it.
    async fn take_out(&self, copy: &str) -> Result<(), ClickHouseError> {
        for statement in removal(self.database(), copy) {
            self.execute(&statement).await?;
        }
        self.unregister(copy).await
    }

    /// At the writer's start, before [`Self::maintain_copies`]: each filled copy's schema
    /// migrated like the main one and its feeders made again with the main tables' current
    /// columns (a migration that added a column would otherwise make every insert fail in the
    /// feeder); a filled copy whose database is gone is filled again; feeders of no registered
    /// copy (a removal interrupted before it was recorded) are dropped.
    pub async fn repair_copies(&self) -> Result<(), ClickHouseError> {
        self.create_copy_tables().await?;
        let copies = self.copies().await?;
        let wanted: Vec<String> = copies
            .iter()
            .filter(|c| c.filled != REMOVING)
            .flat_map(|c| copied_tables().map(move |(t, _)| feeder("", &c.database, t)))
            .map(|f| f.trim_start_matches('.').to_string())
            .collect();
        let feeders: Vec<String> = self
            .client()
            .query(
                "SELECT name FROM system.tables WHERE database = ? AND startsWith(name, 'copy__')",
            )
            .bind(self.database())
            .fetch_all()
            .await?;
        for orphan in feeders.iter().filter(|f| !wanted.contains(f)) {
            log::warn!(feeder = orphan.as_str(); "retailer copy: dropping a feeder of no registered copy");
            self.execute(&format!(
                "DROP TABLE IF EXISTS {}.{orphan}",
                self.database()
            ))
            .await?;
        }
        for copy in copies.iter().filter(|c| c.filled == FILLED) {
            if let Err(e) = self.repair(copy).await {
                // Filled again by the next maintenance; the others go on.
                log::warn!(copy = copy.database.as_str(); "retailer copy: repair failed, it is filled again: {e}");
                self.record_copy(&copy.database, &copy.retailer_id, PENDING)
                    .await?;
            }
        }
        Ok(())
    }

    async fn repair(&self, copy: &Copy) -> Result<(), ClickHouseError> {
        let present: u64 = self
            .client()
            .query("SELECT count() FROM system.databases WHERE name = ?")
            .bind(&copy.database)
            .fetch_one()
            .await?;
        if present == 0 {
            log::warn!(copy = copy.database.as_str(); "retailer copy: its database is gone; it is filled again");
            return self.fill(copy).await;
        }
        self.on(&copy.database).migrate().await?;
        self.replace_feeders(copy).await
    }

    /// Drops and creates `copy`'s feeders with the main tables' current columns (the writer is
    /// idle: no insert passes meanwhile).
    async fn replace_feeders(&self, copy: &Copy) -> Result<(), ClickHouseError> {
        for (table, _) in copied_tables() {
            let columns = self.columns(table).await?;
            self.execute(&format!(
                "DROP TABLE IF EXISTS {}",
                feeder(self.database(), &copy.database, table)
            ))
            .await?;
            self.execute(&feeder_statement(self.database(), copy, table, &columns))
                .await?;
        }
        Ok(())
    }

    async fn unregister(&self, copy: &str) -> Result<(), ClickHouseError> {
        self.client()
            .query(&format!(
                "ALTER TABLE {}.{REGISTRY} DELETE WHERE database = ?",
                self.database()
            ))
            .bind(copy)
            .execute()
            .await?;
        self.wait_for_mutations(REGISTRY).await
    }

    /// The columns of `table` in this database (the statements name them: order is free).
    pub async fn columns(&self, table: &str) -> Result<Vec<String>, ClickHouseError> {
        Ok(self
            .client()
            .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
            .bind(self.database())
            .bind(table)
            .fetch_all()
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> CopyPlan {
        CopyPlan {
            database: "basketflow".into(),
            writer_user: "writer".into(),
            retailers: vec![RetailerAccess {
                retailer_id: "retailer-0'0".into(),
                user: "analyst_r00".into(),
                database: "analyst_r00".into(),
                password_sha256_hex: "A".repeat(64),
            }],
        }
    }

    fn copy() -> Copy {
        Copy {
            database: "analyst_r00".into(),
            retailer_id: "retailer-0'0".into(),
            filled: 1,
        }
    }

    #[test]
    fn a_good_plan_has_no_problems_and_bad_names_are_named() {
        assert_eq!(plan().problems(&[copy()]), Vec::<String>::new());
        let mut bad = plan();
        bad.retailers[0].user = "drop table".into();
        bad.retailers[0].database = "basketflow".into();
        bad.retailers[0].password_sha256_hex = "x".into();
        bad.retailers[0].retailer_id = "r\u{1b}".into();
        bad.retailers.push(bad.retailers[0].clone());
        let mut writer = plan();
        writer.retailers[0].user = "writer".into();
        writer.retailers[0].retailer_id = "another".into();
        let problems = [bad.problems(&[]), writer.problems(&[copy()])].concat();
        for want in [
            "retailer[0].retailer_id contains U+001B",
            "retailer[0].user \"drop table\": letters, digits and _ only",
            "retailer[0].database \"basketflow\" is reserved",
            "retailer[0].password_sha256_hex: 64 hex digits",
            "retailer[1].user \"drop table\" appears twice",
            "retailer[1].database \"basketflow\" appears twice",
            "retailer[0].user \"writer\" is reserved",
            "retailer[0].database \"analyst_r00\" holds retailer \"retailer-0'0\"'s copy",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "{want} not in {problems:#?}"
            );
        }
    }

    #[test]
    fn feeders_filter_by_retailer_except_progress_and_backfills_mirror_them() {
        let c = copy();
        let cols = vec!["retailer_id".to_string(), "time".to_string()];
        assert_eq!(
            feeder_statement("basketflow", &c, "baskets_versions", &cols),
            "CREATE MATERIALIZED VIEW basketflow.copy__analyst_r00__baskets_versions \
             TO analyst_r00.baskets_versions AS SELECT retailer_id, time \
             FROM basketflow.baskets_versions WHERE retailer_id = 'retailer-0\\'0'"
        );
        let progress = vec!["time".to_string()];
        assert_eq!(
            feeder_statement("basketflow", &c, "progress", &progress),
            "CREATE MATERIALIZED VIEW basketflow.copy__analyst_r00__progress \
             TO analyst_r00.progress AS SELECT time FROM basketflow.progress"
        );
        assert_eq!(
            backfill_statement("basketflow", &c, "baskets_versions", &cols),
            "INSERT INTO analyst_r00.baskets_versions (retailer_id, time) SELECT retailer_id, \
             time FROM basketflow.baskets_versions WHERE retailer_id = 'retailer-0\\'0'"
        );
        assert_eq!(copied_tables().count(), TABLES.len());
        assert_eq!(copied_tables().filter(|(_, f)| !f).count(), 1);
    }

    #[test]
    fn removal_drops_the_feeders_then_the_database() {
        let s = removal("basketflow", "analyst_gone");
        assert_eq!(s.last().unwrap(), "DROP DATABASE IF EXISTS analyst_gone");
        assert_eq!(s.len(), TABLES.len() + 1);
        assert!(s[..s.len() - 1]
            .iter()
            .all(|d| d.starts_with("DROP TABLE IF EXISTS basketflow.copy__analyst_gone__")));
    }

    #[test]
    fn the_users_file_allows_each_user_its_copy_only_read_only() {
        let p = plan();
        let users = p.users_xml(&p.retailers, "marker_x", &"0".repeat(64));
        assert!(users.contains("<basketflow_analyst><readonly>1</readonly></basketflow_analyst>"));
        assert!(users.contains(&format!(
            "<password_sha256_hex>{}</password_sha256_hex>",
            "a".repeat(64)
        )));
        assert!(
            users.contains("<allow_databases><database>analyst_r00</database></allow_databases>")
        );
        assert_eq!(users.matches("<allow_databases>").count(), 2);
        assert!(users.contains("<marker_x>"));
        assert_eq!(
            p.users_xml([], "m", &"0".repeat(64))
                .matches("<allow_databases>")
                .count(),
            1
        );
    }

    /// The column names of a `CREATE TABLE` statement of [`TABLES`] (one column per line
    /// between the lines `(` and `)`).
    fn ddl_columns(sql: &str) -> Vec<String> {
        sql.lines()
            .skip_while(|l| l.trim() != "(")
            .skip(1)
            .take_while(|l| l.trim() != ")")
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    }

    /// `sinks/sql/generated/copies_check.sql`: the statements that fill a copy of
    /// `basketflow_copies` for retailer `r'1` (feeders, backfill), which
    /// `scripts/chdb_check.py` runs on a current ClickHouse. This test keeps the file equal to
    /// what the code sends; with `BLESS=1` it rewrites it.
    #[test]
    fn the_current_release_check_runs_the_statements_the_code_sends() {
        let c = Copy {
            database: "basketflow_copy_r1".into(),
            retailer_id: "r'1".into(),
            filled: 0,
        };
        let main = "basketflow_copies";
        let columns =
            |table: &str| ddl_columns(TABLES.iter().find(|(t, _)| *t == table).unwrap().1);
        let mut text = String::from(
            "-- Written by the test the_current_release_check_runs_the_statements_the_code_sends\n\
             -- (sinks/src/clickhouse/copies.rs): the statements that fill a retailer copy, run\n\
             -- by scripts/chdb_check.py on a current ClickHouse. Do not edit.\n",
        );
        text.push_str("-- feeders\n");
        for (table, _) in copied_tables() {
            text.push_str(&format!(
                "{};\n",
                feeder_statement(main, &c, table, &columns(table))
            ));
        }
        text.push_str("-- backfill\n");
        for (table, _) in copied_tables() {
            text.push_str(&format!(
                "{};\n",
                backfill_statement(main, &c, table, &columns(table))
            ));
        }
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sql/generated/copies_check.sql"
        );
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(path).unwrap_or_default(),
            text,
            "{path} differs from the statements: rerun this test with BLESS=1"
        );
        assert_eq!(columns("progress")[0], "time");
    }
}
