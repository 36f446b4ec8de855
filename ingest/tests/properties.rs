//! Property tests of the contract: serialized events parse back unchanged, and the JSON Schema
//! given to tracker integrators (`schema/shopper-event.schema.json`) agrees with the Rust
//! validator on every valid event and on every single-field corruption of one.

use std::sync::OnceLock;

use basketflow_ingest::{parse_event, RejectCode};
use basketflow_vocab::arbitrary;
use proptest::prelude::*;
use serde_json::{json, Value};

/// `schema/shopper-event.schema.json`, parsed.
fn schema_json() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schema/shopper-event.schema.json"
    );
    let text = std::fs::read_to_string(path).expect("schema/shopper-event.schema.json exists");
    serde_json::from_str(&text).expect("the schema is valid JSON")
}

fn schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema_json())
            .expect("the schema is a valid JSON Schema")
    })
}

/// Every leaf and object of an event's JSON, as a list of paths (keys and array indices).
fn paths(v: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(json!(k));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(json!(i));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// `v` with the node at `path` replaced by `to`, or removed when `to` is `None`.
fn edit(v: &Value, path: &[Value], to: Option<&Value>) -> Value {
    let mut out = v.clone();
    let mut node = &mut out;
    for step in &path[..path.len() - 1] {
        node = match step {
            Value::String(k) => &mut node[k.as_str()],
            Value::Number(i) => &mut node[i.as_u64().unwrap() as usize],
            _ => unreachable!(),
        };
    }
    match (node, path.last().unwrap(), to) {
        (Value::Object(m), Value::String(k), None) => {
            m.remove(k);
        }
        (Value::Object(m), Value::String(k), Some(to)) => {
            m.insert(k.clone(), to.clone());
        }
        (Value::Array(a), Value::Number(i), None) => {
            a.remove(i.as_u64().unwrap() as usize);
        }
        (Value::Array(a), Value::Number(i), Some(to)) => {
            a[i.as_u64().unwrap() as usize] = to.clone();
        }
        _ => unreachable!(),
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_serialized_event_parses_back_unchanged(event in arbitrary::event()) {
        let json = event.to_json();
        let parsed = parse_event(json.as_bytes()).map_err(|r| TestCaseError::fail(format!("{r}: {json}")))?;
        prop_assert_eq!(&parsed.event, &event);
        prop_assert!(parsed.unknown_fields.is_empty());
        // serde's own deserializer agrees with the validator on valid input.
        prop_assert_eq!(serde_json::from_str::<basketflow_vocab::Event>(&json).unwrap(), event);
    }

    #[test]
    fn the_schema_accepts_every_valid_event(event in arbitrary::event()) {
        let value = serde_json::to_value(&event).unwrap();
        prop_assert!(schema().is_valid(&value), "schema refused {}", value);
    }

    #[test]
    fn schema_and_validator_agree_on_every_single_field_corruption(event in arbitrary::event()) {
        let value = serde_json::to_value(&event).unwrap();
        let mut all = Vec::new();
        paths(&value, &mut Vec::new(), &mut all);
        let replacements = [
            json!(null), json!(""), json!("x".repeat(129)), json!("x"), json!(7), json!(-1),
            json!(0), json!(2.5), json!(2.0), json!({}), json!([]), json!(true),
            // Identifiers that are not printable text (or blank) and ones that are.
            json!("\u{0}"), json!("a\nb"), json!("\u{1b}[31m"), json!("x\u{7f}"),
            json!("\u{85}"), json!("r\u{202e}"), json!("\u{2066}x"), json!("\u{61c}"),
            json!("   "), json!("\u{3000}"), json!(" a "), json!("日本"), json!("a\u{a0}b"),
        ];
        for path in &all {
            let edits = std::iter::once(None).chain(replacements.iter().map(Some));
            for to in edits {
                let corrupt = edit(&value, path, to);
                let bytes = serde_json::to_vec(&corrupt).unwrap();
                let rust = parse_event(&bytes);
                if let Err(r) = &rust {
                    prop_assert!(r.code != RejectCode::Pii && r.code != RejectCode::TooLarge);
                }
                prop_assert_eq!(
                    rust.is_ok(),
                    schema().is_valid(&corrupt),
                    "disagreement on {} (validator: {:?})", corrupt, rust.err()
                );
            }
        }
    }
}

/// The schema's `$defs/id` alone, as a validator of one string.
fn id_schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        jsonschema::options()
            .build(&schema_json()["$defs"]["id"])
            .expect("$defs/id is a valid JSON Schema")
    })
}

/// Short strings over every character, weighted towards the ones the identifier rule is about
/// (controls, separators, white space, invisible and bidirectional formatting characters).
fn any_id() -> impl Strategy<Value = String> {
    let interesting = prop::sample::select(vec![
        '\0', '\t', '\n', '\r', ' ', 'a', 'Z', '7', '-', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}',
        '\u{a0}', '\u{ad}', '\u{61c}', '\u{1680}', '\u{2000}', '\u{200a}', '\u{200b}', '\u{200c}',
        '\u{200d}', '\u{200e}', '\u{200f}', '\u{2028}', '\u{2029}', '\u{202a}', '\u{202e}',
        '\u{202f}', '\u{205f}', '\u{2060}', '\u{2066}', '\u{2069}', '\u{3000}', '\u{feff}', 'é',
        '日', '🛒',
    ]);
    prop::collection::vec(prop_oneof![2 => interesting, 1 => any::<char>()], 0..8)
        .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_schema_and_the_identifier_rule_agree_on_every_string(id in any_id()) {
        let rust = basketflow_vocab::ids::id_problem(&id);
        prop_assert_eq!(
            rust.is_none(),
            id_schema().is_valid(&json!(id)),
            "disagreement on {:?} (rule: {:?})", id, rust
        );
    }
}

#[test]
fn the_schema_refuses_the_contract_s_classic_mistakes() {
    // Spot checks that the schema is not vacuous: each of these is refused by both.
    let base = json!({"event_id":"e","type":"product_added","retailer_id":"r","shopper_id":"s",
        "occurred_at":"2026-11-22T10:00:00Z",
        "product":{"product_id":"p","category":"c","unit_price_cents":5},"quantity":1});
    assert!(schema().is_valid(&base));
    assert!(parse_event(base.to_string().as_bytes()).is_ok());
    for (path, to) in [
        (vec![json!("quantity")], json!(0)),
        (vec![json!("type")], json!("product_liked")),
        (vec![json!("occurred_at")], json!("2026-13-01T00:00:00Z")),
        (vec![json!("occurred_at")], json!("yesterday")),
        (vec![json!("product"), json!("unit_price_cents")], json!(-5)),
    ] {
        let bad = edit(&base, &path, Some(&to));
        assert!(!schema().is_valid(&bad), "schema accepted {bad}");
        assert!(
            parse_event(bad.to_string().as_bytes()).is_err(),
            "validator accepted {bad}"
        );
    }
}
