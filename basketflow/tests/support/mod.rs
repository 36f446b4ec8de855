//! Helpers the graph's integration tests share, on top of `basketflow_testkit` (the stack, and
//! the topics and databases a test made there removed when it ends; children killed when
//! dropped): producing generated traffic and reading the graph's outputs ([`GraphStack`]),
//! running `basketflow run`, the oracle's rows as ClickHouse prints them, and the reference
//! decisions of a sequential replay.
//!
//! Each test binary uses a subset.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use basketflow_dataflows::experiences::{Horizons, Shopper};
use basketflow_dataflows::oracle;
use basketflow_examples::{Config as GenConfig, Expect, Generator, Message as GenMessage};
use basketflow_ingest::parse_event;
use basketflow_sinks::kafka_outputs::{DECIDED_HEADER, HANDED_HEADER};
use basketflow_testkit::kafka::{produce, test_producer};
use basketflow_testkit::{logged_u64, wait_all, ChildGuard, Stack};
use basketflow_vocab::time::MICROS_PER_DAY;
use basketflow_vocab::DeadLetter;
use basketflow_vocab::{
    tree_key, Condition, Decision, Event, Experience, ExperienceKind, ExperienceTree, FrequencyCap,
    Node, ParamValue, ProductMatch, Timestamp, COST_PARAM,
};

/// What the graph's tests do on a [`Stack`]: produce traffic, read the graph's outputs, write
/// its configuration.
pub trait GraphStack {
    /// Produces `messages` to `topic`, keyed by shopper; returns each one's (partition, offset).
    fn produce(&self, topic: &str, messages: &[GenMessage]) -> Vec<(i32, i64)>;

    /// Produces `messages` to `topic` at about `per_second` messages a second (open loop: on
    /// schedule, whatever the broker's state); returns each one's (partition, offset).
    fn produce_paced(
        &self,
        topic: &str,
        messages: &[GenMessage],
        per_second: u32,
    ) -> Vec<(i32, i64)>;

    /// Produces (key, value) pairs to `topic`; returns each one's (partition, offset).
    fn produce_pairs(&self, topic: &str, messages: &[(&[u8], &[u8])]) -> Vec<(i32, i64)>;

    /// Every value in partitions `0..partitions` of `topic`, from the beginning to the end, as a
    /// consumer reading committed data sees it.
    fn read_topic(&self, topic: &str, partitions: i32) -> Vec<Vec<u8>>;

    /// Every dead letter in `topic`, read from the beginning to the end (committed only).
    fn dead_letters(&self, topic: &str) -> Vec<DeadLetter>;

    /// Decisions on `topic` (8 partitions) as (decision_id, node_id), sorted, duplicates kept.
    /// Panics unless each carries the stage headers, its decision before its hand-over.
    fn decisions_on_kafka(&self, topic: &str) -> Vec<(String, String)>;

    /// Decisions shown in `db.experience_decisions` as (decision_id, node_id), sorted.
    fn decisions_in_clickhouse(&self, db: &str) -> Vec<(String, String)>;
    /// As [`GraphStack::decisions_in_clickhouse`], the held-out shoppers' decisions.
    fn held_out_in_clickhouse(&self, db: &str) -> Vec<(String, String)>;
    /// As [`GraphStack::decisions_in_clickhouse`], the capped decisions (of either group).
    fn capped_in_clickhouse(&self, db: &str) -> Vec<(String, String)>;
    /// The decisions of `db` recorded in `group` (`shown` or `held_out`), neither capped nor
    /// over budget, sorted.
    fn decisions_in_group(&self, db: &str, group: &str) -> Vec<(String, String)>;
    /// The decisions of `db` that meet an SQL `condition`, sorted.
    fn decisions_where(&self, db: &str, condition: &str) -> Vec<(String, String)>;

    /// Writes a `basketflow.toml` for `targets` on this stack; the database and the topics the
    /// binary creates (privacy requests, the decisions' progress) are removed with the stack.
    fn write_config(&self, dir: &Path, name: &str, t: &RunTargets, extra: &str) -> PathBuf;
}

/// Where each message landed, all delivered.
fn positions(produced: basketflow_testkit::Produced) -> Vec<(i32, i64)> {
    produced
        .landed
        .iter()
        .map(|l| {
            let l = l.expect("every test message is delivered");
            (l.partition, l.offset)
        })
        .collect()
}

fn pairs(messages: &[GenMessage]) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> {
    messages
        .iter()
        .map(|m| (m.key.as_bytes(), m.payload.as_slice()))
}

impl GraphStack for Stack {
    fn produce(&self, topic: &str, messages: &[GenMessage]) -> Vec<(i32, i64)> {
        positions(produce(
            &test_producer(&self.brokers),
            topic,
            pairs(messages),
            None,
        ))
    }

    fn produce_paced(
        &self,
        topic: &str,
        messages: &[GenMessage],
        per_second: u32,
    ) -> Vec<(i32, i64)> {
        positions(produce(
            &test_producer(&self.brokers),
            topic,
            pairs(messages),
            Some(per_second),
        ))
    }

    fn produce_pairs(&self, topic: &str, messages: &[(&[u8], &[u8])]) -> Vec<(i32, i64)> {
        positions(produce(
            &test_producer(&self.brokers),
            topic,
            messages.iter().copied(),
            None,
        ))
    }

    fn read_topic(&self, topic: &str, partitions: i32) -> Vec<Vec<u8>> {
        self.read_to_end(topic)
            .into_iter()
            .filter(|r| r.partition < partitions)
            .map(|r| r.payload.expect("a value"))
            .collect()
    }

    fn dead_letters(&self, topic: &str) -> Vec<DeadLetter> {
        self.read_topic(topic, 1)
            .iter()
            .map(|v| serde_json::from_slice(v).unwrap())
            .collect()
    }

    fn decisions_on_kafka(&self, topic: &str) -> Vec<(String, String)> {
        let mut got: Vec<(String, String)> = self
            .read_to_end(topic)
            .into_iter()
            .filter(|r| r.partition < 8)
            .map(|r| {
                let d: Decision = serde_json::from_slice(r.payload.as_ref().unwrap()).unwrap();
                // The stage headers: decided, then handed to its transaction (wall-clock ms).
                let stamp = |name: &str| -> u64 {
                    let (_, v) = r
                        .headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .unwrap_or_else(|| {
                            panic!("decision {} has no {name} header", d.decision_id)
                        });
                    String::from_utf8(v.clone().unwrap())
                        .unwrap()
                        .parse()
                        .unwrap()
                };
                let (decided, handed) = (stamp(DECIDED_HEADER), stamp(HANDED_HEADER));
                assert!(
                    decided <= handed && handed > 1_700_000_000_000,
                    "stage headers of {}: decided {decided}, handed {handed}",
                    d.decision_id
                );
                (d.decision_id, d.node_id)
            })
            .collect();
        got.sort();
        got
    }

    fn decisions_in_clickhouse(&self, db: &str) -> Vec<(String, String)> {
        self.decisions_in_group(db, "shown")
    }

    fn held_out_in_clickhouse(&self, db: &str) -> Vec<(String, String)> {
        self.decisions_in_group(db, "held_out")
    }

    fn capped_in_clickhouse(&self, db: &str) -> Vec<(String, String)> {
        self.decisions_where(db, "capped = 1")
    }

    fn decisions_in_group(&self, db: &str, group: &str) -> Vec<(String, String)> {
        self.decisions_where(
            db,
            &format!("campaign_group = '{group}' AND capped = 0 AND over_budget = 0"),
        )
    }

    fn decisions_where(&self, db: &str, condition: &str) -> Vec<(String, String)> {
        let mut stored: Vec<(String, String)> = self
            .clickhouse(&format!(
                "SELECT decision_id, node_id FROM {db}.experience_decisions \
                 WHERE {condition} FORMAT TabSeparated"
            ))
            .lines()
            .map(|l| {
                let (id, node) = l.split_once('\t').unwrap();
                (id.to_string(), node.to_string())
            })
            .collect();
        stored.sort();
        stored
    }

    fn write_config(&self, dir: &Path, name: &str, t: &RunTargets, extra: &str) -> PathBuf {
        self.database(t.database);
        self.topics().delete_later(format!("{}-privacy", t.events));
        self.topics()
            .delete_later(format!("{}-progress", t.decisions));
        self.topics()
            .delete_later(format!("{}-checkpoints", t.decisions));
        self.topics()
            .delete_later(basketflow_sinks::checkpoints::manifests_topic(&format!(
                "{}-checkpoints",
                t.decisions
            )));
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[kafka]\nbrokers = \"{}\"\nevents_topic = \"{}\"\ntrees_topic = \"{}\"\n\
                 rejected_topic = \"{}\"\ndecisions_topic = \"{}\"\nprivacy_topic = \"{}-privacy\"\n\
                 [clickhouse]\nurl = \"{}\"\ndatabase = \"{}\"\n\
                 [metrics]\nlisten = \"127.0.0.1:0\"\n{extra}",
                self.brokers,
                t.events,
                t.trees,
                t.rejected,
                t.decisions,
                t.events,
                self.clickhouse_url,
                t.database,
            ),
        )
        .unwrap();
        path
    }
}

/// A test's own topics (the usual partitions and policies, created on the stack and deleted
/// with it), database name and working directory, and the configuration of a run on them.
#[allow(dead_code)] // each test binary uses some of these helpers
pub struct TestRun {
    /// Shopper events in (8 partitions).
    pub events: String,
    /// Trees in (8 partitions, compacted), unless the test made its own.
    pub trees: String,
    /// Dead letters out (1 partition).
    pub rejected: String,
    /// Decisions out (8 partitions).
    pub decisions: String,
    /// The ClickHouse database (the binary creates it).
    pub database: String,
    /// A scratch directory (configuration files).
    pub dir: PathBuf,
    /// The configuration of a run on these targets (written by [`TestRun::create`]).
    pub config: PathBuf,
}

#[allow(dead_code)]
impl TestRun {
    /// Creates the topics of a test called `name` with `trees_configs` as the trees topic's
    /// configuration (on top of `LogAppendTime`; `trees_partitions` partitions), and writes the
    /// configuration of a run with `extra` appended.
    pub fn create(
        stack: &Stack,
        name: &str,
        trees_partitions: i32,
        trees_configs: &[(&str, &str)],
        extra: &str,
    ) -> TestRun {
        let suffix = basketflow_testkit::unique_suffix();
        let topic = |kind: &str| format!("it-{name}-{kind}-{suffix}");
        let (events, trees) = (topic("events"), topic("trees"));
        let (rejected, decisions) = (topic("rejected"), topic("decisions"));
        stack.create_topic(&events, 8, "delete");
        stack.create_topic(&rejected, 1, "delete");
        stack.create_topic(&decisions, 8, "delete");
        let mut configs = vec![("message.timestamp.type", "LogAppendTime")];
        configs.extend_from_slice(trees_configs);
        stack.topics().create(&trees, trees_partitions, &configs);
        let database = format!("bf_it_{name}_{suffix}");
        let dir = std::env::temp_dir().join(format!("basketflow-it-{name}-{suffix}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = stack.write_config(
            &dir,
            name,
            &RunTargets {
                events: &events,
                trees: &trees,
                rejected: &rejected,
                decisions: &decisions,
                database: &database,
            },
            extra,
        );
        TestRun {
            events,
            trees,
            rejected,
            decisions,
            database,
            dir,
            config,
        }
    }
}

impl Drop for TestRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The topics and database of one run.
pub struct RunTargets<'a> {
    /// Shopper events in.
    pub events: &'a str,
    /// Trees in.
    pub trees: &'a str,
    /// Dead letters out.
    pub rejected: &'a str,
    /// Decisions out.
    pub decisions: &'a str,
    /// ClickHouse database.
    pub database: &'a str,
}

/// The test's tree for one shopper: pasta in the basket -> recommendation -> basket worth
/// 30 EUR -> tension cart; or a paid order -> gamified promotion.
pub fn tree_for(retailer_id: &str, shopper_id: &str) -> ExperienceTree {
    let node = |id: &str,
                conditions: Vec<Condition>,
                kind: Option<ExperienceKind>,
                children: &[&str]| Node {
        id: id.into(),
        conditions,
        experience: kind.map(|kind| Experience {
            kind,
            params: [("campaign".to_string(), ParamValue::Text("it".into()))]
                .into_iter()
                .collect(),
        }),
        children: children.iter().map(|c| c.to_string()).collect(),
    };
    ExperienceTree {
        tree_id: "it".into(),
        version: 1,
        retailer_id: retailer_id.into(),
        shopper_id: shopper_id.into(),
        root: "start".into(),
        holdout_basis_points: 0,
        caps: vec![],
        budget_cents: None,
        draw_secret: None,
        nodes: vec![
            node("start", vec![], None, &["pasta", "paid"]),
            node(
                "pasta",
                vec![Condition::BasketContains {
                    matches: ProductMatch {
                        product_id: None,
                        category: Some("pasta".into()),
                        brand: None,
                    },
                    min_quantity: 1,
                }],
                Some(ExperienceKind::ProductRecommendation),
                &["big"],
            ),
            node(
                "big",
                vec![Condition::BasketValueAtLeast { cents: 3_000 }],
                Some(ExperienceKind::TensionCart),
                &[],
            ),
            node(
                "paid",
                vec![Condition::OrderPaid {}],
                Some(ExperienceKind::GamifiedPromotion),
                &[],
            ),
        ],
    }
}

/// Generated traffic and the trees of its shoppers.
pub struct Traffic {
    /// The messages, in production order.
    pub messages: Vec<GenMessage>,
    /// Every (retailer, shopper) of the valid events.
    pub shoppers: BTreeSet<(String, String)>,
    /// The trees' holdout share, in basis points ([`Traffic::with_holdout`]).
    pub holdout_basis_points: u16,
    /// The trees' frequency caps at one retailer ([`Traffic::with_caps`]).
    pub caps: Option<(String, Vec<FrequencyCap>)>,
    /// A budget at one retailer, and what each decision costs ([`Traffic::with_budget`]).
    pub budget: Option<(String, u64, i64)>,
    /// The games' `win_one_in` and `max_prize_cents` ([`Traffic::with_game`]).
    pub game: Option<(i64, i64)>,
}

/// Which of a reference replay's decisions: shown, held out, or capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Published to storefronts.
    Shown,
    /// Of a held-out shopper, not capped.
    HeldOut,
    /// Stopped by a frequency cap.
    Capped,
}

impl Traffic {
    /// `n` messages of the generator with `seed` (3% bad, 2% duplicates).
    pub fn generate(seed: u64, n: usize, shoppers: u32) -> Traffic {
        Traffic::generate_from(seed, n, shoppers, GenConfig::default().start)
    }

    /// As [`Traffic::generate`], with the first event's `occurred_at` at `start`.
    pub fn generate_from(seed: u64, n: usize, shoppers: u32, start: Timestamp) -> Traffic {
        let messages: Vec<GenMessage> = Generator::new(GenConfig {
            seed,
            shoppers,
            products: 600,
            concurrent_sessions: 150,
            bad_share: 0.03,
            duplicate_share: 0.02,
            start,
            ..GenConfig::default()
        })
        .take(n)
        .collect();
        let shoppers = valid_events(&messages)
            .iter()
            .map(|e| (e.retailer_id.clone(), e.shopper_id.clone()))
            .collect();
        Traffic {
            messages,
            shoppers,
            holdout_basis_points: 0,
            caps: None,
            budget: None,
            game: None,
        }
    }

    /// This traffic plus a tenant that reuses its ids: after every `every`-th valid (or
    /// duplicate) message, a copy with `retailer_id` set to `retailer` and every other id
    /// unchanged (a copied tracker integration: the same event, shopper, session, order and
    /// product ids at another retailer). The copies count as that retailer's own events.
    pub fn with_copying_retailer(self, retailer: &str, every: usize) -> Traffic {
        let mut messages = Vec::with_capacity(self.messages.len() * 2);
        let mut seen = 0usize;
        for m in self.messages {
            let copy = match m.expect {
                Expect::Valid | Expect::Duplicate => {
                    seen += 1;
                    seen.is_multiple_of(every).then(|| {
                        let mut v: serde_json::Value =
                            serde_json::from_slice(&m.payload).expect("a valid message is JSON");
                        v["retailer_id"] = serde_json::json!(retailer);
                        GenMessage {
                            key: m.key.clone(),
                            payload: serde_json::to_vec(&v).unwrap(),
                            expect: m.expect,
                            kind: m.kind,
                        }
                    })
                }
                Expect::Rejected(_) => None,
            };
            messages.push(m);
            messages.extend(copy);
        }
        let shoppers = valid_events(&messages)
            .iter()
            .map(|e| (e.retailer_id.clone(), e.shopper_id.clone()))
            .collect();
        Traffic {
            messages,
            shoppers,
            holdout_basis_points: self.holdout_basis_points,
            caps: self.caps,
            budget: self.budget,
            game: self.game,
        }
    }

    /// The same traffic, the trees of `retailer`'s shoppers with a budget of `budget_cents`,
    /// each of their experiences costing `cost_cents`.
    pub fn with_budget(self, retailer: &str, budget_cents: u64, cost_cents: i64) -> Traffic {
        Traffic {
            budget: Some((retailer.to_owned(), budget_cents, cost_cents)),
            ..self
        }
    }

    /// The same traffic, its trees' games (node `paid`) won by one paid order in `win_one_in`,
    /// for at most `max_prize_cents`.
    pub fn with_game(self, win_one_in: i64, max_prize_cents: i64) -> Traffic {
        Traffic {
            game: Some((win_one_in, max_prize_cents)),
            ..self
        }
    }

    /// The same traffic, its trees holding out `basis_points` of the shoppers.
    pub fn with_holdout(self, basis_points: u16) -> Traffic {
        Traffic {
            holdout_basis_points: basis_points,
            ..self
        }
    }

    /// The same traffic, the trees of `retailer`'s shoppers capped by `caps`.
    pub fn with_caps(self, retailer: &str, caps: Vec<FrequencyCap>) -> Traffic {
        Traffic {
            caps: Some((retailer.to_owned(), caps)),
            ..self
        }
    }

    /// The tree of one shopper: [`tree_for`] with this traffic's holdout share and caps.
    pub fn tree(&self, retailer_id: &str, shopper_id: &str) -> ExperienceTree {
        let mut tree = ExperienceTree {
            holdout_basis_points: self.holdout_basis_points,
            caps: match &self.caps {
                Some((r, caps)) if r == retailer_id => caps.clone(),
                _ => vec![],
            },
            ..tree_for(retailer_id, shopper_id)
        };
        if let Some((one_in, max)) = self.game {
            for exp in tree.nodes.iter_mut().filter_map(|n| n.experience.as_mut()) {
                if exp.kind == ExperienceKind::GamifiedPromotion {
                    exp.params
                        .insert("win_one_in".to_owned(), ParamValue::Int(one_in));
                    exp.params
                        .insert("max_prize_cents".to_owned(), ParamValue::Int(max));
                }
            }
        }
        if let Some((r, budget, cost)) = &self.budget {
            if r == retailer_id {
                tree.budget_cents = Some(*budget);
                for exp in tree.nodes.iter_mut().filter_map(|n| n.experience.as_mut()) {
                    exp.params
                        .insert(COST_PARAM.to_owned(), ParamValue::Int(*cost));
                }
            }
        }
        tree
    }

    /// Produces one tree per shopper to `topic`.
    pub fn produce_trees(&self, stack: &Stack, topic: &str) {
        let trees: Vec<(String, Vec<u8>)> = self
            .shoppers
            .iter()
            .map(|(r, s)| {
                (
                    tree_key(r, s),
                    serde_json::to_vec(&self.tree(r, s)).unwrap(),
                )
            })
            .collect();
        let pairs: Vec<(&[u8], &[u8])> = trees
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_slice()))
            .collect();
        stack.produce_pairs(topic, &pairs);
    }

    /// Produces the messages to `topic` at `per_second` on a thread of its own (live traffic
    /// while a test disturbs the cluster); the handle yields where each message landed.
    pub fn produce_live(
        &self,
        stack: &Stack,
        topic: &str,
        per_second: u32,
    ) -> std::thread::JoinHandle<Vec<(i32, i64)>> {
        let (stack, topic, messages) = (stack.clone(), topic.to_string(), self.messages.clone());
        std::thread::spawn(move || stack.produce_paced(&topic, &messages, per_second))
    }

    /// The decisions a sequential replay of each shopper's events in offset order shows (those
    /// of shoppers not held out), as (decision_id, node_id), sorted: `landed` is where each
    /// message landed.
    pub fn reference_decisions(&self, landed: &[(i32, i64)]) -> Vec<(String, String)> {
        self.reference(landed, Fate::Shown)
    }

    /// As [`Traffic::reference_decisions`], the decisions of one [`Fate`].
    pub fn reference(&self, landed: &[(i32, i64)], fate: Fate) -> Vec<(String, String)> {
        let mut want: Vec<(String, String)> = self
            .replay(landed)
            .into_iter()
            .filter(|d| {
                let of = match (d.capped, d.held_out) {
                    (true, _) => Fate::Capped,
                    (false, true) => Fate::HeldOut,
                    (false, false) => Fate::Shown,
                };
                of == fate
            })
            .map(|d| (d.decision_id, d.node_id))
            .collect();
        want.sort();
        want
    }

    /// The games' wins of a sequential replay (before budgets) as (decision_id, order id,
    /// prize cents), sorted.
    pub fn reference_wins(&self, landed: &[(i32, i64)]) -> Vec<(String, String, i64)> {
        let mut wins: Vec<(String, String, i64)> = self
            .replay(landed)
            .into_iter()
            .filter(|d| d.experience.kind == ExperienceKind::GameWon)
            .map(|d| {
                let p = &d.experience.params;
                match (&p["order_id"], &p["prize_cents"]) {
                    (ParamValue::Text(o), ParamValue::Int(c)) => (d.decision_id, o.clone(), *c),
                    other => panic!("a win's params: {other:?}"),
                }
            })
            .collect();
        wins.sort();
        wins
    }

    /// Every decision of a sequential replay of each shopper's events in offset order, wins
    /// included.
    fn replay(&self, landed: &[(i32, i64)]) -> Vec<Decision> {
        let mut in_order: Vec<((i32, i64), Event)> = self
            .messages
            .iter()
            .zip(landed)
            .filter(|(m, _)| matches!(m.expect, Expect::Valid | Expect::Duplicate))
            .map(|(m, &pos)| (pos, parse_event(&m.payload).unwrap().event))
            .collect();
        in_order.sort_by_key(|(pos, _)| *pos);
        let mut states: BTreeMap<(String, String), Shopper> = BTreeMap::new();
        for (r, s) in &self.shoppers {
            let mut state = Shopper::default();
            state.set_tree(Some(Arc::new(self.tree(r, s))));
            states.insert((r.clone(), s.clone()), state);
        }
        let mut decided = Vec::new();
        for (pos, e) in &in_order {
            let state = states
                .get_mut(&(e.retailer_id.clone(), e.shopper_id.clone()))
                .unwrap();
            // A test lasts seconds: within the default horizons (7 and 30 days) of everything.
            // At time 0: the tests' caps are per session (a daily cap would need the broker's
            // append times).
            if state.apply(e, 0, Horizons::FOREVER) {
                decided.extend(state.step_with_prize(e, *pos, 0));
            }
        }
        decided
    }

    /// The dead letters the bad messages must produce: (partition, offset, code).
    pub fn expected_dead_letters(&self, landed: &[(i32, i64)]) -> BTreeSet<(i32, i64, String)> {
        self.messages
            .iter()
            .zip(landed)
            .filter_map(|(m, &(p, o))| match m.expect {
                Expect::Rejected(code) => Some((p, o, code.as_str().to_string())),
                _ => None,
            })
            .collect()
    }

    /// The oracle's rows per view.
    pub fn expected_views(&self) -> Vec<(&'static str, Vec<String>)> {
        expected(&valid_events(&self.messages))
    }
}

/// The events the ingest accepts from `messages` (duplicates included).
pub fn valid_events(messages: &[GenMessage]) -> Vec<Event> {
    messages
        .iter()
        .filter(|m| matches!(m.expect, Expect::Valid | Expect::Duplicate))
        .map(|m| {
            parse_event(&m.payload)
                .expect("a valid message parses")
                .event
        })
        .collect()
}

/// A command running the `basketflow` binary under test.
pub fn basketflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_basketflow"))
}

/// Starts `basketflow` with `args`, output inherited; killed if dropped while running.
pub fn spawn(args: &[&str]) -> ChildGuard {
    spawn_with_env(args, &[])
}

/// Starts `basketflow` with `args` and extra environment variables, output inherited; killed if
/// dropped while running.
pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    ChildGuard::spawn(
        basketflow()
            .args(args)
            // The tests' own variable for the shared stack must not override the URL in the
            // configuration they wrote (a private stack's, in the outage test).
            .env_remove("BASKETFLOW_CLICKHOUSE_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit()),
    )
}

/// Runs `basketflow run --config config --exit-when-caught-up` (1 x 1) to its end, within
/// 300 s.
pub fn run_caught_up(config: &Path) {
    wait_all(
        vec![spawn(&[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--exit-when-caught-up",
        ])],
        Duration::from_secs(300),
    );
}

/// The `basketflow run` arguments of process `p` of an `n`-process cluster with `w` workers.
pub fn cluster_args(
    config: &Path,
    hostfile: &Path,
    n: usize,
    p: usize,
    w: usize,
    exit: bool,
) -> Vec<String> {
    let mut args = vec![
        "run".to_string(),
        "--config".into(),
        config.display().to_string(),
        "-w".into(),
        w.to_string(),
        "-n".into(),
        n.to_string(),
        "-p".into(),
        p.to_string(),
        "-h".into(),
        hostfile.display().to_string(),
    ];
    if exit {
        args.push("--exit-when-caught-up".into());
    }
    args
}

/// Milliseconds since the epoch now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Runs `basketflow run` live on 1 worker until it logs a checkpoint at or after `covering`
/// (ms), then stops it with SIGTERM; returns its log lines about checkpoints.
pub fn run_until_checkpoint(config: &std::path::Path, covering: u64) -> Vec<String> {
    run_until_checkpoint_where(config, covering, |_| true)
}

/// [`run_until_checkpoint`], until the checkpoint written at or after `covering` is one whose
/// log line `also` accepts.
pub fn run_until_checkpoint_where(
    config: &std::path::Path,
    covering: u64,
    also: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut child = ChildGuard::spawn(
        basketflow()
            .args(["run", "--config", config.to_str().unwrap(), "-w", "1"])
            .env_remove("BASKETFLOW_CLICKHOUSE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let (lines, received) = channel();
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = received
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                panic!("no checkpoint at or after {covering} within 120 s: {seen:#?}")
            });
        if line.contains("checkpoint") {
            seen.push(line.clone());
        }
        if logged_u64(&line, "checkpoint written", "at").is_some_and(|at| at >= covering)
            && also(&line)
        {
            break;
        }
    }
    assert!(child.terminate(), "sending SIGTERM");
    let status = child
        .wait_for(Duration::from_secs(30))
        .expect("drained within 30 s");
    assert!(
        status.success(),
        "the live run exits 0 on SIGTERM: {status}"
    );
    seen
}

/// The latest complete checkpoint in the checkpoints topic of the graph whose decisions topic
/// is `decisions` (default settings), with every part.
pub fn latest_checkpoint(
    brokers: &str,
    decisions: &str,
) -> Option<basketflow_operators::checkpoint::Restore> {
    use basketflow_sinks::checkpoints::{load, CheckpointSettings, FORMAT, POSITIONS};
    let defaults = basketflow_config::Config::default().graph;
    let settings = CheckpointSettings {
        format: FORMAT,
        tick_ms: defaults.tick_ms,
        dedup_horizon_ms: defaults.dedup_horizon_ms,
        settlement_ms: defaults.settlement_ms,
    };
    let mut operators = basketflow_dataflows::graph::CHECKPOINTED.to_vec();
    operators.push(POSITIONS);
    let topic = format!("{decisions}-checkpoints");
    load(brokers, &topic, &settings, &operators, u64::MAX)
        .expect("reading the checkpoints")
        .restore
}

fn day(d: i32) -> String {
    Timestamp(i64::from(d) * MICROS_PER_DAY)
        .to_datetime()
        .format("%Y-%m-%d")
        .to_string()
}

fn seconds(t: Timestamp) -> String {
    Timestamp(t.unix_seconds() * 1_000_000)
        .to_datetime()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The oracle's rows, as ClickHouse prints the views in TabSeparated, per view.
pub fn expected(events: &[Event]) -> Vec<(&'static str, Vec<String>)> {
    let rows = oracle::read_models(events);
    let mut out = vec![
        (
            "sold_products_daily",
            rows.sold_products_daily
                .iter()
                .map(|r| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        day(r.day),
                        r.retailer_id,
                        r.product_id,
                        r.category,
                        r.quantity,
                        r.revenue_cents,
                        r.orders
                    )
                })
                .collect::<Vec<_>>(),
        ),
        (
            "shopper_purchases",
            rows.shopper_purchases
                .iter()
                .map(|r| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        r.retailer_id,
                        r.shopper_id,
                        r.product_id,
                        r.quantity,
                        r.orders,
                        seconds(r.last_purchase_at)
                    )
                })
                .collect(),
        ),
        (
            "product_affinities",
            rows.product_affinities
                .iter()
                .map(|r| {
                    format!(
                        "{}\t{}\t{}\t{}",
                        r.retailer_id, r.product_a, r.product_b, r.orders_together
                    )
                })
                .collect(),
        ),
        (
            "baskets",
            rows.baskets
                .iter()
                .map(|r| {
                    format!(
                        "{}\t{}\t{}\t{}",
                        r.retailer_id, r.shopper_id, r.product_id, r.quantity
                    )
                })
                .collect(),
        ),
        (
            "order_lines",
            rows.order_lines
                .iter()
                .map(|r| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        r.retailer_id,
                        r.order_id,
                        r.shopper_id,
                        r.product_id,
                        r.category,
                        r.quantity,
                        r.revenue_cents,
                        seconds(r.ordered_at),
                        day(r.day),
                        u8::from(r.cancelled)
                    )
                })
                .collect(),
        ),
    ];
    for (_, lines) in &mut out {
        lines.sort();
    }
    out
}
