//! Whole records from the lines of a `redis-audit/2` file. A `/2` line leaves out what its
//! file's `file_open` names once (schema, instance, node, upstream), what the command table
//! derives (`known`, `categories`), what its keys restate (`key_count`, `key_bytes`,
//! `keys_truncated`) and defaults (`action` `command`, `client.resp` 2, `result.source`
//! `upstream`); the query API and `audit query` put them back, so a reader gets the same
//! record from a `/1` and a `/2` file (`docs/audit-schema.md` has the mapping).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::audit::chain::V2_FILE_PREFIX;
use crate::audit::schema::SCHEMA_V1;
use crate::command::CommandTable;

/// What every line of one `/2` file shares, from its `file_open` line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileContext {
    schema: Value,
    instance_id: Value,
    node: Value,
    upstream: Value,
}

impl FileContext {
    /// The context a file's first line gives: `None` unless it is a `/2` `file_open` (a `/1`
    /// line carries everything itself).
    pub(crate) fn from_first_line(line: &[u8]) -> Option<Self> {
        if !line.starts_with(V2_FILE_PREFIX) {
            return None;
        }
        Self::from_fields(&serde_json::from_slice(line).ok()?)
    }

    /// The context a parsed first line gives (a `/2` `file_open`: it has a `schema` and names
    /// the instance).
    fn from_fields(fields: &Map<String, Value>) -> Option<Self> {
        if fields.get("schema")? == SCHEMA_V1 || !fields.contains_key("instance_id") {
            return None;
        }
        let take = |name: &str| fields.get(name).cloned().unwrap_or(Value::Null);
        Some(Self {
            schema: take("schema"),
            instance_id: take("instance_id"),
            node: take("node"),
            upstream: take("upstream"),
        })
    }

    /// The node its `file_open` names.
    pub fn node(&self) -> &Value {
        &self.node
    }

    /// The context of the file at `path`, read from its first line.
    pub(crate) fn of_file(path: &Path) -> Option<Self> {
        let mut first = Vec::new();
        BufReader::new(File::open(path).ok()?).take_until_newline(&mut first).ok()?;
        Self::from_first_line(&first)
    }
}

/// Reads up to the first newline, at most 64 KiB (a `file_open` line is far shorter).
trait TakeUntilNewline {
    fn take_until_newline(self, out: &mut Vec<u8>) -> std::io::Result<usize>;
}

impl<R: BufRead> TakeUntilNewline for R {
    fn take_until_newline(self, out: &mut Vec<u8>) -> std::io::Result<usize> {
        std::io::Read::take(self, 64 * 1024).read_until(b'\n', out)
    }
}

/// The command table whose categories fill in `command.categories`: the one embedded in the
/// binary (a command it does not know gets `[]`).
fn table() -> &'static CommandTable {
    static TABLE: OnceLock<CommandTable> = OnceLock::new();
    TABLE.get_or_init(CommandTable::embedded)
}

/// The whole record of a line of a file with `context` (`None`: a `/1` file, whose records are
/// whole already). A seal line stays as it is.
pub fn expand(record: Value, context: Option<&FileContext>) -> Value {
    let Some(context) = context else { return record };
    let Value::Object(mut fields) = record else { return record };
    if fields.contains_key("schema") {
        return Value::Object(fields); // the file_open itself
    }
    let command = fields.get("kind").and_then(Value::as_str) == Some("command");
    let mut out = Map::with_capacity(fields.len() + 8);
    out.insert("schema".into(), context.schema.clone());
    for name in ["time", "seq"] {
        if let Some(value) = fields.shift_remove(name) {
            out.insert(name.into(), value);
        }
    }
    out.insert("instance_id".into(), context.instance_id.clone());
    out.insert("node".into(), context.node.clone());
    if let Some(kind) = fields.shift_remove("kind") {
        out.insert("kind".into(), kind);
    }
    if command && !fields.contains_key("action") {
        out.insert("action".into(), Value::from("command"));
    }
    let sessionful = fields.contains_key("session_id");
    let fields_have_counts = fields.contains_key("key_count");
    for (name, value) in fields {
        let value = match (command, name.as_str(), value) {
            (true, "client", Value::Object(mut client)) => {
                client.entry("resp").or_insert(Value::from(2));
                Value::Object(client)
            }
            (true, "command", Value::Object(info)) => command_info(info),
            (true, "result", Value::Object(mut result)) => {
                result.entry("source").or_insert(Value::from("upstream"));
                Value::Object(result)
            }
            (_, _, value) => value,
        };
        let after_db = command && name == "db";
        let after_user = !command && sessionful && (name == "user" || name == "user_truncated");
        let after_keys = command && name == "keys" && !fields_have_counts;
        out.insert(name, value);
        if after_db || after_user {
            out.insert("upstream".into(), context.upstream.clone());
        }
        if after_keys {
            // Listed whole and in clear: the counts are the list's.
            let keys = out.get("keys").and_then(Value::as_array);
            let count = keys.map_or(0, Vec::len);
            let bytes: usize = keys.map_or(0, |keys| keys.iter().map(key_length).sum());
            out.insert("key_count".into(), Value::from(count));
            out.insert("key_bytes".into(), Value::from(bytes));
            out.insert("keys_truncated".into(), Value::Bool(false));
        }
    }
    if command && !out.contains_key("keys_truncated") {
        out.insert("keys_truncated".into(), Value::Bool(false));
    }
    Value::Object(out)
}

/// `command` with `known` and `categories` back, in the `/1` order.
fn command_info(mut info: Map<String, Value>) -> Value {
    let name = info.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let known = name != "(unknown)";
    let full = match info.get("sub").and_then(Value::as_str) {
        Some(sub) => format!("{name}|{sub}"),
        None => name,
    };
    let categories: Vec<Value> = if known {
        let args: Vec<bytes::Bytes> =
            full.split('|').map(|part| bytes::Bytes::copy_from_slice(part.as_bytes())).collect();
        table()
            .resolve(&args)
            .map(|found| found.categories.iter().map(|c| Value::from(c.as_str())).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut out = Map::with_capacity(info.len() + 2);
    for name in ["name", "sub"] {
        if let Some(value) = info.shift_remove(name) {
            out.insert(name.into(), value);
        }
    }
    out.insert("known".into(), Value::Bool(known));
    if let Some(value) = info.shift_remove("name_bytes") {
        out.insert("name_bytes".into(), value);
    }
    out.insert("class".into(), info.shift_remove("class").unwrap_or(Value::Null));
    out.insert("categories".into(), Value::Array(categories));
    out.extend(info);
    Value::Object(out)
}

/// The length of a key as the line writes it: a string's UTF-8 bytes, a `{"b64"}`'s decoded.
fn key_length(key: &Value) -> usize {
    match key {
        Value::String(text) => text.len(),
        Value::Object(object) => object
            .get("b64")
            .and_then(Value::as_str)
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .map_or(0, |bytes| bytes.len()),
        _ => 0,
    }
}

/// True for a `/2` seal line (the writer's, not a record).
pub fn is_seal(record: &Value) -> bool {
    record.get("kind").and_then(Value::as_str) == Some("system")
        && record.get("action").and_then(Value::as_str) == Some("seal")
}

/// Every record of the lines of one file, whole (seal lines left out): for readers that take
/// a file at a time, such as tests and tools.
pub fn file_records(lines: &[Value]) -> Vec<Value> {
    let context = lines.first().and_then(Value::as_object).and_then(FileContext::from_fields);
    lines
        .iter()
        .filter(|line| !is_seal(line))
        .map(|line| expand(line.clone(), context.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> FileContext {
        FileContext::from_first_line(
            br#"{"schema":"redis-audit/2","time":"t","kind":"system","action":"file_open","outcome":"success","instance_id":"i","node":"n","upstream":"u:1","file":"audit.log","prev_file":null,"recovered_torn_line":false,"chain":{}}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_command_line_becomes_the_v1_record() {
        let line = json!({"time": "t", "seq": 3, "kind": "command", "outcome": "success",
            "session_id": "i-1", "client": {"ip": "1.2.3.4", "port": 5}, "user": "default",
            "db": 0, "command": {"name": "set", "class": "write"}, "keys": ["k", {"b64": "/w=="}],
            "result": {"status": "ok"}, "duration_us": 1, "request_bytes": 2, "response_bytes": 3});
        let record = expand(line, Some(&context()));
        let categories = table().get(b"set").unwrap().categories.clone();
        assert_eq!(
            record,
            json!({"schema": "redis-audit/2", "time": "t", "seq": 3, "instance_id": "i",
                "node": "n", "kind": "command", "action": "command", "outcome": "success",
                "session_id": "i-1", "client": {"ip": "1.2.3.4", "port": 5, "resp": 2},
                "user": "default", "db": 0, "upstream": "u:1",
                "command": {"name": "set", "known": true, "class": "write",
                            "categories": categories},
                "keys": ["k", {"b64": "/w=="}], "result": {"status": "ok", "source": "upstream"},
                "duration_us": 1, "request_bytes": 2, "response_bytes": 3,
                "key_count": 2, "key_bytes": 2, "keys_truncated": false})
        );
        let keys: Vec<&String> = record.as_object().unwrap().keys().collect();
        assert_eq!(&keys[..6], ["schema", "time", "seq", "instance_id", "node", "kind"]);
    }

    #[test]
    fn what_a_line_says_is_kept() {
        let line = json!({"time": "t", "seq": 3, "kind": "command", "outcome": "failure",
            "command": {"name": "(unknown)", "name_bytes": 7, "class": null},
            "key_count": 20, "key_bytes": 20480, "keys_truncated": true,
            "result": {"status": "error", "source": "proxy"}, "client": {"resp": 3}});
        let record = expand(line, Some(&context()));
        assert_eq!(record["command"]["known"], false);
        assert_eq!(record["command"]["categories"], json!([]));
        assert_eq!(record["command"]["name_bytes"], 7);
        assert_eq!((&record["key_count"], &record["keys_truncated"]), (&json!(20), &json!(true)));
        assert_eq!(record["result"]["source"], "proxy");
        assert_eq!(record["client"]["resp"], 3);
    }

    #[test]
    fn session_lines_get_the_upstream_after_the_user_and_v1_lines_stay() {
        let line = json!({"time": "t", "seq": 4, "kind": "session", "action": "session_open",
            "outcome": "success", "session_id": "i-1", "client": {}, "user": "default"});
        let record = expand(line, Some(&context()));
        let keys: Vec<&String> = record.as_object().unwrap().keys().collect();
        assert_eq!(keys.last().map(|k| k.as_str()), Some("upstream"));
        let v1 = json!({"schema": "redis-audit/1", "kind": "command"});
        assert_eq!(expand(v1.clone(), None), v1);
    }
}
