//! Sinks: where the graph's outputs leave it, for ClickHouse and for Kafka.
//!
//! This crate owns every write basketflow makes outside itself: ClickHouse ([`clickhouse`]: the
//! sink operator and its writer thread, the versions of the read models, the store with its
//! schema, erasure and retention, and a reader for everyone who reads the stored data back);
//! and the graph's Kafka outputs (decisions, dead letters), produced exactly once in Kafka
//! transactions ([`kafka_outputs`]); and the graph's checkpoints, in a compacted Kafka topic
//! ([`checkpoints`]). Both output writers expose a durable frontier ([`Committed`] is
//! what each restarts from). The Kafka plumbing they build on is the `basketflow-kafka` crate.

#![forbid(missing_docs)]

pub mod checkpoints;
pub mod clickhouse;
pub mod dead_letters;
mod durable;
pub mod kafka_outputs;

pub use durable::Committed;
