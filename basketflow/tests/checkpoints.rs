//! Integration: a restart starts from the latest checkpoint and replays only what came after
//! it, on another number of workers too, and the outputs stay exact and exactly-once.
//!
//! Generated traffic (bad events and duplicates included, a tree for every shopper) through
//! the real broker and ClickHouse: a first, live run on 1 worker writes checkpoints every
//! 500 ms and is stopped (SIGTERM) once one covers all the traffic so far; more traffic
//! comes; a second run on 2 workers must start from a checkpoint (it says so, and reads
//! only the messages after it), and then every analyst view
//! must equal the oracle over all the traffic, every bad message must be one dead letter, and
//! the decisions on Kafka and in ClickHouse must be exactly those of a sequential replay,
//! once each.
//!
//! Needs `scripts/stack up`; topics and a database of its own, deleted at the end.

mod support;

use std::collections::BTreeSet;
use std::process::Stdio;

use basketflow_testkit::{logged_u64, Stack};
use support::{basketflow, now_ms, run_until_checkpoint_where, GraphStack, TestRun, Traffic};

/// Runs `basketflow run` to caught-up with `args`; returns its log (stdout and stderr).
fn run_logged(config: &std::path::Path, workers: &str) -> String {
    let out = basketflow()
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--exit-when-caught-up",
            "-w",
            workers,
        ])
        .env_remove("BASKETFLOW_CLICKHOUSE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("basketflow runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the run failed:\n{log}");
    log
}

#[test]
fn a_restart_starts_from_a_checkpoint_and_stays_exact_on_another_shape() {
    let stack = Stack::shared();
    let run = TestRun::create(
        &stack,
        "ck",
        8,
        &[("cleanup.policy", "compact")],
        // Whole parts only when the changes outweigh the state: the restart reads a chain.
        "[graph]\ncheckpoint_interval_ms = 500\ncheckpoint_full_every = 1000\n",
    );
    let (events, rejected, decisions, database) =
        (&run.events, &run.rejected, &run.decisions, &run.database);
    let config = run.config.clone();
    let traffic = Traffic::generate(20_261_203, 24_000, 1_500);
    traffic.produce_trees(&stack, &run.trees);
    let split = traffic.messages.len() * 2 / 3;
    let mut landed = stack.produce(events, &traffic.messages[..split]);
    // Every message produced so far has a broker time at or before this.
    let produced_by = now_ms();

    // Until a checkpoint with parts of changes covers what was produced (the catch-up's
    // parts are whole: it changes most of the state).
    let first = run_until_checkpoint_where(&config, produced_by, |line| {
        logged_u64(line, "checkpoint written", "changes").is_some_and(|n| n > 0)
    });
    assert!(
        first.iter().any(|l| l.contains("no usable checkpoint")),
        "{first:#?}"
    );

    landed.extend(stack.produce(events, &traffic.messages[split..]));
    let second = run_logged(&config, "2");
    let at = logged_u64(&second, "starting from the checkpoint", "at")
        .unwrap_or_else(|| panic!("the second run starts from a checkpoint:\n{second}"));
    assert!(at > 0);
    assert!(at >= produced_by, "{second}");
    // It is a chain: parts of changes after the whole parts they follow.
    assert!(
        logged_u64(&second, "starting from the checkpoint", "parts_of_changes")
            .is_some_and(|n| n > 0),
        "{second}"
    );
    // The start read only the chunks of the checkpoint it used and of the parts its chains
    // follow (the first run wrote one every 500 ms, and kept 3): their bytes, exactly.
    assert_eq!(
        logged_u64(&second, "starting from the checkpoint", "read_bytes"),
        logged_u64(&second, "starting from the checkpoint", "bytes"),
        "{second}"
    );
    let read = logged_u64(&second, "stopped", "messages").expect("the run logs what it read");
    assert_eq!(
        read,
        (traffic.messages.len() - split) as u64,
        "the restart replays only what came after the checkpoint: read {read} of {}\n{second}",
        traffic.messages.len()
    );
    println!(
        "restart from the checkpoint at {at}: read {read} of {} messages; first run: {first:#?}",
        traffic.messages.len()
    );

    for (name, want) in traffic.expected_views() {
        assert!(!want.is_empty(), "the traffic should fill {name}");
        assert_eq!(stack.view(database, name), want, "{name} vs the oracle");
    }
    let want = traffic.expected_dead_letters(&landed);
    let got = stack.dead_letters(rejected);
    assert_eq!(got.len(), want.len(), "one dead letter per bad message");
    let got: BTreeSet<(i32, i64, String)> = got
        .into_iter()
        .map(|d| (d.partition, d.offset, d.code))
        .collect();
    assert_eq!(got, want, "one dead letter per bad message");
    let want_decisions = traffic.reference_decisions(&landed);
    assert!(!want_decisions.is_empty());
    assert_eq!(
        stack.decisions_on_kafka(decisions),
        want_decisions,
        "decisions on Kafka, once each"
    );
    assert_eq!(
        stack.decisions_in_clickhouse(database),
        want_decisions,
        "decisions in ClickHouse"
    );
}
