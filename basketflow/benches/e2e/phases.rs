//! The six measurements (see the crate's docs), each adding its figures to the results and
//! its rows to the table.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basketflow_examples::{Config as GenConfig, Expect, Message as GenMessage};
use basketflow_ingest::parse_event;
use basketflow_testkit::{hostfile, logged_u64, rss_mib, ChildGuard};
use basketflow_vocab::Timestamp;
use rdkafka::Message;
use serde_json::{json, Value};

use crate::report::{plot, summary};
use crate::sampling::{
    arrangement_peaks, at_end_mib, log_instant, neighbours, peak_mib, process_cpu_seconds,
    run_sampled, run_sampled_all, ThreadCpu,
};
use crate::stack::{
    clickhouse_committed, generate, generator_of, kafka_committed_watch, produce,
    produce_streaming, read_all, since_sent, stages, trees_for, wall_ms, watch, watch_decisions,
    Graph, Site,
};
use crate::{Bench, PARTITIONS, TICK_MS};

/// A catch-up run over `topic` (`events` messages): its figures.
///
/// `processes` processes of `workers` workers each (a timely cluster on loopback when more
/// than one): from the first process's cluster formed to the last one stopped; CPU and peak
/// memory summed over the processes.
#[allow(clippy::too_many_arguments)]
pub fn catch_up(
    site: &Site,
    name: &str,
    topic: &str,
    events: usize,
    processes: usize,
    workers: usize,
    arrangement_names: bool,
    sections: &str,
) -> Value {
    let extra =
        format!("arrangement_names = {arrangement_names}\n[log]\nlevel = \"info\"\n{sections}");
    let g = Graph::new(site, name, topic, &extra);
    let cpu = ThreadCpu::default();
    let hosts = (processes > 1).then(|| {
        let dir = site.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        hostfile(&dir, processes)
    });
    let t = Instant::now();
    let children = (0..processes)
        .map(|p| {
            let mut c = g.command(workers);
            if let Some(hosts) = &hosts {
                c.args(["-n", &processes.to_string(), "-p", &p.to_string(), "-h"])
                    .arg(hosts);
            }
            ChildGuard::spawn(
                c.arg("--exit-when-caught-up")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped()),
            )
        })
        .collect();
    let logs = run_sampled_all(children, &cpu);
    let wall = t.elapsed().as_secs_f64();
    // The graphs' logs, kept beside the results (with `MIMALLOC_SHOW_STATS=1` in the bench's
    // environment they end with the allocator's statistics: heap peak against resident peak).
    for (p, log) in logs.iter().enumerate() {
        let file = match processes {
            1 => format!("{name}.log"),
            _ => format!("{name}-{p}.log"),
        };
        std::fs::write(crate::out_dir().join(file), log).unwrap();
    }
    let log = &logs[0];
    let formed = logs
        .iter()
        .filter_map(|l| log_instant(l, "cluster formed"))
        .reduce(f64::min);
    let stopped = logs
        .iter()
        .filter_map(|l| log_instant(l, "msg=stopped"))
        .reduce(f64::max);
    let steady = match (formed, stopped) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall,
    };
    drop(g);
    let groups = cpu.groups();
    let total: f64 = groups.values().sum();
    let per_event_us: BTreeMap<&str, f64> = groups
        .iter()
        .map(|(k, v)| (*k, v * 1e6 / events as f64))
        .collect();
    json!({
        "processes": processes, "workers": workers, "events": events, "wall_seconds": wall,
        "steady_seconds": steady,
        "events_per_s": events as f64 / steady, "events_per_s_with_startup": events as f64 / wall,
        "peak_resident_mib": logs.iter().map(|l| peak_mib(l)).sum::<u64>(),
        "at_end_mib": logs.iter().map(|l| at_end_mib(l)).sum::<u64>(),
        "cpu_seconds": total,
        "cpu_us_per_event": total * 1e6 / events as f64, "cpu_us_per_event_by_group": per_event_us,
        "arrangement_peak_records": arrangement_peaks(log),
    })
}

/// A sustained-rate probe: `rate` open loop for `seconds` on a live graph of `workers`.
pub fn sustain_probe(site: &Site, workers: usize, rate: u32, seconds: u64) -> Value {
    let name = format!("sustain{workers}x{rate}");
    let events = format!("bench-events-{name}-{}", site.suffix);
    site.stack.create_topic(&events, PARTITIONS, "delete");
    let g = Graph::new(site, &name, &events, "[log]\nlevel = \"warn\"\n");
    let messages = generate(
        7,
        rate as usize * seconds as usize,
        Timestamp::now(),
        f64::from(rate),
    );
    let mut graph = ChildGuard::spawn(
        g.command(workers)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    wait_ready(&g);
    let stop = Arc::new(AtomicBool::new(false));
    let kafka = kafka_committed_watch(format!("bench-decisions-{}-progress", g.name), stop.clone());
    let lags: Arc<Mutex<Vec<(f64, u64, u64)>>> = Arc::default();
    let poller = {
        let (stop, lags, kafka) = (stop.clone(), lags.clone(), kafka.clone());
        let database = g.database.to_string();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let now = wall_ms();
                let ch = now.saturating_sub(clickhouse_committed(&database));
                let k = now.saturating_sub(*kafka.lock().unwrap());
                lags.lock()
                    .unwrap()
                    .push((start.elapsed().as_secs_f64(), ch, k));
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    // What each process took of the cores while the rate was offered: the graph, and the
    // neighbours a production graph would not have on its cores (the producer, broker and
    // ClickHouse).
    let mut processes = vec![("graph", graph.id())];
    processes.extend(neighbours());
    let before: Vec<f64> = processes
        .iter()
        .map(|&(_, pid)| process_cpu_seconds(pid))
        .collect();
    let t = Instant::now();
    produce(&events, &messages, Some(rate));
    let produced_in = t.elapsed().as_secs_f64();
    let offered = messages.len() as f64 / produced_in;
    let core_shares: BTreeMap<&str, f64> = processes
        .iter()
        .zip(&before)
        .map(|(&(name, pid), b)| (name, (process_cpu_seconds(pid) - b) / produced_in))
        .collect();
    // Caught up within 10 s of the end?
    let end = wall_ms();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut caught_up = false;
    while Instant::now() < deadline {
        if g.clickhouse_committed() >= end && *kafka.lock().unwrap() >= end {
            caught_up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    let _ = graph.terminate();
    let _ = graph.wait();
    drop(g);
    let lags = lags.lock().unwrap().clone();
    let measured: Vec<&(f64, u64, u64)> = lags.iter().filter(|(s, _, _)| *s >= 5.0).collect();
    let max_ch = measured.iter().map(|l| l.1).max().unwrap_or(u64::MAX);
    let max_kafka = measured.iter().map(|l| l.2).max().unwrap_or(u64::MAX);
    let sustained = caught_up && max_ch <= 5_000 && max_kafka <= 5_000;
    println!("sustain, {workers} worker(s), {rate}/s for {seconds} s (offered {offered:.0}/s): max lag ClickHouse {max_ch} ms, decisions {max_kafka} ms, caught up after: {caught_up} -> {}; cores taken: {}", if sustained { "sustained" } else { "not sustained" }, shares_text(&core_shares));
    json!({"workers": workers, "rate": rate, "offered_per_s": offered, "seconds": seconds,
        "max_clickhouse_lag_ms": max_ch, "max_decisions_lag_ms": max_kafka, "caught_up_after": caught_up, "sustained": sustained,
        "core_shares": core_shares})
}

/// `graph 1.21, producer 0.18, ...`: cores taken by each process.
fn shares_text(shares: &BTreeMap<&str, f64>) -> String {
    shares
        .iter()
        .map(|(name, share)| format!("{name} {share:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Live cost (`--phases livecost`): a live 2-worker graph's CPU, by thread group, while
/// `--live-rates` are offered open loop for `--seconds`, for each of `--live-ticks`
/// (`graph.tick_ms`); rate 0 is the idle graph. Against the catch-up's CPU per event it says
/// what a live event costs; across ticks, what each logical time costs.
pub fn live_cost(bench: &mut Bench) {
    let (args, site) = (&bench.args, &bench.site);
    let (md, results) = (&mut bench.md, &mut bench.results);
    let mut all = Vec::new();
    for &tick in &args.live_ticks {
        for (&rate, &fetch) in args
            .live_rates
            .iter()
            .flat_map(|r| args.fetch_min_bytes.iter().map(move |f| (r, f)))
        {
            let name = match fetch {
                1 => format!("live{rate}t{tick}"),
                _ => format!("live{rate}t{tick}f{fetch}"),
            };
            let fetch_text = match fetch {
                1 => String::new(),
                _ => format!(", fetch.min.bytes {fetch}"),
            };
            let events = format!("bench-events-{name}-{}", site.suffix);
            site.stack.create_topic(&events, PARTITIONS, "delete");
            let g = Graph::new(
                site,
                &name,
                &events,
                &format!("[graph]\ntick_ms = {tick}\n[log]\nlevel = \"warn\"\n"),
            );
            let messages = generate(
                11,
                rate as usize * args.seconds as usize,
                Timestamp::now(),
                f64::from(rate.max(1)),
            );
            let mut graph = ChildGuard::spawn(
                g.command(2)
                    .env("BASKETFLOW_KAFKA_FETCH_MIN_BYTES", fetch.to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit()),
            );
            wait_ready(&g);
            let (before, after) = (ThreadCpu::default(), ThreadCpu::default());
            before.sample(graph.id());
            let t = Instant::now();
            if rate > 0 {
                produce(&events, &messages, Some(rate));
            } else {
                std::thread::sleep(Duration::from_secs(args.seconds));
            }
            after.sample(graph.id());
            let seconds = t.elapsed().as_secs_f64();
            let _ = graph.terminate();
            let _ = graph.wait();
            drop(g);
            let before = before.groups();
            let cores: BTreeMap<&str, f64> = after
                .groups()
                .into_iter()
                .map(|(k, v)| (k, (v - before.get(k).copied().unwrap_or(0.0)) / seconds))
                .collect();
            let total: f64 = cores.values().sum();
            let per_event_us = (rate > 0).then(|| total * 1e6 / f64::from(rate));
            println!(
                "live cost, {rate}/s, tick {tick} ms{fetch_text}: graph {total:.2} cores ({}){}",
                shares_text(&cores),
                per_event_us.map_or(String::new(), |us| format!(", {us:.1} µs/event"))
            );
            md.push_str(&format!(
                "| live cost, {}, tick {tick} ms{fetch_text}, 2 workers, {} s | graph {total:.2} cores ({}){} |\n",
                if rate == 0 { "idle".to_string() } else { format!("{rate} events/s") },
                args.seconds,
                shares_text(&cores),
                per_event_us.map_or(String::new(), |us| format!("; {us:.1} µs of CPU per event"))
            ));
            all.push(
                json!({"rate": rate, "tick_ms": tick, "fetch_min_bytes": fetch, "seconds": seconds,
                "cores": total, "cores_by_group": cores, "cpu_us_per_event": per_event_us}),
            );
        }
    }
    results["live_cost"] = json!(all);
}

/// The latency phase's label of a graph: its delivery mode, and its `kafka.fetch_min_bytes`
/// when that is not the default (1).
fn fetch_label(delivery: &str, fetch: u32) -> String {
    match fetch {
        1 => delivery.to_string(),
        _ => format!("{delivery}_fetch{fetch}"),
    }
}

/// Waits until the graph has committed a first batch (idle partitions follow the wall clock).
pub fn wait_ready(g: &Graph) {
    let ready = Instant::now();
    while g.clickhouse_committed() == 0 {
        assert!(
            ready.elapsed() < Duration::from_secs(120),
            "the live graph did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Phase 1, baselines: the backlog produced (the producer's rate) and read back by a plain consumer
/// (the raw consumer's rate, read_committed); the parse stage alone, in this process.
pub fn baseline(bench: &mut Bench) {
    let (args, stack, backlog) = (&bench.args, &bench.site.stack, &bench.backlog);
    let (md, results) = (&mut bench.md, &mut bench.results);
    stack.create_topic(backlog, PARTITIONS, "delete");
    let messages = generate(1, args.events, GenConfig::default().start, 1_000.0);
    let bytes = messages.iter().map(|m| m.payload.len()).sum::<usize>() / args.events;
    let t = Instant::now();
    produce(backlog, &messages, None);
    let produce_rate = args.events as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    assert_eq!(read_all(backlog), args.events);
    let consume_rate = args.events as f64 / t.elapsed().as_secs_f64();
    // The parse stage alone, in this process, on one thread.
    let t = Instant::now();
    let valid = messages
        .iter()
        .filter(|m| parse_event(&m.payload).is_ok())
        .count();
    let parse_us = t.elapsed().as_secs_f64() * 1e6 / args.events as f64;
    println!("baseline: produce {produce_rate:.0}/s, raw consumer {consume_rate:.0}/s ({bytes} bytes/message); parse {parse_us:.2} us/message ({valid} valid)");
    results["baseline"] = json!({"produce_per_s": produce_rate, "consume_per_s": consume_rate, "bytes_per_message": bytes, "parse_us_per_message": parse_us});
    md.push_str(&format!("| producer, ~{bytes} B messages | {produce_rate:.0} msg/s |\n| raw consumer (read_committed) | {consume_rate:.0} msg/s |\n| parse + validate, one thread | {parse_us:.1} µs/message |\n"));
    bench.consume_rate = consume_rate;
}

/// Phase 2, catch-up throughput over the backlog, on 1 and 2 workers.
pub fn catchup(bench: &mut Bench) {
    let (args, site, backlog) = (&bench.args, &bench.site, &bench.backlog);
    let (md, results) = (&mut bench.md, &mut bench.results);
    let (consume_rate, catchup_rates) = (bench.consume_rate, &mut bench.catchup_rates);
    let mut all = Vec::new();
    for workers in [1usize, 2] {
        let r = catch_up(
            site,
            &format!("catchup{workers}"),
            backlog,
            args.events,
            1,
            workers,
            false,
            "",
        );
        println!("catch-up, {workers} worker(s): {r}");
        let rate = r["events_per_s"].as_f64().unwrap();
        catchup_rates.insert(workers, rate);
        md.push_str(&format!(
            "| catch-up, {workers} worker(s) | {rate:.0} events/s ({:.0} with start-up), {:.2} of the raw consumer; peak {} MiB; CPU {:.1} µs/event ({}) |\n",
            r["events_per_s_with_startup"].as_f64().unwrap(),
            rate / consume_rate,
            r["peak_resident_mib"],
            r["cpu_us_per_event"].as_f64().unwrap(),
            cpu_by_group(&r)
        ));
        all.push(r);
    }
    results["catch_up"] = json!(all);
}

/// A catch-up's CPU per event by thread group, for the table (`workers 6.8, ...`).
fn cpu_by_group(r: &Value) -> String {
    let by = r["cpu_us_per_event_by_group"].as_object().unwrap();
    by.iter()
        .map(|(k, v)| format!("{k} {:.1}", v.as_f64().unwrap()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Scale-out: the backlog caught up by 1 process x 2 workers and by 2 processes x 1 worker
/// (a cluster on loopback: exchanges between the processes are serialized and sent over TCP),
/// alternated twice on the same machine: what the exchange between processes costs.
pub fn scaleout(bench: &mut Bench) {
    let (args, site, backlog) = (&bench.args, &bench.site, &bench.backlog);
    let (md, results) = (&mut bench.md, &mut bench.results);
    let mut all = Vec::new();
    for round in 1..=2 {
        for (processes, workers) in [(1usize, 2usize), (2, 1)] {
            let r = catch_up(
                site,
                &format!("scaleout{round}p{processes}w{workers}"),
                backlog,
                args.events,
                processes,
                workers,
                false,
                "",
            );
            println!(
                "scale-out, round {round}, {processes} process(es) x {workers} worker(s): {r}"
            );
            md.push_str(&format!(
                "| catch-up, {processes} process(es) x {workers} worker(s), round {round} | {:.0} events/s; CPU {:.1} µs/event ({}); peak {} MiB over the processes |\n",
                r["events_per_s"].as_f64().unwrap(),
                r["cpu_us_per_event"].as_f64().unwrap(),
                cpu_by_group(&r),
                r["peak_resident_mib"],
            ));
            all.push(r);
        }
    }
    results["scale_out"] = json!(all);
}

/// Phase 3, the highest sustained rate on 1 and 2 workers, probed from 80% of the catch-up rate.
pub fn sustain(bench: &mut Bench) {
    let (args, site) = (&bench.args, &bench.site);
    let (md, results) = (&mut bench.md, &mut bench.results);
    let (consume_rate, catchup_rates) = (bench.consume_rate, &bench.catchup_rates);
    let mut all = Vec::new();
    for workers in [1usize, 2] {
        let start = catchup_rates.get(&workers).copied().unwrap_or(20_000.0) * 0.8;
        let mut rate = ((start / 1_000.0).round() * 1_000.0).max(1_000.0) as u32;
        let mut best: Option<u32> = None;
        for _ in 0..args.sustain_probes {
            let r = sustain_probe(site, workers, rate, args.sustain_seconds);
            let ok = r["sustained"].as_bool().unwrap_or(false);
            all.push(r);
            if ok {
                best = Some(best.map_or(rate, |b| b.max(rate)));
                rate = (f64::from(rate) * 1.2 / 1_000.0).round() as u32 * 1_000;
            } else {
                rate = ((f64::from(rate) * 0.75 / 1_000.0).round() as u32 * 1_000).max(1_000);
            }
            if best.is_some_and(|b| rate <= b) {
                break;
            }
        }
        // The cores each process took at the highest sustained rate (or the last probe).
        let shares = all
            .iter()
            .rev()
            .find(|r| r["workers"] == workers && best.is_some_and(|b| r["rate"] == b))
            .or_else(|| all.last())
            .and_then(|r| r["core_shares"].as_object())
            .map(|o| {
                o.iter()
                    .map(|(k, v)| format!("{k} {:.2}", v.as_f64().unwrap_or(f64::NAN)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        md.push_str(&format!(
            "| highest sustained rate, {workers} worker(s), {} s | {}; cores taken at that rate (or the last probe): {shares} |\n",
            args.sustain_seconds,
            best.map_or("none of the probes".into(), |b| {
                if consume_rate.is_finite() {
                    format!(
                        "{b} events/s ({:.2} of the raw consumer)",
                        f64::from(b) / consume_rate
                    )
                } else {
                    // The baseline phase did not run: no raw consumer rate to compare.
                    format!("{b} events/s")
                }
            })
        ));
        results[format!("sustained_{workers}w")] = json!(best);
    }
    results["sustain_probes"] = json!(all);
}

/// Phase 4, latency on a live 2-worker graph, per offered rate.
pub fn latency(bench: &mut Bench) {
    for delivery in bench.args.deliveries.clone() {
        for fetch in bench.args.fetch_min_bytes.clone() {
            latency_of(bench, &delivery, fetch);
        }
    }
}

/// The latency phase with one delivery mode (`exactly_once` or `at_least_once`) and one
/// `kafka.fetch_min_bytes`: its own topics, graph and rows, labelled by the mode (and the
/// fetch size when it is not the default).
fn latency_of(bench: &mut Bench, delivery: &str, fetch: u32) {
    let label = &fetch_label(delivery, fetch);
    let (args, site) = (&bench.args, &bench.site);
    let (stack, suffix) = (&site.stack, &site.suffix);
    let (md, results) = (&mut bench.md, &mut bench.results);
    let live_events = format!("bench-live-{label}-{suffix}");
    stack.create_topic(&live_events, PARTITIONS, "delete");
    let mut graph_keys = args.latency_checkpoint_ms.map_or(String::new(), |ms| {
        format!("checkpoint_interval_ms = {ms}\n")
    });
    if let Some(ms) = args.latency_idle_margin_ms {
        graph_keys.push_str(&format!("idle_margin_ms = {ms}\n"));
    }
    if let Some(ms) = args.latency_tick_ms {
        graph_keys.push_str(&format!("tick_ms = {ms}\n"));
    }
    let g = Graph::new(
        site,
        &format!("live_{label}"),
        &live_events,
        &format!("[graph]\nflush_interval_ms = 5\n{graph_keys}[log]\nlevel = \"info\"\n"),
    );
    let traffic: Vec<(u32, Vec<GenMessage>)> = args
        .rates
        .iter()
        .enumerate()
        .map(|(i, &r)| {
            let n = r as usize * args.seconds as usize;
            (
                r,
                generate(100 + i as u64, n, Timestamp::now(), f64::from(r)),
            )
        })
        .collect();
    let trees = trees_for(traffic.iter().flat_map(|(_, ms)| ms));
    produce(&format!("bench-trees-{}", g.name), &trees, None);
    // Its metrics, scraped around each rate: the messages clamped at that rate.
    let metrics_port = basketflow_testkit::free_port();
    let mut command = g.command(2);
    if let Some(n) = args.transactions_in_flight {
        command.env("BASKETFLOW_KAFKA_TRANSACTIONS_IN_FLIGHT", n.to_string());
    }
    let mut graph = ChildGuard::spawn(
        command
            .env("BASKETFLOW_KAFKA_DELIVERY", delivery)
            .env("BASKETFLOW_KAFKA_FETCH_MIN_BYTES", fetch.to_string())
            .env(
                "BASKETFLOW_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    // The graph's log, kept beside the results.
    let log = {
        let stderr = graph.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut { stderr }, &mut s).unwrap();
            s
        })
    };
    wait_ready(&g);
    let mut latency = Vec::new();
    let tick = args.latency_tick_ms.map_or(TICK_MS, |t| t as i64);
    for (rate, ms) in &traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let decisions = watch_decisions(format!("bench-decisions-{}", g.name), stop.clone());
        let round_trip = watch(
            live_events.clone(),
            |m| Some((m.partition(), m.offset())),
            stop.clone(),
        );
        // ClickHouse's committed time, every 10 ms: (instant, committed logical time).
        let committed: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
        let poller = {
            let (stop, committed, database) =
                (stop.clone(), committed.clone(), g.database.to_string());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t = clickhouse_committed(&database);
                    committed.lock().unwrap().push((Instant::now(), t));
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(500)); // the watchers are assigned
        let before = clamped_and_consumed(metrics_port);
        let produced = produce(&live_events, ms, Some(*rate));
        std::thread::sleep(Duration::from_secs(5)); // the last decisions arrive
        let after = clamped_and_consumed(metrics_port);
        let clamped_at_rate =
            json!({"clamped": after.0 - before.0, "consumed": after.1 - before.1});
        stop.store(true, Ordering::Relaxed);
        let (decided, read) = (decisions.join().unwrap(), round_trip.join().unwrap());
        // Where a decision's time goes, per decision, from the event's append to the broker:
        // until its worker decided it (the time complete on every source partition, then
        // the tree walk), until its transaction was handed over (the time complete at the
        // outputs operator on worker 0, and the previous transaction committed), and until
        // the storefront read it (the transaction, and a read_committed fetch).
        let stages = stages(&produced, *rate as usize, &decided);
        let decided: HashMap<(i32, i64), Instant> =
            decided.into_iter().map(|(k, (at, _))| (k, at)).collect();
        poller.join().unwrap();
        // The first second is warm-up (consumers' first fetches): not measured.
        let warm = *rate as usize;
        let ms_of = |seen: &HashMap<(i32, i64), Instant>| since_sent(&produced, warm, seen);
        // Orders: visible once ClickHouse's committed time reaches their logical time.
        let committed = committed.lock().unwrap().clone();
        let visible: Vec<f64> = ms
            .iter()
            .zip(produced.landed.iter().zip(&produced.sent))
            .skip(warm)
            .filter(|(m, _)| m.kind == "order_paid" && matches!(m.expect, Expect::Valid))
            .filter_map(|(_, (l, s))| {
                let broker_ms = (*l)?.broker_ms;
                let time = ((broker_ms + tick - 1) / tick * tick) as u64;
                let i = committed.partition_point(|(_, c)| *c < time);
                committed
                    .get(i)
                    .map(|(at, _)| at.saturating_duration_since(*s).as_secs_f64() * 1e3)
            })
            .collect();
        let (d, r, v) = (
            summary(ms_of(&decided)),
            summary(ms_of(&read)),
            summary(visible),
        );
        let [decide, hand, commit] = stages;
        println!("{label}, rate {rate}/s: event -> decision {d}; broker round trip {r}; order -> sold_products_daily {v}");
        println!("{label}, rate {rate}/s stages: appended -> decided {decide}; decided -> handed to the transaction {hand}; handed -> read by the storefront {commit}");
        latency.push(json!({"rate": rate, "event_to_decision_ms": d, "broker_round_trip_ms": r, "order_to_clickhouse_ms": v,
            "stages_ms": {"appended_to_decided": decide, "decided_to_handed": hand, "handed_to_read": commit},
            "messages": clamped_at_rate,
            "p99_ratio": d["p99"].as_f64().unwrap_or(f64::NAN) / r["p99"].as_f64().unwrap_or(f64::NAN)}));
    }
    let _ = graph.terminate();
    let _ = graph.wait();
    let log = log.join().unwrap();
    std::fs::write(bench.out_dir.join(format!("latency-{label}.log")), &log).unwrap();
    drop(g);
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    for l in &latency {
        let (d, r, v) = (
            &l["event_to_decision_ms"],
            &l["broker_round_trip_ms"],
            &l["order_to_clickhouse_ms"],
        );
        let st = &l["stages_ms"];
        md.push_str(&format!(
            "| {label}, {} events/s, messages clamped (read later than the idle margin after their partition's bound) | {} of {} |\n",
            l["rate"], l["messages"]["clamped"], l["messages"]["consumed"]
        ));
        md.push_str(&format!(
            "| {label}, {} events/s, stages p50 / p99: appended -> decided; -> handed to the transaction; -> read by the storefront | {:.1} / {:.1}; {:.1} / {:.1}; {:.1} / {:.1} ms |\n",
            l["rate"],
            f(&st["appended_to_decided"], "p50"), f(&st["appended_to_decided"], "p99"),
            f(&st["decided_to_handed"], "p50"), f(&st["decided_to_handed"], "p99"),
            f(&st["handed_to_read"], "p50"), f(&st["handed_to_read"], "p99"),
        ));
        md.push_str(&format!(
            "| {label}, {} events/s, event -> decision p50 / p95 / p99 / max | {:.1} / {:.1} / {:.1} / {:.1} ms (n = {}); p99 {:.1}x the broker round trip ({:.1} / {:.1} / {:.1} / {:.1} ms) |\n| {label}, {} events/s, order -> sold_products_daily p50 / p99 / max | {:.0} / {:.0} / {:.0} ms (n = {}) |\n",
            l["rate"], f(d, "p50"), f(d, "p95"), f(d, "p99"), f(d, "max"), d["n"],
            f(l, "p99_ratio"), f(r, "p50"), f(r, "p95"), f(r, "p99"), f(r, "max"),
            l["rate"], f(v, "p50"), f(v, "p99"), f(v, "max"), v["n"],
        ));
    }
    // The default mode keeps the plot's old name (the README shows it).
    let svg = match label.as_str() {
        "exactly_once" => "latency.svg".to_string(),
        _ => format!("latency-{label}.svg"),
    };
    std::fs::write(bench.out_dir.join(svg), plot(&latency)).unwrap();
    results["latency"][label.as_str()] = json!(latency);
}

/// The sums of `basketflow_messages_clamped_total` and `basketflow_messages_consumed_total`
/// (every topic) on the metrics endpoint at `port`.
fn clamped_and_consumed(port: u16) -> (u64, u64) {
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "scraping the graph's metrics on port {port}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let sum = |name: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    (
        sum("basketflow_messages_clamped_total"),
        sum("basketflow_messages_consumed_total"),
    )
}

/// `, N products` when the stream's catalogue is not the generator's default.
fn products_label(products: Option<u32>) -> String {
    products.map_or(String::new(), |p| format!(", {p} products per retailer"))
}

/// Phase 5, peak memory after 1 M and 10 M events of one stream.
pub fn memory(bench: &mut Bench) {
    let (args, site) = (&bench.args, &bench.site);
    let (stack, suffix) = (&site.stack, &site.suffix);
    let (md, results) = (&mut bench.md, &mut bench.results);
    let mut all = Vec::new();
    for &n in &args.memory_events {
        let topic = format!("bench-memory-{n}-{suffix}");
        stack.create_topic(&topic, PARTITIONS, "delete");
        let stream = generator_of(
            3,
            GenConfig::default().start,
            1_000.0,
            args.shoppers,
            args.products,
        );
        produce_streaming(&topic, stream, n);
        // With a horizon, every horizon and the retention period are that short, so that
        // both runs pass them and the state that remains is what they leave.
        // A short lead bounds the data in flight (a backlog produced at 250,000 messages/s
        // packs 2.5 M into the default 10 s), so that the peak compares state with state.
        let mut graph = String::from("[graph]\n");
        let mut privacy = String::new();
        if let Some(h) = args.memory_horizon_ms {
            graph.push_str(&format!("dedup_horizon_ms = {h}\nsettlement_ms = {h}\n"));
            privacy.push_str(&format!("[privacy]\nretention_ms = {h}\n"));
        }
        if let Some(lead) = args.memory_lead_ms {
            graph.push_str(&format!("max_sink_lag_ms = {lead}\n"));
        }
        if let Some(n) = args.memory_in_flight {
            graph.push_str(&format!("max_in_flight_messages = {n}\n"));
        }
        let sections = format!("{graph}{privacy}");
        let r = catch_up(
            site,
            &format!("memory{n}"),
            &topic,
            n,
            1,
            1,
            true,
            &sections,
        );
        println!("memory, {n} events: {r}");
        md.push_str(&format!(
            "| peak resident memory after {n} events (1 worker, {} shoppers{}{}{}{}) | {} MiB peak, {} MiB at the end (finished operators may have dropped their state: not a state figure; see the restart phase) ({:.0} events/s) |\n",
            args.shoppers,
            products_label(args.products),
            args.memory_horizon_ms.map_or(String::new(), |h| format!(
                ", horizons and retention {h} ms"
            )),
            args.memory_lead_ms
                .map_or(String::new(), |l| format!(", max_sink_lag_ms {l}")),
            args.memory_in_flight
                .map_or(String::new(), |n| format!(", max_in_flight_messages {n}")),
            r["peak_resident_mib"],
            r["at_end_mib"],
            r["events_per_s"].as_f64().unwrap()
        ));
        all.push(r);
    }
    if let (Some(first), Some(last)) = (all.first(), all.last()) {
        let ratio = last["peak_resident_mib"].as_f64().unwrap()
            / first["peak_resident_mib"].as_f64().unwrap().max(1.0);
        let rest = last["at_end_mib"].as_f64().unwrap_or(0.0)
            / first["at_end_mib"].as_f64().unwrap_or(0.0).max(1.0);
        md.push_str(&format!(
            "| memory ratio, last / first | {ratio:.2} peak, {rest:.2} at the end |\n"
        ));
        results["memory_ratio"] = json!(ratio);
        results["memory_ratio_at_end"] = json!(rest);
        // Where the records are: the largest arrangements of the last run, beside the first.
        let peaks = |r: &Value| -> BTreeMap<String, i64> {
            serde_json::from_value::<Vec<(String, i64)>>(r["arrangement_peak_records"].clone())
                .unwrap_or_default()
                .into_iter()
                .collect()
        };
        let (p_first, p_last) = (peaks(first), peaks(last));
        let mut largest: Vec<(&String, &i64)> = p_last.iter().collect();
        largest.sort_by(|a, b| b.1.cmp(a.1));
        for (name, n) in largest.into_iter().take(8) {
            md.push_str(&format!(
                "| peak records, `{name}` | {} after {} events, {n} after {} |\n",
                p_first.get(name).copied().unwrap_or(0),
                first["events"],
                last["events"]
            ));
        }
    }
    results["memory"] = json!(all);
}

/// The lines of a child's standard error, as they come.
pub fn stderr_lines(child: &mut ChildGuard) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("piped stderr");
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = send.send(line);
        }
    });
    lines
}

/// Reads `lines` into `log` until one says a checkpoint at or after `covering` (broker ms) was
/// written (panics after 600 s without a line).
pub fn until_checkpoint(
    lines: &std::sync::mpsc::Receiver<String>,
    covering: u64,
    log: &mut String,
) {
    until_line(lines, log, "a checkpoint covering the history", |line| {
        line.contains("checkpoint written")
            && logged_u64(line, "checkpoint written", "at").is_some_and(|at| at >= covering)
    });
}

/// Reads `lines` into `log` until one satisfies `is_it` (panics after 600 s without a line,
/// saying it waited for `what`).
pub fn until_line(
    lines: &std::sync::mpsc::Receiver<String>,
    log: &mut String,
    what: &str,
    is_it: impl Fn(&str) -> bool,
) {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(600))
            .unwrap_or_else(|_| panic!("no line within 600 s while waiting for {what}:\n{log}"));
        log.push_str(&line);
        log.push('\n');
        if is_it(&line) {
            return;
        }
    }
}

/// Runs `g` live on 1 worker until it logs a checkpoint at or after `covering` (broker ms),
/// then SIGTERM; returns its log and its resident memory (MiB) when that checkpoint was
/// written: caught up, with its whole state and no backlog in flight.
fn run_until_checkpoint(g: &Graph, covering: u64) -> (String, u64) {
    let mut child = ChildGuard::spawn(g.command(1).stdout(Stdio::null()).stderr(Stdio::piped()));
    let received = stderr_lines(&mut child);
    let mut log = String::new();
    until_checkpoint(&received, covering, &mut log);
    let rss = rss_mib(child.id());
    assert!(child.terminate(), "sending SIGTERM");
    let status = child
        .wait_for(Duration::from_secs(60))
        .expect("drained within 60 s");
    assert!(status.success(), "the live run exits 0 on SIGTERM");
    log.extend(received.try_iter().map(|l| l + "\n"));
    (log, rss)
}

/// Phase 6, restart time against history: for each history length (one stream, the same
/// shoppers), a live run writes checkpoints every second until one covers the history and is
/// stopped; 10,000 more messages come; then the time from start to caught up is measured
/// twice: from the checkpoint, and replaying the whole log (checkpoints off).
pub fn restart(bench: &mut Bench) {
    let (args, site) = (&bench.args, &bench.site);
    let (stack, suffix) = (&site.stack, &site.suffix);
    let (md, results) = (&mut bench.md, &mut bench.results);
    const TAIL: usize = 10_000;
    let out_dir = bench.out_dir.clone();
    let mut all = Vec::new();
    for &n in &args.restart_events {
        let topic = format!("bench-restart-{n}-{suffix}");
        stack.create_topic(&topic, PARTITIONS, "delete");
        let mut stream = generator_of(
            5,
            GenConfig::default().start,
            1_000.0,
            args.shoppers,
            args.products,
        );
        produce_streaming(&topic, stream.by_ref(), n);
        let produced_by = wall_ms();
        // With a horizon, every horizon and the retention period are that short: the state
        // is then bounded by live keys, as in production over a long history.
        let horizons = args.restart_horizon_ms.map_or(String::new(), |h| {
            format!("dedup_horizon_ms = {h}\nsettlement_ms = {h}\n[privacy]\nretention_ms = {h}\n")
        });
        let g = Graph::new(
            site,
            &format!("restart{n}"),
            &topic,
            &format!("[log]\nlevel = \"info\"\n[graph]\ncheckpoint_interval_ms = 1000\n{horizons}"),
        );
        let history = Instant::now();
        let (first, live_rss_mib) = run_until_checkpoint(&g, produced_by);
        // The state by operator, as the covering checkpoint wrote it.
        let parts = first
            .lines()
            .rev()
            .find(|l| l.contains("checkpoint written"))
            .and_then(|l| {
                // logfmt quotes the value (it holds `=`): `parts="A=1,B=2"`.
                let rest = &l[l.find("parts=")? + "parts=".len()..];
                let rest = rest.trim_start_matches('"');
                Some(rest[..rest.find(['"', ' ']).unwrap_or(rest.len())].to_string())
            })
            .unwrap_or_default();
        let history_s = history.elapsed().as_secs_f64();
        let bytes = logged_u64(&first, "checkpoint written", "bytes").unwrap_or(0);
        let write_ms = logged_u64(&first, "checkpoint written", "write_ms").unwrap_or(0);
        // How long the slowest operator stalled encoding its part (on its worker thread).
        let encode_max_ms = logged_u64(&first, "checkpoint written", "encode_max_ms").unwrap_or(0);
        produce_streaming(&topic, stream.by_ref(), TAIL);
        let timed = |g: &Graph| {
            let t = Instant::now();
            let log = run_sampled(
                ChildGuard::spawn(
                    g.command(1)
                        .arg("--exit-when-caught-up")
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped()),
                ),
                &ThreadCpu::default(),
            );
            (t.elapsed().as_secs_f64(), log)
        };
        let (restart_s, log) = timed(&g);
        // The restart's own log, kept beside the results (where its seconds went).
        std::fs::write(out_dir.join(format!("restart{n}.log")), &log).unwrap();
        let restored_at = logged_u64(&log, "starting from the checkpoint", "at").unwrap_or(0);
        assert!(
            restored_at > 0,
            "the restart starts from a checkpoint:\n{log}"
        );
        let load_ms = logged_u64(&log, "starting from the checkpoint", "load_ms").unwrap_or(0);
        let read = logged_u64(&log, "msg=stopped", "messages").unwrap_or(0);
        drop(g);
        let full = Graph::new(
            site,
            &format!("replay{n}"),
            &topic,
            &format!("[log]\nlevel = \"info\"\n[graph]\ncheckpoint_interval_ms = 0\n{horizons}"),
        );
        let (replay_s, _) = timed(&full);
        drop(full);
        let r = json!({
            "history_events": n, "tail_events": TAIL, "history_run_seconds": history_s,
            "checkpoint_bytes": bytes, "checkpoint_write_ms": write_ms,
            "checkpoint_encode_max_ms": encode_max_ms, "shoppers": args.shoppers,
            "live_resident_mib": live_rss_mib, "checkpoint_parts": parts,
            "restart_seconds": restart_s, "checkpoint_load_ms": load_ms,
            "restart_messages_read": read, "full_replay_seconds": replay_s,
        });
        println!("restart after {n} events: {r}");
        md.push_str(&format!(
            "| restart after {n} events of history + {TAIL} new (1 worker, {} shoppers{}{}) | {restart_s:.1} s from the checkpoint ({read} messages read, checkpoint {:.1} MiB loaded in {load_ms} ms, written in {write_ms} ms, the slowest operator stalled {encode_max_ms} ms encoding its part; {live_rss_mib} MiB resident when it was written; state by operator, bytes: {parts}); {replay_s:.1} s replaying the whole log |\n",
            args.shoppers,
            products_label(args.products),
            args.restart_horizon_ms
                .map_or(String::new(), |h| format!(", horizons and retention {h} ms")),
            bytes as f64 / 1_048_576.0
        ));
        all.push(r);
    }
    if let (Some(first), Some(last)) = (all.first(), all.last()) {
        let ratio = last["restart_seconds"].as_f64().unwrap()
            / first["restart_seconds"].as_f64().unwrap().max(1e-3);
        md.push_str(&format!(
            "| restart ratio, {} / {} events of history | {ratio:.2} |\n",
            last["history_events"], first["history_events"]
        ));
        results["restart_ratio"] = json!(ratio);
    }
    results["restart"] = json!(all);
}
