-- Analyst view: each campaign at each retailer as its latest `trees build` published it
-- (trees_version: that build's tree version).
-- products empty: every product of the category is the campaign's own.
CREATE VIEW IF NOT EXISTS {database}.campaigns AS
SELECT
    campaign_id,
    retailer_id,
    max(version) AS trees_version,
    argMax(category, version) AS category,
    argMax(products, version) AS products,
    argMax(holdout_basis_points, version) AS holdout_basis_points,
    argMax(attribution_seconds, version) AS attribution_seconds,
    argMax(published_at, version) AS published_at
FROM {database}.campaigns_log
GROUP BY retailer_id, campaign_id
