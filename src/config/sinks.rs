//! `[[audit.sinks]]`: the copies of the audit trail sent beside the files (syslog, stdout), as
//! written in `proxy.toml` ([`RawSink`]) and validated ([`SinkConfig`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::audit::sinks::config::{
    SinkConfig, SinkKind, SinkOnFull, SyslogConfig, SyslogTransport,
};
use crate::tls::config::UpstreamTlsConfig;

/// One `[[audit.sinks]]` table as written; every key has a default (`proxy.toml.example`
/// shows them all in a commented-out table).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSink {
    /// `syslog` or `stdout`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its name in metrics and loss records; empty = `<type>-<position>` (from 1).
    pub name: String,
    /// Bytes of lines queued for this sink before `on_full` applies.
    pub queue_bytes: u64,
    /// `drop` (the sink misses lines, declared by `loss` records) or `block` (the audit writer
    /// waits for room, so the proxy slows down as the file's own `on_full` says).
    pub on_full: String,
    /// syslog: `host:port` of the collector.
    pub address: String,
    /// syslog: `tcp` (RFC 6587 octet counting), `tls` (RFC 5425) or `udp` (RFC 5426, lossy).
    pub transport: String,
    /// syslog: the facility, `kern`..`local7`.
    pub facility: String,
    /// syslog: APP-NAME.
    pub app_name: String,
    /// syslog: HOSTNAME; empty = the node's host name.
    pub hostname: String,
    /// syslog: the longest message sent; longer records have their long fields cut.
    pub max_message_bytes: u64,
    /// syslog: longest connection attempt (TLS handshake included), and longest wait of one
    /// write for a collector that does not read.
    pub connect_timeout_ms: u64,
    /// syslog: first wait before reconnecting; doubled at each failure...
    pub reconnect_min_ms: u64,
    /// ...up to this.
    pub reconnect_max_ms: u64,
    /// syslog over tcp/tls: bytes of the last messages sent that are declared lost when the
    /// connection breaks (TCP acknowledges nothing to the sender's program: what the collector
    /// had not read yet is gone with it).
    pub inflight_bytes: u64,
    /// syslog over tls: PEM CA bundle the collector's certificate must chain to (none: the
    /// system roots).
    pub ca_file: Option<String>,
    /// syslog over tls: PEM client certificate chain, for collectors that authenticate senders.
    pub cert_file: Option<String>,
    /// Its PEM private key.
    pub key_file: Option<String>,
    /// syslog over tls: the name checked in the collector's certificate (and sent as SNI);
    /// default: the host of `address`.
    pub server_name: Option<String>,
}

impl Default for RawSink {
    fn default() -> Self {
        Self {
            kind: "syslog".into(),
            name: String::new(),
            queue_bytes: 16 * 1024 * 1024,
            on_full: "drop".into(),
            address: "127.0.0.1:6514".into(),
            transport: "tls".into(),
            facility: "local0".into(),
            app_name: "redis-audit-proxy".into(),
            hostname: String::new(),
            max_message_bytes: 8192,
            connect_timeout_ms: 5_000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 30_000,
            inflight_bytes: 1024 * 1024,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
        }
    }
}

/// The facility names of RFC 5424 §6.2.1, by code.
const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// The smallest `max_message_bytes`: room for the syslog header and a cut record.
const MIN_MESSAGE_BYTES: u64 = 480;

/// Validates every `[[audit.sinks]]` table; an error names the key and says which sink.
pub fn validate_sinks(raw: &[RawSink]) -> Result<Vec<SinkConfig>, (&'static str, String)> {
    let mut sinks: Vec<SinkConfig> = Vec::with_capacity(raw.len());
    for (index, sink) in raw.iter().enumerate() {
        let name = if sink.name.is_empty() {
            format!("{}-{}", sink.kind, index + 1)
        } else {
            sink.name.clone()
        };
        let which = |message: String| format!("sink \"{name}\": {message}");
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(("audit.sinks.name", which("use letters, digits, '-', '_', '.'".into())));
        }
        if sinks.iter().any(|other| other.name == name) {
            return Err(("audit.sinks.name", which("two sinks have this name".into())));
        }
        if sink.queue_bytes < 64 * 1024 {
            return Err(("audit.sinks.queue_bytes", which("must be at least 65536".into())));
        }
        let on_full = match sink.on_full.as_str() {
            "drop" => SinkOnFull::Drop,
            "block" => SinkOnFull::Block,
            other => {
                return Err((
                    "audit.sinks.on_full",
                    which(format!("\"{other}\" is not one of \"drop\", \"block\"")),
                ))
            }
        };
        let kind = match sink.kind.as_str() {
            "stdout" => SinkKind::Stdout,
            "syslog" => {
                SinkKind::Syslog(Box::new(validate_syslog(sink).map_err(|(k, m)| (k, which(m)))?))
            }
            other => {
                return Err((
                    "audit.sinks.type",
                    which(format!("\"{other}\" is not one of \"syslog\", \"stdout\"")),
                ))
            }
        };
        sinks.push(SinkConfig { name, queue_bytes: sink.queue_bytes as usize, on_full, kind });
    }
    if sinks.iter().filter(|sink| matches!(sink.kind, SinkKind::Stdout)).count() > 1 {
        return Err(("audit.sinks.type", "only one sink can be \"stdout\"".into()));
    }
    Ok(sinks)
}

fn validate_syslog(sink: &RawSink) -> Result<SyslogConfig, (&'static str, String)> {
    let transport = match sink.transport.as_str() {
        "tcp" => SyslogTransport::Tcp,
        "tls" => SyslogTransport::Tls,
        "udp" => SyslogTransport::Udp,
        other => {
            return Err((
                "audit.sinks.transport",
                format!("\"{other}\" is not one of \"tcp\", \"tls\", \"udp\" (\"relp\" is not in this version)"),
            ))
        }
    };
    let host = match sink.address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            host.trim_start_matches('[').trim_end_matches(']')
        }
        _ => return Err(("audit.sinks.address", format!("\"{}\" is not HOST:PORT", sink.address))),
    };
    let facility = FACILITIES.iter().position(|name| *name == sink.facility).ok_or_else(|| {
        (
            "audit.sinks.facility",
            format!("\"{}\" is not a syslog facility (kern..local7)", sink.facility),
        )
    })? as u8;
    if sink.max_message_bytes < MIN_MESSAGE_BYTES {
        return Err((
            "audit.sinks.max_message_bytes",
            format!("must be at least {MIN_MESSAGE_BYTES}"),
        ));
    }
    if sink.app_name.is_empty()
        || sink.app_name.len() > 48
        || !sink.app_name.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(("audit.sinks.app_name", "1 to 48 printable ASCII characters".into()));
    }
    if sink.hostname.len() > 255 || !sink.hostname.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(("audit.sinks.hostname", "at most 255 printable ASCII characters".into()));
    }
    if sink.reconnect_min_ms == 0 || sink.reconnect_max_ms < sink.reconnect_min_ms {
        return Err((
            "audit.sinks.reconnect_max_ms",
            "reconnect_min_ms must be at least 1 and reconnect_max_ms at least it".into(),
        ));
    }
    let tls_keys = [&sink.ca_file, &sink.cert_file, &sink.key_file, &sink.server_name];
    let tls = if transport == SyslogTransport::Tls {
        if sink.cert_file.is_some() != sink.key_file.is_some() {
            return Err(("audit.sinks.key_file", "cert_file and key_file go together".into()));
        }
        Some(UpstreamTlsConfig {
            ca_file: sink.ca_file.as_ref().map(PathBuf::from),
            cert_file: sink.cert_file.as_ref().map(PathBuf::from),
            key_file: sink.key_file.as_ref().map(PathBuf::from),
            server_name: sink.server_name.clone().unwrap_or_else(|| host.to_owned()),
            insecure_skip_verify: false,
        })
    } else if tls_keys.iter().any(|key| key.is_some()) {
        return Err((
            "audit.sinks.transport",
            "ca_file, cert_file, key_file and server_name need transport = \"tls\"".into(),
        ));
    } else {
        None
    };
    Ok(SyslogConfig {
        address: sink.address.clone(),
        transport,
        facility,
        app_name: sink.app_name.clone(),
        hostname: (!sink.hostname.is_empty()).then(|| sink.hostname.clone()),
        max_message_bytes: sink.max_message_bytes as usize,
        connect_timeout: Duration::from_millis(sink.connect_timeout_ms.max(1)),
        reconnect_min: Duration::from_millis(sink.reconnect_min_ms),
        reconnect_max: Duration::from_millis(sink.reconnect_max_ms),
        inflight_bytes: sink.inflight_bytes as usize,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(toml: &str) -> RawSink {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn names_default_by_position_and_must_differ() {
        let sinks =
            validate_sinks(&[sink("type = \"stdout\""), sink("transport = \"tcp\"")]).unwrap();
        assert_eq!(sinks[0].name, "stdout-1");
        assert_eq!(sinks[1].name, "syslog-2");
        let twice = [sink("name = \"a\"\ntransport = \"tcp\""), sink("name = \"a\"")];
        assert_eq!(validate_sinks(&twice).unwrap_err().0, "audit.sinks.name");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (toml, key) in [
            ("type = \"kafka\"", "audit.sinks.type"),
            ("on_full = \"reject\"", "audit.sinks.on_full"),
            ("transport = \"relp\"", "audit.sinks.transport"),
            ("address = \"nohost\"", "audit.sinks.address"),
            ("facility = \"local9\"", "audit.sinks.facility"),
            ("max_message_bytes = 100", "audit.sinks.max_message_bytes"),
            ("queue_bytes = 10", "audit.sinks.queue_bytes"),
            ("transport = \"tcp\"\nca_file = \"ca.pem\"", "audit.sinks.transport"),
            ("cert_file = \"c.pem\"", "audit.sinks.key_file"),
            ("name = \"a b\"", "audit.sinks.name"),
        ] {
            assert_eq!(validate_sinks(&[sink(toml)]).unwrap_err().0, key, "{toml}");
        }
    }

    #[test]
    fn tls_checks_the_address_host_by_default() {
        let sinks =
            validate_sinks(&[sink("address = \"siem.example:6514\"\nfacility = \"local3\"")])
                .unwrap();
        let SinkKind::Syslog(syslog) = &sinks[0].kind else { panic!("syslog") };
        assert_eq!(syslog.tls.as_ref().unwrap().server_name, "siem.example");
        assert_eq!(syslog.facility, 19);
    }
}
