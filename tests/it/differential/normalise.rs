//! The normalisation of what a connection received: only values that legitimately differ
//! between two connections (see the [module documentation](super)), and how a difference is
//! shown.

use std::borrow::Cow;

use memchr::memmem;

use super::POOL_NAME;
use crate::support::client::{fnv1a, SHOW_WHOLE};

/// Fields of CLIENT INFO / CLIENT LIST lines that differ between any two connections: who
/// and where the client is, how old, and buffer sizes and peaks that depend on how TCP
/// segments arrived (how many pipelined commands Redis read and answered in one go) and on
/// when `clientsCron` last resized the buffers.
const VOLATILE_CLIENT_FIELDS: &[&str] = &[
    "id",
    "addr",
    "laddr",
    "fd",
    "age",
    "idle",
    "qbuf",
    "qbuf-free",
    "rbs",
    "rbp",
    "obl",
    "oll",
    "omem",
    "tot-mem",
    // Valkey 8: bytes read and written so far, which depend on how the stream was cut.
    "tot-net-in",
    "tot-net-out",
];

/// `stream` with the volatile values replaced (see the module documentation). `masks` are the
/// byte ranges of `CLIENT ID` replies the runner asked for.
pub(crate) fn normalise(stream: &[u8], masks: &[(usize, usize)]) -> Vec<u8> {
    normalise_with(stream, masks, false)
}

/// [`normalise`], also dropping the CLIENT LIST lines of the shared pool's own connections
/// when `drop_pool_lines`.
pub(super) fn normalise_with(
    stream: &[u8],
    masks: &[(usize, usize)],
    drop_pool_lines: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream.len());
    let mut pos = 0;
    // The previous bulk payload: an integer after `id` is HELLO's client id.
    let mut previous: &[u8] = b"";
    while pos < stream.len() {
        if let Some(&(_, end)) = masks.iter().find(|(start, _)| *start == pos) {
            out.extend_from_slice(b":?\r\n");
            pos = end;
            previous = b"";
            continue;
        }
        let Some(line_len) = memmem::find(&stream[pos..], b"\r\n") else { break };
        let line = &stream[pos..pos + line_len];
        let next = pos + line_len + 2;
        match line.first() {
            Some(kind @ (b'$' | b'=' | b'!')) => {
                let size = std::str::from_utf8(&line[1..]).ok().and_then(|s| s.parse().ok());
                if let Some(size) = size {
                    let size: usize = size;
                    if next + size + 2 > stream.len() {
                        break; // truncated: the rest is compared as it is
                    }
                    let payload = &stream[next..next + size];
                    match normalise_client_lines(payload, drop_pool_lines) {
                        Cow::Borrowed(_) => out.extend_from_slice(&stream[pos..next + size]),
                        Cow::Owned(changed) => {
                            out.push(*kind);
                            out.extend_from_slice(b"?\r\n");
                            out.extend_from_slice(&changed);
                        }
                    }
                    out.extend_from_slice(&stream[next + size..next + size + 2]);
                    previous = payload;
                    pos = next + size + 2;
                    continue;
                }
            }
            Some(b'+') => {
                // A shared connection opened while MONITOR runs names itself first: its
                // housekeeping, which any client of a pooling proxy sees.
                let pool_setup = format!("\"CLIENT\" \"SETNAME\" \"{POOL_NAME}\"");
                if drop_pool_lines && memmem::find(line, pool_setup.as_bytes()).is_some() {
                    pos = next;
                    continue;
                }
                if let Some(line) = normalise_monitor_line(line) {
                    out.extend_from_slice(&line);
                    out.extend_from_slice(b"\r\n");
                    previous = b"";
                    pos = next;
                    continue;
                }
            }
            Some(b':') if previous == b"id" => {
                out.extend_from_slice(b":?\r\n");
                previous = b"";
                pos = next;
                continue;
            }
            _ => {}
        }
        out.extend_from_slice(&stream[pos..next]);
        previous = b"";
        pos = next;
    }
    out.extend_from_slice(&stream[pos..]);
    out
}

/// CLIENT INFO / CLIENT LIST text (`id=... addr=...` lines, possibly as a `txt:` verbatim
/// string) with the volatile fields replaced by `?`, and without the lines of connections
/// named [`POOL_NAME`] when `drop_pool_lines`.
fn normalise_client_lines(payload: &[u8], drop_pool_lines: bool) -> Cow<'_, [u8]> {
    let (prefix, body) = match payload.strip_prefix(b"txt:") {
        Some(body) => (&b"txt:"[..], body),
        None => (&b""[..], payload),
    };
    if !body.starts_with(b"id=") {
        return Cow::Borrowed(payload);
    }
    let pool_field = format!("name={POOL_NAME}");
    let mut out = prefix.to_vec();
    // Each line with its `\n` (the last may have none), so a dropped line leaves no trace.
    for line in body.split_inclusive(|&b| b == b'\n') {
        let (line, newline) = match line.strip_suffix(b"\n") {
            Some(line) => (line, &b"\n"[..]),
            None => (line, &b""[..]),
        };
        if drop_pool_lines && line.split(|&b| b == b' ').any(|field| field == pool_field.as_bytes())
        {
            continue;
        }
        for (index, field) in line.split(|&b| b == b' ').enumerate() {
            if index > 0 {
                out.push(b' ');
            }
            let key = field.split(|&b| b == b'=').next().unwrap_or_default();
            if field.contains(&b'=') && VOLATILE_CLIENT_FIELDS.iter().any(|v| v.as_bytes() == key) {
                out.extend_from_slice(key);
                out.extend_from_slice(b"=?");
            } else {
                out.extend_from_slice(field);
            }
        }
        out.extend_from_slice(newline);
    }
    Cow::Owned(out)
}

/// A MONITOR line `+<secs>.<micros> [<db> <addr>] ...` with the time and a network address
/// replaced (`lua` and `unix:` sources are kept).
fn normalise_monitor_line(line: &[u8]) -> Option<Vec<u8>> {
    let rest = line.strip_prefix(b"+")?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let (stamp, rest) = rest.split_at(space);
    let is_stamp = stamp.contains(&b'.') && stamp.iter().all(|&b| b.is_ascii_digit() || b == b'.');
    let rest = rest.strip_prefix(b" [")?;
    if !is_stamp {
        return None;
    }
    let close = rest.iter().position(|&b| b == b']')?;
    let (inside, tail) = rest.split_at(close);
    let space = inside.iter().position(|&b| b == b' ')?;
    let (db, source) = (&inside[..space], &inside[space + 1..]);
    let is_address = source.contains(&b':') && !source.starts_with(b"unix:");
    let mut out = b"+<time> [".to_vec();
    out.extend_from_slice(db);
    out.push(b' ');
    out.extend_from_slice(if is_address { b"<addr>" } else { source });
    out.extend_from_slice(tail);
    Some(out)
}

/// Where two streams of connection `conn` first differ, and the bytes around it.
pub(super) fn describe_difference(conn: usize, direct: &[u8], proxied: &[u8]) -> String {
    let at = direct
        .iter()
        .zip(proxied)
        .position(|(a, b)| a != b)
        .unwrap_or(direct.len().min(proxied.len()));
    if direct.len() <= SHOW_WHOLE && proxied.len() <= SHOW_WHOLE {
        return format!(
            "connection {conn} differs at byte {at}:\n  direct : \"{}\"\n  proxied: \"{}\"",
            direct.escape_ascii(),
            proxied.escape_ascii()
        );
    }
    let window = |bytes: &[u8]| {
        let start = at.saturating_sub(200);
        let end = (at + 200).min(bytes.len());
        format!("\"{}\"", bytes[start.min(end)..end].escape_ascii())
    };
    format!(
        "connection {conn} differs at byte {at} (shown from byte {}):\n  direct : {} bytes, fnv1a \
         {:016x}: {}\n  proxied: {} bytes, fnv1a {:016x}: {}",
        at.saturating_sub(200),
        direct.len(),
        fnv1a(direct),
        window(direct),
        proxied.len(),
        fnv1a(proxied),
        window(proxied)
    )
}

#[test]
fn normalisation_touches_only_volatile_values() {
    let hello = b"%2\r\n$2\r\nid\r\n:17\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n:17\r\n";
    assert_eq!(
        normalise(hello, &[]),
        b"%2\r\n$2\r\nid\r\n:?\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n:17\r\n".to_vec()
    );
    let info = b"$60\r\nid=7 addr=127.0.0.1:5 laddr=127.0.0.1:6 fd=9 name=x age=0 db=0\n\r\n";
    assert_eq!(
        normalise(info, &[]),
        b"$?\r\nid=? addr=? laddr=? fd=? name=x age=? db=0\n\r\n".to_vec()
    );
    let monitor = b"+1795319593.871344 [0 127.0.0.1:41234] \"SET\" \"k\" \"v\"\r\n+OK\r\n";
    assert_eq!(
        normalise(monitor, &[]),
        b"+<time> [0 <addr>] \"SET\" \"k\" \"v\"\r\n+OK\r\n".to_vec()
    );
    let lua = b"+1795319593.871344 [0 lua] \"SET\"\r\n";
    assert_eq!(normalise(lua, &[]), b"+<time> [0 lua] \"SET\"\r\n".to_vec());
    assert_eq!(normalise(b":5\r\n:5\r\n", &[(4, 8)]), b":5\r\n:?\r\n".to_vec());
    let truncated = b"$10\r\nabc";
    assert_eq!(normalise(truncated, &[]), truncated.to_vec());
    // The shared pool's lines go only when asked, and only theirs.
    let list = b"$58\r\nid=3 name=redis-audit-proxy-shared db=0\nid=4 name=me db=0\n\r\n";
    assert_eq!(normalise_with(list, &[], true), b"$?\r\nid=? name=me db=0\n\r\n".to_vec());
    assert_eq!(
        normalise(list, &[]),
        b"$?\r\nid=? name=redis-audit-proxy-shared db=0\nid=? name=me db=0\n\r\n".to_vec()
    );
    let named_alike = b"$43\r\nid=5 name=redis-audit-proxy-shared-not db=0\r\n";
    assert_eq!(
        normalise_with(named_alike, &[], true),
        b"$?\r\nid=? name=redis-audit-proxy-shared-not db=0\r\n".to_vec()
    );
}
