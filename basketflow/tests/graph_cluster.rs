//! Integration: generated traffic with bad events mixed in, through the real broker and
//! ClickHouse, on a cluster of 2 processes x 2 workers and on 1 process x 1 worker, each run to
//! caught-up. Every analyst view must equal the oracle computed independently from the raw
//! events, both runs must agree, and the dead-letter topic must hold exactly the bad messages
//! (by partition, offset and reason).
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

use basketflow_dataflows::oracle;
use basketflow_dataflows::parse::DeadLetter;
use basketflow_examples::{Config as GenConfig, Expect, Generator, Message as GenMessage};
use basketflow_ingest::parse_event;
use basketflow_vocab::time::MICROS_PER_DAY;
use basketflow_vocab::{Event, Timestamp};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

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
    let landed = Arc::new(Mutex::new(vec![None; messages.len()]));
    let producer: ThreadedProducer<Landing> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create_with_context(Landing(landed.clone()))
        .expect("creating a producer; is the stack up? run scripts/stack up");
    for (i, m) in messages.iter().enumerate() {
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(i))
            .key(m.key.as_bytes())
            .payload(&m.payload);
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

fn create_topic(name: &str, partitions: i32) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(basketflow_sinks::kafka::ensure_topic(
        &brokers(),
        name,
        partitions,
        &[("message.timestamp.type", "LogAppendTime")],
    ))
    .unwrap_or_else(|e| panic!("creating {name}: {e}; is the stack up? run scripts/stack up"));
}

/// Every dead letter in `topic`, read from the beginning to the end.
fn dead_letters(topic: &str) -> Vec<DeadLetter> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", "graph-cluster-test")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
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
            Some(Ok(m)) => out.push(serde_json::from_slice(m.payload().unwrap()).unwrap()),
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

fn write_config(dir: &Path, name: &str, events: &str, rejected: &str, database: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"{}\"\nevents_topic = \"{events}\"\nrejected_topic = \"{rejected}\"\n\
             [clickhouse]\nurl = \"{}\"\ndatabase = \"{database}\"\n",
            brokers(),
            clickhouse_url()
        ),
    )
    .unwrap();
    path
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
    let rejected_cluster = format!("it-rejected-cluster-{suffix}");
    let rejected_single = format!("it-rejected-single-{suffix}");
    let db_cluster = format!("bf_it_cluster_{suffix}");
    let db_single = format!("bf_it_single_{suffix}");
    create_topic(&events_topic, 8);
    create_topic(&rejected_cluster, 1);
    create_topic(&rejected_single, 1);

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
    let landed = produce(&events_topic, &messages);

    let dir = std::env::temp_dir().join(format!("basketflow-it-{suffix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_cluster = write_config(
        &dir,
        "cluster",
        &events_topic,
        &rejected_cluster,
        &db_cluster,
    );
    let cfg_single = write_config(&dir, "single", &events_topic, &rejected_single, &db_single);
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

    for db in [&db_cluster, &db_single] {
        clickhouse(&format!("DROP DATABASE IF EXISTS {db}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
