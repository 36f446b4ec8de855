//! Reward contacts: the email addresses a retailer needs to pay the winner of a gamified
//! promotion, kept apart from everything that personalizes.
//!
//! The event contract refuses identifying data everywhere: the graph, the tree builder and
//! every table they write hold pseudonymous shopper ids only. Paying a prize needs an address,
//! so contacts take a path of their own, which nothing of personalization reads:
//!
//! ```text
//!  retailer's backend ──POST /v1/reward-contacts──► collector ──► reward-contacts (topic, compacted)
//!  (reward key, not a tracker's)                                        │
//!                                                                       ▼
//!                                       basketflow rewards run (the loader, its own ClickHouse user)
//!                                                                       │
//!  privacy-requests ──────────────────────────────────────────────────►│ erasure: DELETE, tombstone, audit
//!                                                                       ▼
//!                                              ClickHouse database basketflow_rewards (allowed to
//!                                              the rewards user alone)
//! ```
//!
//! - The collector's route takes **reward keys** (`[[collector.reward_keys]]`), never the
//!   trackers' event keys, and the events route never takes a reward key.
//! - The topic is the graph's input nowhere; its key is `retailer_id` U+001F `shopper_id`
//!   U+001F `contact_id` (one per contact, as stored), so an erasure's tombstones (one per
//!   contact of the shopper) and compaction remove a shopper's contacts from Kafka too.
//! - The database has its own user ([`users`]), allowed that database only; the graph and the
//!   tree builder have no reason to be granted it (and, in production, must not be).
//! - Erasure requests and retention periods reach the store as they reach the graph's tables,
//!   with an audit row per request ([`loader`]).
//!
//! | module | responsibility |
//! | --- | --- |
//! | [`contact`] | the contact: fields, checks, canonical JSON, message key |
//! | [`config`] | `[rewards]` in `basketflow.toml` |
//! | [`store`] | the ClickHouse database: schema, inserts, erasure, retention, audit, positions |
//! | [`loader`] | `basketflow rewards run`: topics -> store, erasures, retention |
//! | [`metrics`] | the loader's `/metrics` (Prometheus) and `/health` |
//! | [`users`] | the loader's ClickHouse user in the server's `users.d/` |

#![forbid(missing_docs)]

pub mod config;
pub mod contact;
pub mod loader;
pub mod metrics;
pub mod store;
pub mod users;

pub use config::RewardsConfig;
pub use contact::{contact_key, ContactError, RewardContact};
pub use loader::{LoaderCounts, LoaderSettings};
pub use store::RewardsStore;

/// Why the rewards loader or its provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum RewardsError {
    /// A configuration value that cannot work, or a server that refuses the rewards user.
    #[error("rewards: {0}")]
    Config(String),
    /// ClickHouse refused or failed.
    #[error("rewards: ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// Kafka refused or failed.
    #[error("rewards: Kafka: {0}")]
    Kafka(#[source] rdkafka::error::KafkaError),
    /// A mutation did not finish within [`store::MUTATION_TIMEOUT`].
    #[error("rewards: a DELETE mutation on {0} did not finish in time")]
    MutationTimeout(String),
    /// A file could not be written.
    #[error("rewards: {0}: {1}")]
    Io(String, #[source] std::io::Error),
}
