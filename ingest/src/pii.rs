//! Privacy by design: recognising identifying and socio-demographic data.
//!
//! basketflow accepts one shopper identifier, the retailer's pseudonymous `shopper_id`. A message
//! carrying anything else that identifies or describes a person (a name, an email, a phone
//! number, an address, a birth date, an age, a gender, an ethnicity...) is refused whole, at any
//! depth, whatever the key's case or separators. Two checks do it:
//!
//! - [`pii_key`]: a field name, normalized (lower case, letters and digits only), is either one
//!   of the exact names below (short words that are only PII when they stand alone, such as
//!   `name` or `age`: `product_title` and `page` pass) or contains one of the unambiguous stems
//!   (`email`, `phone`, `birth`, `gender`, ...).
//! - [`looks_like_email`]: a string value that contains an email address (a shopper typing their
//!   email into the search box) is refused too.

use std::cell::RefCell;
use std::collections::HashMap;

/// Normalized field names that are PII when they are the whole name.
const EXACT: &[&str] = &[
    "name",
    "names",
    "fullname",
    "firstname",
    "lastname",
    "givenname",
    "familyname",
    "middlename",
    "maidenname",
    "nickname",
    "username",
    "surname",
    "customername",
    "shoppername",
    "mail",
    "tel",
    "mobile",
    "fax",
    "street",
    "city",
    "zip",
    "zipcode",
    "postcode",
    "postalcode",
    "dob",
    "age",
    "sex",
    "race",
    "religion",
    "nationality",
    "maritalstatus",
    "income",
    "ssn",
    "socialsecuritynumber",
    "passport",
    "passportnumber",
    "nationalid",
    "ip",
    "ipaddress",
];

/// Stems that make any normalized field name containing them PII.
const STEMS: &[&str] = &[
    "email",
    "phone",
    "birth",
    "firstname",
    "lastname",
    "fullname",
    "surname",
    "gender",
    "ethnic",
    "address",
];

/// Whether a JSON field name denotes identifying or socio-demographic data.
///
/// ```
/// use basketflow_ingest::pii::pii_key;
/// assert!(pii_key("E-Mail"));
/// assert!(pii_key("customer_first_name"));
/// assert!(pii_key("Age"));
/// assert!(!pii_key("page_type"));
/// assert!(!pii_key("product_title"));
/// ```
pub fn pii_key(key: &str) -> bool {
    // Messages repeat the same few dozen keys: each thread remembers its verdicts, up to
    // `REMEMBERED_KEYS` of them (then it forgets them all, so a flood of one-off keys costs
    // memory once, and the common keys come back).
    KNOWN.with_borrow_mut(|known| {
        if let Some(&verdict) = known.get(key) {
            return verdict;
        }
        let verdict = decide(key);
        if known.len() >= REMEMBERED_KEYS {
            known.clear();
        }
        if key.len() <= MAX_REMEMBERED_KEY {
            known.insert(key.into(), verdict);
        }
        verdict
    })
}

/// How many keys' verdicts a thread remembers.
const REMEMBERED_KEYS: usize = 4096;
/// Longer keys are not remembered.
const MAX_REMEMBERED_KEY: usize = 64;

thread_local! {
    static KNOWN: RefCell<HashMap<Box<str>, bool, foldhash::fast::FixedState>> =
        RefCell::new(HashMap::with_hasher(foldhash::fast::FixedState::default()));
}

/// [`pii_key`], computed.
fn decide(key: &str) -> bool {
    // Every message's every key passes here: an ASCII key (all of the contract's, nearly all
    // others) is normalized into a stack buffer, without allocating or Unicode tables.
    let mut buffer = [0u8; 64];
    if key.is_ascii() && key.len() <= buffer.len() {
        let mut n = 0;
        for b in key.bytes().filter(u8::is_ascii_alphanumeric) {
            buffer[n] = b.to_ascii_lowercase();
            n += 1;
        }
        return normalized_pii(&buffer[..n]);
    }
    let norm: String = key
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    normalized_pii(norm.as_bytes())
}

/// Which bytes some stem starts with.
const STEM_STARTS: [bool; 256] = {
    let mut starts = [false; 256];
    let mut i = 0;
    while i < STEMS.len() {
        starts[STEMS[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    starts
};

/// The length of the shortest stem.
const SHORTEST_STEM: usize = {
    let mut shortest = usize::MAX;
    let mut i = 0;
    while i < STEMS.len() {
        if STEMS[i].len() < shortest {
            shortest = STEMS[i].len();
        }
        i += 1;
    }
    shortest
};

/// [`pii_key`] of a name already normalized (lower case, letters and digits only).
fn normalized_pii(norm: &[u8]) -> bool {
    let Some(&first) = norm.first() else {
        return false;
    };
    // Every key of every message passes here: names of another length or first letter are
    // passed over without a byte comparison.
    if EXACT
        .iter()
        .any(|e| e.len() == norm.len() && e.as_bytes()[0] == first && e.as_bytes() == norm)
    {
        return true;
    }
    // One pass over the name, trying the stems only where a stem could start.
    let last_start = norm.len().saturating_sub(SHORTEST_STEM - 1);
    (0..last_start).any(|i| {
        let rest = &norm[i..];
        STEM_STARTS[rest[0] as usize] && STEMS.iter().any(|stem| rest.starts_with(stem.as_bytes()))
    })
}

/// Whether a string contains something shaped like an email address (`local@domain.tld`).
///
/// ```
/// use basketflow_ingest::pii::looks_like_email;
/// assert!(looks_like_email("contact jane.doe+shop@example.co.uk please"));
/// assert!(!looks_like_email("https://shop.example/@brand/pasta"));
/// assert!(!looks_like_email("50% @ checkout"));
/// ```
pub fn looks_like_email(s: &str) -> bool {
    if !s.contains('@') {
        return false;
    }
    let bytes = s.as_bytes();
    let local_char = |b: u8| b.is_ascii_alphanumeric() || b"._%+-".contains(&b);
    let domain_char = |b: u8| b.is_ascii_alphanumeric() || b".-".contains(&b);
    bytes.iter().enumerate().any(|(at, &b)| {
        if b != b'@' {
            return false;
        }
        let local_len = bytes[..at]
            .iter()
            .rev()
            .take_while(|&&c| local_char(c))
            .count();
        let domain: &[u8] = {
            let rest = &bytes[at + 1..];
            let n = rest.iter().take_while(|&&c| domain_char(c)).count();
            &rest[..n]
        };
        let domain = domain.strip_suffix(b".").unwrap_or(domain);
        local_len > 0
            && match domain.iter().rposition(|&c| c == b'.') {
                Some(dot) => {
                    dot > 0
                        && domain.len() - dot > 2
                        && domain[dot + 1..].iter().all(u8::is_ascii_alphabetic)
                }
                None => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_pii_names_whatever_their_spelling() {
        for k in [
            "email",
            "EMAIL",
            "e-mail",
            "emailAddress",
            "name",
            "Name",
            "first_name",
            "FirstName",
            "last-name",
            "surname",
            "phone",
            "phone_number",
            "mobile",
            "address",
            "shipping_address",
            "birth_date",
            "dateOfBirth",
            "dob",
            "age",
            "gender",
            "sex",
            "ethnicity",
            "ethnic_origin",
            "zip_code",
        ] {
            assert!(pii_key(k), "{k} should be PII");
        }
    }

    #[test]
    fn contract_fields_and_tracker_context_are_not_pii() {
        // (The tracker's tests read this list, and `CONTRACT_FIELDS`, from the sources.)
        for k in crate::CONTRACT_FIELDS.into_iter().chain([
            "brand",
            "unit_price_cents",
            "context",
            "user_agent",
            "page_title",
            "referrer",
            "locale",
            "product_title",
            "category_name_fr",
            "message",
            "usage",
            "page",
            "image",
            "language",
            "stage",
        ]) {
            assert!(!pii_key(k), "{k} should not be PII");
        }
    }

    /// The rule as first written (allocating, Unicode throughout): the fast path must agree.
    fn reference(key: &str) -> bool {
        let norm: String = key
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        EXACT.contains(&norm.as_str()) || STEMS.iter().any(|stem| norm.contains(stem))
    }

    #[test]
    fn the_fast_path_agrees_with_the_rule_on_every_kind_of_key() {
        let long = "x".repeat(80);
        let keys = [
            "event_id",
            "E-Mail",
            "N_A_M_E",
            "Ünterschrift_E-Mail",
            "Âge",
            "catégorie",
            "ΕΜΑΙΛ",
            "e\u{301}mail",
            "",
            "__",
            "ip",
            "zip_code2",
            "Name ",
            "ＥＭＡＩＬ",
            &long,
            &format!("{long}_email"),
            &format!("{}email", "x".repeat(59)),
            &format!("{}email", "x".repeat(60)),
        ];
        for k in keys {
            assert_eq!(decide(k), reference(k), "{k:?}");
            // Asked twice: once computed, once remembered.
            assert_eq!(pii_key(k), reference(k), "{k:?}");
            assert_eq!(pii_key(k), reference(k), "{k:?}");
        }
        assert!(pii_key(&format!("{long}_email")));
        assert!(!pii_key(&long));
        assert!(pii_key("N_A_M_E"));
    }

    #[test]
    fn a_flood_of_new_keys_leaves_the_verdicts_right_and_the_memory_bounded() {
        for i in 0..3 * REMEMBERED_KEYS {
            let key = if i % 2 == 0 {
                format!("field_{i}")
            } else {
                format!("email_{i}")
            };
            assert_eq!(pii_key(&key), i % 2 == 1, "{key}");
            assert!(KNOWN.with_borrow(HashMap::len) <= REMEMBERED_KEYS);
        }
        assert!(pii_key("e_mail") && !pii_key("event_id"));
    }

    #[test]
    fn finds_emails_in_free_text_only_when_shaped_like_one() {
        assert!(looks_like_email("a@b.fr"));
        assert!(looks_like_email("mail me: x_y@sub.domain.com."));
        assert!(!looks_like_email("a@b"));
        assert!(!looks_like_email("@b.fr"));
        assert!(!looks_like_email("a@.fr"));
        assert!(!looks_like_email("a@b.1"));
        assert!(!looks_like_email("user@localhost"));
        assert!(!looks_like_email("price@2.99"));
    }
}
