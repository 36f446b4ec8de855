//! `basketflow.toml`: the one configuration file of a basketflow process.
//!
//! Every key has a default, so an empty file is a valid configuration for the local stack.
//! Unknown keys are refused (a typo must not silently fall back to a default).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The broker and the topics.
    pub kafka: KafkaConfig,
    /// The analytics database.
    pub clickhouse: ClickHouseConfig,
    /// How the graph batches time.
    pub graph: GraphConfig,
    /// The HTTP collector (`basketflow collect`).
    pub collector: basketflow_collector::CollectorConfig,
}

/// `[kafka]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Shopper events in.
    pub events_topic: String,
    /// Experience trees in (compacted, key = shopper).
    pub trees_topic: String,
    /// Decisions out.
    pub decisions_topic: String,
    /// Refused messages out.
    pub rejected_topic: String,
    /// Erasure requests in.
    pub privacy_topic: String,
    /// Progress of the Kafka outputs (one partition, compacted); default
    /// `<decisions_topic>-progress`.
    pub progress_topic: Option<String>,
    /// Transactional id of the Kafka outputs: fixed across restarts, unique per cluster;
    /// default `basketflow:<decisions_topic>`.
    pub transactional_id: Option<String>,
}

impl KafkaConfig {
    /// The progress topic of the Kafka outputs.
    pub fn progress_topic(&self) -> String {
        self.progress_topic
            .clone()
            .unwrap_or_else(|| format!("{}-progress", self.decisions_topic))
    }

    /// The transactional id of the Kafka outputs.
    pub fn transactional_id(&self) -> String {
        self.transactional_id
            .clone()
            .unwrap_or_else(|| format!("basketflow:{}", self.decisions_topic))
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            events_topic: "shopper-events".into(),
            trees_topic: "experience-trees".into(),
            decisions_topic: "experience-decisions".into(),
            rejected_topic: "shopper-events-rejected".into(),
            privacy_topic: "privacy-requests".into(),
            progress_topic: None,
            transactional_id: None,
        }
    }
}

/// `[clickhouse]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP interface URL.
    pub url: String,
    /// Database holding basketflow's tables and views.
    pub database: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "basketflow".into(),
            user: "default".into(),
            password: String::new(),
        }
    }
}

/// `[graph]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphConfig {
    /// Logical times are broker milliseconds rounded up to this tick.
    pub tick_ms: u64,
    /// An idle partition's bound trails the wall clock by this much.
    pub idle_margin_ms: u64,
    /// Completed times are written to ClickHouse at most this often (and the Kafka outputs
    /// commit progress at least this often when there is no output).
    pub flush_interval_ms: u64,
    /// How far (logical ms) the sources may run ahead of the slowest durable output before
    /// they stop taking messages: bounds memory while ClickHouse or the broker is down.
    pub max_sink_lag_ms: u64,
    /// A process exits if its cluster has not formed (all peers connected) within this.
    pub startup_timeout_ms: u64,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            tick_ms: 5,
            idle_margin_ms: 20,
            flush_interval_ms: 250,
            max_sink_lag_ms: 10_000,
            startup_timeout_ms: 60_000,
        }
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration {}", path.display()))?;
        let config: Config = toml::from_str(&text)
            .with_context(|| format!("in the configuration {}", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<()> {
        if self.kafka.brokers.trim().is_empty() {
            bail!("kafka.brokers must name at least one broker");
        }
        if self.graph.tick_ms == 0 {
            bail!("graph.tick_ms must be at least 1");
        }
        if self.graph.flush_interval_ms == 0 {
            bail!("graph.flush_interval_ms must be at least 1");
        }
        Ok(())
    }
}
