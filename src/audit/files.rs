//! The audit directory's files: the active file's name, how rotated files are named and listed
//! (name order is rotation order; one [`Listing`] for the writer, `audit verify` and queries),
//! the lock that keeps one writer per directory, and what the
//! newest files say about where the chain stands.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

use crate::audit::chain::{self, ChainAlg, Segment};

/// The active file's name in the audit directory.
pub(crate) const ACTIVE_FILE: &str = "audit.log";

/// Where a rotation creates the next active file before renaming it into place.
pub(crate) const NEXT_FILE: &str = "audit.log.new";

/// Takes the directory's lock file: two proxies writing one directory would interleave lines.
pub(crate) fn lock_dir(dir: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(".lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("audit directory {} is in use by another process", dir.display()),
        )),
    }
}

/// Where the chain stands at the end of the directory's newest rotated file with a complete
/// line: the segment a new file's `file_open` closes ([`chain::tail_of`]).
pub(crate) fn chain_anchor(dir: &Path, alg: ChainAlg) -> io::Result<Segment> {
    for name in rotated_files(dir)?.iter().rev() {
        if let Some(segment) = chain::tail_of(&dir.join(name), alg)? {
            return Ok(segment);
        }
    }
    Ok(Segment::new(alg, chain::GENESIS))
}

/// Creates a new active file: never an existing one, mode 0600, appending.
pub(crate) fn create_active(path: &Path) -> io::Result<File> {
    OpenOptions::new().create_new(true).append(true).mode(0o600).open(path)
}

/// `audit-<UTC yyyymmddThhmmss.mmm>Z-<nnnn>.log`, never an existing name, and always sorting
/// after `after` (the newest rotated file) even when the clock stepped back: rotation order is
/// name order.
pub(crate) fn rotated_name(dir: &Path, counter: &mut u32, after: Option<&str>) -> String {
    loop {
        *counter += 1;
        let stamp = crate::audit::time::rfc3339_micros(SystemTime::now());
        // 2026-11-22T04:40:00.123456Z -> 20261122T044000.123Z
        let compact: String = stamp[..23].chars().filter(|c| *c != '-' && *c != ':').collect();
        let mut name = format!("audit-{compact}Z-{:04}.log", *counter % 10_000);
        if let Some(after) = after.filter(|after| name.as_str() <= *after) {
            // Keep the newest name's time and count on from its number (`get`: a name that is
            // not ASCII, put there by someone else, must not panic the writer).
            let stem = after.len().saturating_sub("-0000.log".len());
            let number: u32 = after
                .get(stem + 1..after.len().saturating_sub(4))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if let Some(prefix) = after.get(..stem).filter(|p| p.starts_with("audit-")) {
                name = format!("{prefix}-{:04}.log", (number + *counter) % 10_000);
            }
        }
        if !dir.join(&name).exists() {
            return name;
        }
    }
}

/// The audit files of a directory, as one listing found them: what the writer, `audit verify`
/// and queries read, in rotation order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// Rotated files (`audit-*.log`), oldest first (name order is rotation order).
    pub rotated: Vec<String>,
    /// Whether the active file is there.
    pub(crate) has_active: bool,
}

impl Listing {
    /// Lists `dir` once. Names that are not UTF-8 are not the writer's and are left out; a
    /// directory entry that cannot be read fails the listing (a listing missing a file would
    /// mislead retention, verification and queries alike).
    pub(crate) fn of(dir: &Path) -> io::Result<Self> {
        let mut listing = Self::default();
        for entry in fs::read_dir(dir)? {
            let Ok(name) = entry?.file_name().into_string() else { continue };
            if name == ACTIVE_FILE {
                listing.has_active = true;
            } else if is_rotated_file(&name) {
                listing.rotated.push(name);
            }
        }
        listing.rotated.sort();
        Ok(listing)
    }

    /// Every file, in rotation order: the rotated ones, then `audit.log` when it is there.
    pub(crate) fn in_rotation_order(self) -> Vec<String> {
        let mut names = self.rotated;
        if self.has_active {
            names.push(ACTIVE_FILE.to_owned());
        }
        names
    }
}

/// Whether `name` is a rotated file's (`audit-*.log`): the writer and queries take every such
/// name; `audit verify` also wants [`is_rotated_name`].
pub(crate) fn is_rotated_file(name: &str) -> bool {
    name.starts_with("audit-") && name.ends_with(".log")
}

/// Whether `name` is exactly what [`rotated_name`] makes: `audit-yyyymmddThhmmss.mmmZ-nnnn.log`.
pub(crate) fn is_rotated_name(name: &str) -> bool {
    const PATTERN: &[u8] = b"audit-########T######.###Z-####.log";
    name.len() == PATTERN.len()
        && name.bytes().zip(PATTERN).all(|(byte, &want)| match want {
            b'#' => byte.is_ascii_digit(),
            _ => byte == want,
        })
}

/// The rotated files of `dir`, oldest first.
pub fn rotated_files(dir: &Path) -> io::Result<Vec<String>> {
    Ok(Listing::of(dir)?.rotated)
}

/// The newest rotated file of `dir`, by name.
pub(crate) fn newest_rotated(dir: &Path) -> io::Result<Option<String>> {
    Ok(rotated_files(dir)?.pop())
}

/// Whether `path` ends with a torn (unterminated) line: the trace of a crash mid-write.
pub(crate) fn ends_torn(path: &Path) -> io::Result<bool> {
    let mut file = File::open(path)?;
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(length - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_are_recognised() {
        let mut counter = 0;
        assert!(is_rotated_name(&rotated_name(&std::env::temp_dir(), &mut counter, None)));
        assert!(is_rotated_name("audit-20261122T044934.315Z-0001.log"));
        assert!(!is_rotated_name("audit-20261122T044934.315Z-001.log"));
        assert!(!is_rotated_name("audit-2026112T044934.315Z-0001.log"));
        assert!(!is_rotated_name("audit-backup.log"));
        assert!(is_rotated_file("audit-backup.log") && !is_rotated_file(ACTIVE_FILE));
    }

    #[test]
    fn rotated_names_sort_after_any_name_found_in_the_directory() {
        let dir = std::env::temp_dir();
        let mut counter = 0;
        for odd in
            ["audit-99999999T999999.999Z-0001.log", "audit-zzzzzzzzzzzzzé-0001.log", "é", "a"]
        {
            let name = rotated_name(&dir, &mut counter, Some(odd));
            assert!(name.starts_with("audit-") && name.ends_with(".log"), "{odd} -> {name}");
        }
        let name = rotated_name(&dir, &mut counter, Some("audit-99999999T999999.999Z-0001.log"));
        assert!(name.as_str() > "audit-99999999T999999.999Z-0001.log", "{name}");
    }
}
