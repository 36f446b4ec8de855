//! A JSON document borrowed from the message it was read from.
//!
//! [`parse`] reads a message with serde_json's parser (the same syntax rules, the same error
//! messages, the same recursion limit) into a [`Json`] tree whose strings and keys point into
//! the message wherever they hold no escape: a 1.2 KB tracker message becomes a handful of
//! vectors instead of a `String` per key and value and an index map per object. The tree means
//! exactly what `serde_json::Value` (with `preserve_order`) would: objects keep their keys in
//! document order, and a key given twice keeps its first position and its last value.
//! [`Json::to_value`] converts back, so tests can hold the two side by side.
//!
//! One difference, on purpose: with serde_json's `raw_value` feature (the collector turns it
//! on, and features are shared across a build), `Value` reads an object whose first key is
//! `$serde_json::private::RawValue` as the JSON text of its string value. Here that key is an
//! ordinary key, whatever the build's features: a tracker message is read as it is written.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// One JSON value, its strings borrowed from the message where they hold no escape.
#[derive(Clone, Debug, PartialEq)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as serde_json reads it (an integer when it is one, a float otherwise).
    Number(Number),
    /// A string.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object.
    Object(Object<'a>),
    /// An object or an array that [`parse_skimming`] checked but did not build: its text, valid
    /// JSON in which the [`Skim`] found nothing that needs the tree.
    Unread(&'a str),
}

/// An object's members in document order, each key once (a repeated key keeps its first
/// position and takes its last value, as serde_json's ordered map does).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Object<'a> {
    members: Vec<(Cow<'a, str>, Json<'a>)>,
}

/// `a == b`, with the cheap differences first (keys of one object mostly differ in length or
/// in their first or last byte, and comparing those needs no call to `memcmp`).
fn same_key(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.first() == b.first() && a.last() == b.last() && a == b
}

/// Objects with more members than this find repeated keys through a hash map, so that a
/// message of thousands of keys costs linear time, not quadratic.
const LINEAR_KEYS: usize = 16;

impl<'a> Object<'a> {
    /// The value of `key`, if the object has it.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.members
            .iter()
            .find(|(k, _)| same_key(k, key))
            .map(|(_, value)| value)
    }

    /// The keys, in document order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(k, _)| k.as_ref())
    }

    /// The members, in document order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.members.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True for `{}`.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl Json<'_> {
    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The same document as a `serde_json::Value` (owned).
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
            Json::Unread(text) => parse(text.as_bytes())
                .expect("an unread value is valid JSON")
                .to_value(),
        }
    }
}

/// Reads one JSON document from `bytes` (the whole input: trailing characters other than
/// whitespace are an error, as in `serde_json::from_slice`).
///
/// Plain documents (valid UTF-8, no escape in any string, nesting up to [`FAST_DEPTH`]: nearly
/// every tracker message) are read by a one-pass scanner; anything else, and anything the
/// scanner does not accept, by serde_json's parser, whose verdict and error message count.
/// The scanner accepts only what serde_json accepts and builds the same tree (a differential
/// property test holds the two side by side).
pub fn parse(bytes: &[u8]) -> Result<Json<'_>, serde_json::Error> {
    parse_skimming(bytes, &Whole)
}

/// What [`parse_skimming`] checks instead of building, in the values of some top-level
/// members: a reader that needs a few members of a message, and only a verdict on the rest.
pub trait Skim {
    /// True when the value of the top-level member `key`, if it is an object or an array, is
    /// to be checked and kept as its text ([`Json::Unread`]) rather than built.
    fn skims(&self, key: &str) -> bool;
    /// True when a key inside a skimmed value needs the whole tree (the document is then read
    /// in full, as [`parse`] reads it).
    fn needs_tree_for_key(&self, key: &str) -> bool;
    /// The same for a string value inside a skimmed value.
    fn needs_tree_for_string(&self, s: &str) -> bool;
}

/// Skims nothing: [`parse`].
struct Whole;

impl Skim for Whole {
    fn skims(&self, _: &str) -> bool {
        false
    }

    fn needs_tree_for_key(&self, _: &str) -> bool {
        true
    }

    fn needs_tree_for_string(&self, _: &str) -> bool {
        true
    }
}

/// [`parse`], except that the objects and arrays of the top-level members `skim` names are
/// only checked: each becomes [`Json::Unread`] when its syntax is one the scanner reads and no
/// key or string in it needs the tree. Otherwise (an escape, a key or string the skim flags,
/// a syntax error) the whole document is read as [`parse`] reads it, with no value unread.
/// The verdict on the document is the same either way.
pub fn parse_skimming<'a, S: Skim>(
    bytes: &'a [u8],
    skim: &S,
) -> Result<Json<'a>, serde_json::Error> {
    if let Some(value) = scan(bytes, skim) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Borrowed.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// An object's members as they are read, a repeated key taking its first position and its
/// last value.
#[derive(Default)]
struct Members<'a> {
    members: Vec<(Cow<'a, str>, Json<'a>)>,
    /// Built once an object outgrows `LINEAR_KEYS`: key -> position in `members`.
    index: Option<HashMap<Cow<'a, str>, usize>>,
}

impl<'a> Members<'a> {
    /// Room for `n` members: a message's own object (a dozen members and more) is built
    /// without growing its vector three times.
    fn with_capacity(n: usize) -> Self {
        Members {
            members: Vec::with_capacity(n),
            index: None,
        }
    }

    fn insert(&mut self, key: Cow<'a, str>, value: Json<'a>) {
        let members = &mut self.members;
        let seen = match &self.index {
            Some(index) => index.get(key.as_ref()).copied(),
            None => members.iter().position(|(k, _)| same_key(k, &key)),
        };
        match seen {
            Some(at) => members[at].1 = value,
            None => {
                if let Some(index) = &mut self.index {
                    index.insert(key.clone(), members.len());
                }
                members.push((key, value));
                if self.index.is_none() && members.len() > LINEAR_KEYS {
                    self.index = Some(
                        members
                            .iter()
                            .enumerate()
                            .map(|(at, (k, _))| (k.clone(), at))
                            .collect(),
                    );
                }
            }
        }
    }

    fn finish(self) -> Object<'a> {
        Object {
            members: self.members,
        }
    }
}

/// The position of the first quote, backslash or control character of `bytes`: eight bytes
/// at a time while none of the eight is one (strings of tracker messages are user agents,
/// URLs and titles, tens to hundreds of bytes).
fn string_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Bytes of `x` that are zero get their high bit set (exact when the others are below
    // 0x80 or have their own high bit, which `special` masks in).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = zero(x ^ u64::from_ne_bytes([b'"'; 8]));
        let backslash = zero(x ^ u64::from_ne_bytes([b'\\'; 8]));
        // Bytes below 0x20: (x - 0x20) borrows into the high bit for them, and only for them
        // among bytes below 0x80 (bytes from 0x80, UTF-8, are excluded by `!x`).
        let control = x.wrapping_sub(u64::from_ne_bytes([0x20; 8])) & !x & HIGHS;
        if quote | backslash | control != 0 {
            break;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

/// Deeper documents are left to serde_json (whose own limit is 128).
pub const FAST_DEPTH: u32 = 100;

/// The one-pass reader of plain documents: `None` for anything it does not read, whether
/// serde_json would accept it or not.
fn scan<'a, S: Skim>(bytes: &'a [u8], skim: &S) -> Option<Json<'a>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut s = Scanner {
        text,
        bytes,
        at: 0,
        depth: 0,
        skim,
    };
    s.whitespace();
    let value = s.value()?;
    s.whitespace();
    (s.at == bytes.len()).then_some(value)
}

struct Scanner<'a, 's, S> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    depth: u32,
    skim: &'s S,
}

impl<'a, S: Skim> Scanner<'a, '_, S> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn value(&mut self) -> Option<Json<'a>> {
        match self.peek()? {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => self.string().map(|s| Json::String(Cow::Borrowed(s))),
            b't' => self.literal("true", Json::Bool(true)),
            b'f' => self.literal("false", Json::Bool(false)),
            b'n' => self.literal("null", Json::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str, value: Json<'a>) -> Option<Json<'a>> {
        self.bytes[self.at..].starts_with(word.as_bytes()).then(|| {
            self.at += word.len();
            value
        })
    }

    /// A string without escapes or control characters, at its opening quote.
    fn string(&mut self) -> Option<&'a str> {
        let start = self.at + 1;
        let len = string_end(&self.bytes[start..])?;
        if self.bytes[start + len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        // The input is UTF-8 and the quotes are ASCII: both ends are character boundaries.
        Some(&self.text[start..start + len])
    }

    fn digits(&mut self) -> usize {
        let from = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - from
    }

    /// A number in JSON's grammar. Plain integers of up to 19 digits are read here; any other
    /// (negative, fraction, exponent, longer) is read by serde_json, so its value is exactly
    /// serde_json's.
    fn number(&mut self) -> Option<Json<'a>> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        let mut plain = !negative;
        if self.peek() == Some(b'.') {
            self.at += 1;
            plain = false;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            plain = false;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        let literal = &self.text[start..self.at];
        if plain && literal.len() <= 19 {
            return Some(Json::Number(literal.parse::<u64>().ok()?.into()));
        }
        serde_json::from_str::<Number>(literal)
            .ok()
            .map(Json::Number)
    }

    /// The items of an array or the members of an object, at its opening bracket: `item`
    /// reads one (from its first character), separated by commas, up to `close`.
    fn items(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.enter()?;
        self.whitespace();
        if self.peek() == Some(close) {
            self.at += 1;
        } else {
            loop {
                item(self)?;
                self.whitespace();
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        self.whitespace();
                    }
                    b if b == close => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// An object's key and the colon after it.
    fn key(&mut self) -> Option<&'a str> {
        if self.peek()? != b'"' {
            return None;
        }
        let key = self.string()?;
        self.whitespace();
        if self.peek()? != b':' {
            return None;
        }
        self.at += 1;
        self.whitespace();
        Some(key)
    }

    fn array(&mut self) -> Option<Json<'a>> {
        let mut items = Vec::new();
        self.items(b']', |s| {
            items.push(s.value()?);
            Some(())
        })?;
        Some(Json::Array(items))
    }

    fn object(&mut self) -> Option<Json<'a>> {
        // The members of the document's own object may be skimmed.
        let top = self.depth == 0;
        let mut members = if top {
            Members::with_capacity(LINEAR_KEYS)
        } else {
            Members::default()
        };
        self.items(b'}', |s| {
            let key = s.key()?;
            let value = if top && matches!(s.peek()?, b'{' | b'[') && s.skim.skims(key) {
                let from = s.at;
                s.check()?;
                Json::Unread(&s.text[from..s.at])
            } else {
                s.value()?
            };
            members.insert(Cow::Borrowed(key), value);
            Some(())
        })?;
        Some(Json::Object(members.finish()))
    }

    /// Reads a value without building it, as [`Scanner::value`] would read it; `None` also
    /// when the skim says a key or a string in it needs the tree.
    fn check(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.items(b'}', |s| {
                let key = s.key()?;
                if s.skim.needs_tree_for_key(key) {
                    return None;
                }
                s.check()
            }),
            b'[' => self.items(b']', Self::check),
            b'"' => {
                let string = self.string()?;
                (!self.skim.needs_tree_for_string(string)).then_some(())
            }
            // Literals and numbers build no tree.
            _ => self.value().map(drop),
        }
    }

    /// One level deeper, at an opening bracket; `None` past [`FAST_DEPTH`].
    fn enter(&mut self) -> Option<()> {
        self.at += 1;
        self.depth += 1;
        (self.depth <= FAST_DEPTH).then_some(())
    }
}

/// Deserializes one [`Json`], borrowing from the input where the parser lets it.
struct Borrowed;

impl<'de> DeserializeSeed<'de> for Borrowed {
    type Value = Json<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Json<'de>, E> {
        // As serde_json's `Value`: a float that is no JSON number becomes null.
        Ok(Number::from_f64(f).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s.to_string())))
    }

    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s)))
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        Borrowed.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(Borrowed)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Members::default();
        while let Some(key) = map.next_key_seed(Key)? {
            let value = map.next_value_seed(Borrowed)?;
            members.insert(key, value);
        }
        Ok(Json::Object(members.finish()))
    }
}

/// Deserializes an object's key, borrowing it where it holds no escape.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The same verdict as `serde_json::Value`: the same tree, or the same error message; and
    /// the scanner, when it reads the document, reads the same tree.
    fn agrees(bytes: &[u8]) {
        let scanned = scan(bytes, &Whole);
        let slow = serde_json::from_slice::<Value>(bytes);
        match (&scanned, &slow) {
            (Some(j), Ok(v)) => same_members(j, v),
            (Some(j), Err(e)) => panic!(
                "the scanner read {j:?} where serde_json says {e}: {:?}",
                String::from_utf8_lossy(bytes)
            ),
            (None, _) => {}
        }
        let ours = parse(bytes)
            .map(|j| j.to_value())
            .map_err(|e| e.to_string());
        let theirs = serde_json::from_slice::<Value>(bytes).map_err(|e| e.to_string());
        assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(bytes));
        if let Ok(v) = &theirs {
            same_members(&parse(bytes).unwrap(), v);
        }
        // Skimming every top-level member changes no verdict and no meaning, and skims no
        // value with a key or string the skim flags.
        let skimmed = parse_skimming(bytes, &SkimAll);
        assert_eq!(
            skimmed
                .as_ref()
                .map(Json::to_value)
                .map_err(|e| e.to_string()),
            theirs,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        if let Ok(Json::Object(o)) = &skimmed {
            for (_, v) in o.iter() {
                if let Json::Unread(text) = v {
                    assert!(!text.contains('x'), "{text} was skimmed");
                }
            }
        }
    }

    /// Skims every top-level member; a key or string with an `x` needs the tree.
    struct SkimAll;

    impl Skim for SkimAll {
        fn skims(&self, _: &str) -> bool {
            true
        }

        fn needs_tree_for_key(&self, key: &str) -> bool {
            key.contains('x')
        }

        fn needs_tree_for_string(&self, s: &str) -> bool {
            s.contains('x')
        }
    }

    /// Member by member, in order: `Value`'s equality ignores key order, and converting to a
    /// `Value` would merge repeated keys.
    fn same_members(j: &Json, v: &Value) {
        match (j, v) {
            (Json::Object(o), Value::Object(m)) => {
                assert_eq!(o.len(), m.len(), "{v}");
                for ((k, child), (vk, vchild)) in o.iter().zip(m) {
                    assert_eq!(k, vk);
                    same_members(child, vchild);
                }
            }
            (Json::Array(items), Value::Array(vitems)) => {
                assert_eq!(items.len(), vitems.len());
                items
                    .iter()
                    .zip(vitems)
                    .for_each(|(a, b)| same_members(a, b));
            }
            _ => assert_eq!(&j.to_value(), v),
        }
    }

    #[test]
    fn reads_what_serde_json_reads_and_refuses_what_it_refuses() {
        for text in [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
            r#"{"a":1,"a":2,"b":3,"a":{"x":1}}"#,
            r#"{"esc\"aped":"line\nbreak \u00e9 \ud83d\ude00","plain":"é"}"#,
            r#"[1, -1, 1.5, -0.0, 1e3, 2.0, 18446744073709551615, 18446744073709551616, -9223372036854775809]"#,
            r#"  {"trailing": "whitespace"}  "#,
            r#"{"a":1} x"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\q"}"#,
            r#"{"a":01}"#,
            r#"{"a":1e400}"#,
            r#"[NaN]"#,
            r#""#,
            r#"   "#,
            r#"nul"#,
            r#"{"a":[1,2"#,
            "\"tab\tinside\"",
        ] {
            agrees(text.as_bytes());
        }
        agrees(&[b'"', 0xff, b'"']);
        agrees(format!("{}1{}", "[".repeat(127), "]".repeat(127)).as_bytes());
        agrees(format!("{}1{}", "[".repeat(129), "]".repeat(129)).as_bytes());
        // Many members, past the linear look-up, with repeats far apart.
        let many: Vec<String> = (0..200).map(|i| format!("\"k{}\":{i}", i % 150)).collect();
        agrees(format!("{{{}}}", many.join(",")).as_bytes());
    }

    #[test]
    fn a_string_ends_where_the_byte_by_byte_rule_says() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        let fillers = [b'a', b' ', 0x7f, 0x80, 0xc3, 0xff, b'!', b'#', b'[', b']'];
        for special in [b'"', b'\\', 0x00, 0x01, 0x1f, b'\t', b'\n'] {
            for len in 0..24 {
                for at in 0..=len {
                    for filler in fillers {
                        let mut bytes = vec![filler; len];
                        if at < len {
                            bytes[at] = special;
                        }
                        assert_eq!(string_end(&bytes), naive(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn serde_json_s_raw_value_key_is_an_ordinary_key() {
        // Read by the scanner (no escape), then by serde_json (an escape).
        let plain = r#"{"x":{"$serde_json::private::RawValue":"[]"}}"#;
        let escaped = r#"{"x":{"$serde_json::private::RawValue":"{\"a\":1}"}}"#;
        assert!(
            scan(plain.as_bytes(), &Whole).is_some() && scan(escaped.as_bytes(), &Whole).is_none()
        );
        for (text, inner) in [(plain, "[]"), (escaped, "{\"a\":1}")] {
            let Json::Object(o) = parse(text.as_bytes()).unwrap() else {
                panic!("an object")
            };
            let Some(Json::Object(x)) = o.get("x") else {
                panic!("x is an object")
            };
            let members: Vec<_> = x.iter().map(|(k, v)| (k, v.as_str())).collect();
            assert_eq!(
                members,
                vec![("$serde_json::private::RawValue", Some(inner))]
            );
        }
    }

    #[test]
    fn unescaped_strings_and_keys_are_borrowed() {
        let text = r#"{"key":"value","esc\n":"a\"b"}"#;
        let Json::Object(o) = parse(text.as_bytes()).unwrap() else {
            panic!("an object")
        };
        let members: Vec<_> = o.members.iter().collect();
        assert!(matches!(members[0].0, Cow::Borrowed("key")));
        assert!(matches!(members[0].1, Json::String(Cow::Borrowed("value"))));
        assert!(matches!(members[1].0, Cow::Owned(_)));
        assert!(matches!(members[1].1, Json::String(Cow::Owned(_))));
    }

    /// Bytes that are mostly JSON, often not quite: repeated keys, escapes, odd numbers,
    /// truncations and stray characters.
    fn jsonish(escapes: bool) -> impl Strategy<Value = String> {
        let string = if escapes {
            "\"([a-z@. ]|\\\\[nt\"\\\\/u]|\\\\u[0-9a-fA-F]{4}|é|\u{1F600}){0,12}\""
        } else {
            "\"([a-z@. ]|é|\u{1F600}|\t|\u{1}){0,12}\""
        };
        let key = if escapes {
            "[a-cx]{1,2}|e\\\\u0061|\""
        } else {
            "[a-cx]{1,2}|é"
        };
        let scalar = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("fals".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| f.to_string()),
            "-?[0-9]{1,25}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{1,4})?",
            string,
        ];
        scalar.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key, inner), 0..8).prop_map(|v| {
                    let members: Vec<String> =
                        v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn agrees_with_serde_json_on_arbitrary_documents(doc in jsonish(true), cut in any::<prop::sample::Index>(), junk in "[ ,:\\]}x]{0,2}") {
            agrees(doc.as_bytes());
            // Truncated, and with something appended.
            let at = cut.index(doc.len() + 1);
            if doc.is_char_boundary(at) {
                agrees(&doc.as_bytes()[..at]);
                agrees(format!("{}{junk}{}", &doc[..at], &doc[at..]).as_bytes());
            }
        }

        /// Without escapes the scanner reads every document serde_json reads, so the fast path
        /// is the one taken.
        #[test]
        fn the_scanner_reads_every_plain_document(doc in jsonish(false), cut in any::<prop::sample::Index>()) {
            agrees(doc.as_bytes());
            prop_assert_eq!(scan(doc.as_bytes(), &Whole).is_some(), serde_json::from_slice::<Value>(doc.as_bytes()).is_ok(), "{}", doc);
            let at = cut.index(doc.len() + 1);
            if doc.is_char_boundary(at) {
                agrees(&doc.as_bytes()[..at]);
            }
        }
    }
}
