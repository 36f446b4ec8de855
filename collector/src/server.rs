//! The HTTP server: routes, the `POST /v1/events` pipeline, and the answers.
//!
//! `POST /v1/events` goes through these steps; the first that fails answers for the request:
//!
//! | step | refusal |
//! | --- | --- |
//! | API key (`auth = "keys"`) | 401 `unauthorized` |
//! | `Content-Encoding` (none, `identity`, `gzip`) | 415 `unsupported_encoding` |
//! | declared `Content-Length` over `max_body_bytes` | 413 `body_too_large` |
//! | room for the body in `max_in_flight_bytes` within `queue_timeout_ms` | 503 `overloaded` + `Retry-After` |
//! | body received within `read_timeout_ms`, within `max_body_bytes` (also after gzip) | 408 `timeout`, 413 `body_too_large`, 400 `malformed_body` |
//! | split into events (array, one value, JSON lines) | 400 `empty_body`, 400 `malformed_body`, 413 `batch_too_large` |
//! | retailer's rate limit | 429 `rate_limited` + `Retry-After` |
//!
//! Then each event is judged on its own: the contract ([`basketflow_ingest::parse_event`]), then
//! whether its `retailer_id` is the key's retailer. Valid events are produced, and the answer
//! waits for the broker's acknowledgement of each:
//!
//! - **200**: at least one event was accepted and every accepted event is acknowledged by the
//!   broker (the others were rejected for a reason that a retry would not change);
//! - **400** `rejected`: no event was valid;
//! - **503** `unavailable` + `Retry-After`: some valid events were not acknowledged in time
//!   (status `failed` in the results): retry those; the ones marked `accepted` are stored.
//!
//! `POST /v1/reward-contacts` ([`Shared::reward_contact`]) takes one reward contact (an
//! email address to pay a prize; see [`basketflow_rewards::contact`]) with a **reward key**
//! (`[[collector.reward_keys]]`, in `Authorization: Bearer` or `X-Api-Key`, never in the query
//! string), and answers after the broker has acknowledged it on the reward-contacts topic:
//!
//! | step | refusal |
//! | --- | --- |
//! | the collector has a rewards topic | 404 `not_configured` |
//! | a reward key (`auth = "keys"`; an event key is not one) | 401 `unauthorized` |
//! | `Content-Encoding` none or `identity` | 415 `unsupported_encoding` |
//! | body within [`MAX_CONTACT_BYTES`] and `read_timeout_ms` | 413 `body_too_large`, 408 `timeout` |
//! | the contact ([`RewardContact::parse`]) | 400 `malformed_body`, `unknown_field`, `missing_field`, `invalid_field` (with `field`) |
//! | its `retailer_id` is the key's retailer | 403 `forbidden` (field `retailer_id`) |
//! | the broker's acknowledgement within `produce_timeout_ms` (the topic may not exist yet: the collector starts anyway) | 503 `unavailable` + `Retry-After` |
//!
//! and otherwise 200 `{"status":"accepted","contact_id":...}`.
//!
//! `GET /v1/decisions/stream` ([`crate::decisions`]) streams one shopper's decisions as
//! Server-Sent Events to a page holding a stream token (`?token=` or `Authorization: Bearer`;
//! `Last-Event-ID` resumes): 404 `not_configured` without `[[collector.stream_secrets]]`, 401
//! `token_missing` or the token's refusal code, 400 `bad_last_event_id`, 503 `unavailable`
//! when the catch-up read fails.
//!
//! The body always lists every event by its index in the request:
//! `{"accepted":1,"rejected":1,"failed":0,"results":[{"index":0,"status":"accepted"},
//! {"index":1,"status":"rejected","code":"pii","field":"email","reason":"..."}]}`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use basketflow_ingest::parse_event;
use basketflow_rewards::contact::MAX_CONTACT_BYTES;
use basketflow_rewards::RewardContact;

use crate::auth::{presented_key, Keys, RateLimiter};
use crate::body::{gunzip, split, BodyError, DecodeError};
use crate::config::{AuthMode, CollectorConfig};
use crate::cors::Cors;
use crate::metrics::{Metrics, UNAUTHORIZED};
use crate::producer::EventProducer;
use crate::CollectorError;

/// A bound collector, ready to serve.
pub struct Collector {
    listener: TcpListener,
    state: Arc<Shared>,
}

struct Shared {
    config: CollectorConfig,
    keys: Keys,
    /// The reward keys: the only keys of `POST /v1/reward-contacts`.
    reward_keys: Keys,
    /// The producer to the reward-contacts topic; `None`: the route answers 404.
    rewards: Option<EventProducer>,
    limiter: Option<RateLimiter>,
    cors: Cors,
    producer: EventProducer,
    budget: Arc<Semaphore>,
    metrics: Metrics,
    /// `GET /v1/decisions/stream`, when served ([`Collector::with_decision_streams`]).
    streams: Option<crate::decisions::DecisionStreams>,
    /// Stops the decisions hub's reader when the server stops.
    stop_streams: Arc<std::sync::atomic::AtomicBool>,
}

impl Collector {
    /// Validates `config`, creates the producer to `brokers` (events go to `config.topic`, or
    /// `default_topic`), checks that the topic exists if the broker answers within 5 s, and
    /// binds `config.listen` (port 0 picks a free port, see [`Collector::local_addr`]).
    pub async fn bind(
        config: CollectorConfig,
        brokers: &str,
        default_topic: &str,
    ) -> Result<Collector, CollectorError> {
        Collector::bind_with_rewards(config, brokers, default_topic, None).await
    }

    /// [`Collector::bind`], also serving `POST /v1/reward-contacts` into `rewards_topic`
    /// (`[rewards] topic`) when it is given (checked like the events topic).
    pub async fn bind_with_rewards(
        config: CollectorConfig,
        brokers: &str,
        default_topic: &str,
        rewards_topic: Option<&str>,
    ) -> Result<Collector, CollectorError> {
        config.validate()?;
        let rewards = match rewards_topic {
            None => None,
            Some(topic) => {
                let producer = EventProducer::new(brokers, topic, config.produce_timeout())
                    .map_err(CollectorError::Kafka)?;
                // Events must not wait for an optional route: without its topic, the route
                // answers 503 until the topic exists (then the producer finds it by itself).
                match checked(producer).await {
                    Ok(producer) => Some(producer),
                    Err(CollectorError::Config(why)) => {
                        eprintln!(
                            "collector: WARNING: {why}: POST /v1/reward-contacts answers 503 \
                             until it exists (scripts/stack up, or `basketflow rewards run`, \
                             creates it)"
                        );
                        Some(
                            EventProducer::new(brokers, topic, config.produce_timeout())
                                .map_err(CollectorError::Kafka)?,
                        )
                    }
                    Err(other) => return Err(other),
                }
            }
        };
        let topic = config
            .topic
            .clone()
            .unwrap_or_else(|| default_topic.to_string());
        let producer = EventProducer::new(brokers, &topic, config.produce_timeout())
            .map_err(CollectorError::Kafka)?;
        let producer = checked(producer).await?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| CollectorError::Bind(config.listen.clone(), e))?;
        let limiter = (config.auth == AuthMode::Keys && config.rate_limit_events_per_s > 0)
            .then(|| RateLimiter::new(config.rate_limit_events_per_s, config.rate_limit_burst()));
        let state = Shared {
            keys: Keys::new(config.key_table()?),
            reward_keys: Keys::new(config.reward_key_table()?),
            rewards,
            limiter,
            cors: Cors::new(&config.cors_origins),
            producer,
            budget: Arc::new(Semaphore::new(config.max_in_flight_bytes)),
            metrics: Metrics::default(),
            streams: None,
            stop_streams: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            config,
        };
        Ok(Collector {
            listener,
            state: Arc::new(state),
        })
    }

    /// Also serves `GET /v1/decisions/stream` from `topic` on `brokers` (when the
    /// configuration has stream secrets; otherwise the route answers 404): starts the hub's
    /// reader in the background; the route answers 503 `starting` until the reader knows
    /// where the topic ends ([`Collector::decision_streams_ready`]).
    pub fn with_decision_streams(mut self, brokers: &str, topic: &str) -> Collector {
        let state = Arc::get_mut(&mut self.state).expect("not serving yet");
        if state.config.stream_secrets.is_empty() {
            return self;
        }
        let hub = Arc::new(crate::decisions::Hub::default());
        hub.clone().run(brokers, topic, state.stop_streams.clone());
        state.streams = Some(crate::decisions::DecisionStreams::new(
            hub,
            brokers,
            topic,
            state.config.stream_secret_table(),
            state.config.stream_token_max_ttl_s,
        ));
        self
    }

    /// Whether `GET /v1/decisions/stream` opens streams (served, and its reader knows where
    /// the topic ends).
    pub fn decision_streams_ready(&self) -> bool {
        self.state
            .streams
            .as_ref()
            .is_some_and(|s| s.hub.partitions().is_some())
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The topic events go to.
    pub fn topic(&self) -> &str {
        self.state.producer.topic()
    }

    /// The topic reward contacts go to, if the route is served.
    pub fn rewards_topic(&self) -> Option<&str> {
        self.state.rewards.as_ref().map(EventProducer::topic)
    }

    /// Serves until `shutdown` completes, then finishes the requests in progress (each waits
    /// for its acknowledgements) and flushes the producer.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), CollectorError> {
        let state = self.state.clone();
        let app = Router::new()
            .route("/v1/events", post(post_events).options(preflight))
            .route("/v1/reward-contacts", post(post_reward_contact))
            .route("/v1/decisions/stream", get(decisions_stream))
            .route("/health", get(health))
            .route("/metrics", get(metrics))
            .with_state(self.state);
        // Answers are small and latency matters: no Nagle delay.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        // Open decision streams end when the shutdown begins: the graceful shutdown waits
        // for every open response, and a stream's lasts until its token expires.
        let closing = state.clone();
        let shutdown = async move {
            shutdown.await;
            if let Some(streams) = &closing.streams {
                streams.close();
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(CollectorError::Serve)?;
        state
            .stop_streams
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            if let Some(rewards) = &state.rewards {
                rewards.flush(Duration::from_secs(10))?;
            }
            state.producer.flush(Duration::from_secs(10))
        })
        .await
        .expect("flush does not panic")
        .map_err(CollectorError::Kafka)
    }
}

/// `producer`, once its topic is known to exist (or the broker did not answer within 5 s:
/// then requests get 503 until it does).
async fn checked(producer: EventProducer) -> Result<EventProducer, CollectorError> {
    tokio::task::spawn_blocking(move || match producer.check_topic(Duration::from_secs(5)) {
        Ok(Some(_)) => Ok(producer),
        Ok(None) => {
            eprintln!(
                "collector: the broker did not answer; serving anyway (requests get 503 until it \
                 does)"
            );
            Ok(producer)
        }
        Err(e) => Err(CollectorError::Config(e)),
    })
    .await
    .expect("the topic check does not panic")
}

/// A refusal of the whole request.
struct Refusal {
    status: StatusCode,
    error: &'static str,
    /// The field of a reward contact the refusal is about.
    field: Option<String>,
    reason: String,
    retry_after: Option<u64>,
}

fn refuse(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error,
        field: None,
        reason: reason.into(),
        retry_after: None,
    }
}

#[derive(Serialize)]
struct ErrorAnswer<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    reason: &'a str,
}

#[derive(Serialize)]
struct EventsAnswer {
    accepted: usize,
    rejected: usize,
    failed: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    results: Vec<EventResult>,
}

#[derive(Serialize)]
struct EventResult {
    index: usize,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn json_response(status: StatusCode, body: Vec<u8>, retry_after: Option<u64>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

impl From<Refusal> for Response {
    fn from(r: Refusal) -> Response {
        let body = serde_json::to_vec(&ErrorAnswer {
            error: r.error,
            field: r.field.as_deref(),
            reason: &r.reason,
        })
        .expect("an answer serializes");
        let mut response = json_response(r.status, body, r.retry_after);
        if r.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"basketflow\""),
            );
        }
        response
    }
}

async fn post_events(State(state): State<Arc<Shared>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let mut response = match state.events(&parts, body).await {
        Ok(response) => response,
        Err(refusal) => refusal.into(),
    };
    state.metrics.request(response.status().as_u16());
    state
        .metrics
        .request_seconds
        .observe(started.elapsed().as_secs_f64());
    state.cors.decorate(&parts.headers, response.headers_mut());
    response
}

async fn post_reward_contact(State(state): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let response = match state.reward_contact(&parts, body).await {
        Ok(response) => response,
        Err(refusal) => {
            state.metrics.reward_contact_refused(refusal.error);
            refusal.into()
        }
    };
    state.metrics.reward_request(response.status().as_u16());
    response
}

/// A request body of at most `max` bytes, read within `config`'s read timeout: 408 `timeout`
/// when it does not arrive in time, `too_large()` beyond `max`, 400 `malformed_body` when it
/// cannot be read.
async fn read_body(
    body: Body,
    max: usize,
    config: &CollectorConfig,
    too_large: impl FnOnce() -> Refusal,
) -> Result<axum::body::Bytes, Refusal> {
    let collected = tokio::time::timeout(config.read_timeout(), Limited::new(body, max).collect())
        .await
        .map_err(|_| {
            refuse(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the body did not arrive within {} ms",
                    config.read_timeout_ms
                ),
            )
        })?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            format!("the body could not be read: {e}"),
        )),
    }
}

async fn decisions_stream(State(state): State<Arc<Shared>>, request: Request) -> Response {
    use crate::decisions::OpenError;
    let parts = request.into_parts().0;
    let Some(streams) = &state.streams else {
        return refuse(
            StatusCode::NOT_FOUND,
            "not_configured",
            "this collector streams no decisions ([[collector.stream_secrets]])",
        )
        .into();
    };
    let query = parts.uri.query().unwrap_or("");
    let from_query = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let token = header_str(&parts.headers, header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| from_query("token"))
        .filter(|t| !t.is_empty());
    let last = header_str(
        &parts.headers,
        header::HeaderName::from_static("last-event-id"),
    )
    .map(str::to_owned)
    .or_else(|| from_query("last_event_id"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut response = match token {
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "token_missing",
            "a stream token is needed (?token= or Authorization: Bearer)",
        )
        .into(),
        Some(token) => match streams.open(&token, last.as_deref(), now).await {
            Ok(stream) => axum::response::sse::Sse::new(stream)
                .keep_alive(axum::response::sse::KeepAlive::new().interval(Duration::from_secs(15)))
                .into_response(),
            Err(OpenError::Token(e)) => refuse(
                StatusCode::UNAUTHORIZED,
                e.code(),
                "the stream token was refused",
            )
            .into(),
            Err(OpenError::BadLastEventId) => refuse(
                StatusCode::BAD_REQUEST,
                "bad_last_event_id",
                "Last-Event-ID must be partition:offset of the decisions topic, as the stream \
                 sent it",
            )
            .into(),
            Err(OpenError::Starting) => Refusal {
                retry_after: Some(state.config.retry_after_s),
                ..refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "starting",
                    "the decisions reader is not at the topic's end yet (broker or topic \
                     missing, or starting)",
                )
            }
            .into(),
            Err(OpenError::TooManyStreams) => Refusal {
                retry_after: Some(state.config.retry_after_s),
                ..refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_streams",
                    "too many open streams for this shopper or this collector",
                )
            }
            .into(),
            Err(OpenError::Unavailable(why)) => Refusal {
                retry_after: Some(state.config.retry_after_s),
                ..refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("the decisions could not be read: {why}"),
                )
            }
            .into(),
        },
    };
    state.cors.decorate(&parts.headers, response.headers_mut());
    response
}

async fn preflight(State(state): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    state.cors.preflight(&headers, response.headers_mut());
    response
}

async fn health(State(state): State<Arc<Shared>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "topic": state.producer.topic(),
        "rewards_topic": state.rewards.as_ref().map(EventProducer::topic),
        "decisions_stream": match &state.streams {
            None => "off",
            Some(s) if s.hub.partitions().is_some() => "ready",
            Some(_) => "starting",
        },
        "last_delivery": if state.producer.last_delivery_ok() { "ok" } else { "failed" },
        "in_flight_bytes": state.in_flight_bytes(),
    });
    json_response(StatusCode::OK, body.to_string().into_bytes(), None)
}

async fn metrics(State(state): State<Arc<Shared>>) -> Response {
    let mut response = Response::new(Body::from(state.metrics.render(state.in_flight_bytes())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl Shared {
    fn in_flight_bytes(&self) -> u64 {
        (self.config.max_in_flight_bytes - self.budget.available_permits()) as u64
    }

    fn overloaded(&self) -> Refusal {
        Refusal {
            retry_after: Some(self.config.retry_after_s),
            ..refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!(
                    "the collector holds as many requests as it may ({} bytes) while the broker \
                     catches up; nothing was stored, retry later",
                    self.config.max_in_flight_bytes
                ),
            )
        }
    }

    /// Holds exactly `bytes` of the in-flight budget with `permit`, waiting until `deadline`.
    async fn hold(
        &self,
        permit: &mut OwnedSemaphorePermit,
        bytes: usize,
        deadline: Instant,
    ) -> Result<(), Refusal> {
        let held = permit.num_permits();
        if bytes < held {
            drop(permit.split(held - bytes));
        } else if bytes > held {
            let more = self
                .budget
                .clone()
                .acquire_many_owned((bytes - held) as u32);
            match tokio::time::timeout_at(deadline.into(), more).await {
                Ok(Ok(more)) => permit.merge(more),
                _ => return Err(self.overloaded()),
            }
        }
        Ok(())
    }

    async fn events(&self, parts: &Parts, body: Body) -> Result<Response, Refusal> {
        let config = &self.config;
        let max_body = config.max_body_bytes;

        let retailer = match config.auth {
            AuthMode::None => None,
            AuthMode::Keys => {
                let Some(key) = presented_key(&parts.headers, parts.uri.query()) else {
                    return Err(refuse(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "an API key is required: send `Authorization: Bearer <key>`, \
                         `X-Api-Key: <key>`, or `?key=<key>` (sendBeacon)",
                    ));
                };
                let Some(retailer) = self.keys.retailer(&key) else {
                    return Err(refuse(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        if self.reward_keys.retailer(&key).is_some() {
                            "this is a reward key: it sends reward contacts only \
                             (POST /v1/reward-contacts), never events"
                        } else {
                            "this API key belongs to no retailer"
                        },
                    ));
                };
                Some(retailer)
            }
        };

        let gzip = match header_str(&parts.headers, header::CONTENT_ENCODING) {
            None | Some("") => false,
            Some(e) if e.eq_ignore_ascii_case("identity") => false,
            Some(e) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => true,
            Some(e) => {
                return Err(refuse(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_encoding",
                    format!("Content-Encoding {e:?} is not supported; use gzip or none"),
                ))
            }
        };
        let too_large = |what: &str| {
            refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body{what} is larger than the limit of {max_body} bytes"),
            )
        };
        let declared =
            header_str(&parts.headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body as u64) {
            return Err(too_large(""));
        }

        // Backpressure: the body is held only with room in the in-flight budget.
        let deadline = Instant::now() + config.queue_timeout();
        let mut permit = self
            .budget
            .clone()
            .acquire_many_owned(0)
            .await
            .expect("open");
        self.hold(
            &mut permit,
            declared.map_or(max_body, |n| n as usize),
            deadline,
        )
        .await?;

        let received = read_body(body, max_body, config, || too_large("")).await?;
        let bytes = if gzip {
            let decoded = gunzip(&received, max_body).map_err(|e| match e {
                DecodeError::TooLarge => too_large(" (decompressed)"),
                DecodeError::Corrupt(why) => refuse(
                    StatusCode::BAD_REQUEST,
                    "malformed_body",
                    format!("Content-Encoding is gzip but the body is not: {why}"),
                ),
            })?;
            drop(received);
            axum::body::Bytes::from(decoded)
        } else {
            received
        };
        self.hold(&mut permit, bytes.len(), deadline).await?;

        let lines = header_str(&parts.headers, header::CONTENT_TYPE).is_some_and(|t| {
            let t = t.split(';').next().unwrap_or("").trim();
            [
                "application/x-ndjson",
                "application/jsonl",
                "application/x-jsonlines",
                "application/jsonlines",
            ]
            .iter()
            .any(|l| t.eq_ignore_ascii_case(l))
        });
        let events = split(&bytes, lines, config.max_batch_events).map_err(|e| match e {
            BodyError::Empty => refuse(
                StatusCode::BAD_REQUEST,
                "empty_body",
                "the body holds no event",
            ),
            BodyError::MalformedArray(why) => refuse(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                format!("the body starts as a JSON array but is not one: {why}"),
            ),
            BodyError::TooManyEvents { got, max } => refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                format!("the body holds {got} events; the limit is {max} per request"),
            ),
        })?;

        if let (Some(limiter), Some(retailer)) = (&self.limiter, retailer) {
            if let Err(wait) = limiter.take(retailer, events.len(), Instant::now()) {
                return Err(Refusal {
                    retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
                    ..refuse(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!(
                            "retailer {retailer:?} may send {} events/s (bursts of {}); \
                             nothing was stored, retry later",
                            config.rate_limit_events_per_s,
                            config.rate_limit_burst()
                        ),
                    )
                });
            }
        }

        Ok(self.judge_and_produce(&events, retailer, deadline).await)
    }

    /// `POST /v1/reward-contacts`: one contact, checked, produced, acknowledged.
    async fn reward_contact(&self, parts: &Parts, body: Body) -> Result<Response, Refusal> {
        let config = &self.config;
        let Some(producer) = &self.rewards else {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "not_configured",
                "this collector takes no reward contacts (no [rewards] topic)",
            ));
        };
        let retailer = match config.auth {
            AuthMode::None => None,
            AuthMode::Keys => {
                // Headers only: a query string ends up in access logs.
                let Some(key) = presented_key(&parts.headers, None) else {
                    return Err(refuse(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "a reward key is required: send `Authorization: Bearer <key>` or \
                         `X-Api-Key: <key>`",
                    ));
                };
                let Some(retailer) = self.reward_keys.retailer(&key) else {
                    return Err(refuse(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        if self.keys.retailer(&key).is_some() {
                            "this is an event key (a tracker's): reward contacts need the \
                             retailer's reward key"
                        } else {
                            "this key is no retailer's reward key"
                        },
                    ));
                };
                Some(retailer)
            }
        };
        match header_str(&parts.headers, header::CONTENT_ENCODING) {
            None | Some("") => {}
            Some(e) if e.eq_ignore_ascii_case("identity") => {}
            Some(e) => {
                return Err(refuse(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_encoding",
                    format!("Content-Encoding {e:?} is not supported here; send the contact as is"),
                ))
            }
        }
        let too_large = || {
            refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("a reward contact is at most {MAX_CONTACT_BYTES} bytes"),
            )
        };
        if header_str(&parts.headers, header::CONTENT_LENGTH)
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > MAX_CONTACT_BYTES as u64)
        {
            return Err(too_large());
        }
        let bytes = read_body(body, MAX_CONTACT_BYTES, config, too_large).await?;
        let contact = RewardContact::parse(&bytes).map_err(|e| Refusal {
            field: e.field,
            ..refuse(StatusCode::BAD_REQUEST, e.code, e.reason)
        })?;
        if let Some(retailer) = retailer.filter(|r| *r != contact.retailer_id) {
            return Err(Refusal {
                field: Some("retailer_id".into()),
                ..refuse(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "the reward key is retailer {retailer:?}'s, the contact is retailer {:?}'s",
                        contact.retailer_id
                    ),
                )
            });
        }
        let key = contact.key();
        let payload = contact.to_json();
        let deadline = Instant::now() + config.queue_timeout();
        let outcome = producer
            .produce(&[(key.as_str(), payload.as_slice())], deadline)
            .await
            .pop()
            .expect("one outcome per record");
        if let Err(why) = outcome {
            return Err(Refusal {
                retry_after: Some(config.retry_after_s),
                ..refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("the contact was not stored: {why}"),
                )
            });
        }
        self.metrics.reward_contact_accepted();
        let body = serde_json::json!({"status": "accepted", "contact_id": contact.contact_id});
        Ok(json_response(
            StatusCode::OK,
            body.to_string().into_bytes(),
            None,
        ))
    }

    async fn judge_and_produce(
        &self,
        events: &[&[u8]],
        retailer: Option<&str>,
        deadline: Instant,
    ) -> Response {
        let mut results = Vec::with_capacity(events.len());
        let mut valid: Vec<(usize, String, bool)> = Vec::new();
        for (index, raw) in events.iter().enumerate() {
            let rejected = |code: &'static str, field: String, reason: String| EventResult {
                index,
                status: "rejected",
                code: Some(code),
                field: Some(field),
                reason: Some(reason),
            };
            match parse_event(raw) {
                Err(r) => {
                    self.metrics.rejected(Some(r.code));
                    results.push(rejected(r.code.as_str(), r.field, r.reason));
                }
                Ok(p) if retailer.is_some_and(|r| r != p.event.retailer_id) => {
                    self.metrics.rejected(None);
                    results.push(rejected(
                        UNAUTHORIZED,
                        "retailer_id".into(),
                        format!(
                            "the API key is retailer {:?}'s, the event is retailer {:?}'s",
                            retailer.unwrap_or_default(),
                            p.event.retailer_id
                        ),
                    ));
                }
                Ok(p) => {
                    valid.push((index, p.event.shopper_id, !p.unknown_fields.is_empty()));
                    results.push(EventResult {
                        index,
                        status: "accepted",
                        code: None,
                        field: None,
                        reason: None,
                    });
                }
            }
        }
        let rejected = events.len() - valid.len();

        let mut failed = 0;
        if !valid.is_empty() {
            let records: Vec<(&str, &[u8])> = valid
                .iter()
                .map(|(i, key, _)| (key.as_str(), events[*i]))
                .collect();
            let started = Instant::now();
            let outcomes = self.producer.produce(&records, deadline).await;
            self.metrics
                .produce_seconds
                .observe(started.elapsed().as_secs_f64());
            for ((index, _, unknown), outcome) in valid.iter().zip(outcomes) {
                match outcome {
                    Ok(()) if *unknown => self.metrics.unknown_fields(),
                    Ok(()) => {}
                    Err(why) => {
                        failed += 1;
                        results[*index] = EventResult {
                            index: *index,
                            status: "failed",
                            code: Some("unavailable"),
                            field: None,
                            reason: Some(why),
                        };
                    }
                }
            }
        }
        let accepted = valid.len() - failed;
        self.metrics.accepted(accepted as u64);
        self.metrics.failed(failed as u64);

        let (status, error, reason, retry_after) = if failed > 0 {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("unavailable"),
                Some(format!(
                    "{failed} valid events were not stored (status \"failed\"): retry them later; \
                     the {accepted} events with status \"accepted\" are stored"
                )),
                Some(self.config.retry_after_s),
            )
        } else if accepted == 0 {
            (
                StatusCode::BAD_REQUEST,
                Some("rejected"),
                Some("no event was valid; see each result's code, field and reason".into()),
                None,
            )
        } else {
            (StatusCode::OK, None, None, None)
        };
        let answer = EventsAnswer {
            accepted,
            rejected,
            failed,
            error,
            reason,
            results,
        };
        let body = serde_json::to_vec(&answer).expect("an answer serializes");
        json_response(status, body, retry_after)
    }
}
