//! Resumable framer for Redis replies: finds where each reply ends, for every RESP2 and RESP3
//! type, and notes the little the proxy needs to pair replies with commands.
//!
//! It is a byte-level state machine: it never looks back, never holds bytes and never recurses,
//! so every byte it has scanned can be forwarded at once (cut-through), a large reply costs one
//! pass, and a deep reply costs 8 bytes per level up to `max_depth`. It accepts the union of
//! RESP2 and RESP3, which are unambiguous by their first byte, so a protocol switch (`HELLO 3`,
//! `RESET`) can never make it misread a reply.

/// Longest length header (`$`, `*`, ...) accepted: an i64 and its sign fit in 20 bytes.
use crate::resp::summary::{Child, Head, ReplyInfo, CHILD_SUMMARIES};

const MAX_HEADER_BYTES: usize = 20;

/// Bytes from the upstream that are not a valid reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A byte that starts no RESP type.
    #[error("unexpected byte 0x{0:02x} where a reply type was expected")]
    InvalidType(u8),
    /// A length header that is not a valid length.
    #[error("invalid length in a '{}' header", char::from(*.0))]
    InvalidLength(u8),
    /// A line or payload not followed by CRLF.
    #[error("missing CRLF after a value")]
    MissingCrlf,
    /// Aggregates nested deeper than the configured limit.
    #[error("reply nested deeper than {0} levels")]
    TooDeep(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// An aggregate with this many elements still to come.
    Counted(u64),
    /// A push written inside an aggregate (Redis writes a client's own PUBLISH message inside
    /// EXEC's array in RESP3), with this many elements to come: out of band, it is not one of
    /// its parent's elements, as RESP3 clients read it.
    NestedPush(u64),
    /// An attribute map (`|`): its pairs, then the value it describes (this many to come).
    Attribute(u64),
    /// A streamed aggregate (`*?`), closed by `.`.
    Streamed,
    /// A streamed string (`$?`), made of `;len` chunks and closed by `;0`.
    StreamedString,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a type byte.
    Type,
    /// Inside a one-line value (`+ - : , _ # ( .`); `cr` once its `\r` was seen.
    Line { kind: u8, cr: bool },
    /// Inside a length header (`$ ! = ; * % ~ > |`).
    Header { kind: u8, cr: bool },
    /// Skipping a blob payload; `chunk` for a streamed-string chunk.
    Payload { remaining: u64, chunk: bool },
    /// Expecting the CRLF after a payload: `left` bytes of it to go.
    Trailer { left: u8, chunk: bool },
}

/// Incremental reply framer; one per upstream connection.
#[derive(Debug)]
pub struct ReplyScanner {
    state: State,
    stack: Vec<Open>,
    max_depth: usize,
    /// Collect `child_status` for the next reply (set by the caller, e.g. for `EXEC`).
    pub(crate) capture_children: bool,
    info: ReplyInfo,
    /// Content of the scalar being read, when it is at depth 0 or 1.
    head: Head,
    capturing: bool,
    header: [u8; MAX_HEADER_BYTES],
    header_len: usize,
    /// Bytes of the current reply seen in earlier calls.
    partial_bytes: u64,
    /// Nested pushes open: nothing inside them is captured.
    pushes_open: usize,
    /// The outermost nested push just ended (its end offset is noted by `scan`).
    push_closed: bool,
}

impl ReplyScanner {
    /// A scanner refusing aggregates nested deeper than `max_depth`.
    pub fn new(max_depth: usize) -> Self {
        Self {
            state: State::Type,
            stack: Vec::new(),
            max_depth,
            capture_children: false,
            info: ReplyInfo::default(),
            head: Head::default(),
            capturing: false,
            header: [0; MAX_HEADER_BYTES],
            header_len: 0,
            partial_bytes: 0,
            pushes_open: 0,
            push_closed: false,
        }
    }

    /// True when a reply has started but not ended.
    pub fn is_mid_reply(&self) -> bool {
        self.state != State::Type || !self.stack.is_empty()
    }

    /// The reply most recently completed by [`scan`](Self::scan).
    pub fn reply(&self) -> &ReplyInfo {
        &self.info
    }

    /// Takes the children captured for the last reply.
    pub(crate) fn take_child_status(&mut self) -> Vec<Child> {
        std::mem::take(&mut self.info.child_status)
    }

    /// Scans `buf` until one top-level reply ends or the bytes run out.
    ///
    /// Returns how many bytes were consumed and whether a reply ended there (then see
    /// [`reply`](Self::reply)). Every byte is consumed unless a reply ended first, so the caller
    /// never keeps unscanned bytes across reads.
    pub fn scan(&mut self, buf: &[u8]) -> Result<(usize, bool), ReplyError> {
        let mut pos = 0;
        while pos < buf.len() {
            let done = match self.state {
                State::Type => {
                    let kind = buf[pos];
                    pos += 1;
                    if kind == b'>' && self.inside_aggregate() && self.pushes_open == 0 {
                        let start = self.partial_bytes + pos as u64 - 1;
                        self.info.nested_pushes.push((start, start));
                    }
                    self.start_value(kind)?;
                    false
                }
                State::Line { kind, cr } => {
                    if cr {
                        if buf[pos] != b'\n' {
                            return Err(ReplyError::MissingCrlf);
                        }
                        pos += 1;
                        self.end_line(kind)
                    } else {
                        let rest = &buf[pos..];
                        let (content, consumed, found) = match memchr::memchr(b'\r', rest) {
                            Some(at) => (&rest[..at], at + 1, true),
                            None => (rest, rest.len(), false),
                        };
                        if self.capturing {
                            self.head.push(content);
                        }
                        pos += consumed;
                        if found {
                            self.state = State::Line { kind, cr: true };
                        }
                        false
                    }
                }
                State::Header { kind, cr } => {
                    let byte = buf[pos];
                    pos += 1;
                    if cr {
                        if byte != b'\n' {
                            return Err(ReplyError::MissingCrlf);
                        }
                        self.end_header(kind)?
                    } else if byte == b'\r' {
                        self.state = State::Header { kind, cr: true };
                        false
                    } else if self.header_len == MAX_HEADER_BYTES {
                        return Err(ReplyError::InvalidLength(kind));
                    } else {
                        self.header[self.header_len] = byte;
                        self.header_len += 1;
                        false
                    }
                }
                State::Payload { remaining, chunk } => {
                    let available = (buf.len() - pos) as u64;
                    let take = remaining.min(available) as usize;
                    if self.capturing {
                        self.head.push(&buf[pos..pos + take]);
                    }
                    pos += take;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::Trailer { left: 2, chunk }
                    } else {
                        State::Payload { remaining, chunk }
                    };
                    false
                }
                State::Trailer { left, chunk } => {
                    let expected = if left == 2 { b'\r' } else { b'\n' };
                    if buf[pos] != expected {
                        return Err(ReplyError::MissingCrlf);
                    }
                    pos += 1;
                    if left == 2 {
                        self.state = State::Trailer { left: 1, chunk };
                        false
                    } else {
                        self.state = State::Type;
                        // A streamed-string chunk is not a value of its own.
                        !chunk && self.end_scalar()
                    }
                }
            };
            if std::mem::take(&mut self.push_closed) {
                if let Some(span) = self.info.nested_pushes.last_mut() {
                    span.1 = self.partial_bytes + pos as u64;
                }
            }
            if done {
                self.info.bytes = self.partial_bytes + pos as u64;
                self.partial_bytes = 0;
                return Ok((pos, true));
            }
        }
        self.partial_bytes += pos as u64;
        Ok((pos, false))
    }

    fn start_value(&mut self, kind: u8) -> Result<(), ReplyError> {
        let depth = self.stack.len();
        if let Some(Open::StreamedString) = self.stack.last() {
            if kind != b';' {
                return Err(ReplyError::InvalidType(kind));
            }
        } else if kind == b';'
            || (kind == b'.' && !matches!(self.stack.last(), Some(Open::Streamed)))
        {
            // `;` is a chunk of a streamed string and `.` ends a streamed aggregate: they are
            // nothing anywhere else (a `;` read as a value never ended its reply).
            return Err(ReplyError::InvalidType(kind));
        } else if depth == 0 {
            // Reset lengths, not buffers: a reply is framed per call, and the heads are big.
            self.info.kind = kind;
            self.info.head.clear();
            self.info.child_count = 0;
            for child in &mut self.info.children {
                child.kind = 0;
                child.head.clear();
            }
            self.info.child_status.clear();
            self.info.nested_pushes.clear();
            self.info.bytes = 0;
        } else if depth == 1 && kind != b'.' && kind != b'>' {
            let index = self.info.child_count as usize;
            self.info.child_count += 1;
            if index < CHILD_SUMMARIES {
                self.info.children[index].kind = kind;
            }
            if self.capture_children {
                self.info.child_status.push(Child { kind, ..Child::default() });
            }
        }
        self.capturing = self.pushes_open == 0
            && (depth <= 1 || (depth == 2 && kind == b':' && self.capture_children));
        self.head.clear();
        self.state = match kind {
            b'+' | b'-' | b':' | b',' | b'_' | b'#' | b'(' | b'.' => {
                State::Line { kind, cr: false }
            }
            b'$' | b'!' | b'=' | b';' | b'*' | b'%' | b'~' | b'>' | b'|' => {
                self.header_len = 0;
                State::Header { kind, cr: false }
            }
            other => return Err(ReplyError::InvalidType(other)),
        };
        Ok(())
    }

    fn end_header(&mut self, kind: u8) -> Result<bool, ReplyError> {
        self.state = State::Type;
        let text = &self.header[..self.header_len];
        if text == b"?" {
            return match kind {
                b'$' => {
                    self.open(Open::StreamedString)?;
                    Ok(false)
                }
                b'*' | b'%' | b'~' | b'>' => {
                    self.open(Open::Streamed)?;
                    Ok(false)
                }
                _ => Err(ReplyError::InvalidLength(kind)),
            };
        }
        let length = match crate::resp::args::string2ll(text) {
            Some(-1) if matches!(kind, b'$' | b'*') => {
                // RESP2 null bulk / null array.
                if self.stack.is_empty() {
                    self.info.child_count = u64::MAX;
                }
                return Ok(self.end_scalar());
            }
            Some(n) if n >= 0 => n as u64,
            _ => return Err(ReplyError::InvalidLength(kind)),
        };
        match kind {
            b'$' | b'!' | b'=' => {
                self.state = State::Payload { remaining: length, chunk: false };
                if length == 0 {
                    self.state = State::Trailer { left: 2, chunk: false };
                }
                Ok(false)
            }
            b';' => {
                if length == 0 {
                    self.stack.pop();
                    return Ok(self.value_done());
                }
                self.state = State::Payload { remaining: length, chunk: true };
                Ok(false)
            }
            _ => {
                let nested_push = kind == b'>' && self.inside_aggregate();
                let elements = match kind {
                    b'%' => length.checked_mul(2),
                    // An attribute map is followed by the value it describes.
                    b'|' => length.checked_mul(2).and_then(|n| n.checked_add(1)),
                    _ => Some(length),
                }
                .ok_or(ReplyError::InvalidLength(kind))?;
                if self.stack.is_empty() {
                    self.info.child_count = 0;
                }
                if nested_push {
                    if elements > 0 {
                        self.open(Open::NestedPush(elements))?;
                        self.pushes_open += 1;
                    }
                    return Ok(false);
                }
                if elements == 0 {
                    return Ok(self.value_done());
                }
                self.open(if kind == b'|' {
                    Open::Attribute(elements)
                } else {
                    Open::Counted(elements)
                })?;
                Ok(false)
            }
        }
    }

    /// True when a value starting now is an element of an aggregate (not the top-level reply,
    /// nor the value an attribute map at the top describes).
    fn inside_aggregate(&self) -> bool {
        !matches!(self.stack.as_slice(), [] | [Open::Attribute(1)])
    }

    fn open(&mut self, open: Open) -> Result<(), ReplyError> {
        if self.stack.len() >= self.max_depth {
            return Err(ReplyError::TooDeep(self.max_depth));
        }
        self.stack.push(open);
        Ok(())
    }

    fn end_line(&mut self, kind: u8) -> bool {
        self.state = State::Type;
        if kind == b'.' {
            // End of a streamed aggregate.
            if let Some(Open::Streamed) = self.stack.last() {
                self.stack.pop();
                return self.value_done();
            }
        }
        self.end_scalar()
    }

    /// A scalar ended: file its captured content, then close the aggregates it completes.
    fn end_scalar(&mut self) -> bool {
        if self.capturing {
            if self.stack.is_empty() {
                self.info.head = self.head;
            } else if self.stack.len() == 1 {
                let index = (self.info.child_count - 1) as usize;
                if index < CHILD_SUMMARIES {
                    self.info.children[index].head = self.head;
                }
                if let Some(last) = self.info.child_status.last_mut() {
                    last.head = self.head;
                }
            } else if let Some(last) = self.info.child_status.last_mut() {
                // Only integers are captured at depth 2.
                last.last_integer = self.head.integer();
            }
        }
        self.value_done()
    }

    /// One value ended; returns true when that completes the top-level reply.
    fn value_done(&mut self) -> bool {
        loop {
            match self.stack.last_mut() {
                None => return true,
                Some(Open::Counted(left) | Open::Attribute(left)) => {
                    *left -= 1;
                    if *left > 0 {
                        return false;
                    }
                    self.stack.pop();
                }
                Some(Open::NestedPush(left)) => {
                    *left -= 1;
                    if *left == 0 {
                        // A whole push, which is not an element of what holds it.
                        self.stack.pop();
                        self.pushes_open -= 1;
                        self.push_closed = self.pushes_open == 0;
                    }
                    return false;
                }
                Some(Open::Streamed | Open::StreamedString) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::summary::HEAD_CAPACITY;

    /// Scans `input` fed in pieces of `step` bytes; returns each reply's (kind, bytes).
    fn frames(input: &[u8], step: usize) -> Result<Vec<(u8, u64)>, ReplyError> {
        let mut scanner = ReplyScanner::new(64);
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            let mut at = 0;
            while at < piece.len() {
                let (used, done) = scanner.scan(&piece[at..])?;
                at += used;
                if done {
                    out.push((scanner.reply().kind, scanner.reply().bytes));
                }
            }
        }
        assert!(!scanner.is_mid_reply(), "input ended inside a reply");
        Ok(out)
    }

    const EVERY_TYPE: &[u8] = b"+OK\r\n-ERR bad\r\n:-12\r\n$3\r\nfoo\r\n$-1\r\n*-1\r\n$0\r\n\r\n\
*2\r\n$1\r\na\r\n*1\r\n:1\r\n_\r\n,1.50\r\n#t\r\n!5\r\nERR x\r\n=7\r\ntxt:abc\r\n(123\r\n\
%1\r\n+k\r\n:1\r\n~2\r\n+a\r\n+b\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n\
$?\r\n;2\r\nab\r\n;0\r\n*?\r\n:1\r\n:2\r\n.\r\n*0\r\n%0\r\n";

    #[test]
    fn every_resp2_and_resp3_type_in_every_split() {
        let whole = frames(EVERY_TYPE, EVERY_TYPE.len()).unwrap();
        let kinds: Vec<u8> = whole.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, b"+-:$$*$*_,#!=(%~>|$**%".to_vec());
        let total: u64 = whole.iter().map(|(_, n)| n).sum();
        assert_eq!(total, EVERY_TYPE.len() as u64);
        for step in 1..40 {
            assert_eq!(frames(EVERY_TYPE, step).unwrap(), whole, "step {step}");
        }
    }

    #[test]
    fn mid_reply_from_its_first_byte_to_its_last() {
        // A scalar (its state says so) and an aggregate between its elements (only its stack
        // does): fed a byte at a time, the scanner is mid-reply until the last byte.
        for reply in [&b"$3\r\nfoo\r\n"[..], b"*2\r\n:1\r\n:2\r\n", b"%1\r\n+k\r\n*0\r\n"] {
            let mut scanner = ReplyScanner::new(64);
            assert!(!scanner.is_mid_reply());
            for (i, byte) in reply.iter().enumerate() {
                let (used, done) = scanner.scan(std::slice::from_ref(byte)).unwrap();
                assert_eq!(used, 1);
                let last = i + 1 == reply.len();
                assert_eq!(done, last, "{reply:?} at byte {i}");
                assert_eq!(scanner.is_mid_reply(), !last, "{reply:?} at byte {i}");
            }
        }
    }

    #[test]
    fn a_chunk_outside_a_streamed_string_is_refused() {
        // Found by fuzz/fuzz_targets/reply_framer.rs: `;` at the top (or in an aggregate) was
        // read as a chunk that never ends its reply, where the oracle reads one value.
        for input in [&b";3\r\nab\r\r\n:1\r\n"[..], b"*1\r\n;1\r\na\r\n"] {
            assert_eq!(frames(input, input.len()), Err(ReplyError::InvalidType(b';')));
        }
        assert!(frames(b"$?\r\n;1\r\na\r\n;0\r\n", 3).is_ok());
    }

    #[test]
    fn heads_children_and_nulls_are_captured() {
        let mut scanner = ReplyScanner::new(8);
        let input = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:2\r\n";
        assert_eq!(scanner.scan(input).unwrap(), (input.len(), true));
        let reply = scanner.reply();
        assert_eq!(reply.child_count, 3);
        assert_eq!(reply.children[0].head.as_bytes(), b"subscribe");
        assert_eq!(reply.children[2].head.integer(), Some(2));
        assert_eq!(scanner.scan(b"-WRONGTYPE Operation\r\n").unwrap(), (22, true));
        assert_eq!(scanner.reply().head.error_code(), b"WRONGTYPE");
        assert_eq!(scanner.reply().head.known_error_code(), Some(&b"WRONGTYPE"[..]));
        assert_eq!(scanner.scan(b"-AKIASECRET value\r\n").unwrap(), (19, true));
        assert_eq!(scanner.reply().head.known_error_code(), None);
        assert_eq!(scanner.scan(b"*-1\r\n").unwrap(), (5, true));
        assert!(scanner.reply().is_null());
        assert_eq!(scanner.scan(b"*0\r\n").unwrap(), (4, true));
        assert!(!scanner.reply().is_null());
    }

    #[test]
    fn child_status_is_captured_on_request() {
        let mut scanner = ReplyScanner::new(8);
        scanner.capture_children = true;
        // The last child: only integers count at depth 2 (not a bulk string that reads as
        // one), and nothing deeper.
        let input = b"*5\r\n+OK\r\n-ERR DB index is out of range\r\n*1\r\n-NOPE\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:12\r\n\
*3\r\n:5\r\n$1\r\n7\r\n*1\r\n:9\r\n";
        assert_eq!(scanner.scan(input).unwrap(), (input.len(), true));
        let children = scanner.take_child_status();
        let summary: Vec<(u8, &[u8], Option<i64>)> =
            children.iter().map(|c| (c.kind, c.head.error_code(), c.last_integer)).collect();
        assert_eq!(
            summary,
            vec![
                (b'+', &b"OK"[..], None),
                (b'-', b"ERR", None),
                (b'*', b"", None),
                (b'*', b"", Some(12)),
                (b'*', b"", Some(5))
            ]
        );
    }

    #[test]
    fn a_head_keeps_the_first_bytes_of_a_long_line_read_in_pieces() {
        let line = [&b"+"[..], &[b'x'; 300], b"\r\n"].concat();
        let mut scanner = ReplyScanner::new(8);
        assert_eq!(scanner.scan(&line[..10]).unwrap(), (10, false));
        assert_eq!(scanner.scan(&line[10..]).unwrap(), (line.len() - 10, true));
        let head = &scanner.reply().head;
        assert_eq!(head.as_bytes(), &[b'x'; HEAD_CAPACITY][..]);
        assert_eq!(format!("{head:?}"), format!("{:?}", "x".repeat(HEAD_CAPACITY)));
    }

    #[test]
    fn the_first_children_of_a_long_array_are_summarized() {
        let mut scanner = ReplyScanner::new(8);
        let input = b"*5\r\n:1\r\n$1\r\nb\r\n+c\r\n:4\r\n-E\r\n";
        assert_eq!(scanner.scan(input).unwrap(), (input.len(), true));
        let reply = scanner.reply();
        assert_eq!(reply.child_count, 5);
        let heads: Vec<(u8, &[u8])> =
            reply.children.iter().map(|c| (c.kind, c.head.as_bytes())).collect();
        assert_eq!(heads, [(b':', &b"1"[..]), (b'$', b"b"), (b'+', b"c")]);
    }

    #[test]
    fn minus_one_is_null_only_for_bulk_strings_and_arrays() {
        for null in [&b"$-1\r\n"[..], b"*-1\r\n"] {
            assert_eq!(frames(null, 1).unwrap(), [(null[0], 5)]);
        }
        for kind in *b"!=%~>|" {
            let input = [&[kind][..], b"-1\r\n"].concat();
            assert_eq!(frames(&input, input.len()), Err(ReplyError::InvalidLength(kind)));
        }
    }

    #[test]
    fn an_empty_push_inside_an_aggregate_opens_nothing() {
        let input = b"*1\r\n>0\r\n:1\r\n+PONG\r\n";
        for step in [1, 3, input.len()] {
            assert_eq!(frames(input, step).unwrap(), [(b'*', 12), (b'+', 7)], "step {step}");
        }
    }

    #[test]
    fn a_push_inside_an_aggregate_is_not_one_of_its_elements() {
        // EXEC of [MGET, PUBLISH] to a channel of one's own, in RESP3: the message push sits
        // inside the EXEC array, between its two elements.
        let input = b"*2\r\n*1\r\n_\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n:7\r\n:1\r\n+PONG\r\n";
        let mut scanner = ReplyScanner::new(8);
        scanner.capture_children = true;
        let (used, done) = scanner.scan(input).unwrap();
        assert!(done);
        assert_eq!(&input[used..], b"+PONG\r\n", "the EXEC reply ends after its own two elements");
        assert_eq!(scanner.reply().child_count, 2);
        assert_eq!(scanner.reply().nested_pushes, [(11, 43 - 4)]);
        let kinds: Vec<(u8, Option<i64>)> =
            scanner.take_child_status().iter().map(|c| (c.kind, c.last_integer)).collect();
        assert_eq!(kinds, [(b'*', None), (b':', None)]);
        for step in [1, 2, 5] {
            assert_eq!(frames(input, step).unwrap(), [(b'*', 43), (b'+', 7)], "step {step}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let input = b"*1\r\n".repeat(10_000);
        let mut scanner = ReplyScanner::new(1024);
        assert_eq!(scanner.scan(&input), Err(ReplyError::TooDeep(1024)));
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        for bad in [
            &b"@\r\n"[..],
            b"$x\r\n",
            b"$3\r\nfooXY",
            b"+OK\rX",
            b"*-2\r\n",
            b"$123456789012345678901\r\n",
        ] {
            let mut scanner = ReplyScanner::new(8);
            assert!(scanner.scan(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_end_marker_outside_a_streamed_aggregate_is_an_error() {
        for input in [&b".\r\n"[..], b"*1\r\n.\r\n", b"%1\r\n.\r\n"] {
            let mut scanner = ReplyScanner::new(8);
            assert_eq!(scanner.scan(input), Err(ReplyError::InvalidType(b'.')));
        }
        let mut scanner = ReplyScanner::new(8);
        assert_eq!(scanner.scan(b"*?\r\n:1\r\n.\r\n"), Ok((11, true)));
    }

    #[test]
    fn a_large_bulk_is_skipped_not_scanned() {
        let mut scanner = ReplyScanner::new(8);
        assert_eq!(scanner.scan(b"$1000000\r\n").unwrap(), (10, false));
        let payload = vec![b'\r'; 1_000_000];
        assert_eq!(scanner.scan(&payload).unwrap(), (1_000_000, false));
        assert_eq!(scanner.scan(b"\r\n+OK\r\n").unwrap(), (2, true));
        assert_eq!(scanner.reply().bytes, 1_000_012);
        assert_eq!(scanner.reply().head.as_bytes(), &[b'\r'; HEAD_CAPACITY][..]);
    }
}
