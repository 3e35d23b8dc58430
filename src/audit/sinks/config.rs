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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// How syslog messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    /// RFC 6587 octet counting over plain TCP.
    Tcp,
    /// RFC 5425: octet counting over TLS.
    Tls,
    /// RFC 5426: one datagram per message; lost datagrams are not noticed.
    Udp,
}

/// A syslog sink's settings.
#[derive(Debug, Clone)]
pub struct SyslogConfig {
    /// `host:port`.
    pub address: String,
    /// The transport.
    pub transport: SyslogTransport,
    /// Facility code (0..=23).
    pub facility: u8,
    /// APP-NAME.
    pub app_name: String,
    /// HOSTNAME (`None`: the node's).
    pub hostname: Option<String>,
    /// Longest message.
    pub max_message_bytes: usize,
    /// Longest connection attempt.
    pub connect_timeout: Duration,
    /// Reconnection back-off bounds.
    pub reconnect_min: Duration,
    /// See `reconnect_min`.
    pub reconnect_max: Duration,
    /// Bytes declared lost when a TCP or TLS connection breaks.
    pub inflight_bytes: usize,
    /// TLS settings (`transport = "tls"`).
    pub tls: Option<UpstreamTlsConfig>,
}
