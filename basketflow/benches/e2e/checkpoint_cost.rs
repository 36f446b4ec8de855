//! Phase `checkpoints` (named with `--phases checkpoints`): what each checkpoint of a live
//! graph over a large state costs, incremental against whole.
//!
//! For each `graph.checkpoint_full_every` of `--checkpoint-full-every` (default `10,0`: parts
//! of changes, then every part whole), on a topic of its own holding the same history
//! (`--checkpoint-events`, default 1 M events of the restart phase's stream: the same
//! shoppers, default horizons), one graph (1 worker, a checkpoint every second) catches up;
//! then the stream goes on live at `--checkpoint-rate` events/s (default 1,000) for
//! `--checkpoint-seconds` (default 20). Of the checkpoints written while it is live: bytes,
//! the slowest operator's encoding stall (`encode_max_ms`: the time its worker thread did
//! nothing else), the writer's time, and how many held parts of changes.

use std::process::Stdio;
use std::time::{Duration, Instant};

use basketflow_testkit::{logged_u64, ChildGuard};
use serde_json::{json, Value};

use crate::phases::{stderr_lines, until_checkpoint};
use crate::report::pct;
use crate::stack::{generator_of, produce, produce_streaming, wall_ms, Graph};
use crate::{Bench, PARTITIONS};

/// The figures of one checkpoint written while live.
struct Written {
    bytes: u64,
    encode_max_ms: u64,
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
    let mut all = Vec::new();
    for &full_every in &args.checkpoint_full_every {
        let topic = format!("bench-ckcost-{full_every}-{suffix}");
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
            &format!("ckcost{full_every}"),
            &topic,
            &format!(
                "[log]\nlevel = \"info\"\n[graph]\ncheckpoint_interval_ms = 1000\ncheckpoint_full_every = {full_every}\n"
            ),
        );
        let mut child =
            ChildGuard::spawn(g.command(1).stdout(Stdio::null()).stderr(Stdio::piped()));
        let lines = stderr_lines(&mut child);
        // Caught up: a checkpoint covers the history.
        let mut log = String::new();
        until_checkpoint(&lines, produced_by, &mut log);
        // Live: the stream goes on at `rate` (paced by the producer).
        let live: Vec<_> = stream
            .by_ref()
            .take(rate as usize * seconds as usize)
            .collect();
        let live_from = wall_ms();
        produce(&topic, &live, Some(rate));
        let live_until = wall_ms();
        // The checkpoints of the live traffic, up to two seconds after its end.
        let mut written = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = lines.recv_timeout(left) else {
                break;
            };
            log.push_str(&line);
            log.push('\n');
            let field = |f| logged_u64(&line, "checkpoint written", f);
            if field("at").is_some_and(|at| at > live_from && at <= live_until + 1_000) {
                written.push(Written {
                    bytes: field("bytes").unwrap_or(0),
                    encode_max_ms: field("encode_max_ms").unwrap_or(0),
                    write_ms: field("write_ms").unwrap_or(0),
                    changes: field("changes").unwrap_or(0),
                });
            }
        }
        assert!(child.terminate(), "sending SIGTERM");
        let status = child
            .wait_for(Duration::from_secs(60))
            .expect("drained within 60 s");
        assert!(status.success(), "the live run exits 0 on SIGTERM:\n{log}");
        assert!(!written.is_empty(), "checkpoints while live:\n{log}");
        std::fs::write(bench.out_dir.join(format!("ckcost{full_every}.log")), &log).unwrap();
        let with_changes = written.iter().filter(|w| w.changes > 0).count();
        let (bytes, bytes_max) = median_max(written.iter().map(|w| w.bytes).collect());
        let (stall, stall_max) = median_max(written.iter().map(|w| w.encode_max_ms).collect());
        let (write, write_max) = median_max(written.iter().map(|w| w.write_ms).collect());
        let r = json!({
            "full_every": full_every, "history_events": n, "rate": rate, "seconds": seconds,
            "shoppers": args.shoppers, "checkpoints": written.len(),
            "with_parts_of_changes": with_changes,
            "bytes_median": bytes, "bytes_max": bytes_max,
            "encode_max_ms_median": stall, "encode_max_ms_max": stall_max,
            "write_ms_median": write, "write_ms_max": write_max,
        });
        println!("checkpoint cost, full_every {full_every}: {r}");
        let mode = if full_every == 0 {
            "every part whole".to_string()
        } else {
            format!("incremental, a whole part at most every {full_every}")
        };
        bench.md.push_str(&format!(
            "| checkpoints while live ({mode}; 1 worker, {n} events of history, {} shoppers, then {rate} events/s for {seconds} s, one a second) | {} checkpoints ({with_changes} with parts of changes): median {:.2} MiB (max {:.2}), the slowest operator stalled {stall} ms encoding (max {stall_max}), written in {write} ms (max {write_max}) |\n",
            args.shoppers,
            written.len(),
            bytes as f64 / 1_048_576.0,
            bytes_max as f64 / 1_048_576.0,
        ));
        all.push(r);
    }
    bench.results["checkpoint_cost"] = Value::Array(all);
}
