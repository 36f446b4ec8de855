//! Provisioning of the retailers' analysts ([`provision`]): what `basketflow analysts
//! provision` does with an access file, on top of the copies of [`super::copies`].
//!
//! 1. Checks the plan: names, reserved users and databases, a database that would change
//!    retailer, a new copy's database that exists with tables.
//! 2. Rewrites the users file with only the users of listed retailers whose copy is filled
//!    (a retailer taken out loses its user before its copy goes) and waits until the server
//!    has loaded it (each version declares a fresh marker user: known = loaded).
//! 3. Records the wanted state in the registry: unlisted copies marked
//!    [`REMOVING`](super::copies::REMOVING), new ones registered. The graph's ClickHouse writer
//!    carries it out (between two batches, or when it starts).
//! 4. Waits (at most `wait`) for the writer, then writes the users of the filled copies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::copies::{Copy, CopyPlan, RetailerAccess, FILLED, REMOVING};
use super::{ClickHouseError, ClickHouseReader, ClickHouseStore};

/// How long the server may take to load a users file.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Why provisioning stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The plan cannot be carried out (each problem a sentence).
    #[error("{}", .0.join("; "))]
    Refused(Vec<String>),
    /// The users file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server did not load the users file in time.
    #[error(
        "the server did not load {0} within {RELOAD_TIMEOUT:?} (is clickhouse_config_dir the \
         directory of its config.xml?)"
    )]
    NotReloaded(PathBuf),
    /// ClickHouse refused or did not answer.
    #[error(transparent)]
    ClickHouse(#[from] ClickHouseError),
}

/// One listed retailer's copy after provisioning.
#[derive(Debug, serde::Serialize)]
pub struct CopyOutcome {
    /// The retailer.
    pub retailer_id: String,
    /// Its analysts' user (written to the users file once `filled`).
    pub user: String,
    /// The copy's database.
    pub database: String,
    /// Whether the writer has filled it.
    pub filled: bool,
    /// Rows per analyst view of the copy (when filled).
    pub rows: BTreeMap<String, u64>,
}

/// What [`provision`] did.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    /// The main database.
    pub database: String,
    /// The users file written.
    pub users_file: PathBuf,
    /// The listed retailers' copies.
    pub copies: Vec<CopyOutcome>,
    /// Copies of retailers no longer listed (taken out, or being taken out).
    pub removed: Vec<String>,
    /// Copies the writer has not taken out yet.
    pub removal_pending: Vec<String>,
}

impl Outcome {
    /// Copies still waiting for the writer (to be filled or taken out).
    pub fn pending(&self) -> usize {
        self.copies.iter().filter(|c| !c.filled).count() + self.removal_pending.len()
    }
}

fn is_filled(copies: &[Copy], r: &RetailerAccess) -> bool {
    copies
        .iter()
        .any(|c| c.database == r.database && c.retailer_id == r.retailer_id && c.filled == FILLED)
}

/// Carries out `plan` (see the module docs): `store` is the main database, as the writer's
/// user; `users_file` the file in the server's `users.d/`; `url` the server's HTTP address.
pub async fn provision(
    store: &ClickHouseStore,
    plan: &CopyPlan,
    users_file: &Path,
    url: &str,
    wait: Duration,
) -> Result<Outcome, ProvisionError> {
    if !store.exists("progress").await? {
        return Err(ProvisionError::Refused(vec![format!(
            "database {} has no progress table on {url}: run the graph once (it creates the \
             schema) first",
            store.database()
        )]));
    }
    let registered = store.copies().await?;
    let mut problems = plan.problems(&registered);
    for r in &plan.retailers {
        let known = registered.iter().any(|c| c.database == r.database);
        let tables: u64 = store
            .client()
            .query("SELECT count() FROM system.tables WHERE database = ?")
            .bind(&r.database)
            .fetch_one()
            .await
            .map_err(ClickHouseError::from)?;
        if !known && tables > 0 {
            problems.push(format!(
                "database {:?} exists and holds tables: name a new database for {:?}'s copy \
                 (the writer creates and empties it)",
                r.database, r.retailer_id
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ProvisionError::Refused(problems));
    }

    let first: Vec<&RetailerAccess> = plan
        .retailers
        .iter()
        .filter(|r| is_filled(&registered, r))
        .collect();
    reload(plan, &first, users_file, url).await?;
    let mut removed = Vec::new();
    for copy in &registered {
        if !plan.retailers.iter().any(|r| r.database == copy.database) {
            if copy.filled != REMOVING {
                store.mark_removing(copy).await?;
            }
            removed.push(copy.database.clone());
        }
    }
    for r in &plan.retailers {
        store.register_copy(&r.database, &r.retailer_id).await?;
    }
    let deadline = Instant::now() + wait;
    let copies = loop {
        let copies = store.copies().await?;
        let done = plan.retailers.iter().all(|r| is_filled(&copies, r))
            && !copies.iter().any(|c| c.filled == REMOVING);
        if done || Instant::now() >= deadline {
            break copies;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let filled: Vec<&RetailerAccess> = plan
        .retailers
        .iter()
        .filter(|r| is_filled(&copies, r))
        .collect();
    let mut outcomes = Vec::new();
    for r in &plan.retailers {
        let is_filled = filled.contains(&r);
        let mut rows = BTreeMap::new();
        if is_filled {
            for view in CopyPlan::views() {
                let n: u64 = store
                    .client()
                    .query(&format!("SELECT count() FROM {}.{view}", r.database))
                    .fetch_one()
                    .await
                    .map_err(ClickHouseError::from)?;
                rows.insert(view.to_string(), n);
            }
        }
        outcomes.push(CopyOutcome {
            retailer_id: r.retailer_id.clone(),
            user: r.user.clone(),
            database: r.database.clone(),
            filled: is_filled,
            rows,
        });
    }
    // Users for the filled copies: an analyst never reads a copy before its first fill.
    reload(plan, &filled, users_file, url).await?;
    Ok(Outcome {
        database: plan.database.clone(),
        users_file: users_file.to_path_buf(),
        copies: outcomes,
        removed,
        removal_pending: copies
            .iter()
            .filter(|c| c.filled == REMOVING)
            .map(|c| c.database.clone())
            .collect(),
    })
}

/// Writes `text` to `path` through a temporary file in the same directory (the server never
/// reads half a file).
fn write_atomically(path: &Path, text: &str) -> Result<(), ProvisionError> {
    let failed = |source| ProvisionError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(failed)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, text).map_err(failed)?;
    // The server notices a changed file by its modification time in whole seconds: a version
    // written in the same second as the one it replaces would never be loaded. Such a version
    // is dated one second after the old one.
    let seconds = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    if let Ok(old) = std::fs::metadata(path).and_then(|m| m.modified()) {
        let new = std::fs::metadata(&tmp)
            .and_then(|m| m.modified())
            .map_err(failed)?;
        if seconds(new) <= seconds(old) {
            let later = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds(old) + 1);
            let file = std::fs::File::options()
                .write(true)
                .open(&tmp)
                .map_err(failed)?;
            file.set_modified(later).map_err(failed)?;
        }
    }
    std::fs::rename(&tmp, path).map_err(failed)
}

/// Writes the users file granting `granted` (and a fresh marker user) and waits until the
/// server has loaded it.
async fn reload(
    plan: &CopyPlan,
    granted: &[&RetailerAccess],
    users_file: &Path,
    url: &str,
) -> Result<(), ProvisionError> {
    let marker = format!("basketflow_reload_{:016x}", rand::random::<u64>());
    let hash = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    write_atomically(
        users_file,
        &plan.users_xml(granted.iter().copied(), &marker, &hash),
    )?;
    wait_for_reload(url, &marker, users_file).await
}

/// Waits until the server has loaded the users file that declares `marker` (a user no one
/// can log in as: a login is then refused for its password, not as an unknown user).
async fn wait_for_reload(url: &str, marker: &str, users_file: &Path) -> Result<(), ProvisionError> {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let answer = ClickHouseReader::connect(url, "system", marker, "basketflow-probe").await;
        let unknown = answer
            .as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("Code: 192"));
        if !unknown {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ProvisionError::NotReloaded(users_file.to_path_buf()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
