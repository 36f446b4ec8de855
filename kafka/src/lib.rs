//! Kafka plumbing, once, for every basketflow crate (after Materialize's `kafka-util`).
//!
//! The graph's source (`basketflow_ingest`), its writers (`basketflow_sinks`), the HTTP
//! collector, the tree builder, the privacy commands and the traffic generator all talk to the
//! same brokers; what they share lives here rather than in whichever crate needed it first:
//!
//! | module | what |
//! | --- | --- |
//! | [`config`] | client settings: [`client_config`] and the consumer and producer set-ups several clients share, each non-default librdkafka setting with the reason for it |
//! | [`admin`] | topics: [`ensure_topic`], [`set_topic_configs`], [`delete_topics`], and [`check_topics_exist`], which turns a missing topic into a [`TopicError`] an operator can act on |
//! | [`positions`] | [`Positions`]: how far the sources had read at a committed time, the bindings the sinks record and a restart reclocks by |
//! | [`progress`] | the Kafka outputs' progress record ([`ProgressRecord`]) and [`read_progress`], its reader |
//! | [`erasures`] | [`read_erased`]: the shoppers already erased, read from the privacy topic at start |
//!
//! Nothing here knows about timely: the operators that read and write Kafka stay with the crates
//! that own them (`basketflow_ingest::kafka_source`, `basketflow_sinks::kafka_outputs`).

#![forbid(missing_docs)]

pub mod admin;
pub mod config;
pub mod erasures;
pub mod positions;
pub mod progress;

pub use admin::{
    check_topics_exist, delete_topics, ensure_topic, set_topic_configs, topic_partitions,
    TopicError,
};
pub use config::{client_config, keyed_producer, source_consumer_config, unnamed_client_config};
pub use erasures::{read_erased, read_to_end};
pub use positions::{fold_positions, PositionRecord, Positions};
pub use progress::{read_progress, read_progress_record, ProgressRecord};
