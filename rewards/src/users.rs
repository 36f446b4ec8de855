//! The loader's own ClickHouse user, in a file of the server's `users.d/`.
//!
//! `basketflow rewards provision` writes `users.d/basketflow-rewards-<database>.xml`: one user
//! (`[rewards] user`) whose only database is `[rewards] database`, identified by the SHA-256 of
//! `[rewards] password`. The server reloads `users.d/` by itself within seconds;
//! [`wait_until_known`] waits for that. No other user is given the database here: on a
//! production server the graph's and the tree builder's user must be restricted by
//! `allow_databases` too (the local stack's `default` user may read every database).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::store::RewardsStore;
use crate::RewardsError;

/// Lowercase hex SHA-256 of `password` (what `password_sha256_hex` holds).
pub fn password_sha256_hex(password: &str) -> String {
    Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The file of `database`'s user in the server configuration directory `config_dir`.
pub fn users_file(config_dir: &Path, database: &str) -> PathBuf {
    config_dir
        .join("users.d")
        .join(format!("basketflow-rewards-{database}.xml"))
}

/// The addresses the user may connect from by default (`[rewards] networks`): this host only.
pub const DEFAULT_NETWORKS: [&str; 2] = ["127.0.0.1", "::1"];

/// Why `network` is not an address or a CIDR range (`10.0.0.0/8`, `::1`), or `None`.
pub fn network_problem(network: &str) -> Option<String> {
    let (addr, prefix) = network.split_once('/').unwrap_or((network, ""));
    let addr_ok = addr.parse::<std::net::IpAddr>().is_ok();
    let prefix_ok = prefix.is_empty() || prefix.parse::<u8>().is_ok_and(|p| p <= 128);
    (!addr_ok || !prefix_ok).then(|| {
        format!("rewards.networks: {network:?} is not an IP address or range (e.g. 10.1.2.0/24)")
    })
}

/// The `users.d` file declaring `user` (password hash `password_sha256_hex`), allowed
/// `database` only and connections from `networks` only, with the server's `default` profile
/// (it inserts and deletes) and quota.
pub fn users_xml(
    user: &str,
    password_sha256_hex: &str,
    database: &str,
    networks: &[String],
) -> String {
    let networks: String = networks.iter().map(|n| format!("<ip>{n}</ip>")).collect();
    format!(
        "<?xml version=\"1.0\"?>\n\
         <!-- Written by `basketflow rewards provision`: do not edit. The reward contacts' \
         loader; it may use database {database} and no other. -->\n\
         <yandex>\n\
         \x20   <users>\n\
         \x20       <{user}>\n\
         \x20           <password_sha256_hex>{password_sha256_hex}</password_sha256_hex>\n\
         \x20           <networks>{networks}</networks>\n\
         \x20           <profile>default</profile>\n\
         \x20           <quota>default</quota>\n\
         \x20           <allow_databases><database>{database}</database></allow_databases>\n\
         \x20       </{user}>\n\
         \x20   </users>\n\
         </yandex>\n"
    )
}

/// A plain ClickHouse user or database name (letters, digits, `_`; not starting with a digit).
pub fn is_plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

/// Writes the users file (atomically: a temporary file renamed) into `config_dir/users.d/`.
pub fn write_users_file(
    config_dir: &Path,
    user: &str,
    password: &str,
    database: &str,
    networks: &[String],
) -> Result<PathBuf, RewardsError> {
    if networks.is_empty() {
        return Err(RewardsError::Config(
            "rewards.networks is empty: the user could connect from nowhere".into(),
        ));
    }
    if let Some(why) = networks.iter().find_map(|n| network_problem(n)) {
        return Err(RewardsError::Config(why));
    }
    for (what, name) in [("rewards.user", user), ("rewards.database", database)] {
        if !is_plain_name(name) {
            return Err(RewardsError::Config(format!(
                "{what} {name:?} must be letters, digits and _ (not starting with a digit)"
            )));
        }
    }
    if !config_dir.join("config.xml").exists() {
        return Err(RewardsError::Config(format!(
            "no config.xml in {}: it must be the server's configuration directory (users.d/ is \
             read next to it)",
            config_dir.display()
        )));
    }
    let path = users_file(config_dir, database);
    let io = |e: std::io::Error| RewardsError::Io(path.display().to_string(), e);
    std::fs::create_dir_all(path.parent().expect("users.d")).map_err(io)?;
    let tmp = path.with_extension("xml.tmp");
    std::fs::write(
        &tmp,
        users_xml(user, &password_sha256_hex(password), database, networks),
    )
    .map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(path)
}

/// Waits (at most `limit`) until the server at `url` accepts `user` with `password` (it has
/// reloaded the users file), then returns a store of `database` as that user.
pub async fn wait_until_known(
    url: &str,
    database: &str,
    user: &str,
    password: &str,
    limit: Duration,
) -> Result<RewardsStore, RewardsError> {
    let start = Instant::now();
    loop {
        match RewardsStore::connect(url, database, user, password).await {
            Ok(store) => return Ok(store),
            Err(e) if start.elapsed() >= limit => {
                return Err(RewardsError::Config(format!(
                    "the server at {url} does not accept user {user:?} after {} s (is \
                     the configuration directory the server's?): {e}",
                    limit.as_secs()
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_may_use_its_database_only() {
        let local: Vec<String> = DEFAULT_NETWORKS.iter().map(|n| n.to_string()).collect();
        let x = users_xml(
            "basketflow_rewards",
            &password_sha256_hex("secret"),
            "rw",
            &local,
        );
        assert!(
            x.contains("<networks><ip>127.0.0.1</ip><ip>::1</ip></networks>"),
            "this host only by default: {x}"
        );
        assert!(!x.contains("::/0"));
        assert_eq!(network_problem("10.1.2.0/24"), None);
        assert_eq!(network_problem("::1"), None);
        assert!(network_problem("10.1.2.0/x").is_some());
        assert!(network_problem("</ip><ip>::/0").is_some());
        assert!(x.contains("<allow_databases><database>rw</database></allow_databases>"));
        assert_eq!(x.matches("<database>").count(), 1);
        assert!(x.contains(
            "<password_sha256_hex>2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b</password_sha256_hex>"
        ));
        assert!(!x.contains("secret"));
        assert!(is_plain_name("basketflow_rewards"));
        assert!(!is_plain_name("rewards-db"));
        assert!(!is_plain_name("1x"));
    }
}
