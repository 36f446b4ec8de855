//! Operations: a running process's Prometheus metrics and health endpoint tell the exact truth.
//!
//! One `basketflow run` process (2 workers, metrics address given by the environment variable
//! `BASKETFLOW_METRICS_LISTEN`, which also proves env overrides reach `run`) reads generated
//! traffic; once `/health` says it is caught up and the outputs are committed, `/metrics` must
//! show exactly the messages read, the rejections by reason, the decisions and dead letters the
//! traffic implies; then SIGTERM must stop it with status 0.
//!
//! Needs `scripts/stack up`.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use basketflow_examples::Expect;
use basketflow_testkit::{free_port, hostfile, unique_suffix, ChildGuard, Stack};
use support::{basketflow, cluster_args, spawn_with_env, GraphStack, RunTargets, Traffic};

/// `GET path` on `addr`: (status code, body).
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Samples of the exposition: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[test]
fn metrics_and_health_report_exact_counts() {
    let stack = Stack::shared();
    let s = unique_suffix();
    let (events, trees, rejected, decisions, database) = (
        format!("ops-events-{s}"),
        format!("ops-trees-{s}"),
        format!("ops-rejected-{s}"),
        format!("ops-decisions-{s}"),
        format!("bf_ops_{s}"),
    );
    stack.create_topic(&events, 8, "delete");
    stack.create_topic(&trees, 8, "compact");
    stack.create_topic(&rejected, 1, "delete");
    stack.create_topic(&decisions, 8, "delete");
    let traffic = Traffic::generate(4_242, 8_000, 800);
    traffic.produce_trees(&stack, &trees);
    let landed = stack.produce(&events, &traffic.messages);
    let dir = std::env::temp_dir().join(format!("basketflow-ops-{s}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = stack.write_config(
        &dir,
        "ops",
        &RunTargets {
            events: &events,
            trees: &trees,
            rejected: &rejected,
            decisions: &decisions,
            database: &database,
        },
        "",
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = spawn_with_env(
        &["run", "--config", config.to_str().unwrap(), "-w", "2"],
        &[("BASKETFLOW_METRICS_LISTEN", &addr)],
    );

    let want_decisions = traffic.reference_decisions(&landed).len() as f64;
    let want_dead = traffic.expected_dead_letters(&landed).len() as f64;
    let mut want_rejected: BTreeMap<String, f64> = BTreeMap::new();
    for m in &traffic.messages {
        if let Expect::Rejected(code) = m.expect {
            *want_rejected
                .entry(format!(
                    "basketflow_events_rejected_total{{reason=\"{}\"}}",
                    code.as_str()
                ))
                .or_default() += 1.0;
        }
    }
    // Caught up, every decision and dead letter committed and a first ClickHouse batch written
    // (polled, with a deadline).
    let deadline = Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        assert!(
            Instant::now() < deadline,
            "not caught up with everything committed in 120 s"
        );
        if let (Some((200, health)), Some((200, text))) =
            (get(&addr, "/health"), get(&addr, "/metrics"))
        {
            let m = samples(&text);
            let decided: f64 = m
                .iter()
                .filter(|(k, _)| k.starts_with("basketflow_decisions_total{"))
                .map(|(_, v)| v)
                .sum();
            let dead = m
                .get("basketflow_dead_letters_total")
                .copied()
                .unwrap_or(0.0);
            // ClickHouse too: the Kafka outputs commit every few ms and can be done before
            // the ClickHouse writer's first batch.
            let batches = m
                .get("basketflow_clickhouse_batches_total")
                .copied()
                .unwrap_or(0.0);
            // The lag gauges appear once the source's watermark watcher (every 2 s) has asked
            // the broker about each partition; the traffic was produced before the start, so
            // the first answer is final.
            let lag_known = (0..8).all(|p| {
                m.contains_key(&format!(
                    "basketflow_consumer_lag_messages{{topic=\"{events}\",partition=\"{p}\"}}"
                ))
            });
            if decided == want_decisions && dead == want_dead && batches >= 1.0 && lag_known {
                let h: serde_json::Value = serde_json::from_str(&health).unwrap();
                assert_eq!(h["caught_up"], true, "{health}");
                assert_eq!(h["writes"], true, "{health}");
                break m;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        metrics[&format!("basketflow_messages_consumed_total{{topic=\"{events}\"}}")],
        traffic.messages.len() as f64
    );
    assert_eq!(
        metrics[&format!("basketflow_messages_consumed_total{{topic=\"{trees}\"}}")],
        traffic.shoppers.len() as f64
    );
    let got_rejected: BTreeMap<String, f64> = metrics
        .iter()
        .filter(|(k, _)| k.starts_with("basketflow_events_rejected_total{"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(got_rejected, want_rejected);
    for p in 0..8 {
        assert_eq!(
            metrics[&format!(
                "basketflow_consumer_lag_messages{{topic=\"{events}\",partition=\"{p}\"}}"
            )],
            0.0,
            "partition {p} fully read"
        );
    }
    assert_eq!(
        metrics["basketflow_decision_latency_seconds_count"], want_decisions,
        "one latency observation per decision"
    );
    // Every piece of graph state is in the graph's own operators (checkpointed), none in a
    // differential arrangement.
    assert_eq!(
        metrics["basketflow_arrangement_records"], 0.0,
        "no arrangement holds graph state"
    );
    assert!(metrics["basketflow_resident_memory_bytes"] > 1e6);
    assert!(metrics["basketflow_clickhouse_batches_total"] >= 1.0);
    assert_eq!(metrics["basketflow_clickhouse_errors_total"], 0.0);
    assert_eq!(get(&addr, "/nope").map(|r| r.0), Some(404));

    assert!(child.terminate());
    let status = child
        .wait_for(Duration::from_secs(10))
        .expect("SIGTERM: not stopped in 10 s");
    assert!(status.success(), "SIGTERM: exit status {status}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn processes_with_different_configurations_refuse_to_start() {
    let stack = Stack::shared();
    let s = unique_suffix();
    let events = format!("ops-mismatch-{s}");
    stack.create_topic(&events, 2, "delete");
    let dir = std::env::temp_dir().join(format!("basketflow-mismatch-{s}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (trees, rejected, decisions) = (
        format!("{events}-trees"),
        format!("{events}-rejected"),
        format!("{events}-decisions"),
    );
    // The topics the graph reads must exist: a missing one is refused before the cluster forms.
    stack.create_topic(&trees, 2, "compact");
    let targets = RunTargets {
        events: &events,
        trees: &trees,
        rejected: &rejected,
        decisions: &decisions,
        database: &format!("bf_mismatch_{s}"),
    };
    let same = stack.write_config(&dir, "a", &targets, "");
    let different = stack.write_config(&dir, "b", &targets, "[graph]\nflush_interval_ms = 999\n");
    let hosts = hostfile(&dir, 2);
    let children: Vec<ChildGuard> = [&same, &different]
        .iter()
        .enumerate()
        .map(|(p, config)| {
            ChildGuard::spawn(
                basketflow()
                    .args(cluster_args(config, &hosts, 2, p, 1, false))
                    .env_remove("BASKETFLOW_CLICKHOUSE_URL")
                    .stderr(std::process::Stdio::piped()),
            )
        })
        .collect();
    for (p, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "process {p} must refuse to start");
        let other = 1 - p;
        assert!(
            stderr.contains(&format!(
                "process {p} refuses to start: process {other} has a different configuration"
            )),
            "process {p}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A restart with another `graph.tick_ms` than the committed outputs were written with would
/// reclock the replay differently (a message before a recorded position could land above the
/// committed time and be written twice): `run` refuses it, one line and status 3, naming the
/// tick to set; with the recorded tick it starts. Another `graph.dedup_horizon_ms` or
/// `graph.settlement_ms` likewise (the replay would compute other figures than those written).
#[test]
fn a_tick_or_horizon_other_than_the_committed_outputs_one_is_refused() {
    let stack = Stack::shared();
    let run = support::TestRun::create(&stack, "tick", 8, &[("cleanup.policy", "compact")], "");
    let traffic = Traffic::generate(5, 200, 20);
    stack.produce(&run.events, &traffic.messages);
    support::run_caught_up(&run.config);
    let with_graph = |graph: &str, name: &str| {
        stack.write_config(
            &run.dir,
            name,
            &RunTargets {
                events: &run.events,
                trees: &run.trees,
                rejected: &run.rejected,
                decisions: &run.decisions,
                database: &run.database,
            },
            &format!("[graph]\n{graph}\n"),
        )
    };
    let run_with = |config: std::path::PathBuf| {
        basketflow()
            .args(["run", "--exit-when-caught-up", "--config"])
            .arg(config)
            .env_remove("BASKETFLOW_CLICKHOUSE_URL")
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap()
    };
    let out = run_with(with_graph("tick_ms = 10", "tick10"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got:\n{stderr}");
    assert!(
        lines[0].contains(&format!(
            "graph.tick_ms is 10 but the committed outputs in ClickHouse {}.progress were \
             written with 5: the replay would be reclocked differently and write some messages \
             twice; set graph.tick_ms = 5",
            run.database
        )),
        "{}",
        lines[0]
    );
    // The recorded tick, given explicitly: it starts, and is caught up at once.
    support::run_caught_up(&with_graph("tick_ms = 5", "tick5"));
    // Another horizon than the recorded one is refused the same way (a replay would count
    // copies, or settle orders, differently).
    for (field, recorded) in [
        ("dedup_horizon_ms", 604_800_000u64),
        ("settlement_ms", 2_592_000_000),
    ] {
        let out = run_with(with_graph(&format!("{field} = 1000"), field));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "stderr:\n{stderr}");
        assert!(
            stderr.contains(&format!(
                "graph.{field} is 1000 but the committed outputs in ClickHouse {}.progress \
                 were written with {recorded}",
                run.database
            )),
            "{stderr}"
        );
    }
}

/// Rule 7 through the binary, with `graph.settlement_ms = 2000`: a cancellation read more
/// than that after its order's first payment is a late input (the order's figures stand, and
/// `late_events` lists it, naming no shopper); one read with its payment cancels the order.
#[test]
fn a_cancellation_read_after_settlement_is_listed_in_late_events_and_changes_nothing() {
    use basketflow_testkit::events::{cancelled, ev, paid};
    use basketflow_testkit::kafka::{produce, test_producer};
    let stack = Stack::shared();
    let run = support::TestRun::create(&stack, "late", 1, &[], "[graph]\nsettlement_ms = 2000\n");
    let json = |e: basketflow_vocab::Event| (e.shopper_id.clone(), serde_json::to_vec(&e).unwrap());
    let at = "2026-11-22T10:00:00Z";
    let first = [
        json(ev("pay-o1", "s1", at, paid("o1", &[("p1", "c", 2, 500)]))),
        json(ev("pay-o2", "s2", at, paid("o2", &[("p2", "c", 1, 700)]))),
        json(ev("cancel-o2", "s2", at, cancelled("o2"))),
    ];
    let producer = test_producer(&stack.brokers);
    let landed = |messages: &[(String, Vec<u8>)]| -> Vec<i64> {
        let pairs = messages.iter().map(|(k, v)| (k.as_bytes(), v.as_slice()));
        let produced = produce(
            &producer,
            &run.events,
            pairs.collect::<Vec<_>>().into_iter(),
            None,
        );
        produced
            .landed
            .iter()
            .map(|l| l.expect("landed").broker_ms)
            .collect()
    };
    let first_ms = landed(&first);
    assert!(
        first_ms[2] - first_ms[1] < 2000,
        "o2 paid and cancelled at {first_ms:?}"
    );
    // The broker's clock must pass o1's settlement before the cancellation is appended.
    std::thread::sleep(Duration::from_millis(2_500));
    let late_ms = landed(&[json(ev("cancel-o1", "s1", at, cancelled("o1")))]);
    assert!(
        late_ms[0] - first_ms[0] >= 2000,
        "o1 paid at {first_ms:?}, cancelled at {late_ms:?}"
    );
    support::run_caught_up(&run.config);
    let db = &run.database;
    let q = |sql: &str| basketflow_testkit::clickhouse::query(&stack.clickhouse_url, sql).unwrap();
    assert_eq!(
        q(&format!(
            "SELECT order_id, event_id, event_type, reason FROM {db}.late_events FORMAT TSV"
        )),
        "o1\tcancel-o1\torder_status_changed\tcancellation_after_settlement\n"
    );
    assert_eq!(
        q(&format!(
            "SELECT order_id, cancelled FROM {db}.order_lines ORDER BY order_id FORMAT TSV"
        )),
        "o1\t0\no2\t1\n"
    );
    assert_eq!(
        q(&format!(
            "SELECT product_id, quantity, orders FROM {db}.sold_products_daily FORMAT TSV"
        )),
        "p1\t2\t1\n"
    );
}

/// Partitions added to `shopper-events` while the graph runs are never silently ignored: the
/// running process stops with status 3 and a line that says so, and the restart reads the new
/// partition from its beginning, each message once (the views equal the oracle's over all the
/// traffic).
#[test]
fn partitions_added_while_running_stop_the_run_and_the_restart_reads_them() {
    let stack = Stack::shared();
    let run = support::TestRun::create(&stack, "grow", 8, &[("cleanup.policy", "compact")], "");
    let traffic = Traffic::generate(17, 3_000, 200);
    let (first, second) = traffic.messages.split_at(traffic.messages.len() / 2);
    traffic.produce_trees(&stack, &run.trees);
    stack.produce(&run.events, first);
    let stderr_path = run.dir.join("grow.stderr");
    let mut graph = ChildGuard::spawn(
        basketflow()
            .args(["run", "--config"])
            .arg(&run.config)
            .env_remove("BASKETFLOW_CLICKHOUSE_URL")
            .env_remove("RUST_BACKTRACE")
            .stderr(std::fs::File::create(&stderr_path).unwrap()),
    );
    // Running (something committed), then a ninth partition.
    let deadline = Instant::now() + Duration::from_secs(120);
    while basketflow_testkit::clickhouse::committed_time(&stack.clickhouse_url, &run.database) == 0
    {
        assert!(Instant::now() < deadline, "the graph never committed");
        std::thread::sleep(Duration::from_millis(100));
    }
    stack.topics().add_partitions(&run.events, 9);
    let status = graph.wait_for(Duration::from_secs(60));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(3),
        "the run must stop with status 3; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "topic {} now has 9 partitions but this run reads the 8 it had at start: restart \
             the cluster to read the new ones",
            run.events
        )),
        "{stderr}"
    );
    let landed = stack.produce(&run.events, second);
    assert!(
        landed.iter().any(|&(p, _)| p == 8),
        "some of the second half lands in the new partition"
    );
    support::run_caught_up(&run.config);
    for (name, want) in traffic.expected_views() {
        assert!(!want.is_empty(), "the traffic should fill {name}");
        assert_eq!(stack.view(&run.database, name), want, "{name}");
    }
}
