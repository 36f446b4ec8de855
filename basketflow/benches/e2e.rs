//! End-to-end benchmark of the graph against the real broker and ClickHouse, side by side with
//! the broker's own limits measured in the same run (first version; see the README).
//!
//! `cargo bench -p basketflow --bench e2e -- [--events N] [--rates 1000,10000] [--seconds S]`
//!
//! 1. **Baselines**: `N` generated messages (~1.1 KB, 3% bad, 2% duplicates) are produced to a
//!    fresh 8-partition topic (producer rate), then read back by a plain rdkafka consumer
//!    (the raw consumer rate).
//! 2. **Catch-up throughput**: `basketflow run --exit-when-caught-up` over that backlog on 1
//!    and on 2 workers (fresh database and output topics each), wall time from start to exit
//!    (start-up included), events/s, ratio to the raw consumer rate, peak resident memory.
//! 3. **Latency**: a live 2-worker graph (`flush_interval_ms = 5`) with a tree per shopper
//!    that decides on every basket; at each rate, events are produced open loop for `S`
//!    seconds (message `k` sent at `k / rate`, timed from when it was due); the time from
//!    the send to the decision being readable (read_committed) by a consumer of the decisions
//!    topic, matched by the causing event's partition and offset; and, for the same messages,
//!    the broker round trip (send to readable by a consumer of the events topic). The first
//!    second of each rate is warm-up and not measured.
//!
//! Writes `target/bench-e2e/results.json` and `results.md`, and prints the table.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
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

struct Args {
    events: usize,
    rates: Vec<u32>,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        events: 300_000,
        rates: vec![1_000, 10_000],
        seconds: 15,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--events" => a.events = value.parse().expect("--events N"),
            "--rates" => {
                a.rates = value
                    .split(',')
                    .map(|r| r.parse().expect("--rates R,R"))
                    .collect()
            }
            "--seconds" => a.seconds = value.parse().expect("--seconds S"),
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

fn create_topic(name: &str, partitions: i32, cleanup: &str) {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(basketflow_sinks::kafka::ensure_topic(
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

/// Where each message landed and when its delivery was reported, by index.
type Landings = Arc<Mutex<Vec<Option<(i32, i64)>>>>;

struct Landing(Landings);

impl ClientContext for Landing {}

impl ProducerContext for Landing {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        if let Ok(m) = result {
            self.0.lock().unwrap()[*index] = Some((m.partition(), m.offset()));
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

/// Produces `(key, value)` pairs, paced at `rate` per second if given (open loop); returns
/// each one's send instant and where it landed.
fn produce(
    topic: &str,
    messages: &[(Vec<u8>, Vec<u8>)],
    rate: Option<u32>,
) -> (Vec<Instant>, Vec<Option<(i32, i64)>>) {
    let landings: Landings = Arc::new(Mutex::new(vec![None; messages.len()]));
    let p = producer(landings.clone());
    let start = Instant::now();
    let mut sent = Vec::with_capacity(messages.len());
    for (i, (k, v)) in messages.iter().enumerate() {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // Timed from when it was due (no coordinated omission).
            sent.push(due);
        } else {
            sent.push(Instant::now());
        }
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(i))
            .key(k)
            .payload(v);
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60))
        .expect("every message is delivered");
    let landed = landings.lock().unwrap().clone();
    (sent, landed)
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

fn generate(seed: u64, n: usize, start: Timestamp) -> Vec<GenMessage> {
    Generator::new(GenConfig {
        seed,
        shoppers: 20_000,
        bad_share: 0.03,
        duplicate_share: 0.02,
        start,
        ..GenConfig::default()
    })
    .take(n)
    .collect()
}

fn pairs(messages: &[GenMessage]) -> Vec<(Vec<u8>, Vec<u8>)> {
    messages
        .iter()
        .map(|m| (m.key.clone().into_bytes(), m.payload.clone()))
        .collect()
}

fn write_config(
    dir: &std::path::Path,
    name: &str,
    suffix: &str,
    events: &str,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    for (t, p) in [
        ("trees", PARTITIONS),
        ("rejected", 1),
        ("decisions", PARTITIONS),
    ] {
        create_topic(
            &format!("bench-{t}-{name}-{suffix}"),
            p,
            if t == "trees" { "compact" } else { "delete" },
        );
    }
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"{b}\"\nevents_topic = \"{events}\"\ntrees_topic = \"bench-trees-{name}-{suffix}\"\n\
             rejected_topic = \"bench-rejected-{name}-{suffix}\"\ndecisions_topic = \"bench-decisions-{name}-{suffix}\"\n\
             privacy_topic = \"bench-privacy-{name}-{suffix}\"\n\
             [clickhouse]\nurl = \"{ch}\"\ndatabase = \"bf_bench_{name}_{suffix}\"\n[metrics]\nlisten = \"off\"\n\
             {extra}",
            b = brokers(),
            ch = clickhouse_url(),
        ),
    )
    .unwrap();
    path
}

fn drop_database(name: &str, suffix: &str) {
    let _ = Command::new("curl")
        .args([
            "-sS",
            "--data-binary",
            &format!("DROP DATABASE IF EXISTS bf_bench_{name}_{suffix}"),
            &clickhouse_url(),
        ])
        .output();
}

/// Percentile `q` (0..=100) of sorted `xs`, in ms.
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

/// Reads `topic` from its end as messages arrive, recording when each (partition, offset) of
/// the causing event (`key_of`) became readable, until `stop`.
fn watch(
    topic: String,
    isolation: &'static str,
    key_of: fn(&rdkafka::message::BorrowedMessage<'_>) -> Option<(i32, i64)>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<HashMap<(i32, i64), Instant>> {
    let c = consumer(isolation);
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&topic, p, Offset::End).unwrap();
    }
    c.assign(&tpl).unwrap();
    std::thread::spawn(move || {
        let mut seen = HashMap::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                if let Some(k) = key_of(&m) {
                    seen.entry(k).or_insert_with(Instant::now);
                }
            }
        }
        seen
    })
}

fn main() {
    let args = args();
    let suffix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let dir = std::env::temp_dir().join(format!("basketflow-bench-{suffix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-e2e");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut results = json!({"date": Timestamp::now().to_string(), "events": args.events});

    // 1. Baselines.
    let backlog = format!("bench-events-{suffix}");
    create_topic(&backlog, PARTITIONS, "delete");
    let messages = generate(1, args.events, GenConfig::default().start);
    let bytes: usize = messages.iter().map(|m| m.payload.len()).sum();
    let t = Instant::now();
    produce(&backlog, &pairs(&messages), None);
    let produce_rate = args.events as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    assert_eq!(read_all(&backlog), args.events);
    let consume_rate = args.events as f64 / t.elapsed().as_secs_f64();
    println!("baseline: produce {produce_rate:.0}/s, raw consumer {consume_rate:.0}/s ({} bytes/message)", bytes / args.events);
    results["baseline"] = json!({"produce_per_s": produce_rate, "consume_per_s": consume_rate, "bytes_per_message": bytes / args.events});

    // 2. Catch-up throughput on 1 and 2 workers.
    let mut throughput = Vec::new();
    for workers in [1usize, 2] {
        let name = format!("catchup{workers}");
        // Info level: the exit line reports the peak resident memory.
        let cfg = write_config(&dir, &name, &suffix, &backlog, "[log]\nlevel = \"info\"\n");
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_basketflow"))
            .args([
                "run",
                "--config",
                cfg.to_str().unwrap(),
                "-w",
                &workers.to_string(),
                "--exit-when-caught-up",
            ])
            .env_remove("BASKETFLOW_CLICKHOUSE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("running basketflow");
        let secs = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "basketflow run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let peak: u64 = stderr
            .split_whitespace()
            .rev()
            .find_map(|w| w.strip_prefix("peak_resident_mib="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let rate = args.events as f64 / secs;
        println!("catch-up, {workers} worker(s): {secs:.1} s, {rate:.0} events/s ({:.2} of the raw consumer), peak resident {peak} MiB", rate / consume_rate);
        throughput.push(json!({"workers": workers, "seconds": secs, "events_per_s": rate, "ratio_to_consumer": rate / consume_rate, "peak_resident_mib": peak}));
        drop_database(&name, &suffix);
    }
    results["catch_up"] = json!(throughput);

    // 3. Latency on a live graph.
    let live_events = format!("bench-live-{suffix}");
    create_topic(&live_events, PARTITIONS, "delete");
    let cfg = write_config(
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
            (
                r,
                generate(
                    100 + i as u64,
                    r as usize * args.seconds as usize,
                    Timestamp::now(),
                ),
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
    let trees: Vec<(Vec<u8>, Vec<u8>)> = shoppers
        .iter()
        .map(|(r, s)| {
            (
                s.clone().into_bytes(),
                serde_json::to_vec(&tree(r, s)).unwrap(),
            )
        })
        .collect();
    produce(&format!("bench-trees-live-{suffix}"), &trees, None);
    let mut graph = Command::new(env!("CARGO_BIN_EXE_basketflow"))
        .args(["run", "--config", cfg.to_str().unwrap(), "-w", "2"])
        .env_remove("BASKETFLOW_CLICKHOUSE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting basketflow");
    // Ready once it commits (idle partitions follow the wall clock).
    let ready = Instant::now();
    loop {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--data-binary",
                &format!("SELECT max(time) FROM bf_bench_live_{suffix}.progress"),
                &clickhouse_url(),
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
            > 0
        {
            break;
        }
        assert!(
            ready.elapsed() < Duration::from_secs(120),
            "the live graph did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut latency = Vec::new();
    for (rate, ms) in &traffic {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let decisions = watch(
            format!("bench-decisions-live-{suffix}"),
            "read_committed",
            |m| {
                let d: Value = serde_json::from_slice(m.payload()?).ok()?;
                let c = &d["caused_by"];
                Some((c["partition"].as_i64()? as i32, c["offset"].as_i64()?))
            },
            stop.clone(),
        );
        let round_trip = watch(
            live_events.clone(),
            "read_committed",
            |m| Some((m.partition(), m.offset())),
            stop.clone(),
        );
        std::thread::sleep(Duration::from_millis(500)); // the watchers are assigned
        let (sent, landed) = produce(&live_events, &pairs(ms), Some(*rate));
        std::thread::sleep(Duration::from_secs(3)); // the last decisions arrive
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (decided, read) = (decisions.join().unwrap(), round_trip.join().unwrap());
        // The first second is warm-up (consumers' first fetches): not measured.
        let by_position: HashMap<(i32, i64), Instant> = landed
            .iter()
            .zip(&sent)
            .skip(*rate as usize)
            .filter_map(|(l, s)| l.map(|l| (l, *s)))
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
        let (d, r) = (summary(ms_of(&decided)), summary(ms_of(&read)));
        println!("rate {rate}/s: event -> decision {d}; broker round trip {r}");
        latency.push(json!({"rate": rate, "event_to_decision_ms": d, "broker_round_trip_ms": r,
            "p99_ratio": d["p99"].as_f64().unwrap_or(f64::NAN) / r["p99"].as_f64().unwrap_or(f64::NAN)}));
    }
    results["latency"] = json!(latency);
    let _ = Command::new("kill")
        .args(["-TERM", &graph.id().to_string()])
        .status();
    let _ = graph.wait();
    drop_database("live", &suffix);

    // Results.
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
    let mut md = String::new();
    md.push_str("| measure | value |\n| --- | --- |\n");
    md.push_str(&format!(
        "| producer, ~{} B messages | {:.0} msg/s |\n",
        results["baseline"]["bytes_per_message"], produce_rate
    ));
    md.push_str(&format!("| raw consumer | {consume_rate:.0} msg/s |\n"));
    for t in results["catch_up"].as_array().unwrap() {
        md.push_str(&format!(
            "| graph catch-up, {} worker(s) | {:.0} events/s ({:.2} of the raw consumer), peak {} MiB |\n",
            t["workers"], t["events_per_s"].as_f64().unwrap(), t["ratio_to_consumer"].as_f64().unwrap(), t["peak_resident_mib"]
        ));
    }
    for l in results["latency"].as_array().unwrap() {
        let (d, r) = (&l["event_to_decision_ms"], &l["broker_round_trip_ms"]);
        md.push_str(&format!(
            "| {} events/s: event -> decision p50/p95/p99/max ms | {:.1} / {:.1} / {:.1} / {:.1} (n = {}); broker round trip {:.1} / {:.1} / {:.1} / {:.1} |\n",
            l["rate"], d["p50"].as_f64().unwrap_or(f64::NAN), d["p95"].as_f64().unwrap_or(f64::NAN), d["p99"].as_f64().unwrap_or(f64::NAN), d["max"].as_f64().unwrap_or(f64::NAN), d["n"],
            r["p50"].as_f64().unwrap_or(f64::NAN), r["p95"].as_f64().unwrap_or(f64::NAN), r["p99"].as_f64().unwrap_or(f64::NAN), r["max"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    std::fs::File::create(out_dir.join("results.md"))
        .unwrap()
        .write_all(md.as_bytes())
        .unwrap();
    println!("\n{md}");
    let _ = std::fs::remove_dir_all(&dir);
}
