use super::*;

fn sold() -> SoldProductDaily {
    let key = (20_000, "r".to_string(), "p".to_string(), "c".to_string());
    SoldProductDaily {
        quantity: 3,
        revenue_cents: 300,
        orders: 1,
        ..SoldProductDaily::tombstone(key)
    }
}

fn line() -> PaidOrderLine {
    let key = ["r", "o", "p", "c"].map(String::from);
    let [retailer, order, product, category] = key;
    PaidOrderLine {
        shopper_id: "s".into(),
        quantity: 2,
        revenue_cents: 300,
        ordered_at: Timestamp(1_700_000_000_000_000),
        day: 19_675,
        cancelled: true,
        ..PaidOrderLine::tombstone((retailer, order, product, category))
    }
}

fn round_trips<R: ReadModel + PartialEq>(row: R) {
    assert_eq!(row.values().count(), R::DEFINITION.columns.len());
    let read = R::from_values(row.values());
    assert_eq!(read.as_ref(), Some(&row));
    let tombstone = R::tombstone(row.key());
    assert_eq!(tombstone.key(), row.key());
    let read = R::from_values(tombstone.values());
    assert_eq!(read, Some(tombstone));
}

#[test]
fn every_read_model_round_trips_through_its_values() {
    round_trips(sold());
    let [r, s, p, a, b] = ["r", "s", "p", "a", "b"].map(String::from);
    round_trips(ShopperPurchase {
        quantity: 2,
        orders: 2,
        last_purchase_at: Timestamp(1_700_000_000_000_000),
        ..ShopperPurchase::tombstone((r.clone(), s.clone(), p.clone()))
    });
    round_trips(ProductAffinity {
        orders_together: 5,
        ..ProductAffinity::tombstone((r.clone(), a, b))
    });
    round_trips(BasketLine {
        quantity: 1,
        ..BasketLine::tombstone((r, s, p))
    });
    round_trips(line());
}

#[test]
fn values_follow_the_columns_with_their_types() {
    let row = line();
    let values: Vec<Value<'_>> = row.values().collect();
    assert_eq!(
        values,
        vec![
            Value::String("r".into()),
            Value::String("o".into()),
            Value::String("p".into()),
            Value::String("c".into()),
            Value::String("s".into()),
            Value::Int64(2),
            Value::Int64(300),
            Value::DateTime(Timestamp(1_700_000_000_000_000)),
            Value::Date(19_675),
            Value::UInt8(true),
        ]
    );
    for (column, value) in PaidOrderLine::DEFINITION.columns.iter().zip(&values) {
        let ty = match value {
            Value::Date(_) => ColumnType::Date,
            Value::DateTime(_) => ColumnType::DateTime,
            Value::String(_) => ColumnType::String,
            Value::Int64(_) => ColumnType::Int64,
            Value::UInt8(_) => ColumnType::UInt8,
        };
        assert_eq!(column.ty, ty, "{}", column.name);
    }
}

#[test]
fn values_of_the_wrong_type_or_number_are_not_a_row() {
    let row = sold();
    let mut values: Vec<Value<'_>> = row.values().collect();
    values.pop();
    assert_eq!(SoldProductDaily::from_values(values.clone()), None);
    values.push(Value::Int64(1));
    values.push(Value::Int64(1));
    assert_eq!(SoldProductDaily::from_values(values), None);
    let mut values: Vec<Value<'_>> = row.values().collect();
    values[0] = Value::Int64(20_000);
    assert_eq!(SoldProductDaily::from_values(values), None);
}

#[test]
fn definitions_put_the_key_first_and_name_their_storage() {
    let names: Vec<&str> = DEFINITIONS.iter().map(|d| d.name).collect();
    assert_eq!(
        names,
        [
            "sold_products_daily",
            "shopper_purchases",
            "product_affinities",
            "baskets",
            "order_lines"
        ]
    );
    for d in DEFINITIONS {
        let keys = d.key_columns().count();
        assert!(d.columns[..keys].iter().all(|c| c.key), "{}", d.name);
        assert!(d.columns[keys..].iter().all(|c| !c.key), "{}", d.name);
        let names: Vec<&str> = d.columns.iter().map(|c| c.name).collect();
        assert_eq!(names, d.column_names);
        assert_eq!(
            d.version_column_names,
            [d.column_names, &["deleted", "time"]].concat()
        );
    }
    let key: Vec<&str> = PaidOrderLine::DEFINITION
        .key_columns()
        .map(|c| c.name)
        .collect();
    assert_eq!(key, ["retailer_id", "order_id", "product_id", "category"]);
    assert_eq!(BasketLine::DEFINITION.versions_table, "baskets_versions");
    let per_shopper: Vec<&str> = DEFINITIONS
        .iter()
        .filter(|d| d.names_shoppers())
        .map(|d| d.name)
        .collect();
    assert_eq!(per_shopper, ["shopper_purchases", "baskets", "order_lines"]);
}

#[test]
fn keys_compare_in_place_as_the_keys_they_build() {
    let keyed = |day, product: &str, quantity| SoldProductDaily {
        quantity,
        ..SoldProductDaily::tombstone((day, "r".into(), product.into(), "c".into()))
    };
    let rows = [
        keyed(20_000, "p", 3),
        keyed(20_000, "p", 1),
        keyed(20_000, "q", 1),
        keyed(19_999, "z", 9),
        keyed(20_001, "a", 0),
    ];
    for a in &rows {
        for b in &rows {
            assert_eq!(a.cmp_key(b), a.key().cmp(&b.key()), "{a:?} against {b:?}");
        }
    }
    // Rows that differ only in their values have equal keys.
    assert!(rows[0].cmp_key(&rows[1]).is_eq());
    assert!(rows[0].cmp(&rows[1]).is_gt());
}
