//! The reads of the cold data: the analyst views of ClickHouse (`sold_products_daily`,
//! `product_affinities`, `shopper_purchases`) that the builder takes in, restricted to the
//! retailers the active campaigns target.
//!
//! The read models' rows come back as their own types ([`basketflow_vocab::read_models`]),
//! through [`ClickHouseReader::read_model`], which derives the columns from each model's one
//! definition; only the builder's own input, sales summed over days, is read as a tuple.
//! `shopper_purchases` comes back in (retailer, shopper) order, one shopper's rows at a time
//! ([`Purchases`]), so memory holds one shopper, never the table.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use basketflow_sinks::clickhouse::{ClickHouseReader, ReadModelCursor, ReadModelQuery};
use basketflow_vocab::{ProductAffinity, ReadModel, ShopperPurchase};
use clickhouse::query::Query;

use crate::builder::ProductSales;

/// Where the cold data is: the ClickHouse HTTP interface and the database of the analyst views.
#[derive(Clone, Debug)]
pub struct ClickHouseSettings {
    /// HTTP interface URL, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// The database holding the analyst views.
    pub database: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
}

/// A reader of the analyst views, restricted to some retailers.
pub(crate) struct ColdData {
    reader: ClickHouseReader,
    /// The retailers read (`None`: all).
    retailers: Option<BTreeSet<String>>,
}

/// `sold_products_daily` summed over days: retailer, product, category, units, revenue, orders.
type ProductSalesColumns = (String, String, String, i64, i64, i64);

impl ColdData {
    /// Connects to ClickHouse (checking that the server answers); reads will be restricted to
    /// `retailers` (`None`: all).
    pub async fn connect(
        settings: &ClickHouseSettings,
        retailers: Option<BTreeSet<String>>,
    ) -> Result<ColdData> {
        let reader = ClickHouseReader::connect(
            &settings.url,
            &settings.database,
            &settings.user,
            &settings.password,
        )
        .await
        .with_context(|| format!("connecting to ClickHouse at {}", settings.url))?;
        Ok(ColdData { reader, retailers })
    }

    /// `WHERE` clause restricting `retailer_id` to the retailers, bound by [`Self::query`].
    fn retailer_clause(&self) -> &'static str {
        if self.retailers.is_some() {
            "WHERE has(?, retailer_id)"
        } else {
            ""
        }
    }

    /// The query `sql`, with the retailers bound to its [`Self::retailer_clause`].
    fn query(&self, sql: &str) -> Query {
        let query = self.reader.client().query(sql);
        match &self.retailers {
            Some(set) => query.bind(self.retailer_list(set)),
            None => query,
        }
    }

    /// Rows of read model `R` from its view, restricted to the retailers, in `order`.
    fn read_model<R: ReadModel>(&self, order: &str) -> ReadModelQuery<R> {
        let tail = format!("{} ORDER BY {order}", self.retailer_clause());
        let query = self.reader.read_model::<R>(&tail);
        match &self.retailers {
            Some(set) => query.bind(self.retailer_list(set)),
            None => query,
        }
    }

    /// The retailers as a ClickHouse array parameter.
    fn retailer_list(&self, set: &BTreeSet<String>) -> Vec<String> {
        set.iter().cloned().collect()
    }

    /// Every product's figures, summed over days, in (retailer, product, category) order.
    pub async fn products(&self) -> Result<Vec<ProductSales>> {
        let (db, clause) = (self.reader.database(), self.retailer_clause());
        let sql = format!(
            "SELECT retailer_id, product_id, category, sum(quantity) AS quantity, \
             sum(revenue_cents) AS revenue_cents, sum(orders) AS orders \
             FROM {db}.sold_products_daily {clause} \
             GROUP BY retailer_id, product_id, category \
             ORDER BY retailer_id, product_id, category"
        );
        let rows = self
            .query(&sql)
            .fetch_all::<ProductSalesColumns>()
            .await
            .context("reading sold_products_daily")?;
        Ok(rows
            .into_iter()
            .map(
                |(retailer_id, product_id, category, quantity, revenue_cents, orders)| {
                    ProductSales {
                        retailer_id,
                        product_id,
                        category,
                        quantity,
                        revenue_cents,
                        orders,
                    }
                },
            )
            .collect())
    }

    /// Calls `f` on every affinity, in (retailer, product a, product b) order; the number of
    /// rows read.
    pub async fn for_each_affinity(&self, mut f: impl FnMut(&ProductAffinity)) -> Result<u64> {
        let mut cursor = self
            .read_model::<ProductAffinity>("retailer_id, product_a, product_b")
            .fetch()
            .context("reading product_affinities")?;
        let mut rows = 0u64;
        while let Some(row) = cursor.next().await.context("reading product_affinities")? {
            rows += 1;
            f(&row);
        }
        Ok(rows)
    }

    /// The number of distinct shoppers (retailer and shopper id) with purchases.
    pub async fn count_shoppers(&self) -> Result<u64> {
        let (db, clause) = (self.reader.database(), self.retailer_clause());
        let sql = format!(
            "SELECT uniqExact(retailer_id, shopper_id) FROM {db}.shopper_purchases {clause}"
        );
        self.query(&sql)
            .fetch_one::<u64>()
            .await
            .context("counting shoppers")
    }

    /// The purchases, one retailer's shopper at a time, in (retailer, shopper) order.
    pub fn purchases(&self) -> Result<Purchases> {
        let cursor = self
            .read_model::<ShopperPurchase>("retailer_id, shopper_id, product_id")
            .fetch()
            .context("reading shopper_purchases")?;
        Ok(Purchases { cursor, next: None })
    }
}

/// `shopper_purchases` in (retailer, shopper) order, grouped by retailer and shopper.
pub(crate) struct Purchases {
    cursor: ReadModelCursor<ShopperPurchase>,
    /// The first row of the next shopper, read with the previous shopper's rows.
    next: Option<ShopperPurchase>,
}

impl Purchases {
    /// The next retailer's shopper's rows (at least one row), or `None` after the last.
    pub async fn next_shopper(&mut self) -> Result<Option<Vec<ShopperPurchase>>> {
        let mut group: Vec<ShopperPurchase> = self.next.take().into_iter().collect();
        loop {
            let row = self
                .cursor
                .next()
                .await
                .context("reading shopper_purchases")?;
            let Some(row) = row else {
                return Ok((!group.is_empty()).then_some(group));
            };
            match group.first() {
                Some(first)
                    if (&first.retailer_id, &first.shopper_id)
                        != (&row.retailer_id, &row.shopper_id) =>
                {
                    self.next = Some(row);
                    return Ok(Some(group));
                }
                _ => group.push(row),
            }
        }
    }
}
