//! Exact outputs of the generic operators, with insertions and retractions over three times.

use basketflow_operators::{first_per_id, sum_by_key};
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
fn sum_by_key_keeps_one_row_per_key_and_drops_zero_sums() {
    let rounds = vec![
        vec![
            (('a', (2isize, 10isize)), 1),
            (('a', (1, 5)), 2),
            (('b', (1, 1)), 1),
        ],
        vec![(('a', (1, 5)), -1)],
        vec![(('b', (1, 1)), -1)],
    ];
    let sums = run(rounds, |c| sum_by_key("Sum", c));
    assert_eq!(
        sums,
        vec![
            (('a', (4, 20)), 1, 1),
            (('b', (1, 1)), 1, 1),
            (('a', (3, 15)), 2, 1),
            (('a', (4, 20)), 2, -1),
            (('b', (1, 1)), 3, -1),
        ]
    );
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
