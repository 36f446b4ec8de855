//! 128-bit digests of ids, for state that must remember an id but not spell it.
//!
//! SHA-256, first 128 bits: two ids with one digest are a matter of chance, not of crafted
//! input. Among `n` ids kept in one set, the chance of any such pair is below `n^2 / 2^129`
//! (about 10^-21 for a billion orders), far below the chance of a hardware fault.

use sha2::{Digest, Sha256};

/// The digest of `parts`, each length-prefixed (so `("ab", "c")` and `("a", "bc")` differ).
pub fn digest128(parts: &[&[u8]]) -> u128 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let hash = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash[..16]);
    u128::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_told_apart_and_digests_are_stable() {
        assert_eq!(digest128(&[b"r", b"o1"]), digest128(&[b"r", b"o1"]));
        assert_ne!(digest128(&[b"r", b"o1"]), digest128(&[b"r", b"o2"]));
        assert_ne!(digest128(&[b"ab", b"c"]), digest128(&[b"a", b"bc"]));
        // A fixed value (SHA-256 of the 8-byte big-endian length 2 and "e1", first 16
        // bytes): the digests live in checkpoints, so they must not change.
        assert_eq!(
            digest128(&[b"e1"]),
            0xbb96_2b20_31ee_9204_f7fa_d8a8_ea33_7920
        );
    }
}
