//! Integration: erasure and retention through the whole graph, against the real broker and
//! ClickHouse (`scripts/stack up`).
//!
//! * Erasure: generated traffic and a tree per shopper; the graph processes the first half;
//!   `privacy export` shows the victim's rows; `privacy erase` sends the request; the second
//!   half follows (with more of the victim's events), on a cluster of 2 processes. Then no
//!   decision comes from the victim's later events, no table of the database (views,
//!   versions, decisions log, audit) holds a row naming the victim, every view equals the
//!   oracle over the events with the victim's replaced by their anonymous residues, the audit
//!   acknowledges the request, and `privacy export` is empty. A restart (replay) and a rebuild
//!   into a fresh database from the same topics give exactly the same; the rebuild never
//!   writes a row of the victim at all. The graph checkpoints every 500 ms: the first half is
//!   processed by a live run stopped once a checkpoint covers it (that checkpoint holds the
//!   victim's state), and the cluster after the erasure must start from that checkpoint, so
//!   the erasure, read after it, is what removes the victim again.
//! * Retention: a period of 4 s on live traffic: the per-shopper views fill, then empty once
//!   the period has passed, while the product figures stay equal to the oracle over every
//!   event, and the writer deletes the history that named shoppers.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use basketflow_dataflows::oracle;
use basketflow_dataflows::privacy::anonymous;
use basketflow_testkit::{hostfile, logged_u64, unique_suffix, wait_all, ChildGuard, Stack};
use basketflow_vocab::{Event, Timestamp};
use serde_json::Value;
use support::{
    basketflow, cluster_args, expected, latest_checkpoint, now_ms, run_caught_up,
    run_until_checkpoint, spawn, valid_events, GraphStack, RunTargets, Traffic,
};

/// How many times `shopper` appears as a serialized string (length-prefixed, as `bincode`
/// writes it) in the parts of `checkpoint`.
fn mentions(checkpoint: &basketflow_operators::checkpoint::Restore, shopper: &str) -> usize {
    let mut needle = (shopper.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(shopper.as_bytes());
    checkpoint
        .parts
        .values()
        .flatten()
        .map(|part| part.windows(needle.len()).filter(|w| *w == needle).count())
        .sum()
}

/// Runs `basketflow privacy <args>` with `config` and returns its stdout (it must succeed).
fn privacy(config: &std::path::Path, args: &[&str]) -> String {
    let out = basketflow()
        .arg("privacy")
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .env_remove("BASKETFLOW_CLICKHOUSE_URL")
        .output()
        .expect("running basketflow privacy");
    assert!(
        out.status.success(),
        "basketflow privacy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Rows per view of `privacy export`.
fn exported(config: &std::path::Path, retailer: &str, shopper: &str) -> Vec<(String, usize)> {
    let doc: Value = serde_json::from_str(&privacy(
        config,
        &["export", "--retailer", retailer, "--shopper", shopper],
    ))
    .expect("export prints JSON");
    assert_eq!(doc["shopper_id"], shopper);
    doc["tables"]
        .as_object()
        .expect("export lists tables")
        .iter()
        .map(|(name, rows)| (name.clone(), rows.as_array().unwrap().len()))
        .collect()
}

/// Every table and view of `db` with a `shopper_id` column, and how many of its rows name
/// `(retailer, shopper)`.
fn rows_naming(stack: &Stack, db: &str, retailer: &str, shopper: &str) -> Vec<(String, u64)> {
    let tables = stack.clickhouse(&format!(
        "SELECT DISTINCT table FROM system.columns WHERE database = '{db}' AND name = 'shopper_id' ORDER BY table FORMAT TabSeparated"
    ));
    tables
        .lines()
        .map(|t| {
            let n = stack.clickhouse(&format!(
                "SELECT count() FROM {db}.{t} WHERE retailer_id = '{retailer}' AND shopper_id = '{shopper}'"
            ));
            (t.to_string(), n.trim().parse().unwrap())
        })
        .collect()
}

#[test]
fn an_erased_shopper_leaves_every_table_and_a_restart_or_rebuild_never_brings_them_back() {
    let stack = Stack::shared();
    let suffix = unique_suffix();
    let events = format!("it-privacy-events-{suffix}");
    let trees = format!("it-privacy-trees-{suffix}");
    let (rejected, rejected_rebuild) = (
        format!("it-privacy-rejected-{suffix}"),
        format!("it-privacy-rejected-rebuild-{suffix}"),
    );
    let (decisions, decisions_rebuild) = (
        format!("it-privacy-decisions-{suffix}"),
        format!("it-privacy-decisions-rebuild-{suffix}"),
    );
    let (db, db_rebuild) = (
        format!("bf_it_privacy_{suffix}"),
        format!("bf_it_privacy_rebuild_{suffix}"),
    );
    stack.create_topic(&events, 8, "delete");
    stack.create_topic(&format!("{events}-privacy"), 1, "delete");
    stack.create_topic(&trees, 8, "compact");
    for t in [&rejected, &rejected_rebuild] {
        stack.create_topic(t, 1, "delete");
    }
    for t in [&decisions, &decisions_rebuild] {
        stack.create_topic(t, 8, "delete");
    }
    let traffic = Traffic::generate(20_261_201, 12_000, 400);
    let (first, second) = traffic.messages.split_at(traffic.messages.len() / 2);

    // The victim: the shopper with the most purchase rows after the first half, among those
    // who pay again in the second half (a paid order moves every tree to its "paid" node, so
    // without the erasure they would get a decision then).
    let later: std::collections::BTreeSet<(String, String)> = valid_events(second)
        .into_iter()
        .filter(|e| matches!(e.body, basketflow_vocab::EventBody::OrderPaid { .. }))
        .map(|e| (e.retailer_id, e.shopper_id))
        .collect();
    let rows = oracle::read_models(&valid_events(first));
    let mut counts: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for p in &rows.shopper_purchases {
        let key = (p.retailer_id.clone(), p.shopper_id.clone());
        if later.contains(&key) {
            *counts.entry(key).or_default() += 1;
        }
    }
    let ((retailer, victim), _) = counts
        .into_iter()
        .max_by_key(|(k, n)| (*n, std::cmp::Reverse(k.clone())))
        .expect("some shopper bought in the first half and comes back");
    println!("victim {retailer}/{victim}");

    let dir = std::env::temp_dir().join(format!("basketflow-it-privacy-{suffix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let targets = |rejected, decisions, database| RunTargets {
        events: &events,
        trees: &trees,
        rejected,
        decisions,
        database,
    };
    // Checkpoints every 500 ms: the restart after the erasure starts from one taken before it.
    let cfg = stack.write_config(
        &dir,
        "run",
        &targets(&rejected, &decisions, &db),
        "[graph]\ncheckpoint_interval_ms = 500\n",
    );
    let cfg_rebuild = stack.write_config(
        &dir,
        "rebuild",
        &targets(&rejected_rebuild, &decisions_rebuild, &db_rebuild),
        "",
    );

    traffic.produce_trees(&stack, &trees);
    stack.produce(&events, first);
    let produced_by = now_ms();
    // A live run until a checkpoint covers the first half: that checkpoint holds the victim.
    run_until_checkpoint(&cfg, produced_by);
    let before_erasure = latest_checkpoint(&stack.brokers, &decisions).expect("a checkpoint");
    assert!(before_erasure.at >= produced_by);
    assert!(
        mentions(&before_erasure, &victim) > 0,
        "the checkpoint before the erasure holds the victim's state"
    );
    let before = exported(&cfg, &retailer, &victim);
    let held: std::collections::BTreeMap<_, _> = before.iter().cloned().collect();
    assert!(held["shopper_purchases"] > 0, "export before: {before:?}");
    assert!(held["order_lines"] > 0, "export before: {before:?}");

    let request_id = format!("erase-it-{suffix}");
    let request: Value = serde_json::from_str(
        privacy(
            &cfg,
            &[
                "erase",
                "--retailer",
                &retailer,
                "--shopper",
                &victim,
                "--request-id",
                &request_id,
            ],
        )
        .lines()
        .next()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(request["request_id"], request_id.as_str());
    let landed_later = stack.produce(&events, second);
    // The rest on a cluster of 2 processes x 1 worker.
    let hosts = hostfile(&dir, 2);
    let on_cluster = |round: &str| -> Vec<String> {
        let logs: Vec<_> = (0..2)
            .map(|p| dir.join(format!("{round}-{p}.log")))
            .collect();
        let children = (0..2)
            .map(|p| {
                let log = std::fs::File::create(&logs[p]).unwrap();
                ChildGuard::spawn(
                    basketflow()
                        .args(cluster_args(&cfg, &hosts, 2, p, 1, true))
                        .env_remove("BASKETFLOW_CLICKHOUSE_URL")
                        .stdin(Stdio::null())
                        .stdout(log.try_clone().unwrap())
                        .stderr(log),
                )
            })
            .collect();
        wait_all(children, Duration::from_secs(300));
        logs.iter()
            .map(|l| std::fs::read_to_string(l).unwrap())
            .collect()
    };
    // Both processes start from the checkpoint taken before the erasure: the victim's state
    // comes back with it, and the erasure, read after it, must remove it again.
    for log in on_cluster("after-erasure") {
        assert_eq!(
            logged_u64(&log, "starting from the checkpoint", "at"),
            Some(before_erasure.at),
            "{log}"
        );
    }

    // No decision for the victim from an event after the erasure (their tree state is gone
    // and their id stays erased), while other shoppers' later events decide.
    let later_positions: std::collections::BTreeSet<(i64, i64)> = second
        .iter()
        .zip(&landed_later)
        .map(|(_, &(p, o))| (i64::from(p), o))
        .collect();
    let decisions_later: Vec<Value> = stack
        .read_topic(&decisions, 8)
        .iter()
        .map(|m| serde_json::from_slice(m).unwrap())
        .filter(|d: &Value| {
            let c = &d["caused_by"];
            later_positions.contains(&(
                c["partition"].as_i64().unwrap(),
                c["offset"].as_i64().unwrap(),
            ))
        })
        .collect();
    assert!(decisions_later.len() > 10, "later events decide for others");
    assert!(
        decisions_later
            .iter()
            .all(|d| !(d["retailer_id"] == retailer.as_str() && d["shopper_id"] == victim.as_str())),
        "a decision for the erased shopper"
    );

    // The views as the oracle says, with the victim's events replaced by their residues.
    let seen: Vec<Event> = valid_events(&traffic.messages)
        .into_iter()
        .filter_map(|e| {
            if e.retailer_id == retailer && e.shopper_id == victim {
                anonymous(&e)
            } else {
                Some(e)
            }
        })
        .collect();
    let want = expected(&seen);
    let check = |db: &str, when: &str| {
        for (table, n) in rows_naming(&stack, db, &retailer, &victim) {
            assert_eq!(n, 0, "{when}: {db}.{table} still names the victim");
        }
        for (name, rows) in &want {
            assert_eq!(&stack.view(db, name), rows, "{when}: {name} vs oracle");
        }
    };
    check(&db, "after the erasure");
    let audit = stack.view(&db, "privacy_audit");
    assert_eq!(audit.len(), 1, "one acknowledged request: {audit:?}");
    let fields: Vec<&str> = audit[0].split('\t').collect();
    assert_eq!(fields[0], request_id);
    assert_eq!(fields[1], retailer);
    assert!(
        fields[4].parse::<u64>().unwrap() > 0,
        "purchases removed: {audit:?}"
    );
    assert!(
        fields[6].parse::<u64>().unwrap() > 0,
        "order lines removed: {audit:?}"
    );
    let after = exported(&cfg, &retailer, &victim);
    assert!(
        after.iter().all(|(_, n)| *n == 0),
        "export after: {after:?}"
    );
    // The anonymous order lines are there: the victim's orders still count.
    assert!(want
        .iter()
        .find(|(n, _)| *n == "order_lines")
        .unwrap()
        .1
        .iter()
        .any(|l| l.split('\t').nth(2) == Some("")));

    // A restart of the cluster replays everything and writes nothing new; the victim stays
    // gone.
    on_cluster("restart");
    check(&db, "after a restart");
    assert_eq!(stack.view(&db, "privacy_audit"), audit);
    // A rebuild from the topics into a fresh database: the same, and the victim was never
    // written at all (the writer knew the erasure from the start: it found nothing to delete).
    run_caught_up(&cfg_rebuild);
    check(&db_rebuild, "after a rebuild");
    let rebuilt = stack.view(&db_rebuild, "privacy_audit");
    assert_eq!(rebuilt.len(), 1, "{rebuilt:?}");
    assert_eq!(
        rebuilt[0].split('\t').skip(4).collect::<Vec<_>>(),
        ["0", "0", "0", "0"],
        "nothing of the victim was written by the rebuild: {rebuilt:?}"
    );

    // No identifying data anywhere the graph writes: ClickHouse columns and values, and the
    // topics it produces (decisions, dead letters, progress). The traffic carried PII.
    assert!(traffic
        .messages
        .iter()
        .any(|m| m.expect
            == basketflow_examples::Expect::Rejected(basketflow_ingest::RejectCode::Pii)));
    for d in [&db, &db_rebuild] {
        assert_no_identifying_data_in_clickhouse(&stack, d);
    }
    for (topic, partitions) in [
        (decisions.clone(), 8),
        (rejected.clone(), 1),
        (format!("{decisions}-progress"), 1),
        (decisions_rebuild.clone(), 8),
        (rejected_rebuild.clone(), 1),
    ] {
        let messages = stack.read_topic(&topic, partitions);
        assert!(!messages.is_empty(), "{topic} has messages");
        for m in messages {
            assert_no_identifying_data(&topic, &String::from_utf8_lossy(&m));
        }
    }

    let _ = std::fs::remove_dir_all(&dir);
}

/// Fails if `text` (a message or a row, JSON or not) holds an email address, or a JSON key
/// naming identifying data (the ingest's own rules), at any depth.
fn assert_no_identifying_data(place: &str, text: &str) {
    fn walk(place: &str, v: &Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    assert!(
                        !basketflow_ingest::pii::pii_key(k),
                        "{place}: a field named {k:?}"
                    );
                    walk(place, v);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(place, v)),
            Value::String(s) => {
                assert!(
                    !basketflow_ingest::pii::looks_like_email(s),
                    "{place}: an email address in {s:?}"
                );
                // Strings that are JSON themselves (params, positions, excerpts).
                if let Ok(inner) = serde_json::from_str::<Value>(s) {
                    if inner.is_object() || inner.is_array() {
                        walk(place, &inner);
                    }
                }
            }
            _ => {}
        }
    }
    assert!(
        !basketflow_ingest::pii::looks_like_email(text),
        "{place}: an email address in {text}"
    );
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        walk(place, &v);
    }
}

/// Every column name and every row (as JSON) of every table of `db`.
fn assert_no_identifying_data_in_clickhouse(stack: &Stack, db: &str) {
    let columns = stack.clickhouse(&format!(
        "SELECT table, name FROM system.columns WHERE database = '{db}' FORMAT TabSeparated"
    ));
    assert!(columns.lines().count() > 20, "{db} has its tables");
    for line in columns.lines() {
        let (table, column) = line.split_once('\t').unwrap();
        assert!(
            !basketflow_ingest::pii::pii_key(column),
            "{db}.{table} has a column named {column:?}"
        );
    }
    let tables = stack.clickhouse(&format!(
        "SELECT name FROM system.tables WHERE database = '{db}' FORMAT TabSeparated"
    ));
    for table in tables.lines() {
        for row in stack
            .clickhouse(&format!("SELECT * FROM {db}.{table} FORMAT JSONEachRow"))
            .lines()
        {
            assert_no_identifying_data(&format!("{db}.{table}"), row);
        }
    }
}

#[test]
fn with_a_retention_of_seconds_per_shopper_data_leaves_and_product_figures_stay() {
    let stack = Stack::shared();
    let suffix = unique_suffix();
    let events = format!("it-retention-events-{suffix}");
    let trees = format!("it-retention-trees-{suffix}");
    let rejected = format!("it-retention-rejected-{suffix}");
    let decisions = format!("it-retention-decisions-{suffix}");
    let db = format!("bf_it_retention_{suffix}");
    stack.create_topic(&events, 8, "delete");
    stack.create_topic(&format!("{events}-privacy"), 1, "delete");
    stack.create_topic(&trees, 8, "compact");
    stack.create_topic(&rejected, 1, "delete");
    stack.create_topic(&decisions, 8, "delete");
    // Events that occur now (a late tracker clock makes some leave at once).
    let traffic = Traffic::generate_from(7, 4_000, 200, Timestamp::now());
    let dir = std::env::temp_dir().join(format!("basketflow-it-retention-{suffix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = stack.write_config(
        &dir,
        "run",
        &RunTargets {
            events: &events,
            trees: &trees,
            rejected: &rejected,
            decisions: &decisions,
            database: &db,
        },
        "[privacy]\nretention_ms = 4000\n",
    );
    traffic.produce_trees(&stack, &trees);
    let mut graph = spawn(&["run", "--config", cfg.to_str().unwrap()]);
    let count = |sql: &str| -> u64 { stack.clickhouse(sql).trim().parse().unwrap() };
    let wait_until = |what: &str, limit: Duration, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let progress = |db: &str| format!("SELECT max(time) FROM {db}.progress");
    // Per-shopper figures appear (within the period of the events)...
    let exists = |t: &str| {
        count(&format!(
            "SELECT count() FROM system.tables WHERE database = '{db}' AND name = '{t}'"
        )) == 1
    };
    wait_until("the views exist", Duration::from_secs(60), &|| {
        exists("shopper_purchases") && exists("progress")
    });
    // The graph is running once it commits times (idle partitions follow the wall clock);
    // only then does the traffic go out, so that it is read well within its period.
    wait_until("the graph commits", Duration::from_secs(60), &|| {
        count(&progress(&db)) > 0
    });
    stack.produce(&events, &traffic.messages);
    let produced = Instant::now();
    let purchases = format!("SELECT count() FROM {db}.shopper_purchases");
    let first_seen = Instant::now();
    wait_until("purchases appear", Duration::from_secs(60), &|| {
        count(&purchases) > 0
    });
    println!("purchases visible {:?} after producing", produced.elapsed());
    // ... and leave once the period is over, as the frontier follows the wall clock.
    wait_until("purchases leave", Duration::from_secs(60), &|| {
        count(&purchases) == 0
            && count(&format!("SELECT count() FROM {db}.baskets")) == 0
            && count(&format!(
                "SELECT count() FROM {db}.order_lines WHERE shopper_id != ''"
            )) == 0
            && count(&format!("SELECT count() FROM {db}.experience_decisions")) == 0
    });
    println!(
        "per-shopper views empty {:?} after they filled",
        first_seen.elapsed()
    );
    // The writer deletes the history that named shoppers (rows older than the period).
    wait_until("history deleted", Duration::from_secs(60), &|| {
        let committed = count(&progress(&db));
        [
            "shopper_purchases_versions",
            "baskets_versions",
            "order_lines_versions",
            "experience_decisions_log",
        ]
        .iter()
        .all(|t| {
            count(&format!(
                "SELECT count() FROM {db}.{t} WHERE shopper_id != '' AND time + 4000 < {committed}"
            )) == 0
        })
    });
    // Product figures are anonymous: they keep every order.
    let want = expected(&valid_events(&traffic.messages));
    for name in ["sold_products_daily", "product_affinities"] {
        let rows = &want.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(!rows.is_empty(), "{name}");
        assert_eq!(&stack.view(&db, name), rows, "{name} vs oracle");
    }
    let lines = stack.view(&db, "order_lines");
    let want_lines: Vec<String> = want
        .iter()
        .find(|(n, _)| *n == "order_lines")
        .unwrap()
        .1
        .iter()
        .map(|l| {
            let mut f: Vec<&str> = l.split('\t').collect();
            f[2] = "";
            f.join("\t")
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let got_lines: Vec<String> = lines
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(got_lines, want_lines, "order lines, anonymous");

    assert!(graph.terminate());
    let exit = graph.wait().unwrap();
    assert!(exit.success(), "the graph drains on SIGTERM: {exit}");
    let _ = std::fs::remove_dir_all(&dir);
}
