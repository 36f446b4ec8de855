//! Integration: the ClickHouse sink against the real server of `scripts/stack up` (ClickHouse
//! 18.16 from Debian): migrations, batches of inserts, changes and deletions, a partially
//! written batch, recovery, and the exact contents of every analyst view.
//!
//! Runs against `$BASKETFLOW_CLICKHOUSE_URL` (default `http://127.0.0.1:8123`, user `default`,
//! no password), each test in a database of its own (`bf_test_...`), dropped at the end.

use basketflow_sinks::clickhouse::schema::VERSION_TABLES;
use basketflow_sinks::clickhouse::versions::{Batch, Updates};
use basketflow_sinks::clickhouse::{ClickHouseStore, Migration};
use basketflow_testkit::stack::clickhouse_url;
use basketflow_testkit::Database;
use basketflow_vocab::read_models::{
    BasketLine, PaidOrderLine, ProductAffinity, ShopperPurchase, SoldProductDaily,
};
use basketflow_vocab::Timestamp;
use clickhouse::Row;
use serde::Deserialize;

async fn connect(database: &str) -> ClickHouseStore {
    ClickHouseStore::connect(&clickhouse_url(), database, "default", "")
        .await
        .unwrap_or_else(|e| {
            panic!(
                "ClickHouse at {} ({e}); is the stack up? run scripts/stack up",
                clickhouse_url()
            )
        })
}

/// Runs `scenario` on a fresh database, dropped afterwards, even on failure.
async fn with_database<F, Fut>(name: &str, scenario: F)
where
    F: FnOnce(ClickHouseStore) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let database = Database::fresh(&clickhouse_url(), &format!("bf_test_{name}"));
    scenario(connect(database.name()).await).await;
}

// ---- rows as the views return them (RowBinary: Date = u16 days, DateTime = u32 seconds) ----

#[derive(Row, Deserialize)]
struct SoldOut {
    day: u16,
    retailer_id: String,
    product_id: String,
    category: String,
    quantity: i64,
    revenue_cents: i64,
    orders: i64,
}

#[derive(Row, Deserialize)]
struct PurchaseOut {
    retailer_id: String,
    shopper_id: String,
    product_id: String,
    quantity: i64,
    orders: i64,
    last_purchase_at: u32,
}

#[derive(Row, Deserialize)]
struct AffinityOut {
    retailer_id: String,
    product_a: String,
    product_b: String,
    orders_together: i64,
}

#[derive(Row, Deserialize)]
struct BasketOut {
    retailer_id: String,
    shopper_id: String,
    product_id: String,
    quantity: i64,
}

#[derive(Row, Deserialize)]
struct OrderLineOut {
    retailer_id: String,
    order_id: String,
    shopper_id: String,
    product_id: String,
    category: String,
    quantity: i64,
    revenue_cents: i64,
    ordered_at: u32,
    day: u16,
    cancelled: u8,
}

/// Everything the five analyst views return, by plain `SELECT ... ORDER BY key`.
#[derive(Debug, Default, PartialEq)]
struct Views {
    sold_products_daily: Vec<SoldProductDaily>,
    shopper_purchases: Vec<ShopperPurchase>,
    product_affinities: Vec<ProductAffinity>,
    baskets: Vec<BasketLine>,
    order_lines: Vec<PaidOrderLine>,
}

async fn views(sink: &ClickHouseStore) -> Views {
    let db = sink.database();
    let c = sink.client();
    Views {
        sold_products_daily: c
            .query(&format!(
                "SELECT day, retailer_id, product_id, category, quantity, revenue_cents, orders \
                 FROM {db}.sold_products_daily ORDER BY day, retailer_id, product_id, category"
            ))
            .fetch_all::<SoldOut>()
            .await
            .unwrap()
            .into_iter()
            .map(|r| SoldProductDaily {
                day: r.day.into(),
                retailer_id: r.retailer_id,
                product_id: r.product_id,
                category: r.category,
                quantity: r.quantity,
                revenue_cents: r.revenue_cents,
                orders: r.orders,
            })
            .collect(),
        shopper_purchases: c
            .query(&format!(
                "SELECT retailer_id, shopper_id, product_id, quantity, orders, last_purchase_at \
                 FROM {db}.shopper_purchases ORDER BY retailer_id, shopper_id, product_id"
            ))
            .fetch_all::<PurchaseOut>()
            .await
            .unwrap()
            .into_iter()
            .map(|r| ShopperPurchase {
                retailer_id: r.retailer_id,
                shopper_id: r.shopper_id,
                product_id: r.product_id,
                quantity: r.quantity,
                orders: r.orders,
                last_purchase_at: Timestamp(i64::from(r.last_purchase_at) * 1_000_000),
            })
            .collect(),
        product_affinities: c
            .query(&format!(
                "SELECT retailer_id, product_a, product_b, orders_together \
                 FROM {db}.product_affinities ORDER BY retailer_id, product_a, product_b"
            ))
            .fetch_all::<AffinityOut>()
            .await
            .unwrap()
            .into_iter()
            .map(|r| ProductAffinity {
                retailer_id: r.retailer_id,
                product_a: r.product_a,
                product_b: r.product_b,
                orders_together: r.orders_together,
            })
            .collect(),
        baskets: c
            .query(&format!(
                "SELECT retailer_id, shopper_id, product_id, quantity \
                 FROM {db}.baskets ORDER BY retailer_id, shopper_id, product_id"
            ))
            .fetch_all::<BasketOut>()
            .await
            .unwrap()
            .into_iter()
            .map(|r| BasketLine {
                retailer_id: r.retailer_id,
                shopper_id: r.shopper_id,
                product_id: r.product_id,
                quantity: r.quantity,
            })
            .collect(),
        order_lines: c
            .query(&format!(
                "SELECT retailer_id, order_id, shopper_id, product_id, category, quantity, \
                 revenue_cents, ordered_at, day, cancelled \
                 FROM {db}.order_lines ORDER BY retailer_id, order_id, product_id, category"
            ))
            .fetch_all::<OrderLineOut>()
            .await
            .unwrap()
            .into_iter()
            .map(|r| PaidOrderLine {
                retailer_id: r.retailer_id,
                order_id: r.order_id,
                product_id: r.product_id,
                category: r.category,
                shopper_id: r.shopper_id,
                quantity: r.quantity,
                revenue_cents: r.revenue_cents,
                ordered_at: Timestamp(i64::from(r.ordered_at) * 1_000_000),
                day: r.day.into(),
                cancelled: r.cancelled != 0,
            })
            .collect(),
    }
}

// ---- row builders ----

/// 2026-01-15 and 2026-02-01, in days since the epoch (two monthly partitions).
const JAN_15: i32 = 20_468;
const FEB_01: i32 = 20_485;
/// 2026-01-15T10:00:00Z and 2026-01-16T13:00:00Z.
const AT_1: Timestamp = Timestamp(1_768_471_200_000_000);
const AT_2: Timestamp = Timestamp(1_768_568_400_000_000);
/// 2026-02-01T09:30:00Z.
const AT_3: Timestamp = Timestamp(1_769_938_200_000_000);

fn sold(
    day: i32,
    product: &str,
    quantity: i64,
    revenue_cents: i64,
    orders: i64,
) -> SoldProductDaily {
    SoldProductDaily {
        day,
        retailer_id: "r1".into(),
        product_id: product.into(),
        category: "c1".into(),
        quantity,
        revenue_cents,
        orders,
    }
}

fn bought(product: &str, quantity: i64, orders: i64, at: Timestamp) -> ShopperPurchase {
    ShopperPurchase {
        retailer_id: "r1".into(),
        shopper_id: "s1".into(),
        product_id: product.into(),
        quantity,
        orders,
        last_purchase_at: at,
    }
}

fn pair(a: &str, b: &str, orders_together: i64) -> ProductAffinity {
    ProductAffinity {
        retailer_id: "r1".into(),
        product_a: a.into(),
        product_b: b.into(),
        orders_together,
    }
}

/// A line of order `order` of shopper `s1` at `r1`, category `c1`, 100 cents a unit.
fn ordered(order: &str, product: &str, quantity: i64, at: Timestamp, day: i32) -> PaidOrderLine {
    PaidOrderLine {
        retailer_id: "r1".into(),
        order_id: order.into(),
        product_id: product.into(),
        category: "c1".into(),
        shopper_id: "s1".into(),
        quantity,
        revenue_cents: quantity * 100,
        ordered_at: at,
        day,
        cancelled: false,
    }
}

fn cancelled(line: PaidOrderLine) -> PaidOrderLine {
    PaidOrderLine {
        cancelled: true,
        ..line
    }
}

fn line(product: &str, quantity: i64) -> BasketLine {
    BasketLine {
        retailer_id: "r1".into(),
        shopper_id: "s1".into(),
        product_id: product.into(),
        quantity,
    }
}

async fn count(sink: &ClickHouseStore, sql: &str) -> u64 {
    sink.client().query(sql).fetch_one().await.unwrap()
}

#[tokio::test]
async fn batches_changes_deletions_partial_batch_and_recovery_give_exact_views() {
    with_database("sink", |sink| async move {
        let db = sink.database().to_owned();

        // Migrations: the first creates everything, the second changes nothing.
        let first = sink.migrate().await.unwrap();
        assert_eq!(
            first,
            Migration {
                created: [
                    db.as_str(),
                    "progress",
                    "sold_products_daily_versions",
                    "shopper_purchases_versions",
                    "product_affinities_versions",
                    "baskets_versions",
                    "order_lines_versions",
                    "experience_decisions_log",
                    "privacy_audit_log",
                    "late_events_log",
                    "campaigns_log",
                    "sold_products_daily",
                    "shopper_purchases",
                    "product_affinities",
                    "baskets",
                    "order_lines",
                    "experience_decisions",
                    "privacy_audit",
                    "late_events",
                    "campaigns",
                    "campaign_uplift",
                    "game_winners",
                ]
                .map(String::from)
                .to_vec(),
                replaced_views: vec![],
            }
        );
        assert!(sink.migrate().await.unwrap().is_noop());
        assert_eq!(sink.committed().await.unwrap(), 0);
        assert_eq!(views(&sink).await, Views::default());

        // Batch 1, times 5 and 10: inserts at 5; at 10 a change of p1's sales and the removal
        // of basket line p3 inserted at 5.
        let batch_1 = Batch::from_updates(
            10,
            Updates {
                sold_products_daily: vec![
                    (sold(JAN_15, "p1", 2, 200, 1), 5, 1),
                    (sold(JAN_15, "p2", 1, 150, 1), 5, 1),
                    (sold(JAN_15, "p1", 2, 200, 1), 10, -1),
                    (sold(JAN_15, "p1", 5, 500, 2), 10, 1),
                ],
                shopper_purchases: vec![(bought("p1", 2, 1, AT_1), 5, 1)],
                product_affinities: vec![(pair("p1", "p2", 1), 5, 1)],
                baskets: vec![
                    (line("p1", 2), 5, 1),
                    (line("p3", 1), 5, 1),
                    (line("p3", 1), 10, -1),
                ],
                // o1 paid at 5 and cancelled at 10; o2 paid at 10.
                order_lines: vec![
                    (ordered("o1", "p1", 2, AT_1, JAN_15), 5, 1),
                    (ordered("o1", "p1", 2, AT_1, JAN_15), 10, -1),
                    (cancelled(ordered("o1", "p1", 2, AT_1, JAN_15)), 10, 1),
                    (ordered("o2", "p2", 1, AT_1, JAN_15), 10, 1),
                ],
            },
        )
        .unwrap();
        // One version per key and time: p1 twice, p3 inserted then a tombstone; o1 twice.
        assert_eq!(batch_1.len(), 11);
        sink.write_batch(&batch_1).await.unwrap();
        assert_eq!(sink.committed().await.unwrap(), 10);
        let after_1 = Views {
            sold_products_daily: vec![sold(JAN_15, "p1", 5, 500, 2), sold(JAN_15, "p2", 1, 150, 1)],
            shopper_purchases: vec![bought("p1", 2, 1, AT_1)],
            product_affinities: vec![pair("p1", "p2", 1)],
            baskets: vec![line("p1", 2)],
            order_lines: vec![
                cancelled(ordered("o1", "p1", 2, AT_1, JAN_15)),
                ordered("o2", "p2", 1, AT_1, JAN_15),
            ],
        };
        assert_eq!(views(&sink).await, after_1);

        // Batch 2, times 15 and 20: p2's sales deleted; a new month; the purchase history
        // changed; basket line p1 retracted at 15 and re-added at 20; an affinity "changed" to
        // identical figures (nothing to write); a line inserted and retracted at one time.
        let batch_2 = Batch::from_updates(
            20,
            Updates {
                sold_products_daily: vec![
                    (sold(JAN_15, "p2", 1, 150, 1), 15, -1),
                    (sold(FEB_01, "p1", 1, 100, 1), 15, 1),
                ],
                shopper_purchases: vec![
                    (bought("p1", 2, 1, AT_1), 15, -1),
                    (bought("p1", 3, 2, AT_2), 15, 1),
                ],
                product_affinities: vec![
                    (pair("p1", "p2", 1), 20, -1),
                    (pair("p1", "p2", 1), 20, 1),
                ],
                baskets: vec![
                    (line("p1", 2), 15, -1),
                    (line("p1", 3), 20, 1),
                    (line("p9", 1), 20, 1),
                    (line("p9", 1), 20, -1),
                ],
                // o2's winning payment changes at 15: another product, another month (the
                // old line's tombstone and the new line are in different partitions).
                order_lines: vec![
                    (ordered("o2", "p2", 1, AT_1, JAN_15), 15, -1),
                    (ordered("o2", "p3", 4, AT_3, FEB_01), 15, 1),
                ],
            },
        )
        .unwrap();
        assert_eq!(batch_2.len(), 7);
        sink.write_batch(&batch_2).await.unwrap();
        assert_eq!(sink.committed().await.unwrap(), 20);
        let after_2 = Views {
            sold_products_daily: vec![sold(JAN_15, "p1", 5, 500, 2), sold(FEB_01, "p1", 1, 100, 1)],
            shopper_purchases: vec![bought("p1", 3, 2, AT_2)],
            product_affinities: vec![pair("p1", "p2", 1)],
            baskets: vec![line("p1", 3)],
            order_lines: vec![
                cancelled(ordered("o1", "p1", 2, AT_1, JAN_15)),
                ordered("o2", "p3", 4, AT_3, FEB_01),
            ],
        };
        assert_eq!(views(&sink).await, after_2);

        // Merges keep only the newest version per key; committed views do not change.
        for table in VERSION_TABLES {
            sink.client()
                .query(&format!("OPTIMIZE TABLE {db}.{table} FINAL"))
                .execute()
                .await
                .unwrap();
        }
        assert_eq!(views(&sink).await, after_2);

        // Batch 3 (time 30), partially written: versions in every table, then a crash before
        // the progress row. Nothing of it is visible.
        let partial_3 = Batch::from_updates(
            30,
            Updates {
                sold_products_daily: vec![
                    (sold(JAN_15, "p1", 5, 500, 2), 30, -1),
                    (sold(JAN_15, "p1", 9, 900, 9), 30, 1),
                ],
                shopper_purchases: vec![(bought("p1", 3, 2, AT_2), 30, -1)],
                product_affinities: vec![(pair("p1", "p3", 1), 30, 1)],
                baskets: vec![(line("p1", 3), 30, -1)],
                order_lines: vec![(ordered("o3", "p1", 1, AT_3, FEB_01), 30, 1)],
            },
        )
        .unwrap();
        sink.write_versions(&partial_3).await.unwrap();
        assert_eq!(sink.committed().await.unwrap(), 20);
        assert_eq!(views(&sink).await, after_2);

        // Restart: discard the uncommitted versions, then write time 30 again (here with
        // different figures, to prove that nothing of the partial batch survives).
        let sink = connect(&db).await;
        assert!(sink.migrate().await.unwrap().is_noop());
        assert_eq!(sink.discard_uncommitted().await.unwrap(), 5);
        for table in VERSION_TABLES {
            let sql = format!("SELECT count() FROM {db}.{table} WHERE time > 20");
            assert_eq!(count(&sink, &sql).await, 0, "{table}");
        }
        assert_eq!(sink.discard_uncommitted().await.unwrap(), 0);
        assert_eq!(views(&sink).await, after_2);
        let batch_3 = Batch::from_updates(
            30,
            Updates {
                sold_products_daily: vec![
                    (sold(JAN_15, "p1", 5, 500, 2), 30, -1),
                    (sold(JAN_15, "p1", 6, 600, 3), 30, 1),
                ],
                baskets: vec![(line("p1", 3), 30, -1), (line("p2", 1), 30, 1)],
                ..Updates::default()
            },
        )
        .unwrap();
        sink.write_batch(&batch_3).await.unwrap();
        assert_eq!(sink.committed().await.unwrap(), 30);
        let after_3 = Views {
            sold_products_daily: vec![sold(JAN_15, "p1", 6, 600, 3), sold(FEB_01, "p1", 1, 100, 1)],
            shopper_purchases: vec![bought("p1", 3, 2, AT_2)],
            product_affinities: vec![pair("p1", "p2", 1)],
            baskets: vec![line("p2", 1)],
            order_lines: after_2.order_lines.clone(),
        };
        assert_eq!(views(&sink).await, after_3);

        // Writing a committed batch again (a replay the caller did not skip) changes nothing,
        // and an empty batch only advances the progress.
        sink.write_batch(&batch_2).await.unwrap();
        sink.write_batch(&Batch {
            through: 40,
            ..Batch::default()
        })
        .await
        .unwrap();
        assert_eq!(sink.committed().await.unwrap(), 40);
        assert_eq!(views(&sink).await, after_3);

        // Analysts' SQL over the views: filters on values and keys, aggregates.
        let sql = format!("SELECT count() FROM {db}.sold_products_daily WHERE quantity = 6");
        assert_eq!(count(&sink, &sql).await, 1);
        let sql = format!(
            "SELECT toUInt64(sum(revenue_cents)) FROM {db}.sold_products_daily \
             WHERE day >= toDate('2026-01-01') AND day < toDate('2026-02-01')"
        );
        assert_eq!(count(&sink, &sql).await, 600);
        let sql = format!(
            "SELECT count() FROM {db}.order_lines WHERE cancelled = 0 \
             AND ordered_at = toDateTime('2026-02-01 09:30:00', 'UTC')"
        );
        assert_eq!(count(&sink, &sql).await, 1);
        let sql = format!("SELECT count() FROM {db}.order_lines WHERE cancelled = 1");
        assert_eq!(count(&sink, &sql).await, 1);
    })
    .await;
}

#[tokio::test]
async fn migrate_replaces_a_view_whose_definition_changed() {
    with_database("migrate", |sink| async move {
        let db = sink.database().to_owned();
        sink.migrate().await.unwrap();
        sink.write_batch(
            &Batch::from_updates(
                1,
                Updates {
                    baskets: vec![(line("p1", 2), 1, 1)],
                    ..Updates::default()
                },
            )
            .unwrap(),
        )
        .await
        .unwrap();
        // Someone (an older release) left a different definition behind.
        sink.client()
            .query(&format!("DROP TABLE {db}.baskets"))
            .execute()
            .await
            .unwrap();
        sink.client()
            .query(&format!(
                "CREATE VIEW {db}.baskets AS SELECT retailer_id, shopper_id, product_id, quantity \
                 FROM {db}.baskets_versions"
            ))
            .execute()
            .await
            .unwrap();
        let migration = sink.migrate().await.unwrap();
        assert_eq!(
            migration,
            Migration {
                created: vec![],
                replaced_views: vec!["baskets".into()],
            }
        );
        assert!(sink.migrate().await.unwrap().is_noop());
        assert_eq!(views(&sink).await.baskets, vec![line("p1", 2)]);
        let leftovers = format!(
            "SELECT count() FROM system.tables WHERE database = '{db}' AND name LIKE '\\_bf\\_%'"
        );
        assert_eq!(count(&sink, &leftovers).await, 0);
    })
    .await;
}

/// A decisions log created before holdouts, caps and budgets (an older release) gets their
/// columns; its rows read as shown, not capped, within budget; the views that read them are
/// created after.
#[tokio::test]
async fn migrate_adds_the_holdout_and_cap_columns_to_an_older_decisions_log() {
    with_database("migrate_columns", |sink| async move {
        let db = sink.database().to_owned();
        sink.migrate().await.unwrap();
        for sql in [
            format!("DROP TABLE {db}.game_winners"),
            format!("DROP TABLE {db}.campaign_uplift"),
            format!("DROP TABLE {db}.experience_decisions"),
            format!("ALTER TABLE {db}.experience_decisions_log DROP COLUMN over_budget"),
            format!("ALTER TABLE {db}.experience_decisions_log DROP COLUMN capped"),
            format!("ALTER TABLE {db}.experience_decisions_log DROP COLUMN campaign_group"),
            format!(
                "INSERT INTO {db}.experience_decisions_log (decision_id, retailer_id, \
                 shopper_id, tree_id, occurred_at, decided_at, time) \
                 VALUES ('d1', 'r1', 's1', 't', 1700000000, 1700000000, 1)"
            ),
            format!("INSERT INTO {db}.progress (time, written_at, note) VALUES (1, now(), 'old')"),
        ] {
            sink.client().query(&sql).execute().await.unwrap();
        }
        let migration = sink.migrate().await.unwrap();
        assert_eq!(
            migration,
            Migration {
                created: [
                    "experience_decisions_log.campaign_group",
                    "experience_decisions_log.capped",
                    "experience_decisions_log.over_budget",
                    "experience_decisions",
                    "campaign_uplift",
                    "game_winners",
                ]
                .map(String::from)
                .to_vec(),
                replaced_views: vec![],
            }
        );
        assert!(sink.migrate().await.unwrap().is_noop());
        let row: (String, String, u8, u8) = sink
            .client()
            .query(&format!(
                "SELECT decision_id, campaign_group, capped, over_budget \
                 FROM {db}.experience_decisions"
            ))
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(row, ("d1".to_owned(), "shown".to_owned(), 0, 0));
    })
    .await;
}

#[tokio::test]
async fn many_rows_go_in_one_insert_per_table() {
    with_database("bulk", |sink| async move {
        let db = sink.database().to_owned();
        sink.migrate().await.unwrap();
        let n = 20_000;
        let updates = Updates {
            baskets: (0..n).map(|i| (line(&format!("p{i:05}"), i + 1), 1, 1)).collect(),
            ..Updates::default()
        };
        sink.write_batch(&Batch::from_updates(1, updates).unwrap())
            .await
            .unwrap();
        let sql = format!("SELECT count() FROM {db}.baskets");
        assert_eq!(count(&sink, &sql).await, n as u64);
        let sql = format!("SELECT toUInt64(sum(quantity)) FROM {db}.baskets");
        assert_eq!(count(&sink, &sql).await, (n * (n + 1) / 2) as u64);
        let sql = format!(
            "SELECT count() FROM system.parts WHERE database = '{db}' AND table = 'baskets_versions' \
             AND active"
        );
        assert_eq!(count(&sink, &sql).await, 1);
    })
    .await;
}

#[tokio::test]
async fn the_reader_reads_every_read_model_back_into_its_own_row_type() {
    with_database("reader", |sink| async move {
        sink.migrate().await.unwrap();
        let purchases = vec![bought("p1", 2, 1, AT_1), bought("p2", 1, 1, AT_2)];
        let orders = vec![
            ordered("o1", "p1", 2, AT_1, JAN_15),
            cancelled(ordered("o2", "p2", 1, AT_3, FEB_01)),
        ];
        let updates = Updates {
            sold_products_daily: vec![(sold(JAN_15, "p1", 2, 200, 1), 1, 1)],
            shopper_purchases: purchases.iter().map(|r| (r.clone(), 1, 1)).collect(),
            product_affinities: vec![(pair("p1", "p2", 1), 1, 1)],
            baskets: vec![(line("p3", 4), 1, 1)],
            order_lines: orders.iter().map(|r| (r.clone(), 1, 1)).collect(),
        };
        sink.write_batch(&Batch::from_updates(1, updates).unwrap())
            .await
            .unwrap();
        let reader = sink.reader();
        assert_eq!(
            reader
                .read_model::<SoldProductDaily>("")
                .fetch_all()
                .await
                .unwrap(),
            vec![sold(JAN_15, "p1", 2, 200, 1)]
        );
        assert_eq!(
            reader
                .read_model::<ShopperPurchase>("WHERE retailer_id = ? ORDER BY product_id")
                .bind("r1")
                .fetch_all()
                .await
                .unwrap(),
            purchases
        );
        assert_eq!(
            reader
                .read_model::<ProductAffinity>("")
                .fetch_all()
                .await
                .unwrap(),
            vec![pair("p1", "p2", 1)]
        );
        assert_eq!(
            reader
                .read_model::<BasketLine>("")
                .fetch_all()
                .await
                .unwrap(),
            vec![line("p3", 4)]
        );
        let mut cursor = reader
            .read_model::<PaidOrderLine>("ORDER BY order_id")
            .fetch()
            .unwrap();
        let mut read = Vec::new();
        while let Some(row) = cursor.next().await.unwrap() {
            read.push(row);
        }
        assert_eq!(read, orders);
    })
    .await;
}

#[derive(Debug, PartialEq, Row, Deserialize)]
struct LateRow {
    retailer_id: String,
    order_id: String,
    event_id: String,
    event_type: String,
    reason: String,
    occurred_at: u32,
    read_at: u32,
}

#[tokio::test]
async fn late_inputs_are_listed_once_in_late_events_without_a_shopper() {
    use basketflow_vocab::{LateInput, LateReason};
    with_database("late", |sink| async move {
        let db = sink.database().to_owned();
        sink.migrate().await.unwrap();
        let late = LateInput {
            retailer_id: "r1".into(),
            order_id: "o1".into(),
            event_id: "e9".into(),
            event_type: "order_status_changed".into(),
            reason: LateReason::CancellationAfterSettlement,
            occurred_at: Timestamp::parse_rfc3339("2026-11-22T10:00:00Z").unwrap(),
            read_at: 1_795_400_000_123,
        };
        let mut batch = Batch::from_updates(1_795_400_000_200, Updates::default()).unwrap();
        batch.late_inputs = vec![late.clone()];
        sink.write_batch(&batch).await.unwrap();
        // A replay writes the same row again: the view lists it once.
        sink.write_batch(&batch).await.unwrap();
        let rows: Vec<LateRow> = sink
            .client()
            .query(&format!(
                "SELECT retailer_id, order_id, event_id, event_type, reason, \
                 toUInt32(occurred_at), toUInt32(read_at) FROM {db}.late_events"
            ))
            .fetch_all()
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![LateRow {
                retailer_id: "r1".into(),
                order_id: "o1".into(),
                event_id: "e9".into(),
                event_type: "order_status_changed".into(),
                reason: "cancellation_after_settlement".into(),
                occurred_at: 1_795_341_600,
                read_at: 1_795_400_000,
            }]
        );
        // No column names a shopper.
        let sql = format!(
            "SELECT count() FROM system.columns WHERE database = '{db}' \
             AND table IN ('late_events', 'late_events_log') AND name LIKE '%shopper%'"
        );
        assert_eq!(count(&sink, &sql).await, 0);
        // A batch whose late input is after its time is refused before anything is written.
        let mut beyond = Batch::from_updates(1_795_400_000_000, Updates::default()).unwrap();
        beyond.late_inputs = vec![late];
        assert!(sink.write_batch(&beyond).await.is_err());
    })
    .await;
}
