-- Cancellation rate by category: per retailer and category, how many paid orders had a line
-- in the category, how many of those were cancelled (before or after payment), and the rate
-- (from order_lines, all days).
--
-- Parameters: none. To restrict to a period, add e.g. `WHERE day >= '2026-11-01'` (the UTC
-- day of the order's payment).
--
-- Columns: retailer_id, category, paid_orders, cancelled_orders, cancellation_rate
-- (cancelled_orders / paid_orders, rounded to 4 decimals). An order with lines in several
-- categories counts once in each. Orders cancelled before any payment are not paid orders
-- and do not appear. Sorted by retailer_id, category.
-- Runs on ClickHouse 18.16 and on current releases (no window functions).
SELECT
    retailer_id,
    category,
    uniqExact(order_id) AS paid_orders,
    uniqExactIf(order_id, cancelled = 1) AS cancelled_orders,
    round(cancelled_orders / paid_orders, 4) AS cancellation_rate
FROM basketflow.order_lines
GROUP BY retailer_id, category
ORDER BY retailer_id, category;
