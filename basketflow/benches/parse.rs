//! Parse + validate on one thread: `cargo bench -p basketflow --bench parse -- [MESSAGES] [ROUNDS]`.
//!
//! The generator's traffic as the graph reads it (3% bad messages, 2% duplicates, ~1.2 KB
//! each, seed 1), held in memory; every round runs [`parse_event`] over all of it, as the
//! graph's parse stage does (the event kept, its unknown fields dropped). Prints the best
//! round's microseconds per message and MB/s, and the verdict counts, which must not change
//! between two builds compared with each other. The allocator is the binary's (mimalloc).

use std::collections::BTreeMap;
use std::time::Instant;

use basketflow_examples::{Config as GenConfig, Generator};
use basketflow_ingest::parse_event;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse::<usize>().expect("arguments: [MESSAGES] [ROUNDS]"));
    let n = args.next().unwrap_or(200_000);
    let rounds = args.next().unwrap_or(5);
    let messages: Vec<Vec<u8>> = Generator::new(GenConfig {
        bad_share: 0.03,
        duplicate_share: 0.02,
        ..GenConfig::default()
    })
    .take(n)
    .map(|m| m.payload)
    .collect();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    let mut verdicts = BTreeMap::<&str, usize>::new();
    for m in &messages {
        let label = match parse_event(m) {
            Ok(_) => "valid",
            Err(r) => r.code.as_str(),
        };
        *verdicts.entry(label).or_default() += 1;
    }
    let mut best = f64::INFINITY;
    for round in 0..rounds {
        let t = Instant::now();
        let mut valid = 0usize;
        for m in &messages {
            if let Ok(p) = parse_event(m) {
                valid += std::hint::black_box(p.event).event_id.len().min(1);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(valid, verdicts["valid"]);
        println!(
            "round {round}: {:.3} us/message",
            secs * 1e6 / messages.len() as f64
        );
        best = best.min(secs);
    }
    println!(
        "parse + validate, one thread: {:.3} us/message, {:.0} MB/s ({} messages of {} bytes on average; best of {rounds} rounds)",
        best * 1e6 / n as f64,
        bytes as f64 / best / 1e6,
        n,
        bytes / n
    );
    println!("verdicts: {verdicts:?}");
    // The floor under any serde_json-based parse: the JSON syntax checked, nothing built.
    let mut floor = f64::INFINITY;
    for _ in 0..rounds {
        let t = Instant::now();
        for m in &messages {
            let _ = std::hint::black_box(serde_json::from_slice::<serde::de::IgnoredAny>(m));
        }
        floor = floor.min(t.elapsed().as_secs_f64());
    }
    println!(
        "floor: serde_json syntax alone (IgnoredAny): {:.3} us/message",
        floor * 1e6 / n as f64
    );
}
