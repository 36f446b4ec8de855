//! `basketflow run`: the graph on a timely cluster.
//!
//! One process of `-n` processes, each with `-w` worker threads; process `-p` of the cluster
//! whose addresses are the lines of the host file `-h` (one `host:port` per process). Each
//! worker reads its share of `shopper-events`, parses, and feeds the read models; refused
//! messages go to the dead-letter topic; the read models go to ClickHouse.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use timely::communication::Config as Communication;
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::ProbeHandle;
use timely::WorkerConfig;

use basketflow_dataflows::graph::{self, Sources};
use basketflow_ingest::kafka_source::{kafka_source, positions, Gate, SourceConfig};
use basketflow_kafka::{ensure_topic, read_erased, set_topic_configs};
use basketflow_kafka::{read_progress, Positions};
use basketflow_operators::checkpoint::{Checkpointing, Part, Policy, Restore};
use basketflow_sinks::checkpoints::{
    checkpoint_positions, load as load_checkpoint, manifests_topic, write_checkpoints,
    CheckpointSettings, WriterConfig, FORMAT as CHECKPOINT_FORMAT, POSITIONS,
};
use basketflow_sinks::clickhouse::{committed, prepare, write_read_models, PrivateOutputs};
use basketflow_sinks::dead_letters::{count_dead_letters, RejectionCounts};
use basketflow_sinks::kafka_outputs::{kafka_outputs, prepare_outputs, KafkaOutputs};

use crate::config::Config;
use basketflow_metrics::{self as metrics, Registry};

/// Options of `basketflow run`.
#[derive(Args, Debug, Clone)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// The configuration file (default: `basketflow.toml` if it exists, else the defaults;
    /// `BASKETFLOW_<SECTION>_<KEY>` variables apply either way).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Worker threads in this process (default: `cluster.workers`).
    #[arg(short = 'w', long)]
    pub workers: Option<usize>,
    /// Processes in the cluster (default: `cluster.processes`).
    #[arg(short = 'n', long)]
    pub processes: Option<usize>,
    /// Index of this process, 0-based (default: `cluster.process`).
    #[arg(short = 'p', long)]
    pub process: Option<usize>,
    /// Host file: one `host:port` per process, in process order (default: `cluster.hostfile`).
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

/// The cluster shape: flags first, then `[cluster]` of the configuration.
struct Shape {
    workers: usize,
    processes: usize,
    process: usize,
    hostfile: Option<PathBuf>,
}

impl Shape {
    fn new(args: &RunArgs, config: &Config) -> Shape {
        Shape {
            workers: args.workers.unwrap_or(config.cluster.workers),
            processes: args.processes.unwrap_or(config.cluster.processes),
            process: args.process.unwrap_or(config.cluster.process),
            hostfile: args
                .hostfile
                .clone()
                .or_else(|| config.cluster.hostfile.clone()),
        }
    }
}

/// The timely communication configuration for this shape.
fn communication(args: &Shape) -> Result<Communication> {
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
///
/// Shutdown on a signal drains: the sources stop taking messages but keep their positions, the
/// sinks commit every time before them (ClickHouse batch and Kafka transaction), then the
/// process exits; after `DRAIN_LIMIT` it exits anyway (what is not committed is redone by the
/// next run, see the design note on restarts).
pub fn run(args: RunArgs) -> Result<()> {
    let default = PathBuf::from("basketflow.toml");
    let path = args
        .config
        .as_deref()
        .or_else(|| default.exists().then_some(default.as_path()));
    let config = Config::resolve_file(path)?.config;
    let binary = hash_binary();
    let shape = Shape::new(&args, &config);
    let process = shape.process;
    let communication = communication(&shape)?;
    // Per-process keys (this process's index, its metrics port, its logs) may differ.
    let mut shared = config.clone();
    shared.cluster.process = 0;
    shared.cluster.hostfile = None;
    shared.metrics.listen = String::new();
    shared.log = Default::default();
    let config_digest = digest(
        toml::to_string(&shared)
            .context("serializing the configuration")?
            .as_bytes(),
    );
    let shutdown = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, shutdown.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, shutdown.clone())?;
    fail_loudly_on_panic();
    metrics::logging::init(
        config.log.format(),
        config.log.level().unwrap_or(log::LevelFilter::Info),
    );
    #[cfg(target_os = "linux")]
    log::debug!(
        "transparent huge pages off: {:?} (see main.rs; MIMALLOC_ALLOW_THP keeps them)",
        rustix::thread::transparent_huge_pages_are_disabled()
    );
    // An operator's mistake (a topic missing, ClickHouse down) ends here, before the cluster
    // forms, in one line and exit status 3, not in a worker's panic.
    crate::preflight::check(&config);
    let registry = Arc::new(Registry {
        caught_up_lag_ms: config.metrics.caught_up_lag_ms,
        ..Registry::default()
    });
    if let Some(listen) = config.metrics.listen() {
        let addr = metrics::serve(listen, registry.clone())
            .with_context(|| format!("serving metrics on {listen} (metrics.listen)"))?;
        log::info!(address:% = addr; "metrics on http://{addr}/metrics, health on http://{addr}/health");
    }
    let rejections: RejectionCounts = registry.rejections.clone();
    let started = Instant::now();
    let exit_when_caught_up = args.exit_when_caught_up;

    let outputs = KafkaOutputs {
        brokers: config.kafka.brokers.clone(),
        decisions_topic: config.kafka.decisions_topic.clone(),
        rejected_topic: config.kafka.rejected_topic.clone(),
        progress_topic: config.kafka.progress_topic(),
        transactional_id: config.kafka.transactional_id(),
        tick_ms: config.graph.tick_ms,
        dedup_horizon_ms: config.graph.dedup_horizon_ms,
        settlement_ms: config.graph.settlement_ms,
        delivery: config.kafka.delivery,
        transactions_in_flight: config.kafka.transactions_in_flight,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(ensure_topic(
            &outputs.brokers,
            &outputs.progress_topic,
            1,
            // Only the last record matters.
            &[("cleanup.policy", "compact")],
        ))
        .with_context(|| format!("creating the progress topic {}", outputs.progress_topic))?;
    // Erasures must outlive every replay of the events they erase: keep them forever (they
    // hold no more than the ids they erase). The graph's times are broker times. Set on an
    // existing topic too (one auto-created with the broker's defaults would expire them).
    let privacy_configs = [
        ("retention.ms", "-1"),
        ("message.timestamp.type", "LogAppendTime"),
    ];
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            ensure_topic(
                &config.kafka.brokers,
                &config.kafka.privacy_topic,
                1,
                &privacy_configs,
            )
            .await?;
            set_topic_configs(
                &config.kafka.brokers,
                &config.kafka.privacy_topic,
                &privacy_configs,
            )
            .await
        })
        .with_context(|| format!("preparing the privacy topic {}", config.kafka.privacy_topic))?;

    let timely_config = timely::Config {
        communication,
        worker: WorkerConfig::default(),
    };
    let worker_rejections = rejections.clone();
    let target = crate::preflight::clickhouse_target(&config);
    let flush_interval = Duration::from_millis(config.graph.flush_interval_ms);
    // A Kafka transaction with only a progress record (no decision, no dead letter) keeps the
    // producer busy, and the next decision waits for it: these come at most every
    // IDLE_COMMIT_FLOOR even with faster flushes (the sources' gate allows seconds of lag).
    let idle_commit_interval = flush_interval.max(IDLE_COMMIT_FLOOR);
    let retention = config.privacy.retention();
    let max_lead_ms = config.graph.max_sink_lag_ms;
    let sink_stats = registry.sink.clone();
    let worker_sink_stats = sink_stats.clone();
    let tree_stats = registry.trees.clone();
    let worker_tree_stats = tree_stats.clone();
    let output_stats = registry.outputs.clone();
    let worker_output_stats = output_stats.clone();
    let worker_registry = registry.clone();
    let binary = Arc::new(Mutex::new(Some(binary)));
    let binary_digest = Arc::new(AtomicU64::new(0));
    // The workers hold the only senders of parts: the writer ends once they are gone.
    let loading = Instant::now();
    let Checkpoints {
        restore,
        positions: restored_positions,
        parts,
        writer: checkpoint_writer,
    } = start_checkpoints(&config, &shape, &target, &outputs, &registry)?;
    // From here on: loading the checkpoint is not forming the cluster, and each peer loads
    // the same checkpoint, which may take it as long again.
    let formed = Arc::new(AtomicBool::new(false));
    watch_formation(
        formed.clone(),
        Duration::from_millis(config.graph.startup_timeout_ms) + loading.elapsed(),
    );
    let checkpoint_interval_ms = config.graph.checkpoint_interval_ms;
    // Erasures applied in this process: every incremental operator's next part is whole.
    let erasures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let guards = timely::execute(timely_config, move |worker| {
        formed.store(true, Ordering::Relaxed);
        let index = worker.index();
        let peers = worker.peers();
        let binary = {
            // The first worker of the process joins the hashing thread; the others wait on
            // the lock and read its result.
            let mut pending = binary.lock().expect("binary hash");
            if let Some(h) = pending.take() {
                binary_digest.store(h.join().unwrap_or(0), Ordering::Relaxed);
            }
            binary_digest.load(Ordering::Relaxed)
        };
        let mine = Fingerprint {
            config: config_digest,
            binary,
            checkpoint: restore.as_ref().map_or(0, |r| r.at),
        };
        check_agreement(worker, process, mine);
        // Where the previous run's durable outputs stopped: ClickHouse's committed batch and
        // the Kafka outputs' committed transaction. Worker 0 also readies both (schema,
        // discarding uncommitted versions, fencing the old producer).
        let (read_models_committed, kafka_prepared, kafka_committed) = if index == 0 {
            let t0 = Instant::now();
            // Preflight found ClickHouse answering; it may go away again before this (a
            // restart of the server): retried, as the writer retries its batches.
            let c = retrying("preparing ClickHouse", || prepare(&target)).unwrap_or_else(|e| {
                panic!("worker 0: cannot prepare ClickHouse at {}: {e}", target.url)
            });
            let t1 = Instant::now();
            let (producer, k) = prepare_outputs(&outputs).unwrap_or_else(|e| {
                panic!("worker 0: cannot start the transactional producer: {e}")
            });
            log::info!(clickhouse_ms = (t1 - t0).as_millis() as u64, producer_ms = t1.elapsed().as_millis() as u64; "outputs ready");
            (c, Some((producer, k.clone())), k)
        } else {
            // Worker 0 may still be creating the schema: wait for its progress table.
            let c = retrying("reading the committed time from ClickHouse", || {
                committed(&target)
            })
            .unwrap_or_else(|e| {
                panic!("worker {index}: cannot read the committed time from ClickHouse: {e}")
            });
            let k = read_progress(&outputs.brokers, &outputs.progress_topic).unwrap_or_else(|e| {
                panic!("worker {index}: cannot read {}: {e}", outputs.progress_topic)
            });
            (c, None, k)
        };
        // Shoppers erased before this run: the ClickHouse writer (worker 0) never writes them.
        let mut erased_at_start = if index == 0 {
            read_erased(&config.kafka.brokers, &config.kafka.privacy_topic).unwrap_or_else(|e| {
                panic!(
                    "worker 0: cannot read the erasures in {}: {e}",
                    config.kafka.privacy_topic
                )
            })
        } else {
            Default::default()
        };
        if index == 0 {
            worker_registry.has_worker_zero.store(true, Ordering::Relaxed);
            log::info!(clickhouse_committed = read_models_committed.0, kafka_committed = kafka_committed.0, workers = peers; "cluster formed; resuming after the committed times (the replay before them rebuilds state, writes nothing)");
        }
        let mut source_cfg = SourceConfig::new(&config.kafka.brokers, &config.kafka.events_topic);
        source_cfg.tick_ms = config.graph.tick_ms;
        source_cfg.idle_margin_ms = config.graph.idle_margin_ms;
        source_cfg.fetch_min_bytes = config.kafka.fetch_min_bytes;
        source_cfg.max_partition_skew_ms = config.graph.max_partition_skew_ms;
        source_cfg.stop_at_start_watermarks = exit_when_caught_up;
        let mut trees_cfg = source_cfg.clone();
        trees_cfg.topic = config.kafka.trees_topic.clone();
        // The trees and privacy topics are small, and a compacted log's old messages are sparse
        // in time: aligning their partitions would pause and resume for little gain.
        trees_cfg.max_partition_skew_ms = 0;
        let mut privacy_cfg = source_cfg.clone();
        privacy_cfg.topic = config.kafka.privacy_topic.clone();
        privacy_cfg.max_partition_skew_ms = 0;
        // Reclock the replay by what is durable (see ingest::kafka_source): each output's
        // binding applies to the topics it depends on (ClickHouse: events; Kafka outputs:
        // events and trees). A binding that does not track a topic says nothing about it.
        source_cfg.bind(read_models_committed.0, &read_models_committed.1);
        source_cfg.bind(kafka_committed.0, &kafka_committed.1);
        trees_cfg.bind(kafka_committed.0, &kafka_committed.1);
        // Erasures change both outputs: both bindings apply.
        privacy_cfg.bind(read_models_committed.0, &read_models_committed.1);
        privacy_cfg.bind(kafka_committed.0, &kafka_committed.1);
        // From a checkpoint: each source continues where it had read at the checkpoint's
        // time, and what it reads now comes after that time.
        if let Some(r) = &restore {
            for cfg in [&mut source_cfg, &mut trees_cfg, &mut privacy_cfg] {
                cfg.start_offsets = restored_positions
                    .get(&cfg.topic)
                    .cloned()
                    .unwrap_or_default();
                cfg.bind(r.at, &restored_positions);
            }
        }
        let checkpoints = parts.as_ref().map(|parts| Checkpointing {
            policy: Policy {
                interval_ms: checkpoint_interval_ms,
                // A replay of history writes no checkpoint per interval: only times close
                // to the wall clock are written.
                skip_older_than_ms: Some(checkpoint_interval_ms.max(10_000)),
                full_every: config.graph.checkpoint_full_every,
            },
            parts: parts.clone(),
            restore: restore.clone(),
            erasures: erasures.clone(),
        });
        let probe = ProbeHandle::new();
        let durable = ProbeHandle::new();
        let gate = Gate {
            durable: durable.clone(),
            max_lead_ms,
            max_in_flight: config.graph.max_in_flight_messages,
            stop: shutdown.clone(),
        };
        metrics::track_arrangements(
            worker,
            worker_registry.clone(),
            config.metrics.arrangement_names,
        );
        let (stats, writer, outputs_writer) =
            worker.dataflow::<u64, _, _>(|scope| {
                let (messages, stats) =
                    kafka_source(scope, source_cfg, index, peers, Some(gate.clone()))
                        .unwrap_or_else(|e| {
                            panic!(
                                "worker {index}: cannot read {}: {e}",
                                config.kafka.events_topic
                            )
                        });
                let (requests, privacy_source_stats) =
                    kafka_source(scope, privacy_cfg, index, peers, Some(gate.clone()))
                        .unwrap_or_else(|e| {
                            panic!(
                                "worker {index}: cannot read {}: {e}",
                                config.kafka.privacy_topic
                            )
                        });
                let (trees, tree_source_stats) = kafka_source(scope, trees_cfg, index, peers, Some(gate))
                    .unwrap_or_else(|e| {
                        panic!(
                            "worker {index}: cannot read {}: {e}",
                            config.kafka.trees_topic
                        )
                    });
                {
                    let mut sources = worker_registry.sources.lock().expect("sources");
                    sources.push((config.kafka.events_topic.clone(), index, stats.clone()));
                    sources.push((config.kafka.trees_topic.clone(), index, tree_source_stats));
                    sources.push((config.kafka.privacy_topic.clone(), index, privacy_source_stats));
                }
                // Each source's stream has one reader (`positions`), which moves the messages
                // on; the probes watch the (small) position streams, whose frontiers are the
                // sources'.
                let (messages, event_positions) = positions(messages, &config.kafka.events_topic);
                let (trees, tree_positions) = positions(trees, &config.kafka.trees_topic);
                let (requests, privacy_positions) =
                    positions(requests, &config.kafka.privacy_topic);
                event_positions.clone().probe_with(&probe);
                tree_positions.clone().probe_with(&probe);
                privacy_positions.clone().probe_with(&probe);
                let graph = graph::build(
                    Sources {
                        events: messages,
                        trees,
                        privacy: requests,
                    },
                    graph::Settings {
                        privacy_topic: config.kafka.privacy_topic.clone(),
                        retention: retention.clone(),
                        dedup_horizon_ms: config.graph.dedup_horizon_ms,
                        settlement_ms: config.graph.settlement_ms,
                        tree_stats: worker_tree_stats.clone(),
                        checkpoints: checkpoints.clone(),
                    },
                );
                checkpoint_positions(
                    event_positions
                        .clone()
                        .concat(tree_positions.clone())
                        .concat(privacy_positions.clone()),
                    checkpoints.as_ref(),
                );
                let dead_letters = count_dead_letters(graph.dead_letters, worker_rejections.clone());
                let (kafka_durable, outputs_writer) = kafka_outputs(
                    graph.decisions.clone(),
                    dead_letters,
                    event_positions
                        .clone()
                        .concat(tree_positions)
                        .concat(privacy_positions.clone()),
                    outputs.clone(),
                    kafka_prepared,
                    idle_commit_interval,
                    index,
                    worker_output_stats.clone(),
                );
                kafka_durable.probe_with(&durable);
                let (clickhouse_durable, writer) = write_read_models(
                    &graph.read_models,
                    PrivateOutputs {
                        decisions: graph.decisions,
                        erasures: graph.erasures,
                        late_inputs: graph.late_inputs,
                        retention: retention.clone(),
                        erased_at_start: std::mem::take(&mut erased_at_start),
                    },
                    event_positions.concat(privacy_positions),
                    target.clone(),
                    read_models_committed,
                    flush_interval,
                    index,
                    worker_sink_stats.clone(),
                );
                clickhouse_durable.probe_with(&durable);
                (stats, writer, outputs_writer)
            });
        // Run until every output is durable through the end of the input (caught up), or a
        // signal: then drain until the durable frontier reaches the sources' (stopped)
        // frontier, within the limit.
        let mut drain_deadline: Option<Instant> = None;
        worker_registry.running.store(true, Ordering::Relaxed);
        let mut catching_up = CatchUp::new(index);
        let mut last_partition_check = Instant::now();
        loop {
            worker.step_or_park(Some(Duration::from_millis(10)));
            if last_partition_check.elapsed() >= Duration::from_secs(1) {
                last_partition_check = Instant::now();
                refuse_added_partitions(&worker_registry, index);
            }
            let frontier = probe.with_frontier(|f| f.first().copied().unwrap_or(u64::MAX));
            // The frontier is global: every worker sees the same; any may report it.
            worker_registry.frontier_ms.store(frontier, Ordering::Relaxed);
            // For the checkpoint writer: it keeps what a start would use now.
            let d = durable.with_frontier(|f| f.first().copied().unwrap_or(u64::MAX));
            (worker_registry.checkpoints.writer)
                .durable_frontier
                .fetch_max(d, Ordering::Relaxed);
            if index == 0 {
                catching_up.observe(frontier, &stats);
            }
            if durable.done() {
                if index == 0 {
                    // Everything read is processed and durable. Not a measure of the state:
                    // timely drops a finished operator (its state with it), so by now some
                    // or all of the operators' state may be gone. The live figure is the
                    // resident memory when a checkpoint covering the history is written (the
                    // bench's restart phase).
                    log::info!(
                        resident_at_end_mib = metrics::resident_bytes() >> 20;
                        "caught up and durable"
                    );
                }
                break;
            }
            if shutdown.load(Ordering::Relaxed) {
                let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_LIMIT);
                let drained = probe.with_frontier(|sources| {
                    durable.with_frontier(|d| sources.iter().all(|s| !d.less_than(s)))
                });
                if drained || Instant::now() > deadline {
                    if !drained {
                        log::warn!(worker = index; "drain not finished in {DRAIN_LIMIT:?}; exiting anyway (the next run redoes it)");
                    }
                    break;
                }
            }
        }
        for id in worker.installed_dataflows() {
            worker.drop_dataflow(id);
        }
        // The writers finish what they were handed (their channels closed with the dataflow).
        let finish_by = Instant::now() + Duration::from_secs(5);
        for handle in [writer, outputs_writer].into_iter().flatten() {
            while !handle.is_finished() && Instant::now() < finish_by {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
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
    // Every worker (and its sender of parts) is gone: the writer finishes what it has.
    if let Some(writer) = checkpoint_writer {
        let _ = writer.join();
    }
    let rejected = rejections.lock().expect("rejection counts lock").clone();
    // Messages whose broker time was below their partition's bound when read (fetched after
    // the idle margin): they got the bound as their time (see `kafka_source`).
    let clamped: u64 = (registry.sources.lock().expect("sources").iter())
        .map(|(_, _, s)| s.clamped.load(Ordering::Relaxed))
        .sum();
    log::info!(
        messages,
        clamped,
        seconds:% = format!("{:.1}", started.elapsed().as_secs_f64()),
        rejected:? = rejected,
        clickhouse_batches = sink_stats.batches.load(Ordering::Relaxed),
        clickhouse_rows = sink_stats.rows.load(Ordering::Relaxed),
        clickhouse_committed = sink_stats.committed.load(Ordering::Relaxed),
        kafka_transactions = output_stats.transactions.load(Ordering::Relaxed),
        decisions = output_stats.decisions.load(Ordering::Relaxed),
        dead_letters = output_stats.dead_letters.load(Ordering::Relaxed),
        suppressed = output_stats.suppressed.load(Ordering::Relaxed),
        kafka_committed = output_stats.committed.load(Ordering::Relaxed),
        decisions_stored = sink_stats.decisions.load(Ordering::Relaxed),
        erasures_applied = sink_stats.erasures.load(Ordering::Relaxed),
        bad_trees = tree_stats.bad_trees.load(Ordering::Relaxed),
        peak_resident_mib = metrics::peak_resident_bytes() >> 20;
        "stopped"
    );
    let arrangements = registry.arrangement_records();
    if !arrangements.is_empty() {
        // The peak records per arrangement (dropped with the dataflow by now).
        let peaks: Vec<String> = arrangements
            .iter()
            .map(|(name, r)| format!("{name}={}", r.peak))
            .collect();
        log::info!(peaks:% = peaks.join(";"); "arrangement peak records");
    }
    Ok(())
}

/// What [`start_checkpoints`] sets up.
struct Checkpoints {
    /// The checkpoint this run starts from.
    restore: Option<Arc<Restore>>,
    /// Where the sources continue after it.
    positions: Positions,
    /// Where the workers send their parts (`None`: no checkpoints).
    parts: Option<std::sync::mpsc::Sender<Part>>,
    /// The writer thread.
    writer: Option<std::thread::JoinHandle<()>>,
}

/// Prepares checkpoints (`graph.checkpoint_interval_ms` > 0): the topic, the latest usable
/// checkpoint (at or before both outputs' committed times; see `basketflow_sinks::checkpoints`),
/// and this process's writer thread.
fn start_checkpoints(
    config: &Config,
    shape: &Shape,
    target: &basketflow_sinks::clickhouse::Target,
    outputs: &KafkaOutputs,
    registry: &Arc<Registry>,
) -> Result<Checkpoints> {
    let interval = config.graph.checkpoint_interval_ms;
    if interval == 0 {
        log::info!(
            "checkpoints off (graph.checkpoint_interval_ms = 0): a restart replays the whole log"
        );
        return Ok(Checkpoints {
            restore: None,
            positions: Positions::new(),
            parts: None,
            writer: None,
        });
    }
    let topic = config.kafka.checkpoints_topic();
    let topic_configs = [
        ("cleanup.policy", "compact"),
        // Compaction removes tombstoned checkpoints soon (erased shoppers' state included):
        // a segment rolls within 10 min and is compacted within 10 min after that.
        ("segment.ms", "600000"),
        ("min.cleanable.dirty.ratio", "0.1"),
        ("max.compaction.lag.ms", "600000"),
        ("delete.retention.ms", "600000"),
        ("max.message.bytes", "1048576"),
    ];
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            for t in [topic.clone(), manifests_topic(&topic)] {
                ensure_topic(&config.kafka.brokers, &t, 1, &topic_configs).await?;
                set_topic_configs(&config.kafka.brokers, &t, &topic_configs).await?;
            }
            Ok::<_, anyhow::Error>(())
        })
        .with_context(|| format!("preparing the checkpoints topics {topic}(-manifests)"))?;
    // A checkpoint is usable at or before what both outputs committed.
    let clickhouse = match committed(target) {
        Ok(c) => c.0,
        Err(e) => {
            log::info!("checkpoints: no committed time in ClickHouse yet ({e})");
            0
        }
    };
    let kafka = read_progress(&outputs.brokers, &outputs.progress_topic)
        .with_context(|| format!("reading {}", outputs.progress_topic))?
        .0;
    let settings = CheckpointSettings {
        format: CHECKPOINT_FORMAT,
        tick_ms: config.graph.tick_ms,
        dedup_horizon_ms: config.graph.dedup_horizon_ms,
        settlement_ms: config.graph.settlement_ms,
    };
    let mut operators: Vec<&'static str> = graph::CHECKPOINTED.to_vec();
    operators.push(POSITIONS);
    let started = Instant::now();
    let loaded = load_checkpoint(
        &config.kafka.brokers,
        &topic,
        &settings,
        &operators,
        clickhouse.min(kafka),
    )
    .with_context(|| format!("reading the checkpoints topic {topic}"))?;
    match &loaded.restore {
        Some(r) => {
            let bytes: usize = r.parts.values().flatten().map(Vec::len).sum();
            log::info!(at = r.at, written_by_workers = r.peers, bytes, read_bytes = loaded.read_bytes, parts_of_changes = loaded.parts_of_changes, load_ms = started.elapsed().as_millis() as u64, positions:? = loaded.positions; "starting from the checkpoint; the sources replay only what came after it");
        }
        None => {
            log::info!(clickhouse_committed = clickhouse, kafka_committed = kafka; "no usable checkpoint: replaying the whole log")
        }
    }
    registry.checkpoints.restored_at.store(
        loaded.restore.as_ref().map_or(0, |r| r.at),
        Ordering::Relaxed,
    );
    let (parts, received) = std::sync::mpsc::channel();
    let first = shape.process * shape.workers;
    let writer_config = WriterConfig {
        brokers: config.kafka.brokers.clone(),
        topic,
        settings,
        operators,
        workers: (first..first + shape.workers).collect(),
        peers: shape.processes.max(1) * shape.workers,
        existing: loaded.existing,
    };
    let stats = registry.checkpoints.writer.clone();
    let writer = std::thread::Builder::new()
        .name("checkpoints".into())
        .spawn(move || write_checkpoints(writer_config, received, stats))?;
    Ok(Checkpoints {
        restore: loaded.restore.map(Arc::new),
        positions: loaded.positions,
        parts: Some(parts),
        writer: Some(writer),
    })
}

/// Exits the process (status 2) if the cluster has not formed within `limit`: a peer that died
/// during start-up would otherwise leave this process waiting for it forever, holding its port
/// against the restarted cluster.
fn watch_formation(formed: Arc<AtomicBool>, limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        if !formed.load(Ordering::Relaxed) {
            log::error!("the cluster did not form within {limit:?} (a peer is down or unreachable); exiting so that the cluster can be restarted");
            std::process::exit(2);
        }
    });
}

/// Progress of the catch-up after a start (the replay of the topics): one log line every 5 s
/// with messages read and the frontier's lag, and one when the frontier first comes within a
/// second of the wall clock.
struct CatchUp {
    index: usize,
    started: Instant,
    last: Instant,
    done: bool,
}

impl CatchUp {
    fn new(index: usize) -> CatchUp {
        CatchUp {
            index,
            started: Instant::now(),
            last: Instant::now(),
            done: false,
        }
    }

    fn observe(&mut self, frontier: u64, stats: &basketflow_ingest::kafka_source::SourceStats) {
        if self.done || frontier == 0 {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let lag_ms = now.saturating_sub(frontier);
        let read = stats.messages.load(Ordering::Relaxed);
        if lag_ms <= 1_000 {
            self.done = true;
            log::info!(worker = self.index, seconds:% = format!("{:.1}", self.started.elapsed().as_secs_f64()), messages_read_by_worker = read; "caught up");
        } else if self.last.elapsed() >= Duration::from_secs(5) {
            self.last = Instant::now();
            log::info!(worker = self.index, lag_ms, messages_read_by_worker = read, resident_mib = metrics::resident_bytes() >> 20; "catching up");
        }
    }
}

/// Stops the process (status 3, one line) when partitions were added to a topic worker
/// `index` reads ([`Registry::added_partitions`]): a run never ignores some.
fn refuse_added_partitions(registry: &Registry, index: usize) {
    if let Some((topic, was, now)) = registry.added_partitions(index) {
        crate::preflight::refuse(format_args!(
            "topic {topic} now has {now} partitions but this run reads the {was} it had at start: \
             restart the cluster to read the new ones (from their beginning, each message once)"
        ));
    }
}

/// How long start-up steps retry a server that stopped answering after preflight.
const START_RETRY_LIMIT: Duration = Duration::from_secs(300);

/// `attempt` until it succeeds or [`START_RETRY_LIMIT`] has passed (its last error then), with
/// a backoff from 100 ms to 5 s and a warning per failure after the first 5 s.
fn retrying<T, E: std::fmt::Display>(
    what: &str,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let start = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= START_RETRY_LIMIT => return Err(e),
            Err(e) => {
                // The first seconds are the ordinary start (worker 0 creating the schema).
                if start.elapsed() >= Duration::from_secs(5) {
                    log::warn!(backoff:? = backoff; "{what} failed, retrying: {e}");
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// How long a signalled process drains before it exits anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(8);

/// The shortest interval between two Kafka transactions that carry only a progress record
/// (see `idle_commit_interval` in [`run`]).
const IDLE_COMMIT_FLOOR: Duration = Duration::from_millis(250);

/// A panic on any thread (a worker, a writer, timely's network threads when a peer dies) ends
/// the whole process with status 101 after printing it: the cluster then fails loudly and is
/// restarted as a whole, instead of limping on with a dead worker (timely's failure model).
///
/// One exception: once this process has decided to refuse to start (see [`check_agreement`]),
/// a peer that refuses first and exits closes its connections, and the network thread's panic
/// would hide the refusal under a backtrace and status 101; the hook then prints the refusal
/// and exits with its status instead.
fn fail_loudly_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(refusal) = PENDING_REFUSAL.get() {
            crate::preflight::refuse(refusal);
        }
        default(info);
        log::error!("a thread panicked; stopping this process (restart the cluster; it resumes from durable progress)");
        std::process::exit(101);
    }));
}

/// What every process of a cluster must share: a digest of the effective configuration and one
/// of the binary (the whole executable file, hashed on a thread while the process starts).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
struct Fingerprint {
    config: u64,
    binary: u64,
    /// The time of the checkpoint the process starts from (0: none).
    checkpoint: u64,
}

fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Starts hashing this process's executable; the handle yields the digest (0 if it cannot be
/// read).
///
/// The file is read in 1 MiB pieces into foldhash with a fixed seed: hashing the whole file
/// with SipHash after reading it into one buffer cost ~0.2 s of CPU and 150 MiB of fresh
/// pages at every start. The digest is only compared between processes of one run, which
/// share a binary (a different binary may give a different digest, which is the point), so
/// foldhash's outputs changing between its versions does not matter.
fn hash_binary() -> std::thread::JoinHandle<u64> {
    std::thread::spawn(|| {
        use std::hash::{BuildHasher, Hasher};
        use std::io::Read;
        let Ok(mut file) = std::env::current_exe().and_then(std::fs::File::open) else {
            return 0;
        };
        let mut h = foldhash::fast::FixedState::with_seed(0x6261_736b_6574).build_hasher();
        let mut piece = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut piece) {
                Ok(0) => return h.finish(),
                Ok(n) => h.write(&piece[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return 0,
            }
        }
    })
}

/// Exchanges every worker's fingerprint and refuses to start (an operator error), naming the
/// processes that differ, unless all agree: processes with different configurations would read
/// different topics or write different databases, and different binaries exchange data bincode
/// cannot decode.
fn check_agreement(worker: &mut timely::worker::Worker, process: usize, mine: Fingerprint) {
    use timely::dataflow::operators::core::capture::Extract;
    use timely::dataflow::operators::core::{Capture, ToStream};
    use timely::dataflow::operators::vec::Broadcast;
    let index = worker.index();
    let (probe, captured) = worker.dataflow::<u64, _, _>(|scope| {
        let all = vec![(process, index, mine)]
            .to_stream(scope)
            .container::<Vec<_>>()
            .broadcast();
        let probe = ProbeHandle::new();
        let all = all.probe_with(&probe);
        (probe, all.capture())
    });
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
    let all: Vec<(usize, usize, Fingerprint)> = captured
        .extract()
        .into_iter()
        .flat_map(|(_, data)| data)
        .collect();
    let differing: Vec<String> = all
        .iter()
        .filter(|(_, _, f)| *f != mine)
        .map(|(p, _, f)| {
            if f.config == mine.config && f.binary == mine.binary {
                return format!(
                    "process {p} starts from the checkpoint at {} and this one from {} (a checkpoint was written while the processes started: start them again)",
                    f.checkpoint, mine.checkpoint
                );
            }
            let what = match (f.config != mine.config, f.binary != mine.binary) {
                (true, true) => "configuration and binary",
                (true, false) => "configuration",
                _ => "binary",
            };
            format!("process {p} has a different {what}")
        })
        .collect();
    if !differing.is_empty() {
        let mut differing = differing;
        differing.sort();
        differing.dedup();
        let refusal = format!(
            "process {process} refuses to start: {} (every process must run the same binary with the same effective configuration)",
            differing.join(", ")
        );
        // Exiting now could close this process's connections before its own fingerprint has
        // left them, and a peer would die of a reset connection without knowing why. So the
        // refusal is recorded first (a later network panic prints it, see
        // `fail_loudly_on_panic`), and one more round in which every worker takes part
        // means every peer has all fingerprints, and so its own refusal, before anyone exits.
        let refusal = PENDING_REFUSAL.get_or_init(|| refusal);
        barrier(worker);
        crate::preflight::refuse(refusal);
    }
}

/// The refusal this process has decided on, if any (see [`check_agreement`]).
static PENDING_REFUSAL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Returns once every worker of the cluster has reached its own call.
fn barrier(worker: &mut timely::worker::Worker) {
    use timely::dataflow::operators::core::ToStream;
    use timely::dataflow::operators::vec::Broadcast;
    let probe = worker.dataflow::<u64, _, _>(|scope| {
        let probe = ProbeHandle::new();
        let _ = Vec::<()>::new()
            .to_stream(scope)
            .container::<Vec<_>>()
            .broadcast()
            .probe_with(&probe);
        probe
    });
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
}
