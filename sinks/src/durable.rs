//! The durable frontier both writers (ClickHouse read models, Kafka outputs) expose.
//!
//! A writer's sink operator has an output that carries no data. The writing worker holds a
//! capability on it at one past the writer's committed time and drops it once the writer has
//! committed everything it will ever be given; the other workers hold nothing. Probing the
//! output therefore tells every worker, in every process, how far the writer has made things
//! durable: sources hold back when it lags, and a drain waits until it reaches them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use basketflow_kafka::Positions;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::Capability;
use timely::scheduling::SyncActivator;

/// What a restart of a writer starts from: its committed time and the sources' positions
/// recorded with it.
pub type Committed = (u64, Positions);

/// The output session of a durable-frontier operator (it never gives data).
pub(crate) type NoData<'a> = OutputBuilderSession<'a, u64, CapacityContainerBuilder<Vec<()>>>;

/// Lets a writer thread wake its sink operator after a commit.
#[derive(Clone, Default)]
pub(crate) struct Waker(Arc<Mutex<Option<SyncActivator>>>);

impl Waker {
    /// Installs the operator's activator (from its constructor).
    pub(crate) fn arm(&self, activator: SyncActivator) {
        *self.0.lock().expect("activator slot") = Some(activator);
    }

    /// Schedules the operator, if armed.
    pub(crate) fn wake(&self) {
        if let Some(a) = self.0.lock().expect("activator slot").as_ref() {
            let _ = a.activate();
        }
    }
}

/// The capability of a durable frontier.
pub(crate) struct DurableCap(Option<Capability<u64>>);

impl DurableCap {
    /// On the writing worker, a capability at `committed + 1`; elsewhere none.
    pub(crate) fn new(cap: Capability<u64>, writes: bool, committed: u64) -> DurableCap {
        DurableCap(writes.then(|| cap.delayed(&(committed + 1))))
    }

    /// Follows the writer: one past its `committed` time, gone once it has `finished`.
    pub(crate) fn follow(&mut self, committed: &AtomicU64, finished: &AtomicBool) {
        if let Some(c) = self.0.as_mut() {
            let through = committed.load(Ordering::Relaxed);
            if through + 1 > *c.time() {
                c.downgrade(&(through + 1));
            }
            if finished.load(Ordering::Relaxed) {
                self.0 = None;
            }
        }
    }
}
