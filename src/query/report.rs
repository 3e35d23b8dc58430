//! `audit report` and `GET /api/v1/report`: what enforcing the users file would break — the
//! observe-mode denials grouped by user, reason, command and object pattern — and what each user
//! ran (top commands and key prefixes), from the audit files of a time range.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::{for_each_line, AuditQuery, QueryError};

/// Sample client addresses kept per denial group.
const SAMPLE_CLIENTS: usize = 3;
/// Commands and key prefixes listed per user.
const TOP: usize = 10;
/// Most denial groups, and most key prefixes counted per user: clients choose the keys, so
/// without a bound a trail could make the report hold anything. Past it, what does not fit is
/// counted under `(other)`, and the report says so.
const MAX_DISTINCT: usize = 10_000;
/// What stands for everything past [`MAX_DISTINCT`].
const OTHER: &str = "(other)";
/// Characters that separate the parts of a key name (`app:user:1`, `logs/2026/12`).
const SEPARATORS: &[char] = &[':', '/', '.', '|', '#', '-', '_'];

/// The report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    /// The range asked for (`None`: open).
    pub start: Option<String>,
    /// End of the range.
    pub end: Option<String>,
    /// Audit lines read in the range.
    pub lines: u64,
    /// Observe-mode denials, largest group first.
    pub denials: Vec<DenialGroup>,
    /// What each user ran, by user name.
    pub users: BTreeMap<String, UserActivity>,
    /// Some groups or key prefixes were counted under `(other)` (more than 10,000 distinct).
    pub truncated: bool,
}

/// Observe-mode denials of one user, reason, command and object pattern.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DenialGroup {
    /// The user.
    pub user: String,
    /// `command`, `key` or `channel`.
    pub reason: String,
    /// The command refused (full name), when the record says.
    pub command: Option<String>,
    /// The command name, or the keys' or channels' common pattern (`app:user:*`).
    pub pattern: String,
    /// How many.
    pub count: u64,
    /// First and last time.
    pub first: String,
    /// Last time.
    pub last: String,
    /// Up to three client addresses.
    pub clients: Vec<String>,
    /// Users file versions in force.
    pub policy_versions: Vec<String>,
    /// Where the user is defined in the users file, when one was given to the report.
    pub users_file_line: Option<UsersFileLine>,
}

/// A user's line of the users file, its passwords left out.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UsersFileLine {
    /// 1-based.
    pub number: usize,
    /// The line with `>password`, `<password`, `#hash` and `!hash` rules shown as `>***`...
    pub text: String,
}

/// What one user ran.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct UserActivity {
    /// Command records.
    pub commands: u64,
    /// The most run commands, with counts, most first.
    pub top_commands: Vec<(String, u64)>,
    /// The most used key prefixes (see [`pattern_of`]), with counts, most first.
    pub top_key_prefixes: Vec<(String, u64)>,
}

/// The report over `dir` for `range` (only its time bounds are used); `users_file`, when
/// given, names each denied user's line.
pub fn build(
    dir: &Path,
    range: &AuditQuery,
    users_file: Option<&[u8]>,
) -> Result<Report, QueryError> {
    let mut groups: HashMap<(String, String, Option<String>, String), Group> = HashMap::new();
    let mut activity: HashMap<String, Activity> = HashMap::new();
    let mut lines = 0;
    let mut truncated = false;
    for_each_line(dir, |record| {
        let Some(time) = record["time"].as_str() else { return };
        if !range.contains(time) {
            return;
        }
        lines += 1;
        let user = text(&record["user"]);
        match (record["kind"].as_str(), record["action"].as_str()) {
            (Some("security"), Some("acl_denied")) if record["mode"] == "observe" => {
                let reason = text(&record["reason"]);
                let object = text(&record["object"]);
                let pattern = if reason == "command" { object } else { pattern_of(&object) };
                let command = record["command"].as_str().map(str::to_owned);
                let mut key = (user, reason, command, pattern);
                if groups.len() >= MAX_DISTINCT && !groups.contains_key(&key) {
                    truncated = true;
                    key = (key.0, key.1, None, OTHER.to_owned());
                }
                groups.entry(key).or_default().add(&record, time);
            }
            (Some("command"), _) | (None, _) if record["command"].is_object() => {
                if activity.len() >= MAX_DISTINCT && !activity.contains_key(&user) {
                    truncated = true;
                    return;
                }
                truncated |= activity.entry(user).or_default().add(&record);
            }
            _ => {}
        }
    })?;
    let mut denials: Vec<DenialGroup> = groups
        .into_iter()
        .map(|((user, reason, command, pattern), group)| DenialGroup {
            users_file_line: users_file.and_then(|text| users_file_line(text, &user)),
            user,
            reason,
            command,
            pattern,
            count: group.count,
            first: group.first,
            last: group.last,
            clients: group.clients,
            policy_versions: group.policy_versions.into_iter().collect(),
        })
        .collect();
    denials.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| (&a.user, &a.pattern).cmp(&(&b.user, &b.pattern)))
    });
    let users = activity.into_iter().map(|(user, seen)| (user, seen.summary())).collect();
    let bound = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    Ok(Report {
        start: bound(&range.start_text),
        end: bound(&range.end_text),
        lines,
        denials,
        users,
        truncated,
    })
}

#[derive(Debug, Default)]
struct Group {
    count: u64,
    first: String,
    last: String,
    clients: Vec<String>,
    policy_versions: BTreeSet<String>,
}

impl Group {
    fn add(&mut self, record: &Value, time: &str) {
        self.count += 1;
        if self.first.is_empty() || time < self.first.as_str() {
            self.first = time.to_owned();
        }
        if time > self.last.as_str() {
            self.last = time.to_owned();
        }
        let client = &record["client"];
        let address = match (client["ip"].as_str(), client["port"].as_u64()) {
            (Some(ip), Some(port)) if ip.contains(':') => format!("[{ip}]:{port}"),
            (Some(ip), Some(port)) => format!("{ip}:{port}"),
            _ => String::new(),
        };
        if !address.is_empty()
            && self.clients.len() < SAMPLE_CLIENTS
            && !self.clients.contains(&address)
        {
            self.clients.push(address);
        }
        if let Some(version) = record["policy_version"].as_str() {
            self.policy_versions.insert(version.to_owned());
        }
    }
}

#[derive(Debug, Default)]
struct Activity {
    commands: u64,
    names: HashMap<String, u64>,
    prefixes: HashMap<String, u64>,
}

impl Activity {
    /// Counts one command record; true when a prefix had to go under `(other)`.
    fn add(&mut self, record: &Value) -> bool {
        self.commands += 1;
        let mut truncated = false;
        // Unknown commands are named as sent: bounded too.
        let mut name = text(&record["command"]["name"]);
        if self.names.len() >= MAX_DISTINCT && !self.names.contains_key(&name) {
            truncated = true;
            name = OTHER.to_owned();
        }
        *self.names.entry(name).or_default() += 1;
        for key in record["keys"].as_array().into_iter().flatten() {
            let mut prefix = pattern_of(&text(key));
            if self.prefixes.len() >= MAX_DISTINCT && !self.prefixes.contains_key(&prefix) {
                truncated = true;
                prefix = OTHER.to_owned();
            }
            *self.prefixes.entry(prefix).or_default() += 1;
        }
        truncated
    }

    fn summary(self) -> UserActivity {
        UserActivity {
            commands: self.commands,
            top_commands: top(self.names),
            top_key_prefixes: top(self.prefixes),
        }
    }
}

fn top(counts: HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(TOP);
    counts
}

/// A string field as the trail writes it: text, or `{"b64": ...}` for bytes that are not
/// UTF-8 (shown as that JSON).
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A key's pattern: everything up to its last separator, then `*` (`app:user:42` →
/// `app:user:*`); a key without a separator stands for itself.
pub(crate) fn pattern_of(key: &str) -> String {
    match key.rfind(SEPARATORS) {
        Some(at) => format!("{}*", &key[..=at]),
        None => key.to_owned(),
    }
}

/// The line of `users_file` that defines `user`: its 1-based number and its text.
pub(super) fn find_user_line(users_file: &[u8], user: &str) -> Option<(usize, String)> {
    let text = String::from_utf8_lossy(users_file);
    text.lines().enumerate().find_map(|(index, line)| {
        let mut words = line.split_whitespace();
        (words.next() == Some("user") && words.next() == Some(user))
            .then(|| (index + 1, line.trim().to_owned()))
    })
}

/// The line of `users_file` that defines `user`, its secrets masked.
fn users_file_line(users_file: &[u8], user: &str) -> Option<UsersFileLine> {
    find_user_line(users_file, user)
        .map(|(number, line)| UsersFileLine { number, text: mask_secrets(&line) })
}

/// `>password`, `<password`, `#hash`, `!hash` shown as `>***` and so on.
fn mask_secrets(line: &str) -> String {
    line.split(' ')
        .map(|word| match word.chars().next() {
            Some(first @ ('>' | '<' | '#' | '!')) if word.len() > 1 => format!("{first}***"),
            _ => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Report {
    /// The report as text, for a terminal.
    pub fn to_text(&self) -> String {
        let range = |bound: &Option<String>| bound.clone().unwrap_or_else(|| "-".into());
        let mut out = format!(
            "Audit report from {} to {} ({} lines)\n\nWhat enforcing would refuse (observe-mode denials):\n",
            range(&self.start),
            range(&self.end),
            self.lines
        );
        if self.denials.is_empty() {
            out.push_str("  none\n");
        }
        for group in &self.denials {
            let command = group.command.as_deref().map_or(String::new(), |c| format!(" by {c}"));
            out.push_str(&format!(
                "  {:>6}  {:<12} {:<8} {}{command}\n          {} .. {}  from {}\n",
                group.count,
                group.user,
                group.reason,
                group.pattern,
                group.first,
                group.last,
                group.clients.join(", ")
            ));
            if let Some(line) = &group.users_file_line {
                out.push_str(&format!(
                    "          users file line {}: {}\n",
                    line.number, line.text
                ));
            }
        }
        if self.truncated {
            out.push_str(
                "  (more than 10,000 distinct groups or key prefixes: the rest under (other))\n",
            );
        }
        out.push_str("\nWhat each user ran:\n");
        for (user, activity) in &self.users {
            let list = |items: &[(String, u64)]| {
                items.iter().map(|(name, count)| format!("{name} {count}")).collect::<Vec<_>>()
            };
            out.push_str(&format!(
                "  {user}: {} commands\n    commands: {}\n    key prefixes: {}\n",
                activity.commands,
                list(&activity.top_commands).join(", "),
                list(&activity.top_key_prefixes).join(", ")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_cut_at_the_last_separator() {
        assert_eq!(pattern_of("app:user:42"), "app:user:*");
        assert_eq!(pattern_of("logs/2026/12"), "logs/2026/*");
        assert_eq!(pattern_of("plain"), "plain");
        assert_eq!(pattern_of("a:"), "a:*");
    }

    #[test]
    fn users_file_lines_hide_passwords() {
        let file = b"user default on nopass ~* +@all\nuser alice on >s3cret #abc ~app:* +get\n";
        let line = users_file_line(file, "alice").unwrap();
        assert_eq!(line.number, 2);
        assert_eq!(line.text, "user alice on >*** #*** ~app:* +get");
        assert!(users_file_line(file, "bob").is_none());
    }
}
