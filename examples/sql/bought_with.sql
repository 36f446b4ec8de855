-- Bought with: the products most often bought in the same (non-cancelled) order as a given
-- product at a given retailer (from product_affinities, which stores each pair once with
-- product_a < product_b: both directions are read).
--
-- Parameters (replace the placeholders in the text before running; they sit inside string
-- literals, so a quote in a value must be escaped as \'):
--   {retailer_id}  the retailer, e.g. r1
--   {product_id}   the product, e.g. p-pasta
--
-- Columns: other_product_id, orders_together (non-cancelled orders containing both),
-- share_of_orders (orders_together / non-cancelled orders containing {product_id}, from
-- order_lines, rounded to 4 decimals). At most 20 rows, by orders_together descending, ties by
-- other_product_id.
-- Runs on ClickHouse 18.16 and on current releases (no window functions).
SELECT
    if(product_a = '{product_id}', product_b, product_a) AS other_product_id,
    orders_together,
    round(orders_together / (
        SELECT uniqExact(order_id)
        FROM basketflow.order_lines
        WHERE retailer_id = '{retailer_id}' AND product_id = '{product_id}' AND cancelled = 0
    ), 4) AS share_of_orders
FROM basketflow.product_affinities
WHERE retailer_id = '{retailer_id}'
    AND (product_a = '{product_id}' OR product_b = '{product_id}')
ORDER BY orders_together DESC, other_product_id
LIMIT 20;
