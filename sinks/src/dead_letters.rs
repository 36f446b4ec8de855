//! Dead letters: refused messages, counted by reason on the worker that read them.
//!
//! They are produced to `shopper-events-rejected` (keyed `partition:offset`) exactly once, in
//! the same Kafka transactions as the decisions: see [`crate::kafka_outputs`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use basketflow_vocab::DeadLetter;
use timely::dataflow::operators::core::Inspect;
use timely::dataflow::Stream;

/// Rejections counted by code, shared with whoever reports metrics.
pub type RejectionCounts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Counts the dead letters of `stream` by code (a replay counts again: these are what this
/// process saw) and passes them on.
pub fn count_dead_letters<'scope, T: timely::progress::Timestamp>(
    stream: Stream<'scope, T, Vec<DeadLetter>>,
    counts: RejectionCounts,
) -> Stream<'scope, T, Vec<DeadLetter>> {
    stream.inspect_core(move |event| {
        if let Ok((_, data)) = event {
            let mut counts = counts.lock().expect("rejection counts lock");
            for dl in data.iter() {
                *counts.entry(dl.code.clone()).or_default() += 1;
            }
        }
    })
}
