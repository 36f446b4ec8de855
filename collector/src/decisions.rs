//! Decisions pushed to pages: one shopper's decisions from `experience-decisions`, within
//! milliseconds of their commit, to the page that shows them (issue 21's
//! `GET /v1/decisions/stream`, Server-Sent Events).
//!
//! # Who may read what
//!
//! A page may read its own shopper's decisions only. The retailer's backend, which knows who
//! the shopper is, gives the page a short-lived **stream token** ([`sign`]): the retailer,
//! the shopper and an expiry (Unix seconds), authenticated by HMAC-SHA256 under a secret the
//! retailer shares with the collector (not its API key, which trackers hold in the browser):
//!
//! ```text
//! token   = "v1." + hex(payload) + "." + hex(HMAC-SHA256(secret, payload))
//! payload = retailer_id 0x1F shopper_id 0x1F expires_at (decimal Unix seconds)
//! ```
//!
//! [`verify`] refuses a token that does not parse, names a retailer without a secret, fails
//! its MAC (compared in constant time, against each of the retailer's secrets: rotation), has
//! expired, or lives longer than the collector allows (`max_ttl`: a leaked token stays
//! useful for minutes, not days).
//!
//! # From the topic to the page
//!
//! The collector reads the decisions topic once ([`Hub`]: one consumer, `read_committed`, from
//! the end, so a page only ever sees decisions of committed transactions, never a replay's) and
//! hands each decision to the subscriptions of its `(retailer, shopper)` (the message key is
//! the shopper; the retailer is read from the JSON). Held-out, capped and over-budget decisions
//! never reach the topic, so never a page.
//!
//! # Resuming without losing or repeating
//!
//! Each pushed decision carries its position as the SSE `id` (`partition:offset`). A page
//! that reconnects sends the last one as `Last-Event-ID` (the browser's `EventSource` does it
//! by itself). The stream then subscribes to the hub first (holding what arrives), reads the
//! shopper's partition from the next offset to its committed end ([`CatchUp`]), and then
//! passes on what the hub held, skipping offsets at or below the last one sent. Every decision
//! committed after the page's last one is in one of the two, and offsets make the union exact
//! (a shopper's decisions are all in one partition: the key is the shopper).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// The separator of the token's payload fields (ASCII unit separator: no identifier holds it).
const SEP: char = '\u{1f}';

pub use basketflow_vocab::hmac_sha256;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A stream token for `retailer_id`'s shopper `shopper_id`, valid until `expires_at` (Unix
/// seconds), under `secret`: what a retailer's backend gives its page (see the module docs
/// for the format, to compute it in any language).
pub fn sign(secret: &[u8], retailer_id: &str, shopper_id: &str, expires_at: u64) -> String {
    let payload = format!("{retailer_id}{SEP}{shopper_id}{SEP}{expires_at}");
    format!(
        "v1.{}.{}",
        hex(payload.as_bytes()),
        hex(&hmac_sha256(secret, payload.as_bytes()))
    )
}

/// Whom a verified token lets a page read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    /// The retailer.
    pub retailer_id: String,
    /// The shopper.
    pub shopper_id: String,
    /// Unix seconds after which the token is refused.
    pub expires_at: u64,
}

/// Why a token was refused (the answer says which, never more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not `v1.<hex>.<hex>` with a payload of three fields.
    Malformed,
    /// The retailer has no stream secret here.
    UnknownRetailer,
    /// The MAC does not match any of the retailer's secrets.
    BadSignature,
    /// Past its expiry.
    Expired,
    /// Expires further ahead than the collector allows.
    TooLong,
}

impl TokenError {
    /// The code in the answer's JSON.
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Malformed => "token_malformed",
            TokenError::UnknownRetailer => "token_unknown_retailer",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::TooLong => "token_too_long",
        }
    }
}

/// Equal slices, compared in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `token` at `now` (Unix seconds) against the retailers' stream secrets (several per
/// retailer while one rotates); a token may live at most `max_ttl_s` seconds from now.
pub fn verify(
    secrets: &HashMap<String, Vec<Vec<u8>>>,
    token: &str,
    now: u64,
    max_ttl_s: u64,
) -> Result<Subscriber, TokenError> {
    let rest = token.strip_prefix("v1.").ok_or(TokenError::Malformed)?;
    let (payload_hex, mac_hex) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    let payload = unhex(payload_hex).ok_or(TokenError::Malformed)?;
    let mac = unhex(mac_hex).ok_or(TokenError::Malformed)?;
    let text = std::str::from_utf8(&payload).map_err(|_| TokenError::Malformed)?;
    let mut fields = text.split(SEP);
    let (Some(retailer_id), Some(shopper_id), Some(expires), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(TokenError::Malformed);
    };
    let expires_at: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
    if retailer_id.is_empty() || shopper_id.is_empty() {
        return Err(TokenError::Malformed);
    }
    let keys = secrets
        .get(retailer_id)
        .ok_or(TokenError::UnknownRetailer)?;
    if !keys.iter().any(|k| same(&hmac_sha256(k, &payload), &mac)) {
        return Err(TokenError::BadSignature);
    }
    if expires_at <= now {
        return Err(TokenError::Expired);
    }
    if expires_at > now.saturating_add(max_ttl_s) {
        return Err(TokenError::TooLong);
    }
    Ok(Subscriber {
        retailer_id: retailer_id.to_owned(),
        shopper_id: shopper_id.to_owned(),
        expires_at,
    })
}

/// A decision on its way to a page: its position and its JSON as the topic holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// The partition of `experience-decisions`.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// The record's value (the decision's JSON).
    pub json: Arc<str>,
}

impl Pushed {
    /// The SSE `id` of this decision: `partition:offset`.
    pub fn event_id(&self) -> String {
        format!("{}:{}", self.partition, self.offset)
    }
}

/// The position a page last saw (`Last-Event-ID`: `partition:offset`, both at least 0).
pub fn parse_last_event_id(id: &str) -> Option<(i32, i64)> {
    let (p, o) = id.trim().split_once(':')?;
    let (p, o): (i32, i64) = (p.parse().ok()?, o.parse().ok()?);
    (p >= 0 && o >= 0).then_some((p, o))
}

/// Open streams per shopper at most: a page has one; a few tabs are normal, thousands are an
/// attack with one shopper's token (429 `too_many_streams`).
pub const MAX_STREAMS_PER_SHOPPER: usize = 8;

/// Open streams per collector at most (429 `too_many_streams`).
pub const MAX_STREAMS: usize = 20_000;

/// Catch-up reads at once at most: each holds a consumer on a blocking thread for up to 10 s
/// (503 `unavailable` with `Retry-After` beyond).
pub const MAX_CATCH_UPS: usize = 8;

/// Decisions waiting for a slow page, per subscription: a page that falls this far behind is
/// dropped (it reconnects with `Last-Event-ID` and catches up from the log).
pub const SUBSCRIPTION_BUFFER: usize = 256;

type Key = (String, String);

/// The collector's one reader of the decisions topic, fanning decisions out to the
/// subscriptions of their `(retailer, shopper)`.
#[derive(Debug, Default)]
pub struct Hub {
    subscriptions: Mutex<HashMap<Key, Vec<mpsc::Sender<Pushed>>>>,
    /// The partitions read, once every one has reported its end ([`Hub::run`]): until then
    /// the stream route answers 503 `starting` (a decision before that point could be missed).
    partitions: std::sync::OnceLock<Vec<i32>>,
    /// Decisions handed to at least one subscription.
    pub pushed: AtomicU64,
    /// Subscriptions dropped because their page fell [`SUBSCRIPTION_BUFFER`] behind.
    pub dropped_slow: AtomicU64,
}

/// One page's subscription: what the hub hands it, until it is dropped (which takes it out of
/// the hub at once).
#[derive(Debug)]
pub struct Subscription {
    /// Decisions of the shopper, in partition order.
    pub receiver: mpsc::Receiver<Pushed>,
    hub: Arc<Hub>,
    key: Key,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.receiver.close();
        let mut subs = self.hub.subscriptions.lock().expect("hub lock");
        if let Some(list) = subs.get_mut(&self.key) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                subs.remove(&self.key);
            }
        }
    }
}

/// Why a subscription was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    /// The hub does not know where the topic ends yet.
    Starting,
    /// [`MAX_STREAMS_PER_SHOPPER`] or [`MAX_STREAMS`] reached.
    TooManyStreams,
}

#[derive(serde::Deserialize)]
struct RetailerOnly<'a> {
    #[serde(borrow)]
    retailer_id: std::borrow::Cow<'a, str>,
}

impl Hub {
    /// Subscribes to `retailer_id`'s shopper `shopper_id`'s decisions from now on, once the
    /// hub is ready and within the limits.
    pub fn subscribe(
        self: &Arc<Self>,
        retailer_id: &str,
        shopper_id: &str,
    ) -> Result<Subscription, Busy> {
        if self.partitions.get().is_none() {
            return Err(Busy::Starting);
        }
        let (sender, receiver) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let key = (retailer_id.to_owned(), shopper_id.to_owned());
        let mut subs = self.subscriptions.lock().expect("hub lock");
        let total: usize = subs.values().map(Vec::len).sum();
        let list = subs.entry(key.clone()).or_default();
        if list.len() >= MAX_STREAMS_PER_SHOPPER || total >= MAX_STREAMS {
            if list.is_empty() {
                subs.remove(&key);
            }
            return Err(Busy::TooManyStreams);
        }
        list.push(sender);
        drop(subs);
        Ok(Subscription {
            receiver,
            hub: self.clone(),
            key,
        })
    }

    /// The partitions read, once the hub is ready.
    pub fn partitions(&self) -> Option<&[i32]> {
        self.partitions.get().map(Vec::as_slice)
    }

    /// The number of open subscriptions.
    pub fn subscribers(&self) -> usize {
        self.subscriptions
            .lock()
            .expect("hub lock")
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Hands a record of the decisions topic (key = shopper) to its subscriptions; drops
    /// those whose page has gone or fallen behind. A record without a key or whose JSON names
    /// no retailer reaches nobody.
    pub fn dispatch(&self, partition: i32, offset: i64, key: Option<&[u8]>, value: &[u8]) {
        let Some(shopper) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
            return;
        };
        let Ok(RetailerOnly { retailer_id }) = serde_json::from_slice::<RetailerOnly>(value) else {
            return;
        };
        let mut subs = self.subscriptions.lock().expect("hub lock");
        let key = (retailer_id.into_owned(), shopper.to_owned());
        let Some(list) = subs.get_mut(&key) else {
            return;
        };
        let Ok(json) = std::str::from_utf8(value) else {
            return;
        };
        let pushed = Pushed {
            partition,
            offset,
            json: Arc::from(json),
        };
        list.retain(|sender| match sender.try_send(pushed.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped_slow.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if !list.is_empty() {
            self.pushed.fetch_add(1, Ordering::Relaxed);
        } else {
            subs.remove(&key);
        }
    }
}

/// Merges a resumed stream: what the catch-up read from the log (offsets up to its end), then
/// what the hub held meanwhile, each position once, in order. Positions are per partition
/// (a decision of another partition, after the topic gained partitions, always passes).
#[derive(Debug, Default)]
pub struct CatchUp {
    last_sent: HashMap<i32, i64>,
}

impl CatchUp {
    /// A stream whose page last saw `position` (`None`: nothing yet).
    pub fn after(position: Option<(i32, i64)>) -> CatchUp {
        CatchUp {
            last_sent: position.into_iter().collect(),
        }
    }

    /// Whether to pass `pushed` on (past the last one passed in its partition), noting it.
    pub fn pass(&mut self, pushed: &Pushed) -> bool {
        let last = self.last_sent.entry(pushed.partition).or_insert(-1);
        if pushed.offset <= *last {
            return false;
        }
        *last = pushed.offset;
        true
    }
}

/// The settings of a decisions reader: a consumer of committed data only, offsets its own.
fn reader_config(brokers: &str) -> rdkafka::ClientConfig {
    let mut c = basketflow_kafka::config::client_config(brokers);
    // Our own positions; no group state (librdkafka wants a group id all the same).
    c.set("group.id", "basketflow-collector-decisions")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A page sees decisions of committed transactions only: never a replay's.
        .set("isolation.level", "read_committed")
        // The catch-up stops at the end it finds.
        .set("enable.partition.eof", "true")
        // A page's last decision already deleted by the topic's retention: the catch-up
        // starts at the oldest one left rather than at the end.
        .set("auto.offset.reset", "earliest")
        // A decision is pushed as soon as it is there (within 10 ms otherwise).
        .set("fetch.wait.max.ms", "10");
    c
}

impl Hub {
    /// Reads `topic` on `brokers` from its committed end, on a thread of its own, handing
    /// every decision to [`Hub::dispatch`] until `stop` is set. The hub is ready (streams
    /// open) once every partition has reported where it ends, so a decision committed after a
    /// stream opens reaches it; until then, and while the broker or the topic is missing, the
    /// route answers 503 `starting` (the collector's other routes serve meanwhile). Partitions
    /// added later are not read (restart the collector).
    pub fn run(
        self: Arc<Self>,
        brokers: &str,
        topic: &str,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
        std::thread::Builder::new()
            .name("decisions-hub".into())
            .spawn(move || self.read(&brokers, &topic, &stop))
            .expect("a thread starts")
    }

    fn read(&self, brokers: &str, topic: &str, stop: &std::sync::atomic::AtomicBool) {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::error::KafkaError;
        use rdkafka::{Message, Offset, TopicPartitionList};
        let consumer: BaseConsumer = match reader_config(brokers).create() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("collector: decisions stream off: cannot create its consumer: {e}");
                return;
            }
        };
        let second = std::time::Duration::from_secs(1);
        let mut said = false;
        let partitions: Vec<i32> = loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let found: Vec<i32> = match consumer.fetch_metadata(Some(topic), second * 5) {
                Ok(m) => m
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect(),
                Err(_) => Vec::new(),
            };
            if !found.is_empty() {
                break found;
            }
            if !said {
                eprintln!(
                    "collector: decisions topic {topic} not found yet (broker down or topic \
                     missing); GET /v1/decisions/stream answers 503 until it is"
                );
                said = true;
            }
            std::thread::sleep(second);
        };
        let mut list = TopicPartitionList::new();
        for p in &partitions {
            list.add_partition_offset(topic, *p, Offset::End)
                .expect("a partition of a named topic");
        }
        if let Err(e) = consumer.assign(&list) {
            eprintln!("collector: decisions stream off: cannot assign {topic}: {e}");
            return;
        }
        let mut at_end = std::collections::BTreeSet::new();
        while !stop.load(Ordering::Relaxed) {
            match consumer.poll(std::time::Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    if let Some(value) = m.payload() {
                        self.dispatch(m.partition(), m.offset(), m.key(), value);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // Where "the end" is becomes known when each partition reports it.
                    if at_end.insert(p) && at_end.len() == partitions.len() {
                        let _ = self.partitions.set(partitions.clone());
                    }
                }
                // Transient broker errors: librdkafka recovers by itself.
                Some(Err(_)) | None => {}
            }
        }
    }
}

/// The decisions of `subscriber` in `partition` of `topic` from offset `from` to the
/// committed end the read finds, in order (blocking: run it off the async threads).
pub fn catch_up(
    brokers: &str,
    topic: &str,
    partition: i32,
    from: i64,
    subscriber: &Subscriber,
) -> Result<Vec<Pushed>, rdkafka::error::KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = reader_config(brokers).create()?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(from))?;
    consumer.assign(&list)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut found = Vec::new();
    let shopper = subscriber.shopper_id.as_bytes();
    while std::time::Instant::now() < deadline {
        match consumer.poll(std::time::Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let (Some(key), Some(value)) = (m.key(), m.payload()) else {
                    continue;
                };
                if key != shopper {
                    continue;
                }
                let ours = serde_json::from_slice::<RetailerOnly>(value)
                    .is_ok_and(|r| r.retailer_id == subscriber.retailer_id);
                if let (true, Ok(json)) = (ours, std::str::from_utf8(value)) {
                    found.push(Pushed {
                        partition,
                        offset: m.offset(),
                        json: Arc::from(json),
                    });
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(found),
            Some(Err(e)) => {
                if matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::OffsetOutOfRange)
                ) {
                    return Err(e);
                }
            }
            None => {}
        }
    }
    Err(KafkaError::MessageConsumption(
        RDKafkaErrorCode::OperationTimedOut,
    ))
}

/// What `GET /v1/decisions/stream` needs: the hub, where to catch up from, and the
/// retailers' stream secrets.
#[derive(Debug)]
pub struct DecisionStreams {
    /// The hub reading the decisions topic.
    pub hub: Arc<Hub>,
    /// The brokers, for catch-up reads.
    pub brokers: String,
    /// The decisions topic.
    pub topic: String,
    /// Each retailer's stream secrets (several while one rotates).
    pub secrets: HashMap<String, Vec<Vec<u8>>>,
    /// The longest a token may still live when it is presented.
    pub max_ttl_s: u64,
    /// Catch-up reads running ([`MAX_CATCH_UPS`]).
    catch_ups: Arc<tokio::sync::Semaphore>,
    /// Set by [`DecisionStreams::close`]: every open stream ends (the collector is stopping).
    closing: tokio::sync::watch::Sender<bool>,
}

/// Why a stream was not opened.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The token was refused (401).
    Token(TokenError),
    /// `Last-Event-ID` is not `partition:offset` of a partition read here (400).
    BadLastEventId,
    /// The hub does not know where the topic ends yet (503 `starting`).
    Starting,
    /// Too many streams for the shopper or the collector (429).
    TooManyStreams,
    /// The catch-up read failed (503: retry).
    Unavailable(String),
}

/// One SSE item of a stream.
pub type SseItem = Result<axum::response::sse::Event, std::convert::Infallible>;

impl DecisionStreams {
    /// The streams of `hub`, catching up from `topic` on `brokers`, for tokens signed with
    /// `secrets` and living at most `max_ttl_s` more seconds.
    pub fn new(
        hub: Arc<Hub>,
        brokers: &str,
        topic: &str,
        secrets: HashMap<String, Vec<Vec<u8>>>,
        max_ttl_s: u64,
    ) -> DecisionStreams {
        DecisionStreams {
            hub,
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            secrets,
            max_ttl_s,
            catch_ups: Arc::new(tokio::sync::Semaphore::new(MAX_CATCH_UPS)),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Ends every open stream, now and for streams opened later: the collector is stopping,
    /// and a graceful shutdown waits for open responses, which a stream's would hold until its
    /// token expires (minutes). Pages reconnect with `Last-Event-ID` to the next collector.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Opens a page's stream: `token` checked at `now` (Unix seconds), then the decisions
    /// after `last_event_id` (if any) from the log, then those the hub hands on, each once, in
    /// order; the stream ends when the token expires (the page reconnects with a new one).
    pub async fn open(
        &self,
        token: &str,
        last_event_id: Option<&str>,
        now: u64,
    ) -> Result<impl futures_util::Stream<Item = SseItem> + Send + 'static, OpenError> {
        let who = verify(&self.secrets, token, now, self.max_ttl_s).map_err(OpenError::Token)?;
        let last = match last_event_id {
            None => None,
            Some(id) => Some(parse_last_event_id(id).ok_or(OpenError::BadLastEventId)?),
        };
        // Subscribe first: what is committed during the catch-up waits in the subscription.
        let subscription = self
            .hub
            .subscribe(&who.retailer_id, &who.shopper_id)
            .map_err(|busy| match busy {
                Busy::Starting => OpenError::Starting,
                Busy::TooManyStreams => OpenError::TooManyStreams,
            })?;
        let (caught_up, merge) = match last {
            None => (Vec::new(), CatchUp::after(None)),
            Some((partition, offset)) => {
                if !self
                    .hub
                    .partitions()
                    .is_some_and(|ps| ps.contains(&partition))
                {
                    return Err(OpenError::BadLastEventId);
                }
                let _permit = self.catch_ups.clone().try_acquire_owned().map_err(|_| {
                    OpenError::Unavailable("too many resumed streams at once".into())
                })?;
                let (brokers, topic, who) = (self.brokers.clone(), self.topic.clone(), who.clone());
                let read = tokio::task::spawn_blocking(move || {
                    catch_up(&brokers, &topic, partition, offset + 1, &who)
                })
                .await
                .map_err(|e| OpenError::Unavailable(e.to_string()))?
                .map_err(|e| OpenError::Unavailable(e.to_string()))?;
                (read, CatchUp::after(Some((partition, offset))))
            }
        };
        let expires_in = std::time::Duration::from_secs(who.expires_at.saturating_sub(now));
        let deadline = tokio::time::Instant::now() + expires_in;
        let state = (
            std::collections::VecDeque::from(caught_up),
            subscription,
            merge,
            self.closing.subscribe(),
        );
        Ok(futures_util::stream::unfold(
            state,
            move |(mut log, mut live, mut merge, mut closing)| async move {
                loop {
                    if *closing.borrow() {
                        return None;
                    }
                    let next = match log.pop_front() {
                        Some(p) => p,
                        None => tokio::select! {
                            p = live.receiver.recv() => p?,
                            () = tokio::time::sleep_until(deadline) => return None,
                            // Closed, or the collector's streams are gone.
                            changed = closing.changed() => {
                                if changed.is_err() {
                                    return None;
                                }
                                continue;
                            }
                        },
                    };
                    if merge.pass(&next) {
                        let event = axum::response::sse::Event::default()
                            .id(next.event_id())
                            .event("decision")
                            .data(&*next.json);
                        return Some((Ok(event), (log, live, merge, closing)));
                    }
                }
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> HashMap<String, Vec<Vec<u8>>> {
        HashMap::from([
            ("r1".to_owned(), vec![b"old".to_vec(), b"new".to_vec()]),
            ("r2".to_owned(), vec![b"other".to_vec()]),
        ])
    }

    #[test]
    fn a_token_names_one_shopper_of_one_retailer_until_it_expires() {
        let t = sign(b"new", "r1", "cust-1", 1_000);
        // Pinned: Python's hmac.new(b"new", b"r1\x1fcust-1\x1f1000", "sha256").hexdigest().
        assert_eq!(
            t,
            "v1.72311f637573742d311f31303030.\
             6793ea20394b175fc424a335bf37aec92bd0a61c24ea2ac1ba19390bbdb0d575"
        );
        let s = |token: &str, now| verify(&secrets(), token, now, 600);
        assert_eq!(
            s(&t, 999),
            Ok(Subscriber {
                retailer_id: "r1".into(),
                shopper_id: "cust-1".into(),
                expires_at: 1_000
            })
        );
        // Either of a retailer's secrets (rotation).
        assert!(s(&sign(b"old", "r1", "cust-1", 1_000), 999).is_ok());
        assert_eq!(s(&t, 1_000), Err(TokenError::Expired));
        assert_eq!(s(&t, 100), Err(TokenError::TooLong));
        // Another retailer's secret, an unknown retailer, a forged shopper.
        assert_eq!(
            s(&sign(b"other", "r1", "cust-1", 1_000), 999),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            s(&sign(b"x", "r3", "cust-1", 1_000), 999),
            Err(TokenError::UnknownRetailer)
        );
        let forged = t.replace(&hex(b"cust-1"), &hex(b"cust-2"));
        assert_eq!(s(&forged, 999), Err(TokenError::BadSignature));
        for bad in [
            "",
            "v1.",
            "v2.00.00",
            "v1.zz.00",
            "v1.7231.abc",
            "v1.72311f63.00",
        ] {
            assert_eq!(s(bad, 999), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_hub_hands_each_decision_to_its_shoppers_pages_only() {
        let hub = Arc::new(Hub::default());
        // Not at the topic's end yet: no stream opens.
        assert_eq!(hub.subscribe("r1", "s1").unwrap_err(), Busy::Starting);
        hub.partitions.set(vec![3]).unwrap();
        let mut a = hub.subscribe("r1", "s1").unwrap();
        let mut b = hub.subscribe("r1", "s1").unwrap();
        let mut other_retailer = hub.subscribe("r2", "s1").unwrap();
        hub.dispatch(
            3,
            10,
            Some(b"s1"),
            br#"{"retailer_id":"r1","decision_id":"d1"}"#,
        );
        hub.dispatch(
            3,
            11,
            Some(b"s2"),
            br#"{"retailer_id":"r1","decision_id":"d2"}"#,
        );
        hub.dispatch(3, 12, None, br#"{"retailer_id":"r1"}"#);
        hub.dispatch(3, 13, Some(b"s1"), b"not json");
        for sub in [&mut a, &mut b] {
            let got = sub.receiver.try_recv().unwrap();
            assert_eq!(
                (got.event_id(), &*got.json),
                (
                    "3:10".to_owned(),
                    r#"{"retailer_id":"r1","decision_id":"d1"}"#
                )
            );
            assert!(sub.receiver.try_recv().is_err());
        }
        assert!(other_retailer.receiver.try_recv().is_err());
        assert_eq!(hub.pushed.load(Ordering::Relaxed), 1);
        // A page that has gone leaves the hub at once.
        drop(a);
        assert_eq!(hub.subscribers(), 2);
        // A page that falls behind is dropped (it resumes from the log).
        for i in 0..=SUBSCRIPTION_BUFFER as i64 {
            hub.dispatch(3, 100 + i, Some(b"s1"), br#"{"retailer_id":"r1"}"#);
        }
        assert_eq!(hub.subscribers(), 1);
        assert_eq!(hub.dropped_slow.load(Ordering::Relaxed), 1);
        drop((b, other_retailer));
        assert_eq!(hub.subscribers(), 0);
        assert!(hub.subscriptions.lock().unwrap().is_empty());
        // At most so many streams per shopper; a closed one frees its place.
        let mut open: Vec<Subscription> = (0..MAX_STREAMS_PER_SHOPPER)
            .map(|_| hub.subscribe("r1", "s9").unwrap())
            .collect();
        assert_eq!(hub.subscribe("r1", "s9").unwrap_err(), Busy::TooManyStreams);
        assert!(hub.subscribe("r1", "s8").is_ok());
        open.pop();
        assert!(hub.subscribe("r1", "s9").is_ok());
    }

    #[test]
    fn a_resumed_stream_passes_each_offset_once_in_order() {
        let p = |offset| Pushed {
            partition: 0,
            offset,
            json: Arc::from("{}"),
        };
        let mut c = CatchUp::after(Some((0, 5)));
        // The log from 6, then what the hub held (7 and 8 again, then 9).
        let passed: Vec<i64> = [4, 6, 7, 8, 7, 8, 9]
            .into_iter()
            .filter(|&o| c.pass(&p(o)))
            .collect();
        assert_eq!(passed, [6, 7, 8, 9]);
        assert_eq!(parse_last_event_id(" 3:42 "), Some((3, 42)));
        assert_eq!(parse_last_event_id("3"), None);
        assert_eq!(parse_last_event_id("x:1"), None);
        assert_eq!(parse_last_event_id("0:-3"), None);
        assert_eq!(parse_last_event_id("-1:3"), None);
        let mut fresh = CatchUp::after(None);
        assert!(fresh.pass(&p(0)));
        // Another partition (the topic gained partitions) has positions of its own.
        let other = Pushed {
            partition: 1,
            offset: 2,
            json: Arc::from("{}"),
        };
        assert!(c.pass(&other));
        assert!(!c.pass(&other));
        assert!(!c.pass(&p(9)));
    }
}
