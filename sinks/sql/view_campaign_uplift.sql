-- Analyst view: what a campaign's decisions did, per campaign, retailer, day of the shopper's
-- first decision in the campaign and group ('shown', 'held_out'), exact at the committed time.
-- A shopper belongs to the group of their first decision in the campaign (the draw is fixed
-- per campaign, retailer and shopper; a raised share only adds shoppers). "Then paid": an
-- order whose ordered_at is in (first decision's occurred_at, + the campaign's
-- attribution_seconds], not cancelled (a cancellation retracts it here as everywhere). Days
-- are UTC days.
-- campaign_revenue_cents: the revenue of the campaign's own products in those orders (its
-- products, or every product of its category when it lists none). Only campaigns known to
-- `campaigns` appear.
CREATE VIEW IF NOT EXISTS {database}.campaign_uplift AS
SELECT
    campaign_id,
    retailer_id,
    first_decision_day,
    campaign_group,
    shoppers,
    converted_shoppers,
    orders,
    revenue_cents,
    campaign_revenue_cents
FROM
(
    SELECT
        campaign_id,
        retailer_id,
        toDate(first_decision_at, 'UTC') AS first_decision_day,
        campaign_group,
        count() AS shoppers
    FROM
    (
        SELECT
            tree_id AS campaign_id,
            retailer_id,
            shopper_id,
            min(occurred_at) AS first_decision_at,
            argMin(campaign_group, occurred_at) AS campaign_group
        FROM {database}.experience_decisions
        GROUP BY tree_id, retailer_id, shopper_id
    ) AS exposed
    ALL INNER JOIN
    (
        SELECT campaign_id, retailer_id
        FROM {database}.campaigns
    ) AS known USING (campaign_id, retailer_id)
    GROUP BY campaign_id, retailer_id, first_decision_day, campaign_group
) AS exposures
ALL LEFT JOIN
(
    SELECT
        campaign_id,
        retailer_id,
        first_decision_day,
        campaign_group,
        uniqExact(shopper_id) AS converted_shoppers,
        count() AS orders,
        sum(order_revenue_cents) AS revenue_cents,
        sum(order_campaign_revenue_cents) AS campaign_revenue_cents
    FROM
    (
        SELECT
            campaign_id,
            retailer_id,
            shopper_id,
            toDate(first_decision_at, 'UTC') AS first_decision_day,
            campaign_group,
            order_id,
            sum(revenue_cents) AS order_revenue_cents,
            sum(if(empty(products), category = campaign_category, has(products, product_id))
                * revenue_cents) AS order_campaign_revenue_cents
        FROM
        (
            SELECT
                campaign_id,
                retailer_id,
                shopper_id,
                first_decision_at,
                campaign_group,
                attribution_seconds,
                campaign_category,
                products
            FROM
            (
                SELECT
                    tree_id AS campaign_id,
                    retailer_id,
                    shopper_id,
                    min(occurred_at) AS first_decision_at,
                    argMin(campaign_group, occurred_at) AS campaign_group
                FROM {database}.experience_decisions
                GROUP BY tree_id, retailer_id, shopper_id
            ) AS exposed
            ALL INNER JOIN
            (
                SELECT
                    campaign_id,
                    retailer_id,
                    attribution_seconds,
                    category AS campaign_category,
                    products
                FROM {database}.campaigns
            ) AS known USING (campaign_id, retailer_id)
        ) AS exposed_campaigns
        ALL INNER JOIN
        (
            SELECT retailer_id, shopper_id, order_id, product_id, category, revenue_cents, ordered_at
            FROM {database}.order_lines
            WHERE cancelled = 0
        ) AS paid USING (retailer_id, shopper_id)
        WHERE ordered_at > first_decision_at
            AND ordered_at <= first_decision_at + attribution_seconds
        GROUP BY campaign_id, retailer_id, shopper_id, first_decision_day, campaign_group, order_id
    ) AS attributed
    GROUP BY campaign_id, retailer_id, first_decision_day, campaign_group
) AS conversions USING (campaign_id, retailer_id, first_decision_day, campaign_group)
