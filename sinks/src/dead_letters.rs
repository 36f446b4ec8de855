//! Dead letters: refused messages go to `shopper-events-rejected`, counted by reason.
//!
//! Each worker produces the dead letters of the partitions it reads, as JSON, keyed
//! `partition:offset` (unique per refused message: a replay writes the same key again, which a
//! consumer can de-duplicate and a compacted topic collapses). The producer is idempotent, so
//! retries never duplicate within a run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basketflow_dataflows::parse::DeadLetter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use crate::kafka::{client_config, FlushOnDrop};

/// Rejections counted by code, shared with whoever reports metrics.
pub type RejectionCounts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Writes the dead letters of `stream` to `topic` on `brokers`, counting them by code.
pub fn write_dead_letters<T: timely::progress::Timestamp>(
    stream: Stream<'_, T, Vec<DeadLetter>>,
    brokers: &str,
    topic: &str,
    counts: RejectionCounts,
) -> Result<(), KafkaError> {
    let producer: ThreadedProducer<DefaultProducerContext> = client_config(brokers)
        // Retries never duplicate or reorder dead letters.
        .set("enable.idempotence", "true")
        // Dead letters are rare: send them within 10 ms.
        .set("linger.ms", "10")
        .create()?;
    let producer = FlushOnDrop(producer);
    let topic = topic.to_string();
    stream.sink(Pipeline, "DeadLetters", move |(input, frontier)| {
        input.for_each(|_time, data| {
            let mut counts = counts.lock().expect("rejection counts lock");
            for dl in data.drain(..) {
                *counts.entry(dl.code.clone()).or_default() += 1;
                let key = dl.kafka_key();
                let payload = serde_json::to_vec(&dl).expect("a dead letter serializes");
                let mut record = BaseRecord::to(&topic).key(&key).payload(&payload);
                loop {
                    match producer.0.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            producer.0.poll(Duration::from_millis(5));
                        }
                        Err((e, _)) => {
                            eprintln!("dead letters: producing to {topic} failed: {e}");
                            break;
                        }
                    }
                }
            }
        });
        if frontier.is_empty() {
            // The input is finished: deliver what is queued before the worker exits.
            let _ = producer.0.flush(Duration::from_secs(30));
        }
    });
    Ok(())
}
