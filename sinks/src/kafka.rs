//! Kafka plumbing shared by basketflow's producers, consumers and tests.

use std::collections::BTreeSet;
use std::time::Duration;

use basketflow_vocab::ErasureRequest;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// A client configuration for `brokers` with the settings every basketflow client shares.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        // Name the client in broker logs and metrics.
        .set("client.id", "basketflow");
    c
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

/// Every shopper `(retailer_id, shopper_id)` with a valid erasure request in `topic`, read from
/// the beginning to the end it has now (committed messages only). The ClickHouse writer uses
/// it at start so that a replay or a rebuild never writes a row of a shopper already erased.
pub fn read_erased(brokers: &str, topic: &str) -> Result<BTreeSet<(String, String)>, KafkaError> {
    let consumer: BaseConsumer = client_config(brokers)
        // Our own offsets; no group state.
        .set("group.id", "basketflow-erasures")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // Stop at the end.
        .set("enable.partition.eof", "true")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut erased = BTreeSet::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(low))?;
        consumer.assign(&tpl)?;
        loop {
            match consumer.poll(Duration::from_secs(30)) {
                Some(Ok(m)) => {
                    if let Ok(r) = ErasureRequest::parse(m.payload().unwrap_or_default()) {
                        erased.insert((r.retailer_id, r.shopper_id));
                    }
                    if m.offset() + 1 >= high {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(KafkaError::MessageConsumption(
                        RDKafkaErrorCode::OperationTimedOut,
                    ))
                }
            }
        }
    }
    Ok(erased)
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
