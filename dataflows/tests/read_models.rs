//! Hand-written scenarios: exact consolidated `(row, time, diff)` updates of the read models.

mod support;

use basketflow_testkit::events::{added, cancelled, day, delivered, ev, ev_at, paid, removed};
use basketflow_testkit::rows::{affinity, basket, order_line, purchase, sold};
use support::*;

const DAY: &str = "2026-11-22";

fn t(hh_mm: &str) -> String {
    format!("{DAY}T{hh_mm}:00Z")
}

#[test]
fn duplicates_count_once_and_the_least_copy_wins() {
    let d = day(DAY);
    let e1 = ev("e1", "s1", &t("10:00"), paid("o1", &[("p1", "c1", 2, 100)]));
    let e1_smaller = ev("e1", "s1", &t("10:00"), paid("o1", &[("p1", "c1", 1, 100)]));
    let e1_greater = ev("e1", "s1", &t("10:00"), paid("o1", &[("p1", "c1", 3, 100)]));
    let e2 = ev("e2", "s2", &t("10:00"), added("p1", 1));
    let e2_greater = ev("e2", "s2", &t("10:00"), added("p1", 2));
    // The same id as a removal first, then as an addition, which sorts first (variant order).
    let e3_removal = ev("e3", "s2", &t("10:00"), removed("p2", 1));
    let e3_addition = ev("e3", "s2", &t("10:00"), added("p2", 1));
    let out = run(
        Workers::Direct,
        vec![
            (
                1,
                vec![e1.clone(), e1.clone(), e2.clone(), e2.clone(), e3_removal],
            ),
            (2, vec![e1.clone(), e2]),
            (3, vec![e1_smaller, e3_addition]),
            (4, vec![e1_greater, e2_greater]),
        ],
    );
    assert_eq!(
        out.sold_products_daily,
        vec![
            (sold(d, "p1", "c1", 2, 200, 1), 1, 1),
            (sold(d, "p1", "c1", 1, 100, 1), 3, 1),
            (sold(d, "p1", "c1", 2, 200, 1), 3, -1),
        ]
    );
    assert_eq!(
        out.shopper_purchases,
        vec![
            (purchase("s1", "p1", 2, 1, &t("10:00")), 1, 1),
            (purchase("s1", "p1", 1, 1, &t("10:00")), 3, 1),
            (purchase("s1", "p1", 2, 1, &t("10:00")), 3, -1),
        ]
    );
    assert_eq!(out.product_affinities, vec![]);
    assert_eq!(
        out.baskets,
        vec![(basket("s2", "p1", 1), 1, 1), (basket("s2", "p2", 1), 3, 1)]
    );
    let ten = t("10:00");
    assert_eq!(
        out.order_lines,
        vec![
            (
                order_line("o1", "p1", "c1", "s1", 2, 200, &ten, false),
                1,
                1
            ),
            (
                order_line("o1", "p1", "c1", "s1", 1, 100, &ten, false),
                3,
                1
            ),
            (
                order_line("o1", "p1", "c1", "s1", 2, 200, &ten, false),
                3,
                -1
            ),
        ]
    );
}

#[test]
fn cancellation_before_payment_excludes_the_order() {
    let d = day(DAY);
    let out = run(
        Workers::Direct,
        vec![
            (
                1,
                vec![
                    // Any shopper may cancel; `delivered` changes nothing; another retailer's
                    // order with the same id is another order.
                    ev("e1", "s9", &t("09:00"), cancelled("o1")),
                    ev("e2", "s1", &t("09:00"), delivered("o2")),
                    ev_at("r2", "e3", "s1", &t("09:00"), cancelled("o2")),
                ],
            ),
            (
                2,
                vec![
                    ev(
                        "e4",
                        "s1",
                        &t("10:00"),
                        paid("o1", &[("p1", "c1", 1, 100), ("p2", "c2", 1, 50)]),
                    ),
                    ev("e5", "s1", &t("11:00"), paid("o2", &[("p1", "c1", 2, 100)])),
                ],
            ),
        ],
    );
    assert_eq!(
        out.sold_products_daily,
        vec![(sold(d, "p1", "c1", 2, 200, 1), 2, 1)]
    );
    assert_eq!(
        out.shopper_purchases,
        vec![(purchase("s1", "p1", 2, 1, &t("11:00")), 2, 1)]
    );
    assert_eq!(out.product_affinities, vec![]);
    assert_eq!(out.baskets, vec![]);
    // The cancelled order has no lines until it is paid; then its lines are flagged.
    let (ten, eleven) = (t("10:00"), t("11:00"));
    assert_eq!(
        out.order_lines,
        vec![
            (order_line("o1", "p1", "c1", "s1", 1, 100, &ten, true), 2, 1),
            (order_line("o1", "p2", "c2", "s1", 1, 50, &ten, true), 2, 1),
            (
                order_line("o2", "p1", "c1", "s1", 2, 200, &eleven, false),
                2,
                1
            ),
        ]
    );
}

#[test]
fn cancellation_after_payment_retracts_at_its_time() {
    let d = day(DAY);
    let out = run(
        Workers::Direct,
        vec![
            (
                1,
                vec![
                    ev(
                        "e1",
                        "s1",
                        &t("10:00"),
                        paid("o1", &[("p1", "c1", 2, 100), ("p2", "c2", 1, 50)]),
                    ),
                    ev("e2", "s2", &t("12:00"), paid("o2", &[("p1", "c1", 1, 100)])),
                ],
            ),
            (
                2,
                vec![ev("e3", "s1", "2026-11-23T08:00:00Z", delivered("o1"))],
            ),
            (
                3,
                vec![ev("e4", "s3", "2026-11-24T08:00:00Z", cancelled("o1"))],
            ),
        ],
    );
    assert_eq!(
        out.sold_products_daily,
        vec![
            (sold(d, "p1", "c1", 3, 300, 2), 1, 1),
            (sold(d, "p2", "c2", 1, 50, 1), 1, 1),
            (sold(d, "p1", "c1", 1, 100, 1), 3, 1),
            (sold(d, "p1", "c1", 3, 300, 2), 3, -1),
            (sold(d, "p2", "c2", 1, 50, 1), 3, -1),
        ]
    );
    assert_eq!(
        out.shopper_purchases,
        vec![
            (purchase("s1", "p1", 2, 1, &t("10:00")), 1, 1),
            (purchase("s1", "p2", 1, 1, &t("10:00")), 1, 1),
            (purchase("s2", "p1", 1, 1, &t("12:00")), 1, 1),
            (purchase("s1", "p1", 2, 1, &t("10:00")), 3, -1),
            (purchase("s1", "p2", 1, 1, &t("10:00")), 3, -1),
        ]
    );
    assert_eq!(
        out.product_affinities,
        vec![
            (affinity("p1", "p2", 1), 1, 1),
            (affinity("p1", "p2", 1), 3, -1)
        ]
    );
    assert_eq!(out.baskets, vec![]);
    // The cancellation flips the flag of the order's lines at its time; nothing else moves.
    let (ten, noon) = (t("10:00"), t("12:00"));
    assert_eq!(
        out.order_lines,
        vec![
            (
                order_line("o1", "p1", "c1", "s1", 2, 200, &ten, false),
                1,
                1
            ),
            (order_line("o1", "p2", "c2", "s1", 1, 50, &ten, false), 1, 1),
            (
                order_line("o2", "p1", "c1", "s2", 1, 100, &noon, false),
                1,
                1
            ),
            (
                order_line("o1", "p1", "c1", "s1", 2, 200, &ten, false),
                3,
                -1
            ),
            (order_line("o1", "p1", "c1", "s1", 2, 200, &ten, true), 3, 1),
            (
                order_line("o1", "p2", "c2", "s1", 1, 50, &ten, false),
                3,
                -1
            ),
            (order_line("o1", "p2", "c2", "s1", 1, 50, &ten, true), 3, 1),
        ]
    );
}

#[test]
fn the_earliest_of_several_payments_wins_ties_by_event_id() {
    let (d21, d22) = (day("2026-11-21"), day(DAY));
    let out = run(
        Workers::Direct,
        vec![
            (
                1,
                vec![ev(
                    "e5",
                    "s1",
                    &t("12:00"),
                    paid("o1", &[("p1", "c1", 1, 100)]),
                )],
            ),
            // Earlier, on the previous UTC day, by another shopper.
            (
                2,
                vec![ev(
                    "e7",
                    "s2",
                    "2026-11-21T23:30:00Z",
                    paid("o1", &[("p2", "c1", 2, 10)]),
                )],
            ),
            // Same instant, smaller event id.
            (
                3,
                vec![ev(
                    "e0",
                    "s1",
                    "2026-11-21T23:30:00Z",
                    paid("o1", &[("p3", "c1", 1, 7)]),
                )],
            ),
            // Later (even with a smaller id than the first): changes nothing.
            (
                4,
                vec![ev(
                    "e1",
                    "s3",
                    &t("13:00"),
                    paid("o1", &[("p4", "c1", 1, 1)]),
                )],
            ),
        ],
    );
    assert_eq!(
        out.sold_products_daily,
        vec![
            (sold(d22, "p1", "c1", 1, 100, 1), 1, 1),
            (sold(d21, "p2", "c1", 2, 20, 1), 2, 1),
            (sold(d22, "p1", "c1", 1, 100, 1), 2, -1),
            (sold(d21, "p2", "c1", 2, 20, 1), 3, -1),
            (sold(d21, "p3", "c1", 1, 7, 1), 3, 1),
        ]
    );
    assert_eq!(
        out.shopper_purchases,
        vec![
            (purchase("s1", "p1", 1, 1, &t("12:00")), 1, 1),
            (purchase("s1", "p1", 1, 1, &t("12:00")), 2, -1),
            (purchase("s2", "p2", 2, 1, "2026-11-21T23:30:00Z"), 2, 1),
            (purchase("s1", "p3", 1, 1, "2026-11-21T23:30:00Z"), 3, 1),
            (purchase("s2", "p2", 2, 1, "2026-11-21T23:30:00Z"), 3, -1),
        ]
    );
    assert_eq!(out.product_affinities, vec![]);
    assert_eq!(out.baskets, vec![]);
    // The winning payment's lines, shopper and instant (day included).
    let (noon, late) = (t("12:00"), "2026-11-21T23:30:00Z");
    assert_eq!(
        out.order_lines,
        vec![
            (
                order_line("o1", "p1", "c1", "s1", 1, 100, &noon, false),
                1,
                1
            ),
            (
                order_line("o1", "p1", "c1", "s1", 1, 100, &noon, false),
                2,
                -1
            ),
            (order_line("o1", "p2", "c1", "s2", 2, 20, late, false), 2, 1),
            (
                order_line("o1", "p2", "c1", "s2", 2, 20, late, false),
                3,
                -1
            ),
            (order_line("o1", "p3", "c1", "s1", 1, 7, late, false), 3, 1),
        ]
    );
    assert_eq!(out.order_lines[2].0.day, d21);
}

#[test]
fn removal_beyond_additions_leaves_no_line() {
    let out = run(
        Workers::Direct,
        vec![
            (
                1,
                vec![
                    ev("e1", "s1", &t("10:00"), added("p1", 2)),
                    ev("e2", "s1", &t("10:01"), added("p2", 1)),
                ],
            ),
            (2, vec![ev("e3", "s1", &t("10:02"), removed("p1", 3))]),
            // Added - removed over all changes: 2 - 3 + 2 = 1.
            (3, vec![ev("e4", "s1", &t("10:03"), added("p1", 2))]),
            // A removal of something never added.
            (4, vec![ev("e5", "s1", &t("10:04"), removed("p3", 1))]),
        ],
    );
    assert_eq!(
        out.baskets,
        vec![
            (basket("s1", "p1", 2), 1, 1),
            (basket("s1", "p2", 1), 1, 1),
            (basket("s1", "p1", 2), 2, -1),
            (basket("s1", "p1", 1), 3, 1),
        ]
    );
    assert_eq!(out.sold_products_daily, vec![]);
    assert_eq!(out.shopper_purchases, vec![]);
    assert_eq!(out.product_affinities, vec![]);
    assert_eq!(out.order_lines, vec![]);
}

fn reset_rounds() -> Vec<(u64, Vec<basketflow_vocab::Event>)> {
    vec![
        (
            1,
            vec![
                ev("e1", "s1", &t("10:00"), added("p1", 1)),
                ev("e2", "s1", &t("10:05"), added("p2", 2)),
                ev("e3", "s2", &t("10:00"), added("p1", 1)),
            ],
        ),
        (
            2,
            vec![ev(
                "e4",
                "s1",
                &t("10:10"),
                paid("o1", &[("p1", "c", 1, 100), ("p2", "c", 2, 100)]),
            )],
        ),
        (3, vec![ev("e5", "s1", &t("10:20"), added("p3", 1))]),
        // The cancelled order still resets the basket.
        (4, vec![ev("e6", "s9", &t("11:00"), cancelled("o1"))]),
    ]
}

#[test]
fn a_later_order_resets_the_basket() {
    let d = day(DAY);
    let out = run(Workers::Direct, reset_rounds());
    assert_eq!(
        out.baskets,
        vec![
            (basket("s1", "p1", 1), 1, 1),
            (basket("s1", "p2", 2), 1, 1),
            (basket("s2", "p1", 1), 1, 1),
            (basket("s1", "p1", 1), 2, -1),
            (basket("s1", "p2", 2), 2, -1),
            (basket("s1", "p3", 1), 3, 1),
        ]
    );
    assert_eq!(
        out.sold_products_daily,
        vec![
            (sold(d, "p1", "c", 1, 100, 1), 2, 1),
            (sold(d, "p2", "c", 2, 200, 1), 2, 1),
            (sold(d, "p1", "c", 1, 100, 1), 4, -1),
            (sold(d, "p2", "c", 2, 200, 1), 4, -1),
        ]
    );
    assert_eq!(
        out.shopper_purchases,
        vec![
            (purchase("s1", "p1", 1, 1, &t("10:10")), 2, 1),
            (purchase("s1", "p2", 2, 1, &t("10:10")), 2, 1),
            (purchase("s1", "p1", 1, 1, &t("10:10")), 4, -1),
            (purchase("s1", "p2", 2, 1, &t("10:10")), 4, -1),
        ]
    );
    assert_eq!(
        out.product_affinities,
        vec![
            (affinity("p1", "p2", 1), 2, 1),
            (affinity("p1", "p2", 1), 4, -1)
        ]
    );
    let paid_at = t("10:10");
    assert_eq!(
        out.order_lines,
        vec![
            (
                order_line("o1", "p1", "c", "s1", 1, 100, &paid_at, false),
                2,
                1
            ),
            (
                order_line("o1", "p2", "c", "s1", 2, 200, &paid_at, false),
                2,
                1
            ),
            (
                order_line("o1", "p1", "c", "s1", 1, 100, &paid_at, false),
                4,
                -1
            ),
            (
                order_line("o1", "p1", "c", "s1", 1, 100, &paid_at, true),
                4,
                1
            ),
            (
                order_line("o1", "p2", "c", "s1", 2, 200, &paid_at, false),
                4,
                -1
            ),
            (
                order_line("o1", "p2", "c", "s1", 2, 200, &paid_at, true),
                4,
                1
            ),
        ]
    );
}

#[test]
fn a_change_that_arrives_late_but_occurred_before_the_order_does_not_count() {
    let d = day(DAY);
    let out = run(
        Workers::Direct,
        vec![
            (
                1,
                vec![ev(
                    "e1",
                    "s1",
                    &t("12:00"),
                    paid("o1", &[("p9", "c", 1, 100)]),
                )],
            ),
            (
                2,
                vec![
                    ev("e2", "s1", &t("11:00"), added("p1", 1)),
                    // At the very instant of the order: not strictly later.
                    ev("e3", "s1", &t("12:00"), added("p2", 1)),
                    ev("e4", "s1", &t("12:01"), added("p3", 1)),
                ],
            ),
            // An older order arriving late does not move the cut-off back.
            (
                3,
                vec![ev(
                    "e5",
                    "s1",
                    &t("11:30"),
                    paid("o0", &[("p9", "c", 1, 100)]),
                )],
            ),
            (
                4,
                vec![ev(
                    "e6",
                    "s1",
                    &t("12:05"),
                    paid("o2", &[("p9", "c", 1, 100)]),
                )],
            ),
        ],
    );
    assert_eq!(
        out.baskets,
        vec![
            (basket("s1", "p3", 1), 2, 1),
            (basket("s1", "p3", 1), 4, -1)
        ]
    );
    assert_eq!(
        out.sold_products_daily,
        vec![
            (sold(d, "p9", "c", 1, 100, 1), 1, 1),
            (sold(d, "p9", "c", 1, 100, 1), 3, -1),
            (sold(d, "p9", "c", 2, 200, 2), 3, 1),
            (sold(d, "p9", "c", 2, 200, 2), 4, -1),
            (sold(d, "p9", "c", 3, 300, 3), 4, 1),
        ]
    );
    assert_eq!(
        out.shopper_purchases,
        vec![
            (purchase("s1", "p9", 1, 1, &t("12:00")), 1, 1),
            (purchase("s1", "p9", 1, 1, &t("12:00")), 3, -1),
            (purchase("s1", "p9", 2, 2, &t("12:00")), 3, 1),
            (purchase("s1", "p9", 2, 2, &t("12:00")), 4, -1),
            (purchase("s1", "p9", 3, 3, &t("12:05")), 4, 1),
        ]
    );
    assert_eq!(out.product_affinities, vec![]);
    assert_eq!(
        out.order_lines,
        vec![
            (
                order_line("o1", "p9", "c", "s1", 1, 100, &t("12:00"), false),
                1,
                1
            ),
            (
                order_line("o0", "p9", "c", "s1", 1, 100, &t("11:30"), false),
                3,
                1
            ),
            (
                order_line("o2", "p9", "c", "s1", 1, 100, &t("12:05"), false),
                4,
                1
            ),
        ]
    );
}

#[test]
fn lines_of_the_same_product_add_up_and_count_one_order() {
    let d = day(DAY);
    let out = run(
        Workers::Direct,
        vec![(
            1,
            vec![ev(
                "e1",
                "s1",
                &t("10:00"),
                paid(
                    "o1",
                    &[
                        ("p1", "c1", 1, 100),
                        ("p1", "c1", 2, 100),
                        ("p1", "c2", 1, 90),
                        ("p2", "c1", 1, 5),
                    ],
                ),
            )],
        )],
    );
    assert_eq!(
        out.sold_products_daily,
        vec![
            (sold(d, "p1", "c1", 3, 300, 1), 1, 1),
            (sold(d, "p1", "c2", 1, 90, 1), 1, 1),
            (sold(d, "p2", "c1", 1, 5, 1), 1, 1),
        ]
    );
    assert_eq!(
        out.shopper_purchases,
        vec![
            (purchase("s1", "p1", 4, 1, &t("10:00")), 1, 1),
            (purchase("s1", "p2", 1, 1, &t("10:00")), 1, 1),
        ]
    );
    assert_eq!(
        out.product_affinities,
        vec![(affinity("p1", "p2", 1), 1, 1)]
    );
    assert_eq!(out.baskets, vec![]);
    // One line per (product, category): same key lines summed, categories kept apart.
    let ten = t("10:00");
    assert_eq!(
        out.order_lines,
        vec![
            (
                order_line("o1", "p1", "c1", "s1", 3, 300, &ten, false),
                1,
                1
            ),
            (order_line("o1", "p1", "c2", "s1", 1, 90, &ten, false), 1, 1),
            (order_line("o1", "p2", "c1", "s1", 1, 5, &ten, false), 1, 1),
        ]
    );
}

#[test]
fn several_workers_and_serialized_exchange_give_the_same_updates() {
    let direct = run(Workers::Direct, reset_rounds());
    assert_eq!(run(Workers::Threads(2), reset_rounds()), direct);
    assert_eq!(run(Workers::Binary(2), reset_rounds()), direct);
}

#[test]
fn deduplicate_keeps_the_least_copy_of_each_event() {
    use differential_dataflow::AsCollection;
    use timely::dataflow::operators::capture::{Capture, Extract};
    use timely::dataflow::operators::ToStream;

    let a = ev("e1", "s1", &t("10:00"), added("p1", 2));
    let a_least = ev("e1", "s1", &t("10:00"), added("p1", 1));
    let b = ev("e2", "s1", &t("10:00"), removed("p1", 1));
    let input = vec![
        (a.clone(), 0u64, 1isize),
        (b.clone(), 0, 1),
        (b.clone(), 0, 1),
        (a_least.clone(), 0, 1),
    ];
    let captured = timely::example(move |scope| {
        let events = input.to_stream(scope).as_collection();
        basketflow_dataflows::deduplicate(&events).inner.capture()
    });
    let mut updates: Vec<_> = captured
        .extract()
        .into_iter()
        .flat_map(|(_, d)| d)
        .collect();
    updates.sort();
    assert_eq!(updates, vec![(a_least, 0, 1), (b, 0, 1)]);
}

#[test]
fn events_that_change_no_read_model_do_not_compete_for_an_event_id() {
    use basketflow_vocab::{EventBody, PageType};
    let d = day(DAY);
    // A page view and a `delivered` change reuse the ids of a payment and a cancellation. They
    // sort first (variant and status order), but change no read model: they are dropped before
    // the de-duplication, so the payment counts, and the cancellation of the other order too.
    let view = ev(
        "e1",
        "s1",
        &t("10:00"),
        EventBody::PageViewed {
            url: "https://shop.example/".into(),
            page_type: PageType::Home,
            product_id: None,
            category: None,
        },
    );
    let payment = ev("e1", "s1", &t("10:00"), paid("o1", &[("p1", "c1", 2, 100)]));
    let other = ev("e2", "s1", &t("10:01"), paid("o2", &[("p2", "c1", 1, 50)]));
    let delivered_o2 = ev("e3", "s1", &t("10:02"), delivered("o2"));
    let cancelled_o2 = ev("e3", "s1", &t("10:02"), cancelled("o2"));
    let rounds = vec![
        (1, vec![view, payment, other]),
        (2, vec![delivered_o2, cancelled_o2]),
    ];
    let out = run(Workers::Direct, rounds.clone());
    assert_eq!(
        out.sold_products_daily,
        vec![
            (sold(d, "p1", "c1", 2, 200, 1), 1, 1),
            (sold(d, "p2", "c1", 1, 50, 1), 1, 1),
            (sold(d, "p2", "c1", 1, 50, 1), 2, -1),
        ]
    );
    let mut seen = Vec::new();
    for (time, events) in rounds {
        seen.extend(events);
        assert_eq!(
            rows_at(&out, time),
            basketflow_dataflows::oracle::read_models(&seen),
            "time {time}"
        );
    }
}
