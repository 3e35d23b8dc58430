//! The index of one rotated audit file: its first and last command times and how many
//! command records it holds, kept beside it as `<file>.idx` (rotated files never change, so
//! the index is built once, on the first query that reads the file).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a query needs to know of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// `time` of its earliest command record (RFC 3339, µs, UTC: compares as text).
    pub first_time: String,
    /// `time` of its latest command record.
    pub last_time: String,
    /// Command records.
    pub commands: u64,
}

fn index_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".idx");
    PathBuf::from(name)
}

/// The summary of a rotated file, from its index, or built and saved when there is none.
pub fn summary(file: &Path) -> io::Result<Summary> {
    let path = index_path(file);
    if let Ok(text) = std::fs::read(&path) {
        if let Ok(summary) = serde_json::from_slice(&text) {
            return Ok(summary);
        }
    }
    let summary = build(file)?;
    // Best effort: a read-only directory still answers queries, just more slowly.
    let temporary = path.with_extension("idx.tmp");
    if std::fs::write(&temporary, serde_json::to_vec(&summary).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&temporary, &path);
    }
    Ok(summary)
}

/// Reads a file once: command count and time range. Times are taken from the fixed place
/// the writer puts them (`{"schema":"redis-audit/1","time":"...`).
pub fn build(file: &Path) -> io::Result<Summary> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(file)?);
    let mut summary = Summary { first_time: String::new(), last_time: String::new(), commands: 0 };
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if !super::contains(&line, b"\"kind\":\"command\"") {
            continue;
        }
        let Some(time) = line_time(&line) else { continue };
        if summary.commands == 0 || time < summary.first_time.as_str() {
            summary.first_time = time.to_owned();
        }
        if summary.commands == 0 || time > summary.last_time.as_str() {
            summary.last_time = time.to_owned();
        }
        summary.commands += 1;
    }
    Ok(summary)
}

/// The `time` of an audit line, read from its fixed place.
pub fn line_time(line: &[u8]) -> Option<&str> {
    const PREFIX: &[u8] = b"{\"schema\":\"redis-audit/1\",\"time\":\"";
    let rest = line.strip_prefix(PREFIX)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}
