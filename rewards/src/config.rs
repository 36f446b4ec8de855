//! `[rewards]` in `basketflow.toml`: where reward contacts go and who may read them.
//!
//! The ClickHouse server is `[clickhouse] url`'s; the database and the user are the rewards'
//! own, and must differ from `[clickhouse] database` and `user` (checked by
//! `basketflow config check`): the graph's and the tree builder's user must never be able to
//! read an email address. Retention periods are `[privacy]`'s.

use serde::{Deserialize, Serialize};

/// `[rewards]`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardsConfig {
    /// The reward-contacts topic: compacted (`cleanup.policy = compact,delete`, key = retailer
    /// U+001F shopper U+001F contact), so an erasure's tombstones remove a shopper's contacts
    /// from Kafka too; `retention.ms` is the shortest retention period (the loader sets it).
    pub topic: String,
    /// The ClickHouse database of the contacts, their audit and the loader's positions.
    pub database: String,
    /// The ClickHouse user of the loader, allowed `database` and nothing else
    /// (`basketflow rewards provision` writes it into the server's `users.d/`).
    pub user: String,
    /// Its password (prefer `BASKETFLOW_REWARDS_PASSWORD`; `config check` shows `"***"`).
    /// `basketflow rewards provision` refuses an empty one unless `--insecure-local`.
    pub password: String,
    /// The addresses or CIDR ranges the user may connect from (its `users.d` `<networks>`);
    /// default this host only, `["127.0.0.1", "::1"]`.
    pub networks: Vec<String>,
    /// Where `basketflow rewards run` serves `/metrics` and `/health`; `""` or `"off"`:
    /// nowhere.
    pub metrics_listen: String,
}

impl RewardsConfig {
    /// The loader's metrics address, or `None` when disabled.
    pub fn metrics_listen(&self) -> Option<&str> {
        match self.metrics_listen.trim() {
            "" | "off" => None,
            address => Some(address),
        }
    }
}

impl Default for RewardsConfig {
    fn default() -> Self {
        RewardsConfig {
            topic: "reward-contacts".into(),
            database: "basketflow_rewards".into(),
            user: "basketflow_rewards".into(),
            password: String::new(),
            networks: crate::users::DEFAULT_NETWORKS
                .iter()
                .map(|n| n.to_string())
                .collect(),
            metrics_listen: "127.0.0.1:9469".into(),
        }
    }
}
