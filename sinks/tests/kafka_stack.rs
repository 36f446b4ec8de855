//! Integration: the single-node Apache Kafka of `scripts/stack up` supports what basketflow
//! relies on: idempotent producers and transactions with read-committed consumers.
//!
//! Runs against the real broker at `$BASKETFLOW_BROKERS` (default 127.0.0.1:9092), on topics of
//! its own with unique names.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use basketflow_kafka::{client_config, ensure_topic};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

fn brokers() -> String {
    std::env::var("BASKETFLOW_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{name}-{nanos}")
}

async fn fresh_topic(name: &str, partitions: i32) -> String {
    let topic = unique(name);
    ensure_topic(&brokers(), &topic, partitions, &[])
        .await
        .unwrap_or_else(|e| {
            panic!(
                "creating {topic} on {} failed ({e}); is the stack up? run scripts/stack up",
                brokers()
            )
        });
    topic
}

/// Every message of `topic` (all partitions, from the beginning up to the end as it is now),
/// as (partition, payload) in partition then offset order, read with `isolation`.
fn read_all(topic: &str, partitions: i32, isolation: &str) -> Vec<(i32, String)> {
    let consumer: BaseConsumer = client_config(&brokers())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut out = Vec::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        if high == 0 {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        // The end-of-partition event says we have read all there is, for this isolation level
        // (read_committed stops before aborted data and transaction markers).
        loop {
            assert!(Instant::now() < deadline, "timed out reading {topic}[{p}]");
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    out.push((p, String::from_utf8(m.payload().unwrap().to_vec()).unwrap()));
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => panic!("consuming {topic}: {e}"),
                None => {}
            }
        }
    }
    out
}

#[tokio::test]
async fn idempotent_producer_writes_each_message_exactly_once_in_order() {
    let topic = fresh_topic("idempotent", 2).await;
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
    let got = read_all(&topic, 2, "read_uncommitted");
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
    let topic = fresh_topic("transactions", 1).await;
    let producer: ThreadedProducer<DefaultProducerContext> = client_config(&brokers())
        .set("transactional.id", unique("txn"))
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

    let committed: Vec<String> = read_all(&topic, 1, "read_committed")
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

    let uncommitted: Vec<String> = read_all(&topic, 1, "read_uncommitted")
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
