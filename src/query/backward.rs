//! The audit files read newest line first, in blocks from each file's end: what a reader holds
//! is one block and the longest line, whatever the size of the files.

use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use super::expand::FileContext;
use super::{audit_files, QueryError};
use crate::audit::files::ACTIVE_FILE;

/// Longest line handed out. The writer's security, session and system lines are far shorter;
/// a longer line is skipped rather than held.
pub(crate) const MAX_LINE_BYTES: usize = 1 << 20;

/// How much of a file one read takes.
const BLOCK_BYTES: usize = 64 * 1024;

/// The audit files of a directory, newest first: the active file held open with the length
/// it had when the snapshot was taken, so a second pass reads the same lines even if the
/// writer appended or rotated in between, and the rotated files by name (they never change,
/// and are opened one at a time while read, so a directory of thousands of files costs one
/// descriptor at a time).
#[derive(Debug)]
pub(crate) struct Snapshot {
    active: Option<(PathBuf, File, u64)>,
    rotated: Vec<PathBuf>,
}

impl Snapshot {
    /// Takes the snapshot of `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Self, QueryError> {
        // The active file first, then the listing: a rotation in between lists the file held
        // open under its new name too, and that copy is left out.
        let path = dir.join(ACTIVE_FILE);
        let active = open(&path)?.map(|(file, len)| (path, file, len));
        let held = match &active {
            Some((path, file, _)) => Some(identity(path, file)?),
            None => None,
        };
        let mut rotated = Vec::new();
        for path in audit_files(dir)?.into_iter().rev() {
            if path.file_name().is_some_and(|name| name == ACTIVE_FILE) {
                continue;
            }
            let same = match (held, std::fs::metadata(&path)) {
                (Some(held), Ok(metadata)) => (metadata.dev(), metadata.ino()) == held,
                _ => false,
            };
            if !same {
                rotated.push(path);
            }
        }
        Ok(Self { active, rotated })
    }

    /// Calls `each` with every complete line (without its `\n`), newest first, until it
    /// breaks. A last line still being written is not complete and is left out, and so is a
    /// rotated file deleted (by retention) since the snapshot.
    pub(crate) fn scan(
        &self,
        mut each: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, QueryError> {
        self.scan_with_context(|line, _| each(line))
    }

    /// [`Self::scan`], with each line the context of its file (`redis-audit/2`: what its
    /// lines leave out, for [`expand`](super::expand::expand)).
    pub(crate) fn scan_with_context(
        &self,
        mut each: impl FnMut(&[u8], Option<&FileContext>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, QueryError> {
        if let Some((path, file, len)) = &self.active {
            let context = FileContext::of_file(path);
            let mut each = |line: &[u8]| each(line, context.as_ref());
            if lines_of(path, file, *len, &mut each)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        for path in &self.rotated {
            let Some((file, len)) = open(path)? else { continue };
            let context = FileContext::of_file(path);
            let mut each = |line: &[u8]| each(line, context.as_ref());
            if lines_of(path, &file, len, &mut each)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }
}

/// `path` opened with its length; `None` when it is gone.
fn open(path: &Path) -> Result<Option<(File, u64)>, QueryError> {
    let io_error = |source| QueryError::Io { path: path.display().to_string(), source };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(error)),
    };
    let len = file.metadata().map_err(io_error)?.len();
    Ok(Some((file, len)))
}

/// The device and inode of an open file.
fn identity(path: &Path, file: &File) -> Result<(u64, u64), QueryError> {
    let metadata = file
        .metadata()
        .map_err(|source| QueryError::Io { path: path.display().to_string(), source })?;
    Ok((metadata.dev(), metadata.ino()))
}

/// Hands the lines of one file to `each`, newest first.
fn lines_of(
    path: &Path,
    file: &File,
    len: u64,
    each: &mut impl FnMut(&[u8]) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, QueryError> {
    let mut lines = Backward::new(file, len);
    loop {
        let line = lines
            .next_line()
            .map_err(|source| QueryError::Io { path: path.display().to_string(), source })?;
        let Some(line) = line else { return Ok(ControlFlow::Continue(())) };
        if each(line).is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
}

/// One file's lines from its end.
#[derive(Debug)]
struct Backward<'a> {
    file: &'a File,
    /// Where `buffer[0]` is in the file.
    start: u64,
    buffer: Vec<u8>,
    /// `buffer[..end]` is still to be handed out.
    end: usize,
    /// `end` sits just after a `\n`. Not so at first (the file may end in a line still being
    /// written) and after a line longer than [`MAX_LINE_BYTES`], whose bytes are dropped
    /// until the `\n` before it.
    aligned: bool,
}

impl<'a> Backward<'a> {
    fn new(file: &'a File, len: u64) -> Self {
        Self { file, start: len, buffer: Vec::new(), end: 0, aligned: false }
    }

    /// The next line towards the start of the file, without its `\n`; `None` at the start.
    fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            if !self.aligned {
                match memchr::memrchr(b'\n', &self.buffer[..self.end]) {
                    Some(at) => {
                        self.end = at + 1;
                        self.aligned = true;
                    }
                    None => {
                        if !self.read_before(0)? {
                            return Ok(None);
                        }
                        continue;
                    }
                }
            }
            if self.end == 0 {
                if !self.read_before(0)? {
                    return Ok(None);
                }
                continue;
            }
            // `buffer[end - 1]` is the line's `\n`; the line starts after the one before it.
            let last = self.end - 1;
            let from = match memchr::memrchr(b'\n', &self.buffer[..last]) {
                Some(at) => at + 1,
                None if self.start == 0 => 0,
                None if last > MAX_LINE_BYTES => {
                    // Too long to hold: drop it, and find the start of the line before it.
                    self.aligned = false;
                    self.end = 0;
                    continue;
                }
                None => {
                    self.read_before(self.end)?;
                    continue;
                }
            };
            self.end = from;
            if last - from > MAX_LINE_BYTES {
                continue; // read whole along with its neighbours, but still too long
            }
            return Ok(Some(&self.buffer[from..last]));
        }
    }

    /// Reads the bytes before `buffer`, keeping `buffer[..keep]` after them; false at the
    /// start of the file. A block at least as long as what is kept, so a long line costs
    /// reads and copies in proportion to its length.
    fn read_before(&mut self, keep: usize) -> io::Result<bool> {
        if self.start == 0 {
            return Ok(false);
        }
        let size = (BLOCK_BYTES.max(keep) as u64).min(self.start) as usize;
        let mut buffer = vec![0u8; size + keep];
        self.file.read_exact_at(&mut buffer[..size], self.start - size as u64)?;
        buffer[size..].copy_from_slice(&self.buffer[..keep]);
        self.buffer = buffer;
        self.start -= size as u64;
        self.end = size + keep;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(bytes: &[u8]) -> Vec<Vec<u8>> {
        let dir = std::env::temp_dir().join(format!("backward-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.log", bytes.len()));
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        let mut reader = Backward::new(&file, bytes.len() as u64);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            out.push(line.to_vec());
        }
        std::fs::remove_file(&path).unwrap();
        out
    }

    #[test]
    fn lines_come_newest_first_and_a_torn_tail_is_left_out() {
        let expected: Vec<Vec<u8>> = [&b"ccc"[..], b"", b"bb", b"a"].map(<[u8]>::to_vec).into();
        assert_eq!(lines_of(b"a\nbb\n\nccc\ntorn"), expected);
        assert!(lines_of(b"").is_empty());
        assert!(lines_of(b"no newline").is_empty());
        assert_eq!(lines_of(b"\n"), [Vec::<u8>::new()]);
    }

    #[test]
    fn a_snapshot_reads_the_active_file_then_the_rotated_ones_newest_first() {
        let dir = std::env::temp_dir().join(format!("snapshot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("audit-20261122T000000.000Z-0001.log"), "1\n2\n").unwrap();
        std::fs::write(dir.join("audit-20261123T000000.000Z-0002.log"), "3\n").unwrap();
        std::fs::write(dir.join(ACTIVE_FILE), "4\n5\ntorn").unwrap();
        // The active file held open and then listed under a rotated name (a rotation between
        // the two) is read once.
        std::fs::hard_link(dir.join(ACTIVE_FILE), dir.join("audit-20261124T000000.000Z-0003.log"))
            .unwrap();
        let snapshot = Snapshot::open(&dir).unwrap();
        std::fs::write(dir.join(ACTIVE_FILE), "4\n5\nappended later\n").unwrap();
        let mut lines = Vec::new();
        let flow = snapshot
            .scan(|line| {
                lines.push(String::from_utf8(line.to_vec()).unwrap());
                ControlFlow::Continue(())
            })
            .unwrap();
        assert!(flow.is_continue());
        assert_eq!(lines, ["5", "4", "3", "2", "1"]);
        let mut first = Vec::new();
        let flow = snapshot
            .scan(|line| {
                first.push(line.to_vec());
                if first.len() == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert!(flow.is_break());
        assert_eq!(first, [b"5".to_vec(), b"4".to_vec(), b"3".to_vec()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lines_across_blocks_are_whole_and_over_long_lines_are_skipped() {
        let mut text = Vec::new();
        let long = vec![b'x'; BLOCK_BYTES * 3 + 7];
        let too_long = vec![b'y'; MAX_LINE_BYTES + 1];
        for line in [&b"first"[..], &long, &too_long, b"after", &too_long, b"last"] {
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        assert_eq!(lines_of(&text), [b"last".to_vec(), b"after".to_vec(), long, b"first".to_vec()]);
        // An over-long first line is skipped too.
        let mut text = too_long;
        text.extend_from_slice(b"\nend\n");
        assert_eq!(lines_of(&text), [b"end".to_vec()]);
    }
}
