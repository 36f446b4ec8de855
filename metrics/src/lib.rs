//! Prometheus metrics and the health endpoint of a `basketflow run` process.
//!
//! The graph's pieces (sources, sinks, Kafka outputs, the tree operator) keep their own
//! counters; this crate gathers them into one [`Registry`] and exposes it.
//!
//! Every process serves, on `metrics.listen` (default `127.0.0.1:9464`):
//!
//! - `GET /metrics`: the Prometheus text exposition of the counters the graph's pieces already
//!   keep (sources, sinks, Kafka outputs, trees, rejections), the graph's frontier lag behind the
//!   wall clock, arrangement sizes (from differential's logging), and resident memory;
//! - `GET /health`: `200` with a JSON body when the process is caught up (its frontier is within
//!   `metrics.caught_up_lag_ms` of the wall clock), `503` with the same body otherwise.
//!
//! The pieces count in plain atomics; at each scrape a prometheus-client [`Collector`] reads
//! them and the client's encoder writes the exposition. axum serves both endpoints on a thread
//! of its own, so they keep answering while the workers are busy. The alerts of the runbook
//! over these metrics are `deploy/prometheus/alerts.yml`.
//!
//! The process's structured log lines are [`logging`]'s.

#![forbid(missing_docs)]

pub mod logging;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeGaugeValue, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};

use basketflow_dataflows::experiences::TreeStats;
use basketflow_ingest::kafka_source::SourceStats;
use basketflow_sinks::checkpoints::CheckpointStats;
use basketflow_sinks::clickhouse::SinkStats;
use basketflow_sinks::dead_letters::RejectionCounts;
use basketflow_sinks::kafka_outputs::OutputStats;

/// Everything a process reports.
#[derive(Default)]
pub struct Registry {
    /// Sources by (topic, worker).
    pub sources: Mutex<Vec<(String, usize, Arc<SourceStats>)>>,
    /// The ClickHouse read-model sink (meaningful on the process of worker 0).
    pub sink: Arc<SinkStats>,
    /// The Kafka outputs (worker 0).
    pub outputs: Arc<OutputStats>,
    /// The tree operator.
    pub trees: Arc<TreeStats>,
    /// Rejections by code.
    pub rejections: RejectionCounts,
    /// Records held in this process's arrangements (differential's batch/merge/drop events).
    pub arranged_records: AtomicI64,
    /// Records waiting in this process's arrangement batchers.
    pub batcher_records: AtomicI64,
    /// Per worker, its arrangements' names and records by operator id (only with
    /// `metrics.arrangement_names`).
    pub arrangements: Mutex<BTreeMap<usize, WorkerArrangements>>,
    /// The graph's input frontier (ms), `u64::MAX` when the input is done; 0 before start.
    pub frontier_ms: AtomicU64,
    /// Set once the cluster has formed and the dataflow is built.
    pub running: AtomicBool,
    /// Whether this process holds worker 0 (the writers).
    pub has_worker_zero: AtomicBool,
    /// Frontier lag under which the process counts as caught up.
    pub caught_up_lag_ms: u64,
    /// Checkpoints: the one this run started from, and this process's writer.
    pub checkpoints: CheckpointMetrics,
}

/// What `/metrics` says about checkpoints.
#[derive(Debug, Default)]
pub struct CheckpointMetrics {
    /// The time of the checkpoint this run started from (0: none, a full replay).
    pub restored_at: AtomicU64,
    /// This process's checkpoint writer.
    pub writer: Arc<CheckpointStats>,
}

impl Registry {
    /// `(topic, partitions at start, partitions now)` of the first topic worker `index` reads
    /// that has gained partitions since its source started: the sources list partitions once,
    /// so the run must stop (a restart reads the new ones from their beginning, each message
    /// once: no position was recorded for them).
    pub fn added_partitions(&self, index: usize) -> Option<(String, u64, u64)> {
        let sources = self.sources.lock().expect("sources");
        sources
            .iter()
            .filter(|(_, worker, _)| *worker == index)
            .find_map(|(topic, _, stats)| {
                stats
                    .added_partitions()
                    .map(|(was, now)| (topic.clone(), was, now))
            })
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Resident memory of this process, from `/proc/self/status` (0 where unavailable).
pub fn resident_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

/// Peak resident memory of this process (0 where unavailable).
pub fn peak_resident_bytes() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

impl Registry {
    /// Milliseconds the frontier trails the wall clock (0 once the input is done).
    pub fn frontier_lag_ms(&self) -> Option<u64> {
        match self.frontier_ms.load(Ordering::Relaxed) {
            0 => None,
            u64::MAX => Some(0),
            f => Some(wall_ms().saturating_sub(f)),
        }
    }

    /// True when the process is running and its frontier is within the caught-up lag.
    pub fn caught_up(&self) -> bool {
        self.running.load(Ordering::Relaxed)
            && self
                .frontier_lag_ms()
                .is_some_and(|l| l <= self.caught_up_lag_ms)
    }

    /// The health document.
    pub fn health(&self) -> serde_json::Value {
        let writes = self.has_worker_zero.load(Ordering::Relaxed);
        let committed_lag = |t: u64| (writes && t > 0).then(|| wall_ms().saturating_sub(t));
        serde_json::json!({
            "caught_up": self.caught_up(),
            "running": self.running.load(Ordering::Relaxed),
            "frontier_lag_ms": self.frontier_lag_ms(),
            "caught_up_lag_ms": self.caught_up_lag_ms,
            "writes": self.has_worker_zero.load(Ordering::Relaxed),
            "clickhouse_committed_lag_ms": committed_lag(self.sink.committed.load(Ordering::Relaxed)),
            "kafka_outputs_committed_lag_ms": committed_lag(self.outputs.committed.load(Ordering::Relaxed)),
        })
    }
}

/// Reads the counters that the graph's pieces keep (atomics and small maps updated on the data
/// path) at each scrape and hands their current values to prometheus-client's encoder as
/// constant metrics: the pieces stay free of any metrics library, and nothing is mirrored.
struct Scrape(Arc<Registry>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

/// Label pairs of one sample (none for a metric without labels).
type Labels = Vec<(&'static str, String)>;

/// Writes one metric family: its `HELP` and `TYPE` lines, then one sample per label set.
fn family<M: EncodeMetric + TypedMetric>(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> fmt::Result {
    // The encoder appends `_total` to counters; the names written here are the exposed ones.
    let name = match M::TYPE {
        MetricType::Counter => name.strip_suffix("_total").expect("counters end in _total"),
        _ => name,
    };
    let mut metric = out.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(out: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: &AtomicU64) -> fmt::Result {
    let v = ConstCounter::new(v.load(Ordering::Relaxed));
    family(out, name, help, [(Labels::new(), v)])
}

fn gauge<N: EncodeGaugeValue>(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: N,
) -> fmt::Result {
    family(out, name, help, [(Labels::new(), ConstGauge::new(v))])
}

impl Collector for Scrape {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let r = &*self.0;
        let out = &mut out;

        // Sources, summed per topic; lag per partition.
        let sources = r.sources.lock().expect("sources").clone();
        let mut per_topic: BTreeMap<&str, [u64; 5]> = BTreeMap::new();
        let mut lag: Vec<(Labels, ConstGauge)> = Vec::new();
        for (topic, _, s) in sources.iter() {
            let e = per_topic.entry(topic.as_str()).or_default();
            e[0] += s.messages.load(Ordering::Relaxed);
            e[1] += s.bytes.load(Ordering::Relaxed);
            e[2] += s.errors.load(Ordering::Relaxed);
            e[3] += s.clamped.load(Ordering::Relaxed);
            e[4] += s.gated.load(Ordering::Relaxed);
            for (p, (next, high)) in s.partitions.lock().expect("partitions").iter() {
                if *high < 0 {
                    continue; // no watermark from the broker yet
                }
                let labels = vec![("topic", topic.clone()), ("partition", p.to_string())];
                lag.push((labels, ConstGauge::new((high - next).max(0))));
            }
        }
        let by_topic = |i: usize| {
            per_topic
                .iter()
                .map(move |(t, v)| (vec![("topic", t.to_string())], ConstCounter::new(v[i])))
        };
        family(
            out,
            "basketflow_messages_consumed_total",
            "Messages read from Kafka by this process.",
            by_topic(0),
        )?;
        family(
            out,
            "basketflow_message_bytes_consumed_total",
            "Payload bytes read from Kafka by this process.",
            by_topic(1),
        )?;
        family(
            out,
            "basketflow_consumer_errors_total",
            "Consumer errors (librdkafka retries them).",
            by_topic(2),
        )?;
        family(
            out,
            "basketflow_messages_clamped_total",
            "Messages whose broker time was below their partition's idle bound.",
            by_topic(3),
        )?;
        family(
            out,
            "basketflow_source_held_back_total",
            "Source activations held back because a durable output lagged.",
            by_topic(4),
        )?;
        family(
            out,
            "basketflow_consumer_lag_messages",
            "High watermark minus next offset, per owned partition.",
            lag,
        )?;

        let rejected: Vec<_> = (r.rejections.lock().expect("rejections").iter())
            .map(|(code, n)| (vec![("reason", code.clone())], ConstCounter::new(*n)))
            .collect();
        family(
            out,
            "basketflow_events_rejected_total",
            "Messages refused by the event contract, by reason.",
            rejected,
        )?;
        let lag_s = r.frontier_lag_ms().map_or(f64::NAN, |l| l as f64 / 1000.0);
        gauge(
            out,
            "basketflow_frontier_lag_seconds",
            "How far the graph's input frontier trails the wall clock.",
            lag_s,
        )?;
        gauge(
            out,
            "basketflow_caught_up",
            "1 when the frontier lag is within metrics.caught_up_lag_ms.",
            i64::from(r.caught_up()),
        )?;

        let writes = r.has_worker_zero.load(Ordering::Relaxed);
        let committed_lag = |t: &AtomicU64| match t.load(Ordering::Relaxed) {
            t if t == 0 || !writes => f64::NAN,
            t => wall_ms().saturating_sub(t) as f64 / 1000.0,
        };
        let (sink, outputs) = (&r.sink, &r.outputs);
        counter(
            out,
            "basketflow_clickhouse_batches_total",
            "Read-model batches committed to ClickHouse.",
            &sink.batches,
        )?;
        counter(
            out,
            "basketflow_clickhouse_rows_total",
            "Version rows written to ClickHouse.",
            &sink.rows,
        )?;
        counter(
            out,
            "basketflow_clickhouse_errors_total",
            "Failed ClickHouse write attempts (each retried).",
            &sink.errors,
        )?;
        gauge(
            out,
            "basketflow_clickhouse_committed_lag_seconds",
            "Wall clock minus the committed time of the read models (writer process only).",
            committed_lag(&sink.committed),
        )?;
        counter(
            out,
            "basketflow_kafka_transactions_total",
            "Kafka output transactions committed.",
            &outputs.transactions,
        )?;
        counter(
            out,
            "basketflow_kafka_transaction_retries_total",
            "Kafka output transactions aborted and retried.",
            &outputs.retries,
        )?;
        gauge(
            out,
            "basketflow_kafka_outputs_committed_lag_seconds",
            "Wall clock minus the committed time of the Kafka outputs (writer process only).",
            committed_lag(&outputs.committed),
        )?;
        let kinds: Vec<_> = (outputs.by_kind.lock().expect("by kind").iter())
            .map(|(k, n)| (vec![("kind", k.clone())], ConstCounter::new(*n)))
            .collect();
        family(
            out,
            "basketflow_decisions_total",
            "Decisions committed to the decisions topic, by experience kind.",
            kinds,
        )?;
        counter(
            out,
            "basketflow_dead_letters_total",
            "Dead letters committed to the rejected topic.",
            &outputs.dead_letters,
        )?;
        counter(
            out,
            "basketflow_outputs_suppressed_total",
            "Outputs of replayed times, not produced again.",
            &outputs.suppressed,
        )?;
        counter(
            out,
            "basketflow_decisions_stored_total",
            "Decisions inserted into the ClickHouse decisions log.",
            &sink.decisions,
        )?;
        let late = basketflow_vocab::LateReason::ALL
            .iter()
            .zip(&sink.late_inputs);
        family(
            out,
            "basketflow_late_inputs_total",
            "Inputs read after their order settled (graph.settlement_ms), by reason: they \
             change no figure and are listed in the late_events view (writer process only).",
            late.map(|(reason, n)| {
                let labels = vec![("reason", reason.as_str().to_owned())];
                (labels, ConstCounter::new(n.load(Ordering::Relaxed)))
            }),
        )?;
        counter(
            out,
            "basketflow_privacy_erasures_applied_total",
            "Erasure requests applied to every ClickHouse table (audited in privacy_audit).",
            &sink.erasures,
        )?;
        counter(
            out,
            "basketflow_privacy_retention_deleted_rows_total",
            "Per-shopper ClickHouse rows deleted because they outlived the retention period.",
            &sink.retention_deleted,
        )?;
        let c = &r.checkpoints;
        counter(
            out,
            "basketflow_checkpoints_written_total",
            "Checkpoints this process wrote completely (graph.checkpoint_interval_ms).",
            &c.writer.written,
        )?;
        counter(
            out,
            "basketflow_checkpoints_failed_total",
            "Checkpoints this process failed to write (the next one tries again).",
            &c.writer.failed,
        )?;
        let gauges = [
            (
                "basketflow_checkpoint_restored_at_ms",
                "Logical time of the checkpoint this run started from (0: a full replay).",
                &c.restored_at,
            ),
            (
                "basketflow_checkpoint_latest_at_ms",
                "Logical time of the latest checkpoint this process wrote.",
                &c.writer.latest_at,
            ),
            (
                "basketflow_checkpoint_latest_bytes",
                "Bytes the latest checkpoint this process wrote (incremental operators: often their changes only).",
                &c.writer.latest_bytes,
            ),
            (
                "basketflow_checkpoint_state_bytes",
                "Bytes of the state the latest checkpoint stands for (each part's latest whole part).",
                &c.writer.state_bytes,
            ),
            (
                "basketflow_checkpoint_latest_write_ms",
                "Milliseconds the latest checkpoint took to write and be acknowledged.",
                &c.writer.latest_write_ms,
            ),
        ];
        for (name, help, v) in gauges {
            gauge(out, name, help, v.load(Ordering::Relaxed) as i64)?;
        }
        gauge(
            out,
            "basketflow_tree_horizon_entries",
            "Entries the experience-tree state keeps within the horizons: event ids (graph.dedup_horizon_ms), paid orders and cancellations (graph.settlement_ms).",
            r.trees.horizon_entries.load(Ordering::Relaxed) as i64,
        )?;
        counter(
            out,
            "basketflow_decisions_held_out_total",
            "Decisions made for shoppers in their campaign's holdout group: recorded in \
             ClickHouse (campaign_group = 'held_out'), never published.",
            &r.trees.held_out,
        )?;
        counter(
            out,
            "basketflow_decisions_capped_total",
            "Decisions a frequency cap of the shopper's tree stopped: recorded in ClickHouse \
             (capped = 1), never published.",
            &r.trees.capped,
        )?;
        counter(
            out,
            "basketflow_decisions_over_budget_total",
            "Decisions refused because their campaign's budget at the retailer was spent: \
             recorded in ClickHouse (over_budget = 1), never published.",
            &r.trees.over_budget,
        )?;
        counter(
            out,
            "basketflow_games_won_total",
            "Gamified promotions' wins decided (kind game_won): the paid orders that won their \
             campaign's draw, before the budget check (a game refused over budget takes its \
             win with it).",
            &r.trees.games_won,
        )?;
        counter(
            out,
            "basketflow_bad_trees_total",
            "Experience-tree messages that did not parse or check.",
            &r.trees.bad_trees,
        )?;

        // Buckets as kept (per bucket, the last above every bound): the encoder accumulates.
        let h = &outputs.latency;
        let bounds = (h.bounds_ms.iter().map(|b| *b as f64 / 1000.0)).chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = (bounds.zip(&h.counts))
            .map(|(le, n)| (le, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = h.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        out.encode_descriptor(
            "basketflow_decision_latency_seconds",
            "From the causing event's broker append time to its decision's commit.",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;

        gauge(
            out,
            "basketflow_arrangement_records",
            "Updates held in this process's differential arrangements.",
            r.arranged_records.load(Ordering::Relaxed),
        )?;
        gauge(
            out,
            "basketflow_batcher_records",
            "Updates waiting in this process's arrangement batchers.",
            r.batcher_records.load(Ordering::Relaxed),
        )?;
        gauge(
            out,
            "basketflow_resident_memory_bytes",
            "Resident memory of this process.",
            resident_bytes(),
        )?;
        let by_name = r.arrangement_records();
        if !by_name.is_empty() {
            family(
                out,
                "basketflow_arrangement_records_by_name",
                "Updates held per arrangement (metrics.arrangement_names).",
                (by_name.into_iter())
                    .map(|(name, r)| (vec![("arrangement", name)], ConstGauge::new(r.now))),
            )?;
        }
        Ok(())
    }
}

/// What the HTTP handlers share: the process's registry and its exposition.
struct Served {
    registry: Arc<Registry>,
    exposition: prometheus_client::registry::Registry,
}

impl Served {
    fn new(registry: Arc<Registry>) -> Self {
        let mut exposition = prometheus_client::registry::Registry::default();
        exposition.register_collector(Box::new(Scrape(registry.clone())));
        Served {
            registry,
            exposition,
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.exposition).expect("a String takes any text");
        text
    }
}

/// Serves `/metrics` and `/health` for `registry` on `listen` with axum, on a thread of its
/// own with a one-thread tokio runtime: scrapes are rare and small, and they must be answered
/// while the workers are busy. Binds before returning, so a taken address is an error here.
pub fn serve(listen: &str, registry: Arc<Registry>) -> std::io::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .fallback(|| async { (StatusCode::NOT_FOUND, "try /metrics or /health\n") })
        .with_state(Arc::new(Served::new(registry)));
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let served = runtime.block_on(async move {
                axum::serve(tokio::net::TcpListener::from_std(listener)?, app).await
            });
            if let Err(e) = served {
                log::error!(address:% = addr, error:% = e; "the metrics server stopped");
            }
        })?;
    Ok(addr)
}

async fn metrics(State(served): State<Arc<Served>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        served.metrics(),
    )
}

/// `200` when caught up, `503` otherwise; the health document either way.
async fn health(State(served): State<Arc<Served>>) -> impl IntoResponse {
    let status = if served.registry.caught_up() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        served.registry.health().to_string() + "\n",
    )
}

/// The records one arrangement (all arrangements of one name, on one worker) holds now, and
/// the most it has held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArrangementRecords {
    /// Records held now.
    pub now: i64,
    /// The most records held at once.
    pub peak: i64,
}

/// One worker's operator names and records per arrangement operator, by operator id.
#[derive(Debug, Default)]
pub struct WorkerArrangements {
    /// Operator id -> name (timely's `Operates` events).
    pub names: std::collections::HashMap<usize, String>,
    /// Operator id -> records (differential's batch, merge and drop events).
    pub held: std::collections::HashMap<usize, ArrangementRecords>,
}

impl Registry {
    /// Records per arrangement name, summed over this process's workers (now, and the sum of
    /// the workers' peaks), largest peak first.
    pub fn arrangement_records(&self) -> Vec<(String, ArrangementRecords)> {
        let mut sum: BTreeMap<String, ArrangementRecords> = BTreeMap::new();
        for worker in self
            .arrangements
            .lock()
            .expect("arrangements lock")
            .values()
        {
            for (id, r) in &worker.held {
                let name = worker
                    .names
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| format!("operator {id}"));
                let s = sum.entry(name).or_default();
                s.now += r.now;
                s.peak += r.peak;
            }
        }
        let mut all: Vec<_> = sum.into_iter().collect();
        all.sort_by(|a, b| b.1.peak.cmp(&a.1.peak).then_with(|| a.0.cmp(&b.0)));
        all
    }
}

/// Counts the records of this worker's arrangements into `registry` from differential's log
/// events (batches add their length, completed merges replace two batches with one, drops
/// remove). With `by_name`, also per arrangement: timely's operator log names the operators
/// (`Operates` events, logged as the dataflow is built), and differential's events carry the
/// operator's id. Call before building the dataflow.
pub fn track_arrangements(
    worker: &mut timely::worker::Worker,
    registry: Arc<Registry>,
    by_name: bool,
) {
    use differential_dataflow::logging::{DifferentialEvent, DifferentialEventBuilder};
    use timely::logging::{TimelyEvent, TimelyEventBuilder};
    let index = worker.index();
    let Some(mut register) = worker.log_register() else {
        return;
    };
    if by_name {
        let registry = registry.clone();
        register.insert::<TimelyEventBuilder, _>("timely", move |_time, data| {
            let Some(events) = data else { return };
            let mut names = None;
            for (_, event) in events.iter() {
                if let TimelyEvent::Operates(o) = event {
                    // Only while the dataflow is built: lock once per flush that has names.
                    let all = names.get_or_insert_with(|| {
                        registry.arrangements.lock().expect("arrangements lock")
                    });
                    all.entry(index)
                        .or_default()
                        .names
                        .insert(o.id, o.name.clone());
                }
            }
        });
    }
    register.insert::<DifferentialEventBuilder, _>("differential/arrange", move |_time, data| {
        let Some(events) = data else { return };
        let (mut arranged, mut batcher) = (0i64, 0i64);
        let mut all = by_name.then(|| registry.arrangements.lock().expect("arrangements lock"));
        let mut add = |operator: usize, n: i64| {
            arranged += n;
            if let Some(all) = all.as_mut() {
                let r = all
                    .entry(index)
                    .or_default()
                    .held
                    .entry(operator)
                    .or_default();
                r.now += n;
                r.peak = r.peak.max(r.now);
            }
        };
        for (_, event) in events.iter() {
            match event {
                DifferentialEvent::Batch(b) => add(b.operator, b.length as i64),
                DifferentialEvent::Merge(m) => {
                    if let Some(n) = m.complete {
                        add(m.operator, n as i64 - m.length1 as i64 - m.length2 as i64);
                    }
                }
                DifferentialEvent::Drop(d) => add(d.operator, -(d.length as i64)),
                DifferentialEvent::Batcher(b) => batcher += b.records_diff as i64,
                _ => {}
            }
        }
        registry
            .arranged_records
            .fetch_add(arranged, Ordering::Relaxed);
        registry
            .batcher_records
            .fetch_add(batcher, Ordering::Relaxed);
    });
}

#[cfg(test)]
mod tests;
