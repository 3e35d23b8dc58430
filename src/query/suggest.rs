//! `audit suggest-acl`: a users file (Redis ACL syntax) that grants each user seen in the audit
//! trail what it used and nothing else — its commands (a category only where it used every
//! command of one), its keys by prefix (`%R~` / `%W~` where it only read / wrote them), its
//! channels — with the
//! evidence for each rule as comments.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::report::pattern_of;
use super::{for_each_line, AuditQuery, QueryError};
use crate::command::{CommandTable, KeyFlags};
use crate::util::hex::hex_sha256;

/// Most users, and most commands, key and channel patterns per user, the suggestion keeps
/// apart: clients choose keys and channels, so the trail could otherwise make it hold anything.
/// Past the bound a user gets `~*` (or `&*`), and a comment says why.
const MAX_DISTINCT: usize = 1_000;

/// What one user did, as the trail shows it.
#[derive(Debug, Default)]
struct Seen {
    commands: u64,
    /// Full command names (`get`, `config|get`) and how often.
    names: BTreeMap<String, u64>,
    /// Key pattern → (reads, writes).
    keys: BTreeMap<String, (u64, u64)>,
    /// Keys seen only as HMACs, or too many patterns: every key must be allowed.
    all_keys: Option<&'static str>,
    channels: BTreeMap<String, u64>,
    all_channels: Option<&'static str>,
}

/// The suggested users file for the users seen in `dir` within `range` (`user`: only that
/// one), with the password rules of `users_file` carried over (cleartext as its SHA-256).
pub fn suggest(
    dir: &Path,
    range: &AuditQuery,
    user: Option<&str>,
    users_file: Option<&[u8]>,
    table: &CommandTable,
) -> Result<String, QueryError> {
    let mut users: BTreeMap<String, Seen> = BTreeMap::new();
    let mut records = 0;
    for_each_line(dir, |record| {
        if record["kind"] != "command" || !record["command"].is_object() {
            return;
        }
        let Some(time) = record["time"].as_str() else { return };
        let name = record["user"].as_str().unwrap_or_default().to_owned();
        if !range.contains(time) || user.is_some_and(|wanted| wanted != name) {
            return;
        }
        if users.len() >= MAX_DISTINCT && !users.contains_key(&name) {
            return;
        }
        records += 1;
        users.entry(name).or_default().add(&record, table);
    })?;
    let mut out = format!(
        "# Suggested by `redis-audit-proxy audit suggest-acl` from {} ({records} command records{}).\n\
         # Each user is granted what it ran and nothing else; the comments give the evidence.\n\
         # Load it with acl.mode = \"observe\" first: the same traffic should record no denial.\n",
        dir.display(),
        match (&range.start_text, &range.end_text) {
            (start, end) if start.is_empty() && end.is_empty() => String::new(),
            (start, end) => format!(", {start} to {end}"),
        }
    );
    for (name, seen) in &users {
        out.push('\n');
        seen.write(&mut out, name, users_file, table);
    }
    Ok(out)
}

impl Seen {
    fn add(&mut self, record: &Value, table: &CommandTable) {
        self.commands += 1;
        let name = record["command"]["name"].as_str().unwrap_or_default().to_owned();
        let specs =
            command_info(table, &name).map(|info| info.key_specs.clone()).unwrap_or_default();
        if self.names.len() < MAX_DISTINCT || self.names.contains_key(&name) {
            *self.names.entry(name).or_default() += 1;
        }
        let keys = record["keys"].as_array().map_or(&[][..], Vec::as_slice);
        for (index, key) in keys.iter().enumerate() {
            let (read, write) = permissions(&specs, index, keys.len());
            let Some(key) = key.as_str() else {
                // `{"hmac": ...}` (audit.keys = "hmac") or `{"b64": ...}` (not UTF-8): no
                // pattern can be written for it in a users file.
                self.all_keys = Some(if key.get("hmac").is_some() {
                    "keys recorded as HMACs"
                } else {
                    "keys that are not text"
                });
                continue;
            };
            let pattern = glob_of(&pattern_of(key));
            if self.keys.len() >= MAX_DISTINCT && !self.keys.contains_key(&pattern) {
                self.all_keys = Some("more than 1,000 key patterns");
                continue;
            }
            let counts = self.keys.entry(pattern).or_default();
            counts.0 += u64::from(read);
            counts.1 += u64::from(write);
        }
        if record.get("key_count").is_some() && record.get("keys").is_none() {
            self.all_keys = Some("keys not recorded (audit.keys = \"off\")");
        }
        for channel in record["channels"].as_array().into_iter().flatten() {
            let Some(channel) = channel.as_str() else {
                self.all_channels = Some("channels recorded as HMACs or not text");
                continue;
            };
            let pattern = glob_of(&pattern_of(channel));
            if self.channels.len() >= MAX_DISTINCT && !self.channels.contains_key(&pattern) {
                self.all_channels = Some("more than 1,000 channel patterns");
                continue;
            }
            *self.channels.entry(pattern).or_default() += 1;
        }
    }

    /// The user's comments and its `user` line.
    fn write(&self, out: &mut String, name: &str, users_file: Option<&[u8]>, table: &CommandTable) {
        let _ = writeln!(out, "# {name}: {} commands", self.commands);
        let mut rules = vec!["user".to_owned(), name.to_owned(), "on".to_owned()];
        match users_file.and_then(|text| password_rules(text, name)) {
            Some(passwords) => rules.extend(passwords),
            None if name == "default" => rules.push("nopass".to_owned()),
            None => {
                let _ = writeln!(out, "#   no password rule: add one (>password or #sha256)");
            }
        }
        // Absolute, also as `ACL SETUSER` input on a user that had patterns already.
        rules.push("resetkeys".to_owned());
        match self.all_keys {
            Some(why) => {
                let _ = writeln!(out, "#   ~* because of {why}");
                rules.push("~*".to_owned());
            }
            None => {
                for (pattern, (reads, writes)) in &self.keys {
                    let _ = writeln!(out, "#   {pattern}: {reads} reads, {writes} writes");
                    let prefix = match (*reads > 0, *writes > 0) {
                        (true, false) => "%R~",
                        (false, true) => "%W~",
                        _ => "~",
                    };
                    rules.push(format!("{prefix}{pattern}"));
                }
            }
        }
        rules.push("resetchannels".to_owned());
        match self.all_channels {
            Some(why) => {
                let _ = writeln!(out, "#   &* because of {why}");
                rules.push("&*".to_owned());
            }
            None => {
                for (pattern, count) in &self.channels {
                    let _ = writeln!(out, "#   channel {pattern}: {count}");
                    rules.push(format!("&{pattern}"));
                }
            }
        }
        rules.push("-@all".to_owned());
        let (categories, commands) = collapse(&self.names, table);
        for (category, count) in &categories {
            let _ = writeln!(out, "#   +@{category}: every command of it ran ({count} times)");
            rules.push(format!("+@{category}"));
        }
        for (command, count) in &commands {
            let (parent, sub) = match command.split_once('|') {
                Some((parent, sub)) => (parent, Some(sub)),
                None => (command.as_str(), None),
            };
            let known = table.get(parent.as_bytes()).is_some_and(|info| {
                sub.is_none_or(|sub| info.subcommands.contains_key(sub.as_bytes()))
            });
            if !known {
                let _ =
                    writeln!(out, "#   {command}: {count} (not in the command table: left out)");
                continue;
            }
            let _ = writeln!(out, "#   +{command}: {count}");
            rules.push(format!("+{command}"));
        }
        let _ = writeln!(out, "{}", rules.join(" "));
    }
}

/// The table's entry for a full name (`get`, `config|get`).
fn command_info<'t>(
    table: &'t CommandTable,
    name: &str,
) -> Option<&'t crate::command::CommandInfo> {
    let (parent, sub) = match name.split_once('|') {
        Some((parent, sub)) => (parent, Some(sub)),
        None => (name, None),
    };
    let info = table.get(parent.as_bytes())?;
    match sub {
        None => Some(info),
        Some(sub) => info.subcommands.get(sub.as_bytes()).map(|sub| &**sub),
    }
}

/// Whether the key at `index` of `count` keys needs read and write permission, as Redis's ACL
/// check reads its key spec's flags (`access` → read; `insert`, `update`, `delete` → write;
/// neither: any pattern, so read). The record lists the keys, not which spec found each: with
/// one spec, or one key per spec, that is known; otherwise (or with flags that depend on the
/// arguments) both, never narrower than what ran.
fn permissions(
    specs: &[crate::command::table::KeySpec],
    index: usize,
    count: usize,
) -> (bool, bool) {
    let spec = match specs.len() {
        1 => specs.first(),
        n if n == count => specs.get(index),
        _ => None,
    };
    let Some(flags) = spec.map(|spec| spec.flags) else { return (true, true) };
    if flags.contains(KeyFlags::VARIABLE_FLAGS) {
        return (true, true);
    }
    let write = [KeyFlags::INSERT, KeyFlags::UPDATE, KeyFlags::DELETE]
        .iter()
        .any(|flag| flags.contains(*flag));
    let read = flags.contains(KeyFlags::ACCESS) || !write;
    (read, write)
}

/// Names (of categories or commands) with how many commands they stand for.
type Counted = Vec<(String, u64)>;

/// The categories every command of which ran (with the runs they add up to), and the
/// commands not covered by them.
fn collapse(names: &BTreeMap<String, u64>, table: &CommandTable) -> (Counted, Counted) {
    let mut by_category: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for info in table.commands() {
        let subcommands: Vec<_> = info.subcommands.values().collect();
        let commands = if subcommands.is_empty() { vec![info] } else { subcommands };
        for command in commands {
            for category in &command.categories {
                let category = category.trim_start_matches('@');
                by_category.entry(category).or_default().insert(command.name.as_str());
            }
        }
    }
    let mut covered = BTreeSet::new();
    let mut categories = Vec::new();
    for (category, members) in by_category {
        // `all` and the flag-like categories (`fast`, `slow`, ...) are never worth granting.
        if matches!(category, "all" | "fast" | "slow" | "dangerous" | "admin" | "blocking") {
            continue;
        }
        if members.len() > 1 && members.iter().all(|m| names.contains_key(*m)) {
            let runs = members.iter().map(|m| names[*m]).sum();
            categories.push((category.to_owned(), runs));
            covered.extend(members);
        }
    }
    let commands = names
        .iter()
        .filter(|(name, _)| !covered.contains(name.as_str()))
        .map(|(name, count)| (name.clone(), *count))
        .collect();
    (categories, commands)
}

/// A pattern a users file can hold: bytes that cannot stand in a rule (spaces, control and
/// non-ASCII characters) become `?`, glob characters other than the final `*` are escaped.
fn glob_of(pattern: &str) -> String {
    let (body, star) = match pattern.strip_suffix('*') {
        Some(body) if pattern.len() > 1 || body.is_empty() => (body, "*"),
        _ => (pattern, ""),
    };
    let mut out = String::with_capacity(pattern.len() + 1);
    for byte in body.bytes() {
        match byte {
            b'*' | b'?' | b'[' | b']' | b'\\' => {
                out.push('\\');
                out.push(byte as char);
            }
            0x21..=0x7e => out.push(byte as char),
            _ => out.push('?'),
        }
    }
    // A multi-byte character became several `?`: each matches one byte, as Redis's glob does.
    out.push_str(star);
    out
}

/// The password rules of `user` in a users file: `nopass`, `#hash`, `<`/`!` removals as they
/// are, and `>password` as its SHA-256 (`#...`), so the suggestion holds no cleartext.
fn password_rules(users_file: &[u8], user: &str) -> Option<Vec<String>> {
    let (_, line) = super::report::find_user_line(users_file, user)?;
    Some(
        line.split_whitespace()
            .skip(2)
            .filter_map(|rule| match rule.chars().next() {
                Some('>') => Some(format!("#{}", hex_sha256(&rule.as_bytes()[1..]))),
                Some('#' | '<' | '!') => Some(rule.to_owned()),
                _ if rule == "nopass" => Some(rule.to_owned()),
                _ => None,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_written_as_users_files_can_hold_them() {
        let cases = [
            ("app:user:*", "app:user:*"),
            ("plain", "plain"),
            ("we ird[1]:*", "we?ird\\[1\\]:*"),
            ("caf\u{e9}:*", "caf??:*"),
        ];
        for (pattern, glob) in cases {
            assert_eq!(glob_of(pattern), glob, "{pattern}");
        }
    }

    #[test]
    fn passwords_are_carried_over_as_hashes() {
        let file = b"user alice on >s3cret ~* +@all\nuser bob on nopass\n";
        let alice = password_rules(file, "alice").unwrap();
        assert_eq!(alice, vec![format!("#{}", hex_sha256(b"s3cret"))]);
        assert_eq!(password_rules(file, "bob").unwrap(), vec!["nopass"]);
        assert!(password_rules(file, "carol").is_none());
    }
}
