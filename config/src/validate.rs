//! Values that parse but cannot work: a tick of 0, a topic name Kafka refuses, an output topic
//! that is also an input, a `host:port` without a port. Each problem names its key.

use basketflow_collector::CollectorError;

use crate::types::Config;

/// The largest `kafka.fetch_min_bytes`: a fetch that waits for more than a MiB would hold a
/// partition's messages for the whole 10 ms wait at any rate.
const MAX_FETCH_MIN_BYTES: u32 = 1 << 20;

impl Config {
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
        let checkpoints_topic = k.checkpoints_topic();
        let topics = [
            ("kafka.events_topic", &k.events_topic),
            ("kafka.trees_topic", &k.trees_topic),
            ("kafka.privacy_topic", &k.privacy_topic),
            ("kafka.decisions_topic", &k.decisions_topic),
            ("kafka.rejected_topic", &k.rejected_topic),
            ("kafka.progress_topic", &progress_topic),
            ("kafka.checkpoints_topic", &checkpoints_topic),
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
                // The last four are outputs: none may be an input or another output.
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

        if !(1..=2).contains(&self.kafka.transactions_in_flight) {
            p.add(
                "kafka.transactions_in_flight",
                format!("must be 1 or 2, got {}", self.kafka.transactions_in_flight),
            );
        }

        if !(1..=MAX_FETCH_MIN_BYTES).contains(&self.kafka.fetch_min_bytes) {
            p.add(
                "kafka.fetch_min_bytes",
                format!(
                    "must be from 1 to {MAX_FETCH_MIN_BYTES}, got {}",
                    self.kafka.fetch_min_bytes
                ),
            );
        }

        let g = &self.graph;
        p.at_least("graph.tick_ms", g.tick_ms, 1);
        p.at_least("graph.flush_interval_ms", g.flush_interval_ms, 1);
        p.at_least("graph.startup_timeout_ms", g.startup_timeout_ms, 1);
        p.at_least("graph.dedup_horizon_ms", g.dedup_horizon_ms, 1);
        p.at_least("graph.settlement_ms", g.settlement_ms, 1);
        p.at_least(
            "graph.max_in_flight_messages",
            g.max_in_flight_messages as u64,
            1,
        );

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

        let r = &self.rewards;
        if !is_topic(&r.topic) {
            p.add(
                "rewards.topic",
                format!(
                    "not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -), got {:?}",
                    r.topic
                ),
            );
        } else if let Some((key, _)) = topics.iter().find(|(_, t)| **t == r.topic) {
            p.add(
                "rewards.topic",
                format!("{:?} is also {key}: reward contacts live apart", r.topic),
            );
        }
        if !is_identifier(&r.database) {
            p.add(
                "rewards.database",
                format!(
                    "must be a ClickHouse identifier (a letter or _, then letters, digits or _), \
                     got {:?}",
                    r.database
                ),
            );
        } else if r.database == ch.database {
            p.add(
                "rewards.database",
                "must differ from clickhouse.database: reward contacts live apart",
            );
        }
        if !is_identifier(&r.user) {
            p.add(
                "rewards.user",
                format!(
                    "must be a ClickHouse user name (letters, digits, _), got {:?}",
                    r.user
                ),
            );
        } else if r.user == ch.user || r.user == "default" {
            p.add(
                "rewards.user",
                format!(
                    "must be a user of its own, not {:?}: only the loader may read the contacts",
                    r.user
                ),
            );
        }

        if let Some(address) = r.metrics_listen() {
            if let Err(why) = check_host_port(address) {
                p.add(
                    "rewards.metrics_listen",
                    format!("not a host:port: {address:?} ({why}); \"off\" disables the endpoint"),
                );
            }
        }

        if r.networks.is_empty() {
            p.add(
                "rewards.networks",
                "is empty: the rewards user could connect from nowhere".to_string(),
            );
        }
        for why in r
            .networks
            .iter()
            .filter_map(|n| basketflow_rewards::users::network_problem(n))
        {
            p.add("rewards.networks", why);
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
