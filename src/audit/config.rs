//! The audit trail's settings, validated (`[audit]`; `[[audit.sinks]]` are in
//! [`crate::audit::sinks::config`]).

use std::path::PathBuf;
use std::time::Duration;

/// The audit trail.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Write it at all.
    pub enabled: bool,
    /// Directory of the audit files.
    pub dir: PathBuf,
    /// Rotate the active file before it passes this size.
    pub rotate_bytes: u64,
    /// Rotate the active file when it is this old.
    pub(crate) rotate_interval: Option<Duration>,
    /// What to keep of the rotated files.
    pub retention: Retention,
    /// Bytes of events queued before `on_full` applies.
    pub queue_max_bytes: usize,
    /// What happens to commands while the queue is full.
    pub on_full: OnFull,
    /// What happens while writing the trail fails.
    pub on_error: OnError,
    /// When a command's reply may go to the client, relative to its record.
    pub durability: Durability,
    /// How key names are written.
    pub keys: KeyNames,
    /// Record command arguments (secrets redacted).
    pub(crate) capture_args: bool,
    /// Most bytes of arguments recorded per command.
    pub(crate) args_max_bytes: usize,
    /// `audit.coalesce_us`: how long the async writer lets events gather.
    pub(crate) coalesce: Duration,
    /// `audit.page_cache_bytes`: the active file's tail left in the page cache (0: the kernel
    /// decides).
    pub(crate) page_cache_bytes: u64,
    /// `audit.group_refusals_secs`: identical refusals within this window share one record.
    pub(crate) group_refusals_secs: u64,
    /// What the trail leaves out.
    pub filters: crate::audit::filter::Filters,
    /// HMAC checkpoints: the key (a secret: never shown) and every how many records.
    pub checkpoint: Option<Checkpoints>,
    /// `audit.chain_alg`: the hash of the chain's seals.
    pub chain_alg: crate::audit::chain::ChainAlg,
    /// `audit.seal_records`: a seal at least every this many lines.
    pub(crate) seal_records: u64,
    /// `audit.seal_interval_ms`: a seal once the oldest unsealed line is this old.
    pub(crate) seal_interval: Duration,
    /// `[[audit.sinks]]`: the copies sent beside the files.
    pub sinks: Vec<crate::audit::sinks::config::SinkConfig>,
}

/// `audit.checkpoint_key_file` / `audit.checkpoint_records`.
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoints {
    /// The HMAC key.
    pub key: Vec<u8>,
    /// A checkpoint every this many records (0: only at shutdown).
    pub every: u64,
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checkpoints {{ key: <redacted>, every: {} }}", self.every)
    }
}

/// `audit.keys` as written: which of [`KeyNames`] (the HMAC key comes from
/// `audit.hmac_key_file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// [`KeyNames::Clear`].
    Clear,
    /// [`KeyNames::Hmac`].
    Hmac,
    /// [`KeyNames::Off`].
    Off,
}

impl KeyMode {
    /// The name `audit.keys` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clear => "clear",
            Self::Hmac => "hmac",
            Self::Off => "off",
        }
    }
}

/// `audit.keys`: how key names appear in records (they may be personal data).
#[derive(Clone, PartialEq, Eq)]
pub enum KeyNames {
    /// As they are.
    Clear,
    /// As HMAC-SHA256 with this key (equal keys give equal values; the key never leaves).
    Hmac(Vec<u8>),
    /// Not at all (counts and sizes only).
    Off,
}

impl std::fmt::Debug for KeyNames {
    // The HMAC key is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Clear => "Clear",
            Self::Hmac(_) => "Hmac(<redacted>)",
            Self::Off => "Off",
        })
    }
}

/// `audit.on_error`: what happens while writing the trail fails (disk full, I/O error). In
/// every case the lines that could not be written are kept and retried every second; they
/// fill the queue, so `on_full` applies too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Keep serving.
    Continue,
    /// Refuse new commands with `-ERR` until a write succeeds again.
    Reject,
    /// Stop the proxy (drain, then exit with status 1).
    Shutdown,
}

/// `audit.durability`: what a crash can lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Records are written shortly after replies; a proxy crash loses what was queued.
    Async,
    /// A reply reaches the client only after its record is written (to the page cache): a
    /// proxy crash loses no record of an answered command; a host crash may.
    Write,
    /// As `Write`, and the file is fsynced first (group commit: one fsync per batch): neither
    /// a proxy nor a host crash loses the record of an answered command.
    Fsync,
}

/// `audit.on_full`: what happens while the audit queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Commands go on; their records are dropped, counted, and declared by a `loss` record.
    Drop,
    /// The proxy stops reading clients until the writer catches up.
    Block,
    /// New commands are refused with `-ERR` and not run (fail-closed).
    Reject,
}

impl OnError {
    /// The name `audit.on_error` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Continue => "continue",
            Self::Reject => "reject",
            Self::Shutdown => "shutdown",
        }
    }
}

impl Durability {
    /// The name `audit.durability` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Async => "async",
            Self::Write => "write",
            Self::Fsync => "fsync",
        }
    }
}

impl OnFull {
    /// The name `audit.on_full` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Block => "block",
            Self::Reject => "reject",
        }
    }
}

/// Which rotated audit files are kept; each limit is off when `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Most rotated files.
    pub files: Option<u64>,
    /// Most bytes of audit files, the active one included.
    pub bytes: Option<u64>,
    /// Oldest rotated file.
    pub age: Option<Duration>,
}
