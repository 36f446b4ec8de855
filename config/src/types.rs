//! The configuration's types, one per section of `basketflow.toml`, and their defaults.
//!
//! Every key has a default, so an empty section is a valid one. The serde derives are the
//! single statement of the keys: the loader reads each section's keys from them, so a new field
//! is known to the unknown-key and environment checks as soon as it exists.

use std::collections::BTreeMap;
use std::path::PathBuf;

use basketflow_collector::{AuthMode, CollectorConfig, RetailerKey};
pub use basketflow_rewards::RewardsConfig;
use basketflow_vocab::privacy::{Retention, DEFAULT_RETENTION_DAYS, MS_PER_DAY};
use basketflow_vocab::Delivery;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The broker and the topics.
    pub kafka: KafkaConfig,
    /// The analytics database.
    pub clickhouse: ClickHouseConfig,
    /// How the graph batches time.
    pub graph: GraphConfig,
    /// The shape of the timely cluster (defaults of `run`'s `-w -n -p -h`).
    pub cluster: ClusterConfig,
    /// The metrics and health endpoint.
    pub metrics: MetricsConfig,
    /// `basketflow trees build`.
    pub trees: TreesConfig,
    /// Structured logs.
    pub log: LogConfig,
    /// The HTTP collector (`basketflow collect`).
    #[serde(serialize_with = "serialize_collector")]
    pub collector: CollectorConfig,
    /// Retention periods of per-shopper data (GDPR).
    pub privacy: PrivacyConfig,
    /// Reward contacts (emails to pay a prize): their topic, database and user, apart.
    pub rewards: RewardsConfig,
}

/// `[kafka]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Shopper events in.
    pub events_topic: String,
    /// Experience trees in (compacted, key = retailer U+001F shopper).
    pub trees_topic: String,
    /// Decisions out.
    pub decisions_topic: String,
    /// Refused messages out.
    pub rejected_topic: String,
    /// Erasure requests in.
    pub privacy_topic: String,
    /// Progress of the Kafka outputs (one partition, compacted); default
    /// `<decisions_topic>-progress`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_topic: Option<String>,
    /// Transactional id of the Kafka outputs: fixed across restarts, unique per cluster;
    /// default `basketflow:<decisions_topic>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
    /// Compacted topic of the graph's checkpoints (one partition, created at start, with its
    /// index `<checkpoints_topic>-manifests`); default `<decisions_topic>-checkpoints`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoints_topic: Option<String>,
    /// How decisions and dead letters are delivered: `exactly_once` (default, Kafka
    /// transactions; storefronts read with `read_committed`) or `at_least_once` (sent as soon
    /// as made; after a crash some are sent again with the same `decision_id`).
    pub delivery: Delivery,
    /// Exactly once: Kafka transactions in flight at once, 1 or 2. With 2, a transaction's
    /// records are produced while the one before it commits (its commit waits for that one's).
    /// The outputs take one transactional id more than this in turn (`transactional_id`,
    /// `transactional_id~2`, `transactional_id~3`; all three fenced at every start), so that
    /// no id begins a transaction right after its own commit (the broker would refuse it
    /// until the commit's markers are written, and librdkafka retries after 20 ms).
    pub transactions_in_flight: usize,
    /// The graph's source consumers' `fetch.min.bytes`: the broker answers a fetch once this
    /// many bytes are there, or after 10 ms. 1 (default) answers at once, for the lowest
    /// latency; 65,536 takes 15-32% off a live graph's CPU (fewer, larger fetches) and adds up
    /// to 10 ms to an event on a quiet partition.
    pub fetch_min_bytes: u32,
}

impl KafkaConfig {
    /// The progress topic of the Kafka outputs.
    pub fn progress_topic(&self) -> String {
        self.progress_topic
            .clone()
            .unwrap_or_else(|| format!("{}-progress", self.decisions_topic))
    }

    /// The checkpoints topic.
    pub fn checkpoints_topic(&self) -> String {
        self.checkpoints_topic
            .clone()
            .unwrap_or_else(|| format!("{}-checkpoints", self.decisions_topic))
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
            checkpoints_topic: None,
            delivery: Delivery::ExactlyOnce,
            transactions_in_flight: 1,
            fetch_min_bytes: 1,
        }
    }
}

/// `[clickhouse]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP interface URL.
    pub url: String,
    /// Database holding basketflow's tables and views.
    pub database: String,
    /// User.
    pub user: String,
    /// Password (shown as `"***"` by `config check`).
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
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphConfig {
    /// Logical times are broker milliseconds rounded up to this tick.
    pub tick_ms: u64,
    /// An idle partition's bound trails the wall clock by this much. Every decision waits
    /// this long plus 1 ms after its time (its append time rounded up to the tick) for that
    /// time to complete. A message fetched later
    /// than this after its append is clamped (given the bound as its time, counted),
    /// which the restart's reclocking makes harmless.
    pub idle_margin_ms: u64,
    /// Completed times are written to ClickHouse at most this often (and the Kafka outputs
    /// commit progress at least this often, but at most every 250 ms, when there is no
    /// output: a transaction with only progress would delay the next decision).
    pub flush_interval_ms: u64,
    /// How far (logical ms) the sources may run ahead of the slowest durable output before
    /// they stop taking messages: bounds memory while ClickHouse or the broker is down.
    pub max_sink_lag_ms: u64,
    /// How many messages each source may have in flight on each worker (read, not yet
    /// durable in every output) before it stops taking messages: bounds the memory of a
    /// catch-up, whose backlog packs far more messages into each ms of broker time than live
    /// traffic does.
    pub max_in_flight_messages: usize,
    /// How far (ms of broker time) the events source may read one partition ahead of its
    /// slowest partition (default 1,000; 0: no limit). What is read above a source's slowest partition
    /// waits in the graph, uncounted by `max_in_flight_messages`: without this, a catch-up in
    /// which one partition is fetched faster than the others holds more and more of it.
    pub max_partition_skew_ms: u64,
    /// A process exits if its cluster has not formed (all peers connected) within this, counted
    /// once it has loaded its checkpoint (plus as long again: the peers load theirs).
    pub startup_timeout_ms: u64,
    /// The de-duplication horizon (logical ms, default 7 days): a copy of an event read within
    /// it after the counted copy is a duplicate; a copy read later counts as a new event.
    /// At or above the events' retention: exact de-duplication forever (its state grows with
    /// every id).
    pub dedup_horizon_ms: u64,
    /// The settlement horizon (logical ms, default 30 days): an order's figures stand this
    /// long after its first payment was read (or its first cancellation, when no payment came
    /// by then); a payment or cancellation read later is a late input, counted and listed in
    /// `late_events`, and changes nothing. Longer than any order can take to be cancelled
    /// (say 100 years): rule 2 exactly, forever, at the cost of keeping every order's facts.
    /// At or above the retention period, a late input can only concern an order whose
    /// shopper data has already left.
    pub settlement_ms: u64,
    /// Checkpoints of the graph's state are taken at the multiples of this many logical ms
    /// (default 60 s), in the compacted topic `kafka.checkpoints_topic`; a restart loads the
    /// latest complete one and replays the log from its positions only. 0: no checkpoints (a
    /// restart replays the whole log).
    pub checkpoint_interval_ms: u64,
    /// Checkpoints are incremental (every operator but the campaign budgets and the source
    /// positions): a part holds what changed since the operator's previous one, and at most
    /// this many such parts (default 10) follow a part of the whole state (sooner when the
    /// changes outweigh the state, or after an erasure). A restore reads at most about twice
    /// the state. 0: every part whole.
    pub checkpoint_full_every: u32,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            tick_ms: 5,
            idle_margin_ms: 5,
            flush_interval_ms: 250,
            max_sink_lag_ms: 10_000,
            max_in_flight_messages: 65_536,
            max_partition_skew_ms: 1_000,
            startup_timeout_ms: 60_000,
            dedup_horizon_ms: 7 * 24 * 3_600_000,
            settlement_ms: 30 * 24 * 3_600_000,
            checkpoint_interval_ms: 60_000,
            checkpoint_full_every: 10,
        }
    }
}

/// `[cluster]`: the defaults of `basketflow run`'s `-w`, `-n`, `-p` and `-h` (a flag given on
/// the command line wins).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Worker threads in this process (`-w`).
    pub workers: usize,
    /// Processes in the cluster (`-n`).
    pub processes: usize,
    /// Index of this process, 0-based (`-p`).
    pub process: usize,
    /// Host file: one `host:port` per process, in process order (`-h`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostfile: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
        }
    }
}

/// `[metrics]`: the Prometheus metrics and health endpoint of `run` and `collect`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` to serve on; `""` or `"off"` disables the endpoint.
    pub listen: String,
    /// The health endpoint reports "caught up" while the graph's frontier is within this many
    /// milliseconds of the wall clock.
    pub caught_up_lag_ms: u64,
    /// Names each arrangement in `basketflow_arrangement_records_by_name` and in the `stopped`
    /// log line (its peak records). Off by default: it turns on timely's operator log, whose
    /// scheduling events cost a little on every step.
    pub arrangement_names: bool,
}

impl MetricsConfig {
    /// The address to serve on, or `None` when the endpoint is disabled.
    pub fn listen(&self) -> Option<&str> {
        match self.listen.trim() {
            "" | "off" => None,
            address => Some(address),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9464".into(),
            caught_up_lag_ms: 5_000,
            arrangement_names: false,
        }
    }
}

/// `[trees]`: `basketflow trees build`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TreesConfig {
    /// The campaign file (default of `trees build --campaigns`).
    pub campaigns: PathBuf,
}

impl Default for TreesConfig {
    fn default() -> Self {
        TreesConfig {
            campaigns: "examples/campaigns.toml".into(),
        }
    }
}

/// `[log]`: the structured logs on stderr.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// Least severe level written: `error`, `warn`, `info`, `debug`, `trace` or `off`.
    pub level: String,
}

impl LogConfig {
    /// The line format of the logger.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// The level filter, or `None` if `level` names no level.
    pub fn level(&self) -> Option<log::LevelFilter> {
        self.level.parse().ok()
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Logfmt,
            level: "info".into(),
        }
    }
}

/// `log.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `key=value` pairs, one line per record.
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// `[privacy]`: how long per-shopper data is kept. Erasure requests need no setting (they
/// arrive on `kafka.privacy_topic`; the graph records each one in the `privacy_audit` table).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Days per-shopper data is kept, for every retailer without its own period.
    pub retention_days: u64,
    /// The same in milliseconds, instead of `retention_days` (tests with periods of seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    // Last: a table must follow the plain keys.
    /// Retailers with their own period: retailer id -> days.
    pub retailers: BTreeMap<String, u64>,
}

impl PrivacyConfig {
    /// The retention periods, as the graph applies them.
    pub fn retention(&self) -> Retention {
        Retention {
            default_ms: self
                .retention_ms
                .unwrap_or_else(|| self.retention_days.saturating_mul(MS_PER_DAY)),
            per_retailer_ms: self
                .retailers
                .iter()
                .map(|(retailer, days)| (retailer.clone(), days.saturating_mul(MS_PER_DAY)))
                .collect(),
        }
    }
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            retention_days: DEFAULT_RETENTION_DAYS,
            retention_ms: None,
            retailers: BTreeMap::new(),
        }
    }
}

/// `[collector]` as TOML. `CollectorConfig` (collector crate) only deserializes; this writes
/// the same keys. The destructuring is exhaustive, so a new collector key does not compile
/// until it is written here too; `collector_serializes_as_it_deserializes` checks the names.
fn serialize_collector<S: Serializer>(c: &CollectorConfig, s: S) -> Result<S::Ok, S::Error> {
    let CollectorConfig {
        listen,
        topic,
        auth,
        retailers,
        reward_keys,
        cors_origins,
        max_body_bytes,
        max_batch_events,
        max_in_flight_bytes,
        queue_timeout_ms,
        produce_timeout_ms,
        read_timeout_ms,
        retry_after_s,
        rate_limit_events_per_s,
        rate_limit_burst,
        decisions_topic,
        stream_secrets,
        stream_token_max_ttl_s,
    } = c;
    let auth = match auth {
        AuthMode::None => "none",
        AuthMode::Keys => "keys",
    };
    let table = |keys: &[RetailerKey]| -> Vec<BTreeMap<&str, String>> {
        keys.iter()
            .map(|RetailerKey { id, key_sha256 }| {
                BTreeMap::from([("id", id.clone()), ("key_sha256", key_sha256.clone())])
            })
            .collect()
    };
    let retailers = table(retailers);
    let reward_keys = table(reward_keys);
    let mut st = s.serialize_struct("CollectorConfig", 18)?;
    st.serialize_field("listen", listen)?;
    match topic {
        Some(topic) => st.serialize_field("topic", topic)?,
        None => st.skip_field("topic")?,
    }
    st.serialize_field("auth", auth)?;
    st.serialize_field("cors_origins", cors_origins)?;
    st.serialize_field("max_body_bytes", max_body_bytes)?;
    st.serialize_field("max_batch_events", max_batch_events)?;
    st.serialize_field("max_in_flight_bytes", max_in_flight_bytes)?;
    st.serialize_field("queue_timeout_ms", queue_timeout_ms)?;
    st.serialize_field("produce_timeout_ms", produce_timeout_ms)?;
    st.serialize_field("read_timeout_ms", read_timeout_ms)?;
    st.serialize_field("retry_after_s", retry_after_s)?;
    st.serialize_field("rate_limit_events_per_s", rate_limit_events_per_s)?;
    st.serialize_field("rate_limit_burst", rate_limit_burst)?;
    match decisions_topic {
        Some(topic) => st.serialize_field("decisions_topic", topic)?,
        None => st.skip_field("decisions_topic")?,
    }
    st.serialize_field("stream_token_max_ttl_s", stream_token_max_ttl_s)?;
    // Last: an array of tables must follow the plain keys.
    st.serialize_field("retailers", &retailers)?;
    st.serialize_field("reward_keys", &reward_keys)?;
    st.serialize_field("stream_secrets", stream_secrets)?;
    st.end()
}
