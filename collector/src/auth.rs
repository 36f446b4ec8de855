//! Retailer API keys and per-retailer rate limits.
//!
//! A request names its key in `Authorization: Bearer <key>`, in `X-Api-Key: <key>`, or, for
//! `navigator.sendBeacon` (which cannot set headers), in the query string `?key=<key>`. The
//! configuration holds only SHA-256 hashes: the presented key is hashed and looked up. Looking
//! up a hash leaks nothing useful through timing (an attacker learns at most a prefix of the
//! hash of their own guess, not of a valid key), so no constant-time comparison is needed.
//!
//! With `auth = "keys"`, a request without a key, or with a key that belongs to no retailer,
//! is refused as a whole (401). A valid key of retailer R authorizes R's events only: an
//! event of another retailer in the same request is refused on its own with the code
//! `unauthorized` (field `retailer_id`), the others are accepted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of `key`: what `key_sha256` in the configuration holds.
pub fn key_sha256(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The key a request presents, if any: `Authorization: Bearer`, then `X-Api-Key`, then the
/// `key` query parameter.
pub fn presented_key(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(auth) = header("authorization") {
        let mut parts = auth.splitn(2, ' ');
        if parts
            .next()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        {
            if let Some(key) = parts.next().map(str::trim).filter(|k| !k.is_empty()) {
                return Some(key.to_string());
            }
        }
    }
    if let Some(key) = header("x-api-key").filter(|k| !k.is_empty()) {
        return Some(key.to_string());
    }
    form_urlencoded::parse(query?.as_bytes())
        .find(|(name, value)| name == "key" && !value.is_empty())
        .map(|(_, value)| value.into_owned())
}

/// Key hashes -> retailers.
#[derive(Debug, Default)]
pub struct Keys {
    by_hash: BTreeMap<String, String>,
}

impl Keys {
    /// The table of `key_sha256` (lowercase) -> retailer id.
    pub fn new(by_hash: BTreeMap<String, String>) -> Keys {
        Keys { by_hash }
    }

    /// The retailer whose key `key` is.
    pub fn retailer(&self, key: &str) -> Option<&str> {
        self.by_hash.get(&key_sha256(key)).map(String::as_str)
    }
}

/// Token buckets, one per retailer: `rate` events per second, at most `burst` at once.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter of `rate` events/s with bursts of `burst` events.
    pub fn new(rate: u64, burst: u64) -> RateLimiter {
        RateLimiter {
            rate: rate as f64,
            burst: burst as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `events` tokens from `retailer`'s bucket, or says how long until they would be
    /// there (and takes nothing).
    pub fn take(&self, retailer: &str, events: usize, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(retailer.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now.max(bucket.at);
        let want = events as f64;
        if bucket.tokens >= want {
            bucket.tokens -= want;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((want - bucket.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn key_hash_is_the_sha256sum_of_the_key() {
        // printf %s secret | sha256sum
        assert_eq!(
            key_sha256("secret"),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
    }

    #[test]
    fn the_key_comes_from_bearer_then_x_api_key_then_the_query() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h, None), None);
        assert_eq!(presented_key(&h, Some("a=1&key=q%2Bk")), Some("q+k".into()));
        assert_eq!(presented_key(&h, Some("key=")), None);
        h.insert("x-api-key", HeaderValue::from_static(" xk "));
        assert_eq!(presented_key(&h, Some("key=q")), Some("xk".into()));
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&h, None), Some("xk".into()));
        h.insert("authorization", HeaderValue::from_static("bearer  bk"));
        assert_eq!(presented_key(&h, Some("key=q")), Some("bk".into()));
    }

    #[test]
    fn keys_map_to_their_retailer_only() {
        let keys = Keys::new(BTreeMap::from([(key_sha256("k1"), "r1".to_string())]));
        assert_eq!(keys.retailer("k1"), Some("r1"));
        assert_eq!(keys.retailer("k2"), None);
        assert_eq!(
            keys.retailer(&key_sha256("k1")),
            None,
            "the hash is not the key"
        );
    }

    #[test]
    fn token_buckets_refill_at_the_rate_up_to_the_burst() {
        let limiter = RateLimiter::new(100, 200);
        let t0 = Instant::now();
        assert_eq!(limiter.take("r1", 150, t0), Ok(()));
        assert_eq!(limiter.take("r1", 100, t0), Err(Duration::from_millis(500)));
        assert_eq!(
            limiter.take("r2", 200, t0),
            Ok(()),
            "buckets are per retailer"
        );
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(limiter.take("r1", 100, t1), Ok(()));
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(
            limiter.take("r1", 200, t2),
            Ok(()),
            "refills up to the burst"
        );
        assert!(limiter.take("r1", 1, t2).is_err());
    }
}
