//! Sinks: where the graph's outputs leave it, for ClickHouse and for Kafka.
//!
//! This crate owns every write basketflow makes outside itself: the conversion of the graph's
//! read-model updates into stored versions ([`versions`]) and the ClickHouse writer of those
//! versions with its analyst views ([`clickhouse_sink`]), and the graph's Kafka outputs
//! (decisions, dead letters), produced exactly once in Kafka transactions ([`kafka_outputs`]).
//! The Kafka plumbing they build on is the `basketflow-kafka` crate ([`kafka`] re-exports its
//! old paths).

#![forbid(missing_docs)]

pub mod clickhouse_sink;
pub mod dead_letters;
pub mod decisions;
mod durable;
pub mod kafka;
pub mod kafka_outputs;
pub mod read_model_sink;
pub mod versions;
