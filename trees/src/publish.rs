//! Where the trees go: the trees topic (key = [`basketflow_vocab::tree_key`], value = the tree
//! as JSON; the topic is compacted, so it keeps each retailer's shopper's latest tree), or stdout as JSON lines for
//! `--dry-run`.
//!
//! The producer is idempotent and partitions like the Java clients, so a shopper's tree lands
//! on the partition the graph reads their events' trees from. Deliveries are counted as the
//! broker acknowledges them; [`Output::finish`] flushes and reports them, so a build that lost
//! a tree fails instead of reporting success.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use basketflow_kafka::{client_config, keyed_producer};
use basketflow_vocab::{tree_key, ExperienceTree};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

/// Counts deliveries and remembers the first failure.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

struct DeliveryContext(Arc<Deliveries>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.0.first_error.lock().expect("not poisoned");
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// What [`Output::finish`] reports.
pub(crate) struct Delivered {
    /// Trees the broker acknowledged (0 for a dry run).
    pub delivered: u64,
    /// Trees the broker refused or that timed out.
    pub failures: u64,
    /// The first failure's error.
    pub first_error: Option<String>,
}

/// The trees' destination.
pub(crate) struct Output(Destination);

enum Destination {
    /// JSON lines on stdout (`--dry-run`).
    Print(std::io::BufWriter<std::io::Stdout>),
    /// The trees topic.
    Kafka {
        producer: ThreadedProducer<DeliveryContext>,
        deliveries: Arc<Deliveries>,
        topic: String,
    },
}

impl Output {
    /// JSON lines on stdout.
    pub fn print() -> Output {
        Output(Destination::Print(std::io::BufWriter::new(
            std::io::stdout(),
        )))
    }

    /// A producer to `topic` on `brokers`, after checking that the topic exists.
    pub fn kafka(brokers: &str, topic: &str) -> Result<Output> {
        let deliveries = Arc::new(Deliveries::default());
        // Idempotent, and partitioned by key as Java clients and the traffic generator do.
        let producer: ThreadedProducer<DeliveryContext> = keyed_producer(client_config(brokers))
            .set("linger.ms", "20")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "200000")
            // A missing topic is an error, not an uncompacted topic created on the fly.
            .set("allow.auto.create.topics", "false")
            .create_with_context(DeliveryContext(deliveries.clone()))
            .context("creating the Kafka producer")?;
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .with_context(|| format!("reading the metadata of {topic}"))?;
        match metadata.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {}
            _ => bail!(
                "topic {topic} does not exist on {brokers}: create it (compacted), e.g. \
                 scripts/stack up"
            ),
        }
        Ok(Output(Destination::Kafka {
            producer,
            deliveries,
            topic: topic.to_owned(),
        }))
    }

    /// Writes or produces one tree (waits while the producer's queue is full).
    pub async fn write(&mut self, tree: &ExperienceTree) -> Result<()> {
        let json = serde_json::to_string(tree)?;
        match &mut self.0 {
            Destination::Print(w) => {
                w.write_all(json.as_bytes())?;
                w.write_all(b"\n")?;
            }
            Destination::Kafka {
                producer, topic, ..
            } => {
                let key = tree_key(&tree.retailer_id, &tree.shopper_id);
                let mut record = BaseRecord::to(topic.as_str())
                    .key(key.as_bytes())
                    .payload(json.as_bytes());
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        Err((e, _)) => bail!("producing to {topic}: {e}"),
                    }
                }
            }
        }
        Ok(())
    }

    /// Flushes stdout, or waits (up to two minutes) for the broker to acknowledge every tree.
    pub fn finish(&mut self) -> Result<Delivered> {
        match &mut self.0 {
            Destination::Print(w) => {
                w.flush()?;
                Ok(Delivered {
                    delivered: 0,
                    failures: 0,
                    first_error: None,
                })
            }
            Destination::Kafka {
                producer,
                deliveries,
                ..
            } => {
                producer
                    .flush(Duration::from_secs(120))
                    .context("flushing the Kafka producer")?;
                Ok(Delivered {
                    delivered: deliveries.delivered.load(Ordering::Relaxed),
                    failures: deliveries.failed.load(Ordering::Relaxed),
                    first_error: deliveries.first_error.lock().expect("not poisoned").clone(),
                })
            }
        }
    }
}
