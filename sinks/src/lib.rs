//! Sinks: where the graph's outputs leave it, for ClickHouse and for Kafka.
//!
//! This crate owns every write basketflow makes outside itself. Today it holds the Kafka
//! plumbing the other writers build on ([`kafka`]); the ClickHouse read-model writer and the
//! transactional decisions producer of the graph slot in beside it.

#![forbid(missing_docs)]

pub mod kafka;
