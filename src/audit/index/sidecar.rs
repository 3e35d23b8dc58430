//! The index's files beside each rotated audit file (`<file>.idx`: the [`Summary`], JSON;
//! `<file>.bits`: the [`Bitmaps`]), and when a query may trust them.
//!
//! The chain and the checkpoints cover the audit files, not these. So each
//! summary is tied to the file it indexes ([`FileFacts`]: its size and the SHA-256 of its last
//! line, the chain's head at its end), names the SHA-256 of its bitmaps, and is sealed
//! (SHA-256 of its own JSON). A query checks all three against the file before it skips or
//! counts the file from them; an index that does not match (edited, truncated, left over from
//! another file, or older than [`INDEX_VERSION`]) is ignored, and the file is read and indexed
//! again. The seal has no key: like the chain without checkpoints, it catches an edit made by
//! whoever does not recompute it; `audit verify` ([`check`]) compares each index with the one
//! its file's lines make, which catches a resealed one too. They hold user names and client
//! addresses, so they are written with mode 0600.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{build, Bitmaps, IndexBuilder, Summary, INDEX_VERSION};
use crate::util::hex::hex_sha256;

/// What ties an index to the file it indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFacts {
    /// The file's size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of its last complete line, without its newline: the chain's head at the
    /// end of the file, which the next file's `file_open` line carries as `chain.prev` (empty
    /// for a file without a complete line).
    pub(crate) last_line_sha256: String,
}

/// How much of a file's end is read first to find its last line (the writer's lines are
/// far shorter).
const TAIL_BYTES: u64 = 8 * 1024;
/// Longest last line looked for; past it the index is not trusted, and the file is read.
const MAX_TAIL_BYTES: u64 = 64 * 1024 * 1024;

impl FileFacts {
    /// The facts of `file` as it is now: its size, and its last line read from its end.
    pub fn of(file: &Path) -> io::Result<Self> {
        let mut reader = File::open(file)?;
        let bytes = reader.metadata()?.len();
        let mut window = TAIL_BYTES.min(bytes);
        loop {
            let start = bytes - window;
            reader.seek(SeekFrom::Start(start))?;
            let mut tail = vec![0u8; window as usize];
            reader.read_exact(&mut tail)?;
            // `Some(None)`: the file has no complete line; `None`: look further back.
            let last_line = match memchr::memrchr(b'\n', &tail) {
                // A torn line after the last newline is not a line.
                Some(end) => match memchr::memrchr(b'\n', &tail[..end]) {
                    Some(before) => Some(Some(&tail[before + 1..end])),
                    None => (start == 0).then_some(Some(&tail[..end])),
                },
                None => (start == 0).then_some(None),
            };
            if let Some(line) = last_line {
                let last_line_sha256 = line.map(hex_sha256).unwrap_or_default();
                return Ok(Self { bytes, last_line_sha256 });
            }
            if window >= MAX_TAIL_BYTES.min(bytes) {
                return Err(io::Error::other("the file's last line is too long to check"));
            }
            window = (window * 4).min(MAX_TAIL_BYTES).min(bytes);
        }
    }
}

/// Completes a summary for its sidecar: the file it indexes, the digest of its bitmaps, and
/// the seal over all of it.
pub fn seal(summary: &mut Summary, bitmaps: &Bitmaps, file: FileFacts) {
    summary.file = file;
    summary.bits_sha256 = hex_sha256(&bitmaps.encode());
    summary.seal = seal_of(summary);
}

/// Hex SHA-256 of the summary's JSON without its seal.
fn seal_of(summary: &mut Summary) -> String {
    let seal = std::mem::take(&mut summary.seal);
    let text = serde_json::to_vec(&*summary).unwrap_or_default();
    summary.seal = seal;
    hex_sha256(&text)
}

/// The summary of a rotated file: from its index when the index is sealed and matches the
/// file; otherwise built from the file (and its index saved again).
pub fn summary(file: &Path) -> io::Result<Summary> {
    match read_summary(file) {
        Ok(summary) => Ok(summary),
        Err(why) => {
            if !matches!(why, Mismatch::Missing) {
                tracing::warn!(file = %file.display(), ?why, "index not used: read from the file");
            }
            let (summary, bitmaps) = build(file)?;
            // Best effort: a read-only directory still answers queries, just more slowly.
            save_index(file, &summary, &bitmaps);
            Ok(summary)
        }
    }
}

/// Why an index is not used.
#[derive(Debug)]
enum Mismatch {
    /// No index, or not readable.
    Missing,
    /// Not a summary of this layout.
    Layout,
    /// Its seal is not its content's.
    Seal,
    /// It indexes another state of the file (or another file).
    File,
    /// The bitmaps are not the ones the summary names.
    Bitmaps,
}

fn read_summary(file: &Path) -> Result<Summary, Mismatch> {
    let text = std::fs::read(suffixed(file, ".idx")).map_err(|_| Mismatch::Missing)?;
    let mut summary: Summary = serde_json::from_slice(&text).map_err(|_| Mismatch::Layout)?;
    if summary.version != INDEX_VERSION {
        return Err(Mismatch::Layout);
    }
    if seal_of(&mut summary) != summary.seal {
        return Err(Mismatch::Seal);
    }
    if FileFacts::of(file).ok().as_ref() != Some(&summary.file) {
        return Err(Mismatch::File);
    }
    Ok(summary)
}

/// The bitmaps of a rotated file (its summary checked first, as [`summary`] does).
pub fn bitmaps(file: &Path) -> io::Result<Bitmaps> {
    bitmaps_of(file, &summary(file)?)
}

/// The bitmaps of a rotated file whose checked summary is `summary`: from `<file>.bits` when
/// they are the ones it names, otherwise built from the file (and the index saved again).
pub(crate) fn bitmaps_of(file: &Path, summary: &Summary) -> io::Result<Bitmaps> {
    if let Ok(bytes) = std::fs::read(suffixed(file, ".bits")) {
        if hex_sha256(&bytes) == summary.bits_sha256 {
            if let Some(bitmaps) = Bitmaps::decode(&bytes) {
                return Ok(bitmaps);
            }
        }
        tracing::warn!(file = %file.display(), why = ?Mismatch::Bitmaps, "index not used: read from the file");
    }
    let (summary, bitmaps) = build(file)?;
    save_index(file, &summary, &bitmaps);
    Ok(bitmaps)
}

/// Whether `file` has an index beside it.
pub(crate) fn has_index(file: &Path) -> bool {
    suffixed(file, ".idx").exists()
}

/// How an index differs from the one its file gives (`audit verify` names it).
#[derive(Debug, thiserror::Error)]
pub enum IndexMismatch {
    /// The `.idx` is not JSON of an index.
    #[error("the .idx is not an index")]
    NotAnIndex,
    /// The audit file itself could not be read.
    #[error("{0}")]
    Unreadable(#[from] std::io::Error),
    /// The `.idx` names another file, or the file changed.
    #[error("the .idx was made for another file, or the file changed since")]
    OtherFile,
    /// Command count or time range.
    #[error("the .idx does not hold the file's command count and time range")]
    Counts,
    /// Counts per facet.
    #[error(
        "the .idx does not hold the file's counts per user, address, db, command, class, node"
    )]
    Facets,
    /// The digests of the bitmaps or the seal.
    #[error("the .idx's digests are not its content's")]
    Digests,
    /// The `.bits` file.
    #[error("the .bits are not the file's bitmaps")]
    Bitmaps,
}

/// Whether the index beside `file`, if it has one, is the one `built` from all of the file's
/// lines: for `audit verify`, which reads every line anyway and so catches even an index whose
/// seal was recomputed. `Ok(false)`: no index to check (none, or of an older layout, which
/// queries ignore); `Err`: what differs.
pub fn check(file: &Path, built: IndexBuilder) -> Result<bool, IndexMismatch> {
    let Ok(text) = std::fs::read(suffixed(file, ".idx")) else { return Ok(false) };
    let saved: Summary = serde_json::from_slice(&text).map_err(|_| IndexMismatch::NotAnIndex)?;
    if saved.version != INDEX_VERSION {
        return Ok(false);
    }
    let (summary, _) = built.finish_file(FileFacts::of(file)?);
    if saved.file != summary.file {
        Err(IndexMismatch::OtherFile)
    } else if saved.commands != summary.commands
        || (&saved.first_time, &saved.last_time) != (&summary.first_time, &summary.last_time)
    {
        Err(IndexMismatch::Counts)
    } else if saved.facets != summary.facets {
        Err(IndexMismatch::Facets)
    } else if saved.bits_sha256 != summary.bits_sha256 || saved.seal != summary.seal {
        Err(IndexMismatch::Digests)
    } else {
        match std::fs::read(suffixed(file, ".bits")) {
            Ok(bytes) if hex_sha256(&bytes) != summary.bits_sha256 => Err(IndexMismatch::Bitmaps),
            _ => Ok(true),
        }
    }
}

/// Saves the index of `file` beside it (best effort: a query builds a missing one). The
/// bitmaps first: a summary is never saved before the bitmaps it names.
pub(crate) fn save_index(file: &Path, summary: &Summary, bitmaps: &Bitmaps) {
    save(&suffixed(file, ".bits"), &bitmaps.encode());
    save(&suffixed(file, ".idx"), &serde_json::to_vec(summary).unwrap_or_default());
}

/// Writes `bytes` to `path` through a temporary file of its own, mode 0600 (the writer's
/// index thread and a query may build the same index); best effort.
fn save(path: &Path, bytes: &[u8]) {
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let temporary = suffixed(path, &format!(".tmp-{}-{unique}", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut out| out.write_all(bytes));
    if written.is_err() || std::fs::rename(&temporary, path).is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
}

/// `file` with `suffix` appended to its name.
fn suffixed(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rap-sidecar-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_last_line_is_found_past_a_torn_one_and_across_windows() {
        let dir = scratch("facts");
        let file = dir.join("f.log");
        let long = "x".repeat(200_000);
        for (content, last) in [
            (String::new(), None),
            ("torn".to_owned(), None),
            ("a\n".to_owned(), Some("a")),
            ("a\nb\n".to_owned(), Some("b")),
            ("a\nb\ntorn".to_owned(), Some("b")),
            ("a\n\n".to_owned(), Some("")),
            (format!("a\n{long}\n"), Some(long.as_str())),
            (format!("{long}\n{long}"), Some(long.as_str())),
        ] {
            std::fs::write(&file, &content).unwrap();
            let facts = FileFacts::of(&file).unwrap();
            assert_eq!(facts.bytes, content.len() as u64);
            let expected = last.map(|line| hex_sha256(line.as_bytes())).unwrap_or_default();
            assert_eq!(facts.last_line_sha256, expected, "{:?}", &content[..content.len().min(9)]);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
