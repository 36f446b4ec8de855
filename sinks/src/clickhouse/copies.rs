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
//! - Inserts reach the copy through materialized views that live in `<db>` (which analysts
//!   cannot read), in the same insert as the main table's rows: the copy's versions are in
//!   before the main `progress` row, and the copy's `progress` row (all rows are copied) comes
//!   with it, so a copy's views show exactly the committed time the main views show.
//! - What is not an insert is applied to every copy by the writer itself: erasures, retention
//!   and the discard of uncommitted versions ([`ClickHouseStore::stores`]). The registry
//!   `<db>.retailer_copies` lists the copies; it is what the writer reads.
//! - A copy made while the graph runs is filled from the main tables after its materialized
//!   views exist (rows copied twice are identical versions, which every view reads as one),
//!   then rows of shoppers erased meanwhile are removed again ([`CopyPlan::reconcile`]).
//!
//! On a current release, row policies (`CREATE ROW POLICY ... USING retailer_id = 'r'`) are the
//! native alternative; copies work there too.

use std::fmt::Write as _;

use basketflow_vocab::ids::id_problem;

use super::schema::{PER_SHOPPER_TABLES, TABLES, VIEWS};
use super::store::ClickHouseStore;
use super::ClickHouseError;

/// The registry of copies, in the main database.
pub const REGISTRY: &str = "retailer_copies";

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

/// The copies of one main database: names, checks, the users file and the statements (the
/// pure part, unit-tested; `basketflow analysts provision` runs it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyPlan {
    /// The basketflow database (`clickhouse.database`).
    pub database: String,
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

impl CopyPlan {
    /// The materialized view that copies `table` into `copy`: `<db>.copy__<copy>__<table>`.
    pub fn feeder(&self, copy: &str, table: &str) -> String {
        format!("{}.copy__{copy}__{table}", self.database)
    }

    /// The name of the file written in the server's `users.d/`.
    pub fn file_name(&self) -> String {
        format!("basketflow-analysts-{}.xml", self.database)
    }

    /// Every problem of the plan, each a sentence; empty when it can be provisioned.
    pub fn problems(&self) -> Vec<String> {
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
            if r.user == "default" {
                p.push(format!("{at}.user {:?} is reserved", r.user));
            }
            if r.database == self.database || r.database == "system" || r.database == "default" {
                p.push(format!("{at}.database {:?} is reserved", r.database));
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
    /// functions) and one user per retailer, allowed its copy's database only.
    pub fn users_xml(&self) -> String {
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
        for r in &self.retailers {
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
        x.push_str("    </users>\n</yandex>\n");
        x
    }

    /// The materialized view feeding `table` (whose columns are `columns`, as in the main
    /// table) of `r`'s copy.
    pub fn feeder_statement(&self, r: &RetailerAccess, table: &str, columns: &[String]) -> String {
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {feeder} TO {copy}.{table} AS {select}",
            feeder = self.feeder(&r.database, table),
            copy = r.database,
            select = self.select_for_copy(r, table, columns),
        )
    }

    /// Fills `table` of `r`'s copy from the main table (run after its feeder exists).
    pub fn backfill_statement(
        &self,
        r: &RetailerAccess,
        table: &str,
        columns: &[String],
    ) -> String {
        format!(
            "INSERT INTO {copy}.{table} ({list}) {select}",
            copy = r.database,
            list = columns.join(", "),
            select = self.select_for_copy(r, table, columns),
        )
    }

    /// The rows of main `table` that `r`'s copy holds: `SELECT <columns> FROM <db>.<table>`,
    /// filtered by the retailer unless the table has no retailer (`progress`).
    fn select_for_copy(&self, r: &RetailerAccess, table: &str, columns: &[String]) -> String {
        let filtered = copied_tables().any(|(t, f)| t == table && f);
        format!(
            "SELECT {} FROM {}.{table}{}",
            columns.join(", "),
            self.database,
            if filtered {
                format!(" WHERE retailer_id = {}", literal(&r.retailer_id))
            } else {
                String::new()
            }
        )
    }

    /// After a backfill: removes from `r`'s copy the rows of shoppers that have no row left in
    /// the main table (erased, or retained out, while the backfill read), one mutation per
    /// per-shopper table. Anonymous rows (`shopper_id = ''`) stay.
    pub fn reconcile(&self, r: &RetailerAccess) -> Vec<String> {
        PER_SHOPPER_TABLES
            .iter()
            .map(|table| {
                format!(
                    "ALTER TABLE {copy}.{table} DELETE WHERE shopper_id != '' AND shopper_id NOT IN \
                     (SELECT shopper_id FROM {db}.{table} WHERE retailer_id = {retailer})",
                    copy = r.database,
                    db = self.database,
                    retailer = literal(&r.retailer_id),
                )
            })
            .collect()
    }

    /// Removes the copy in database `copy` (no longer listed): unregisters it, so the writer
    /// stops applying erasures to it, drops its feeders, then its database.
    pub fn removal(&self, copy: &str) -> Vec<String> {
        let mut s = vec![format!(
            "ALTER TABLE {}.{REGISTRY} DELETE WHERE database = {}",
            self.database,
            literal(copy)
        )];
        for (table, _) in copied_tables() {
            s.push(format!("DROP TABLE IF EXISTS {}", self.feeder(copy, table)));
        }
        s.push(format!("DROP DATABASE IF EXISTS {copy}"));
        s
    }

    /// The analyst views a copy holds.
    pub fn views() -> impl Iterator<Item = &'static str> {
        VIEWS.iter().map(|(name, _)| *name)
    }
}

impl ClickHouseStore {
    /// The databases of the registered retailer copies (empty when none were ever made).
    pub async fn copies(&self) -> Result<Vec<String>, ClickHouseError> {
        let db = self.database();
        let registry: u64 = self
            .client()
            .query("SELECT count() FROM system.tables WHERE database = ? AND name = ?")
            .bind(db)
            .bind(REGISTRY)
            .fetch_one()
            .await?;
        if registry == 0 {
            return Ok(Vec::new());
        }
        Ok(self
            .client()
            .query(&format!(
                "SELECT DISTINCT database FROM {db}.{REGISTRY} ORDER BY database"
            ))
            .fetch_all()
            .await?)
    }

    /// This store and one per registered copy: what erasure, retention and the discard of
    /// uncommitted versions apply to.
    pub async fn stores(&self) -> Result<Vec<ClickHouseStore>, ClickHouseError> {
        let mut all = vec![self.clone()];
        all.extend(self.copies().await?.iter().map(|c| self.on(c)));
        Ok(all)
    }

    /// Creates the registry if needed and records `copy` as `retailer`'s (idempotent).
    pub async fn register_copy(&self, copy: &str, retailer: &str) -> Result<(), ClickHouseError> {
        let db = self.database();
        self.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.{REGISTRY} (database String, retailer_id String) \
             ENGINE = MergeTree() ORDER BY database"
        ))
        .await?;
        let known: u64 = self
            .client()
            .query(&format!(
                "SELECT count() FROM {db}.{REGISTRY} WHERE database = ?"
            ))
            .bind(copy)
            .fetch_one()
            .await?;
        if known == 0 {
            self.client()
                .query(&format!(
                    "INSERT INTO {db}.{REGISTRY} (database, retailer_id) VALUES (?, ?)"
                ))
                .bind(copy)
                .bind(retailer)
                .execute()
                .await?;
        }
        Ok(())
    }

    /// The registered copies as `(database, retailer_id)`, sorted.
    pub async fn registered_copies(&self) -> Result<Vec<(String, String)>, ClickHouseError> {
        if self.copies().await?.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .client()
            .query(&format!(
                "SELECT DISTINCT database, retailer_id FROM {}.{REGISTRY} ORDER BY database",
                self.database()
            ))
            .fetch_all()
            .await?)
    }

    /// Makes (or completes) `r`'s copy of this store's database, as `plan` says: the copy's
    /// schema (the same migration as the main database), its registration, one feeder per
    /// table; when `fill`, then the rows already in the main tables and the reconciliation
    /// with erasures that ran meanwhile. Idempotent.
    pub async fn provision_copy(
        &self,
        plan: &CopyPlan,
        r: &RetailerAccess,
        fill: bool,
    ) -> Result<(), ClickHouseError> {
        let copy = self.on(&r.database);
        copy.migrate().await?;
        self.register_copy(&r.database, &r.retailer_id).await?;
        for (table, _) in copied_tables() {
            let columns = self.columns(table).await?;
            self.execute(&plan.feeder_statement(r, table, &columns))
                .await?;
        }
        if fill {
            for (table, _) in copied_tables() {
                let columns = self.columns(table).await?;
                self.execute(&plan.backfill_statement(r, table, &columns))
                    .await?;
            }
            for statement in plan.reconcile(r) {
                self.execute(&statement).await?;
            }
            for table in PER_SHOPPER_TABLES {
                copy.wait_for_mutations(table).await?;
            }
        }
        Ok(())
    }

    /// Removes the copy in database `copy` ([`CopyPlan::removal`]).
    pub async fn remove_copy(&self, plan: &CopyPlan, copy: &str) -> Result<(), ClickHouseError> {
        for statement in plan.removal(copy) {
            self.execute(&statement).await?;
        }
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
            retailers: vec![RetailerAccess {
                retailer_id: "retailer-0'0".into(),
                user: "analyst_r00".into(),
                database: "analyst_r00".into(),
                password_sha256_hex: "A".repeat(64),
            }],
        }
    }

    #[test]
    fn a_good_plan_has_no_problems_and_bad_names_are_named() {
        assert_eq!(plan().problems(), Vec::<String>::new());
        let mut bad = plan();
        bad.retailers[0].user = "drop table".into();
        bad.retailers[0].database = "basketflow".into();
        bad.retailers[0].password_sha256_hex = "x".into();
        bad.retailers[0].retailer_id = "r\u{1b}".into();
        bad.retailers.push(bad.retailers[0].clone());
        let problems = bad.problems();
        for want in [
            "retailer[0].retailer_id contains U+001B",
            "retailer[0].user \"drop table\": letters, digits and _ only",
            "retailer[0].database \"basketflow\" is reserved",
            "retailer[0].password_sha256_hex: 64 hex digits",
            "retailer[1].user \"drop table\" appears twice",
            "retailer[1].database \"basketflow\" appears twice",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "{want} not in {problems:#?}"
            );
        }
    }

    #[test]
    fn feeders_filter_by_retailer_except_progress_and_backfills_mirror_them() {
        let p = plan();
        let r = &p.retailers[0];
        let cols = vec!["retailer_id".to_string(), "time".to_string()];
        assert_eq!(
            p.feeder_statement(r, "baskets_versions", &cols),
            "CREATE MATERIALIZED VIEW IF NOT EXISTS basketflow.copy__analyst_r00__baskets_versions \
             TO analyst_r00.baskets_versions AS SELECT retailer_id, time \
             FROM basketflow.baskets_versions WHERE retailer_id = 'retailer-0\\'0'"
        );
        let progress = vec!["time".to_string()];
        assert_eq!(
            p.feeder_statement(r, "progress", &progress),
            "CREATE MATERIALIZED VIEW IF NOT EXISTS basketflow.copy__analyst_r00__progress \
             TO analyst_r00.progress AS SELECT time FROM basketflow.progress"
        );
        assert_eq!(
            p.backfill_statement(r, "baskets_versions", &cols),
            "INSERT INTO analyst_r00.baskets_versions (retailer_id, time) SELECT retailer_id, \
             time FROM basketflow.baskets_versions WHERE retailer_id = 'retailer-0\\'0'"
        );
        assert_eq!(copied_tables().count(), TABLES.len());
        assert_eq!(copied_tables().filter(|(_, f)| !f).count(), 1);
    }

    #[test]
    fn removal_unregisters_first_and_drops_the_database_last() {
        let s = plan().removal("analyst_gone");
        assert_eq!(
            s[0],
            "ALTER TABLE basketflow.retailer_copies DELETE WHERE database = 'analyst_gone'"
        );
        assert_eq!(s.last().unwrap(), "DROP DATABASE IF EXISTS analyst_gone");
        assert_eq!(s.len(), TABLES.len() + 2);
        assert!(s[1..s.len() - 1]
            .iter()
            .all(|d| d.starts_with("DROP TABLE IF EXISTS basketflow.copy__analyst_gone__")));
    }

    #[test]
    fn the_users_file_allows_each_user_its_copy_only_read_only() {
        let users = plan().users_xml();
        assert!(users.contains("<basketflow_analyst><readonly>1</readonly></basketflow_analyst>"));
        assert!(users.contains(&format!(
            "<password_sha256_hex>{}</password_sha256_hex>",
            "a".repeat(64)
        )));
        assert!(
            users.contains("<allow_databases><database>analyst_r00</database></allow_databases>")
        );
        assert_eq!(users.matches("<allow_databases>").count(), 1);
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

    /// `sinks/sql/generated/copies_check.sql`: the statements of a copy of `basketflow_copies` for
    /// retailer `r'1` (feeders, backfill, reconcile), which `scripts/chdb_check.py` runs on a
    /// current ClickHouse. This test keeps the file equal to what the code sends; with
    /// `BLESS=1` it rewrites it.
    #[test]
    fn the_current_release_check_runs_the_statements_the_code_sends() {
        let plan = CopyPlan {
            database: "basketflow_copies".into(),
            retailers: vec![RetailerAccess {
                retailer_id: "r'1".into(),
                user: "analyst_r1".into(),
                database: "basketflow_copy_r1".into(),
                password_sha256_hex: "a".repeat(64),
            }],
        };
        let r = &plan.retailers[0];
        let columns =
            |table: &str| ddl_columns(TABLES.iter().find(|(t, _)| *t == table).unwrap().1);
        let mut text = String::from(
            "-- Written by the test the_current_release_check_runs_the_statements_the_code_sends\n\
             -- (sinks/src/clickhouse/copies.rs): the statements of a retailer copy, run by\n\
             -- scripts/chdb_check.py on a current ClickHouse. Do not edit.\n",
        );
        text.push_str(
            "-- feeders
",
        );
        for (table, _) in copied_tables() {
            text.push_str(&format!(
                "{};
",
                plan.feeder_statement(r, table, &columns(table))
            ));
        }
        text.push_str(
            "-- backfill
",
        );
        for (table, _) in copied_tables() {
            text.push_str(&format!(
                "{};
",
                plan.backfill_statement(r, table, &columns(table))
            ));
        }
        text.push_str(
            "-- reconcile
",
        );
        for statement in plan.reconcile(r) {
            text.push_str(&format!(
                "{statement};
"
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

    #[test]
    fn reconcile_keeps_anonymous_rows_and_reads_the_retailer_s_main_rows() {
        let s = plan().reconcile(&plan().retailers[0]);
        assert_eq!(s.len(), PER_SHOPPER_TABLES.len());
        assert_eq!(
            s[1],
            "ALTER TABLE analyst_r00.baskets_versions DELETE WHERE shopper_id != '' AND \
             shopper_id NOT IN (SELECT shopper_id FROM basketflow.baskets_versions WHERE \
             retailer_id = 'retailer-0\\'0')"
        );
    }
}
