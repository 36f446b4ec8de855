//! A request body becomes the raw bytes of each event it carries.
//!
//! Three shapes are accepted, whatever the `Content-Type` says (trackers and `sendBeacon` send
//! `text/plain`, `application/json` or nothing; only `application/x-ndjson` and
//! `application/jsonl` force JSON lines):
//!
//! - a JSON array: each element is one event;
//! - one JSON value (pretty-printed or not): one event;
//! - JSON lines: each non-blank line is one event.
//!
//! The events are not re-serialized: each is the exact slice of the body the tracker sent
//! (an array element as written, a line without its line break), so the graph's source
//! validates and stores exactly what the tracker sent. A body that is neither an array nor one
//! JSON value is read as JSON lines, so a malformed line is refused on its own while the other
//! lines are accepted; a malformed array cannot be split and refuses the whole request.

use std::io::Read;

use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// Why a body could not be split into events (the whole request is refused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Nothing but whitespace, or an empty array.
    Empty,
    /// A JSON array that does not parse.
    MalformedArray(String),
    /// More events than allowed in one request.
    TooManyEvents {
        /// Events in the body.
        got: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a compressed body could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Decoded, it is larger than the limit.
    TooLarge,
    /// Not valid gzip.
    Corrupt(String),
}

/// Decodes a gzip body (one or several members), refusing to produce more than `max` bytes.
pub fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity((body.len() * 4).min(max));
    let mut decoder = flate2::read::MultiGzDecoder::new(body).take(max as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if out.len() > max {
        return Err(DecodeError::TooLarge);
    }
    Ok(out)
}

/// The events of `body`, as slices of it. `lines` forces JSON lines (from the content type).
pub fn split(body: &[u8], lines: bool, max_events: usize) -> Result<Vec<&[u8]>, BodyError> {
    let body = body.trim_ascii();
    if body.is_empty() {
        return Err(BodyError::Empty);
    }
    let events = if !lines && body[0] == b'[' {
        let elements: Vec<&RawValue> =
            serde_json::from_slice(body).map_err(|e| BodyError::MalformedArray(e.to_string()))?;
        elements.into_iter().map(|e| e.get().as_bytes()).collect()
    } else if !lines
        && (!body.contains(&b'\n') || serde_json::from_slice::<IgnoredAny>(body).is_ok())
    {
        vec![body]
    } else {
        body.split(|&b| b == b'\n')
            .map(<[u8]>::trim_ascii)
            .filter(|line| !line.is_empty())
            .collect()
    };
    if events.is_empty() {
        return Err(BodyError::Empty);
    }
    if events.len() > max_events {
        return Err(BodyError::TooManyEvents {
            got: events.len(),
            max: max_events,
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn strs(events: Vec<&[u8]>) -> Vec<&str> {
        events
            .into_iter()
            .map(|e| std::str::from_utf8(e).unwrap())
            .collect()
    }

    #[test]
    fn an_array_yields_each_element_exactly_as_written() {
        let body = br#" [ {"a": 1,  "b":"x"} ,{"c":[1, 2]}, 3, "s" ,null ] "#;
        assert_eq!(
            strs(split(body, false, 10).unwrap()),
            [
                r#"{"a": 1,  "b":"x"}"#,
                r#"{"c":[1, 2]}"#,
                "3",
                r#""s""#,
                "null"
            ]
        );
    }

    #[test]
    fn one_value_even_pretty_printed_is_one_event() {
        let body = b"\n{\n  \"a\": 1,\n  \"b\": \"x\"\n}\n";
        assert_eq!(
            strs(split(body, false, 10).unwrap()),
            ["{\n  \"a\": 1,\n  \"b\": \"x\"\n}"]
        );
        // Malformed, on one line: still one event (refused by the contract on its own).
        assert_eq!(strs(split(b"{\"a\":", false, 10).unwrap()), ["{\"a\":"]);
    }

    #[test]
    fn json_lines_yield_each_non_blank_line_and_keep_bad_lines_apart() {
        let body = b"{\"a\":1}\r\n\n  {\"b\":2}\n{oops\n{\"c\":3}";
        assert_eq!(
            strs(split(body, false, 10).unwrap()),
            ["{\"a\":1}", "{\"b\":2}", "{oops", "{\"c\":3}"]
        );
        // Forced lines: even one pretty-printed value is split (the content type says so).
        assert_eq!(
            strs(split(b"{\n\"a\":1}", true, 10).unwrap()),
            ["{", "\"a\":1}"]
        );
        // An array line in JSON lines mode is one (bad) event, not a batch.
        assert_eq!(strs(split(b"[1,2]", true, 10).unwrap()), ["[1,2]"]);
    }

    #[test]
    fn empty_malformed_and_oversized_batches_are_refused_as_a_whole() {
        assert_eq!(split(b"  \r\n ", false, 10), Err(BodyError::Empty));
        assert_eq!(split(b"[]", false, 10), Err(BodyError::Empty));
        assert!(matches!(
            split(b"[{\"a\":1}, {\"b\":", false, 10),
            Err(BodyError::MalformedArray(_))
        ));
        assert_eq!(
            split(b"[1,2,3]", false, 2),
            Err(BodyError::TooManyEvents { got: 3, max: 2 })
        );
        assert_eq!(
            split(b"1\n2\n3\n", false, 2),
            Err(BodyError::TooManyEvents { got: 3, max: 2 })
        );
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_bodies_decode_within_the_limit_only() {
        let data = b"{\"a\":1}\n".repeat(100);
        assert_eq!(gunzip(&gzip(&data), data.len()).unwrap(), data);
        // Two members (concatenated gzip files) are one body.
        let mut two = gzip(b"{\"a\":1}\n");
        two.extend(gzip(b"{\"b\":2}\n"));
        assert_eq!(gunzip(&two, 100).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
        // A small body that inflates past the limit is refused without inflating it all.
        let bomb = gzip(&vec![b' '; 10_000_000]);
        assert!(bomb.len() < 50_000, "{} bytes", bomb.len());
        assert_eq!(gunzip(&bomb, 1_000_000), Err(DecodeError::TooLarge));
        assert!(matches!(
            gunzip(b"not gzip", 100),
            Err(DecodeError::Corrupt(_))
        ));
    }
}
