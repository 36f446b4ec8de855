//! The graph's first step: Kafka messages become events or dead letters, privacy requests
//! become erasures or dead letters.
//!
//! Every message goes through [`parse_event`](crate::parse_event), on the worker that read it
//! (no exchange): valid events enter the graph as a differential collection at the message's
//! logical time; refused ones become [`DeadLetter`]s, which name the partition and offset, the
//! rejection's code, field and reason. A dead letter carries an excerpt of the payload so an
//! integrator can see what was sent, except for privacy refusals, whose payload is never kept,
//! and for any payload whose excerpt shows an email address or a key naming identifying data
//! ([`safe_excerpt`]). Messages on `privacy-requests` become [`Erasure`]s ([`parse_requests`]).

use basketflow_vocab::{DeadLetter, Erasure, ErasureRequest, PositionedEvent, WireEvent};
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::core::{Map, OkErr};
use timely::dataflow::Stream;

use crate::kafka_source::{Millis, SourceMessage};
use crate::pii::{looks_like_email, pii_key};
use crate::{parse_event, RejectCode};

/// How much of a refused payload a dead letter keeps, in bytes.
pub const DEAD_LETTER_EXCERPT: usize = 4096;

/// True when a refused payload's excerpt may be kept: it contains no email address and no
/// quoted key naming identifying data (`"email":`, `"first_name" :`, ...). Messages refused
/// before the privacy check (too large, not JSON) can still carry such data; their dead
/// letters then keep no excerpt, like `pii` refusals.
pub fn safe_excerpt(text: &str) -> bool {
    if looks_like_email(text) {
        return false;
    }
    let mut rest = text;
    while let Some(open) = rest.find('"') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('"') else { break };
        let key = &after[..close];
        let tail = after[close + 1..].trim_start();
        if tail.starts_with(':') && pii_key(key) {
            return false;
        }
        rest = &after[close + 1..];
    }
    true
}

/// What parsing yields: events as a collection (for the read models), the same events with
/// their partition and offset as a stream (for the experience trees), and dead letters.
pub struct Parsed<'scope> {
    /// Valid events, at their messages' times (shared with `positioned`, not copied).
    pub events: VecCollection<'scope, Millis, WireEvent>,
    /// Valid events with where they were read.
    pub positioned: Stream<'scope, Millis, Vec<PositionedEvent>>,
    /// Refused messages.
    pub dead_letters: Stream<'scope, Millis, Vec<DeadLetter>>,
}

/// Splits source messages into events and dead letters.
pub fn parse_messages<'scope>(
    messages: Stream<'scope, Millis, Vec<SourceMessage>>,
) -> Parsed<'scope> {
    // The `Result` only routes each message to one of two outputs, at once; boxing the dead
    // letter would cost an allocation per refusal for nothing.
    #[allow(clippy::result_large_err)]
    let (ok, err) = messages.ok_err(|m: SourceMessage| match parse_event(&m.payload) {
        Ok(parsed) => Ok((
            PositionedEvent {
                event: WireEvent::from(parsed.event),
                partition: m.partition,
                offset: m.offset,
            },
            m.time,
        )),
        Err(r) => Err(DeadLetter {
            topic: None,
            partition: m.partition,
            offset: m.offset,
            key: m.key_text(),
            code: r.code.as_str().to_string(),
            field: r.field,
            reason: r.reason,
            payload_excerpt: (r.code != RejectCode::Pii)
                .then(|| {
                    let n = m.payload.len().min(DEAD_LETTER_EXCERPT);
                    String::from_utf8_lossy(&m.payload[..n]).into_owned()
                })
                .filter(|excerpt| safe_excerpt(excerpt)),
        }),
    });
    let ok: Stream<'scope, Millis, Vec<(PositionedEvent, Millis)>> = ok;
    let events = ok
        .clone()
        .map(|(p, t)| (p.event, t, 1isize))
        .as_collection();
    Parsed {
        events,
        positioned: ok.map(|(p, _)| p),
        dead_letters: err,
    }
}

/// The rejection code of a message on `privacy-requests` that is not a valid request.
pub const INVALID_PRIVACY_REQUEST: &str = "invalid_privacy_request";

/// Splits the messages of `privacy-requests` into erasures and dead letters (code
/// [`INVALID_PRIVACY_REQUEST`]; no payload excerpt is kept, it names a shopper).
pub fn parse_requests<'scope>(
    messages: Stream<'scope, Millis, Vec<SourceMessage>>,
    topic: &str,
) -> (
    Stream<'scope, Millis, Vec<Erasure>>,
    Stream<'scope, Millis, Vec<DeadLetter>>,
) {
    let topic = topic.to_string();
    #[allow(clippy::result_large_err)]
    messages.ok_err(
        move |m: SourceMessage| match ErasureRequest::parse(&m.payload) {
            Ok(request) => Ok(Erasure {
                request,
                partition: m.partition,
                offset: m.offset,
            }),
            Err(reason) => Err(DeadLetter {
                topic: Some(topic.clone()),
                partition: m.partition,
                offset: m.offset,
                key: m.key_text(),
                code: INVALID_PRIVACY_REQUEST.to_string(),
                field: String::new(),
                reason,
                payload_excerpt: None,
            }),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::safe_excerpt;

    #[test]
    fn excerpts_with_identifying_data_are_not_kept() {
        assert!(safe_excerpt(r#"{"event_id":"e1","type":"page_viewed""#));
        assert!(!safe_excerpt(
            r#"{"event_id":"e1","contact":"jane@example.com"#
        ));
        assert!(!safe_excerpt(r#"{"event_id":"e1", "First_Name" : "Jane""#));
        // A value that merely says "email" is not a key.
        assert!(safe_excerpt(r#"{"query":"email", "x":1"#));
    }
}
