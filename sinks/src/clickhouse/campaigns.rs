//! The campaigns `basketflow trees build` published trees for (`campaigns_log`, the analyst
//! view `campaigns`): what `campaign_uplift` needs to attribute orders to a campaign (its
//! window and its own products). No shopper data.

use clickhouse::Row;
use serde::Serialize;

use super::store::ClickHouseStore;
use super::ClickHouseError;

/// The table [`ClickHouseStore::record_campaigns`] writes.
pub const CAMPAIGNS_TABLE: &str = "campaigns_log";

/// One campaign at one targeted retailer, as one build published it.
#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize)]
pub struct CampaignRecord {
    /// The campaign (the tree id of its trees).
    pub campaign_id: String,
    /// A retailer it targets.
    pub retailer_id: String,
    /// The build (the trees' version): the view shows the greatest.
    pub version: u64,
    /// The promoted category.
    pub category: String,
    /// The promoted products; empty: every product of the category.
    pub products: Vec<String>,
    /// The holdout share in basis points.
    pub holdout_basis_points: u16,
    /// The attribution window after a shopper's first decision, in seconds.
    pub attribution_seconds: u32,
    /// When the build published it (unix seconds).
    pub published_at: u32,
}

impl ClickHouseStore {
    /// Inserts `records` into `campaigns_log` (one `INSERT`; none when empty). The table is
    /// created by the schema migration ([`Self::migrate`]), which `basketflow run` does at
    /// start; [`Self::exists`] tells a caller whether it has run.
    pub async fn record_campaigns(
        &self,
        records: &[CampaignRecord],
    ) -> Result<(), ClickHouseError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client()
            .insert_unescaped::<CampaignRecord>(&format!("{}.{CAMPAIGNS_TABLE}", self.database()))
            .await?;
        for r in records {
            insert.write(r).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// The holdout share each campaign was recorded with, per retailer, from the latest build
    /// (`campaigns` view): `(campaign_id, retailer_id, holdout_basis_points)`.
    pub async fn recorded_holdouts(&self) -> Result<Vec<(String, String, u16)>, ClickHouseError> {
        Ok(self
            .client()
            .query(&format!(
                "SELECT campaign_id, retailer_id, holdout_basis_points FROM {}.campaigns \
                 ORDER BY campaign_id, retailer_id",
                self.database()
            ))
            .fetch_all()
            .await?)
    }
}
