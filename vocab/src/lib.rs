//! The shared vocabulary of basketflow.
//!
//! Every crate on the data's path speaks these types: `ingest` turns bytes into [`Event`]s,
//! `dataflows` computes on them, `sinks` write what the graph derives ([`read_models`]: one
//! definition per read model, from which the sinks' storage is derived), and `examples`
//! generates them. The types mirror the event contract with trackers (`shared/mission.md`): they are facts,
//! never updated, identified by `event_id`, keyed by `shopper_id`.
//!
//! Serialization with serde gives exactly the contract's JSON: `Event` serializes to the message a
//! tracker sends, so a serialized event parses back (through `basketflow_ingest`) to an equal
//! value. Validation (what a tracker may and may not send) lives in `basketflow_ingest`, not here.

#![forbid(missing_docs)]

#[cfg(any(test, feature = "arbitrary"))]
pub mod arbitrary;
pub mod dead_letter;
pub mod event;
pub mod hmac;
pub mod ids;
pub mod late;
pub mod privacy;
pub mod read_models;
pub mod time;
pub mod tree;
pub mod wire;

pub use dead_letter::DeadLetter;
pub use hmac::hmac_sha256;
pub use late::{LateInput, LateReason};

pub use event::{
    BasketChange, Event, EventBody, EventType, OrderLine, OrderStatus, PageType, Product,
};
pub use privacy::{Erasure, ErasureRequest, Retention};
pub use read_models::{
    BasketLine, PaidOrderLine, ProductAffinity, ReadModel, ShopperPurchase, SoldProductDaily,
};
pub use time::Timestamp;
pub use tree::{
    held_out, holdout_draw, split_tree_key, tree_key, wins_game, CausedBy, Condition, Decision,
    Delivery, Experience, ExperienceKind, ExperienceTree, FrequencyCap, Node, ParamValue,
    ProductMatch, BASIS_POINTS, COST_PARAM, GAME_DECISION_PARAM, TREE_KEY_SEPARATOR,
};
pub use wire::{PositionedEvent, WireEvent};
