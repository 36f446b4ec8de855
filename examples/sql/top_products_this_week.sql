-- Top products of the week: per retailer, the 10 products with the most units sold over the
-- 7 UTC days ending on a given day (non-cancelled orders, from sold_products_daily).
--
-- Parameter (replace the placeholder in the text before running):
--   {end_day}  the last day of the window, YYYY-MM-DD (e.g. 2026-11-22); the window is the
--              7 days from {end_day} - 6 to {end_day}, both included.
--
-- Columns: retailer_id, product_id, quantity (units), revenue_cents. At most 10 rows per
-- retailer, by quantity descending, ties by product_id. A product sold under several
-- categories is one product (its categories summed).
-- Runs on ClickHouse 18.16 and on current releases (no window functions).
SELECT
    retailer_id,
    product_id,
    sum(quantity) AS quantity,
    sum(revenue_cents) AS revenue_cents
FROM basketflow.sold_products_daily
WHERE day >= toDate('{end_day}') - 6 AND day <= toDate('{end_day}')
GROUP BY retailer_id, product_id
ORDER BY retailer_id, quantity DESC, product_id
LIMIT 10 BY retailer_id;
