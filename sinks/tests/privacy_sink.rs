//! Integration: erasure and retention in the ClickHouse sink against the real server
//! (`scripts/stack up`): an erasure deletes every row naming the shopper from every
//! per-shopper table (history and tombstones included), keeps the anonymous order line and
//! the product figures, and is acknowledged in `privacy_audit` without a shopper id; retention
//! deletes only superseded history, so no view changes.

use basketflow_sinks::clickhouse::schema::PER_SHOPPER_TABLES;
use basketflow_sinks::clickhouse::versions::{Batch, Updates};
use basketflow_sinks::clickhouse::ClickHouseStore;
use basketflow_testkit::stack::clickhouse_url;
use basketflow_testkit::Database;
use basketflow_vocab::read_models::{PaidOrderLine, ShopperPurchase, SoldProductDaily};
use basketflow_vocab::{CausedBy, Decision, ErasureRequest, Experience, ExperienceKind, Timestamp};
use basketflow_vocab::{Erasure, Retention};

const AT: Timestamp = Timestamp(1_795_219_200_000_000); // 2026-11-21T00:00:00Z

fn purchase(shopper: &str, quantity: i64) -> ShopperPurchase {
    ShopperPurchase {
        retailer_id: "r1".into(),
        shopper_id: shopper.into(),
        product_id: "p1".into(),
        quantity,
        orders: 1,
        last_purchase_at: AT,
    }
}

fn line(shopper: &str) -> PaidOrderLine {
    PaidOrderLine {
        retailer_id: "r1".into(),
        order_id: format!("o-{shopper}"),
        product_id: "p1".into(),
        category: "pasta".into(),
        shopper_id: shopper.into(),
        quantity: 2,
        revenue_cents: 400,
        ordered_at: AT,
        day: AT.day(),
        cancelled: false,
    }
}

fn sold(orders: i64) -> SoldProductDaily {
    SoldProductDaily {
        day: AT.day(),
        retailer_id: "r1".into(),
        product_id: "p1".into(),
        category: "pasta".into(),
        quantity: 2 * orders,
        revenue_cents: 400 * orders,
        orders,
    }
}

fn decision(shopper: &str, time: u64) -> Decision {
    Decision {
        decision_id: format!("d-{shopper}"),
        retailer_id: "r1".into(),
        shopper_id: shopper.into(),
        session_id: None,
        experience: Experience {
            kind: ExperienceKind::TensionCart,
            params: Default::default(),
        },
        tree_id: "t".into(),
        tree_version: 1,
        node_id: "n".into(),
        reasons: vec![],
        caused_by: CausedBy {
            event_id: format!("e-{shopper}"),
            partition: 0,
            offset: 0,
            occurred_at: AT,
        },
        time,
        decided_at: AT,
        held_out: false,
        capped: false,
        over_budget: false,
        budget_cents: None,
    }
}

async fn text(sink: &ClickHouseStore, sql: &str) -> String {
    let db = sink.database().to_string();
    let bytes = sink
        .client()
        .query(&sql.replace("DB.", &format!("{db}.")))
        .fetch_bytes("TSV")
        .unwrap()
        .collect()
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn erasure_forgets_the_shopper_everywhere_and_retention_only_superseded_history() {
    let db = Database::fresh(&clickhouse_url(), "bf_test_privacy");
    let sink = ClickHouseStore::connect(&clickhouse_url(), &db, "default", "")
        .await
        .expect("ClickHouse is up (scripts/stack up)");
    sink.migrate().await.unwrap();

    // Time 10: s1 and s2 each bought once; s1 got a decision.
    let mut b10 = Batch::from_updates(
        10,
        Updates {
            sold_products_daily: vec![(sold(2), 10, 1)],
            shopper_purchases: vec![(purchase("s1", 2), 10, 1), (purchase("s2", 2), 10, 1)],
            order_lines: vec![(line("s1"), 10, 1), (line("s2"), 10, 1)],
            ..Default::default()
        },
    )
    .unwrap();
    b10.decisions = vec![decision("s1", 10)];
    sink.write_batch(&b10).await.unwrap();

    // Time 20: s1 is erased: the graph retracts their purchase (a tombstone) and anonymizes
    // their order line, in the same batch as the erasure.
    let mut b20 = Batch::from_updates(
        20,
        Updates {
            shopper_purchases: vec![(purchase("s1", 2), 20, -1)],
            order_lines: vec![(line("s1"), 20, -1), (line("").clone_as("o-s1"), 20, 1)],
            ..Default::default()
        },
    )
    .unwrap();
    let erasure = Erasure {
        request: ErasureRequest {
            request_id: "req-1".into(),
            retailer_id: "r1".into(),
            shopper_id: "s1".into(),
            requested_at: AT,
        },
        partition: 0,
        offset: 7,
    };
    b20.erasures = vec![(erasure.clone(), 20_000)];
    sink.write_batch(&b20).await.unwrap();

    for table in PER_SHOPPER_TABLES {
        assert_eq!(
            text(
                &sink,
                &format!("SELECT count() FROM DB.{table} WHERE shopper_id = 's1'")
            )
            .await,
            "0\n",
            "{table}"
        );
    }
    assert_eq!(
        text(
            &sink,
            "SELECT shopper_id, quantity FROM DB.shopper_purchases ORDER BY shopper_id"
        )
        .await,
        "s2\t2\n"
    );
    assert_eq!(
        text(
            &sink,
            "SELECT order_id, shopper_id FROM DB.order_lines ORDER BY order_id"
        )
        .await,
        "o-s1\t\no-s2\ts2\n"
    );
    assert_eq!(
        text(
            &sink,
            "SELECT quantity, revenue_cents, orders FROM DB.sold_products_daily"
        )
        .await,
        "4\t800\t2\n"
    );
    // Version rows removed: s1's purchase (version + tombstone), the order line's version at
    // 10 (at 20 the same key's version is the anonymous line), one decision; no basket.
    assert_eq!(
        text(
            &sink,
            "SELECT request_id, retailer_id, toUnixTimestamp(received_at), applied_at >= received_at, \
             removed_shopper_purchases, removed_baskets, removed_order_lines, \
             removed_experience_decisions FROM DB.privacy_audit"
        )
        .await,
        "req-1\tr1\t20\t1\t2\t0\t1\t1\n"
    );
    // The audit names no shopper.
    assert_eq!(
        text(&sink, &format!("SELECT count() FROM system.columns WHERE database = '{db}' AND table LIKE 'privacy_audit%' AND name LIKE '%shopper_id%'")).await.trim(),
        "0"
    );
    // Erasing again (a retried batch) removes nothing more and keeps the true counts.
    assert_eq!(sink.erase(&erasure, 20_000).await.unwrap(), [0, 0, 0, 0]);
    assert_eq!(
        text(
            &sink,
            "SELECT removed_shopper_purchases, removed_order_lines FROM DB.privacy_audit"
        )
        .await,
        "2\t1\n"
    );

    // Time 40: s2's purchase left the state at 25 (retention of 15 ms of graph time).
    let b40 = Batch::from_updates(
        40,
        Updates {
            shopper_purchases: vec![(purchase("s2", 2), 25, -1)],
            order_lines: vec![(line("s2"), 25, -1), (line("").clone_as("o-s2"), 25, 1)],
            ..Default::default()
        },
    )
    .unwrap();
    sink.write_batch(&b40).await.unwrap();
    let before = text(&sink, "SELECT * FROM DB.order_lines ORDER BY order_id").await;
    let retention = Retention {
        default_ms: 15,
        per_retailer_ms: Default::default(),
    };
    // Cut-off 40 - 15 = 25: the versions at 10 that name s2 go (purchase, order line); the
    // tombstones and anonymous lines at 20 and 25 stay.
    assert_eq!(sink.apply_retention(40, &retention).await.unwrap(), 2);
    assert_eq!(sink.apply_retention(40, &retention).await.unwrap(), 0);
    assert_eq!(
        text(
            &sink,
            "SELECT count() FROM DB.shopper_purchases_versions WHERE time < 25"
        )
        .await,
        "0\n"
    );
    assert_eq!(
        text(&sink, "SELECT * FROM DB.order_lines ORDER BY order_id").await,
        before
    );
    assert_eq!(
        text(
            &sink,
            "SELECT order_id, shopper_id FROM DB.order_lines ORDER BY order_id"
        )
        .await,
        "o-s1\t\no-s2\t\n"
    );
    assert_eq!(
        text(&sink, "SELECT count() FROM DB.shopper_purchases").await,
        "0\n"
    );

    // Decisions of a month whose every row is past the period go by dropping the partition.
    // (And s5's purchase at 30, never changed since: its newest version is live, so it stays,
    // however old; e.g. a duplicate copy took over when the first one left.)
    let mut b90 = Batch::from_updates(
        90,
        Updates {
            shopper_purchases: vec![(purchase("s5", 1), 30, 1)],
            ..Default::default()
        },
    )
    .unwrap();
    let mut old = decision("s3", 50);
    old.caused_by.occurred_at = Timestamp(AT.0 - 40 * 86_400_000_000); // another month
    b90.decisions = vec![old, decision("s4", 80)];
    sink.write_batch(&b90).await.unwrap();
    let partitions = &format!("SELECT count(DISTINCT partition) FROM system.parts WHERE database = '{db}' AND table = 'experience_decisions_log' AND active");
    assert_eq!(text(&sink, partitions).await, "2\n");
    // Cut-off 90 - 15 = 75: the old month (its only row at 50) is dropped whole; in the
    // current month the row at 80 stays. (And s2's purchase tombstone at 25 goes.)
    assert_eq!(sink.apply_retention(90, &retention).await.unwrap(), 2);
    assert_eq!(text(&sink, partitions).await, "1\n");
    assert_eq!(
        text(&sink, "SELECT decision_id FROM DB.experience_decisions_log").await,
        "d-s4\n"
    );
    assert_eq!(
        text(
            &sink,
            "SELECT shopper_id, quantity FROM DB.shopper_purchases"
        )
        .await,
        "s5\t1\n"
    );
}

trait CloneAs {
    fn clone_as(&self, order_id: &str) -> Self;
}

impl CloneAs for PaidOrderLine {
    fn clone_as(&self, order_id: &str) -> Self {
        PaidOrderLine {
            order_id: order_id.into(),
            ..self.clone()
        }
    }
}
