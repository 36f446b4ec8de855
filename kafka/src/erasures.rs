//! The shoppers already erased, read from the privacy topic.

use std::collections::BTreeSet;
use std::time::Duration;

use basketflow_vocab::ErasureRequest;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::committed_reader_config;

/// Reads `topic`'s `partition` from `low` up to `high` (its end when called), handing each
/// message to `each`.
pub fn read_to_end(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    low: i64,
    high: i64,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<(), KafkaError> {
    if high <= low {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(low))?;
    consumer.assign(&tpl)?;
    loop {
        match consumer.poll(Duration::from_secs(30)) {
            Some(Ok(m)) => {
                each(&m);
                if m.offset() + 1 >= high {
                    return Ok(());
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(()),
            Some(Err(e)) => return Err(e),
            None => {
                return Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::OperationTimedOut,
                ))
            }
        }
    }
}

/// Every shopper `(retailer_id, shopper_id)` with a valid erasure request in `topic`, read from
/// the beginning to the end it has now (committed messages only). The ClickHouse writer uses
/// it at start so that a replay or a rebuild never writes a row of a shopper already erased.
pub fn read_erased(brokers: &str, topic: &str) -> Result<BTreeSet<(String, String)>, KafkaError> {
    let consumer: BaseConsumer =
        committed_reader_config(brokers, "basketflow-erasures").create()?;
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
        read_to_end(&consumer, topic, partition, low, high, |m| {
            if let Ok(r) = ErasureRequest::parse(m.payload().unwrap_or_default()) {
                erased.insert((r.retailer_id, r.shopper_id));
            }
        })?;
    }
    Ok(erased)
}
