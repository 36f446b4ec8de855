//! The Shopper Event API: the HTTP endpoint retailers' trackers send events to.
//!
//! `basketflow collect` serves `POST /v1/events` (one event, a JSON array, or JSON lines; plain,
//! `text/plain` from `navigator.sendBeacon`, or gzip), `POST /v1/reward-contacts` (one reward
//! contact, with a reward key: see [`server`] and `basketflow_rewards`),
//! `GET /v1/decisions/stream` (one shopper's decisions pushed to their page as Server-Sent
//! Events, with a stream token: see [`decisions`]), `GET /health` and `GET /metrics`. Each
//! event is judged by the same contract code as the graph's Kafka source
//! ([`basketflow_ingest::parse_event`]) and, if valid, produced to `shopper-events` keyed by
//! `shopper_id`, as the exact bytes the tracker sent.
//!
//! # Persisted means persisted
//!
//! The answer is sent only after the broker has acknowledged every accepted event (`acks=all`,
//! idempotent producer): a 200 is a promise that the events are in the log, and nothing a
//! tracker was told is stored can be lost by a collector crash afterwards. An event whose
//! acknowledgement did not come is never reported as accepted: the request gets 503 and the
//! event the status `failed`, so the tracker retries it. (Re-sending is safe: the graph
//! de-duplicates by `(retailer_id, event_id)`.) Answering before the acknowledgement (fire-and-forget, as
//! some collectors do for latency) would make every collector crash or broker outage a silent
//! loss of events that trackers have already discarded.
//!
//! # Backpressure
//!
//! Waiting for acknowledgements means a slow or down broker makes requests wait. Two bounds keep
//! that wait, and the memory it holds, finite:
//!
//! - **in-flight budget**: a request's body (received and decoded) holds bytes of a semaphore
//!   of `max_in_flight_bytes` until it is answered. A request that finds no room within
//!   `queue_timeout_ms` gets 503 `overloaded` with `Retry-After`, without its body being read;
//!   so memory is bounded by the budget (plus one `max_body_bytes` per connection reading).
//! - **delivery deadline**: librdkafka's `message.timeout.ms` is `produce_timeout_ms`: an event
//!   the broker has not acknowledged by then fails, and its request gets 503 `unavailable`
//!   with `Retry-After` instead of waiting for the broker's return.
//!
//! So during an outage each request is answered within `queue_timeout_ms + produce_timeout_ms`
//! (plus the time to receive it), the collector's memory stays within its budget, and when the
//! broker is back the producer reconnects within a second and requests succeed again.
//!
//! # Files
//!
//! | module | responsibility |
//! | --- | --- |
//! | [`config`] | `[collector]` in `basketflow.toml` |
//! | [`server`] | routes, the `POST /v1/events` pipeline, `POST /v1/reward-contacts`, status codes and answer bodies |
//! | [`body`] | gzip decoding and splitting a body into the raw bytes of each event |
//! | [`auth`] | API keys (SHA-256 in the config) and per-retailer token buckets |
//! | [`cors`] | CORS for the configured retailer origins |
//! | [`decisions`] | stream tokens, the decisions hub, the resumable SSE stream of one shopper's decisions |
//! | [`producer`] | the idempotent producer; one outcome per event, within deadlines |
//! | [`metrics`] | Prometheus metrics (prometheus-client), served as text on `GET /metrics` |

#![forbid(missing_docs)]

pub mod auth;
pub mod body;
pub mod config;
pub mod cors;
pub mod decisions;
pub mod metrics;
pub mod producer;
pub mod server;

pub use config::{AuthMode, CollectorConfig, RetailerKey, StreamSecret};
pub use server::Collector;

/// Why the collector could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// A configuration value that cannot work.
    #[error("collector configuration: {0}")]
    Config(String),
    /// The Kafka client could not be created or flushed.
    #[error("collector: kafka: {0}")]
    Kafka(#[source] rdkafka::error::KafkaError),
    /// The listen address could not be bound.
    #[error("collector: cannot listen on {0}: {1}")]
    Bind(String, #[source] std::io::Error),
    /// The server failed.
    #[error("collector: serving failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// `basketflow collect`: serves with `config`, producing to `brokers` (events go to
/// `config.topic`, or `default_topic`; reward contacts to `rewards_topic`, `[rewards] topic`),
/// until SIGINT or SIGTERM; then answers the requests in progress, flushes and returns.
/// Blocking: it runs its own tokio runtime.
pub fn run(
    config: CollectorConfig,
    brokers: &str,
    default_topic: &str,
    rewards_topic: &str,
    default_decisions_topic: &str,
) -> Result<(), CollectorError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("collector")
        .build()
        .map_err(CollectorError::Serve)?;
    runtime.block_on(async {
        let auth = config.auth;
        let reward_keys = config.reward_keys.len();
        let decisions_topic = config
            .decisions_topic
            .clone()
            .unwrap_or_else(|| default_decisions_topic.to_owned());
        let streams = config.stream_secrets.len();
        let collector =
            Collector::bind_with_rewards(config, brokers, default_topic, Some(rewards_topic))
                .await?
                .with_decision_streams(brokers, &decisions_topic);
        if streams > 0 {
            eprintln!(
                "collector: GET /v1/decisions/stream serves {decisions_topic} (read_committed) \
                 to pages with a stream token of {streams} retailer secret(s)"
            );
        } else {
            eprintln!(
                "collector: no [[collector.stream_secrets]]: GET /v1/decisions/stream answers 404"
            );
        }
        eprintln!(
            "collector: listening on http://{} (POST /v1/events, POST /v1/reward-contacts, \
             GET /v1/decisions/stream, GET /health, GET /metrics), producing events to {} and \
             reward contacts to {} on \
             {brokers}",
            collector.local_addr(),
            collector.topic(),
            rewards_topic
        );
        if auth == AuthMode::None {
            eprintln!(
                "collector: WARNING: auth = \"none\": anyone who can reach this address may send \
                 events for any retailer. For local use only; set auth = \"keys\" otherwise."
            );
            eprintln!(
                "collector: WARNING: auth = \"none\": POST /v1/reward-contacts is OPEN too: \
                 anyone who can reach this address may store email addresses for any retailer. \
                 For local use only; set auth = \"keys\" and [[collector.reward_keys]] otherwise."
            );
        } else if reward_keys == 0 {
            eprintln!(
                "collector: no [[collector.reward_keys]]: POST /v1/reward-contacts refuses every \
                 request (401)"
            );
        }
        collector.serve(shutdown_signal()).await?;
        eprintln!("collector: stopped");
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
