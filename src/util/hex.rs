//! Lower-case hex text of bytes and of SHA-256 digests, in one place: users files, the audit
//! chain, query indexes, TLS facts and the policy version all write hashes the same way.

use sha2::{Digest as _, Sha256};

/// Lower-case hex digits.
pub(crate) const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes` as lower-case hex.
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 15)]);
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    out
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lower-case hex SHA-256 of `bytes` (64 digits).
pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(64);
    hex_sha256_into(bytes, &mut out);
    out
}

/// [`hex_sha256`] into `out`, replacing what it held (no allocation once `out` has room: the
/// audit writer hashes a line per rotated file with it).
pub(crate) fn hex_sha256_into(bytes: &[u8], out: &mut String) {
    out.clear();
    for byte in Sha256::digest(bytes) {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
}

/// A 64-digit lower-case hex hash, decoded (upper case is not what this crate writes, so it is
/// refused).
pub(crate) fn parse_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Whether `text` is 64 lower-case hex digits (a hash as this crate writes it).
pub(crate) fn is_hex_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|byte| digit(byte).is_some())
}

/// The value of one lower-case hex digit.
fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_and_hashes_round_trip() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        let mut pushed = Vec::new();
        push_hex(&mut pushed, &[0xab, 0x01]);
        assert_eq!(pushed, b"ab01");
        let hash = sha256(b"x");
        assert_eq!(hex_sha256(b"x"), hex(&hash));
        assert_eq!(parse_hash(&hex(&hash)), Some(hash));
        assert!(is_hex_hash(&hex(&hash)));
        assert_eq!(parse_hash(&"A".repeat(64)), None, "upper case is not what is written");
        assert!(!is_hex_hash(&"A".repeat(64)));
        assert_eq!(parse_hash("00"), None);
        assert_eq!(
            hex_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
