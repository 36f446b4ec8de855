//! Names no other test run uses: for topics, databases, consumer groups and directories.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The last suffix handed out in this process.
static LAST: AtomicU64 = AtomicU64::new(0);

/// A number no earlier call in this process returned and another process is most unlikely to
/// return: nanoseconds since the epoch, raised past the previous answer if the clock did not
/// move.
pub fn unique_suffix() -> u128 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as u64;
    let previous = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .expect("the update always answers");
    u128::from(now.max(previous + 1))
}

/// `prefix-<unique suffix>`: a topic or group name of its own. (ClickHouse databases want
/// underscores: see [`crate::Database::fresh`].)
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", unique_suffix())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_strictly_increase() {
        let mut last = unique_suffix();
        for _ in 0..10_000 {
            let next = unique_suffix();
            assert!(next > last);
            last = next;
        }
    }
}
