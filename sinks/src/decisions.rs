//! Decisions into ClickHouse, for attribution (the storefronts' Kafka topic is written by
//! [`crate::kafka_outputs`], exactly once).
//!
//! **ClickHouse** (`experience_decisions`): decisions go to worker 0, which inserts them in
//! batches into `experience_decisions_log` (`ReplacingMergeTree` by `decision_id`, so a replay's
//! copy collapses); the analyst view `experience_decisions` shows one row per decision (the
//! first `decided_at` among copies) with no `FINAL` needed. Both are created by
//! [`ClickHouseSink::migrate`] from `sinks/sql/`, like the read models'.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use basketflow_vocab::{Decision, ParamValue};
use clickhouse::Row;
use serde::Serialize;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::Map;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use crate::clickhouse_sink::{ClickHouseSink, SinkError};
use crate::read_model_sink::Target;

/// Counters of the ClickHouse decisions log.
#[derive(Debug, Default)]
pub struct DecisionStats {
    /// Decisions inserted into ClickHouse (a replay's copies included; they collapse).
    pub stored: AtomicU64,
}

/// One row of `experience_decisions_log`.
#[derive(Row, Serialize)]
struct DecisionRow {
    decision_id: String,
    retailer_id: String,
    shopper_id: String,
    session_id: String,
    kind: String,
    params: String,
    tree_id: String,
    tree_version: u64,
    node_id: String,
    reasons: Vec<String>,
    caused_by_event_id: String,
    caused_by_partition: i32,
    caused_by_offset: i64,
    occurred_at: u32,
    decided_at: u32,
    time: u64,
}

fn seconds(t: basketflow_vocab::Timestamp) -> u32 {
    u32::try_from(t.unix_seconds().max(0)).unwrap_or(u32::MAX)
}

impl From<Decision> for DecisionRow {
    fn from(d: Decision) -> Self {
        let params: serde_json::Map<String, serde_json::Value> = d
            .experience
            .params
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    ParamValue::Int(i) => serde_json::json!(i),
                    ParamValue::Text(s) => serde_json::json!(s),
                    ParamValue::List(l) => serde_json::json!(l),
                };
                (k.clone(), v)
            })
            .collect();
        DecisionRow {
            decision_id: d.decision_id,
            retailer_id: d.retailer_id,
            shopper_id: d.shopper_id,
            session_id: d.session_id.unwrap_or_default(),
            kind: d.experience.kind.as_str().to_string(),
            params: serde_json::Value::Object(params).to_string(),
            tree_id: d.tree_id,
            tree_version: d.tree_version,
            node_id: d.node_id,
            reasons: d.reasons,
            caused_by_event_id: d.caused_by.event_id,
            caused_by_partition: d.caused_by.partition,
            caused_by_offset: d.caused_by.offset,
            occurred_at: seconds(d.caused_by.occurred_at),
            decided_at: seconds(d.decided_at),
            time: d.time,
        }
    }
}

/// Stores `decisions` in ClickHouse from worker 0 (every worker sends its decisions there).
/// Returns the writer thread on worker 0; join it after the input has ended.
pub fn store_decisions(
    decisions: Stream<'_, u64, Vec<Decision>>,
    target: Target,
    flush_interval: Duration,
    worker_index: usize,
    stats: Arc<DecisionStats>,
) -> Option<JoinHandle<()>> {
    let (tx, rx) = channel::<Vec<String>>();
    let writer = (worker_index == 0).then(|| {
        let stats = stats.clone();
        std::thread::Builder::new()
            .name("clickhouse-decisions".into())
            .spawn(move || store_loop(target, rx, stats))
            .expect("spawning the ClickHouse decisions writer")
    });
    let mut tx = Some(tx);
    let mut pending: Vec<String> = Vec::new();
    let mut last = Instant::now();
    // Decisions cross workers as JSON: their free-form parameters do not survive bincode.
    decisions
        .map(|d| serde_json::to_string(&d).expect("a decision serializes"))
        .sink(
            Exchange::new(|_: &String| 0u64),
            "DecisionsToClickHouse",
            move |(input, frontier)| {
                input.for_each(|_time, data| pending.append(data));
                let done = frontier.frontier().is_empty();
                if let Some(sender) = tx.as_ref() {
                    if !pending.is_empty() && (done || last.elapsed() >= flush_interval) {
                        let _ = sender.send(std::mem::take(&mut pending));
                        last = Instant::now();
                    }
                }
                if done {
                    tx = None;
                }
            },
        );
    writer
}

fn store_loop(target: Target, rx: Receiver<Vec<String>>, stats: Arc<DecisionStats>) {
    crate::read_model_sink::runtime().block_on(async {
        let mut sink: Option<ClickHouseSink> = None;
        while let Ok(mut batch) = rx.recv() {
            while let Ok(more) = rx.try_recv() {
                batch.extend(more);
            }
            let rows: Vec<DecisionRow> = batch
                .iter()
                .map(|j| DecisionRow::from(serde_json::from_str::<Decision>(j).expect("own JSON")))
                .collect();
            let mut backoff = Duration::from_millis(100);
            loop {
                let result: Result<(), SinkError> = async {
                    if sink.is_none() {
                        sink = Some(target.connect().await?);
                    }
                    let s = sink.as_ref().expect("connected");
                    let mut insert = s
                        .client()
                        .insert_unescaped::<DecisionRow>(&format!(
                            "{}.experience_decisions_log",
                            s.database()
                        ))
                        .await?;
                    for row in &rows {
                        insert.write(row).await?;
                    }
                    insert.end().await?;
                    Ok(())
                }
                .await;
                match result {
                    Ok(()) => break,
                    Err(e) => {
                        log::warn!(backoff:? = backoff; "clickhouse decisions writer: insert failed, retrying: {e}");
                        sink = None;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            stats.stored.fetch_add(rows.len() as u64, Ordering::Relaxed);
        }
    });
}
