//! RFC 5424 messages made from audit lines: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID -
//! MSG`, MSG being the line's JSON as the file holds it; and the cut that makes a record fit
//! `max_message_bytes` (its longest strings shortened, flagged) rather than be dropped whole.

use std::sync::LazyLock;

use memchr::memmem::Finder;

use crate::audit::schema::Envelope;
use crate::audit::sinks::config::SyslogConfig;

/// RFC 5424 severities used.
const WARNING: u8 = 4;
const NOTICE: u8 = 5;
const INFO: u8 = 6;

/// What a message's header is made of, fixed for one sink.
#[derive(Debug, Clone)]
pub struct Header {
    /// Facility code (0..=23).
    pub facility: u8,
    /// HOSTNAME.
    pub hostname: String,
    /// APP-NAME.
    pub app_name: String,
    /// PROCID.
    pub procid: u32,
    /// The longest message (header included).
    pub max_message_bytes: usize,
}

impl Header {
    /// The header of a sink's messages: its settings, the node's name unless `hostname` is
    /// set, this process's id.
    pub(crate) fn for_sink(config: &SyslogConfig, envelope: &Envelope) -> Self {
        Self {
            facility: config.facility.code(),
            hostname: config.hostname.clone().unwrap_or_else(|| envelope.node.clone()),
            app_name: config.app_name.clone(),
            procid: std::process::id(),
            max_message_bytes: config.max_message_bytes,
        }
    }
}

/// How far into a line its `time`, `kind`, `action` and `outcome` are looked for: they all
/// come before the kind's own fields (`file_open` puts `schema` first), so the rest of the
/// line, keys and all, is never scanned.
const HEAD_SCAN_BYTES: usize = 192;

/// The searchers for `"time":"` and `"kind":"`, built once: building one per line cost the
/// sink's thread an eighth of its time.
static TIME: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"time\":\""));
static KIND: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"kind\":\""));

/// The string value of the field `finder` finds (`"name":"…"`) in `line`, if it has one (the
/// first occurrence).
fn field<'a>(line: &'a [u8], finder: &Finder<'_>) -> Option<&'a [u8]> {
    let at = finder.find(line)? + finder.needle().len();
    let len = memchr::memchr(b'"', &line[at..])?;
    Some(&line[at..at + len])
}

/// The value of `"name":"…"` if `rest` starts with `,"name":"`, and what follows it.
fn next_field<'a>(rest: &'a [u8], name: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let rest = rest.strip_prefix(b",\"")?.strip_prefix(name)?.strip_prefix(b"\":\"")?;
    let len = memchr::memchr(b'"', rest)?;
    Some((&rest[..len], &rest[len + 1..]))
}

/// `time`, `kind`, `action`, `outcome`.
type HeadFields<'a> = (Option<&'a [u8]>, &'a [u8], Option<&'a [u8]>, Option<&'a [u8]>);

/// A line's `time`, `kind`, `action` and `outcome`, read from its head in one pass (the fixed
/// field order of `docs/audit-schema.md` §2: `kind`, then `action` unless it is a command,
/// then `outcome`).
fn head_fields(line: &[u8]) -> HeadFields<'_> {
    let head = &line[..line.len().min(HEAD_SCAN_BYTES)];
    let time = field(head, &TIME);
    let Some(at) = KIND.find(head) else {
        return (time, b"command", None, None);
    };
    let value = &head[at + 8..];
    let len = memchr::memchr(b'"', value).unwrap_or(0);
    let (kind, rest) = (&value[..len], &value[(len + 1).min(value.len())..]);
    let (action, rest) = match next_field(rest, b"action") {
        Some((action, rest)) => (Some(action), rest),
        None => (None, rest),
    };
    let outcome = next_field(rest, b"outcome").map(|(outcome, _)| outcome);
    (time, kind, action, outcome)
}

/// The severity of a line: warning for security failures and losses, notice for the other
/// system events, info for the rest.
pub fn severity(kind: &[u8], action: Option<&[u8]>, outcome: Option<&[u8]>) -> u8 {
    match (kind, action, outcome) {
        (b"security", _, Some(b"failure")) => WARNING,
        (b"system", Some(b"loss" | b"sink_loss"), _) => WARNING,
        (b"system", _, _) => NOTICE,
        _ => INFO,
    }
}

impl Header {
    /// Appends the RFC 5424 message of `line` (one audit line, no newline) to `out`, cut to
    /// `max_message_bytes`. Returns true when the record had to be cut.
    pub fn push_message(&self, line: &[u8], out: &mut Vec<u8>) -> bool {
        let (time, kind, action, outcome) = head_fields(line);
        let pri = u16::from(self.facility) * 8 + u16::from(severity(kind, action, outcome));
        let start = out.len();
        out.push(b'<');
        out.extend_from_slice(itoa::Buffer::new().format(pri).as_bytes());
        out.extend_from_slice(b">1 ");
        // The record's own time (RFC 3339 with microseconds, as RFC 5424 allows).
        match time {
            Some(time) if !time.is_empty() && time.len() <= 32 => out.extend_from_slice(time),
            _ => out.push(b'-'),
        }
        out.push(b' ');
        out.extend_from_slice(self.hostname.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.app_name.as_bytes());
        out.push(b' ');
        out.extend_from_slice(itoa::Buffer::new().format(self.procid).as_bytes());
        out.push(b' ');
        // MSGID: the record's kind (at most 32 printable characters, as RFC 5424 says).
        let msgid_start = out.len();
        out.extend(kind.iter().copied().filter(u8::is_ascii_graphic).take(32));
        if out.len() == msgid_start {
            out.push(b'-');
        }
        out.extend_from_slice(b" - ");
        let room = self.max_message_bytes.saturating_sub(out.len() - start);
        if line.len() <= room {
            out.extend_from_slice(line);
            return false;
        }
        out.extend_from_slice(&cut_to_fit(line, room));
        true
    }
}

/// Makes `line` (a JSON object) fit in `room` bytes: its longest strings are halved until it
/// does, and `"sink_truncated":true` says so. A cut line no longer matches the file's hash;
/// its `seq` and `time` still place it. If even that cannot fit, only `time`, `seq`, `kind`
/// and the flag are kept.
pub(crate) fn cut_to_fit(line: &[u8], room: usize) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut record)) = serde_json::from_slice(line) else {
        return minimal(&serde_json::Map::new());
    };
    record.insert("sink_truncated".into(), serde_json::Value::Bool(true));
    for _ in 0..64 {
        let text = serde_json::to_vec(&record).unwrap_or_default();
        if text.len() <= room {
            return text;
        }
        if !halve_longest(&mut record) {
            break;
        }
    }
    minimal(&record)
}

fn minimal(record: &serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    let mut kept = serde_json::Map::new();
    for name in ["time", "seq", "kind", "action", "outcome"] {
        if let Some(value) = record.get(name) {
            kept.insert(name.into(), value.clone());
        }
    }
    kept.insert("sink_truncated".into(), serde_json::Value::Bool(true));
    serde_json::to_vec(&kept).unwrap_or_default()
}

/// Halves the longest string (or, when arrays are what is long, the longest array) in the
/// record, except `time` and `kind`. False when nothing is left to shorten.
fn halve_longest(record: &mut serde_json::Map<String, serde_json::Value>) -> bool {
    fn longest<'a>(
        value: &'a mut serde_json::Value,
        best: &mut Option<(usize, &'a mut serde_json::Value)>,
    ) {
        let size = match value {
            serde_json::Value::String(text) => text.len(),
            serde_json::Value::Array(items) => items.len() * 8,
            _ => 0,
        };
        if size > 16 && best.as_ref().is_none_or(|(most, _)| size > *most) {
            // An array is halved only when it is longer than any string in it.
            let longest_inside = match &*value {
                serde_json::Value::Array(items) => {
                    items.iter().filter_map(|item| item.as_str().map(str::len)).max().unwrap_or(0)
                }
                _ => 0,
            };
            if longest_inside < size {
                *best = Some((size, value));
                return;
            }
        }
        match value {
            serde_json::Value::Array(items) => {
                for item in items {
                    longest(item, best);
                }
            }
            serde_json::Value::Object(fields) => {
                for item in fields.values_mut() {
                    longest(item, best);
                }
            }
            _ => {}
        }
    }
    let mut best = None;
    for (name, value) in record.iter_mut() {
        if name != "time" && name != "kind" {
            longest(value, &mut best);
        }
    }
    let Some((_, value)) = best else { return false };
    match value {
        serde_json::Value::String(text) => {
            let mut at = text.len() / 2;
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.truncate(at);
        }
        serde_json::Value::Array(items) => items.truncate(items.len() / 2),
        _ => return false,
    }
    true
}

/// Appends RFC 6587 / RFC 5425 octet counting: `MSG-LEN SP MESSAGE`.
pub fn push_octet_counted(message: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(message.len()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(message);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(max: usize) -> Header {
        Header {
            facility: 16,
            hostname: "node1".into(),
            app_name: "redis-audit-proxy".into(),
            procid: 42,
            max_message_bytes: max,
        }
    }

    #[test]
    fn a_message_carries_the_line_with_pri_time_and_kind() {
        let line = br#"{"time":"2026-12-06T05:07:32.123456Z","seq":7,"kind":"security","action":"auth_failure","outcome":"failure","user":"bob"}"#;
        let mut out = Vec::new();
        assert!(!header(8192).push_message(line, &mut out));
        let expected = [
            &b"<132>1 2026-12-06T05:07:32.123456Z node1 redis-audit-proxy 42 security - "[..],
            line,
        ]
        .concat();
        assert_eq!(out, expected);
        let command = br#"{"time":"2026-12-06T05:07:32.123456Z","seq":8,"kind":"command","outcome":"success"}"#;
        out.clear();
        header(8192).push_message(command, &mut out);
        assert!(out.starts_with(b"<134>1 "), "local0.info");
        let seal = br#"{"time":"2026-12-06T05:07:32.123456Z","kind":"system","action":"seal","outcome":"success","chain":{}}"#;
        out.clear();
        header(8192).push_message(seal, &mut out);
        assert!(out.starts_with(b"<133>1 "), "local0.notice");
    }

    #[test]
    fn a_long_record_is_cut_not_dropped() {
        let long = "x".repeat(20_000);
        let line = format!(
            r#"{{"time":"2026-12-06T05:07:32.123456Z","seq":9,"kind":"command","outcome":"success","keys":["{long}","b"],"command":{{"name":"set"}}}}"#
        );
        let mut out = Vec::new();
        assert!(header(1024).push_message(line.as_bytes(), &mut out));
        assert!(out.len() <= 1024, "{}", out.len());
        let msg = &out[memchr::memmem::find(&out, b" - {").unwrap() + 3..];
        let record: serde_json::Value = serde_json::from_slice(msg).unwrap();
        assert_eq!(record["seq"], 9);
        assert_eq!(record["sink_truncated"], true);
        assert_eq!(record["command"]["name"], "set");
        assert!(record["keys"][0].as_str().unwrap().starts_with("xxx"));
    }

    #[test]
    fn octet_counting_prefixes_the_length() {
        let mut out = Vec::new();
        push_octet_counted(b"<134>1 - - - - - - {}", &mut out);
        assert_eq!(out, b"21 <134>1 - - - - - - {}");
    }
}
