//! Test support: run the read models over rounds of events and collect their output updates.
//! (Event and row builders for hand-written scenarios: `basketflow_testkit::{events, rows}`.)

#![allow(dead_code)]

use std::sync::mpsc::{channel, Receiver};

use basketflow_dataflows::{
    changes_read_models, count_first_copies, oracle, read_models, read_models_of_counted,
};
use basketflow_vocab::read_models::{
    BasketLine, PaidOrderLine, ProductAffinity, ShopperPurchase, SoldProductDaily,
};
use basketflow_vocab::{
    Erasure, ErasureRequest, Event, LateInput, Retention, Timestamp, WireEvent,
};
use differential_dataflow::input::Input;
use timely::dataflow::operators::capture::{Capture, Event as CaptureEvent};
use timely::dataflow::operators::Input as _;
use timely::dataflow::operators::Probe as _;
use timely::dataflow::ProbeHandle;

/// One output update: row, logical time, multiplicity.
pub type Update<D> = (D, u64, isize);

/// The consolidated updates of the five read models, each sorted by (time, row).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub sold_products_daily: Vec<Update<SoldProductDaily>>,
    pub shopper_purchases: Vec<Update<ShopperPurchase>>,
    pub product_affinities: Vec<Update<ProductAffinity>>,
    pub baskets: Vec<Update<BasketLine>>,
    pub order_lines: Vec<Update<PaidOrderLine>>,
    /// The late inputs (each carries the time it was read), sorted.
    pub late_inputs: Vec<LateInput>,
}

/// How to run the graph.
#[derive(Clone, Copy, Debug)]
pub enum Workers {
    /// One worker on the test thread (`execute_directly`).
    Direct,
    /// `n` worker threads exchanging typed data.
    Threads(usize),
    /// `n` worker threads exchanging serialized (bincode) data, as processes do.
    Binary(usize),
}

/// Feeds `rounds` (logical time, events; times strictly increasing and >= 1) into the graph,
/// letting it finish each time before the next, and returns the consolidated output.
/// With several workers, worker `w` feeds the events whose index is `w` modulo the workers.
pub fn run(workers: Workers, rounds: Vec<(u64, Vec<Event>)>) -> Output {
    run_private(workers, rounds, Vec::new(), None, oracle::Horizons::NONE)
}

/// Erasures `(retailer_id, shopper_id)` per logical time.
pub type ErasureRounds = Vec<(u64, Vec<(String, String)>)>;

/// As [`run`], with privacy: `erasures` are fed (by worker 0) at their times, and with a
/// `retention`, events go through rule 1 with the de-duplication horizon, then
/// the read models with privacy and the settlement horizon, as in the graph
/// (without one, the read models read the events directly, the least copy counting).
pub fn run_private(
    workers: Workers,
    rounds: Vec<(u64, Vec<Event>)>,
    erasures: ErasureRounds,
    retention: Option<Retention>,
    horizons: oracle::Horizons,
) -> Output {
    let (s_sold, r_sold) = channel();
    let (s_purchases, r_purchases) = channel();
    let (s_affinities, r_affinities) = channel();
    let (s_baskets, r_baskets) = channel();
    let (s_lines, r_lines) = channel();
    let (s_late, r_late) = channel();
    let logic = move |worker: &mut timely::worker::Worker| {
        let s_late = s_late.clone();
        let index = worker.index();
        let peers = worker.peers();
        let probe = ProbeHandle::new();
        let (s_sold, s_purchases, s_affinities, s_baskets, s_lines) = (
            s_sold.clone(),
            s_purchases.clone(),
            s_affinities.clone(),
            s_baskets.clone(),
            s_lines.clone(),
        );
        let retention = retention.clone();
        let (mut input, mut erasure_input) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_collection::<Event, isize>();
            let (erasure_input, erasure_stream) = scope.new_input::<Vec<Erasure>>();
            let models = match retention {
                // As the graph: rule 1 with its horizon, then privacy, then settlement.
                Some(retention) => {
                    let (models, late) = read_models_of_counted(
                        &count_first_copies(
                            events.filter(changes_read_models).map(WireEvent::from),
                            horizons.dedup_ms,
                            None,
                        ),
                        erasure_stream,
                        horizons.settlement_ms,
                        &retention,
                        None,
                    );
                    late.probe_with(&probe).capture_into(s_late);
                    models
                }
                None => read_models(&events),
            };
            models
                .sold_products_daily
                .probe_with(&probe)
                .inner
                .capture_into(s_sold);
            models
                .shopper_purchases
                .probe_with(&probe)
                .inner
                .capture_into(s_purchases);
            models
                .product_affinities
                .probe_with(&probe)
                .inner
                .capture_into(s_affinities);
            models
                .baskets
                .probe_with(&probe)
                .inner
                .capture_into(s_baskets);
            models
                .order_lines
                .probe_with(&probe)
                .inner
                .capture_into(s_lines);
            (input, erasure_input)
        });
        for (time, events) in rounds.iter() {
            input.advance_to(*time);
            erasure_input.advance_to(*time);
            for (i, event) in events.iter().enumerate() {
                if i % peers == index {
                    input.insert(event.clone());
                }
            }
            if index == 0 {
                for (t, shoppers) in &erasures {
                    if t == time {
                        for (retailer_id, shopper_id) in shoppers {
                            erasure_input.send(erasure(retailer_id, shopper_id));
                        }
                    }
                }
            }
            input.advance_to(time + 1);
            erasure_input.advance_to(time + 1);
            input.flush();
            worker.step_while(|| probe.less_than(input.time()));
        }
    };
    execute(workers, logic);
    Output {
        sold_products_daily: collect(r_sold),
        shopper_purchases: collect(r_purchases),
        product_affinities: collect(r_affinities),
        baskets: collect(r_baskets),
        order_lines: collect(r_lines),
        late_inputs: late_inputs(r_late),
    }
}

/// Every late input a captured stream carried, sorted.
pub fn late_inputs(receiver: Receiver<CaptureEvent<u64, Vec<LateInput>>>) -> Vec<LateInput> {
    let mut late: Vec<LateInput> = receiver
        .try_iter()
        .flat_map(|event| match event {
            CaptureEvent::Messages(_, data) => data,
            CaptureEvent::Progress(_) => Vec::new(),
        })
        .collect();
    late.sort();
    late
}

/// Runs `logic` on every worker of `workers`, until the dataflows it builds are done.
pub fn execute<F>(workers: Workers, logic: F)
where
    F: Fn(&mut timely::worker::Worker) + Send + Sync + 'static,
{
    match workers {
        Workers::Direct => timely::execute_directly(logic),
        Workers::Threads(n) => {
            timely::execute(timely::Config::process(n), logic).expect("timely runs");
        }
        Workers::Binary(n) => {
            let config = timely::Config {
                communication: timely::CommunicationConfig::ProcessBinary(n),
                worker: timely::WorkerConfig::default(),
            };
            timely::execute(config, logic).expect("timely runs");
        }
    }
}

/// An erasure request for `(retailer_id, shopper_id)`.
pub fn erasure(retailer_id: &str, shopper_id: &str) -> Erasure {
    Erasure {
        request: ErasureRequest {
            request_id: format!("erase-{retailer_id}-{shopper_id}"),
            retailer_id: retailer_id.into(),
            shopper_id: shopper_id.into(),
            requested_at: Timestamp(0),
        },
        partition: 0,
        offset: 0,
    }
}

/// Drains captured messages and consolidates them: one entry per (row, time), non-zero,
/// sorted by (time, row).
pub fn collect<D: Ord>(receiver: Receiver<CaptureEvent<u64, Vec<Update<D>>>>) -> Vec<Update<D>> {
    let mut updates: Vec<Update<D>> = receiver
        .try_iter()
        .flat_map(|event| match event {
            CaptureEvent::Messages(_, data) => data,
            CaptureEvent::Progress(_) => Vec::new(),
        })
        .collect();
    updates.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let mut consolidated: Vec<Update<D>> = Vec::with_capacity(updates.len());
    for (row, time, diff) in updates {
        match consolidated.last_mut() {
            Some(last) if last.1 == time && last.0 == row => last.2 += diff,
            _ => consolidated.push((row, time, diff)),
        }
    }
    consolidated.retain(|u| u.2 != 0);
    consolidated
}

/// The rows live at `time`, given updates: each must have multiplicity exactly one.
pub fn accumulate<D: Ord + Clone + std::fmt::Debug>(updates: &[Update<D>], time: u64) -> Vec<D> {
    let mut rows: Vec<(D, isize)> = Vec::new();
    let mut sorted: Vec<&Update<D>> = updates.iter().filter(|u| u.1 <= time).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (row, _, diff) in sorted {
        match rows.last_mut() {
            Some(last) if last.0 == *row => last.1 += diff,
            _ => rows.push((row.clone(), *diff)),
        }
    }
    rows.retain(|r| r.1 != 0);
    for (row, n) in &rows {
        assert_eq!(*n, 1, "row {row:?} has multiplicity {n} at time {time}");
    }
    rows.into_iter().map(|(row, _)| row).collect()
}

/// The output accumulated at `time`, in the oracle's shape.
pub fn rows_at(output: &Output, time: u64) -> oracle::ReadModelRows {
    oracle::ReadModelRows {
        sold_products_daily: accumulate(&output.sold_products_daily, time),
        shopper_purchases: accumulate(&output.shopper_purchases, time),
        product_affinities: accumulate(&output.product_affinities, time),
        baskets: accumulate(&output.baskets, time),
        order_lines: accumulate(&output.order_lines, time),
    }
}
