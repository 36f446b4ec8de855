//! Tests of the registry and its exposition.

use std::collections::BTreeSet;

use super::*;

/// A registry with a value in every kind of metric.
fn busy() -> Arc<Registry> {
    let r = Arc::new(Registry::default());
    let events = Arc::new(SourceStats::default());
    events.messages.store(7, Ordering::Relaxed);
    events.bytes.store(700, Ordering::Relaxed);
    events
        .partitions
        .lock()
        .unwrap()
        .extend([(0, (10, 15)), (1, (4, -1))]);
    r.sources.lock().unwrap().extend([
        ("events".to_string(), 0, events.clone()),
        ("events".to_string(), 1, events),
    ]);
    r.rejections.lock().unwrap().insert("pii".into(), 2);
    r.outputs.by_kind.lock().unwrap().insert("upsell".into(), 3);
    r.outputs.dead_letters.store(1, Ordering::Relaxed);
    for ms in [1, 3, 30_000] {
        r.outputs.latency.observe(ms);
    }
    r.arranged_records.store(42, Ordering::Relaxed);
    r.frontier_ms.store(u64::MAX, Ordering::Relaxed);
    r.running.store(true, Ordering::Relaxed);
    let mut arrangements = r.arrangements.lock().unwrap();
    let worker = arrangements.entry(0).or_default();
    worker.names.insert(5, "Arrange: \"baskets\"".into());
    worker
        .held
        .insert(5, ArrangementRecords { now: 9, peak: 12 });
    drop(arrangements);
    r
}

#[test]
fn the_exposition_has_the_names_labels_and_values_of_the_runbook() {
    let text = Served::new(busy()).metrics();
    for line in [
        "# HELP basketflow_messages_consumed_total Messages read from Kafka by this process.",
        "# TYPE basketflow_messages_consumed_total counter",
        "basketflow_messages_consumed_total{topic=\"events\"} 14",
        "basketflow_message_bytes_consumed_total{topic=\"events\"} 1400",
        "# TYPE basketflow_consumer_lag_messages gauge",
        "basketflow_consumer_lag_messages{topic=\"events\",partition=\"0\"} 5",
        "basketflow_events_rejected_total{reason=\"pii\"} 2",
        "basketflow_frontier_lag_seconds 0.0",
        "basketflow_caught_up 1",
        "basketflow_clickhouse_committed_lag_seconds NaN",
        "basketflow_decisions_total{kind=\"upsell\"} 3",
        "basketflow_dead_letters_total 1",
        "basketflow_clickhouse_errors_total 0",
        "# TYPE basketflow_decision_latency_seconds histogram",
        "basketflow_decision_latency_seconds_bucket{le=\"0.001\"} 1",
        "basketflow_decision_latency_seconds_bucket{le=\"0.002\"} 1",
        "basketflow_decision_latency_seconds_bucket{le=\"0.005\"} 2",
        "basketflow_decision_latency_seconds_bucket{le=\"10\"} 2",
        "basketflow_decision_latency_seconds_bucket{le=\"+Inf\"} 3",
        "basketflow_decision_latency_seconds_sum 30.004",
        "basketflow_decision_latency_seconds_count 3",
        "basketflow_arrangement_records 42",
        "# TYPE basketflow_checkpoints_written_total counter",
        "basketflow_checkpoints_written_total 0",
        "basketflow_checkpoint_restored_at_ms 0",
        "basketflow_arrangement_records_by_name{arrangement=\"Arrange: \\\"baskets\\\"\"} 9",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // No watermark yet: no lag sample for partition 1; one `+Inf` bucket.
    assert!(!text.contains("partition=\"1\""), "{text}");
    assert_eq!(text.matches("le=\"+Inf\"").count(), 1, "{text}");
}

/// Every `basketflow_…` name in `deploy/prometheus/alerts.yml` is a series of the exposition.
#[test]
fn the_alert_rules_use_exposed_metric_names() {
    let text = Served::new(busy()).metrics();
    let mut exposed = BTreeSet::new();
    for line in text.lines() {
        let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|l| l.split_once(' '))
        else {
            continue;
        };
        exposed.insert(name.to_string());
        if kind == "histogram" {
            exposed.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
        }
    }
    let rules = include_str!("../../deploy/prometheus/alerts.yml");
    let used: BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| w.starts_with("basketflow_"))
        .collect();
    assert!(used.len() >= 10, "{used:?}");
    for name in used {
        assert!(
            exposed.contains(name),
            "alerts.yml uses {name}, not exposed: {exposed:?}"
        );
    }
}

#[test]
fn health_is_served_with_its_status_and_other_paths_are_not_found() {
    let registry = Arc::new(Registry {
        caught_up_lag_ms: 5_000,
        ..Registry::default()
    });
    let addr = serve("127.0.0.1:0", registry.clone()).unwrap();
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    let starting = get("/health");
    assert!(starting.starts_with("HTTP/1.1 503"), "{starting}");
    assert!(starting.contains("\"running\":false"), "{starting}");
    registry.running.store(true, Ordering::Relaxed);
    registry.frontier_ms.store(wall_ms(), Ordering::Relaxed);
    let caught_up = get("/health");
    assert!(caught_up.starts_with("HTTP/1.1 200"), "{caught_up}");
    assert!(caught_up.contains("\"caught_up\":true"), "{caught_up}");
    let metrics = get("/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("\nbasketflow_caught_up 1\n"), "{metrics}");
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
}
