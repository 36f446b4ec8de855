//! The schema: the DDL of every table and view (`sinks/sql/*.sql`, included here and run
//! verbatim by `scripts/chdb_check.py` on a current ClickHouse); `super::migrate` runs it.
//!
//! The read models' tables and views are checked against their definitions
//! ([`basketflow_vocab::read_models`]) by this module's tests: a versions table has the
//! model's columns with their types, then `deleted UInt8` and `time UInt64`, and is ordered by
//! the key, then `time`; a view selects the key columns and `argMax(column, time)` of the
//! others, grouped by the key. Editing a read model's definition without its SQL (or the
//! reverse) fails them.

use basketflow_vocab::read_models::DEFINITIONS;

/// Where the database name goes in the statements of [`TABLES`] and [`VIEWS`].
pub const DATABASE_PLACEHOLDER: &str = "{database}";

/// The default database name.
pub const DEFAULT_DATABASE: &str = "basketflow";

/// Name and `CREATE TABLE IF NOT EXISTS` statement of every table, in creation order.
pub const TABLES: [(&str, &str); 10] = [
    ("progress", include_str!("../../sql/table_progress.sql")),
    (
        "sold_products_daily_versions",
        include_str!("../../sql/table_sold_products_daily_versions.sql"),
    ),
    (
        "shopper_purchases_versions",
        include_str!("../../sql/table_shopper_purchases_versions.sql"),
    ),
    (
        "product_affinities_versions",
        include_str!("../../sql/table_product_affinities_versions.sql"),
    ),
    (
        "baskets_versions",
        include_str!("../../sql/table_baskets_versions.sql"),
    ),
    (
        "order_lines_versions",
        include_str!("../../sql/table_order_lines_versions.sql"),
    ),
    (
        "experience_decisions_log",
        include_str!("../../sql/table_experience_decisions_log.sql"),
    ),
    (
        "privacy_audit_log",
        include_str!("../../sql/table_privacy_audit_log.sql"),
    ),
    (
        "late_events_log",
        include_str!("../../sql/table_late_events_log.sql"),
    ),
    (
        "campaigns_log",
        include_str!("../../sql/table_campaigns_log.sql"),
    ),
];

/// Columns added to tables after they were first created, as `(table, column, type and
/// default)`: [`ClickHouseStore::migrate`](crate::clickhouse::ClickHouseStore::migrate) adds
/// those missing (18.16 has no `ADD COLUMN IF NOT EXISTS`). The tables' statements in
/// [`TABLES`] already have them, last, in this order.
pub const ADDED_COLUMNS: [(&str, &str, &str); 7] = [
    // The sources' positions, then the graph's tick and horizons (older rows read "" and 0:
    // none recorded).
    ("progress", "positions", "String"),
    ("progress", "tick_ms", "UInt64"),
    ("progress", "dedup_horizon_ms", "UInt64"),
    ("progress", "settlement_ms", "UInt64"),
    // Holdout groups (older rows were all shown).
    (
        "experience_decisions_log",
        "campaign_group",
        "String DEFAULT 'shown'",
    ),
    // Frequency caps (older rows were not capped).
    ("experience_decisions_log", "capped", "UInt8 DEFAULT 0"),
    // Budgets (older rows were within budget).
    ("experience_decisions_log", "over_budget", "UInt8 DEFAULT 0"),
];

/// Name and `CREATE VIEW IF NOT EXISTS <db>.<name> AS ...` statement of every analyst view.
pub const VIEWS: [(&str, &str); 11] = [
    (
        "sold_products_daily",
        include_str!("../../sql/view_sold_products_daily.sql"),
    ),
    (
        "shopper_purchases",
        include_str!("../../sql/view_shopper_purchases.sql"),
    ),
    (
        "product_affinities",
        include_str!("../../sql/view_product_affinities.sql"),
    ),
    ("baskets", include_str!("../../sql/view_baskets.sql")),
    (
        "order_lines",
        include_str!("../../sql/view_order_lines.sql"),
    ),
    (
        "experience_decisions",
        include_str!("../../sql/view_experience_decisions.sql"),
    ),
    (
        "privacy_audit",
        include_str!("../../sql/view_privacy_audit.sql"),
    ),
    (
        "late_events",
        include_str!("../../sql/view_late_events.sql"),
    ),
    ("campaigns", include_str!("../../sql/view_campaigns.sql")),
    (
        "campaign_uplift",
        include_str!("../../sql/view_campaign_uplift.sql"),
    ),
    (
        "game_winners",
        include_str!("../../sql/view_game_winners.sql"),
    ),
];

/// The tables that hold versions (every table of [`TABLES`] but `progress`): one per read
/// model, `<name>_versions`, in the order of [`DEFINITIONS`].
pub const VERSION_TABLES: [&str; 5] = {
    let mut tables = [""; 5];
    let mut i = 0;
    while i < tables.len() {
        tables[i] = DEFINITIONS[i].versions_table;
        i += 1;
    }
    tables
};

/// The tables a batch writes rows with a `time` into: a crash before the progress row leaves
/// rows above the committed time in them, which [`ClickHouseStore::discard_uncommitted`](crate::clickhouse::ClickHouseStore::discard_uncommitted)
/// deletes.
pub const BATCH_TABLES: [&str; 8] = [
    "sold_products_daily_versions",
    "shopper_purchases_versions",
    "product_affinities_versions",
    "baskets_versions",
    "order_lines_versions",
    "experience_decisions_log",
    "privacy_audit_log",
    "late_events_log",
];

/// The tables whose rows name a shopper (`retailer_id`, `shopper_id`, `time` columns): an
/// erasure deletes the shopper's rows from each, retention the rows older than the period.
/// The versions tables among them are those of the read models with a `shopper_id` column
/// ([`Definition::names_shoppers`](basketflow_vocab::read_models::Definition::names_shoppers)).
/// `order_lines_versions` also holds anonymous rows (empty `shopper_id`), which stay.
pub const PER_SHOPPER_TABLES: [&str; 4] = [
    "shopper_purchases_versions",
    "baskets_versions",
    "order_lines_versions",
    "experience_decisions_log",
];

/// The key columns of `table`, comma-separated, when it is a read model's versions table.
pub(crate) fn version_key(table: &str) -> Option<String> {
    DEFINITIONS
        .iter()
        .find(|d| d.versions_table == table)
        .map(|d| {
            d.key_columns()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", ")
        })
}

/// `sql` (one of [`TABLES`] or [`VIEWS`]) for database `database`.
pub fn statement(sql: &str, database: &str) -> String {
    sql.replace(DATABASE_PLACEHOLDER, database)
}

/// Views are compared and swapped under temporary names with these prefixes.
pub(crate) const PROBE_PREFIX: &str = "_bf_probe_";
pub(crate) const OLD_PREFIX: &str = "_bf_old_";

/// What [`ClickHouseStore::migrate`](crate::clickhouse::ClickHouseStore::migrate) did.
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

/// `sql` of view `name` creating the view under its probe name instead.
pub(crate) fn probe_statement(name: &str, sql: &str) -> String {
    let from = format!("{DATABASE_PLACEHOLDER}.{name} AS");
    let to = format!("{DATABASE_PLACEHOLDER}.{PROBE_PREFIX}{name} AS");
    debug_assert!(sql.contains(&from), "view {name}: unexpected statement");
    sql.replacen(&from, &to, 1)
}

#[cfg(test)]
mod tests;
