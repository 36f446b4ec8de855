use basketflow_vocab::read_models::{Column, Definition};

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
    for d in DEFINITIONS {
        assert_eq!(d.versions_table, format!("{}_versions", d.name));
    }
}

#[test]
fn batch_and_per_shopper_tables_follow_the_definitions() {
    assert_eq!(BATCH_TABLES[..VERSION_TABLES.len()], VERSION_TABLES);
    assert_eq!(
        BATCH_TABLES[VERSION_TABLES.len()..],
        [
            "experience_decisions_log",
            "privacy_audit_log",
            "late_events_log"
        ]
    );
    let mut per_shopper: Vec<&str> = DEFINITIONS
        .iter()
        .filter(|d| d.names_shoppers())
        .map(|d| d.versions_table)
        .collect();
    per_shopper.push("experience_decisions_log");
    assert_eq!(per_shopper, PER_SHOPPER_TABLES);
    assert_eq!(
        version_key("shopper_purchases_versions").as_deref(),
        Some("retailer_id, shopper_id, product_id")
    );
    assert_eq!(
        version_key("baskets_versions").as_deref(),
        Some("retailer_id, shopper_id, product_id")
    );
    assert_eq!(
        version_key("order_lines_versions").as_deref(),
        Some("retailer_id, order_id, product_id, category")
    );
    assert_eq!(version_key("experience_decisions_log"), None);
}

/// `sql` without its `--` comments, trimmed lines.
fn lines(sql: &str) -> Vec<&str> {
    sql.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
        .collect()
}

/// The text after `prefix` on the line that starts with it.
fn after<'a>(lines: &[&'a str], prefix: &str, what: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("{what}: no line starting with {prefix:?}"))
        .trim()
}

fn key_names(d: &Definition) -> Vec<&'static str> {
    d.key_columns().map(|c| c.name).collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The `(column, type)` list between the parentheses of a `CREATE TABLE`.
fn table_columns<'a>(lines: &[&'a str], what: &str) -> Vec<(&'a str, &'a str)> {
    let open = lines.iter().position(|l| *l == "(").expect(what);
    let close = lines.iter().position(|l| *l == ")").expect(what);
    lines[open + 1..close]
        .iter()
        .map(|l| {
            let l = l.trim_end_matches(',');
            l.split_once(' ')
                .unwrap_or_else(|| panic!("{what}: column line {l:?}"))
        })
        .collect()
}

#[test]
fn the_versions_tables_have_the_columns_types_and_key_of_their_read_model() {
    for d in DEFINITIONS {
        let (_, sql) = TABLES
            .iter()
            .find(|(n, _)| *n == d.versions_table)
            .unwrap_or_else(|| panic!("no table {}", d.versions_table));
        let what = d.versions_table;
        let lines = lines(sql);
        let mut expected: Vec<(&str, &str)> = d
            .columns
            .iter()
            .map(|c: &Column| (c.name, c.ty.sql()))
            .collect();
        expected.extend([("deleted", "UInt8"), ("time", "UInt64")]);
        assert_eq!(
            sorted(table_columns(&lines, what)),
            sorted(expected),
            "{what}: columns and types"
        );
        assert_eq!(
            after(&lines, "ENGINE =", what),
            "ReplacingMergeTree(time)",
            "{what}"
        );
        let mut order = key_names(&d);
        order.push("time");
        assert_eq!(
            after(&lines, "ORDER BY", what),
            format!("({})", order.join(", ")),
            "{what}: sort key"
        );
    }
}

#[test]
fn the_views_show_the_newest_committed_version_of_each_key_of_their_read_model() {
    for d in DEFINITIONS {
        let (_, sql) = VIEWS
            .iter()
            .find(|(n, _)| *n == d.name)
            .unwrap_or_else(|| panic!("no view {}", d.name));
        let what = d.name;
        let lines = lines(sql);
        let select = lines.iter().position(|l| *l == "SELECT").expect(what);
        let from = lines
            .iter()
            .position(|l| l.starts_with("FROM "))
            .expect(what);
        let mut selected: Vec<String> = lines[select + 1..from]
            .iter()
            .map(|l| l.trim_end_matches(',').to_string())
            .collect();
        selected.sort();
        let expected = sorted(
            d.columns
                .iter()
                .map(|c| match c.key {
                    true => c.name.to_string(),
                    false => format!("argMax({0}, time) AS {0}", c.name),
                })
                .collect(),
        );
        assert_eq!(selected, expected, "{what}: selected columns");
        assert_eq!(
            lines[from],
            format!("FROM {{database}}.{}", d.versions_table),
            "{what}"
        );
        assert_eq!(
            after(&lines, "WHERE", what),
            "time <= (SELECT max(time) FROM {database}.progress)",
            "{what}"
        );
        assert_eq!(
            after(&lines, "GROUP BY", what),
            key_names(&d).join(", "),
            "{what}: key"
        );
        assert_eq!(
            after(&lines, "HAVING", what),
            "argMax(deleted, time) = 0",
            "{what}"
        );
    }
}
