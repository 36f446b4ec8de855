//! Analysts see only their retailer: a ClickHouse user per retailer that reads that retailer's
//! rows of every analyst view, and nothing else.
//!
//! # Why this shape (ClickHouse 18.16)
//! The server we run is 18.16. Measured on it: the row filters of `users.xml`
//! (`<databases><db><table><filter>`) are ignored (the user reads every row), and a view is
//! checked against the *querying* user's `allow_databases` for the tables it reads, so a
//! filtered view in a per-retailer database over the main database is refused ("Access denied
//! to database basketflow"). What works, and is what this module provisions:
//!
//! ```text
//!  analyst_r00 (allow_databases: analyst_r00; readonly = 1; prefer_localhost_replica = 0)
//!    └─ SELECT ... FROM analyst_r00.sold_products_daily        ENGINE = Distributed(cluster, ..)
//!         │  (the Distributed engine connects to the server itself over the native port,
//!         │   as the internal user of the cluster definition)
//!         ▼
//!  basketflow_views_<db> (allow_databases: <db>, <db>_tenants; readonly)
//!    └─ <db>_tenants.sold_products_daily__analyst_r00
//!         = SELECT * FROM <db>.sold_products_daily WHERE retailer_id = 'retailer-00'
//! ```
//!
//! - The analyst's user may use only its own database, which holds one `Distributed` table per
//!   analyst view, with the view's columns. A query on it is sent to the cluster
//!   `basketflow_<db>` (one replica: this server's native port), under the internal user, to
//!   the retailer's filtered view in `<db>_tenants`. `prefer_localhost_replica = 0` in the
//!   analyst's profile makes the engine always connect rather than run the query locally under
//!   the analyst's own rights (which the view check would refuse).
//! - `readonly = 1` forbids `SET` (so `prefer_localhost_replica` cannot be changed) and table
//!   functions (`remote('127.0.0.1', <db>.progress)` is refused: "Table functions are forbidden
//!   in readonly mode").
//! - The analyst cannot read `<db>` (the `*_versions` tables, `progress`, the unfiltered views)
//!   nor `<db>_tenants`; `system.tables` and `system.databases` only list its own database.
//! - The internal user's password is in the server's configuration only (`config.d`, where
//!   the cluster definition needs it, and `users.d`); `system.clusters` shows its name, not
//!   its password.
//!
//! On a current release the same files and statements work (users in `users.d` with
//! `allow_databases`, `Distributed` over views), and row policies are the native alternative.
//!
//! # What is written
//! - `<config_dir>/users.d/basketflow-access-<db>.xml`: the analyst profile, the internal user,
//!   one user per retailer with its `password_sha256_hex`;
//! - `<config_dir>/config.d/basketflow-access-<db>.xml`: the cluster `basketflow_<db>`;
//! - in ClickHouse: database `<db>_tenants` with one filtered view per retailer and analyst
//!   view, and per retailer its database of `Distributed` tables. Statements are idempotent
//!   (views and tables are dropped and created again); tenant views of retailers no longer
//!   listed are dropped.
//!
//! ClickHouse reloads `users.d` and `config.d` by itself within seconds; [`AccessPlan`] is the
//! pure part (file contents, statements), unit-tested; the command in the binary writes the
//! files, waits for the reload and runs the statements.

use std::fmt::Write as _;

use basketflow_vocab::ids::id_problem;

use crate::clickhouse::schema::VIEWS;

/// One retailer's analyst access.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetailerAccess {
    /// The retailer whose rows the user reads.
    pub retailer_id: String,
    /// The ClickHouse user (letters, digits, `_`; not starting with a digit).
    pub user: String,
    /// The user's own database, holding the retailer's views (same rule as `user`).
    pub database: String,
    /// SHA-256 of the user's password, 64 hex digits (`printf %s "$PASSWORD" | sha256sum`).
    pub password_sha256_hex: String,
}

/// Everything the provisioning needs: the main database, how the server reaches itself, the
/// internal user's password, and the retailers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessPlan {
    /// The basketflow database (`clickhouse.database`).
    pub database: String,
    /// The server's native (TCP) address, as the server itself reaches it (an IP address: the
    /// internal user may only connect from there).
    pub native_host: String,
    /// The server's native (TCP) port.
    pub native_port: u16,
    /// The internal user's password (plain: the cluster definition needs it).
    pub internal_password: String,
    /// One entry per retailer.
    pub retailers: Vec<RetailerAccess>,
}

/// True for names ClickHouse takes unquoted and our XML can hold verbatim.
fn is_plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

/// `s` as a ClickHouse string literal.
fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

impl AccessPlan {
    /// The database of the retailers' filtered views: `<db>_tenants`.
    pub fn tenants_database(&self) -> String {
        format!("{}_tenants", self.database)
    }

    /// The cluster the analysts' `Distributed` tables send their queries to: `basketflow_<db>`.
    pub fn cluster(&self) -> String {
        format!("basketflow_{}", self.database)
    }

    /// The internal user that reads the filtered views: `basketflow_views_<db>`.
    pub fn internal_user(&self) -> String {
        format!("basketflow_views_{}", self.database)
    }

    /// The name of the files written in `users.d/` and `config.d/`.
    pub fn file_name(&self) -> String {
        format!("basketflow-access-{}.xml", self.database)
    }

    /// The analyst views every retailer gets (every view of the schema: each has a
    /// `retailer_id` column).
    pub fn views() -> impl Iterator<Item = &'static str> {
        VIEWS.iter().map(|(name, _)| *name)
    }

    /// The filtered view of `retailer`'s rows of `view`, in [`Self::tenants_database`].
    pub fn tenant_view(view: &str, retailer: &RetailerAccess) -> String {
        format!("{view}__{}", retailer.database)
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
        if self.native_host.parse::<std::net::IpAddr>().is_err() {
            p.push(format!(
                "native host {:?}: an IP address (the internal user may connect from it only)",
                self.native_host
            ));
        }
        if self.internal_password.len() < 16
            || !self
                .internal_password
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        {
            p.push("the internal password must be at least 16 letters or digits".into());
        }
        let reserved = [self.database.clone(), self.tenants_database()];
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
            if r.user == "default" || r.user == self.internal_user() {
                p.push(format!("{at}.user {:?} is reserved", r.user));
            }
            if reserved.contains(&r.database) || r.database == "system" {
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

    /// `users.d/<file_name>`: the analyst profile, the internal user, the retailers' users.
    pub fn users_xml(&self) -> String {
        let mut x = String::new();
        let db = &self.database;
        let _ = write!(
            x,
            "<?xml version=\"1.0\"?>\n\
             <!-- Written by `basketflow analysts provision` for database {db}: do not edit. -->\n\
             <yandex>\n\
             \x20   <profiles>\n\
             \x20       <basketflow_analyst>\n\
             \x20           <readonly>1</readonly>\n\
             \x20           <prefer_localhost_replica>0</prefer_localhost_replica>\n\
             \x20       </basketflow_analyst>\n\
             \x20       <basketflow_views><readonly>1</readonly></basketflow_views>\n\
             \x20   </profiles>\n\
             \x20   <users>\n\
             \x20       <{internal}>\n\
             \x20           <password>{password}</password>\n\
             \x20           <networks><ip>{host}</ip></networks>\n\
             \x20           <profile>basketflow_views</profile>\n\
             \x20           <quota>default</quota>\n\
             \x20           <allow_databases><database>{db}</database><database>{tenants}</database></allow_databases>\n\
             \x20       </{internal}>\n",
            internal = self.internal_user(),
            password = self.internal_password,
            host = self.native_host,
            tenants = self.tenants_database(),
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

    /// `config.d/<file_name>`: the cluster the analysts' tables query through.
    pub fn config_xml(&self) -> String {
        format!(
            "<?xml version=\"1.0\"?>\n\
             <!-- Written by `basketflow analysts provision` for database {db}: do not edit. -->\n\
             <yandex>\n\
             \x20   <remote_servers>\n\
             \x20       <{cluster}>\n\
             \x20           <shard><replica>\n\
             \x20               <host>{host}</host><port>{port}</port>\n\
             \x20               <user>{user}</user><password>{password}</password>\n\
             \x20           </replica></shard>\n\
             \x20       </{cluster}>\n\
             \x20   </remote_servers>\n\
             </yandex>\n",
            db = self.database,
            cluster = self.cluster(),
            host = self.native_host,
            port = self.native_port,
            user = self.internal_user(),
            password = self.internal_password,
        )
    }

    /// The statements that create (again) the filtered views and the retailers' tables, in
    /// order. `stale_tenant_views` are the views of [`Self::tenants_database`] that exist now:
    /// those of retailers no longer listed are dropped.
    pub fn statements(&self, stale_tenant_views: &[String]) -> Vec<String> {
        let (db, tenants, cluster) = (&self.database, self.tenants_database(), self.cluster());
        let mut s = vec![format!("CREATE DATABASE IF NOT EXISTS {tenants}")];
        let wanted: Vec<String> = self
            .retailers
            .iter()
            .flat_map(|r| Self::views().map(move |v| Self::tenant_view(v, r)))
            .collect();
        for stale in stale_tenant_views.iter().filter(|v| !wanted.contains(v)) {
            if is_plain_name(stale) {
                s.push(format!("DROP TABLE IF EXISTS {tenants}.{stale}"));
            }
        }
        for r in &self.retailers {
            s.push(format!("CREATE DATABASE IF NOT EXISTS {}", r.database));
            for view in Self::views() {
                let tenant_view = Self::tenant_view(view, r);
                s.push(format!("DROP TABLE IF EXISTS {tenants}.{tenant_view}"));
                s.push(format!(
                    "CREATE VIEW {tenants}.{tenant_view} AS SELECT * FROM {db}.{view} \
                     WHERE retailer_id = {}",
                    literal(&r.retailer_id)
                ));
                s.push(format!("DROP TABLE IF EXISTS {}.{view}", r.database));
                s.push(format!(
                    "CREATE TABLE {}.{view} AS {db}.{view} \
                     ENGINE = Distributed({cluster}, {tenants}, {tenant_view})",
                    r.database
                ));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> AccessPlan {
        AccessPlan {
            database: "basketflow".into(),
            native_host: "127.0.0.1".into(),
            native_port: 9000,
            internal_password: "abcdef0123456789".into(),
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
        bad.retailers[0].database = "basketflow_tenants".into();
        bad.retailers[0].password_sha256_hex = "x".into();
        bad.retailers[0].retailer_id = "r\u{1b}".into();
        bad.retailers.push(bad.retailers[0].clone());
        let problems = bad.problems();
        for want in [
            "retailer[0].retailer_id contains U+001B",
            "retailer[0].user \"drop table\": letters, digits and _ only",
            "retailer[0].database \"basketflow_tenants\" is reserved",
            "retailer[0].password_sha256_hex: 64 hex digits",
            "retailer[1].user \"drop table\" appears twice",
            "retailer[1].database \"basketflow_tenants\" appears twice",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "{want} not in {problems:#?}"
            );
        }
    }

    #[test]
    fn statements_filter_each_view_by_the_retailer_and_drop_stale_views() {
        let p = plan();
        let s = p.statements(&[
            "baskets__analyst_r00".into(),
            "baskets__analyst_gone".into(),
        ]);
        assert_eq!(s[0], "CREATE DATABASE IF NOT EXISTS basketflow_tenants");
        assert_eq!(
            s[1],
            "DROP TABLE IF EXISTS basketflow_tenants.baskets__analyst_gone"
        );
        assert_eq!(s[2], "CREATE DATABASE IF NOT EXISTS analyst_r00");
        assert_eq!(
            &s[3..7],
            [
                "DROP TABLE IF EXISTS basketflow_tenants.sold_products_daily__analyst_r00",
                "CREATE VIEW basketflow_tenants.sold_products_daily__analyst_r00 AS SELECT * \
                 FROM basketflow.sold_products_daily WHERE retailer_id = 'retailer-0\\'0'",
                "DROP TABLE IF EXISTS analyst_r00.sold_products_daily",
                "CREATE TABLE analyst_r00.sold_products_daily AS basketflow.sold_products_daily \
                 ENGINE = Distributed(basketflow_basketflow, basketflow_tenants, \
                 sold_products_daily__analyst_r00)",
            ]
        );
        assert_eq!(s.len(), 3 + 4 * VIEWS.len());
    }

    #[test]
    fn the_files_name_the_users_the_databases_and_the_cluster() {
        let p = plan();
        let users = p.users_xml();
        assert!(users.contains("<prefer_localhost_replica>0</prefer_localhost_replica>"));
        assert!(users.contains(
            "<allow_databases><database>basketflow</database><database>basketflow_tenants</database></allow_databases>"
        ));
        assert!(users.contains(&format!(
            "<password_sha256_hex>{}</password_sha256_hex>",
            "a".repeat(64)
        )));
        assert!(
            users.contains("<allow_databases><database>analyst_r00</database></allow_databases>")
        );
        let config = p.config_xml();
        assert!(config.contains("<basketflow_basketflow>"));
        assert!(config.contains(
            "<user>basketflow_views_basketflow</user><password>abcdef0123456789</password>"
        ));
    }
}
