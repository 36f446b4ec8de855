//! ClickHouse over its HTTP interface, for tests: a text query, and a database dropped when its
//! guard is dropped.
//!
//! Queries go through `curl` (synchronous, so they also run in `Drop` and inside async tests).

use std::fmt;
use std::ops::Deref;
use std::process::Command;

use crate::names::unique_suffix;

/// Runs `sql` on the server at `url` (user `default`, no password): the response body, or the
/// server's error text (or curl's) when it refuses.
pub fn query(url: &str, sql: &str) -> Result<String, String> {
    curl(Command::new("curl").args(["-sS", "--fail-with-body", "--data-binary", sql, url]))
}

/// [`query`] as `user` with `password` (HTTP basic authentication).
pub fn query_as(url: &str, user: &str, password: &str, sql: &str) -> Result<String, String> {
    curl(
        Command::new("curl")
            .args(["-sS", "--fail-with-body", "--data-binary", sql, url, "-u"])
            .arg(format!("{user}:{password}")),
    )
}

/// Runs a prepared `curl`: its body, or the body and curl's own message.
fn curl(command: &mut Command) -> Result<String, String> {
    let out = command.output().map_err(|e| format!("running curl: {e}"))?;
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(body)
    } else {
        Err(format!(
            "{body}{}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

/// The committed time of basketflow's ClickHouse writer in `database` (the `progress` table's
/// largest time; 0 while the table does not exist or the server does not answer).
pub fn committed_time(url: &str, database: &str) -> u64 {
    query(url, &format!("SELECT max(time) FROM {database}.progress"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A database of the server at `url`, dropped (`DROP DATABASE IF EXISTS`) when the guard is
/// dropped, also when the test fails. Creating it is left to the test (usually the sink or the
/// binary under test creates it).
///
/// Derefs to its name, so `&database` goes where a `&str` is expected.
#[derive(Debug)]
pub struct Database {
    url: String,
    name: String,
    /// Dropped on drop; not after [`Database::keep`].
    armed: bool,
}

impl Database {
    /// A database named `name` on `url`.
    pub fn named(url: &str, name: impl Into<String>) -> Database {
        Database {
            url: url.to_string(),
            name: name.into(),
            armed: true,
        }
    }

    /// A database named `prefix_<unique suffix>` on `url`.
    pub fn fresh(url: &str, prefix: &str) -> Database {
        Database::named(url, format!("{prefix}_{}", unique_suffix()))
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the database as it is (not dropped); its name.
    pub fn keep(mut self) -> String {
        self.armed = false;
        std::mem::take(&mut self.name)
    }
}

impl Deref for Database {
    type Target = str;

    fn deref(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Never panics: a drop may run while a failed test unwinds.
        if let Err(e) = query(&self.url, &format!("DROP DATABASE IF EXISTS {}", self.name)) {
            eprintln!("dropping the test database {}: {e}", self.name);
        }
    }
}
