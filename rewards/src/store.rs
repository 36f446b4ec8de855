//! The contacts' ClickHouse database (`[rewards] database`, default `basketflow_rewards`),
//! written by the loader as the rewards user, which may read and write this database alone.
//!
//! | table or view | what |
//! | --- | --- |
//! | `reward_contacts_log` | every contact the loader stored, with its Kafka partition and offset (a replay writes identical rows) |
//! | `reward_contacts` (view) | one row per `(retailer_id, contact_id)`: the latest read (plain SQL for the retailer's payout team) |
//! | `rewards_audit` | erasures and retention deletions: request id, retailer, rows removed, kind, when; no shopper id, no email |
//! | `loader_positions` | the next offset of each partition of the two topics the loader reads |
//! | `erasing` | the shopper being erased, for the statements to name by subquery (empty between erasures) |
//!
//! The positions are written after the rows they cover: a crash in between makes the restart
//! read those messages again and write the same rows, which the view collapses (at least once,
//! idempotent rows). An erasure names its shopper in the body of an insert into `erasing` and
//! the `DELETE` by a subquery, never in a statement's text (kept in `system.mutations`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use basketflow_vocab::privacy::Retention;
use clickhouse::Client;
use serde::Serialize;

use crate::contact::RewardContact;
use crate::RewardsError;

/// How long a `DELETE` mutation may take before the loader gives up (and, restarted, retries).
pub const MUTATION_TIMEOUT: Duration = Duration::from_secs(300);

/// One stored contact: the contact and where the loader read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredContact {
    /// The contact.
    pub contact: RewardContact,
    /// The broker's timestamp of its message, in ms (retention counts from it).
    pub received_ms: u64,
    /// Its partition of the topic.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

#[derive(clickhouse::Row, Serialize)]
struct ContactRow<'a> {
    retailer_id: &'a str,
    shopper_id: &'a str,
    contact_id: &'a str,
    email: &'a str,
    campaign_id: &'a str,
    order_id: &'a str,
    submitted_at: u32,
    received_at: u32,
    received_ms: u64,
    kafka_partition: i32,
    kafka_offset: i64,
    loaded_at: u32,
}

#[derive(clickhouse::Row, Serialize)]
struct PositionRow<'a> {
    topic: &'a str,
    kafka_partition: i32,
    next_offset: i64,
    written_at: u32,
}

#[derive(clickhouse::Row, Serialize)]
struct ErasingRow<'a> {
    retailer_id: &'a str,
    shopper_id: &'a str,
}

/// What [`RewardsStore::erase`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Erased {
    /// The request was applied now: this many rows were deleted (and audited).
    Applied(u64),
    /// The audit already holds the retailer's request and no row was left to delete (a replay
    /// after a crash): nothing was deleted or audited.
    AlreadyAudited,
}

/// The rewards database of one ClickHouse server.
#[derive(Clone)]
pub struct RewardsStore {
    client: Client,
    database: String,
    mutation_timeout: Duration,
}

/// The statements that create the database, its tables and its view (idempotent).
pub fn schema(db: &str) -> Vec<String> {
    vec![
        format!("CREATE DATABASE IF NOT EXISTS {db}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.reward_contacts_log (\
             retailer_id String, shopper_id String, contact_id String, email String, \
             campaign_id String, order_id String, submitted_at DateTime, received_at DateTime, \
             received_ms UInt64, kafka_partition Int32, kafka_offset Int64, loaded_at DateTime) \
             ENGINE = MergeTree() ORDER BY (retailer_id, shopper_id, contact_id)"
        ),
        // The latest read of each contact id; replayed copies are identical rows.
        format!(
            "CREATE VIEW IF NOT EXISTS {db}.reward_contacts AS SELECT retailer_id, contact_id, \
             argMax(shopper_id, v) AS shopper_id, argMax(email, v) AS email, \
             argMax(campaign_id, v) AS campaign_id, argMax(order_id, v) AS order_id, \
             argMax(submitted_at, v) AS submitted_at, max(received_at) AS received_at \
             FROM (SELECT *, (received_ms, kafka_partition, kafka_offset) AS v \
             FROM {db}.reward_contacts_log) GROUP BY retailer_id, contact_id"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.rewards_audit (request_id String, \
             retailer_id String, kind String, rows_removed UInt64, at DateTime) \
             ENGINE = MergeTree() ORDER BY (at, request_id)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.loader_positions (topic String, \
             kafka_partition Int32, next_offset Int64, written_at DateTime) \
             ENGINE = ReplacingMergeTree(next_offset) ORDER BY (topic, kafka_partition)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.erasing (retailer_id String, shopper_id String) \
             ENGINE = MergeTree() ORDER BY (retailer_id, shopper_id)"
        ),
    ]
}

fn now_s() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

impl RewardsStore {
    /// A store of `database` on the server at `url`, as `user`, after checking that the server
    /// answers and `database` is a plain identifier.
    pub async fn connect(
        url: &str,
        database: &str,
        user: &str,
        password: &str,
    ) -> Result<RewardsStore, RewardsError> {
        let plain = database
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            return Err(RewardsError::Config(format!(
                "rewards.database {database:?} is not a plain identifier"
            )));
        }
        let client = Client::default()
            .with_url(url)
            .with_user(user)
            .with_password(password)
            // Schema validation sends `describe_include_subcolumns`, which 18.16 rejects.
            .with_validation(false);
        client.query("SELECT 1").execute().await?;
        Ok(RewardsStore {
            client,
            database: database.to_string(),
            mutation_timeout: MUTATION_TIMEOUT,
        })
    }

    /// The database.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Creates the database, tables and view if they do not exist.
    pub async fn migrate(&self) -> Result<(), RewardsError> {
        for statement in schema(&self.database) {
            self.client.query(&statement).execute().await?;
        }
        Ok(())
    }

    /// The next offset of each `(topic, partition)` the loader recorded.
    pub async fn positions(&self) -> Result<BTreeMap<(String, i32), i64>, RewardsError> {
        let db = &self.database;
        let rows: Vec<(String, i32, i64)> = self
            .client
            .query(&format!(
                "SELECT topic, kafka_partition, max(next_offset) FROM {db}.loader_positions \
                 GROUP BY topic, kafka_partition"
            ))
            .fetch_all()
            .await?;
        Ok(rows.into_iter().map(|(t, p, o)| ((t, p), o)).collect())
    }

    /// Stores `contacts` (one insert), then the `positions` that cover them.
    pub async fn write(
        &self,
        contacts: &[StoredContact],
        positions: &BTreeMap<(String, i32), i64>,
    ) -> Result<(), RewardsError> {
        let db = &self.database;
        let loaded_at = now_s();
        if !contacts.is_empty() {
            let mut insert = self
                .client
                .insert_unescaped::<ContactRow<'_>>(&format!("{db}.reward_contacts_log"))
                .await?;
            for s in contacts {
                let c = &s.contact;
                insert
                    .write(&ContactRow {
                        retailer_id: &c.retailer_id,
                        shopper_id: &c.shopper_id,
                        contact_id: &c.contact_id,
                        email: &c.email,
                        campaign_id: &c.campaign_id,
                        order_id: c.order_id.as_deref().unwrap_or(""),
                        submitted_at: c.submitted_at.unix_seconds().clamp(0, u32::MAX as i64)
                            as u32,
                        received_at: (s.received_ms / 1000).min(u32::MAX as u64) as u32,
                        received_ms: s.received_ms,
                        kafka_partition: s.partition,
                        kafka_offset: s.offset,
                        loaded_at,
                    })
                    .await?;
            }
            insert.end().await?;
        }
        if !positions.is_empty() {
            let mut insert = self
                .client
                .insert_unescaped::<PositionRow<'_>>(&format!("{db}.loader_positions"))
                .await?;
            for ((topic, partition), next) in positions {
                insert
                    .write(&PositionRow {
                        topic,
                        kafka_partition: *partition,
                        next_offset: *next,
                        written_at: loaded_at,
                    })
                    .await?;
            }
            insert.end().await?;
        }
        Ok(())
    }

    /// Every contact of `(retailer_id, shopper_id)` in the `reward_contacts` view, as JSON
    /// objects ordered by `contact_id` (the shopper's right of access). Unlike the erasure, its
    /// statement names the shopper (a client-side bind: it lands in `system.query_log`); the
    /// `erasing` table cannot be shared with a loader erasing at the same time (README).
    pub async fn export(
        &self,
        retailer_id: &str,
        shopper_id: &str,
    ) -> Result<Vec<serde_json::Value>, RewardsError> {
        let db = &self.database;
        let rows: Vec<(String, String, String, String, u32, u32)> = self
            .client
            .query(&format!(
                "SELECT contact_id, email, campaign_id, order_id, toUInt32(submitted_at), \
                 toUInt32(received_at) FROM {db}.reward_contacts \
                 WHERE retailer_id = ? AND shopper_id = ? ORDER BY contact_id"
            ))
            .bind(retailer_id)
            .bind(shopper_id)
            .fetch_all()
            .await?;
        let time = |s: u32| basketflow_vocab::Timestamp(s as i64 * 1_000_000).to_string();
        Ok(rows
            .into_iter()
            .map(
                |(contact_id, email, campaign_id, order_id, submitted, received)| {
                    serde_json::json!({
                        "contact_id": contact_id,
                        "email": email,
                        "campaign_id": campaign_id,
                        "order_id": (!order_id.is_empty()).then_some(order_id),
                        "submitted_at": time(submitted),
                        "received_at": time(received),
                    })
                },
            )
            .collect())
    }

    /// Deletes every stored contact of `(retailer_id, shopper_id)` (a mutation, waited for,
    /// always run: idempotent) and audits `request_id` for `retailer_id`. Request ids are unique
    /// per retailer only, so the audit is looked up by `(retailer_id, request_id)`; a request
    /// already audited (a replay) is audited again only if it removed rows now (an operator's
    /// reused id for another shopper: the audit holds no shopper id to tell them apart).
    pub async fn erase(
        &self,
        request_id: &str,
        retailer_id: &str,
        shopper_id: &str,
    ) -> Result<Erased, RewardsError> {
        let db = &self.database;
        let audited: u64 = self
            .client
            .query(&format!(
                "SELECT count() FROM {db}.rewards_audit \
                 WHERE kind = 'erasure' AND retailer_id = ? AND request_id = ?"
            ))
            .bind(retailer_id)
            .bind(request_id)
            .fetch_one()
            .await?;
        self.name_erasing(retailer_id, shopper_id).await?;
        let named = self.named_by_erasing();
        let rows: u64 = self
            .client
            .query(&format!(
                "SELECT count() FROM {db}.reward_contacts_log WHERE {named}"
            ))
            .fetch_one()
            .await?;
        if rows > 0 {
            self.client
                .query(&format!(
                    "ALTER TABLE {db}.reward_contacts_log DELETE WHERE {named}"
                ))
                .execute()
                .await?;
            self.wait_for_mutations("reward_contacts_log").await?;
        }
        self.client
            .query(&format!("TRUNCATE TABLE {db}.erasing"))
            .execute()
            .await?;
        if audited > 0 && rows == 0 {
            return Ok(Erased::AlreadyAudited);
        }
        self.audit(request_id, retailer_id, "erasure", rows).await?;
        Ok(Erased::Applied(rows))
    }

    /// The contact ids of `(retailer_id, shopper_id)` in `reward_contacts_log`, sorted: the keys
    /// an erasure tombstones ([`crate::contact_key`]). The shopper is named through `erasing`,
    /// as by [`RewardsStore::erase`], never in the statement's text.
    pub async fn contact_ids(
        &self,
        retailer_id: &str,
        shopper_id: &str,
    ) -> Result<Vec<String>, RewardsError> {
        let db = &self.database;
        self.name_erasing(retailer_id, shopper_id).await?;
        let named = self.named_by_erasing();
        let ids: Vec<String> = self
            .client
            .query(&format!(
                "SELECT DISTINCT contact_id FROM {db}.reward_contacts_log WHERE {named} \
                 ORDER BY contact_id"
            ))
            .fetch_all()
            .await?;
        self.client
            .query(&format!("TRUNCATE TABLE {db}.erasing"))
            .execute()
            .await?;
        Ok(ids)
    }

    /// Makes `erasing` hold `(retailer_id, shopper_id)` alone (named in an insert's body).
    async fn name_erasing(&self, retailer_id: &str, shopper_id: &str) -> Result<(), RewardsError> {
        let db = &self.database;
        self.client
            .query(&format!("TRUNCATE TABLE {db}.erasing"))
            .execute()
            .await?;
        let mut insert = self
            .client
            .insert_unescaped::<ErasingRow<'_>>(&format!("{db}.erasing"))
            .await?;
        insert
            .write(&ErasingRow {
                retailer_id,
                shopper_id,
            })
            .await?;
        insert.end().await?;
        Ok(())
    }

    /// The condition selecting the rows of the shopper in `erasing`.
    fn named_by_erasing(&self) -> String {
        let db = &self.database;
        format!("(retailer_id, shopper_id) IN (SELECT retailer_id, shopper_id FROM {db}.erasing)")
    }

    /// Deletes the contacts read (broker time) more than their retailer's period before
    /// `now_ms`, one mutation per period, waited for; audits the rows removed per retailer
    /// (`request_id` = `retention-<now_ms>`). Returns the rows removed.
    pub async fn apply_retention(
        &self,
        now_ms: u64,
        retention: &Retention,
    ) -> Result<u64, RewardsError> {
        let db = &self.database;
        let own: Vec<String> = retention.per_retailer_ms.keys().cloned().collect();
        let mut groups: Vec<(Option<&str>, u64)> = vec![(None, retention.default_ms)];
        groups.extend(
            retention
                .per_retailer_ms
                .iter()
                .map(|(r, p)| (Some(r.as_str()), *p)),
        );
        let mut removed: BTreeMap<String, u64> = BTreeMap::new();
        for (retailer, period) in groups {
            let Some(cutoff) = now_ms.checked_sub(period) else {
                continue;
            };
            // (An empty array literal has type Array(Nothing), which `has` refuses.)
            let condition = match (retailer, own.is_empty()) {
                (Some(_), _) => "received_ms < ? AND retailer_id = ?",
                (None, true) => "received_ms < ?",
                (None, false) => "received_ms < ? AND NOT has(?, retailer_id)",
            };
            let bind = |q: clickhouse::query::Query| match (retailer, own.is_empty()) {
                (Some(r), _) => q.bind(cutoff).bind(r),
                (None, true) => q.bind(cutoff),
                (None, false) => q.bind(cutoff).bind(own.clone()),
            };
            let counts: Vec<(String, u64)> = bind(self.client.query(&format!(
                "SELECT retailer_id, count() FROM {db}.reward_contacts_log WHERE {condition} \
                 GROUP BY retailer_id"
            )))
            .fetch_all()
            .await?;
            if counts.is_empty() {
                continue;
            }
            bind(self.client.query(&format!(
                "ALTER TABLE {db}.reward_contacts_log DELETE WHERE {condition}"
            )))
            .execute()
            .await?;
            self.wait_for_mutations("reward_contacts_log").await?;
            for (r, n) in counts {
                *removed.entry(r).or_default() += n;
            }
        }
        let request_id = format!("retention-{now_ms}");
        for (retailer, n) in &removed {
            self.audit(&request_id, retailer, "retention", *n).await?;
        }
        Ok(removed.values().sum())
    }

    async fn audit(
        &self,
        request_id: &str,
        retailer_id: &str,
        kind: &str,
        rows: u64,
    ) -> Result<(), RewardsError> {
        let db = &self.database;
        self.client
            .query(&format!(
                "INSERT INTO {db}.rewards_audit (request_id, retailer_id, kind, rows_removed, at) \
                 VALUES (?, ?, ?, ?, now())"
            ))
            .bind(request_id)
            .bind(retailer_id)
            .bind(kind)
            .bind(rows)
            .execute()
            .await?;
        Ok(())
    }

    /// Waits until `table` has no unfinished mutation.
    async fn wait_for_mutations(&self, table: &str) -> Result<(), RewardsError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let pending: u64 = self
                .client
                .query(
                    "SELECT count() FROM system.mutations \
                     WHERE database = ? AND table = ? AND is_done = 0",
                )
                .bind(&self.database)
                .bind(table)
                .fetch_one()
                .await?;
            if pending == 0 {
                return Ok(());
            }
            if start.elapsed() >= self.mutation_timeout {
                return Err(RewardsError::MutationTimeout(format!(
                    "{}.{table}",
                    self.database
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rewards/sql/schema.sql`: the statements of [`schema`] for the database `{database}`,
    /// one per line, which `scripts/chdb_rewards_check.py` runs on a current ClickHouse.
    /// Rewritten when it differs (commit it).
    #[test]
    fn the_checked_schema_file_is_the_code_s() {
        let text = schema("{database}").join(";\n") + ";\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/schema.sql");
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != text {
            std::fs::write(&path, &text).unwrap();
            panic!("{} was out of date: rewritten, commit it", path.display());
        }
    }
}
