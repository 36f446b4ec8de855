//! Ingest: bytes from Kafka or HTTP become typed shopper events, or counted rejections.
//!
//! [`contract::parse_event`] is the one gate every message passes, whatever carried it: the
//! graph's Kafka source, the `basketflow validate` command and the HTTP collector all call it,
//! so a tracker integrator sees the same verdict everywhere.

#![forbid(missing_docs)]

pub mod contract;
pub mod json;
pub mod kafka_source;
pub mod parse;
pub mod pii;
pub mod throttle;
pub mod validate;

pub use contract::{
    parse_event, Parsed, RejectCode, Rejection, CONTRACT_FIELDS, MAX_ID_BYTES, MAX_MESSAGE_BYTES,
};
