//! Privacy requests: a shopper's right to be forgotten, as messages on `privacy-requests`.
//!
//! A request names one shopper of one retailer. Once the graph applies it, every derived state
//! and table keyed by or containing that `(retailer_id, shopper_id)` forgets them; anonymous
//! product-level figures keep the shopper's past orders without the id. The rule for later
//! events of the same id, and how the erasure survives replays, are in
//! `basketflow_dataflows::privacy`.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Ids in a request are at most this long (the event contract's limit).
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// An erasure request (JSON on `privacy-requests`, key = `shopper_id`).
///
/// ```json
/// {"request_id":"req-1","retailer_id":"r1","shopper_id":"s1","requested_at":"2026-12-01T10:00:00Z"}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    /// Unique id of the request (the audit table's key).
    pub request_id: String,
    /// The retailer the shopper belongs to.
    pub retailer_id: String,
    /// The shopper to forget.
    pub shopper_id: String,
    /// When the shopper asked (informational; the graph applies the request at the time it
    /// reads it).
    pub requested_at: Timestamp,
}

impl ErasureRequest {
    /// Parses and checks a request: JSON with exactly the four fields, ids non-empty and at
    /// most [`MAX_REQUEST_ID_BYTES`] bytes. The error says what is wrong, in one sentence.
    pub fn parse(bytes: &[u8]) -> Result<ErasureRequest, String> {
        let request: ErasureRequest =
            serde_json::from_slice(bytes).map_err(|e| format!("not an erasure request: {e}"))?;
        for (name, id) in [
            ("request_id", &request.request_id),
            ("retailer_id", &request.retailer_id),
            ("shopper_id", &request.shopper_id),
        ] {
            if id.is_empty() || id.len() > MAX_REQUEST_ID_BYTES {
                return Err(format!(
                    "{name} must have 1 to {MAX_REQUEST_ID_BYTES} bytes, got {}",
                    id.len()
                ));
            }
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_say_why() {
        let json = br#"{"request_id":"q1","retailer_id":"r1","shopper_id":"s1","requested_at":"2026-12-01T10:00:00Z"}"#;
        let r = ErasureRequest::parse(json).unwrap();
        assert_eq!(r.shopper_id, "s1");
        assert_eq!(
            r.requested_at,
            Timestamp::parse_rfc3339("2026-12-01T10:00:00Z").unwrap()
        );
        assert_eq!(
            ErasureRequest::parse(serde_json::to_string(&r).unwrap().as_bytes()).unwrap(),
            r
        );
        let empty = br#"{"request_id":"q1","retailer_id":"r1","shopper_id":"","requested_at":"2026-12-01T10:00:00Z"}"#;
        assert_eq!(
            ErasureRequest::parse(empty).unwrap_err(),
            "shopper_id must have 1 to 128 bytes, got 0"
        );
        let extra = br#"{"request_id":"q1","retailer_id":"r1","shopper_id":"s","requested_at":"2026-12-01T10:00:00Z","email":"a@b.c"}"#;
        assert!(ErasureRequest::parse(extra)
            .unwrap_err()
            .starts_with("not an erasure request: unknown field `email`"));
        assert!(ErasureRequest::parse(b"{").is_err());
    }
}
