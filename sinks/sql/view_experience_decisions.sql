-- One row per decision (the first decided_at among replayed copies), at or below the committed
-- time like every analyst view (a batch writes its decisions before its progress row). Grouped by retailer too:
-- retailers are tenants, and a decision is always one retailer's.
CREATE VIEW IF NOT EXISTS {database}.experience_decisions AS
SELECT
    decision_id,
    retailer_id,
    any(shopper_id) AS shopper_id,
    any(session_id) AS session_id,
    any(kind) AS kind,
    any(params) AS params,
    any(tree_id) AS tree_id,
    any(tree_version) AS tree_version,
    any(node_id) AS node_id,
    any(reasons) AS reasons,
    any(caused_by_event_id) AS caused_by_event_id,
    any(caused_by_partition) AS caused_by_partition,
    any(caused_by_offset) AS caused_by_offset,
    any(occurred_at) AS occurred_at,
    min(decided_at) AS decided_at,
    any(campaign_group) AS campaign_group,
    any(capped) AS capped,
    any(over_budget) AS over_budget
FROM {database}.experience_decisions_log
WHERE time <= (SELECT max(time) FROM {database}.progress)
GROUP BY retailer_id, decision_id
