//! Audit events and how each becomes one JSON line (schema `redis-audit/1`, documented in
//! `docs/audit-schema.md`). Rendering happens on the writer thread, never on the proxy's.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use serde::ser::{SerializeMap, Serializer as _};
use serde::Serialize;

use std::sync::Arc;

use crate::audit::redact::ShownArg;
use crate::command::{Class, CommandInfo};
use crate::record::{CommandRecord, ReplySource, ReplyStatus};

/// The schema every line declares.
pub const SCHEMA: &str = "redis-audit/1";

/// Total bytes of key names written in one command record before the rest are left out (and
/// `keys_truncated` is set).
pub const MAX_KEY_BYTES: usize = 16 * 1024;

/// One thing to record.
#[derive(Debug)]
pub enum AuditEvent {
    /// A command, after its reply.
    Command(Box<CommandEvent>),
    /// A client session opened, authenticated or closed.
    Session(Box<SessionEvent>),
    /// An authentication or an access denial.
    Security(Box<SecurityEvent>),
    /// The proxy itself: start, stop, loss.
    System(SystemEvent),
}

impl AuditEvent {
    /// Rough size in memory and on disk, for the queue's byte budget.
    pub fn estimated_bytes(&self) -> usize {
        match self {
            Self::Command(command) => {
                let args: usize = command
                    .args
                    .iter()
                    .flatten()
                    .map(|arg| match arg {
                        ShownArg::Clear(bytes) => bytes.len(),
                        ShownArg::Redacted => 16,
                    })
                    .sum();
                let strings: usize = args
                    + command.keys.iter().map(Bytes::len).sum::<usize>()
                    + command.user.len()
                    + [&command.client_name, &command.client_lib, &command.client_lib_ver]
                        .iter()
                        .map(|s| s.as_ref().map_or(0, Bytes::len))
                        .sum::<usize>();
                512 + strings
            }
            Self::Session(_) | Self::Security(_) => 512,
            Self::System(_) => 512,
        }
    }
}

/// Longest client name, library name or version, or user name written; longer ones are cut
/// (and `client.truncated` / `user_truncated` say so).
pub const MAX_NAME_BYTES: usize = 256;

/// What the trail keeps of a command: bounded copies of what it writes, and nothing else — not
/// the arguments, which hold values and may hold secrets, and would pin the request's buffer.
#[derive(Debug, Clone)]
pub struct CommandEvent {
    /// Proxy connection id.
    pub conn_id: u64,
    /// The client's address.
    pub client_addr: SocketAddr,
    /// The user (cut at [`MAX_NAME_BYTES`]).
    pub user: Bytes,
    /// Whether `user` was cut.
    pub user_truncated: bool,
    /// The selected database.
    pub db: u32,
    /// The command as the table knows it; `None` when unknown.
    pub command: Option<Arc<CommandInfo>>,
    /// Length of the name of an unknown command (the name itself is not written: a client
    /// that sends a password on a line of its own sends it as a command name).
    pub unknown_name_bytes: usize,
    /// Read / write / non_read_write.
    pub class: Option<Class>,
    /// Key names, copied, up to [`MAX_KEY_BYTES`] in all.
    pub keys: Vec<Bytes>,
    /// Number of keys.
    pub key_count: usize,
    /// Total bytes of the key names.
    pub key_bytes: usize,
    /// Some keys were left out.
    pub keys_truncated: bool,
    /// What became of it.
    pub status: ReplyStatus,
    /// A Redis error code, when it is one.
    pub error_code: Option<Bytes>,
    /// Who answered.
    pub source: ReplySource,
    /// Request size.
    pub request_bytes: u64,
    /// Reply size.
    pub reply_bytes: u64,
    /// Request read to reply read.
    pub latency: Duration,
    /// When the record was made.
    pub time: SystemTime,
    /// Client name (cut).
    pub client_name: Option<Bytes>,
    /// Client library (cut).
    pub client_lib: Option<Bytes>,
    /// Client library version (cut).
    pub client_lib_ver: Option<Bytes>,
    /// Whether any client string was cut.
    pub client_truncated: bool,
    /// RESP version.
    pub resp: u8,
    /// With argument capture: the arguments after the name, secrets redacted, cut to the budget.
    pub args: Option<Vec<ShownArg>>,
    /// Whether `args` was cut.
    pub args_truncated: bool,
}

/// A bounded copy: at most `max` bytes, and whether it was cut.
fn bounded(bytes: &[u8], max: usize) -> (Bytes, bool) {
    (Bytes::copy_from_slice(&bytes[..bytes.len().min(max)]), bytes.len() > max)
}

impl CommandEvent {
    /// Takes from `record` what the trail writes; the rest (arguments, values) is dropped here,
    /// unless `capture_args` gives a budget for them (secrets are redacted even then).
    pub fn from_record(record: &CommandRecord, capture_args: Option<usize>) -> Self {
        let (args, args_truncated) = match capture_args {
            Some(budget) if record.command.is_some() => {
                let (shown, truncated) = crate::audit::redact::shown_args(&record.args, budget);
                (Some(shown), truncated)
            }
            _ => (None, false),
        };
        let mut keys = Vec::new();
        let (mut key_bytes, mut truncated) = (0, false);
        for key in record.key_names() {
            key_bytes += key.len();
            if key_bytes <= MAX_KEY_BYTES {
                keys.push(Bytes::copy_from_slice(key));
            } else {
                truncated = true;
            }
        }
        let (user, user_truncated) = bounded(&record.user, MAX_NAME_BYTES);
        let mut client_truncated = false;
        let mut client_string = |value: &Option<Bytes>| {
            value.as_ref().map(|v| {
                let (copy, cut) = bounded(v, MAX_NAME_BYTES);
                client_truncated |= cut;
                copy
            })
        };
        let client_name = client_string(&record.client_name);
        let client_lib = client_string(&record.client_lib);
        let client_lib_ver = client_string(&record.client_lib_ver);
        Self {
            conn_id: record.conn_id,
            client_addr: record.client_addr,
            user,
            user_truncated,
            db: record.db,
            command: record.command.clone(),
            unknown_name_bytes: if record.command.is_none() {
                record.args.first().map_or(0, Bytes::len)
            } else {
                0
            },
            class: record.class,
            keys,
            key_count: record.keys.len(),
            key_bytes,
            keys_truncated: truncated,
            status: record.status,
            error_code: record.error_code.clone(),
            source: record.source,
            request_bytes: record.request_bytes,
            reply_bytes: record.reply_bytes,
            latency: record.latency,
            time: record.time,
            client_name,
            client_lib,
            client_lib_ver,
            client_truncated,
            resp: record.resp,
            args,
            args_truncated,
        }
    }
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
    pub detail: serde_json::Value,
}

/// What every line of one process shares.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// How key names are written.
    pub keys: crate::config::KeyNames,
    /// New at each start (UUID v4 form).
    pub instance_id: String,
    /// Host name.
    pub node: String,
    /// The upstream address.
    pub upstream: String,
}

impl Envelope {
    /// The session id of a connection: unique across restarts.
    pub fn session_id(&self, conn_id: u64) -> String {
        format!("{}-{conn_id}", &self.instance_id[..8])
    }
}

/// Appends one line (without the chain field's closing and newline handled by the caller):
/// the event as a JSON object whose last field is `chain.prev`.
pub fn render(
    event: &AuditEvent,
    seq: Option<u64>,
    envelope: &Envelope,
    prev_hash: &str,
    out: &mut Vec<u8>,
) {
    let mut serializer = serde_json::Serializer::new(&mut *out);
    let Ok(mut map) = serializer.serialize_map(None) else { return };
    // Writing into a Vec cannot fail; a value that cannot serialize is a bug caught by tests.
    let _ = write_fields(&mut map, event, seq, envelope, prev_hash);
    let _ = map.end();
}

type Map<'a> = serde_json::ser::Compound<'a, &'a mut Vec<u8>, serde_json::ser::CompactFormatter>;

fn write_fields(
    map: &mut Map<'_>,
    event: &AuditEvent,
    seq: Option<u64>,
    envelope: &Envelope,
    prev_hash: &str,
) -> Result<(), serde_json::Error> {
    let (time, kind, action, outcome) = match event {
        AuditEvent::Command(command) => {
            let outcome = match command.status {
                ReplyStatus::Ok | ReplyStatus::Queued | ReplyStatus::Skipped => "success",
                ReplyStatus::Error => "failure",
                ReplyStatus::Unanswered => "unknown",
            };
            let received = command.time.checked_sub(command.latency).unwrap_or(command.time);
            (received, "command", "command", outcome)
        }
        AuditEvent::Session(session) => {
            let action = match session.action {
                SessionAction::Open => "session_open",
                SessionAction::Auth => "session_auth",
                SessionAction::Close => "session_close",
            };
            (session.time, "session", action, "success")
        }
        AuditEvent::Security(security) => {
            let (action, outcome) = match security.action {
                SecurityAction::AuthSuccess => ("auth_success", "success"),
                SecurityAction::AuthFailure => ("auth_failure", "failure"),
                SecurityAction::AclDenied => ("acl_denied", "failure"),
                SecurityAction::TlsRejected => ("tls_rejected", "failure"),
            };
            (security.time, "security", action, outcome)
        }
        AuditEvent::System(system) => {
            let failed =
                matches!(system.action, "loss" | "policy_reload_failed" | "tls_reload_failed");
            let outcome = if failed { "failure" } else { "success" };
            (system.time, "system", system.action, outcome)
        }
    };
    map.serialize_entry("schema", SCHEMA)?;
    map.serialize_entry("time", &rfc3339_micros(time))?;
    if let Some(seq) = seq {
        map.serialize_entry("seq", &seq)?;
    }
    map.serialize_entry("instance_id", &envelope.instance_id)?;
    map.serialize_entry("node", &envelope.node)?;
    map.serialize_entry("kind", kind)?;
    map.serialize_entry("action", action)?;
    map.serialize_entry("outcome", outcome)?;
    match event {
        AuditEvent::Command(command) => write_command(map, command, envelope)?,
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
    map.serialize_entry("chain", &Chain { alg: "sha256", prev: prev_hash })
}

#[derive(Serialize)]
struct Chain<'a> {
    alg: &'static str,
    prev: &'a str,
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

/// An argument: a Redis string, or `{"redacted": true}` for a secret.
struct ArgOut<'a>(&'a ShownArg);

impl Serialize for ArgOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ShownArg::Clear(bytes) => Binary(bytes).serialize(serializer),
            ShownArg::Redacted => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("redacted", &true)?;
                map.end()
            }
        }
    }
}

/// A key name as `{"hmac": "<first 128 bits of HMAC-SHA256, hex>"}`.
#[derive(Serialize)]
struct HmacKey {
    hmac: String,
}

impl HmacKey {
    fn of(secret: &[u8], key: &[u8]) -> Self {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(secret)
            .expect("HMAC takes keys of any length");
        mac.update(key);
        let digest = mac.finalize().into_bytes();
        Self { hmac: digest[..16].iter().map(|b| format!("{b:02x}")).collect() }
    }
}

#[derive(Serialize)]
struct Client<'a> {
    ip: IpText,
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Binary<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lib: Option<Binary<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lib_ver: Option<Binary<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resp: Option<u8>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// An IP address as text without a heap allocation for IPv4 (once per audit line).
struct IpText {
    bytes: [u8; 15],
    len: usize,
    v6: Option<String>,
}

impl IpText {
    fn of(ip: std::net::IpAddr) -> Self {
        let mut text = Self { bytes: [0; 15], len: 0, v6: None };
        match ip {
            std::net::IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if *octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if *octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            std::net::IpAddr::V6(v6) => text.v6 = Some(v6.to_string()),
        }
        text
    }

    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn as_str(&self) -> &str {
        match &self.v6 {
            Some(text) => text,
            // Only ASCII digits and dots were pushed.
            None => std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default(),
        }
    }
}

impl Serialize for IpText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

fn client<'a>(
    addr: &SocketAddr,
    name: &'a Option<Bytes>,
    lib: &'a Option<Bytes>,
    lib_ver: &'a Option<Bytes>,
    resp: Option<u8>,
) -> Client<'a> {
    Client {
        ip: IpText::of(addr.ip()),
        port: addr.port(),
        name: name.as_deref().map(Binary),
        lib: lib.as_deref().map(Binary),
        lib_ver: lib_ver.as_deref().map(Binary),
        resp,
        truncated: false,
    }
}

#[derive(Serialize)]
struct CommandInfoOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    known: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_bytes: Option<usize>,
    class: Option<&'static str>,
    categories: &'a [String],
}

#[derive(Serialize)]
struct ResultOut<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<Binary<'a>>,
    source: &'static str,
}

fn write_command(
    map: &mut Map<'_>,
    command: &CommandEvent,
    envelope: &Envelope,
) -> Result<(), serde_json::Error> {
    map.serialize_entry("session_id", &envelope.session_id(command.conn_id))?;
    let mut client = client(
        &command.client_addr,
        &command.client_name,
        &command.client_lib,
        &command.client_lib_ver,
        Some(command.resp),
    );
    client.truncated = command.client_truncated;
    map.serialize_entry("client", &client)?;
    map.serialize_entry("user", &Binary(&command.user))?;
    if command.user_truncated {
        map.serialize_entry("user_truncated", &true)?;
    }
    map.serialize_entry("db", &command.db)?;
    map.serialize_entry("upstream", &envelope.upstream)?;
    let (name, sub) = match &command.command {
        Some(info) => match info.name.split_once('|') {
            Some((name, sub)) => (name, Some(sub)),
            None => (info.name.as_str(), None),
        },
        None => ("(unknown)", None),
    };
    let categories: &[String] = command.command.as_ref().map_or(&[], |info| &info.categories);
    map.serialize_entry(
        "command",
        &CommandInfoOut {
            name,
            sub,
            known: command.command.is_some(),
            name_bytes: (command.command.is_none()).then_some(command.unknown_name_bytes),
            class: command.class.map(Class::as_str),
            categories,
        },
    )?;
    match &envelope.keys {
        crate::config::KeyNames::Clear => {
            let keys: Vec<Binary<'_>> = command.keys.iter().map(|k| Binary(k)).collect();
            map.serialize_entry("keys", &keys)?;
        }
        crate::config::KeyNames::Hmac(secret) => {
            let keys: Vec<HmacKey> = command.keys.iter().map(|k| HmacKey::of(secret, k)).collect();
            map.serialize_entry("keys", &keys)?;
        }
        crate::config::KeyNames::Off => {}
    }
    map.serialize_entry("key_count", &command.key_count)?;
    if let Some(args) = &command.args {
        let shown: Vec<ArgOut<'_>> = args.iter().map(ArgOut).collect();
        map.serialize_entry("args", &shown)?;
        map.serialize_entry("args_truncated", &command.args_truncated)?;
    }
    map.serialize_entry("key_bytes", &command.key_bytes)?;
    map.serialize_entry("keys_truncated", &command.keys_truncated)?;
    let status = match command.status {
        ReplyStatus::Ok => "ok",
        ReplyStatus::Error => "error",
        ReplyStatus::Queued => "queued",
        ReplyStatus::Skipped => "skipped",
        ReplyStatus::Unanswered => "unanswered",
    };
    let source = match command.source {
        ReplySource::Upstream => "upstream",
        ReplySource::Proxy => "proxy",
    };
    map.serialize_entry(
        "result",
        &ResultOut { status, error_code: command.error_code.as_deref().map(Binary), source },
    )?;
    map.serialize_entry("duration_us", &(command.latency.as_micros() as u64))?;
    map.serialize_entry("request_bytes", &command.request_bytes)?;
    map.serialize_entry("response_bytes", &command.reply_bytes)
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
        None,
    );
    map.serialize_entry("client", &client)?;
    map.serialize_entry("user", &Binary(&session.user))?;
    map.serialize_entry("upstream", &envelope.upstream)?;
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
    map.serialize_entry("client", &client(&security.client_addr, &None, &None, &None, None))?;
    map.serialize_entry("user", &Binary(&security.user))?;
    if let Some(username) = &security.username {
        map.serialize_entry("username", &Binary(&username[..username.len().min(MAX_NAME_BYTES)]))?;
    }
    map.serialize_entry("reason", security.reason)?;
    map.serialize_entry("context", security.context)?;
    if let Some(object) = &security.object {
        map.serialize_entry("object", &Binary(&object[..object.len().min(MAX_NAME_BYTES)]))?;
    }
    map.serialize_entry("source", security.source)?;
    if let Some(mode) = security.mode {
        map.serialize_entry("mode", mode)?;
    }
    if let Some(version) = &security.policy_version {
        map.serialize_entry("policy_version", &**version)?;
    }
    map.serialize_entry("upstream", &envelope.upstream)
}

/// `2026-11-22T04:40:00.123456Z`
pub fn rfc3339_micros(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs() as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    // Digit by digit: this runs once per audit line, and `format!` cost a visible share of
    // the writer's time. Years past 9999 keep their low four digits (not before the year 10000).
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
    put(20, 6, u64::from(since.subsec_micros()));
    // Only ASCII digits and separators were written.
    String::from_utf8_lossy(&out).into_owned()
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

    #[test]
    fn rfc3339_formats_utc_with_micros() {
        let time = UNIX_EPOCH + Duration::new(1_795_319_593, 871_344_123);
        assert_eq!(rfc3339_micros(time), "2026-11-22T03:53:13.871344Z");
        assert_eq!(rfc3339_micros(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_micros(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn ip_text_matches_the_standard_display() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "127.0.0.1",
            "192.168.100.9",
            "255.255.255.255",
            "::1",
            "fe80::1:2",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::of(ip).as_str(), ip.to_string());
        }
    }

    #[test]
    fn binary_strings_are_base64_objects() {
        assert_eq!(serde_json::to_string(&Binary(b"k")).unwrap(), "\"k\"");
        assert_eq!(serde_json::to_string(&Binary(b"\xff")).unwrap(), "{\"b64\":\"/w==\"}");
    }
}
