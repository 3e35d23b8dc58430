//! Incremental decoder for client requests: multibulk and inline, with Redis's limits and errors.
//!
//! It follows Redis 7's `processMultibulkBuffer` / `processInlineBuffer` byte for byte, including
//! their quirks (the two bytes after a bulk payload are skipped unchecked, a NUL byte hides a
//! line end, `*0` and empty lines are ignored), so that whatever Redis accepts, the proxy
//! accepts, and whatever Redis rejects, the proxy rejects with the same words. Parse state is
//! kept between reads, so a large value is never scanned twice. Nothing recurses.

use crate::resp::args::{split_args, string2ll};
use bytes::{Bytes, BytesMut};

/// Limits that bound one request, named as in `[proxy.limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest inline line, and longest `*N` / `$N` header line (Redis `PROTO_INLINE_MAX_SIZE`).
    pub inline_max_bytes: usize,
    /// Largest bulk argument (Redis `proto-max-bulk-len`).
    pub bulk_max_bytes: u64,
    /// Most arguments in one multibulk request (Redis: `INT_MAX`).
    pub multibulk_max_len: u64,
    /// Most arguments before the client has authenticated (Redis: 10).
    pub unauthenticated_multibulk_max_len: u64,
    /// Largest bulk argument before the client has authenticated (Redis: 16384).
    pub unauthenticated_bulk_max_bytes: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            inline_max_bytes: 64 * 1024,
            bulk_max_bytes: 512 * 1024 * 1024,
            multibulk_max_len: i32::MAX as u64,
            unauthenticated_multibulk_max_len: 10,
            unauthenticated_bulk_max_bytes: 16384,
        }
    }
}

/// How the client wrote a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestForm {
    /// `*N\r\n$len\r\n...`: the arguments are slices of `raw`.
    Multibulk,
    /// A text line split like `sdssplitargs`: the arguments are fresh buffers.
    Inline,
}

/// One complete client request.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// The exact bytes the client sent for this request; forwarded unchanged.
    pub raw: Bytes,
    /// The arguments, the command name first. Never empty.
    pub args: Vec<Bytes>,
    /// Multibulk or inline.
    pub form: RequestForm,
}

impl std::fmt::Debug for Request {
    // Arguments may hold secrets (AUTH passwords): only their count and sizes are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("form", &self.form)
            .field("raw_len", &self.raw.len())
            .field("argc", &self.args.len())
            .finish()
    }
}

/// A request Redis would refuse with `-ERR Protocol error: ...` before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// An inline line longer than `inline_max_bytes` with no line end yet.
    #[error("too big inline request")]
    TooBigInline,
    /// An inline line whose quotes do not close, or close next to a non-space.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A `*N` header line longer than `inline_max_bytes`.
    #[error("too big mbulk count string")]
    TooBigMultibulkCount,
    /// A `*N` count that is not an integer or is above `multibulk_max_len`.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// A `*N` count above the unauthenticated limit.
    #[error("unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// A `$N` header line longer than `inline_max_bytes`.
    #[error("too big bulk count string")]
    TooBigBulkCount,
    /// An argument header that does not start with `$`.
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedDollar(u8),
    /// A `$N` length that is not an integer, is negative or is above `bulk_max_bytes`.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// A `$N` length above the unauthenticated limit.
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulkLength,
}

impl ProtocolError {
    /// The exact reply Redis sends for this error, `-ERR Protocol error: ...\r\n`.
    pub fn to_reply(&self) -> Bytes {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"-ERR Protocol error: ");
        match self {
            // The offending byte goes out raw, as Redis's `%c` does; CR and LF become spaces
            // (`addReplyErrorFormat` keeps the reply on one line).
            Self::ExpectedDollar(byte) => {
                let shown = if matches!(byte, b'\r' | b'\n') { b' ' } else { *byte };
                out.extend_from_slice(b"expected '$', got '");
                out.push(shown);
                out.push(b'\'');
            }
            other => out.extend_from_slice(other.to_string().as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
        Bytes::from(out)
    }
}

/// Where the decoder is inside the current multibulk request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a request.
    Start,
    /// Inside `*N`: `remaining` arguments to go, `bulk_len` known once the `$N` line was read.
    Multibulk { remaining: u64, bulk_len: Option<usize> },
}

/// Incremental request decoder. Feed it the connection's read buffer after every read.
#[derive(Debug)]
pub struct RequestDecoder {
    limits: RequestLimits,
    state: State,
    /// Offset in the read buffer up to which the current request has been parsed.
    pos: usize,
    /// `(start, len)` of each argument of the current multibulk request, relative to its start.
    arg_spans: Vec<(usize, usize)>,
}

impl RequestDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: RequestLimits) -> Self {
        Self { limits, state: State::Start, pos: 0, arg_spans: Vec::new() }
    }

    /// Decodes the next complete request from the front of `buf`, splitting its bytes off.
    ///
    /// `Ok(None)` means more bytes are needed; nothing is lost, the state is kept.
    /// `authenticated` selects the tighter unauthenticated limits when false.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        authenticated: bool,
    ) -> Result<Option<Request>, ProtocolError> {
        loop {
            if self.state == State::Start {
                let Some(&first) = buf.first() else { return Ok(None) };
                if first != b'*' {
                    match self.decode_inline(buf)? {
                        InlineStep::Request(request) => return Ok(Some(request)),
                        InlineStep::Skipped => continue,
                        InlineStep::NeedMore => return Ok(None),
                    }
                }
                match self.decode_multibulk_header(buf, authenticated)? {
                    HeaderStep::Started => {}
                    HeaderStep::Empty => continue,
                    HeaderStep::NeedMore => return Ok(None),
                }
            }
            return self.decode_arguments(buf, authenticated);
        }
    }

    fn decode_inline(&mut self, buf: &mut BytesMut) -> Result<InlineStep, ProtocolError> {
        // Redis finds the line end with `strchr`, which stops at a NUL byte: a NUL before the
        // `\n` means "no line yet". `pos` remembers how far earlier reads were searched.
        let newline = match memchr::memchr2(b'\n', 0, &buf[self.pos..]) {
            Some(at) if buf[self.pos + at] == b'\n' => self.pos + at,
            Some(at) => {
                self.pos += at; // stay on the NUL: it hides every later line end too
                return self.inline_need_more(buf);
            }
            None => {
                self.pos = buf.len();
                return self.inline_need_more(buf);
            }
        };
        self.pos = 0;
        let line_end = if newline > 0 && buf[newline - 1] == b'\r' { newline - 1 } else { newline };
        let args = split_args(&buf[..line_end]).ok_or(ProtocolError::UnbalancedQuotes)?;
        let raw = buf.split_to(newline + 1).freeze();
        if args.is_empty() {
            return Ok(InlineStep::Skipped);
        }
        Ok(InlineStep::Request(Request { raw, args, form: RequestForm::Inline }))
    }

    fn inline_need_more(&self, buf: &BytesMut) -> Result<InlineStep, ProtocolError> {
        if buf.len() > self.limits.inline_max_bytes {
            return Err(ProtocolError::TooBigInline);
        }
        Ok(InlineStep::NeedMore)
    }

    fn decode_multibulk_header(
        &mut self,
        buf: &mut BytesMut,
        authenticated: bool,
    ) -> Result<HeaderStep, ProtocolError> {
        let Some(cr) = find_cr(buf, 0) else {
            if buf.len() > self.limits.inline_max_bytes {
                return Err(ProtocolError::TooBigMultibulkCount);
            }
            return Ok(HeaderStep::NeedMore);
        };
        // Redis wants one more byte after the `\r` (it does not check that it is `\n`).
        if cr + 2 > buf.len() {
            return Ok(HeaderStep::NeedMore);
        }
        let count = match string2ll(&buf[1..cr]) {
            Some(n) if n <= 0 => {
                // `*0` and `*-1` are requests without a command: Redis skips them silently.
                let _ = buf.split_to(cr + 2);
                return Ok(HeaderStep::Empty);
            }
            Some(n) if (n as u64) <= self.limits.multibulk_max_len => n as u64,
            _ => return Err(ProtocolError::InvalidMultibulkLength),
        };
        if !authenticated && count > self.limits.unauthenticated_multibulk_max_len {
            return Err(ProtocolError::UnauthenticatedMultibulkLength);
        }
        self.pos = cr + 2;
        self.arg_spans.clear();
        self.arg_spans.reserve(count.min(1024) as usize);
        self.state = State::Multibulk { remaining: count, bulk_len: None };
        Ok(HeaderStep::Started)
    }

    fn decode_arguments(
        &mut self,
        buf: &mut BytesMut,
        authenticated: bool,
    ) -> Result<Option<Request>, ProtocolError> {
        let State::Multibulk { mut remaining, mut bulk_len } = self.state else {
            return Ok(None);
        };
        while remaining > 0 {
            let len = match bulk_len {
                Some(len) => len,
                None => {
                    let Some(cr) = find_cr(buf, self.pos) else {
                        if buf.len() - self.pos > self.limits.inline_max_bytes {
                            return Err(ProtocolError::TooBigBulkCount);
                        }
                        break;
                    };
                    if cr + 2 > buf.len() {
                        break;
                    }
                    if buf[self.pos] != b'$' {
                        return Err(ProtocolError::ExpectedDollar(buf[self.pos]));
                    }
                    let len = match string2ll(&buf[self.pos + 1..cr]) {
                        Some(n) if n >= 0 && (n as u64) <= self.limits.bulk_max_bytes => n as u64,
                        _ => return Err(ProtocolError::InvalidBulkLength),
                    };
                    if !authenticated && len > self.limits.unauthenticated_bulk_max_bytes {
                        return Err(ProtocolError::UnauthenticatedBulkLength);
                    }
                    let len = len as usize;
                    self.pos = cr + 2;
                    // The size of what is coming is known: make room once, so a large value
                    // is read straight into place instead of being copied as the buffer grows.
                    let needed = self.pos + len + 2;
                    if needed > buf.capacity() {
                        buf.reserve(needed - buf.len());
                    }
                    bulk_len = Some(len);
                    len
                }
            };
            // The two bytes after the payload are skipped unchecked, as Redis does.
            if buf.len() < self.pos + len + 2 {
                break;
            }
            self.arg_spans.push((self.pos, len));
            self.pos += len + 2;
            bulk_len = None;
            remaining -= 1;
        }
        if remaining > 0 {
            self.state = State::Multibulk { remaining, bulk_len };
            return Ok(None);
        }
        let raw = buf.split_to(self.pos).freeze();
        let args =
            self.arg_spans.iter().map(|&(start, len)| raw.slice(start..start + len)).collect();
        self.state = State::Start;
        self.pos = 0;
        Ok(Some(Request { raw, args, form: RequestForm::Multibulk }))
    }
}

enum InlineStep {
    Request(Request),
    Skipped,
    NeedMore,
}

enum HeaderStep {
    Started,
    Empty,
    NeedMore,
}

/// Finds the `\r` that ends a header line at or after `from`, as Redis's `strchr(.., '\r')`:
/// a NUL byte before it means "not found".
fn find_cr(buf: &[u8], from: usize) -> Option<usize> {
    let at = from + memchr::memchr2(b'\r', 0, &buf[from..])?;
    (buf[at] == b'\r').then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], authenticated: bool) -> (Vec<Request>, Option<ProtocolError>) {
        let mut decoder = RequestDecoder::new(RequestLimits::default());
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut buf, authenticated) {
                Ok(Some(request)) => out.push(request),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    fn args_of(requests: &[Request]) -> Vec<Vec<&[u8]>> {
        requests.iter().map(|r| r.args.iter().map(|a| a.as_ref()).collect()).collect()
    }

    #[test]
    fn multibulk_and_inline_mixed_in_one_pipeline() {
        let input =
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n\r\nset a \"b c\"\n*1\r\n$4\r\nPING\r\n";
        let (requests, error) = decode_all(input, true);
        assert_eq!(error, None);
        assert_eq!(
            args_of(&requests),
            vec![vec![&b"GET"[..], b"k"], vec![b"PING"], vec![b"set", b"a", b"b c"], vec![b"PING"]]
        );
        assert_eq!(requests[0].raw.as_ref(), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(requests[1].form, RequestForm::Inline);
        let total: usize = requests.iter().map(|r| r.raw.len()).sum();
        assert_eq!(total, input.len() - 2, "only the empty line is dropped");
    }

    #[test]
    fn an_inline_line_may_start_with_its_line_end() {
        let (requests, error) = decode_all(b"\n\r\nPING\n", true);
        assert_eq!(error, None);
        assert_eq!(args_of(&requests), vec![vec![&b"PING"[..]]]);
        assert_eq!(requests[0].raw.as_ref(), b"PING\n");
    }

    #[test]
    fn a_request_shows_no_argument_in_debug_output() {
        let (requests, _) =
            decode_all(b"*3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$6\r\nsecret\r\n", true);
        let shown = format!("{:?}", requests[0]);
        assert_eq!(shown, "Request { form: Multibulk, raw_len: 37, argc: 3 }");
    }

    #[test]
    fn every_split_point_gives_the_same_requests() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\nECHO 'x y'\r\n*0\r\n";
        let (whole, _) = decode_all(input, true);
        for cut in 0..=input.len() {
            let mut decoder = RequestDecoder::new(RequestLimits::default());
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in [&input[..cut], &input[cut..]] {
                buf.extend_from_slice(part);
                while let Some(request) = decoder.decode(&mut buf, true).unwrap() {
                    got.push(request);
                }
            }
            assert_eq!(got, whole, "split at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn bytes_after_a_bulk_payload_are_not_checked() {
        let (requests, error) =
            decode_all(b"*2\r\n$4\r\nECHO\r\n$3\r\nfooXY*1\r\n$4\r\nPING\r\n", true);
        assert_eq!(error, None);
        assert_eq!(args_of(&requests), vec![vec![&b"ECHO"[..], b"foo"], vec![b"PING"]]);
    }

    #[test]
    fn protocol_errors_use_redis_wording() {
        let cases: &[(&[u8], bool, &str)] = &[
            (b"*a\r\n", true, "-ERR Protocol error: invalid multibulk length\r\n"),
            (b"*3000000000\r\n", true, "-ERR Protocol error: invalid multibulk length\r\n"),
            (b"*11\r\n", false, "-ERR Protocol error: unauthenticated multibulk length\r\n"),
            (b"*1\r\n*1\r\n", true, "-ERR Protocol error: expected '$', got '*'\r\n"),
            (b"*1\r\n\r\n\r\n", true, "-ERR Protocol error: expected '$', got ' '\r\n"),
            (b"*1\r\n$-1\r\n", true, "-ERR Protocol error: invalid bulk length\r\n"),
            (b"*1\r\n$+1\r\n", true, "-ERR Protocol error: invalid bulk length\r\n"),
            (b"*1\r\n$01\r\n", true, "-ERR Protocol error: invalid bulk length\r\n"),
            (b"*1\r\n$536870913\r\n", true, "-ERR Protocol error: invalid bulk length\r\n"),
            (b"*1\r\n$16385\r\n", false, "-ERR Protocol error: unauthenticated bulk length\r\n"),
            (b"set a \"b\"c\r\n", true, "-ERR Protocol error: unbalanced quotes in request\r\n"),
            (b"set a 'b\r\n", true, "-ERR Protocol error: unbalanced quotes in request\r\n"),
        ];
        for (input, authenticated, reply) in cases {
            let (_, error) = decode_all(input, *authenticated);
            let error = error.unwrap_or_else(|| panic!("no error for {input:?}"));
            assert_eq!(String::from_utf8_lossy(&error.to_reply()), *reply, "{input:?}");
        }
    }

    #[test]
    fn long_lines_are_refused_only_past_the_limit() {
        let mut long = vec![b'a'; 64 * 1024];
        assert_eq!(decode_all(&long, true), (vec![], None));
        long.push(b'a');
        assert_eq!(decode_all(&long, true).1, Some(ProtocolError::TooBigInline));
        let mut header = b"*".to_vec();
        header.extend(std::iter::repeat_n(b'1', 64 * 1024 - 1));
        assert_eq!(decode_all(&header, true), (vec![], None), "64 KiB of header: waited for");
        header.push(b'1');
        assert_eq!(decode_all(&header, true).1, Some(ProtocolError::TooBigMultibulkCount));
        // A bulk header counts from its `$`: 64 KiB of it is still waited for.
        let mut bulk = b"*1\r\n$".to_vec();
        bulk.extend(std::iter::repeat_n(b'1', 64 * 1024 - 1));
        assert_eq!(decode_all(&bulk, true), (vec![], None));
        bulk.push(b'1');
        assert_eq!(decode_all(&bulk, true).1, Some(ProtocolError::TooBigBulkCount));
    }

    #[test]
    fn empty_and_null_multibulks_are_skipped() {
        let (requests, error) = decode_all(b"*-1\r\n*0\r\n*-1\r\nPING\r\n", true);
        assert_eq!(error, None);
        assert_eq!(args_of(&requests), vec![vec![&b"PING"[..]]]);
        assert_eq!(requests[0].raw.as_ref(), b"PING\r\n");
    }

    #[test]
    fn an_unauthenticated_client_may_send_16_kib_arguments() {
        assert_eq!(decode_all(b"*1\r\n$16384\r\n", false), (vec![], None));
        let refused = decode_all(b"*1\r\n$16385\r\n", false).1;
        assert_eq!(refused, Some(ProtocolError::UnauthenticatedBulkLength));
    }

    #[test]
    fn an_unauthenticated_client_may_send_ten_arguments() {
        let mut input = b"*10\r\n".to_vec();
        for i in 0..10 {
            input.extend_from_slice(format!("$1\r\n{i}\r\n").as_bytes());
        }
        let (requests, error) = decode_all(&input, false);
        assert_eq!(error, None);
        let want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let got: Vec<&[u8]> = requests[0].args.iter().map(|a| a.as_ref()).collect();
        assert_eq!(got, want.iter().map(String::as_bytes).collect::<Vec<_>>());
        assert_eq!(requests[0].raw.as_ref(), &input[..]);
    }

    #[test]
    fn a_header_is_read_only_once_the_byte_after_its_cr_came() {
        // Redis wants one byte after the `\r` before it reads a header, even a bad one.
        assert_eq!(decode_all(b"*1\r\n$x\r", true), (vec![], None));
        assert_eq!(decode_all(b"*1\r\n$x\r\n", true).1, Some(ProtocolError::InvalidBulkLength));
        assert_eq!(decode_all(b"*x\r", true), (vec![], None));
    }

    #[test]
    fn a_nul_byte_hides_the_line_end() {
        assert_eq!(decode_all(b"PING\0\r\n", true), (vec![], None));
        assert_eq!(decode_all(b"*1\0\r\n", true), (vec![], None));
    }

    #[test]
    fn nested_arrays_are_refused_without_recursion() {
        let input: Vec<u8> = b"*1\r\n".repeat(10_000);
        assert_eq!(decode_all(&input, true).1, Some(ProtocolError::ExpectedDollar(b'*')));
    }

    #[test]
    fn a_large_value_reserves_its_room_once() {
        let mut decoder = RequestDecoder::new(RequestLimits::default());
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$1000000\r\n"[..]);
        assert_eq!(decoder.decode(&mut buf, true).unwrap(), None);
        let header = b"*2\r\n$3\r\nSET\r\n$1000000\r\n".len();
        // Room for the value and its line end, not a multiple of it.
        let needed = header + 1_000_000 + 2;
        let capacity = buf.capacity();
        assert!((needed..needed + 16).contains(&capacity), "capacity {capacity} for {needed}");
    }
}
