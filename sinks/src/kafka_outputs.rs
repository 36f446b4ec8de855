//! The graph's Kafka outputs, exactly once: decisions and dead letters in Kafka transactions.
//!
//! Storefronts must never see a decision twice, nor one from a replay. Every worker sends its
//! decisions and dead letters to worker 0, where one operator collects them by time. When the
//! frontier has passed a set of times (they are complete), and no transaction is open, it hands
//! them to a producer thread, which in **one Kafka transaction** produces
//!
//! 1. the decisions to `experience-decisions` (key = shopper),
//! 2. the dead letters to `shopper-events-rejected` (key = `partition:offset`),
//! 3. a progress record to the progress topic (`<decisions topic>-progress`, one partition,
//!    compacted): `{"through": t, "positions": {topic: {partition: next offset}}}`,
//!
//! and commits. A consumer reading committed data (`isolation.level=read_committed`, librdkafka's
//! default; Java clients must set it) sees all of a transaction or none of it.
//!
//! **Restart.** [`prepare_outputs`] creates the producer with the cluster's fixed
//! `transactional.id` and calls `init_transactions`, which fences any older instance (a zombie
//! of a killed process can no longer commit) and aborts the transaction a crash left open. Then
//! the last committed progress record says which times are already out (`through`) and how far
//! the sources had read then (`positions`). Outputs at or below `through` are not produced
//! again; the sources reclock their replay by `positions` (see
//! `basketflow_ingest::kafka_source`), so the replay puts exactly the already produced outputs
//! at or below `through`. A crash at any point leaves either a committed transaction (outputs
//! and progress together) or an aborted one (neither).
//!
//! **Producers in turn.** Exactly once uses one transactional producer more than transactions
//! in flight (`transactional_id`, then `~2`, `~3`), transaction `k` on producer `k` modulo
//! their count, all fenced at every start: a transaction begun on the id that has just
//! committed is refused by the broker until that commit's markers are written, and librdkafka
//! retries it only after 20 ms (see [`SPARE_PRODUCERS`]).
//!
//! **Why Kafka transactions.** The broker supports them (Kafka 4, single node, with the
//! transaction log's replication at 1), librdkafka implements them, and they give storefronts
//! the guarantee with a standard consumer setting, where a de-duplicating consumer would push
//! the problem onto every storefront. The cost is one commit round trip per batch of completed
//! times; batches grow while a commit is in flight, so throughput does not suffer.
//!
//! **Durable frontier.** Like the ClickHouse sink, the operator returns a stream without data
//! whose frontier is one past the committed time: sources hold back when it lags, and a drain
//! waits for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use basketflow_kafka::progress::PROGRESS_KEY;
use basketflow_kafka::{
    client_config, fold_positions, read_progress, PositionRecord, Positions, ProgressRecord,
};
use basketflow_vocab::DeadLetter;
use basketflow_vocab::{Decision, Delivery};
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, ToBytes};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::Map;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Concatenate;
use timely::dataflow::Stream;

use crate::durable::Committed;
use crate::durable::{DurableCap, NoData, Waker};

/// Where the Kafka outputs go.
#[derive(Clone, Debug)]
pub struct KafkaOutputs {
    /// Bootstrap servers.
    pub brokers: String,
    /// Decisions topic (storefronts read it).
    pub decisions_topic: String,
    /// Dead-letter topic.
    pub rejected_topic: String,
    /// Progress topic (one partition, compacted).
    pub progress_topic: String,
    /// The cluster's transactional id: the same on every restart, unique per cluster.
    pub transactional_id: String,
    /// The graph's `graph.tick_ms`, recorded with each progress record (a restart with another
    /// tick would reclock the replay differently; `basketflow run` refuses it).
    pub tick_ms: u64,
    /// The graph's `graph.dedup_horizon_ms`, recorded likewise.
    pub dedup_horizon_ms: u64,
    /// The graph's `graph.settlement_ms`, recorded likewise.
    pub settlement_ms: u64,
    /// Exactly once (transactions) or at least once (see [`Delivery`]).
    pub delivery: Delivery,
    /// Exactly once: transactions in flight at once (1 or 2; one producer more than this is
    /// used, see [`SPARE_PRODUCERS`]).
    pub transactions_in_flight: usize,
}

/// Counters of the Kafka outputs.
#[derive(Debug, Default)]
pub struct OutputStats {
    /// Decisions produced (in committed transactions).
    pub decisions: AtomicU64,
    /// Dead letters produced (in committed transactions).
    pub dead_letters: AtomicU64,
    /// Outputs of replayed times, not produced again.
    pub suppressed: AtomicU64,
    /// Transactions committed.
    pub transactions: AtomicU64,
    /// Transactions aborted and retried, and retried commits.
    pub retries: AtomicU64,
    /// The committed time.
    pub committed: AtomicU64,
    /// Set when everything this run will ever produce is committed.
    pub finished: AtomicBool,
    /// Decisions committed, by experience kind.
    pub by_kind: Mutex<BTreeMap<String, u64>>,
    /// From the causing event's broker time to its decision's commit.
    pub latency: LatencyHistogram,
}

/// A latency histogram in milliseconds with fixed buckets, readable from any thread (the
/// Prometheus exposition of `basketflow run` renders it).
#[derive(Debug)]
pub struct LatencyHistogram {
    /// Upper bounds of the buckets, in milliseconds (the last bucket is +Inf, implicit).
    pub bounds_ms: &'static [u64],
    /// Observations per bucket (`bounds_ms.len() + 1` of them: the last is above every bound).
    pub counts: Vec<AtomicU64>,
    /// Sum of all observations, in milliseconds.
    pub sum_ms: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        const BOUNDS: &[u64] = &[
            1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000,
        ];
        LatencyHistogram {
            bounds_ms: BOUNDS,
            counts: (0..=BOUNDS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ms: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe(&self, ms: u64) {
        let i = self.bounds_ms.partition_point(|&b| b < ms);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// One output record, as exchanged to worker 0.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Out {
    /// A decision: key (shopper), JSON, experience kind, logical time, and the wall-clock
    /// time (ms) its worker decided it (for the stage headers, see [`DECIDED_HEADER`]).
    Decision(String, String, String, u64, u64),
    /// A dead letter: key (`partition:offset`) and JSON.
    DeadLetter(String, String),
    /// A source position.
    Position(PositionRecord),
}

/// Kafka header on each decision record: the wall-clock time (ms since the epoch, decimal
/// ASCII) at which its worker decided it, i.e. once every input at its time was complete.
/// With [`HANDED_HEADER`], the record's own append time and the causing event's, a reader
/// can split a decision's latency into its stages (the bench's latency phase does). Not part
/// of the decision: a replay's copy (never produced twice in `exactly_once`) would differ.
pub const DECIDED_HEADER: &str = "basketflow-decided-ms";
/// Kafka header on each decision record: the wall-clock time (ms) its transaction was handed
/// to the producer thread (after waiting for its time to complete at the outputs operator and
/// for the previous transaction to commit).
pub const HANDED_HEADER: &str = "basketflow-handed-ms";

/// What the operator hands to the producer thread.
enum Job {
    /// Exactly once: one transaction (its records and its progress record).
    Txn(Txn),
    /// At least once: records to send now.
    Send(Vec<Out>),
    /// At least once: a progress record (no records of its own), sent once every record
    /// handed before it is acknowledged.
    Progress(Txn),
}

/// One transaction's content (at least once: one progress record's).
struct Txn {
    /// Its number in the order of hand-over (and of commit).
    seq: u64,
    through: u64,
    /// Wall-clock ms when the operator handed it to the producer thread.
    handed_ms: u64,
    records: Vec<Out>,
    positions: Positions,
}

/// Counts the delivery reports of the current transaction, so that a commit is only attempted
/// when every record of it was acknowledged, and a commit that succeeds with a record missing
/// (a client bug; librdkafka had such around epoch bumps) is logged instead of passing silently.
///
/// At least once, each record carries a sequence number, and the ones not acknowledged yet are
/// kept: a progress record is sent only once every record before it was acknowledged.
#[derive(Default)]
pub struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    /// At least once: which records are acknowledged.
    acks: Mutex<Acks>,
    /// At least once: the first delivery error (the process stops on it).
    first_error: Mutex<Option<String>>,
}

impl Deliveries {
    fn acks(&self) -> std::sync::MutexGuard<'_, Acks> {
        self.acks.lock().expect("acknowledgments")
    }

    fn reset(&self) {
        self.delivered.store(0, Ordering::Relaxed);
        self.failed.store(0, Ordering::Relaxed);
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    /// The record's sequence number (at least once; 0 in transactions).
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                if seq > 0 {
                    self.acks().ack(seq);
                }
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().expect("first error");
                first.get_or_insert_with(|| e.to_string());
            }
        };
    }
}

/// At least once: the records sent, numbered from 1, and which of them are acknowledged, so
/// that a progress record goes out only once every record before it is acknowledged, in
/// whatever order the acknowledgments come (partitions are acknowledged independently).
#[derive(Debug, Default)]
struct Acks {
    issued: usize,
    outstanding: std::collections::BTreeSet<usize>,
}

impl Acks {
    /// The next record's number, outstanding until [`Acks::ack`].
    fn issue(&mut self) -> usize {
        self.issued += 1;
        self.outstanding.insert(self.issued);
        self.issued
    }

    /// Record `seq` was acknowledged.
    fn ack(&mut self, seq: usize) {
        self.outstanding.remove(&seq);
    }

    /// Every record numbered below `seq` is acknowledged.
    fn all_below(&self, seq: usize) -> bool {
        self.outstanding.first().is_none_or(|&s| s >= seq)
    }
}

type TxnProducer = ThreadedProducer<Deliveries>;

/// The connected producers of the Kafka outputs: exactly once, one per transaction in flight
/// and [`SPARE_PRODUCERS`] more, taken in turn; at least once, one.
pub struct Producers(Vec<TxnProducer>);

/// The transactional id of producer `i` (the first keeps the configured one).
fn transactional_id(cfg: &KafkaOutputs, i: usize) -> String {
    match i {
        0 => cfg.transactional_id.clone(),
        _ => format!("{}~{}", cfg.transactional_id, i + 1),
    }
}

/// The key of producer `i`'s progress records: one key per producer, so that compaction keeps
/// each one's last and the reader takes the greatest `through` of them.
fn progress_key(i: usize) -> String {
    match i {
        0 => PROGRESS_KEY.to_string(),
        _ => format!("{PROGRESS_KEY}~{}", i + 1),
    }
}

/// The most transactions in flight the outputs allow.
const MAX_TRANSACTIONS_IN_FLIGHT: usize = 2;

/// Exactly once, transactional producers beyond the transactions in flight: transaction `k`
/// goes to producer `k` modulo their count, so a producer never begins a transaction right
/// after committing its own last one.
///
/// Why: the broker answers a commit (EndTxn) once it has logged the decision to commit, and
/// writes the transaction's markers after; until they are written, the next transaction of
/// the same transactional id is refused (`CONCURRENT_TRANSACTIONS`) when it registers its
/// first partition, and librdkafka retries that after a fixed 20 ms. Traced with
/// `LIBRDKAFKA_OUTPUTS_DEBUG=eos` at 1,000 events/s (2026-12-05): 121 of 511 transactions were
/// refused at least once, so a quarter of the decisions waited 20 ms more. With a producer
/// between two uses of an id, a whole transaction of the other id passes first.
const SPARE_PRODUCERS: usize = 1;

fn producer(cfg: &KafkaOutputs, transactional_id: &str) -> Result<TxnProducer, KafkaError> {
    let mut config = client_config(&cfg.brokers);
    // librdkafka's own tracing of this client (e.g. `eos,msg,protocol` to follow a transaction
    // through a broker outage); off unless asked for.
    if let Ok(debug) = std::env::var("LIBRDKAFKA_OUTPUTS_DEBUG") {
        config.set("debug", debug);
    }
    match cfg.delivery {
        Delivery::ExactlyOnce => config
            // Fences older instances and makes the outputs and the progress record atomic.
            .set("transactional.id", transactional_id)
            // A crash leaves a transaction open until a restart fences it or this expires;
            // keep short so storefronts' read_committed consumers never stall long.
            .set("transaction.timeout.ms", "10000"),
        Delivery::AtLeastOnce => config
            // No duplicates from the producer's own retries, order kept per partition.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Retry until delivered (a broker outage delays, never drops): a record that
            // still fails is a permanent error, and the process stops on it.
            .set("message.timeout.ms", "0"),
    };
    config
        // A storefront waits for decisions: send at once (the commit batches anyway).
        .set("linger.ms", "0")
        // Same key -> same partition as Java clients (Kafka's default murmur2).
        .set("partitioner", "murmur2_random")
        .create_with_context(Deliveries::default())
}

/// Connects producer `i` (exactly once: fencing older instances of its transactional id and
/// aborting what a crash left open).
fn connect(cfg: &KafkaOutputs, i: usize) -> Result<TxnProducer, KafkaError> {
    let p = producer(cfg, &transactional_id(cfg, i))?;
    let mut backoff = Duration::from_millis(100);
    // At least once has no transactions to initialize.
    let mut initialized = cfg.delivery == Delivery::AtLeastOnce;
    while !initialized {
        match p.init_transactions(Duration::from_secs(30)) {
            Ok(()) => initialized = true,
            Err(KafkaError::Transaction(e)) if e.is_retriable() => {
                log::warn!(backoff:? = backoff; "kafka outputs: init_transactions failed, retrying: {e}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(p)
}

/// Connects the producers and reads the last committed progress. Call on worker 0 before
/// building the graph.
///
/// Exactly once, every transactional id the outputs may use is fenced, also when this run
/// uses fewer (`transactions_in_flight = 1` after a run with 2 may find the third's
/// transaction open), and the producers beyond `transactions_in_flight` +
/// [`SPARE_PRODUCERS`] are dropped.
pub fn prepare_outputs(cfg: &KafkaOutputs) -> Result<(Producers, Committed), KafkaError> {
    let (fenced, used) = match cfg.delivery {
        Delivery::ExactlyOnce => (
            MAX_TRANSACTIONS_IN_FLIGHT + SPARE_PRODUCERS,
            transactions_in_flight(cfg) + SPARE_PRODUCERS,
        ),
        Delivery::AtLeastOnce => (1, 1),
    };
    let mut producers = (0..fenced)
        .map(|i| connect(cfg, i))
        .collect::<Result<Vec<_>, _>>()?;
    producers.truncate(used);
    let committed = read_progress(&cfg.brokers, &cfg.progress_topic)?;
    Ok((Producers(producers), committed))
}

/// How many transactions (at least once: progress records) may be in flight at once.
fn transactions_in_flight(cfg: &KafkaOutputs) -> usize {
    match cfg.delivery {
        Delivery::ExactlyOnce => cfg
            .transactions_in_flight
            .clamp(1, MAX_TRANSACTIONS_IN_FLIGHT),
        Delivery::AtLeastOnce => 1,
    }
}

/// Exactly once with transactions in flight at once: commits happen in the order the
/// transactions were handed over, so the committed time only grows and a transaction never
/// commits before the one before it.
#[derive(Default)]
struct CommitOrder {
    /// The number of the next transaction to commit.
    next: Mutex<u64>,
    turned: std::sync::Condvar,
}

impl CommitOrder {
    /// Waits at most `limit` until transaction `seq` is next to commit; true if it is.
    fn wait_turn(&self, seq: u64, limit: Duration) -> bool {
        let next = self.next.lock().expect("commit order");
        let (next, _) = self
            .turned
            .wait_timeout_while(next, limit, |next| *next != seq)
            .expect("commit order");
        *next == seq
    }

    /// Transaction `seq` committed: the next may.
    fn committed(&self, seq: u64) {
        *self.next.lock().expect("commit order") = seq + 1;
        self.turned.notify_all();
    }
}

/// Produces `decisions` and `dead_letters` exactly once (see the module docs), recording
/// `positions` (of every source the outputs depend on) with each transaction. On worker 0 pass
/// the producer and committed progress from [`prepare_outputs`]; other workers pass `None`.
///
/// Returns the durable frontier and, on worker 0, the producer thread.
#[allow(clippy::too_many_arguments)]
pub fn kafka_outputs<'scope>(
    decisions: Stream<'scope, u64, Vec<Decision>>,
    dead_letters: Stream<'scope, u64, Vec<DeadLetter>>,
    positions: Stream<'scope, u64, Vec<PositionRecord>>,
    cfg: KafkaOutputs,
    prepared: Option<(Producers, Committed)>,
    idle_commit_interval: Duration,
    worker_index: usize,
    stats: Arc<OutputStats>,
) -> (Stream<'scope, u64, Vec<()>>, Option<JoinHandle<()>>) {
    let scope = decisions.scope();
    let all = scope.concatenate(vec![
        // A held-out shopper's decision, a capped one and one over its campaign's budget are
        // recorded in ClickHouse only: never sent.
        decisions.flat_map(|d| {
            (!d.held_out && !d.capped && !d.over_budget).then(|| {
                let json = serde_json::to_string(&d).expect("a decision serializes");
                let kind = d.experience.kind.as_str().to_string();
                Out::Decision(d.shopper_id, json, kind, d.time, wall_ms())
            })
        }),
        dead_letters.map(|dl| {
            Out::DeadLetter(
                dl.kafka_key(),
                serde_json::to_string(&dl).expect("a dead letter serializes"),
            )
        }),
        positions.map(Out::Position),
    ]);
    let woken = Waker::default();
    // Transactions (at least once: progress records) handed over and not yet committed.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (committed, mut cumulative) = match &prepared {
        Some((_, (t, p))) => (*t, p.clone()),
        None => (0, Positions::new()),
    };
    stats.committed.store(committed, Ordering::Relaxed);
    let at_least_once = cfg.delivery == Delivery::AtLeastOnce;
    let producers = prepared.as_ref().map_or(1, |(p, _)| p.0.len());
    let in_flight_limit = transactions_in_flight(&cfg);
    let (senders, writer) = match prepared {
        Some((Producers(ps), _)) => {
            let (senders, receivers): (Vec<_>, Vec<_>) =
                ps.iter().map(|_| channel::<Job>()).unzip();
            let (stats, woken, in_flight, cfg) =
                (stats.clone(), woken.clone(), in_flight.clone(), cfg.clone());
            let writer = std::thread::Builder::new()
                .name("kafka-outputs".into())
                .spawn(move || write_outputs(cfg, ps, receivers, stats, woken, in_flight))
                .expect("spawning the Kafka outputs thread");
            (senders, Some(writer))
        }
        None => (Vec::new(), None),
    };
    let mut tx = (worker_index == 0).then_some(senders);
    // The number of the next transaction handed over (its producer: this modulo the count).
    let mut next_seq = 0u64;
    let mut pending: BTreeMap<u64, Vec<Out>> = BTreeMap::new();
    let mut handed = committed;
    let mut last_commit = Instant::now();
    // At least once: the times of records sent and not yet covered by a progress record
    // handed over (one covering any of them is due).
    let mut sent_times: std::collections::BTreeSet<u64> = Default::default();
    let durable = all.unary_frontier(
        Exchange::new(|_: &Out| 0u64),
        "KafkaOutputs",
        move |cap, info| {
            woken.arm(scope.worker().sync_activator_for(info.address.to_vec()));
            let activator = scope.worker().activator_for(info.address.clone());
            let mut cap = DurableCap::new(cap, worker_index == 0, committed);
            move |(input, frontier), _output: &mut NoData<'_>| {
                input.for_each(|time, data| {
                    let t = *time.least().expect("an input batch has a time");
                    if t <= committed {
                        // A replay of what is already out: keep only the positions.
                        let n = data
                            .iter()
                            .filter(|o| !matches!(o, Out::Position(_)))
                            .count();
                        stats.suppressed.fetch_add(n as u64, Ordering::Relaxed);
                        return;
                    }
                    if at_least_once {
                        // Each record goes out as soon as it is made (decisions are final
                        // when made); the positions wait for their time to complete.
                        let (positions, records): (Vec<Out>, Vec<Out>) =
                            data.drain(..).partition(|o| matches!(o, Out::Position(_)));
                        pending.entry(t).or_default().extend(positions);
                        let sender = tx.as_ref().and_then(|s| s.first());
                        if let (false, Some(sender)) = (records.is_empty(), sender) {
                            sent_times.insert(t);
                            let _ = sender.send(Job::Send(records));
                        }
                        return;
                    }
                    pending.entry(t).or_default().append(data);
                });
                cap.follow(&stats.committed, &stats.finished);
                let Some(senders) = tx.as_ref() else { return };
                let frontier = frontier.frontier();
                if in_flight.load(Ordering::Acquire) >= in_flight_limit {
                    return; // a producer thread wakes us when a commit is done
                }
                let through = match frontier.first() {
                    Some(&f) => f.saturating_sub(1),
                    None => pending
                        .keys()
                        .next_back()
                        .copied()
                        .unwrap_or(handed)
                        .max(sent_times.last().copied().unwrap_or(handed)),
                };
                // Commit when there is output, or (progress only, so that the durable frontier
                // moves and sources are not held back) when the interval is over.
                let has_output = if at_least_once {
                    // Records sent at times this progress record would cover.
                    sent_times.first().is_some_and(|&t| t <= through)
                } else {
                    pending.keys().next().is_some_and(|&t| t <= through)
                };
                let due = last_commit.elapsed() >= idle_commit_interval || frontier.is_empty();
                if through > handed && !has_output && !due {
                    activator
                        .activate_after(idle_commit_interval.saturating_sub(last_commit.elapsed()));
                }
                if through > handed && (has_output || due) {
                    last_commit = Instant::now();
                    let later = pending.split_off(&(through + 1));
                    let ready = std::mem::replace(&mut pending, later);
                    let mut records = Vec::new();
                    let mut seen = Vec::new();
                    for (_, outs) in ready {
                        for o in outs {
                            match o {
                                Out::Position(p) => seen.push(p),
                                o => records.push(o),
                            }
                        }
                    }
                    fold_positions(&mut cumulative, &seen);
                    handed = through;
                    sent_times = sent_times.split_off(&(through + 1));
                    in_flight.fetch_add(1, Ordering::AcqRel);
                    let txn = Txn {
                        seq: next_seq,
                        through,
                        handed_ms: wall_ms(),
                        records,
                        positions: cumulative.clone(),
                    };
                    let sender = &senders[(next_seq % producers as u64) as usize];
                    next_seq += 1;
                    let _ = sender.send(if at_least_once {
                        Job::Progress(txn)
                    } else {
                        Job::Txn(txn)
                    });
                }
                if frontier.is_empty() && pending.is_empty() {
                    tx = None; // the thread finishes after the last transaction
                }
            }
        },
    );
    (durable, writer)
}

/// Runs one thread per producer (exactly once: `produce_loop`; at least once: `send_loop`)
/// and, once all have finished, marks the outputs finished.
fn write_outputs(
    cfg: KafkaOutputs,
    producers: Vec<TxnProducer>,
    receivers: Vec<Receiver<Job>>,
    stats: Arc<OutputStats>,
    woken: Waker,
    in_flight: Arc<AtomicUsize>,
) {
    let order = Arc::new(CommitOrder::default());
    let threads: Vec<JoinHandle<()>> = producers
        .into_iter()
        .zip(receivers)
        .enumerate()
        .map(|(i, (producer, rx))| {
            let (cfg, stats, woken, in_flight, order) = (
                cfg.clone(),
                stats.clone(),
                woken.clone(),
                in_flight.clone(),
                order.clone(),
            );
            std::thread::Builder::new()
                .name(format!("kafka-outputs-{i}"))
                .spawn(move || match cfg.delivery {
                    Delivery::ExactlyOnce => {
                        produce_loop(cfg, i, producer, rx, stats, woken, in_flight, order)
                    }
                    Delivery::AtLeastOnce => send_loop(cfg, producer, rx, stats, woken, in_flight),
                })
                .expect("spawning a Kafka outputs thread")
        })
        .collect();
    for t in threads {
        // A panic there stops the process (its hook); nothing to add here.
        let _ = t.join();
    }
    stats.finished.store(true, Ordering::Relaxed);
    woken.wake();
}

/// Exactly once, producer `index`: each transaction it is handed, committed in turn
/// ([`CommitOrder`]): its records are produced while the one before it (on the other
/// producer) commits.
#[allow(clippy::too_many_arguments)]
fn produce_loop(
    cfg: KafkaOutputs,
    index: usize,
    mut producer: TxnProducer,
    rx: Receiver<Job>,
    stats: Arc<OutputStats>,
    woken: Waker,
    in_flight: Arc<AtomicUsize>,
    order: Arc<CommitOrder>,
) {
    let wake = || woken.wake();
    let key = progress_key(index);
    while let Ok(job) = rx.recv() {
        let Job::Txn(txn) = job else {
            unreachable!("exactly once: the operator hands transactions only")
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            // A transaction waiting for its predecessor (retried after a failure) is open at
            // the broker, which aborts it after transaction.timeout.ms (10 s): past
            // TURN_LIMIT it is aborted here and begun again, like any failed one.
            let turn = || match order.wait_turn(txn.seq, TURN_LIMIT) {
                true => Ok(()),
                false => Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)),
            };
            match transact(&cfg, &producer, &txn, &key, &turn) {
                Ok((decisions, dead_letters)) => {
                    let now = wall_ms();
                    let mut by_kind = stats.by_kind.lock().expect("by-kind counts");
                    for o in &txn.records {
                        if let Out::Decision(_, _, kind, time, _) = o {
                            *by_kind.entry(kind.clone()).or_default() += 1;
                            stats.latency.observe(now.saturating_sub(*time));
                        }
                    }
                    drop(by_kind);
                    stats.decisions.fetch_add(decisions, Ordering::Relaxed);
                    stats
                        .dead_letters
                        .fetch_add(dead_letters, Ordering::Relaxed);
                    stats.transactions.fetch_add(1, Ordering::Relaxed);
                    // Before the next may commit: the committed time only grows.
                    stats.committed.fetch_max(txn.through, Ordering::Relaxed);
                    order.committed(txn.seq);
                    break;
                }
                Err(e) => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    let fenced = matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::ProducerFenced
                                | RDKafkaErrorCode::InvalidProducerEpoch
                        )
                    );
                    if fenced {
                        panic!(
                            "kafka outputs: transactional id {:?} was taken over by another instance: is a second cluster running with this configuration?",
                            transactional_id(&cfg, index)
                        );
                    }
                    log::warn!(through = txn.through, backoff:? = backoff; "kafka outputs: transaction failed, aborting it and retrying: {e}");
                    let fatal = matches!(&e, KafkaError::Transaction(t) if t.is_fatal());
                    if fatal || !abort(&producer) {
                        // The client is unusable (a fatal error, e.g. after a long broker
                        // outage, or an abort that cannot complete): start a new one, whose
                        // init_transactions aborts whatever the old one left open.
                        match connect(&cfg, index) {
                            Ok(p) => producer = p,
                            Err(e) => log::warn!("kafka outputs: reconnecting failed: {e}"),
                        }
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        in_flight.fetch_sub(1, Ordering::AcqRel);
        wake();
    }
}

/// At least once: sends each record as it is handed over, and each progress record once
/// every record handed before it is acknowledged (the idempotent producer keeps each
/// partition's order and retries until delivered); the progress record's acknowledgment makes
/// its time committed. A record that fails for good (the producer retries forever, so only a
/// permanent error does) stops the process: the restart sends again what followed the last
/// progress record.
fn send_loop(
    cfg: KafkaOutputs,
    producer: TxnProducer,
    rx: Receiver<Job>,
    stats: Arc<OutputStats>,
    woken: Waker,
    in_flight: Arc<AtomicUsize>,
) {
    use std::collections::VecDeque;
    use std::sync::mpsc::RecvTimeoutError;
    let deliveries = producer.context();
    // Progress records waiting for the records before them: (progress, its number to be).
    let mut waiting: VecDeque<(Txn, usize)> = VecDeque::new();
    // The progress record sent and not acknowledged yet, and its number.
    let mut sent: Option<(Txn, usize)> = None;
    // Records sent and not yet covered by an acknowledged progress record: (number, the
    // decision's kind and time; None for a dead letter).
    let mut uncounted: VecDeque<(usize, Option<(String, u64)>)> = VecDeque::new();
    let mut open = true;
    while open || !waiting.is_empty() || sent.is_some() {
        // Blocks while nothing waits for acknowledgments; otherwise looks at them every
        // millisecond (they only move the committed time: records go out as they come).
        let job = if waiting.is_empty() && sent.is_none() {
            let job = rx.recv().ok();
            open = job.is_some();
            job
        } else {
            match rx.recv_timeout(Duration::from_millis(1)) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    // The operator is done; the last acknowledgments are still to come.
                    open = false;
                    std::thread::sleep(Duration::from_millis(1));
                    None
                }
            }
        };
        match job {
            Some(Job::Send(records)) => {
                let handed_ms = wall_ms();
                for o in &records {
                    if matches!(o, Out::Position(_)) {
                        continue;
                    }
                    let seq = deliveries.acks().issue();
                    if let Err(e) = send_out(&producer, &cfg, o, handed_ms, seq) {
                        panic!("kafka outputs (at least once): cannot send a record: {e}");
                    }
                    let decision = match o {
                        Out::Decision(_, _, kind, time, _) => Some((kind.clone(), *time)),
                        _ => None,
                    };
                    uncounted.push_back((seq, decision));
                }
            }
            Some(Job::Progress(txn)) => {
                let next = deliveries.acks().issued + 1;
                waiting.push_back((txn, next));
            }
            Some(Job::Txn(_)) => unreachable!("at least once: the operator hands no transactions"),
            None => {}
        }
        check_delivered(deliveries);
        if let Some((txn, seq)) = sent.take() {
            if deliveries.acks().all_below(seq + 1) {
                count_committed(&stats, &mut uncounted, seq);
                stats.transactions.fetch_add(1, Ordering::Relaxed);
                stats.committed.store(txn.through, Ordering::Relaxed);
                in_flight.fetch_sub(1, Ordering::AcqRel);
                woken.wake();
            } else {
                sent = Some((txn, seq));
            }
        }
        let ready = waiting
            .front()
            .is_some_and(|&(_, seq)| deliveries.acks().all_below(seq));
        if sent.is_none() && ready {
            let (txn, _) = waiting.pop_front().expect("a front");
            let seq = deliveries.acks().issue();
            if let Err(e) = send_progress(&producer, &cfg, &txn, PROGRESS_KEY, seq) {
                panic!("kafka outputs (at least once): cannot send a progress record: {e}");
            }
            sent = Some((txn, seq));
        }
    }
    // Records after the last progress record (a drain cut short) are sent again by the
    // restart; deliver what can be, so that fewer are.
    let _ = producer.flush(Duration::from_secs(5));
    check_delivered(deliveries);
}

/// At least once: stops the process on a record that failed for good (the producer retries
/// until delivered, so only a permanent error fails one); the restart sends it again.
fn check_delivered(deliveries: &Deliveries) {
    if let Some(e) = deliveries.first_error.lock().expect("first error").as_ref() {
        panic!("kafka outputs (at least once): a record was not delivered: {e}");
    }
}

/// At least once: counts the decisions and dead letters numbered below `progress` (whose
/// acknowledgment covers them). A decision's latency is taken then: from its event's broker
/// time to its progress record's acknowledgment (its own came at most that late).
fn count_committed(
    stats: &OutputStats,
    uncounted: &mut std::collections::VecDeque<(usize, Option<(String, u64)>)>,
    progress: usize,
) {
    let now = wall_ms();
    let mut by_kind = stats.by_kind.lock().expect("by-kind counts");
    while uncounted.front().is_some_and(|(seq, _)| *seq < progress) {
        match uncounted.pop_front().expect("a front").1 {
            Some((kind, time)) => {
                *by_kind.entry(kind).or_default() += 1;
                stats.decisions.fetch_add(1, Ordering::Relaxed);
                stats.latency.observe(now.saturating_sub(time));
            }
            None => {
                stats.dead_letters.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Aborts the open transaction, retrying what librdkafka says may be retried; false if it
/// cannot be aborted (the producer must then be replaced).
fn abort(producer: &TxnProducer) -> bool {
    for _ in 0..TXN_CALL_ATTEMPTS {
        match producer.abort_transaction(TXN_CALL_TIMEOUT) {
            Ok(()) => return true,
            Err(KafkaError::Transaction(e)) if e.is_retriable() => {
                log::warn!("kafka outputs: abort failed, retrying: {e}");
            }
            Err(e) => {
                log::warn!("kafka outputs: abort failed: {e}");
                return false;
            }
        }
    }
    false
}

/// How long a transaction waits for its predecessor's commit before it is aborted and begun
/// again (below the 10 s transaction timeout, at which the broker would abort it).
const TURN_LIMIT: Duration = Duration::from_secs(5);

/// How long one librdkafka transaction call may take, and how many times a retriable one is
/// repeated before the producer is replaced.
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);
const TXN_CALL_ATTEMPTS: usize = 4;

/// One transaction: every record, the progress record, commit. Returns how many decisions and
/// dead letters it produced.
///
/// The commit is only attempted once every record was acknowledged (a failed delivery aborts
/// and retries the whole transaction), and a commit that fails with a retriable error (its
/// outcome unknown, e.g. a timeout) is repeated, as librdkafka prescribes: aborting then could
/// abort a transaction the broker is completing.
fn transact(
    cfg: &KafkaOutputs,
    producer: &TxnProducer,
    txn: &Txn,
    progress_key: &str,
    before_commit: &dyn Fn() -> Result<(), KafkaError>,
) -> Result<(u64, u64), KafkaError> {
    producer.context().reset();
    producer.begin_transaction()?;
    let (mut decisions, mut dead_letters) = (0, 0);
    for o in &txn.records {
        match send_out(producer, cfg, o, txn.handed_ms, 0)? {
            Some(true) => decisions += 1,
            Some(false) => dead_letters += 1,
            None => {}
        }
    }
    send_progress(producer, cfg, txn, progress_key, 0)?;
    let sent = decisions + dead_letters + 1;
    // rdkafka's `commit_transaction` first flushes, and its flush polls for events in steps of
    // up to 100 ms; the producer's own thread takes the delivery reports, so that poll always
    // ran out: every commit took 100 ms and that was the floor of the decision latency. Wait
    // for the deliveries here (librdkafka's queue drains in a millisecond or two), so that its
    // flush finds nothing outstanding and returns at once.
    let deadline = Instant::now() + TXN_CALL_TIMEOUT;
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
    let deliveries = producer.context();
    let failed = deliveries.failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(KafkaError::Flush(RDKafkaErrorCode::MessageTimedOut)).inspect_err(|_| {
            log::warn!(failed, sent; "kafka outputs: records of the transaction were not delivered");
        });
    }
    before_commit()?;
    let mut attempt = 1;
    loop {
        match producer.commit_transaction(TXN_CALL_TIMEOUT) {
            Ok(()) => break,
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < TXN_CALL_ATTEMPTS => {
                log::warn!(through = txn.through, attempt; "kafka outputs: commit's outcome unknown, committing again: {e}");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
    let delivered = deliveries.delivered.load(Ordering::Relaxed);
    if delivered != sent {
        log::error!(through = txn.through, sent, delivered; "kafka outputs: a transaction committed without every record acknowledged");
    }
    Ok((decisions, dead_letters))
}

/// Sends one output record with sequence number `seq` (0 in a transaction): a decision (with
/// its stage headers, `handed_ms` the hand-over's time) gives `Some(true)`, a dead letter
/// `Some(false)`, a position sends nothing.
fn send_out(
    producer: &TxnProducer,
    cfg: &KafkaOutputs,
    o: &Out,
    handed_ms: u64,
    seq: usize,
) -> Result<Option<bool>, KafkaError> {
    match o {
        Out::Decision(k, v, _, _, decided_ms) => {
            let (decided, handed) = (decided_ms.to_string(), handed_ms.to_string());
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header {
                    key: DECIDED_HEADER,
                    value: Some(&decided),
                })
                .insert(Header {
                    key: HANDED_HEADER,
                    value: Some(&handed),
                });
            let record = BaseRecord::with_opaque_to(&cfg.decisions_topic, seq)
                .key(k)
                .payload(v)
                .headers(headers);
            send(producer, record).map(|()| Some(true))
        }
        Out::DeadLetter(k, v) => {
            let record = BaseRecord::with_opaque_to(&cfg.rejected_topic, seq)
                .key(k)
                .payload(v);
            send(producer, record).map(|()| Some(false))
        }
        Out::Position(_) => Ok(None),
    }
}

/// Sends the progress record of `txn` (through, positions, settings) under `key` with sequence
/// `seq`.
fn send_progress(
    producer: &TxnProducer,
    cfg: &KafkaOutputs,
    txn: &Txn,
    key: &str,
    seq: usize,
) -> Result<(), KafkaError> {
    let progress = serde_json::to_string(&ProgressRecord {
        through: txn.through,
        positions: txn.positions.clone(),
        tick_ms: Some(cfg.tick_ms),
        dedup_horizon_ms: Some(cfg.dedup_horizon_ms),
        settlement_ms: Some(cfg.settlement_ms),
    })
    .expect("progress serializes");
    send(
        producer,
        BaseRecord::with_opaque_to(&cfg.progress_topic, seq)
            .key(key)
            .payload(&progress)
            .partition(0),
    )
}

fn send<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
    producer: &TxnProducer,
    mut record: BaseRecord<'_, K, P, usize>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_record_waits_for_every_record_before_it_in_any_order_of_acks() {
        let mut acks = Acks::default();
        let (a, b, c) = (acks.issue(), acks.issue(), acks.issue());
        assert_eq!((a, b, c), (1, 2, 3));
        // A progress record handed now would be number 4: it needs 1, 2 and 3.
        assert!(!acks.all_below(4));
        acks.ack(3);
        acks.ack(1);
        assert!(!acks.all_below(4), "2 is not acknowledged");
        assert!(acks.all_below(2), "1 is");
        let d = acks.issue();
        acks.ack(d);
        assert!(
            !acks.all_below(4),
            "a later record's ack does not stand in for 2"
        );
        acks.ack(2);
        assert!(acks.all_below(5));
        assert!(Acks::default().all_below(1));
    }

    #[test]
    fn a_transaction_commits_only_after_the_one_before_it() {
        let order = Arc::new(CommitOrder::default());
        let (done, finished) = std::sync::mpsc::channel();
        let second = {
            let order = order.clone();
            std::thread::spawn(move || {
                assert!(order.wait_turn(1, Duration::from_secs(30)));
                done.send(()).unwrap();
            })
        };
        // Transaction 1 waits while transaction 0 has not committed.
        assert!(finished.recv_timeout(Duration::from_millis(200)).is_err());
        order.committed(0);
        finished.recv_timeout(Duration::from_secs(5)).unwrap();
        second.join().unwrap();
        // Its own turn comes at once; another's does not come within the limit.
        assert!(order.wait_turn(1, Duration::ZERO));
        assert!(!order.wait_turn(2, Duration::from_millis(50)));
    }

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        let h = LatencyHistogram::default();
        for ms in [0, 1, 2, 3, 10, 11, 10_000, 10_001] {
            h.observe(ms);
        }
        let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        // <=1: 0 and 1; <=2: 2; <=5: 3; <=10: 10; <=25: 11; <=10000: 10000; +Inf: 10001.
        assert_eq!(counts, vec![2, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(h.sum_ms.load(Ordering::Relaxed), 20_028);
    }
}
