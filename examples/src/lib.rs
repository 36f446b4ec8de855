//! Runnable programs around basketflow, and the library behind them.
//!
//! - [`generator`]: deterministic synthetic shopper traffic by the event contract (the
//!   `generate` binary writes it to Kafka or to a JSON-lines file).
//! - [`catalog`]: the synthetic retailer catalogs the generator draws from.

#![forbid(missing_docs)]

pub mod catalog;
pub mod generator;

pub use generator::{Config, Expect, Generator, Injected, Message};
