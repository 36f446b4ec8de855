//! Helpers of the collector's integration tests: a collector on a free port producing to a
//! fresh topic of the real broker (deleted when the collector is dropped), a small HTTP client,
//! and what a topic must hold. The stack helpers are `basketflow_testkit`'s.

#![allow(dead_code)] // each test file uses a part

use std::net::SocketAddr;

use axum::body::Bytes;
use basketflow_collector::{Collector, CollectorConfig};
use basketflow_testkit::kafka::Topics;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// A collector serving on a free port of 127.0.0.1 until dropped; its topic is deleted then.
pub struct Running {
    pub addr: SocketAddr,
    pub topic: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _topics: Topics,
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
    let topics = Topics::new(brokers);
    let topic = topics.fresh(&format!("test-{name}"), partitions);
    config.listen = "127.0.0.1:0".into();
    let collector = Collector::bind(config, brokers, &topic).await.unwrap();
    let addr = collector.local_addr();
    let (stop, task) = serve(collector);
    Running {
        addr,
        topic,
        stop: Some(stop),
        task: Some(task),
        _topics: topics,
    }
}

/// Serves `collector` on a task until the returned sender fires (or is dropped).
pub fn serve(collector: Collector) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        collector
            .serve(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, task)
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
