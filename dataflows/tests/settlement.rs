//! Rule 7, settlement, in hand-written scenarios: what stands after an order settles, what a
//! late input is, and that privacy still reaches a settled order. (The property tests in
//! `oracle_agreement.rs` compare the graph with the oracle on random traffic and horizons.)

mod support;

use basketflow_dataflows::oracle::Horizons;
use basketflow_testkit::events::{cancelled, ev, paid};
use basketflow_vocab::{Event, LateInput, LateReason, Retention};
use support::*;

/// Orders settle 10 ms after their first payment; copies are never de-duplicated again; the
/// retention period is long (1,000 ms) unless a test says otherwise.
const HORIZONS: Horizons = Horizons {
    dedup_ms: u64::MAX,
    settlement_ms: 10,
};

fn long_retention() -> Retention {
    Retention {
        default_ms: 1_000,
        per_retailer_ms: Default::default(),
    }
}

fn run_with(
    rounds: Vec<(u64, Vec<Event>)>,
    erasures: ErasureRounds,
    retention: Retention,
) -> Output {
    run_private(Workers::Direct, rounds, erasures, Some(retention), HORIZONS)
}

fn payment(event_id: &str, order_id: &str) -> Event {
    ev(
        event_id,
        "s1",
        "2026-11-22T10:00:00Z",
        paid(order_id, &[("p1", "c", 2, 500)]),
    )
}

fn cancellation(event_id: &str, order_id: &str) -> Event {
    ev(event_id, "s1", "2026-11-23T10:00:00Z", cancelled(order_id))
}

fn late(
    event_id: &str,
    event_type: &str,
    reason: LateReason,
    read_at: u64,
    occurred: &str,
) -> LateInput {
    LateInput {
        retailer_id: "r1".into(),
        order_id: "o1".into(),
        event_id: event_id.into(),
        event_type: event_type.into(),
        reason,
        occurred_at: basketflow_testkit::events::at(occurred),
        read_at,
    }
}

#[test]
fn a_cancellation_within_settlement_retracts_the_order_and_one_after_it_is_late() {
    // o1 paid at 1 (settles at 11), cancelled at 10: out of the figures.
    let within = run_with(
        vec![
            (1, vec![payment("e1", "o1")]),
            (10, vec![cancellation("e2", "o1")]),
        ],
        Vec::new(),
        long_retention(),
    );
    let rows = rows_at(&within, 10);
    assert!(rows.sold_products_daily.is_empty(), "{rows:?}");
    assert!(rows.order_lines.iter().all(|l| l.cancelled));
    assert!(within.late_inputs.is_empty());

    // The same cancellation read at 11: the order has settled, its figures stand.
    let after = run_with(
        vec![
            (1, vec![payment("e1", "o1")]),
            (11, vec![cancellation("e2", "o1")]),
        ],
        Vec::new(),
        long_retention(),
    );
    let rows = rows_at(&after, 11);
    assert_eq!(rows.sold_products_daily.len(), 1);
    assert_eq!(rows.sold_products_daily[0].quantity, 2);
    assert_eq!(rows.sold_products_daily[0].revenue_cents, 1_000);
    assert!(rows.order_lines.iter().all(|l| !l.cancelled));
    assert_eq!(
        after.late_inputs,
        vec![late(
            "e2",
            "order_status_changed",
            LateReason::CancellationAfterSettlement,
            11,
            "2026-11-23T10:00:00Z"
        )]
    );
}

#[test]
fn a_second_payment_after_settlement_is_late_and_changes_nothing() {
    // An earlier payment of o1 read after settlement would have won rule 2's tie; it is late.
    let mut earlier = payment("e0", "o1");
    earlier.occurred_at = basketflow_testkit::events::at("2026-11-21T10:00:00Z");
    let out = run_with(
        vec![(1, vec![payment("e1", "o1")]), (20, vec![earlier])],
        Vec::new(),
        long_retention(),
    );
    let lines = rows_at(&out, 20).order_lines;
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0].ordered_at,
        basketflow_testkit::events::at("2026-11-22T10:00:00Z")
    );
    assert_eq!(
        out.late_inputs,
        vec![late(
            "e0",
            "order_paid",
            LateReason::PaymentAfterSettlement,
            20,
            "2026-11-21T10:00:00Z"
        )]
    );
}

#[test]
fn an_order_cancelled_before_any_payment_settles_unpaid() {
    // Cancelled at 1, no payment by 11: the payment read at 11 is late, nothing is sold.
    let out = run_with(
        vec![
            (1, vec![cancellation("e2", "o1")]),
            (11, vec![payment("e1", "o1")]),
        ],
        Vec::new(),
        long_retention(),
    );
    let rows = rows_at(&out, 11);
    assert!(rows.sold_products_daily.is_empty());
    assert!(rows.order_lines.is_empty());
    assert_eq!(out.late_inputs.len(), 1);
    assert_eq!(
        out.late_inputs[0].reason,
        LateReason::PaymentAfterSettlement
    );
    // Read at 10 instead, the payment counts and the order is cancelled.
    let out = run_with(
        vec![
            (1, vec![cancellation("e2", "o1")]),
            (10, vec![payment("e1", "o1")]),
        ],
        Vec::new(),
        long_retention(),
    );
    let rows = rows_at(&out, 10);
    assert!(rows.sold_products_daily.is_empty());
    assert_eq!(rows.order_lines.len(), 1);
    assert!(rows.order_lines[0].cancelled);
    assert!(out.late_inputs.is_empty());
}

#[test]
fn an_erasure_reaches_a_settled_order() {
    // o1 settles at 11; the shopper is erased at 30: the order lines stay, anonymous, the
    // purchase history goes, the sold products stand.
    let out = run_with(
        vec![(1, vec![payment("e1", "o1")]), (30, Vec::new())],
        vec![(30, vec![("r1".into(), "s1".into())])],
        long_retention(),
    );
    let before = rows_at(&out, 29);
    assert_eq!(before.order_lines[0].shopper_id, "s1");
    assert_eq!(before.shopper_purchases.len(), 1);
    let after = rows_at(&out, 30);
    assert_eq!(after.order_lines.len(), 1);
    assert_eq!(after.order_lines[0].shopper_id, "");
    assert!(after.shopper_purchases.is_empty());
    assert_eq!(after.sold_products_daily, before.sold_products_daily);
    assert!(out.late_inputs.is_empty());
}

#[test]
fn an_order_stays_settled_after_its_retention_period() {
    // Retention 5 ms: o1 (paid at 1, settled at 11) ends at 16, its data anonymous since 6.
    // A cancellation read at 100 is still late: an order settles once.
    let short = Retention {
        default_ms: 5,
        per_retailer_ms: Default::default(),
    };
    let out = run_with(
        vec![
            (1, vec![payment("e1", "o1")]),
            (100, vec![cancellation("e2", "o1")]),
        ],
        Vec::new(),
        short,
    );
    let rows = rows_at(&out, 100);
    assert_eq!(rows.sold_products_daily.len(), 1);
    assert_eq!(rows.order_lines.len(), 1);
    assert_eq!(rows.order_lines[0].shopper_id, "");
    assert!(!rows.order_lines[0].cancelled);
    assert_eq!(out.late_inputs.len(), 1);
    assert_eq!(out.late_inputs[0].read_at, 100);
}
