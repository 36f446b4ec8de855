//! `basketflow rewards run`: reads the reward-contacts topic and the erasure requests, and keeps
//! the rewards database ([`crate::store`]) equal to "every contact read, minus the erased
//! shoppers' and the expired ones".
//!
//! ```text
//!  reward-contacts ──► parse ──► erased? expired? ──► reward_contacts_log ─► loader_positions
//!  (compacted)            │ bad: counted, skipped       (dropped, counted)
//!        ▲                                   
//!        │ tombstones (key retailer U+001F shopper U+001F contact, one per contact)
//!  privacy-requests ──► DELETE the shopper's rows (mutation, waited) ──► rewards_audit ─► positions
//! ```
//!
//! # At least once, idempotent rows
//! Messages are read from the positions recorded in the database (the beginning of each
//! partition the first time). Rows are written first, positions after: a crash in between
//! writes the same rows again on restart (same partition and offset, same values), and the
//! `reward_contacts` view shows one row per contact id whatever the copies.
//!
//! # Erasure
//! At start the loader reads every request already in the privacy topic
//! ([`basketflow_kafka::read_erased`]) and never stores a contact of those shoppers; a request
//! read while running joins the set. Applying a request: the contacts read so far are
//! written, a tombstone for each of the shopper's contacts in the store (key `retailer_id`
//! U+001F `shopper_id` U+001F `contact_id`) is produced to the contacts topic (acknowledged by
//! every in-sync replica) so that compaction removes the shopper's messages from Kafka too, the shopper's rows are deleted (a mutation, waited for),
//! and the audit records the request (request id, retailer, rows removed; no shopper id). Then
//! its position is written.
//!
//! # Failures
//! A message that is not a contact or a request is counted and skipped. A failure of ClickHouse
//! or Kafka stops the loader with an error (status 1, one line): restarted, it resumes from the
//! positions it wrote, repeating at most the batch or the erasure in progress. A crash in between repeats the step: the DELETE always runs (idempotent),
//! and a request the audit already holds for its retailer (request ids are unique per retailer
//! only) is not audited twice unless it removed rows. A contact of an erased shopper read later is dropped and counted, as the
//! graph treats later events of an erased shopper anonymously (a shopper who wants to be known
//! again needs a new id from the retailer), and a tombstone for its key is produced
//! (acknowledged before its position is written): otherwise it would be its key's newest
//! message, which compaction keeps over the erasure's tombstone.
//!
//! # Retention
//! At start and then every quarter of the shortest period (at least 1 s, at most 1 h), contacts
//! read (broker time) longer ago than their retailer's period are deleted and audited; a
//! contact read already past its period is dropped when read. The topic's own `retention.ms`
//! is the SHORTEST period (the topic is only the transport: no retailer's contacts stay in
//! Kafka longer than its period), with `segment.ms` and `max.compaction.lag.ms` of
//! [`SEGMENT_MS`]; the loader sets them at start, on a topic it creates or one that exists.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use basketflow_kafka::{
    check_topics_exist, client_config, ensure_topic, keyed_producer, read_erased, set_topic_configs,
};
use basketflow_vocab::privacy::Retention;
use basketflow_vocab::ErasureRequest;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::contact::{contact_key, RewardContact};
use crate::metrics::LoaderMetrics;
use crate::store::{Erased, RewardsStore, StoredContact};
use crate::RewardsError;

/// Contacts written per insert at most.
const MAX_BATCH: usize = 1000;
/// How long the loader collects messages before it writes them.
const BATCH_WINDOW: Duration = Duration::from_millis(200);

/// What the loader needs: the brokers, the two topics, the store and the periods.
#[derive(Clone, Debug)]
pub struct LoaderSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// The reward-contacts topic (`[rewards] topic`).
    pub contacts_topic: String,
    /// The erasure requests (`[kafka] privacy_topic`).
    pub privacy_topic: String,
    /// ClickHouse's HTTP URL (`[clickhouse] url`).
    pub clickhouse_url: String,
    /// `[rewards] database`.
    pub database: String,
    /// `[rewards] user`.
    pub user: String,
    /// `[rewards] password`.
    pub password: String,
    /// `[privacy]`'s periods.
    pub retention: Retention,
    /// Stop once every partition is read up to the end it had at start (tests, one-off runs).
    pub exit_when_caught_up: bool,
    /// Where to serve `/metrics` and `/health` (`[rewards] metrics_listen`); `None`: nowhere.
    pub metrics_listen: Option<String>,
}

/// What the loader did, counted since it started (logged every minute and when it stops;
/// printed as JSON by `basketflow rewards run` when it stops).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LoaderCounts {
    /// Contacts written to the store.
    pub contacts_stored: u64,
    /// Messages of the contacts topic that are not a valid contact (skipped).
    pub contacts_invalid: u64,
    /// Contacts of a shopper erased before they were read (dropped).
    pub contacts_of_erased_shoppers: u64,
    /// Contacts read already past their retention period (dropped).
    pub contacts_expired: u64,
    /// Tombstones read on the contacts topic (an erasure's; skipped).
    pub tombstones_read: u64,
    /// Tombstones produced to the contacts topic (one per contact key of an erased shopper).
    pub tombstones_produced: u64,
    /// Erasure requests applied (rows deleted, tombstones produced, audited).
    pub erasures_applied: u64,
    /// Erasure requests already audited before (a replay; nothing done).
    pub erasures_already_applied: u64,
    /// Messages of the privacy topic that are not a valid request (skipped).
    pub requests_invalid: u64,
    /// Rows deleted by erasures.
    pub rows_erased: u64,
    /// Rows deleted by retention.
    pub rows_expired: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long a segment of the contacts topic stays active (`segment.ms`) and a message may wait
/// for compaction (`max.compaction.lag.ms`): one hour. The active segment is never compacted
/// nor deleted, so this bounds how long an erased email outlives its tombstone, and how far
/// past the retention period a message is kept (Kafka rolls a segment on the next append
/// after this time). A day would be 24 times fewer segments, which a topic of a few contacts
/// a day does not need; an hour keeps an erasure's effect in Kafka within hours, not days.
pub const SEGMENT_MS: u64 = 3_600_000;

/// The topic configs of the contacts topic for the periods `retention`.
pub fn topic_configs(retention: &Retention) -> Vec<(&'static str, String)> {
    vec![
        // Compaction keeps the latest message per key; an erasure's tombstone removes them all.
        ("cleanup.policy", "compact,delete".to_string()),
        // ... and deletion drops what is older than the SHORTEST retention period: the topic is
        // only the transport (the store keeps each contact for its own retailer's period), and
        // no retailer's contacts may stay in Kafka longer than that retailer agreed to.
        ("retention.ms", retention.bounds_ms().0.to_string()),
        // Retention counts from the broker's clock, not a client's.
        ("message.timestamp.type", "LogAppendTime".to_string()),
        ("segment.ms", SEGMENT_MS.to_string()),
        ("max.compaction.lag.ms", SEGMENT_MS.to_string()),
    ]
}

/// Runs the loader until `stop` is set (or, with `exit_when_caught_up`, until it has read what
/// the topics held when it started). Blocking: it runs its own tokio runtime.
pub fn run(settings: &LoaderSettings, stop: Arc<AtomicBool>) -> Result<LoaderCounts, RewardsError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RewardsError::Io("tokio runtime".into(), e))?;
    let s = settings;
    let store = runtime.block_on(RewardsStore::connect(
        &s.clickhouse_url,
        &s.database,
        &s.user,
        &s.password,
    ))?;
    runtime.block_on(store.migrate())?;
    let configs = topic_configs(&s.retention);
    let configs: Vec<(&str, &str)> = configs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    runtime
        .block_on(ensure_topic(&s.brokers, &s.contacts_topic, 1, &configs))
        .map_err(RewardsError::Kafka)?;
    // A topic that existed (scripts/stack's, an older loader's, other periods) gets them too.
    runtime
        .block_on(set_topic_configs(&s.brokers, &s.contacts_topic, &configs))
        .map_err(|e| {
            RewardsError::Config(format!(
                "cannot set the configs of topic {} ({e}); set them by hand: \
                 kafka-configs.sh --bootstrap-server {} --alter --entity-type topics \
                 --entity-name {} --add-config {}",
                s.contacts_topic,
                s.brokers,
                s.contacts_topic,
                configs
                    .iter()
                    // (a list value goes in brackets)
                    .map(|(k, v)| match v.contains(',') {
                        true => format!("{k}=[{v}]"),
                        false => format!("{k}={v}"),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            ))
        })?;
    check_topics_exist(&s.brokers, &[&s.contacts_topic, &s.privacy_topic])
        .map_err(|e| RewardsError::Config(e.to_string()))?;
    let mut erased = read_erased(&s.brokers, &s.privacy_topic).map_err(RewardsError::Kafka)?;

    let consumer: BaseConsumer = client_config(&s.brokers)
        // Positions are the store's, never the group's.
        .set("group.id", "basketflow-rewards")
        .set("enable.auto.commit", "false")
        // Only committed records: an aborted producer's contact or request never counts.
        .set("isolation.level", "read_committed")
        .create()
        .map_err(RewardsError::Kafka)?;
    // Acknowledged by every in-sync replica before the erasure is audited.
    let producer: FutureProducer = keyed_producer(client_config(&s.brokers))
        .set("acks", "all")
        .create()
        .map_err(RewardsError::Kafka)?;

    let stored = runtime.block_on(store.positions())?;
    let mut tpl = TopicPartitionList::new();
    let mut positions: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut start_high: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for topic in [&s.contacts_topic, &s.privacy_topic] {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(RewardsError::Kafka)?;
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            let key = (topic.clone(), p.id());
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(30))
                .map_err(RewardsError::Kafka)?;
            let from = stored.get(&key).copied().unwrap_or(low).max(low);
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(from))
                .map_err(RewardsError::Kafka)?;
            positions.insert(key.clone(), from);
            start_high.insert(key, high);
        }
    }
    consumer.assign(&tpl).map_err(RewardsError::Kafka)?;
    log::info!(
        contacts_topic = s.contacts_topic.as_str(),
        privacy_topic = s.privacy_topic.as_str(),
        database = s.database.as_str(),
        user = s.user.as_str(),
        erased_shoppers = erased.len();
        "rewards loader started"
    );

    let metrics = Arc::new(LoaderMetrics::default());
    if let Some(listen) = &s.metrics_listen {
        match crate::metrics::serve(listen, metrics.clone()) {
            Ok(addr) => {
                log::info!(address = addr.to_string().as_str(); "rewards loader: metrics on http://{addr}/metrics, health on http://{addr}/health")
            }
            // The loader's job does not depend on its endpoint: say so, and go on.
            Err(e) => {
                log::warn!(listen = listen.as_str(), error = e.to_string().as_str(); "rewards loader: cannot serve metrics")
            }
        }
    }
    let mut counts = LoaderCounts::default();
    let shortest = s.retention.bounds_ms().0;
    let retention_every = Duration::from_millis((shortest / 4).clamp(1_000, 3_600_000));
    let mut next_retention = Instant::now();
    let mut next_log = Instant::now() + Duration::from_secs(60);
    let mut pending: Vec<StoredContact> = Vec::new();
    let mut dirty: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let flush = |pending: &mut Vec<StoredContact>,
                 dirty: &mut BTreeMap<(String, i32), i64>,
                 counts: &mut LoaderCounts|
     -> Result<(), RewardsError> {
        if pending.is_empty() && dirty.is_empty() {
            return Ok(());
        }
        runtime.block_on(store.write(pending, dirty))?;
        counts.contacts_stored += pending.len() as u64;
        pending.clear();
        dirty.clear();
        Ok(())
    };

    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if Instant::now() >= next_retention {
            flush(&mut pending, &mut dirty, &mut counts)?;
            let n = runtime.block_on(store.apply_retention(now_ms(), &s.retention))?;
            if n > 0 {
                log::info!(rows = n; "rewards retention applied");
            }
            counts.rows_expired += n;
            next_retention = Instant::now() + retention_every;
        }
        if Instant::now() >= next_log {
            log::info!(counts = serde_json::to_string(&counts).unwrap_or_default().as_str(); "rewards loader progress");
            next_log = Instant::now() + Duration::from_secs(60);
        }
        let window = Instant::now() + BATCH_WINDOW;
        while pending.len() < MAX_BATCH && Instant::now() < window {
            let message = match consumer.poll(Duration::from_millis(50)) {
                None => {
                    if s.exit_when_caught_up {
                        break;
                    }
                    continue;
                }
                Some(Err(e)) => {
                    log::warn!(error = e.to_string().as_str(); "rewards loader: consumer error");
                    continue;
                }
                Some(Ok(m)) => m,
            };
            let key = (message.topic().to_string(), message.partition());
            let next = message.offset() + 1;
            // A one-off run reads what was there at start, and nothing after it (its own
            // tombstones included): the next run reads those.
            if s.exit_when_caught_up
                && start_high
                    .get(&key)
                    .is_some_and(|high| message.offset() >= *high)
            {
                continue;
            }
            if message.topic() == s.contacts_topic {
                match read_contact(&message, &erased, &s.retention, &mut counts) {
                    Read::Store(contact) => pending.push(contact),
                    // Dropped from the store, and from Kafka too: this message is now its key's
                    // newest, which compaction would keep over the erasure's tombstone. Its
                    // tombstone is acknowledged before the position moves past it.
                    Read::OfErased(key) => {
                        tombstone(&runtime, &producer, &s.contacts_topic, &[key])?;
                        counts.tombstones_produced += 1;
                    }
                    Read::Skip => {}
                }
                positions.insert(key.clone(), next);
                dirty.insert(key, next);
            } else {
                // An erasure: everything read before it is written first.
                flush(&mut pending, &mut dirty, &mut counts)?;
                match ErasureRequest::parse(message.payload().unwrap_or_default()) {
                    Err(why) => {
                        counts.requests_invalid += 1;
                        log::warn!(partition = message.partition(), offset = message.offset(), reason = why.as_str(); "rewards loader: not an erasure request, skipped");
                    }
                    Ok(r) => {
                        erased.insert((r.retailer_id.clone(), r.shopper_id.clone()));
                        apply_erasure(&runtime, &store, &producer, s, &r, &mut counts)?;
                    }
                }
                positions.insert(key.clone(), next);
                dirty.insert(key, next);
                flush(&mut pending, &mut dirty, &mut counts)?;
            }
        }
        flush(&mut pending, &mut dirty, &mut counts)?;
        metrics.publish(&counts);
        if s.exit_when_caught_up && caught_up(&consumer, &positions, &start_high) {
            break;
        }
    }
    flush(&mut pending, &mut dirty, &mut counts)?;
    log::info!(counts = serde_json::to_string(&counts).unwrap_or_default().as_str(); "rewards loader stopped");
    Ok(counts)
}

/// True when every partition is read up to the end it had at start.
fn caught_up(
    consumer: &BaseConsumer,
    positions: &BTreeMap<(String, i32), i64>,
    start_high: &BTreeMap<(String, i32), i64>,
) -> bool {
    // The consumer's own position also moves past transaction markers, which are never
    // delivered as messages.
    let theirs: BTreeMap<(String, i32), i64> = consumer
        .position()
        .map(|tpl| {
            tpl.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    start_high.iter().all(|(k, high)| {
        positions
            .get(k)
            .copied()
            .unwrap_or(0)
            .max(theirs.get(k).copied().unwrap_or(0))
            >= *high
    })
}

/// What to do with a message of the contacts topic.
enum Read {
    /// Store the contact.
    Store(StoredContact),
    /// A contact of an erased shopper (dropped): tombstone its key.
    OfErased(String),
    /// A tombstone, not a contact, or already expired (counted): nothing.
    Skip,
}

/// The contact in `message`, unless it is a tombstone, invalid, of an erased shopper or
/// already expired (each counted).
fn read_contact(
    message: &BorrowedMessage<'_>,
    erased: &BTreeSet<(String, String)>,
    retention: &Retention,
    counts: &mut LoaderCounts,
) -> Read {
    let Some(payload) = message.payload() else {
        counts.tombstones_read += 1;
        return Read::Skip;
    };
    let contact = match RewardContact::parse(payload) {
        Ok(c) => c,
        Err(e) => {
            counts.contacts_invalid += 1;
            // The reason names the field, never its value (it may be an email address).
            log::warn!(partition = message.partition(), offset = message.offset(), code = e.code, field = e.field.as_deref().unwrap_or(""); "rewards loader: not a reward contact, skipped");
            return Read::Skip;
        }
    };
    if erased.contains(&(contact.retailer_id.clone(), contact.shopper_id.clone())) {
        counts.contacts_of_erased_shoppers += 1;
        return Read::OfErased(contact.key());
    }
    let received_ms = message
        .timestamp()
        .to_millis()
        .filter(|t| *t >= 0)
        .map_or_else(now_ms, |t| t as u64);
    if received_ms + retention.period_ms(&contact.retailer_id) < now_ms() {
        counts.contacts_expired += 1;
        return Read::Skip;
    }
    Read::Store(StoredContact {
        contact,
        received_ms,
        partition: message.partition(),
        offset: message.offset(),
    })
}

/// Deletes the shopper's contacts, produces the tombstone, audits.
fn apply_erasure(
    runtime: &tokio::runtime::Runtime,
    store: &RewardsStore,
    producer: &FutureProducer,
    s: &LoaderSettings,
    r: &ErasureRequest,
    counts: &mut LoaderCounts,
) -> Result<(), RewardsError> {
    // The tombstones first, one per contact the store holds (every contact read before the
    // request was written): the DELETE forgets the ids, and the audit row says the request is
    // done, so it comes last. A crash in between repeats the step with the same ids.
    let ids = runtime.block_on(store.contact_ids(&r.retailer_id, &r.shopper_id))?;
    let keys: Vec<String> = ids
        .iter()
        .map(|id| contact_key(&r.retailer_id, &r.shopper_id, id))
        .collect();
    tombstone(runtime, producer, &s.contacts_topic, &keys)?;
    counts.tombstones_produced += keys.len() as u64;
    match runtime.block_on(store.erase(&r.request_id, &r.retailer_id, &r.shopper_id))? {
        Erased::Applied(rows) => {
            counts.erasures_applied += 1;
            counts.rows_erased += rows;
            log::info!(request_id = r.request_id.as_str(), retailer_id = r.retailer_id.as_str(), rows_removed = rows; "rewards erasure applied");
        }
        Erased::AlreadyAudited => counts.erasures_already_applied += 1,
    }
    Ok(())
}

/// Produces a tombstone for each of `keys` to `topic` and waits until every one is
/// acknowledged (by every in-sync replica: the producer's `acks=all`).
fn tombstone(
    runtime: &tokio::runtime::Runtime,
    producer: &FutureProducer,
    topic: &str,
    keys: &[String],
) -> Result<(), RewardsError> {
    runtime.block_on(async {
        let sends: Vec<_> = keys
            .iter()
            .map(|key| {
                producer.send(
                    FutureRecord::<str, [u8]>::to(topic).key(key),
                    Timeout::After(Duration::from_secs(30)),
                )
            })
            .collect();
        for sent in sends {
            sent.await.map_err(|(e, _)| RewardsError::Kafka(e))?;
        }
        Ok(())
    })
}

impl From<KafkaError> for RewardsError {
    fn from(e: KafkaError) -> Self {
        RewardsError::Kafka(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_keeps_contacts_for_the_shortest_period_and_compacts_within_an_hour() {
        let retention = Retention {
            default_ms: 1095 * 86_400_000,
            per_retailer_ms: [("r2".to_string(), 30 * 86_400_000)].into_iter().collect(),
        };
        let configs: BTreeMap<&str, String> = topic_configs(&retention).into_iter().collect();
        assert_eq!(configs["retention.ms"], (30u64 * 86_400_000).to_string());
        assert_eq!(configs["segment.ms"], "3600000");
        assert_eq!(configs["max.compaction.lag.ms"], "3600000");
        assert_eq!(configs["cleanup.policy"], "compact,delete");
    }
}
