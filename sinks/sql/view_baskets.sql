-- Analyst view (see view_sold_products_daily.sql).
CREATE VIEW IF NOT EXISTS {database}.baskets AS
SELECT
    retailer_id,
    shopper_id,
    product_id,
    argMax(quantity, time) AS quantity
FROM {database}.baskets_versions
WHERE time <= (SELECT max(time) FROM {database}.progress)
GROUP BY retailer_id, shopper_id, product_id
HAVING argMax(deleted, time) = 0
