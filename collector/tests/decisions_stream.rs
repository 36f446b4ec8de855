//! `GET /v1/decisions/stream` against the real broker: a page reads its own shopper's
//! committed decisions as Server-Sent Events, only with a valid token, and resumes after a
//! disconnection (`Last-Event-ID`) without losing or repeating a decision; an aborted
//! transaction's decision never reaches it.
//!
//! Needs `scripts/stack up` (broker at `$BASKETFLOW_BROKERS`, default 127.0.0.1:9092).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use basketflow_collector::decisions::sign;
use basketflow_collector::{Collector, CollectorConfig, StreamSecret};
use basketflow_testkit::kafka::{produce, test_producer, Topics};
use basketflow_testkit::stack::brokers;
use common::serve;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio::net::TcpStream;

const SECRET: &str = "r1-stream-secret-0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A page's open stream: the body, read frame by frame into SSE events.
struct Page {
    body: Incoming,
    pending: String,
}

/// One SSE event: (id, event, data).
type SseEvent = (String, String, String);

impl Page {
    /// Opens the stream with `token` (and `last_event_id`); panics unless the answer is 200
    /// `text/event-stream`.
    async fn open(addr: SocketAddr, token: &str, last_event_id: Option<&str>) -> Page {
        let (status, headers, body) = get(addr, token, last_event_id).await;
        assert_eq!(status, 200);
        assert_eq!(headers.get("content-type").unwrap(), "text/event-stream");
        Page {
            body,
            pending: String::new(),
        }
    }

    /// Waits (10 s at most) for the server to end the stream; panics on an event before it.
    async fn ends(&mut self) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(frame) = self.body.frame().await {
                if let Ok(bytes) = frame.unwrap().into_data() {
                    let text = std::str::from_utf8(&bytes).unwrap();
                    assert!(!text.contains("data:"), "an event after the stop: {text}");
                }
            }
        })
        .await
        .expect("the stream ends within 10 s");
    }

    /// The next event (keep-alive comments skipped), within 10 s.
    async fn next(&mut self) -> SseEvent {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = self.pending.find("\n\n") {
                    let block: String = self.pending.drain(..end + 2).collect();
                    let (mut id, mut event, mut data) =
                        (String::new(), String::new(), String::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            id = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("event:") {
                            event = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data = v.trim_start().to_owned();
                        }
                    }
                    if !data.is_empty() {
                        return (id, event, data);
                    }
                    continue;
                }
                let frame = self
                    .body
                    .frame()
                    .await
                    .expect("the stream stays open")
                    .unwrap();
                if let Ok(bytes) = frame.into_data() {
                    self.pending.push_str(std::str::from_utf8(&bytes).unwrap());
                }
            }
        })
        .await
        .expect("an event within 10 s")
    }
}

async fn get(
    addr: SocketAddr,
    token: &str,
    last_event_id: Option<&str>,
) -> (u16, hyper::HeaderMap, Incoming) {
    let headers: Vec<(&str, &str)> = last_event_id
        .map(|id| ("last-event-id", id))
        .into_iter()
        .collect();
    let path = format!("/v1/decisions/stream?token={token}");
    send(addr, "GET", &path, &headers, String::new()).await
}

/// A refused stream: its status and JSON `error` code.
async fn refused(addr: SocketAddr, token: &str, last_event_id: Option<&str>) -> (u16, String) {
    let (status, _, body) = get(addr, token, last_event_id).await;
    let body = body.collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    (status, json["error"].as_str().unwrap().to_owned())
}

fn decision(retailer: &str, id: &str) -> String {
    format!(
        r#"{{"decision_id":"{id}","retailer_id":"{retailer}","experience":{{"kind":"tension_cart","params":{{}}}}}}"#
    )
}

/// Produces `(shopper, retailer, decision id)` decisions, keyed by shopper; returns where each
/// landed as `partition:offset`.
fn publish(brokers: &str, topic: &str, decisions: &[(&str, &str, &str)]) -> Vec<String> {
    let values: Vec<(String, String)> = decisions
        .iter()
        .map(|(s, r, id)| (s.to_string(), decision(r, id)))
        .collect();
    let produced = produce(
        &test_producer(brokers),
        topic,
        values.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        None,
    );
    produced
        .landed
        .iter()
        .map(|l| {
            let l = l.unwrap();
            format!("{}:{}", l.partition, l.offset)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reads_its_shoppers_committed_decisions_and_resumes_without_loss_or_repeat() {
    let brokers = brokers();
    let topics = Topics::new(&brokers);
    let events = topics.fresh("test-dstream-events", 1);
    let decisions = topics.fresh("test-dstream-decisions", 4);
    let config = CollectorConfig {
        listen: "127.0.0.1:0".into(),
        stream_secrets: vec![StreamSecret {
            id: "r1".into(),
            secret: SECRET.into(),
        }],
        stream_token_max_ttl_s: 600,
        ..CollectorConfig::default()
    };
    let collector = Collector::bind(config, &brokers, &events)
        .await
        .unwrap()
        .with_decision_streams(&brokers, &decisions);
    let addr = collector.local_addr();
    let ready = std::time::Instant::now() + Duration::from_secs(30);
    while !collector.decision_streams_ready() {
        assert!(
            std::time::Instant::now() < ready,
            "the decisions reader is ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (stop, server) = serve(collector);

    // Only a valid token of the retailer opens the stream.
    let secret = SECRET.as_bytes();
    let token = sign(secret, "r1", "s1", now() + 300);
    assert_eq!(refused(addr, "", None).await, (401, "token_missing".into()));
    assert_eq!(
        refused(
            addr,
            &sign(b"another secret", "r1", "s1", now() + 300),
            None
        )
        .await,
        (401, "token_bad_signature".into())
    );
    assert_eq!(
        refused(addr, &sign(secret, "r1", "s1", now() - 1), None).await,
        (401, "token_expired".into())
    );
    assert_eq!(
        refused(addr, &sign(secret, "r1", "s1", now() + 3_600), None).await,
        (401, "token_too_long".into())
    );
    assert_eq!(
        refused(addr, &sign(secret, "r2", "s1", now() + 300), None).await,
        (401, "token_unknown_retailer".into())
    );
    for bad in ["not-a-position", "0:-3", "-1:5", "99:0"] {
        assert_eq!(
            refused(addr, &token, Some(bad)).await,
            (400, "bad_last_event_id".into()),
            "{bad}"
        );
    }

    // The page sees s1's decisions at r1 only: not s2's, not r2's s1.
    let mut page = Page::open(addr, &token, None).await;
    let at = publish(
        &brokers,
        &decisions,
        &[("s1", "r1", "d1"), ("s2", "r1", "d2"), ("s1", "r2", "d3")],
    );
    assert_eq!(
        page.next().await,
        (at[0].clone(), "decision".into(), decision("r1", "d1"))
    );
    let at4 = publish(&brokers, &decisions, &[("s1", "r1", "d4")]);
    assert_eq!(
        page.next().await.0,
        at4[0],
        "d2 and d3 never reach the page"
    );

    // Disconnected while d5 and d6 are decided; the page resumes after d4: d5 and d6 from
    // the log, then d7 live, each once.
    drop(page);
    let at56 = publish(
        &brokers,
        &decisions,
        &[("s1", "r1", "d5"), ("s1", "r1", "d6")],
    );
    let mut page = Page::open(addr, &token, Some(&at4[0])).await;
    assert_eq!(
        page.next().await,
        (at56[0].clone(), "decision".into(), decision("r1", "d5"))
    );
    assert_eq!(
        page.next().await,
        (at56[1].clone(), "decision".into(), decision("r1", "d6"))
    );
    let at7 = publish(&brokers, &decisions, &[("s1", "r1", "d7")]);
    assert_eq!(
        page.next().await,
        (at7[0].clone(), "decision".into(), decision("r1", "d7"))
    );

    // An aborted transaction's decision never reaches the page (read_committed).
    let mut config = test_producer(&brokers);
    config.set("transactional.id", format!("test-dstream-{}", now()));
    let producer: ThreadedProducer<DefaultProducerContext> = config.create().unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    let aborted = decision("r1", "d8");
    producer
        .send(BaseRecord::to(&decisions).key("s1").payload(&aborted))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    producer.abort_transaction(Duration::from_secs(30)).unwrap();
    let at9 = publish(&brokers, &decisions, &[("s1", "r1", "d9")]);
    assert_eq!(
        page.next().await,
        (at9[0].clone(), "decision".into(), decision("r1", "d9"))
    );

    // Stopping the collector ends the open stream (its token lives 5 more minutes), so the
    // graceful shutdown completes; the page then reconnects to the next collector.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the collector stops within 10 s with a stream open")
        .unwrap();
    page.ends().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_topic_the_stream_answers_503_and_events_still_flow() {
    let brokers = brokers();
    let topics = Topics::new(&brokers);
    let events = topics.fresh("test-dstream-missing-events", 1);
    let missing = format!("test-dstream-missing-{}", now());
    let config = CollectorConfig {
        listen: "127.0.0.1:0".into(),
        stream_secrets: vec![StreamSecret {
            id: "r1".into(),
            secret: SECRET.into(),
        }],
        ..CollectorConfig::default()
    };
    let collector = Collector::bind(config, &brokers, &events)
        .await
        .unwrap()
        .with_decision_streams(&brokers, &missing);
    let addr = collector.local_addr();
    let (stop, server) = serve(collector);
    let token = sign(SECRET.as_bytes(), "r1", "s1", now() + 300);
    assert_eq!(refused(addr, &token, None).await, (503, "starting".into()));
    let (status, _, body) = send(addr, "GET", "/health", &[], String::new()).await;
    assert_eq!(status, 200);
    let health: serde_json::Value =
        serde_json::from_slice(&body.collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(health["decisions_stream"], "starting");
    // Events are served meanwhile.
    let event = r#"{"event_id":"e1","type":"page_viewed","retailer_id":"r1","shopper_id":"s1","occurred_at":"2026-11-22T10:00:00Z","url":"https://shop.example/","page_type":"home"}"#;
    let (status, _, _) = send(addr, "POST", "/v1/events", &[], event.to_owned()).await;
    assert_eq!(status, 200);
    let _ = stop.send(());
    server.await.unwrap();
}

/// One request on a new connection; the answer's body is left to read.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, hyper::HeaderMap, Incoming) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts.status.as_u16(), parts.headers, body)
}
