//! Scratch directories for tests that write files (audit trails), and reading a trail back.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new, empty (not yet created) directory named after `tag`.
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "rap-{tag}-{}-{}-{n}",
            std::process::id(),
            crate::support::redis::free_port()
        ));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` as `users.acl` in this directory (created if need be) and returns its path.
    pub fn users_file(&self, text: &str) -> PathBuf {
        std::fs::create_dir_all(self.path()).unwrap();
        let path = self.path().join("users.acl");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A copy of this directory's files in a new scratch directory.
    pub fn copy(&self, tag: &str) -> Self {
        let copy = Self::new(tag);
        std::fs::create_dir_all(copy.path()).unwrap();
        for entry in std::fs::read_dir(self.path()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
        copy
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The rotated audit files of `dir`, by name (rotation order).
pub fn rotated_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("audit-") && name.ends_with(".log"))
        .collect();
    names.sort();
    names
}

/// The audit files of `dir` in rotation order: rotated files by name, then `audit.log`.
pub fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = rotated_files(dir).iter().map(|name| dir.join(name)).collect();
    if dir.join("audit.log").exists() {
        files.push(dir.join("audit.log"));
    }
    files
}

/// The lines of one file (without their `\n`); the file must end with a whole line.
pub fn file_lines(path: impl AsRef<Path>) -> Vec<String> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{} ends mid-line", path.display());
    text.lines().map(str::to_owned).collect()
}

/// Every line of every audit file, in order (without `\n`).
pub fn trail_lines(dir: &Path) -> Vec<String> {
    audit_files(dir).iter().flat_map(file_lines).collect()
}

/// One line parsed as JSON.
pub fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Lines parsed as JSON.
pub fn parse(lines: &[String]) -> Vec<serde_json::Value> {
    lines.iter().map(|line| json(line)).collect()
}

/// Every record of every audit file, parsed and whole: a `redis-audit/2` line gets what its
/// file's `file_open` and the command table say (as the query API returns it), and the
/// writer's seal lines are left out (`trail_lines` has every line as written).
pub fn trail(dir: &Path) -> Vec<serde_json::Value> {
    audit_files(dir)
        .iter()
        .flat_map(|file| redis_audit_proxy::query::expand::file_records(&parse(&file_lines(file))))
        .collect()
}
