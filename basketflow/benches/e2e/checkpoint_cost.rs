//! Phase `checkpoints` (named with `--phases checkpoints`): what each checkpoint of a live
//! graph over a large state costs, incremental against whole.
//!
//! For each `graph.checkpoint_full_every` of `--checkpoint-full-every` (default `off,10,0`:
//! checkpoints off, parts of changes, then every part whole), on a topic of its own holding the same history
//! (`--checkpoint-events`, default 1 M events of the restart phase's stream: the same
//! shoppers, default horizons), one graph (1 worker, a checkpoint every `--checkpoint-interval-ms`, default a second) catches up;
//! then the stream goes on live at `--checkpoint-rate` events/s (default 1,000) for
//! `--checkpoint-seconds` (default 20). Of the checkpoints written while it is live: bytes,
//! the longest an operator stalled encoding (`stall_max_ms`: the time its worker thread did
//! nothing else in one go) and the slowest part's encoding time in all (`encode_max_ms`: with
//! the slices of a whole part written in slices), the writer's time, and how many held parts of changes; and the decisions'
//! latency meanwhile (every live shopper has a tree that decides on each basket change), with
//! the broker's round trip of the same events.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use basketflow_testkit::{logged_u64, ChildGuard};
use rdkafka::Message;
use serde_json::{json, Value};

use crate::phases::{stderr_lines, until_checkpoint, until_line};
use crate::report::{pct, summary};
use crate::stack::{
    generator_of, produce, produce_streaming, since_sent, stages, trees_for, wall_ms, watch,
    watch_decisions, Graph,
};
use crate::{Bench, PARTITIONS};

/// The figures of one checkpoint written while live.
struct Written {
    bytes: u64,
    encode_max_ms: u64,
    stall_max_ms: u64,
    write_ms: u64,
    changes: u64,
}

/// The median and the greatest of `values` (0 without any).
fn median_max(values: Vec<u64>) -> (u64, u64) {
    let mut xs: Vec<f64> = values.into_iter().map(|v| v as f64).collect();
    xs.sort_by(f64::total_cmp);
    let (median, max) = (pct(&xs, 50.0), pct(&xs, 100.0));
    (median as u64, max as u64)
}

/// Runs the phase (see the module docs).
pub fn checkpoint_cost(bench: &mut Bench) {
    let (args, site) = (&bench.args, &bench.site);
    let (stack, suffix) = (&site.stack, &site.suffix);
    let n = args.checkpoint_events;
    let (rate, seconds) = (args.checkpoint_rate, args.checkpoint_seconds);
    let interval = args.checkpoint_interval_ms;
    let mut all = Vec::new();
    for &full_every in &args.checkpoint_full_every {
        let name = full_every.map_or("off".to_string(), |n| n.to_string());
        let topic = format!("bench-ckcost-{name}-{suffix}");
        stack.create_topic(&topic, PARTITIONS, "delete");
        let mut stream = generator_of(
            5,
            basketflow_examples::Config::default().start,
            1_000.0,
            args.shoppers,
            args.products,
        );
        produce_streaming(&topic, stream.by_ref(), n);
        let produced_by = wall_ms();
        let g = Graph::new(
            site,
            &format!("ckcost{name}"),
            &topic,
            &format!(
                "[log]\nlevel = \"info\"\n[graph]\n{}",
                full_every.map_or("checkpoint_interval_ms = 0\n".to_string(), |n| format!(
                    "checkpoint_interval_ms = {interval}\ncheckpoint_full_every = {n}\n"
                ))
            ),
        );
        let mut child =
            ChildGuard::spawn(g.command(1).stdout(Stdio::null()).stderr(Stdio::piped()));
        let lines = stderr_lines(&mut child);
        // Caught up: a checkpoint covers the history (without checkpoints, the graph says so).
        let mut log = String::new();
        match full_every {
            Some(_) => until_checkpoint(&lines, produced_by, &mut log),
            None => until_line(&lines, &mut log, "caught up", |l| {
                l.contains("caught up") && l.contains("messages_read_by_worker")
            }),
        }
        // Live: the stream goes on at `rate` (paced by the producer).
        let live: Vec<_> = stream
            .by_ref()
            .take(rate as usize * seconds as usize)
            .collect();
        // Trees for the live shoppers: each of their basket changes is decided. Decisions,
        // and the events as a plain consumer reads them (the broker's round trip), are
        // watched from here on.
        produce(&format!("bench-trees-{}", g.name), &trees_for(&live), None);
        let stop = Arc::new(AtomicBool::new(false));
        let decisions = watch_decisions(format!("bench-decisions-{}", g.name), stop.clone());
        let round_trip = watch(
            topic.clone(),
            |m| Some((m.partition(), m.offset())),
            stop.clone(),
        );
        std::thread::sleep(Duration::from_millis(500)); // the watchers are assigned
        let live_from = wall_ms();
        let produced = produce(&topic, &live, Some(rate));
        let live_until = wall_ms();
        // The checkpoints of the live traffic, up to two seconds after its end.
        let mut written = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(1_000 + interval);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = lines.recv_timeout(left) else {
                break;
            };
            log.push_str(&line);
            log.push('\n');
            let field = |f| logged_u64(&line, "checkpoint written", f);
            if field("at").is_some_and(|at| at > live_from && at <= live_until + interval) {
                written.push(Written {
                    bytes: field("bytes").unwrap_or(0),
                    encode_max_ms: field("encode_max_ms").unwrap_or(0),
                    // (Before the field existed, parts were encoded in one go.)
                    stall_max_ms: field("stall_max_ms")
                        .or(field("encode_max_ms"))
                        .unwrap_or(0),
                    write_ms: field("write_ms").unwrap_or(0),
                    changes: field("changes").unwrap_or(0),
                });
            }
        }
        stop.store(true, Ordering::Relaxed);
        // The first second is warm-up (the trees are read, consumers' first fetches).
        let warm = rate as usize;
        let decisions = decisions.join().unwrap();
        let [decide, hand, commit] = stages(&produced, warm, &decisions);
        let decisions: HashMap<(i32, i64), Instant> =
            decisions.into_iter().map(|(k, (at, _))| (k, at)).collect();
        let decided = summary(since_sent(&produced, warm, &decisions));
        let read = summary(since_sent(&produced, warm, &round_trip.join().unwrap()));
        assert!(child.terminate(), "sending SIGTERM");
        let status = child
            .wait_for(Duration::from_secs(60))
            .expect("drained within 60 s");
        assert!(status.success(), "the live run exits 0 on SIGTERM:\n{log}");
        assert!(
            full_every.is_none() || !written.is_empty(),
            "checkpoints while live:\n{log}"
        );
        std::fs::write(bench.out_dir.join(format!("ckcost{name}.log")), &log).unwrap();
        let with_changes = written.iter().filter(|w| w.changes > 0).count();
        let (bytes, bytes_max) = median_max(written.iter().map(|w| w.bytes).collect());
        let (stall, stall_max) = median_max(written.iter().map(|w| w.stall_max_ms).collect());
        let (encode, encode_max) = median_max(written.iter().map(|w| w.encode_max_ms).collect());
        let (write, write_max) = median_max(written.iter().map(|w| w.write_ms).collect());
        let r = json!({
            "full_every": full_every, "interval_ms": interval, "history_events": n, "rate": rate, "seconds": seconds,
            "shoppers": args.shoppers, "checkpoints": written.len(),
            "with_parts_of_changes": with_changes,
            "bytes_median": bytes, "bytes_max": bytes_max,
            "stall_max_ms_median": stall, "stall_max_ms_max": stall_max,
            "encode_max_ms_median": encode, "encode_max_ms_max": encode_max,
            "write_ms_median": write, "write_ms_max": write_max,
            "event_to_decision_ms": decided, "broker_round_trip_ms": read,
            "stages_ms": {"appended_to_decided": decide, "decided_to_handed": hand, "handed_to_read": commit},
        });
        println!("checkpoint cost, full_every {name}: {r}");
        let mode = match full_every {
            None => "checkpoints off".to_string(),
            Some(0) => "every part whole".to_string(),
            Some(n) => format!("incremental, a whole part at most every {n}"),
        };
        if full_every.is_some() {
            bench.md.push_str(&format!(
                "| checkpoints while live ({mode}; 1 worker, {n} events of history, {} shoppers, then {rate} events/s for {seconds} s, one every {interval} ms) | {} checkpoints ({with_changes} with parts of changes): median {:.2} MiB (max {:.2}), the longest stall of an operator encoding {stall} ms (max {stall_max}; the slowest part's encoding in all {encode} ms, max {encode_max}), written in {write} ms (max {write_max}) |\n",
                args.shoppers,
                written.len(),
                bytes as f64 / 1_048_576.0,
                bytes_max as f64 / 1_048_576.0,
            ));
        }
        let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        bench.md.push_str(&format!(
            "| decisions meanwhile ({mode}), event -> decision p50 / p99 / max | {:.1} / {:.1} / {:.1} ms (n = {}); p99 {:.1}x the broker round trip ({:.1} / {:.1} / {:.1} ms) |\n",
            f(&decided, "p50"), f(&decided, "p99"), f(&decided, "max"), decided["n"],
            f(&decided, "p99") / f(&read, "p99"),
            f(&read, "p50"), f(&read, "p99"), f(&read, "max"),
        ));
        bench.md.push_str(&format!(
            "| decisions meanwhile ({mode}), stages p50 / p99: appended -> decided; -> handed to the transaction; -> read by the storefront | {:.1} / {:.1}; {:.1} / {:.1}; {:.1} / {:.1} ms |\n",
            f(&decide, "p50"), f(&decide, "p99"), f(&hand, "p50"), f(&hand, "p99"),
            f(&commit, "p50"), f(&commit, "p99"),
        ));
        all.push(r);
    }
    bench.results["checkpoint_cost"] = Value::Array(all);
}
