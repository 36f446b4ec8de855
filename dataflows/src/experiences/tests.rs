//! Tests of the experience-tree operator and the shopper state machine.

use super::*;
use basketflow_vocab::{
    BasketChange, Condition, Event, EventBody, Experience, ExperienceKind, FrequencyCap, Node,
    OrderLine, OrderStatus, ParamValue, Product, ProductMatch, Timestamp, WireEvent,
};
use timely::dataflow::operators::capture::{Capture, Event as CaptureEvent};
use timely::dataflow::operators::Input;

fn tree(version: u64) -> ExperienceTree {
    let experience = |kind, k: &str, v: ParamValue| Experience {
        kind,
        params: [(k.to_string(), v)].into_iter().collect(),
    };
    ExperienceTree {
        tree_id: "autumn-pasta".into(),
        version,
        retailer_id: "r".into(),
        shopper_id: "s".into(),
        root: "start".into(),
        holdout_basis_points: 0,
        caps: vec![],
        budget_cents: None,
        draw_secret: None,
        nodes: vec![
            Node {
                id: "start".into(),
                conditions: vec![],
                experience: None,
                children: vec!["pasta".into(), "loyal".into()],
            },
            Node {
                id: "pasta".into(),
                conditions: vec![Condition::BasketContains {
                    matches: ProductMatch {
                        product_id: None,
                        category: Some("pasta".into()),
                        brand: None,
                    },
                    min_quantity: 1,
                }],
                experience: Some(experience(
                    ExperienceKind::ProductRecommendation,
                    "product_id",
                    ParamValue::Text("sauce-1".into()),
                )),
                children: vec!["threshold".into()],
            },
            Node {
                id: "threshold".into(),
                conditions: vec![Condition::BasketValueAtLeast { cents: 1000 }],
                experience: Some(experience(
                    ExperienceKind::TensionCart,
                    "threshold_cents",
                    ParamValue::Int(1500),
                )),
                children: vec![],
            },
            Node {
                id: "loyal".into(),
                conditions: vec![
                    Condition::OrderPaid {},
                    Condition::BoughtBefore {
                        matches: ProductMatch {
                            product_id: None,
                            category: None,
                            brand: Some("acme".into()),
                        },
                        min_orders: 2,
                    },
                ],
                experience: Some(experience(
                    ExperienceKind::GamifiedPromotion,
                    "prize",
                    ParamValue::Text("basket".into()),
                )),
                children: vec![],
            },
        ],
    }
}

/// A day: a horizon no test time reaches.
const DAY_MS: u64 = 86_400_000;

/// Horizons of a day each.
const LONG: Horizons = Horizons {
    dedup_ms: DAY_MS,
    settlement_ms: DAY_MS,
};

fn event(id: &str, body: EventBody) -> Event {
    Event {
        event_id: id.into(),
        retailer_id: "r".into(),
        shopper_id: "s".into(),
        session_id: Some("x".into()),
        occurred_at: Timestamp(1_000_000),
        body,
    }
}

fn add(id: &str, product: &str, category: &str, cents: i64) -> Event {
    event(
        id,
        EventBody::ProductAdded(BasketChange {
            product: Product {
                product_id: product.into(),
                category: category.into(),
                brand: Some("acme".into()),
                unit_price_cents: cents,
            },
            quantity: 1,
        }),
    )
}

fn paid(id: &str, order: &str) -> Event {
    event(
        id,
        EventBody::OrderPaid {
            order_id: order.into(),
            lines: vec![OrderLine {
                product_id: "p".into(),
                category: "pasta".into(),
                brand: Some("acme".into()),
                quantity: 1,
                unit_price_cents: 100,
            }],
            total_cents: 100,
        },
    )
}

/// Per event: the node reached, and the decision's node and reasons if one fired.
type Step = (String, Option<(String, Vec<String>)>);

/// Applies events in order; returns a [`Step`] per event.
fn walk(s: &mut Shopper, events: &[Event]) -> Vec<Step> {
    events
        .iter()
        .map(|e| {
            let d = if s.apply(e, 7, LONG) {
                s.step(e, (0, 0), 7)
            } else {
                None
            };
            (s.node().to_string(), d.map(|d| (d.node_id, d.reasons)))
        })
        .collect()
}

#[test]
fn events_move_the_shopper_and_nodes_with_experiences_decide() {
    let mut s = Shopper::default();
    s.set_tree(Some(Arc::new(tree(1))));
    let got = walk(
        &mut s,
        &[
            add("e1", "rice-1", "rice", 200),
            add("e2", "pasta-1", "pasta", 300),
            add("e2", "pasta-1", "pasta", 300),
            add("e3", "wine-1", "wine", 800),
            add("e4", "wine-2", "wine", 800),
        ],
    );
    assert_eq!(
        got,
        vec![
            ("start".into(), None),
            (
                "pasta".into(),
                Some((
                    "pasta".into(),
                    vec!["basket contains category pasta: 1 units (>= 1)".into()]
                ))
            ),
            ("pasta".into(), None), // the duplicate e2 changes nothing
            (
                "threshold".into(),
                Some((
                    "threshold".into(),
                    vec!["basket value 1300 cents (>= 1000)".into()]
                ))
            ),
            ("threshold".into(), None), // a leaf: the shopper stays
        ]
    );
}

#[test]
fn purchase_history_counts_orders_and_forgets_cancelled_ones() {
    let mut s = Shopper::default();
    s.set_tree(Some(Arc::new(tree(1))));
    let cancel = event(
        "c1",
        EventBody::OrderStatusChanged {
            order_id: "o1".into(),
            status: OrderStatus::Cancelled,
        },
    );
    let got = walk(
        &mut s,
        &[paid("e1", "o1"), cancel, paid("e2", "o2"), paid("e3", "o3")],
    );
    assert_eq!(got[0], ("start".into(), None)); // one acme order: not yet loyal
    assert_eq!(got[2], ("start".into(), None)); // o1 cancelled, o2 paid: still one
    assert_eq!(
        got[3],
        (
            "start".into(), // the paid order ends the journey: back at the root
            Some((
                "loyal".into(),
                vec![
                    "paid order o3".into(),
                    "bought brand acme in 2 orders (>= 2)".into()
                ]
            ))
        )
    );
    // A cancellation that comes before its payment keeps the order out of the history.
    let mut s = Shopper::default();
    let early = event(
        "c9",
        EventBody::OrderStatusChanged {
            order_id: "o9".into(),
            status: OrderStatus::Cancelled,
        },
    );
    s.apply(&early, 1, LONG);
    s.apply(&paid("e9", "o9"), 2, LONG);
    assert!(s
        .holds(
            &Condition::BoughtBefore {
                matches: ProductMatch {
                    product_id: Some("p".into()),
                    category: None,
                    brand: None
                },
                min_orders: 1
            },
            &early
        )
        .is_none());
}

#[test]
fn a_new_version_keeps_the_node_a_new_tree_restarts() {
    let mut s = Shopper::default();
    s.set_tree(Some(Arc::new(tree(1))));
    walk(&mut s, &[add("e1", "pasta-1", "pasta", 300)]);
    assert_eq!(s.node(), "pasta");
    s.set_tree(Some(Arc::new(tree(2))));
    assert_eq!(s.node(), "pasta");
    let mut other = tree(1);
    other.tree_id = "winter".into();
    s.set_tree(Some(Arc::new(other)));
    assert_eq!(s.node(), "start");
    s.set_tree(None);
    assert_eq!(
        walk(&mut s, &[add("e2", "pasta-2", "pasta", 1)]),
        vec![(String::new(), None)]
    );
}

#[test]
fn decision_ids_are_stable_digests() {
    let a = decision_id("r", "s", "t", 1, "n", "e");
    assert_eq!(a, decision_id("r", "s", "t", 1, "n", "e"));
    assert_eq!(a.len(), 32);
    assert_ne!(a, decision_id("r", "s", "t", 2, "n", "e"));
    // Another retailer's shopper with the same ids gets another decision.
    assert_ne!(a, decision_id("r2", "s", "t", 1, "n", "e"));
    assert_ne!(a, decision_id("r", "s2", "t", 1, "n", "e"));
    assert_ne!(
        decision_id("r", "s", "ab", 1, "c", "e"),
        decision_id("r", "s", "a", 1, "bc", "e")
    );
    assert_ne!(
        decision_id("ab", "c", "t", 1, "n", "e"),
        decision_id("a", "bc", "t", 1, "n", "e")
    );
}

/// A held-out shopper walks the same tree to the same decisions (same ids, nodes and
/// reasons), each marked held out; the share decides by the shopper's draw alone.
#[test]
fn a_held_out_shopper_walks_the_same_tree_and_every_decision_is_marked() {
    let draw = basketflow_vocab::holdout_draw("autumn-pasta", "r", "s");
    let events = [
        add("e1", "pasta-1", "pasta", 300),
        add("e2", "rice-1", "rice", 5_000),
        paid("e3", "o1"),
    ];
    let decisions = |basis_points: u16| {
        let mut s = Shopper::default();
        s.set_tree(Some(Arc::new(ExperienceTree {
            holdout_basis_points: basis_points,
            ..tree(1)
        })));
        events
            .iter()
            .filter_map(|e| {
                s.apply(e, 7, LONG);
                s.step(e, (0, 0), 7)
            })
            .map(|d| (d.decision_id, d.node_id, d.reasons, d.held_out))
            .collect::<Vec<_>>()
    };
    let shown = decisions(draw);
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(shown.iter().all(|d| !d.3));
    let held = decisions(draw + 1);
    assert!(held.iter().all(|d| d.3));
    let strip = |v: Vec<(String, String, Vec<String>, bool)>| -> Vec<_> {
        v.into_iter().map(|(id, n, r, _)| (id, n, r)).collect()
    };
    assert_eq!(strip(held), strip(shown));
    assert!(decisions(10_000).iter().all(|d| d.3));
    assert!(decisions(0).iter().all(|d| !d.3));
}

/// Two sessions on day 0 and one on day 1, each reaching the recommendation and then the
/// tension cart: per `caps`, the fate of each decision as (node, capped).
fn capped_walk(caps: Vec<FrequencyCap>) -> Vec<(String, bool)> {
    let mut s = Shopper::default();
    s.set_tree(Some(Arc::new(ExperienceTree { caps, ..tree(1) })));
    let mut fates = Vec::new();
    for (i, (session, time)) in [("x", 10), ("y", 20), ("z", DAY_MS + 10)]
        .iter()
        .enumerate()
    {
        for (j, mut e) in [
            add(&format!("p{i}"), "pasta-1", "pasta", 300),
            add(&format!("r{i}"), "rice-1", "rice", 1_000),
        ]
        .into_iter()
        .enumerate()
        {
            e.session_id = Some((*session).into());
            let at = time + j as u64;
            assert!(s.apply(&e, at, LONG));
            let d = s.step(&e, (0, 0), at).expect("each event decides");
            fates.push((d.node_id, d.capped));
        }
    }
    fates
}

#[test]
fn frequency_caps_stop_decisions_per_session_per_day_and_per_kind() {
    let fate = |v: &[(&str, bool)]| -> Vec<(String, bool)> {
        v.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    };
    let uncapped = fate(&[
        ("pasta", false),
        ("threshold", false),
        ("pasta", false),
        ("threshold", false),
        ("pasta", false),
        ("threshold", false),
    ]);
    assert_eq!(capped_walk(vec![]), uncapped);
    // One decision per session, of any kind: the tension cart after the recommendation.
    let per_session = FrequencyCap {
        kind: None,
        per_session: Some(1),
        per_day: None,
    };
    assert_eq!(
        capped_walk(vec![per_session.clone()]),
        fate(&[
            ("pasta", false),
            ("threshold", true),
            ("pasta", false),
            ("threshold", true),
            ("pasta", false),
            ("threshold", true),
        ])
    );
    // One tension cart a day: day 0's second one is capped, day 1's is shown; the
    // recommendations are not counted by it.
    let carts_per_day = FrequencyCap {
        kind: Some(ExperienceKind::TensionCart),
        per_session: None,
        per_day: Some(1),
    };
    assert_eq!(
        capped_walk(vec![carts_per_day.clone()]),
        fate(&[
            ("pasta", false),
            ("threshold", false),
            ("pasta", false),
            ("threshold", true),
            ("pasta", false),
            ("threshold", false),
        ])
    );
    // Three a day of any kind and one tension cart a day: day 0 shows three (the second
    // cart is capped by both), day 1 starts again.
    let three_a_day = FrequencyCap {
        kind: None,
        per_session: None,
        per_day: Some(3),
    };
    assert_eq!(
        capped_walk(vec![three_a_day, carts_per_day]),
        fate(&[
            ("pasta", false),
            ("threshold", false),
            ("pasta", false),
            ("threshold", true),
            ("pasta", false),
            ("threshold", false),
        ])
    );
    // Another campaign's tree counts from zero: per session, after a tree change.
    let mut s = Shopper::default();
    s.set_tree(Some(Arc::new(ExperienceTree {
        caps: vec![per_session.clone()],
        ..tree(1)
    })));
    let e = add("a", "pasta-1", "pasta", 300);
    assert!(s.apply(&e, 1, LONG));
    assert!(!s.step(&e, (0, 0), 1).unwrap().capped);
    s.set_tree(Some(Arc::new(ExperienceTree {
        tree_id: "other".into(),
        caps: vec![per_session],
        ..tree(1)
    })));
    let e = add("b", "pasta-1", "pasta", 300);
    assert!(s.apply(&e, 2, LONG));
    assert!(!s.step(&e, (0, 0), 2).unwrap().capped);
}

/// The operator on `workers` workers: trees at time 1, events at times 2 and 3, and the
/// shopper erased at `erase_at` (if any).
fn run_operator(workers: usize) -> Vec<(String, String, u64)> {
    run_operator_erasing(workers, None, Retention::default())
}

fn run_operator_erasing(
    workers: usize,
    erase_at: Option<u64>,
    retention: Retention,
) -> Vec<(String, String, u64)> {
    let events = [
        (2, add("e1", "pasta-1", "pasta", 300)),
        (3, add("e2", "wine-1", "wine", 900)),
    ];
    run(workers, erase_at, retention, LONG, &events).0
}

#[test]
fn the_operator_decides_the_same_on_one_and_two_workers() {
    let mut want = vec![
        (
            decision_id("r", "s", "autumn-pasta", 1, "pasta", "e1"),
            "pasta".to_string(),
            2,
        ),
        (
            decision_id("r", "s", "autumn-pasta", 1, "threshold", "e2"),
            "threshold".to_string(),
            3,
        ),
    ];
    want.sort();
    assert_eq!(run_operator(1), want);
    assert_eq!(run_operator(2), want);
}

#[test]
fn an_erased_shopper_decides_nothing_from_the_erasure_on() {
    let first = (
        decision_id("r", "s", "autumn-pasta", 1, "pasta", "e1"),
        "pasta".to_string(),
        2,
    );
    // Erased at 3, the time of e2: e2 no longer moves the shopper.
    assert_eq!(
        run_operator_erasing(1, Some(3), Retention::default()),
        vec![first.clone()]
    );
    assert_eq!(
        run_operator_erasing(2, Some(3), Retention::default()),
        vec![first]
    );
    // Erased at 1, with the tree: nothing at all.
    assert_eq!(
        run_operator_erasing(2, Some(1), Retention::default()),
        vec![]
    );
}

#[test]
fn retention_forgets_the_basket_of_a_shopper_without_events_for_the_period() {
    // A period of 1 ms: at time 3 the basket built at 2 is gone, so the wine alone (900
    // cents) does not reach the threshold of 1000, and the pasta node is not re-entered.
    let short = Retention {
        default_ms: 1,
        per_retailer_ms: Default::default(),
    };
    let mut got = run_operator_erasing(1, None, short);
    got.sort();
    assert_eq!(
        got,
        vec![(
            decision_id("r", "s", "autumn-pasta", 1, "pasta", "e1"),
            "pasta".to_string(),
            2,
        )]
    );
}

#[test]
fn a_copy_is_a_duplicate_within_the_horizon_of_the_first_and_counts_again_after() {
    let e1 = add("e1", "pasta-1", "pasta", 300);
    let h = Horizons {
        dedup_ms: 10,
        settlement_ms: DAY_MS,
    };
    let mut s = Shopper::default();
    // Window [0, 10): the copies at 0 and 9 are duplicates, the one at 10 counts and opens
    // [10, 20), in which the copy at 19 is a duplicate again.
    assert!(s.apply(&e1, 0, h));
    assert!(!s.apply(&e1, 0, h));
    assert!(!s.apply(&e1, 9, h));
    assert!(s.apply(&e1, 10, h));
    assert!(!s.apply(&e1, 19, h));
    assert_eq!(s.remembered(), 2);
    assert_eq!(s.next_expiry(h), Some(10));
    // Forgetting drops only what the horizon passed, and changes no verdict.
    s.forget(10, h);
    assert_eq!(s.remembered(), 1);
    assert_eq!(s.next_expiry(h), Some(20));
    assert!(!s.apply(&e1, 19, h));
    assert!(s.apply(&e1, 20, h));
    // Without a horizon nothing expires.
    let mut forever = Shopper::default();
    assert!(forever.apply(&e1, 0, Horizons::FOREVER));
    assert!(!forever.apply(&e1, u64::MAX - 1, Horizons::FOREVER));
    assert_eq!(forever.next_expiry(Horizons::FOREVER), None);
    assert_eq!(id_digest("e1"), id_digest("e1"));
    assert_ne!(id_digest("e1"), id_digest("e2"));
}

#[test]
fn remembered_ids_serialize_as_the_digests_did() {
    // The state keeps a digest's little-endian bytes; checkpoints hold the same bytes as when
    // it kept the `u128`.
    let d = id_digest("e1");
    assert_eq!(
        bincode::serialize(&(7u64, d.to_le_bytes())).unwrap(),
        bincode::serialize(&(7u64, d)).unwrap()
    );
}

proptest::proptest! {
    /// A shopper with many ids in the horizon judges copies through an index: the verdicts
    /// are the rule's (the first copy counts, a copy read within the horizon after the last
    /// counted one is a duplicate), whether the index is built, kept, or dropped by `forget`.
    #[test]
    fn many_remembered_ids_are_judged_by_the_rule(
        steps in proptest::collection::vec((0u16..1500, 0u64..40, 0u8..8), 1..800),
    ) {
        let h = Horizons { dedup_ms: 10_000, settlement_ms: DAY_MS };
        let mut s = Shopper::default();
        let mut counted: std::collections::HashMap<String, u64> = Default::default();
        let mut t = 0;
        for (id, dt, forget) in steps {
            t += dt;
            if forget == 0 {
                s.forget(t, h);
            }
            let id = format!("e{id}");
            let expected = counted.get(&id).is_none_or(|&read| read + h.dedup_ms <= t);
            proptest::prop_assert_eq!(s.apply(&add(&id, "p", "c", 1), t, h), expected, "{} at {}", id, t);
            if expected {
                counted.insert(id, t);
            }
        }
    }
}

/// The operator on `workers` workers with `horizons`: the tree at time 1, then `events` at
/// their times. Returns the decisions (id, node, time), sorted, and the entries the state
/// keeps within the horizons at the end.
fn run_with_horizons(
    workers: usize,
    horizons: Horizons,
    events: &[(u64, Event)],
) -> (Vec<(String, String, u64)>, u64) {
    run(workers, None, Retention::default(), horizons, events)
}

/// The operator on `workers` workers: the tree at time 1, the shopper erased at `erase_at`
/// (if any), and `events` at their times. Returns the decisions (id, node, time), sorted,
/// and the entries the state keeps within the horizons at the end.
fn run(
    workers: usize,
    erase_at: Option<u64>,
    retention: Retention,
    horizons: Horizons,
    events: &[(u64, Event)],
) -> (Vec<(String, String, u64)>, u64) {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let stats = Arc::new(TreeStats::default());
    let (events, stats_in) = (events.to_vec(), stats.clone());
    timely::execute(timely::Config::process(workers), move |worker| {
        let tx = tx.lock().unwrap().clone();
        let (stats, retention) = (stats_in.clone(), retention.clone());
        let (mut events_in, mut trees_in, mut erasures_in) =
            worker.dataflow::<u64, _, _>(|scope| {
                let (ei, events) = scope.new_input::<Vec<PositionedEvent>>();
                let (ti, trees) = scope.new_input::<Vec<SourceMessage>>();
                let (xi, erasures) = scope.new_input::<Vec<Erasure>>();
                decide(events, trees, erasures, retention, horizons, stats, None).capture_into(tx);
                (ei, ti, xi)
            });
        if let (Some(t), 0) = (erase_at, worker.index()) {
            erasures_in.advance_to(t);
            erasures_in.send(Erasure {
                request: basketflow_vocab::ErasureRequest {
                    request_id: "q".into(),
                    retailer_id: "r".into(),
                    shopper_id: "s".into(),
                    requested_at: Timestamp(0),
                },
                partition: 0,
                offset: 0,
            });
        }
        if worker.index() == 0 {
            trees_in.advance_to(1);
            trees_in.send(SourceMessage {
                partition: 0,
                offset: 0,
                time: 1,
                key: Some(basketflow_vocab::tree_key("r", "s").into_bytes().into()),
                payload: serde_json::to_vec(&tree(1)).unwrap().into(),
            });
            for (offset, (t, e)) in events.iter().enumerate() {
                events_in.advance_to(*t);
                events_in.send(PositionedEvent {
                    event: WireEvent::from(e.clone()),
                    partition: 0,
                    offset: offset as i64,
                });
            }
        }
    })
    .unwrap();
    let mut got: Vec<(String, String, u64)> = rx
        .try_iter()
        .flat_map(|e| match e {
            CaptureEvent::Messages(_, data) => data
                .into_iter()
                .map(|d: Decision| (d.decision_id, d.node_id, d.time))
                .collect(),
            CaptureEvent::Progress(_) => Vec::new(),
        })
        .collect();
    got.sort();
    let remembered = stats
        .horizon_entries
        .load(std::sync::atomic::Ordering::Relaxed);
    (got, remembered)
}

#[test]
fn the_operator_judges_copies_by_the_horizon_and_forgets_ids_past_it() {
    let e1 = add("e1", "pasta-1", "pasta", 300);
    let view = event(
        "e3",
        EventBody::PageViewed {
            url: "/".into(),
            page_type: basketflow_vocab::PageType::Home,
            product_id: None,
            category: None,
        },
    );
    let events = vec![
        (2, e1.clone()),
        (5, e1.clone()),
        (13, e1.clone()),
        (14, add("e2", "wine-1", "wine", 500)),
        (30, view),
    ];
    let pasta = (
        decision_id("r", "s", "autumn-pasta", 1, "pasta", "e1"),
        "pasta".to_string(),
        2,
    );
    // Horizon 10: the copy at 5 is a duplicate, the one at 13 counts again (600 cents of
    // pasta), so e2's wine takes the basket to 1,100 and past the threshold. At 30 the ids
    // read at 13 and 14 are past the horizon and forgotten: only e3's remains.
    let threshold = (
        decision_id("r", "s", "autumn-pasta", 1, "threshold", "e2"),
        "threshold".to_string(),
        14,
    );
    let mut both = vec![pasta.clone(), threshold];
    both.sort();
    for workers in [1, 2] {
        let short = Horizons {
            dedup_ms: 10,
            settlement_ms: DAY_MS,
        };
        assert_eq!(
            run_with_horizons(workers, short, &events),
            (both.clone(), 1)
        );
        // Without a horizon both copies are duplicates: 800 cents, no threshold, and every
        // id stays.
        assert_eq!(
            run_with_horizons(workers, Horizons::FOREVER, &events),
            (vec![pasta.clone()], 3)
        );
    }
}

fn cancelled(id: &str, order: &str) -> Event {
    event(
        id,
        EventBody::OrderStatusChanged {
            order_id: order.into(),
            status: OrderStatus::Cancelled,
        },
    )
}

/// How many orders of product `p` the purchase history counts.
fn orders_of_p(s: &Shopper) -> u32 {
    (1..10)
        .rev()
        .find(|&n| {
            s.holds(
                &Condition::BoughtBefore {
                    matches: ProductMatch {
                        product_id: Some("p".into()),
                        category: None,
                        brand: None,
                    },
                    min_orders: n,
                },
                &paid("x", "x"),
            )
            .is_some()
        })
        .unwrap_or(0)
}

#[test]
fn cancellations_count_within_settlement_and_the_state_forgets_orders_after_it() {
    let h = Horizons {
        dedup_ms: DAY_MS,
        settlement_ms: 10,
    };
    // (time, event, orders of p counted after it), with `forget` run before every event or
    // never: the verdicts must not depend on it.
    let steps = [
        (0, paid("e1", "o1"), 1),
        (9, cancelled("c1", "o1"), 0), // within settlement of o1's payment: out
        (10, paid("e2", "o2"), 1),
        (20, cancelled("c2", "o2"), 1), // o2 settled at 20: stands
        (30, cancelled("c3", "o3"), 1), // before its payment
        (39, paid("e3", "o3"), 1),      // within settlement of the cancellation: not counted
        (40, cancelled("c4", "o4"), 1),
        (50, paid("e4", "o4"), 2), // the cancellation settled at 50: counted
    ];
    for forgetting in [false, true] {
        let mut s = Shopper::default();
        for (t, e, want) in &steps {
            if forgetting {
                s.forget(*t, h);
            }
            assert!(s.apply(e, *t, h));
            assert_eq!(orders_of_p(&s), *want, "after {} at {t}", e.event_id);
        }
        if forgetting {
            // Forgotten by 50: every order and cancellation read up to 40. Left: the 8 ids
            // (a day's horizon) and o4's payment.
            assert_eq!(s.remembered(), 8 + 1);
        }
        s.forget(60, h);
        // Only o4's payment (read at 50, settles at 60) was left: gone too. The ids stay.
        assert_eq!(s.remembered(), 8);
        assert_eq!(s.next_expiry(h), Some(DAY_MS));
        assert_eq!(orders_of_p(&s), 2, "forgetting keeps the settled history");
    }
}

/// A tree whose only node plays a game on every paid order: one in 3 wins, at most 60 cents,
/// costing `cost` of a 1,000-cent budget.
fn game_tree(holdout_basis_points: u16, caps: Vec<FrequencyCap>, cost: i64) -> ExperienceTree {
    let params = [
        ("win_one_in", ParamValue::Int(3)),
        ("max_prize_cents", ParamValue::Int(60)),
        ("prize", ParamValue::Text("your basket".into())),
        (basketflow_vocab::COST_PARAM, ParamValue::Int(cost)),
    ];
    ExperienceTree {
        tree_id: "games".into(),
        version: 1,
        retailer_id: "r".into(),
        shopper_id: "s".into(),
        root: "start".into(),
        holdout_basis_points,
        caps,
        budget_cents: Some(1_000),
        draw_secret: None,
        nodes: vec![
            Node {
                id: "start".into(),
                conditions: vec![],
                experience: None,
                children: vec!["game".into()],
            },
            Node {
                id: "game".into(),
                conditions: vec![Condition::OrderPaid {}],
                experience: Some(Experience {
                    kind: ExperienceKind::GamifiedPromotion,
                    params: params.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                }),
                children: vec![],
            },
        ],
    }
}

fn paid_total(id: &str, order: &str, total_cents: i64) -> Event {
    let mut e = paid(id, order);
    if let EventBody::OrderPaid { total_cents: t, .. } = &mut e.body {
        *t = total_cents;
    }
    e
}

/// Per event: the decisions' kinds, and each win's params (game decision id, order, prize)
/// and budget.
fn play(tree: ExperienceTree, events: &[Event]) -> Vec<Vec<Decision>> {
    let mut s = Shopper::default();
    s.set_tree(Some(Arc::new(tree)));
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if s.apply(e, i as u64, LONG) {
                s.step_with_prize(e, (0, i as i64), i as u64).collect()
            } else {
                vec![]
            }
        })
        .collect()
}

#[test]
fn a_shown_game_wins_its_orders_draw_once_per_order_and_never_when_held_out_or_capped() {
    // "games" at "r", one in 3: o-2, o-3, o-5 and o-6 win (Python's hashlib).
    let events = [
        paid_total("e1", "o-1", 100),
        paid_total("e2", "o-2", 100),
        // Another copy of o-2's payment (another event id): the game plays again, the order
        // does not draw twice.
        paid_total("e3", "o-2", 100),
        paid_total("e4", "o-3", 40),
        cancelled("e5", "o-5"),
        // Paid after its cancellation within settlement: no order, no draw.
        paid_total("e6", "o-5", 100),
        paid_total("e7", "o-4", 100),
    ];
    let got = play(game_tree(0, vec![], 20), &events);
    let kinds: Vec<Vec<&str>> = got
        .iter()
        .map(|ds| ds.iter().map(|d| d.experience.kind.as_str()).collect())
        .collect();
    let g = "gamified_promotion";
    let w = "game_won";
    assert_eq!(
        kinds,
        [
            vec![g],
            vec![g, w],
            vec![g],
            vec![g, w],
            vec![],
            vec![g],
            vec![g]
        ]
    );
    let (game, win) = (&got[1][0], &got[1][1]);
    let text = |s: &str| ParamValue::Text(s.into());
    assert_eq!(
        win.experience.params,
        [
            ("game_decision_id", text(&game.decision_id)),
            ("order_id", text("o-2")),
            ("prize", text("your basket")),
            ("prize_cents", ParamValue::Int(60)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    );
    assert_ne!(win.decision_id, game.decision_id);
    assert_eq!(
        (win.time, &win.node_id, &win.caused_by, win.budget_cents),
        (game.time, &game.node_id, &game.caused_by, Some(1_000))
    );
    // The prize is the order's total when below the maximum.
    assert_eq!(
        got[3][1].experience.params["prize_cents"],
        ParamValue::Int(40)
    );
    // The same orders win on a replay (a fresh state).
    let again = play(game_tree(0, vec![], 20), &events);
    let ids = |v: &[Vec<Decision>]| -> Vec<String> {
        v.iter().flatten().map(|d| d.decision_id.clone()).collect()
    };
    assert_eq!(ids(&again), ids(&got));
    // The campaign's secret keys the draw (Python's hmac): o-1 and o-3 win instead.
    let orders_won = |v: &[Vec<Decision>]| -> Vec<ParamValue> {
        v.iter()
            .flatten()
            .filter(|d| d.experience.kind == ExperienceKind::GameWon)
            .map(|d| d.experience.params["order_id"].clone())
            .collect()
    };
    assert_eq!(orders_won(&got), [text("o-2"), text("o-3")]);
    let mut keyed = game_tree(0, vec![], 20);
    keyed.draw_secret = Some("games-draw-secret-1".into());
    assert_eq!(
        orders_won(&play(keyed, &events)),
        [text("o-1"), text("o-3")]
    );
    // A game without cost claims nothing: neither does its win.
    let free = play(game_tree(0, vec![], 0), &events);
    assert_eq!(free[1][1].budget_cents, None);

    // Held out: the games are recorded, marked, and draw nothing.
    let held = play(game_tree(10_000, vec![], 20), &events);
    assert!(held
        .iter()
        .flatten()
        .all(|d| d.held_out && d.experience.kind == ExperienceKind::GamifiedPromotion));
    assert_eq!(held.iter().flatten().count(), 6);
    // Capped at one game per session: only the first game plays (o-1 loses).
    let cap = FrequencyCap {
        kind: Some(ExperienceKind::GamifiedPromotion),
        per_session: Some(1),
        per_day: None,
    };
    let capped = play(game_tree(0, vec![cap], 20), &events);
    let flags: Vec<(&str, bool)> = capped
        .iter()
        .flatten()
        .map(|d| (d.experience.kind.as_str(), d.capped))
        .collect();
    assert_eq!(
        flags,
        [
            (g, false),
            (g, true),
            (g, true),
            (g, true),
            (g, true),
            (g, true)
        ]
    );
}
