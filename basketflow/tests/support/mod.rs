//! Helpers the graph's integration tests share: a stack (broker + ClickHouse) to talk to,
//! producing and reading topics, running `basketflow run`, the oracle's rows as ClickHouse
//! prints them, and the reference decisions of a sequential replay.
//!
//! Each test binary uses a subset.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use basketflow_dataflows::experiences::Shopper;
use basketflow_dataflows::oracle;
use basketflow_examples::{Config as GenConfig, Expect, Generator, Message as GenMessage};
use basketflow_ingest::parse_event;
use basketflow_vocab::time::MICROS_PER_DAY;
use basketflow_vocab::DeadLetter;
use basketflow_vocab::{
    Condition, Decision, Event, Experience, ExperienceKind, ExperienceTree, Node, ParamValue,
    ProductMatch, Timestamp,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

/// A broker and a ClickHouse server to run against.
#[derive(Clone, Debug)]
pub struct Stack {
    /// Bootstrap servers.
    pub brokers: String,
    /// ClickHouse HTTP URL.
    pub clickhouse_url: String,
}

impl Stack {
    /// The shared stack of `scripts/stack up` (`$BASKETFLOW_BROKERS`,
    /// `$BASKETFLOW_CLICKHOUSE_URL`; defaults 127.0.0.1:9092 and http://127.0.0.1:8123).
    pub fn shared() -> Stack {
        Stack {
            brokers: std::env::var("BASKETFLOW_BROKERS")
                .unwrap_or_else(|_| "127.0.0.1:9092".into()),
            clickhouse_url: std::env::var("BASKETFLOW_CLICKHOUSE_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:8123".into()),
        }
    }

    /// Runs `sql` over ClickHouse's HTTP interface and returns the response body.
    pub fn clickhouse(&self, sql: &str) -> String {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--fail-with-body",
                "--data-binary",
                sql,
                &self.clickhouse_url,
            ])
            .output()
            .expect("running curl");
        let body = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "ClickHouse refused {sql}: {body}");
        body
    }

    /// Every row of a view, TabSeparated, sorted.
    pub fn view(&self, database: &str, name: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .clickhouse(&format!(
                "SELECT * FROM {database}.{name} FORMAT TabSeparated"
            ))
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        lines
    }

    /// Creates `name` (LogAppendTime) unless it exists.
    pub fn create_topic(&self, name: &str, partitions: i32, cleanup: &str) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(basketflow_kafka::ensure_topic(
            &self.brokers,
            name,
            partitions,
            &[
                ("message.timestamp.type", "LogAppendTime"),
                ("cleanup.policy", cleanup),
            ],
        ))
        .unwrap_or_else(|e| panic!("creating {name}: {e}; is the stack up? run scripts/stack up"));
    }

    /// Produces `messages` to `topic`, keyed by shopper; returns each one's (partition, offset).
    pub fn produce(&self, topic: &str, messages: &[GenMessage]) -> Vec<(i32, i64)> {
        let pairs: Vec<(&[u8], &[u8])> = messages
            .iter()
            .map(|m| (m.key.as_bytes(), m.payload.as_slice()))
            .collect();
        self.produce_pairs(topic, &pairs)
    }

    /// Produces `messages` to `topic` at about `per_second` messages a second (open loop: on
    /// schedule, whatever the broker's state); returns each one's (partition, offset).
    pub fn produce_paced(
        &self,
        topic: &str,
        messages: &[GenMessage],
        per_second: u32,
    ) -> Vec<(i32, i64)> {
        let pairs: Vec<(&[u8], &[u8])> = messages
            .iter()
            .map(|m| (m.key.as_bytes(), m.payload.as_slice()))
            .collect();
        self.produce_pairs_paced(topic, &pairs, Some(per_second))
    }

    /// Produces (key, value) pairs to `topic`; returns each one's (partition, offset).
    pub fn produce_pairs(&self, topic: &str, messages: &[(&[u8], &[u8])]) -> Vec<(i32, i64)> {
        self.produce_pairs_paced(topic, messages, None)
    }

    fn produce_pairs_paced(
        &self,
        topic: &str,
        messages: &[(&[u8], &[u8])],
        per_second: Option<u32>,
    ) -> Vec<(i32, i64)> {
        let started = Instant::now();
        let landed = Arc::new(Mutex::new(vec![None; messages.len()]));
        let producer: ThreadedProducer<Landing> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .create_with_context(Landing(landed.clone()))
            .expect("creating a producer; is the stack up? run scripts/stack up");
        for (i, (key, payload)) in messages.iter().enumerate() {
            if let Some(rate) = per_second {
                let due = started + Duration::from_secs_f64(i as f64 / f64::from(rate));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            let mut record = BaseRecord::with_opaque_to(topic, Box::new(i))
                .key(*key)
                .payload(*payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        }
        // Long enough to ride out a broker restart in the fault tests.
        producer.flush(Duration::from_secs(300)).unwrap();
        let landed = landed.lock().unwrap();
        landed
            .iter()
            .map(|l| l.expect("delivery reported"))
            .collect()
    }

    /// Every dead letter in `topic`, read from the beginning to the end (committed only).
    pub fn dead_letters(&self, topic: &str) -> Vec<DeadLetter> {
        self.read_topic(topic, 1)
            .iter()
            .map(|v| serde_json::from_slice(v).unwrap())
            .collect()
    }

    /// Every value in `topic` (all `partitions`), from the beginning to the end, as a consumer
    /// reading committed data sees it.
    pub fn read_topic(&self, topic: &str, partitions: i32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for p in 0..partitions {
            out.extend(self.read_partition(topic, p));
        }
        out
    }

    fn read_partition(&self, topic: &str, partition: i32) -> Vec<Vec<u8>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", "graph-cluster-test")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        if high == 0 {
            return out;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "timed out reading {topic}");
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => out.push(m.payload().unwrap().to_vec()),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out
    }

    /// Decisions on `topic` (8 partitions) as (decision_id, node_id), sorted, duplicates kept.
    pub fn decisions_on_kafka(&self, topic: &str) -> Vec<(String, String)> {
        let mut got: Vec<(String, String)> = self
            .read_topic(topic, 8)
            .iter()
            .map(|v| {
                let d: Decision = serde_json::from_slice(v).unwrap();
                (d.decision_id, d.node_id)
            })
            .collect();
        got.sort();
        got
    }

    /// Decisions in `db.experience_decisions` as (decision_id, node_id), sorted.
    pub fn decisions_in_clickhouse(&self, db: &str) -> Vec<(String, String)> {
        let mut stored: Vec<(String, String)> = self
            .clickhouse(&format!(
                "SELECT decision_id, node_id FROM {db}.experience_decisions FORMAT TabSeparated"
            ))
            .lines()
            .map(|l| {
                let (id, node) = l.split_once('\t').unwrap();
                (id.to_string(), node.to_string())
            })
            .collect();
        stored.sort();
        stored
    }

    /// Writes a `basketflow.toml` for `targets` on this stack.
    pub fn write_config(&self, dir: &Path, name: &str, t: &RunTargets, extra: &str) -> PathBuf {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[kafka]\nbrokers = \"{}\"\nevents_topic = \"{}\"\ntrees_topic = \"{}\"\n\
                 rejected_topic = \"{}\"\ndecisions_topic = \"{}\"\nprivacy_topic = \"{}-privacy\"\n\
                 [clickhouse]\nurl = \"{}\"\ndatabase = \"{}\"\n\
                 [metrics]\nlisten = \"127.0.0.1:0\"\n{extra}",
                self.brokers,
                t.events,
                t.trees,
                t.rejected,
                t.decisions,
                t.events,
                self.clickhouse_url,
                t.database,
            ),
        )
        .unwrap();
        path
    }
}

/// Where each produced message landed: (partition, offset) by message index.
type Landings = Arc<Mutex<Vec<Option<(i32, i64)>>>>;

/// Remembers where each produced message landed.
struct Landing(Landings);

impl ClientContext for Landing {}

impl ProducerContext for Landing {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        let m = result.as_ref().expect("every test message is delivered");
        self.0.lock().unwrap()[*index] = Some((m.partition(), m.offset()));
    }
}

/// A unique suffix for topic and database names.
pub fn unique_suffix() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The topics and database of one run.
pub struct RunTargets<'a> {
    /// Shopper events in.
    pub events: &'a str,
    /// Trees in.
    pub trees: &'a str,
    /// Dead letters out.
    pub rejected: &'a str,
    /// Decisions out.
    pub decisions: &'a str,
    /// ClickHouse database.
    pub database: &'a str,
}

/// The test's tree for one shopper: pasta in the basket -> recommendation -> basket worth
/// 30 EUR -> tension cart; or a paid order -> gamified promotion.
pub fn tree_for(retailer_id: &str, shopper_id: &str) -> ExperienceTree {
    let node = |id: &str,
                conditions: Vec<Condition>,
                kind: Option<ExperienceKind>,
                children: &[&str]| Node {
        id: id.into(),
        conditions,
        experience: kind.map(|kind| Experience {
            kind,
            params: [("campaign".to_string(), ParamValue::Text("it".into()))]
                .into_iter()
                .collect(),
        }),
        children: children.iter().map(|c| c.to_string()).collect(),
    };
    ExperienceTree {
        tree_id: "it".into(),
        version: 1,
        retailer_id: retailer_id.into(),
        shopper_id: shopper_id.into(),
        root: "start".into(),
        nodes: vec![
            node("start", vec![], None, &["pasta", "paid"]),
            node(
                "pasta",
                vec![Condition::BasketContains {
                    matches: ProductMatch {
                        product_id: None,
                        category: Some("pasta".into()),
                        brand: None,
                    },
                    min_quantity: 1,
                }],
                Some(ExperienceKind::ProductRecommendation),
                &["big"],
            ),
            node(
                "big",
                vec![Condition::BasketValueAtLeast { cents: 3_000 }],
                Some(ExperienceKind::TensionCart),
                &[],
            ),
            node(
                "paid",
                vec![Condition::OrderPaid {}],
                Some(ExperienceKind::GamifiedPromotion),
                &[],
            ),
        ],
    }
}

/// Generated traffic and the trees of its shoppers.
pub struct Traffic {
    /// The messages, in production order.
    pub messages: Vec<GenMessage>,
    /// Every (retailer, shopper) of the valid events.
    pub shoppers: BTreeSet<(String, String)>,
}

impl Traffic {
    /// `n` messages of the generator with `seed` (3% bad, 2% duplicates).
    pub fn generate(seed: u64, n: usize, shoppers: u32) -> Traffic {
        Traffic::generate_from(seed, n, shoppers, GenConfig::default().start)
    }

    /// As [`Traffic::generate`], with the first event's `occurred_at` at `start`.
    pub fn generate_from(seed: u64, n: usize, shoppers: u32, start: Timestamp) -> Traffic {
        let messages: Vec<GenMessage> = Generator::new(GenConfig {
            seed,
            shoppers,
            products: 600,
            concurrent_sessions: 150,
            bad_share: 0.03,
            duplicate_share: 0.02,
            start,
            ..GenConfig::default()
        })
        .take(n)
        .collect();
        let shoppers = valid_events(&messages)
            .iter()
            .map(|e| (e.retailer_id.clone(), e.shopper_id.clone()))
            .collect();
        Traffic { messages, shoppers }
    }

    /// Produces one tree per shopper to `topic`.
    pub fn produce_trees(&self, stack: &Stack, topic: &str) {
        let trees: Vec<(String, Vec<u8>)> = self
            .shoppers
            .iter()
            .map(|(r, s)| (s.clone(), serde_json::to_vec(&tree_for(r, s)).unwrap()))
            .collect();
        let pairs: Vec<(&[u8], &[u8])> = trees
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_slice()))
            .collect();
        stack.produce_pairs(topic, &pairs);
    }

    /// Produces the messages to `topic` at `per_second` on a thread of its own (live traffic
    /// while a test disturbs the cluster); the handle yields where each message landed.
    pub fn produce_live(
        &self,
        stack: &Stack,
        topic: &str,
        per_second: u32,
    ) -> std::thread::JoinHandle<Vec<(i32, i64)>> {
        let (stack, topic, messages) = (stack.clone(), topic.to_string(), self.messages.clone());
        std::thread::spawn(move || stack.produce_paced(&topic, &messages, per_second))
    }

    /// The decisions a sequential replay of each shopper's events in offset order makes, as
    /// (decision_id, node_id), sorted: `landed` is where each message landed.
    pub fn reference_decisions(&self, landed: &[(i32, i64)]) -> Vec<(String, String)> {
        let mut in_order: Vec<((i32, i64), Event)> = self
            .messages
            .iter()
            .zip(landed)
            .filter(|(m, _)| matches!(m.expect, Expect::Valid | Expect::Duplicate))
            .map(|(m, &pos)| (pos, parse_event(&m.payload).unwrap().event))
            .collect();
        in_order.sort_by_key(|(pos, _)| *pos);
        let mut states: BTreeMap<(String, String), Shopper> = BTreeMap::new();
        for (r, s) in &self.shoppers {
            let mut state = Shopper::default();
            state.set_tree(Some(Arc::new(tree_for(r, s))));
            states.insert((r.clone(), s.clone()), state);
        }
        let mut want: Vec<(String, String)> = Vec::new();
        for (pos, e) in &in_order {
            let state = states
                .get_mut(&(e.retailer_id.clone(), e.shopper_id.clone()))
                .unwrap();
            if state.apply(e) {
                if let Some(d) = state.step(e, *pos, 0) {
                    want.push((d.decision_id, d.node_id));
                }
            }
        }
        want.sort();
        want
    }

    /// The dead letters the bad messages must produce: (partition, offset, code).
    pub fn expected_dead_letters(&self, landed: &[(i32, i64)]) -> BTreeSet<(i32, i64, String)> {
        self.messages
            .iter()
            .zip(landed)
            .filter_map(|(m, &(p, o))| match m.expect {
                Expect::Rejected(code) => Some((p, o, code.as_str().to_string())),
                _ => None,
            })
            .collect()
    }

    /// The oracle's rows per view.
    pub fn expected_views(&self) -> Vec<(&'static str, Vec<String>)> {
        expected(&valid_events(&self.messages))
    }
}

/// The events the ingest accepts from `messages` (duplicates included).
pub fn valid_events(messages: &[GenMessage]) -> Vec<Event> {
    messages
        .iter()
        .filter(|m| matches!(m.expect, Expect::Valid | Expect::Duplicate))
        .map(|m| {
            parse_event(&m.payload)
                .expect("a valid message parses")
                .event
        })
        .collect()
}

/// Starts `basketflow` with `args`, output inherited.
pub fn spawn(args: &[&str]) -> Child {
    spawn_with_env(args, &[])
}

/// Starts `basketflow` with `args` and extra environment variables, output inherited.
pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_basketflow"))
        .args(args)
        // The tests' own variable for the shared stack must not override the URL in the
        // configuration they wrote (a private stack's, in the outage test).
        .env_remove("BASKETFLOW_CLICKHOUSE_URL")
        .envs(env.iter().copied())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting basketflow")
}

/// Waits for every child to exit successfully within `limit`.
pub fn wait_all(mut children: Vec<Child>, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !children.is_empty() {
        children.retain_mut(|c| match c.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "basketflow run exited with {status}");
                false
            }
            None => true,
        });
        if Instant::now() > deadline {
            for c in &mut children {
                let _ = c.kill();
            }
            panic!("basketflow run did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `basketflow run --config config --exit-when-caught-up` (1 x 1) to its end, within
/// 300 s.
pub fn run_caught_up(config: &Path) {
    wait_all(
        vec![spawn(&[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--exit-when-caught-up",
        ])],
        Duration::from_secs(300),
    );
}

/// The `basketflow run` arguments of process `p` of an `n`-process cluster with `w` workers.
pub fn cluster_args(
    config: &Path,
    hostfile: &Path,
    n: usize,
    p: usize,
    w: usize,
    exit: bool,
) -> Vec<String> {
    let mut args = vec![
        "run".to_string(),
        "--config".into(),
        config.display().to_string(),
        "-w".into(),
        w.to_string(),
        "-n".into(),
        n.to_string(),
        "-p".into(),
        p.to_string(),
        "-h".into(),
        hostfile.display().to_string(),
    ];
    if exit {
        args.push("--exit-when-caught-up".into());
    }
    args
}

/// A host file for `n` processes on loopback (fresh ports).
pub fn hostfile(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("hosts");
    let lines: String = (0..n)
        .map(|_| format!("127.0.0.1:{}\n", free_port()))
        .collect();
    std::fs::write(&path, lines).unwrap();
    path
}

fn day(d: i32) -> String {
    Timestamp(i64::from(d) * MICROS_PER_DAY)
        .to_datetime()
        .format("%Y-%m-%d")
        .to_string()
}

fn seconds(t: Timestamp) -> String {
    Timestamp(t.unix_seconds() * 1_000_000)
        .to_datetime()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The oracle's rows, as ClickHouse prints the views in TabSeparated, per view.
pub fn expected(events: &[Event]) -> Vec<(&'static str, Vec<String>)> {
    let rows = oracle::read_models(events);
    let mut out = vec![
        (
            "sold_products_daily",
            rows.sold_products_daily
                .iter()
                .map(|r| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        day(r.day),
                        r.retailer_id,
                        r.product_id,
                        r.category,
                        r.quantity,
                        r.revenue_cents,
                        r.orders
                    )
                })
                .collect::<Vec<_>>(),
        ),
        (
            "shopper_purchases",
            rows.shopper_purchases
                .iter()
                .map(|r| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        r.retailer_id,
                        r.shopper_id,
                        r.product_id,
                        r.quantity,
                        r.orders,
                        seconds(r.last_purchase_at)
                    )
                })
                .collect(),
        ),
        (
            "product_affinities",
            rows.product_affinities
                .iter()
                .map(|r| {
                    format!(
                        "{}\t{}\t{}\t{}",
                        r.retailer_id, r.product_a, r.product_b, r.orders_together
                    )
                })
                .collect(),
        ),
        (
            "baskets",
            rows.baskets
                .iter()
                .map(|r| {
                    format!(
                        "{}\t{}\t{}\t{}",
                        r.retailer_id, r.shopper_id, r.product_id, r.quantity
                    )
                })
                .collect(),
        ),
        (
            "order_lines",
            rows.order_lines
                .iter()
                .map(|r| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        r.retailer_id,
                        r.order_id,
                        r.shopper_id,
                        r.product_id,
                        r.category,
                        r.quantity,
                        r.revenue_cents,
                        seconds(r.ordered_at),
                        day(r.day),
                        u8::from(r.cancelled)
                    )
                })
                .collect(),
        ),
    ];
    for (_, lines) in &mut out {
        lines.sort();
    }
    out
}
