//! A RESP2 / RESP3 value parsed whole, for the few replies the proxy reads or rewrites (cluster
//! topology, Sentinel's answers); everything else is framed, never parsed.
use crate::resp::encode::header;

/// A RESP2 / RESP3 value, kept as written so that what is not replaced encodes to the same
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+ - : _ , # (` lines, and the null forms `$-1` / `*-1`: kind and the line.
    Line(u8, Vec<u8>),
    /// `$ = !` strings.
    Bulk(u8, Vec<u8>),
    /// `* ~ >` aggregates, and `% |` maps (their pairs flattened).
    Aggregate(u8, Vec<Self>),
}

/// Deepest nesting parsed (topology replies are 4 deep).
const MAX_DEPTH: usize = 16;

impl Value {
    /// The value at the start of `input` and its length; `None` if `input` holds less than
    /// a whole value, or not RESP, or nests deeper than 16.
    pub fn parse(input: &[u8]) -> Option<(Self, usize)> {
        Self::parse_at(input, 0)
    }

    fn parse_at(input: &[u8], depth: usize) -> Option<(Self, usize)> {
        if depth > MAX_DEPTH {
            return None;
        }
        let kind = *input.first()?;
        let end = memchr::memmem::find(input, b"\r\n")?;
        // `get`: an empty line (`\r\n` where a value starts) has no kind byte before it.
        let line = input.get(1..end)?;
        let mut used = end + 2;
        let count = || std::str::from_utf8(line).ok()?.parse::<i64>().ok();
        match kind {
            b'$' | b'=' | b'!' => {
                let Ok(len) = usize::try_from(count()?) else {
                    return Some((Self::Line(kind, line.to_vec()), used));
                };
                let body = input.get(used..used + len)?.to_vec();
                (input.get(used + len..used + len + 2)? == b"\r\n").then_some(())?;
                used += len + 2;
                Some((Self::Bulk(kind, body), used))
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let Ok(n) = usize::try_from(count()?) else {
                    return Some((Self::Line(kind, line.to_vec()), used));
                };
                let n = if matches!(kind, b'%' | b'|') { n.checked_mul(2)? } else { n };
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let (item, len) = Self::parse_at(&input[used..], depth + 1)?;
                    items.push(item);
                    used += len;
                }
                Some((Self::Aggregate(kind, items), used))
            }
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                Some((Self::Line(kind, line.to_vec()), used))
            }
            _ => None,
        }
    }

    /// Appends the value as RESP (the same bytes it was parsed from, but for what was set).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Line(kind, line) => {
                out.push(*kind);
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
            Self::Bulk(kind, body) => {
                header(out, *kind, body.len());
                out.extend_from_slice(body);
                out.extend_from_slice(b"\r\n");
            }
            Self::Aggregate(kind, items) => {
                let n = if matches!(kind, b'%' | b'|') { items.len() / 2 } else { items.len() };
                header(out, *kind, n);
                for item in items {
                    item.encode(out);
                }
            }
        }
    }

    /// An aggregate's items (none for a scalar).
    pub(crate) fn items_mut(&mut self) -> &mut [Self] {
        match self {
            Self::Aggregate(_, items) => items,
            _ => &mut [],
        }
    }

    /// In a map, or a RESP2 array of alternating names and values: the value of `name`.
    pub(crate) fn field_mut(&mut self, name: &str) -> Option<&mut Self> {
        let items = self.items_mut();
        let at = (0..items.len() / 2).find(|i| items[2 * i].text().as_deref() == Some(name))?;
        items.get_mut(2 * at + 1)
    }

    /// A simple or bulk string's text.
    pub fn text(&self) -> Option<String> {
        match self {
            Self::Line(b'+', bytes) | Self::Bulk(b'$', bytes) => {
                Some(String::from_utf8_lossy(bytes).into_owned())
            }
            _ => None,
        }
    }

    /// An integer's value.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Self::Line(b':', bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// Replaces a simple or bulk string's text.
    pub(crate) fn set_text(&mut self, text: &str) {
        match self {
            Self::Line(b'+', bytes) | Self::Bulk(b'$', bytes) => *bytes = text.as_bytes().to_vec(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_parsed_down_to_depth_sixteen() {
        // `levels` arrays around an integer: the integer is at depth `levels`.
        let nested = |levels: usize| [b"*1\r\n".repeat(levels), b":7\r\n".to_vec()].concat();
        let deepest = nested(MAX_DEPTH);
        let (value, used) = Value::parse(&deepest).expect("depth 16 parses");
        assert_eq!(used, deepest.len());
        let mut encoded = Vec::new();
        value.encode(&mut encoded);
        assert_eq!(encoded, deepest);
        assert!(Value::parse(&nested(MAX_DEPTH + 1)).is_none(), "depth 17 does not");
    }
}
