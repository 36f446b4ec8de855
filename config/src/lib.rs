//! `basketflow.toml`: the one configuration file of a basketflow process.
//!
//! Every key has a default, so an empty file (or no file) is a valid configuration for the local
//! stack. [`basketflow.example.toml`](../../basketflow.example.toml) lists every key with its
//! default and what it is for; `basketflow config example` prints it.
//!
//! **Environment.** Every key can be overridden by `BASKETFLOW_<SECTION>_<KEY>`, upper case:
//! `graph.flush_interval_ms` by `BASKETFLOW_GRAPH_FLUSH_INTERVAL_MS`, `clickhouse.password` by
//! `BASKETFLOW_CLICKHOUSE_PASSWORD`. Section names have no `_`, so the first `_` after the prefix
//! ends the section. The value of a key whose default is a string is taken verbatim; any other
//! value is read as a TOML value (`5000`, `true`, `["a", "b"]`, `"2024"`), and taken verbatim
//! when it is not one. A `BASKETFLOW_` variable that names no key is an error (a typo must not be
//! silently ignored), except the few variables the scripts and tests use for other purposes
//! ([`NOT_CONFIGURATION`], and any `BASKETFLOW_TEST*`).
//!
//! **Validation.** Unknown keys, values of the wrong type and values that parse but cannot work
//! are all reported at once, each naming its key (`graph.tick_ms: must be at least 1, got 0`)
//! and, when the value came from the environment, its variable
//! (`BASKETFLOW_GRAPH_TICK_MS (graph.tick_ms): ...`). `basketflow config check` does this
//! without starting anything and prints the effective configuration.
//!
//! | module | job |
//! | --- | --- |
//! | `types` | the sections, their keys and defaults (the serde derives are the list of keys) |
//! | `load` | file + environment overlay, serde's refusals turned into issues by key |
//! | `validate` | values that parse but cannot work |
//! | `command` | `basketflow config check\|example` |

#![forbid(missing_docs)]

mod command;
mod load;
mod types;
mod validate;

pub use command::{run, ConfigCommand};
pub use load::{env_var, sections, ConfigError, Issue, Resolved, ENV_PREFIX, NOT_CONFIGURATION};
pub use types::{
    ClickHouseConfig, ClusterConfig, Config, GraphConfig, KafkaConfig, LogConfig, LogFormat,
    MetricsConfig, PrivacyConfig, RewardsConfig, TreesConfig,
};

/// The file `run`, `collect` and `config check` read when `--config` is not given.
pub const DEFAULT_PATH: &str = "basketflow.toml";

/// The example configuration: every key, its default, what it does.
pub const EXAMPLE: &str = include_str!("../../basketflow.example.toml");

#[cfg(test)]
mod tests;
