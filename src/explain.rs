//! `redis-audit-proxy explain`: what the proxy makes of one command line — its full name,
//! class, ACL categories, keys with their flags and channels — as text or as one JSON object.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::command::{extract_channels, extract_keys, Class, CommandTable, Keys, TableSource};

/// What `explain` found for one command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The command as typed, lower-cased; the full name (`config|get`) when known.
    pub command: String,
    /// Whether the table knows the command.
    pub known: bool,
    /// Whether the argument count satisfies the arity (Redis refuses the command otherwise).
    pub arity_ok: bool,
    /// Read, write or non_read_write; `None` when unknown.
    pub class: Option<Class>,
    /// ACL categories.
    pub categories: Vec<String>,
    /// Keys with their flags.
    pub keys: Vec<(Bytes, Vec<&'static str>)>,
    /// Channels with how they are used.
    pub channels: Vec<(Bytes, &'static str)>,
}

/// Explains `args` (the command name first) against `table`.
pub fn explain(table: &CommandTable, args: &[Bytes]) -> Explanation {
    let typed = args.first().map(|n| String::from_utf8_lossy(n).to_lowercase()).unwrap_or_default();
    let Some(command) = table.resolve(args) else {
        return Explanation {
            command: typed,
            known: false,
            arity_ok: false,
            class: None,
            categories: Vec::new(),
            keys: Vec::new(),
            channels: Vec::new(),
        };
    };
    let mut keys = Keys::new();
    extract_keys(command, args, &mut keys);
    let declared = match command.name.as_str() {
        "eval" => args.get(1).and_then(|body| Class::of_script(body)),
        _ => None,
    };
    Explanation {
        command: command.name.clone(),
        known: true,
        arity_ok: command.arity_ok(args.len()),
        class: Some(declared.unwrap_or_else(|| Class::of(command))),
        categories: command.categories.clone(),
        keys: keys.iter().map(|k| (args[k.index].clone(), k.flags.names())).collect(),
        channels: extract_channels(command, args)
            .iter()
            .map(|c| (args[c.index].clone(), c.usage.as_str()))
            .collect(),
    }
}

/// A Redis string for JSON: a string when valid UTF-8, else `{"b64": "..."}`.
pub fn binary_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "b64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

impl Explanation {
    /// The one-object JSON form of the command-line contract.
    pub fn to_json(&self, table: &CommandTable) -> Value {
        json!({
            "command": self.command,
            "known": self.known,
            "arity_ok": self.arity_ok,
            "class": self.class.map(Class::as_str),
            "categories": self.categories,
            "keys": self.keys.iter().map(|(key, flags)| json!({"key": binary_json(key), "flags": flags})).collect::<Vec<_>>(),
            "channels": self.channels.iter().map(|(channel, usage)| json!({"channel": binary_json(channel), "use": usage})).collect::<Vec<_>>(),
            "table": source_name(table),
            "decision": Value::Null,
        })
    }

    /// The text form, one field per line.
    pub fn to_text(&self, table: &CommandTable) -> String {
        let show = |bytes: &[u8]| match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            Err(_) => format!("{:?}", bytes.escape_ascii().to_string()),
        };
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|(k, flags)| format!("{} ({})", show(k), flags.join(" ")))
            .collect();
        let channels: Vec<String> =
            self.channels.iter().map(|(c, usage)| format!("{} ({usage})", show(c))).collect();
        let or_none = |items: &[String], separator: &str| {
            if items.is_empty() {
                "(none)".to_owned()
            } else {
                items.join(separator)
            }
        };
        let mut out = String::new();
        let known =
            if self.known { "" } else { " (unknown to the command table: forwarded as is)" };
        out.push_str(&format!("command:    {}{known}\n", self.command));
        if self.known && !self.arity_ok {
            out.push_str("arity:      wrong number of arguments (Redis refuses it)\n");
        }
        let class = self.class.map_or("unknown", Class::as_str);
        out.push_str(&format!("class:      {class}\n"));
        out.push_str(&format!("categories: {}\n", or_none(&self.categories, " ")));
        out.push_str(&format!("keys:       {}\n", or_none(&keys, ", ")));
        out.push_str(&format!("channels:   {}\n", or_none(&channels, ", ")));
        out.push_str(&format!("table:      {}\n", source_name(table)));
        out
    }
}

fn source_name(table: &CommandTable) -> String {
    match &table.source {
        TableSource::Live(address) => format!("live from {address}"),
        TableSource::Embedded => {
            format!("embedded (Redis {})", crate::command::table::EMBEDDED_VERSION.trim())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&[u8]]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::copy_from_slice(w)).collect()
    }

    #[test]
    fn set_with_get_in_both_forms() {
        let table = CommandTable::embedded();
        let found = explain(&table, &args(&[b"SET", b"k", b"v", b"GET"]));
        let value = found.to_json(&table);
        assert_eq!(value["command"], "set");
        assert_eq!(value["class"], "write");
        assert_eq!(value["keys"], json!([{"key": "k", "flags": ["RW", "access", "update"]}]));
        assert_eq!(value["channels"], json!([]));
        assert!(value["categories"].as_array().unwrap().contains(&json!("@write")));
        let text = found.to_text(&table);
        assert!(
            text.contains("class:      write\n") && text.contains("k (RW access update)"),
            "{text}"
        );
    }

    #[test]
    fn binary_keys_channels_and_unknown_commands() {
        let table = CommandTable::embedded();
        let value = explain(&table, &args(&[b"GET", b"\xff\x00"])).to_json(&table);
        assert_eq!(value["keys"][0]["key"], json!({"b64": "/wA="}));
        let value = explain(&table, &args(&[b"PUBLISH", b"news", b"hi"])).to_json(&table);
        assert_eq!(value["channels"], json!([{"channel": "news", "use": "publish"}]));
        let found = explain(&table, &args(&[b"NOSUCH", b"x"]));
        assert!(!found.known && found.class.is_none());
        assert!(!explain(&table, &args(&[b"GET"])).arity_ok);
    }
}
