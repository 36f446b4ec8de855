-- Campaign uplift with a confidence interval: per campaign and retailer, over every day of
-- first decision, the conversion of shown shoppers against held-out ones (from the
-- campaign_uplift view), their difference, a two-proportion z statistic and a 95% confidence
-- interval of the difference.
--
-- Parameters: none. To restrict to a period, filter campaign_uplift on first_decision_day in
-- the innermost query.
--
-- Rules:
--   * A group's conversion rate is converted_shoppers / shoppers: shoppers with a decision in
--     the campaign who paid an order within its attribution window after their first one.
--   * uplift = shown rate - held-out rate.
--   * z = uplift / sqrt(p (1 - p) (1 / n_shown + 1 / n_held_out)), p the pooled rate (both
--     groups' converted over both groups' shoppers): |z| > 1.96 is significant at 5%.
--   * The 95% interval is uplift -+ 1.96 sqrt(p_s (1 - p_s) / n_s + p_h (1 - p_h) / n_h)
--     (unpooled, Wald); it needs some tens of conversions per group to be trusted.
--   * A campaign with an empty group (no holdout configured, or no held-out shopper decided
--     yet) shows nan: there is nothing to compare.
--
-- Columns: campaign_id, retailer_id, shown_shoppers, shown_converted, held_out_shoppers,
-- held_out_converted, shown_rate, held_out_rate, uplift, z, uplift_low_95, uplift_high_95
-- (ratios rounded to 4 decimals). Sorted by campaign_id, retailer_id.
-- Runs on ClickHouse 18.16 and on current releases.
SELECT
    campaign_id,
    retailer_id,
    shown_shoppers,
    shown_converted,
    held_out_shoppers,
    held_out_converted,
    round(p_shown, 4) AS shown_rate,
    round(p_held_out, 4) AS held_out_rate,
    round(p_shown - p_held_out, 4) AS uplift,
    round((p_shown - p_held_out) / sqrt(p_pooled * (1 - p_pooled) * (1 / shown_shoppers + 1 / held_out_shoppers)), 4) AS z,
    round(p_shown - p_held_out - 1.96 * se, 4) AS uplift_low_95,
    round(p_shown - p_held_out + 1.96 * se, 4) AS uplift_high_95
FROM
(
    SELECT
        campaign_id,
        retailer_id,
        shown_shoppers,
        shown_converted,
        held_out_shoppers,
        held_out_converted,
        shown_converted / shown_shoppers AS p_shown,
        held_out_converted / held_out_shoppers AS p_held_out,
        (shown_converted + held_out_converted) / (shown_shoppers + held_out_shoppers) AS p_pooled,
        sqrt(p_shown * (1 - p_shown) / shown_shoppers + p_held_out * (1 - p_held_out) / held_out_shoppers) AS se
    FROM
    (
        SELECT
            campaign_id,
            retailer_id,
            sumIf(shoppers, campaign_group = 'shown') AS shown_shoppers,
            sumIf(converted_shoppers, campaign_group = 'shown') AS shown_converted,
            sumIf(shoppers, campaign_group = 'held_out') AS held_out_shoppers,
            sumIf(converted_shoppers, campaign_group = 'held_out') AS held_out_converted
        FROM basketflow.campaign_uplift
        GROUP BY campaign_id, retailer_id
    )
)
ORDER BY campaign_id, retailer_id;
