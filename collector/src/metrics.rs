//! Prometheus metrics of the collector, in the text exposition format (`GET /metrics`).
//!
//! Counters and histograms are plain atomics updated on the request path; rendering reads
//! them without locks. Names:
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

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use basketflow_ingest::RejectCode;

/// HTTP statuses `POST /v1/events` answers with (others are counted as `other`).
const STATUSES: [u16; 8] = [200, 400, 401, 408, 413, 415, 429, 503];
/// Code of an event refused because the request's key is not its retailer's.
pub const UNAUTHORIZED: &str = "unauthorized";
/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// A latency histogram (cumulative buckets are computed when rendering).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Every metric of one collector.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; STATUSES.len() + 1],
    accepted: AtomicU64,
    rejected: [AtomicU64; RejectCode::ALL.len() + 1],
    failed: AtomicU64,
    unknown_fields: AtomicU64,
    /// `POST /v1/events`, from receipt to answer.
    pub request_seconds: Histogram,
    /// Per request, from the first event handed to the producer to the last acknowledgement.
    pub produce_seconds: Histogram,
}

impl Metrics {
    /// Counts an answer to `POST /v1/events`.
    pub fn request(&self, status: u16) {
        let i = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        self.requests[i].fetch_add(1, Relaxed);
    }

    /// Counts acknowledged events.
    pub fn accepted(&self, n: u64) {
        self.accepted.fetch_add(n, Relaxed);
    }

    /// Counts an event refused by the contract (`Some(code)`) or for its retailer (`None`).
    pub fn rejected(&self, code: Option<RejectCode>) {
        let i = code.map_or(RejectCode::ALL.len(), |c| {
            RejectCode::ALL.iter().position(|&k| k == c).unwrap()
        });
        self.rejected[i].fetch_add(1, Relaxed);
    }

    /// Counts valid events the broker did not acknowledge.
    pub fn failed(&self, n: u64) {
        self.failed.fetch_add(n, Relaxed);
    }

    /// Counts an accepted event that carried fields the contract does not know.
    pub fn unknown_fields(&self) {
        self.unknown_fields.fetch_add(1, Relaxed);
    }

    /// The text exposition of every metric; `in_flight_bytes` is sampled by the caller.
    pub fn render(&self, in_flight_bytes: u64) -> String {
        let mut out = String::with_capacity(4096);
        let p = "basketflow_collector";
        let _ = writeln!(
            out,
            "# HELP {p}_requests_total Answers to POST /v1/events, by HTTP status.\n\
             # TYPE {p}_requests_total counter"
        );
        let codes = STATUSES.iter().map(|s| s.to_string());
        for (code, n) in codes.chain(["other".into()]).zip(&self.requests) {
            let _ = writeln!(
                out,
                "{p}_requests_total{{code=\"{code}\"}} {}",
                n.load(Relaxed)
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {p}_{name} {help}\n# TYPE {p}_{name} counter\n{p}_{name} {}",
                v.load(Relaxed)
            );
        };
        counter(
            &mut out,
            "events_accepted_total",
            "Events acknowledged by the broker.",
            &self.accepted,
        );
        let _ = writeln!(
            out,
            "# HELP {p}_events_rejected_total Events refused, by reason.\n\
             # TYPE {p}_events_rejected_total counter"
        );
        let labels = RejectCode::ALL.iter().map(|c| c.as_str());
        for (code, n) in labels.chain([UNAUTHORIZED]).zip(&self.rejected) {
            let _ = writeln!(
                out,
                "{p}_events_rejected_total{{code=\"{code}\"}} {}",
                n.load(Relaxed)
            );
        }
        counter(
            &mut out,
            "events_failed_total",
            "Valid events the broker did not acknowledge in time (answered 503).",
            &self.failed,
        );
        counter(
            &mut out,
            "events_unknown_fields_total",
            "Accepted events carrying fields the contract does not know.",
            &self.unknown_fields,
        );
        self.request_seconds.render(
            &mut out,
            &format!("{p}_request_seconds"),
            "POST /v1/events, from receipt to answer.",
        );
        self.produce_seconds.render(
            &mut out,
            &format!("{p}_produce_seconds"),
            "Per request, from handing the events to the producer to the last broker acknowledgement.",
        );
        let _ = writeln!(
            out,
            "# HELP {p}_in_flight_bytes Request bytes held (received, not yet answered).\n\
             # TYPE {p}_in_flight_bytes gauge\n{p}_in_flight_bytes {in_flight_bytes}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_exact_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request(200);
        m.request(200);
        m.request(418);
        m.accepted(3);
        m.rejected(Some(RejectCode::Pii));
        m.rejected(None);
        m.produce_seconds.observe(Duration::from_micros(1500));
        m.produce_seconds.observe(Duration::from_millis(40));
        m.produce_seconds.observe(Duration::from_secs(60));
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
