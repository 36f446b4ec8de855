//! Helpers of the collector's integration tests: a collector on a free port producing to a
//! fresh topic of the real broker, a small HTTP client, and a reader of everything in a topic.

#![allow(dead_code)] // each test file uses a part

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use basketflow_collector::{Collector, CollectorConfig};
use basketflow_kafka::{client_config, ensure_topic};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

pub fn brokers() -> String {
    std::env::var("BASKETFLOW_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{name}-{nanos}")
}

/// A new topic with a unique name on `brokers`.
pub async fn fresh_topic(brokers: &str, name: &str, partitions: i32) -> String {
    let topic = unique(name);
    ensure_topic(brokers, &topic, partitions, &[])
        .await
        .unwrap_or_else(|e| {
            panic!(
                "creating {topic} on {brokers} failed ({e}); is the stack up? run scripts/stack up"
            )
        });
    // Creation returns before every broker's metadata has the topic: wait until it does.
    let consumer: BaseConsumer = client_config(brokers).create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5));
        if md.is_ok_and(|md| {
            md.topics()[0].error().is_none() && !md.topics()[0].partitions().is_empty()
        }) {
            return topic;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} never appeared in the metadata"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A collector serving on a free port of 127.0.0.1 until dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub topic: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops serving (answers what is in progress) and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a collector with `config` (its `listen` replaced by a free port) producing to a fresh
/// topic of `partitions` partitions on `brokers`.
pub async fn start(
    mut config: CollectorConfig,
    brokers: &str,
    name: &str,
    partitions: i32,
) -> Running {
    let topic = fresh_topic(brokers, name, partitions).await;
    config.listen = "127.0.0.1:0".into();
    let collector = Collector::bind(config, brokers, &topic).await.unwrap();
    let addr = collector.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        collector
            .serve(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        topic,
        stop: Some(stop),
        task: Some(task),
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// Sends one request on a new connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
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
    let response = sender
        .send_request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes().to_vec(),
    }
}

/// `POST /v1/events` with `headers`.
pub async fn post(addr: SocketAddr, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    request(addr, "POST", "/v1/events", headers, body).await
}

/// A valid `page_viewed` event, compact.
pub fn event(id: &str, retailer: &str, shopper: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","type":"page_viewed","retailer_id":"{retailer}","shopper_id":"{shopper}","occurred_at":"2026-11-22T10:00:00Z","url":"https://shop.example/","page_type":"home"}}"#
    )
}

/// Every message of `topic` as (key, payload), sorted, read from the beginning of each
/// partition up to its end as it is now.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<(String, String)> {
    let consumer: BaseConsumer = client_config(brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut out = Vec::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        if high == 0 {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "timed out reading {topic}[{p}]");
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => out.push((
                    String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                    String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
                )),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => panic!("consuming {topic}: {e}"),
                None => {}
            }
        }
    }
    out.sort();
    out
}

/// The `(key, payload)` pairs the events `payloads` must be stored as, sorted.
pub fn stored(payloads: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = payloads
        .iter()
        .map(|p| {
            let v: Value = serde_json::from_str(p).unwrap();
            (v["shopper_id"].as_str().unwrap().to_string(), p.to_string())
        })
        .collect();
    out.sort();
    out
}
