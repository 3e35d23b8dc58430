//! Queries over an audit directory (the files are the record): Tair `DescribeAuditRecords`
//! filters and paging over command records, newest first, for `audit query` and
//! `GET /api/v1/audit-records`. Rotated files never change, so each gets a small index
//! (time range, command count) beside it, and a query skips the files outside its range.

pub(crate) mod backward;
pub mod expand;
pub mod logs;
pub mod params;
pub mod report;
pub mod suggest;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use memchr::memmem;
use serde_json::{json, Value};

use crate::audit::files::{Listing, ACTIVE_FILE};
use crate::audit::index::sidecar;
pub use params::{AuditQuery, ParamError};

/// A query that could not run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The directory or a file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// What was being read.
        path: String,
        /// Why it failed.
        source: io::Error,
    },
}

/// One page of matching command records.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Every matching record, on all pages.
    pub total: u64,
    /// This page's records (the audit lines), newest first.
    pub records: Vec<Value>,
    /// Files read line by line, and files whose index answered (or excluded them).
    pub(crate) files_scanned: usize,
    /// Files skipped or counted from their index alone.
    pub files_skipped: usize,
}

/// `audit.log` and the rotated files of `dir`, oldest first.
pub fn audit_files(dir: &Path) -> Result<Vec<PathBuf>, QueryError> {
    let listing = Listing::of(dir)
        .map_err(|source| QueryError::Io { path: dir.display().to_string(), source })?;
    Ok(listing.in_rotation_order().into_iter().map(|name| dir.join(name)).collect())
}

/// Calls `visit` with each line of the audit files of `dir` that is JSON, oldest file first. A
/// torn last line, or one that is not JSON, is passed over: `audit verify` is for those.
pub(crate) fn for_each_line(dir: &Path, mut visit: impl FnMut(Value)) -> Result<(), QueryError> {
    for path in audit_files(dir)? {
        let io_error = |source| QueryError::Io { path: path.display().to_string(), source };
        let file = File::open(&path).map_err(io_error)?;
        for line in BufReader::new(file).split(b'\n') {
            if let Ok(record) = serde_json::from_slice::<Value>(&line.map_err(io_error)?) {
                visit(record);
            }
        }
    }
    Ok(())
}

/// Runs `query` over the audit files of `dir`.
pub fn run(dir: &Path, query: &AuditQuery) -> Result<Page, QueryError> {
    let files = audit_files(dir)?;
    let first = (query.page_number as u64 - 1) * query.page_size as u64;
    let wanted = first..first + query.page_size as u64;
    let mut page = Page { total: 0, records: Vec::new(), files_scanned: 0, files_skipped: 0 };
    // A rotation renames `audit.log` while the directory is listed: one file may then be
    // listed under both names. Each file (device, inode) is counted once.
    let mut seen = std::collections::HashSet::new();
    // Newest file first, newest line first.
    for path in files.iter().rev() {
        let rotated = path.file_name().is_some_and(|n| n != ACTIVE_FILE);
        // An index is used only once checked against its file (`sidecar`).
        let summary = if rotated { sidecar::summary(path).ok() } else { None };
        if let Some(summary) = &summary {
            if summary.commands == 0 || !query.overlaps(&summary.first_time, &summary.last_time) {
                page.files_skipped += 1;
                continue;
            }
            // Entirely inside the range and no other filter: the index has the count, and
            // the lines are only read when the page falls in this file.
            // Entirely inside the range with at most one other filter: the index has the
            // count, and the lines are only read when the page falls in this file.
            let inside = query.contains(&summary.first_time) && query.contains(&summary.last_time);
            let indexed_count = if !inside || !query.index_counts() {
                None
            } else if !query.has_field_filters() {
                Some(summary.commands)
            } else if let Some((facet, value)) = query.single_facet() {
                summary.facets.get(facet).map(|counts| counts.get(&value).copied().unwrap_or(0))
            } else {
                // Several filters: intersect the file's bitmaps.
                let filters = query.facet_filters();
                sidecar::bitmaps_of(path, summary).ok().and_then(|bitmaps| bitmaps.count(&filters))
            };
            if let (true, Some(count)) = (inside, indexed_count) {
                // Rotated files are never renamed again: their name is a stable handle.
                let id = std::fs::metadata(path).ok().map(|meta| file_id(&meta));
                if id.is_some_and(|id| seen.contains(&id)) {
                    continue;
                }
                let here = page.total..page.total + count;
                if count == 0 || here.end <= wanted.start || here.start >= wanted.end {
                    seen.extend(id);
                    page.total += count;
                    page.files_skipped += 1;
                    continue;
                }
            }
        }
        page.files_scanned += 1;
        scan_file(path, query, &wanted, &mut page, &mut seen)?;
    }
    Ok(page)
}

/// What names a file whatever its name: its device and inode.
fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (meta.dev(), meta.ino())
}

fn scan_file(
    path: &Path,
    query: &AuditQuery,
    wanted: &std::ops::Range<u64>,
    page: &mut Page,
    seen: &mut std::collections::HashSet<(u64, u64)>,
) -> Result<(), QueryError> {
    let io_error = |source| QueryError::Io { path: path.display().to_string(), source };
    let file = match File::open(path) {
        Ok(file) => file,
        // Rotated away or deleted by retention since the directory was listed.
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error(error)),
    };
    // The file opened, not the name listed: `audit.log` may be a newer file by now.
    if !seen.insert(file_id(&file.metadata().map_err(io_error)?)) {
        return Ok(());
    }
    let mut reader = BufReader::with_capacity(1 << 20, file);
    // A `redis-audit/2` file: its first line says what its lines leave out.
    let mut first = Vec::new();
    reader.read_until(b'\n', &mut first).map_err(io_error)?;
    let context = expand::FileContext::from_first_line(&first);
    if context.as_ref().is_some_and(|context| !query.node_matches(context.node())) {
        return Ok(());
    }
    reader.seek(io::SeekFrom::Start(0)).map_err(io_error)?;
    // Where each matching line starts and how long it is: the count needs no parsing, and
    // only the page's lines are read again and parsed.
    let mut matches: Vec<(u64, usize)> = Vec::new();
    let mut line = Vec::with_capacity(1024);
    let mut offset = 0u64;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(io_error)?;
        if read == 0 || line.last() != Some(&b'\n') {
            break; // the end, or a line still being written
        }
        if query.line_matches(&line, context.is_some()) {
            matches.push((offset, read));
        }
        offset += read as u64;
    }
    // Newest first: the file's last match is the next record in the answer.
    let before = page.total;
    let count = matches.len() as u64;
    page.total += count;
    let in_file = before..before + count;
    if in_file.end <= wanted.start || in_file.start >= wanted.end {
        return Ok(());
    }
    let mut file = reader.into_inner();
    for rank in wanted.start.max(in_file.start)..wanted.end.min(in_file.end) {
        let (at, len) = matches[(count - 1 - (rank - before)) as usize];
        let mut raw = vec![0u8; len];
        file.seek(io::SeekFrom::Start(at)).map_err(io_error)?;
        file.read_exact(&mut raw).map_err(io_error)?;
        if let Ok(record) = serde_json::from_slice::<Value>(&raw) {
            page.records.push(expand::expand(record, context.as_ref()));
        }
    }
    Ok(())
}

impl Page {
    /// The Tair `DescribeAuditRecords` response for this page.
    pub fn to_tair(&self, query: &AuditQuery, request_id: &str) -> Value {
        let items: Vec<Value> = self.records.iter().map(tair_item).collect();
        json!({
            "StartTime": query.start_text,
            "EndTime": query.end_text,
            "RequestId": request_id,
            "TotalRecordCount": self.total,
            "PageNumber": query.page_number,
            "PageSize": query.page_size,
            "Items": {"SQL": items},
        })
    }
}

/// One record as a Tair `Items.SQL[]` entry. `SQLText` is the command and its keys (the trail
/// holds no other argument, so no value or password can appear).
pub(crate) fn tair_item(record: &Value) -> Value {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            o.get("b64").and_then(Value::as_str).map(|b| format!("b64:{b}")).unwrap_or_default()
        }
        _ => String::new(),
    };
    let command = &record["command"];
    let mut sql = command["name"].as_str().unwrap_or("").to_ascii_uppercase();
    if let Some(sub) = command["sub"].as_str() {
        sql.push(' ');
        sql.push_str(&sub.to_ascii_uppercase());
    }
    if let Some(keys) = record["keys"].as_array() {
        for key in keys {
            sql.push(' ');
            sql.push_str(&text(key));
        }
    }
    let time = record["time"].as_str().unwrap_or("");
    // Tair's ExecuteTime has whole seconds: `2019-03-25T03:22:08Z`.
    let execute_time = if time.len() >= 19 { format!("{}Z", &time[..19]) } else { time.to_owned() };
    json!({
        "HostAddress": record["client"]["ip"],
        "SQLText": sql,
        "DatabaseName": record["db"].as_u64().map(|db| db.to_string()).unwrap_or_default(),
        "SQLType": command["class"].as_str().unwrap_or("unknown"),
        "ExecuteTime": execute_time,
        "TotalExecutionTimes": record["duration_us"].as_u64().unwrap_or(0).to_string(),
        "NodeId": record["node"],
        "AccountName": text(&record["user"]),
        "IPAddress": record["upstream"],
    })
}

/// True when `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memmem::find(haystack, needle).is_some()
}
