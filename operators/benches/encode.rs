//! A checkpoint part's encoding, as it stalls its operator:
//! `cargo bench -p basketflow-operators --bench encode -- [KEYS] [IDS_PER_KEY]`.
//!
//! A state shaped like the tree operator's (per `(retailer, shopper)` key, a list of
//! (read time, 16-byte digest) entries; 20,000 keys of 100 entries, ~50 MB, by default) is
//! encoded by [`Checkpointer::write`] alternately by a fresh checkpointer (its first part:
//! the buffer grows by doubling) and by one that wrote a part before (the buffer starts at the
//! last part's size). Prints each kind's median encoding time over 5 parts.

use std::sync::mpsc;

use basketflow_operators::checkpoint::{Checkpointer, Checkpointing, Policy};
use basketflow_operators::FastMap;

/// Per shopper key, (read time, digest) entries.
type State = FastMap<(String, String), Vec<(u64, [u8; 16])>>;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse::<usize>().expect("arguments: [KEYS] [IDS_PER_KEY]"));
    let keys = args.next().unwrap_or(20_000);
    let per_key = args.next().unwrap_or(100);
    let mut state = State::default();
    for k in 0..keys {
        let entries = (0..per_key)
            .map(|i| ((k * per_key + i) as u64, [(i % 251) as u8; 16]))
            .collect();
        state.insert(("retailer-01".to_string(), format!("cust-{k:07}")), entries);
    }
    let (tx, rx) = mpsc::channel();
    let config = Checkpointing {
        policy: Policy {
            interval_ms: 1,
            skip_older_than_ms: None,
            full_every: 3,
        },
        parts: tx,
        restore: None,
        erasures: Default::default(),
    };
    let warm = Checkpointer::new(Some(&config), "Bench", 0, 1);
    warm.write(1, &state);
    let (mut cold_us, mut warm_us) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for round in 0..5u64 {
        Checkpointer::new(Some(&config), "Bench", 0, 1).write(2 + round, &state);
        let part = rx.try_iter().last().expect("a part");
        bytes = part.bytes.len();
        cold_us.push(part.encode_us);
        drop(part);
        warm.write(2 + round, &state);
        warm_us.push(rx.try_iter().last().expect("a part").encode_us);
    }
    cold_us.sort_unstable();
    warm_us.sort_unstable();
    println!(
        "encode {bytes} bytes ({keys} keys x {per_key} entries): first part of a checkpointer {:.1} ms, later parts {:.1} ms (medians of 5)",
        cold_us[2] as f64 / 1e3,
        warm_us[2] as f64 / 1e3
    );
}
