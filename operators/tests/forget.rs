//! Exact outputs of `forget`: expiry, forgets before and after records, a forget that moves a
//! leaving earlier, records of a forgotten key, residues, and one worker against several.

use basketflow_operators::forget;
use differential_dataflow::input::Input;
use timely::dataflow::operators::capture::{Capture, Event};
use timely::dataflow::operators::Input as _;
use timely::dataflow::ProbeHandle;

type Rec = (char, u32);
type Updates = Vec<(Rec, u64, isize)>;

/// Rounds at times 1, 2, ...: records `(key, value)` inserted and keys forgotten at that time.
/// Every record expires `ttl` after its time; a forgotten record leaves residue `('z', value)`.
fn run(workers: usize, rounds: Vec<(Vec<Rec>, Vec<char>)>, ttl: u64) -> Updates {
    let (send, recv) = std::sync::mpsc::channel();
    let send = std::sync::Mutex::new(send);
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let send = send.lock().unwrap().clone();
        let probe = ProbeHandle::new();
        let (mut records, mut forgets) = worker.dataflow::<u64, _, _>(|scope| {
            let (records_in, records) = scope.new_collection::<Rec, isize>();
            let (forgets_in, forgets) = scope.new_input::<Vec<char>>();
            forget(
                "Forget",
                records,
                forgets,
                |(k, _): &Rec| *k,
                move |_, t| Some(t + ttl),
                |(_, v): &Rec| Some(('z', *v)),
            )
            .probe_with(&probe)
            .inner
            .capture_into(send);
            (records_in, forgets_in)
        });
        for (i, (recs, keys)) in rounds.iter().enumerate() {
            let t = i as u64 + 1;
            records.advance_to(t);
            forgets.advance_to(t);
            for (j, r) in recs.iter().enumerate() {
                if j % peers == index {
                    records.insert(*r);
                }
            }
            for (j, k) in keys.iter().enumerate() {
                if j % peers == index {
                    forgets.send(*k);
                }
            }
            records.advance_to(t + 1);
            forgets.advance_to(t + 1);
            records.flush();
            worker.step_while(|| probe.less_than(records.time()));
        }
    })
    .unwrap();
    let mut out: Updates = recv
        .try_iter()
        .flat_map(|e| match e {
            Event::Messages(_, data) => data,
            Event::Progress(_) => Vec::new(),
        })
        .collect();
    differential_dataflow::consolidation::consolidate_updates(&mut out);
    out.sort_by_key(|a| (a.1, a.0));
    out
}

#[test]
fn records_leave_at_expiry_or_forget_and_leave_their_residue() {
    let rounds = vec![
        (vec![('a', 1), ('b', 2)], vec![]), // 1
        (vec![('a', 3)], vec![]),           // 2
        (vec![], vec!['a']),                // 3: a forgotten
        (vec![('a', 4), ('c', 5)], vec![]), // 4: a record of a forgotten key
        (vec![], vec![]),                   // 5: b expires (1 + 4)
        (vec![], vec!['c', 'c']),           // 6: c forgotten twice
        (vec![], vec![]),                   // 7
        (vec![], vec![]),                   // 8
    ];
    let expected: Updates = vec![
        (('a', 1), 1, 1),
        (('b', 2), 1, 1),
        (('a', 3), 2, 1),
        (('a', 1), 3, -1),
        (('a', 3), 3, -1),
        (('z', 1), 3, 1),
        (('z', 3), 3, 1),
        (('c', 5), 4, 1),
        (('z', 4), 4, 1), // only the residue: its key was already forgotten
        (('b', 2), 5, -1),
        (('z', 2), 5, 1),
        (('c', 5), 6, -1),
        (('z', 5), 6, 1),
    ];
    assert_eq!(run(1, rounds.clone(), 4), expected);
    assert_eq!(run(3, rounds, 4), expected);
}

#[test]
fn a_forget_moves_a_scheduled_expiry_earlier_and_the_end_drops_what_is_beyond_it() {
    // ttl 3: ('a', 1) would leave at 4; the forget at 2 makes it 2. ('b', 2) at 3 would leave
    // at 6, after the last round (4): dropped when the inputs end, nothing emitted beyond 4.
    let rounds = vec![
        (vec![('a', 1)], vec![]),
        (vec![], vec!['a']),
        (vec![('b', 2)], vec![]),
        (vec![], vec![]),
    ];
    let expected: Updates = vec![
        (('a', 1), 1, 1),
        (('a', 1), 2, -1),
        (('z', 1), 2, 1),
        (('b', 2), 3, 1),
    ];
    assert_eq!(run(1, rounds.clone(), 3), expected);
    assert_eq!(run(2, rounds, 3), expected);
}
