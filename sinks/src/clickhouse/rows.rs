//! The RowBinary rows of the ClickHouse tables: what the store inserts and the reader reads.
//!
//! Read models have no row structs of their own here: `StoredVersion` (a row of
//! `<name>_versions`) and [`ViewRow`] (a row of the view `<name>`) work for any
//! [`ReadModel`], column by column, from its definition. Each [`Value`] is converted to its
//! column's binary form (`Date`: days as `UInt16`, `DateTime`: seconds as `UInt32`, flags as
//! `UInt8`); a value that does not fit is a [`ClickHouseError::OutOfRange`] naming the table
//! and the column (`check_range`), found before anything is written. Reading converts back:
//! a `DateTime` comes back in whole seconds.
//!
//! `DecisionRow` is a row of `experience_decisions_log`, `LateEventRow` one of
//! `late_events_log`.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use basketflow_vocab::read_models::{Column, ColumnType, ReadModel, Value};
use basketflow_vocab::{Decision, LateInput, ParamValue, Timestamp};
use clickhouse::_priv::RowKind;
use clickhouse::Row;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{self, SerializeStruct, Serializer};
use serde::Deserialize;
use serde::Serialize;

use crate::clickhouse::versions::Version;
use crate::clickhouse::ClickHouseError;

/// One column's value in its RowBinary form.
enum Stored<'a> {
    UInt16(u16),
    UInt32(u32),
    String(Cow<'a, str>),
    Int64(i64),
    UInt8(u8),
}

impl<'a> Stored<'a> {
    /// `value`, of `column` of `table`, as ClickHouse stores it.
    fn new(
        table: &'static str,
        column: &Column,
        value: Value<'a>,
    ) -> Result<Stored<'a>, ClickHouseError> {
        let out_of_range = |value: i64, column_type| ClickHouseError::OutOfRange {
            table,
            field: column.name,
            value,
            column_type,
        };
        Ok(match value {
            Value::Date(day) => {
                Stored::UInt16(u16::try_from(day).map_err(|_| {
                    out_of_range(day.into(), "Date (days 0..=65535 since 1970-01-01)")
                })?)
            }
            Value::DateTime(t) => {
                let seconds = t.unix_seconds();
                Stored::UInt32(u32::try_from(seconds).map_err(|_| {
                    out_of_range(seconds, "DateTime (seconds 0..=4294967295 since the epoch)")
                })?)
            }
            Value::String(s) => Stored::String(s),
            Value::Int64(i) => Stored::Int64(i),
            Value::UInt8(flag) => Stored::UInt8(flag.into()),
        })
    }
}

impl Serialize for Stored<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Stored::UInt16(v) => s.serialize_u16(*v),
            Stored::UInt32(v) => s.serialize_u32(*v),
            Stored::String(v) => s.serialize_str(v),
            Stored::Int64(v) => s.serialize_i64(*v),
            Stored::UInt8(v) => s.serialize_u8(*v),
        }
    }
}

/// Checks that every value of `versions` fits its column, so that a batch with one that does
/// not writes nothing.
pub(crate) fn check_range<R: ReadModel>(versions: &[Version<R>]) -> Result<(), ClickHouseError> {
    let d = R::DEFINITION;
    for version in versions {
        for (column, value) in d.columns.iter().zip(version.row.values()) {
            Stored::new(d.versions_table, column, value)?;
        }
    }
    Ok(())
}

/// A version of read model `R` as its table `<name>_versions` stores it: the model's columns,
/// then `deleted` and `time`.
pub(crate) struct StoredVersion<'a, R>(pub(crate) &'a Version<R>);

// `Row` is derived for structs with fixed fields; these rows take their columns from `R`'s
// definition, so they implement it by hand, as the derive would (an exact pin of `clickhouse`
// keeps these hidden items in place).
impl<R: ReadModel> Row for StoredVersion<'_, R> {
    const NAME: &'static str = "StoredVersion";
    const COLUMN_NAMES: &'static [&'static str] = R::DEFINITION.version_column_names;
    const COLUMN_COUNT: usize = R::DEFINITION.version_column_names.len();
    const KIND: RowKind = RowKind::Struct;
    type Value<'v> = StoredVersion<'v, R>;
}

impl<R: ReadModel> Serialize for StoredVersion<'_, R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = R::DEFINITION;
        let mut row = s.serialize_struct(Self::NAME, Self::COLUMN_COUNT)?;
        for (column, value) in d.columns.iter().zip(self.0.row.values()) {
            let stored =
                Stored::new(d.versions_table, column, value).map_err(ser::Error::custom)?;
            row.serialize_field(column.name, &stored)?;
        }
        row.serialize_field("deleted", &u8::from(self.0.deleted))?;
        row.serialize_field("time", &self.0.time)?;
        row.end()
    }
}

/// One row of read model `R` as its analyst view (`SELECT ?fields FROM <db>.<name>`) returns
/// it: the row is `.0`. Any query whose columns are `R`'s, in its definition's order, reads
/// into it (`?fields` names them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewRow<R>(pub R);

impl<R: ReadModel> Row for ViewRow<R> {
    const NAME: &'static str = "ViewRow";
    const COLUMN_NAMES: &'static [&'static str] = R::DEFINITION.column_names;
    const COLUMN_COUNT: usize = R::DEFINITION.column_names.len();
    const KIND: RowKind = RowKind::Struct;
    type Value<'v> = ViewRow<R>;
}

impl<'de, R: ReadModel> Deserialize<'de> for ViewRow<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Columns<R>(PhantomData<R>);

        impl<'de, R: ReadModel> Visitor<'de> for Columns<R> {
            type Value = ViewRow<R>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a row of {}", R::DEFINITION.name)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ViewRow<R>, A::Error> {
                let d = R::DEFINITION;
                let mut values = Vec::with_capacity(d.columns.len());
                for (i, column) in d.columns.iter().enumerate() {
                    fn next<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
                        seq: &mut A,
                        i: usize,
                    ) -> Result<T, A::Error> {
                        seq.next_element()?
                            .ok_or_else(|| de::Error::invalid_length(i, &"every column"))
                    }
                    values.push(match column.ty {
                        ColumnType::Date => Value::Date(next::<A, u16>(&mut seq, i)?.into()),
                        ColumnType::DateTime => Value::DateTime(Timestamp(
                            i64::from(next::<A, u32>(&mut seq, i)?) * 1_000_000,
                        )),
                        ColumnType::String => Value::String(Cow::Owned(next(&mut seq, i)?)),
                        ColumnType::Int64 => Value::Int64(next(&mut seq, i)?),
                        ColumnType::UInt8 => Value::UInt8(next::<A, u8>(&mut seq, i)? != 0),
                    });
                }
                R::from_values(values).map(ViewRow).ok_or_else(|| {
                    de::Error::custom(format!("not a row of {}: wrong column types", d.name))
                })
            }
        }

        d.deserialize_struct("ViewRow", R::DEFINITION.column_names, Columns(PhantomData))
    }
}

/// One row of `experience_decisions_log`, for attribution (the storefronts' Kafka topic is
/// written by [`crate::kafka_outputs`], exactly once).
///
/// Decisions travel with the read models to the ClickHouse writer on worker 0
/// ([`crate::clickhouse::operator`]), which inserts those of each batch of completed times into
/// `experience_decisions_log` before the batch's progress row (`ReplacingMergeTree` by
/// `decision_id`, so a replay's copy collapses; a crash's copies above the committed time are
/// discarded); an erasure deletes the shopper's decisions after they are written, in the same
/// batch. The analyst view `experience_decisions` shows one row per decision (the first
/// `decided_at` among copies) with no `FINAL` needed.
#[derive(Row, Serialize)]
pub(crate) struct DecisionRow {
    decision_id: String,
    retailer_id: String,
    shopper_id: String,
    session_id: String,
    kind: String,
    params: String,
    tree_id: String,
    tree_version: u64,
    node_id: String,
    reasons: Vec<String>,
    caused_by_event_id: String,
    caused_by_partition: i32,
    caused_by_offset: i64,
    occurred_at: u32,
    decided_at: u32,
    time: u64,
    /// `shown`, or `held_out` ([`Decision::held_out`]).
    campaign_group: &'static str,
    /// 1 when a frequency cap stopped it ([`Decision::capped`]).
    capped: u8,
    /// 1 when its campaign's budget was spent ([`Decision::over_budget`]).
    over_budget: u8,
}

/// `experience_decisions_log.campaign_group` of a decision published to storefronts.
pub const SHOWN: &str = "shown";
/// `experience_decisions_log.campaign_group` of a held-out shopper's decision (recorded, never
/// published).
pub const HELD_OUT: &str = "held_out";

/// A row of `late_events_log`: a late input ([`LateInput`]).
#[derive(Row, Serialize)]
pub(crate) struct LateEventRow {
    retailer_id: String,
    order_id: String,
    event_id: String,
    event_type: String,
    reason: String,
    occurred_at: u32,
    read_at: u32,
    time: u64,
}

impl From<LateInput> for LateEventRow {
    fn from(l: LateInput) -> Self {
        LateEventRow {
            occurred_at: seconds(l.occurred_at),
            read_at: u32::try_from(l.read_at / 1000).unwrap_or(u32::MAX),
            time: l.read_at,
            reason: l.reason.as_str().to_owned(),
            retailer_id: l.retailer_id,
            order_id: l.order_id,
            event_id: l.event_id,
            event_type: l.event_type,
        }
    }
}

fn seconds(t: Timestamp) -> u32 {
    u32::try_from(t.unix_seconds().max(0)).unwrap_or(u32::MAX)
}

impl From<Decision> for DecisionRow {
    fn from(d: Decision) -> Self {
        let params: serde_json::Map<String, serde_json::Value> = d
            .experience
            .params
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    ParamValue::Int(i) => serde_json::json!(i),
                    ParamValue::Text(s) => serde_json::json!(s),
                    ParamValue::List(l) => serde_json::json!(l),
                };
                (k.clone(), v)
            })
            .collect();
        DecisionRow {
            decision_id: d.decision_id,
            retailer_id: d.retailer_id,
            shopper_id: d.shopper_id,
            session_id: d.session_id.unwrap_or_default(),
            kind: d.experience.kind.as_str().to_string(),
            params: serde_json::Value::Object(params).to_string(),
            tree_id: d.tree_id,
            tree_version: d.tree_version,
            node_id: d.node_id,
            reasons: d.reasons,
            caused_by_event_id: d.caused_by.event_id,
            caused_by_partition: d.caused_by.partition,
            caused_by_offset: d.caused_by.offset,
            occurred_at: seconds(d.caused_by.occurred_at),
            decided_at: seconds(d.decided_at),
            time: d.time,
            campaign_group: if d.held_out { HELD_OUT } else { SHOWN },
            capped: u8::from(d.capped),
            over_budget: u8::from(d.over_budget),
        }
    }
}

#[cfg(test)]
mod tests {
    use basketflow_vocab::{PaidOrderLine, ShopperPurchase, SoldProductDaily};

    use super::*;
    use crate::clickhouse::fixtures::{paid_line, sold};

    #[test]
    fn values_out_of_range_are_errors() {
        let v = Version {
            row: SoldProductDaily { day: -1, ..sold() },
            deleted: false,
            time: 1,
        };
        assert!(matches!(
            check_range(&[v]),
            Err(ClickHouseError::OutOfRange { field: "day", .. })
        ));
        let v = Version {
            row: ShopperPurchase {
                retailer_id: "r".into(),
                shopper_id: "s".into(),
                product_id: "p".into(),
                quantity: 1,
                orders: 1,
                last_purchase_at: Timestamp(-1),
            },
            deleted: false,
            time: 1,
        };
        assert!(matches!(
            check_range(&[v]),
            Err(ClickHouseError::OutOfRange {
                field: "last_purchase_at",
                ..
            })
        ));
        let line = PaidOrderLine {
            ordered_at: Timestamp(-1),
            day: 0,
            ..paid_line(false)
        };
        let v = Version {
            row: line.clone(),
            deleted: false,
            time: 1,
        };
        assert!(matches!(
            check_range(&[v]),
            Err(ClickHouseError::OutOfRange {
                field: "ordered_at",
                ..
            })
        ));
        let v = Version {
            row: PaidOrderLine {
                ordered_at: Timestamp(0),
                day: 70_000,
                ..line
            },
            deleted: false,
            time: 1,
        };
        assert!(matches!(
            check_range(&[v]),
            Err(ClickHouseError::OutOfRange {
                table: "order_lines_versions",
                field: "day",
                ..
            })
        ));
    }
}
