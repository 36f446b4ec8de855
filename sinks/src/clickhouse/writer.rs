//! The writer thread of the ClickHouse sink: writes the batches the operator
//! ([`crate::clickhouse::operator`]) cuts, in order, with the store
//! ([`crate::clickhouse::ClickHouseStore::write_batch`]).
//!
//! Batches that queue while a write runs are coalesced into one (one insert per table). A
//! failed write is retried with exponential backoff (up to 5 s between tries), forever, on a
//! new connection. After each commit it updates [`SinkStats`] and wakes the operator, which
//! moves the durable frontier. Beside it, a sweeper thread deletes per-shopper rows past
//! their period every quarter of the shortest retention period ([`sweep_loop`]; best effort: a
//! failure is retried at the next interval; it changes no view).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basketflow_vocab::privacy::Retention;

use crate::clickhouse::store::ClickHouseStore;
use crate::clickhouse::versions::Batch;
use crate::clickhouse::Target;
use crate::durable::Waker;

/// What the ClickHouse sink (operator and writer) has done, readable from any thread.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// The committed time: every time at or below it is in the views.
    pub committed: AtomicU64,
    /// Batches written.
    pub batches: AtomicU64,
    /// Version rows written.
    pub rows: AtomicU64,
    /// Failed write attempts (each retried).
    pub errors: AtomicU64,
    /// Decisions inserted into `experience_decisions_log`.
    pub decisions: AtomicU64,
    /// Late inputs inserted into `late_events_log`, by reason (in the order of
    /// [`LateReason::ALL`](basketflow_vocab::LateReason::ALL)).
    pub late_inputs: [AtomicU64; 2],
    /// Erasure requests applied to every table.
    pub erasures: AtomicU64,
    /// Per-shopper rows deleted because they outlived the retention period.
    pub retention_deleted: AtomicU64,
    /// Set when the writer has written everything it will ever be given.
    pub finished: AtomicBool,
}

/// The single-threaded runtime the ClickHouse writers and start-up checks run on.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime for the ClickHouse writer")
}

/// How often the writer looks for retailer copies to fill or take out, between batches.
const COPIES_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// How often the writer deletes per-shopper rows past their retention period: a quarter of
/// the shortest period, between one second and an hour.
fn retention_interval(retention: &Retention) -> Duration {
    Duration::from_millis((retention.bounds_ms().0 / 4).clamp(1_000, 3_600_000))
}

/// Converts every message of `rx` into a batch (`convert`, on this thread) and writes it to
/// `target`, until the channel closes; then sets `finished`.
pub(crate) fn write_loop<T>(
    target: Target,
    rx: Receiver<T>,
    mut convert: impl FnMut(T) -> Batch,
    stats: Arc<SinkStats>,
    retention: Retention,
    woken: Waker,
) {
    let wake = || woken.wake();
    let rt = runtime();
    let sweeping = Arc::new(AtomicBool::new(true));
    {
        let (target, stats, sweeping) = (target.clone(), stats.clone(), sweeping.clone());
        std::thread::Builder::new()
            .name("clickhouse-retention".into())
            .spawn(move || sweep_loop(target, stats, retention, sweeping))
            .expect("spawning the retention sweeper");
    }
    let mut last_copies_check: Option<Instant> = None;
    rt.block_on(async {
        let mut store: Option<ClickHouseStore> = None;
        while let Ok(first) = rx.recv() {
            let mut batch = convert(first);
            // Coalesce what queued up while the last write ran: one insert per table.
            while let Ok(next) = rx.try_recv() {
                batch.append(convert(next));
            }
            let mut backoff = Duration::from_millis(100);
            loop {
                let result = async {
                    if store.is_none() {
                        store = Some(target.connect().await?);
                    }
                    store.as_ref().expect("connected").write_batch(&batch).await
                }
                .await;
                match result {
                    Ok(()) => break,
                    Err(e) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        log::warn!(through = batch.through, backoff:? = backoff; "clickhouse writer: write failed, retrying: {e}");
                        store = None;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.rows.fetch_add(batch.len() as u64, Ordering::Relaxed);
            stats
                .decisions
                .fetch_add(batch.decisions.len() as u64, Ordering::Relaxed);
            stats
                .erasures
                .fetch_add(batch.erasures.len() as u64, Ordering::Relaxed);
            for late in &batch.late_inputs {
                let i = basketflow_vocab::LateReason::ALL
                    .iter()
                    .position(|r| *r == late.reason)
                    .expect("every reason is in ALL");
                stats.late_inputs[i].fetch_add(1, Ordering::Relaxed);
            }
            stats.committed.store(batch.through, Ordering::Relaxed);
            wake();
            // Retailer copies registered or marked for removal while running are filled or
            // taken out between two batches (no batch interleaves; a retention sweep may, see
            // `sweep_loop`).
            if last_copies_check.is_none_or(|t| t.elapsed() >= COPIES_CHECK_INTERVAL) {
                last_copies_check = Some(Instant::now());
                if let Some(s) = store.as_ref() {
                    match s.maintain_copies().await {
                        Ok(filled) => {
                            for copy in filled {
                                log::info!(copy = copy.as_str(); "retailer copy filled");
                            }
                        }
                        Err(e) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            log::warn!("clickhouse writer: filling a retailer copy failed, retried later: {e}");
                        }
                    }
                }
            }
        }
    });
    sweeping.store(false, Ordering::Relaxed);
    stats.finished.store(true, Ordering::Relaxed);
    wake();
}

/// The retention sweeper: every [`retention_interval`] (the first one too: a sweep at start
/// made a restart's time grow with the tables' history), deletes the per-shopper rows past
/// their period at the writer's committed time, on a connection of its own, until
/// `sweeping` is cleared. It runs beside the writer rather than between its batches: a sweep
/// scans every per-shopper table and may mutate it, which on large tables takes seconds to
/// minutes, and between batches that held the durable frontier, and through the sources'
/// gate the decisions, for as long. Rows newer than the committed time are never touched,
/// and ClickHouse applies a mutation only to the parts that existed when it was issued, so
/// batches written meanwhile are unaffected. A retailer copy filled during a sweep may keep
/// a row the sweep deleted from the main database until the next sweep.
fn sweep_loop(
    target: Target,
    stats: Arc<SinkStats>,
    retention: Retention,
    sweeping: Arc<AtomicBool>,
) {
    let rt = runtime();
    let every = retention_interval(&retention);
    let mut store: Option<ClickHouseStore> = None;
    let mut last = Instant::now();
    while sweeping.load(Ordering::Relaxed) {
        if last.elapsed() < every {
            std::thread::sleep(Duration::from_millis(100).min(every));
            continue;
        }
        last = Instant::now();
        let through = stats.committed.load(Ordering::Relaxed);
        if through == 0 {
            continue;
        }
        let result = rt.block_on(async {
            if store.is_none() {
                store = Some(target.connect().await?);
            }
            store
                .as_ref()
                .expect("connected")
                .apply_retention(through, &retention)
                .await
        });
        match result {
            Ok(n) => {
                stats.retention_deleted.fetch_add(n, Ordering::Relaxed);
                if n > 0 {
                    log::info!(through, rows = n; "retention: deleted per-shopper rows older than the period");
                }
            }
            Err(e) => {
                store = None;
                stats.errors.fetch_add(1, Ordering::Relaxed);
                log::warn!("clickhouse retention sweep failed, retried at the next interval: {e}");
            }
        }
    }
}
