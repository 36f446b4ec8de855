//! `basketflow run`: the graph on a timely cluster.
//!
//! One process of `-n` processes, each with `-w` worker threads; process `-p` of the cluster
//! whose addresses are the lines of the host file `-h` (one `host:port` per process). Each
//! worker reads its share of `shopper-events`, parses, and feeds the read models; refused
//! messages go to the dead-letter topic; the read models go to ClickHouse.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use timely::communication::Config as Communication;
use timely::dataflow::operators::Probe;
use timely::dataflow::ProbeHandle;
use timely::WorkerConfig;

use basketflow_dataflows::experiences::{decide, TreeStats};
use basketflow_dataflows::parse::parse_messages;
use basketflow_dataflows::read_models;
use basketflow_ingest::kafka_source::{kafka_source, SourceConfig};
use basketflow_sinks::dead_letters::{write_dead_letters, RejectionCounts};
use basketflow_sinks::decisions::{produce_decisions, store_decisions, DecisionStats};
use basketflow_sinks::read_model_sink::{committed, prepare, write_read_models, SinkStats, Target};

use crate::config::Config;

/// Options of `basketflow run`.
#[derive(Args, Debug, Clone)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(long, default_value = "basketflow.toml")]
    pub config: PathBuf,
    /// Worker threads in this process.
    #[arg(short = 'w', long, default_value_t = 1)]
    pub workers: usize,
    /// Processes in the cluster.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub processes: usize,
    /// Index of this process (0-based).
    #[arg(short = 'p', long, default_value_t = 0)]
    pub process: usize,
    /// Host file: one `host:port` per process, in process order.
    #[arg(short = 'h', long)]
    pub hostfile: Option<PathBuf>,
    /// Stop once every partition is read up to the end it had at start and every sink has
    /// flushed (tests, backfills).
    #[arg(long)]
    pub exit_when_caught_up: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// The timely communication configuration for these options.
fn communication(args: &RunArgs) -> Result<Communication> {
    if args.workers == 0 {
        bail!("-w must be at least 1");
    }
    if args.processes <= 1 {
        return Ok(if args.workers == 1 {
            Communication::Thread
        } else {
            Communication::Process(args.workers)
        });
    }
    if args.process >= args.processes {
        bail!("-p {} is not below -n {}", args.process, args.processes);
    }
    let Some(hostfile) = &args.hostfile else {
        bail!(
            "-n {} needs a host file (-h) with one host:port per process",
            args.processes
        );
    };
    let text = std::fs::read_to_string(hostfile)
        .with_context(|| format!("reading the host file {}", hostfile.display()))?;
    let addresses: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if addresses.len() != args.processes {
        bail!(
            "the host file {} lists {} addresses, -n says {} processes",
            hostfile.display(),
            addresses.len(),
            args.processes
        );
    }
    Ok(Communication::Cluster {
        threads: args.workers,
        process: args.process,
        addresses,
        report: false,
        zerocopy: false,
    })
}

/// Runs the graph until it is caught up (with `--exit-when-caught-up`) or until SIGTERM/SIGINT.
pub fn run(args: RunArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    let communication = communication(&args)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, shutdown.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, shutdown.clone())?;
    let rejections: RejectionCounts = Default::default();
    let started = Instant::now();
    let exit_when_caught_up = args.exit_when_caught_up;

    let timely_config = timely::Config {
        communication,
        worker: WorkerConfig::default(),
    };
    let worker_rejections = rejections.clone();
    let target = Target {
        url: config.clickhouse.url.clone(),
        database: config.clickhouse.database.clone(),
        user: config.clickhouse.user.clone(),
        password: config.clickhouse.password.clone(),
    };
    let flush_interval = Duration::from_millis(config.graph.flush_interval_ms);
    let sink_stats = Arc::new(SinkStats::default());
    let worker_sink_stats = sink_stats.clone();
    let tree_stats = Arc::new(TreeStats::default());
    let worker_tree_stats = tree_stats.clone();
    let decision_stats = Arc::new(DecisionStats::default());
    let worker_decision_stats = decision_stats.clone();
    let guards = timely::execute(timely_config, move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        // Worker 0 writes ClickHouse: it readies the schema and learns where a previous run
        // stopped before any data flows.
        let committed = if index == 0 {
            prepare(&target).unwrap_or_else(|e| {
                panic!("worker 0: cannot prepare ClickHouse at {}: {e}", target.url)
            })
        } else {
            // Worker 0 may still be creating the schema: wait for its progress table.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match committed(&target) {
                    Ok(c) => break c,
                    Err(e) if Instant::now() > deadline => panic!(
                        "worker {index}: cannot read the committed time from ClickHouse: {e}"
                    ),
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        };
        let mut source_cfg = SourceConfig::new(&config.kafka.brokers, &config.kafka.events_topic);
        source_cfg.tick_ms = config.graph.tick_ms;
        source_cfg.idle_margin_ms = config.graph.idle_margin_ms;
        source_cfg.stop_at_start_watermarks = exit_when_caught_up;
        let mut trees_cfg = source_cfg.clone();
        trees_cfg.topic = config.kafka.trees_topic.clone();
        let probe = ProbeHandle::new();
        let stats = worker.dataflow::<u64, _, _>(|scope| {
            let (messages, stats) =
                kafka_source(scope, source_cfg, index, peers).unwrap_or_else(|e| {
                    panic!(
                        "worker {index}: cannot read {}: {e}",
                        config.kafka.events_topic
                    )
                });
            let (trees, _) = kafka_source(scope, trees_cfg, index, peers).unwrap_or_else(|e| {
                panic!(
                    "worker {index}: cannot read {}: {e}",
                    config.kafka.trees_topic
                )
            });
            let parsed = parse_messages(messages);
            write_dead_letters(
                parsed.dead_letters,
                &config.kafka.brokers,
                &config.kafka.rejected_topic,
                worker_rejections.clone(),
            )
            .unwrap_or_else(|e| panic!("worker {index}: cannot produce dead letters: {e}"));
            let models = read_models(&parsed.events);
            let decisions = decide(parsed.positioned, trees, worker_tree_stats.clone());
            decisions.clone().probe_with(&probe);
            produce_decisions(
                decisions.clone(),
                &config.kafka.brokers,
                &config.kafka.decisions_topic,
                committed,
                worker_decision_stats.clone(),
            )
            .unwrap_or_else(|e| panic!("worker {index}: cannot produce decisions: {e}"));
            let decisions_writer = store_decisions(
                decisions,
                target.clone(),
                flush_interval,
                index,
                worker_decision_stats.clone(),
            );
            models.sold_products_daily.inner.clone().probe_with(&probe);
            models.shopper_purchases.inner.clone().probe_with(&probe);
            models.product_affinities.inner.clone().probe_with(&probe);
            models.baskets.inner.clone().probe_with(&probe);
            models.order_lines.inner.clone().probe_with(&probe);
            let writer = write_read_models(
                &models,
                target.clone(),
                committed,
                flush_interval,
                index,
                worker_sink_stats.clone(),
            );
            (stats, writer, decisions_writer)
        });
        let (stats, writer, decisions_writer) = stats;
        loop {
            worker.step_or_park(Some(Duration::from_millis(10)));
            if probe.done() {
                break;
            }
            if shutdown.load(Ordering::Relaxed) {
                break;
            }
        }
        if shutdown.load(Ordering::Relaxed) {
            // Stop now: what is not committed is rewritten by the next run (the producers
            // deliver what they accepted as the operators are dropped).
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
        }
        // Keep stepping until the sink operator has handed over its last batch, then let the
        // writer finish it.
        if let Some(writer) = writer {
            while !writer.is_finished() && !worker_sink_stats.finished.load(Ordering::Relaxed) {
                worker.step_or_park(Some(Duration::from_millis(10)));
                if shutdown.load(Ordering::Relaxed) {
                    break;
                }
            }
            // On a signal the writer may be mid-batch: leave it; what it had not committed is
            // rewritten by the next run (versions above the committed time are discarded).
            if writer.is_finished() || worker_sink_stats.finished.load(Ordering::Relaxed) {
                let _ = writer.join();
            }
        }
        if let Some(w) = decisions_writer {
            if !shutdown.load(Ordering::Relaxed) {
                let _ = w.join();
            }
        }
        stats
    })
    .map_err(|e| anyhow::anyhow!("starting the timely cluster: {e}"))?;

    let mut messages = 0;
    for result in guards.join() {
        let stats = result.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))?;
        messages += stats.messages.load(Ordering::Relaxed);
    }
    eprintln!(
        "basketflow run: {messages} messages in {:.1} s, rejected {:?}; clickhouse: {} batches, {} rows, committed through {}; decisions: {} produced, {} suppressed (replayed), {} stored; bad trees {}",
        started.elapsed().as_secs_f64(),
        rejections.lock().expect("rejection counts lock"),
        sink_stats.batches.load(Ordering::Relaxed),
        sink_stats.rows.load(Ordering::Relaxed),
        sink_stats.committed.load(Ordering::Relaxed),
        decision_stats.produced.load(Ordering::Relaxed),
        decision_stats.suppressed.load(Ordering::Relaxed),
        decision_stats.stored.load(Ordering::Relaxed),
        tree_stats.bad_trees.load(Ordering::Relaxed),
    );
    Ok(())
}
