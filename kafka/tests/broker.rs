//! The admin helpers and readers against the real broker (`$BASKETFLOW_BROKERS`, default
//! 127.0.0.1:9092; `scripts/stack up`). Every topic a test creates is deleted when it ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use basketflow_kafka::progress::PROGRESS_KEY;
use basketflow_kafka::{
    check_topics_exist, client_config, delete_topics, ensure_topic, read_erased, read_progress,
    read_progress_record, Positions, ProgressRecord, TopicError,
};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

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

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

/// A topic created for a test (`partitions`, `configs`), deleted when dropped.
struct Topic(String);

impl Topic {
    fn create(name: &str, partitions: i32, configs: &[(&str, &str)]) -> Topic {
        let topic = Topic(unique(name));
        block_on(ensure_topic(&brokers(), &topic.0, partitions, configs)).unwrap_or_else(|e| {
            panic!(
                "creating {}: {e}; is the stack up? run scripts/stack up",
                topic.0
            )
        });
        topic
    }
}

impl Drop for Topic {
    fn drop(&mut self) {
        if let Err(e) = block_on(delete_topics(&brokers(), &[&self.0])) {
            eprintln!("deleting {}: {e}", self.0);
        }
    }
}

/// Produces `(key, value)` pairs to partition 0 of `topic` and waits for every acknowledgement.
fn produce(topic: &str, records: &[(&str, &str)]) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        client_config(&brokers()).create().unwrap();
    for (k, v) in records {
        producer
            .send(BaseRecord::to(topic).key(*k).payload(*v).partition(0))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn existing_topics_pass_the_check() {
    let a = Topic::create("check-a", 2, &[]);
    let b = Topic::create("check-b", 1, &[]);
    check_topics_exist(&brokers(), &[&a.0, &b.0]).unwrap();
}

#[test]
fn a_missing_topic_is_named_and_not_created() {
    let a = Topic::create("check-present", 1, &[]);
    let missing = unique("check-missing");
    let started = Instant::now();
    match check_topics_exist(&brokers(), &[&a.0, &missing]) {
        Err(TopicError::Missing { topic, brokers: b }) => {
            assert_eq!(topic, missing);
            assert_eq!(b, brokers());
        }
        other => panic!("expected Missing, got {other:?}"),
    }
    // The grace for a topic created a moment ago, not a metadata timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let e = check_topics_exist(&brokers(), &[&missing]).unwrap_err();
    assert_eq!(e.topic(), missing);
    assert_eq!(
        e.to_string(),
        format!("topic {missing} does not exist on {}", brokers())
    );
}

#[test]
fn brokers_that_do_not_answer_make_the_topic_unavailable() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let answer = check_topics_exist(&nowhere, &["shopper-events"]);
    // The check's own deadline (10 s), not the sources' 30 s.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    match answer {
        Err(e @ TopicError::Unavailable { .. }) => {
            assert_eq!(e.topic(), "shopper-events");
            assert!(
                e.to_string().starts_with(&format!(
                    "topic shopper-events is not available on {nowhere}: "
                )),
                "{e}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn deleting_a_topic_that_does_not_exist_is_not_an_error() {
    block_on(delete_topics(&brokers(), &[&unique("never-created")])).unwrap();
    block_on(delete_topics(&brokers(), &[])).unwrap();
}

#[test]
fn the_last_progress_record_is_read_back_and_an_empty_topic_has_none() {
    let topic = Topic::create("progress", 1, &[("cleanup.policy", "compact")]);
    assert_eq!(
        read_progress(&brokers(), &topic.0).unwrap(),
        (0, Positions::new())
    );
    let record = |through, offset| {
        serde_json::to_string(&ProgressRecord {
            through,
            positions: Positions::from([("events".into(), BTreeMap::from([(0, offset)]))]),
            tick_ms: Some(5),
            dedup_horizon_ms: None,
            settlement_ms: None,
        })
        .unwrap()
    };
    let (first, second) = (record(10, 3), record(20, 7));
    produce(&topic.0, &[(PROGRESS_KEY, &first), (PROGRESS_KEY, &second)]);
    assert_eq!(
        read_progress(&brokers(), &topic.0).unwrap(),
        (
            20,
            Positions::from([("events".into(), BTreeMap::from([(0, 7)]))])
        )
    );
    assert_eq!(
        read_progress_record(&brokers(), &topic.0)
            .unwrap()
            .and_then(|p| p.tick_ms),
        Some(5)
    );
    // Two producers (two transactions in flight): a retried transaction's record (through 15)
    // can land after its successor's (20). The greatest through counts.
    let retried = record(15, 5);
    produce(&topic.0, &[("progress~2", &retried)]);
    assert_eq!(read_progress(&brokers(), &topic.0).unwrap().0, 20);
}

#[test]
fn erased_shoppers_are_read_from_every_valid_request() {
    let topic = Topic::create("erasures", 1, &[]);
    let request = |id: &str, shopper: &str| {
        format!(
            r#"{{"request_id":"{id}","retailer_id":"r1","shopper_id":"{shopper}","requested_at":"2026-11-22T10:00:00Z"}}"#
        )
    };
    let (a, b) = (request("q1", "s1"), request("q2", "s2"));
    produce(&topic.0, &[("s1", &a), ("x", "not a request"), ("s2", &b)]);
    let erased = read_erased(&brokers(), &topic.0).unwrap();
    assert_eq!(
        erased.into_iter().collect::<Vec<_>>(),
        vec![
            ("r1".to_string(), "s1".to_string()),
            ("r1".to_string(), "s2".to_string())
        ]
    );
}
