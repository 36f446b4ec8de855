//! Integration: the broker stops while the collector serves, then comes back.
//!
//! The shared stack must not be disturbed (other tests use it), so this test starts a private
//! Kafka with `scripts/stack up kafka` in a temporary `BASKETFLOW_STACK_DIR` on its own ports
//! (`$OUTAGE_KAFKA_PORT`, default 29092, and the next port for its controller), stops and
//! restarts only that broker, and tears it down in a drop guard, so a failing test cleans up too.
//!
//! What must hold: events acknowledged before the outage are stored once; during the outage a
//! request is answered 503 with `Retry-After` within the produce timeout, its events marked
//! `failed`, and none of them is in the topic afterwards; once the broker is back the same
//! collector (no restart) accepts events again, and those are stored exactly once.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use basketflow_collector::CollectorConfig;
use basketflow_testkit::kafka::read_text_pairs;
use basketflow_testkit::{Ports, PrivateStack};
use serde_json::json;

use common::{event, post, request, start, stored};

/// The repository.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A private single broker (`scripts/stack up kafka`), stopped and removed when dropped.
fn private_kafka() -> PrivateStack {
    let port: u16 = std::env::var("OUTAGE_KAFKA_PORT")
        .ok()
        .map(|p| p.parse().expect("OUTAGE_KAFKA_PORT is a port"))
        .unwrap_or(29092);
    for p in [port, port + 1] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok(),
            "port {p} is taken; set OUTAGE_KAFKA_PORT to a free pair of ports"
        );
    }
    let ports = Ports {
        kafka: port,
        kafka_controller: port + 1,
        // Not started (only `kafka` is), but set so that nothing can touch the shared one.
        clickhouse_http: port + 2,
        clickhouse_tcp: port + 3,
    };
    let kafka = PrivateStack::new("collector-outage-stack", ports, "256M");
    std::fs::create_dir_all(kafka.dir().join("kafka")).unwrap();
    // Reuse the jars of the shared stack if it has them (read-only), instead of having
    // Maven copy 50 MB again; the stack script re-fetches if their stamp does not match.
    let shared_libs = repo().join(".stack/kafka/libs");
    if shared_libs.join(".stamp").exists() {
        std::os::unix::fs::symlink(&shared_libs, kafka.dir().join("kafka/libs")).unwrap();
    }
    kafka.script(&["up", "kafka"]);
    kafka
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_gets_503_and_nothing_acknowledged_is_lost() {
    let kafka = tokio::task::spawn_blocking(private_kafka).await.unwrap();
    let config = CollectorConfig {
        produce_timeout_ms: 2_000,
        queue_timeout_ms: 500,
        retry_after_s: 1,
        ..CollectorConfig::default()
    };
    let c = start(config, &kafka.stack().brokers, "collector-outage", 4).await;

    let before: Vec<String> = (0..3)
        .map(|i| event(&format!("a{i}"), "r1", &format!("s{i}")))
        .collect();
    let r = post(c.addr, &[], format!("[{}]", before.join(","))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["accepted"], 3);

    let kafka = tokio::task::spawn_blocking(move || {
        kafka.script(&["down", "kafka"]);
        kafka
    })
    .await
    .unwrap();

    // During the outage: 503 + Retry-After within the produce timeout, every valid event
    // `failed`, the invalid one still `rejected` with its reason.
    let during: Vec<String> = (0..2)
        .map(|i| event(&format!("b{i}"), "r1", &format!("s{i}")))
        .collect();
    let asked = Instant::now();
    let r = post(c.addr, &[], format!("[{},{},{{}}]", during[0], during[1])).await;
    let waited = asked.elapsed();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        waited < Duration::from_millis(3_500),
        "answered after {waited:?}"
    );
    let v = r.json();
    assert_eq!(
        (
            v["error"].clone(),
            v["accepted"].clone(),
            v["rejected"].clone(),
            v["failed"].clone()
        ),
        (json!("unavailable"), json!(0), json!(1), json!(2))
    );
    let statuses: Vec<(&str, &str)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].as_str().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("failed", "unavailable"),
            ("failed", "unavailable"),
            ("rejected", "missing_field")
        ]
    );
    assert_eq!(
        v["results"][0]["reason"],
        "the broker did not acknowledge within 2000 ms; not stored, retry later"
    );
    let health = request(c.addr, "GET", "/health", &[], "").await;
    assert_eq!(
        (
            health.status,
            health.json()["last_delivery"].clone(),
            health.json()["in_flight_bytes"].clone()
        ),
        (200, json!("failed"), json!(0))
    );

    let kafka = tokio::task::spawn_blocking(move || {
        kafka.script(&["up", "kafka"]);
        kafka
    })
    .await
    .unwrap();

    // Recovery, as a tracker would do it: re-send the same batch after Retry-After until it
    // is accepted. The broker is up; only the producer's reconnection can still be pending.
    let after: Vec<String> = (0..2)
        .map(|i| event(&format!("c{i}"), "r1", &format!("s{i}")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let r = post(c.addr, &[], format!("[{}]", after.join(","))).await;
        if r.status == 200 {
            assert_eq!(r.json()["accepted"], 2);
            break;
        }
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert!(
            Instant::now() < deadline,
            "still 503 after {attempts} attempts"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("recovered after {attempts} attempt(s)");

    let brokers = kafka.stack().brokers.clone();
    let topic = c.topic.clone();
    let got = tokio::task::spawn_blocking(move || read_text_pairs(&brokers, &topic))
        .await
        .unwrap();
    let want: Vec<&str> = before.iter().chain(&after).map(String::as_str).collect();
    assert_eq!(
        got,
        stored(&want),
        "acknowledged events exactly once, none of the 503's"
    );

    let metrics =
        String::from_utf8(request(c.addr, "GET", "/metrics", &[], "").await.body).unwrap();
    // The outage's 2 events, and those of recovery attempts that were still refused.
    let failed = format!("basketflow_collector_events_failed_total {}", 2 * attempts);
    assert!(
        metrics.lines().any(|l| l == failed),
        "missing {failed:?} in\n{metrics}"
    );
    c.stop().await;
    drop(kafka);
}
