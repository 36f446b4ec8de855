-- The campaigns `basketflow trees build` published trees for: one row per campaign, targeted
-- retailer and build (`version`, the trees' version). The analyst view `campaigns` shows the
-- latest build of each; `campaign_uplift` reads the attribution window and the campaign's own
-- products from it. No shopper data.
CREATE TABLE IF NOT EXISTS {database}.campaigns_log
(
    campaign_id String,
    retailer_id String,
    version UInt64,
    category String,
    products Array(String),
    holdout_basis_points UInt16,
    attribution_seconds UInt32,
    published_at DateTime
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (retailer_id, campaign_id)
