//! Integration: the collector against the real broker at `$BASKETFLOW_BROKERS` (default
//! 127.0.0.1:9092, `scripts/stack up`). Each test runs its own collector on a free port,
//! producing to a fresh topic, and checks the exact answers and the exact topic content.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use basketflow_collector::auth::key_sha256;
use basketflow_collector::{AuthMode, CollectorConfig, RetailerKey};
use basketflow_testkit::kafka::read_text_pairs;
use basketflow_testkit::stack::brokers;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{event, post, request, start, stored};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn accepted(indexes: std::ops::Range<usize>) -> Vec<Value> {
    indexes
        .map(|i| json!({"index": i, "status": "accepted"}))
        .collect()
}

fn keyed(retailers: &[(&str, &str)]) -> CollectorConfig {
    CollectorConfig {
        auth: AuthMode::Keys,
        retailers: retailers
            .iter()
            .map(|(id, key)| RetailerKey {
                id: id.to_string(),
                key_sha256: key_sha256(key),
            })
            .collect(),
        ..CollectorConfig::default()
    }
}

#[tokio::test]
async fn good_events_in_every_shape_are_stored_once_as_sent() {
    let c = start(
        CollectorConfig::default(),
        &brokers(),
        "collector-shapes",
        4,
    )
    .await;

    // One event, pretty-printed: stored as sent (whitespace and all).
    let single = "{\n  \"event_id\": \"e0\", \"type\": \"page_viewed\", \"retailer_id\": \"r1\",\n  \"shopper_id\": \"s0\", \"occurred_at\": \"2026-11-22T10:00:00Z\",\n  \"url\": \"https://shop.example/\", \"page_type\": \"home\", \"context\": {\"ua\": \"x\"}\n}";
    let r = post(
        c.addr,
        &[("content-type", "application/json")],
        format!("{single}\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({"accepted": 1, "rejected": 0, "failed": 0, "results": accepted(0..1)})
    );

    // A JSON array: each element's own bytes.
    let (e1, e2, e3) = (
        event("e1", "r1", "s1"),
        event("e2", "r1", "s2"),
        event("e3", "r2", "s1"),
    );
    let body = format!("[{e1},\n  {e2} , {e3}]");
    let r = post(c.addr, &[], body).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"accepted": 3, "rejected": 0, "failed": 0, "results": accepted(0..3)})
    );

    // JSON lines, declared.
    let (e4, e5) = (event("e4", "r1", "s4"), event("e5", "r1", "s5"));
    let r = post(
        c.addr,
        &[("content-type", "application/x-ndjson")],
        format!("{e4}\r\n\n{e5}\n"),
    )
    .await;
    assert_eq!(r.json()["accepted"], 2);

    // navigator.sendBeacon: text/plain, a batch.
    let (e6, e7) = (event("e6", "r1", "s6"), event("e7", "r1", "s7"));
    let r = post(
        c.addr,
        &[("content-type", "text/plain;charset=UTF-8")],
        format!("[{e6},{e7}]"),
    )
    .await;
    assert_eq!(r.json()["accepted"], 2);

    // gzip, JSON lines without a content type.
    let (e8, e9) = (event("e8", "r1", "s8"), event("e9", "r2", "s9"));
    let r = post(
        c.addr,
        &[("content-encoding", "gzip")],
        gzip(format!("{e8}\n{e9}\n").as_bytes()),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["accepted"], 2);

    assert_eq!(
        read_text_pairs(&brokers(), &c.topic),
        stored(&[single, &e1, &e2, &e3, &e4, &e5, &e6, &e7, &e8, &e9]),
        "every accepted event exactly once, key = shopper_id, bytes as sent"
    );

    let health = request(c.addr, "GET", "/health", &[], "").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["last_delivery"], "ok");
    c.stop().await;
}

#[tokio::test]
async fn bad_and_mixed_batches_get_a_verdict_per_event() {
    let c = start(CollectorConfig::default(), &brokers(), "collector-mixed", 2).await;
    let good1 = event("g1", "r1", "s1");
    let good2 = event("g2", "r1", "s2");
    let pii = event("b1", "r1", "s3").replace("\"url\"", "\"email\":\"a@b.example\",\"url\"");
    let zero = r#"{"event_id":"b2","type":"product_added","retailer_id":"r1","shopper_id":"s1","occurred_at":"2026-11-22T10:00:00Z","product":{"product_id":"p1","category":"pasta","unit_price_cents":199},"quantity":0}"#;
    let untyped = r#"{"event_id":"b3","retailer_id":"r1","shopper_id":"s1"}"#;

    // Mixed: the good ones are stored, 200, each bad one says why.
    let r = post(c.addr, &[], format!("[{good1},{pii},{zero},{good2},42]")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"accepted": 2, "rejected": 3, "failed": 0, "results": [
            {"index": 0, "status": "accepted"},
            {"index": 1, "status": "rejected", "code": "pii", "field": "email",
             "reason": "field \"email\" carries identifying or socio-demographic data, which \
                        basketflow refuses (the only shopper identifier is shopper_id)"},
            {"index": 2, "status": "rejected", "code": "invalid_value", "field": "quantity",
             "reason": "must be at least 1, got 0"},
            {"index": 3, "status": "accepted"},
            {"index": 4, "status": "rejected", "code": "wrong_type", "field": "",
             "reason": "expected a JSON object, got number 42"},
        ]})
    );

    // All bad (JSON lines: a malformed line is refused on its own): 400, nothing stored.
    let r = post(c.addr, &[], format!("{untyped}\n{{\"event_id\": \n{pii}")).await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["error"], "rejected");
    assert_eq!(
        (v["accepted"].clone(), v["rejected"].clone()),
        (json!(0), json!(3))
    );
    let codes: Vec<(&str, &str)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["code"].as_str().unwrap(), r["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [
            ("missing_field", "type"),
            ("malformed_json", ""),
            ("pii", "email")
        ]
    );

    assert_eq!(
        read_text_pairs(&brokers(), &c.topic),
        stored(&[&good1, &good2])
    );

    let metrics = request(c.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body).unwrap();
    for line in [
        "basketflow_collector_requests_total{code=\"200\"} 1",
        "basketflow_collector_requests_total{code=\"400\"} 1",
        "basketflow_collector_events_accepted_total 2",
        "basketflow_collector_events_rejected_total{code=\"pii\"} 2",
        "basketflow_collector_events_rejected_total{code=\"invalid_value\"} 1",
        "basketflow_collector_events_rejected_total{code=\"wrong_type\"} 1",
        "basketflow_collector_events_rejected_total{code=\"missing_field\"} 1",
        "basketflow_collector_events_rejected_total{code=\"malformed_json\"} 1",
        "basketflow_collector_events_failed_total 0",
        "basketflow_collector_produce_seconds_count 1",
        "basketflow_collector_request_seconds_count 2",
        "basketflow_collector_in_flight_bytes 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    c.stop().await;
}

#[tokio::test]
async fn a_key_authorizes_its_own_retailer_only() {
    let c = start(
        keyed(&[("r1", "key-one"), ("r2", "key-two")]),
        &brokers(),
        "collector-keys",
        2,
    )
    .await;
    let (a, b) = (event("a", "r1", "s1"), event("b", "r2", "s2"));

    let r = post(c.addr, &[], a.clone()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"basketflow\"")
    );
    let r = post(c.addr, &[("authorization", "Bearer key-three")], a.clone()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "this API key belongs to no retailer");
    // The hash itself is not a key.
    let hash = key_sha256("key-one");
    let r = post(c.addr, &[("x-api-key", &hash)], a.clone()).await;
    assert_eq!(r.status, 401);

    // r1's key: r1's event accepted, r2's refused on its own.
    let r = post(
        c.addr,
        &[("authorization", "Bearer key-one")],
        format!("[{a},{b}]"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"accepted": 1, "rejected": 1, "failed": 0, "results": [
            {"index": 0, "status": "accepted"},
            {"index": 1, "status": "rejected", "code": "unauthorized", "field": "retailer_id",
             "reason": "the API key is retailer \"r1\"'s, the event is retailer \"r2\"'s"},
        ]})
    );
    // sendBeacon cannot set headers: the key in the query string.
    let r = request(
        c.addr,
        "POST",
        "/v1/events?key=key-two",
        &[("content-type", "text/plain")],
        b.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    // Only wrong-retailer events: 400, nothing stored.
    let r = post(c.addr, &[("x-api-key", "key-two")], a.clone()).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["results"][0]["code"], "unauthorized");

    assert_eq!(read_text_pairs(&brokers(), &c.topic), stored(&[&a, &b]));
    c.stop().await;
}

#[tokio::test]
async fn limits_answer_413_415_400_and_429() {
    let config = CollectorConfig {
        max_body_bytes: 2_000,
        max_batch_events: 3,
        rate_limit_events_per_s: 1,
        rate_limit_burst: 3,
        ..keyed(&[("r1", "k1")])
    };
    let c = start(config, &brokers(), "collector-limits", 1).await;
    let key = [("authorization", "Bearer k1")];
    let e = |id: &str| event(id, "r1", "s1");

    let big = format!("[{}]", vec![e("x"); 14].join(","));
    assert!(big.len() > 2_000);
    let r = post(c.addr, &key, big.clone()).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");
    // Small on the wire, too large decoded.
    let zipped = gzip(big.as_bytes());
    assert!(zipped.len() < 2_000);
    let r = post(c.addr, &[key[0], ("content-encoding", "gzip")], zipped).await;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.json()["reason"],
        "the body (decompressed) is larger than the limit of 2000 bytes"
    );
    let r = post(
        c.addr,
        &key,
        format!("{}\n{}\n{}\n{}", e("1"), e("2"), e("3"), e("4")),
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.json(),
        json!({"error": "batch_too_large", "reason": "the body holds 4 events; the limit is 3 per request"})
    );
    let r = post(c.addr, &[key[0], ("content-encoding", "br")], e("1")).await;
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["error"], "unsupported_encoding");
    let r = post(c.addr, &[key[0], ("content-encoding", "gzip")], e("1")).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("malformed_body"))
    );
    let r = post(c.addr, &key, " \n").await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("empty_body"))
    );
    let r = post(c.addr, &key, format!("[{},", e("1"))).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("malformed_body"))
    );

    // 1 event/s, bursts of 3: a full batch passes; the next one right after needs 3 more
    // tokens, 3 s of refill (the two requests are well under a second apart).
    let r = post(
        c.addr,
        &key,
        format!("[{},{},{}]", e("r1"), e("r2"), e("r3")),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post(
        c.addr,
        &key,
        format!("[{},{},{}]", e("r4"), e("r5"), e("r6")),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "rate_limited");
    assert_eq!(r.header("retry-after"), Some("3"));

    assert_eq!(
        read_text_pairs(&brokers(), &c.topic),
        stored(&[&e("r1"), &e("r2"), &e("r3")])
    );
    c.stop().await;
}

async fn preflight(addr: std::net::SocketAddr, origin: &str) -> common::Reply {
    let headers = [
        ("origin", origin),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "content-type,content-encoding,x-api-key",
        ),
    ];
    request(addr, "OPTIONS", "/v1/events", &headers, "").await
}

#[tokio::test]
async fn browsers_of_configured_origins_get_cors_answers() {
    let config = CollectorConfig {
        cors_origins: vec!["https://shop.example".into()],
        ..keyed(&[("r1", "k1")])
    };
    let c = start(config, &brokers(), "collector-cors", 1).await;
    let r = preflight(c.addr, "https://shop.example").await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization, x-api-key, content-type, content-encoding")
    );
    let r = preflight(c.addr, "https://other.example").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // Errors too carry the CORS headers, so the tracker can read why.
    let r = post(
        c.addr,
        &[("origin", "https://shop.example")],
        event("a", "r1", "s1"),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("retry-after")
    );
    let r = post(
        c.addr,
        &[("origin", "https://shop.example"), ("x-api-key", "k1")],
        event("a", "r1", "s1"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    c.stop().await;
}

/// Sends the head of a POST announcing `length` bytes and then nothing: the collector reserves
/// the in-flight budget for it and waits for the body.
async fn stalled_request(addr: std::net::SocketAddr, length: usize) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

#[tokio::test]
async fn a_full_in_flight_budget_answers_503_after_the_queue_timeout() {
    let config = CollectorConfig {
        max_body_bytes: 1_000,
        max_in_flight_bytes: 1_500,
        queue_timeout_ms: 300,
        read_timeout_ms: 4_000,
        retry_after_s: 3,
        ..CollectorConfig::default()
    };
    let c = start(config, &brokers(), "collector-budget", 1).await;
    let mut stalled = stalled_request(c.addr, 1_000).await;
    // Poll until the stalled request holds its bytes (no fixed sleep).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = request(c.addr, "GET", "/health", &[], "").await;
        if h.json()["in_flight_bytes"] == 1_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled request never held its bytes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let e = event("late", "r1", "s1");
    let asked = Instant::now();
    let r = post(c.addr, &[], format!("{e}{}", " ".repeat(900 - e.len()))).await;
    let waited = asked.elapsed();
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "overloaded");
    assert_eq!(r.header("retry-after"), Some("3"));
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "waited {waited:?}"
    );
    // A small request still fits next to the stalled one.
    let small = event("small", "r1", "s1");
    assert_eq!(post(c.addr, &[], small.clone()).await.status, 200);

    // The stalled client gets 408 at its read timeout, and its bytes are released.
    let mut answer = String::new();
    stalled.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    let h = request(c.addr, "GET", "/health", &[], "").await;
    assert_eq!(h.json()["in_flight_bytes"], 0);
    assert_eq!(post(c.addr, &[], e.clone()).await.status, 200);

    assert_eq!(read_text_pairs(&brokers(), &c.topic), stored(&[&small, &e]));
    c.stop().await;
}
