//! Checkpoints in Kafka: each process's writer thread puts its workers' parts into a
//! compacted topic and indexes them in a second, small one; a start reads the index and then
//! only the chunks of the checkpoint it uses.
//!
//! # Records
//!
//! In the chunks topic (`kafka.checkpoints_topic`, one partition, compacted):
//! - `c/<at>/<operator>/<worker>/<i>`: chunk `i` of one operator's part on one worker at
//!   checkpoint time `at` (at most [`CHUNK_BYTES`] each, under the broker's message limit).
//!
//! In the manifests topic (the same name with [`MANIFESTS_SUFFIX`], one partition,
//! compacted):
//! - `p/<at>/<first worker>`: one process's plan at `at`, written before its chunks: the parts
//!   it is about to write (chunk counts, lengths, CRC-32), so that chunks a SIGKILL left
//!   without a manifest are still known, and tombstoned.
//! - `m/<at>/<first worker>`: one process's manifest at `at`, written after every chunk it
//!   lists was acknowledged: per part, its chunk count, length, CRC-32 and each chunk's offset
//!   in the chunks topic; the checkpoint format, the graph's settings (`tick_ms`, horizons)
//!   and the routing fingerprint.
//!
//! A part of changes (see `basketflow_operators::checkpoint`, "Incremental parts") names its
//! base, the time of the same operator's part on the same worker that it follows; a writer
//! that does not write a time (it fell behind, or the write failed) folds its parts into the
//! next ones ([`Part::follow`]), so every base a manifest names was written.
//!
//! A checkpoint is complete when the manifests at `at` list a part of every operator from
//! every worker `0..peers`, with the same settings, every base of a part is listed by a
//! manifest at its time (recursively, down to a whole part), and every chunk is at its offset
//! with its key, length and digest. A SIGKILL while a process writes leaves chunks without a manifest:
//! that checkpoint does not exist, the previous one does. Each writer keeps the last
//! [`KEEP`] checkpoints it knows of, and the latest one below the durable outputs' frontier
//! (the one a start would use now: while the outputs lag more than `KEEP` intervals, as in a
//! catch-up or a ClickHouse outage, the newest ones are all past it), with every time their
//! parts' chains reach back to, and tombstones the others (their chunks, plans and
//! manifests) ([`to_tombstone`]). An erasure makes every incremental operator's next part
//! whole (an operator upstream of the erasure may write one part of changes first), so an
//! erased shopper's state leaves the topic within `KEEP + 1` intervals after the outputs are
//! durable past the erasure, plus compaction.
//!
//! # Which checkpoint a start uses
//!
//! The latest complete one at or before the committed time of *both* durable outputs (a
//! checkpoint past what is committed would skip outputs that were never written), whose
//! format and settings equal this run's. Others are skipped with a log line that says why;
//! without one, the run replays the whole log (as it did before checkpoints). The chosen
//! time is part of the processes' agreement check, so a cluster never starts from two. A
//! start reads the manifests topic whole (a few KiB per checkpoint) and then, for the
//! checkpoint it tries, the chunks of its parts' chains only (each run of consecutive
//! offsets in one read): what it reads grows with the state, not with the checkpoints the
//! topic still holds.
//!
//! # Positions
//!
//! [`checkpoint_positions`] is the checkpointed operator that folds the sources' position
//! records: its part at `at` says where each source partition continues after the messages
//! at times `<= at`. A restart starts each source there and binds its times above `at`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basketflow_kafka::{fold_positions, read_to_end, PositionRecord, Positions};
use basketflow_operators::checkpoint::{
    routing_fingerprint, Checkpointer, Checkpointing, Part, Restore, Sharded,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

/// The part name of [`checkpoint_positions`].
pub const POSITIONS: &str = "SourcePositions";

/// The checkpoint format: bump it whenever an operator's state changes shape (a checkpoint of
/// another format is not used: the run replays the log instead).
/// Format 2 put the manifests (with the chunks' offsets) in a topic of their own; format 3
/// keeps the tree state's event ids as digests with their read times (the horizon); format 4
/// keeps the ended orders as digests; format 5 adds the tree state's frequency-cap counters and
/// the campaigns' budgets (`CampaignBudgets`); format 6 keeps rule 1's windows under a digest
/// of the id and the id's routing hash (`Deduplicate`); format 7 writes every operator but the
/// campaign budgets and the positions as incremental parts (records of the whole state or of
/// changes, with a base).
pub const FORMAT: u32 = 7;

/// The manifests topic's name: the chunks topic's with this suffix.
pub const MANIFESTS_SUFFIX: &str = "-manifests";

/// The manifests topic of the chunks topic `topic`.
pub fn manifests_topic(topic: &str) -> String {
    format!("{topic}{MANIFESTS_SUFFIX}")
}

/// The largest chunk value written.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// How many checkpoints a writer keeps in the topic.
pub const KEEP: usize = 3;

/// What a checkpoint must have been written with to be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSettings {
    /// [`FORMAT`].
    pub format: u32,
    /// `graph.tick_ms`.
    pub tick_ms: u64,
    /// `graph.dedup_horizon_ms`.
    pub dedup_horizon_ms: u64,
    /// `graph.settlement_ms`.
    pub settlement_ms: u64,
}

/// One part as a plan or a manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PartEntry {
    operator: String,
    worker: usize,
    chunks: usize,
    len: usize,
    crc: u32,
    /// Each chunk's offset in the chunks topic (empty in a plan).
    offsets: Vec<i64>,
    /// The time of the part this one holds the changes since (`None`: the whole state).
    #[serde(default)]
    base: Option<u64>,
}

/// One process's manifest at one checkpoint time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    at: u64,
    peers: usize,
    fingerprint: u64,
    settings: CheckpointSettings,
    parts: Vec<PartEntry>,
}

fn chunk_key(at: u64, operator: &str, worker: usize, i: usize) -> String {
    format!("c/{at:020}/{operator}/{worker:05}/{i:06}")
}

fn manifest_key(at: u64, first_worker: usize) -> String {
    format!("m/{at:020}/{first_worker:05}")
}

fn plan_key(at: u64, first_worker: usize) -> String {
    format!("p/{at:020}/{first_worker:05}")
}

/// The records of one checkpoint time, by topic (what tombstoning it removes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Chunk keys, in the chunks topic.
    pub chunks: Vec<String>,
    /// Plan and manifest keys, in the manifests topic.
    pub manifests: Vec<String>,
    /// The times its parts of changes follow (their bases): kept as long as it is.
    pub bases: BTreeSet<u64>,
}

/// A producer context that records the offset of every record delivered, by key, and counts
/// the records that failed.
#[derive(Default)]
struct Delivered(
    std::sync::Mutex<std::collections::HashMap<String, i64>>,
    AtomicU64,
);

impl rdkafka::ClientContext for Delivered {}

impl rdkafka::producer::ProducerContext for Delivered {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                    self.0
                        .lock()
                        .expect("the delivered offsets")
                        .insert(key.to_owned(), m.offset());
                }
            }
            Err(_) => {
                self.1.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

type ChunkProducer = BaseProducer<Delivered>;

/// How long [`flush`] sleeps when no delivery report was ready.
const FLUSH_STEP: Duration = Duration::from_micros(500);

/// The checkpoint time in a record key.
fn at_of(key: &str) -> Option<u64> {
    key.get(2..22)?.parse().ok()
}

/// Counters of the checkpoint writer.
#[derive(Debug, Default)]
pub struct CheckpointStats {
    /// Checkpoints this process wrote completely (its manifest acknowledged).
    pub written: AtomicU64,
    /// The time of the latest one.
    pub latest_at: AtomicU64,
    /// Bytes of parts in the latest one (for incremental operators, often only their changes).
    pub latest_bytes: AtomicU64,
    /// Bytes of the state the latest one stands for: per operator and worker, its latest part
    /// of the whole state (a gauge of the state's size, up to `checkpoint_full_every`
    /// intervals old for incremental operators).
    pub state_bytes: AtomicU64,
    /// Milliseconds the latest one took to write (chunks and manifest acknowledged).
    pub latest_write_ms: AtomicU64,
    /// Checkpoints that failed to write (the next one tries again).
    pub failed: AtomicU64,
    /// The frontier of the durable outputs (both committed below it), set by the workers:
    /// the writer keeps the latest checkpoint below it.
    pub durable_frontier: AtomicU64,
}

/// Which of the checkpoints `kept` (their times, each with its parts' bases) to tombstone
/// once a new one is written: all but the [`KEEP`] newest and the newest below
/// `durable_frontier` (the one a start would use now), and the times their chains of bases
/// reach back to.
pub fn to_tombstone(kept: &BTreeMap<u64, BTreeSet<u64>>, durable_frontier: u64) -> Vec<u64> {
    let usable = kept.range(..durable_frontier).next_back().map(|(t, _)| *t);
    let mut keep: BTreeSet<u64> = kept.keys().rev().take(KEEP).copied().collect();
    keep.extend(usable);
    let mut reach: Vec<u64> = keep.iter().copied().collect();
    while let Some(t) = reach.pop() {
        for base in kept.get(&t).into_iter().flatten() {
            if keep.insert(*base) {
                reach.push(*base);
            }
        }
    }
    kept.keys().filter(|t| !keep.contains(t)).copied().collect()
}

/// Where a process's writer puts its parts, and what it expects.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The chunks topic (its manifests topic: [`manifests_topic`]).
    pub topic: String,
    /// This run's settings, written into each manifest.
    pub settings: CheckpointSettings,
    /// Every checkpointed operator's part name (the graph's and [`POSITIONS`]).
    pub operators: Vec<&'static str>,
    /// This process's workers.
    pub workers: Vec<usize>,
    /// The cluster's workers.
    pub peers: usize,
    /// Checkpoint records already in the topic at start (by time): tombstoned like this
    /// run's once [`KEEP`] newer ones are written.
    pub existing: BTreeMap<u64, Written>,
}

/// Runs a process's writer: takes parts from `parts` until every sender is gone, writes each
/// time for which every local worker's every operator sent its part, and tombstones old
/// checkpoints. Failures are logged and counted; the next checkpoint tries again.
pub fn write_checkpoints(config: WriterConfig, parts: Receiver<Part>, stats: Arc<CheckpointStats>) {
    let producer: Option<ChunkProducer> = basketflow_kafka::client_config(&config.brokers)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", (CHUNK_BYTES + 64 * 1024).to_string())
        .set("linger.ms", "5")
        // Parts compress several times (ids, names and keys repeat): the broker writes and
        // a restore reads that much less.
        .set("compression.type", "lz4")
        .create_with_context(Delivered::default())
        .map_err(|e| log::error!("checkpoints: cannot create the producer: {e}; no checkpoints"))
        .ok();
    let expected = config.operators.len() * config.workers.len();
    let mut pending: BTreeMap<u64, Vec<Part>> = BTreeMap::new();
    let mut kept: BTreeMap<u64, Written> = config.existing.clone();
    let mut last_written = 0u64;
    // Per operator and worker, the size of its latest whole part written.
    let mut whole: BTreeMap<(&'static str, usize), usize> = BTreeMap::new();
    while let Ok(first) = parts.recv() {
        // Everything already queued too: a writer that fell behind writes only the latest
        // complete time (a shutdown then writes one checkpoint, not a backlog).
        for part in std::iter::once(first).chain(parts.try_iter()) {
            if part.at > last_written {
                pending.entry(part.at).or_default().push(part);
            }
        }
        let Some(at) = pending
            .iter()
            .rev()
            .find(|(_, group)| group.len() >= expected)
            .map(|(at, _)| *at)
        else {
            continue;
        };
        // Older times, complete or not, are superseded by this one: their parts are folded
        // into their operators' next ones (a part of changes follows them).
        let mut group = pending.remove(&at).expect("the group is pending");
        let older: Vec<u64> = pending.range(..at).map(|(t, _)| *t).collect();
        let mut carried: BTreeMap<(&'static str, usize), Part> = BTreeMap::new();
        for t in older {
            for mut part in pending.remove(&t).expect("an older time is pending") {
                if let Some(previous) = carried.remove(&(part.operator, part.worker)) {
                    part.follow(previous);
                }
                carried.insert((part.operator, part.worker), part);
            }
        }
        for part in &mut group {
            if let Some(previous) = carried.remove(&(part.operator, part.worker)) {
                part.follow(previous);
            }
        }
        let Some(producer) = &producer else {
            last_written = at;
            continue;
        };
        let started = Instant::now();
        match write_one(producer, &config, at, &group) {
            Ok((written, bytes)) => {
                last_written = at;
                stats.written.fetch_add(1, Ordering::Relaxed);
                stats.latest_at.store(at, Ordering::Relaxed);
                stats.latest_bytes.store(bytes as u64, Ordering::Relaxed);
                for p in group.iter().filter(|p| p.base.is_none()) {
                    whole.insert((p.operator, p.worker), p.bytes.len());
                }
                let state = whole.values().sum::<usize>() as u64;
                stats.state_bytes.store(state, Ordering::Relaxed);
                let ms = started.elapsed().as_millis() as u64;
                stats.latest_write_ms.store(ms, Ordering::Relaxed);
                // The workers' share: encoding the parts took this long in all, the slowest
                // part this long, and its operator stalled at most `stall_max_ms` in one go
                // (less than its encoding time for a whole part written in slices).
                let encode_max_ms = group.iter().map(|p| p.encode_us).max().unwrap_or(0) / 1000;
                let encode_ms = group.iter().map(|p| p.encode_us).sum::<u64>() / 1000;
                let stall_max_ms = group.iter().map(|p| p.stall_us).max().unwrap_or(0) / 1000;
                // Bytes per operator (this process's workers summed): what the state is made of.
                let mut by_operator: BTreeMap<&str, usize> = BTreeMap::new();
                for p in &group {
                    *by_operator.entry(p.operator).or_default() += p.bytes.len();
                }
                let parts: Vec<String> = by_operator
                    .iter()
                    .map(|(o, b)| format!("{o}={b}"))
                    .collect();
                let parts = parts.join(",");
                let changes = group.iter().filter(|p| p.base.is_some()).count();
                log::info!(at, bytes, write_ms = ms, encode_ms, encode_max_ms, stall_max_ms, changes, parts:% = parts; "checkpoint written");
                kept.insert(at, written);
                let times: BTreeMap<u64, BTreeSet<u64>> =
                    kept.iter().map(|(t, w)| (*t, w.bases.clone())).collect();
                let durable = stats.durable_frontier.load(Ordering::Relaxed);
                for old in to_tombstone(&times, durable) {
                    let written = kept.remove(&old).expect("a kept checkpoint");
                    if let Err(e) = tombstone(producer, &config.topic, &written) {
                        log::warn!(at = old; "checkpoints: tombstoning an old checkpoint failed: {e}");
                    }
                }
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                log::warn!(at; "checkpoints: writing failed ({e}); the next one tries again");
                // Its parts are folded into the next time's (later parts of changes follow
                // them), or written again if it stays the latest complete time.
                pending.insert(at, group);
            }
        }
    }
}

/// The chunks of `part` at `at`, with their keys.
fn chunks_of(at: u64, part: &Part) -> Vec<(String, &[u8])> {
    let chunks: Vec<&[u8]> = if part.bytes.is_empty() {
        vec![&[][..]]
    } else {
        part.bytes.chunks(CHUNK_BYTES).collect()
    };
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| (chunk_key(at, part.operator, part.worker, i), c))
        .collect()
}

/// Writes one time's parts (the plan, the chunks, then the manifest with the chunks'
/// offsets); returns the records written and the parts' bytes.
fn write_one(
    producer: &ChunkProducer,
    config: &WriterConfig,
    at: u64,
    group: &[Part],
) -> Result<(Written, usize), KafkaError> {
    let manifests = manifests_topic(&config.topic);
    let first_worker = config.workers.iter().copied().min().unwrap_or(0);
    let mut written = Written::default();
    let chunked: Vec<Vec<(String, &[u8])>> = group.iter().map(|p| chunks_of(at, p)).collect();
    let entries = group
        .iter()
        .zip(&chunked)
        .map(|(part, chunks)| PartEntry {
            operator: part.operator.to_string(),
            worker: part.worker,
            chunks: chunks.len(),
            len: part.bytes.len(),
            crc: crc32fast::hash(&part.bytes),
            offsets: Vec::new(),
            base: part.base,
        })
        .collect();
    written.bases = group.iter().filter_map(|p| p.base).collect();
    let bytes = group.iter().map(|p| p.bytes.len()).sum();
    let mut manifest = Manifest {
        at,
        peers: config.peers,
        fingerprint: routing_fingerprint(),
        settings: config.settings.clone(),
        parts: entries,
    };
    // The plan first: chunks a SIGKILL leaves without a manifest are known by it.
    let plan = plan_key(at, first_worker);
    let value = serde_json::to_vec(&manifest).expect("a plan serializes");
    send(producer, &manifests, &plan, Some(&value))?;
    flush(producer)?;
    written.manifests.push(plan);
    producer
        .context()
        .0
        .lock()
        .expect("the delivered offsets")
        .clear();
    for (key, chunk) in chunked.iter().flatten() {
        send(producer, &config.topic, key, Some(chunk))?;
        written.chunks.push(key.clone());
    }
    flush(producer)?;
    let delivered = std::mem::take(&mut *producer.context().0.lock().expect("the offsets"));
    for (entry, chunks) in manifest.parts.iter_mut().zip(&chunked) {
        entry.offsets = chunks
            .iter()
            .map(|(key, _)| delivered.get(key).copied())
            .collect::<Option<Vec<i64>>>()
            .ok_or(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))?;
    }
    let key = manifest_key(at, first_worker);
    let value = serde_json::to_vec(&manifest).expect("a manifest serializes");
    send(producer, &manifests, &key, Some(&value))?;
    flush(producer)?;
    written.manifests.push(key);
    Ok((written, bytes))
}

fn send(
    producer: &ChunkProducer,
    topic: &str,
    key: &str,
    value: Option<&[u8]>,
) -> Result<(), KafkaError> {
    loop {
        let mut record = BaseRecord::<str, [u8]>::to(topic).key(key).partition(0);
        if let Some(v) = value {
            record = record.payload(v);
        }
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits (at most 60 s) until every record sent was acknowledged or failed, serving the
/// delivery reports. Not `Producer::flush`: it polls in steps of 100 ms that never end early,
/// so each flush cost 100 ms (a checkpoint of three flushes took 300 ms whatever its size).
/// Not `poll` with a timeout either: it never ends early and waits its last millisecond in a
/// busy loop (`poll(1 ms)` kept a core busy while the broker acknowledged, taken from the
/// worker threads on a small machine). A report waited for is served within [`FLUSH_STEP`].
fn flush(producer: &ChunkProducer) -> Result<(), KafkaError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut left = producer.in_flight_count();
    while left > 0 {
        if Instant::now() > deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        // Serves the reports ready, without waiting.
        producer.poll(Duration::ZERO);
        let now_left = producer.in_flight_count();
        if now_left == left {
            std::thread::sleep(FLUSH_STEP);
        }
        left = now_left;
    }
    // A record that failed after its retries has left the queue too: counted by the context.
    if producer.context().1.swap(0, Ordering::Relaxed) > 0 {
        return Err(KafkaError::Flush(RDKafkaErrorCode::MessageTimedOut));
    }
    Ok(())
}

/// Tombstones the records of one checkpoint time: its chunks, then its plans and manifests.
fn tombstone(producer: &ChunkProducer, topic: &str, written: &Written) -> Result<(), KafkaError> {
    for key in &written.chunks {
        send(producer, topic, key, None)?;
    }
    flush(producer)?;
    let manifests = manifests_topic(topic);
    for key in &written.manifests {
        send(producer, &manifests, key, None)?;
    }
    flush(producer)
}

/// What [`load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The checkpoint to start from, if one is usable.
    pub restore: Option<Restore>,
    /// Where the sources continue after it (empty without one).
    pub positions: Positions,
    /// Every checkpoint's records in the topics, by time (for the writer to tombstone).
    pub existing: BTreeMap<u64, Written>,
    /// Payload bytes read from the chunks topic (for every checkpoint tried).
    pub read_bytes: u64,
    /// Of the parts read for the restore, the parts of changes (chained after whole ones).
    pub parts_of_changes: usize,
}

/// Reads the manifests of the chunks topic `topic` and returns the latest complete
/// checkpoint at or before `through` written with `settings` (see the [module docs](self)),
/// with `operators`' parts, reading only its chunks.
pub fn load(
    brokers: &str,
    topic: &str,
    settings: &CheckpointSettings,
    operators: &[&'static str],
    through: u64,
) -> Result<Loaded, KafkaError> {
    let records = read_topic(brokers, &manifests_topic(topic))?;
    let mut existing: BTreeMap<u64, Written> = BTreeMap::new();
    let mut manifests: BTreeMap<u64, Vec<Manifest>> = BTreeMap::new();
    for (key, value) in &records {
        let Some(at) = at_of(key) else { continue };
        let written = existing.entry(at).or_default();
        written.manifests.push(key.clone());
        let Ok(m) = serde_json::from_slice::<Manifest>(value) else {
            log::warn!(key; "checkpoints: a plan or manifest does not parse; ignored");
            continue;
        };
        if m.at != at {
            log::warn!(key; "checkpoints: a plan or manifest names another time; ignored");
            continue;
        }
        for e in &m.parts {
            written
                .chunks
                .extend((0..e.chunks).map(|i| chunk_key(at, &e.operator, e.worker, i)));
            written.bases.extend(e.base);
        }
        if key.starts_with("m/") {
            manifests.entry(at).or_default().push(m);
        }
    }
    for written in existing.values_mut() {
        written.chunks.sort();
        written.chunks.dedup();
    }
    let mut read_bytes = 0;
    for (&at, ms) in manifests.iter().rev() {
        if at > through {
            log::info!(at, committed = through; "checkpoints: a checkpoint after the committed outputs is not used");
            continue;
        }
        let found = agree(ms, settings)
            .and_then(|()| chains(at, &manifests))
            .and_then(|chains| {
                let chunks = read_chunks(brokers, topic, &chains, &mut read_bytes)
                    .map_err(|e| e.to_string())?;
                let changes = chains.iter().flatten().filter(|(_, e)| e.base.is_some());
                let parts_of_changes = changes.count();
                assemble(at, ms, &chains, &chunks, settings, operators)
                    .map(|r| (r, parts_of_changes))
            });
        match found {
            Ok((restore, parts_of_changes)) => {
                let mut positions = Positions::new();
                for bytes in &restore.parts[POSITIONS] {
                    let part: SourcePositions = bincode::deserialize(bytes).map_err(|_| {
                        KafkaError::MessageConsumption(RDKafkaErrorCode::InvalidMessage)
                    })?;
                    merge_positions(&mut positions, part.0);
                }
                return Ok(Loaded {
                    restore: Some(restore),
                    positions,
                    existing,
                    read_bytes,
                    parts_of_changes,
                });
            }
            Err(why) => {
                log::warn!(at; "checkpoints: the checkpoint at {at} is not used: {why}; trying an older one")
            }
        }
    }
    Ok(Loaded {
        restore: None,
        positions: Positions::new(),
        existing,
        read_bytes,
        parts_of_changes: 0,
    })
}

/// Whether the manifests of one time were written with `settings` and agree with each other.
fn agree(manifests: &[Manifest], settings: &CheckpointSettings) -> Result<(), String> {
    let first = &manifests[0];
    if first.settings != *settings {
        return Err(format!(
            "written with {:?}, this run has {settings:?}",
            first.settings
        ));
    }
    if manifests.iter().any(|m| {
        m.peers != first.peers || m.fingerprint != first.fingerprint || m.settings != first.settings
    }) {
        return Err("its processes' manifests disagree".into());
    }
    Ok(())
}

/// Each part at `at` with the parts its chain of bases reaches back to (from the manifests
/// at their times), oldest first; or why a chain is broken.
fn chains(
    at: u64,
    manifests: &BTreeMap<u64, Vec<Manifest>>,
) -> Result<Vec<Vec<(u64, &PartEntry)>>, String> {
    // A base counts only if written by a cluster of the same shape and settings (a later run
    // of another shape may have written a checkpoint at the same time since).
    let tip = manifests.get(&at).and_then(|ms| ms.first());
    let same_run = |m: &Manifest| {
        tip.is_some_and(|t| {
            m.peers == t.peers && m.fingerprint == t.fingerprint && m.settings == t.settings
        })
    };
    let entry = |t: u64, operator: &str, worker: usize| {
        manifests
            .get(&t)
            .into_iter()
            .flatten()
            .filter(|m| same_run(m))
            .flat_map(|m| &m.parts)
            .find(|e| e.operator == operator && e.worker == worker)
    };
    let mut chains = Vec::new();
    for tip in manifests
        .get(&at)
        .into_iter()
        .flatten()
        .flat_map(|m| &m.parts)
    {
        let mut chain = vec![(at, tip)];
        while let Some(base) = chain.last().and_then(|(_, e)| e.base) {
            let found = entry(base, &tip.operator, tip.worker).ok_or_else(|| {
                format!(
                    "the part of {} on worker {} follows the one at {base}, which is gone (or was written by a cluster of another shape)",
                    tip.operator, tip.worker
                )
            })?;
            if base >= chain.last().map_or(0, |(t, _)| *t) {
                return Err(format!("the part of {} names a later base", tip.operator));
            }
            chain.push((base, found));
        }
        chain.reverse();
        chains.push(chain);
    }
    Ok(chains)
}

/// The chunks of the parts in `chains`, read from the chunks topic in runs of consecutive
/// offsets: each one whose record at its offset has its key (a chunk compacted away is
/// absent, and [`assemble`] says so). Adds the payload bytes read to `read`.
fn read_chunks(
    brokers: &str,
    topic: &str,
    chains: &[Vec<(u64, &PartEntry)>],
    read: &mut u64,
) -> Result<BTreeMap<String, Vec<u8>>, KafkaError> {
    let mut wanted: BTreeMap<i64, String> = BTreeMap::new();
    for (t, e) in chains.iter().flatten() {
        for (i, offset) in e.offsets.iter().enumerate() {
            wanted.insert(*offset, chunk_key(*t, &e.operator, e.worker, i));
        }
    }
    let mut chunks = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(chunks);
    }
    let consumer = chunks_consumer(brokers)?;
    let offsets: Vec<i64> = wanted.keys().copied().collect();
    for run in offsets.chunk_by(|a, b| *b == a + 1) {
        let (low, last) = (run[0], run[run.len() - 1]);
        read_to_end(&consumer, topic, 0, low, last + 1, |m| {
            *read += m.payload().map_or(0, <[u8]>::len) as u64;
            let key = m.key().and_then(|k| std::str::from_utf8(k).ok());
            if let (Some(want), Some(key)) = (wanted.get(&m.offset()), key) {
                if want == key {
                    chunks.insert(key.to_owned(), m.payload().unwrap_or_default().to_vec());
                }
            }
        })?;
    }
    Ok(chunks)
}

/// A consumer of a checkpoint topic: fetches of a few chunks and a prefetch queue of a few
/// fetches (a restore reads runs of chunks here and there: whatever is fetched past a run's
/// end is read for nothing), fetches at the topic's end that wait 10 ms, not 500 (the next
/// run's fetch waits for the one in flight), and the partition's end reported (a range whose
/// last record was compacted away ends there).
fn chunks_consumer(brokers: &str) -> Result<BaseConsumer, KafkaError> {
    let fetch = (4 * CHUNK_BYTES).to_string();
    basketflow_kafka::client_config(brokers)
        .set("group.id", "basketflow-checkpoints")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.max.bytes", &fetch)
        .set("max.partition.fetch.bytes", &fetch)
        .set(
            "queued.max.messages.kbytes",
            (8 * CHUNK_BYTES / 1024).to_string(),
        )
        .set("fetch.wait.max.ms", "10")
        .create()
}

/// The restore at `at` from its manifests and its parts' `chains`, or why not.
fn assemble(
    at: u64,
    manifests: &[Manifest],
    chains: &[Vec<(u64, &PartEntry)>],
    records: &BTreeMap<String, Vec<u8>>,
    settings: &CheckpointSettings,
    operators: &[&'static str],
) -> Result<Restore, String> {
    agree(manifests, settings)?;
    let first = &manifests[0];
    let mut parts = Vec::new();
    let mut seen = BTreeSet::new();
    for chain in chains {
        let entry = chain.last().expect("a chain has its tip").1;
        let Some(operator) = operators.iter().find(|o| **o == entry.operator) else {
            return Err(format!(
                "it has a part of unknown operator {}",
                entry.operator
            ));
        };
        let mut bytes = Vec::with_capacity(chain.iter().map(|(_, e)| e.len).sum());
        for (t, e) in chain {
            let start = bytes.len();
            for i in 0..e.chunks {
                let key = chunk_key(*t, operator, e.worker, i);
                let chunk = records
                    .get(&key)
                    .ok_or_else(|| format!("chunk {key} is missing"))?;
                bytes.extend_from_slice(chunk);
            }
            let part = &bytes[start..];
            if part.len() != e.len || crc32fast::hash(part) != e.crc {
                return Err(format!(
                    "the part of {} on worker {} at {t} fails its digest",
                    e.operator, e.worker
                ));
            }
        }
        seen.insert((entry.operator.clone(), entry.worker));
        parts.push(Part {
            operator,
            worker: entry.worker,
            peers: first.peers,
            at,
            base: None,
            bytes,
            encode_us: 0,
            stall_us: 0,
        });
    }
    let wanted = operators.len() * first.peers;
    if seen.len() != wanted {
        return Err(format!(
            "it has {} of its {wanted} parts (a process did not write it)",
            seen.len()
        ));
    }
    Restore::complete(at, first.peers, first.fingerprint, operators, parts)
        .ok_or_else(|| "its parts are not one complete set".to_string())
}

/// Every live record of `topic` (key -> latest value; tombstoned keys absent), read up to the
/// end it has now.
fn read_topic(brokers: &str, topic: &str) -> Result<BTreeMap<String, Vec<u8>>, KafkaError> {
    let consumer = chunks_consumer(brokers)?;
    let (low, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(30))?;
    let mut records = BTreeMap::new();
    read_to_end(&consumer, topic, 0, low, high, |m| {
        if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
            match m.payload() {
                Some(v) => {
                    records.insert(key.to_string(), v.to_vec());
                }
                None => {
                    records.remove(key);
                }
            }
        }
    })?;
    Ok(records)
}

/// The sources' positions as a checkpointed state: every worker holds every partition's (the
/// records are few), so a restore merges them whatever the shape.
#[derive(Default, Serialize, Deserialize)]
struct SourcePositions(Positions);

fn merge_positions(into: &mut Positions, other: Positions) {
    for (topic, partitions) in other {
        let mine = into.entry(topic).or_default();
        for (p, next) in partitions {
            let e = mine.entry(p).or_insert(next);
            *e = (*e).max(next);
        }
    }
}

impl Sharded for SourcePositions {
    fn retain_owned(&mut self, _owns: &dyn Fn(u64) -> bool) {}

    fn absorb(&mut self, other: Self) {
        merge_positions(&mut self.0, other.0);
    }
}

/// Folds the sources' position records (`records`, at their times) and writes them as the
/// [`POSITIONS`] part at each checkpoint time: where every partition continues after the
/// messages at times `<=` it.
pub fn checkpoint_positions<'scope>(
    records: Stream<'scope, u64, Vec<PositionRecord>>,
    checkpoints: Option<&Checkpointing>,
) {
    let scope = records.scope();
    let mut checkpointer = Checkpointer::new(checkpoints, POSITIONS, scope.index(), scope.peers());
    let mut state: SourcePositions = checkpointer.restore();
    // Records by time, until the frontier passes it.
    let mut pending: BTreeMap<u64, Vec<PositionRecord>> = BTreeMap::new();
    records.sink(Pipeline, "CheckpointPositions", move |(input, frontier)| {
        input.for_each(|time, data| {
            pending
                .entry(*time.least().expect("a batch has a time"))
                .or_default()
                .append(data);
        });
        let bound = frontier.frontier().first().copied();
        while let Some(entry) = pending.first_entry() {
            let t = *entry.key();
            if bound.is_some_and(|b| t >= b) {
                break;
            }
            checkpointer.pass(t, &state);
            fold_positions(&mut state.0, &entry.remove());
        }
        if let Some(b) = bound {
            checkpointer.pass(b, &state);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_keeps_the_newest_and_the_one_a_start_would_use() {
        let kept: BTreeMap<u64, BTreeSet<u64>> = [100, 200, 300, 400, 500]
            .into_iter()
            .map(|t| (t, BTreeSet::new()))
            .collect();
        // Outputs durable past everything: the 3 newest.
        assert_eq!(to_tombstone(&kept, 1_000), vec![100, 200]);
        // Durable below 250: 200 is what a start would use, kept with the 3 newest.
        assert_eq!(to_tombstone(&kept, 250), vec![100]);
        // Durable up to 300 exclusive: 200 again (300 is not below the frontier).
        assert_eq!(to_tombstone(&kept, 300), vec![100]);
        assert_eq!(to_tombstone(&kept, 301), vec![100, 200]);
        // Nothing durable yet: the 3 newest.
        assert_eq!(to_tombstone(&kept, 0), vec![100, 200]);
        assert_eq!(
            to_tombstone(&[(7, BTreeSet::new())].into(), 1),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn the_writer_keeps_what_the_kept_chains_follow() {
        // 100 whole; 200, 300 changes since 100, 200; 400 whole; 500 changes since 400.
        let kept: BTreeMap<u64, BTreeSet<u64>> = [
            (100, BTreeSet::new()),
            (200, [100].into()),
            (300, [200].into()),
            (400, BTreeSet::new()),
            (500, [400].into()),
            (600, [500].into()),
        ]
        .into();
        // The newest three (400..600) reach back to 400 only.
        assert_eq!(to_tombstone(&kept, 1_000), vec![100, 200, 300]);
        // A start would use 300 now: its chain reaches 100.
        assert_eq!(to_tombstone(&kept, 350), Vec::<u64>::new());
        // A chain that reaches a time with bases of several parts keeps all of them.
        let mixed: BTreeMap<u64, BTreeSet<u64>> = [
            (10, BTreeSet::new()),
            (20, BTreeSet::new()),
            (30, [10, 20].into()),
            (40, BTreeSet::new()),
            (50, BTreeSet::new()),
        ]
        .into();
        assert_eq!(to_tombstone(&mixed, 1_000), Vec::<u64>::new());
    }

    #[test]
    fn record_keys_sort_by_time_and_give_it_back() {
        let a = chunk_key(5, "Baskets", 1, 2);
        let b = chunk_key(40, "Baskets", 0, 0);
        assert!(a < b);
        assert_eq!(at_of(&a), Some(5));
        assert_eq!(at_of(&manifest_key(40, 3)), Some(40));
        assert!(manifest_key(40, 3).as_str() > "m/" && manifest_key(40, 3).as_str() < "m0");
    }

    fn settings() -> CheckpointSettings {
        CheckpointSettings {
            format: FORMAT,
            tick_ms: 5,
            dedup_horizon_ms: 10,
            settlement_ms: 20,
        }
    }

    /// The records a process writes for `parts` at `at` (what `write_one` sends).
    fn records_of(
        at: u64,
        peers: usize,
        parts: &[(&'static str, usize, Vec<u8>)],
    ) -> BTreeMap<String, Vec<u8>> {
        records_with_bases(at, peers, parts, None)
    }

    /// [`records_of`] with every part holding the changes since `base`, if any.
    fn records_with_bases(
        at: u64,
        peers: usize,
        parts: &[(&'static str, usize, Vec<u8>)],
        base: Option<u64>,
    ) -> BTreeMap<String, Vec<u8>> {
        let mut records = BTreeMap::new();
        let mut entries = Vec::new();
        for (operator, worker, bytes) in parts {
            let chunks: Vec<&[u8]> = bytes.chunks(3).collect();
            for (i, c) in chunks.iter().enumerate() {
                records.insert(chunk_key(at, operator, *worker, i), c.to_vec());
            }
            entries.push(PartEntry {
                operator: operator.to_string(),
                worker: *worker,
                chunks: chunks.len(),
                len: bytes.len(),
                crc: crc32fast::hash(bytes),
                offsets: Vec::new(),
                base,
            });
        }
        let manifest = Manifest {
            at,
            peers,
            fingerprint: routing_fingerprint(),
            settings: settings(),
            parts: entries,
        };
        records.insert(manifest_key(at, 0), serde_json::to_vec(&manifest).unwrap());
        records
    }

    #[test]
    fn a_complete_checkpoint_assembles_and_a_damaged_one_says_why_not() {
        let ops = ["A", "B"];
        let parts = [("A", 0, b"hello world".to_vec()), ("B", 0, b"xy".to_vec())];
        let records = records_of(7, 1, &parts);
        let m: Manifest = serde_json::from_slice(&records[&manifest_key(7, 0)]).unwrap();
        let by_time: BTreeMap<u64, Vec<Manifest>> = [(7, vec![m.clone()])].into();
        let chains = chains(7, &by_time).unwrap();
        let assemble = |at, m: &[Manifest], records: &_, settings: &_, ops: &[&'static str]| {
            assemble(at, m, &chains, records, settings, ops)
        };
        let restore = assemble(7, std::slice::from_ref(&m), &records, &settings(), &ops).unwrap();
        assert_eq!(restore.parts["A"], vec![b"hello world".to_vec()]);
        assert_eq!(restore.parts["B"], vec![b"xy".to_vec()]);
        // A missing chunk, a changed byte, a missing operator, other settings.
        let mut missing = records.clone();
        missing.remove(&chunk_key(7, "A", 0, 1));
        assert!(
            assemble(7, std::slice::from_ref(&m), &missing, &settings(), &ops)
                .unwrap_err()
                .contains("missing")
        );
        let mut changed = records.clone();
        changed.insert(chunk_key(7, "A", 0, 0), b"HEL".to_vec());
        assert!(
            assemble(7, std::slice::from_ref(&m), &changed, &settings(), &ops)
                .unwrap_err()
                .contains("digest")
        );
        assert!(assemble(
            7,
            std::slice::from_ref(&m),
            &records,
            &settings(),
            &["A", "B", "C"]
        )
        .unwrap_err()
        .contains("2 of its 3 parts"));
        let other = CheckpointSettings {
            tick_ms: 10,
            ..settings()
        };
        assert!(
            assemble(7, std::slice::from_ref(&m), &records, &other, &ops)
                .unwrap_err()
                .contains("written with")
        );
    }

    #[test]
    fn a_chain_of_parts_assembles_oldest_first_and_a_broken_one_says_why_not() {
        let ops = ["A"];
        // A whole at 10, changes at 20 since 10, at 30 since 20.
        let mut records = records_of(10, 1, &[("A", 0, b"whole".to_vec())]);
        records.extend(records_with_bases(
            20,
            1,
            &[("A", 0, b"+b".to_vec())],
            Some(10),
        ));
        records.extend(records_with_bases(
            30,
            1,
            &[("A", 0, b"+c".to_vec())],
            Some(20),
        ));
        let manifest = |records: &BTreeMap<String, Vec<u8>>, t| -> Manifest {
            serde_json::from_slice(&records[&manifest_key(t, 0)]).unwrap()
        };
        let mut by_time: BTreeMap<u64, Vec<Manifest>> = [10, 20, 30]
            .into_iter()
            .map(|t| (t, vec![manifest(&records, t)]))
            .collect();
        let found = chains(30, &by_time).unwrap();
        let times: Vec<u64> = found[0].iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![10, 20, 30]);
        let tip = [manifest(&records, 30)];
        let restore = assemble(30, &tip, &found, &records, &settings(), &ops).unwrap();
        assert_eq!(restore.parts["A"], vec![b"whole+b+c".to_vec()]);
        // A changed byte in a base fails that part's digest.
        let mut changed = records.clone();
        changed.insert(chunk_key(10, "A", 0, 0), b"WHO".to_vec());
        assert!(assemble(30, &tip, &found, &changed, &settings(), &ops)
            .unwrap_err()
            .contains("at 10 fails its digest"));
        // A base written by a cluster of another shape breaks the chain.
        let mut other = by_time.clone();
        other.get_mut(&10).unwrap()[0].peers = 2;
        assert!(chains(30, &other)
            .unwrap_err()
            .contains("at 10, which is gone"));
        // A base whose manifest is gone breaks the chain.
        by_time.remove(&10);
        assert!(chains(30, &by_time)
            .unwrap_err()
            .contains("at 10, which is gone"));
    }
}
