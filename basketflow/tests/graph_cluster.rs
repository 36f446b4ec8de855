//! Integration: generated traffic with bad events mixed in, a retailer that reuses the other
//! retailers' ids of every kind, and an experience tree for every retailer's shopper, through the real broker and ClickHouse, on a cluster of 3 processes x 2 workers and
//! on 1 process x 1 worker, each run to caught-up. Every analyst view must equal the oracle
//! computed independently from the raw events, both runs must agree, the dead-letter topic must
//! hold exactly the bad messages (by partition, offset and reason), and both runs must emit
//! exactly the decisions of a sequential replay of each shopper's events (offset order), once
//! each, on Kafka and in ClickHouse; the trees hold out a fifth of the shoppers, whose
//! decisions must be in ClickHouse (`campaign_group = 'held_out'`) and never on Kafka; the
//! trees' frequency caps stop some decisions, likewise recorded (`capped = 1`) and never sent;
//! one retailer's budget runs out: both runs refuse the same decisions (`over_budget = 1`,
//! never sent) and spend it exactly; the games draw their paid orders (one in 4): both runs
//! decide exactly the replay's wins, a win refused over budget exactly with its game, and
//! `game_winners` lists the others with their orders and prizes.
//!
//! Needs `scripts/stack up` (broker at `$BASKETFLOW_BROKERS`, ClickHouse HTTP at
//! `$BASKETFLOW_CLICKHOUSE_URL`, defaults 127.0.0.1:9092 and http://127.0.0.1:8123). Uses
//! topics and databases of its own, with unique names, deleted and dropped at the end (also on
//! failure).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use basketflow_testkit::{hostfile, unique_suffix, wait_all, ChildGuard, Stack};
use basketflow_vocab::{ExperienceKind, FrequencyCap};
use support::{cluster_args, run_caught_up, spawn, Fate, GraphStack, RunTargets, Traffic};

#[test]
fn cluster_and_single_worker_views_equal_the_oracle_and_dead_letters_are_exact() {
    let stack = Stack::shared();
    let suffix = unique_suffix();
    let events_topic = format!("it-events-{suffix}");
    let trees_topic = format!("it-trees-{suffix}");
    let rejected_cluster = format!("it-rejected-cluster-{suffix}");
    let rejected_single = format!("it-rejected-single-{suffix}");
    let decisions_cluster = format!("it-decisions-cluster-{suffix}");
    let decisions_single = format!("it-decisions-single-{suffix}");
    let db_cluster = format!("bf_it_cluster_{suffix}");
    let db_single = format!("bf_it_single_{suffix}");
    stack.create_topic(&events_topic, 8, "delete");
    stack.create_topic(&trees_topic, 8, "compact");
    for t in [&rejected_cluster, &rejected_single] {
        stack.create_topic(t, 1, "delete");
    }
    for t in [&decisions_cluster, &decisions_single] {
        stack.create_topic(t, 8, "delete");
    }

    let seed = 20_261_122;
    println!("generator seed {seed}");
    // A third of the valid events again at a retailer that reuses every id (a copied
    // integration): its figures must be exactly its own, the others' unchanged.
    // The trees hold out 20% of the shoppers; at the copying retailer they cap decisions at 1
    // per session (a tension cart after the recommendation of its session is capped) and
    // recommendations at 1 (a cap per kind): held-out and capped decisions are in ClickHouse
    // only.
    let traffic = Traffic::generate(seed, 30_000, 2_000)
        .with_copying_retailer("retailer-copy", 3)
        .with_holdout(2_000)
        .with_caps(
            "retailer-copy",
            vec![
                FrequencyCap {
                    kind: None,
                    per_session: Some(1),
                    per_day: None,
                },
                FrequencyCap {
                    kind: Some(ExperienceKind::ProductRecommendation),
                    per_session: Some(1),
                    per_day: None,
                },
            ],
        )
        // retailer-00's campaign can afford 60 decisions of 100 cents.
        .with_budget("retailer-00", 6_000, 100)
        // One paid order in 4 wins its game, for at most 50 euros.
        .with_game(4, 5_000);
    // Trees first (earlier broker times), for every shopper of the traffic.
    traffic.produce_trees(&stack, &trees_topic);
    let landed = stack.produce(&events_topic, &traffic.messages);

    let dir = std::env::temp_dir().join(format!("basketflow-it-{suffix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_cluster = stack.write_config(
        &dir,
        "cluster",
        &RunTargets {
            events: &events_topic,
            trees: &trees_topic,
            rejected: &rejected_cluster,
            decisions: &decisions_cluster,
            database: &db_cluster,
        },
        "",
    );
    let cfg_single = stack.write_config(
        &dir,
        "single",
        &RunTargets {
            events: &events_topic,
            trees: &trees_topic,
            rejected: &rejected_single,
            decisions: &decisions_single,
            database: &db_single,
        },
        "",
    );
    let hosts = hostfile(&dir, 3);

    let started = Instant::now();
    let cluster: Vec<ChildGuard> = (0..3)
        .map(|p| {
            let args = cluster_args(&cfg_cluster, &hosts, 3, p, 2, true);
            spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .collect();
    wait_all(cluster, Duration::from_secs(300));
    println!("3 processes x 2 workers: {:?}", started.elapsed());
    let started = Instant::now();
    run_caught_up(&cfg_single);
    println!("1 process x 1 worker: {:?}", started.elapsed());

    // The oracle, from the raw messages the ingest accepts.
    for (name, want) in traffic.expected_views() {
        assert!(!want.is_empty(), "the traffic should fill {name}");
        assert!(
            want.iter().any(|row| row.contains("retailer-copy")),
            "the copying retailer should have rows in {name}"
        );
        assert_eq!(
            stack.view(&db_cluster, name),
            want,
            "{name}: cluster vs oracle"
        );
        assert_eq!(
            stack.view(&db_single, name),
            want,
            "{name}: single worker vs oracle"
        );
    }

    // Dead letters: exactly the bad messages, at their partitions and offsets, with their codes.
    let want = traffic.expected_dead_letters(&landed);
    assert!(want.len() > 500, "the traffic should carry bad messages");
    for topic in [&rejected_cluster, &rejected_single] {
        let got = stack.dead_letters(topic);
        assert_eq!(
            got.len(),
            want.len(),
            "{topic}: one dead letter per bad message"
        );
        let got: BTreeSet<(i32, i64, String)> = got
            .into_iter()
            .map(|d| (d.partition, d.offset, d.code))
            .collect();
        assert_eq!(got, want, "{topic}");
    }

    // Decisions: a sequential replay of every shopper's events in offset order, with the
    // same state machine, is the reference; each run must emit exactly those, once each.
    let want_decisions = traffic.reference_decisions(&landed);
    let want_held_out = traffic.reference(&landed, Fate::HeldOut);
    let want_capped = traffic.reference(&landed, Fate::Capped);
    assert!(
        want_capped.len() > 50,
        "the caps should stop some decisions: {}",
        want_capped.len()
    );
    let share = want_held_out.len() as f64 / (want_held_out.len() + want_decisions.len()) as f64;
    assert!(
        (0.1..0.3).contains(&share),
        "about a fifth of the decisions should be held out: {share}"
    );
    let kinds: BTreeSet<&str> = want_decisions.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["big", "paid", "pasta"]),
        "every node should fire"
    );
    assert!(
        want_capped.iter().any(|(_, n)| n == "big"),
        "tension carts after a recommendation should be capped"
    );
    // The budget: both runs refuse the same decisions (the reference replay has no times,
    // so it cannot say which), all at retailer-00, and spend it exactly: 60 allowed.
    let over_budget = stack.decisions_where(&db_single, "over_budget = 1");
    assert!(
        !over_budget.is_empty(),
        "retailer-00's budget should run out"
    );
    assert_eq!(
        stack.decisions_where(&db_cluster, "over_budget = 1"),
        over_budget,
        "the cluster and one worker refuse the same decisions"
    );
    for db in [&db_cluster, &db_single] {
        assert_eq!(
            stack
                .decisions_where(db, "over_budget = 1 AND retailer_id != 'retailer-00'")
                .len(),
            0
        );
        let allowed = stack.decisions_where(
            db,
            "retailer_id = 'retailer-00' AND campaign_group = 'shown' AND capped = 0 \
             AND over_budget = 0 AND kind != 'game_won'",
        );
        assert_eq!(allowed.len(), 60, "{db}: 6,000 cents at 100 each");
        // Every win has its game, at the same time, and the same budget verdict.
        let verdicts = stack.clickhouse(&format!(
            "SELECT count(), sum(won_over = game_over) FROM \
             (SELECT visitParamExtractString(params, 'game_decision_id') AS game, \
                     over_budget AS won_over FROM {db}.experience_decisions \
              WHERE kind = 'game_won') \
             ALL INNER JOIN \
             (SELECT decision_id AS game, over_budget AS game_over \
              FROM {db}.experience_decisions WHERE kind = 'gamified_promotion') USING game \
             FORMAT TabSeparated"
        ));
        let wins_in_db = stack.decisions_where(db, "kind = 'game_won'").len();
        assert_eq!(
            verdicts.trim(),
            format!("{wins_in_db}\t{wins_in_db}"),
            "{db}: each win follows its game"
        );
        assert!(
            !stack
                .decisions_where(db, "kind = 'game_won' AND over_budget = 1")
                .is_empty(),
            "{db}: some wins should be refused with their games at retailer-00"
        );
    }
    // The games' wins: exactly the replay's, on every cluster shape; game_winners lists
    // those within budget with their orders and prizes.
    let want_wins = traffic.reference_wins(&landed);
    assert!(
        want_wins.len() > 50,
        "one paid order in 4 should win: {}",
        want_wins.len()
    );
    assert!(want_wins
        .iter()
        .all(|(_, _, cents)| (1..=5_000).contains(cents)));
    let over_budget_ids: BTreeSet<&str> = over_budget.iter().map(|(id, _)| id.as_str()).collect();
    let want_winners: Vec<(String, String, i64)> = want_wins
        .iter()
        .filter(|(id, _, _)| !over_budget_ids.contains(id.as_str()))
        .cloned()
        .collect();
    for db in [&db_cluster, &db_single] {
        let mut winners: Vec<(String, String, i64)> = stack
            .clickhouse(&format!(
                "SELECT decision_id, order_id, prize_cents FROM {db}.game_winners \
                 FORMAT TabSeparated"
            ))
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f[0].to_owned(), f[1].to_owned(), f[2].parse().unwrap())
            })
            .collect();
        winners.sort();
        assert_eq!(winners, want_winners, "{db}: game_winners");
    }
    let want_decisions: Vec<(String, String)> = want_decisions
        .into_iter()
        .filter(|d| !over_budget.contains(d))
        .collect();
    for (topic, db) in [
        (&decisions_cluster, &db_cluster),
        (&decisions_single, &db_single),
    ] {
        assert_eq!(
            stack.decisions_on_kafka(topic),
            want_decisions,
            "{topic}: decisions on Kafka, once each"
        );
        assert_eq!(
            stack.decisions_in_clickhouse(db),
            want_decisions,
            "{db}: decisions in ClickHouse"
        );
        assert_eq!(
            stack.held_out_in_clickhouse(db),
            want_held_out,
            "{db}: held-out decisions, in ClickHouse only"
        );
        assert_eq!(
            stack.capped_in_clickhouse(db),
            want_capped,
            "{db}: capped decisions, in ClickHouse only"
        );
    }
    println!(
        "{} decisions shown, {} held out and {} capped, {} games won ({} within budget), as \
         the sequential replay says",
        want_decisions.len(),
        want_held_out.len(),
        want_capped.len(),
        want_wins.len(),
        want_winners.len()
    );

    let _ = std::fs::remove_dir_all(&dir);
}
