//! Integration: retailers are tenants on the `experience-trees` topic. Two retailers publish a
//! tree for the same shopper id; one of them republishes it, the other removes another
//! shopper's tree with a tombstone. On a topic compacted as aggressively as Kafka allows, the
//! compaction must keep each retailer's latest tree (keys are retailer and shopper), and a
//! graph started on the compacted topic, then restarted, must decide for each retailer's
//! shopper with that retailer's tree, and for nobody whose tree was removed.
//!
//! Needs `scripts/stack up`. Topics and databases of its own, removed at the end.

mod support;

use std::time::{Duration, Instant};

use basketflow_dataflows::experiences::decision_id;
use basketflow_testkit::kafka::test_producer;
use basketflow_testkit::Stack;
use basketflow_testkit::{read_to_end, Isolation};
use basketflow_vocab::{tree_key, ExperienceTree};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use support::{run_caught_up, tree_for, GraphStack, TestRun};

/// The tests' tree ([`tree_for`]: a recommendation once the basket holds pasta, then a
/// tension cart from 3,000 cents) at `version`.
fn tree(retailer: &str, shopper: &str, version: u64) -> ExperienceTree {
    ExperienceTree {
        version,
        ..tree_for(retailer, shopper)
    }
}

/// A `product_added` of `cents` of pasta with id `event_id` (the same ids at every retailer).
fn added(event_id: &str, retailer: &str, shopper: &str, cents: i64) -> String {
    format!(
        r#"{{"event_id":"{event_id}","type":"product_added","retailer_id":"{retailer}","shopper_id":"{shopper}","occurred_at":"2026-11-22T10:00:00Z","product":{{"product_id":"p1","category":"pasta","unit_price_cents":{cents}}},"quantity":1}}"#
    )
}

#[test]
fn trees_of_two_retailers_for_one_shopper_id_survive_compaction_and_a_restart() {
    let stack = Stack::shared();
    // Compaction as eager as the broker allows: segments roll after 100 ms, any dirty share is
    // cleaned, tombstones go after 100 ms.
    let run = TestRun::create(
        &stack,
        "tenants",
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.001"),
            ("min.compaction.lag.ms", "0"),
            ("delete.retention.ms", "100"),
        ],
        "",
    );
    let (events, trees, config) = (&run.events, &run.trees, &run.config);

    // Trees, each in a segment of its own (a pause longer than segment.ms between sends).
    let json = |t: &ExperienceTree| serde_json::to_vec(t).unwrap();
    let (a, b) = ("retailer-a", "retailer-b");
    let published: Vec<(String, Option<Vec<u8>>)> = vec![
        (tree_key(a, "cust-1"), Some(json(&tree(a, "cust-1", 1)))),
        (tree_key(b, "cust-1"), Some(json(&tree(b, "cust-1", 1)))),
        (tree_key(a, "cust-2"), Some(json(&tree(a, "cust-2", 1)))),
        (tree_key(b, "cust-2"), Some(json(&tree(b, "cust-2", 1)))),
        // Retailer a republishes its cust-1 tree; retailer b removes its cust-2 tree.
        (tree_key(a, "cust-1"), Some(json(&tree(a, "cust-1", 2)))),
        (tree_key(b, "cust-2"), None),
    ];
    let producer: ThreadedProducer<DefaultProducerContext> =
        test_producer(&stack.brokers).create().unwrap();
    let send = |key: &str, value: Option<&[u8]>| {
        let record = BaseRecord::<str, [u8]>::to(trees).key(key);
        let record = match value {
            Some(v) => record.payload(v),
            None => record,
        };
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    };
    for (key, value) in &published {
        send(key, value.as_deref());
    }

    // Until the cleaner has run: the superseded tree and the removed one are gone. Filler
    // messages keep rolling segments so that everything above is in closed ones.
    let superseded = json(&tree(a, "cust-1", 1));
    let removed = json(&tree(b, "cust-2", 1));
    let deadline = Instant::now() + Duration::from_secs(180);
    let kept = loop {
        let records = read_to_end(&stack.brokers, trees, Isolation::Committed);
        let values: Vec<&[u8]> = records
            .iter()
            .filter_map(|r| r.payload.as_deref())
            .collect();
        if !values.contains(&superseded.as_slice()) && !values.contains(&removed.as_slice()) {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "the log cleaner did not compact {trees} within 180 s"
        );
        send(&tree_key("retailer-filler", "filler"), Some(b"{}"));
    };
    // Both retailers' cust-1 trees survived, each the latest of its retailer; so did a's cust-2.
    let latest = |key: String| {
        kept.iter()
            .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
            .filter_map(|r| r.payload.clone())
            .next_back()
    };
    assert_eq!(
        latest(tree_key(a, "cust-1")),
        Some(json(&tree(a, "cust-1", 2)))
    );
    assert_eq!(
        latest(tree_key(b, "cust-1")),
        Some(json(&tree(b, "cust-1", 1)))
    );
    assert_eq!(
        latest(tree_key(a, "cust-2")),
        Some(json(&tree(a, "cust-2", 1)))
    );
    assert_eq!(latest(tree_key(b, "cust-2")), None);

    // The same event ids at both retailers, for both shopper ids.
    // Every shopper at both retailers adds `cents` of pasta with the same event id.
    let add_everywhere = |event_id: &str, cents: i64| {
        let messages: Vec<(String, String)> =
            [(a, "cust-1"), (b, "cust-1"), (a, "cust-2"), (b, "cust-2")]
                .iter()
                .map(|(r, s)| (s.to_string(), added(event_id, r, s, cents)))
                .collect();
        let pairs: Vec<(&[u8], &[u8])> = messages
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        stack.produce_pairs(events, &pairs);
    };
    add_everywhere("e1", 200);

    run_caught_up(config);
    let decided = |r: &str, s: &str, version: u64, node: &str, event: &str| {
        (
            decision_id(r, s, "it", version, node, event),
            node.to_string(),
        )
    };
    let mut want = vec![
        decided(a, "cust-1", 2, "pasta", "e1"),
        decided(b, "cust-1", 1, "pasta", "e1"),
        decided(a, "cust-2", 1, "pasta", "e1"),
    ];
    want.sort();
    assert_eq!(stack.decisions_on_kafka(&run.decisions), want);

    // A restart (state rebuilt from the compacted topic and the events), then more events.
    add_everywhere("e2", 2_900);
    run_caught_up(config);
    want.extend([
        decided(a, "cust-1", 2, "big", "e2"),
        decided(b, "cust-1", 1, "big", "e2"),
        decided(a, "cust-2", 1, "big", "e2"),
    ]);
    want.sort();
    assert_eq!(stack.decisions_on_kafka(&run.decisions), want);
    assert_eq!(stack.decisions_in_clickhouse(&run.database), want);
}
