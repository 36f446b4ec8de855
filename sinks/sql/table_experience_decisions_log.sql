-- Every decision the graph made, for attribution. A replay writes the same decision_id again;
-- ReplacingMergeTree collapses the copies on merge and the view below shows one row per
-- decision whether or not they have merged. decided_at is wall clock (not part of the identity).
-- campaign_group is 'shown' (published to experience-decisions) or 'held_out' (the shopper is in
-- the campaign's holdout group: recorded here, never published); tables created before it
-- existed get it by ALTER TABLE ... ADD COLUMN, their rows reading 'shown'. capped = 1: a
-- frequency cap of the shopper's tree stopped the decision (recorded, never published);
-- over_budget = 1: its campaign's budget at the retailer was spent (likewise).
CREATE TABLE IF NOT EXISTS {database}.experience_decisions_log
(
    decision_id String,
    retailer_id String,
    shopper_id String,
    session_id String,
    kind String,
    params String,
    tree_id String,
    tree_version UInt64,
    node_id String,
    reasons Array(String),
    caused_by_event_id String,
    caused_by_partition Int32,
    caused_by_offset Int64,
    occurred_at DateTime,
    decided_at DateTime,
    time UInt64,
    campaign_group String DEFAULT 'shown',
    capped UInt8 DEFAULT 0,
    over_budget UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(time)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (retailer_id, decision_id)
