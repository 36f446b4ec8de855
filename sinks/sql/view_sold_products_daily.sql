-- Analyst view: per key, the newest version at or before the committed time, unless it is a
-- deletion. Exact whatever ReplacingMergeTree has merged; versions of a batch whose progress
-- row is missing are invisible.
CREATE VIEW IF NOT EXISTS {database}.sold_products_daily AS
SELECT
    day,
    retailer_id,
    product_id,
    category,
    argMax(quantity, time) AS quantity,
    argMax(revenue_cents, time) AS revenue_cents,
    argMax(orders, time) AS orders
FROM {database}.sold_products_daily_versions
WHERE time <= (SELECT max(time) FROM {database}.progress)
GROUP BY day, retailer_id, product_id, category
HAVING argMax(deleted, time) = 0
