//! The benchmark's command line (after `cargo bench -p basketflow --bench e2e --`); unknown
//! arguments (cargo's own, such as `--bench`) are skipped.

/// What `--help` prints.
pub const USAGE: &str = "usage: cargo bench -p basketflow --bench e2e -- \
    [--phases baseline,catchup,scaleout,sustain,latency,memory,restart,livecost] [--events N] [--rates 1000,10000,50000] \
    [--seconds S] [--sustain-seconds 60] [--sustain-probes 3] \
    [--memory-events 1000000,10000000] [--memory-horizon-ms MS] [--memory-lead-ms MS] [--memory-in-flight N] \
    [--restart-events 300000,3000000] [--restart-horizon-ms MS] [--latency-checkpoint-ms MS] \
    [--deliveries exactly_once,at_least_once] [--latency-idle-margin-ms MS] [--latency-tick-ms MS] [--transactions-in-flight N] \
    [--shoppers N] [--products N] [--live-rates 0,2000,10000] [--live-ticks 5,100] [--fetch-min-bytes 1,65536] \
    [--checkpoint-events 1000000] [--checkpoint-rate 1000] [--checkpoint-seconds 20] [--checkpoint-interval-ms 1000] [--checkpoint-full-every off,10,0]";

/// What to run, and how much.
pub struct Args {
    /// Phases to run, of `baseline`, `catchup`, `sustain`, `latency`, `memory`, `restart`.
    pub phases: Vec<String>,
    /// Messages of the backlog (baseline and catch-up).
    pub events: usize,
    /// Offered rates of the latency phase, events/s.
    pub rates: Vec<u32>,
    /// Seconds per latency rate.
    pub seconds: u64,
    /// Seconds per sustained-rate probe.
    pub sustain_seconds: u64,
    /// Probes per worker count.
    pub sustain_probes: usize,
    /// Stream lengths of the memory phase.
    pub memory_events: Vec<usize>,
    /// The memory phase's de-duplication and settlement horizons and retention period (ms);
    /// the defaults (7 days, 30 days, 3 years) when absent.
    pub memory_horizon_ms: Option<u64>,
    /// The memory phase's `graph.max_sink_lag_ms`: how far (broker ms) the sources may run
    /// ahead of the durable outputs, which bounds the data in flight in a catch-up (the
    /// default, 10 s, when absent).
    pub memory_lead_ms: Option<u64>,
    /// The memory phase's `graph.max_in_flight_messages` (the default, 65,536, when absent).
    pub memory_in_flight: Option<usize>,
    /// Shoppers of the memory and restart phases' streams (20,000 by default).
    pub shoppers: u32,
    /// Products per retailer of the memory and restart phases' streams (the generator's
    /// 3,000 when absent): a small catalogue saturates the product pairs, so that the state
    /// stops growing with the stream (with 3,000 the pairs are still new after 10 M events).
    pub products: Option<u32>,
    /// History lengths of the restart phase.
    pub restart_events: Vec<usize>,
    /// The restart phase's horizons and retention period (ms); the defaults when absent.
    pub restart_horizon_ms: Option<u64>,
    /// The latency phase's `graph.checkpoint_interval_ms` (the default, 60 s, when absent):
    /// the decision latency while checkpoints are written.
    pub latency_checkpoint_ms: Option<u64>,
    /// The latency phase's delivery modes (`[kafka] delivery`), each its own graph.
    pub deliveries: Vec<String>,
    /// The latency phase's `graph.idle_margin_ms` (the default when absent).
    pub latency_idle_margin_ms: Option<u64>,
    /// The latency phase's `graph.tick_ms` (the default when absent).
    pub latency_tick_ms: Option<u64>,
    /// The latency phase's `kafka.transactions_in_flight` (exactly once; the default, 1,
    /// when absent).
    pub transactions_in_flight: Option<usize>,
    /// Offered rates of the live-cost phase (`livecost`, not run unless named), events/s; 0
    /// is an idle graph.
    pub live_rates: Vec<u32>,
    /// The live-cost phase's `graph.tick_ms` values, each with every rate.
    pub live_ticks: Vec<u64>,
    /// The latency and live-cost phases' `kafka.fetch_min_bytes` values, each its own graph
    /// (`[1]`, the default, when absent).
    pub fetch_min_bytes: Vec<u32>,
    /// History of the checkpoint-cost phase (`checkpoints`, not run unless named), events.
    pub checkpoint_events: usize,
    /// The checkpoint-cost phase's live rate, events/s.
    pub checkpoint_rate: u32,
    /// The checkpoint-cost phase's live seconds.
    pub checkpoint_seconds: u64,
    /// The checkpoint-cost phase's `graph.checkpoint_interval_ms`.
    pub checkpoint_interval_ms: u64,
    /// The checkpoint-cost phase's `graph.checkpoint_full_every` values, each its own graph;
    /// `None` (`off`): checkpoints off, the decisions' latency without them.
    pub checkpoint_full_every: Vec<Option<u32>>,
}

/// The arguments of this process.
pub fn args() -> Args {
    let mut a = Args {
        phases: [
            "baseline", "catchup", "scaleout", "sustain", "latency", "memory", "restart",
        ]
        .map(String::from)
        .to_vec(),
        events: 300_000,
        rates: vec![1_000, 10_000, 50_000],
        seconds: 15,
        sustain_seconds: 60,
        sustain_probes: 3,
        memory_events: vec![1_000_000, 10_000_000],
        memory_horizon_ms: None,
        memory_lead_ms: None,
        memory_in_flight: None,
        shoppers: 20_000,
        products: None,
        restart_events: vec![300_000, 3_000_000],
        restart_horizon_ms: None,
        latency_checkpoint_ms: None,
        deliveries: vec!["exactly_once".into(), "at_least_once".into()],
        latency_idle_margin_ms: None,
        latency_tick_ms: None,
        transactions_in_flight: None,
        live_rates: vec![0, 2_000, 10_000],
        live_ticks: vec![5, 100],
        fetch_min_bytes: vec![1],
        checkpoint_events: 1_000_000,
        checkpoint_rate: 1_000,
        checkpoint_seconds: 20,
        checkpoint_interval_ms: 1000,
        checkpoint_full_every: vec![None, Some(10), Some(0)],
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let list = |v: &str| -> Vec<usize> {
        v.split(',')
            .map(|r| r.parse().expect("a comma-separated list of numbers"))
            .collect()
    };
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--phases" => a.phases = value.split(',').map(String::from).collect(),
            "--events" => a.events = value.parse().expect("--events N"),
            "--rates" => a.rates = list(&value).into_iter().map(|r| r as u32).collect(),
            "--seconds" => a.seconds = value.parse().expect("--seconds S"),
            "--sustain-seconds" => a.sustain_seconds = value.parse().expect("--sustain-seconds S"),
            "--sustain-probes" => a.sustain_probes = value.parse().expect("--sustain-probes N"),
            "--memory-events" => a.memory_events = list(&value),
            "--restart-events" => a.restart_events = list(&value),
            "--shoppers" => a.shoppers = value.parse().expect("--shoppers N"),
            "--products" => a.products = Some(value.parse().expect("--products N")),
            "--latency-checkpoint-ms" => {
                a.latency_checkpoint_ms = Some(value.parse().expect("--latency-checkpoint-ms MS"))
            }
            "--latency-idle-margin-ms" => {
                a.latency_idle_margin_ms = Some(value.parse().expect("--latency-idle-margin-ms MS"))
            }
            "--latency-tick-ms" => {
                a.latency_tick_ms = Some(value.parse().expect("--latency-tick-ms MS"))
            }
            "--transactions-in-flight" => {
                a.transactions_in_flight = Some(value.parse().expect("--transactions-in-flight N"))
            }
            "--live-rates" => a.live_rates = list(&value).into_iter().map(|r| r as u32).collect(),
            "--live-ticks" => a.live_ticks = list(&value).into_iter().map(|t| t as u64).collect(),
            "--checkpoint-events" => {
                a.checkpoint_events = value.parse().expect("--checkpoint-events N")
            }
            "--checkpoint-rate" => a.checkpoint_rate = value.parse().expect("--checkpoint-rate R"),
            "--checkpoint-seconds" => {
                a.checkpoint_seconds = value.parse().expect("--checkpoint-seconds S")
            }
            "--checkpoint-interval-ms" => {
                a.checkpoint_interval_ms = value.parse().expect("--checkpoint-interval-ms MS")
            }
            "--checkpoint-full-every" => {
                a.checkpoint_full_every = value
                    .split(',')
                    .map(|v| match v {
                        "off" => None,
                        n => Some(n.parse().expect("--checkpoint-full-every off,10,0")),
                    })
                    .collect()
            }
            "--fetch-min-bytes" => {
                a.fetch_min_bytes = list(&value).into_iter().map(|n| n as u32).collect()
            }
            "--deliveries" => a.deliveries = value.split(',').map(String::from).collect(),
            "--restart-horizon-ms" => {
                a.restart_horizon_ms = Some(value.parse().expect("--restart-horizon-ms MS"))
            }
            "--memory-horizon-ms" => {
                a.memory_horizon_ms = Some(value.parse().expect("--memory-horizon-ms MS"))
            }
            "--memory-lead-ms" => {
                a.memory_lead_ms = Some(value.parse().expect("--memory-lead-ms MS"))
            }
            "--memory-in-flight" => {
                a.memory_in_flight = Some(value.parse().expect("--memory-in-flight N"))
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}
