//! Integration: the single-node Apache Kafka of `scripts/stack up` supports what basketflow
//! relies on: idempotent producers and transactions with read-committed consumers.
//!
//! Runs against the real broker at `$BASKETFLOW_BROKERS` (default 127.0.0.1:9092), on topics of
//! its own with unique names, deleted at the end.

use std::time::Duration;

use basketflow_kafka::client_config;
use basketflow_testkit::kafka::{read_to_end, Isolation, Topics};
use basketflow_testkit::stack::brokers;
use basketflow_testkit::unique;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// Every message of `topic` (all partitions, from the beginning up to the end as it is now),
/// as (partition, payload) in partition then offset order, read with `isolation`.
fn read_all(topic: &str, isolation: Isolation) -> Vec<(i32, String)> {
    read_to_end(&brokers(), topic, isolation)
        .into_iter()
        .map(|r| (r.partition, r.text()))
        .collect()
}

#[tokio::test]
async fn idempotent_producer_writes_each_message_exactly_once_in_order() {
    let topics = Topics::new(&brokers());
    let topic = topics.fresh("test-idempotent", 2);
    let producer: ThreadedProducer<DefaultProducerContext> = client_config(&brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .create()
        .unwrap();
    for i in 0..1000 {
        let payload = format!("m{i:04}");
        let key = format!("k{}", i % 2);
        producer
            .send(
                BaseRecord::to(&topic)
                    .partition(i % 2)
                    .key(&key)
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let got = read_all(&topic, Isolation::Uncommitted);
    let want: Vec<(i32, String)> = (0..2)
        .flat_map(|p| {
            (0..1000)
                .filter(move |i| i % 2 == p)
                .map(move |i| (p, format!("m{i:04}")))
        })
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn transactions_commit_and_abort_on_the_single_node() {
    let topics = Topics::new(&brokers());
    let topic = topics.fresh("test-transactions", 1);
    let producer: ThreadedProducer<DefaultProducerContext> = client_config(&brokers())
        .set("transactional.id", unique("test-txn"))
        .create()
        .unwrap();
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init_transactions: the broker's transaction coordinator must be available");
    let batch = |prefix: &str, n: usize, commit: bool| {
        producer.begin_transaction().unwrap();
        for i in 0..n {
            let payload = format!("{prefix}{i}");
            producer
                .send(BaseRecord::to(&topic).key("k").payload(&payload))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        // Deliver before deciding, so an aborted batch is really in the log (abort would
        // otherwise purge messages still queued in the client).
        producer.flush(Duration::from_secs(30)).unwrap();
        if commit {
            producer
                .commit_transaction(Duration::from_secs(30))
                .unwrap();
        } else {
            producer.abort_transaction(Duration::from_secs(30)).unwrap();
        }
    };
    batch("a", 10, true);
    batch("b", 5, false);
    batch("c", 3, true);

    let committed: Vec<String> = read_all(&topic, Isolation::Committed)
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let want: Vec<String> = (0..10)
        .map(|i| format!("a{i}"))
        .chain((0..3).map(|i| format!("c{i}")))
        .collect();
    assert_eq!(
        committed, want,
        "read_committed sees exactly the committed messages"
    );

    let uncommitted: Vec<String> = read_all(&topic, Isolation::Uncommitted)
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let want_all: Vec<String> = (0..10)
        .map(|i| format!("a{i}"))
        .chain((0..5).map(|i| format!("b{i}")))
        .chain((0..3).map(|i| format!("c{i}")))
        .collect();
    assert_eq!(
        uncommitted, want_all,
        "aborted messages are in the log, invisible to read_committed"
    );
}
