//! The one copy of the helpers basketflow's integration tests and benchmarks share.
//!
//! A test talks to the real stack of `scripts/stack up` ([`Stack::shared`]) or a private one
//! ([`Stack::at`]); what it creates there is removed when it ends, also when it fails:
//!
//! - [`Topics`]: topics created with unique names ([`unique`]) and deleted when the guard is
//!   dropped (a [`Stack`] holds one for the topics it creates);
//! - [`Database`]: a ClickHouse database name, dropped when the guard is dropped;
//! - [`ChildGuard`]: a child process (usually the `basketflow` binary) killed and reaped when
//!   the guard is dropped, so a failing test leaves no `basketflow run` behind; [`wait_all`]
//!   waits for children with a limit.
//!
//! A [`PrivateStack`] (`scripts/stack` on ports of its own) serves tests that stop the broker
//! or ClickHouse. Besides: reading a topic to its end ([`read_to_end`]), producing with each
//! message's landing place ([`produce`]), free ports and host files ([`free_port`],
//! [`hostfile`]), a value from a run's log ([`logged_u64`]), a process's resident memory ([`rss_mib`]), and builders of events ([`events`]) and read-model rows ([`rows`]) for
//! hand-written scenarios.
//!
//! Dev-only: crates use it as a dev-dependency.

#![forbid(missing_docs)]

pub mod clickhouse;
pub mod events;
pub mod kafka;
pub mod names;
pub mod private_stack;
pub mod process;
pub mod rows;
pub mod stack;

pub use clickhouse::Database;
pub use kafka::{produce, read_to_end, Isolation, Landed, Produced, Record, Topics};
pub use names::{unique, unique_suffix};
pub use private_stack::{Ports, PrivateStack};
pub use process::{
    clear_basketflow_env, free_port, hostfile, logged_u64, rss_mib, wait_all, ChildGuard,
};
pub use stack::Stack;
