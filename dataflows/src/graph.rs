//! The whole basketflow graph, assembled in one function: [`build`].
//!
//! ```text
//!  shopper-events ──► parse_messages ──┬─ dead letters ──────────────────────────────────────► Outputs.dead_letters
//!   (SourceMessage)   (ingest::parse)  │
//!                                      ├─ events ─► changes_read_models? ─► first_within ─► folded state ─► read models
//!                                      │            (rule 1: the first copy of (retailer,      (orders and    sold_products_daily,
//!                                      │             event_id) counts; copies within    baskets) ▲           shopper_purchases,
//!                                      │             graph.dedup_horizon_ms do not)              │           product_affinities,
//!  privacy-requests ─► parse_requests ─┼─ erasures ──────────────────────────────────────────────┤           baskets, order_lines
//!                     (ingest::parse)  │   (also ─────────────────────────────────────► Outputs.erasures)     │
//!                                      │   bad requests ──► dead letters                         │            ▼
//!                                      └─ positioned events ──┐                                  │   Outputs.read_models
//!                                                             ▼                                  │
//!  experience-trees ──────────────────────────────────────► decide ◄─────────────────────────────┘
//!   (key = retailer U+001F shopper)         (experiences: one state machine per shopper)
//!                                                             │
//!                                                             └──► Outputs.decisions
//! ```
//!
//! The graph knows nothing about where its inputs come from or where its outputs go: the
//! binary feeds it Kafka sources (`basketflow_ingest::kafka_source`) and hands its outputs to
//! the sinks (ClickHouse for the read models, decisions and erasures; Kafka transactions for
//! decisions and dead letters); a test feeds it in-memory messages and captures the outputs
//! (`tests/graph.rs` compares every view with the [`crate::oracle`]).
//!
//! Only the events that can change a read model ([`changes_read_models`]) enter the
//! read-model state, privacy's included; the decisions read every valid event. Orders and
//! baskets read the counted events and the erasures and apply privacy on their own folded
//! state ([`crate::orders`], [`crate::baskets`]).

use std::sync::Arc;

use basketflow_ingest::kafka_source::{Millis, SourceMessage};
use basketflow_ingest::parse::{parse_messages, parse_requests};
use basketflow_vocab::{DeadLetter, Decision, Erasure, LateInput, Retention, WireEvent};
use timely::dataflow::operators::Concat;
use timely::dataflow::Stream;

use crate::experiences::{decide, within_budgets, Horizons, TreeStats};
use crate::read_models::{
    changes_read_models, count_first_copies, read_models_of_counted, ReadModels,
};
use basketflow_operators::checkpoint::Checkpointing;

/// The graph's three inputs: the messages of its three topics, at their logical times.
pub struct Sources<'scope> {
    /// Messages of `shopper-events` (tracker events, valid or not).
    pub events: Stream<'scope, Millis, Vec<SourceMessage>>,
    /// Messages of `experience-trees` (key = [`basketflow_vocab::tree_key`]: retailer, U+001F,
    /// shopper; a null payload removes that retailer's shopper's tree).
    pub trees: Stream<'scope, Millis, Vec<SourceMessage>>,
    /// Messages of `privacy-requests` (erasure requests).
    pub privacy: Stream<'scope, Millis, Vec<SourceMessage>>,
}

/// What the graph needs besides its inputs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The name of the privacy-requests topic, written into its dead letters.
    pub privacy_topic: String,
    /// Retention periods of per-shopper state.
    pub retention: Retention,
    /// The de-duplication horizon (logical ms): a copy of an event read within it after the
    /// counted copy is a duplicate, a later one counts again (`graph.dedup_horizon_ms`).
    pub dedup_horizon_ms: u64,
    /// The settlement horizon (logical ms): an order's figures stand this long after its
    /// first payment was read, and a payment or cancellation read later is a late input
    /// (`graph.settlement_ms`; `u64::MAX`: never).
    pub settlement_ms: u64,
    /// Counters of the experience-tree operator (bad trees, decisions).
    pub tree_stats: Arc<TreeStats>,
    /// Checkpoints of the stateful operators ([`CHECKPOINTED`]): when they are written, where
    /// they go, and the one to start from (the sources then start after its time); `None`:
    /// no checkpoints.
    pub checkpoints: Option<Checkpointing>,
}

/// The operators whose state a checkpoint holds, by their part names: a checkpoint is
/// complete with a part of each from every worker.
pub const CHECKPOINTED: [&str; 8] = [
    "Deduplicate",
    "SettleOrders",
    "Baskets",
    "SoldProductsDaily",
    "ShopperPurchases",
    "ProductAffinities",
    "ExperienceTrees",
    "CampaignBudgets",
];

/// The graph's outputs, for the sinks (or a test) to take.
pub struct Outputs<'scope> {
    /// The five read models, as upsert collections.
    pub read_models: ReadModels<'scope, Millis>,
    /// Experience decisions, at the time of the event that caused them.
    pub decisions: Stream<'scope, Millis, Vec<Decision>>,
    /// Refused messages of `shopper-events` and `privacy-requests`.
    pub dead_letters: Stream<'scope, Millis, Vec<DeadLetter>>,
    /// Valid erasure requests, at the time they were read (the ClickHouse writer applies them
    /// to the stored tables too).
    pub erasures: Stream<'scope, Millis, Vec<Erasure>>,
    /// Inputs that came after their order settled, at the time they were read: they change
    /// no figure (see [`crate::orders`]).
    pub late_inputs: Stream<'scope, Millis, Vec<LateInput>>,
}

/// Builds the whole graph on `sources` (see the module docs for its picture).
pub fn build<'scope>(sources: Sources<'scope>, settings: Settings) -> Outputs<'scope> {
    let parsed = parse_messages(sources.events);
    let (erasures, bad_requests) = parse_requests(sources.privacy, &settings.privacy_topic);
    // Rule 1 with its horizon first (insert-only out: the folded orders and baskets rely on
    // it), then the read models, which apply privacy themselves.
    let counted = count_first_copies(
        parsed
            .events
            .filter(|e: &WireEvent| changes_read_models(&e.0)),
        settings.dedup_horizon_ms,
        settings.checkpoints.as_ref(),
    );
    let (read_models, late_inputs) = read_models_of_counted(
        &counted,
        erasures.clone(),
        settings.settlement_ms,
        &settings.retention,
        settings.checkpoints.as_ref(),
    );
    let decided = decide(
        parsed.positioned,
        sources.trees,
        erasures.clone(),
        settings.retention,
        Horizons {
            dedup_ms: settings.dedup_horizon_ms,
            settlement_ms: settings.settlement_ms,
        },
        settings.tree_stats.clone(),
        settings.checkpoints.as_ref(),
    );
    let decisions = within_budgets(decided, settings.tree_stats, settings.checkpoints.as_ref());
    Outputs {
        read_models,
        decisions,
        dead_letters: parsed.dead_letters.concat(bad_requests),
        erasures,
        late_inputs,
    }
}
