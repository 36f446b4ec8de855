//! `generate`: deterministic synthetic shopper traffic to Kafka or to a JSON-lines file.
//!
//! ```text
//! generate --events 100000 --rate 2000 --brokers 127.0.0.1:9092            # to shopper-events
//! generate --events 1000 --bad-share 0.05 --out events.jsonl                # to a file
//! generate --events 50000 --rate 10000 --start now --brokers 127.0.0.1:9092 # live clock
//! ```
//!
//! The rate is open loop: message `i` is due at `i / rate` seconds after the start, whether or not
//! earlier ones were acknowledged, so a slow broker shows up as lag rather than as a lower
//! offered rate. A summary (counts by kind, bytes, achieved rate, delivery failures) goes to
//! stderr as one JSON line at the end; the process exits non-zero if any delivery failed.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use basketflow_examples::{Config, Generator};
use basketflow_kafka::{keyed_producer, unnamed_client_config};
use basketflow_vocab::Timestamp;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "Deterministic synthetic shopper traffic, by the basketflow event contract")]
struct Args {
    /// Number of messages to produce.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Messages per second, open loop (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seed of every random choice: the same seed gives the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of retailers.
    #[arg(long, default_value_t = 3)]
    retailers: u32,
    /// Number of shoppers.
    #[arg(long, default_value_t = 10_000)]
    shoppers: u32,
    /// Products per retailer.
    #[arg(long, default_value_t = 3_000)]
    products: u32,
    /// `occurred_at` of the first event: RFC 3339, or `now` (then the clock follows the rate).
    #[arg(long, default_value = "2026-11-01T00:00:00Z")]
    start: String,
    /// Events per simulated second (default: the rate, or 1000 when unpaced).
    #[arg(long)]
    sim_rate: Option<f64>,
    /// Concurrent shopping sessions interleaved in the stream.
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    /// Share of messages replaced by a bad one of a random kind (0..1).
    #[arg(long, default_value_t = 0.0)]
    bad_share: f64,
    /// Share of messages that re-send an earlier one byte for byte (0..1).
    #[arg(long, default_value_t = 0.0)]
    duplicate_share: f64,
    /// Write JSON lines to this file (`-` for stdout) instead of Kafka.
    #[arg(long, conflicts_with = "brokers")]
    out: Option<String>,
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: Option<String>,
    /// Kafka topic.
    #[arg(long, default_value = "shopper-events")]
    topic: String,
}

/// Counts delivery reports from librdkafka's background thread.
#[derive(Default)]
struct Counting {
    delivered: AtomicU64,
    failed: AtomicU64,
}

struct Ctx(Arc<Counting>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                eprintln!("generate: delivery failed: {e}");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

enum Sink {
    File(Box<dyn Write>),
    Kafka(ThreadedProducer<Ctx>, Arc<Counting>, String),
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.bad_share) || !(0.0..=1.0).contains(&args.duplicate_share) {
        bail!("--bad-share and --duplicate-share must be between 0 and 1");
    }
    let start = if args.start == "now" {
        Timestamp::now()
    } else {
        Timestamp::parse_rfc3339(&args.start)
            .with_context(|| format!("--start {:?} is not RFC 3339 or `now`", args.start))?
    };
    let sim_rate = args
        .sim_rate
        .unwrap_or(if args.rate > 0.0 { args.rate } else { 1_000.0 });
    let cfg = Config {
        seed: args.seed,
        retailers: args.retailers,
        shoppers: args.shoppers,
        products: args.products,
        start,
        events_per_second: sim_rate,
        concurrent_sessions: args.sessions,
        bad_share: args.bad_share,
        duplicate_share: args.duplicate_share,
    };

    let mut sink = match (&args.out, &args.brokers) {
        (Some(path), _) => Sink::File(if path == "-" {
            Box::new(BufWriter::new(std::io::stdout().lock()))
        } else {
            Box::new(BufWriter::new(
                std::fs::File::create(path).with_context(|| format!("creating {path}"))?,
            ))
        }),
        (None, Some(brokers)) => {
            let counting = Arc::new(Counting::default());
            // Idempotent, and partitioned by key as Java clients do.
            let producer: ThreadedProducer<Ctx> = keyed_producer(unnamed_client_config(brokers))
                // Batch for up to 5 ms: big batches at 10k/s, no visible latency.
                .set("linger.ms", "5")
                // 1 KB JSON compresses about 4x: less broker I/O and disk.
                .set("compression.type", "lz4")
                // Room for a few seconds of traffic at full speed while the broker catches up.
                .set("queue.buffering.max.messages", "1000000")
                .create_with_context(Ctx(counting.clone()))
                .context("creating the Kafka producer")?;
            Sink::Kafka(producer, counting, args.topic.clone())
        }
        (None, None) => bail!("say where to write: --brokers HOST:PORT or --out FILE"),
    };

    let began = Instant::now();
    let mut last_report = began;
    let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut bytes = 0u64;
    let mut max_lag = Duration::ZERO;
    for (i, msg) in Generator::new(cfg).take(args.events as usize).enumerate() {
        if args.rate > 0.0 {
            let due = began + Duration::from_secs_f64(i as f64 / args.rate);
            let now = Instant::now();
            if due > now + Duration::from_millis(1) {
                std::thread::sleep(due - now);
            } else if now > due {
                max_lag = max_lag.max(now - due);
            }
        }
        *by_kind.entry(msg.kind).or_default() += 1;
        bytes += msg.payload.len() as u64;
        match &mut sink {
            Sink::File(w) => {
                w.write_all(&msg.payload)?;
                w.write_all(b"\n")?;
            }
            Sink::Kafka(producer, _, topic) => {
                let mut record = BaseRecord::to(topic.as_str())
                    .key(msg.key.as_bytes())
                    .payload(&msg.payload);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err((e, _)) => bail!("producing to {topic}: {e}"),
                    }
                }
            }
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "generate: {} messages, {:.0}/s",
                i + 1,
                (i + 1) as f64 / began.elapsed().as_secs_f64()
            );
        }
    }
    let (delivered, failed) = match sink {
        Sink::File(mut w) => {
            w.flush()?;
            (args.events, 0)
        }
        Sink::Kafka(producer, counting, _) => {
            producer
                .flush(Duration::from_secs(60))
                .context("flushing the Kafka producer")?;
            (
                counting.delivered.load(Ordering::Relaxed),
                counting.failed.load(Ordering::Relaxed),
            )
        }
    };
    let secs = began.elapsed().as_secs_f64();
    eprintln!(
        "{}",
        serde_json::json!({
            "messages": args.events,
            "delivered": delivered,
            "failed": failed,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "rate": (args.events as f64 / secs).round(),
            "avg_bytes": bytes / args.events.max(1),
            "max_schedule_lag_ms": max_lag.as_millis() as u64,
            "by_kind": by_kind,
        })
    );
    if failed > 0 {
        bail!("{failed} messages were not delivered");
    }
    Ok(())
}
