//! Audit events other than commands, and how each becomes one JSON line (schema
//! `redis-audit/2`, documented in `docs/audit-schema.md`). Command lines, most of the trail,
//! are written straight from their records by [`crate::audit::line`].

use std::net::SocketAddr;
use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use serde::ser::{SerializeMap, Serializer as _};
use serde::Serialize;

use crate::audit::schema::{push_head, Envelope, MAX_NAME_BYTES};
use crate::event::{SecurityAction, SecurityEvent, SessionAction, SessionEvent, SystemEvent};

/// The time a line carries, also named here: where integration tests and benches find it.
pub use crate::audit::time::{rfc3339_micros, rfc3339_micros_bytes};

/// One thing to record, other than a command.
#[derive(Debug)]
pub enum AuditEvent {
    /// A client session opened, authenticated or closed.
    Session(Box<SessionEvent>),
    /// An authentication or an access denial.
    Security(Box<SecurityEvent>),
    /// The proxy itself: start, stop, loss.
    System(SystemEvent),
}

/// Appends one whole line (without its newline), chained to `prev_hash`: for the writer's own
/// lines, which it renders knowing the hash.
pub fn render(event: &AuditEvent, seq: Option<u64>, envelope: &Envelope, out: &mut Vec<u8>) {
    push_head(out, &rfc3339_micros_bytes(event_time(event)), seq);
    render_body(event, envelope, out);
}

/// When an event happened (the time its line carries).
pub(crate) fn event_time(event: &AuditEvent) -> SystemTime {
    match event {
        AuditEvent::Session(session) => session.time,
        AuditEvent::Security(security) => security.time,
        AuditEvent::System(system) => system.time,
    }
}

/// Appends an event's fields after the line's head (from `"kind"` to the end of the object).
pub(crate) fn render_body(event: &AuditEvent, envelope: &Envelope, out: &mut Vec<u8>) {
    let start = out.len();
    let mut serializer = serde_json::Serializer::new(&mut *out);
    let Ok(mut map) = serializer.serialize_map(None) else { return };
    // Writing into a Vec cannot fail; a value that cannot serialize is a bug caught by tests.
    let _ = write_fields(&mut map, event, envelope);
    let _ = map.end();
    // The map's own `{` is the head's.
    out.remove(start);
}

type Map<'a> = serde_json::ser::Compound<'a, &'a mut Vec<u8>, serde_json::ser::CompactFormatter>;

fn write_fields(
    map: &mut Map<'_>,
    event: &AuditEvent,
    envelope: &Envelope,
) -> Result<(), serde_json::Error> {
    let (kind, action, outcome) = match event {
        AuditEvent::Session(session) => {
            let action = match session.action {
                SessionAction::Open => "session_open",
                SessionAction::Auth => "session_auth",
                SessionAction::Close => "session_close",
            };
            ("session", action, "success")
        }
        AuditEvent::Security(security) => {
            let (action, outcome) = match security.action {
                SecurityAction::AuthSuccess => ("auth_success", "success"),
                SecurityAction::AuthFailure => ("auth_failure", "failure"),
                SecurityAction::AclDenied => ("acl_denied", "failure"),
                SecurityAction::TlsRejected => ("tls_rejected", "failure"),
                SecurityAction::Replication => ("replication", "success"),
                SecurityAction::ClusterBypass => ("cluster_bypass", "failure"),
            };
            ("security", action, outcome)
        }
        AuditEvent::System(system) => {
            let failed = matches!(
                system.action,
                "loss" | "sink_loss" | "policy_reload_failed" | "tls_reload_failed"
            );
            ("system", system.action, if failed { "failure" } else { "success" })
        }
    };
    map.serialize_entry("kind", kind)?;
    map.serialize_entry("action", action)?;
    map.serialize_entry("outcome", outcome)?;
    match event {
        AuditEvent::Session(session) => write_session(map, session, envelope)?,
        AuditEvent::Security(security) => write_security(map, security, envelope)?,
        AuditEvent::System(system) => {
            if let serde_json::Value::Object(fields) = &system.detail {
                for (name, value) in fields {
                    map.serialize_entry(name, value)?;
                }
            }
        }
    }
    Ok(())
}

/// A Redis string: a JSON string when valid UTF-8, else `{"b64": "..."}`.
#[derive(Debug)]
pub struct Binary<'a>(pub &'a [u8]);

impl Serialize for Binary<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(
                    "b64",
                    &base64::engine::general_purpose::STANDARD.encode(self.0),
                )?;
                map.end()
            }
        }
    }
}

/// A client-controlled string as written: its first [`MAX_NAME_BYTES`], and whether it was
/// longer (the same cut command lines make, so no client string makes a long line).
fn capped(bytes: &[u8]) -> (Binary<'_>, bool) {
    (Binary(&bytes[..bytes.len().min(MAX_NAME_BYTES)]), bytes.len() > MAX_NAME_BYTES)
}

/// The client of a session or security event (command lines write theirs in [`crate::audit::line`]).
#[derive(Serialize)]
struct Client<'a> {
    /// serde writes an address as its text.
    ip: std::net::IpAddr,
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Binary<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lib: Option<Binary<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lib_ver: Option<Binary<'a>>,
    /// Written only when one of the strings was cut, as on command lines.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

fn client<'a>(
    addr: &SocketAddr,
    name: &'a Option<Bytes>,
    lib: &'a Option<Bytes>,
    lib_ver: &'a Option<Bytes>,
) -> Client<'a> {
    let mut truncated = false;
    let mut cut = |value: &'a Option<Bytes>| {
        value.as_deref().map(|bytes| {
            let (shown, cut) = capped(bytes);
            truncated |= cut;
            shown
        })
    };
    let (name, lib, lib_ver) = (cut(name), cut(lib), cut(lib_ver));
    Client { ip: addr.ip(), port: addr.port(), name, lib, lib_ver, truncated }
}

/// Writes `"<field>":<the string, cut>` and, when it was cut, `"<field>_truncated":true`.
fn write_capped(
    map: &mut Map<'_>,
    field: &'static str,
    truncated_field: &'static str,
    value: &[u8],
) -> Result<(), serde_json::Error> {
    let (shown, cut) = capped(value);
    map.serialize_entry(field, &shown)?;
    if cut {
        map.serialize_entry(truncated_field, &true)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct CloseOut {
    reason: &'static str,
    duration_ms: u64,
    commands: u64,
    errors: u64,
    bytes_in: u64,
    bytes_out: u64,
}

fn write_session(
    map: &mut Map<'_>,
    session: &SessionEvent,
    envelope: &Envelope,
) -> Result<(), serde_json::Error> {
    map.serialize_entry("session_id", &envelope.session_id(session.conn_id))?;
    let client = client(
        &session.client_addr,
        &session.client_name,
        &session.client_lib,
        &session.client_lib_ver,
    );
    map.serialize_entry("client", &client)?;
    write_capped(map, "user", "user_truncated", &session.user)?;
    if let Some(tls) = &session.tls {
        map.serialize_entry(
            "tls",
            &serde_json::json!({
                "version": tls.version,
                "cipher": tls.cipher,
                "client_cert_sha256": tls.client_cert_sha256,
                "client_subject": tls.client_subject,
            }),
        )?;
    }
    if let Some(close) = &session.close {
        map.serialize_entry(
            "close",
            &CloseOut {
                reason: close.reason,
                duration_ms: close.duration.as_millis() as u64,
                commands: close.commands,
                errors: close.errors,
                bytes_in: close.bytes_in,
                bytes_out: close.bytes_out,
            },
        )?;
    }
    Ok(())
}

fn write_security(
    map: &mut Map<'_>,
    security: &SecurityEvent,
    envelope: &Envelope,
) -> Result<(), serde_json::Error> {
    if security.conn_id != 0 {
        // 0: turned away before a session was opened (a failed TLS handshake).
        map.serialize_entry("session_id", &envelope.session_id(security.conn_id))?;
    }
    map.serialize_entry("client", &client(&security.client_addr, &None, &None, &None))?;
    write_capped(map, "user", "user_truncated", &security.user)?;
    if let Some(username) = &security.username {
        write_capped(map, "username", "username_truncated", username)?;
    }
    map.serialize_entry("reason", security.reason)?;
    map.serialize_entry("context", security.context)?;
    if let Some(object) = &security.object {
        write_capped(map, "object", "object_truncated", object)?;
    }
    if let Some(command) = &security.command {
        map.serialize_entry("command", command)?;
    }
    map.serialize_entry("source", security.source)?;
    if let Some(mode) = security.mode {
        map.serialize_entry("mode", mode)?;
    }
    if let Some(version) = &security.policy_version {
        map.serialize_entry("policy_version", &**version)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    #[test]
    fn client_addresses_are_their_standard_text() {
        for address in ["10.0.0.1:6379", "255.255.255.255:1", "[::1]:7", "[fe80::1:2]:80"] {
            let address: SocketAddr = address.parse().unwrap();
            let text = serde_json::to_string(&client(&address, &None, &None, &None)).unwrap();
            let expected = format!("{{\"ip\":\"{}\",\"port\":{}}}", address.ip(), address.port());
            assert_eq!(text, expected);
        }
    }

    fn rendered(event: &AuditEvent) -> serde_json::Value {
        let envelope = Envelope::new(
            crate::audit::config::KeyNames::Clear,
            "406b1755-e9d8-4622-8038-cfaa54796898".into(),
            "n".into(),
            "r:6379".into(),
        );
        let mut line = Vec::new();
        render(event, Some(1), &envelope, &mut line);
        assert!(line.len() < 16 * 1024, "a {} byte line", line.len());
        serde_json::from_slice(&line).unwrap()
    }

    #[test]
    fn client_strings_in_session_and_security_events_are_cut_and_flagged() {
        let huge = Bytes::from(vec![b'"'; 1 << 20]);
        let session = SessionEvent {
            action: SessionAction::Close,
            time: UNIX_EPOCH,
            conn_id: 1,
            client_addr: "10.0.0.1:5".parse().unwrap(),
            user: huge.clone(),
            client_name: Some(huge.clone()),
            client_lib: Some(Bytes::from_static(b"lib")),
            client_lib_ver: Some(huge.clone()),
            close: None,
            tls: None,
        };
        let line = rendered(&AuditEvent::Session(Box::new(session.clone())));
        let cut = "\"".repeat(MAX_NAME_BYTES);
        assert_eq!(line["client"]["name"], cut.as_str());
        assert_eq!(line["client"]["lib"], "lib");
        assert_eq!(line["client"]["lib_ver"], cut.as_str());
        assert_eq!(line["client"]["truncated"], true);
        assert_eq!((&line["user"], &line["user_truncated"]), (&json!(cut), &json!(true)));

        // Within the limit: nothing cut, no flag.
        let short = SessionEvent {
            user: Bytes::from(vec![b'u'; MAX_NAME_BYTES]),
            client_name: Some(Bytes::from_static(b"n")),
            client_lib_ver: None,
            ..session
        };
        let line = rendered(&AuditEvent::Session(Box::new(short)));
        assert!(line["client"].get("truncated").is_none() && line.get("user_truncated").is_none());

        let security = SecurityEvent {
            action: SecurityAction::AclDenied,
            time: UNIX_EPOCH,
            conn_id: 1,
            client_addr: "10.0.0.1:5".parse().unwrap(),
            user: huge.clone(),
            username: Some(huge),
            reason: "key",
            context: "toplevel",
            object: Some(Bytes::from(vec![0xff; 1 << 20])),
            source: "proxy",
            mode: Some("enforce"),
            policy_version: None,
            command: None,
        };
        let line = rendered(&AuditEvent::Security(Box::new(security)));
        assert_eq!((&line["user"], &line["user_truncated"]), (&json!(cut), &json!(true)));
        assert_eq!((&line["username"], &line["username_truncated"]), (&json!(cut), &json!(true)));
        let bytes = base64::engine::general_purpose::STANDARD.encode([0xff; MAX_NAME_BYTES]);
        assert_eq!(line["object"], json!({"b64": bytes}));
        assert_eq!(line["object_truncated"], true);
    }

    #[test]
    fn binary_strings_are_base64_objects() {
        assert_eq!(serde_json::to_string(&Binary(b"k")).unwrap(), "\"k\"");
        assert_eq!(serde_json::to_string(&Binary(b"\xff")).unwrap(), "{\"b64\":\"/w==\"}");
    }
}
