//! Validation of one tracker message against the event contract.
//!
//! [`parse_event`] turns the bytes of one message into an [`Event`] or a [`Rejection`] that names
//! the field (a path such as `lines[2].quantity`, or `""` for the message as a whole), a stable
//! [`RejectCode`] for counting, and a sentence for the integrator. Checks run in this order, and
//! the first failure is the one reported, so a message always gets the same reason:
//!
//! 1. size: over [`MAX_MESSAGE_BYTES`] is `too_large`, before any parsing;
//! 2. JSON syntax (`malformed_json`), then the top level must be an object (`wrong_type`);
//! 3. privacy: any PII field name or email-shaped string, at any depth (`pii`), see [`crate::pii`];
//! 4. `type`: present (`missing_field`), a string (`wrong_type`), known (`unknown_type`);
//! 5. the common fields, then the type's own fields, in contract order: presence, JSON type,
//!    then value (`invalid_value`: over-long ids, ids that are empty, blank or hold a control or
//!    bidirectional formatting character ([`basketflow_vocab::ids`]), quantities below 1, negative money,
//!    unknown enum values, timestamps that are not RFC 3339 or outside 1970..2100).
//!
//! Fields the contract does not know are tolerated (forward compatibility) and reported in
//! [`Parsed::unknown_fields`] so that callers can count them. `null` stands for an absent
//! optional field; for a required field it is `wrong_type`.

use std::fmt;

use serde::Serialize;

use basketflow_vocab::ids::id_problem;
use basketflow_vocab::{
    BasketChange, Event, EventBody, EventType, OrderLine, OrderStatus, PageType, Product, Timestamp,
};

use crate::json::{self, Json, Object};
use crate::pii;

/// Messages larger than this are refused before parsing.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Ids (`event_id`, `shopper_id`, `product_id`, ...) may not be longer than this, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Why a message was refused, as a stable label (for metrics and dead letters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// Larger than [`MAX_MESSAGE_BYTES`].
    TooLarge,
    /// Not valid JSON (or not UTF-8).
    MalformedJson,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type.
    WrongType,
    /// The `type` field names no event type of the contract.
    UnknownType,
    /// A field has the right type but a value the contract forbids.
    InvalidValue,
    /// Identifying or socio-demographic data.
    Pii,
}

impl RejectCode {
    /// Every code, in the order of the checks.
    pub const ALL: [RejectCode; 7] = [
        RejectCode::TooLarge,
        RejectCode::MalformedJson,
        RejectCode::MissingField,
        RejectCode::WrongType,
        RejectCode::UnknownType,
        RejectCode::InvalidValue,
        RejectCode::Pii,
    ];

    /// The label of this code (`too_large`, `malformed_json`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::TooLarge => "too_large",
            RejectCode::MalformedJson => "malformed_json",
            RejectCode::MissingField => "missing_field",
            RejectCode::WrongType => "wrong_type",
            RejectCode::UnknownType => "unknown_type",
            RejectCode::InvalidValue => "invalid_value",
            RejectCode::Pii => "pii",
        }
    }
}

/// A refused message: which field, what kind of fault, and a sentence saying what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The kind of fault.
    pub code: RejectCode,
    /// Path of the offending field (`product.unit_price_cents`, `lines[0].quantity`); empty for
    /// the message as a whole.
    pub field: String,
    /// What is wrong, for the tracker's integrator.
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.code.as_str(), self.reason)
        } else {
            write!(
                f,
                "{} at {}: {}",
                self.code.as_str(),
                self.field,
                self.reason
            )
        }
    }
}

impl std::error::Error for Rejection {}

/// A valid event and the fields it carried that the contract does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The event.
    pub event: Event,
    /// Paths of tolerated unknown fields (`context`, `product.title`, ...), in document order.
    pub unknown_fields: Vec<String>,
}

/// The top-level fields the contract reads, of any event type. The objects and arrays of
/// other top-level members (a tracker's `context`: two thirds of a typical message) are only
/// checked for privacy, never built ([`json::parse_skimming`]); the verdict is the same.
pub const CONTRACT_FIELDS: [&str; 19] = [
    "type",
    "event_id",
    "retailer_id",
    "shopper_id",
    "session_id",
    "occurred_at",
    "url",
    "page_type",
    "product_id",
    "category",
    "target_url",
    "query",
    "result_count",
    "product",
    "quantity",
    "order_id",
    "lines",
    "total_cents",
    "status",
];

/// How [`parse_event`] skims: members the contract does not read are checked for identifying
/// data only, and any sign of it has the whole message built, so that the privacy check
/// (step 3) names the field as it would without skimming.
struct ContractSkim;

impl json::Skim for ContractSkim {
    fn skims(&self, key: &str) -> bool {
        !CONTRACT_FIELDS.contains(&key)
    }

    fn needs_tree_for_key(&self, key: &str) -> bool {
        pii::pii_key(key)
    }

    fn needs_tree_for_string(&self, s: &str) -> bool {
        pii::looks_like_email(s)
    }
}

/// Validates one message and builds its event. See the module docs for the order of checks.
pub fn parse_event(bytes: &[u8]) -> Result<Parsed, Rejection> {
    parse_event_with(bytes, |b| json::parse_skimming(b, &ContractSkim))
}

/// [`parse_event`], with `parse` reading the message's JSON (skimming or not), once its size
/// has passed.
fn parse_event_with<'b>(
    bytes: &'b [u8],
    parse: impl FnOnce(&'b [u8]) -> Result<Json<'b>, serde_json::Error>,
) -> Result<Parsed, Rejection> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(reject(
            RejectCode::TooLarge,
            "",
            format!(
                "message is {} bytes, the limit is {MAX_MESSAGE_BYTES}",
                bytes.len()
            ),
        ));
    }
    let value = parse(bytes).map_err(|e| {
        reject(
            RejectCode::MalformedJson,
            "",
            if bytes.iter().all(u8::is_ascii_whitespace) {
                "empty message".to_string()
            } else {
                format!("not valid JSON: {e}")
            },
        )
    })?;
    let Json::Object(map) = &value else {
        return Err(reject(
            RejectCode::WrongType,
            "",
            format!("expected a JSON object, got {}", describe(&value)),
        ));
    };
    if has_pii(&value) {
        find_pii(&value, &mut String::new())?;
    }

    let mut unknown = Vec::new();
    let mut top = Fields::new(map, String::new());
    let type_name = top.required_str("type")?;
    let Some(event_type) = EventType::from_name(type_name) else {
        return Err(reject(
            RejectCode::UnknownType,
            "type",
            format!(
                "unknown event type {type_name:?}; expected one of {}",
                EventType::ALL.map(EventType::as_str).join(", ")
            ),
        ));
    };
    let event_id = top.id("event_id")?;
    let retailer_id = top.id("retailer_id")?;
    let shopper_id = top.id("shopper_id")?;
    let session_id = top.optional_id("session_id")?;
    let occurred_at = top.timestamp("occurred_at")?;
    let body = match event_type {
        EventType::PageViewed => EventBody::PageViewed {
            url: top.text("url")?,
            page_type: top.one_of("page_type", &PageType::ALL, |p| p.as_str())?,
            product_id: top.optional_id("product_id")?,
            category: top.optional_id("category")?,
        },
        EventType::LinkClicked => EventBody::LinkClicked {
            url: top.text("url")?,
            target_url: top.optional_text("target_url")?,
            product_id: top.optional_id("product_id")?,
        },
        EventType::SearchPerformed => EventBody::SearchPerformed {
            query: top.text("query")?,
            result_count: top.optional_count("result_count")?,
        },
        EventType::ProductAdded | EventType::ProductRemoved => {
            let mut p = top.object("product")?;
            let product = Product {
                product_id: p.id("product_id")?,
                category: p.id("category")?,
                brand: p.optional_id("brand")?,
                unit_price_cents: p.cents("unit_price_cents")?,
            };
            p.finish(&mut unknown);
            let change = BasketChange {
                product,
                quantity: top.quantity("quantity")?,
            };
            if event_type == EventType::ProductAdded {
                EventBody::ProductAdded(change)
            } else {
                EventBody::ProductRemoved(change)
            }
        }
        EventType::OrderPaid => {
            let order_id = top.id("order_id")?;
            let items = top.array("lines")?;
            if items.is_empty() {
                return Err(reject(
                    RejectCode::InvalidValue,
                    "lines",
                    "an order has at least one line".to_string(),
                ));
            }
            let mut lines = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let path = format!("lines[{i}]");
                let Json::Object(m) = item else {
                    return Err(wrong_type(&path, "an object", item));
                };
                let mut l = Fields::new(m, path);
                lines.push(OrderLine {
                    product_id: l.id("product_id")?,
                    category: l.id("category")?,
                    brand: l.optional_id("brand")?,
                    quantity: l.quantity("quantity")?,
                    unit_price_cents: l.cents("unit_price_cents")?,
                });
                l.finish(&mut unknown);
            }
            EventBody::OrderPaid {
                order_id,
                lines,
                total_cents: top.cents("total_cents")?,
            }
        }
        EventType::OrderStatusChanged => EventBody::OrderStatusChanged {
            order_id: top.id("order_id")?,
            status: top.one_of("status", &OrderStatus::ALL, |s| s.as_str())?,
        },
    };
    top.finish(&mut unknown);
    unknown.sort_by_key(|path| field_order(map, path));
    Ok(Parsed {
        event: Event {
            event_id,
            retailer_id,
            shopper_id,
            session_id,
            occurred_at,
            body,
        },
        unknown_fields: unknown,
    })
}

/// Position of an unknown field's top-level key in the message (document order when the JSON
/// map preserves it; key order otherwise), so the list does not depend on which check ran first.
fn field_order(map: &Object, path: &str) -> (usize, String) {
    let head = path.split(['.', '[']).next().unwrap_or(path);
    (
        map.keys().position(|k| k == head).unwrap_or(usize::MAX),
        path.to_string(),
    )
}

fn reject(code: RejectCode, field: &str, reason: String) -> Rejection {
    Rejection {
        code,
        field: field.to_string(),
        reason,
    }
}

fn wrong_type(field: &str, expected: &str, got: &Json) -> Rejection {
    reject(
        RejectCode::WrongType,
        field,
        format!("expected {expected}, got {}", describe(got)),
    )
}

/// A JSON value's kind, with the value itself when it is short, for rejection sentences.
fn describe(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("boolean {b}"),
        Json::Number(n) => format!("number {n}"),
        Json::String(s) if s.len() <= 40 => format!("string {s:?}"),
        Json::String(_) => "a string".into(),
        Json::Array(_) => "an array".into(),
        Json::Object(_) => "an object".into(),
        // (The contract reads no skimmed member; said for completeness.)
        Json::Unread(text) if text.starts_with('{') => "an object".into(),
        Json::Unread(_) => "an array".into(),
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Whether any field name or string value, at any depth, is identifying data: the question
/// [`find_pii`] answers with a path, without building paths (nearly every message says no).
fn has_pii(v: &Json) -> bool {
    match v {
        Json::Object(m) => m.iter().any(|(k, child)| pii::pii_key(k) || has_pii(child)),
        Json::Array(items) => items.iter().any(has_pii),
        Json::String(s) => pii::looks_like_email(s),
        // Skimmed only when nothing in it flagged identifying data.
        Json::Unread(_) => false,
        _ => false,
    }
}

/// Depth-first search for PII field names and email-shaped strings.
fn find_pii(v: &Json, path: &mut String) -> Result<(), Rejection> {
    match v {
        Json::Object(m) => {
            for (k, child) in m.iter() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                if pii::pii_key(k) {
                    return Err(reject(
                        RejectCode::Pii,
                        path,
                        format!(
                            "field {k:?} carries identifying or socio-demographic data, \
                             which basketflow refuses (the only shopper identifier is shopper_id)"
                        ),
                    ));
                }
                find_pii(child, path)?;
                path.truncate(len);
            }
        }
        Json::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                find_pii(child, path)?;
                path.truncate(len);
            }
        }
        Json::String(s) if pii::looks_like_email(s) => {
            return Err(reject(
                RejectCode::Pii,
                path,
                "value contains an email address, which basketflow refuses".to_string(),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// The fields of one JSON object, read one by one; remembers which keys the contract used.
struct Fields<'a> {
    map: &'a Object<'a>,
    path: String,
    used: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn new(map: &'a Object<'a>, path: String) -> Self {
        Fields {
            map,
            path,
            used: Vec::new(),
        }
    }

    fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The member `key` as the message has it.
    fn member(&self, key: &'static str) -> Option<&'a Json<'a>> {
        let value = self.map.get(key);
        debug_assert!(
            !matches!(value, Some(Json::Unread(_))),
            "the contract reads {key:?}, which was skimmed: add it to CONTRACT_FIELDS"
        );
        value
    }

    /// The value of `key`, `None` when absent or null.
    fn get(&mut self, key: &'static str) -> Option<&'a Json<'a>> {
        self.used.push(key);
        self.member(key).filter(|v| !v.is_null())
    }

    fn required(&mut self, key: &'static str) -> Result<&'a Json<'a>, Rejection> {
        self.used.push(key);
        match self.member(key) {
            Some(v) => Ok(v),
            None => Err(reject(
                RejectCode::MissingField,
                &self.path(key),
                format!("required field {key:?} is missing"),
            )),
        }
    }

    fn required_str(&mut self, key: &'static str) -> Result<&'a str, Rejection> {
        let v = self.required(key)?;
        v.as_str()
            .ok_or_else(|| wrong_type(&self.path(key), "a string", v))
    }

    /// An identifier ([`basketflow_vocab::ids`]): at most [`MAX_ID_BYTES`] bytes of non-blank
    /// printable text (no control or bidirectional formatting characters).
    fn check_id(&self, key: &str, s: &str) -> Result<String, Rejection> {
        if s.len() > MAX_ID_BYTES {
            return Err(reject(
                RejectCode::InvalidValue,
                &self.path(key),
                format!("is {} bytes, the limit is {MAX_ID_BYTES}", s.len()),
            ));
        }
        if let Some(why) = id_problem(s) {
            return Err(reject(RejectCode::InvalidValue, &self.path(key), why));
        }
        Ok(s.to_string())
    }

    /// A required identifier (see [`Self::check_id`]).
    fn id(&mut self, key: &'static str) -> Result<String, Rejection> {
        let s = self.required_str(key)?;
        self.check_id(key, s)
    }

    fn optional_id(&mut self, key: &'static str) -> Result<Option<String>, Rejection> {
        match self.get(key) {
            None => Ok(None),
            Some(Json::String(s)) => self.check_id(key, s).map(Some),
            Some(v) => Err(wrong_type(&self.path(key), "a string", v)),
        }
    }

    /// Required free text (a URL, a query): a non-empty string.
    fn text(&mut self, key: &'static str) -> Result<String, Rejection> {
        let s = self.required_str(key)?;
        if s.is_empty() {
            return Err(reject(
                RejectCode::InvalidValue,
                &self.path(key),
                "must not be empty".into(),
            ));
        }
        Ok(s.to_string())
    }

    fn optional_text(&mut self, key: &'static str) -> Result<Option<String>, Rejection> {
        match self.get(key) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.to_string())),
            Some(v) => Err(wrong_type(&self.path(key), "a string", v)),
        }
    }

    fn integer(&self, key: &str, v: &Json) -> Result<i128, Rejection> {
        match v {
            // JSON Schema counts 2.0 as an integer; so do we, up to 2^53 where f64 is exact.
            Json::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0)
                        .map(|f| f as i128)
                })
                .ok_or_else(|| wrong_type(&self.path(key), "an integer", v)),
            _ => Err(wrong_type(&self.path(key), "an integer", v)),
        }
    }

    /// A required quantity: an integer from 1 to `u32::MAX`.
    fn quantity(&mut self, key: &'static str) -> Result<u32, Rejection> {
        let v = self.required(key)?;
        let n = self.integer(key, v)?;
        if n < 1 {
            return Err(reject(
                RejectCode::InvalidValue,
                &self.path(key),
                format!("must be at least 1, got {n}"),
            ));
        }
        u32::try_from(n).map_err(|_| {
            reject(
                RejectCode::InvalidValue,
                &self.path(key),
                format!("must be at most {}, got {n}", u32::MAX),
            )
        })
    }

    /// A required amount of money in cents: a non-negative integer that fits `i64`.
    fn cents(&mut self, key: &'static str) -> Result<i64, Rejection> {
        let v = self.required(key)?;
        let n = self.integer(key, v)?;
        if n < 0 {
            return Err(reject(
                RejectCode::InvalidValue,
                &self.path(key),
                format!("must not be negative, got {n}"),
            ));
        }
        i64::try_from(n).map_err(|_| {
            reject(
                RejectCode::InvalidValue,
                &self.path(key),
                format!("must be at most {}, got {n}", i64::MAX),
            )
        })
    }

    fn optional_count(&mut self, key: &'static str) -> Result<Option<u64>, Rejection> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = self.integer(key, v)?;
        u64::try_from(n).map(Some).map_err(|_| {
            reject(
                RejectCode::InvalidValue,
                &self.path(key),
                format!("must not be negative, got {n}"),
            )
        })
    }

    fn timestamp(&mut self, key: &'static str) -> Result<Timestamp, Rejection> {
        let s = self.required_str(key)?;
        let t = Timestamp::parse_rfc3339(s).ok_or_else(|| {
            reject(
                RejectCode::InvalidValue,
                &self.path(key),
                format!("{s:?} is not an RFC 3339 timestamp (e.g. 2026-11-22T10:15:00Z)"),
            )
        })?;
        if t < Timestamp::MIN || t >= Timestamp::MAX {
            return Err(reject(
                RejectCode::InvalidValue,
                &self.path(key),
                format!("{s:?} is outside 1970-01-01..2100-01-01"),
            ));
        }
        Ok(t)
    }

    fn one_of<T: Copy>(
        &mut self,
        key: &'static str,
        all: &[T],
        name: fn(T) -> &'static str,
    ) -> Result<T, Rejection> {
        let s = self.required_str(key)?;
        all.iter().copied().find(|t| name(*t) == s).ok_or_else(|| {
            reject(
                RejectCode::InvalidValue,
                &self.path(key),
                format!(
                    "{s:?} is not one of {}",
                    all.iter().map(|t| name(*t)).collect::<Vec<_>>().join("|")
                ),
            )
        })
    }

    fn object(&mut self, key: &'static str) -> Result<Fields<'a>, Rejection> {
        match self.required(key)? {
            Json::Object(m) => Ok(Fields::new(m, self.path(key))),
            v => Err(wrong_type(&self.path(key), "an object", v)),
        }
    }

    fn array(&mut self, key: &'static str) -> Result<&'a Vec<Json<'a>>, Rejection> {
        match self.required(key)? {
            Json::Array(items) => Ok(items),
            v => Err(wrong_type(&self.path(key), "an array", v)),
        }
    }

    /// Appends the paths of keys the contract did not read.
    fn finish(self, unknown: &mut Vec<String>) {
        for k in self.map.keys() {
            if !self.used.contains(&k) {
                unknown.push(join(&self.path, k));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basketflow_vocab::arbitrary;
    use proptest::prelude::*;

    /// Members a tracker adds, some with identifying data deep inside, some repeated.
    fn extra_member() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("context"),
            Just("app"),
            Just("e-mail"),
            Just("lines"),
            Just("product")
        ];
        let leaf = prop_oneof![
            Just(r#""Mozilla/5.0""#.to_string()),
            Just(r#""jane@example.com""#.to_string()),
            Just(r#""esc\"aped""#.to_string()),
            Just("12.5e3".to_string()),
            Just("true".to_string()),
            Just("null".to_string()),
        ];
        let inner_key = prop_oneof![
            Just("ua"),
            Just("locale"),
            Just("first_name"),
            Just("DateOfBirth"),
            Just("ua")
        ];
        let value = leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((inner_key.clone(), inner), 0..4).prop_map(|v| {
                    let members: Vec<String> =
                        v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        });
        (key, value).prop_map(|(k, v)| format!("\"{k}\":{v}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Skimming the members the contract does not read gives every message the verdict it
        /// gets when the whole message is built: the same event and unknown fields, or the same
        /// rejection (code, field and sentence).
        #[test]
        fn skimming_changes_no_verdict(
            event in arbitrary::event(),
            before in prop::collection::vec(extra_member(), 0..3),
            after in prop::collection::vec(extra_member(), 0..3),
            cut in any::<prop::sample::Index>(),
        ) {
            let json = event.to_json();
            let inner = &json[1..json.len() - 1];
            let members: Vec<&str> = before
                .iter()
                .map(String::as_str)
                .chain([inner])
                .chain(after.iter().map(String::as_str))
                .collect();
            let text = format!("{{{}}}", members.join(","));
            let whole = |bytes: &[u8]| parse_event_with(bytes, json::parse);
            prop_assert_eq!(parse_event(text.as_bytes()), whole(text.as_bytes()), "{}", text);
            let cut = &text.as_bytes()[..cut.index(text.len())];
            prop_assert_eq!(parse_event(cut), whole(cut));
        }
    }
}
