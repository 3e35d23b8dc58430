//! The JSON writer under every audit line: strings escaped exactly as `serde_json` escapes
//! them, numbers, Redis strings (`{"b64":…}` when not UTF-8) and hex, appended to a byte
//! buffer without an intermediate value. Command lines ([`super::line`]) are made of these on
//! the hot path; seals ([`super::chain`]) use them too.

use base64::Engine as _;

pub use crate::util::hex::push_hex;

/// Appends `value` in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Which bytes JSON strings escape (as `serde_json` does: control bytes, `"` and `\`).
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Appends `text` as a JSON string.
pub fn push_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    // Most strings (names, addresses, keys) need no escape: one pass without branches, one copy.
    if !bytes.iter().fold(false, |any, &byte| any | needs_escape(byte)) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        if !needs_escape(byte) {
            continue;
        }
        out.extend_from_slice(&bytes[start..at]);
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                out.extend_from_slice(b"\\u00");
                push_hex(out, &[byte]);
            }
        }
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends a Redis string: a JSON string when it is valid UTF-8, else `{"b64":"…"}`.
pub(crate) fn push_binary(out: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => push_str(out, text),
        Err(_) => {
            out.extend_from_slice(b"{\"b64\":\"");
            let at = out.len();
            out.resize(at + base64::encoded_len(bytes.len(), true).unwrap_or(0), 0);
            let written = base64::engine::general_purpose::STANDARD
                .encode_slice(bytes, &mut out[at..])
                .unwrap_or(0);
            out.truncate(at + written);
            out.extend_from_slice(b"\"}");
        }
    }
}

/// Appends `"name":` (the name needs no escaping).
pub(crate) fn push_key(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).expect("JSON is UTF-8")
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut every_byte = String::new();
        for byte in 0u8..0x80 {
            every_byte.push(char::from(byte));
        }
        for sample in [&every_byte[..], "", "plain", "é ü 日本", "a\"b\\c\u{7f}\u{2028}"] {
            let mut out = Vec::new();
            push_str(&mut out, sample);
            assert_eq!(text(&out), serde_json::to_string(sample).unwrap());
        }
    }

    #[test]
    fn binary_strings_become_base64_objects() {
        for sample in [&b"k"[..], b"\xff", b"\x00\xfe\xfd\xfc", b"ab\xc3"] {
            let mut out = Vec::new();
            push_binary(&mut out, sample);
            let expected = match std::str::from_utf8(sample) {
                Ok(text) => json!(text),
                Err(_) => json!({"b64": base64::engine::general_purpose::STANDARD.encode(sample)}),
            };
            assert_eq!(text(&out), expected.to_string());
        }
    }
}
