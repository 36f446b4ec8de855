//! Topics: create, configure, delete, and check that the topics a client will read exist.
//!
//! [`check_topics_exist`] is what `basketflow run` asks before it forms its cluster: a topic
//! that does not exist is an operator's mistake (a namespace never created, a typo in the
//! configuration), and deserves a [`TopicError`] that names the topic, not a worker's panic
//! deep inside the graph's source.

use std::time::{Duration, Instant};

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::client_config;

/// Why a topic cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The brokers answered that the topic does not exist.
    #[error("topic {topic} does not exist on {brokers}")]
    Missing {
        /// The topic.
        topic: String,
        /// The bootstrap servers asked.
        brokers: String,
    },
    /// The brokers did not answer in time, or answered with another error (authorization, a
    /// topic without a leader, a partition's watermarks unknown).
    #[error("topic {topic} is not available on {brokers}: {source}")]
    Unavailable {
        /// The topic.
        topic: String,
        /// The bootstrap servers asked.
        brokers: String,
        /// librdkafka's error (boxed: it is large, and errors travel in `Result`s).
        #[source]
        source: Box<KafkaError>,
    },
}

impl TopicError {
    /// The topic the error is about.
    pub fn topic(&self) -> &str {
        match self {
            TopicError::Missing { topic, .. } | TopicError::Unavailable { topic, .. } => topic,
        }
    }

    /// True when the brokers did not answer in time.
    fn timed_out(&self) -> bool {
        match self {
            TopicError::Unavailable { source, .. } => matches!(
                **source,
                KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut)
            ),
            TopicError::Missing { .. } => false,
        }
    }
}

/// How long a source's metadata request may wait for the brokers.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`check_topics_exist`] waits for the brokers: a broker that is up answers metadata
/// in milliseconds, and an operator who named the wrong brokers should not wait half a minute.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`check_topics_exist`] asks again about a topic the brokers call unknown (or
/// answer about with another error, e.g. no leader yet) before it reports it: a topic created a
/// moment ago (a test, `scripts/stack up`) can be absent from a broker's metadata for a few
/// milliseconds after its creation returned.
const MISSING_GRACE: Duration = Duration::from_secs(2);

/// The partitions of `topic`, sorted, as the brokers of `consumer` (bootstrap servers
/// `brokers`, for the error) see them now.
pub fn topic_partitions(
    consumer: &BaseConsumer,
    brokers: &str,
    topic: &str,
) -> Result<Vec<i32>, TopicError> {
    partitions_within(consumer, brokers, topic, METADATA_TIMEOUT)
}

/// [`topic_partitions`], waiting at most `timeout` for the brokers.
fn partitions_within(
    consumer: &BaseConsumer,
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, TopicError> {
    let metadata_error = |source| TopicError::Unavailable {
        topic: topic.to_string(),
        brokers: brokers.to_string(),
        source: Box::new(source),
    };
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(metadata_error)?;
    let missing = || TopicError::Missing {
        topic: topic.to_string(),
        brokers: brokers.to_string(),
    };
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(missing)?;
    match t.error().map(RDKafkaErrorCode::from) {
        None => {}
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            return Err(missing())
        }
        Some(code) => return Err(metadata_error(KafkaError::MetadataFetch(code))),
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Fails with the first of `topics` that does not exist on `brokers` (or whose metadata the
/// brokers do not give), so that a client can refuse to start with one line naming it. Never
/// creates a topic (a consumer's metadata requests do not ask the brokers to).
pub fn check_topics_exist(brokers: &str, topics: &[&str]) -> Result<(), TopicError> {
    let consumer: BaseConsumer = client_config(brokers)
        // The check reports what went wrong in its error; librdkafka's own lines about
        // refused connections would only repeat it, several times.
        .set_log_level(RDKafkaLogLevel::Emerg)
        .create()
        .map_err(|source| TopicError::Unavailable {
            topic: topics.first().copied().unwrap_or_default().to_string(),
            brokers: brokers.to_string(),
            source: Box::new(source),
        })?;
    for topic in topics {
        let started = Instant::now();
        loop {
            match partitions_within(&consumer, brokers, topic, CHECK_TIMEOUT) {
                Ok(_) => break,
                // The brokers did not answer within the timeout: asking again only doubles it.
                Err(e) if e.timed_out() => return Err(e),
                Err(e) if started.elapsed() >= MISSING_GRACE => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    Ok(())
}

/// Creates `topic` with `partitions` partitions and the given topic configs, unless it exists
/// (then it is left as it is). One replica: basketflow's local stack is a single broker.
pub async fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&new], &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

/// Sets `configs` on an existing `topic` (a topic created elsewhere, e.g. auto-created with the
/// broker's defaults, gets the settings basketflow relies on). Not incremental: configs not
/// named return to the broker's defaults.
pub async fn set_topic_configs(
    brokers: &str,
    topic: &str,
    configs: &[(&str, &str)],
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (k, v) in configs {
        alter = alter.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.alter_configs([&alter], &opts).await? {
        if let Err((_, code)) = result {
            return Err(KafkaError::AdminOp(code));
        }
    }
    Ok(())
}

/// Deletes `topics` from `brokers`; a topic that does not exist counts as deleted (tests and
/// benchmarks clean up after themselves, whether or not a run created every topic).
pub async fn delete_topics(brokers: &str, topics: &[&str]) -> Result<(), KafkaError> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.delete_topics(topics, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}
