//! Integration: the example analyst queries of `examples/sql/` on the ClickHouse server of
//! `scripts/stack up` (18.16), over read models written by the real sink, with exact results.
//!
//! A small hand-made set of events goes through the oracle (`basketflow_dataflows::oracle`),
//! its rows become versions at one time (`Batch::from_updates`) that
//! `ClickHouseStore::write_batch` writes into a fresh database (`bf_q_<unique suffix>`, migrated
//! by the sink, dropped at the end, also on failure); decisions go into
//! `experience_decisions_log` twice each (as a replay writes them), read through the
//! `experience_decisions` view. Each query file runs with its placeholders and the database name
//! replaced, and its TabSeparated output is compared with the rows computed by hand below. `scripts/chdb_check.py` runs the same queries over the same data set on a
//! current ClickHouse (chdb); keep its `ORDERS`, `DECISIONS` and `QUERIES` in step with this
//! file.
//!
//! Runs against `$BASKETFLOW_CLICKHOUSE_URL` (default `http://127.0.0.1:8123`, user `default`,
//! no password).

use std::path::PathBuf;

use basketflow_dataflows::oracle;
use basketflow_sinks::clickhouse::versions::{Batch, Updates};
use basketflow_sinks::clickhouse::ClickHouseStore;
use basketflow_testkit::events::{ev_at, paid, status};
use basketflow_testkit::stack::clickhouse_url;
use basketflow_testkit::Database;
use basketflow_vocab::{Event, OrderStatus};

/// The database name the query files are written against.
const DATABASE_IN_FILES: &str = "basketflow.";

fn sql_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/sql"))
}

/// The query files, sorted.
fn query_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(sql_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".sql"))
        .collect();
    files.sort();
    files
}

/// The placeholders (`{name}`) a query file uses.
fn placeholders(sql: &str) -> Vec<String> {
    let mut found: Vec<String> = sql
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The text of query `file` for database `database`, its placeholders replaced, without the
/// final `;`.
fn query_text(file: &str, database: &str, params: &[(&str, &str)]) -> String {
    let mut sql = std::fs::read_to_string(sql_dir().join(file)).unwrap();
    for (name, value) in params {
        sql = sql.replace(&format!("{{{name}}}"), value);
    }
    assert_eq!(
        placeholders(&sql),
        Vec::<String>::new(),
        "{file}: placeholders left"
    );
    assert!(
        sql.contains(DATABASE_IN_FILES),
        "{file}: no {DATABASE_IN_FILES}"
    );
    sql.replace(DATABASE_IN_FILES, &format!("{database}."))
        .trim()
        .trim_end_matches(';')
        .to_owned()
}

// ---- the data set (the same as scripts/chdb_check.py's) ----

/// Paid orders of two retailers over 2026-11-10 .. 2026-11-23, with a duplicate, a losing
/// second payment, a cancellation after payment (o3) and one before payment (o6), and an order
/// id (o1) used by both retailers.
fn events() -> Vec<Event> {
    let o1 = ev_at(
        "r1",
        "e01",
        "s1",
        "2026-11-20T10:00:00Z",
        paid(
            "o1",
            &[("p-pasta", "pasta", 3, 150), ("p-sauce", "sauce", 1, 300)],
        ),
    );
    let snacks: Vec<(String, u32, i64)> = (1..=11).map(|i| (format!("q-{i:02}"), 1, 10)).collect();
    let snack_lines: Vec<(&str, &str, u32, i64)> = snacks
        .iter()
        .map(|(p, q, c)| (p.as_str(), "snacks", *q, *c))
        .collect();
    vec![
        o1.clone(),
        o1,
        ev_at(
            "r1",
            "e02",
            "s2",
            "2026-11-21T12:00:00Z",
            paid(
                "o2",
                &[
                    ("p-pasta", "pasta", 2, 150),
                    ("p-sauce", "sauce", 2, 300),
                    ("p-cheese", "dairy", 1, 500),
                    ("p-cheese", "deli", 1, 450),
                ],
            ),
        ),
        // A later payment of o2: not the order's.
        ev_at(
            "r1",
            "e12",
            "s2",
            "2026-11-21T13:00:00Z",
            paid("o2", &[("p-wine", "drinks", 9, 1)]),
        ),
        ev_at(
            "r1",
            "e03",
            "s3",
            "2026-11-22T09:00:00Z",
            paid(
                "o3",
                &[("p-pasta", "pasta", 1, 150), ("p-wine", "drinks", 1, 1200)],
            ),
        ),
        ev_at(
            "r1",
            "e04",
            "s3",
            "2026-11-22T18:00:00Z",
            status("o3", OrderStatus::Cancelled),
        ),
        ev_at(
            "r1",
            "e05",
            "s1",
            "2026-11-10T08:00:00Z",
            paid("o4", &[("p-wine", "drinks", 5, 1200)]),
        ),
        ev_at(
            "r1",
            "e06",
            "s4",
            "2026-11-23T08:00:00Z",
            paid("o5", &[("p-cheese", "dairy", 10, 500)]),
        ),
        ev_at(
            "r1",
            "e07",
            "s9",
            "2026-11-19T09:00:00Z",
            status("o6", OrderStatus::Cancelled),
        ),
        ev_at(
            "r1",
            "e08",
            "s2",
            "2026-11-19T10:00:00Z",
            paid("o6", &[("p-sauce", "sauce", 1, 300)]),
        ),
        ev_at(
            "r1",
            "e11",
            "s1",
            "2026-11-21T08:00:00Z",
            status("o1", OrderStatus::Delivered),
        ),
        ev_at(
            "r2",
            "e09",
            "s1",
            "2026-11-21T10:00:00Z",
            paid("o1", &[("q-00", "pasta", 4, 100)]),
        ),
        ev_at(
            "r2",
            "e10",
            "s5",
            "2026-11-18T10:00:00Z",
            paid("o7", &snack_lines),
        ),
    ]
}

/// Experience decisions: (decision_id, retailer, shopper, kind, occurred_at UTC).
const DECISIONS: [(&str, &str, &str, &str, &str); 8] = [
    // o1 (r1, s1) at 2026-11-20 10:00 follows d1 (30 min) and d2 (23 h): counted once.
    ("d1", "r1", "s1", "recommendation", "2026-11-20 09:30:00"),
    ("d2", "r1", "s1", "recommendation", "2026-11-19 11:00:00"),
    // o3 follows, but is cancelled.
    ("d3", "r1", "s3", "tension_cart", "2026-11-22 08:00:00"),
    // o2 comes 25 h later: too late.
    (
        "d4",
        "r1",
        "s2",
        "personalized_promotion",
        "2026-11-20 11:00:00",
    ),
    // o2 comes exactly 24 h later: counted.
    (
        "d5",
        "r1",
        "s2",
        "gamified_promotion",
        "2026-11-20 12:00:00",
    ),
    // o5 is paid at the decision's very second: not after it.
    (
        "d6",
        "r1",
        "s4",
        "gamified_promotion",
        "2026-11-23 08:00:00",
    ),
    // r2's o1 (s1) 1 h later: counted, apart from r1's o1.
    ("d7", "r2", "s1", "recommendation", "2026-11-21 09:00:00"),
    // s1 pays at r2 1 h later, not at r1: not counted for this r1 decision.
    ("d8", "r1", "s1", "recommendation", "2026-11-21 09:00:00"),
];

fn decisions_insert(database: &str) -> String {
    let rows: Vec<String> = DECISIONS
        .iter()
        .map(|(id, retailer, shopper, kind, occurred_at)| {
            format!(
                "('{id}', '{retailer}', '{shopper}', 'x-{id}', '{kind}', '{{}}', 't-{shopper}', 1, \
                 'n1', ['reason'], 'e-{id}', 0, 0, toDateTime('{occurred_at}', 'UTC'), \
                 toDateTime('{occurred_at}', 'UTC') + 1, 1, 'shown', 0, 0)"
            )
        })
        .collect();
    format!(
        "INSERT INTO {database}.experience_decisions_log VALUES {}",
        rows.join(", ")
    )
}

// ---- the campaigns data set (its own database; the same as scripts/chdb_check.py's) ----

/// Orders of the campaigns' shoppers at r1 (o4 is cancelled).
fn uplift_events() -> Vec<Event> {
    let order =
        |event: &str, shopper: &str, at: &str, id: &str, lines: &[(&str, &str, u32, i64)]| {
            ev_at("r1", event, shopper, at, paid(id, lines))
        };
    vec![
        order(
            "f1",
            "s1",
            "2026-11-20T11:00:00Z",
            "o1",
            &[
                ("p-pasta", "pasta", 2, 150),
                ("c-1", "coffee", 1, 400),
                ("c-2", "coffee", 1, 500),
            ],
        ),
        order(
            "f2",
            "s1",
            "2026-11-22T11:00:00Z",
            "o2",
            &[("p-pasta", "pasta", 1, 150)],
        ),
        order(
            "f3",
            "s2",
            "2026-11-20T12:00:00Z",
            "o3",
            &[("p-pasta", "pasta", 1, 150)],
        ),
        order(
            "f4",
            "s2",
            "2026-11-21T12:00:00Z",
            "o4",
            &[("p-pasta", "pasta", 1, 150), ("p-sauce", "sauce", 1, 300)],
        ),
        ev_at(
            "r1",
            "f5",
            "s2",
            "2026-11-21T13:00:00Z",
            status("o4", OrderStatus::Cancelled),
        ),
        order(
            "f6",
            "s3",
            "2026-11-21T08:00:00Z",
            "o5",
            &[("p-sauce", "sauce", 1, 300)],
        ),
        order(
            "f7",
            "s6",
            "2026-11-20T14:00:00Z",
            "o6",
            &[("p-pasta", "pasta", 1, 150)],
        ),
    ]
}

/// Decisions of the campaigns: (decision_id, retailer, shopper, campaign, group, occurred_at
/// UTC).
const UPLIFT_DECISIONS: [(&str, &str, &str, &str, &str, &str); 9] = [
    // s1's first pasta decision: o1 (1 h later) counts, o2 (49 h later) is past the 48 h window.
    ("u1", "r1", "s1", "pasta", "shown", "2026-11-20 10:00:00"),
    // A later decision of s1: the first one decides the day and the window.
    ("u2", "r1", "s1", "pasta", "shown", "2026-11-21 10:00:00"),
    // o3 is paid at the decision's very second (not after it); o4 is cancelled.
    ("u3", "r1", "s2", "pasta", "shown", "2026-11-20 12:00:00"),
    // Held out: o5 (23 h later, sauce only) counts for the held-out group.
    ("u4", "r1", "s3", "pasta", "held_out", "2026-11-20 09:00:00"),
    // Held out, the next day, no order.
    ("u5", "r1", "s4", "pasta", "held_out", "2026-11-21 09:00:00"),
    ("u6", "r1", "s6", "pasta", "shown", "2026-11-20 13:00:00"),
    // coffee (24 h window, its own product c-1 only): o1.
    ("u7", "r1", "s1", "coffee", "shown", "2026-11-20 10:00:00"),
    // A tree of no known campaign, and pasta at a retailer it does not target: not shown.
    ("u8", "r1", "s5", "other", "shown", "2026-11-20 10:00:00"),
    ("u9", "r2", "s1", "pasta", "shown", "2026-11-20 10:00:00"),
];

fn uplift_decisions_insert(database: &str) -> String {
    let rows: Vec<String> = UPLIFT_DECISIONS
        .iter()
        .map(|(id, retailer, shopper, campaign, group, occurred_at)| {
            format!(
                "('{id}', '{retailer}', '{shopper}', 'product_recommendation', '{campaign}', \
                 toDateTime('{occurred_at}', 'UTC'), toDateTime('{occurred_at}', 'UTC'), 1, \
                 '{group}')"
            )
        })
        .collect();
    format!(
        "INSERT INTO {database}.experience_decisions_log (decision_id, retailer_id, \
         shopper_id, kind, tree_id, occurred_at, decided_at, time, campaign_group) VALUES {}",
        rows.join(", ")
    )
}

/// Games' wins (and rows `game_winners` must leave out): (decision_id, retailer, shopper,
/// kind, group, over_budget, order, prize cents).
type GameDecision = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    u8,
    &'static str,
    i64,
);

const GAME_DECISIONS: [GameDecision; 6] = [
    // o1 stands.
    ("w1", "r1", "s1", "game_won", "shown", 0, "o1", 1200),
    // o4 was cancelled.
    ("w2", "r1", "s2", "game_won", "shown", 0, "o4", 450),
    // Held out, over budget, not a win: none is a winner.
    ("w3", "r1", "s3", "game_won", "held_out", 0, "o5", 300),
    ("w4", "r1", "s6", "game_won", "shown", 1, "o6", 150),
    (
        "w5",
        "r1",
        "s6",
        "gamified_promotion",
        "shown",
        0,
        "o6",
        150,
    ),
    // An order r2 never reported: it does not stand.
    ("w6", "r2", "s1", "game_won", "shown", 0, "o1", 900),
];

fn game_decisions_insert(database: &str) -> String {
    let rows: Vec<String> = GAME_DECISIONS
        .iter()
        .map(|(id, retailer, shopper, kind, group, over, order, cents)| {
            format!(
                "('{id}', '{retailer}', '{shopper}', '{kind}', \
                 '{{\"game_decision_id\":\"g-{id}\",\"order_id\":\"{order}\",\"prize\":\"your basket\",\"prize_cents\":{cents}}}', \
                 'pasta', toDateTime('2026-11-20 11:00:00', 'UTC'), \
                 toDateTime('2026-11-20 11:00:00', 'UTC'), 1, '{group}', {over})"
            )
        })
        .collect();
    format!(
        "INSERT INTO {database}.experience_decisions_log (decision_id, retailer_id, \
         shopper_id, kind, params, tree_id, occurred_at, decided_at, time, campaign_group, \
         over_budget) VALUES {}",
        rows.join(", ")
    )
}

/// `game_winners`, by retailer and order.
const WINNERS_EXPECTED: &str = "\
pasta\tr1\ts1\to1\tyour basket\t1200\t2026-11-20 11:00:00\tw1\tg-w1\t1
pasta\tr1\ts2\to4\tyour basket\t450\t2026-11-20 11:00:00\tw2\tg-w2\t0
pasta\tr2\ts1\to1\tyour basket\t900\t2026-11-20 11:00:00\tw6\tg-w6\t0
";

/// The campaigns as two builds recorded them: pasta's first build (version 1, a 60 s window)
/// is replaced by version 2 (48 h).
fn campaigns_insert(database: &str) -> String {
    format!(
        "INSERT INTO {database}.campaigns_log VALUES \
         ('pasta', 'r1', 1, 'pasta', [], 1000, 60, toDateTime('2026-11-19 00:00:00', 'UTC')), \
         ('pasta', 'r1', 2, 'pasta', [], 1000, 172800, toDateTime('2026-11-19 01:00:00', 'UTC')), \
         ('coffee', 'r1', 2, 'coffee', ['c-1'], 0, 86400, toDateTime('2026-11-19 01:00:00', 'UTC'))"
    )
}

/// `campaign_uplift` by campaign, retailer, day and group. pasta shown on 11-20: s1, s2, s6;
/// converted s1 (o1: 300 + 400 + 500, pasta 300) and s6 (o6: 150). Held out: s3 on 11-20 (o5:
/// 300, no pasta), s4 on 11-21 (nothing). coffee: s1, o1, its own c-1 400.
const UPLIFT_EXPECTED: &str = "\
coffee\tr1\t2026-11-20\tshown\t1\t1\t1\t1200\t400
pasta\tr1\t2026-11-20\theld_out\t1\t1\t1\t300\t0
pasta\tr1\t2026-11-20\tshown\t3\t2\t2\t1350\t450
pasta\tr1\t2026-11-21\theld_out\t1\t0\t0\t0\t0
";

/// pasta: 2 of 3 shown against 1 of 2 held out (computed independently in Python: pooled p
/// 0.6, z = 0.1667 / sqrt(0.24 (1/3 + 1/2)), interval 0.1667 -+ 1.96 x 0.4462); coffee has no
/// held-out shopper: nan.
const SIGNIFICANCE_EXPECTED: &str = "\
coffee\tr1\t1\t1\t0\t0\t1\tnan\tnan\tnan\tnan\tnan
pasta\tr1\t3\t2\t2\t1\t0.6667\t0.5\t0.1667\t0.3727\t-0.7078\t1.0412
";

// ---- the expected results, computed by hand ----

/// Window 2026-11-16 .. 2026-11-22, non-cancelled orders: r1's o1 and o2 (o3 and o6 are
/// cancelled, o4 is before the window, o5 after it), r2's o1 and o7. p-cheese sold under two
/// categories in o2 is one product (1 x 500 + 1 x 450). r2 has 12 products: q-00 (4 units), then
/// eleven with 1 unit of which the first ten by id remain after q-00 (q-10, q-11 cut).
fn top_products_expected() -> String {
    let mut rows = vec![
        "r1\tp-pasta\t5\t750".to_owned(),
        "r1\tp-sauce\t3\t900".to_owned(),
        "r1\tp-cheese\t2\t950".to_owned(),
        "r2\tq-00\t4\t400".to_owned(),
    ];
    rows.extend((1..=9).map(|i| format!("r2\tq-{i:02}\t1\t10")));
    rows.join("\n") + "\n"
}

/// Per retailer and category, the paid orders (cancelled ones included) with a line in it:
/// r1 dairy o2 o5; deli o2; drinks o3 (cancelled) o4; pasta o1 o2 o3; sauce o1 o2 o6 (cancelled
/// before payment, paid later); r2 pasta o1; snacks o7.
const CANCELLATION_RATE_EXPECTED: &str = "\
r1\tdairy\t2\t0\t0
r1\tdeli\t1\t0\t0
r1\tdrinks\t2\t1\t0.5
r1\tpasta\t3\t1\t0.3333
r1\tsauce\t3\t1\t0.3333
r2\tpasta\t1\t0\t0
r2\tsnacks\t1\t0\t0
";

/// p-pasta at r1: non-cancelled orders with it are o1 {pasta, sauce} and o2 {pasta, sauce,
/// cheese}; stored pairs (p-cheese, p-pasta) and (p-pasta, p-sauce): both directions.
const BOUGHT_WITH_EXPECTED: &str = "\
p-sauce\t2\t1
p-cheese\t1\t0.5
";

/// See [`DECISIONS`]. recommendation: d1 d2 d7 d8, shoppers (r1, s1) and (r2, s1), orders r1/o1
/// (750) and r2/o1 (400). gamified_promotion: d5 d6, orders o2 (300 + 600 + 500 + 450).
const DECISIONS_EXPECTED: &str = "\
gamified_promotion\t2\t2\t1\t1850
personalized_promotion\t1\t1\t0\t0
recommendation\t4\t2\t2\t1150
tension_cart\t1\t1\t0\t0
";

// ---- the tests ----

#[test]
fn every_query_file_documents_its_placeholders_and_is_tested() {
    let files = query_files();
    assert_eq!(
        files,
        [
            "bought_with.sql",
            "campaign_uplift_significance.sql",
            "cancellation_rate_by_category.sql",
            "decisions_by_kind_and_following_orders.sql",
            "top_products_this_week.sql",
        ]
    );
    for file in files {
        let sql = std::fs::read_to_string(sql_dir().join(&file)).unwrap();
        let header: String = sql
            .lines()
            .take_while(|l| l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(header.len() > 100, "{file}: no header comment");
        assert!(header.contains("Parameter"), "{file}: parameters not said");
        let body = &sql[header.len()..];
        for name in placeholders(body) {
            assert!(
                header.contains(&format!("{{{name}}}")),
                "{file}: placeholder {{{name}}} not documented"
            );
        }
        assert!(body.contains(DATABASE_IN_FILES), "{file}");
    }
}

async fn run_query(sink: &ClickHouseStore, file: &str, params: &[(&str, &str)]) -> String {
    let sql = query_text(file, sink.database(), params);
    let bytes = sink
        .client()
        .query_raw(&sql)
        .fetch_bytes("TabSeparated")
        .unwrap()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn scenario(sink: ClickHouseStore) {
    let db = sink.database().to_owned();
    sink.migrate().await.unwrap();

    // The read models of the events, as the graph would emit them at time 1.
    let rows = oracle::read_models(&events());
    assert_eq!(rows.order_lines.len(), 23);
    let updates = Updates {
        sold_products_daily: rows
            .sold_products_daily
            .into_iter()
            .map(|r| (r, 1, 1))
            .collect(),
        shopper_purchases: rows
            .shopper_purchases
            .into_iter()
            .map(|r| (r, 1, 1))
            .collect(),
        product_affinities: rows
            .product_affinities
            .into_iter()
            .map(|r| (r, 1, 1))
            .collect(),
        baskets: rows.baskets.into_iter().map(|r| (r, 1, 1)).collect(),
        order_lines: rows.order_lines.into_iter().map(|r| (r, 1, 1)).collect(),
    };
    sink.write_batch(&Batch::from_updates(1, updates).unwrap())
        .await
        .unwrap();
    let lines: u64 = sink
        .client()
        .query(&format!("SELECT count() FROM {db}.order_lines"))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(lines, 23);

    for sql in [decisions_insert(&db), decisions_insert(&db)] {
        sink.client().query_raw(&sql).execute().await.unwrap();
    }

    assert_eq!(
        run_query(
            &sink,
            "top_products_this_week.sql",
            &[("end_day", "2026-11-22")]
        )
        .await,
        top_products_expected()
    );
    assert_eq!(
        run_query(&sink, "cancellation_rate_by_category.sql", &[]).await,
        CANCELLATION_RATE_EXPECTED
    );
    assert_eq!(
        run_query(
            &sink,
            "bought_with.sql",
            &[("retailer_id", "r1"), ("product_id", "p-pasta")]
        )
        .await,
        BOUGHT_WITH_EXPECTED
    );
    // The other side of a pair, and a product bought alone.
    assert_eq!(
        run_query(
            &sink,
            "bought_with.sql",
            &[("retailer_id", "r1"), ("product_id", "p-sauce")]
        )
        .await,
        "p-pasta\t2\t1\np-cheese\t1\t0.5\n"
    );
    assert_eq!(
        run_query(
            &sink,
            "bought_with.sql",
            &[("retailer_id", "r1"), ("product_id", "p-wine")]
        )
        .await,
        ""
    );
    assert_eq!(
        run_query(&sink, "decisions_by_kind_and_following_orders.sql", &[]).await,
        DECISIONS_EXPECTED
    );
}

async fn uplift_scenario(sink: ClickHouseStore) {
    let db = sink.database().to_owned();
    sink.migrate().await.unwrap();
    let rows = oracle::read_models(&uplift_events());
    let updates = Updates {
        order_lines: rows.order_lines.into_iter().map(|r| (r, 1, 1)).collect(),
        ..Updates::default()
    };
    sink.write_batch(&Batch::from_updates(1, updates).unwrap())
        .await
        .unwrap();
    for sql in [
        uplift_decisions_insert(&db),
        uplift_decisions_insert(&db),
        campaigns_insert(&db),
    ] {
        sink.client().query_raw(&sql).execute().await.unwrap();
    }
    let bytes = sink
        .client()
        .query_raw(&format!(
            "SELECT * FROM {db}.campaign_uplift \
             ORDER BY campaign_id, retailer_id, first_decision_day, campaign_group"
        ))
        .fetch_bytes("TabSeparated")
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(String::from_utf8(bytes.to_vec()).unwrap(), UPLIFT_EXPECTED);
    assert_eq!(
        run_query(&sink, "campaign_uplift_significance.sql", &[]).await,
        SIGNIFICANCE_EXPECTED
    );

    // Games' winners, written twice (a replay), over the same orders.
    for _ in 0..2 {
        sink.client()
            .query_raw(&game_decisions_insert(&db))
            .execute()
            .await
            .unwrap();
    }
    let bytes = sink
        .client()
        .query_raw(&format!(
            "SELECT * FROM {db}.game_winners ORDER BY retailer_id, order_id"
        ))
        .fetch_bytes("TabSeparated")
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(String::from_utf8(bytes.to_vec()).unwrap(), WINNERS_EXPECTED);
}

#[tokio::test]
async fn the_uplift_view_and_its_significance_query_are_exact_on_the_server() {
    let database = Database::fresh(&clickhouse_url(), "bf_uplift");
    let sink = ClickHouseStore::connect(&clickhouse_url(), &database, "default", "")
        .await
        .unwrap();
    uplift_scenario(sink).await;
}

#[tokio::test]
async fn example_queries_give_exact_results_on_the_server() {
    let database = Database::fresh(&clickhouse_url(), "bf_q");
    let sink = ClickHouseStore::connect(&clickhouse_url(), &database, "default", "")
        .await
        .unwrap_or_else(|e| {
            panic!(
                "ClickHouse at {} ({e}); is the stack up? run scripts/stack up",
                clickhouse_url()
            )
        });
    scenario(sink).await;
}
