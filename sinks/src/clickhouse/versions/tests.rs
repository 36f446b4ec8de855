use basketflow_vocab::Timestamp;

use super::*;
use crate::clickhouse::fixtures::{paid_line, sold};

fn line(shopper: &str, product: &str, quantity: i64) -> BasketLine {
    BasketLine {
        retailer_id: "r1".into(),
        shopper_id: shopper.into(),
        product_id: product.into(),
        quantity,
    }
}

fn live(row: BasketLine, time: u64) -> Version<BasketLine> {
    Version {
        row,
        deleted: false,
        time,
    }
}

fn gone(shopper: &str, product: &str, time: u64) -> Version<BasketLine> {
    Version {
        row: line(shopper, product, 0),
        deleted: true,
        time,
    }
}

/// `versions` sorted by key, then time.
fn by_key_and_time<R: ReadModel>(mut versions: Vec<Version<R>>) -> Vec<Version<R>> {
    versions.sort_by(|a, b| a.row.cmp_key(&b.row).then(a.time.cmp(&b.time)));
    versions
}

#[test]
fn inserts_changes_deletions_and_noops() {
    let updates = vec![
        // s1/p1: inserted at 1, changed at 2, deleted at 3, re-added at 4.
        (line("s1", "p1", 2), 1, 1),
        (line("s1", "p1", 2), 2, -1),
        (line("s1", "p1", 5), 2, 1),
        (line("s1", "p1", 5), 3, -1),
        (line("s1", "p1", 1), 4, 1),
        // s1/p2: a change to identical figures at 2: nothing. Deleted at 3.
        (line("s1", "p2", 7), 2, -1),
        (line("s1", "p2", 7), 2, 1),
        (line("s1", "p2", 7), 3, -1),
        // s2/p1: inserted and retracted at the same time: nothing; then the diffs of one
        // insertion arrive in pieces (+1 +1 -1) at 5.
        (line("s2", "p1", 3), 4, 1),
        (line("s2", "p1", 3), 4, -1),
        (line("s2", "p1", 4), 5, 1),
        (line("s2", "p1", 4), 5, 1),
        (line("s2", "p1", 4), 5, -1),
        // s3/p9: a deletion only (the row was written by an earlier batch).
        (line("s3", "p9", 8), 6, -1),
    ];
    // Order of the input does not matter.
    let mut reversed = updates.clone();
    reversed.reverse();
    let expected = vec![
        live(line("s1", "p1", 2), 1),
        live(line("s1", "p1", 5), 2),
        gone("s1", "p1", 3),
        live(line("s1", "p1", 1), 4),
        gone("s1", "p2", 3),
        live(line("s2", "p1", 4), 5),
        gone("s3", "p9", 6),
    ];
    // The versions come in the order of a hash of the key (then time): the same order for
    // the same updates, whatever their input order.
    let converted = to_versions(updates).unwrap();
    assert_eq!(to_versions(reversed).unwrap(), converted);
    assert_eq!(by_key_and_time(converted), expected);
    assert_eq!(
        to_versions(Vec::<Update<BasketLine>>::new()).unwrap(),
        vec![]
    );
}

#[test]
fn tombstones_of_every_read_model_keep_the_key_and_zero_the_values() {
    let sold = sold();
    assert_eq!(
        to_versions(vec![(sold.clone(), 9, -1)]).unwrap(),
        vec![Version {
            row: SoldProductDaily {
                quantity: 0,
                revenue_cents: 0,
                orders: 0,
                ..sold
            },
            deleted: true,
            time: 9,
        }]
    );
    let bought = ShopperPurchase {
        retailer_id: "r".into(),
        shopper_id: "s".into(),
        product_id: "p".into(),
        quantity: 2,
        orders: 2,
        last_purchase_at: Timestamp(1_700_000_000_000_000),
    };
    assert_eq!(
        to_versions(vec![(bought.clone(), 4, -1)]).unwrap()[0].row,
        ShopperPurchase {
            quantity: 0,
            orders: 0,
            last_purchase_at: Timestamp(0),
            ..bought
        }
    );
    let pair = ProductAffinity {
        retailer_id: "r".into(),
        product_a: "a".into(),
        product_b: "b".into(),
        orders_together: 5,
    };
    assert_eq!(
        to_versions(vec![(pair.clone(), 4, -1)]).unwrap()[0].row,
        ProductAffinity {
            orders_together: 0,
            ..pair
        }
    );
    let line = paid_line(true);
    assert_eq!(
        to_versions(vec![(line.clone(), 4, -1)]).unwrap()[0].row,
        PaidOrderLine {
            shopper_id: String::new(),
            quantity: 0,
            revenue_cents: 0,
            ordered_at: Timestamp(0),
            day: 0,
            cancelled: false,
            ..line
        }
    );
}

#[test]
fn a_cancellation_of_a_paid_order_is_a_new_version_of_each_line() {
    let line = paid_line;
    let batch = Batch::from_updates(
        2,
        Updates {
            order_lines: vec![
                (line(false), 1, 1),
                (line(false), 2, -1),
                (line(true), 2, 1),
            ],
            ..Updates::default()
        },
    )
    .unwrap();
    assert_eq!(
        batch.order_lines,
        vec![
            Version {
                row: line(false),
                deleted: false,
                time: 1,
            },
            Version {
                row: line(true),
                deleted: false,
                time: 2,
            },
        ]
    );
    assert_eq!(batch.len(), 2);
}

#[test]
fn rejects_what_is_not_an_upsert_stream() {
    assert_eq!(
        to_versions(vec![(line("s", "p", 1), 1, 2)]),
        Err(ConvertError::Multiplicity {
            table: "baskets",
            key: r#"("r1", "s", "p")"#.into(),
            time: 1,
            diff: 2,
        })
    );
    assert_eq!(
        to_versions(vec![(line("s", "p", 1), 1, 1), (line("s", "p", 2), 1, 1)]),
        Err(ConvertError::SeveralRows {
            table: "baskets",
            key: r#"("r1", "s", "p")"#.into(),
            time: 1,
            count: 2,
            what: "inserted",
        })
    );
    assert!(matches!(
        to_versions(vec![(line("s", "p", 1), 1, -1), (line("s", "p", 2), 1, -1)]),
        Err(ConvertError::SeveralRows {
            what: "retracted",
            ..
        })
    ));
}

#[test]
fn batches_convert_every_read_model_and_check_their_time() {
    let updates = Updates {
        baskets: vec![(line("s", "p", 1), 3, 1), (line("s", "q", 1), 5, -1)],
        ..Updates::default()
    };
    let mut batch = Batch::from_updates(5, updates.clone()).unwrap();
    batch.baskets = by_key_and_time(batch.baskets);
    assert_eq!(
        batch,
        Batch {
            through: 5,
            baskets: vec![live(line("s", "p", 1), 3), gone("s", "q", 5)],
            ..Batch::default()
        }
    );
    assert_eq!(batch.len(), 2);
    assert_eq!(
        Batch::from_updates(4, updates),
        Err(ConvertError::BeyondBatch {
            table: "baskets",
            time: 5,
            through: 4,
        })
    );
    assert!(Batch::from_updates(7, Updates::default())
        .unwrap()
        .is_empty());
}
