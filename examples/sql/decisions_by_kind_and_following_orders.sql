-- Decisions by kind, and the orders that followed: per experience kind, how many decisions
-- were emitted, to how many distinct shoppers, and how many orders (and how much revenue)
-- the same shopper paid at the same retailer within 24 hours after a decision of that kind.
--
-- Parameters: none. To restrict to a period, filter experience_decisions on occurred_at in
-- both subqueries that read it.
--
-- Rules:
--   * Only decisions shown to the shopper: not held out, capped or over budget (those are in
--     campaign_uplift's comparison instead).
--   * "After a decision": the order's ordered_at is in (occurred_at, occurred_at + 24 h] of
--     the decision, occurred_at being the tracker instant of the event that caused the
--     decision (the clock the orders' ordered_at use; decided_at is the graph's clock and is
--     not used). An order paid at the very second of the decision does not count.
--   * Only non-cancelled orders count (order_lines with cancelled = 0).
--   * An order that follows several decisions of one kind counts once for that kind (and
--     once for each other kind it follows); its revenue is the sum of its lines.
--   * Distinct shoppers are distinct (retailer_id, shopper_id): shopper ids are the
--     retailers' own.
--
-- Columns: kind, decisions, shoppers, following_orders, following_revenue_cents. Kinds with
-- decisions but no following order show 0. Sorted by kind.
-- Runs on ClickHouse 18.16 and on current releases (no window functions; two-table joins
-- with USING only, as 18.16 requires).
SELECT
    kind,
    decisions,
    shoppers,
    following_orders,
    following_revenue_cents
FROM
(
    SELECT
        kind,
        count() AS decisions,
        uniqExact(retailer_id, shopper_id) AS shoppers
    FROM basketflow.experience_decisions
    WHERE campaign_group = 'shown' AND capped = 0 AND over_budget = 0
    GROUP BY kind
) AS decided
ALL LEFT JOIN
(
    SELECT
        kind,
        count() AS following_orders,
        sum(order_revenue_cents) AS following_revenue_cents
    FROM
    (
        SELECT DISTINCT kind, retailer_id, order_id, order_revenue_cents
        FROM
        (
            SELECT kind, retailer_id, shopper_id, occurred_at AS decision_at
            FROM basketflow.experience_decisions
            WHERE campaign_group = 'shown' AND capped = 0 AND over_budget = 0
        ) AS decision
        ALL INNER JOIN
        (
            SELECT
                retailer_id,
                shopper_id,
                order_id,
                ordered_at,
                sum(revenue_cents) AS order_revenue_cents
            FROM basketflow.order_lines
            WHERE cancelled = 0
            GROUP BY retailer_id, shopper_id, order_id, ordered_at
        ) AS paid USING (retailer_id, shopper_id)
        WHERE ordered_at > decision_at AND ordered_at <= decision_at + 86400
    )
    GROUP BY kind
) AS followed USING (kind)
ORDER BY kind;
