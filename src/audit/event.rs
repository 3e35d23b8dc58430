//! Audit events other than commands, and how each becomes one JSON line (schema
//! `redis-audit/2`, documented in `docs/audit-schema.md`). Command lines, most of the trail,
//! are written straight from their records by [`crate::audit::line`].

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use serde::ser::{SerializeMap, Serializer as _};
use serde::Serialize;

use crate::audit::line;
use crate::event::{SecurityAction, SecurityEvent, SessionAction, SessionEvent, SystemEvent};

/// The schema the files are written in; each file's `file_open` line declares it.
pub const SCHEMA: &str = "redis-audit/2";
/// The schema of the files older versions wrote (read by `audit verify` and queries).
pub const SCHEMA_V1: &str = "redis-audit/1";

/// Total bytes of key names written in one command record before the rest are left out (and
/// `keys_truncated` is set).
pub const MAX_KEY_BYTES: usize = 16 * 1024;

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

/// Longest client-controlled string written (client name, library name or version, user
/// name, a security event's `username` or `object`); longer ones are cut, and
/// `client.truncated` / `user_truncated` / `username_truncated` / `object_truncated` say so.
/// With it, no client string makes a line longer than a few KiB (escaped, each cut string is
/// at most 6 × 256 bytes).
pub const MAX_NAME_BYTES: usize = 256;

/// What every line of one process shares (written once per file, in its `file_open` line).
#[derive(Debug, Clone)]
pub struct Envelope {
    /// How key names are written.
    pub keys: crate::audit::config::KeyNames,
    /// New at each start (UUID v4 form).
    pub instance_id: String,
    /// Host name.
    pub node: String,
    /// The upstream address.
    pub upstream: String,
}

impl Envelope {
    /// The envelope of one process.
    pub fn new(
        keys: crate::audit::config::KeyNames,
        instance_id: String,
        node: String,
        upstream: String,
    ) -> Self {
        Self { keys, instance_id, node, upstream }
    }

    /// What session ids start with: the instance id's first eight characters.
    pub fn session_prefix(&self) -> &str {
        self.instance_id.get(..8).unwrap_or(&self.instance_id)
    }

    /// The session id of a connection: unique across restarts.
    pub fn session_id(&self, conn_id: u64) -> String {
        format!("{}-{conn_id}", self.session_prefix())
    }
}

/// Appends one whole line (without its newline), chained to `prev_hash`: for the writer's own
/// lines, which it renders knowing the hash.
pub fn render(event: &AuditEvent, seq: Option<u64>, envelope: &Envelope, out: &mut Vec<u8>) {
    line::push_head(out, &rfc3339_micros_bytes(event_time(event)), seq);
    render_body(event, envelope, out);
}

/// When an event happened (the time its line carries).
pub fn event_time(event: &AuditEvent) -> SystemTime {
    match event {
        AuditEvent::Session(session) => session.time,
        AuditEvent::Security(security) => security.time,
        AuditEvent::System(system) => system.time,
    }
}

/// Appends an event's fields after the line's head (from `"kind"` to the end of the object).
pub fn render_body(event: &AuditEvent, envelope: &Envelope, out: &mut Vec<u8>) {
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

/// The client of a session or security event (command lines write theirs in [`line`]).
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

/// `2026-11-22T04:40:00.123456Z`
pub fn rfc3339_micros(time: SystemTime) -> String {
    // Only ASCII digits and separators are written.
    String::from_utf8_lossy(&rfc3339_micros_bytes(time)).into_owned()
}

/// [`rfc3339_micros`] without an allocation (once per audit line). The text of the last
/// second is kept per thread: lines of one second differ only in their microseconds.
pub fn rfc3339_micros_bytes(time: SystemTime) -> [u8; 27] {
    thread_local! {
        static LAST_SECOND: std::cell::Cell<(u64, [u8; 27])> = const { std::cell::Cell::new((u64::MAX, [0; 27])) };
    }
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (cached_second, mut out) = LAST_SECOND.get();
    if cached_second != since.as_secs() {
        out = rfc3339_of_second(since.as_secs());
        LAST_SECOND.set((since.as_secs(), out));
    }
    let mut micros = since.subsec_micros();
    for at in (20..26).rev() {
        out[at] = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out
}

/// The text of a whole second, its microseconds zero.
fn rfc3339_of_second(seconds: u64) -> [u8; 27] {
    let seconds = seconds as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    // Years past 9999 keep their low four digits (not before the year 10000).
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (0..width).rev() {
            out[at + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.max(0) as u64);
    put(5, 2, u64::from(month));
    put(8, 2, u64::from(day));
    put(11, 2, (rest / 3600) as u64);
    put(14, 2, (rest % 3600 / 60) as u64);
    put(17, 2, (rest % 60) as u64);
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_utc_with_micros() {
        let time = UNIX_EPOCH + Duration::new(1_795_319_593, 871_344_123);
        assert_eq!(rfc3339_micros(time), "2026-11-22T03:53:13.871344Z");
        // The same second again (from the thread's cache), then the next.
        let same_second = UNIX_EPOCH + Duration::new(1_795_319_593, 5_000);
        assert_eq!(rfc3339_micros(same_second), "2026-11-22T03:53:13.000005Z");
        let next = UNIX_EPOCH + Duration::new(1_795_319_594, 999_999_999);
        assert_eq!(rfc3339_micros(next), "2026-11-22T03:53:14.999999Z");
        assert_eq!(rfc3339_micros(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_micros(leap), "2000-02-29T00:00:00.000000Z");
    }

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
