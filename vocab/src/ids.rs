//! What an identifier may be: non-blank printable text.
//!
//! Identifiers (event, retailer, shopper, session, order, product, category, brand ids, and
//! the ids of erasure requests and trees) become keys of the graph, columns of ClickHouse rows,
//! Kafka message keys, log fields and cells of every retailer's exports and dashboards. So
//! beyond their length, each must be text a person can see and copy:
//! - not blank: at least one character that is not white space (Unicode `White_Space`);
//! - no control character: C0 (U+0000..U+001F, including tab and newline), DEL (U+007F),
//!   C1 (U+0080..U+009F), which include the escape that starts terminal (ANSI) sequences;
//! - no line or paragraph separator (U+2028, U+2029: line breaks in logs and exports), no
//!   invisible zero-width character (U+200B, U+2060 and the byte-order mark U+FEFF: two ids
//!   that look the same would differ);
//! - no bidirectional formatting character: U+061C, U+200E, U+200F, U+202A..U+202E
//!   (embeddings and overrides) and U+2066..U+2069 (isolates), which make text display in
//!   another order than it is stored (a "right-to-left override" id looks like another id).
//!
//! The JSON Schema given to integrators says the same with a `pattern` (see `$defs/id` in
//! `schema/shopper-event.schema.json`); a property test keeps the two in agreement.

/// True for the characters no identifier may contain (see the module docs).
pub fn is_forbidden_in_id(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200b}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{2028}'
        | '\u{2029}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2060}'
        | '\u{2066}'..='\u{2069}'
        | '\u{feff}')
}

/// Why `id` is not an acceptable identifier (a phrase that follows the field's name, e.g.
/// "must not be blank"), or `None` when it is one. Length limits are the caller's.
///
/// ```
/// use basketflow_vocab::ids::id_problem;
/// assert_eq!(id_problem("cust-42"), None);
/// assert_eq!(id_problem("  "), Some("must not be blank".to_string()));
/// assert_eq!(
///     id_problem("a\u{202e}b"),
///     Some("contains U+202E at character 2: identifiers must be printable text, without control or bidirectional formatting characters".to_string())
/// );
/// ```
pub fn id_problem(id: &str) -> Option<String> {
    // Nearly every id: printable ASCII (space included, the only ASCII white space that is no
    // control character) with something besides spaces.
    if id.bytes().all(|b| (b' '..=b'~').contains(&b)) && id.bytes().any(|b| b != b' ') {
        return None;
    }
    if let Some((i, c)) = id.chars().enumerate().find(|(_, c)| is_forbidden_in_id(*c)) {
        return Some(format!(
            "contains U+{:04X} at character {}: identifiers must be printable text, without \
             control or bidirectional formatting characters",
            u32::from(c),
            i + 1
        ));
    }
    if id.chars().all(char::is_whitespace) {
        return Some(if id.is_empty() {
            "must not be empty".to_string()
        } else {
            "must not be blank".to_string()
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ids_pass_and_every_forbidden_kind_is_named() {
        for ok in ["e1", "cust 42", "Ünïcödé-ß", "日本", "a\u{a0}b", "🛒"] {
            assert_eq!(id_problem(ok), None, "{ok:?}");
        }
        for (bad, code) in [
            ("\u{0}", 0x0),
            ("a\nb", 0xa),
            ("\t", 0x9),
            ("\u{1b}[31mred", 0x1b),
            ("x\u{7f}", 0x7f),
            ("\u{85}", 0x85),
            ("\u{9f}", 0x9f),
            ("\u{61c}", 0x61c),
            ("\u{200e}", 0x200e),
            ("\u{200f}", 0x200f),
            ("evil\u{202e}gpj.exe", 0x202e),
            ("\u{202a}", 0x202a),
            ("\u{2066}x\u{2069}", 0x2066),
            ("a\u{2028}b", 0x2028),
            ("\u{2029}", 0x2029),
            ("a\u{200b}", 0x200b),
            ("\u{2060}a", 0x2060),
            ("\u{feff}a", 0xfeff),
        ] {
            let why = id_problem(bad).unwrap_or_default();
            assert!(
                why.starts_with(&format!("contains U+{code:04X} ")),
                "{bad:?}: {why}"
            );
        }
        assert_eq!(id_problem(""), Some("must not be empty".into()));
        for blank in [" ", "   ", "\u{3000}", "\u{2003}\u{a0}"] {
            assert_eq!(
                id_problem(blank),
                Some("must not be blank".into()),
                "{blank:?}"
            );
        }
    }
}
