//! The Redis Cloud shapes over the audit files: `GET /v1/logs` (security and system events,
//! as account activity), `GET /v1/session-logs` (sessions from their open, auth and close
//! events), and `GET /api/v1/acl-log` (the durable ACL LOG: every security event), each
//! newest first with `offset` / `limit` paging.
//!
//! The files are read from their ends and only as far as the page needs (plus a bounded
//! count for `total`), and only the page's entries are kept: anyone who can make the proxy
//! write security events (an unauthenticated client failing AUTH) can grow the trail to its
//! retention limit, so neither the memory nor the time of a page may follow the trail's size.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;

use serde::de::IgnoredAny;
use serde_json::{json, Value};

use super::backward::Snapshot;
use super::expand::expand;
use super::{ParamError, QueryError};

/// `offset` and `limit` of a log query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// Records skipped, newest first.
    pub offset: u64,
    /// Records returned at most.
    pub limit: u64,
}

/// Most records one page may hold.
pub(crate) const MAX_LIMIT: u64 = 1000;

/// Once the page is full, the lines after it are still counted for `total` until this many
/// bytes have been read past the page; then `total` is `null` (unknown) and the scan stops.
pub(crate) const COUNT_BUDGET_BYTES: u64 = 16 << 20;

/// Most bytes of audit lines one page is made from: past them the page ends before its
/// `limit` (with `more` true), so a page of huge events cannot hold `limit` of them.
pub(crate) const PAGE_MAX_BYTES: u64 = 16 << 20;

impl Paging {
    /// From query parameters: `offset` (default 0), `limit` (default 100, 1 to 1000).
    pub fn from_params(params: &HashMap<String, String>) -> Result<Self, ParamError> {
        let number = |name: &str, default: u64| match params.get(name) {
            None => Ok(default),
            Some(text) => text.parse::<u64>().map_err(|_| ParamError {
                code: "InvalidParameter",
                message: format!("{name} must be a non-negative integer"),
            }),
        };
        let paging = Self { offset: number("offset", 0)?, limit: number("limit", 100)? };
        if paging.limit == 0 || paging.limit > MAX_LIMIT {
            return Err(ParamError {
                code: "InvalidParameter",
                message: format!("limit must be between 1 and {MAX_LIMIT}"),
            });
        }
        Ok(paging)
    }

    /// The rank just past the page (an offset near `u64::MAX` gives an empty page).
    fn end(self) -> u64 {
        self.offset.saturating_add(self.limit)
    }
}

/// The value of the first `"<name>":"…"` of a line, up to the next quote. In the writer's
/// lines the top-level `kind`, `action` and `session_id` come before any object that could
/// hold a field of the same name, and a client's string cannot contain the pattern (its
/// quotes are escaped), so the first occurrence is the record's own.
fn first_string<'a>(line: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let pattern = format!("\"{name}\":\"");
    let from = memchr::memmem::find(line, pattern.as_bytes())? + pattern.len();
    let len = memchr::memchr(b'"', &line[from..])?;
    Some(&line[from..from + len])
}

/// `kind` and `action` of a line, without parsing it.
fn head(line: &[u8]) -> Option<(&[u8], &[u8])> {
    Some((first_string(line, "kind")?, first_string(line, "action")?))
}

/// Ranks the lines of the endpoint's kind, newest first, and says which fall on the page.
#[derive(Debug)]
struct Pager {
    paging: Paging,
    /// The rank just past the page: `offset + limit`, or less once the page holds
    /// [`PAGE_MAX_BYTES`].
    end: u64,
    /// Entries met so far (all ranks below this one are taken).
    seen: u64,
    /// Bytes of the lines on the page.
    page_bytes: u64,
    /// Bytes read since the page was full.
    past_page: u64,
    /// The whole trail was read: `seen` is the total.
    complete: bool,
}

impl Pager {
    fn new(paging: Paging) -> Self {
        let end = paging.end();
        Self { paging, end, seen: 0, page_bytes: 0, past_page: 0, complete: false }
    }

    /// Called with every line before anything else: breaks once the page is full and the
    /// count past it has used its budget.
    fn budget(&mut self, line: &[u8]) -> ControlFlow<()> {
        if self.seen >= self.end {
            self.past_page += line.len() as u64 + 1;
            if self.past_page > COUNT_BUDGET_BYTES {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// One entry's line: its record when it falls on the page. Every line that is valid
    /// JSON counts, on the page or not, so pages and `total` agree.
    fn rank(&mut self, line: &[u8]) -> Option<Value> {
        let len = line.len() as u64;
        if self.seen >= self.paging.offset && self.seen < self.end {
            if self.page_bytes > 0 && self.page_bytes + len > PAGE_MAX_BYTES {
                self.end = self.seen; // the page is full before its limit; `more` says so
            } else {
                let record = serde_json::from_slice::<Value>(line).ok()?;
                self.seen += 1;
                self.page_bytes += len;
                return Some(record);
            }
        }
        if serde_json::from_slice::<IgnoredAny>(line).is_ok() {
            self.seen += 1;
        }
        None
    }

    /// The answer: the entries under `key`, the paging, `total` (`null` when the count
    /// stopped at its budget) and `more` (false only when no entry follows the page).
    fn answer(&self, key: &str, items: Vec<Value>) -> Value {
        let total = if self.complete { json!(self.seen) } else { Value::Null };
        let more = !self.complete || self.seen > self.end;
        json!({
            key: items,
            "offset": self.paging.offset,
            "limit": self.paging.limit,
            "total": total,
            "more": more,
        })
    }
}

/// Pages the entries of `dir` whose head `wanted` accepts, made by `entry` from their record.
fn page_of(
    dir: &Path,
    paging: Paging,
    key: &str,
    wanted: impl Fn(&[u8], &[u8]) -> bool,
    entry: impl Fn(&Value) -> Value,
) -> Result<Value, QueryError> {
    let snapshot = Snapshot::open(dir)?;
    let mut pager = Pager::new(paging);
    let mut items = Vec::new();
    let flow = snapshot.scan_with_context(|line, context| {
        pager.budget(line)?;
        if head(line).is_some_and(|(kind, action)| wanted(kind, action)) {
            if let Some(record) = pager.rank(line) {
                items.push(entry(&expand(record, context)));
            }
        }
        ControlFlow::Continue(())
    })?;
    pager.complete = flow.is_continue();
    Ok(pager.answer(key, items))
}

/// `GET /v1/logs`: security and system events as account activity.
pub fn activity(dir: &Path, paging: Paging) -> Result<Value, QueryError> {
    let wanted = |kind: &[u8], _: &[u8]| kind == b"security" || kind == b"system";
    page_of(dir, paging, "logs", wanted, activity_entry)
}

/// One security or system event as a `logs[]` entry.
fn activity_entry(record: &Value) -> Value {
    let kind = record["kind"].as_str().unwrap_or("");
    let action = format!("{kind}.{}", record["action"].as_str().unwrap_or(""));
    let (resource, resource_id) = if kind == "security" {
        ("acl", record["session_id"].clone())
    } else {
        ("proxy", record["instance_id"].clone())
    };
    let mut details = serde_json::Map::new();
    for field in [
        "reason",
        "context",
        "object",
        "username",
        "mode",
        "source",
        "policy_version",
        "error",
        "lost",
        "file",
        "command",
        "endpoint",
        "total",
        "client",
    ] {
        if !record[field].is_null() {
            details.insert(field.to_owned(), record[field].clone());
        }
    }
    json!({
        "timestamp": record["time"],
        "action": action,
        "user": record["user"],
        "resource": resource,
        "resourceId": resource_id,
        "details": details,
        "status": record["outcome"],
    })
}

/// `GET /v1/session-logs`: one entry per session, from its open, auth and close events.
///
/// Sessions are paged by their open event. A session's later auth and close events are
/// newer than its open, so they lie in the part of the trail read before the page's oldest
/// open: a second pass over as many lines of the same snapshot completes the page's
/// sessions, and only theirs are kept. (Should retention delete a file between the passes,
/// the second reads older lines instead, which hold no event of the page's sessions.)
pub fn sessions(dir: &Path, paging: Paging) -> Result<Value, QueryError> {
    let snapshot = Snapshot::open(dir)?;
    let mut pager = Pager::new(paging);
    let mut items = Vec::new();
    let mut line_number = 0u64;
    // Lines read up to and including the page's oldest open.
    let mut reach = 0u64;
    let flow = snapshot.scan_with_context(|line, context| {
        pager.budget(line)?;
        line_number += 1;
        if matches!(head(line), Some((b"session", b"session_open"))) {
            if let Some(record) = pager.rank(line) {
                items.push(session_entry(&expand(record, context)));
                reach = line_number;
            }
        }
        ControlFlow::Continue(())
    })?;
    pager.complete = flow.is_continue();

    let by_id: HashMap<String, usize> = items
        .iter()
        .enumerate()
        .filter_map(|(at, item)| Some((item["sessionId"].as_str()?.to_owned(), at)))
        .collect();
    // Newest first: the first auth met is the last the session made.
    let mut authenticated = vec![false; items.len()];
    let mut line_number = 0u64;
    // Whether it stopped at `reach` or the start does not matter: both passes are done.
    let _ = snapshot.scan(|line| {
        line_number += 1;
        if line_number > reach {
            return ControlFlow::Break(());
        }
        let Some((b"session", action)) = head(line) else { return ControlFlow::Continue(()) };
        if action != b"session_auth" && action != b"session_close" {
            return ControlFlow::Continue(());
        }
        let id = first_string(line, "session_id").and_then(|id| std::str::from_utf8(id).ok());
        let Some(&at) = id.and_then(|id| by_id.get(id)) else { return ControlFlow::Continue(()) };
        let Ok(record) = serde_json::from_slice::<Value>(line) else {
            return ControlFlow::Continue(());
        };
        let session = &mut items[at];
        if action == b"session_auth" && !authenticated[at] {
            authenticated[at] = true;
            session["user"] = record["user"].clone();
        } else if action == b"session_close" {
            session["endTime"] = record["time"].clone();
            let agent = user_agent(&record["client"]);
            if !agent.is_null() {
                session["userAgent"] = agent;
            }
        }
        ControlFlow::Continue(())
    })?;
    Ok(pager.answer("sessions", items))
}

/// A `sessions[]` entry from the session's open event (still open, as first seen).
fn session_entry(record: &Value) -> Value {
    let session_type = if record["tls"].is_object() { "resp+tls" } else { "resp" };
    json!({
        "sessionId": record["session_id"],
        "user": record["user"],
        "ipAddress": record["client"]["ip"],
        "userAgent": user_agent(&record["client"]),
        "startTime": record["time"],
        "endTime": null,
        "type": session_type,
    })
}

/// `CLIENT SETINFO` library and version, as a user agent (`redis-py/5.0.1`).
fn user_agent(client: &Value) -> Value {
    match (client["lib"].as_str(), client["lib_ver"].as_str()) {
        (Some(lib), Some(version)) => json!(format!("{lib}/{version}")),
        (Some(lib), None) => json!(lib),
        _ => Value::Null,
    }
}

/// `GET /api/v1/acl-log`: every security event, with absolute times, beyond the in-memory
/// `ACL LOG`.
pub(crate) fn acl_log(dir: &Path, paging: Paging) -> Result<Value, QueryError> {
    let wanted = |kind: &[u8], _: &[u8]| kind == b"security";
    page_of(dir, paging, "entries", wanted, |record| {
        json!({
            "time": record["time"],
            "action": record["action"],
            "reason": record["reason"],
            "context": record["context"],
            "object": record["object"],
            "username": record["username"],
            "user": record["user"],
            "client": record["client"],
            "session_id": record["session_id"],
            "source": record["source"],
            "mode": record["mode"],
            "policy_version": record["policy_version"],
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_the_record_s_own_kind_and_action() {
        let line = br#"{"schema":"redis-audit/1","kind":"security","action":"auth_failure","object":"\"kind\":\"system\"","client":{"kind":"x"}}"#;
        assert_eq!(head(line), Some((&b"security"[..], &b"auth_failure"[..])));
        assert_eq!(head(b"{\"kind\":1}"), None);
        assert_eq!(first_string(b"{\"kind\":\"unterminated", "kind"), None);
    }

    #[test]
    fn a_page_ends_before_its_limit_once_it_holds_page_max_bytes() {
        let mut pager = Pager::new(Paging { offset: 0, limit: 10 });
        let big = format!("{{\"object\":\"{}\"}}", "x".repeat(PAGE_MAX_BYTES as usize / 2));
        assert!(pager.rank(big.as_bytes()).is_some(), "the first entry always fits");
        assert!(pager.rank(big.as_bytes()).is_none(), "the second would pass the bound");
        assert!(pager.rank(b"{}").is_none(), "the page is closed");
        pager.complete = true;
        let answer = pager.answer("entries", vec![json!(1)]);
        assert_eq!((answer["total"].as_u64(), answer["more"].as_bool()), (Some(3), Some(true)));
        assert_eq!(answer["limit"], 10, "the limit asked for");
    }

    #[test]
    fn a_page_past_any_offset_is_empty_and_never_overflows() {
        let paging = Paging { offset: u64::MAX, limit: MAX_LIMIT };
        assert_eq!(paging.end(), u64::MAX);
        let mut pager = Pager::new(paging);
        assert_eq!(pager.rank(b"{}"), None, "rank 0 is before the page");
        pager.complete = true;
        let answer = pager.answer("logs", Vec::new());
        assert_eq!(answer["total"], 1);
        assert_eq!(answer["more"], false);
    }
}
