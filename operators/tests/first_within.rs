//! `first_within` against a plain reference: random copies of a few ids at random read times,
//! fed on one worker and on three (each copy on a random worker), with random horizons.

use std::collections::BTreeMap;

use basketflow_operators::first_within;
use differential_dataflow::input::Input;
use differential_dataflow::Hashable;
use proptest::prelude::*;
use timely::dataflow::operators::capture::{Capture, Event};
use timely::dataflow::ProbeHandle;

/// (id, payload) read at a time, fed by a worker.
type Copy = ((u8, u8), u64, usize);
type Out = Vec<((u8, u8), u64, isize)>;

/// The rule, directly: per id, copies by (time, value); a copy counts when no counted copy's
/// window `[t, t + horizon)` is open at its time.
fn reference(copies: &[Copy], horizon: u64) -> Out {
    let mut sorted: Vec<(u64, (u8, u8))> = copies.iter().map(|(v, t, _)| (*t, *v)).collect();
    sorted.sort();
    let mut open: BTreeMap<u8, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for (t, v) in sorted {
        if open.get(&v.0).is_some_and(|&end| t < end) {
            continue;
        }
        open.insert(v.0, t.saturating_add(horizon));
        out.push((v, t, 1));
    }
    out.sort();
    out
}

fn run(workers: usize, copies: Vec<Copy>, horizon: u64) -> Out {
    let (send, recv) = std::sync::mpsc::channel();
    let send = std::sync::Mutex::new(send);
    let last = copies.iter().map(|c| c.1).max().unwrap_or(0);
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let send = send.lock().unwrap().clone();
        let probe = ProbeHandle::new();
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, values) = scope.new_collection::<(u8, u8), isize>();
            first_within(
                "FirstWithin",
                values,
                horizon,
                |v: &(u8, u8)| v.0,
                |v: &(u8, u8)| v.0.hashed(),
                None,
            )
            .probe_with(&probe)
            .inner
            .capture_into(send);
            input
        });
        let mut mine: BTreeMap<u64, Vec<(u8, u8)>> = BTreeMap::new();
        for (v, t, w) in &copies {
            if w % workers == index {
                mine.entry(*t).or_default().push(*v);
            }
        }
        for t in 0..=last {
            input.advance_to(t);
            for v in mine.get(&t).into_iter().flatten() {
                input.insert(*v);
            }
            input.advance_to(t + 1);
            input.flush();
            // Sometimes several times in one step: batching must not matter.
            if t % 3 == 0 {
                worker.step_while(|| probe.less_than(input.time()));
            }
        }
    })
    .unwrap();
    let mut out: Out = recv
        .try_iter()
        .flat_map(|e| match e {
            Event::Messages(_, data) => data,
            Event::Progress(_) => Vec::new(),
        })
        .collect();
    out.sort();
    out
}

fn copies() -> impl Strategy<Value = Vec<Copy>> {
    proptest::collection::vec(((0u8..4, 0u8..3), 0u64..40, 0usize..3), 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn counted_copies_are_the_reference_s_on_one_and_three_workers(
        copies in copies(),
        horizon in prop_oneof![Just(0u64), 1u64..15, Just(u64::MAX)],
    ) {
        let want = reference(&copies, horizon);
        prop_assert_eq!(&run(1, copies.clone(), horizon), &want);
        prop_assert_eq!(&run(3, copies, horizon), &want);
    }
}

#[test]
fn the_reference_counts_a_copy_again_after_the_horizon() {
    let copies = vec![
        ((1, 0), 0, 0),
        ((1, 1), 5, 0),
        ((1, 2), 10, 0),
        ((1, 0), 12, 0),
    ];
    assert_eq!(
        reference(&copies, 10),
        vec![((1, 0), 0, 1), ((1, 2), 10, 1)]
    );
    assert_eq!(run(2, copies, 10), vec![((1, 0), 0, 1), ((1, 2), 10, 1)]);
}

/// Enough windows opened that the operator sweeps closed ones out many times (it sweeps after
/// `SWEEP_AFTER` openings), with gaps longer than the horizon (where it drops them all):
/// still the reference's result.
#[test]
fn sweeps_of_closed_windows_change_nothing() {
    let mut state = 0x2545_f491_u64;
    let mut next = move |n: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    let copies: Vec<Copy> = (0..20_000)
        .map(|_| {
            let t = next(4_000);
            // An idle stretch: no copy read between 2,000 and 2,100.
            let t = if (2_000..2_100).contains(&t) {
                t + 100
            } else {
                t
            };
            ((next(256) as u8, next(3) as u8), t, next(3) as usize)
        })
        .collect();
    for horizon in [7, 30] {
        let want = reference(&copies, horizon);
        assert!(want.len() > 2 * basketflow_operators::FIRST_WITHIN_SWEEP_AFTER);
        assert_eq!(
            run(1, copies.clone(), horizon),
            want,
            "horizon {horizon}, 1 worker"
        );
        assert_eq!(
            run(3, copies.clone(), horizon),
            want,
            "horizon {horizon}, 3 workers"
        );
    }
}
