//! `[[audit.sinks]]` validated: what each sink is and where it sends.

use std::time::Duration;

use crate::tls::config::UpstreamTlsConfig;

/// A validated sink.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Its name (metrics label, loss records).
    pub name: String,
    /// Its queue's byte budget.
    pub queue_bytes: usize,
    /// What the writer does when that queue is full.
    pub on_full: SinkOnFull,
    /// Where it sends.
    pub kind: SinkKind,
}

/// `on_full` of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkOnFull {
    /// The sink misses the lines; a `loss` record tells it (and the file) which.
    Drop,
    /// The writer waits for room (the file is written first, then the writer waits).
    Block,
}

/// Where a sink sends.
#[derive(Debug, Clone)]
pub enum SinkKind {
    /// One JSON line per record on the proxy's stdout.
    Stdout,
    /// RFC 5424 messages to a collector.
    Syslog(Box<SyslogConfig>),
}

/// How syslog messages travel (`transport` of a sink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyslogTransport {
    /// RFC 6587 octet counting over plain TCP.
    Tcp,
    /// RFC 5425: octet counting over TLS.
    Tls,
    /// RFC 5426: one datagram per message; lost datagrams are not noticed.
    Udp,
    /// rsyslog's RELP over TCP: each message acknowledged, what was not resent after a
    /// reconnection.
    Relp,
    /// RELP over TLS (rsyslog's `imrelp` with `tls="on"`).
    RelpTls,
}

/// `type` of a sink as written: which [`SinkKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkType {
    /// [`SinkKind::Syslog`].
    Syslog,
    /// [`SinkKind::Stdout`].
    Stdout,
}

impl SinkType {
    /// The name `audit.sinks.type` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syslog => "syslog",
            Self::Stdout => "stdout",
        }
    }
}

impl SinkOnFull {
    /// The name `audit.sinks.on_full` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Block => "block",
        }
    }
}

impl SyslogTransport {
    /// The name `audit.sinks.transport` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Udp => "udp",
            Self::Relp => "relp",
            Self::RelpTls => "relp_tls",
        }
    }

    /// One datagram per message (no connection, no framing).
    pub fn is_datagram(self) -> bool {
        self == Self::Udp
    }

    /// Over TLS: the `ca_file`, `cert_file`, `key_file` and `server_name` keys apply.
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Tls | Self::RelpTls)
    }

    /// RELP: acknowledged messages, resent after a reconnection.
    pub fn is_relp(self) -> bool {
        matches!(self, Self::Relp | Self::RelpTls)
    }
}

/// `facility` of a syslog sink: the names of RFC 5424 §6.2.1, in the order of their codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Facility {
    /// `kern` (0).
    Kern,
    /// `user` (1).
    User,
    /// `mail` (2).
    Mail,
    /// `daemon` (3).
    Daemon,
    /// `auth` (4).
    Auth,
    /// `syslog` (5).
    Syslog,
    /// `lpr` (6).
    Lpr,
    /// `news` (7).
    News,
    /// `uucp` (8).
    Uucp,
    /// `cron` (9).
    Cron,
    /// `authpriv` (10).
    Authpriv,
    /// `ftp` (11).
    Ftp,
    /// `ntp` (12).
    Ntp,
    /// `audit` (13).
    Audit,
    /// `alert` (14).
    Alert,
    /// `clock` (15).
    Clock,
    /// `local0` (16).
    Local0,
    /// `local1` (17).
    Local1,
    /// `local2` (18).
    Local2,
    /// `local3` (19).
    Local3,
    /// `local4` (20).
    Local4,
    /// `local5` (21).
    Local5,
    /// `local6` (22).
    Local6,
    /// `local7` (23).
    Local7,
}

impl Facility {
    /// The facility's code (0..=23), as the message's PRI carries it.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A syslog sink's settings.
#[derive(Debug, Clone)]
pub struct SyslogConfig {
    /// `host:port`.
    pub address: String,
    /// The transport.
    pub transport: SyslogTransport,
    /// The facility.
    pub facility: Facility,
    /// APP-NAME.
    pub app_name: String,
    /// HOSTNAME (`None`: the node's).
    pub hostname: Option<String>,
    /// Longest message.
    pub max_message_bytes: usize,
    /// Longest connection attempt.
    pub(crate) connect_timeout: Duration,
    /// Reconnection back-off bounds.
    pub(crate) reconnect_min: Duration,
    /// See `reconnect_min`.
    pub(crate) reconnect_max: Duration,
    /// Bytes declared lost when a TCP or TLS connection breaks.
    pub inflight_bytes: usize,
    /// RELP: messages sent and not acknowledged yet, at most.
    pub relp_window: usize,
    /// How long to wait for more lines after taking a few (see `coalesce_ms`).
    pub coalesce: Duration,
    /// TLS settings (`transport = "tls"`).
    pub tls: Option<UpstreamTlsConfig>,
}
