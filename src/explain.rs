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

/// The policy's verdict on a command line for one user (`explain --user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The user evaluated.
    pub user: String,
    /// `allow`, `deny`, or `not_checked` (Redis refuses the command before its ACL check:
    /// unknown command or wrong arity).
    pub verdict: &'static str,
    /// For a denial: `command`, `key` or `channel`.
    pub reason: Option<&'static str>,
    /// For a denial: the command's full name, or the key or channel.
    pub object: Option<Bytes>,
    /// `enforce` or `observe` for this user.
    pub mode: &'static str,
    /// For a denial in enforce mode: the reply the client gets.
    pub reply: Option<String>,
    /// The users file version.
    pub policy_version: String,
}

/// What `policy` decides for `user` running `args`.
pub fn decide(
    policy: &crate::acl::Policy,
    table: &CommandTable,
    user: &str,
    args: &[Bytes],
) -> Decision {
    let mode = policy.mode_for(user.as_bytes()).as_str();
    let mut decision = Decision {
        user: user.to_owned(),
        verdict: "not_checked",
        reason: None,
        object: None,
        mode,
        reply: None,
        policy_version: policy.version.to_string(),
    };
    let Some(command) = table.resolve(args).filter(|c| c.arity_ok(args.len())) else {
        return decision;
    };
    let mut keys = Keys::new();
    extract_keys(command, args, &mut keys);
    match policy.decide(user.as_bytes(), command, args, &keys) {
        crate::acl::Verdict::Allow => decision.verdict = "allow",
        crate::acl::Verdict::Deny { denial, enforced } => {
            decision.verdict = "deny";
            decision.reason = Some(denial.reason.as_str());
            decision.object = Some(Bytes::copy_from_slice(denial.object(&command.name, args)));
            if enforced {
                let reply = policy.noperm_reply(&denial, user.as_bytes(), &command.name);
                decision.reply = Some(String::from_utf8_lossy(&reply).trim_end().to_owned());
            }
        }
    }
    decision
}

impl Decision {
    /// The `decision` object of `explain --json`.
    pub fn to_json(&self) -> Value {
        json!({
            "user": self.user,
            "verdict": self.verdict,
            "reason": self.reason,
            "object": self.object.as_deref().map(binary_json),
            "mode": self.mode,
            "reply": self.reply,
            "policy_version": self.policy_version,
        })
    }

    /// One line for the text form.
    pub fn to_text(&self) -> String {
        let mut line = format!("decision:   {} for user {}", self.verdict, self.user);
        if let (Some(reason), Some(object)) = (self.reason, &self.object) {
            line.push_str(&format!(" ({reason} '{}')", String::from_utf8_lossy(object)));
        }
        match (&self.reply, self.verdict) {
            (Some(reply), _) => line.push_str(&format!("; enforce: the client gets {reply}")),
            (None, "deny") => line.push_str("; observe: forwarded and recorded"),
            (None, "not_checked") => line.push_str(" (Redis refuses it before its ACL check)"),
            _ => {}
        }
        line.push_str(&format!("\npolicy:     {}\n", self.policy_version));
        line
    }
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
pub(crate) fn binary_json(bytes: &[u8]) -> Value {
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
