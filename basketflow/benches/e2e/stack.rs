//! The stack side of the benchmark: graphs (topics, database, configuration, command),
//! producing the generator's traffic, reading it back as a plain consumer, and watching the
//! durable outputs' committed times and the topics as they grow.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use basketflow_examples::{Config as GenConfig, Expect, Generator, Message as GenMessage};
use basketflow_ingest::parse_event;
use basketflow_sinks::kafka_outputs::{DECIDED_HEADER, HANDED_HEADER};
use basketflow_testkit::clickhouse::committed_time;
use basketflow_testkit::kafka::{send_retrying, Landing};
use basketflow_testkit::stack::{brokers, clickhouse_url};
use basketflow_testkit::{Database, Produced, Stack};
use basketflow_vocab::{Condition, Experience, ExperienceKind, ExperienceTree, Node, Timestamp};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

use crate::{PARTITIONS, SHOPPERS};

/// Milliseconds since the epoch (the graph's idle partitions follow it).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The same producer settings as the collector's (lz4, linger 1 ms, idempotent).
fn producer_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "1000000");
    config
}

/// Produces `messages`, paced at `rate` per second if given (open loop, each timed from when
/// it was due), and waits for every delivery.
pub fn produce(topic: &str, messages: &[GenMessage], rate: Option<u32>) -> Produced {
    basketflow_testkit::produce(
        &producer_config(),
        topic,
        messages
            .iter()
            .map(|m| (m.key.as_bytes(), m.payload.as_slice())),
        rate,
    )
}

/// Produces the first `n` messages of `stream` without keeping them (memory phase).
pub fn produce_streaming(topic: &str, stream: impl Iterator<Item = GenMessage>, n: usize) {
    let p: ThreadedProducer<Landing> = producer_config()
        .create_with_context(Landing::new(0))
        .expect("a producer");
    for m in stream.take(n) {
        // Not recorded: the landing vector is empty.
        let record = BaseRecord::with_opaque_to(topic, Box::new(usize::MAX))
            .key(m.key.as_bytes())
            .payload(&m.payload[..]);
        send_retrying(&p, record);
    }
    p.flush(Duration::from_secs(300))
        .expect("every message is delivered");
}

pub fn consumer(isolation: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", "basketflow-bench")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("fetch.wait.max.ms", "1")
        .create()
        .expect("a consumer")
}

/// Reads every partition of `topic` from the start to its current end; returns the count.
pub fn read_all(topic: &str) -> usize {
    let c = consumer("read_committed");
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    for p in 0..PARTITIONS {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        remaining += high - low;
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut n = 0;
    while remaining > 0 {
        if let Some(Ok(_)) = c.poll(Duration::from_secs(10)) {
            n += 1;
            remaining -= 1;
        }
    }
    n
}

/// A tree per shopper that decides on every basket (a tension cart from 1 cent).
pub fn tree(retailer_id: &str, shopper_id: &str) -> ExperienceTree {
    ExperienceTree {
        tree_id: "bench".into(),
        version: 1,
        retailer_id: retailer_id.into(),
        shopper_id: shopper_id.into(),
        root: "start".into(),
        holdout_basis_points: 0,
        caps: vec![],
        budget_cents: None,
        draw_secret: None,
        nodes: vec![
            Node {
                id: "start".into(),
                conditions: vec![],
                experience: None,
                children: vec!["basket".into()],
            },
            Node {
                id: "basket".into(),
                conditions: vec![Condition::BasketValueAtLeast { cents: 1 }],
                experience: Some(Experience {
                    kind: ExperienceKind::TensionCart,
                    params: Default::default(),
                }),
                children: vec![],
            },
        ],
    }
}

/// A [`tree`] for each shopper with a valid event among `messages`, to produce to the trees
/// topic: every basket change of theirs is then decided.
pub fn trees_for<'a>(messages: impl IntoIterator<Item = &'a GenMessage>) -> Vec<GenMessage> {
    let shoppers: BTreeSet<(String, String)> = messages
        .into_iter()
        .filter(|m| matches!(m.expect, Expect::Valid))
        .map(|m| {
            let e = parse_event(&m.payload).expect("a valid event parses").event;
            (e.retailer_id, e.shopper_id)
        })
        .collect();
    shoppers
        .iter()
        .map(|(r, s)| GenMessage {
            key: basketflow_vocab::tree_key(r, s),
            payload: serde_json::to_vec(&tree(r, s)).expect("a tree serializes"),
            expect: Expect::Valid,
            kind: "tree",
        })
        .collect()
}

/// For each message of `produced` after the first `warm` whose position is in `seen`, the
/// time (ms) from when it was sent (due, when paced) to when it was seen.
pub fn since_sent(
    produced: &Produced,
    warm: usize,
    seen: &HashMap<(i32, i64), Instant>,
) -> Vec<f64> {
    produced
        .landed
        .iter()
        .zip(&produced.sent)
        .skip(warm)
        .filter_map(|(l, sent)| {
            let l = (*l)?;
            let at = seen.get(&(l.partition, l.offset))?;
            Some(at.duration_since(*sent).as_secs_f64() * 1e3)
        })
        .collect()
}

/// A decision as [`watch_decisions`] sees it: when it became readable, and its stage headers
/// (when its worker decided it, when its transaction was handed to the producer thread;
/// wall-clock ms), by the position of the event that caused it.
pub type Watched = HashMap<(i32, i64), (Instant, (u64, u64))>;

/// [`watch_with`] of a decisions topic: each decision by the event that caused it.
pub fn watch_decisions(topic: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Watched> {
    watch_with(
        topic,
        |m| {
            use rdkafka::message::Headers;
            let d: Value = serde_json::from_slice(m.payload()?).ok()?;
            let c = &d["caused_by"];
            let header = |name: &str| -> Option<u64> {
                let h = m.headers()?.iter().find(|h| h.key == name)?;
                std::str::from_utf8(h.value?).ok()?.parse().ok()
            };
            let stamps = (header(DECIDED_HEADER)?, header(HANDED_HEADER)?);
            Some((
                (c["partition"].as_i64()? as i32, c["offset"].as_i64()?),
                stamps,
            ))
        },
        stop,
    )
}

/// Where the time of the decisions of `produced` (after the first `warm`) went, from the
/// event's append to the broker: until its worker decided it (the time complete on every
/// source partition, then the tree walk), until its transaction was handed over (the time
/// complete at the outputs operator on worker 0, and the previous transaction committed), and
/// until the storefront read it (the transaction, and a read_committed fetch): a summary
/// each.
pub fn stages(produced: &Produced, warm: usize, decided: &Watched) -> [Value; 3] {
    let (base_instant, base_wall) = (Instant::now(), wall_ms() as f64);
    let wall = |i: Instant| match i.checked_duration_since(base_instant) {
        Some(d) => base_wall + d.as_secs_f64() * 1e3,
        None => base_wall - base_instant.duration_since(i).as_secs_f64() * 1e3,
    };
    let appended: HashMap<(i32, i64), i64> = produced
        .landed
        .iter()
        .skip(warm)
        .flatten()
        .map(|l| ((l.partition, l.offset), l.broker_ms))
        .collect();
    let mut stages: [Vec<f64>; 3] = Default::default();
    for (k, (read_at, (decided, handed))) in decided {
        let Some(&appended) = appended.get(k) else {
            continue;
        };
        stages[0].push(*decided as f64 - appended as f64);
        stages[1].push(*handed as f64 - *decided as f64);
        stages[2].push(wall(*read_at) - *handed as f64);
    }
    stages.map(crate::report::summary)
}

/// The generator's stream: `SHOPPERS` shoppers, 3% bad, 2% duplicates.
pub fn generator(seed: u64, start: Timestamp, events_per_second: f64) -> Generator {
    generator_of(seed, start, events_per_second, SHOPPERS, None)
}

/// [`generator`] with `shoppers` shoppers and `products` per retailer (the generator's
/// default when `None`).
pub fn generator_of(
    seed: u64,
    start: Timestamp,
    events_per_second: f64,
    shoppers: u32,
    products: Option<u32>,
) -> Generator {
    Generator::new(GenConfig {
        seed,
        shoppers,
        products: products.unwrap_or(GenConfig::default().products),
        bad_share: 0.03,
        duplicate_share: 0.02,
        start,
        events_per_second,
        ..GenConfig::default()
    })
}

/// The first `n` messages of [`generator`].
pub fn generate(seed: u64, n: usize, start: Timestamp, events_per_second: f64) -> Vec<GenMessage> {
    generator(seed, start, events_per_second).take(n).collect()
}

/// Where this run's graphs live: the stack (every topic created there is deleted when it is
/// dropped), the directory of their configurations, and the suffix of their names.
pub struct Site {
    /// The shared stack.
    pub stack: Stack,
    /// The graphs' configuration files.
    pub dir: PathBuf,
    /// This run's suffix of topic and database names (milliseconds since the epoch).
    pub suffix: String,
}

/// One graph's topics and database, named after `name`; the database is dropped with it, the
/// topics (also those the graph creates) with the stack.
pub struct Graph {
    /// `name-suffix`, in its topics' names.
    pub name: String,
    /// Its `basketflow.toml`.
    pub config: PathBuf,
    /// Its ClickHouse database.
    pub database: Database,
}

impl Graph {
    /// Creates the trees, rejected and decisions topics of graph `name` reading `events`, and
    /// writes its configuration (with `extra` appended) into `dir`.
    pub fn new(site: &Site, name: &str, events: &str, extra: &str) -> Graph {
        let Site { stack, dir, suffix } = site;
        let full = format!("{name}-{suffix}");
        for (t, p) in [
            ("trees", PARTITIONS),
            ("rejected", 1),
            ("decisions", PARTITIONS),
        ] {
            stack.create_topic(
                &format!("bench-{t}-{full}"),
                p,
                if t == "trees" { "compact" } else { "delete" },
            );
        }
        // Created by the graph itself.
        stack.topics().delete_later(format!("bench-privacy-{full}"));
        stack
            .topics()
            .delete_later(format!("bench-decisions-{full}-progress"));
        stack
            .topics()
            .delete_later(format!("bench-decisions-{full}-checkpoints"));
        stack
            .topics()
            .delete_later(basketflow_sinks::checkpoints::manifests_topic(&format!(
                "bench-decisions-{full}-checkpoints"
            )));
        let database = Database::named(&clickhouse_url(), format!("bf_bench_{name}_{suffix}"));
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbrokers = \"{b}\"\nevents_topic = \"{events}\"\ntrees_topic = \"bench-trees-{full}\"\n\
                 rejected_topic = \"bench-rejected-{full}\"\ndecisions_topic = \"bench-decisions-{full}\"\n\
                 privacy_topic = \"bench-privacy-{full}\"\n\
                 [clickhouse]\nurl = \"{ch}\"\ndatabase = \"{database}\"\n[metrics]\nlisten = \"off\"\n\
                 {extra}",
                b = brokers(),
                ch = clickhouse_url(),
            ),
        )
        .unwrap();
        Graph {
            name: full,
            config,
            database,
        }
    }

    /// `basketflow run` of this graph with `workers` workers.
    ///
    /// With `BASKETFLOW_BENCH_WRAPPER` set (for example `heaptrack -o /tmp/ht`), the graph runs
    /// under that command: profiles of a bench's own runs.
    pub fn command(&self, workers: usize) -> Command {
        let binary = env!("CARGO_BIN_EXE_basketflow");
        let wrapper = std::env::var("BASKETFLOW_BENCH_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut c = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        // (Not a configuration key: the graph would refuse it.)
        c.env_remove("BASKETFLOW_BENCH_WRAPPER");
        c.args([
            "run",
            "--config",
            self.config.to_str().unwrap(),
            "-w",
            &workers.to_string(),
        ])
        .env_remove("BASKETFLOW_CLICKHOUSE_URL");
        c
    }

    /// ClickHouse's committed time in its database (0 before the first batch).
    pub fn clickhouse_committed(&self) -> u64 {
        clickhouse_committed(&self.database)
    }
}

/// ClickHouse's committed time in `database` (0 before the first batch).
pub fn clickhouse_committed(database: &str) -> u64 {
    committed_time(&clickhouse_url(), database)
}

/// Reads the Kafka outputs' progress topic as it grows: the committed time of the decisions.
pub fn kafka_committed_watch(topic: String, stop: Arc<AtomicBool>) -> Arc<Mutex<u64>> {
    let latest = Arc::new(Mutex::new(0u64));
    let out = latest.clone();
    std::thread::spawn(move || {
        let c = consumer("read_committed");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .unwrap();
        c.assign(&tpl).unwrap();
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                let through = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                    .and_then(|v| v["through"].as_u64());
                if let Some(t) = through {
                    let mut l = latest.lock().unwrap();
                    *l = (*l).max(t);
                }
            }
        }
    });
    out
}

/// Reads `topic` from its end as messages arrive, recording when each key (`key_of`) became
/// readable, until `stop`.
pub fn watch(
    topic: String,
    key_of: fn(&rdkafka::message::BorrowedMessage<'_>) -> Option<(i32, i64)>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<HashMap<(i32, i64), Instant>> {
    let seen = watch_with(topic, move |m| key_of(m).map(|k| (k, ())), stop);
    std::thread::spawn(move || {
        let seen = seen.join().unwrap();
        seen.into_iter().map(|(k, (at, ()))| (k, at)).collect()
    })
}

/// [`watch`], keeping with each first sighting what `key_of` takes from the message.
pub fn watch_with<T: Send + 'static>(
    topic: String,
    key_of: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> Option<((i32, i64), T)> + Send + 'static,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<HashMap<(i32, i64), (Instant, T)>> {
    let c = consumer("read_committed");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&topic, p, Offset::End).unwrap();
    }
    c.assign(&tpl).unwrap();
    std::thread::spawn(move || {
        let mut seen = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                if let Some((k, v)) = key_of(&m) {
                    let now = Instant::now();
                    seen.entry(k).or_insert((now, v));
                }
            }
        }
        seen
    })
}
