//! Load test of the collector over loopback, against the real broker.
//!
//! ```sh
//! cargo bench -p basketflow-collector --bench load                       # batches of 1 and 50 at 10,000 events/s
//! cargo bench -p basketflow-collector --bench load -- --runs 1@5000,50@20000 --duration 20
//! ```
//!
//! It starts a collector in-process (its own 2-thread runtime; `auth = "keys"`, three
//! retailers, default limits) producing to a fresh 8-partition topic on `$BASKETFLOW_BROKERS`
//! (default 127.0.0.1:9092), then, for each run `BATCH@EVENTS_PER_S`, drives **open-loop**
//! load: request `k` is due at `start + k / rate` whatever happened to earlier ones, sent on
//! one of `--connections` keep-alive HTTP/1.1 connections; its response time is measured from
//! when it was due (so a stalled server is charged for the requests queued behind it: no
//! coordinated omission). Events are the traffic generator's (~1.1 KB, realistic mix), built
//! before the run; a batch holds events of one retailer and carries that retailer's key.
//!
//! Each run lasts `--warmup` + `--duration` seconds and stops by itself; only the
//! `--duration` part is measured. It prints requests/s and events/s achieved, the share of
//! 200 answers, response-time percentiles, and checks that the topic holds exactly the
//! events answered 200 (sum of partition end offsets). The topic is deleted at the end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use basketflow_collector::auth::key_sha256;
use basketflow_collector::{AuthMode, Collector, CollectorConfig, RetailerKey};
use basketflow_examples::{Config as GenConfig, Generator};
use basketflow_kafka::{client_config, ensure_topic};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

const RETAILERS: u32 = 3;

/// Options.
#[derive(Parser, Debug)]
struct Args {
    /// Runs, comma-separated, each `BATCH@EVENTS_PER_S`.
    #[arg(long, default_value = "1@10000,50@10000")]
    runs: String,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Unmeasured seconds at the same rate before each run.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 128)]
    connections: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Passed by `cargo bench` (without it, as under `cargo test`, nothing runs).
    #[arg(long, hide = true)]
    bench: bool,
}

struct Run {
    batch: usize,
    rate: f64,
}

/// One measured request: (due time offset from the run's start, latency, status, events).
struct Sample {
    due: Duration,
    latency: Duration,
    status: u16,
    events: usize,
}

fn key(retailer: usize) -> String {
    format!("bench-key-{retailer}")
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.bench {
        // `cargo test --all-targets` runs benches without `--bench`: do not load the machine.
        println!("load: a benchmark; run it with cargo bench -p basketflow-collector --bench load");
        return Ok(());
    }
    let runs = args
        .runs
        .split(',')
        .map(|r| {
            let (b, e) = r
                .split_once('@')
                .with_context(|| format!("run {r:?} is not BATCH@EVENTS_PER_S"))?;
            Ok(Run {
                batch: b.trim().parse()?,
                rate: e.trim().parse()?,
            })
        })
        .collect::<Result<Vec<Run>>>()?;
    let brokers = std::env::var("BASKETFLOW_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let topic = format!("bench-collector-{nanos}");

    // The collector, on its own runtime.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("collector")
        .enable_all()
        .build()?;
    let config = CollectorConfig {
        listen: "127.0.0.1:0".into(),
        auth: AuthMode::Keys,
        retailers: (0..RETAILERS as usize)
            .map(|r| RetailerKey {
                id: format!("retailer-{r:02}"),
                key_sha256: key_sha256(&key(r)),
            })
            .collect(),
        ..CollectorConfig::default()
    };
    let (addr, stop, served) = server.block_on(async {
        ensure_topic(
            &brokers,
            &topic,
            8,
            // As shopper-events: the graph's times are broker append times.
            &[("message.timestamp.type", "LogAppendTime")],
        )
        .await
        .with_context(|| format!("creating {topic} on {brokers}; is the stack up?"))?;
        let collector = wait_for_topic(config.clone(), &brokers, &topic).await?;
        let addr = collector.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(collector.serve(async move {
            let _ = stopped.await;
        }));
        anyhow::Ok((addr, stop, served))
    })?;

    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load")
        .enable_all()
        .build()?;
    println!(
        "collector on {addr}, topic {topic} (8 partitions) on {brokers}; {} connections, \
         {} s warm-up + {} s measured per run",
        args.connections, args.warmup, args.duration
    );
    println!("| batch | target events/s | requests/s | events/s | 200s | p50 ms | p95 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut answered_200 = 0usize;
    for (seed, run) in (args.seed..).zip(&runs) {
        let bodies = build_bodies(run, &args, seed);
        let samples = client.block_on(drive(addr, run, &args, bodies))?;
        answered_200 += samples
            .iter()
            .filter(|s| s.status == 200)
            .map(|s| s.events)
            .sum::<usize>();
        report(run, &args, samples);
    }

    let stored = stored_events(&brokers, &topic)?;
    println!(
        "topic holds {stored} events; {answered_200} were answered 200 (warm-up included): {}",
        if stored == answered_200 {
            "equal"
        } else {
            "MISMATCH"
        }
    );
    let _ = stop.send(());
    server.block_on(async {
        served.await??;
        let admin: AdminClient<DefaultClientContext> = client_config(&brokers).create()?;
        admin.delete_topics(&[&topic], &AdminOptions::new()).await?;
        anyhow::Ok(())
    })?;
    if stored != answered_200 {
        bail!("the topic does not hold exactly the accepted events");
    }
    Ok(())
}

/// Binds the collector once the new topic is visible in the broker's metadata.
async fn wait_for_topic(config: CollectorConfig, brokers: &str, topic: &str) -> Result<Collector> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Collector::bind(config.clone(), brokers, topic).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for {topic}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The request bodies of a run, in order, each with its retailer: batches hold one
/// retailer's events, a JSON array when `batch > 1`, the bare event otherwise.
fn build_bodies(run: &Run, args: &Args, seed: u64) -> Vec<(usize, Bytes)> {
    let requests =
        ((args.warmup + args.duration) as f64 * run.rate / run.batch as f64).ceil() as usize;
    let gen = Generator::new(GenConfig {
        seed,
        retailers: RETAILERS,
        shoppers: 50_000,
        ..GenConfig::default()
    });
    let mut pending: Vec<Vec<Vec<u8>>> = vec![Vec::new(); RETAILERS as usize];
    let mut bodies = Vec::with_capacity(requests);
    for msg in gen {
        if bodies.len() == requests {
            break;
        }
        let retailer = retailer_of(&msg.payload);
        pending[retailer].push(msg.payload);
        if pending[retailer].len() == run.batch {
            let events = std::mem::take(&mut pending[retailer]);
            let body = if run.batch == 1 {
                events.into_iter().next().unwrap()
            } else {
                let mut b =
                    Vec::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
                b.push(b'[');
                for (i, e) in events.iter().enumerate() {
                    if i > 0 {
                        b.push(b',');
                    }
                    b.extend_from_slice(e);
                }
                b.push(b']');
                b
            };
            bodies.push((retailer, Bytes::from(body)));
        }
    }
    bodies
}

fn retailer_of(payload: &[u8]) -> usize {
    #[derive(serde::Deserialize)]
    struct R<'a> {
        retailer_id: &'a str,
    }
    let r: R = serde_json::from_slice(payload).expect("generated events are valid");
    r.retailer_id
        .strip_prefix("retailer-")
        .and_then(|n| n.parse().ok())
        .expect("generator retailer ids are retailer-NN")
}

async fn drive(
    addr: SocketAddr,
    run: &Run,
    args: &Args,
    bodies: Vec<(usize, Bytes)>,
) -> Result<Vec<Sample>> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let interval = Duration::from_secs_f64(run.batch as f64 / run.rate);
    let keys: Arc<Vec<String>> = Arc::new(
        (0..RETAILERS as usize)
            .map(|r| format!("Bearer {}", key(r)))
            .collect(),
    );
    // Connect first, then start the clock.
    let mut senders = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        senders.push(sender);
    }
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let batch = run.batch;
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let (bodies, next, keys) = (bodies.clone(), next.clone(), keys.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some((retailer, body)) = bodies.get(k) else {
                        break;
                    };
                    let due = start + interval.mul_f64(k as f64);
                    tokio::time::sleep_until(due).await;
                    sender.ready().await?;
                    let request = hyper::Request::post("/v1/events")
                        .header("host", addr.to_string())
                        .header("content-type", "application/json")
                        .header("authorization", &keys[*retailer])
                        .body(Full::new(body.clone()))?;
                    let response = sender.send_request(request).await?;
                    let status = response.status().as_u16();
                    response.into_body().collect().await?;
                    samples.push(Sample {
                        due: due - start,
                        latency: due.elapsed(),
                        status,
                        events: batch,
                    });
                }
                anyhow::Ok(samples)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

fn report(run: &Run, args: &Args, samples: Vec<Sample>) {
    let warmup = Duration::from_secs(args.warmup);
    let measured: Vec<&Sample> = samples.iter().filter(|s| s.due >= warmup).collect();
    // From the first measured request's due time to the last answer.
    let span = measured
        .iter()
        .map(|s| s.due + s.latency)
        .max()
        .unwrap_or_default()
        .saturating_sub(warmup)
        .as_secs_f64();
    let ok = measured.iter().filter(|s| s.status == 200).count();
    let events: usize = measured
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.events)
        .sum();
    let mut lat: Vec<Duration> = measured.iter().map(|s| s.latency).collect();
    lat.sort();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1e3
    };
    println!(
        "| {} | {:.0} | {:.0} | {:.0} | {:.2}% | {:.1} | {:.1} | {:.1} | {:.1} |",
        run.batch,
        run.rate,
        measured.len() as f64 / span,
        events as f64 / span,
        100.0 * ok as f64 / measured.len() as f64,
        pct(0.50),
        pct(0.95),
        pct(0.99),
        pct(1.0),
    );
    let mut statuses: Vec<u16> = measured
        .iter()
        .map(|s| s.status)
        .filter(|&s| s != 200)
        .collect();
    statuses.sort();
    statuses.dedup();
    if !statuses.is_empty() {
        println!("  (other statuses: {statuses:?})");
    }
}

/// Events in `topic`: the sum of its partitions' end offsets (a fresh topic, nothing deleted).
fn stored_events(brokers: &str, topic: &str) -> Result<usize> {
    let consumer: BaseConsumer = client_config(brokers).create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut total = 0;
    for p in md.topics()[0].partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        total += (high - low) as usize;
    }
    Ok(total)
}
