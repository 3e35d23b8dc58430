//! `[[audit.sinks]]`: the copies of the audit trail sent beside the files (syslog, stdout), as
//! written in `proxy.toml` ([`RawSink`]) and validated ([`SinkConfig`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::Invalid;
pub use crate::audit::sinks::config::{
    Facility, SinkConfig, SinkKind, SinkOnFull, SinkType, SyslogConfig, SyslogTransport,
};
use crate::tls::config::UpstreamTlsConfig;

/// One `[[audit.sinks]]` table as written; every key has a default (`proxy.toml.example`
/// shows them all in a commented-out table).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSink {
    /// `syslog` or `stdout`.
    #[serde(rename = "type")]
    pub kind: SinkType,
    /// Its name in metrics and loss records; empty = `<type>-<position>` (from 1).
    pub name: String,
    /// Bytes of lines queued for this sink before `on_full` applies.
    pub queue_bytes: u64,
    /// `drop` (the sink misses lines, declared by `loss` records) or `block` (the audit writer
    /// waits for room, so the proxy slows down as the file's own `on_full` says).
    pub on_full: SinkOnFull,
    /// syslog: `host:port` of the collector.
    pub address: String,
    /// syslog: `tcp` (RFC 6587 octet counting), `tls` (RFC 5425), `udp` (RFC 5426, lossy),
    /// `relp` or `relp_tls` (rsyslog's RELP: acknowledged, resent after a reconnection).
    pub transport: SyslogTransport,
    /// syslog: the facility, `kern`..`local7`.
    pub facility: Facility,
    /// syslog: APP-NAME.
    pub app_name: String,
    /// syslog: HOSTNAME; empty = the node's host name.
    pub hostname: String,
    /// syslog: the longest message sent; longer records have their long fields cut.
    pub max_message_bytes: u64,
    /// syslog: longest connection attempt (TLS handshake included), and longest wait of one
    /// write for a collector that does not read.
    pub(crate) connect_timeout_ms: u64,
    /// syslog: first wait before reconnecting; doubled at each failure...
    pub(crate) reconnect_min_ms: u64,
    /// ...up to this.
    pub(crate) reconnect_max_ms: u64,
    /// syslog over tcp/tls: bytes of the last messages sent that are declared lost when the
    /// connection breaks (TCP acknowledges nothing to the sender's program: what the collector
    /// had not read yet is gone with it).
    pub inflight_bytes: u64,
    /// syslog over relp/relp_tls: messages sent and not acknowledged yet, at most (rsyslog's
    /// own RELP client uses 128).
    pub relp_window: u64,
    /// syslog: after taking fewer than 32 KiB of lines, wait this long for more before sending,
    /// so that a busy proxy sends few large writes rather than one per writer batch (0: send at
    /// once).
    pub coalesce_ms: u64,
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
            kind: SinkType::Syslog,
            name: String::new(),
            queue_bytes: 16 * 1024 * 1024,
            on_full: SinkOnFull::Drop,
            address: "127.0.0.1:6514".into(),
            transport: SyslogTransport::Tls,
            facility: Facility::Local0,
            app_name: "redis-audit-proxy".into(),
            hostname: String::new(),
            max_message_bytes: 8192,
            connect_timeout_ms: 5_000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 30_000,
            inflight_bytes: 1024 * 1024,
            relp_window: 128,
            coalesce_ms: 5,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
        }
    }
}

/// The smallest `max_message_bytes`: room for the syslog header and a cut record.
const MIN_MESSAGE_BYTES: u64 = 480;

/// Validates every `[[audit.sinks]]` table; an error names the key and says which sink.
pub(crate) fn validate_sinks(raw: &[RawSink]) -> Result<Vec<SinkConfig>, Invalid> {
    let mut sinks: Vec<SinkConfig> = Vec::with_capacity(raw.len());
    for (index, sink) in raw.iter().enumerate() {
        let name = if sink.name.is_empty() {
            format!("{}-{}", sink.kind.as_str(), index + 1)
        } else {
            sink.name.clone()
        };
        let which = |invalid: Invalid| {
            Invalid::other(invalid.key, format!("sink \"{name}\": {}", invalid.problem))
        };
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(which(Invalid::other(
                "audit.sinks.name",
                "use letters, digits, '-', '_', '.'",
            )));
        }
        if sinks.iter().any(|other| other.name == name) {
            return Err(which(Invalid::other("audit.sinks.name", "two sinks have this name")));
        }
        if sink.queue_bytes < 64 * 1024 {
            return Err(which(Invalid::other("audit.sinks.queue_bytes", "must be at least 65536")));
        }
        let kind = match sink.kind {
            SinkType::Stdout => SinkKind::Stdout,
            SinkType::Syslog => SinkKind::Syslog(Box::new(sink.validate_syslog().map_err(which)?)),
        };
        sinks.push(SinkConfig {
            name,
            queue_bytes: sink.queue_bytes as usize,
            on_full: sink.on_full,
            kind,
        });
    }
    if sinks.iter().filter(|sink| matches!(sink.kind, SinkKind::Stdout)).count() > 1 {
        return Err(Invalid::other("audit.sinks.type", "only one sink can be \"stdout\""));
    }
    Ok(sinks)
}

impl RawSink {
    fn validate_syslog(&self) -> Result<SyslogConfig, Invalid> {
        let host = match self.address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                host.trim_start_matches('[').trim_end_matches(']')
            }
            _ => {
                return Err(Invalid::other(
                    "audit.sinks.address",
                    format!("\"{}\" is not HOST:PORT", self.address),
                ))
            }
        };
        if self.max_message_bytes < MIN_MESSAGE_BYTES {
            return Err(Invalid::other(
                "audit.sinks.max_message_bytes",
                format!("must be at least {MIN_MESSAGE_BYTES}"),
            ));
        }
        if self.app_name.is_empty()
            || self.app_name.len() > 48
            || !self.app_name.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Invalid::other(
                "audit.sinks.app_name",
                "1 to 48 printable ASCII characters",
            ));
        }
        if self.hostname.len() > 255 || !self.hostname.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Invalid::other(
                "audit.sinks.hostname",
                "at most 255 printable ASCII characters",
            ));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(Invalid::other(
                "audit.sinks.reconnect_max_ms",
                "reconnect_min_ms must be at least 1 and reconnect_max_ms at least it",
            ));
        }
        let tls_keys = [&self.ca_file, &self.cert_file, &self.key_file, &self.server_name];
        if self.coalesce_ms > 1_000 {
            return Err(Invalid::other("audit.sinks.coalesce_ms", "must be 0 to 1000"));
        }
        if !(1..=65_536).contains(&self.relp_window) {
            return Err(Invalid::other("audit.sinks.relp_window", "must be 1 to 65536"));
        }
        let tls = if self.transport.uses_tls() {
            if self.cert_file.is_some() != self.key_file.is_some() {
                return Err(Invalid::other(
                    "audit.sinks.key_file",
                    "cert_file and key_file go together",
                ));
            }
            Some(UpstreamTlsConfig {
                ca_file: self.ca_file.as_ref().map(PathBuf::from),
                cert_file: self.cert_file.as_ref().map(PathBuf::from),
                key_file: self.key_file.as_ref().map(PathBuf::from),
                server_name: self.server_name.clone().unwrap_or_else(|| host.to_owned()),
                insecure_skip_verify: false,
            })
        } else if tls_keys.iter().any(|key| key.is_some()) {
            return Err(Invalid::other(
                "audit.sinks.transport",
                "ca_file, cert_file, key_file and server_name need transport = \"tls\" or \"relp_tls\"",
            ));
        } else {
            None
        };
        Ok(SyslogConfig {
            address: self.address.clone(),
            transport: self.transport,
            facility: self.facility,
            app_name: self.app_name.clone(),
            hostname: (!self.hostname.is_empty()).then(|| self.hostname.clone()),
            max_message_bytes: self.max_message_bytes as usize,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms.max(1)),
            reconnect_min: Duration::from_millis(self.reconnect_min_ms),
            reconnect_max: Duration::from_millis(self.reconnect_max_ms),
            inflight_bytes: self.inflight_bytes as usize,
            relp_window: self.relp_window as usize,
            coalesce: Duration::from_millis(self.coalesce_ms),
            tls,
        })
    }
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
        assert_eq!(validate_sinks(&twice).unwrap_err().key, "audit.sinks.name");
    }

    #[test]
    fn bad_values_name_their_key() {
        for toml in [
            "type = \"kafka\"",
            "on_full = \"reject\"",
            "transport = \"beep\"",
            "facility = \"local9\"",
        ] {
            let error = toml::from_str::<RawSink>(toml).unwrap_err().to_string();
            assert!(error.contains("unknown variant"), "{toml}: {error}");
        }
        for (toml, key) in [
            ("address = \"nohost\"", "audit.sinks.address"),
            ("max_message_bytes = 100", "audit.sinks.max_message_bytes"),
            ("queue_bytes = 10", "audit.sinks.queue_bytes"),
            ("transport = \"tcp\"\nca_file = \"ca.pem\"", "audit.sinks.transport"),
            ("cert_file = \"c.pem\"", "audit.sinks.key_file"),
            ("name = \"a b\"", "audit.sinks.name"),
            ("transport = \"relp\"\nrelp_window = 0", "audit.sinks.relp_window"),
            ("transport = \"relp\"\nca_file = \"ca.pem\"", "audit.sinks.transport"),
        ] {
            assert_eq!(validate_sinks(&[sink(toml)]).unwrap_err().key, key, "{toml}");
        }
    }

    #[test]
    fn tls_checks_the_address_host_by_default() {
        let sinks =
            validate_sinks(&[sink("address = \"siem.example:6514\"\nfacility = \"local3\"")])
                .unwrap();
        let SinkKind::Syslog(syslog) = &sinks[0].kind else { panic!("syslog") };
        assert_eq!(syslog.tls.as_ref().unwrap().server_name, "siem.example");
        assert_eq!(syslog.facility.code(), 19);
    }
}
