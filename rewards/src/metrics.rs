//! The loader's Prometheus metrics (`GET /metrics`) and health (`GET /health`), served on
//! `[rewards] metrics_listen` by a small thread of its own.
//!
//! Every field of [`LoaderCounts`] is a counter `basketflow_rewards_<field>_total`; the
//! loader publishes its counts after each round of reading and writing (at least every
//! 200 ms). `/health` answers 200 with `{"status":"ok","batches":N}` (N rounds) once the
//! loader has finished its start (store, topics, erased shoppers, positions) and read once, 503
//! before.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::loader::LoaderCounts;

/// What each counter counts (the `# HELP` line), by [`LoaderCounts`] field.
const HELP: [(&str, &str); 11] = [
    ("contacts_stored", "Reward contacts written to the store"),
    (
        "contacts_invalid",
        "Messages of the contacts topic that are not a valid contact (skipped)",
    ),
    (
        "contacts_of_erased_shoppers",
        "Contacts of a shopper erased before they were read (dropped)",
    ),
    (
        "contacts_expired",
        "Contacts read already past their retention period (dropped)",
    ),
    (
        "tombstones_read",
        "Tombstones read on the contacts topic (skipped)",
    ),
    (
        "tombstones_produced",
        "Tombstones produced to the contacts topic, one per contact key of an erased shopper",
    ),
    (
        "erasures_applied",
        "Erasure requests applied: rows deleted, tombstones produced, audited",
    ),
    (
        "erasures_already_applied",
        "Erasure requests found already audited (a replay; nothing done)",
    ),
    (
        "requests_invalid",
        "Messages of the privacy topic that are not a valid request (skipped)",
    ),
    ("rows_erased", "Contact rows deleted by erasures"),
    ("rows_expired", "Contact rows deleted by retention"),
];

/// The `Content-Type` of [`render`]'s text (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The loader's counts as the endpoint shows them.
#[derive(Debug, Default)]
pub struct LoaderMetrics {
    state: Mutex<(LoaderCounts, u64)>,
}

impl LoaderMetrics {
    /// Publishes `counts` after a round of reading and writing.
    pub fn publish(&self, counts: &LoaderCounts) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = counts.clone();
        state.1 += 1;
    }

    fn snapshot(&self) -> (LoaderCounts, u64) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// `counts` in the Prometheus text format.
pub fn render(counts: &LoaderCounts) -> String {
    let serde_json::Value::Object(fields) = serde_json::to_value(counts).expect("counts serialize")
    else {
        unreachable!("LoaderCounts is a struct");
    };
    let mut out = String::new();
    for (name, value) in fields {
        let help = HELP.iter().find(|(n, _)| *n == name).map_or("", |(_, h)| h);
        let metric = format!("basketflow_rewards_{name}_total");
        out.push_str(&format!(
            "# HELP {metric} {help}.\n# TYPE {metric} counter\n{metric} {value}\n"
        ));
    }
    out
}

/// Serves `/metrics` and `/health` of `metrics` on `listen` (port 0: any free port) from a
/// thread; returns the address.
pub fn serve(listen: &str, metrics: Arc<LoaderMetrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("rewards-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                // One scrape at a time; a slow client cannot hold it long.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = answer(stream, &metrics);
            }
        })?;
    Ok(addr)
}

fn answer(mut stream: TcpStream, metrics: &LoaderMetrics) -> std::io::Result<()> {
    let mut request_line = String::new();
    BufReader::new(&stream).read_line(&mut request_line)?;
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (counts, batches) = metrics.snapshot();
    let (status, content_type, body) = match path {
        "/metrics" => ("200 OK", CONTENT_TYPE, render(&counts)),
        "/health" if batches > 0 => (
            "200 OK",
            "application/json",
            format!("{{\"status\":\"ok\",\"batches\":{batches}}}"),
        ),
        "/health" => (
            "503 Service Unavailable",
            "application/json",
            "{\"status\":\"starting\",\"batches\":0}".to_string(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn every_count_is_a_documented_counter() {
        let text = render(&LoaderCounts {
            contacts_stored: 3,
            rows_erased: 2,
            ..LoaderCounts::default()
        });
        assert!(text.contains("basketflow_rewards_contacts_stored_total 3\n"));
        assert!(text.contains("basketflow_rewards_rows_erased_total 2\n"));
        assert!(text.contains("basketflow_rewards_rows_expired_total 0\n"));
        assert_eq!(text.matches("# TYPE").count(), HELP.len());
        for (name, _) in HELP {
            assert!(
                text.contains(&format!("# HELP basketflow_rewards_{name}_total ")),
                "{name}"
            );
        }
        assert!(!text.contains(" ."), "every counter has its help");
    }

    #[test]
    fn the_endpoint_serves_metrics_and_health() {
        let metrics = Arc::new(LoaderMetrics::default());
        let addr = serve("127.0.0.1:0", metrics.clone()).unwrap();
        let get = |path: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        assert!(get("/health").starts_with("HTTP/1.1 503"));
        metrics.publish(&LoaderCounts {
            erasures_applied: 1,
            ..LoaderCounts::default()
        });
        assert!(get("/health").starts_with("HTTP/1.1 200"));
        assert!(get("/metrics").contains("basketflow_rewards_erasures_applied_total 1\n"));
        assert!(get("/nope").starts_with("HTTP/1.1 404"));
    }
}
