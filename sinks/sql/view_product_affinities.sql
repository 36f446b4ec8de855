-- Analyst view (see view_sold_products_daily.sql).
CREATE VIEW IF NOT EXISTS {database}.product_affinities AS
SELECT
    retailer_id,
    product_a,
    product_b,
    argMax(orders_together, time) AS orders_together
FROM {database}.product_affinities_versions
WHERE time <= (SELECT max(time) FROM {database}.progress)
GROUP BY retailer_id, product_a, product_b
HAVING argMax(deleted, time) = 0
