//! End-to-end benchmark of the graph against the real broker and ClickHouse, side by side with
//! the broker's own limits measured in the same run (see the README's "Benchmarks").
//!
//! `cargo bench -p basketflow --bench e2e -- [--phases baseline,catchup,sustain,latency,memory]
//!  [--events N] [--rates 1000,10000,50000] [--seconds S] [--sustain-seconds 60]
//!  [--sustain-probes 3] [--memory-events 1000000,10000000]`
//!
//! Every graph is `basketflow run` (the release binary), on its own fresh database and topics.
//! Messages are the generator's (~1.2 KB, 3% bad, 2% duplicates, 20,000 shoppers).
//!
//! 1. **baseline**: `N` messages produced to a fresh 8-partition topic (producer rate, the
//!    collector's producer settings), then read back by a plain rdkafka consumer (the raw
//!    consumer rate, read_committed).
//! 2. **catchup**: `basketflow run --exit-when-caught-up` over that backlog, 1 and 2 workers:
//!    events/s from the cluster forming to every sink flushed (and with start-up included),
//!    ratio to the raw consumer, peak resident memory, and CPU per event by thread group
//!    (the child's threads sampled from /proc every 100 ms), with the parse share measured
//!    in-process (`parse_event` over the same messages).
//! 3. **sustain**: a live graph (default configuration) fed open loop at a rate for
//!    `--sustain-seconds`; sustained when both durable outputs' committed times (ClickHouse's
//!    progress table, the Kafka outputs' progress topic) stay within 5 s of the wall clock
//!    throughout (after a 5 s warm-up) and the graph is caught up 10 s after the end. The first
//!    rate tried is 80% of the catch-up rate; then up by 20% after a success, down by 25% after
//!    a failure, `--sustain-probes` times; the highest sustained rate is reported.
//! 4. **latency**: a live 2-worker graph (`flush_interval_ms = 5`) with a tree per shopper that
//!    decides on every basket; per rate, `S` seconds open loop (message `k` due at `k / rate`
//!    and timed from then: no coordinated omission). Event produced -> decision readable
//!    (read_committed) on `experience-decisions`, matched by the causing event's partition and
//!    offset; the broker round trip of the same messages (produced -> readable on the events
//!    topic); order -> its figures visible in `sold_products_daily` (ClickHouse's committed
//!    time, polled every 10 ms, reaching the order's logical time). The first second is
//!    warm-up.
//! 5. **memory**: peak resident memory of `--exit-when-caught-up` runs (1 worker) over the
//!    first 1 M and 10 M messages of one generated stream (same shoppers and products).
//!
//! Writes `target/bench-e2e/results.json`, `results.md` and `latency.svg`, and prints the table.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use basketflow_examples::{Config as GenConfig, Expect, Generator, Message as GenMessage};
use basketflow_ingest::parse_event;
use basketflow_vocab::{Condition, Experience, ExperienceKind, ExperienceTree, Node, Timestamp};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

const PARTITIONS: i32 = 8;
const SHOPPERS: u32 = 20_000;
const TICK_MS: i64 = 5;

struct Args {
    phases: Vec<String>,
    events: usize,
    rates: Vec<u32>,
    seconds: u64,
    sustain_seconds: u64,
    sustain_probes: usize,
    memory_events: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args {
        phases: ["baseline", "catchup", "sustain", "latency", "memory"]
            .map(String::from)
            .to_vec(),
        events: 300_000,
        rates: vec![1_000, 10_000, 50_000],
        seconds: 15,
        sustain_seconds: 60,
        sustain_probes: 3,
        memory_events: vec![1_000_000, 10_000_000],
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let list = |v: &str| -> Vec<usize> {
        v.split(',')
            .map(|r| r.parse().expect("a comma-separated list of numbers"))
            .collect()
    };
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--phases" => a.phases = value.split(',').map(String::from).collect(),
            "--events" => a.events = value.parse().expect("--events N"),
            "--rates" => a.rates = list(&value).into_iter().map(|r| r as u32).collect(),
            "--seconds" => a.seconds = value.parse().expect("--seconds S"),
            "--sustain-seconds" => a.sustain_seconds = value.parse().expect("--sustain-seconds S"),
            "--sustain-probes" => a.sustain_probes = value.parse().expect("--sustain-probes N"),
            "--memory-events" => a.memory_events = list(&value),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn brokers() -> String {
    std::env::var("BASKETFLOW_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn clickhouse_url() -> String {
    std::env::var("BASKETFLOW_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every topic this run created (deleted at the end: a broker with thousands of leftover
/// partitions answers slower, which would skew the next run's broker baseline).
static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn create_topic(name: &str, partitions: i32, cleanup: &str) {
    CREATED.lock().unwrap().push(name.to_string());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(basketflow_kafka::ensure_topic(
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

/// Where each message landed (partition, offset, broker time) once its delivery was reported.
type Landings = Arc<Mutex<Vec<Option<(i32, i64, i64)>>>>;

struct Landing(Landings);

impl ClientContext for Landing {}

impl ProducerContext for Landing {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        if let Ok(m) = result {
            let broker_ms = m.timestamp().to_millis().unwrap_or(0);
            if let Some(slot) = self.0.lock().unwrap().get_mut(*index) {
                *slot = Some((m.partition(), m.offset(), broker_ms));
            }
        }
    }
}

/// The same producer settings as the collector's (lz4, linger 1 ms, idempotent).
fn producer(landings: Landings) -> ThreadedProducer<Landing> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Landing(landings))
        .expect("a producer")
}

fn send_retrying(
    p: &ThreadedProducer<Landing>,
    mut record: BaseRecord<'_, [u8], [u8], Box<usize>>,
) {
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// What an open-loop run produced: each message's due instant and where it landed.
struct Produced {
    sent: Vec<Instant>,
    landed: Vec<Option<(i32, i64, i64)>>,
}

/// Produces `messages`, paced at `rate` per second if given (open loop, each timed from when
/// it was due), and waits for every delivery.
fn produce(topic: &str, messages: &[GenMessage], rate: Option<u32>) -> Produced {
    let landings: Landings = Arc::new(Mutex::new(vec![None; messages.len()]));
    let p = producer(landings.clone());
    let start = Instant::now();
    let mut sent = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            sent.push(due);
        } else {
            sent.push(Instant::now());
        }
        send_retrying(
            &p,
            BaseRecord::with_opaque_to(topic, Box::new(i))
                .key(m.key.as_bytes())
                .payload(&m.payload[..]),
        );
    }
    p.flush(Duration::from_secs(120))
        .expect("every message is delivered");
    let landed = landings.lock().unwrap().clone();
    Produced { sent, landed }
}

/// Produces the first `n` messages of `stream` without keeping them (memory phase).
fn produce_streaming(topic: &str, stream: impl Iterator<Item = GenMessage>, n: usize) {
    let p = producer(Arc::new(Mutex::new(Vec::new())));
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

fn consumer(isolation: &str) -> BaseConsumer {
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
fn read_all(topic: &str) -> usize {
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

fn tree(retailer_id: &str, shopper_id: &str) -> ExperienceTree {
    ExperienceTree {
        tree_id: "bench".into(),
        version: 1,
        retailer_id: retailer_id.into(),
        shopper_id: shopper_id.into(),
        root: "start".into(),
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

fn generator(seed: u64, start: Timestamp, events_per_second: f64) -> Generator {
    Generator::new(GenConfig {
        seed,
        shoppers: SHOPPERS,
        bad_share: 0.03,
        duplicate_share: 0.02,
        start,
        events_per_second,
        ..GenConfig::default()
    })
}

fn generate(seed: u64, n: usize, start: Timestamp, events_per_second: f64) -> Vec<GenMessage> {
    generator(seed, start, events_per_second).take(n).collect()
}

/// One graph's topics and database, named after `name`.
struct Graph {
    name: String,
    config: std::path::PathBuf,
    database: String,
}

impl Graph {
    fn new(dir: &std::path::Path, name: &str, suffix: &str, events: &str, extra: &str) -> Graph {
        let full = format!("{name}-{suffix}");
        for (t, p) in [
            ("trees", PARTITIONS),
            ("rejected", 1),
            ("decisions", PARTITIONS),
        ] {
            create_topic(
                &format!("bench-{t}-{full}"),
                p,
                if t == "trees" { "compact" } else { "delete" },
            );
        }
        // Created by the graph itself.
        CREATED
            .lock()
            .unwrap()
            .push(format!("bench-privacy-{full}"));
        let database = format!("bf_bench_{name}_{suffix}");
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

    fn command(&self, workers: usize) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_basketflow"));
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

    fn clickhouse_committed(&self) -> u64 {
        clickhouse_committed(&self.database)
    }

    fn drop(&self) {
        query(&format!("DROP DATABASE IF EXISTS {}", self.database));
    }
}

fn query(sql: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--data-binary", sql, &clickhouse_url()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// ClickHouse's committed time in `database` (0 before the first batch).
fn clickhouse_committed(database: &str) -> u64 {
    query(&format!("SELECT max(time) FROM {database}.progress"))
        .parse()
        .unwrap_or(0)
}

/// Reads the Kafka outputs' progress topic as it grows: the committed time of the decisions.
fn kafka_committed_watch(topic: String, stop: Arc<AtomicBool>) -> Arc<Mutex<u64>> {
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

/// Percentile `q` (0..=100) of sorted `xs`.
fn pct(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs[((q / 100.0) * (xs.len() - 1) as f64).round() as usize]
}

fn summary(mut xs: Vec<f64>) -> Value {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    json!({"n": xs.len(), "p50": pct(&xs, 50.0), "p95": pct(&xs, 95.0), "p99": pct(&xs, 99.0), "max": xs.last().copied().unwrap_or(f64::NAN)})
}

/// Reads `topic` from its end as messages arrive, recording when each key (`key_of`) became
/// readable, until `stop`.
fn watch(
    topic: String,
    key_of: fn(&rdkafka::message::BorrowedMessage<'_>) -> Option<(i32, i64)>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<HashMap<(i32, i64), Instant>> {
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
                if let Some(k) = key_of(&m) {
                    seen.entry(k).or_insert_with(Instant::now);
                }
            }
        }
        seen
    })
}

/// CPU seconds of a child's threads, by group, sampled from /proc while it runs.
#[derive(Default)]
struct ThreadCpu {
    by_thread: Mutex<HashMap<u32, (String, f64)>>,
}

impl ThreadCpu {
    fn sample(&self, pid: u32) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return;
        };
        let ticks = 100.0; // USER_HZ on Linux
        let mut by = self.by_thread.lock().unwrap();
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = stat[open + 1..close].to_string();
            let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
            // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command.
            let cpu = fields
                .get(11)
                .and_then(|u| u.parse::<f64>().ok())
                .unwrap_or(0.0)
                + fields
                    .get(12)
                    .and_then(|s| s.parse::<f64>().ok())
                    .unwrap_or(0.0);
            let tid: u32 = task.file_name().to_string_lossy().parse().unwrap_or(0);
            let e = by.entry(tid).or_insert((comm, 0.0));
            e.1 = e.1.max(cpu / ticks);
        }
    }

    /// Seconds by group: worker threads (parse and dataflow), source consumer threads,
    /// librdkafka's threads, the ClickHouse writer, the Kafka outputs, the rest.
    fn groups(&self) -> BTreeMap<&'static str, f64> {
        let mut g = BTreeMap::new();
        for (comm, secs) in self.by_thread.lock().unwrap().values() {
            let group = if comm.starts_with("timely:work") {
                "workers"
            } else if comm.starts_with("clickhouse") {
                "clickhouse_writer"
            } else if comm.starts_with("kafka-outputs") || comm.starts_with("producer poll") {
                "kafka_outputs"
            } else if comm.starts_with("rdk:") {
                "librdkafka"
            } else if comm.starts_with("kafka-") {
                "source_threads"
            } else {
                "other"
            };
            *g.entry(group).or_insert(0.0) += secs;
        }
        g
    }
}

/// Runs `child` to its end, sampling its threads' CPU every 100 ms; returns its stderr.
fn run_sampled(mut child: Child, cpu: &ThreadCpu) -> String {
    let pid = child.id();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    loop {
        cpu.sample(pid);
        if let Some(status) = child.try_wait().unwrap() {
            let err = reader.join().unwrap();
            assert!(status.success(), "basketflow run failed: {err}");
            return err;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `ts=` instant of the first log line containing `what`, in seconds since the epoch.
fn log_instant(log: &str, what: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(what))?;
    let ts = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ts="))?;
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.timestamp_millis() as f64 / 1e3)
}

fn peak_mib(log: &str) -> u64 {
    log.split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix("peak_resident_mib="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A catch-up run over `topic` (`events` messages): its figures.
fn catch_up(
    dir: &std::path::Path,
    name: &str,
    suffix: &str,
    topic: &str,
    events: usize,
    workers: usize,
    arrangement_names: bool,
) -> Value {
    let extra = format!("arrangement_names = {arrangement_names}\n[log]\nlevel = \"info\"\n");
    let g = Graph::new(dir, name, suffix, topic, &extra);
    let cpu = ThreadCpu::default();
    let t = Instant::now();
    let child = g
        .command(workers)
        .arg("--exit-when-caught-up")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running basketflow");
    let log = run_sampled(child, &cpu);
    let wall = t.elapsed().as_secs_f64();
    let formed = log_instant(&log, "cluster formed");
    let stopped = log_instant(&log, "msg=stopped");
    let steady = match (formed, stopped) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall,
    };
    g.drop();
    let groups = cpu.groups();
    let total: f64 = groups.values().sum();
    let per_event_us: BTreeMap<&str, f64> = groups
        .iter()
        .map(|(k, v)| (*k, v * 1e6 / events as f64))
        .collect();
    json!({
        "workers": workers, "events": events, "wall_seconds": wall, "steady_seconds": steady,
        "events_per_s": events as f64 / steady, "events_per_s_with_startup": events as f64 / wall,
        "peak_resident_mib": peak_mib(&log), "cpu_seconds": total,
        "cpu_us_per_event": total * 1e6 / events as f64, "cpu_us_per_event_by_group": per_event_us,
        "arrangement_peak_records": arrangement_peaks(&log),
    })
}

/// The `arrangement peak records` line of a run with `metrics.arrangement_names`: records per
/// arrangement name, largest first (empty without it).
fn arrangement_peaks(log: &str) -> Vec<(String, i64)> {
    let Some(line) = log.lines().find(|l| l.contains("arrangement peak records")) else {
        return Vec::new();
    };
    let Some(rest) = line.split_once("peaks=").map(|(_, r)| r) else {
        return Vec::new();
    };
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap_or(""),
        None => rest.split_whitespace().next().unwrap_or(""),
    };
    value
        .split(';')
        .filter_map(|pair| {
            let (name, n) = pair.rsplit_once('=')?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// A sustained-rate probe: `rate` open loop for `seconds` on a live graph of `workers`.
fn sustain_probe(
    dir: &std::path::Path,
    suffix: &str,
    workers: usize,
    rate: u32,
    seconds: u64,
) -> Value {
    let name = format!("sustain{workers}x{rate}");
    let events = format!("bench-events-{name}-{suffix}");
    create_topic(&events, PARTITIONS, "delete");
    let g = Graph::new(dir, &name, suffix, &events, "[log]\nlevel = \"warn\"\n");
    let messages = generate(
        7,
        rate as usize * seconds as usize,
        Timestamp::now(),
        f64::from(rate),
    );
    let mut graph = g
        .command(workers)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting basketflow");
    wait_ready(&g);
    let stop = Arc::new(AtomicBool::new(false));
    let kafka = kafka_committed_watch(format!("bench-decisions-{}-progress", g.name), stop.clone());
    let lags: Arc<Mutex<Vec<(f64, u64, u64)>>> = Arc::default();
    let poller = {
        let (stop, lags, kafka) = (stop.clone(), lags.clone(), kafka.clone());
        let database = g.database.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let now = wall_ms();
                let ch = now.saturating_sub(clickhouse_committed(&database));
                let k = now.saturating_sub(*kafka.lock().unwrap());
                lags.lock()
                    .unwrap()
                    .push((start.elapsed().as_secs_f64(), ch, k));
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let t = Instant::now();
    produce(&events, &messages, Some(rate));
    let offered = messages.len() as f64 / t.elapsed().as_secs_f64();
    // Caught up within 10 s of the end?
    let end = wall_ms();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut caught_up = false;
    while Instant::now() < deadline {
        if g.clickhouse_committed() >= end && *kafka.lock().unwrap() >= end {
            caught_up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &graph.id().to_string()])
        .status();
    let _ = graph.wait();
    g.drop();
    let lags = lags.lock().unwrap().clone();
    let measured: Vec<&(f64, u64, u64)> = lags.iter().filter(|(s, _, _)| *s >= 5.0).collect();
    let max_ch = measured.iter().map(|l| l.1).max().unwrap_or(u64::MAX);
    let max_kafka = measured.iter().map(|l| l.2).max().unwrap_or(u64::MAX);
    let sustained = caught_up && max_ch <= 5_000 && max_kafka <= 5_000;
    println!("sustain, {workers} worker(s), {rate}/s for {seconds} s (offered {offered:.0}/s): max lag ClickHouse {max_ch} ms, decisions {max_kafka} ms, caught up after: {caught_up} -> {}", if sustained { "sustained" } else { "not sustained" });
    json!({"workers": workers, "rate": rate, "offered_per_s": offered, "seconds": seconds,
        "max_clickhouse_lag_ms": max_ch, "max_decisions_lag_ms": max_kafka, "caught_up_after": caught_up, "sustained": sustained})
}

/// Waits until the graph has committed a first batch (idle partitions follow the wall clock).
fn wait_ready(g: &Graph) {
    let ready = Instant::now();
    while g.clickhouse_committed() == 0 {
        assert!(
            ready.elapsed() < Duration::from_secs(120),
            "the live graph did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Log-log SVG of latency percentiles against offered rate, graph and broker.
fn plot(latency: &[Value]) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 420.0, 70.0, 50.0, 30.0, 190.0);
    let rates: Vec<f64> = latency.iter().filter_map(|l| l["rate"].as_f64()).collect();
    let series = [
        (
            "event -> decision p50",
            "event_to_decision_ms",
            "p50",
            "#1f77b4",
            "",
        ),
        (
            "event -> decision p99",
            "event_to_decision_ms",
            "p99",
            "#1f77b4",
            "6,4",
        ),
        (
            "broker round trip p50",
            "broker_round_trip_ms",
            "p50",
            "#ff7f0e",
            "",
        ),
        (
            "broker round trip p99",
            "broker_round_trip_ms",
            "p99",
            "#ff7f0e",
            "6,4",
        ),
        (
            "order -> ClickHouse p99",
            "order_to_clickhouse_ms",
            "p99",
            "#2ca02c",
            "2,3",
        ),
    ];
    let values: Vec<f64> = series
        .iter()
        .flat_map(|(_, k, p, _, _)| latency.iter().filter_map(move |l| l[*k][*p].as_f64()))
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let (xmin, xmax) = (
        rates.iter().cloned().fold(f64::MAX, f64::min).log10() - 0.1,
        rates.iter().cloned().fold(0.0, f64::max).log10() + 0.1,
    );
    let ymin = values
        .iter()
        .cloned()
        .fold(f64::MAX, f64::min)
        .max(0.1)
        .log10()
        .floor();
    let ymax = values
        .iter()
        .cloned()
        .fold(0.0, f64::max)
        .max(1.0)
        .log10()
        .ceil();
    let x = |r: f64| left + (r.log10() - xmin) / (xmax - xmin) * (w - left - right);
    let y = |v: f64| h - bottom - (v.max(0.1).log10() - ymin) / (ymax - ymin) * (h - top - bottom);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    s.push_str(&format!("<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">latency against offered rate (log-log)</text>\n", (w - right + left) / 2.0));
    for e in (ymin as i32)..=(ymax as i32) {
        let v = 10f64.powi(e);
        s.push_str(&format!("<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v} ms</text>\n", w - right, left - 6.0, y(v) + 4.0, y = y(v)));
    }
    for r in &rates {
        s.push_str(&format!("<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{r}/s</text>\n", h - bottom, h - bottom + 18.0, x = x(*r)));
    }
    s.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">offered events/s</text>\n",
        (w - right + left) / 2.0,
        h - 10.0
    ));
    for (i, (label, key, p, colour, dash)) in series.iter().enumerate() {
        let points: Vec<String> = latency
            .iter()
            .filter_map(|l| Some((l["rate"].as_f64()?, l[*key][*p].as_f64()?)))
            .filter(|(_, v)| v.is_finite())
            .map(|(r, v)| format!("{:.1},{:.1}", x(r), y(v)))
            .collect();
        s.push_str(&format!("<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\" points=\"{}\"/>\n", points.join(" ")));
        for pt in &points {
            let (px, py) = pt.split_once(',').unwrap();
            s.push_str(&format!(
                "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{colour}\"/>\n"
            ));
        }
        let ly = top + 10.0 + i as f64 * 20.0;
        s.push_str(&format!("<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{}\">{label}</text>\n", w - right + 10.0, w - right + 40.0, w - right + 45.0, ly + 4.0));
    }
    s.push_str("</svg>\n");
    s
}

fn main() {
    let args = args();
    let phase = |p: &str| args.phases.iter().any(|x| x == p);
    let suffix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let dir = std::env::temp_dir().join(format!("basketflow-bench-{suffix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-e2e");
    std::fs::create_dir_all(&out_dir).unwrap();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut results =
        json!({"date": Timestamp::now().to_string(), "events": args.events, "cpus": cpus});
    let mut md = String::from("| measure | value |\n| --- | --- |\n");

    // 1. Baselines.
    let backlog = format!("bench-events-{suffix}");
    let mut consume_rate = f64::NAN;
    let mut catchup_rates: BTreeMap<usize, f64> = BTreeMap::new();
    if phase("baseline") || phase("catchup") {
        create_topic(&backlog, PARTITIONS, "delete");
        let messages = generate(1, args.events, GenConfig::default().start, 1_000.0);
        let bytes = messages.iter().map(|m| m.payload.len()).sum::<usize>() / args.events;
        let t = Instant::now();
        produce(&backlog, &messages, None);
        let produce_rate = args.events as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        assert_eq!(read_all(&backlog), args.events);
        consume_rate = args.events as f64 / t.elapsed().as_secs_f64();
        // The parse stage alone, in this process, on one thread.
        let t = Instant::now();
        let valid = messages
            .iter()
            .filter(|m| parse_event(&m.payload).is_ok())
            .count();
        let parse_us = t.elapsed().as_secs_f64() * 1e6 / args.events as f64;
        println!("baseline: produce {produce_rate:.0}/s, raw consumer {consume_rate:.0}/s ({bytes} bytes/message); parse {parse_us:.2} us/message ({valid} valid)");
        results["baseline"] = json!({"produce_per_s": produce_rate, "consume_per_s": consume_rate, "bytes_per_message": bytes, "parse_us_per_message": parse_us});
        md.push_str(&format!("| producer, ~{bytes} B messages | {produce_rate:.0} msg/s |\n| raw consumer (read_committed) | {consume_rate:.0} msg/s |\n| parse + validate, one thread | {parse_us:.1} µs/message |\n"));
    }

    // 2. Catch-up throughput on 1 and 2 workers.
    if phase("catchup") {
        let mut all = Vec::new();
        for workers in [1usize, 2] {
            let r = catch_up(
                &dir,
                &format!("catchup{workers}"),
                &suffix,
                &backlog,
                args.events,
                workers,
                false,
            );
            println!("catch-up, {workers} worker(s): {r}");
            let rate = r["events_per_s"].as_f64().unwrap();
            catchup_rates.insert(workers, rate);
            let by = r["cpu_us_per_event_by_group"].as_object().unwrap();
            let by: Vec<String> = by
                .iter()
                .map(|(k, v)| format!("{k} {:.1}", v.as_f64().unwrap()))
                .collect();
            md.push_str(&format!(
                "| catch-up, {workers} worker(s) | {rate:.0} events/s ({:.0} with start-up), {:.2} of the raw consumer; peak {} MiB; CPU {:.1} µs/event ({}) |\n",
                r["events_per_s_with_startup"].as_f64().unwrap(),
                rate / consume_rate,
                r["peak_resident_mib"],
                r["cpu_us_per_event"].as_f64().unwrap(),
                by.join(", ")
            ));
            all.push(r);
        }
        results["catch_up"] = json!(all);
    }

    // 3. Sustained rate.
    if phase("sustain") {
        let mut all = Vec::new();
        for workers in [1usize, 2] {
            let start = catchup_rates.get(&workers).copied().unwrap_or(20_000.0) * 0.8;
            let mut rate = ((start / 1_000.0).round() * 1_000.0).max(1_000.0) as u32;
            let mut best: Option<u32> = None;
            for _ in 0..args.sustain_probes {
                let r = sustain_probe(&dir, &suffix, workers, rate, args.sustain_seconds);
                let ok = r["sustained"].as_bool().unwrap_or(false);
                all.push(r);
                if ok {
                    best = Some(best.map_or(rate, |b| b.max(rate)));
                    rate = (f64::from(rate) * 1.2 / 1_000.0).round() as u32 * 1_000;
                } else {
                    rate = ((f64::from(rate) * 0.75 / 1_000.0).round() as u32 * 1_000).max(1_000);
                }
                if best.is_some_and(|b| rate <= b) {
                    break;
                }
            }
            md.push_str(&format!(
                "| highest sustained rate, {workers} worker(s), {} s | {} |\n",
                args.sustain_seconds,
                best.map_or("none of the probes".into(), |b| {
                    if consume_rate.is_finite() {
                        format!(
                            "{b} events/s ({:.2} of the raw consumer)",
                            f64::from(b) / consume_rate
                        )
                    } else {
                        // The baseline phase did not run: no raw consumer rate to compare.
                        format!("{b} events/s")
                    }
                })
            ));
            results[format!("sustained_{workers}w")] = json!(best);
        }
        results["sustain_probes"] = json!(all);
    }

    // 4. Latency on a live graph.
    if phase("latency") {
        let live_events = format!("bench-live-{suffix}");
        create_topic(&live_events, PARTITIONS, "delete");
        let g = Graph::new(
            &dir,
            "live",
            &suffix,
            &live_events,
            "[graph]\nflush_interval_ms = 5\n[log]\nlevel = \"warn\"\n",
        );
        let traffic: Vec<(u32, Vec<GenMessage>)> = args
            .rates
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let n = r as usize * args.seconds as usize;
                (
                    r,
                    generate(100 + i as u64, n, Timestamp::now(), f64::from(r)),
                )
            })
            .collect();
        let mut shoppers = std::collections::BTreeSet::new();
        for (_, ms) in &traffic {
            for m in ms.iter().filter(|m| matches!(m.expect, Expect::Valid)) {
                let e = parse_event(&m.payload).unwrap().event;
                shoppers.insert((e.retailer_id, e.shopper_id));
            }
        }
        let trees: Vec<GenMessage> = shoppers
            .iter()
            .map(|(r, s)| GenMessage {
                key: s.clone(),
                payload: serde_json::to_vec(&tree(r, s)).unwrap(),
                expect: Expect::Valid,
                kind: "tree",
            })
            .collect();
        produce(&format!("bench-trees-{}", g.name), &trees, None);
        let mut graph = g
            .command(2)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting basketflow");
        wait_ready(&g);
        let mut latency = Vec::new();
        for (rate, ms) in &traffic {
            let stop = Arc::new(AtomicBool::new(false));
            let decisions = watch(
                format!("bench-decisions-{}", g.name),
                |m| {
                    let d: Value = serde_json::from_slice(m.payload()?).ok()?;
                    let c = &d["caused_by"];
                    Some((c["partition"].as_i64()? as i32, c["offset"].as_i64()?))
                },
                stop.clone(),
            );
            let round_trip = watch(
                live_events.clone(),
                |m| Some((m.partition(), m.offset())),
                stop.clone(),
            );
            // ClickHouse's committed time, every 10 ms: (instant, committed logical time).
            let committed: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
            let poller = {
                let (stop, committed, database) =
                    (stop.clone(), committed.clone(), g.database.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let t = clickhouse_committed(&database);
                        committed.lock().unwrap().push((Instant::now(), t));
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            };
            std::thread::sleep(Duration::from_millis(500)); // the watchers are assigned
            let produced = produce(&live_events, ms, Some(*rate));
            std::thread::sleep(Duration::from_secs(5)); // the last decisions arrive
            stop.store(true, Ordering::Relaxed);
            let (decided, read) = (decisions.join().unwrap(), round_trip.join().unwrap());
            poller.join().unwrap();
            // The first second is warm-up (consumers' first fetches): not measured.
            let warm = *rate as usize;
            let by_position: HashMap<(i32, i64), Instant> = produced
                .landed
                .iter()
                .zip(&produced.sent)
                .skip(warm)
                .filter_map(|(l, s)| l.map(|(p, o, _)| ((p, o), *s)))
                .collect();
            let ms_of = |seen: &HashMap<(i32, i64), Instant>| -> Vec<f64> {
                seen.iter()
                    .filter_map(|(k, at)| {
                        by_position
                            .get(k)
                            .map(|s| at.duration_since(*s).as_secs_f64() * 1e3)
                    })
                    .collect()
            };
            // Orders: visible once ClickHouse's committed time reaches their logical time.
            let committed = committed.lock().unwrap().clone();
            let visible: Vec<f64> = ms
                .iter()
                .zip(produced.landed.iter().zip(&produced.sent))
                .skip(warm)
                .filter(|(m, _)| m.kind == "order_paid" && matches!(m.expect, Expect::Valid))
                .filter_map(|(_, (l, s))| {
                    let (_, _, broker_ms) = (*l)?;
                    let time = ((broker_ms + TICK_MS - 1) / TICK_MS * TICK_MS) as u64;
                    let i = committed.partition_point(|(_, c)| *c < time);
                    committed
                        .get(i)
                        .map(|(at, _)| at.saturating_duration_since(*s).as_secs_f64() * 1e3)
                })
                .collect();
            let (d, r, v) = (
                summary(ms_of(&decided)),
                summary(ms_of(&read)),
                summary(visible),
            );
            println!("rate {rate}/s: event -> decision {d}; broker round trip {r}; order -> sold_products_daily {v}");
            latency.push(json!({"rate": rate, "event_to_decision_ms": d, "broker_round_trip_ms": r, "order_to_clickhouse_ms": v,
                "p99_ratio": d["p99"].as_f64().unwrap_or(f64::NAN) / r["p99"].as_f64().unwrap_or(f64::NAN)}));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &graph.id().to_string()])
            .status();
        let _ = graph.wait();
        g.drop();
        let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        for l in &latency {
            let (d, r, v) = (
                &l["event_to_decision_ms"],
                &l["broker_round_trip_ms"],
                &l["order_to_clickhouse_ms"],
            );
            md.push_str(&format!(
                "| {} events/s, event -> decision p50 / p95 / p99 / max | {:.1} / {:.1} / {:.1} / {:.1} ms (n = {}); p99 {:.1}x the broker round trip ({:.1} / {:.1} / {:.1} / {:.1} ms) |\n| {} events/s, order -> sold_products_daily p50 / p99 / max | {:.0} / {:.0} / {:.0} ms (n = {}) |\n",
                l["rate"], f(d, "p50"), f(d, "p95"), f(d, "p99"), f(d, "max"), d["n"],
                f(l, "p99_ratio"), f(r, "p50"), f(r, "p95"), f(r, "p99"), f(r, "max"),
                l["rate"], f(v, "p50"), f(v, "p99"), f(v, "max"), v["n"],
            ));
        }
        std::fs::write(out_dir.join("latency.svg"), plot(&latency)).unwrap();
        results["latency"] = json!(latency);
    }

    // 5. Memory after 1 M and 10 M events of one stream.
    if phase("memory") {
        let mut all = Vec::new();
        for &n in &args.memory_events {
            let topic = format!("bench-memory-{n}-{suffix}");
            create_topic(&topic, PARTITIONS, "delete");
            produce_streaming(&topic, generator(3, GenConfig::default().start, 1_000.0), n);
            let r = catch_up(&dir, &format!("memory{n}"), &suffix, &topic, n, 1, true);
            println!("memory, {n} events: {r}");
            md.push_str(&format!(
                "| peak resident memory after {n} events (1 worker) | {} MiB ({:.0} events/s) |\n",
                r["peak_resident_mib"],
                r["events_per_s"].as_f64().unwrap()
            ));
            all.push(r);
        }
        if let (Some(first), Some(last)) = (all.first(), all.last()) {
            let ratio = last["peak_resident_mib"].as_f64().unwrap()
                / first["peak_resident_mib"].as_f64().unwrap().max(1.0);
            md.push_str(&format!("| memory ratio, last / first | {ratio:.2} |\n"));
            results["memory_ratio"] = json!(ratio);
            // Where the records are: the largest arrangements of the last run, beside the first.
            let peaks = |r: &Value| -> BTreeMap<String, i64> {
                serde_json::from_value::<Vec<(String, i64)>>(r["arrangement_peak_records"].clone())
                    .unwrap_or_default()
                    .into_iter()
                    .collect()
            };
            let (p_first, p_last) = (peaks(first), peaks(last));
            let mut largest: Vec<(&String, &i64)> = p_last.iter().collect();
            largest.sort_by(|a, b| b.1.cmp(a.1));
            for (name, n) in largest.into_iter().take(8) {
                md.push_str(&format!(
                    "| peak records, `{name}` | {} after {} events, {n} after {} |\n",
                    p_first.get(name).copied().unwrap_or(0),
                    first["events"],
                    last["events"]
                ));
            }
        }
        results["memory"] = json!(all);
    }

    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
    std::fs::File::create(out_dir.join("results.md"))
        .unwrap()
        .write_all(md.as_bytes())
        .unwrap();
    println!("\n{md}");
    let _ = std::fs::remove_dir_all(&dir);
    delete_created_topics();
}

/// Deletes the topics of [`CREATED`] and the graphs' progress topics.
fn delete_created_topics() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let mut names = CREATED.lock().unwrap().clone();
    let progress: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with("bench-decisions-"))
        .map(|n| format!("{n}-progress"))
        .collect();
    names.extend(progress);
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("an admin client");
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let result = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(admin.delete_topics(&refs, &AdminOptions::new()));
    if let Err(e) = result {
        eprintln!("deleting the bench's topics: {e}");
    }
}
