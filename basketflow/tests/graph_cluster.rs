//! Integration: generated traffic with bad events mixed in, and an experience tree for every
//! shopper, through the real broker and ClickHouse, on a cluster of 2 processes x 2 workers and
//! on 1 process x 1 worker, each run to caught-up. Every analyst view must equal the oracle
//! computed independently from the raw events, both runs must agree, the dead-letter topic must
//! hold exactly the bad messages (by partition, offset and reason), and both runs must emit
//! exactly the decisions of a sequential replay of each shopper's events (offset order), once
//! each, on Kafka and in ClickHouse.
//!
//! Needs `scripts/stack up` (broker at `$BASKETFLOW_BROKERS`, ClickHouse HTTP at
//! `$BASKETFLOW_CLICKHOUSE_URL`, defaults 127.0.0.1:9092 and http://127.0.0.1:8123). Uses
//! topics and databases of its own, with unique names, and drops the databases at the end.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use basketflow_dataflows::experiences::Shopper;
use basketflow_dataflows::oracle;
use basketflow_dataflows::parse::DeadLetter;
use basketflow_examples::{Config as GenConfig, Expect, Generator, Message as GenMessage};
use basketflow_ingest::parse_event;
use basketflow_vocab::time::MICROS_PER_DAY;
use basketflow_vocab::{
    Condition, Decision, Experience, ExperienceKind, ExperienceTree, Node, ParamValue, ProductMatch,
};
use basketflow_vocab::{Event, Timestamp};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;

fn brokers() -> String {
    std::env::var("BASKETFLOW_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn clickhouse_url() -> String {
    std::env::var("BASKETFLOW_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// Runs `sql` over ClickHouse's HTTP interface and returns the response body.
fn clickhouse(sql: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail-with-body",
            "--data-binary",
            sql,
            &clickhouse_url(),
        ])
        .output()
        .expect("running curl");
    let body = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "ClickHouse refused {sql}: {body}");
    body
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

/// Produces `messages` to `topic`, keyed by shopper; returns each one's (partition, offset).
fn produce(topic: &str, messages: &[GenMessage]) -> Vec<(i32, i64)> {
    let pairs: Vec<(&[u8], &[u8])> = messages
        .iter()
        .map(|m| (m.key.as_bytes(), m.payload.as_slice()))
        .collect();
    produce_pairs(topic, &pairs)
}

/// Produces (key, value) pairs to `topic`; returns each one's (partition, offset).
fn produce_pairs(topic: &str, messages: &[(&[u8], &[u8])]) -> Vec<(i32, i64)> {
    let landed = Arc::new(Mutex::new(vec![None; messages.len()]));
    let producer: ThreadedProducer<Landing> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create_with_context(Landing(landed.clone()))
        .expect("creating a producer; is the stack up? run scripts/stack up");
    for (i, (key, payload)) in messages.iter().enumerate() {
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
    producer.flush(Duration::from_secs(60)).unwrap();
    let landed = landed.lock().unwrap();
    landed
        .iter()
        .map(|l| l.expect("delivery reported"))
        .collect()
}

fn create_topic(name: &str, partitions: i32, cleanup: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(basketflow_sinks::kafka::ensure_topic(
        &brokers(),
        name,
        partitions,
        &[
            ("message.timestamp.type", "LogAppendTime"),
            ("cleanup.policy", cleanup),
        ],
    ))
    .unwrap_or_else(|e| panic!("creating {name}: {e}; is the stack up? run scripts/stack up"));
}

/// Every dead letter in `topic`, read from the beginning to the end.
fn dead_letters(topic: &str) -> Vec<DeadLetter> {
    read_topic(topic, 1)
        .iter()
        .map(|v| serde_json::from_slice(v).unwrap())
        .collect()
}

/// Every value in `topic` (all `partitions`), read from the beginning to the end.
fn read_topic(topic: &str, partitions: i32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for p in 0..partitions {
        out.extend(read_partition(topic, p));
    }
    out
}

fn read_partition(topic: &str, partition: i32) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", "graph-cluster-test")
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
    let deadline = Instant::now() + Duration::from_secs(30);
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The topics and database of one run.
struct RunTargets<'a> {
    events: &'a str,
    trees: &'a str,
    rejected: &'a str,
    decisions: &'a str,
    database: &'a str,
}

fn write_config(dir: &Path, name: &str, t: &RunTargets) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"{}\"\nevents_topic = \"{}\"\ntrees_topic = \"{}\"\n\
             rejected_topic = \"{}\"\ndecisions_topic = \"{}\"\n\
             [clickhouse]\nurl = \"{}\"\ndatabase = \"{}\"\n",
            brokers(),
            t.events,
            t.trees,
            t.rejected,
            t.decisions,
            clickhouse_url(),
            t.database,
        ),
    )
    .unwrap();
    path
}

/// The test's tree for one shopper: pasta in the basket -> recommendation -> basket worth
/// 30 EUR -> tension cart; or a paid order -> gamified promotion.
fn tree_for(retailer_id: &str, shopper_id: &str) -> ExperienceTree {
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

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_basketflow"))
        .args(args)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting basketflow")
}

fn wait_all(mut children: Vec<Child>, limit: Duration) {
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
fn expected(events: &[Event]) -> Vec<(&'static str, Vec<String>)> {
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

fn view(database: &str, name: &str) -> Vec<String> {
    let mut lines: Vec<String> = clickhouse(&format!(
        "SELECT * FROM {database}.{name} FORMAT TabSeparated"
    ))
    .lines()
    .map(String::from)
    .collect();
    lines.sort();
    lines
}

#[test]
fn cluster_and_single_worker_views_equal_the_oracle_and_dead_letters_are_exact() {
    let suffix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let events_topic = format!("it-events-{suffix}");
    let trees_topic = format!("it-trees-{suffix}");
    let rejected_cluster = format!("it-rejected-cluster-{suffix}");
    let rejected_single = format!("it-rejected-single-{suffix}");
    let decisions_cluster = format!("it-decisions-cluster-{suffix}");
    let decisions_single = format!("it-decisions-single-{suffix}");
    let db_cluster = format!("bf_it_cluster_{suffix}");
    let db_single = format!("bf_it_single_{suffix}");
    create_topic(&events_topic, 8, "delete");
    create_topic(&trees_topic, 8, "compact");
    for t in [&rejected_cluster, &rejected_single] {
        create_topic(t, 1, "delete");
    }
    for t in [&decisions_cluster, &decisions_single] {
        create_topic(t, 8, "delete");
    }

    let seed = 20_261_122;
    println!("generator seed {seed}");
    let messages: Vec<GenMessage> = Generator::new(GenConfig {
        seed,
        shoppers: 2_000,
        products: 600,
        concurrent_sessions: 150,
        bad_share: 0.03,
        duplicate_share: 0.02,
        ..GenConfig::default()
    })
    .take(30_000)
    .collect();
    // Trees first (earlier broker times), for every shopper of the traffic.
    let valid: Vec<Event> = messages
        .iter()
        .filter(|m| matches!(m.expect, Expect::Valid | Expect::Duplicate))
        .map(|m| {
            parse_event(&m.payload)
                .expect("a valid message parses")
                .event
        })
        .collect();
    let shoppers: BTreeSet<(String, String)> = valid
        .iter()
        .map(|e| (e.retailer_id.clone(), e.shopper_id.clone()))
        .collect();
    let trees: Vec<(String, Vec<u8>)> = shoppers
        .iter()
        .map(|(r, s)| (s.clone(), serde_json::to_vec(&tree_for(r, s)).unwrap()))
        .collect();
    let tree_pairs: Vec<(&[u8], &[u8])> = trees
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_slice()))
        .collect();
    produce_pairs(&trees_topic, &tree_pairs);
    let landed = produce(&events_topic, &messages);

    let dir = std::env::temp_dir().join(format!("basketflow-it-{suffix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_cluster = write_config(
        &dir,
        "cluster",
        &RunTargets {
            events: &events_topic,
            trees: &trees_topic,
            rejected: &rejected_cluster,
            decisions: &decisions_cluster,
            database: &db_cluster,
        },
    );
    let cfg_single = write_config(
        &dir,
        "single",
        &RunTargets {
            events: &events_topic,
            trees: &trees_topic,
            rejected: &rejected_single,
            decisions: &decisions_single,
            database: &db_single,
        },
    );
    let hostfile = dir.join("hosts");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();

    let started = Instant::now();
    let cluster: Vec<Child> = (0..2)
        .map(|p| {
            spawn(&[
                "run",
                "--config",
                cfg_cluster.to_str().unwrap(),
                "-w",
                "2",
                "-n",
                "2",
                "-p",
                &p.to_string(),
                "-h",
                hostfile.to_str().unwrap(),
                "--exit-when-caught-up",
            ])
        })
        .collect();
    wait_all(cluster, Duration::from_secs(300));
    println!("2 processes x 2 workers: {:?}", started.elapsed());
    let started = Instant::now();
    wait_all(
        vec![spawn(&[
            "run",
            "--config",
            cfg_single.to_str().unwrap(),
            "--exit-when-caught-up",
        ])],
        Duration::from_secs(300),
    );
    println!("1 process x 1 worker: {:?}", started.elapsed());

    // The oracle, from the raw messages the ingest accepts.
    let events: Vec<Event> = messages
        .iter()
        .filter(|m| matches!(m.expect, Expect::Valid | Expect::Duplicate))
        .map(|m| {
            parse_event(&m.payload)
                .expect("a valid message parses")
                .event
        })
        .collect();
    for (name, want) in expected(&events) {
        assert!(!want.is_empty(), "the traffic should fill {name}");
        assert_eq!(view(&db_cluster, name), want, "{name}: cluster vs oracle");
        assert_eq!(
            view(&db_single, name),
            want,
            "{name}: single worker vs oracle"
        );
    }

    // Dead letters: exactly the bad messages, at their partitions and offsets, with their codes.
    let want: BTreeSet<(i32, i64, String)> = messages
        .iter()
        .zip(&landed)
        .filter_map(|(m, &(p, o))| match m.expect {
            Expect::Rejected(code) => Some((p, o, code.as_str().to_string())),
            _ => None,
        })
        .collect();
    assert!(want.len() > 500, "the traffic should carry bad messages");
    for topic in [&rejected_cluster, &rejected_single] {
        let got = dead_letters(topic);
        assert_eq!(
            got.len(),
            want.len(),
            "{topic}: one dead letter per bad message"
        );
        let got: BTreeSet<(i32, i64, String)> = got
            .into_iter()
            .map(|d| (d.partition, d.offset, d.code))
            .collect();
        assert_eq!(got, want, "{topic}");
    }

    // Decisions: a sequential replay of every shopper's events in offset order, with the
    // same state machine, is the reference; each run must emit exactly those, once each.
    let mut in_order: Vec<((i32, i64), Event)> = messages
        .iter()
        .zip(&landed)
        .filter(|(m, _)| matches!(m.expect, Expect::Valid | Expect::Duplicate))
        .map(|(m, &pos)| (pos, parse_event(&m.payload).unwrap().event))
        .collect();
    in_order.sort_by_key(|(pos, _)| *pos);
    let mut states: BTreeMap<(String, String), Shopper> = BTreeMap::new();
    for (r, s) in &shoppers {
        let mut state = Shopper::default();
        state.set_tree(Some(std::sync::Arc::new(tree_for(r, s))));
        states.insert((r.clone(), s.clone()), state);
    }
    let mut want_decisions: Vec<(String, String)> = Vec::new();
    for (pos, e) in &in_order {
        let state = states
            .get_mut(&(e.retailer_id.clone(), e.shopper_id.clone()))
            .unwrap();
        if state.apply(e) {
            if let Some(d) = state.step(e, *pos, 0) {
                want_decisions.push((d.decision_id, d.node_id));
            }
        }
    }
    want_decisions.sort();
    let kinds: BTreeSet<&str> = want_decisions.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["big", "paid", "pasta"]),
        "every node should fire"
    );
    for (topic, db) in [
        (&decisions_cluster, &db_cluster),
        (&decisions_single, &db_single),
    ] {
        let mut got: Vec<(String, String)> = read_topic(topic, 8)
            .iter()
            .map(|v| {
                let d: Decision = serde_json::from_slice(v).unwrap();
                (d.decision_id, d.node_id)
            })
            .collect();
        got.sort();
        assert_eq!(
            got, want_decisions,
            "{topic}: decisions on Kafka, once each"
        );
        let mut stored: Vec<(String, String)> = clickhouse(&format!(
            "SELECT decision_id, node_id FROM {db}.experience_decisions FORMAT TabSeparated"
        ))
        .lines()
        .map(|l| {
            let (id, node) = l.split_once('\t').unwrap();
            (id.to_string(), node.to_string())
        })
        .collect();
        stored.sort();
        assert_eq!(stored, want_decisions, "{db}: decisions in ClickHouse");
    }
    println!(
        "{} decisions, as the sequential replay says",
        want_decisions.len()
    );

    for db in [&db_cluster, &db_single] {
        clickhouse(&format!("DROP DATABASE IF EXISTS {db}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
