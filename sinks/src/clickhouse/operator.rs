//! The timely operator of the ClickHouse sink: the graph's read models into ClickHouse,
//! completed times only, consolidated, batched.
//!
//! Every worker sends its read-model updates to worker 0 (one writer keeps one progress
//! sequence). There a sink operator buffers them by time; when its input frontier has passed a
//! time, that time is complete. At most every `flush_interval` (and when the input ends) the
//! updates of all completed, not yet written times become one [`Batch`] for the writer thread
//! ([`crate::clickhouse::writer`]), which inserts the versions of every table and then the
//! progress row (see [`crate::clickhouse::store`]): thousands of rows per insert, never one
//! per event.
//!
//! **Restart.** Before the graph starts, [`prepare`] migrates the schema, discards versions a
//! crash left above the committed time, and returns that time; the operator drops updates at or
//! below it (a replay reproduces the same times, and those are already written).
//!
//! The same batches carry the graph's decisions (`experience_decisions_log`) and erasure
//! requests: the writer inserts the versions and decisions, then forgets each erased shopper
//! in every per-shopper table, then writes the progress row; between batches it deletes
//! per-shopper rows past their retention period (see [`ClickHouseStore::apply_retention`](crate::clickhouse::ClickHouseStore::apply_retention)).
//!
//! **Faults.** A failed write is retried with exponential backoff (up to 5 s between tries),
//! forever: ClickHouse being down delays the views, it never loses a batch. While the writer
//! is stuck, completed batches queue in memory (bounded backpressure comes with the
//! reliability work).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use basketflow_kafka::{fold_positions, PositionRecord, Positions};
use basketflow_vocab::privacy::{Erasure, Retention};
use basketflow_vocab::read_models::{
    BasketLine, PaidOrderLine, ProductAffinity, ReadModels, ShopperPurchase, SoldProductDaily,
};
use basketflow_vocab::{Decision, LateInput};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::Map;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Concatenate;
use timely::dataflow::Stream;

use crate::clickhouse::versions::{Batch, Updates};
use crate::clickhouse::writer::{runtime, write_loop, SinkStats};
use crate::clickhouse::{ClickHouseError, Target};
use crate::durable::{Committed, DurableCap, NoData, Waker};

/// The graph's outputs that the ClickHouse writer stores with the read models, in the same
/// batches: decisions (for `experience_decisions_log`) and erasures (applied to every
/// per-shopper table before the progress row), with the retention periods it enforces.
pub struct PrivateOutputs<'scope> {
    /// The decisions, at the times of the events that caused them.
    pub decisions: Stream<'scope, u64, Vec<Decision>>,
    /// Erasure requests, at the times they were read.
    pub erasures: Stream<'scope, u64, Vec<Erasure>>,
    /// Late inputs (for `late_events_log`), at the times they were read.
    pub late_inputs: Stream<'scope, u64, Vec<LateInput>>,
    /// The retention periods.
    pub retention: Retention,
    /// Shoppers with an erasure request in the privacy topic when the run started
    /// ([`basketflow_kafka::read_erased`]; only worker 0's matters): none of their rows is
    /// written, whatever its time.
    pub erased_at_start: BTreeSet<(String, String)>,
}

/// Connects, migrates the schema (the retailer copies' too, see [`super::copies`]), discards
/// uncommitted versions, fills the retailer copies registered since the last run, and returns
/// the committed time with the source positions recorded at it.
pub fn prepare(target: &Target) -> Result<Committed, ClickHouseError> {
    runtime().block_on(async {
        let store = target.connect().await?;
        store.migrate().await?;
        store.repair_copies().await?;
        store.discard_uncommitted().await?;
        for copy in store.maintain_copies().await? {
            log::info!(copy = copy.as_str(); "retailer copy filled");
        }
        store.committed_positions().await
    })
}

/// The committed time and positions of `target`, without changing anything (for workers other
/// than 0, which need them to reclock their sources).
pub fn committed(target: &Target) -> Result<Committed, ClickHouseError> {
    runtime().block_on(async { target.connect().await?.committed_positions().await })
}

/// One update of any read model, or a source position, as exchanged to the writing worker.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Row {
    Sold(SoldProductDaily),
    Purchase(ShopperPurchase),
    Affinity(ProductAffinity),
    Basket(BasketLine),
    OrderLine(PaidOrderLine),
    Position(PositionRecord),
    /// A decision's retailer and shopper, and the decision as JSON (its free-form parameters
    /// do not survive bincode).
    Decision(String, String, String),
    Erasure(Erasure),
    Late(LateInput),
}

/// Erased shoppers by retailer, for lookups by `&str` (no allocation per row).
type Erased = std::collections::BTreeMap<String, BTreeSet<String>>;

impl Row {
    /// True when the row names a shopper of `erased`.
    fn names_one_of(&self, erased: &Erased) -> bool {
        let (retailer, shopper) = match self {
            Row::Purchase(r) => (&r.retailer_id, &r.shopper_id),
            Row::Basket(r) => (&r.retailer_id, &r.shopper_id),
            Row::OrderLine(r) => (&r.retailer_id, &r.shopper_id),
            Row::Decision(retailer, shopper, _) => (retailer, shopper),
            _ => return false,
        };
        erased
            .get(retailer.as_str())
            .is_some_and(|shoppers| shoppers.contains(shopper.as_str()))
    }
}

/// The updates of the completed times through `through`, as worker 0 hands them to the writer
/// thread, which converts them ([`batch_of`]) off the worker.
struct Ready {
    through: u64,
    updates: ByTime,
}

/// Updates by their time, in runs as they arrived: what a batch takes is split off whole, and
/// no vector grows to a catch-up's size. Growing one by doubling, and copying out what was
/// complete, were a quarter of worker 0's time, most of it the kernel zeroing fresh pages; so
/// was appending each run to one vector per time (a catch-up puts most updates at few times).
type ByTime = BTreeMap<u64, Vec<Vec<(Row, u64, isize)>>>;

/// Moves `run` (updates of one time) into `pending`, leaving it empty.
fn join(pending: &mut ByTime, run: &mut Vec<(Row, u64, isize)>) {
    let Some(first) = run.first() else { return };
    pending
        .entry(first.1)
        .or_default()
        .push(std::mem::take(run));
}

fn batch_of(through: u64, updates: ByTime, positions: &mut Positions) -> Batch {
    // Each table's vector sized once: a catch-up batch holds hundreds of thousands of rows.
    let mut counts = [0usize; 5];
    for (row, _, _) in updates.values().flatten().flatten() {
        match row {
            Row::Sold(_) => counts[0] += 1,
            Row::Purchase(_) => counts[1] += 1,
            Row::Affinity(_) => counts[2] += 1,
            Row::Basket(_) => counts[3] += 1,
            Row::OrderLine(_) => counts[4] += 1,
            _ => {}
        }
    }
    let mut u = Updates {
        sold_products_daily: Vec::with_capacity(counts[0]),
        shopper_purchases: Vec::with_capacity(counts[1]),
        product_affinities: Vec::with_capacity(counts[2]),
        baskets: Vec::with_capacity(counts[3]),
        order_lines: Vec::with_capacity(counts[4]),
    };
    let mut seen: Vec<PositionRecord> = Vec::new();
    let mut decisions: Vec<Decision> = Vec::new();
    let mut erasures = Vec::new();
    let mut late_inputs: Vec<LateInput> = Vec::new();
    for (row, t, d) in updates.into_values().flatten().flatten() {
        match row {
            Row::Sold(r) => u.sold_products_daily.push((r, t, d)),
            Row::Purchase(r) => u.shopper_purchases.push((r, t, d)),
            Row::Affinity(r) => u.product_affinities.push((r, t, d)),
            Row::Basket(r) => u.baskets.push((r, t, d)),
            Row::OrderLine(r) => u.order_lines.push((r, t, d)),
            Row::Position(p) => seen.push(p),
            Row::Decision(_, _, json) => {
                if d > 0 {
                    for _ in 0..d {
                        decisions.push(serde_json::from_str(&json).expect("own JSON"));
                    }
                }
            }
            Row::Erasure(e) => erasures.push((e, t)),
            Row::Late(l) => {
                for _ in 0..d.max(0) {
                    late_inputs.push(l.clone());
                }
            }
        }
    }
    fold_positions(positions, &seen);
    let mut batch =
        Batch::from_updates(through, u).expect("updates of completed times convert to versions");
    batch.positions = positions.clone();
    decisions.sort_by_key(|d: &Decision| d.time);
    batch.decisions = decisions;
    erasures.sort_by_key(|(_, t)| *t);
    batch.erasures = erasures;
    late_inputs.sort();
    batch.late_inputs = late_inputs;
    batch
}

/// Writes `models` to `target` from worker 0, skipping times at or below the committed time
/// (from [`prepare`]); `positions` (from the events source) are recorded with each progress
/// row.
///
/// Returns the sink's **durable frontier** (a stream that carries no data, whose frontier is
/// one past the committed time, and which closes once everything is written) and the writer
/// thread's handle on worker 0. Probing the frontier tells every worker how far ClickHouse
/// is behind: sources hold back when it lags (see `basketflow_ingest::kafka_source::Gate`),
/// and a drain is complete when it reaches the sources' frontier.
#[allow(clippy::too_many_arguments)]
pub fn write_read_models<'scope>(
    models: &ReadModels<'scope, u64>,
    outputs: PrivateOutputs<'scope>,
    positions: Stream<'scope, u64, Vec<PositionRecord>>,
    target: Target,
    committed: Committed,
    flush_interval: Duration,
    worker_index: usize,
    stats: Arc<SinkStats>,
) -> (Stream<'scope, u64, Vec<()>>, Option<JoinHandle<()>>) {
    let PrivateOutputs {
        decisions,
        erasures,
        late_inputs,
        retention,
        erased_at_start,
    } = outputs;
    let mut erased_at_start_by_retailer = Erased::new();
    for (retailer, shopper) in erased_at_start {
        erased_at_start_by_retailer
            .entry(retailer)
            .or_default()
            .insert(shopper);
    }
    let erased_at_start = erased_at_start_by_retailer;
    let streams = vec![
        models.sold_products_daily.clone().map(Row::Sold).inner,
        models.shopper_purchases.clone().map(Row::Purchase).inner,
        models.product_affinities.clone().map(Row::Affinity).inner,
        models.baskets.clone().map(Row::Basket).inner,
        models.order_lines.clone().map(Row::OrderLine).inner,
        positions.map(|p| (Row::Position(p), 0u64, 0isize)),
        decisions.map(|d| {
            let t = d.time;
            (
                Row::Decision(
                    d.retailer_id.clone(),
                    d.shopper_id.clone(),
                    serde_json::to_string(&d).expect("a decision serializes"),
                ),
                t,
                1isize,
            )
        }),
        late_inputs.map(|l| {
            let t = l.read_at;
            (Row::Late(l), t, 1isize)
        }),
        // Erasures travel at the time they were read (their batch's time).
        erasures.map(|e| (Row::Erasure(e), 0u64, 0isize)),
    ];
    let scope = models.baskets.inner.scope();
    let all = scope.concatenate(streams);
    let (tx, rx) = channel::<Ready>();
    let woken = Waker::default();
    let (committed, mut positions) = committed;
    // The writer thread converts the updates into the batch's versions, decisions and
    // positions, then writes: worker 0 only hands the completed updates over.
    let writer = (worker_index == 0).then(|| {
        let stats = stats.clone();
        let woken = woken.clone();
        let convert = move |r: Ready| batch_of(r.through, r.updates, &mut positions);
        std::thread::Builder::new()
            .name("clickhouse-writer".into())
            .spawn(move || write_loop(target, rx, convert, stats, retention, woken))
            .expect("spawning the ClickHouse writer thread")
    });
    stats.committed.store(committed, Ordering::Relaxed);
    let mut tx = (worker_index == 0).then_some(tx);
    let mut pending = ByTime::new();
    // The run of updates of one time being read, before it joins `pending`.
    let mut run: Vec<(Row, u64, isize)> = Vec::new();
    let mut max_time = committed;
    let mut last_flush = Instant::now();
    let durable = all.unary_frontier(
        Exchange::new(|_: &(Row, u64, isize)| 0u64),
        "ClickHouseReadModels",
        move |cap, info| {
            woken.arm(scope.worker().sync_activator_for(info.address.to_vec()));
            let activator = scope.worker().activator_for(info.address.clone());
            // Only worker 0 writes; the others hold nothing back.
            let mut cap = DurableCap::new(cap, worker_index == 0, committed);
            move |(input, frontier), _output: &mut NoData<'_>| {
                input.for_each(|time, data| {
                    let t = *time.least().expect("an input batch has a time");
                    run.reserve(data.len());
                    let kept = data.drain(..).filter_map(|(row, rt, d)| match row {
                        // Positions travel at their batch's time; keep the time with them.
                        Row::Position(p) => Some((Row::Position(p), t, 0)),
                        // Erasures at or below the committed time were applied.
                        Row::Erasure(e) => (t > committed).then_some((Row::Erasure(e), t, 0)),
                        // Nothing of a shopper erased before this run started is written
                        // again (a replay or a rebuild; their erasure deletes the rest).
                        row if row.names_one_of(&erased_at_start) => None,
                        row => (rt > committed).then_some((row, rt, d)),
                    });
                    // Runs of one time (nearly every input batch is one) join their time's runs.
                    for u in kept {
                        if run.last().is_some_and(|last| last.1 != u.1) {
                            join(&mut pending, &mut run);
                        }
                        run.push(u);
                    }
                    join(&mut pending, &mut run);
                });
                // Move the durable frontier to what the writer has committed.
                cap.follow(&stats.committed, &stats.finished);
                let Some(sender) = tx.as_ref() else { return };
                let frontier = frontier.frontier();
                let done = frontier.is_empty();
                if !done && last_flush.elapsed() < flush_interval {
                    // Come back when the interval is over, even if no input arrives (a drain
                    // stops the sources, and then nothing else would wake us).
                    activator.activate_after(flush_interval.saturating_sub(last_flush.elapsed()));
                    return;
                }
                // Everything strictly before the frontier is complete.
                let through = match frontier.first() {
                    Some(&f) => f.saturating_sub(1),
                    None => pending.keys().next_back().copied().unwrap_or(max_time),
                };
                if through > max_time {
                    let later = match through.checked_add(1) {
                        Some(next) => pending.split_off(&next),
                        None => ByTime::new(),
                    };
                    let updates = std::mem::replace(&mut pending, later);
                    max_time = through;
                    // The writer thread ends only when the channel closes, or when it panicked
                    // (an update that is no upsert: a bug): then the worker stops too.
                    sender
                        .send(Ready { through, updates })
                        .expect("the ClickHouse writer thread stopped (see its panic above)");
                    last_flush = Instant::now();
                }
                if done {
                    // No more input: closing the channel lets the writer finish.
                    tx = None;
                }
            }
        },
    );
    (durable, writer)
}
