-- Analyst view (see view_sold_products_daily.sql): the lines of every paid order; filter on
-- cancelled = 0 for what was sold, on cancelled = 1 for what was cancelled after payment.
CREATE VIEW IF NOT EXISTS {database}.order_lines AS
SELECT
    retailer_id,
    order_id,
    argMax(shopper_id, time) AS shopper_id,
    product_id,
    category,
    argMax(quantity, time) AS quantity,
    argMax(revenue_cents, time) AS revenue_cents,
    argMax(ordered_at, time) AS ordered_at,
    argMax(day, time) AS day,
    argMax(cancelled, time) AS cancelled
FROM {database}.order_lines_versions
WHERE time <= (SELECT max(time) FROM {database}.progress)
GROUP BY retailer_id, order_id, product_id, category
HAVING argMax(deleted, time) = 0
