//! The shoppers already erased, read from the privacy topic.

use std::collections::BTreeSet;
use std::time::Duration;

use basketflow_vocab::ErasureRequest;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::committed_reader_config;

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
