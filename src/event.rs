//! What the proxy reports: the per-command record a connection produces after each reply,
//! the session, security and system events, and the [`EventSink`] they all go to (the audit
//! trail, metrics and tests are sinks).
//!
//! The contract: every command yields exactly one record, in the order the client sent it —
//! except identical refused commands, whose repeats share one record with a `count`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::command::{Class, CommandInfo, Keys};

/// What became of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    /// A reply that is not an error.
    Ok,
    /// An error reply; see [`CommandRecord::error_code`].
    Error,
    /// `+QUEUED`: accepted into a MULTI transaction.
    Queued,
    /// No reply by the client's choice (`CLIENT REPLY OFF` / `SKIP`).
    Skipped,
    /// The connection ended before the reply came (client gone, upstream gone, shutdown).
    Unanswered,
}

impl ReplyStatus {
    /// Stable lower-case name for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Queued => "queued",
            Self::Skipped => "skipped",
            Self::Unanswered => "unanswered",
        }
    }
}

/// Who wrote the reply the client got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplySource {
    /// Redis.
    Upstream,
    /// The proxy itself (protocol error, upstream unavailable, ...).
    Proxy,
}

/// One command, after its reply.
#[derive(Clone)]
pub struct CommandRecord {
    /// Proxy-assigned connection id, unique within the process.
    pub conn_id: u64,
    /// The client's address as the proxy sees it.
    pub client_addr: SocketAddr,
    /// The user the connection was authenticated as when the command ran.
    pub user: Bytes,
    /// The selected database when the command was sent.
    pub db: u32,
    /// Name and arguments exactly as sent (may hold secrets: never log them raw).
    pub args: Vec<Bytes>,
    /// The command as the table knows it (full name, flags, categories); `None` when unknown.
    pub command: Option<Arc<CommandInfo>>,
    /// Read, write or non_read_write; `None` for an unknown command. Dynamic for EXEC (what it
    /// ran) and for scripts that declare their flags.
    pub class: Option<Class>,
    /// The keys, as indexes into `args` with their flags.
    pub keys: Keys,
    /// What became of it.
    pub status: ReplyStatus,
    /// First word of the error reply (`WRONGTYPE`, `NOAUTH`, ...), when `status` is `Error`.
    pub error_code: Option<Bytes>,
    /// Who answered.
    pub source: ReplySource,
    /// With `upstream.pool = "shared"`: the number of the shared upstream connection that
    /// carried it; `None` for a connection of the client's own (or a proxy answer).
    pub upstream_conn: Option<u64>,
    /// With `cluster.mode = "sidecar"`: the hash slot of its keys (of the first: a command whose
    /// keys span slots is refused by Redis); `None` for a command without keys.
    pub slot: Option<u16>,
    /// Bytes of the request on the wire.
    pub request_bytes: u64,
    /// Bytes of the reply (all replies, for SUBSCRIBE-like commands).
    pub reply_bytes: u64,
    /// From the request being read to its reply being read.
    pub latency: Duration,
    /// Wall-clock time the record was made (its reply was read).
    pub time: std::time::SystemTime,
    /// `CLIENT SETNAME` / `HELLO SETNAME` at that time.
    pub client_name: Option<Bytes>,
    /// `CLIENT SETINFO LIB-NAME` at that time.
    pub client_lib: Option<Bytes>,
    /// `CLIENT SETINFO LIB-VER` at that time.
    pub client_lib_ver: Option<Bytes>,
    /// RESP version of the connection at that time.
    pub resp: u8,
    /// How many commands this record stands for: 1, or the number of identical refusals
    /// (same command, same error, one connection) it groups (`audit.group_refusals_secs`).
    pub count: u64,
}

impl std::fmt::Debug for CommandRecord {
    // Arguments may hold passwords: only the command name is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRecord")
            .field("conn_id", &self.conn_id)
            .field("client_addr", &self.client_addr)
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("db", &self.db)
            .field("command", &self.command_name())
            .field("full_name", &self.command.as_ref().map(|c| c.name.as_str()))
            .field("class", &self.class)
            .field("argc", &self.args.len())
            .field("keys", &self.keys.len())
            .field("status", &self.status)
            .field("error_code", &self.error_code.as_ref().map(|c| String::from_utf8_lossy(c)))
            .field("source", &self.source)
            .field("request_bytes", &self.request_bytes)
            .field("reply_bytes", &self.reply_bytes)
            .field("latency", &self.latency)
            .field("count", &self.count)
            .finish()
    }
}

impl CommandRecord {
    /// The command name as sent, lossily decoded (for logs).
    pub fn command_name(&self) -> String {
        self.args.first().map(|n| String::from_utf8_lossy(n).into_owned()).unwrap_or_default()
    }

    /// The key names, in order.
    pub fn key_names(&self) -> impl Iterator<Item = &Bytes> {
        self.keys.iter().filter_map(|key| self.args.get(key.index))
    }
}

/// What counting a command needs (its metrics), without its record.
#[derive(Debug, Clone, Copy)]
pub struct CommandTally<'a> {
    /// The command as the table knows it; `None` when unknown.
    pub command: Option<&'a CommandInfo>,
    /// Its class.
    pub class: Option<Class>,
    /// What became of it.
    pub status: ReplyStatus,
    /// From the request being read to its reply being read.
    pub latency: Duration,
    /// How many commands it stands for.
    pub count: u64,
}

impl CommandRecord {
    /// What its metrics count.
    pub fn tally(&self) -> CommandTally<'_> {
        CommandTally {
            command: self.command.as_deref(),
            class: self.class,
            status: self.status,
            latency: self.latency,
            count: self.count,
        }
    }
}

/// Where command records go. Called on the connection's task: it must not block.
pub trait EventSink: Send + Sync + std::fmt::Debug + 'static {
    /// Takes one record. Returns a ticket when the client must not get the command's reply
    /// before the record is durable (`audit.durability = "write"` or `"fsync"`): see
    /// [`poll_durable`](Self::poll_durable).
    fn record(&self, record: CommandRecord) -> Option<u64>;

    /// False when a record would only be counted and dropped (no trail, no debug log): the
    /// connection then calls [`tally`](Self::tally) and builds no record, which is most of
    /// what a command costs the proxy beyond forwarding it.
    fn wants_records(&self) -> bool {
        true
    }

    /// Counts a command whose record was not built (see [`wants_records`](Self::wants_records)).
    fn tally(&self, _tally: CommandTally<'_>) {}

    /// Ready once the record with this ticket is durable; otherwise arranges a wake-up.
    fn poll_durable(&self, _ticket: u64, _cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::Poll::Ready(())
    }

    /// Takes one session event (connection opened, authenticated or closed).
    fn session(&self, _event: SessionEvent) {}

    /// Takes one security event (authentication, denial).
    fn security(&self, _event: SecurityEvent) {}

    /// Takes one system event (policy reload, ...).
    fn system(&self, _event: SystemEvent) {}

    /// The sink's own counters, for metrics (`None`: it keeps none).
    fn stats(&self) -> Option<SinkStats> {
        None
    }

    /// True while the sink cannot take more records without dropping them (`audit.on_full`
    /// decides what the proxy does then).
    fn is_full(&self) -> bool {
        false
    }

    /// True while the sink fails to write (`audit.on_error` decides what the proxy does then).
    fn is_failing(&self) -> bool {
        false
    }

    /// Makes every record taken so far durable; called once on shutdown, after the last
    /// connection ended.
    fn flush(&self) {}
}

/// A snapshot of an audit sink's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Events written to files.
    pub written: u64,
    /// Records dropped because the queue was full (commands; session and security events
    /// only past its reserve).
    pub dropped_queue_full: u64,
    /// Events left out by filters, by reason.
    pub filtered: Vec<(&'static str, u64)>,
    /// Bytes queued, not yet written.
    pub queue_bytes: u64,
    /// Bytes written to files.
    pub(crate) bytes_written: u64,
    /// Files rotated.
    pub rotations: u64,
    /// Write errors.
    pub write_errors: u64,
    /// Rotated files deleted by retention.
    pub deletions: u64,
    /// fsyncs done.
    pub(crate) fsyncs: u64,
    /// Microseconds spent writing and syncing those batches.
    pub(crate) fsync_micros: u64,
    /// The counters of each `[[audit.sinks]]` sink.
    pub sinks: Vec<SinkSnapshot>,
}

/// Logs each record at `debug` level, without arguments.
#[derive(Debug, Default)]
pub struct LogSink;

impl EventSink for LogSink {
    fn wants_records(&self) -> bool {
        tracing::enabled!(tracing::Level::DEBUG)
    }

    fn record(&self, record: CommandRecord) -> Option<u64> {
        // Not the name as sent for an unknown command: a password typed on a line of its own
        // is sent as a command name.
        let command = record.command.as_deref().map_or("(unknown)", |info| info.name.as_str());
        tracing::debug!(
            conn = record.conn_id,
            command,
            class = record.class.map_or("unknown", Class::as_str),
            keys = record.keys.len(),
            db = record.db,
            status = record.status.as_str(),
            error = ?record.error_code.as_ref().map(|c| String::from_utf8_lossy(c)),
            latency_us = record.latency.as_micros() as u64,
            "command"
        );
        None
    }
}

/// A snapshot of one sink's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkSnapshot {
    /// The sink's name.
    pub name: String,
    /// See `audit::sinks::SinkCounters`.
    pub sent: u64,
    /// See `audit::sinks::SinkCounters`.
    pub dropped: u64,
    /// See `audit::sinks::SinkCounters`.
    pub queue_bytes: u64,
    /// See `audit::sinks::SinkCounters`.
    pub reconnects: u64,
    /// See `audit::sinks::SinkCounters`.
    pub errors: u64,
    /// See `audit::sinks::SinkCounters`.
    pub(crate) last_error_unix: u64,
    /// See `audit::sinks::SinkCounters`.
    pub truncated: u64,
    /// See `audit::sinks::SinkCounters`.
    pub resent: u64,
}

/// What a security event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityAction {
    /// AUTH or HELLO AUTH succeeded.
    AuthSuccess,
    /// AUTH or HELLO AUTH was refused (`-WRONGPASS`).
    AuthFailure,
    /// A command was refused for lack of permission.
    AclDenied,
    /// A TLS client was turned away: failed handshake, rejected or unmapped certificate.
    TlsRejected,
    /// Redis started replicating to the client (`SYNC` / `PSYNC`): reason `full` (a copy of
    /// the whole dataset, then every write) or `partial` (writes from an offset on).
    Replication,
    /// `cluster.mode = "sidecar"`: a reply named a cluster node without a sidecar, and was not
    /// delivered (the client would have gone around the proxies).
    ClusterBypass,
}

/// An authentication or an access denial, with the real client's address.
#[derive(Debug, Clone)]
pub struct SecurityEvent {
    /// What happened.
    pub action: SecurityAction,
    /// When.
    pub time: SystemTime,
    /// Proxy connection id.
    pub conn_id: u64,
    /// The client.
    pub client_addr: SocketAddr,
    /// The user the connection had (for auth: before the attempt).
    pub user: Bytes,
    /// For auth: the user the client tried to become.
    pub username: Option<Bytes>,
    /// `auth`, `command`, `key` or `channel` (as ACL LOG says).
    pub reason: &'static str,
    /// `toplevel` or `multi` (queued inside MULTI).
    pub context: &'static str,
    /// What was refused: the command's full name, the key or channel, or the auth command
    /// as sent.
    pub object: Option<Bytes>,
    /// For an ACL denial: the full name of the command refused (`get`, `config|set`), which a
    /// key or channel denial's `object` does not name.
    pub command: Option<String>,
    /// Who decided: `redis` (the upstream answered it) or `proxy`.
    pub source: &'static str,
    /// For the proxy's own denials: `enforce` (refused) or `observe` (forwarded anyway).
    pub mode: Option<&'static str>,
    /// The users file version (`policy_version`) in force, when there is one.
    pub policy_version: Option<Arc<str>>,
}

/// Session lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAction {
    /// Connection accepted.
    Open,
    /// The connection's user changed (AUTH, HELLO AUTH, RESET).
    Auth,
    /// Connection closed.
    Close,
}

/// A session event.
#[derive(Debug, Clone)]
pub struct SessionEvent {
    /// Open or close.
    pub action: SessionAction,
    /// When it happened.
    pub time: SystemTime,
    /// Proxy connection id.
    pub conn_id: u64,
    /// The client's address.
    pub client_addr: SocketAddr,
    /// The user at that moment.
    pub user: Bytes,
    /// CLIENT SETNAME / CLIENT SETINFO facts at that moment.
    pub client_name: Option<Bytes>,
    /// Library name.
    pub client_lib: Option<Bytes>,
    /// Library version.
    pub client_lib_ver: Option<Bytes>,
    /// For `Close`: why, how long, and what happened.
    pub close: Option<CloseStats>,
    /// For a client on the TLS listener: the handshake's facts.
    pub tls: Option<Arc<crate::tls::TlsFacts>>,
}

/// What a closing session did.
#[derive(Debug, Clone, Default)]
pub struct CloseStats {
    /// Why it closed (`client_closed`, `upstream_closed`, `quit`, `protocol_error`, ...).
    pub reason: &'static str,
    /// How long it lasted.
    pub duration: Duration,
    /// Commands recorded.
    pub commands: u64,
    /// Of which answered with an error.
    pub errors: u64,
    /// Request bytes.
    pub bytes_in: u64,
    /// Reply bytes.
    pub bytes_out: u64,
}

/// A system event.
#[derive(Debug, Clone)]
pub struct SystemEvent {
    /// `start`, `stop`, `loss`, ...
    pub action: &'static str,
    /// When it happened.
    pub time: SystemTime,
    /// Action-specific fields.
    pub(crate) detail: serde_json::Value,
}
