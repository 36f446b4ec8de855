//! Prometheus metrics of the collector (`GET /metrics`), kept in prometheus-client's metric
//! types and written by its encoder in the Prometheus text format.
//!
//! Counters are atomics updated on the request path; the counters of every HTTP status and
//! reason are created up front (so each is exposed from zero) and kept by index, so counting
//! takes no lock and no allocation. Names:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `basketflow_collector_requests_total` | counter | `code` (HTTP status of `POST /v1/events`) |
//! | `basketflow_collector_events_accepted_total` | counter | |
//! | `basketflow_collector_events_rejected_total` | counter | `code` (contract code or `unauthorized`) |
//! | `basketflow_collector_events_failed_total` | counter | (valid, but the broker did not acknowledge) |
//! | `basketflow_collector_events_unknown_fields_total` | counter | (accepted events carrying unknown fields) |
//! | `basketflow_collector_request_seconds` | histogram | (`POST /v1/events`, received to answered) |
//! | `basketflow_collector_produce_seconds` | histogram | (first event handed to the producer to last acknowledgement, per request) |
//! | `basketflow_collector_in_flight_bytes` | gauge | (bytes of bodies held, see `max_in_flight_bytes`) |
//! | `basketflow_collector_reward_contact_requests_total` | counter | `code` (HTTP status of `POST /v1/reward-contacts`) |
//! | `basketflow_collector_reward_contacts_accepted_total` | counter | (contacts acknowledged by the broker) |
//! | `basketflow_collector_reward_contacts_refused_total` | counter | `code` (the answer's `error`) |

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use basketflow_ingest::RejectCode;

/// The `Content-Type` of [`Metrics::render`]'s text (Prometheus text format 0.0.4).
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// HTTP statuses `POST /v1/events` answers with (others are counted as `other`).
const STATUSES: [u16; 8] = [200, 400, 401, 408, 413, 415, 429, 503];
/// HTTP statuses `POST /v1/reward-contacts` answers with (others are counted as `other`).
const REWARD_STATUSES: [u16; 9] = [200, 400, 401, 403, 404, 408, 413, 415, 503];
/// The `error` codes of `POST /v1/reward-contacts` refusals (others are counted as `other`).
const REWARD_REFUSALS: [&str; 11] = [
    "not_configured",
    "unauthorized",
    "unsupported_encoding",
    "body_too_large",
    "timeout",
    "malformed_body",
    "unknown_field",
    "missing_field",
    "invalid_field",
    "forbidden",
    "unavailable",
];
/// Code of an event refused because the request's key is not its retailer's.
pub const UNAUTHORIZED: &str = "unauthorized";
/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// The `code` label of the requests and rejections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: String,
}

/// The counters of `codes`, created in `family` (so it exposes each of them), in that order.
fn by_code(family: &Family<Code, Counter>, codes: impl Iterator<Item = String>) -> Vec<Counter> {
    codes
        .map(|code| family.get_or_create_owned(&Code { code }))
        .collect()
}

/// Every metric of one collector.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// By the index of the status in `STATUSES`, then `other`.
    requests: Vec<Counter>,
    accepted: Counter,
    /// By the index of the code in `RejectCode::ALL`, then `unauthorized`.
    rejected: Vec<Counter>,
    failed: Counter,
    unknown_fields: Counter,
    /// `POST /v1/events`, from receipt to answer, in seconds.
    pub request_seconds: Histogram,
    /// Per request, from the first event handed to the producer to the last acknowledgement,
    /// in seconds.
    pub produce_seconds: Histogram,
    in_flight_bytes: Gauge,
    /// By the index of the status in `REWARD_STATUSES`, then `other`.
    reward_requests: Vec<Counter>,
    reward_accepted: Counter,
    /// By the index of the code in `REWARD_REFUSALS`, then `other`.
    reward_refused: Vec<Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        // Help texts without the final period: the registry adds it.
        let mut registry = Registry::with_prefix("basketflow_collector");
        let requests = Family::default();
        registry.register(
            "requests",
            "Answers to POST /v1/events, by HTTP status",
            requests.clone(),
        );
        let accepted = Counter::default();
        registry.register(
            "events_accepted",
            "Events acknowledged by the broker",
            accepted.clone(),
        );
        let rejected = Family::default();
        registry.register(
            "events_rejected",
            "Events refused, by reason",
            rejected.clone(),
        );
        let failed = Counter::default();
        registry.register(
            "events_failed",
            "Valid events the broker did not acknowledge in time (answered 503)",
            failed.clone(),
        );
        let unknown_fields = Counter::default();
        registry.register(
            "events_unknown_fields",
            "Accepted events carrying fields the contract does not know",
            unknown_fields.clone(),
        );
        let request_seconds = Histogram::new(BUCKETS);
        registry.register(
            "request_seconds",
            "POST /v1/events, from receipt to answer",
            request_seconds.clone(),
        );
        let produce_seconds = Histogram::new(BUCKETS);
        registry.register(
            "produce_seconds",
            "Per request, from handing the events to the producer to the last broker acknowledgement",
            produce_seconds.clone(),
        );
        let in_flight_bytes = Gauge::default();
        registry.register(
            "in_flight_bytes",
            "Request bytes held (received, not yet answered)",
            in_flight_bytes.clone(),
        );
        let reward_requests = Family::default();
        registry.register(
            "reward_contact_requests",
            "Answers to POST /v1/reward-contacts, by HTTP status",
            reward_requests.clone(),
        );
        let reward_accepted = Counter::default();
        registry.register(
            "reward_contacts_accepted",
            "Reward contacts acknowledged by the broker",
            reward_accepted.clone(),
        );
        let reward_refused = Family::default();
        registry.register(
            "reward_contacts_refused",
            "Reward contact requests refused, by error code",
            reward_refused.clone(),
        );
        let statuses = STATUSES.iter().map(u16::to_string);
        let reasons = RejectCode::ALL.iter().map(|c| c.as_str().to_string());
        Metrics {
            requests: by_code(&requests, statuses.chain(["other".to_string()])),
            rejected: by_code(&rejected, reasons.chain([UNAUTHORIZED.to_string()])),
            reward_requests: by_code(
                &reward_requests,
                REWARD_STATUSES
                    .iter()
                    .map(u16::to_string)
                    .chain(["other".to_string()]),
            ),
            reward_refused: by_code(
                &reward_refused,
                REWARD_REFUSALS
                    .iter()
                    .map(|c| c.to_string())
                    .chain(["other".to_string()]),
            ),
            reward_accepted,
            registry,
            accepted,
            failed,
            unknown_fields,
            request_seconds,
            produce_seconds,
            in_flight_bytes,
        }
    }
}

impl Metrics {
    /// Counts an answer to `POST /v1/events`.
    pub fn request(&self, status: u16) {
        let i = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        self.requests[i].inc();
    }

    /// Counts an answer to `POST /v1/reward-contacts`.
    pub fn reward_request(&self, status: u16) {
        let i = REWARD_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(REWARD_STATUSES.len());
        self.reward_requests[i].inc();
    }

    /// Counts a reward contact acknowledged by the broker.
    pub fn reward_contact_accepted(&self) {
        self.reward_accepted.inc();
    }

    /// Counts a refused reward contact request by its error code.
    pub fn reward_contact_refused(&self, code: &str) {
        let i = REWARD_REFUSALS
            .iter()
            .position(|&c| c == code)
            .unwrap_or(REWARD_REFUSALS.len());
        self.reward_refused[i].inc();
    }

    /// Counts acknowledged events.
    pub fn accepted(&self, n: u64) {
        self.accepted.inc_by(n);
    }

    /// Counts an event refused by the contract (`Some(code)`) or for its retailer (`None`).
    pub fn rejected(&self, code: Option<RejectCode>) {
        let i = code.map_or(RejectCode::ALL.len(), |c| {
            RejectCode::ALL.iter().position(|&k| k == c).unwrap()
        });
        self.rejected[i].inc();
    }

    /// Counts valid events the broker did not acknowledge.
    pub fn failed(&self, n: u64) {
        self.failed.inc_by(n);
    }

    /// Counts an accepted event that carried fields the contract does not know.
    pub fn unknown_fields(&self) {
        self.unknown_fields.inc();
    }

    /// The text exposition ([`CONTENT_TYPE`]) of every metric; `in_flight_bytes` is sampled by
    /// the caller.
    pub fn render(&self, in_flight_bytes: u64) -> String {
        self.in_flight_bytes
            .set(i64::try_from(in_flight_bytes).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(4096);
        prometheus_text::encode(&mut out, &self.registry).expect("a String takes any text");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_exact_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request(200);
        m.request(200);
        m.request(418);
        m.accepted(3);
        m.rejected(Some(RejectCode::Pii));
        m.rejected(None);
        m.produce_seconds
            .observe(Duration::from_micros(1500).as_secs_f64());
        m.produce_seconds
            .observe(Duration::from_millis(40).as_secs_f64());
        m.produce_seconds
            .observe(Duration::from_secs(60).as_secs_f64());
        let text = m.render(42);
        for line in [
            "basketflow_collector_requests_total{code=\"200\"} 2",
            "basketflow_collector_requests_total{code=\"503\"} 0",
            "basketflow_collector_requests_total{code=\"other\"} 1",
            "basketflow_collector_events_accepted_total 3",
            "basketflow_collector_events_rejected_total{code=\"pii\"} 1",
            "basketflow_collector_events_rejected_total{code=\"unauthorized\"} 1",
            "basketflow_collector_events_rejected_total{code=\"too_large\"} 0",
            "basketflow_collector_produce_seconds_bucket{le=\"0.001\"} 0",
            "basketflow_collector_produce_seconds_bucket{le=\"0.002\"} 1",
            "basketflow_collector_produce_seconds_bucket{le=\"0.05\"} 2",
            "basketflow_collector_produce_seconds_bucket{le=\"30\"} 2",
            "basketflow_collector_produce_seconds_bucket{le=\"+Inf\"} 3",
            "basketflow_collector_produce_seconds_sum 60.0415",
            "basketflow_collector_produce_seconds_count 3",
            "basketflow_collector_in_flight_bytes 42",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
