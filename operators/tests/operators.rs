//! Exact outputs of the generic operators, with insertions and retractions over three times.

use std::sync::mpsc::channel;
use std::sync::Arc;

use basketflow_operators::checkpoint::{routing_fingerprint, Checkpointing, Part, Policy, Restore};
use basketflow_operators::first_per_id;
use basketflow_operators::fold::{fold_by_key, Sums3};
use differential_dataflow::input::Input;
use timely::dataflow::operators::capture::{Capture, Event};

type Updates<D> = Vec<(D, u64, isize)>;

/// Runs `build` over `rounds` of `(record, diff)` updates at times 1, 2, ... and returns the
/// consolidated output updates sorted by (time, record).
fn run<D, O>(
    rounds: Vec<Vec<(D, isize)>>,
    build: fn(
        differential_dataflow::VecCollection<'_, u64, D>,
    ) -> differential_dataflow::VecCollection<'_, u64, O>,
) -> Updates<O>
where
    D: differential_dataflow::ExchangeData + std::hash::Hash + Sync,
    O: differential_dataflow::ExchangeData,
{
    let (send, recv) = std::sync::mpsc::channel();
    timely::execute_directly(move |worker| {
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, data) = scope.new_collection::<D, isize>();
            build(data).inner.capture_into(send);
            input
        });
        for (i, round) in rounds.into_iter().enumerate() {
            input.advance_to(i as u64 + 1);
            for (d, r) in round {
                input.update(d, r);
            }
        }
    });
    let mut out: Updates<O> = recv
        .try_iter()
        .flat_map(|e| match e {
            Event::Messages(_, data) => data,
            Event::Progress(_) => Vec::new(),
        })
        .collect();
    out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    differential_dataflow::consolidation::consolidate_updates(&mut out);
    out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    out
}

#[test]
fn fold_by_key_keeps_one_row_per_key_and_drops_zero_sums() {
    let rounds = vec![
        vec![
            (('a', [2i64, 10, 1]), 1),
            (('a', [1, 5, 1]), 2),
            (('b', [1, 1, 1]), 1),
        ],
        vec![(('a', [1, 5, 1]), -1)],
        vec![(('b', [1, 1, 1]), -1)],
    ];
    let sums = run(rounds, |c| fold_by_key::<_, Sums3>("Sum", c, None));
    assert_eq!(
        sums,
        vec![
            (('a', [4, 20, 3]), 1, 1),
            (('b', [1, 1, 1]), 1, 1),
            (('a', [3, 15, 2]), 2, 1),
            (('a', [4, 20, 3]), 2, -1),
            (('b', [1, 1, 1]), 3, -1),
        ]
    );
}

type Sales = Vec<Vec<((u32, [i64; 3]), isize)>>;

/// Runs `fold_by_key` on `workers` over `rounds` at times `from + 1`, `from + 2`, ..., with
/// checkpoints every `interval` ms and starting from `restore`; returns the output updates
/// sorted and consolidated, and the parts written.
fn run_folded(
    workers: usize,
    rounds: Sales,
    from: u64,
    restore: Option<Restore>,
) -> (Updates<(u32, [i64; 3])>, Vec<Part>) {
    let (send, recv) = channel();
    let (parts, written) = channel();
    let config = Checkpointing {
        policy: Policy {
            interval_ms: 2,
            skip_older_than_ms: None,
            full_every: 3,
        },
        parts,
        restore: restore.map(Arc::new),
        erasures: Default::default(),
    };
    let send = std::sync::Mutex::new(send);
    timely::execute(timely::Config::process(workers), move |worker| {
        let send = send.lock().unwrap().clone();
        let (index, peers) = (worker.index(), worker.peers());
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, data) = scope.new_collection::<(u32, [i64; 3]), isize>();
            fold_by_key::<_, Sums3>("Sales", data, Some(&config))
                .inner
                .capture_into(send);
            input
        });
        for (i, round) in rounds.iter().enumerate() {
            input.advance_to(from + i as u64 + 1);
            for (n, (d, r)) in round.iter().enumerate() {
                if n % peers == index {
                    input.update(*d, *r);
                }
            }
            input.flush();
            worker.step();
        }
    })
    .expect("timely runs");
    let mut out: Updates<(u32, [i64; 3])> = recv
        .try_iter()
        .flat_map(|e| match e {
            Event::Messages(_, data) => data,
            Event::Progress(_) => Vec::new(),
        })
        .collect();
    differential_dataflow::consolidation::consolidate_updates(&mut out);
    out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    (out, written.try_iter().collect())
}

#[test]
fn a_fold_restored_from_a_checkpoint_continues_as_if_it_had_never_stopped() {
    // Keys 0..64 at time 1, then keys 0..8, sales over 6 times; a checkpoint every 2 ms
    // (parts of changes after the first: few keys change).
    let rounds: Sales = (1..=6i64)
        .map(|t| {
            (0..if t == 1 { 64u32 } else { 8 })
                .map(|k| {
                    (
                        (k, [t + k as i64, 3 * t, 1]),
                        if (t + k as i64) % 5 == 0 { -1 } else { 1 },
                    )
                })
                .collect()
        })
        .collect();
    let (whole, parts) = run_folded(1, rounds.clone(), 0, None);
    // Times 1..=6 pass 2 and 4, and the closed input passes 6.
    let mut times: Vec<u64> = parts.iter().map(|p| p.at).collect();
    times.dedup();
    assert_eq!(times, vec![2, 4, 6]);
    for (workers, restored_workers) in [(1, 1), (1, 3), (2, 1), (2, 2)] {
        let (_, parts) = run_folded(workers, rounds.clone(), 0, None);
        // The part at 4 holds the keys folded since the one at 2 (its base).
        assert!(parts.iter().any(|p| p.at == 4 && p.base == Some(2)));
        let restore = Restore::chained(4, workers, routing_fingerprint(), &["Sales"], parts)
            .expect("complete");
        let (rest, _) = run_folded(restored_workers, rounds[4..].to_vec(), 4, Some(restore));
        let after_4: Updates<_> = whole.iter().filter(|u| u.1 > 4).cloned().collect();
        assert_eq!(rest, after_4, "{workers} -> {restored_workers} workers");
        assert!(!rest.is_empty());
    }
}

/// An id whose hash is always the same: every two ids collide.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
struct Colliding(char);

impl std::hash::Hash for Colliding {
    fn hash<H: std::hash::Hasher>(&self, _state: &mut H) {}
}

#[test]
fn first_per_id_tells_colliding_ids_apart() {
    // Values (scope, id, content); ids 'x' and 'y' share one hash, and so do scopes 'a' and
    // 'b': every value shares one key, and the scoped ids are still told apart.
    let (a, b) = (Colliding('a'), Colliding('b'));
    let (x, y) = (Colliding('x'), Colliding('y'));
    let rounds = vec![
        vec![
            ((a, x, 5), 1),
            ((a, y, 7), 1),
            ((a, x, 9), 1),
            ((b, x, 6), 1),
        ],
        vec![((a, x, 2), 1), ((a, y, 7), -1)],
        vec![((a, y, 8), 1), ((b, x, 1), 1)],
    ];
    let first = run(rounds, |c| {
        first_per_id("FirstPerId", c, |v: &(Colliding, Colliding, i32)| {
            (&v.0, &v.1)
        })
        .as_collection(|_hash, v| *v)
    });
    assert_eq!(
        first,
        vec![
            ((a, x, 5), 1, 1),
            ((a, y, 7), 1, 1),
            ((b, x, 6), 1, 1),
            ((a, x, 2), 2, 1),
            ((a, x, 5), 2, -1),
            ((a, y, 7), 2, -1),
            ((a, y, 8), 3, 1),
            ((b, x, 1), 3, 1),
            ((b, x, 6), 3, -1),
        ]
    );
}
