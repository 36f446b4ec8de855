//! A timely source that reads a Kafka topic with deterministic logical times.
//!
//! Design (see `docs/design/2026-11-22-times-and-frontiers.md` for the argument):
//!
//! - **Ownership.** Worker `i` of `n` owns partitions `p` with `p % n == i`, assigned manually
//!   (no consumer group, no rebalancing). A worker that owns none drops its capability at once.
//! - **Times.** The logical time of a message is its broker timestamp in milliseconds (the topic
//!   uses `LogAppendTime`, so the broker writes it into the log), rounded up to a tick and made
//!   monotone per partition by a running maximum. It is a function of the topic's content: a
//!   replay gives every message the same time.
//! - **Frontier.** Each partition has a lower bound on the times it can still produce: its
//!   running maximum. A partition that has reached its end (the broker said EOF and nothing came
//!   since) can only receive messages appended from now on, so its bound rises to the wall clock
//!   minus a margin (`idle_margin_ms`, covering fetch latency and clock skew), rounded up to a
//!   tick. The consumer thread reports the wall clock at the instants that make this bound pass
//!   a tick (`margin + 1` ms after each), so a time completes `margin + 1` ms after its end on
//!   every idle partition, whatever the tick's phase. The source holds a
//!   capability for the least bound over its partitions; idle partitions never stall the graph.
//!   A message whose broker time is below its partition's bound (only possible if the margin is
//!   too small) is given the bound instead and counted in [`SourceStats::clamped`].
//! - **Backpressure.** A consumer thread per worker feeds the operator through a bounded channel
//!   and wakes it with a `SyncActivator`; when the graph falls behind, the thread blocks and
//!   stops fetching.
//! - **Caught up.** With `stop_at_start_watermarks`, each partition is read up to the high
//!   watermark it had when the source started; then the source drops its capability and the
//!   consumer thread ends (tests and backfills).
//! - **Reclocking on restart.** Times are a function of the log except for one thing: an idle
//!   partition's bound follows the wall clock, so a message fetched late is clamped up to the
//!   bound, and a replay would give it its (earlier) broker time. The sinks therefore record,
//!   with every committed time `t`, the [`Positions`] the sources had reached at `t` (the next
//!   offset of each partition among messages with time `<= t`). On restart these become
//!   [`SourceConfig::floors`]: a message at or after a recorded position gets a time above the
//!   recorded `t`. Messages before it get times `<= t` anyway (a replay never clamps upwards
//!   more than the first run did), so the replay puts exactly the committed messages at or
//!   below `t`, and no output written durably at `t` is lost or repeated (Materialize calls
//!   these durable bindings "remap"; see the design note on restarts).
//! - **Gate.** A source may be given a [`Gate`]: the frontier of what the sinks have made
//!   durable. While the source's own frontier is more than `max_lead_ms` ahead of it, the
//!   source stops taking messages (the consumer thread then blocks on the full channel): a
//!   slow or unavailable ClickHouse or broker bounds the graph's memory instead of growing it.
//!   The gate also stops the source for good when `stop` is set (SIGTERM): the source keeps its
//!   capability at its last position, so everything before it can still be drained.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use basketflow_kafka::{
    source_consumer_config, topic_partitions, unnamed_client_config, TopicError,
};
use basketflow_kafka::{PositionRecord, Positions};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::throttle::Throttle;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::{ProbeHandle, Scope, Stream};
use timely::scheduling::SyncActivator;

/// Logical time of the graph: milliseconds since the Unix epoch (broker time, on ticks).
pub type Millis = u64;

/// Where and how to read.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// Times are rounded up to multiples of this many milliseconds (batching granularity).
    pub tick_ms: u64,
    /// How far behind the wall clock an idle partition's bound stays.
    pub idle_margin_ms: u64,
    /// Stop once every partition is read up to its high watermark at start.
    pub stop_at_start_watermarks: bool,
    /// First offset to read per partition (absent: the beginning).
    pub start_offsets: BTreeMap<i32, i64>,
    /// Messages the consumer thread may buffer ahead of the graph (8,192 by default: about
    /// 10 MB of ~1.2 KB events; a catch-up keeps it full, and 65,536 held ~150 MiB more at the
    /// peak for no measurable throughput: memory phase, 1 M events, 595 -> 443 MiB peak,
    /// 59,042 -> 56,928 events/s, one run each).
    pub channel_capacity: usize,
    /// The consumer's `fetch.min.bytes` (1: the broker answers a fetch as soon as a message is
    /// there; more: fewer, larger fetches, each waiting up to 10 ms for that many bytes).
    pub fetch_min_bytes: u32,
    /// How far (ms of broker time) a partition may be read ahead of the slowest partition the
    /// source reads (0: no limit). The source's time is the least of its partitions', and the
    /// graph holds what is read above it until it passes: in a catch-up, a partition that
    /// librdkafka happens to fetch faster than the others ran seconds ahead, and what it
    /// brought piled up with the length of the backlog. The consumer pauses a partition that
    /// is ahead and resumes it once the others have caught up (Flink's watermark alignment).
    pub max_partition_skew_ms: u64,
    /// Bindings recorded with committed outputs: `(time, next offset per partition)`. A
    /// message at or after a partition's offset gets a time greater than `time`; a partition
    /// missing from a binding had no message at or below `time` (see "Reclocking on restart").
    pub bindings: Vec<(Millis, BTreeMap<i32, i64>)>,
}

impl SourceConfig {
    /// Adds the binding of one committed output (the `positions` it recorded at `through`).
    pub fn bind(&mut self, through: Millis, positions: &Positions) {
        if through > 0 {
            let mine = positions.get(&self.topic).cloned().unwrap_or_default();
            self.bindings.push((through, mine));
        }
    }

    /// The floors of partition `p`: `(offset, time)`, ascending.
    fn floors(&self, p: i32) -> Vec<(i64, Millis)> {
        let mut f: Vec<(i64, Millis)> = self
            .bindings
            .iter()
            .map(|(t, offsets)| (offsets.get(&p).copied().unwrap_or(0), *t))
            .collect();
        f.sort_unstable();
        f
    }
}

/// What may hold a source back: the frontier of durable outputs, and a stop flag.
#[derive(Clone)]
pub struct Gate {
    /// The frontier of what the sinks have made durable.
    pub durable: ProbeHandle<Millis>,
    /// How far (ms of logical time) the source may run ahead of `durable`.
    pub max_lead_ms: u64,
    /// How many of its messages (on its worker) may be in flight: read at times `durable`
    /// has not passed. In a catch-up, a backlog produced faster than it is read packs many
    /// messages into each ms of broker time, so `max_lead_ms` alone lets memory follow the
    /// producer's rate; this bounds it by count.
    pub max_in_flight: usize,
    /// Once set, the source takes no more messages and keeps its capability (drain).
    pub stop: Arc<AtomicBool>,
}

impl Gate {
    /// The durable frontier (`Millis::MAX` once it is empty).
    fn durable_frontier(&self) -> Millis {
        self.durable
            .with_frontier(|f| f.first().copied().unwrap_or(Millis::MAX))
    }

    /// True when a source at `time` must wait.
    fn closed(&self, time: Millis) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return true;
        }
        time > self.durable_frontier().saturating_add(self.max_lead_ms)
    }
}

/// A source's messages in flight: how many it emitted at each time the durable outputs have
/// not passed yet.
#[derive(Debug, Default)]
struct InFlight(BTreeMap<Millis, usize>);

impl InFlight {
    /// `n` messages emitted at `time`.
    fn add(&mut self, time: Millis, n: usize) {
        *self.0.entry(time).or_default() += n;
    }

    /// Forgets the times below `durable` (durable now), then counts the messages at times
    /// below `capability`: those the outputs can make durable without this source reading
    /// more (counting the others could hold the source, and its capability, for good).
    fn pending_below(&mut self, durable: Millis, capability: Millis) -> usize {
        while let Some(entry) = self.0.first_entry() {
            if *entry.key() >= durable {
                break;
            }
            entry.remove();
        }
        self.0.range(..capability).map(|(_, n)| n).sum()
    }
}

impl SourceConfig {
    /// A configuration with basketflow's defaults for `topic` on `brokers`.
    pub fn new(brokers: &str, topic: &str) -> SourceConfig {
        SourceConfig {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            tick_ms: 5,
            idle_margin_ms: 5,
            stop_at_start_watermarks: false,
            start_offsets: BTreeMap::new(),
            channel_capacity: 8_192,
            fetch_min_bytes: 1,
            max_partition_skew_ms: 1_000,
            bindings: Vec::new(),
        }
    }
}

/// One message as the graph sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceMessage {
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// The message's logical time.
    pub time: Millis,
    /// Key bytes, if any.
    pub key: Option<Bytes>,
    /// Value bytes (empty for a null value).
    pub payload: Bytes,
}

impl SourceMessage {
    /// The key as text, if it is UTF-8: copied out (converting the [`Bytes`] into a `Vec`
    /// would take over the whole chunk it shares, [`copy_into`]).
    pub fn key_text(&self) -> Option<String> {
        let key = self.key.as_deref()?;
        std::str::from_utf8(key).ok().map(str::to_owned)
    }
}

/// The consumer thread copies keys and values into chunks of this size, shared by the
/// messages they hold ([`copy_into`]).
const CHUNK_BYTES: usize = 64 * 1024;

/// `bytes` copied into the free end of `chunk` (a new chunk when they do not fit), as a
/// shared slice of it: one allocation per chunk instead of one per key and value. A copy per
/// message, each freed on the worker that parsed it, cost the consumer thread a quarter of
/// its time in mimalloc collecting blocks freed by other threads.
fn copy_into(chunk: &mut BytesMut, bytes: &[u8]) -> Bytes {
    if chunk.capacity() < bytes.len() {
        *chunk = BytesMut::with_capacity(CHUNK_BYTES.max(bytes.len()));
    }
    chunk.extend_from_slice(bytes);
    let copy = chunk.split().freeze();
    if chunk.capacity() == 0 {
        // Full (or sized to one large message): let it go with its last slice.
        *chunk = BytesMut::new();
    }
    copy
}

/// Counters a source keeps, readable from any thread.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Messages read.
    pub messages: AtomicU64,
    /// Payload bytes read.
    pub bytes: AtomicU64,
    /// Messages whose broker time was below their partition's bound.
    pub clamped: AtomicU64,
    /// Consumer errors seen (each is retried by librdkafka).
    pub errors: AtomicU64,
    /// The source's current frontier (least time it may still produce), `u64::MAX` when done.
    pub frontier: AtomicU64,
    /// Set when the source has finished (caught up in stop mode, or shut down).
    pub done: AtomicBool,
    /// Activations in which the gate held the source back.
    pub gated: AtomicU64,
    /// Per owned partition: the next offset to read and the partition's high watermark (-1 until
    /// the broker has told it): their difference is the consumer lag.
    pub partitions: std::sync::Mutex<BTreeMap<i32, (i64, i64)>>,
    /// How many partitions the topic had when the source started (the ones it reads).
    pub partitions_at_start: AtomicU64,
    /// How many partitions the broker last said the topic has (0 until asked): more than
    /// [`Self::partitions_at_start`] means partitions were added, which this run never reads
    /// (see [`SourceStats::added_partitions`]).
    pub partitions_listed: AtomicU64,
}

impl SourceStats {
    /// `(at start, now)` when partitions were added to the topic since the source started:
    /// the run must stop (a restart reads them, from their beginning, each message once); a
    /// source never silently ignores them.
    pub fn added_partitions(&self) -> Option<(u64, u64)> {
        let (start, now) = (
            self.partitions_at_start.load(Ordering::Relaxed),
            self.partitions_listed.load(Ordering::Relaxed),
        );
        (now > start).then_some((start, now))
    }
}

enum Fetched {
    Message(SourceMessage, i64),
    Eof(i32),
    /// The consumer holds messages of this partition (see `Alignment`): it is not idle, so its
    /// bound must stop following the wall clock (its held messages would be clamped).
    Held(i32),
    Tick(Millis),
    Failed(String),
}

/// Partitions of `topic` owned by worker `index` of `peers`, with the low and high watermarks
/// they had at start. A topic that does not exist is [`TopicError::Missing`].
pub fn owned_partitions(
    brokers: &str,
    topic: &str,
    index: usize,
    peers: usize,
) -> Result<Vec<(i32, i64, i64)>, TopicError> {
    let unavailable = |source| TopicError::Unavailable {
        topic: topic.to_string(),
        brokers: brokers.to_string(),
        source: Box::new(source),
    };
    let consumer: BaseConsumer = unnamed_client_config(brokers)
        .create()
        .map_err(unavailable)?;
    let mut out = Vec::new();
    for p in topic_partitions(&consumer, brokers, topic)? {
        if p as usize % peers == index {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(30))
                .map_err(unavailable)?;
            out.push((p, low, high));
        }
    }
    Ok(out)
}

fn wall_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ceil_tick(ms: u64, tick: u64) -> u64 {
    ms.div_ceil(tick) * tick
}

/// The bound of an idle partition at wall time `now`: a message appended from now on has a
/// broker time of at least `now - margin` (the margin's assumption), so a time of at least
/// that, rounded up to a tick. (Rounded down, as before 2026-12-05, a time completed one tick
/// later than it could.)
fn idle_bound(now: Millis, margin: u64, tick: u64) -> Millis {
    ceil_tick(now.saturating_sub(margin), tick)
}

/// Whether the consumer thread reports the wall clock now, its next report being due at
/// `next`: once `next` has come, and also when `next` is more than a tick away (the wall clock
/// went back, e.g. an NTP step: waiting for `next` would freeze every idle bound until the
/// clock caught up; a report of an earlier time lowers no bound).
fn tick_due(now: Millis, next: Millis, tick: u64) -> bool {
    now >= next || next - now > tick
}

/// The first wall time after `now` at which [`idle_bound`] passes another tick: `k * tick +
/// margin + 1`. The consumer thread sends its ticks then, so that a time completes as soon as
/// the margin allows instead of up to a whole tick later.
fn next_tick_after(now: Millis, margin: u64, tick: u64) -> Millis {
    let phase = (margin + 1) % tick;
    let at = now - now % tick + phase;
    if at > now {
        at
    } else {
        at + tick
    }
}

/// Per-partition progress inside the operator.
struct PartitionState {
    /// Least time this partition may still produce.
    bound: Millis,
    /// Read to the end, nothing since.
    at_eof: bool,
    /// Next offset to read.
    next: i64,
    /// Stop-mode target: read up to here.
    stop_at: i64,
    /// Recorded bindings still ahead: `(offset, time)`, ascending.
    floors: Vec<(i64, Millis)>,
}

impl PartitionState {
    /// A partition read from `next` with the recorded `floors`.
    fn new(next: i64, stop_at: i64, floors: Vec<(i64, Millis)>) -> PartitionState {
        PartitionState {
            bound: 0,
            at_eof: false,
            next,
            stop_at,
            floors,
        }
    }

    /// The logical time of the message at `offset` with broker time `broker_ms`: the broker
    /// time on ticks, at least the partition's bound, and above every recorded binding the
    /// offset has reached. Advances the partition. True as second value when the message was
    /// clamped (its broker time was below the bound: fetched later than the idle margin).
    fn assign(&mut self, offset: i64, broker_ms: i64, tick: u64) -> (Millis, bool) {
        let t = ceil_tick(broker_ms.max(0) as u64, tick);
        let clamped = t < self.bound;
        while self.floors.first().is_some_and(|&(o, _)| o <= offset) {
            let (_, through) = self.floors.remove(0);
            self.bound = self.bound.max(through + 1);
        }
        let time = t.max(self.bound);
        self.bound = time;
        self.at_eof = false;
        self.next = offset + 1;
        (time, clamped)
    }
}

/// The stream of messages a source produces.
pub type MessageStream<'scope> = Stream<'scope, Millis, Vec<SourceMessage>>;

/// Builds the source on `scope` for worker `index` of `peers`. The consumer thread starts
/// immediately; the stream carries [`SourceMessage`]s at their logical times. Fails if the
/// topic's partitions cannot be listed ([`TopicError::Missing`] when it does not exist).
pub fn kafka_source<'scope>(
    scope: Scope<'scope, Millis>,
    cfg: SourceConfig,
    index: usize,
    peers: usize,
    gate: Option<Gate>,
) -> Result<(MessageStream<'scope>, Arc<SourceStats>), TopicError> {
    // Counted before the owned ones are listed: a partition added in between makes the count
    // smaller than what the watcher sees, and the run stops rather than ignore it.
    let at_start = partition_count(&cfg.brokers, &cfg.topic)?;
    let owned = owned_partitions(&cfg.brokers, &cfg.topic, index, peers)?;
    let stats = Arc::new(SourceStats::default());
    stats.partitions_at_start.store(at_start, Ordering::Relaxed);
    let mut partitions: BTreeMap<i32, PartitionState> = owned
        .iter()
        .map(|&(p, low, high)| {
            let next = cfg.start_offsets.get(&p).copied().unwrap_or(low).max(low);
            (p, PartitionState::new(next, high, cfg.floors(p)))
        })
        .collect();
    if cfg.stop_at_start_watermarks {
        partitions.retain(|_, s| s.next < s.stop_at);
    }
    let (tx, rx) = sync_channel::<Fetched>(cfg.channel_capacity);
    let stop = Arc::new(AtomicBool::new(false));

    let stream = source(scope, &format!("KafkaSource({})", cfg.topic), {
        let stats = stats.clone();
        let stop = stop.clone();
        move |cap, info| {
            let activator = scope.worker().sync_activator_for(info.address.to_vec());
            if !partitions.is_empty() {
                let assignment: Vec<(i32, i64)> =
                    partitions.iter().map(|(&p, s)| (p, s.next)).collect();
                let thread_cfg = cfg.clone();
                let stop = stop.clone();
                let thread_stats = stats.clone();
                std::thread::Builder::new()
                    .name(format!("kafka-{}-{index}", cfg.topic))
                    .spawn(move || {
                        consume(thread_cfg, assignment, tx, activator, stop, thread_stats)
                    })
                    .expect("spawning the Kafka consumer thread");
            }
            let mut cap = if partitions.is_empty() {
                stats.frontier.store(u64::MAX, Ordering::Relaxed);
                stats.done.store(true, Ordering::Relaxed);
                None
            } else {
                Some(cap)
            };
            let tick = cfg.tick_ms.max(1);
            let margin = cfg.idle_margin_ms;
            let stop_mode = cfg.stop_at_start_watermarks;
            let mut batch: Vec<SourceMessage> = Vec::new();
            let mut errors_logged = Throttle::new(Duration::from_secs(10));
            let topic_name = cfg.topic.clone();
            let activator = scope.worker().activator_for(info.address.clone());
            let mut in_flight = InFlight::default();
            move |output| {
                let Some(c) = cap.as_mut() else { return };
                // Bounded work per activation keeps the worker responsive; the thread's next
                // send (or our own re-activation) brings us back for the rest.
                let mut budget = 16_384;
                if let Some(gate) = gate.as_ref() {
                    let pending = in_flight.pending_below(gate.durable_frontier(), *c.time());
                    if gate.closed(*c.time()) || pending >= gate.max_in_flight {
                        stats.gated.fetch_add(1, Ordering::Relaxed);
                        if !gate.stop.load(Ordering::Relaxed) {
                            activator.activate_after(Duration::from_millis(5));
                        }
                        return;
                    }
                    budget = budget.min(gate.max_in_flight - pending);
                }
                for _ in 0..budget {
                    let item = match rx.try_recv() {
                        Ok(item) => item,
                        Err(_) => break,
                    };
                    match item {
                        Fetched::Message(mut m, broker_ms) => {
                            let Some(st) = partitions.get_mut(&m.partition) else {
                                continue;
                            };
                            if m.offset < st.next {
                                continue;
                            }
                            let (time, clamped) = st.assign(m.offset, broker_ms, tick);
                            if clamped {
                                stats.clamped.fetch_add(1, Ordering::Relaxed);
                            }
                            m.time = time;
                            stats.messages.fetch_add(1, Ordering::Relaxed);
                            stats
                                .bytes
                                .fetch_add(m.payload.len() as u64, Ordering::Relaxed);
                            batch.push(m);
                        }
                        Fetched::Eof(p) => {
                            if let Some(st) = partitions.get_mut(&p) {
                                st.at_eof = true;
                            }
                        }
                        Fetched::Held(p) => {
                            if let Some(st) = partitions.get_mut(&p) {
                                st.at_eof = false;
                            }
                        }
                        Fetched::Tick(now) => {
                            let idle = idle_bound(now, margin, tick);
                            for st in partitions.values_mut() {
                                if st.at_eof {
                                    st.bound = st.bound.max(idle);
                                }
                            }
                        }
                        Fetched::Failed(e) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            if let Some(suppressed) = errors_logged.admit(Instant::now()) {
                                log::warn!(topic = topic_name.as_str(), worker = index, suppressed; "kafka consumer error (librdkafka retries): {e}");
                            }
                        }
                    }
                }
                // Emit, grouped by time (sorting is stable: offsets stay in order).
                // Moved, not cloned: a clone copied every payload (6% of a worker's time).
                batch.sort_by_key(|m| m.time);
                let mut drained = batch.drain(..).peekable();
                while let Some(t) = drained.peek().map(|m| m.time) {
                    let time_cap = c.delayed(&t);
                    let mut session = output.session(&time_cap);
                    let mut n = 0;
                    while let Some(m) = drained.next_if(|m| m.time == t) {
                        session.give(m);
                        n += 1;
                    }
                    if gate.is_some() {
                        in_flight.add(t, n);
                    }
                }
                drop(drained);
                {
                    let mut progress = stats.partitions.lock().expect("partition progress");
                    for (&p, st) in &partitions {
                        progress.entry(p).or_insert((0, -1)).0 = st.next;
                    }
                }
                if stop_mode {
                    partitions.retain(|_, s| s.next < s.stop_at);
                }
                match partitions.values().map(|s| s.bound).min() {
                    Some(f) => {
                        if f > *c.time() {
                            c.downgrade(&f);
                        }
                        stats.frontier.store(*c.time(), Ordering::Relaxed);
                    }
                    None => {
                        cap = None;
                        stop.store(true, Ordering::Relaxed);
                        stats.frontier.store(u64::MAX, Ordering::Relaxed);
                        stats.done.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    Ok((stream, stats))
}

/// The positions `messages` (read from `topic`) reach at each time: per batch, one record per
/// partition (its last offset + 1). Sinks fold these into the [`Positions`] they record with a
/// committed time. Returns the messages (moved through, not copied) and the records.
///
/// Take the messages from here rather than reading the source's stream twice: timely gives
/// every reader but the last a copy of each batch, payloads included.
pub fn positions<'scope>(
    messages: MessageStream<'scope>,
    topic: &str,
) -> (
    MessageStream<'scope>,
    Stream<'scope, Millis, Vec<PositionRecord>>,
) {
    use timely::dataflow::operators::core::OkErr;
    let topic = topic.to_string();
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    let both: Stream<'scope, Millis, Vec<Result<SourceMessage, PositionRecord>>> =
        messages.unary(Pipeline, "Positions", move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    last.clear();
                    for m in data.iter() {
                        let e = last.entry(m.partition).or_insert(m.offset + 1);
                        *e = (*e).max(m.offset + 1);
                    }
                    let cap = cap
                        .retain_least(0)
                        .expect("an input batch has a capability");
                    let mut session = output.session(&cap);
                    for (&p, &next) in &last {
                        session.give(Err((topic.clone(), p, next)));
                    }
                    session.give_iterator(data.drain(..).map(Ok));
                });
            }
        });
    both.ok_err(|x: Result<SourceMessage, PositionRecord>| x)
}

/// How many partitions `topic` has now.
fn partition_count(brokers: &str, topic: &str) -> Result<u64, TopicError> {
    let consumer: BaseConsumer =
        unnamed_client_config(brokers)
            .create()
            .map_err(|source| TopicError::Unavailable {
                topic: topic.to_string(),
                brokers: brokers.to_string(),
                source: Box::new(source),
            })?;
    Ok(topic_partitions(&consumer, brokers, topic)?.len() as u64)
}

/// Every 2 s, asks the broker for the high watermarks of `partitions` and for the topic's
/// number of partitions into `stats`.
fn watch_watermarks(
    cfg: &SourceConfig,
    partitions: &[i32],
    stop: &AtomicBool,
    stats: &SourceStats,
) {
    let Ok(consumer) = unnamed_client_config(&cfg.brokers).create::<BaseConsumer>() else {
        return;
    };
    while !stop.load(Ordering::Relaxed) {
        // A transient broker error leaves the last count (only a larger count matters).
        if let Ok(listed) = topic_partitions(&consumer, &cfg.brokers, &cfg.topic) {
            stats
                .partitions_listed
                .store(listed.len() as u64, Ordering::Relaxed);
        }
        for &p in partitions {
            if let Ok((_, high)) = consumer.fetch_watermarks(&cfg.topic, p, Duration::from_secs(2))
            {
                stats
                    .partitions
                    .lock()
                    .expect("partition progress")
                    .entry(p)
                    .or_insert((0, -1))
                    .1 = high;
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The consumer thread's alignment of its partitions (see
/// [`SourceConfig::max_partition_skew_ms`]): a message more than the skew ahead of the
/// slowest partition is held, in order with the rest of its partition, which is paused; it is
/// released (and the partition resumed) once the slowest partition has reached it.
/// The slowest partition is never held, so the source always makes progress; a partition at
/// its end no longer counts as the slowest.
struct Alignment {
    /// The skew (ms; 0: no alignment).
    skew_ms: u64,
    /// The broker time of the latest message received, per partition not at its end.
    seen: BTreeMap<i32, i64>,
    /// The messages held, per partition (a partition with some is paused).
    held: BTreeMap<i32, VecDeque<(SourceMessage, i64)>>,
}

impl Alignment {
    fn new(skew_ms: u64) -> Alignment {
        Alignment {
            skew_ms,
            seen: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// The latest broker time a message may have to be sent now.
    fn limit(&self) -> i64 {
        let slowest = self.seen.values().min().copied().unwrap_or(i64::MAX);
        slowest.saturating_add(i64::try_from(self.skew_ms).unwrap_or(i64::MAX))
    }

    /// A message received: returned to be sent now, or held (`None`; the caller pauses its
    /// partition when [`Self::is_held`] turns true).
    fn admit(&mut self, msg: SourceMessage, broker_ms: i64) -> Option<(SourceMessage, i64)> {
        let p = msg.partition;
        let seen = self.seen.entry(p).or_insert(broker_ms);
        *seen = (*seen).max(broker_ms);
        if self.skew_ms == 0 {
            return Some((msg, broker_ms));
        }
        if self.held.contains_key(&p) || broker_ms > self.limit() {
            self.held.entry(p).or_default().push_back((msg, broker_ms));
            return None;
        }
        Some((msg, broker_ms))
    }

    /// Gives up holding partition `p` (it could not be paused): its held messages, in order.
    fn unhold(&mut self, p: i32) -> VecDeque<(SourceMessage, i64)> {
        self.held.remove(&p).unwrap_or_default()
    }

    /// True while partition `p` has messages held.
    fn is_held(&self, p: i32) -> bool {
        self.held.contains_key(&p)
    }

    /// Partition `p` is at its end: it holds no other partition back until its next message.
    fn at_end(&mut self, p: i32) {
        if !self.held.contains_key(&p) {
            self.seen.remove(&p);
        }
    }

    /// The held messages the slowest partition has reached, in partition and offset order,
    /// and the partitions left with none held (to resume). Not sooner: a resumed partition
    /// then reads a whole skew before it is paused again, and each pause makes librdkafka drop
    /// what it had fetched ahead for the partition and fetch it again on resume (released at
    /// half the skew, a catch-up on 2 workers was 8-11% slower; at the slowest, no slower).
    fn release(&mut self) -> (Vec<(SourceMessage, i64)>, Vec<i32>) {
        let (mut out, mut resumed) = (Vec::new(), Vec::new());
        if self.held.is_empty() {
            return (out, resumed);
        }
        let limit = self.seen.values().min().copied().unwrap_or(i64::MAX);
        self.held.retain(|&p, queue| {
            while queue.front().is_some_and(|(_, t)| *t <= limit) {
                out.extend(queue.pop_front());
            }
            if queue.is_empty() {
                resumed.push(p);
            }
            !queue.is_empty()
        });
        (out, resumed)
    }
}

/// The source consumer's settings for `cfg`: the shared ones, and `fetch.min.bytes` when it is
/// not librdkafka's default (1).
fn consumer_config(cfg: &SourceConfig) -> ClientConfig {
    let mut client = source_consumer_config(&cfg.brokers);
    if cfg.fetch_min_bytes > 1 {
        client.set("fetch.min.bytes", cfg.fetch_min_bytes.to_string());
    }
    client
}

/// The consumer thread: fetches, forwards, ticks, and wakes the operator.
fn consume(
    cfg: SourceConfig,
    assignment: Vec<(i32, i64)>,
    tx: SyncSender<Fetched>,
    activator: SyncActivator,
    stop: Arc<AtomicBool>,
    stats: Arc<SourceStats>,
) {
    {
        // High watermarks for the lag metric, on a thread of their own: a slow or absent
        // broker must never delay the consumer's ticks.
        let (cfg, stop, stats) = (cfg.clone(), stop.clone(), stats.clone());
        let partitions: Vec<i32> = assignment.iter().map(|(p, _)| *p).collect();
        let _ = std::thread::Builder::new()
            .name(format!("kafka-watermarks-{}", cfg.topic))
            .spawn(move || watch_watermarks(&cfg, &partitions, &stop, &stats));
    }
    let consumer: BaseConsumer = match consumer_config(&cfg).create() {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Fetched::Failed(format!("creating consumer: {e}")));
            return;
        }
    };
    let mut tpl = TopicPartitionList::new();
    for (p, offset) in &assignment {
        tpl.add_partition_offset(&cfg.topic, *p, Offset::Offset(*offset))
            .expect("adding a partition to an assignment");
    }
    if let Err(e) = consumer.assign(&tpl) {
        let _ = tx.send(Fetched::Failed(format!("assigning partitions: {e}")));
        return;
    }
    let tick_ms = cfg.tick_ms.max(1);
    let mut next_tick = next_tick_after(wall_ms(), cfg.idle_margin_ms, tick_ms);
    let send = |item: Fetched| -> bool {
        let mut item = item;
        loop {
            match tx.try_send(item) {
                Ok(()) => return true,
                Err(TrySendError::Full(back)) => {
                    // The graph is behind: wake it and wait (backpressure).
                    let _ = activator.activate();
                    if stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    item = back;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
    };
    let mut alignment = Alignment::new(cfg.max_partition_skew_ms);
    let mut to_resume: Vec<i32> = Vec::new();
    let one = |p: i32| {
        let mut list = TopicPartitionList::new();
        list.add_partition(&cfg.topic, p);
        list
    };
    // Items sent since the operator was last woken; while librdkafka has more at hand we keep
    // draining (poll without waiting) and wake the operator once per burst.
    let mut unannounced = 0usize;
    let mut chunk = BytesMut::new();
    while !stop.load(Ordering::Relaxed) {
        let timeout = if unannounced > 0 {
            Duration::ZERO
        } else {
            // Until the next tick (at least 1 ms: librdkafka waits in whole milliseconds).
            Duration::from_millis(next_tick.saturating_sub(wall_ms()).clamp(1, tick_ms))
        };
        let item = match consumer.poll(timeout) {
            Some(Ok(m)) => {
                let broker_ms = m.timestamp().to_millis().unwrap_or(0);
                let msg = SourceMessage {
                    partition: m.partition(),
                    offset: m.offset(),
                    time: 0,
                    key: m.key().map(|k| copy_into(&mut chunk, k)),
                    payload: m
                        .payload()
                        .map(|p| copy_into(&mut chunk, p))
                        .unwrap_or_default(),
                };
                let p = msg.partition;
                let was_held = alignment.is_held(p);
                let admitted = alignment.admit(msg, broker_ms);
                if !was_held && alignment.is_held(p) {
                    // Before its messages, and before any later tick: see `Fetched::Held`.
                    if !send(Fetched::Held(p)) {
                        return;
                    }
                    // Messages it had fetched ahead are dropped by librdkafka and fetched
                    // again, after the last one returned here, on resume (any that still come
                    // are held behind this one).
                    if let Err(e) = consumer.pause(&one(p)) {
                        // Not paused: it is not held either (its messages go on in order).
                        for (msg, broker_ms) in alignment.unhold(p) {
                            if !send(Fetched::Message(msg, broker_ms)) {
                                return;
                            }
                        }
                        if !send(Fetched::Failed(format!("pausing partition {p}: {e}"))) {
                            return;
                        }
                    }
                }
                admitted.map(|(msg, broker_ms)| Fetched::Message(msg, broker_ms))
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                alignment.at_end(p);
                Some(Fetched::Eof(p))
            }
            Some(Err(e)) => Some(Fetched::Failed(e.to_string())),
            None => None,
        };
        let idle = item.is_none();
        if let Some(item) = item {
            if !send(item) {
                return;
            }
            unannounced += 1;
        }
        let (released, resumed) = alignment.release();
        for (msg, broker_ms) in released {
            if !send(Fetched::Message(msg, broker_ms)) {
                return;
            }
            unannounced += 1;
        }
        to_resume.extend(resumed);
        // A resume that failed is tried again on the next round.
        let mut failed = None;
        to_resume.retain(|&p| match consumer.resume(&one(p)) {
            Ok(()) => false,
            Err(e) => {
                failed = Some(format!("resuming partition {p} (retried): {e}"));
                true
            }
        });
        if let Some(e) = failed {
            if !send(Fetched::Failed(e)) {
                return;
            }
        }
        let now = wall_ms();
        if tick_due(now, next_tick, tick_ms) {
            next_tick = next_tick_after(now, cfg.idle_margin_ms, tick_ms);
            if !send(Fetched::Tick(now)) {
                return;
            }
            unannounced += 1;
        }
        if unannounced > 0 && (idle || unannounced >= 1_024) {
            unannounced = 0;
            if activator.activate().is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(partition: i32, offset: i64) -> SourceMessage {
        SourceMessage {
            partition,
            offset,
            time: 0,
            key: None,
            payload: Bytes::new(),
        }
    }

    #[test]
    fn copies_share_a_chunk_until_one_does_not_fit() {
        let mut chunk = BytesMut::new();
        let a = copy_into(&mut chunk, b"first");
        let b = copy_into(&mut chunk, b"second");
        assert_eq!((&a[..], &b[..]), (&b"first"[..], &b"second"[..]));
        // The second follows the first in one allocation.
        assert_eq!(b.as_ptr(), a.as_ptr().wrapping_add(5));
        let big = vec![7u8; CHUNK_BYTES + 1];
        let c = copy_into(&mut chunk, &big);
        assert_eq!(&c[..], &big[..]);
        let d = copy_into(&mut chunk, b"after");
        assert_eq!(&d[..], b"after");
        assert_ne!(d.as_ptr(), b.as_ptr().wrapping_add(6), "a new chunk");
        drop((a, b, c));
        assert_eq!(&d[..], b"after", "a slice outlives the others of its chunk");
        assert!(copy_into(&mut chunk, b"").is_empty());
        // A chunk filled to the end is let go: the consumer keeps no reference to it.
        let mut chunk = BytesMut::new();
        let whole = copy_into(&mut chunk, &vec![1u8; CHUNK_BYTES]);
        assert_eq!(chunk.capacity(), 0);
        assert!(
            whole.is_unique(),
            "only the message's slice holds its chunk"
        );
    }

    /// `(partition, offset)` of what `alignment` sends.
    fn sent(items: Vec<(SourceMessage, i64)>) -> Vec<(i32, i64)> {
        items.iter().map(|(m, _)| (m.partition, m.offset)).collect()
    }

    #[test]
    fn a_partition_ahead_of_the_slowest_by_more_than_the_skew_is_held_in_order() {
        let mut a = Alignment::new(100);
        let admit = |a: &mut Alignment, p: i32, o: i64, t: i64| a.admit(message(p, o), t).is_some();
        assert!(admit(&mut a, 0, 0, 1_000));
        assert!(admit(&mut a, 1, 0, 1_100), "at the skew: sent");
        assert!(!admit(&mut a, 1, 1, 1_101), "past it: held");
        assert!(a.is_held(1));
        // Behind its own held message, even within the skew: held, in order.
        assert!(!admit(&mut a, 1, 2, 1_050));
        let (out, resumed) = a.release();
        assert!(out.is_empty() && resumed.is_empty());
        // Not released until the slowest partition reaches the first held message.
        assert!(admit(&mut a, 0, 1, 1_100));
        assert!(a.release().0.is_empty());
        assert!(admit(&mut a, 0, 2, 1_101));
        let (out, resumed) = a.release();
        assert_eq!(sent(out), vec![(1, 1), (1, 2)]);
        assert_eq!(resumed, vec![1]);
        assert!(!a.is_held(1));
    }

    #[test]
    fn the_slowest_partition_is_never_held_and_one_at_its_end_holds_none_back() {
        let mut a = Alignment::new(100);
        assert!(a.admit(message(0, 0), 1_000).is_some());
        assert!(a.admit(message(1, 0), 5_000).is_none());
        assert!(a.admit(message(2, 0), 5_050).is_none());
        // Partition 0 is the slowest, whatever its times.
        assert!(a.admit(message(0, 1), 1_000).is_some());
        // At its end, it no longer holds the others back: the slowest is then partition 1.
        a.at_end(0);
        let (out, resumed) = a.release();
        assert_eq!(sent(out), vec![(1, 0)]);
        assert_eq!(resumed, vec![1]);
        // Partition 1 goes on (within the skew) and reaches partition 2's message.
        assert!(a.admit(message(1, 1), 5_050).is_some());
        let (out, resumed) = a.release();
        assert_eq!((sent(out), resumed), (vec![(2, 0)], vec![2]));
        // Partition 0's next message counts again (held: 5,500 is past 5,050 + 100).
        assert!(a.admit(message(0, 2), 5_500).is_none());
    }

    #[test]
    fn a_held_partition_at_its_end_stays_held_and_can_be_given_up_in_order() {
        let mut a = Alignment::new(101);
        assert!(a.admit(message(0, 0), 1_000).is_some());
        assert!(a.admit(message(1, 0), 1_102).is_none());
        assert!(a.admit(message(1, 1), 1_103).is_none());
        // Its end (librdkafka would not report one while it is paused) changes nothing.
        a.at_end(1);
        assert!(a.is_held(1));
        // Released as the slowest reaches each: 1,102, then 1,103.
        assert!(a.admit(message(0, 1), 1_101).is_some());
        assert!(a.release().0.is_empty());
        assert!(a.admit(message(0, 2), 1_102).is_some());
        assert_eq!(sent(a.release().0), vec![(1, 0)]);
        assert!(a.is_held(1));
        // A partition that could not be paused is given up: its messages, in order.
        assert!(a.admit(message(2, 0), 2_000).is_none());
        assert!(a.admit(message(2, 1), 2_001).is_none());
        assert_eq!(
            sent(a.unhold(2).into_iter().collect()),
            vec![(2, 0), (2, 1)]
        );
        assert!(!a.is_held(2));
    }

    #[test]
    fn without_a_skew_nothing_is_held() {
        let mut a = Alignment::new(0);
        assert!(a.admit(message(0, 0), 0).is_some());
        assert!(a.admit(message(1, 0), i64::MAX).is_some());
        assert_eq!(sent(a.release().0), Vec::new());
    }

    #[test]
    fn in_flight_counts_what_the_outputs_can_still_make_durable() {
        let mut f = InFlight::default();
        f.add(10, 3);
        f.add(15, 4);
        f.add(15, 1);
        f.add(20, 7);
        // Nothing durable; the capability at 20: the messages at 10 and 15 count, not those
        // at 20 (they wait for the source itself).
        assert_eq!(f.pending_below(0, 20), 8);
        assert_eq!(f.pending_below(0, 21), 15);
        // Durable below 15: the 3 at 10 are gone for good.
        assert_eq!(f.pending_below(15, 21), 12);
        assert_eq!(f.pending_below(0, 21), 12);
        assert_eq!(f.pending_below(Millis::MAX, Millis::MAX), 0);
    }
    use proptest::prelude::*;

    /// The first run: broker times, with the bound raised (idle partition) before some
    /// messages, so that they are clamped. Returns each message's time.
    fn first_run(broker: &[i64], raises: &[Option<u64>]) -> Vec<Millis> {
        let mut st = PartitionState::new(0, i64::MAX, Vec::new());
        broker
            .iter()
            .zip(raises)
            .enumerate()
            .map(|(i, (&b, raise))| {
                if let Some(r) = raise {
                    st.bound = st.bound.max(*r);
                }
                st.assign(i as i64, b, 5).0
            })
            .collect()
    }

    /// Calls `check(tick, margin, now)` over ticks, margins and 40 ms of wall clock.
    fn each_tick_margin_and_now(check: impl Fn(u64, u64, u64)) {
        for tick in [1u64, 2, 5, 7] {
            for margin in [0u64, 1, 3, 5, 20] {
                (1_000u64..1_040).for_each(|now| check(tick, margin, now));
            }
        }
    }

    #[test]
    fn an_idle_bound_is_the_least_time_a_message_appended_from_now_on_can_have() {
        each_tick_margin_and_now(|tick, margin, now| {
            let bound = idle_bound(now, margin, tick);
            let earliest = now - margin;
            // Sound: no message appended from `now - margin` on gets a lower time.
            for t in earliest..earliest + 3 * tick {
                assert!(ceil_tick(t, tick) >= bound, "{tick} {margin} {now} {t}");
            }
            // Tight: the earliest such message gets exactly the bound.
            assert_eq!(ceil_tick(earliest, tick), bound, "{tick} {margin} {now}");
        });
    }

    #[test]
    fn ticks_come_exactly_when_the_idle_bound_passes_a_time() {
        each_tick_margin_and_now(|tick, margin, now| {
            let next = next_tick_after(now, margin, tick);
            assert!(next > now && next <= now + tick, "{tick} {margin} {now}");
            // The bound moves at `next`, not in between.
            assert!(idle_bound(next, margin, tick) > idle_bound(next - 1, margin, tick));
            for w in now + 1..next {
                assert_eq!(
                    idle_bound(w, margin, tick),
                    idle_bound(w - 1, margin, tick),
                    "{tick} {margin} {now} {w}"
                );
            }
        });
    }

    #[test]
    fn a_clock_that_goes_back_does_not_stop_the_ticks() {
        each_tick_margin_and_now(|tick, margin, now| {
            let next = next_tick_after(now, margin, tick);
            assert!(!tick_due(now, next, tick), "{tick} {margin} {now}");
            assert!(tick_due(next, next, tick));
            // The clock stepped back by a second: due at once, and the next one a tick away.
            let back = now - 1_000 + margin;
            assert!(tick_due(back, next, tick), "{tick} {margin} {now}");
            assert!(!tick_due(back, next_tick_after(back, margin, tick), tick));
        });
    }

    #[test]
    fn the_fetch_size_is_set_only_when_it_is_not_the_default() {
        let mut cfg = SourceConfig::new("b", "t");
        assert_eq!(consumer_config(&cfg).get("fetch.min.bytes"), None);
        assert_eq!(
            consumer_config(&cfg).get("isolation.level"),
            Some("read_committed")
        );
        cfg.fetch_min_bytes = 65_536;
        assert_eq!(consumer_config(&cfg).get("fetch.min.bytes"), Some("65536"));
    }

    #[test]
    fn a_clamped_message_stays_above_the_committed_time_in_the_replay() {
        // First run: message 1 arrives late; the idle bound (100) clamps it from 15 to 100.
        let live = first_run(&[10, 15, 120], &[None, Some(100), None]);
        assert_eq!(live, vec![10, 100, 120]);
        // Committed through 50: positions say the partition continues at offset 1.
        let mut cfg = SourceConfig::new("b", "t");
        cfg.bind(
            50,
            &Positions::from([("t".into(), BTreeMap::from([(0, 1)]))]),
        );
        let mut replay = PartitionState::new(0, i64::MAX, cfg.floors(0));
        let times: Vec<Millis> = [10, 15, 120]
            .iter()
            .enumerate()
            .map(|(i, &b)| replay.assign(i as i64, b, 5).0)
            .collect();
        // Without the binding message 1 would get 15 <= 50 and its output would be lost.
        assert_eq!(times, vec![10, 51, 120]);
    }

    #[test]
    fn a_binding_that_never_saw_a_partition_puts_all_of_it_above_its_time() {
        let mut cfg = SourceConfig::new("b", "t");
        cfg.bind(
            50,
            &Positions::from([("other".into(), BTreeMap::from([(0, 7)]))]),
        );
        cfg.bind(0, &Positions::new()); // nothing committed: no binding
        assert_eq!(cfg.floors(3), vec![(0, 50)]);
        let mut st = PartitionState::new(0, i64::MAX, cfg.floors(3));
        assert_eq!(st.assign(0, 10, 5), (51, false));
    }

    proptest! {
        /// For any first run (any broker times, any idle-bound raises) and any committed time,
        /// the replay with the recorded binding puts exactly the messages the first run had at
        /// or below the committed time at or below it, and every other above it.
        #[test]
        fn the_replay_splits_the_log_where_the_first_run_did(
            steps in proptest::collection::vec((0i64..1_000, proptest::option::of(0u64..1_200)), 1..60),
            cut in 0usize..60,
        ) {
            let broker: Vec<i64> = steps.iter().map(|s| s.0).collect();
            let raises: Vec<Option<u64>> = steps.iter().map(|s| s.1).collect();
            let live = first_run(&broker, &raises);
            let through = live[cut.min(live.len() - 1)];
            let next = live.iter().take_while(|&&t| t <= through).count() as i64;
            let mut cfg = SourceConfig::new("b", "t");
            cfg.bind(through, &Positions::from([("t".into(), BTreeMap::from([(0, next)]))]));
            let mut replay = PartitionState::new(0, i64::MAX, cfg.floors(0));
            for (i, &b) in broker.iter().enumerate() {
                let (t, _) = replay.assign(i as i64, b, 5);
                prop_assert_eq!(t <= through, live[i] <= through, "message {} live {} replay {}", i, live[i], t);
            }
        }
    }
}
