//! The Kafka outputs' progress record and its reader.
//!
//! `basketflow_sinks::kafka_outputs` commits, in the same Kafka transaction as the decisions
//! and dead letters of a batch of times, one [`ProgressRecord`] to the progress topic (one
//! partition, compacted, key [`PROGRESS_KEY`]). [`read_progress`] finds the last committed one
//! at start: which times are already out, and where the sources had read then.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::config::committed_reader_config;
use crate::positions::Positions;

/// The key of every progress record (the topic is compacted: only the last one is kept).
pub const PROGRESS_KEY: &str = "progress";

/// The progress record's value, as JSON: `{"through": t, "positions": {topic: {partition: next
/// offset}}}`.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProgressRecord {
    /// Every output at or below this logical time is committed.
    pub through: u64,
    /// How far the sources had read at `through`.
    pub positions: Positions,
    /// The graph's `tick_ms` when this was written: the replay is reclocked by the positions
    /// only with the same tick. Absent in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_ms: Option<u64>,
    /// The graph's `dedup_horizon_ms` when this was written (a replay with another horizon
    /// de-duplicates differently). Absent in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_horizon_ms: Option<u64>,
    /// The graph's `settlement_ms` when this was written (a replay with another horizon
    /// settles orders differently). Absent in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_ms: Option<u64>,
}

/// The last committed progress record of `topic`, as `(through, positions)` (`(0, empty)` when
/// there is none). Reads committed data only, so an open or aborted transaction's record never
/// counts.
pub fn read_progress(brokers: &str, topic: &str) -> Result<(u64, Positions), KafkaError> {
    Ok(read_progress_record(brokers, topic)?
        .map_or((0, Positions::new()), |p| (p.through, p.positions)))
}

/// How long [`read_progress_record`] retries the broker's transient answers.
const TRANSIENT_GRACE: Duration = Duration::from_secs(60);

/// True for the answers a broker gives while a topic is new or its leadership moves (a topic
/// another process has just created, a restarted broker electing leaders): asking again soon
/// succeeds.
fn transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
        )
    )
}

/// The committed progress record of `topic` with the greatest `through` among the last ones
/// (each producer of the outputs writes under its own key), whole; `None` when there is none. Transient
/// broker answers ([`transient`]) are retried for up to a minute, with backoff, before they are
/// returned.
pub fn read_progress_record(
    brokers: &str,
    topic: &str,
) -> Result<Option<ProgressRecord>, KafkaError> {
    let started = std::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        match read_progress_once(brokers, topic) {
            Err(e) if transient(&e) && started.elapsed() < TRANSIENT_GRACE => {
                log::warn!(topic, backoff:? = backoff; "reading the progress topic: {e}; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            answer => return answer,
        }
    }
}

fn read_progress_once(brokers: &str, topic: &str) -> Result<Option<ProgressRecord>, KafkaError> {
    let consumer: BaseConsumer =
        committed_reader_config(brokers, "basketflow-progress").create()?;
    let (low, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(30))?;
    // The last record is near the end (each commit adds one record and one marker); look
    // at the tail first and read everything only if the tail holds no committed record.
    for start in [high.saturating_sub(64).max(low), low] {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(start))?;
        consumer.assign(&tpl)?;
        let mut last: Option<ProgressRecord> = None;
        if high > start {
            loop {
                match consumer.poll(Duration::from_secs(30)) {
                    Some(Ok(m)) => {
                        let value = m.payload().unwrap_or_default();
                        match serde_json::from_slice::<ProgressRecord>(value) {
                            // The greatest `through`: with two producers (two transactions
                            // in flight, one key each), a retried transaction's record can
                            // land after its successor's.
                            Ok(p) if last.as_ref().is_none_or(|l| p.through >= l.through) => {
                                last = Some(p)
                            }
                            Ok(_) => {}
                            Err(e) => {
                                log::error!(topic, offset = m.offset(); "kafka outputs: not a progress record: {e}");
                                return Err(KafkaError::MessageConsumption(
                                    RDKafkaErrorCode::InvalidRecord,
                                ));
                            }
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
        if last.is_some() {
            return Ok(last);
        }
        if start == low {
            break;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_progress_record_is_the_json_the_outputs_have_always_written() {
        let mut record = ProgressRecord {
            through: 50,
            positions: Positions::from([("t".into(), BTreeMap::from([(0, 7), (3, 1)]))]),
            tick_ms: None,
            dedup_horizon_ms: None,
            settlement_ms: None,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(json, r#"{"through":50,"positions":{"t":{"0":7,"3":1}}}"#);
        assert_eq!(
            serde_json::from_str::<ProgressRecord>(&json).unwrap(),
            record
        );
        // Since the tick is recorded: the same, with the tick.
        record.tick_ms = Some(5);
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"through":50,"positions":{"t":{"0":7,"3":1}},"tick_ms":5}"#
        );
        assert_eq!(
            serde_json::from_str::<ProgressRecord>(&json).unwrap(),
            record
        );
    }
}
