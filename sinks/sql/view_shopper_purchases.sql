-- Analyst view (see view_sold_products_daily.sql).
CREATE VIEW IF NOT EXISTS {database}.shopper_purchases AS
SELECT
    retailer_id,
    shopper_id,
    product_id,
    argMax(quantity, time) AS quantity,
    argMax(orders, time) AS orders,
    argMax(last_purchase_at, time) AS last_purchase_at
FROM {database}.shopper_purchases_versions
WHERE time <= (SELECT max(time) FROM {database}.progress)
GROUP BY retailer_id, shopper_id, product_id
HAVING argMax(deleted, time) = 0
