//! The stack a test runs against (a broker and a ClickHouse server), and what the test created
//! on it, removed when the test ends.

use std::sync::{Arc, Mutex};

use crate::clickhouse::{query, Database};
use crate::kafka::{read_to_end, Isolation, Record, Topics};

/// The bootstrap servers of the shared stack: `$BASKETFLOW_BROKERS`, default `127.0.0.1:9092`
/// (as `scripts/stack` starts it).
pub fn brokers() -> String {
    std::env::var("BASKETFLOW_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The ClickHouse HTTP URL of the shared stack: `$BASKETFLOW_CLICKHOUSE_URL`, default
/// `http://127.0.0.1:8123` (user `default`, no password).
pub fn clickhouse_url() -> String {
    std::env::var("BASKETFLOW_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// What a test made on a stack: deleted when the last clone of its [`Stack`] is dropped.
#[derive(Debug)]
struct Created {
    topics: Topics,
    databases: Mutex<Vec<Database>>,
}

/// A broker and a ClickHouse server to run against, with the topics and databases the test
/// made there: those are deleted (topics) and dropped (databases) when the last clone of the
/// `Stack` is dropped, also when the test fails.
#[derive(Clone, Debug)]
pub struct Stack {
    /// Bootstrap servers.
    pub brokers: String,
    /// ClickHouse HTTP URL.
    pub clickhouse_url: String,
    created: Arc<Created>,
}

impl Stack {
    /// The shared stack of `scripts/stack up` ([`brokers`], [`clickhouse_url`]).
    pub fn shared() -> Stack {
        Stack::at(&brokers(), &clickhouse_url())
    }

    /// The stack at `brokers` and `clickhouse_url` (a private one).
    pub fn at(brokers: &str, clickhouse_url: &str) -> Stack {
        Stack {
            brokers: brokers.to_string(),
            clickhouse_url: clickhouse_url.to_string(),
            created: Arc::new(Created {
                topics: Topics::new(brokers),
                databases: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The test's topics on this stack (deleted with the stack's last clone).
    pub fn topics(&self) -> &Topics {
        &self.created.topics
    }

    /// Creates `name` as the graph reads it (broker append times, `LogAppendTime`) with
    /// `cleanup.policy` = `cleanup`, unless it exists; deleted with the stack's last clone.
    pub fn create_topic(&self, name: &str, partitions: i32, cleanup: &str) {
        self.topics().create(
            name,
            partitions,
            &[
                ("message.timestamp.type", "LogAppendTime"),
                ("cleanup.policy", cleanup),
            ],
        );
    }

    /// Names a database the test (or the binary it runs) creates, dropped with the stack's last
    /// clone; its name.
    pub fn database(&self, name: impl Into<String>) -> String {
        let database = Database::named(&self.clickhouse_url, name);
        let name = database.name().to_string();
        self.created
            .databases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(database);
        name
    }

    /// Removes nothing at the end (for a private stack that is removed whole).
    pub fn keep_everything(&self) {
        self.topics().forget();
        let databases = std::mem::take(
            &mut *self
                .created
                .databases
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for database in databases {
            database.keep();
        }
    }

    /// Runs `sql` over ClickHouse's HTTP interface and returns the response body; fails the
    /// test if ClickHouse refuses it.
    pub fn clickhouse(&self, sql: &str) -> String {
        query(&self.clickhouse_url, sql).unwrap_or_else(|e| panic!("ClickHouse refused {sql}: {e}"))
    }

    /// Every row of `database.name`, TabSeparated, sorted.
    pub fn view(&self, database: &str, name: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .clickhouse(&format!(
                "SELECT * FROM {database}.{name} FORMAT TabSeparated"
            ))
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        lines
    }

    /// Every committed message of `topic`, from the beginning to the end ([`read_to_end`]).
    pub fn read_to_end(&self, topic: &str) -> Vec<Record> {
        read_to_end(&self.brokers, topic, Isolation::Committed)
    }
}
