-- Analyst view: the gamified promotions' winners, exact at the committed time. A game shown
-- for a paid order draws that order (one in the game's win_one_in, seeded by the campaign:
-- the same winners on every replay and cluster shape); a winning order gets a 'game_won'
-- decision, published to the storefront, whose prize is the order's total up to the game's
-- max_prize_cents. Held-out and capped games draw nothing; a game refused over budget takes
-- its win with it (neither is here). order_stands = 1 while the order is paid and not
-- cancelled (a cancellation within settlement retracts it, as everywhere; 0 also when the
-- order is unknown to order_lines): pay a winner whose order still stands after its return
-- period. Erasure removes the winner's row with the shopper's other decisions; the contact to
-- pay them lives apart (reward contacts).
CREATE VIEW IF NOT EXISTS {database}.game_winners AS
SELECT
    campaign_id,
    retailer_id,
    shopper_id,
    order_id,
    prize,
    prize_cents,
    won_at,
    decision_id,
    game_decision_id,
    order_stands
FROM
(
    SELECT
        tree_id AS campaign_id,
        retailer_id,
        shopper_id,
        visitParamExtractString(params, 'order_id') AS order_id,
        visitParamExtractString(params, 'prize') AS prize,
        visitParamExtractInt(params, 'prize_cents') AS prize_cents,
        occurred_at AS won_at,
        decision_id,
        visitParamExtractString(params, 'game_decision_id') AS game_decision_id
    FROM {database}.experience_decisions
    WHERE kind = 'game_won' AND campaign_group = 'shown' AND capped = 0 AND over_budget = 0
) AS won
ALL LEFT JOIN
(
    SELECT retailer_id, order_id, max(cancelled = 0) AS order_stands
    FROM {database}.order_lines
    GROUP BY retailer_id, order_id
) AS orders USING (retailer_id, order_id)
