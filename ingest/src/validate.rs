//! The contract's verdict on each line of a JSON-lines stream (`basketflow validate`).
//!
//! For tracker integrators: pipe events in, read one JSON verdict per input line, in order:
//! `{"line":N,"ok":true,"type":"..."}` or
//! `{"line":N,"ok":false,"field":"...","reason":"...","code":"..."}`. Accepted lines that carry
//! fields the contract does not know list them in `"unknown_fields"`. Lines are read with a
//! bounded buffer: a line over the message limit is reported `too_large` without being held in
//! memory whole.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

use crate::{parse_event, RejectCode, Rejection, MAX_MESSAGE_BYTES};
use serde_json::json;

/// Counts of one validation run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Lines read.
    pub lines: u64,
    /// Lines accepted.
    pub ok: u64,
    /// Lines refused, by code.
    pub rejected: BTreeMap<RejectCode, u64>,
    /// Accepted lines that carried unknown fields.
    pub with_unknown_fields: u64,
}

/// Reads one line (without its `\n` or `\r\n`) into `buf`, keeping at most `MAX + 1` bytes.
/// Returns the full length of the line, or `None` at end of input.
fn read_bounded_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    buf.clear();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        let room = (MAX_MESSAGE_BYTES + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        len += part.len();
        let consumed = done.unwrap_or(chunk.len());
        input.consume(consumed);
        if done.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if buf.last() == Some(&b'\r') && len <= MAX_MESSAGE_BYTES + 1 {
        buf.pop();
        len -= 1;
    }
    Ok(Some(len))
}

/// Validates every line of `input`, writing one verdict line per input line to `output`.
pub fn validate(mut input: impl BufRead, mut output: impl Write) -> io::Result<Summary> {
    let mut summary = Summary::default();
    let mut buf = Vec::new();
    while let Some(len) = read_bounded_line(&mut input, &mut buf)? {
        summary.lines += 1;
        let n = summary.lines;
        let verdict = if len > MAX_MESSAGE_BYTES {
            Err(Rejection {
                code: RejectCode::TooLarge,
                field: String::new(),
                reason: format!("message is {len} bytes, the limit is {MAX_MESSAGE_BYTES}"),
            })
        } else {
            parse_event(&buf)
        };
        let line = match verdict {
            Ok(p) => {
                summary.ok += 1;
                let mut v = json!({"line": n, "ok": true, "type": p.event.event_type().as_str()});
                if !p.unknown_fields.is_empty() {
                    summary.with_unknown_fields += 1;
                    v["unknown_fields"] = json!(p.unknown_fields);
                }
                v
            }
            Err(r) => {
                *summary.rejected.entry(r.code).or_default() += 1;
                json!({"line": n, "ok": false, "field": r.field, "reason": r.reason, "code": r.code.as_str()})
            }
        };
        serde_json::to_writer(&mut output, &line)?;
        output.write_all(b"\n")?;
    }
    output.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"event_id":"e1","type":"order_status_changed","retailer_id":"r","shopper_id":"s","occurred_at":"2026-11-22T10:00:00Z","order_id":"o","status":"delivered"}"#;

    fn run(input: &[u8]) -> (Vec<String>, Summary) {
        let mut out = Vec::new();
        let s = validate(input, &mut out).unwrap();
        (
            String::from_utf8(out)
                .unwrap()
                .lines()
                .map(String::from)
                .collect(),
            s,
        )
    }

    #[test]
    fn one_verdict_per_line_in_order() {
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_MESSAGE_BYTES * 3));
        let with_unknown = GOOD.replacen("}", r#","context":{"locale":"fr-FR"}}"#, 1);
        let input = format!("{GOOD}\r\nnot json\n\n{big}\n{with_unknown}");
        let (lines, summary) = run(input.as_bytes());
        assert_eq!(
            lines,
            vec![
                r#"{"line":1,"ok":true,"type":"order_status_changed"}"#.to_string(),
                r#"{"line":2,"ok":false,"field":"","reason":"not valid JSON: expected ident at line 1 column 2","code":"malformed_json"}"#.to_string(),
                r#"{"line":3,"ok":false,"field":"","reason":"empty message","code":"malformed_json"}"#.to_string(),
                format!(r#"{{"line":4,"ok":false,"field":"","reason":"message is {} bytes, the limit is 65536","code":"too_large"}}"#, big.len()),
                r#"{"line":5,"ok":true,"type":"order_status_changed","unknown_fields":["context"]}"#.to_string(),
            ]
        );
        assert_eq!(summary.lines, 5);
        assert_eq!(summary.ok, 2);
        assert_eq!(summary.with_unknown_fields, 1);
        assert_eq!(
            summary.rejected,
            BTreeMap::from([(RejectCode::TooLarge, 1), (RejectCode::MalformedJson, 2)])
        );
    }

    #[test]
    fn empty_input_gives_no_verdicts() {
        assert_eq!(run(b"").0, Vec::<String>::new());
    }
}
