//! Kafka for tests: topics created for one test and deleted when it ends, reading a topic to
//! its end, and producing with each message's landing place.
//!
//! The admin calls run on a runtime of their own (on a thread of their own), so they work the
//! same from a plain test, an async test and a `Drop`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, ToBytes};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::names::unique;

/// Runs the future `work` makes on a current-thread runtime on a thread of its own (a caller
/// inside a runtime cannot block on another one).
fn on_own_runtime<T, F>(work: impl FnOnce() -> F + Send) -> T
where
    T: Send,
    F: std::future::Future<Output = T>,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the admin client")
                .block_on(work())
        })
        .join()
        .expect("the admin thread")
    })
}

fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
}

/// Creates `topic` (one replica) unless it exists.
fn create_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), KafkaError> {
    on_own_runtime(|| async {
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            new = new.set(k, v);
        }
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin(brokers)?.create_topics([&new], &opts).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code)),
            }
        }
        Ok(())
    })
}

/// Deletes `topics`; one that does not exist is no error.
fn delete_topics(brokers: &str, topics: &[String]) -> Result<(), KafkaError> {
    on_own_runtime(|| async {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        // Bounded: a test's broker may be gone (a private stack already stopped).
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(10)));
        for result in admin(brokers)?.delete_topics(&names, &opts).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code)),
            }
        }
        Ok(())
    })
}

/// Topics of one test on one broker, deleted when the guard is dropped (also when the test
/// fails), so that tests do not leave their topics on the broker.
#[derive(Debug)]
pub struct Topics {
    brokers: String,
    names: Mutex<Vec<String>>,
}

impl Topics {
    /// No topics yet, on `brokers`.
    pub fn new(brokers: &str) -> Topics {
        Topics {
            brokers: brokers.to_string(),
            names: Mutex::new(Vec::new()),
        }
    }

    /// The bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Creates `name` with `partitions` partitions and the topic `configs` (unless it exists),
    /// waits until the broker's metadata shows it, and deletes it when the guard is dropped.
    pub fn create(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        self.delete_later(name);
        create_topic(&self.brokers, name, partitions, configs).unwrap_or_else(|e| {
            panic!(
                "creating {name} on {} failed ({e}); is the stack up? run scripts/stack up",
                self.brokers
            )
        });
        // Creation returns before every broker's metadata has the topic: wait until it does.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .expect("a metadata client");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let md = consumer.fetch_metadata(Some(name), Duration::from_secs(5));
            if md.is_ok_and(|md| {
                md.topics()[0].error().is_none() && !md.topics()[0].partitions().is_empty()
            }) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never appeared in the metadata"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Grows `name` to `total` partitions (Kafka only adds partitions).
    pub fn add_partitions(&self, name: &str, total: usize) {
        on_own_runtime(|| async {
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            for result in admin(&self.brokers)?
                .create_partitions([&NewPartitions::new(name, total)], &opts)
                .await?
            {
                if let Err((_, code)) = result {
                    return Err(KafkaError::AdminOp(code));
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("growing {name} to {total} partitions: {e}"));
    }

    /// Creates a topic named `prefix-<unique suffix>` with default configs; its name.
    pub fn fresh(&self, prefix: &str, partitions: i32) -> String {
        let name = unique(prefix);
        self.create(&name, partitions, &[]);
        name
    }

    /// Deletes `name` too when the guard is dropped (a topic the code under test creates).
    pub fn delete_later(&self, name: impl Into<String>) {
        let name = name.into();
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if !names.contains(&name) {
            names.push(name);
        }
    }

    /// Deletes nothing when dropped (for a private stack that is removed whole).
    pub fn forget(&self) {
        self.names.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Drop for Topics {
    fn drop(&mut self) {
        let names = std::mem::take(self.names.get_mut().unwrap_or_else(|p| p.into_inner()));
        if names.is_empty() {
            return;
        }
        // Never panics: a drop may run while a failed test unwinds.
        if let Err(e) = delete_topics(&self.brokers, &names) {
            eprintln!("deleting the test topics {names:?}: {e}");
        }
    }
}

/// Which messages a reader sees: read_committed stops before aborted data and transaction
/// markers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// `read_committed` (librdkafka's default).
    Committed,
    /// `read_uncommitted`.
    Uncommitted,
}

impl Isolation {
    fn setting(self) -> &'static str {
        match self {
            Isolation::Committed => "read_committed",
            Isolation::Uncommitted => "read_uncommitted",
        }
    }
}

/// One message read from a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value, if any.
    pub payload: Option<Vec<u8>>,
    /// Its headers, in order: (name, value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// The key as UTF-8 (empty if there is none).
    pub fn key_text(&self) -> String {
        String::from_utf8(self.key.clone().unwrap_or_default()).expect("a UTF-8 key")
    }

    /// The value as UTF-8 (empty if there is none).
    pub fn text(&self) -> String {
        String::from_utf8(self.payload.clone().unwrap_or_default()).expect("a UTF-8 value")
    }
}

/// `(low, high)` watermarks of `partition` of `topic`.
pub fn watermarks(brokers: &str, topic: &str, partition: i32) -> (i64, i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("a consumer");
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("watermarks of {topic}[{partition}]: {e}"))
}

/// Every message of `topic`, every partition from its beginning up to its end as it is now, as
/// a reader with `isolation` sees them: in partition, then offset order.
pub fn read_to_end(brokers: &str, topic: &str, isolation: Isolation) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Our own offsets (assigned, never committed).
        .set("group.id", unique("testkit-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation.setting())
        // The end-of-partition event says we have read all there is, for this isolation level.
        .set("enable.partition.eof", "true")
        .create()
        .expect("a consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    let about = &metadata.topics()[0];
    if let Some(e) = about.error() {
        panic!("reading {topic}: {e:?}");
    }
    let mut partitions: Vec<i32> = about.partitions().iter().map(|p| p.id()).collect();
    partitions.sort_unstable();
    let mut out = Vec::new();
    for p in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("watermarks of {topic}[{p}]: {e}"));
        if high == 0 {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("a partition to read");
        consumer.assign(&tpl).expect("assigning the partition");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "timed out reading {topic}[{p}]");
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => out.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    headers: m.headers().map_or_else(Vec::new, |hs| {
                        hs.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    }),
                }),
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
    }
    out
}

/// Every message of `topic` as (key, value) in UTF-8 (empty if absent), sorted, committed
/// data from the beginning of each partition up to its end as it is now.
pub fn read_text_pairs(brokers: &str, topic: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = read_to_end(brokers, topic, Isolation::Committed)
        .iter()
        .map(|r| (r.key_text(), r.text()))
        .collect();
    out.sort();
    out
}

/// Where a produced message landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Landed {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The broker's timestamp (append time on a LogAppendTime topic), in ms; 0 if none.
    pub broker_ms: i64,
}

/// Where each message landed, by index, once its delivery was reported (`None` before, or if
/// it failed).
pub type Landings = Arc<Mutex<Vec<Option<Landed>>>>;

/// A producer context that records where each message landed: send with
/// `BaseRecord::with_opaque_to(topic, Box::new(index))`; an index past the end is not recorded.
pub struct Landing(pub Landings);

impl Landing {
    /// Room for `n` messages.
    pub fn new(n: usize) -> Landing {
        Landing(Arc::new(Mutex::new(vec![None; n])))
    }
}

impl ClientContext for Landing {}

impl ProducerContext for Landing {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        if let Ok(m) = result {
            let landed = Landed {
                partition: m.partition(),
                offset: m.offset(),
                broker_ms: m.timestamp().to_millis().unwrap_or(0),
            };
            if let Some(slot) = self.0.lock().unwrap().get_mut(*index) {
                *slot = Some(landed);
            }
        }
    }
}

/// Sends `record`, waiting while the producer's queue is full.
pub fn send_retrying<K, P, C>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, K, P, C::DeliveryOpaque>,
) where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
    C: ProducerContext + 'static,
{
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// What [`produce`] did: each message's send instant and where it landed.
#[derive(Clone, Debug)]
pub struct Produced {
    /// When each message was sent; paced, when it was due (open loop: timed from then).
    pub sent: Vec<Instant>,
    /// Where each message landed.
    pub landed: Vec<Option<Landed>>,
}

/// A producer configuration for tests on `brokers`: idempotent, Java's partitioner (a key goes
/// to the partition Kafka's own clients choose), lingering 5 ms.
pub fn test_producer(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5");
    config
}

/// Produces `(key, value)` `messages` to `topic` with a producer of `config`, at `per_second`
/// messages a second if given (open loop: message `i` is due at `i / per_second` whatever the
/// broker's state), and waits for every delivery (up to 300 s, long enough to ride out a broker
/// restart).
pub fn produce<'a>(
    config: &ClientConfig,
    topic: &str,
    messages: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
    per_second: Option<u32>,
) -> Produced {
    let landing = Landing::new(messages.len());
    let landings = landing.0.clone();
    let producer: ThreadedProducer<Landing> = config
        .create_with_context(landing)
        .expect("creating a producer; is the stack up? run scripts/stack up");
    let start = Instant::now();
    let mut sent = Vec::with_capacity(messages.len());
    for (i, (key, payload)) in messages.enumerate() {
        if let Some(rate) = per_second {
            let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            sent.push(due);
        } else {
            sent.push(Instant::now());
        }
        send_retrying(
            &producer,
            BaseRecord::with_opaque_to(topic, Box::new(i))
                .key(key)
                .payload(payload),
        );
    }
    producer
        .flush(Duration::from_secs(300))
        .expect("every message is delivered");
    let landed = landings.lock().unwrap().clone();
    Produced { sent, landed }
}
