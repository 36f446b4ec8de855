//! The five read models, each defined once: its row type, its columns with their ClickHouse
//! types, and which of them form the key.
//!
//! A definition is one `read_model!` block below. Everything else about a read model follows
//! from it, so adding a column is one edit here plus the SQL that a test checks against it:
//! - the graph computes collections of the row type (`basketflow_dataflows`);
//! - the ClickHouse sink stores each change as a *version* of the key's row, or the key's
//!   [`ReadModel::tombstone`] when the key has no row any more (`basketflow_sinks::clickhouse`);
//! - the sink's inserts and reads are generic over [`ReadModel`]: a row is written and read as
//!   its [`Value`]s in [`Definition::columns`] order, converted to and from ClickHouse's binary
//!   form by column type (so any reader, such as the tree builder, gets the row type back);
//! - the DDL in `sinks/sql/` (table `<name>_versions`, view `<name>`) is checked against
//!   [`Definition`] by a test of the sink.
//!
//! Each row type starts with its key fields, so its derived `Ord` sorts by key first. In every
//! read model a key has at most one live row: a change of figures is the retraction (`-1`) of
//! the old row and the insertion (`+1`) of the new one at the same time.

use std::borrow::Cow;
use std::fmt::Debug;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A column's ClickHouse type (the types a read model uses; the names are ClickHouse's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// Days since 1970-01-01 (RowBinary `UInt16`); the row holds an `i32`.
    Date,
    /// Whole seconds since the epoch (RowBinary `UInt32`); the row holds a [`Timestamp`].
    DateTime,
    /// UTF-8 text; the row holds a `String`.
    String,
    /// The row holds an `i64`.
    Int64,
    /// A flag, 0 or 1 (ClickHouse 18.16 has no `Bool`); the row holds a `bool`.
    UInt8,
}

impl ColumnType {
    /// The type's name in ClickHouse DDL.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::Date => "Date",
            ColumnType::DateTime => "DateTime",
            ColumnType::String => "String",
            ColumnType::Int64 => "Int64",
            ColumnType::UInt8 => "UInt8",
        }
    }
}

/// One column of a read model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column's (and the row field's) name.
    pub name: &'static str,
    /// Its ClickHouse type.
    pub ty: ColumnType,
    /// True for the key columns, which come first.
    pub key: bool,
}

/// A read model's definition: its name and columns.
#[derive(Clone, Copy, Debug)]
pub struct Definition {
    /// The read model's name: its analyst view's, `<name>_versions` for its storage table.
    pub name: &'static str,
    /// Its columns, key columns first, in the row type's field order.
    pub columns: &'static [Column],
    /// Its storage table: `<name>_versions`.
    pub versions_table: &'static str,
    /// The columns' names, in the same order as [`Self::columns`].
    pub column_names: &'static [&'static str],
    /// The columns of its versions table: [`Self::column_names`], then `deleted` (`UInt8`,
    /// 1 for a tombstone) and `time` (`UInt64`, the graph's logical time of the version).
    pub version_column_names: &'static [&'static str],
}

impl Definition {
    /// The key columns, in key order.
    pub fn key_columns(&self) -> impl Iterator<Item = &'static Column> {
        self.columns.iter().filter(|c| c.key)
    }

    /// True when the rows name a shopper (a `shopper_id` column): an erasure or the retention
    /// period removes them.
    pub fn names_shoppers(&self) -> bool {
        self.columns.iter().any(|c| c.name == "shopper_id")
    }
}

/// The value of one column of a row, in the row's own Rust type (see [`ColumnType`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// A `Date` column: days since 1970-01-01.
    Date(i32),
    /// A `DateTime` column: an instant.
    DateTime(Timestamp),
    /// A `String` column.
    String(Cow<'a, str>),
    /// An `Int64` column.
    Int64(i64),
    /// A `UInt8` flag column.
    UInt8(bool),
}

/// A read model's row type, with its [`Definition`].
///
/// Implemented by this module's `read_model!` macro for the five row types of this module; generic code (the
/// versions logic, ClickHouse inserts and reads) works on any implementation.
pub trait ReadModel: Ord + Clone + Debug + Send + Sync + 'static {
    /// The key fields: at most one live row per key.
    type Key: Ord + Clone + Debug;
    /// The read model's name and columns.
    const DEFINITION: Definition;
    /// This row's key.
    fn key(&self) -> Self::Key;
    /// This row's key compared with `other`'s, field by field, without building either key
    /// (the same order as comparing [`Self::key`]s).
    fn cmp_key(&self, other: &Self) -> std::cmp::Ordering;
    /// Feeds this row's key fields to `state`, in order, without building the key (the same
    /// as hashing [`Self::key`]).
    fn hash_key<H: std::hash::Hasher>(&self, state: &mut H);
    /// The row stored for a deleted key: the key fields, every other field zero, empty or
    /// false (its type's default).
    fn tombstone(key: Self::Key) -> Self;
    /// The row's values, one per column of [`Self::DEFINITION`], in that order.
    fn values(&self) -> impl Iterator<Item = Value<'_>>;
    /// The row whose [`Self::values`] these are; `None` when there are not exactly as many
    /// values as columns or one has the wrong type.
    fn from_values<'a>(values: impl IntoIterator<Item = Value<'a>>) -> Option<Self>;
}

/// How a row field becomes its [`Value`]'s payload: a copy, or a borrowed string.
trait AsValue<'a, T> {
    fn as_value(&'a self) -> T;
}

impl<T: Copy> AsValue<'_, T> for T {
    fn as_value(&self) -> T {
        *self
    }
}

impl<'a> AsValue<'a, Cow<'a, str>> for String {
    fn as_value(&'a self) -> Cow<'a, str> {
        Cow::Borrowed(self)
    }
}

/// How a [`Value`]'s payload becomes a row field again.
trait FromValue<T> {
    fn from_value(value: T) -> Self;
}

impl<T> FromValue<T> for T {
    fn from_value(value: T) -> Self {
        value
    }
}

impl FromValue<Cow<'_, str>> for String {
    fn from_value(value: Cow<'_, str>) -> Self {
        value.into_owned()
    }
}

/// Declares a read model: its row type (key fields first, in a `key { }` block) and, for each
/// field, the ClickHouse type of its column (`field: RustType as ClickHouseType`). A field whose
/// Rust type does not hold its column type's [`Value`] does not compile.
macro_rules! read_model {
    (
        $(#[$attr:meta])*
        pub struct $row:ident as $name:literal {
            key {
                $( $(#[$key_attr:meta])* $key:ident: $key_ty:ty as $key_ch:ident, )+
            }
            $( $(#[$val_attr:meta])* $val:ident: $val_ty:ty as $val_ch:ident, )+
        }
    ) => {
        $(#[$attr])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $row {
            $( $(#[$key_attr])* pub $key: $key_ty, )+
            $( $(#[$val_attr])* pub $val: $val_ty, )+
        }

        impl ReadModel for $row {
            type Key = ($($key_ty,)+);
            const DEFINITION: Definition = Definition {
                name: $name,
                versions_table: concat!($name, "_versions"),
                columns: &[
                    $( Column { name: stringify!($key), ty: ColumnType::$key_ch, key: true }, )+
                    $( Column { name: stringify!($val), ty: ColumnType::$val_ch, key: false }, )+
                ],
                column_names: &[$(stringify!($key),)+ $(stringify!($val),)+],
                version_column_names: &[
                    $(stringify!($key),)+ $(stringify!($val),)+ "deleted", "time",
                ],
            };

            fn key(&self) -> Self::Key {
                ($(Clone::clone(&self.$key),)+)
            }

            fn cmp_key(&self, other: &Self) -> std::cmp::Ordering {
                std::cmp::Ordering::Equal
                    $(.then_with(|| Ord::cmp(&self.$key, &other.$key)))+
            }

            fn hash_key<H: std::hash::Hasher>(&self, state: &mut H) {
                $(std::hash::Hash::hash(&self.$key, state);)+
            }

            fn tombstone(($($key,)+): Self::Key) -> Self {
                $row {
                    $($key,)+
                    $($val: Default::default(),)+
                }
            }

            fn values(&self) -> impl Iterator<Item = Value<'_>> {
                [
                    $( Value::$key_ch(AsValue::as_value(&self.$key)), )+
                    $( Value::$val_ch(AsValue::as_value(&self.$val)), )+
                ]
                .into_iter()
            }

            fn from_values<'a>(values: impl IntoIterator<Item = Value<'a>>) -> Option<Self> {
                let mut values = values.into_iter();
                let row = $row {
                    $( $key: match values.next()? {
                        Value::$key_ch(v) => FromValue::from_value(v),
                        _ => return None,
                    }, )+
                    $( $val: match values.next()? {
                        Value::$val_ch(v) => FromValue::from_value(v),
                        _ => return None,
                    }, )+
                };
                values.next().is_none().then_some(row)
            }
        }
    };
}

read_model! {
    /// Sales of one product on one UTC day at one retailer, over non-cancelled orders.
    ///
    /// Key: `(day, retailer_id, product_id, category)`.
    pub struct SoldProductDaily as "sold_products_daily" {
        key {
            /// UTC day of the order's `occurred_at`, in days since 1970-01-01 (ClickHouse `Date`).
            day: i32 as Date,
            /// The retailer.
            retailer_id: String as String,
            /// The product.
            product_id: String as String,
            /// The category the order lines gave the product.
            category: String as String,
        }
        /// Units sold: sum of the lines' quantities.
        quantity: i64 as Int64,
        /// Sum of `quantity * unit_price_cents` over the lines.
        revenue_cents: i64 as Int64,
        /// Distinct orders with at least one such line that day.
        orders: i64 as Int64,
    }
}

read_model! {
    /// A shopper's purchase history of one product at one retailer, over non-cancelled orders.
    ///
    /// Key: `(retailer_id, shopper_id, product_id)`. The shopper is the `order_paid` event's.
    pub struct ShopperPurchase as "shopper_purchases" {
        key {
            /// The retailer.
            retailer_id: String as String,
            /// The shopper who paid the orders.
            shopper_id: String as String,
            /// The product.
            product_id: String as String,
        }
        /// Units bought, over all of the shopper's orders.
        quantity: i64 as Int64,
        /// Distinct orders containing the product.
        orders: i64 as Int64,
        /// The latest `occurred_at` of those orders (stored in whole seconds).
        last_purchase_at: Timestamp as DateTime,
    }
}

read_model! {
    /// How often two products were bought in the same non-cancelled order at one retailer.
    ///
    /// Key: `(retailer_id, product_a, product_b)`, always with `product_a < product_b`.
    pub struct ProductAffinity as "product_affinities" {
        key {
            /// The retailer.
            retailer_id: String as String,
            /// The smaller product id of the pair.
            product_a: String as String,
            /// The greater product id of the pair.
            product_b: String as String,
        }
        /// Non-cancelled orders containing both products.
        orders_together: i64 as Int64,
    }
}

read_model! {
    /// One line of a shopper's current basket at one retailer.
    ///
    /// Key: `(retailer_id, shopper_id, product_id)`. Lines whose quantity would be zero or less
    /// are absent.
    pub struct BasketLine as "baskets" {
        key {
            /// The retailer.
            retailer_id: String as String,
            /// The shopper.
            shopper_id: String as String,
            /// The product.
            product_id: String as String,
        }
        /// Units added minus units removed since the shopper's latest order (always > 0).
        quantity: i64 as Int64,
    }
}

read_model! {
    /// One line of a paid order, cancelled or not: what the order's winning `order_paid` says
    /// about one `(product_id, category)`.
    ///
    /// Key: `(retailer_id, order_id, product_id, category)`. The winning payment is the order's
    /// earliest `order_paid` (ties: smallest `event_id`); its lines are summed per
    /// `(product_id, category)`. An order cancelled before any payment has no lines; once paid,
    /// its lines are present with `cancelled = true`. A cancellation arriving after the payment
    /// changes the lines' `cancelled` (a retraction and an insertion at the cancellation's
    /// time). The tombstone's shopper is empty, its instant and day the epoch.
    pub struct PaidOrderLine as "order_lines" {
        key {
            /// The retailer.
            retailer_id: String as String,
            /// The order, unique per retailer.
            order_id: String as String,
            /// The product.
            product_id: String as String,
            /// The category the order's lines gave the product.
            category: String as String,
        }
        /// The shopper who paid (the winning `order_paid` event's); empty once erased.
        shopper_id: String as String,
        /// Units: sum of the matching lines' quantities.
        quantity: i64 as Int64,
        /// Sum of `quantity * unit_price_cents` over the matching lines.
        revenue_cents: i64 as Int64,
        /// The winning `order_paid` event's `occurred_at` (stored in whole seconds).
        ordered_at: Timestamp as DateTime,
        /// UTC day of `ordered_at`, in days since 1970-01-01 (ClickHouse `Date`).
        day: i32 as Date,
        /// True when the order has any `cancelled` status change (before or after the payment).
        cancelled: bool as UInt8,
    }
}

/// Every read model's definition, in the order the sink writes them.
pub const DEFINITIONS: [Definition; 5] = [
    SoldProductDaily::DEFINITION,
    ShopperPurchase::DEFINITION,
    ProductAffinity::DEFINITION,
    BasketLine::DEFINITION,
    PaidOrderLine::DEFINITION,
];

/// The five read models, as differential collections of rows (multiplicity `isize`), as the
/// graph computes them and the ClickHouse sink consumes them (feature `collections`).
///
/// In each collection a key has at most one live row, so a sink can apply the `(row, time,
/// diff)` updates of each completed time as deletes and inserts.
#[cfg(feature = "collections")]
pub struct ReadModels<'scope, T: timely::progress::Timestamp> {
    /// Per day, retailer, product and category: units, revenue and orders sold.
    pub sold_products_daily: differential_dataflow::VecCollection<'scope, T, SoldProductDaily>,
    /// Per retailer, shopper and product: units, orders and the latest purchase.
    pub shopper_purchases: differential_dataflow::VecCollection<'scope, T, ShopperPurchase>,
    /// Per retailer and pair of products: orders containing both.
    pub product_affinities: differential_dataflow::VecCollection<'scope, T, ProductAffinity>,
    /// Per retailer, shopper and product: the units in the current basket.
    pub baskets: differential_dataflow::VecCollection<'scope, T, BasketLine>,
    /// Per retailer, order, product and category: the lines of every paid order, cancelled
    /// ones included (flagged).
    pub order_lines: differential_dataflow::VecCollection<'scope, T, PaidOrderLine>,
}

#[cfg(test)]
mod tests;
