//! The Redis Cloud shapes over the audit files: `GET /v1/logs` (security and system events,
//! as account activity), `GET /v1/session-logs` (sessions from their open, auth and close
//! events), and `GET /api/v1/acl-log` (the durable ACL LOG: every security event), each
//! newest first with `offset` / `limit` paging.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::{json, Value};

use super::{audit_files, contains, QueryError};

/// `offset` and `limit` of a log query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// Records skipped, newest first.
    pub offset: u64,
    /// Records returned at most.
    pub limit: u64,
}

/// Most records one page may hold.
pub const MAX_LIMIT: u64 = 1000;

impl Paging {
    /// From query parameters: `offset` (default 0), `limit` (default 100, 1 to 1000).
    pub fn from_params(params: &HashMap<String, String>) -> Result<Self, String> {
        let number = |name: &str, default: u64| match params.get(name) {
            None => Ok(default),
            Some(text) => {
                text.parse::<u64>().map_err(|_| format!("{name} must be a non-negative integer"))
            }
        };
        let paging = Self { offset: number("offset", 0)?, limit: number("limit", 100)? };
        if paging.limit == 0 || paging.limit > MAX_LIMIT {
            return Err(format!("limit must be between 1 and {MAX_LIMIT}"));
        }
        Ok(paging)
    }
}

/// Every line of the directory's files whose raw text contains `needle`, oldest first.
fn lines_with(dir: &Path, needle: &[u8], mut each: impl FnMut(Value)) -> Result<(), QueryError> {
    for path in audit_files(dir)? {
        let Ok(file) = std::fs::File::open(&path) else { continue };
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::with_capacity(1024);
        loop {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|source| QueryError::Io { path: path.display().to_string(), source })?;
            if read == 0 || line.last() != Some(&b'\n') {
                break;
            }
            if contains(&line, needle) {
                if let Ok(value) = serde_json::from_slice(&line) {
                    each(value);
                }
            }
        }
    }
    Ok(())
}

fn page_of(mut items: Vec<Value>, paging: Paging, key: &str) -> Value {
    let total = items.len() as u64;
    items.reverse(); // newest first
    let start = (paging.offset.min(total)) as usize;
    let end = ((paging.offset + paging.limit).min(total)) as usize;
    json!({ key: items[start..end].to_vec(), "offset": paging.offset, "limit": paging.limit, "total": total })
}

/// `GET /v1/logs`: security and system events as account activity.
pub fn activity(dir: &Path, paging: Paging) -> Result<Value, QueryError> {
    let mut items = Vec::new();
    let mut each = |record: Value| {
        let kind = record["kind"].as_str().unwrap_or("").to_owned();
        if kind != "security" && kind != "system" {
            return;
        }
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
        ] {
            if !record[field].is_null() {
                details.insert(field.to_owned(), record[field].clone());
            }
        }
        if !record["client"].is_null() {
            details.insert("client".to_owned(), record["client"].clone());
        }
        items.push(json!({
            "timestamp": record["time"],
            "action": action,
            "user": record["user"],
            "resource": resource,
            "resourceId": resource_id,
            "details": details,
            "status": record["outcome"],
        }));
    };
    lines_with(dir, b"\"kind\":\"s", &mut each)?;
    Ok(page_of(items, paging, "logs"))
}

/// `GET /v1/session-logs`: one entry per session, from its open, auth and close events.
pub fn sessions(dir: &Path, paging: Paging) -> Result<Value, QueryError> {
    let mut order: Vec<String> = Vec::new();
    let mut by_id: HashMap<String, Value> = HashMap::new();
    lines_with(dir, b"\"kind\":\"session\"", |record| {
        let Some(id) = record["session_id"].as_str().map(str::to_owned) else { return };
        let action = record["action"].as_str().unwrap_or("");
        if action == "session_open" {
            order.push(id.clone());
            let agent = user_agent(&record["client"]);
            let session_type = if record["tls"].is_object() { "resp+tls" } else { "resp" };
            by_id.insert(
                id.clone(),
                json!({
                    "sessionId": id,
                    "user": record["user"],
                    "ipAddress": record["client"]["ip"],
                    "userAgent": agent,
                    "startTime": record["time"],
                    "endTime": null,
                    "type": session_type,
                }),
            );
            return;
        }
        let Some(session) = by_id.get_mut(&id) else { return };
        if action == "session_auth" {
            session["user"] = record["user"].clone();
        } else if action == "session_close" {
            session["endTime"] = record["time"].clone();
            let agent = user_agent(&record["client"]);
            if !agent.is_null() {
                session["userAgent"] = agent;
            }
        }
    })?;
    let items: Vec<Value> = order.into_iter().filter_map(|id| by_id.remove(&id)).collect();
    Ok(page_of(items, paging, "sessions"))
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
pub fn acl_log(dir: &Path, paging: Paging) -> Result<Value, QueryError> {
    let mut items = Vec::new();
    lines_with(dir, b"\"kind\":\"security\"", |record| {
        items.push(json!({
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
        }));
    })?;
    Ok(page_of(items, paging, "entries"))
}
