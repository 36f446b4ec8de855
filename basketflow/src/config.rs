//! `basketflow.toml`: the one configuration file of a basketflow process.
//!
//! Every key has a default, so an empty file (or no file) is a valid configuration for the local
//! stack. [`basketflow.example.toml`](../../basketflow.example.toml) lists every key with its
//! default and what it is for; `basketflow config example` prints it.
//!
//! **Environment.** Every key can be overridden by `BASKETFLOW_<SECTION>_<KEY>`, upper case:
//! `graph.flush_interval_ms` by `BASKETFLOW_GRAPH_FLUSH_INTERVAL_MS`, `clickhouse.password` by
//! `BASKETFLOW_CLICKHOUSE_PASSWORD`. Section names have no `_`, so the first `_` after the prefix
//! ends the section. The value of a key whose default is a string is taken verbatim; any other
//! value is read as a TOML value (`5000`, `true`, `["a", "b"]`, `"2024"`), and taken verbatim
//! when it is not one. A `BASKETFLOW_` variable that names no key is an error (a typo must not be
//! silently ignored), except the few variables the scripts and tests use for other purposes
//! ([`NOT_CONFIGURATION`], and any `BASKETFLOW_TEST*`).
//!
//! **Validation.** Unknown keys, values of the wrong type and values that parse but cannot work
//! are all reported at once, each naming its key (`graph.tick_ms: must be at least 1, got 0`)
//! and, when the value came from the environment, its variable
//! (`BASKETFLOW_GRAPH_TICK_MS (graph.tick_ms): ...`). `basketflow config check` does this
//! without starting anything and prints the effective configuration.
//!
//! The checks are generic: the keys of each section are the field names its `Deserialize`
//! implementation asks for ([`field_names`]), so a new field is known to the unknown-key and
//! environment checks as soon as it exists.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use basketflow_collector::{AuthMode, CollectorConfig, CollectorError, RetailerKey};
use basketflow_vocab::privacy::{Retention, DEFAULT_RETENTION_DAYS, MS_PER_DAY};
use clap::Subcommand;
use serde::de::{self, DeserializeOwned, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use toml::{Table, Value};

/// The file `run`, `collect` and `config check` read when `--config` is not given.
pub const DEFAULT_PATH: &str = "basketflow.toml";

/// The prefix of the variables that override configuration keys.
pub const ENV_PREFIX: &str = "BASKETFLOW_";

/// `BASKETFLOW_*` variables that are not configuration overrides: the scripts and the
/// integration tests use them (`scripts/stack`, `scripts/test`, `scripts/recovery-bench`,
/// `basketflow/tests/faults.rs`, the tests' stack address). Any `BASKETFLOW_TEST*` is also left
/// alone.
pub const NOT_CONFIGURATION: &[&str] = &[
    "BASKETFLOW_BROKERS",
    "BASKETFLOW_STACK_DIR",
    "BASKETFLOW_VENV",
    "BASKETFLOW_FAULT_SEED",
    "BASKETFLOW_OUTAGE_SECS",
];

/// The example configuration: every key, its default, what it does.
pub const EXAMPLE: &str = include_str!("../../basketflow.example.toml");

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
}

/// `[kafka]`
#[derive(Clone, Debug, Deserialize, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_topic: Option<String>,
    /// Transactional id of the Kafka outputs: fixed across restarts, unique per cluster;
    /// default `basketflow:<decisions_topic>`.
    #[serde(skip_serializing_if = "Option::is_none")]
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
    pub fn format(&self) -> crate::logging::Format {
        match self.format {
            LogFormat::Logfmt => crate::logging::Format::Logfmt,
            LogFormat::Json => crate::logging::Format::Json,
        }
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
    } = c;
    let auth = match auth {
        AuthMode::None => "none",
        AuthMode::Keys => "keys",
    };
    let retailers: Vec<BTreeMap<&str, &String>> = retailers
        .iter()
        .map(|RetailerKey { id, key_sha256 }| {
            BTreeMap::from([("id", id), ("key_sha256", key_sha256)])
        })
        .collect();
    let mut st = s.serialize_struct("CollectorConfig", 14)?;
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
    // Last: an array of tables must follow the plain keys.
    st.serialize_field("retailers", &retailers)?;
    st.end()
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// A configuration and where its values came from.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The effective configuration.
    pub config: Config,
    /// Keys set from the environment: `section.key` -> variable.
    pub from_env: BTreeMap<String, String>,
}

/// One thing wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// The environment variable the value came from, if any.
    pub var: Option<String>,
    /// `section.key`, when the message is about one key's value.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.var, &self.key) {
            (Some(var), Some(key)) => write!(f, "{var} ({key}): {}", self.message),
            (Some(var), None) => write!(f, "{var}: {}", self.message),
            // A message that starts with its key (the collector's) is shown as it is.
            (None, Some(key)) if self.message.starts_with(key.as_str()) => {
                f.write_str(&self.message)
            }
            (None, Some(key)) => write!(f, "{key}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// Everything wrong with a configuration (never empty).
#[derive(Clone, Debug)]
pub struct ConfigError {
    /// The file, if one was read.
    pub path: Option<PathBuf>,
    /// The problems, in section and key order.
    pub issues: Vec<Issue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "invalid configuration {}:", path.display())?,
            None => write!(f, "invalid configuration (defaults and environment):")?,
        }
        for issue in &self.issues {
            write!(f, "\n  {issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// `basketflow config <command>`.
#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCommand {
    /// Validate a configuration file and the BASKETFLOW_* environment without starting
    /// anything; print the effective configuration (passwords as "***"). Exit 1 if invalid.
    Check {
        /// The configuration file; must exist when given. Default: ./basketflow.toml if it
        /// exists, else the built-in defaults (plus the environment).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the example configuration: every key, its default and what it is for.
    Example,
}

/// Runs a `config` command. `check` exits with status 1 when the configuration is invalid.
pub(crate) fn run(command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Example => print!("{EXAMPLE}"),
        ConfigCommand::Check { config } => {
            let path = config.or_else(|| {
                Path::new(DEFAULT_PATH)
                    .exists()
                    .then(|| PathBuf::from(DEFAULT_PATH))
            });
            let resolved = match Config::resolve_file(path.as_deref()) {
                Ok(resolved) => resolved,
                Err(e) => {
                    // The problems, without a backtrace: this is the command's answer.
                    eprintln!("{e:#}");
                    std::process::exit(1);
                }
            };
            match &path {
                Some(path) => println!("ok: {}", path.display()),
                None => println!("ok: no {DEFAULT_PATH}; built-in defaults"),
            }
            print!("{}", effective(&resolved)?);
        }
    }
    Ok(())
}

/// The effective configuration as TOML, secrets masked, overridden keys listed first.
fn effective(resolved: &Resolved) -> Result<String> {
    let mut out = String::new();
    for (key, var) in &resolved.from_env {
        out.push_str(&format!("# {key} from {var}\n"));
    }
    let mut shown = resolved.config.clone();
    if !shown.clickhouse.password.is_empty() {
        shown.clickhouse.password = "***".into();
    }
    out.push_str(&toml::to_string(&shown).context("writing the configuration as TOML")?);
    Ok(out)
}

impl Config {
    /// Reads `path`, applies the process environment and validates.
    pub fn load(path: &Path) -> Result<Config> {
        Ok(Config::resolve_file(Some(path))?.config)
    }

    /// Reads `path` (or, without one, starts from the defaults), applies the process
    /// environment and validates.
    pub fn resolve_file(path: Option<&Path>) -> Result<Resolved> {
        let text = match path {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the configuration {}", path.display()))?,
            ),
            None => None,
        };
        let (env, mut issues) = process_env();
        match Config::resolve(text.as_deref(), &env) {
            Ok(resolved) if issues.is_empty() => return Ok(resolved),
            Ok(_) => {}
            Err(more) => issues.extend(more),
        }
        Err(ConfigError {
            path: path.map(Path::to_path_buf),
            issues,
        }
        .into())
    }

    /// The configuration of the TOML `text` (or the defaults) with the overrides of `env`
    /// applied, validated: every problem found, or the configuration.
    pub fn resolve(
        text: Option<&str>,
        env: &BTreeMap<String, String>,
    ) -> Result<Resolved, Vec<Issue>> {
        let mut table = match text.map(str::parse::<Table>).transpose() {
            Ok(table) => table.unwrap_or_default(),
            Err(e) => {
                let message = format!("not valid TOML: {}", e.to_string().trim_end());
                return Err(vec![issue(None, None, message)]);
            }
        };
        // Unknown keys and variables are reported and left out; a value of the wrong type
        // stops before the values are checked (the check would see a default instead).
        let mut issues = unknown_keys(&mut table);
        let from_env = apply_env(&mut table, env, &mut issues);
        let type_errors = type_errors(&table, &from_env);
        if !type_errors.is_empty() {
            issues.extend(type_errors);
            return Err(issues);
        }
        let config: Config = Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| vec![issue(None, None, e.to_string())])?;
        issues.extend(
            config
                .problems()
                .into_iter()
                .map(|(key, message)| issue(from_env.get(&key).cloned(), Some(key), message)),
        );
        if issues.is_empty() {
            Ok(Resolved { config, from_env })
        } else {
            Err(issues)
        }
    }

    /// Values that parse but cannot work, as (`section.key`, what is wrong).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Problems::default();
        let k = &self.kafka;
        let brokers: Vec<&str> = k.brokers.split(',').map(str::trim).collect();
        if k.brokers.trim().is_empty() {
            p.add(
                "kafka.brokers",
                "must name at least one broker (host:port, comma-separated)",
            );
        } else if let Some(bad) = brokers.iter().find(|b| !is_broker(b)) {
            p.add(
                "kafka.brokers",
                format!("{bad:?} is not a host:port (in {:?})", k.brokers),
            );
        }
        let progress_topic = k.progress_topic();
        let topics = [
            ("kafka.events_topic", &k.events_topic),
            ("kafka.trees_topic", &k.trees_topic),
            ("kafka.privacy_topic", &k.privacy_topic),
            ("kafka.decisions_topic", &k.decisions_topic),
            ("kafka.rejected_topic", &k.rejected_topic),
            ("kafka.progress_topic", &progress_topic),
        ];
        for (i, (key, topic)) in topics.iter().enumerate() {
            if !is_topic(topic) {
                p.add(
                    key,
                    format!(
                        "not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -), got {topic:?}"
                    ),
                );
            } else if let Some((other, _)) = topics[..i].iter().find(|(_, t)| t == topic) {
                // The last three are outputs: none may be an input or another output.
                if i >= 3 {
                    p.add(key, format!("{topic:?} is also {other}"));
                }
            }
        }
        if k.transactional_id.as_deref().is_some_and(|t| t.is_empty()) {
            p.add("kafka.transactional_id", "must not be empty");
        }

        let ch = &self.clickhouse;
        let rest = ch
            .url
            .strip_prefix("http://")
            .or_else(|| ch.url.strip_prefix("https://"));
        match rest {
            None => p.add(
                "clickhouse.url",
                format!("must start with http:// or https://, got {:?}", ch.url),
            ),
            Some(rest) if rest.is_empty() || rest.starts_with('/') || rest.contains(' ') => {
                p.add("clickhouse.url", format!("names no host, got {:?}", ch.url))
            }
            Some(_) => {}
        }
        if !is_identifier(&ch.database) {
            p.add(
                "clickhouse.database",
                format!(
                    "must be a ClickHouse identifier (a letter or _, then letters, digits or _), \
                     got {:?}",
                    ch.database
                ),
            );
        }
        if ch.user.is_empty() {
            p.add(
                "clickhouse.user",
                "must not be empty (ClickHouse's is \"default\")",
            );
        }

        let g = &self.graph;
        p.at_least("graph.tick_ms", g.tick_ms, 1);
        p.at_least("graph.flush_interval_ms", g.flush_interval_ms, 1);
        p.at_least("graph.startup_timeout_ms", g.startup_timeout_ms, 1);

        let c = &self.cluster;
        p.at_least("cluster.workers", c.workers as u64, 1);
        p.at_least("cluster.processes", c.processes as u64, 1);
        if c.processes >= 1 && c.process >= c.processes {
            p.add(
                "cluster.process",
                format!(
                    "{} is not below cluster.processes ({})",
                    c.process, c.processes
                ),
            );
        }
        if c.hostfile
            .as_ref()
            .is_some_and(|h| h.as_os_str().is_empty())
        {
            p.add(
                "cluster.hostfile",
                "must not be empty (leave it out instead)",
            );
        }

        let m = &self.metrics;
        if let Some(address) = m.listen() {
            if let Err(why) = check_host_port(address) {
                p.add(
                    "metrics.listen",
                    format!("not a host:port: {address:?} ({why}); \"off\" disables the endpoint"),
                );
            }
        }
        p.at_least("metrics.caught_up_lag_ms", m.caught_up_lag_ms, 1);

        if self.trees.campaigns.as_os_str().is_empty() {
            p.add("trees.campaigns", "must not be empty");
        }
        if self.log.level().is_none() {
            p.add(
                "log.level",
                format!(
                    "must be one of error, warn, info, debug, trace, off; got {:?}",
                    self.log.level
                ),
            );
        }

        if let Err(e) = self.collector.validate() {
            let message = match e {
                CollectorError::Config(m) => m,
                other => other.to_string(),
            };
            // The collector's messages start with the key they are about.
            let key: String = message
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || *c == '.')
                .collect();
            let key = key.trim_end_matches('.');
            let message = match message[key.len()..].strip_prefix(':') {
                Some(rest) => rest.trim_start().to_string(),
                None => message.clone(),
            };
            p.add(key, message);
        }

        let privacy = &self.privacy;
        p.at_least("privacy.retention_days", privacy.retention_days, 1);
        if let Some(ms) = privacy.retention_ms {
            p.at_least("privacy.retention_ms", ms, 1);
        }
        for (retailer, days) in &privacy.retailers {
            if retailer.is_empty() {
                p.add("privacy.retailers", "a retailer id must not be empty");
            } else if *days < 1 {
                p.add(
                    "privacy.retailers",
                    format!("{retailer:?}: must be at least 1 day, got {days}"),
                );
            }
        }
        p.0
    }
}

#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.0.push((key.to_string(), message.into()));
    }

    fn at_least(&mut self, key: &str, value: u64, min: u64) {
        if value < min {
            self.add(key, format!("must be at least {min}, got {value}"));
        }
    }
}

fn issue(var: Option<String>, key: Option<String>, message: String) -> Issue {
    Issue { var, key, message }
}

/// The `BASKETFLOW_*` variables of this process, and one issue per value that is not UTF-8.
fn process_env() -> (BTreeMap<String, String>, Vec<Issue>) {
    let mut env = BTreeMap::new();
    let mut issues = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|n| n.starts_with(ENV_PREFIX)) else {
            continue;
        };
        match value.into_string() {
            Ok(value) => {
                env.insert(name.to_string(), value);
            }
            Err(_) if NOT_CONFIGURATION.contains(&name) => {}
            Err(_) => issues.push(issue(
                Some(name.to_string()),
                None,
                "the value is not UTF-8".into(),
            )),
        }
    }
    (env, issues)
}

// ---------------------------------------------------------------------------------------------
// Keys, environment, types
// ---------------------------------------------------------------------------------------------

/// The field names the `Deserialize` implementation of the struct `T` accepts (its TOML keys),
/// read by handing it a deserializer that records them and stops.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// The sections of the file.
pub fn sections() -> &'static [&'static str] {
    field_names::<Config>()
}

/// The keys of `section`.
fn keys_of(section: &str) -> &'static [&'static str] {
    match section {
        "kafka" => field_names::<KafkaConfig>(),
        "clickhouse" => field_names::<ClickHouseConfig>(),
        "graph" => field_names::<GraphConfig>(),
        "cluster" => field_names::<ClusterConfig>(),
        "metrics" => field_names::<MetricsConfig>(),
        "trees" => field_names::<TreesConfig>(),
        "log" => field_names::<LogConfig>(),
        "collector" => field_names::<CollectorConfig>(),
        "privacy" => field_names::<PrivacyConfig>(),
        _ => &[],
    }
}

/// The first error deserializing a section from `table`, if any.
fn section_error(section: &str, table: Table) -> Option<toml::de::Error> {
    fn check<T: DeserializeOwned>(table: Table) -> Option<toml::de::Error> {
        Value::Table(table).try_into::<T>().err()
    }
    match section {
        "kafka" => check::<KafkaConfig>(table),
        "clickhouse" => check::<ClickHouseConfig>(table),
        "graph" => check::<GraphConfig>(table),
        "cluster" => check::<ClusterConfig>(table),
        "metrics" => check::<MetricsConfig>(table),
        "trees" => check::<TreesConfig>(table),
        "log" => check::<LogConfig>(table),
        "collector" => check::<CollectorConfig>(table),
        "privacy" => check::<PrivacyConfig>(table),
        _ => None,
    }
}

/// The environment variable that overrides `section.key`.
pub fn env_var(section: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}_{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

/// Keys of `table` that are no configuration key, taken out of it.
fn unknown_keys(table: &mut Table) -> Vec<Issue> {
    let mut issues = Vec::new();
    let mut unknown = Vec::new();
    for (section, value) in table.iter_mut() {
        if !sections().contains(&section.as_str()) {
            let home = sections()
                .iter()
                .find(|s| keys_of(s).contains(&section.as_str()));
            let message = match (value, home) {
                (Value::Table(_), _) => format!(
                    "unknown section [{section}]{}",
                    did_you_mean(
                        &format!("[{section}]"),
                        sections().iter().map(|s| format!("[{s}]"))
                    )
                ),
                (_, Some(home)) => {
                    format!("unknown key {section} (it belongs in [{home}])")
                }
                (_, None) => format!(
                    "unknown key {section} (every key belongs in a section: {})",
                    sections().join(", ")
                ),
            };
            issues.push(issue(None, None, message));
            unknown.push(section.clone());
            continue;
        }
        let Value::Table(keys) = value else {
            issues.push(issue(
                None,
                Some(section.clone()),
                format!("expected a table [{section}], got {}", kind(value)),
            ));
            unknown.push(section.clone());
            continue;
        };
        keys.retain(|key, _| {
            let known = keys_of(section).contains(&key);
            if !known {
                let known = keys_of(section).iter().map(|k| format!("{section}.{k}"));
                issues.push(issue(
                    None,
                    None,
                    format!(
                        "unknown key {section}.{key}{}",
                        did_you_mean(&format!("{section}.{key}"), known)
                    ),
                ));
            }
            known
        });
    }
    for section in unknown {
        table.remove(&section);
    }
    // In key order, whatever order the table keeps.
    issues.sort_by_key(ToString::to_string);
    issues
}

/// Applies the overrides of `env` to `table`; returns `section.key` -> variable for those
/// applied.
fn apply_env(
    table: &mut Table,
    env: &BTreeMap<String, String>,
    issues: &mut Vec<Issue>,
) -> BTreeMap<String, String> {
    let defaults = match Value::try_from(Config::default()) {
        Ok(Value::Table(t)) => t,
        _ => Table::new(),
    };
    let mut applied = BTreeMap::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if NOT_CONFIGURATION.contains(&var.as_str()) || rest.starts_with("TEST") {
            continue;
        }
        let mut bad = |message: String| issues.push(issue(Some(var.clone()), None, message));
        if rest != rest.to_ascii_uppercase() {
            bad(format!(
                "configuration variables are upper case: {ENV_PREFIX}{}",
                rest.to_ascii_uppercase()
            ));
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = lower
            .split_once('_')
            .filter(|(s, _)| sections().contains(s))
        else {
            let all = sections()
                .iter()
                .flat_map(|s| keys_of(s).iter().map(move |k| env_var(s, k)));
            bad(format!(
                "names no configuration key ({ENV_PREFIX}<SECTION>_<KEY>; sections: {}){}",
                sections().join(", "),
                did_you_mean(var, all)
            ));
            continue;
        };
        if !keys_of(section).contains(&key) {
            let known = keys_of(section).iter().map(|k| env_var(section, k));
            bad(format!(
                "unknown key {section}.{key}{}",
                did_you_mean(var, known)
            ));
            continue;
        }
        let default = defaults.get(section).and_then(|s| s.get(key));
        let value = match default {
            Some(Value::String(_)) => Value::String(raw.clone()),
            _ => toml_value(raw).unwrap_or_else(|| Value::String(raw.clone())),
        };
        // A section that is not a table is reported by `unknown_keys`.
        if let Value::Table(t) = table
            .entry(section.to_string())
            .or_insert_with(|| Value::Table(Table::new()))
        {
            t.insert(key.to_string(), value);
            applied.insert(format!("{section}.{key}"), var.clone());
        }
    }
    applied
}

/// `text` as a TOML value (`5`, `true`, `["a"]`, `"x"`), if it is one.
fn toml_value(text: &str) -> Option<Value> {
    let mut table: Table = format!("v = {text}").parse().ok()?;
    (table.len() == 1).then(|| table.remove("v")).flatten()
}

/// Values of known keys that do not deserialize, one issue per key: each key is tried alone
/// (the others default), so every bad key is found, not only the first.
fn type_errors(table: &Table, from_env: &BTreeMap<String, String>) -> Vec<Issue> {
    let mut issues = Vec::new();
    for (section, value) in table {
        let Value::Table(keys) = value else { continue };
        for (key, value) in keys {
            if !keys_of(section).contains(&key.as_str()) {
                continue;
            }
            let alone = Table::from_iter([(key.clone(), value.clone())]);
            if let Some(e) = section_error(section, alone) {
                let path = format!("{section}.{key}");
                issues.push(issue(
                    from_env.get(&path).cloned(),
                    Some(path),
                    explain(e.message(), value),
                ));
            }
        }
    }
    issues.sort_by(|a, b| a.key.cmp(&b.key));
    issues
}

/// serde's message about `value`, in the file's words: `expected an integer, got a string`.
fn explain(message: &str, value: &Value) -> String {
    let message = message.trim();
    if let Value::Table(entries) = value {
        // A table of values (`privacy.retailers`): name the entry that is wrong.
        if let Some(found) = explain_entry(message, entries) {
            return found;
        }
    }
    if let Some((_, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|m| m.split_once(", expected "))
    {
        return format!("expected {}, got {}", expected_kind(expected), kind(value));
    }
    if let (Some(_), Value::Integer(n)) = (message.strip_prefix("invalid value: integer"), value) {
        if *n < 0 {
            return format!("must not be negative, got {n}");
        }
        return format!("out of range, got {n}");
    }
    message.to_string()
}

/// serde's message about one entry of the table `entries`, naming it, when the message says
/// which: the first entry of a type other than the expected one, or the first negative integer.
fn explain_entry(message: &str, entries: &Table) -> Option<String> {
    if let Some((_, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|m| m.split_once(", expected "))
    {
        let expected = expected_kind(expected);
        let (name, entry) = entries.iter().find(|(_, e)| kind(e) != expected)?;
        return Some(format!(
            "{name:?}: expected {expected}, got {}",
            kind(entry)
        ));
    }
    if message.starts_with("invalid value: integer") {
        let (name, n) = entries.iter().find_map(|(name, e)| match e {
            Value::Integer(n) if *n < 0 => Some((name, *n)),
            _ => None,
        })?;
        return Some(format!("{name:?}: must not be negative, got {n}"));
    }
    None
}

/// serde's name of an expected type, as a TOML type.
fn expected_kind(expected: &str) -> &str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize" => {
            "an integer"
        }
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "a boolean",
        "a string" | "path string" | "a borrowed string" => "a string",
        "a sequence" => "an array",
        e if e.starts_with("struct ") || e == "a map" => "a table",
        e => e,
    }
}

/// `value`'s TOML type with an article.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// ` (did you mean X?)` for the candidate closest to `word`, if close enough to be a typo.
fn did_you_mean(word: &str, candidates: impl Iterator<Item = String>) -> String {
    let word = word.to_ascii_lowercase();
    candidates
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 6))
        .min()
        .map(|(_, c)| format!(" (did you mean {c}?)"))
        .unwrap_or_default()
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Value rules
// ---------------------------------------------------------------------------------------------

/// A Kafka topic name: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn is_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// An unquoted ClickHouse identifier.
fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A bootstrap server: `host:port` or `host` (librdkafka then uses 9092).
fn is_broker(b: &str) -> bool {
    match b.matches(':').count() {
        0 => is_host(b),
        1 => check_host_port(b).is_ok(),
        _ => b.starts_with('[') && check_host_port(b).is_ok(),
    }
}

/// `host:port` with a host name, IPv4 address or bracketed IPv6 address.
fn check_host_port(s: &str) -> Result<(), &'static str> {
    let (host, port) = s.rsplit_once(':').ok_or("no :port")?;
    port.parse::<u16>().map_err(|_| "the port is not 0-65535")?;
    let ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => is_host(host),
    };
    if ok {
        Ok(())
    } else if host.contains(':') {
        Err("an IPv6 address goes in brackets: [::1]:9464")
    } else {
        Err("not a host name or address")
    }
}

/// A host name or IPv4 address.
fn is_host(h: &str) -> bool {
    !h.is_empty()
        && h.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The issues of `text` with `vars`, as displayed.
    fn errors(text: &str, vars: &[(&str, &str)]) -> Vec<String> {
        match Config::resolve(Some(text), &env(vars)) {
            Ok(_) => vec![],
            Err(issues) => issues.iter().map(ToString::to_string).collect(),
        }
    }

    fn ok(text: &str, vars: &[(&str, &str)]) -> Resolved {
        Config::resolve(Some(text), &env(vars)).unwrap_or_else(|issues| {
            panic!(
                "{:?}",
                issues.iter().map(ToString::to_string).collect::<Vec<_>>()
            )
        })
    }

    #[test]
    fn an_empty_file_and_no_file_are_the_defaults() {
        let empty = ok("", &[]).config;
        let none = Config::resolve(None, &env(&[])).unwrap().config;
        let default = toml::to_string(&Config::default()).unwrap();
        assert_eq!(toml::to_string(&empty).unwrap(), default);
        assert_eq!(toml::to_string(&none).unwrap(), default);
        assert_eq!(
            empty.kafka.progress_topic(),
            "experience-decisions-progress"
        );
        assert_eq!(empty.metrics.listen(), Some("127.0.0.1:9464"));
    }

    #[test]
    fn the_example_parses_to_the_defaults_and_shows_every_key() {
        let resolved = ok(EXAMPLE, &[]);
        let example: Table = EXAMPLE.parse().unwrap();
        let defaults = match Value::try_from(Config::default()).unwrap() {
            Value::Table(t) => t,
            _ => unreachable!(),
        };
        // Every key the example sets is at its default.
        assert_eq!(
            toml::to_string(&resolved.config).unwrap(),
            toml::to_string(&Config::default()).unwrap()
        );
        // Every key of every section is in the example: set, or as a commented line
        // `# key = ...` in its section (optional keys without a default).
        let mut missing = vec![];
        for section in sections() {
            let body = section_text(EXAMPLE, section);
            for key in keys_of(section) {
                let set = example.get(*section).and_then(|s| s.get(*key)).is_some();
                let commented = body.lines().any(|l| l.starts_with(&format!("# {key} = ")));
                if !set && !commented {
                    missing.push(format!("{section}.{key}"));
                }
                if set {
                    assert_eq!(
                        example[*section][*key], defaults[*section][*key],
                        "{section}.{key} in the example is not the default"
                    );
                }
            }
        }
        assert_eq!(
            missing,
            Vec::<String>::new(),
            "keys missing from the example"
        );
    }

    /// The lines of `text` under `[section]`, up to the next section header.
    fn section_text<'a>(text: &'a str, section: &str) -> &'a str {
        let header = format!("\n[{section}]\n");
        let start = text.find(&header).expect("the section's header") + header.len();
        let end = text[start..].find("\n[").map_or(text.len(), |e| start + e);
        &text[start..end]
    }

    #[test]
    fn collector_serializes_as_it_deserializes() {
        let text = format!(
            "[collector]\nlisten = \"0.0.0.0:8088\"\ntopic = \"t\"\nauth = \"keys\"\n\
             cors_origins = [\"https://shop.example\"]\n\
             [[collector.retailers]]\nid = \"r1\"\nkey_sha256 = \"{}\"\n",
            "a".repeat(64)
        );
        let config = ok(&text, &[]).config;
        let written: Table = toml::to_string(&config).unwrap().parse().unwrap();
        let mut keys: Vec<&str> = written["collector"]
            .as_table()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        let mut names = field_names::<CollectorConfig>().to_vec();
        names.sort();
        assert_eq!(keys, names);
        let again: Config = Value::Table(written).try_into().unwrap();
        assert_eq!(again.collector, config.collector);
    }

    #[test]
    fn sections_and_keys_are_read_from_the_types() {
        assert_eq!(
            sections(),
            [
                "kafka",
                "clickhouse",
                "graph",
                "cluster",
                "metrics",
                "trees",
                "log",
                "collector",
                "privacy"
            ]
        );
        for section in sections() {
            assert!(!keys_of(section).is_empty(), "{section} has no keys");
        }
        assert_eq!(
            keys_of("cluster"),
            ["workers", "processes", "process", "hostfile"]
        );
    }

    #[test]
    fn unknown_keys_name_their_section() {
        assert_eq!(
            errors("[graph]\nflush_intervall_ms = 10\n", &[]),
            ["unknown key graph.flush_intervall_ms (did you mean graph.flush_interval_ms?)"]
        );
        assert_eq!(
            errors("[graf]\ntick_ms = 1\n", &[]),
            ["unknown section [graf] (did you mean [graph]?)"]
        );
        assert_eq!(
            errors("tick_ms = 1\n", &[]),
            ["unknown key tick_ms (it belongs in [graph])"]
        );
        assert_eq!(
            errors("[kafka]\nbogus = 1\n", &[]),
            ["unknown key kafka.bogus"]
        );
        assert_eq!(
            errors("graph = 1\n", &[]),
            ["graph: expected a table [graph], got an integer"]
        );
    }

    #[test]
    fn unknown_keys_and_impossible_values_are_reported_together() {
        assert_eq!(
            errors("[graph]\nflush_intervall_ms = 1\ntick_ms = 0\n", &[]),
            [
                "unknown key graph.flush_intervall_ms (did you mean graph.flush_interval_ms?)",
                "graph.tick_ms: must be at least 1, got 0",
            ]
        );
    }

    #[test]
    fn type_errors_name_the_key_every_one() {
        assert_eq!(
            errors(
                "[graph]\ntick_ms = \"5\"\nflush_interval_ms = -1\n[cluster]\nworkers = true\n\
                 [log]\nformat = \"xml\"\n",
                &[]
            ),
            [
                "cluster.workers: expected an integer, got a boolean",
                "graph.flush_interval_ms: must not be negative, got -1",
                "graph.tick_ms: expected an integer, got a string",
                "log.format: unknown variant `xml`, expected `logfmt` or `json`",
            ]
        );
        assert_eq!(
            errors("[cluster]\nhostfile = 3\n", &[]),
            ["cluster.hostfile: expected a string, got an integer"]
        );
    }

    #[test]
    fn a_syntax_error_is_one_issue() {
        let e = errors("[graph\n", &[]);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("not valid TOML: TOML parse error at line 1"),
            "{e:?}"
        );
    }

    #[test]
    fn values_that_cannot_work_are_all_reported() {
        assert_eq!(
            errors(
                "[graph]\ntick_ms = 0\n[clickhouse]\nurl = \"localhost:8123\"\n\
                 database = \"my-db\"\n[cluster]\nprocesses = 2\nprocess = 3\n\
                 [metrics]\nlisten = \"localhost\"\n[log]\nlevel = \"loud\"\n",
                &[]
            ),
            [
                "clickhouse.url: must start with http:// or https://, got \"localhost:8123\"",
                "clickhouse.database: must be a ClickHouse identifier (a letter or _, then \
                 letters, digits or _), got \"my-db\"",
                "graph.tick_ms: must be at least 1, got 0",
                "cluster.process: 3 is not below cluster.processes (2)",
                "metrics.listen: not a host:port: \"localhost\" (no :port); \"off\" disables \
                 the endpoint",
                "log.level: must be one of error, warn, info, debug, trace, off; got \"loud\"",
            ]
        );
    }

    #[test]
    fn kafka_names_are_checked() {
        assert_eq!(
            errors(
                "[kafka]\nbrokers = \"a:9092,,b\"\nevents_topic = \"shopper events\"\n\
                 decisions_topic = \"experience-trees\"\nprogress_topic = \"experience-trees\"\n",
                &[]
            ),
            [
                "kafka.brokers: \"\" is not a host:port (in \"a:9092,,b\")",
                "kafka.events_topic: not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -), \
                 got \"shopper events\"",
                "kafka.decisions_topic: \"experience-trees\" is also kafka.trees_topic",
                "kafka.progress_topic: \"experience-trees\" is also kafka.trees_topic",
            ]
        );
        assert!(errors("[kafka]\nbrokers = \"k1:9092, k2, [::1]:9092\"\n", &[]).is_empty());
    }

    #[test]
    fn collector_problems_keep_their_key() {
        assert_eq!(
            errors("[collector]\nretry_after_s = 0\n", &[]),
            ["collector.retry_after_s must be at least 1"]
        );
        assert_eq!(
            errors(
                "[collector]\nauth = \"keys\"\n",
                &[("BASKETFLOW_COLLECTOR_AUTH", "keys")]
            ),
            [
                "BASKETFLOW_COLLECTOR_AUTH (collector.auth): collector.auth = \"keys\" needs at \
                 least one [[collector.retailers]] entry"
            ]
        );
    }

    #[test]
    fn metrics_off() {
        for off in ["off", ""] {
            let r = ok(&format!("[metrics]\nlisten = \"{off}\"\n"), &[]);
            assert_eq!(r.config.metrics.listen(), None);
        }
        let r = ok("[metrics]\nlisten = \"[::]:9464\"\n", &[]);
        assert_eq!(r.config.metrics.listen(), Some("[::]:9464"));
    }

    #[test]
    fn environment_overrides_every_kind_of_key() {
        let r = ok(
            "[graph]\ntick_ms = 7\n",
            &[
                ("BASKETFLOW_GRAPH_TICK_MS", "10"),
                ("BASKETFLOW_KAFKA_BROKERS", "k1:9092,k2:9092"),
                ("BASKETFLOW_CLICKHOUSE_PASSWORD", "12345"),
                ("BASKETFLOW_CLICKHOUSE_URL", "https://ch.example:8443"),
                ("BASKETFLOW_CLUSTER_HOSTFILE", "/etc/basketflow/hosts"),
                ("BASKETFLOW_KAFKA_PROGRESS_TOPIC", "\"2024\""),
                ("BASKETFLOW_LOG_FORMAT", "json"),
                (
                    "BASKETFLOW_COLLECTOR_CORS_ORIGINS",
                    "[\"https://a.example\", \"*\"]",
                ),
                ("BASKETFLOW_COLLECTOR_MAX_BATCH_EVENTS", "100"),
            ],
        );
        let c = &r.config;
        assert_eq!(c.graph.tick_ms, 10);
        assert_eq!(c.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(
            c.clickhouse.password, "12345",
            "a string key takes the value verbatim"
        );
        assert_eq!(c.clickhouse.url, "https://ch.example:8443");
        assert_eq!(
            c.cluster.hostfile,
            Some(PathBuf::from("/etc/basketflow/hosts"))
        );
        assert_eq!(c.kafka.progress_topic(), "2024");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.collector.cors_origins, ["https://a.example", "*"]);
        assert_eq!(c.collector.max_batch_events, 100);
        assert_eq!(r.from_env["graph.tick_ms"], "BASKETFLOW_GRAPH_TICK_MS");
        assert_eq!(r.from_env.len(), 9);
    }

    #[test]
    fn environment_problems_name_the_variable() {
        assert_eq!(
            errors(
                "",
                &[
                    ("BASKETFLOW_GRAPH_TICK_MS", "0"),
                    ("BASKETFLOW_CLUSTER_WORKERS", "two"),
                    ("BASKETFLOW_GRAPH_FLUSH_INTERVALL_MS", "5"),
                    ("BASKETFLOW_KAFKA_BROKER", "k:9092"),
                    ("BASKETFLOW_GRAHP_TICK_MS", "5"),
                    ("BASKETFLOW_Graph_tick_ms", "5"),
                    ("BASKETFLOW_METRICS_LISTEN", "9464"),
                ]
            ),
            [
                "BASKETFLOW_GRAHP_TICK_MS: names no configuration key \
                 (BASKETFLOW_<SECTION>_<KEY>; sections: kafka, clickhouse, graph, cluster, \
                 metrics, trees, log, collector, privacy) (did you mean BASKETFLOW_GRAPH_TICK_MS?)",
                "BASKETFLOW_GRAPH_FLUSH_INTERVALL_MS: unknown key graph.flush_intervall_ms \
                 (did you mean BASKETFLOW_GRAPH_FLUSH_INTERVAL_MS?)",
                "BASKETFLOW_Graph_tick_ms: configuration variables are upper case: \
                 BASKETFLOW_GRAPH_TICK_MS",
                "BASKETFLOW_KAFKA_BROKER: unknown key kafka.broker \
                 (did you mean BASKETFLOW_KAFKA_BROKERS?)",
                "BASKETFLOW_CLUSTER_WORKERS (cluster.workers): expected an integer, got a string",
            ]
        );
        // Values are checked once the types are right.
        assert_eq!(
            errors(
                "",
                &[
                    ("BASKETFLOW_GRAPH_TICK_MS", "0"),
                    ("BASKETFLOW_METRICS_LISTEN", "9464")
                ]
            ),
            [
                "BASKETFLOW_GRAPH_TICK_MS (graph.tick_ms): must be at least 1, got 0",
                "BASKETFLOW_METRICS_LISTEN (metrics.listen): not a host:port: \"9464\" \
                 (no :port); \"off\" disables the endpoint",
            ]
        );
    }

    #[test]
    fn variables_of_the_scripts_and_tests_are_not_configuration() {
        let r = ok(
            "",
            &[
                ("BASKETFLOW_BROKERS", "elsewhere:9092"),
                ("BASKETFLOW_STACK_DIR", "/tmp/x"),
                ("BASKETFLOW_VENV", "/tmp/v"),
                ("BASKETFLOW_FAULT_SEED", "7"),
                ("BASKETFLOW_OUTAGE_SECS", "20"),
                ("BASKETFLOW_TEST_ANYTHING", "1"),
                ("BASKETFLOW_LOG_LEVEL", "debug"),
                ("OTHER_GRAPH_TICK_MS", "0"),
            ],
        );
        assert_eq!(r.config.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(
            r.config.log.level, "debug",
            "BASKETFLOW_LOG_LEVEL is log.level"
        );
        assert_eq!(r.from_env.len(), 1);
    }

    #[test]
    fn check_output_masks_the_password_and_names_overrides() {
        let r = ok(
            "[clickhouse]\npassword = \"s3cret\"\n",
            &[("BASKETFLOW_GRAPH_TICK_MS", "10")],
        );
        let out = effective(&r).unwrap();
        assert!(
            out.starts_with("# graph.tick_ms from BASKETFLOW_GRAPH_TICK_MS\n"),
            "{out}"
        );
        assert!(out.contains("password = \"***\""), "{out}");
        assert!(!out.contains("s3cret"), "{out}");
        assert!(out.contains("tick_ms = 10"), "{out}");
        // The output is a configuration that means the same (but for the password).
        let again = ok(&out, &[]).config;
        assert_eq!(again.graph.tick_ms, 10);
    }

    #[test]
    fn privacy_defaults_to_three_years_for_every_retailer() {
        let c = ok("", &[]).config;
        assert_eq!(c.privacy.retention_days, 1095);
        assert_eq!(c.privacy.retention_ms, None);
        assert!(c.privacy.retailers.is_empty());
        let retention = c.privacy.retention();
        assert_eq!(retention, Retention::default());
        assert_eq!(retention.default_ms, 1095 * 86_400_000);
        assert_eq!(retention.period_ms("retailer-00"), 1095 * 86_400_000);
    }

    #[test]
    fn privacy_periods_per_retailer_and_in_milliseconds() {
        let text = "[privacy]\nretention_days = 730\n\
                    [privacy.retailers]\n\"retailer-00\" = 365\n\"retailer-01\" = 30\n";
        let retention = ok(text, &[]).config.privacy.retention();
        assert_eq!(
            retention,
            Retention {
                default_ms: 730 * MS_PER_DAY,
                per_retailer_ms: BTreeMap::from([
                    ("retailer-00".to_string(), 365 * MS_PER_DAY),
                    ("retailer-01".to_string(), 30 * MS_PER_DAY),
                ]),
            }
        );
        assert_eq!(retention.period_ms("retailer-01"), 30 * MS_PER_DAY);
        assert_eq!(retention.period_ms("retailer-02"), 730 * MS_PER_DAY);

        // retention_ms replaces retention_days, not the retailers' own periods.
        let r = ok(text, &[("BASKETFLOW_PRIVACY_RETENTION_MS", "5000")]);
        assert_eq!(
            r.from_env["privacy.retention_ms"],
            "BASKETFLOW_PRIVACY_RETENTION_MS"
        );
        let retention = r.config.privacy.retention();
        assert_eq!(retention.default_ms, 5_000);
        assert_eq!(retention.period_ms("retailer-02"), 5_000);
        assert_eq!(retention.period_ms("retailer-00"), 365 * MS_PER_DAY);

        // The environment overrides every key, the table of retailers included.
        let r = ok(
            "",
            &[
                ("BASKETFLOW_PRIVACY_RETENTION_DAYS", "400"),
                ("BASKETFLOW_PRIVACY_RETAILERS", "{ \"r1\" = 7 }"),
            ],
        );
        assert_eq!(r.config.privacy.retention_days, 400);
        assert_eq!(
            r.config.privacy.retention().per_retailer_ms,
            BTreeMap::from([("r1".to_string(), 7 * MS_PER_DAY)])
        );
        // The effective configuration reads back to the same periods.
        let again = ok(&effective(&r).unwrap(), &[]).config;
        assert_eq!(again.privacy.retention(), r.config.privacy.retention());
    }

    #[test]
    fn privacy_periods_of_zero_are_refused() {
        assert_eq!(
            errors(
                "[privacy]\nretention_days = 0\nretention_ms = 0\n\
                 [privacy.retailers]\n\"retailer-00\" = 0\n\"retailer-01\" = 10\n",
                &[]
            ),
            [
                "privacy.retention_days: must be at least 1, got 0",
                "privacy.retention_ms: must be at least 1, got 0",
                "privacy.retailers: \"retailer-00\": must be at least 1 day, got 0",
            ]
        );
        assert_eq!(
            errors("", &[("BASKETFLOW_PRIVACY_RETENTION_DAYS", "0")]),
            ["BASKETFLOW_PRIVACY_RETENTION_DAYS (privacy.retention_days): must be at least 1, got 0"]
        );
        assert_eq!(
            errors("[privacy]\nretention_days = -1\nretention_day = 3\n", &[]),
            [
                "unknown key privacy.retention_day (did you mean privacy.retention_days?)",
                "privacy.retention_days: must not be negative, got -1",
            ]
        );
        assert_eq!(
            errors("[privacy.retailers]\nr1 = \"a year\"\n", &[]),
            ["privacy.retailers: \"r1\": expected an integer, got a string"]
        );
        assert_eq!(
            errors("[privacy.retailers]\nr1 = -5\n", &[]),
            ["privacy.retailers: \"r1\": must not be negative, got -5"]
        );
    }
}
