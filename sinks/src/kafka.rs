//! Moved: the Kafka plumbing is the `basketflow-kafka` crate now. These re-exports keep the old
//! paths (`basketflow_sinks::kafka::ensure_topic`, ...) compiling while callers move; new code
//! uses `basketflow_kafka` directly.

pub use basketflow_kafka::{client_config, ensure_topic, read_erased, set_topic_configs};
