//! The command line of the trail rendered straight from the record, with the JSON writer of
//! [`mod@super::json`], which writes exactly what `serde_json` would (same fields, order,
//! escapes), without an intermediate event, a heap allocation or a copy of the keys.
//!
//! Command lines are most of the trail and are rendered on the connection's thread, once per
//! command, so this is the audit's hot path: `docs/benchmarks.md` has its cost.

use std::time::SystemTime;

use crate::audit::config::KeyNames;
use crate::audit::index::{facet, FacetStarts, NODE_OF_FILE};
use crate::audit::json::{push_binary, push_hex, push_key, push_str, push_u64};
use crate::audit::redact::{shown_args, ShownArg};
use crate::audit::schema::{Envelope, MAX_KEY_BYTES, MAX_NAME_BYTES};
use crate::event::{CommandRecord, ReplySource, ReplyStatus};

/// Runs `render` with this thread's line buffer, emptied (one per thread, kept between lines,
/// so rendering allocates nothing once warm).
pub(crate) fn with_scratch<R>(render: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(1024));
    }
    /// A line longer than this (many keys, captured arguments) does not keep its buffer.
    const KEEP_BYTES: usize = 64 * 1024;
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            let result = render(&mut buffer);
            if buffer.capacity() > KEEP_BYTES {
                *buffer = Vec::with_capacity(1024);
            }
            result
        }
        // Only if a render itself rendered: a buffer of its own then.
        Err(_) => render(&mut Vec::new()),
    })
}

/// Appends the client's address as `"ip":"…","port":N`; where the ip's value starts.
pub(crate) fn push_address(out: &mut Vec<u8>, address: &std::net::SocketAddr) -> usize {
    push_key(out, "ip");
    let ip_at = out.len();
    out.push(b'"');
    match address.ip() {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(*octet));
            }
        }
        // An IPv6 address's text needs no escaping.
        std::net::IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
    out.extend_from_slice(b"\",\"port\":");
    push_u64(out, u64::from(address.port()));
    ip_at
}

/// `,"channels":[...]` for the pub/sub commands that name channels (as `keys` are written: in
/// clear or as HMACs, within the same byte budget; `channels_truncated` when some were left out).
fn push_channels(
    out: &mut Vec<u8>,
    names: &KeyNames,
    info: &crate::command::CommandInfo,
    args: &[bytes::Bytes],
) {
    let channels = crate::command::extract_channels(info, args);
    if channels.is_empty() {
        return;
    }
    out.extend_from_slice(b",\"channels\":[");
    let mut total = 0;
    let mut truncated = false;
    for (i, channel) in channels.iter().enumerate() {
        let name = &args[channel.index];
        total += name.len();
        if total > MAX_KEY_BYTES {
            truncated = true;
            break;
        }
        if i > 0 {
            out.push(b',');
        }
        match names {
            KeyNames::Hmac(secret) => push_hmac_key(out, secret, name),
            KeyNames::Clear | KeyNames::Off => push_binary(out, name),
        }
    }
    out.push(b']');
    if truncated {
        out.extend_from_slice(b",\"channels_truncated\":true");
    }
}

/// A key name as the first 128 bits of its HMAC-SHA256, hex.
fn push_hmac_key(out: &mut Vec<u8>, secret: &[u8], key: &[u8]) {
    use hmac::Mac as _;
    let mut mac =
        <hmac::Hmac<sha2::Sha256>>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(key);
    out.extend_from_slice(b"{\"hmac\":\"");
    push_hex(out, &mac.finalize().into_bytes()[..16]);
    out.extend_from_slice(b"\"}");
}

/// The time a command line carries: when its request was read.
pub fn command_time(record: &CommandRecord) -> SystemTime {
    record.time.checked_sub(record.latency).unwrap_or(record.time)
}

/// Appends a command line's fields after the head (`"kind"` to the end of the object).
/// `capture_args` is the argument budget when arguments are captured; secrets are redacted
/// even then. Returns where the values the query index counts start, from the start of what it
/// appended (the node's is the file's: [`NODE_OF_FILE`]).
///
/// Schema `redis-audit/2` leaves out what a reader gets elsewhere: the action (always
/// `command`), what the command table derives (`known`, `categories`), `key_count`,
/// `key_bytes` and `keys_truncated` when the keys are listed whole and in clear (they restate
/// `keys`), and the defaults `client.resp` 2 and `result.source` `upstream`.
pub fn push_command_body(
    out: &mut Vec<u8>,
    record: &CommandRecord,
    capture_args: Option<usize>,
    envelope: &Envelope,
) -> FacetStarts {
    let base = out.len();
    let mut starts = FacetStarts::default();
    starts[facet::NODE] = NODE_OF_FILE;
    out.extend_from_slice(b"\"kind\":\"command\",\"outcome\":\"");
    out.extend_from_slice(match record.status {
        ReplyStatus::Ok | ReplyStatus::Queued | ReplyStatus::Skipped => b"success",
        ReplyStatus::Error => b"failure",
        ReplyStatus::Unanswered => b"unknown",
    });
    out.extend_from_slice(b"\",\"session_id\":\"");
    out.extend_from_slice(envelope.session_prefix().as_bytes());
    out.push(b'-');
    push_u64(out, record.conn_id);
    out.extend_from_slice(b"\",\"client\":{");
    starts[facet::IP] = push_address(out, &record.client_addr) - base;
    let mut client_truncated = false;
    for (name, value) in [
        ("name", &record.client_name),
        ("lib", &record.client_lib),
        ("lib_ver", &record.client_lib_ver),
    ] {
        if let Some(value) = value {
            out.push(b',');
            push_key(out, name);
            push_binary(out, &value[..value.len().min(MAX_NAME_BYTES)]);
            client_truncated |= value.len() > MAX_NAME_BYTES;
        }
    }
    if record.resp != 2 {
        out.extend_from_slice(b",\"resp\":");
        push_u64(out, u64::from(record.resp));
    }
    if client_truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    out.extend_from_slice(b"},\"user\":");
    starts[facet::USER] = out.len() - base;
    push_binary(out, &record.user[..record.user.len().min(MAX_NAME_BYTES)]);
    if record.user.len() > MAX_NAME_BYTES {
        out.extend_from_slice(b",\"user_truncated\":true");
    }
    out.extend_from_slice(b",\"db\":");
    starts[facet::DB] = out.len() - base;
    push_u64(out, u64::from(record.db));
    let (command_at, class_at) = push_command_info(out, record);
    starts[facet::COMMAND] = command_at - base;
    starts[facet::CLASS] = class_at - base;
    let mut key_bytes = 0;
    let mut keys_truncated = false;
    let listed = match &envelope.keys {
        KeyNames::Off => None,
        keys => Some(keys),
    };
    if listed.is_some() {
        out.extend_from_slice(b",\"keys\":[");
    }
    let mut first = true;
    for key in record.key_names() {
        key_bytes += key.len();
        if key_bytes > MAX_KEY_BYTES {
            keys_truncated = true;
            continue;
        }
        let Some(names) = listed else { continue };
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        match names {
            KeyNames::Hmac(secret) => push_hmac_key(out, secret, key),
            KeyNames::Clear | KeyNames::Off => push_binary(out, key),
        }
    }
    if listed.is_some() {
        out.push(b']');
    }
    if let (Some(names), Some(info)) = (listed, &record.command) {
        push_channels(out, names, info, &record.args);
    }
    if let (Some(budget), Some(_)) = (capture_args, &record.command) {
        push_args(out, record, budget);
    }
    if let Some(slot) = record.slot {
        out.extend_from_slice(b",\"slot\":");
        push_u64(out, u64::from(slot));
    }
    if keys_truncated || !matches!(envelope.keys, KeyNames::Clear) {
        out.extend_from_slice(b",\"key_count\":");
        push_u64(out, record.keys.len() as u64);
        out.extend_from_slice(b",\"key_bytes\":");
        push_u64(out, key_bytes as u64);
        if keys_truncated {
            out.extend_from_slice(b",\"keys_truncated\":true");
        }
    }
    out.extend_from_slice(b",\"result\":{\"status\":\"");
    out.extend_from_slice(record.status.as_str().as_bytes());
    out.push(b'"');
    if let Some(code) = &record.error_code {
        out.extend_from_slice(b",\"error_code\":");
        push_binary(out, code);
    }
    if record.source == ReplySource::Proxy {
        out.extend_from_slice(b",\"source\":\"proxy\"");
    }
    if let Some(conn) = record.upstream_conn {
        out.extend_from_slice(b",\"upstream_conn\":");
        push_u64(out, conn);
    }
    out.extend_from_slice(b"},\"duration_us\":");
    push_u64(out, record.latency.as_micros() as u64);
    out.extend_from_slice(b",\"request_bytes\":");
    push_u64(out, record.request_bytes);
    out.extend_from_slice(b",\"response_bytes\":");
    push_u64(out, record.reply_bytes);
    if record.count > 1 {
        out.extend_from_slice(b",\"count\":");
        push_u64(out, record.count);
    }
    out.push(b'}');
    starts
}

/// `"command":{"name","sub","name_bytes","class"}`; where the name's and the class's values
/// start.
fn push_command_info(out: &mut Vec<u8>, record: &CommandRecord) -> (usize, usize) {
    out.extend_from_slice(b",\"command\":{\"name\":");
    let name_at = out.len();
    match &record.command {
        Some(info) => match info.name.split_once('|') {
            Some((name, sub)) => {
                push_str(out, name);
                out.extend_from_slice(b",\"sub\":");
                push_str(out, sub);
            }
            None => push_str(out, &info.name),
        },
        None => {
            // The name itself is not written: a client that sends a password on a line of its
            // own sends it as a command name.
            out.extend_from_slice(b"\"(unknown)\",\"name_bytes\":");
            push_u64(out, record.args.first().map_or(0, |name| name.len() as u64));
        }
    }
    out.extend_from_slice(b",\"class\":");
    let class_at = out.len();
    match record.class {
        Some(class) => {
            out.push(b'"');
            out.extend_from_slice(class.as_str().as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    (name_at, class_at)
}

/// `"args":[…],"args_truncated":bool`: the arguments after the name, secrets redacted, cut to
/// `budget` bytes in all (argument capture is opt-in; its copies are its cost).
fn push_args(out: &mut Vec<u8>, record: &CommandRecord, budget: usize) {
    let (shown, truncated) = shown_args(&record.args, budget);
    out.extend_from_slice(b",\"args\":[");
    for (i, arg) in shown.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match arg {
            ShownArg::Clear(bytes) => push_binary(out, bytes),
            ShownArg::Redacted => out.extend_from_slice(b"{\"redacted\":true}"),
        }
    }
    out.extend_from_slice(b"],\"args_truncated\":");
    out.extend_from_slice(if truncated { b"true" } else { b"false" });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    use crate::audit::schema::push_head;
    use crate::audit::time::rfc3339_micros_bytes;
    use crate::command::Class;

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).expect("JSON is UTF-8")
    }

    #[test]
    fn addresses_are_written_as_the_standard_display() {
        for address in
            ["0.0.0.0:0", "10.0.0.1:6379", "255.255.255.255:65535", "[::1]:7", "[fe80::1:2]:80"]
        {
            let address: std::net::SocketAddr = address.parse().unwrap();
            let mut out = b"{".to_vec();
            push_address(&mut out, &address);
            out.push(b'}');
            let expected = json!({"ip": address.ip().to_string(), "port": address.port()});
            assert_eq!(text(&out), expected.to_string());
        }
    }

    fn envelope(keys: KeyNames) -> Envelope {
        Envelope::new(
            keys,
            "406b1755-e9d8-4622-8038-cfaa54796898".into(),
            "n\"1".into(),
            "r:6379".into(),
        )
    }

    fn record(line: &str) -> CommandRecord {
        let table = crate::command::CommandTable::embedded();
        let args: Vec<Bytes> =
            line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
        let command = table.resolve(&args).cloned();
        let mut keys = crate::command::Keys::new();
        if let Some(info) = &command {
            crate::command::extract_keys(info, &args, &mut keys);
        }
        CommandRecord {
            conn_id: 7,
            client_addr: "192.168.1.20:50000".parse().unwrap(),
            user: Bytes::from_static(b"alice"),
            db: 3,
            class: command.as_ref().map(|_| Class::Write),
            args,
            command,
            keys,
            status: ReplyStatus::Error,
            error_code: Some(Bytes::from_static(b"WRONGTYPE")),
            source: ReplySource::Upstream,
            upstream_conn: None,
            slot: None,
            request_bytes: 45,
            reply_bytes: 70,
            latency: std::time::Duration::from_micros(180),
            time: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_319_593),
            client_name: Some(Bytes::from_static(b"worker\n1")),
            client_lib: None,
            client_lib_ver: Some(Bytes::from_static(b"\xff")),
            resp: 3,
            count: 1,
        }
    }

    /// The line `serde_json` writes for `record` (fields in the schema's order), without its
    /// head; `counts` when the keys are not listed in clear.
    fn expected(
        record: &CommandRecord,
        keys: serde_json::Value,
        args: Option<serde_json::Value>,
        counts: bool,
    ) -> String {
        let info = record.command.as_ref().unwrap();
        let mut line = json!({
            "kind": "command",
            "outcome": "failure",
            "session_id": "406b1755-7",
            "client": {"ip": "192.168.1.20", "port": 50000, "name": "worker\n1",
                       "lib_ver": {"b64": "/w=="}, "resp": 3},
            "user": "alice",
            "db": 3,
            "command": {"name": info.name.split('|').next().unwrap(), "class": "write"},
        });
        let fields = line.as_object_mut().unwrap();
        if let Some((_, sub)) = info.name.split_once('|') {
            let command = fields["command"].as_object_mut().unwrap();
            let class = command.remove("class").unwrap();
            command.insert("sub".into(), json!(sub));
            command.insert("class".into(), class);
        }
        if !keys.is_null() {
            fields.insert("keys".into(), keys);
        }
        if let Some(args) = args {
            fields.insert("args".into(), args);
            fields.insert("args_truncated".into(), json!(false));
        }
        if counts {
            fields.insert("key_count".into(), json!(record.keys.len()));
            let key_bytes: usize = record.key_names().map(|k| k.len()).sum();
            fields.insert("key_bytes".into(), json!(key_bytes));
        }
        fields.insert("result".into(), json!({"status": "error", "error_code": "WRONGTYPE"}));
        fields.insert("duration_us".into(), json!(180));
        fields.insert("request_bytes".into(), json!(45));
        fields.insert("response_bytes".into(), json!(70));
        let whole = line.to_string();
        whole[1..].to_owned()
    }

    #[test]
    fn command_lines_are_what_serde_json_writes() {
        let record = record("MSET k1 v1 k\u{e9} v2");
        let mut out = Vec::new();
        push_command_body(&mut out, &record, None, &envelope(KeyNames::Clear));
        assert_eq!(text(&out), expected(&record, json!(["k1", "k\u{e9}"]), None, false));

        let mut out = Vec::new();
        push_command_body(&mut out, &record, None, &envelope(KeyNames::Off));
        assert_eq!(text(&out), expected(&record, serde_json::Value::Null, None, true));

        let record = self::record("CONFIG SET requirepass s3cret");
        let mut out = Vec::new();
        push_command_body(&mut out, &record, Some(1024), &envelope(KeyNames::Clear));
        let args = json!(["SET", "requirepass", {"redacted": true}]);
        assert_eq!(text(&out), expected(&record, json!([]), Some(args), false));
        assert!(!text(&out).contains("s3cret"));
    }

    #[test]
    fn hmac_keys_are_the_first_128_bits_of_the_mac() {
        use hmac::Mac as _;
        let record = record("GET k1");
        let mut out = Vec::new();
        push_command_body(&mut out, &record, None, &envelope(KeyNames::Hmac(b"secret".to_vec())));
        let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(b"secret").unwrap();
        mac.update(b"k1");
        let mut hex = Vec::new();
        push_hex(&mut hex, &mac.finalize().into_bytes()[..16]);
        let hmac = text(&hex).to_owned();
        assert_eq!(text(&out), expected(&record, json!([{"hmac": hmac}]), None, true));
    }

    #[test]
    fn a_cluster_slot_follows_the_keys() {
        let mut record = record("GET {user1}:name");
        record.slot = Some(crate::command::slot::key_slot(b"{user1}:name"));
        let mut out = Vec::new();
        push_command_body(&mut out, &record, None, &envelope(KeyNames::Clear));
        let line: serde_json::Value = serde_json::from_str(&format!("{{{}", text(&out))).unwrap();
        assert_eq!(line["slot"], crate::command::slot::key_slot(b"user1"));
        assert_eq!(line["keys"], json!(["{user1}:name"]));
    }

    #[test]
    fn unknown_commands_write_only_the_length_of_their_name() {
        let mut record = record("hunter2 x");
        record.class = None;
        let mut out = Vec::new();
        push_command_body(&mut out, &record, Some(1024), &envelope(KeyNames::Clear));
        let line = text(&out);
        assert!(
            line.contains(r#""command":{"name":"(unknown)","name_bytes":7,"class":null}"#),
            "{line}"
        );
        assert!(!line.contains("hunter2") && !line.contains("\"args\""), "{line}");
    }

    #[test]
    fn facet_positions_index_lines_as_searching_them_does() {
        use crate::audit::index::IndexBuilder;
        let (mut searched, mut placed) = (IndexBuilder::default(), IndexBuilder::default());
        let time = rfc3339_micros_bytes(std::time::SystemTime::now());
        for (i, command) in
            ["GET k", "SET k v", "CONFIG GET x", "nosuch", "CLIENT INFO"].iter().enumerate()
        {
            let mut record = record(command);
            record.user = Bytes::from(if i % 2 == 0 { &b"\xffbin"[..] } else { b"bob" });
            record.db = i as u32;
            let mut line = Vec::new();
            push_head(&mut line, &time, Some(i as u64));
            let head = line.len();
            let starts = push_command_body(&mut line, &record, None, &envelope(KeyNames::Clear));
            searched.add_line(&line);
            placed.add_command(&line, &starts.map(|at| at.saturating_add(head)));
        }
        let (searched, placed) = (searched.finish(), placed.finish());
        assert_eq!(searched.0.commands, 5);
        assert_eq!(searched.0.facets.len(), 5, "{:?}", searched.0.facets);
        assert_eq!(placed, searched);
    }

    #[test]
    fn a_set_line_is_at_most_350_bytes() {
        // redis-benchmark's SET: a 16-byte key, a 7-digit seq, a 5-digit connection.
        let mut record = record("SET key:000000012345 xxx");
        (record.conn_id, record.resp, record.status, record.error_code) =
            (12_345, 2, ReplyStatus::Ok, None);
        (record.client_name, record.client_lib_ver) = (None, None);
        let mut out = Vec::new();
        push_head(&mut out, &rfc3339_micros_bytes(std::time::SystemTime::now()), Some(1_234_567));
        push_command_body(&mut out, &record, None, &envelope(KeyNames::Clear));
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["seq"], 1_234_567);
        assert_eq!(value["keys"], json!(["key:000000012345"]));
        assert!(out.len() < 350, "{} bytes: {}", out.len(), text(&out));
    }
}
