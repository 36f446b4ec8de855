//! The ClickHouse writer's conversion of updates into versions, on one thread:
//! `cargo bench -p basketflow-sinks --bench versions -- [KEYS] [ROUNDS]`.
//!
//! A catch-up batch as the writer thread receives it: for `KEYS` keys of `baskets` and of
//! `sold_products_daily`, each changed at three times (a retraction of the old row and an
//! insertion of the new one per change, the first an insertion alone), in a fixed shuffled
//! order (seed 1), as the exchange from the workers interleaves them. Every round converts a
//! fresh copy with [`to_versions`] (the copy is not timed). Prints the best round's
//! nanoseconds per update, and the number of versions, which must not change between two
//! builds compared with each other.

use std::time::Instant;

use basketflow_sinks::clickhouse::versions::{to_versions, Update};
use basketflow_vocab::read_models::{BasketLine, ReadModel, SoldProductDaily};
use rand::seq::SliceRandom;
use rand::SeedableRng;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Three changes per key: `row(key, v)` for v = 1, 2, 3 at times 10, 20, 30.
fn updates<R: ReadModel>(keys: usize, row: impl Fn(usize, i64) -> R) -> Vec<Update<R>> {
    let mut out = Vec::with_capacity(keys * 5);
    for k in 0..keys {
        out.push((row(k, 1), 10, 1));
        for (v, t) in [(2, 20), (3, 30)] {
            out.push((row(k, v - 1), t, -1));
            out.push((row(k, v), t, 1));
        }
    }
    out.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    out
}

/// Best round's nanoseconds per update, and the versions of the last round.
fn time<R: ReadModel>(name: &str, input: &[Update<R>], rounds: usize) -> f64 {
    let mut best = f64::INFINITY;
    let mut versions = 0;
    for _ in 0..rounds {
        let copy = input.to_vec();
        let t = Instant::now();
        let out = to_versions(copy).expect("an upsert stream");
        best = best.min(t.elapsed().as_secs_f64());
        versions = std::hint::black_box(out).len();
    }
    let ns = best * 1e9 / input.len() as f64;
    println!(
        "{name}: {ns:.1} ns/update ({} updates -> {versions} versions; best of {rounds} rounds)",
        input.len()
    );
    ns
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse::<usize>().expect("arguments: [KEYS] [ROUNDS]"));
    let keys = args.next().unwrap_or(100_000);
    let rounds = args.next().unwrap_or(5);
    let baskets = updates(keys, |k, v| BasketLine {
        retailer_id: format!("retailer-{}", k % 4),
        shopper_id: format!("shopper-{:06}", k / 8),
        product_id: format!("product-{:05}", k % 8 * 997 % 20_000),
        quantity: v,
    });
    let sold = updates(keys, |k, v| SoldProductDaily {
        day: 20_000 + (k % 7) as i32,
        retailer_id: format!("retailer-{}", k % 4),
        product_id: format!("product-{:05}", k / 7),
        category: format!("category-{}", k % 13),
        quantity: v,
        revenue_cents: v * 1_299,
        orders: v,
    });
    let total = time("baskets", &baskets, rounds) + time("sold_products_daily", &sold, rounds);
    println!("both: {total:.1} ns per pair of updates");
}
