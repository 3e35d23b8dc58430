//! What the reply framer notes about a reply for pairing and records: its type, the first
//! bytes of its content ([`Head`], with the error code Redis clients read), and a summary of
//! an aggregate's first children.

/// How much of a value's content is kept for classification.
pub(super) const HEAD_CAPACITY: usize = 96;

/// How many direct children of a top-level aggregate are summarised.
pub(super) const CHILD_SUMMARIES: usize = 3;

/// The first bytes of a value's content (line text or blob payload).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Head {
    buf: [u8; HEAD_CAPACITY],
    len: u8,
}

impl Default for Head {
    fn default() -> Self {
        Self { buf: [0; HEAD_CAPACITY], len: 0 }
    }
}

impl Head {
    /// The captured bytes (at most 96).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The first word of an error (`WRONGTYPE`, `NOPERM`, ...), as Redis clients read it.
    pub fn error_code(&self) -> &[u8] {
        let bytes = self.as_bytes();
        let end = memchr::memchr(b' ', bytes).unwrap_or(bytes.len());
        &bytes[..end]
    }

    /// The error code when the first word is one Redis uses. A script can make an error start
    /// with anything (`redis.error_reply(ARGV[1])`), and such text must not reach a record.
    pub(crate) fn known_error_code(&self) -> Option<&[u8]> {
        let code = self.error_code();
        KNOWN_ERROR_CODES.contains(&code).then_some(code)
    }

    /// The content read as an integer (for `:` replies).
    pub fn integer(&self) -> Option<i64> {
        crate::resp::args::string2ll(self.as_bytes())
    }

    pub(super) fn clear(&mut self) {
        self.len = 0;
    }

    pub(super) fn push(&mut self, bytes: &[u8]) {
        let at = usize::from(self.len);
        let take = bytes.len().min(HEAD_CAPACITY - at);
        self.buf[at..at + take].copy_from_slice(&bytes[..take]);
        self.len += take as u8;
    }
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The error codes Redis and Valkey send (first word of an error reply).
const KNOWN_ERROR_CODES: &[&[u8]] = &[
    b"ERR",
    b"WRONGTYPE",
    b"NOAUTH",
    b"NOPERM",
    b"WRONGPASS",
    b"EXECABORT",
    b"BUSY",
    b"BUSYKEY",
    b"BUSYGROUP",
    b"NOGROUP",
    b"NOSCRIPT",
    b"LOADING",
    b"READONLY",
    b"MASTERDOWN",
    b"MISCONF",
    b"NOREPLICAS",
    b"OOM",
    b"NOPROTO",
    b"MOVED",
    b"ASK",
    b"TRYAGAIN",
    b"CROSSSLOT",
    b"CLUSTERDOWN",
    b"UNKILLABLE",
    b"NOTBUSY",
    b"UNBLOCKED",
    b"NOGOODSLAVE",
    b"IOERR",
    b"INVALIDOBJ",
    b"DENIED",
];

/// A direct child of a top-level aggregate: its type byte and the start of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Child {
    /// RESP type byte (`$`, `:`, `*`, ...).
    pub kind: u8,
    /// Start of its content when it is a scalar.
    pub head: Head,
    /// The last integer among its own children, when it is an aggregate and children are
    /// captured (the subscription count of a confirmation inside an EXEC reply).
    pub(crate) last_integer: Option<i64>,
}

/// What the scanner learned about the reply it just finished.
#[derive(Debug, Clone, Default)]
pub struct ReplyInfo {
    /// RESP type byte of the reply (`+ - : $ * _ , # ! = ( % ~ > |`).
    pub kind: u8,
    /// Start of its content when it is a scalar.
    pub head: Head,
    /// Number of direct children, when it is an aggregate.
    pub(crate) child_count: u64,
    /// The first three direct children.
    pub children: [Child; CHILD_SUMMARIES],
    /// Every direct child's type and error code, when asked for with `capture_children`.
    pub(crate) child_status: Vec<Child>,
    /// Where pushes written inside the reply start and end (offsets in the reply's bytes).
    pub(crate) nested_pushes: Vec<(u64, u64)>,
    /// Size of the whole reply on the wire.
    pub bytes: u64,
}

impl ReplyInfo {
    /// True for `-` and `!` replies.
    pub fn is_error(&self) -> bool {
        matches!(self.kind, b'-' | b'!')
    }

    /// True for nulls: `$-1`, `*-1` (RESP2) and `_` (RESP3).
    pub fn is_null(&self) -> bool {
        self.kind == b'_' || (matches!(self.kind, b'$' | b'*') && self.child_count == u64::MAX)
    }
}
