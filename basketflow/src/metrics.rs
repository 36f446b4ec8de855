//! Prometheus metrics and the health endpoint of a `basketflow run` process.
//!
//! Every process serves, on `metrics.listen` (default `127.0.0.1:9464`):
//!
//! - `GET /metrics`: the Prometheus text exposition of the counters the graph's pieces already
//!   keep (sources, sinks, Kafka outputs, trees, rejections), the graph's frontier lag behind the
//!   wall clock, arrangement sizes (from differential's logging), and resident memory;
//! - `GET /health`: `200` with a JSON body when the process is caught up (its frontier is within
//!   `metrics.caught_up_lag_ms` of the wall clock), `503` with the same body otherwise.
//!
//! The server is a plain thread on a `TcpListener`: scrapes are rare and small, and it must keep
//! answering while the workers are busy.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use basketflow_dataflows::experiences::TreeStats;
use basketflow_ingest::kafka_source::SourceStats;
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

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |v: f64| vec![(String::new(), v)];
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;

        // Sources, summed per topic; lag per partition.
        let sources = self.sources.lock().expect("sources").clone();
        let mut per_topic: BTreeMap<&str, [u64; 5]> = BTreeMap::new();
        let mut lag: Vec<(String, f64)> = Vec::new();
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
                lag.push((
                    format!("{{topic=\"{topic}\",partition=\"{p}\"}}"),
                    (high - next).max(0) as f64,
                ));
            }
        }
        let by_topic = |i: usize| -> Vec<(String, f64)> {
            per_topic
                .iter()
                .map(|(t, v)| (format!("{{topic=\"{t}\"}}"), v[i] as f64))
                .collect()
        };
        metric(
            "basketflow_messages_consumed_total",
            "counter",
            "Messages read from Kafka by this process.",
            &by_topic(0),
        );
        metric(
            "basketflow_message_bytes_consumed_total",
            "counter",
            "Payload bytes read from Kafka by this process.",
            &by_topic(1),
        );
        metric(
            "basketflow_consumer_errors_total",
            "counter",
            "Consumer errors (librdkafka retries them).",
            &by_topic(2),
        );
        metric(
            "basketflow_messages_clamped_total",
            "counter",
            "Messages whose broker time was below their partition's idle bound.",
            &by_topic(3),
        );
        metric(
            "basketflow_source_held_back_total",
            "counter",
            "Source activations held back because a durable output lagged.",
            &by_topic(4),
        );
        metric(
            "basketflow_consumer_lag_messages",
            "gauge",
            "High watermark minus next offset, per owned partition.",
            &lag,
        );

        let rejected: Vec<(String, f64)> = self
            .rejections
            .lock()
            .expect("rejections")
            .iter()
            .map(|(code, n)| (format!("{{reason=\"{code}\"}}"), *n as f64))
            .collect();
        metric(
            "basketflow_events_rejected_total",
            "counter",
            "Messages refused by the event contract, by reason.",
            &rejected,
        );
        let lag_s = self
            .frontier_lag_ms()
            .map_or(f64::NAN, |l| l as f64 / 1000.0);
        metric(
            "basketflow_frontier_lag_seconds",
            "gauge",
            "How far the graph's input frontier trails the wall clock.",
            &plain(lag_s),
        );
        metric(
            "basketflow_caught_up",
            "gauge",
            "1 when the frontier lag is within metrics.caught_up_lag_ms.",
            &plain(f64::from(u8::from(self.caught_up()))),
        );

        let writes = self.has_worker_zero.load(Ordering::Relaxed);
        let committed_lag = |t: u64| {
            if t == 0 || !writes {
                f64::NAN
            } else {
                wall_ms().saturating_sub(t) as f64 / 1000.0
            }
        };
        metric(
            "basketflow_clickhouse_batches_total",
            "counter",
            "Read-model batches committed to ClickHouse.",
            &plain(load(&self.sink.batches)),
        );
        metric(
            "basketflow_clickhouse_rows_total",
            "counter",
            "Version rows written to ClickHouse.",
            &plain(load(&self.sink.rows)),
        );
        metric(
            "basketflow_clickhouse_errors_total",
            "counter",
            "Failed ClickHouse write attempts (each retried).",
            &plain(load(&self.sink.errors)),
        );
        metric(
            "basketflow_clickhouse_committed_lag_seconds",
            "gauge",
            "Wall clock minus the committed time of the read models (writer process only).",
            &plain(committed_lag(self.sink.committed.load(Ordering::Relaxed))),
        );
        metric(
            "basketflow_kafka_transactions_total",
            "counter",
            "Kafka output transactions committed.",
            &plain(load(&self.outputs.transactions)),
        );
        metric(
            "basketflow_kafka_transaction_retries_total",
            "counter",
            "Kafka output transactions aborted and retried.",
            &plain(load(&self.outputs.retries)),
        );
        metric(
            "basketflow_kafka_outputs_committed_lag_seconds",
            "gauge",
            "Wall clock minus the committed time of the Kafka outputs (writer process only).",
            &plain(committed_lag(
                self.outputs.committed.load(Ordering::Relaxed),
            )),
        );
        let kinds: Vec<(String, f64)> = self
            .outputs
            .by_kind
            .lock()
            .expect("by kind")
            .iter()
            .map(|(k, n)| (format!("{{kind=\"{k}\"}}"), *n as f64))
            .collect();
        metric(
            "basketflow_decisions_total",
            "counter",
            "Decisions committed to the decisions topic, by experience kind.",
            &kinds,
        );
        metric(
            "basketflow_dead_letters_total",
            "counter",
            "Dead letters committed to the rejected topic.",
            &plain(load(&self.outputs.dead_letters)),
        );
        metric(
            "basketflow_outputs_suppressed_total",
            "counter",
            "Outputs of replayed times, not produced again.",
            &plain(load(&self.outputs.suppressed)),
        );
        metric(
            "basketflow_decisions_stored_total",
            "counter",
            "Decisions inserted into the ClickHouse decisions log.",
            &plain(load(&self.sink.decisions)),
        );
        metric(
            "basketflow_privacy_erasures_applied_total",
            "counter",
            "Erasure requests applied to every ClickHouse table (audited in privacy_audit).",
            &plain(load(&self.sink.erasures)),
        );
        metric(
            "basketflow_privacy_retention_deleted_rows_total",
            "counter",
            "Per-shopper ClickHouse rows deleted because they outlived the retention period.",
            &plain(load(&self.sink.retention_deleted)),
        );
        metric(
            "basketflow_bad_trees_total",
            "counter",
            "Experience-tree messages that did not parse or check.",
            &plain(load(&self.trees.bad_trees)),
        );

        let h = &self.outputs.latency;
        let mut buckets = Vec::new();
        let mut cumulative = 0u64;
        for (i, c) in h.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = h
                .bounds_ms
                .get(i)
                .map_or("+Inf".to_string(), |b| format!("{}", *b as f64 / 1000.0));
            buckets.push((format!("_bucket{{le=\"{le}\"}}"), cumulative as f64));
        }
        buckets.push((
            "_sum".to_string(),
            h.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        ));
        buckets.push(("_count".to_string(), cumulative as f64));
        let _ = writeln!(
            out,
            "# HELP basketflow_decision_latency_seconds From the causing event's broker append time to its decision's commit.\n# TYPE basketflow_decision_latency_seconds histogram"
        );
        for (suffix, v) in buckets {
            let (name_suffix, labels) = suffix
                .split_once('{')
                .map_or((suffix.as_str(), String::new()), |(a, b)| {
                    (a, format!("{{{b}"))
                });
            let _ = writeln!(
                out,
                "basketflow_decision_latency_seconds{name_suffix}{labels} {v}"
            );
        }

        let mut metric = |name: &str, kind: &str, help: &str, v: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        metric(
            "basketflow_arrangement_records",
            "gauge",
            "Updates held in this process's differential arrangements.",
            self.arranged_records.load(Ordering::Relaxed) as f64,
        );
        metric(
            "basketflow_batcher_records",
            "gauge",
            "Updates waiting in this process's arrangement batchers.",
            self.batcher_records.load(Ordering::Relaxed) as f64,
        );
        metric(
            "basketflow_resident_memory_bytes",
            "gauge",
            "Resident memory of this process.",
            resident_bytes() as f64,
        );
        let by_name = self.arrangement_records();
        if !by_name.is_empty() {
            let _ = writeln!(
                out,
                "# HELP basketflow_arrangement_records_by_name Updates held per arrangement (metrics.arrangement_names).\n# TYPE basketflow_arrangement_records_by_name gauge"
            );
            for (name, r) in &by_name {
                let label = name.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(
                    out,
                    "basketflow_arrangement_records_by_name{{arrangement=\"{label}\"}} {}",
                    r.now
                );
            }
        }
        out
    }
}

/// Serves `/metrics` and `/health` for `registry` on `listen`, on a thread of its own.
pub fn serve(listen: &str, registry: Arc<Registry>) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer(stream, &registry);
            }
        })?;
    Ok(addr)
}

fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Drain the headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, content_type, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", registry.render()),
        "/health" => {
            let status = if registry.caught_up() {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (
                status,
                "application/json",
                registry.health().to_string() + "\n",
            )
        }
        _ => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /health\n".to_string(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
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
