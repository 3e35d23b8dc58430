//! Replies the proxy writes itself (errors, mostly), always as one valid RESP line.

use bytes::Bytes;

/// `-<message>\r\n`, with CR and LF turned into spaces as Redis's `addReplyError` does, so a
/// message can never break the reply stream.
pub fn error(message: &str) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(b'-');
    out.extend(message.bytes().map(|b| if matches!(b, b'\r' | b'\n') { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// Redis's reply when `maxclients` is reached.
pub const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";

#[cfg(test)]
mod tests {
    #[test]
    fn errors_stay_on_one_line() {
        assert_eq!(super::error("ERR a\r\nb").as_ref(), b"-ERR a  b\r\n");
    }
}
