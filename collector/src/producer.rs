//! The Kafka side: hand a request's valid events to an idempotent producer and wait until the
//! broker has acknowledged each one, or until a bounded deadline says it has not.
//!
//! Every record gets its own delivery report. An event is `Ok` only when the broker acknowledged
//! it with `acks=all`; anything else (the broker down or slow past `message.timeout.ms`, a
//! refusal, the local queue full until the request's deadline) is an `Err` with a sentence for
//! the tracker. librdkafka fails a message once its `message.timeout.ms` has passed and never
//! sends it afterwards, so an event reported as failed while the broker was unreachable is not
//! in the topic; one that timed out while already on the wire may have been stored (Kafka cannot
//! say): a tracker that retries it may store it twice, which the graph's de-duplication by
//! `event_id` absorbs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use basketflow_kafka::{client_config, keyed_producer};

/// What the broker said about one event: `Ok` = stored, `Err` = not stored (why).
pub type Outcome = Result<(), String>;

/// The collector's producer.
pub struct EventProducer {
    brokers: String,
    topic: String,
    produce_timeout: Duration,
    producer: RwLock<Arc<FutureProducer>>,
    last_delivery_ok: AtomicBool,
}

impl EventProducer {
    /// A producer to `topic` on `brokers` whose deliveries time out after `produce_timeout`.
    pub fn new(
        brokers: &str,
        topic: &str,
        produce_timeout: Duration,
    ) -> Result<EventProducer, KafkaError> {
        let producer = build(brokers, produce_timeout)?;
        Ok(EventProducer {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            produce_timeout,
            producer: RwLock::new(Arc::new(producer)),
            last_delivery_ok: AtomicBool::new(true),
        })
    }

    /// The topic events go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Whether the last delivery report was a success.
    pub fn last_delivery_ok(&self) -> bool {
        self.last_delivery_ok.load(Ordering::Relaxed)
    }

    fn current(&self) -> Arc<FutureProducer> {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Produces `(key, payload)` records and waits for their acknowledgements. Records that
    /// cannot enter the producer's queue by `enqueue_deadline` fail without being sent.
    pub async fn produce(
        &self,
        records: &[(&str, &[u8])],
        enqueue_deadline: Instant,
    ) -> Vec<Outcome> {
        let producer = self.current();
        let mut pending: Vec<Result<DeliveryFuture, String>> = Vec::with_capacity(records.len());
        for &(key, payload) in records {
            pending.push(
                self.enqueue(&producer, key, payload, enqueue_deadline)
                    .await,
            );
        }
        // librdkafka reports every message within message.timeout.ms of its enqueueing; this
        // guard only protects the request from a report that never comes.
        let guard = tokio::time::Instant::now() + self.produce_timeout + Duration::from_secs(2);
        let mut outcomes = Vec::with_capacity(records.len());
        for p in pending {
            let outcome = match p {
                Err(why) => Err(why),
                Ok(delivery) => match tokio::time::timeout_at(guard, delivery).await {
                    Ok(Ok(Ok(_))) => Ok(()),
                    Ok(Ok(Err((e, _)))) => Err(self.explain(&e)),
                    Ok(Err(_canceled)) => {
                        Err("the producer was closed before the broker answered; \
                                               not stored, retry later"
                            .to_string())
                    }
                    Err(_) => Err(format!(
                        "no acknowledgement from the broker within {} ms; possibly not \
                         stored, retry later",
                        self.produce_timeout.as_millis()
                    )),
                },
            };
            outcomes.push(outcome);
        }
        if let Some(last) = outcomes.last() {
            self.last_delivery_ok.store(last.is_ok(), Ordering::Relaxed);
        }
        if outcomes.iter().any(Result::is_err) {
            self.replace_if_fatal(&producer);
        }
        outcomes
    }

    async fn enqueue(
        &self,
        producer: &FutureProducer,
        key: &str,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<DeliveryFuture, String> {
        let mut record = FutureRecord::to(&self.topic).key(key).payload(payload);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if Instant::now() < deadline =>
                {
                    // The local queue drains as the broker acknowledges: wait a little.
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(self.explain(&e)),
            }
        }
    }

    fn explain(&self, e: &KafkaError) -> String {
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::MessageTimedOut) => format!(
                "the broker did not acknowledge within {} ms; not stored, retry later",
                self.produce_timeout.as_millis()
            ),
            Some(RDKafkaErrorCode::QueueFull) => {
                "the collector's producer queue is full; not stored, retry later".to_string()
            }
            _ => format!("the broker did not store it ({e}); retry later"),
        }
    }

    /// An idempotent producer that hits a fatal error (e.g. the broker lost its sequence
    /// state) refuses every later message: replace it, once, by a fresh one.
    fn replace_if_fatal(&self, failed: &Arc<FutureProducer>) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        let mut slot = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&slot, failed) {
            return; // another request replaced it already
        }
        eprintln!("collector: the producer hit a fatal error ({code:?}: {reason}); replacing it");
        match build(&self.brokers, self.produce_timeout) {
            Ok(fresh) => *slot = Arc::new(fresh),
            Err(e) => eprintln!("collector: could not create a new producer: {e}"),
        }
    }

    /// Whether `topic` exists on the broker: `Ok(Some(partitions))`, `Ok(None)` if the broker
    /// did not answer within `timeout`, `Err` if the broker says the topic does not exist.
    /// Blocking.
    pub fn check_topic(&self, timeout: Duration) -> Result<Option<usize>, String> {
        let producer = self.current();
        match producer.client().fetch_metadata(Some(&self.topic), timeout) {
            Err(_) => Ok(None),
            Ok(md) => match md.topics().first() {
                Some(t) if t.error().is_none() => Ok(Some(t.partitions().len())),
                Some(t) => Err(format!(
                    "topic {:?} is not available on {}: {:?}",
                    self.topic,
                    self.brokers,
                    t.error().map(RDKafkaErrorCode::from)
                )),
                None => Err(format!(
                    "the broker returned no metadata for {:?}",
                    self.topic
                )),
            },
        }
    }

    /// Waits up to `timeout` for every queued event to be acknowledged (shutdown). Blocking.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.current().flush(Timeout::After(timeout))
    }
}

fn build(brokers: &str, produce_timeout: Duration) -> Result<FutureProducer, KafkaError> {
    // Idempotent: retries after a lost answer never store an event twice or out of order.
    keyed_producer(client_config(brokers))
        // Tell the collector apart from the graph's clients in broker logs.
        .set("client.id", "basketflow-collector")
        // Acknowledged = on every in-sync replica: the HTTP answer promises persistence.
        .set("acks", "all")
        // A down or slow broker becomes a delivery error (503) after this, instead of requests
        // waiting for librdkafka's default of 5 minutes.
        .set(
            "message.timeout.ms",
            produce_timeout.as_millis().to_string(),
        )
        // The answer waits for the acknowledgement: batch for 1 ms, not librdkafka's 5 (under
        // load, batches still fill while earlier ones are in flight).
        .set("linger.ms", "1")
        // 1 KB JSON compresses about 4x: less broker I/O and disk, as the generator does.
        .set("compression.type", "lz4")
        // After a broker restart, reconnect within a second (default backoff grows to 10 s),
        // so the 503s stop soon after the broker is back.
        .set("reconnect.backoff.max.ms", "1000")
        .create()
}
