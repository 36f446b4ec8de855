//! `[collector]` in `basketflow.toml`: where the collector listens and what it accepts.
//!
//! Every key has a default, so an empty section is valid: it serves `127.0.0.1:8088` with
//! **authentication off** (`auth = "none"`), which is meant for the local stack and demos only.
//! A deployment facing the internet sets `auth = "keys"` and lists each retailer's key hash.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::CollectorError;

/// How requests prove which retailer sends them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No key needed; any retailer's events are accepted. For local use only.
    #[default]
    None,
    /// Every request carries a retailer's API key; only that retailer's events are accepted.
    Keys,
}

/// `[[collector.retailers]]`: one API key of one retailer.
///
/// A retailer may be listed several times with different keys (key rotation: add the new key,
/// move the trackers, remove the old one).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetailerKey {
    /// The retailer, as in the events' `retailer_id`.
    pub id: String,
    /// SHA-256 of the key, 64 lowercase or uppercase hex digits (`printf %s KEY | sha256sum`).
    /// The key itself is never stored.
    pub key_sha256: String,
}

/// `[[collector.stream_secrets]]`: a secret a retailer's backend signs its pages' stream
/// tokens with (`GET /v1/decisions/stream`, see [`crate::decisions`]).
///
/// A retailer may be listed several times (rotation: add the new secret, move the backend,
/// remove the old one).
#[derive(Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSecret {
    /// The retailer.
    pub id: String,
    /// The shared secret (at least 32 characters): the HMAC-SHA256 key of the tokens.
    pub secret: String,
}

impl std::fmt::Debug for StreamSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSecret")
            .field("id", &self.id)
            .field("secret", &"***")
            .finish()
    }
}

/// `[collector]`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Address to listen on.
    pub listen: String,
    /// Topic the events go to; unset means the graph's input (`[kafka] events_topic`).
    pub topic: Option<String>,
    /// `"none"` (default, local use) or `"keys"`.
    pub auth: AuthMode,
    /// The retailers' key hashes (used when `auth = "keys"`).
    pub retailers: Vec<RetailerKey>,
    /// The retailers' reward keys (`auth = "keys"`): the only keys `POST /v1/reward-contacts`
    /// takes, and keys `POST /v1/events` refuses. A reward key lives in the retailer's backend,
    /// never in a browser, so a tracker's key (public by nature) cannot submit email addresses.
    pub reward_keys: Vec<RetailerKey>,
    /// Origins allowed to call the API from a browser (CORS), e.g. `"https://shop.example"`;
    /// `"*"` allows any origin.
    pub cors_origins: Vec<String>,
    /// Largest request body, in bytes, both as received and after gzip decoding.
    pub max_body_bytes: usize,
    /// Largest number of events in one request.
    pub max_batch_events: usize,
    /// Request bodies held at once (received, decoded, waiting for the broker), in bytes.
    /// A request that finds no room within `queue_timeout_ms` gets 503.
    pub max_in_flight_bytes: usize,
    /// How long a request may wait for room in `max_in_flight_bytes`.
    pub queue_timeout_ms: u64,
    /// How long the broker may take to acknowledge an event (librdkafka `message.timeout.ms`);
    /// after that the event is reported as not stored and the request gets 503.
    pub produce_timeout_ms: u64,
    /// How long a client may take to send its body (then 408).
    pub read_timeout_ms: u64,
    /// The `Retry-After` of a 503, in seconds.
    pub retry_after_s: u64,
    /// Sustained events per second each retailer key may send (`auth = "keys"` only);
    /// 0 turns rate limiting off.
    pub rate_limit_events_per_s: u64,
    /// Events a retailer may send in a burst above the sustained rate; 0 means
    /// `max(rate_limit_events_per_s, max_batch_events)`.
    pub rate_limit_burst: u64,
    /// The topic `GET /v1/decisions/stream` reads; unset means the graph's output
    /// (`[kafka] decisions_topic`).
    pub decisions_topic: Option<String>,
    /// The retailers' stream secrets; none: `GET /v1/decisions/stream` is not served (404).
    pub stream_secrets: Vec<StreamSecret>,
    /// The longest a stream token may still live when a page presents it, in seconds (a
    /// token signed for longer is refused: a leaked token stays useful for minutes).
    pub stream_token_max_ttl_s: u64,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            listen: "127.0.0.1:8088".into(),
            topic: None,
            auth: AuthMode::None,
            retailers: Vec::new(),
            reward_keys: Vec::new(),
            cors_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_batch_events: 500,
            max_in_flight_bytes: 64 * 1024 * 1024,
            queue_timeout_ms: 2_000,
            produce_timeout_ms: 5_000,
            read_timeout_ms: 10_000,
            retry_after_s: 2,
            rate_limit_events_per_s: 0,
            rate_limit_burst: 0,
            decisions_topic: None,
            stream_secrets: Vec::new(),
            stream_token_max_ttl_s: 900,
        }
    }
}

impl CollectorConfig {
    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), CollectorError> {
        let bad = |m: String| Err(CollectorError::Config(m));
        if self.listen.parse::<SocketAddr>().is_err() {
            return bad(format!(
                "collector.listen = {:?} is not an address such as 127.0.0.1:8088",
                self.listen
            ));
        }
        if self.topic.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return bad("collector.topic must not be empty".into());
        }
        if self.max_body_bytes == 0 || self.max_batch_events == 0 {
            return bad("collector.max_body_bytes and max_batch_events must be at least 1".into());
        }
        if self.max_body_bytes > u32::MAX as usize {
            return bad("collector.max_body_bytes must be below 4 GiB".into());
        }
        if self.max_in_flight_bytes < self.max_body_bytes {
            return bad(format!(
                "collector.max_in_flight_bytes ({}) must hold at least one largest body \
                 (max_body_bytes = {})",
                self.max_in_flight_bytes, self.max_body_bytes
            ));
        }
        if self.produce_timeout_ms == 0 || self.read_timeout_ms == 0 {
            return bad(
                "collector.produce_timeout_ms and read_timeout_ms must be at least 1".into(),
            );
        }
        if self.retry_after_s == 0 {
            return bad("collector.retry_after_s must be at least 1".into());
        }
        if self.rate_limit_events_per_s > 0
            && self.rate_limit_burst() < self.max_batch_events as u64
        {
            return bad(format!(
                "collector.rate_limit_burst ({}) is below max_batch_events ({}): a full batch \
                 could never be accepted",
                self.rate_limit_burst, self.max_batch_events
            ));
        }
        for origin in &self.cors_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.ends_with('/')
            {
                return bad(format!(
                    "collector.cors_origins: {origin:?} is not an origin such as \
                     \"https://shop.example\" (scheme, host, optional port, no path) or \"*\""
                ));
            }
        }
        let events = self.key_table()?;
        let rewards = self.reward_key_table()?;
        if let Some(shared) = events.keys().find(|h| rewards.contains_key(*h)) {
            return bad(format!(
                "collector.reward_keys: the key of {:?} is also an event key of {:?}: a \
                 reward key must be a key of its own (never one a tracker holds)",
                rewards[shared], events[shared]
            ));
        }
        if self
            .decisions_topic
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return bad("collector.decisions_topic must not be empty".into());
        }
        for s in &self.stream_secrets {
            if s.id.is_empty() || s.secret.chars().count() < 32 {
                return bad(format!(
                    "collector.stream_secrets: the entry of {:?} needs an id and a secret of at \
                     least 32 characters",
                    s.id
                ));
            }
        }
        if !(1..=86_400).contains(&self.stream_token_max_ttl_s) {
            return bad("collector.stream_token_max_ttl_s must be between 1 and 86400".into());
        }
        if self.auth == AuthMode::Keys && self.retailers.is_empty() {
            return bad(
                "collector.auth = \"keys\" needs at least one [[collector.retailers]] entry".into(),
            );
        }
        Ok(())
    }

    /// The key table: SHA-256 (lowercase hex) of a key -> the retailer it belongs to.
    pub(crate) fn key_table(&self) -> Result<BTreeMap<String, String>, CollectorError> {
        table_of(&self.retailers, "collector.retailers")
    }

    /// The reward keys: SHA-256 (lowercase hex) of a key -> the retailer it belongs to.
    pub(crate) fn reward_key_table(&self) -> Result<BTreeMap<String, String>, CollectorError> {
        table_of(&self.reward_keys, "collector.reward_keys")
    }

    /// The stream secrets: retailer -> its secrets (several while one rotates).
    pub(crate) fn stream_secret_table(&self) -> std::collections::HashMap<String, Vec<Vec<u8>>> {
        let mut table: std::collections::HashMap<String, Vec<Vec<u8>>> = Default::default();
        for s in &self.stream_secrets {
            table
                .entry(s.id.clone())
                .or_default()
                .push(s.secret.as_bytes().to_vec());
        }
        table
    }

    /// The effective burst of the rate limiter.
    pub(crate) fn rate_limit_burst(&self) -> u64 {
        if self.rate_limit_burst > 0 {
            self.rate_limit_burst
        } else {
            self.rate_limit_events_per_s
                .max(self.max_batch_events as u64)
        }
    }

    pub(crate) fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }

    pub(crate) fn produce_timeout(&self) -> Duration {
        Duration::from_millis(self.produce_timeout_ms)
    }

    pub(crate) fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }
}

/// SHA-256 (lowercase hex) of each key of `keys` -> its retailer; `what` names the list.
fn table_of(keys: &[RetailerKey], what: &str) -> Result<BTreeMap<String, String>, CollectorError> {
    let mut table = BTreeMap::new();
    for r in keys {
        let hash = r.key_sha256.to_ascii_lowercase();
        if r.id.is_empty() {
            return Err(CollectorError::Config(format!(
                "{what}: an entry has an empty id"
            )));
        }
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CollectorError::Config(format!(
                "{what}: the key_sha256 of {:?} is not 64 hex digits \
                     (printf %s KEY | sha256sum)",
                r.id
            )));
        }
        if let Some(other) = table.insert(hash, r.id.clone()) {
            if other != r.id {
                return Err(CollectorError::Config(format!(
                    "{what}: {other:?} and {:?} have the same key",
                    r.id
                )));
            }
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CollectorConfig, String> {
        let c: CollectorConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn an_empty_section_is_valid_and_open() {
        let c = parse("").unwrap();
        assert_eq!(c, CollectorConfig::default());
        assert_eq!(c.auth, AuthMode::None);
        assert_eq!(c.listen, "127.0.0.1:8088");
    }

    #[test]
    fn keys_need_retailers_and_well_formed_hashes() {
        let err = parse("auth = \"keys\"").unwrap_err();
        assert!(err.contains("needs at least one"), "{err}");
        let err = parse("[[retailers]]\nid = \"r1\"\nkey_sha256 = \"abc\"").unwrap_err();
        assert!(err.contains("not 64 hex digits"), "{err}");
        let h = "a".repeat(64);
        let err = parse(&format!(
            "[[retailers]]\nid = \"r1\"\nkey_sha256 = \"{h}\"\n[[retailers]]\nid = \"r2\"\nkey_sha256 = \"{}\"",
            h.to_uppercase()
        ))
        .unwrap_err();
        assert!(err.contains("have the same key"), "{err}");
        let c = parse(&format!(
            "auth = \"keys\"\n[[retailers]]\nid = \"r1\"\nkey_sha256 = \"{h}\"\n[[retailers]]\nid = \"r1\"\nkey_sha256 = \"{}\"",
            "b".repeat(64)
        ))
        .unwrap();
        assert_eq!(
            c.key_table().unwrap().len(),
            2,
            "two keys of one retailer (rotation)"
        );
    }

    #[test]
    fn reward_keys_are_keys_of_their_own() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let c = parse(&format!(
            "auth = \"keys\"\n[[retailers]]\nid = \"r1\"\nkey_sha256 = \"{a}\"\n\
             [[reward_keys]]\nid = \"r1\"\nkey_sha256 = \"{b}\""
        ))
        .unwrap();
        assert_eq!(c.reward_key_table().unwrap().len(), 1);
        let err = parse(&format!(
            "[[retailers]]\nid = \"r1\"\nkey_sha256 = \"{a}\"\n\
             [[reward_keys]]\nid = \"r1\"\nkey_sha256 = \"{}\"",
            a.to_uppercase()
        ))
        .unwrap_err();
        assert!(err.contains("also an event key"), "{err}");
        let err = parse("[[reward_keys]]\nid = \"r1\"\nkey_sha256 = \"x\"").unwrap_err();
        assert!(
            err.starts_with("collector configuration: collector.reward_keys:"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_impossible_values_are_refused() {
        assert!(parse("listen_addr = \"x\"")
            .unwrap_err()
            .contains("unknown field"));
        assert!(parse("listen = \"localhost\"").is_err());
        assert!(parse("max_in_flight_bytes = 10").is_err());
        assert!(parse("cors_origins = [\"shop.example\"]").is_err());
        assert!(parse("cors_origins = [\"https://shop.example/\"]").is_err());
        assert!(parse("cors_origins = [\"https://shop.example:8443\", \"*\"]").is_ok());
        assert!(parse("rate_limit_events_per_s = 10\nrate_limit_burst = 20").is_err());
        let c = parse("rate_limit_events_per_s = 10").unwrap();
        assert_eq!(c.rate_limit_burst(), 500);
    }
}
