//! A reward contact: how the retailer reaches a shopper who won a gamified promotion.
//!
//! The only record of basketflow that carries an email address. It arrives as one JSON object
//! on the collector's `POST /v1/reward-contacts`, is checked here ([`RewardContact::parse`]),
//! and is produced to the reward-contacts topic in its canonical form
//! ([`RewardContact::to_json`]) with the key [`contact_key`]: `retailer_id` U+001F
//! `shopper_id` U+001F `contact_id`, one key per stored contact (the topic is compacted: a
//! key per shopper would keep only their latest contact), each named by an erasure's
//! tombstones. The loader parses the topic's messages
//! with the same function, so a message the collector would refuse is never stored.

use basketflow_vocab::ids::id_problem;
use basketflow_vocab::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};

/// Longest id (`contact_id`, `retailer_id`, `shopper_id`, `campaign_id`, `order_id`), in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest email address, in bytes (RFC 5321's limit on a forward path).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Longest local part (before the `@`) of an email address, in bytes (RFC 5321).
pub const MAX_LOCAL_BYTES: usize = 64;
/// Largest body `POST /v1/reward-contacts` accepts, in bytes: one contact is far smaller.
pub const MAX_CONTACT_BYTES: usize = 4096;

/// The fields of a contact, in their canonical order.
pub const FIELDS: [&str; 7] = [
    "contact_id",
    "retailer_id",
    "shopper_id",
    "email",
    "campaign_id",
    "order_id",
    "submitted_at",
];

/// One reward contact, checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RewardContact {
    /// The retailer's id of this contact (unique per retailer: a contact sent again with the
    /// same id replaces the earlier one).
    pub contact_id: String,
    /// The retailer.
    pub retailer_id: String,
    /// The shopper, as in the events (the erasure's key).
    pub shopper_id: String,
    /// Where to reach the winner.
    pub email: String,
    /// The campaign whose prize this contact claims.
    pub campaign_id: String,
    /// The winning order, if the retailer names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// When the shopper gave the address (RFC 3339; normalized to UTC).
    pub submitted_at: Timestamp,
}

/// Why a contact is refused: a stable `code`, the `field` concerned, and a sentence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}{}: {reason}", field.as_ref().map(|f| format!(" ({f})")).unwrap_or_default())]
pub struct ContactError {
    /// `malformed_body`, `unknown_field`, `missing_field` or `invalid_field`.
    pub code: &'static str,
    /// The field, when the refusal is about one.
    pub field: Option<String>,
    /// What is wrong, in one sentence.
    pub reason: String,
}

fn refused(code: &'static str, field: Option<&str>, reason: impl Into<String>) -> ContactError {
    ContactError {
        code,
        field: field.map(str::to_string),
        reason: reason.into(),
    }
}

/// The message key of the contact `contact_id` of `(retailer_id, shopper_id)`: `retailer_id`
/// U+001F `shopper_id` U+001F `contact_id` (the separator cannot occur in an id, see
/// [`basketflow_vocab::ids`]). One key per contact, as the store keeps them: compaction keeps
/// every contact's latest message, and an erasure tombstones each of the shopper's keys.
pub fn contact_key(retailer_id: &str, shopper_id: &str, contact_id: &str) -> String {
    format!("{retailer_id}\u{1f}{shopper_id}\u{1f}{contact_id}")
}

impl RewardContact {
    /// Parses and checks one contact: a JSON object with exactly the fields of [`FIELDS`]
    /// (`order_id` optional, may be `null`), ids of 1 to [`MAX_ID_BYTES`] bytes of printable
    /// text, a plausible email address ([`email_problem`]), and an RFC 3339 `submitted_at`
    /// between 1970 and 2100.
    pub fn parse(bytes: &[u8]) -> Result<RewardContact, ContactError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| refused("malformed_body", None, format!("not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(refused(
                "malformed_body",
                None,
                "the body must be one JSON object (one contact per request)",
            ));
        };
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(refused(
                "unknown_field",
                Some(unknown),
                format!(
                    "field {unknown:?} is not part of a reward contact (fields: {})",
                    FIELDS.join(", ")
                ),
            ));
        }
        let id = |name: &str| required_id(&map, name);
        let contact = RewardContact {
            contact_id: id("contact_id")?,
            retailer_id: id("retailer_id")?,
            shopper_id: id("shopper_id")?,
            email: {
                let email = required_string(&map, "email")?;
                if let Some(why) = email_problem(&email) {
                    return Err(refused("invalid_field", Some("email"), why));
                }
                email
            },
            campaign_id: id("campaign_id")?,
            order_id: match map.get("order_id") {
                None | Some(Value::Null) => None,
                Some(_) => Some(id("order_id")?),
            },
            submitted_at: {
                let text = required_string(&map, "submitted_at")?;
                match Timestamp::parse_rfc3339(&text) {
                    Some(t) if (Timestamp::MIN..Timestamp::MAX).contains(&t) => t,
                    Some(_) => {
                        return Err(refused(
                            "invalid_field",
                            Some("submitted_at"),
                            "must be between 1970-01-01 and 2100-01-01",
                        ))
                    }
                    None => {
                        return Err(refused(
                            "invalid_field",
                            Some("submitted_at"),
                            format!(
                                "not an RFC 3339 timestamp (e.g. 2026-12-04T10:00:00Z): {text:?}"
                            ),
                        ))
                    }
                }
            },
        };
        Ok(contact)
    }

    /// The canonical JSON of the contact: the topic's message payload.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a contact serializes")
    }

    /// Its message key, [`contact_key`].
    pub fn key(&self) -> String {
        contact_key(&self.retailer_id, &self.shopper_id, &self.contact_id)
    }
}

fn required_string(map: &Map<String, Value>, name: &str) -> Result<String, ContactError> {
    match map.get(name) {
        None | Some(Value::Null) => Err(refused(
            "missing_field",
            Some(name),
            format!("field {name:?} is required"),
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(refused(
            "invalid_field",
            Some(name),
            format!("field {name:?} must be a string, got {other}"),
        )),
    }
}

fn required_id(map: &Map<String, Value>, name: &str) -> Result<String, ContactError> {
    let id = required_string(map, name)?;
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(refused(
            "invalid_field",
            Some(name),
            format!("must have 1 to {MAX_ID_BYTES} bytes, got {}", id.len()),
        ));
    }
    if let Some(why) = id_problem(&id) {
        return Err(refused("invalid_field", Some(name), why));
    }
    Ok(id)
}

/// Why `email` is not a plausible address, or `None`: `local@domain`, at most
/// [`MAX_EMAIL_BYTES`] bytes, a local part of 1 to [`MAX_LOCAL_BYTES`] printable ASCII
/// characters without spaces or `"(),:;<>[\]@`, and a domain of at least two dot-separated
/// labels of letters, digits and inner `-`, the last one of letters. (Quoted local parts and
/// address literals are refused: no retailer's sign-up form produces them.)
///
/// ```
/// use basketflow_rewards::contact::email_problem;
/// assert_eq!(email_problem("jane.doe+win@shop.example"), None);
/// assert!(email_problem("jane@localhost").is_some());
/// assert!(email_problem("jane doe@shop.example").is_some());
/// ```
pub fn email_problem(email: &str) -> Option<String> {
    if email.is_empty() || email.len() > MAX_EMAIL_BYTES {
        return Some(format!(
            "must have 1 to {MAX_EMAIL_BYTES} bytes, got {}",
            email.len()
        ));
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Some("not an email address: no @".into());
    };
    if local.is_empty() || local.len() > MAX_LOCAL_BYTES {
        return Some(format!(
            "the part before the @ must have 1 to {MAX_LOCAL_BYTES} bytes, got {}",
            local.len()
        ));
    }
    if !local
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"\"(),:;<>[\\]@".contains(&b))
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return Some("the part before the @ is not a plain address".into());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return Some(format!(
            "the domain {domain:?} is not a host name such as shop.example"
        ));
    }
    let tld = labels[labels.len() - 1];
    if tld.len() < 2 || !tld.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Some(format!("the domain {domain:?} has no top-level domain"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"contact_id":"c1","retailer_id":"r1","shopper_id":"s1","email":"Jane.Doe+win@shop.example","campaign_id":"game","order_id":"o1","submitted_at":"2026-12-04T11:00:00+01:00"}"#;

    fn code(body: &str) -> (&'static str, Option<String>) {
        let e = RewardContact::parse(body.as_bytes()).unwrap_err();
        (e.code, e.field)
    }

    #[test]
    fn a_good_contact_parses_and_is_written_canonically() {
        let c = RewardContact::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(c.order_id.as_deref(), Some("o1"));
        assert_eq!(c.key(), "r1\u{1f}s1\u{1f}c1");
        assert_eq!(
            String::from_utf8(c.to_json()).unwrap(),
            r#"{"contact_id":"c1","retailer_id":"r1","shopper_id":"s1","email":"Jane.Doe+win@shop.example","campaign_id":"game","order_id":"o1","submitted_at":"2026-12-04T10:00:00Z"}"#
        );
        assert_eq!(RewardContact::parse(&c.to_json()).unwrap(), c, "round trip");
        let no_order = GOOD.replace(r#""order_id":"o1""#, r#""order_id":null"#);
        let c = RewardContact::parse(no_order.as_bytes()).unwrap();
        assert_eq!(c.order_id, None);
        assert!(!String::from_utf8(c.to_json()).unwrap().contains("order_id"));
    }

    #[test]
    fn every_bad_contact_has_its_code_and_field() {
        let field = |f: &str| Some(f.to_string());
        assert_eq!(code("[]"), ("malformed_body", None));
        assert_eq!(code("{"), ("malformed_body", None));
        assert_eq!(
            code(&GOOD.replace(r#""order_id""#, r#""name":"Jane","order_id""#)),
            ("unknown_field", field("name"))
        );
        assert_eq!(
            code(&GOOD.replace(r#""email":"Jane.Doe+win@shop.example","#, "")),
            ("missing_field", field("email"))
        );
        assert_eq!(
            code(&GOOD.replace(r#""shopper_id":"s1""#, r#""shopper_id":7"#)),
            ("invalid_field", field("shopper_id"))
        );
        assert_eq!(
            code(&GOOD.replace(r#""contact_id":"c1""#, r#""contact_id":"""#)),
            ("invalid_field", field("contact_id"))
        );
        assert_eq!(
            code(&GOOD.replace("c1", &"c".repeat(MAX_ID_BYTES + 1))),
            ("invalid_field", field("contact_id"))
        );
        assert_eq!(
            code(&GOOD.replace("Jane.Doe+win@shop.example", "not-an-email")),
            ("invalid_field", field("email"))
        );
        assert_eq!(
            code(&GOOD.replace("2026-12-04T11:00:00+01:00", "yesterday")),
            ("invalid_field", field("submitted_at"))
        );
    }

    #[test]
    fn emails_are_plausible_or_refused() {
        for good in ["a@b.co", "x_y-z.w+tag@mail.shop-1.example", "é"] {
            if good == "é" {
                assert!(email_problem(good).is_some());
            } else {
                assert_eq!(email_problem(good), None, "{good}");
            }
        }
        for bad in [
            "",
            "@shop.example",
            "jane@",
            "jane@shop",
            "jane@shop.e1",
            "jane@@shop.example",
            "jane@-shop.example",
            ".jane@shop.example",
            "ja..ne@shop.example",
            "jane(x)@shop.example",
            "jane@shop..example",
        ] {
            assert!(email_problem(bad).is_some(), "{bad:?} should be refused");
        }
        let long_local = format!("{}@shop.example", "a".repeat(MAX_LOCAL_BYTES + 1));
        assert!(email_problem(&long_local).is_some());
        let long = format!("a@{}.example", "b".repeat(250));
        assert!(email_problem(&long).is_some());
    }
}
