//! End-to-end benchmark of the graph against the real broker and ClickHouse, side by side with
//! the broker's own limits measured in the same run (see the README's "Benchmarks").
//!
//! `cargo bench -p basketflow --bench e2e -- [--phases baseline,catchup,scaleout,sustain,latency,memory,restart,livecost,checkpoints]
//!  [--events N] [--rates 1000,10000,50000] [--seconds S] [--sustain-seconds 60]
//!  [--sustain-probes 3] [--memory-events 1000000,10000000] [--restart-events 300000,3000000]`
//!
//! Every graph is `basketflow run` (the release binary), on its own fresh database and topics.
//! Messages are the generator's (~1.2 KB, 3% bad, 2% duplicates, 20,000 shoppers).
//!
//! 1. **baseline**: `N` messages produced to a fresh 8-partition topic (producer rate, the
//!    collector's producer settings), then read back by a plain rdkafka consumer (the raw
//!    consumer rate, read_committed).
//! 2. **catchup**: `basketflow run --exit-when-caught-up` over that backlog, 1 and 2 workers:
//!    events/s from the cluster forming to every sink flushed (and with start-up included),
//!    ratio to the raw consumer, peak resident memory, and CPU per event by thread group
//!    (the child's threads sampled from /proc every 100 ms), with the parse share measured
//!    in-process (`parse_event` over the same messages).
//!    **scaleout**: the same backlog caught up by 1 process x 2 workers and by 2 processes x
//!    1 worker (a cluster on loopback), alternated twice: the cost of exchanging between
//!    processes.
//! 3. **sustain**: a live graph (default configuration) fed open loop at a rate for
//!    `--sustain-seconds`; sustained when both durable outputs' committed times (ClickHouse's
//!    progress table, the Kafka outputs' progress topic) stay within 5 s of the wall clock
//!    throughout (after a 5 s warm-up) and the graph is caught up 10 s after the end. The first
//!    rate tried is 80% of the catch-up rate; then up by 20% after a success, down by 25% after
//!    a failure, `--sustain-probes` times; the highest sustained rate is reported.
//! 4. **latency**: a live 2-worker graph (`flush_interval_ms = 5`) with a tree per shopper that
//!    decides on every basket; per rate, `S` seconds open loop (message `k` due at `k / rate`
//!    and timed from then: no coordinated omission). Event produced -> decision readable
//!    (read_committed) on `experience-decisions`, matched by the causing event's partition and
//!    offset; the broker round trip of the same messages (produced -> readable on the events
//!    topic); order -> its figures visible in `sold_products_daily` (ClickHouse's committed
//!    time, polled every 10 ms, reaching the order's logical time). The first second is
//!    warm-up.
//! 5. **memory**: peak resident memory of `--exit-when-caught-up` runs (1 worker) over the
//!    first 1 M and 10 M messages of one generated stream (same shoppers and products).
//! 6. **restart**: per history length (300 k and 3 M messages of one stream), a live run
//!    checkpoints every second until a checkpoint covers the history and is stopped; 10,000
//!    more messages come; the time from start to caught up is measured from the checkpoint,
//!    and replaying the whole log (checkpoints off), with the checkpoint's size and its write
//!    and load times.
//! 7. **livecost** (only when named in `--phases`): a live 2-worker graph's CPU by thread group
//!    at each of `--live-rates` (0: idle) and `--live-ticks` (`graph.tick_ms`), for `--seconds`.
//! 8. **checkpoints** (only when named in `--phases`): each checkpoint's bytes and encoding
//!    stall on a live graph over a large state, incremental against every part whole
//!    (`checkpoint_cost.rs`).
//!
//! The sustain phase also reports the cores the graph, the producer (this process), the
//! broker and ClickHouse took during each probe: they share the machine's cores.
//!
//! Writes `target/bench-e2e/results.json`, `results.md` and `latency.svg`, and prints the table.
//!
//! Files: `args.rs` (the command line), `stack.rs` (graphs, producing, reading and watching the
//! topics), `sampling.rs` (CPU by thread group, the run's log), `phases.rs` (the first seven
//! measurements), `checkpoint_cost.rs` (the eighth), `report.rs` (percentiles, the plot). Every topic the run creates is deleted at
//! the end (a broker with thousands of leftover partitions answers slower, which would skew the
//! next run's broker baseline), and every graph's database is dropped after its run.

mod args;
mod checkpoint_cost;
mod phases;
mod report;
mod sampling;
mod stack;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use basketflow_testkit::Stack;
use basketflow_vocab::Timestamp;
use serde_json::{json, Value};

use args::{args, Args};
use stack::Site;

/// Partitions of the events, trees and decisions topics.
const PARTITIONS: i32 = 8;
/// Shoppers of the generated traffic.
const SHOPPERS: u32 = 20_000;
/// The graph's tick: broker times are rounded up to it.
const TICK_MS: i64 = 5;

/// What the phases share: the arguments, names and places, the stack (its topics deleted at
/// the end), and the results as they grow.
pub struct Bench {
    /// The command line.
    pub args: Args,
    /// The stack, the graphs' directory, the names' suffix.
    pub site: Site,
    /// Where `results.json`, `results.md` and `latency.svg` go.
    pub out_dir: PathBuf,
    /// The backlog topic of the baseline and catch-up phases.
    pub backlog: String,
    /// The raw consumer's rate (NaN until the baseline phase ran).
    pub consume_rate: f64,
    /// The catch-up rate by worker count.
    pub catchup_rates: BTreeMap<usize, f64>,
    /// `results.json`.
    pub results: Value,
    /// `results.md`, a table.
    pub md: String,
}

fn main() {
    let args = args();
    let phase = |p: &str| args.phases.iter().any(|x| x == p);
    let (baseline, catchup, scaleout, sustain, latency, memory, restart) = (
        phase("baseline") || phase("catchup") || phase("scaleout"),
        phase("catchup"),
        phase("scaleout"),
        phase("sustain"),
        phase("latency"),
        phase("memory"),
        phase("restart"),
    );
    let suffix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let dir = std::env::temp_dir().join(format!("basketflow-bench-{suffix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let out_dir = out_dir();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let results =
        json!({"date": Timestamp::now().to_string(), "events": args.events, "cpus": cpus});
    let md = String::from("| measure | value |\n| --- | --- |\n");
    let mut bench = Bench {
        backlog: format!("bench-events-{suffix}"),
        args,
        site: Site {
            stack: Stack::shared(),
            dir,
            suffix,
        },
        out_dir,
        consume_rate: f64::NAN,
        catchup_rates: BTreeMap::new(),
        results,
        md,
    };

    if baseline {
        phases::baseline(&mut bench);
    }
    if catchup {
        phases::catchup(&mut bench);
    }
    if scaleout {
        phases::scaleout(&mut bench);
    }
    if sustain {
        phases::sustain(&mut bench);
    }
    if latency {
        phases::latency(&mut bench);
    }
    if memory {
        phases::memory(&mut bench);
    }
    if restart {
        phases::restart(&mut bench);
    }
    // Not among the default phases: named with --phases livecost.
    if bench.args.phases.iter().any(|p| p == "livecost") {
        phases::live_cost(&mut bench);
    }
    // Not among the default phases: named with --phases checkpoints.
    if bench.args.phases.iter().any(|p| p == "checkpoints") {
        checkpoint_cost::checkpoint_cost(&mut bench);
    }

    std::fs::write(
        bench.out_dir.join("results.json"),
        serde_json::to_string_pretty(&bench.results).unwrap(),
    )
    .unwrap();
    std::fs::File::create(bench.out_dir.join("results.md"))
        .unwrap()
        .write_all(bench.md.as_bytes())
        .unwrap();
    println!("\n{}", bench.md);
    let _ = std::fs::remove_dir_all(&bench.site.dir);
    // Dropping the stack deletes every topic this run created.
}

/// Where the bench writes its results and the graphs' logs (created if missing).
pub fn out_dir() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
