//! Replies and commands the proxy writes itself, always as valid RESP: errors on one line,
//! bulk strings, integers, aggregate headers, and commands as multibulk.

use std::fmt::Write as _;

use bytes::Bytes;

/// `+OK\r\n`.
pub const OK: &[u8] = b"+OK\r\n";

/// Redis's reply when `maxclients` is reached.
pub(crate) const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";

/// The text of an error reply the proxy answers as Redis would (`ERR ...`, without the `-`);
/// [`error`] writes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ErrorReply(pub String);

impl From<&str> for ErrorReply {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

/// `-<message>\r\n`, with CR and LF turned into spaces as Redis's `addReplyError` does, so a
/// message can never break the reply stream.
pub fn error(message: &str) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(b'-');
    out.extend(message.bytes().map(|b| if matches!(b, b'\r' | b'\n') { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// Appends `$<len>\r\n<value>\r\n`.
pub fn bulk(out: &mut Vec<u8>, value: &[u8]) {
    header(out, b'$', value.len());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `:<value>\r\n`.
pub fn integer(out: &mut Vec<u8>, value: i64) {
    let mut text = String::with_capacity(24);
    let _ = write!(text, ":{value}\r\n");
    out.extend_from_slice(text.as_bytes());
}

/// Appends an aggregate or blob header: `<kind><len>\r\n`.
pub fn header(out: &mut Vec<u8>, kind: u8, len: usize) {
    let mut text = String::with_capacity(24);
    let _ = write!(text, "{}{len}\r\n", char::from(kind));
    out.extend_from_slice(text.as_bytes());
}

/// Appends the header of a map of `pairs` pairs: `%` in RESP3, an array twice as long in RESP2.
pub(crate) fn map_header(out: &mut Vec<u8>, pairs: usize, resp3: bool) {
    if resp3 {
        header(out, b'%', pairs);
    } else {
        header(out, b'*', 2 * pairs);
    }
}

/// A command as RESP multibulk.
pub fn command(args: &[&[u8]]) -> Bytes {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    header(&mut out, b'*', args.len());
    for arg in args {
        bulk(&mut out, arg);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_stay_on_one_line() {
        assert_eq!(error("ERR a\r\nb").as_ref(), b"-ERR a  b\r\n");
    }

    #[test]
    fn commands_and_values() {
        assert_eq!(
            &command(&[b"AUTH", b"u", b""])[..],
            b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$0\r\n\r\n"
        );
        let mut out = Vec::new();
        map_header(&mut out, 2, false);
        map_header(&mut out, 2, true);
        integer(&mut out, -7);
        assert_eq!(out, b"*4\r\n%2\r\n:-7\r\n");
    }
}
