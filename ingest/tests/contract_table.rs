//! The contract's verdict on a table of inputs: every bad input with its exact code, field and
//! reason; every good input with its exact event and unknown fields.

use basketflow_ingest::{parse_event, RejectCode, MAX_MESSAGE_BYTES};
use basketflow_vocab::{BasketChange, Event, EventBody, OrderStatus, PageType, Product, Timestamp};

const ADD: &str = r#"{"event_id":"e1","type":"product_added","retailer_id":"r1","shopper_id":"s1","occurred_at":"2026-11-22T10:00:00Z","product":{"product_id":"p1","category":"pasta","unit_price_cents":199},"quantity":2}"#;

/// `ADD` with `from` replaced by `to` (the replacement must apply).
fn add_with(from: &str, to: &str) -> String {
    assert!(ADD.contains(from), "{from} not in the base event");
    ADD.replacen(from, to, 1)
}

fn order_with_lines(lines: &str) -> String {
    format!(
        r#"{{"event_id":"e2","type":"order_paid","retailer_id":"r1","shopper_id":"s1","occurred_at":"2026-11-22T10:00:00Z","order_id":"o1","lines":{lines},"total_cents":500}}"#
    )
}

#[test]
fn every_bad_input_gets_its_exact_reason() {
    use RejectCode::*;
    let long_id = "x".repeat(129);
    let oversized = format!(r#"{{"pad":"{}"}}"#, "a".repeat(MAX_MESSAGE_BYTES));
    let cases: Vec<(String, RejectCode, &str, String)> = vec![
        (
            oversized.clone(),
            TooLarge,
            "",
            format!("message is {} bytes, the limit is 65536", oversized.len()),
        ),
        ("".into(), MalformedJson, "", "empty message".into()),
        (
            "{\"event_id\":".into(),
            MalformedJson,
            "",
            "not valid JSON: EOF while parsing a value at line 1 column 12".into(),
        ),
        (
            "[1,2]".into(),
            WrongType,
            "",
            "expected a JSON object, got an array".into(),
        ),
        (
            add_with(r#""type":"product_added","#, ""),
            MissingField,
            "type",
            "required field \"type\" is missing".into(),
        ),
        (
            add_with(r#""type":"product_added""#, r#""type":7"#),
            WrongType,
            "type",
            "expected a string, got number 7".into(),
        ),
        (
            add_with("product_added", "product_liked"),
            UnknownType,
            "type",
            "unknown event type \"product_liked\"; expected one of page_viewed, link_clicked, \
             search_performed, product_added, product_removed, order_paid, order_status_changed"
                .into(),
        ),
        (
            add_with(r#""event_id":"e1","#, ""),
            MissingField,
            "event_id",
            "required field \"event_id\" is missing".into(),
        ),
        (
            add_with(r#""shopper_id":"s1""#, r#""shopper_id":"""#),
            InvalidValue,
            "shopper_id",
            "must not be empty".into(),
        ),
        // Identifiers are non-blank printable text: these would live in keys, rows, logs
        // and every retailer's exports.
        (
            add_with(r#""retailer_id":"r1""#, r#""retailer_id":"\u0000""#),
            InvalidValue,
            "retailer_id",
            "contains U+0000 at character 1: identifiers must be printable text, without control or bidirectional formatting characters".into(),
        ),
        (
            add_with(r#""shopper_id":"s1""#, r#""shopper_id":"s\n1""#),
            InvalidValue,
            "shopper_id",
            "contains U+000A at character 2: identifiers must be printable text, without control or bidirectional formatting characters".into(),
        ),
        (
            add_with(r#""event_id":"e1""#, r#""event_id":"\u001b[31me1""#),
            InvalidValue,
            "event_id",
            "contains U+001B at character 1: identifiers must be printable text, without control or bidirectional formatting characters".into(),
        ),
        (
            add_with(r#""product_id":"p1""#, "\"product_id\":\"p\u{202e}1\""),
            InvalidValue,
            "product.product_id",
            "contains U+202E at character 2: identifiers must be printable text, without control or bidirectional formatting characters".into(),
        ),
        (
            add_with(r#""shopper_id":"s1""#, r#""shopper_id":"   ""#),
            InvalidValue,
            "shopper_id",
            "must not be blank".into(),
        ),
        (
            add_with(r#""shopper_id":"s1""#, r#""shopper_id":"s1","session_id":"\u0085""#),
            InvalidValue,
            "session_id",
            "contains U+0085 at character 1: identifiers must be printable text, without control or bidirectional formatting characters".into(),
        ),
        (
            add_with(r#""retailer_id":"r1""#, &format!(r#""retailer_id":"{long_id}""#)),
            InvalidValue,
            "retailer_id",
            "is 129 bytes, the limit is 128".into(),
        ),
        (
            add_with(r#""shopper_id":"s1""#, r#""shopper_id":42"#),
            WrongType,
            "shopper_id",
            "expected a string, got number 42".into(),
        ),
        (
            add_with("2026-11-22T10:00:00Z", "22/11/2026 10:00"),
            InvalidValue,
            "occurred_at",
            "\"22/11/2026 10:00\" is not an RFC 3339 timestamp (e.g. 2026-11-22T10:15:00Z)".into(),
        ),
        (
            add_with("2026-11-22T10:00:00Z", "1969-12-31T23:59:59Z"),
            InvalidValue,
            "occurred_at",
            "\"1969-12-31T23:59:59Z\" is outside 1970-01-01..2100-01-01".into(),
        ),
        (
            add_with(r#""quantity":2"#, r#""quantity":0"#),
            InvalidValue,
            "quantity",
            "must be at least 1, got 0".into(),
        ),
        (
            add_with(r#""quantity":2"#, r#""quantity":-3"#),
            InvalidValue,
            "quantity",
            "must be at least 1, got -3".into(),
        ),
        (
            add_with(r#""quantity":2"#, r#""quantity":2.5"#),
            WrongType,
            "quantity",
            "expected an integer, got number 2.5".into(),
        ),
        (
            add_with(r#""quantity":2"#, r#""quantity":"2""#),
            WrongType,
            "quantity",
            "expected an integer, got string \"2\"".into(),
        ),
        (
            add_with(r#""quantity":2"#, r#""quantity":4294967296"#),
            InvalidValue,
            "quantity",
            "must be at most 4294967295, got 4294967296".into(),
        ),
        (
            add_with(r#""unit_price_cents":199"#, r#""unit_price_cents":-1"#),
            InvalidValue,
            "product.unit_price_cents",
            "must not be negative, got -1".into(),
        ),
        (
            add_with(r#""category":"pasta","#, ""),
            MissingField,
            "product.category",
            "required field \"category\" is missing".into(),
        ),
        (
            add_with(r#""product_id":"p1""#, r#""product_id":null"#),
            WrongType,
            "product.product_id",
            "expected a string, got null".into(),
        ),
        (
            add_with(
                r#""product":{"product_id":"p1","category":"pasta","unit_price_cents":199}"#,
                r#""product":"p1""#,
            ),
            WrongType,
            "product",
            "expected an object, got string \"p1\"".into(),
        ),
        (
            add_with(r#""quantity":2"#, r#""quantity":2,"email":"x""#),
            Pii,
            "email",
            "field \"email\" carries identifying or socio-demographic data, which basketflow \
             refuses (the only shopper identifier is shopper_id)"
                .into(),
        ),
        (
            add_with(r#""category":"pasta""#, r#""category":"pasta","Brand_Owner":{"First-Name":"Jo"}"#),
            Pii,
            "product.Brand_Owner.First-Name",
            "field \"First-Name\" carries identifying or socio-demographic data, which \
             basketflow refuses (the only shopper identifier is shopper_id)"
                .into(),
        ),
        (
            add_with(r#""quantity":2"#, r#""quantity":2,"context":{"who":[{"AGE":33}]}"#),
            Pii,
            "context.who[0].AGE",
            "field \"AGE\" carries identifying or socio-demographic data, which basketflow \
             refuses (the only shopper identifier is shopper_id)"
                .into(),
        ),
        (
            add_with(r#""quantity":2"#, r#""quantity":2,"shopper":{"gender":"f"}"#),
            Pii,
            "shopper.gender",
            "field \"gender\" carries identifying or socio-demographic data, which basketflow \
             refuses (the only shopper identifier is shopper_id)"
                .into(),
        ),
        (
            r#"{"event_id":"e3","type":"search_performed","retailer_id":"r1","shopper_id":"s1","occurred_at":"2026-11-22T10:00:00Z","query":"jane@doe.org"}"#.into(),
            Pii,
            "query",
            "value contains an email address, which basketflow refuses".into(),
        ),
        (
            order_with_lines("[]"),
            InvalidValue,
            "lines",
            "an order has at least one line".into(),
        ),
        (
            order_with_lines(
                r#"[{"product_id":"p1","category":"pasta","quantity":1,"unit_price_cents":100},{"product_id":"p2","category":"sauce","quantity":0,"unit_price_cents":100}]"#,
            ),
            InvalidValue,
            "lines[1].quantity",
            "must be at least 1, got 0".into(),
        ),
        (
            order_with_lines(r#"[{"product_id":"p1","category":"pasta","quantity":1}]"#),
            MissingField,
            "lines[0].unit_price_cents",
            "required field \"unit_price_cents\" is missing".into(),
        ),
        (
            order_with_lines("[3]"),
            WrongType,
            "lines[0]",
            "expected an object, got number 3".into(),
        ),
        (
            r#"{"event_id":"e4","type":"order_status_changed","retailer_id":"r1","shopper_id":"s1","occurred_at":"2026-11-22T10:00:00Z","order_id":"o1","status":"lost"}"#.into(),
            InvalidValue,
            "status",
            "\"lost\" is not one of delivered|cancelled".into(),
        ),
        (
            r#"{"event_id":"e5","type":"page_viewed","retailer_id":"r1","shopper_id":"s1","occurred_at":"2026-11-22T10:00:00Z","url":"https://shop/x","page_type":"blog"}"#.into(),
            InvalidValue,
            "page_type",
            "\"blog\" is not one of home|category|product|search|basket|checkout|other".into(),
        ),
        (
            r#"{"event_id":"e6","type":"search_performed","retailer_id":"r1","shopper_id":"s1","occurred_at":"2026-11-22T10:00:00Z","query":"pasta","result_count":-1}"#.into(),
            InvalidValue,
            "result_count",
            "must not be negative, got -1".into(),
        ),
    ];
    for (input, code, field, reason) in &cases {
        let got = parse_event(input.as_bytes()).expect_err(input);
        assert_eq!(
            (got.code, got.field.as_str(), got.reason.as_str()),
            (*code, *field, reason.as_str()),
            "input: {input}"
        );
    }
}

#[test]
fn non_utf8_is_malformed_json() {
    let got = parse_event(b"{\"a\":\"\xff\"}").unwrap_err();
    assert_eq!(got.code, RejectCode::MalformedJson);
    assert_eq!(got.field, "");
}

#[test]
fn a_message_of_exactly_the_limit_is_parsed_not_refused_for_size() {
    let base = add_with(r#""quantity":2"#, r#""quantity":2,"pad":"""#);
    let pad = "a".repeat(MAX_MESSAGE_BYTES - base.len());
    let at_limit = base.replacen(r#""pad":"""#, &format!(r#""pad":"{pad}""#), 1);
    assert_eq!(at_limit.len(), MAX_MESSAGE_BYTES);
    let parsed = parse_event(at_limit.as_bytes()).unwrap();
    assert_eq!(parsed.unknown_fields, vec!["pad".to_string()]);
}

#[test]
fn good_input_gives_the_exact_event_and_counts_unknown_fields() {
    let input = add_with(
        r#""quantity":2"#,
        r#""quantity":2,"session_id":null,"context":{"user_agent":"Mozilla/5.0"}"#,
    )
    .replacen(
        r#""unit_price_cents":199"#,
        r#""unit_price_cents":199,"title":"Fusilli 500 g""#,
        1,
    )
    .replacen("2026-11-22T10:00:00Z", "2026-11-22T11:00:00+01:00", 1);
    let parsed = parse_event(input.as_bytes()).unwrap();
    assert_eq!(
        parsed.event,
        Event {
            event_id: "e1".into(),
            retailer_id: "r1".into(),
            shopper_id: "s1".into(),
            session_id: None,
            occurred_at: Timestamp::parse_rfc3339("2026-11-22T10:00:00Z").unwrap(),
            body: EventBody::ProductAdded(BasketChange {
                product: Product {
                    product_id: "p1".into(),
                    category: "pasta".into(),
                    brand: None,
                    unit_price_cents: 199,
                },
                quantity: 2,
            }),
        }
    );
    assert_eq!(
        parsed.unknown_fields,
        vec!["product.title".to_string(), "context".to_string()],
        "unknown fields come in document order"
    );
}

#[test]
fn every_type_parses_with_its_optional_fields() {
    let page = r#"{"event_id":"a","type":"page_viewed","retailer_id":"r","shopper_id":"s","session_id":"x","occurred_at":"2026-01-01T00:00:00Z","url":"https://s/p","page_type":"product","product_id":"p","category":"c"}"#;
    let status = r#"{"event_id":"b","type":"order_status_changed","retailer_id":"r","shopper_id":"s","occurred_at":"2026-01-01T00:00:00Z","order_id":"o","status":"cancelled"}"#;
    let p = parse_event(page.as_bytes()).unwrap();
    assert_eq!(
        p.event.body,
        EventBody::PageViewed {
            url: "https://s/p".into(),
            page_type: PageType::Product,
            product_id: Some("p".into()),
            category: Some("c".into())
        }
    );
    assert_eq!(p.event.session_id.as_deref(), Some("x"));
    assert!(p.unknown_fields.is_empty());
    assert_eq!(
        parse_event(status.as_bytes()).unwrap().event.body,
        EventBody::OrderStatusChanged {
            order_id: "o".into(),
            status: OrderStatus::Cancelled
        }
    );
}
