//! Dead letters: messages the graph refused, as it writes them to `shopper-events-rejected`.
//!
//! The parse stage and the privacy-requests reader (`basketflow_ingest::parse`) make them;
//! the Kafka outputs (`basketflow_sinks::kafka_outputs`) produce them exactly once.

use serde::{Deserialize, Serialize};

/// A refused message, as written to `shopper-events-rejected`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The refused message's topic, when it is not `shopper-events` (privacy requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Partition of the refused message.
    pub partition: i32,
    /// Offset of the refused message.
    pub offset: i64,
    /// The message key, if it was UTF-8.
    pub key: Option<String>,
    /// The rejection code (`malformed_json`, `pii`, ...).
    pub code: String,
    /// Path of the offending field, empty for the message as a whole.
    pub field: String,
    /// What is wrong.
    pub reason: String,
    /// The payload's first bytes (lossy UTF-8); absent for privacy refusals.
    pub payload_excerpt: Option<String>,
}

impl DeadLetter {
    /// The Kafka key of the dead letter: `partition:offset` (`topic:partition:offset` for
    /// another topic's messages), unique per refused message, so a
    /// replay's copy is recognisable (and compacts away on a compacted topic).
    pub fn kafka_key(&self) -> String {
        match &self.topic {
            None => format!("{}:{}", self.partition, self.offset),
            Some(topic) => format!("{topic}:{}:{}", self.partition, self.offset),
        }
    }
}
