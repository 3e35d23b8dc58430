//! What must hold after the soak: every answered command is exactly one record of the trail
//! (none lost: `write` durability), the trail verifies, nothing panicked, no client hung, and
//! the proxy's memory stayed bounded and came back down.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use super::faults::Fault;
use super::wire::{Answer, RecordKey, Sent, Tally, CLIENT_IP, TOKEN_PREFIX};
use crate::support::scratch::{audit_files, file_lines};

/// What the trail holds for one [`RecordKey`].
#[derive(Debug, Default, Clone, Copy)]
struct Found {
    /// Records of Redis's reply (status other than `unanswered`).
    answered: u64,
    /// Records of commands whose connection ended before the reply.
    unanswered: u64,
    /// Records of replies the proxy wrote itself (with their `count`).
    by_proxy: u64,
}

/// The trail read back: soak commands by key, and the system events that matter here.
#[derive(Debug, Default)]
pub struct Trail {
    found: HashMap<RecordKey, Found>,
    /// `count` summed over the proxy's own replies to soak commands.
    pub proxy_replies: u64,
    pub lines: u64,
    pub command_records: u64,
    pub losses: Vec<String>,
    pub reloads: u64,
    pub sink_failed: u64,
    pub sink_recovered: u64,
    pub sink_losses: u64,
    pub files: usize,
}

impl Trail {
    pub fn read(dir: &Path) -> Self {
        let mut trail = Self::default();
        let files = audit_files(dir);
        trail.files = files.len();
        for file in files {
            for line in file_lines(&file) {
                trail.lines += 1;
                let record: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                trail.take(&record, &line);
            }
        }
        trail
    }

    fn take(&mut self, record: &serde_json::Value, line: &str) {
        match record["kind"].as_str() {
            Some("system") => match record["action"].as_str().unwrap_or_default() {
                "loss" => self.losses.push(line.to_owned()),
                "policy_reload" => self.reloads += 1,
                "sink_failed" => self.sink_failed += 1,
                "sink_recovered" => self.sink_recovered += 1,
                "sink_loss" => self.sink_losses += 1,
                _ => {}
            },
            Some("command") => {
                self.command_records += 1;
                let Some(key) = record_key(record) else { return };
                let found = self.found.entry(key).or_default();
                let result = &record["result"];
                if result["source"] == "proxy" {
                    let count = record["count"].as_u64().unwrap_or(1);
                    found.by_proxy += count;
                    self.proxy_replies += count;
                } else if result["status"] == "unanswered" {
                    found.unanswered += 1;
                } else {
                    found.answered += 1;
                }
            }
            _ => {}
        }
    }
}

/// The key a soak command's record is found by: its token, else its client's port and
/// command; `None` for records of other commands (the churn waves', from another address).
fn record_key(record: &serde_json::Value) -> Option<RecordKey> {
    let named = |field: &str| {
        record[field].as_array().into_iter().flatten().filter_map(|v| v.as_str()).find(|s| {
            // A pattern subscriber's pattern is not a token: it is the same for all of them.
            s.starts_with(TOKEN_PREFIX) && !s.ends_with('*')
        })
    };
    let command = record["command"]["name"].as_str()?.to_owned();
    if let Some(token) = named("keys").or_else(|| named("channels")) {
        return Some(RecordKey::Token { token: token.to_owned(), command });
    }
    let ip = std::net::Ipv4Addr::from(CLIENT_IP).to_string();
    if record["client"]["ip"].as_str() != Some(ip.as_str()) {
        return None;
    }
    let port = record["client"]["port"].as_u64()?.try_into().ok()?;
    Some(RecordKey::Keyless { port, command })
}

/// Invariant 3: every command that got Redis's reply is exactly one record; one that got the
/// proxy's error or nothing is at most one; keyless commands of a connection are counted
/// together; the proxy's own replies are all recorded; and nothing is declared lost. Returns
/// the failures (empty when it holds).
pub fn accounting(sent: &[Sent], trail: &Trail) -> Vec<String> {
    let mut failures = Vec::new();
    if !trail.losses.is_empty() {
        failures.push(format!(
            "{} loss records in `write` durability with on_full = \"block\" (none may be): {:?}",
            trail.losses.len(),
            &trail.losses[..trail.losses.len().min(3)]
        ));
    }
    // By key: what the clients saw.
    #[derive(Default)]
    struct Seen {
        upstream: u64,
        sent: u64,
    }
    let mut seen: HashMap<&RecordKey, Seen> = HashMap::new();
    let (mut proxy_seen, mut without_reply) = (0u64, 0u64);
    for command in sent {
        let entry = seen.entry(&command.key).or_default();
        entry.sent += 1;
        match command.answer {
            Answer::Upstream => entry.upstream += 1,
            Answer::Proxy => {
                proxy_seen += 1;
                without_reply += 1;
            }
            Answer::Nothing => without_reply += 1,
        }
    }
    let mut wrong = Vec::new();
    for (key, saw) in &seen {
        let found = trail.found.get(*key).copied().unwrap_or_default();
        let ok = match key {
            // A token is one command: one record if Redis answered, at most one otherwise.
            RecordKey::Token { .. } if saw.upstream == 1 => {
                found.answered == 1 && found.unanswered == 0 && found.by_proxy == 0
            }
            RecordKey::Token { .. } => found.answered + found.unanswered <= 1,
            // Keyless commands of a port's connections: at least what Redis answered, at
            // most what was sent.
            RecordKey::Keyless { .. } => {
                found.answered >= saw.upstream && found.answered + found.unanswered <= saw.sent
            }
        };
        if !ok {
            wrong.push(format!(
                "{key:?}: sent {}, Redis answered {}; {found:?}",
                saw.sent, saw.upstream
            ));
        }
    }
    if !wrong.is_empty() {
        wrong.sort();
        failures.push(format!(
            "{} commands do not match their records, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        ));
    }
    let strangers: Vec<&RecordKey> = trail.found.keys().filter(|k| !seen.contains_key(k)).collect();
    if !strangers.is_empty() {
        failures.push(format!(
            "{} records of soak commands no client sent, e.g. {:?}",
            strangers.len(),
            &strangers[..strangers.len().min(5)]
        ));
    }
    if !(proxy_seen <= trail.proxy_replies && trail.proxy_replies <= without_reply) {
        failures.push(format!(
            "the clients got {proxy_seen} errors from the proxy itself, the trail records {} \
             (at most the {without_reply} commands Redis did not answer)",
            trail.proxy_replies
        ));
    }
    failures
}

/// Invariant 4: `redis-audit-proxy audit verify --dir` passes; returns its report.
pub fn verify(binary: &str, dir: &Path) -> Result<String, String> {
    let output = Command::new(binary).args(["audit", "verify", "--dir"]).arg(dir).output();
    let output = output.map_err(|e| format!("cannot run audit verify: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!("audit verify failed ({}): {text}", output.status))
    }
}

/// Invariant 5: no panic in the proxy's log; the offending lines otherwise.
pub fn panics(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|line| line.contains("panicked")).take(5).collect()
}

/// Invariant 1: nothing waited past its deadline. The failures (empty when it holds).
pub fn hangs(tally: &Tally, unfinished: usize) -> Vec<String> {
    let mut failures = Vec::new();
    if unfinished > 0 {
        failures
            .push(format!("{unfinished} client tasks still running after the wind-down deadline"));
    }
    if !tally.hangs.is_empty() {
        failures.push(format!(
            "{} waits past their deadline, e.g. {:?}",
            tally.hangs.len(),
            &tally.hangs[..tally.hangs.len().min(5)]
        ));
    }
    if tally.wrong > 0 {
        failures.push(format!(
            "{} replies were not Redis's, e.g. {:?}",
            tally.wrong, tally.wrong_examples
        ));
    }
    failures
}

/// The proxy's RSS may grow by this much per connection under load (its buffers, the
/// connection's state, Redis's replies in flight)...
pub const PEAK_PER_CONNECTION_KIB: u64 = 64;
/// ...plus this much (the audit queue, up to `queue_max_bytes` = 16 MiB, the syslog sink's
/// queue, and allocator slack).
pub const PEAK_FIXED_KIB: u64 = 64 << 10;
/// From the second churn wave to the third, RSS may grow by at most this much per connection
/// of a wave. Memory the allocator keeps is reused and its growth falls towards 0 wave after
/// wave (docs/reliability.md has the measurements); a leak grows it by the same amount each.
pub const LEAK_PER_CONNECTION_KIB: u64 = 4;

/// Invariant 2: RSS under its bound during the run and the churn waves, and no leak (the
/// third wave's RSS over the second's). The failures.
pub fn memory(baseline: u64, peak: u64, waves: &[u64], connections: usize) -> Vec<String> {
    let mut failures = Vec::new();
    let bound = baseline + PEAK_PER_CONNECTION_KIB * connections as u64 + PEAK_FIXED_KIB;
    if peak > bound {
        failures.push(format!("proxy RSS peaked at {peak} KiB, over its bound of {bound} KiB"));
    }
    let &[.., second, third] = waves else { panic!("two churn waves at least: {waves:?}") };
    let allowed = LEAK_PER_CONNECTION_KIB * connections as u64;
    if third > second + allowed {
        failures.push(format!(
            "proxy RSS grew from {second} KiB to {third} KiB with one more wave of              {connections} connections (at most {allowed} KiB allowed): a leak"
        ));
    }
    failures
}

/// The faults did what they are for (else the soak proved nothing): each SIGHUP is a
/// `policy_reload` record, a full disk failed writes that recovered, a restarted Redis closed
/// clients or failed their commands.
pub fn faults_took_effect(injected: &[Fault], trail: &Trail, tally: &Tally) -> Vec<String> {
    let count = |fault: Fault| injected.iter().filter(|f| **f == fault).count() as u64;
    let mut failures = Vec::new();
    if trail.reloads != count(Fault::Reload) {
        failures.push(format!(
            "{} SIGHUPs but {} policy_reload records",
            count(Fault::Reload),
            trail.reloads
        ));
    }
    if count(Fault::FillAuditDisk) > 0
        && (trail.sink_failed == 0 || trail.sink_failed != trail.sink_recovered)
    {
        failures.push(format!(
            "{} full disks: {} sink_failed, {} sink_recovered records",
            count(Fault::FillAuditDisk),
            trail.sink_failed,
            trail.sink_recovered
        ));
    }
    if count(Fault::RestartRedis) > 0 && tally.closes + tally.proxy_errors == 0 {
        failures.push("Redis restarted but no client saw a close or an error".to_owned());
    }
    failures
}

/// The accounting itself: a trail that matches holds; a missing record, a doubled one, a
/// stray one, a loss record and unrecorded proxy errors are each reported.
#[test]
fn accounting_reports_each_way_a_trail_can_be_wrong() {
    let set = |token: &str| RecordKey::Token { token: token.into(), command: "set".into() };
    let exec = RecordKey::Keyless { port: 40000, command: "exec".into() };
    let sent = vec![
        Sent { key: set("soakt:a"), answer: Answer::Upstream },
        Sent { key: set("soakt:b"), answer: Answer::Proxy },
        Sent { key: exec.clone(), answer: Answer::Upstream },
    ];
    let answered = Found { answered: 1, ..Found::default() };
    let good = || {
        let mut trail = Trail { proxy_replies: 1, ..Trail::default() };
        trail.found.insert(set("soakt:a"), answered);
        trail.found.insert(set("soakt:b"), Found { by_proxy: 1, ..Found::default() });
        trail.found.insert(exec.clone(), answered);
        trail
    };
    assert_eq!(accounting(&sent, &good()), Vec::<String>::new());
    let mut missing = good();
    missing.found.remove(&set("soakt:a"));
    let mut doubled = good();
    doubled.found.insert(set("soakt:a"), Found { answered: 2, ..Found::default() });
    let mut stray = good();
    stray.found.insert(set("soakt:z"), answered);
    let mut lost = good();
    lost.losses.push("{\"action\":\"loss\"}".into());
    let mut unrecorded = good();
    unrecorded.proxy_replies = 0;
    let mut keyless_missing = good();
    keyless_missing.found.remove(&exec);
    for (what, trail) in [
        ("missing", missing),
        ("doubled", doubled),
        ("stray", stray),
        ("lost", lost),
        ("unrecorded", unrecorded),
        ("keyless missing", keyless_missing),
    ] {
        assert_eq!(accounting(&sent, &trail).len(), 1, "{what}");
    }
}
