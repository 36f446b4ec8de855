//! `basketflow privacy erase` and `basketflow privacy export`, run as a user runs them, against
//! the stack of `scripts/stack up` (`$BASKETFLOW_BROKERS`, `$BASKETFLOW_CLICKHOUSE_URL`;
//! defaults 127.0.0.1:9092 and http://127.0.0.1:8123). Each test uses topics and a ClickHouse
//! database of its own; the topics are deleted and the databases dropped at the end, also on
//! failure.
//!
//! Every child starts without the caller's `BASKETFLOW_*` variables and in an empty directory
//! (no `basketflow.toml`), with exactly the overrides the test sets.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};

use basketflow_sinks::clickhouse::versions::{Batch, Updates};
use basketflow_sinks::clickhouse::ClickHouseStore;
use basketflow_sinks::clickhouse::{prepare, Target};
use basketflow_testkit::kafka::watermarks;
use basketflow_testkit::{clear_basketflow_env, unique, ChildGuard, Database, Stack};
use basketflow_vocab::read_models::{BasketLine, PaidOrderLine, ShopperPurchase};
use basketflow_vocab::{ErasureRequest, Timestamp};
use serde_json::{json, Value};
use support::basketflow;

/// `basketflow privacy <args>` in an empty directory with exactly the `BASKETFLOW_*` variables
/// `vars`.
fn privacy(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let dir = std::env::temp_dir().join(format!("basketflow-privacy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = basketflow();
    command.arg("privacy").args(args).current_dir(&dir);
    clear_basketflow_env(&mut command)
        .envs(vars.iter().copied())
        .env("RUST_BACKTRACE", "0");
    command
}

fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    privacy(args, vars)
        .output()
        .expect("running basketflow privacy")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every (key, value) in partition 0 of `topic`, from the beginning to the high watermark.
fn messages(stack: &Stack, topic: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (low, high) = watermarks(&stack.brokers, topic, 0);
    assert_eq!(low, 0, "{topic} is fresh");
    let out: Vec<(Vec<u8>, Vec<u8>)> = stack
        .read_to_end(topic)
        .into_iter()
        .filter(|r| r.partition == 0)
        .map(|r| (r.key.unwrap_or_default(), r.payload.unwrap_or_default()))
        .collect();
    assert_eq!(out.len() as i64, high, "every message of {topic} read");
    out
}

#[test]
fn erase_produces_one_request_keyed_by_the_shopper() {
    let stack = Stack::shared();
    let topic = unique("bf-test-privacy-erase");
    stack.create_topic(&topic, 1, "delete");
    let vars = [
        ("BASKETFLOW_KAFKA_BROKERS", stack.brokers.as_str()),
        ("BASKETFLOW_KAFKA_PRIVACY_TOPIC", topic.as_str()),
    ];

    // A generated request id.
    let before = Timestamp::now();
    let out = run(
        &[
            "erase",
            "--retailer",
            "retailer-07",
            "--shopper",
            "shopper-42",
        ],
        &vars,
    );
    let after = Timestamp::now();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stdout}");
    let printed = ErasureRequest::parse(lines[0].as_bytes()).unwrap();
    assert_eq!(printed.retailer_id, "retailer-07");
    assert_eq!(printed.shopper_id, "shopper-42");
    let hex = printed
        .request_id
        .strip_prefix("erase-")
        .unwrap_or_else(|| panic!("{}", printed.request_id));
    assert_eq!(hex.len(), 32, "128 bits: {hex}");
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{hex}"
    );
    assert!(
        before <= printed.requested_at && printed.requested_at <= after,
        "{printed:?} not between {before} and {after}"
    );

    let on_topic = messages(&stack, &topic);
    assert_eq!(on_topic.len(), 1);
    let (key, value) = &on_topic[0];
    assert_eq!(key.as_slice(), b"shopper-42");
    assert_eq!(value.as_slice(), lines[0].as_bytes());
    assert_eq!(ErasureRequest::parse(value).unwrap(), printed);

    // A given request id; one more message, nothing else.
    let out = run(
        &[
            "erase",
            "--retailer",
            "retailer-07",
            "--shopper",
            "shopper 'x'",
            "--request-id",
            "ticket-123",
        ],
        &vars,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let printed = ErasureRequest::parse(stdout.trim_end().as_bytes()).unwrap();
    assert_eq!(printed.request_id, "ticket-123");
    assert_eq!(printed.shopper_id, "shopper 'x'");
    let on_topic = messages(&stack, &topic);
    assert_eq!(on_topic.len(), 2);
    assert_eq!(on_topic[1].0.as_slice(), b"shopper 'x'");
    assert_eq!(ErasureRequest::parse(&on_topic[1].1).unwrap(), printed);
}

#[test]
fn erase_refuses_a_request_the_graph_would_refuse_and_a_missing_topic() {
    let stack = Stack::shared();
    let topic = unique("bf-test-privacy-refused");
    stack.create_topic(&topic, 1, "delete");
    let long = "r".repeat(129);
    let out = run(
        &["erase", "--retailer", &long, "--shopper", "s1"],
        &[
            ("BASKETFLOW_KAFKA_BROKERS", stack.brokers.as_str()),
            ("BASKETFLOW_KAFKA_PRIVACY_TOPIC", topic.as_str()),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr)
            .contains("invalid erasure request: retailer_id must have 1 to 128 bytes, got 129"),
        "{}",
        text(&out.stderr)
    );
    assert!(messages(&stack, &topic).is_empty(), "nothing was sent");

    // A topic that does not exist is named, not created.
    let missing = unique("bf-test-privacy-missing");
    let out = run(
        &["erase", "--retailer", "r1", "--shopper", "s1"],
        &[
            ("BASKETFLOW_KAFKA_BROKERS", stack.brokers.as_str()),
            ("BASKETFLOW_KAFKA_PRIVACY_TOPIC", missing.as_str()),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        format!(
            "privacy erase: topic {missing} does not exist on {}; create it, or set \
             kafka.privacy_topic\n",
            stack.brokers
        )
    );
}

/// Reads one line of the child's stdout (blocks until it is written).
fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

fn wait_for(mut child: ChildGuard, stdout: &mut impl Read) -> (Option<i32>, String, String) {
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    (status.code(), rest, stderr)
}

#[test]
fn erase_wait_prints_the_audit_row_once_the_graph_wrote_it() {
    let stack = Stack::shared();
    let topic = unique("bf-test-privacy-wait");
    stack.create_topic(&topic, 1, "delete");
    let db = Database::fresh(&stack.clickhouse_url, "bf_test_privacy_wait");
    let mut child = ChildGuard::spawn(
        privacy(
            &[
                "erase",
                "--retailer",
                "retailer-07",
                "--shopper",
                "shopper-42",
                "--wait",
            ],
            &[
                ("BASKETFLOW_KAFKA_BROKERS", stack.brokers.as_str()),
                ("BASKETFLOW_KAFKA_PRIVACY_TOPIC", topic.as_str()),
                ("BASKETFLOW_CLICKHOUSE_URL", stack.clickhouse_url.as_str()),
                ("BASKETFLOW_CLICKHOUSE_DATABASE", db.name()),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()),
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // The request is delivered once its line is printed; neither the database nor the audit
    // table exist yet, so the command is waiting.
    let first = read_line(&mut stdout);
    let request = ErasureRequest::parse(first.trim_end().as_bytes()).unwrap();
    assert_eq!(messages(&stack, &topic).len(), 1);

    // What the graph's audit sink does once the erasure is applied everywhere.
    stack.clickhouse(&format!("CREATE DATABASE {}", db.name()));
    stack.clickhouse(&format!(
        "CREATE TABLE {}.privacy_audit (request_id String, retailer_id String, \
         received_at DateTime, applied_at DateTime, removed_shopper_purchases UInt64, \
         removed_baskets UInt64, removed_order_lines UInt64, \
         removed_experience_decisions UInt64) ENGINE = MergeTree() ORDER BY request_id",
        db.name()
    ));
    stack.clickhouse(&format!(
        "INSERT INTO {}.privacy_audit VALUES \
         ('another-request', 'retailer-07', '2026-12-01 09:00:00', '2026-12-01 09:00:01', 9, 9, 9, 9), \
         ('{}', 'retailer-07', '2026-12-01 10:00:00', '2026-12-01 10:00:02', 3, 1, 4, 2)",
        db.name(), request.request_id
    ));

    let (code, rest, stderr) = wait_for(child, &mut stdout);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        rest,
        format!(
            "{{\"request_id\":\"{}\",\"retailer_id\":\"retailer-07\",\
             \"received_at\":\"2026-12-01 10:00:00\",\"applied_at\":\"2026-12-01 10:00:02\",\
             \"removed_shopper_purchases\":3,\"removed_baskets\":1,\"removed_order_lines\":4,\
             \"removed_experience_decisions\":2}}\n",
            request.request_id
        )
    );
}

#[test]
fn erase_wait_gives_up_after_the_timeout() {
    let stack = Stack::shared();
    let topic = unique("bf-test-privacy-timeout");
    stack.create_topic(&topic, 1, "delete");
    // A database that never gets an audit table.
    let db = Database::fresh(&stack.clickhouse_url, "bf_test_privacy_timeout");
    let out = run(
        &[
            "erase",
            "--retailer",
            "retailer-07",
            "--shopper",
            "shopper-42",
            "--request-id",
            "ticket-9",
            "--wait",
            "--timeout-s",
            "1",
        ],
        &[
            ("BASKETFLOW_KAFKA_BROKERS", stack.brokers.as_str()),
            ("BASKETFLOW_KAFKA_PRIVACY_TOPIC", topic.as_str()),
            ("BASKETFLOW_CLICKHOUSE_URL", stack.clickhouse_url.as_str()),
            ("BASKETFLOW_CLICKHOUSE_DATABASE", db.name()),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "only the request: {stdout}");
    assert_eq!(
        ErasureRequest::parse(stdout.trim_end().as_bytes())
            .unwrap()
            .request_id,
        "ticket-9"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "privacy erase: request ticket-9 not applied within 1 s: no row in {}.privacy_audit",
            db.name()
        )),
        "{stderr}"
    );
    assert_eq!(messages(&stack, &topic).len(), 1, "the request was sent");
}

// ---- export ----

fn ts(rfc3339: &str) -> Timestamp {
    Timestamp::parse_rfc3339(rfc3339).unwrap()
}

fn purchase(retailer: &str, shopper: &str, product: &str, quantity: i64) -> ShopperPurchase {
    ShopperPurchase {
        retailer_id: retailer.into(),
        shopper_id: shopper.into(),
        product_id: product.into(),
        quantity,
        orders: 1,
        last_purchase_at: ts("2026-11-30T09:15:00Z"),
    }
}

fn basket(retailer: &str, shopper: &str, product: &str, quantity: i64) -> BasketLine {
    BasketLine {
        retailer_id: retailer.into(),
        shopper_id: shopper.into(),
        product_id: product.into(),
        quantity,
    }
}

fn order_line(retailer: &str, order: &str, shopper: &str, product: &str) -> PaidOrderLine {
    let ordered_at = ts("2026-11-30T09:15:00Z");
    PaidOrderLine {
        retailer_id: retailer.into(),
        order_id: order.into(),
        product_id: product.into(),
        category: "pasta".into(),
        shopper_id: shopper.into(),
        quantity: 2,
        revenue_cents: 398,
        ordered_at,
        day: ordered_at.day(),
        cancelled: false,
    }
}

/// Inserts one decision into `db.experience_decisions_log` (what the decisions sink writes).
async fn decision(sink: &ClickHouseStore, id: &str, retailer: &str, shopper: &str) {
    sink.client()
        .query(&format!(
            "INSERT INTO {}.experience_decisions_log VALUES \
             (?, ?, ?, 'session-1', 'tension_cart', '{{\"threshold_cents\":3000}}', 'tree-1', 7, \
             'big', ['basket_value_at_least 3000'], 'event-1', 3, 41, \
             '2026-11-30 09:10:00', '2026-11-30 09:10:01', 5, 'shown', 0, 0)",
            sink.database()
        ))
        .bind(id)
        .bind(retailer)
        .bind(shopper)
        .execute()
        .await
        .unwrap();
}

#[test]
fn export_lists_exactly_the_shoppers_rows_of_every_view() {
    let stack = Stack::shared();
    let db = Database::fresh(&stack.clickhouse_url, "bf_test_privacy_export");
    let target = Target {
        url: stack.clickhouse_url.clone(),
        database: db.name().to_string(),
        user: "default".into(),
        password: String::new(),
        tick_ms: 5,
        dedup_horizon_ms: 604_800_000,
        settlement_ms: 2_592_000_000,
    };
    prepare(&target).unwrap_or_else(|e| {
        panic!(
            "ClickHouse at {} ({e}); is the stack up? run scripts/stack up",
            target.url
        )
    });
    // Quotes and a backslash: the ids must reach ClickHouse as values, not as SQL.
    let me = "shopper-o'brien\\1";
    let other = "shopper-2";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let sink = target.connect().await.unwrap();
        let first = Updates {
            shopper_purchases: vec![
                (purchase("retailer-a", me, "p-1", 2), 10, 1),
                (purchase("retailer-a", me, "p-2", 1), 10, 1),
                (purchase("retailer-a", other, "p-1", 5), 10, 1),
                (purchase("retailer-b", me, "p-1", 8), 10, 1),
            ],
            baskets: vec![
                (basket("retailer-a", me, "p-3", 2), 10, 1),
                (basket("retailer-a", me, "p-4", 1), 10, 1),
                (basket("retailer-a", other, "p-3", 1), 10, 1),
            ],
            order_lines: vec![
                (order_line("retailer-a", "o-1", me, "p-1"), 10, 1),
                (order_line("retailer-a", "o-2", other, "p-1"), 10, 1),
                (order_line("retailer-b", "o-1", me, "p-1"), 10, 1),
            ],
            ..Updates::default()
        };
        sink.write_batch(&Batch::from_updates(10, first).unwrap())
            .await
            .unwrap();
        // Later: a purchase changes, a basket line goes; only the current rows are exported.
        let second = Updates {
            shopper_purchases: vec![
                (purchase("retailer-a", me, "p-1", 2), 20, -1),
                (purchase("retailer-a", me, "p-1", 3), 20, 1),
            ],
            baskets: vec![(basket("retailer-a", me, "p-4", 1), 20, -1)],
            ..Updates::default()
        };
        sink.write_batch(&Batch::from_updates(20, second).unwrap())
            .await
            .unwrap();
        decision(&sink, "d-2", "retailer-a", me).await;
        decision(&sink, "d-1", "retailer-a", me).await;
        decision(&sink, "d-3", "retailer-a", other).await;
        decision(&sink, "d-4", "retailer-b", me).await;
    });

    let before = Timestamp::now();
    let out = run(
        &["export", "--retailer", "retailer-a", "--shopper", me],
        &[
            ("BASKETFLOW_CLICKHOUSE_URL", stack.clickhouse_url.as_str()),
            ("BASKETFLOW_CLICKHOUSE_DATABASE", db.name()),
        ],
    );
    let after = Timestamp::now();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let document: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        stdout.starts_with("{\n  \"retailer_id\""),
        "pretty: {stdout}"
    );

    let keys: Vec<&str> = document
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "retailer_id",
            "shopper_id",
            "exported_at",
            "tables",
            "kafka"
        ]
    );
    assert_eq!(document["retailer_id"], "retailer-a");
    assert_eq!(document["shopper_id"], me);
    let exported_at = ts(document["exported_at"].as_str().unwrap());
    assert!(
        before <= exported_at && exported_at <= after,
        "{exported_at}"
    );
    let note = document["kafka"].as_str().unwrap();
    assert!(
        note.contains("shopper-events") && note.contains("experience-decisions"),
        "{note}"
    );

    let decision_row = |id: &str| {
        json!({
            "decision_id": id,
            "retailer_id": "retailer-a",
            "shopper_id": me,
            "session_id": "session-1",
            "kind": "tension_cart",
            "params": "{\"threshold_cents\":3000}",
            "tree_id": "tree-1",
            "tree_version": 7,
            "node_id": "big",
            "reasons": ["basket_value_at_least 3000"],
            "caused_by_event_id": "event-1",
            "caused_by_partition": 3,
            "caused_by_offset": 41,
            "occurred_at": "2026-11-30 09:10:00",
            "decided_at": "2026-11-30 09:10:01",
            "campaign_group": "shown",
            "capped": 0,
            "over_budget": 0,
        })
    };
    let expected = json!({
        "shopper_purchases": [
            {"retailer_id": "retailer-a", "shopper_id": me, "product_id": "p-1", "quantity": 3,
             "orders": 1, "last_purchase_at": "2026-11-30 09:15:00"},
            {"retailer_id": "retailer-a", "shopper_id": me, "product_id": "p-2", "quantity": 1,
             "orders": 1, "last_purchase_at": "2026-11-30 09:15:00"},
        ],
        "baskets": [
            {"retailer_id": "retailer-a", "shopper_id": me, "product_id": "p-3", "quantity": 2},
        ],
        "order_lines": [
            {"retailer_id": "retailer-a", "order_id": "o-1", "shopper_id": me,
             "product_id": "p-1", "category": "pasta", "quantity": 2, "revenue_cents": 398,
             "ordered_at": "2026-11-30 09:15:00", "day": "2026-11-30", "cancelled": 0},
        ],
        "experience_decisions": [decision_row("d-1"), decision_row("d-2")],
    });
    // Every column, in the views' order.
    assert_eq!(
        serde_json::to_string_pretty(&document["tables"]).unwrap(),
        serde_json::to_string_pretty(&expected).unwrap()
    );

    // Another shopper sees only their own rows.
    let out = run(
        &["export", "--retailer", "retailer-a", "--shopper", other],
        &[
            ("BASKETFLOW_CLICKHOUSE_URL", stack.clickhouse_url.as_str()),
            ("BASKETFLOW_CLICKHOUSE_DATABASE", db.name()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let document: Value = serde_json::from_slice(&out.stdout).unwrap();
    let shoppers = |view: &str| -> Vec<String> {
        document["tables"][view]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["shopper_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(shoppers("shopper_purchases"), [other]);
    assert_eq!(shoppers("baskets"), [other]);
    assert_eq!(shoppers("order_lines"), [other]);
    assert_eq!(shoppers("experience_decisions"), [other]);

    // Nobody: empty lists, not an error.
    let out = run(
        &["export", "--retailer", "retailer-a", "--shopper", "nobody"],
        &[
            ("BASKETFLOW_CLICKHOUSE_URL", stack.clickhouse_url.as_str()),
            ("BASKETFLOW_CLICKHOUSE_DATABASE", db.name()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let document: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        document["tables"],
        json!({"shopper_purchases": [], "baskets": [], "order_lines": [],
               "experience_decisions": []})
    );
}
