//! `audit verify`: owns checking a whole audit directory — the chain across all its files
//! (seals in `redis-audit/2`, a SHA-256 per line in `/1` files), each file's `file_open`
//! header, every instance's `seq` with its declared losses, torn lines and their recovery,
//! retention deletions — and naming the first place where it breaks.
//!
//! The files are read once, in rotation order (rotated `audit-*.log` by name, then
//! `audit.log`), streaming line by line. Every check is made in file order, so the error names
//! the first line at which the directory stops being what the writer produces:
//!
//! - a seal (a `seal` line or a `/2` `file_open`) whose `hash` is not that of the lines since
//!   the seal before it (one of them was altered, removed, inserted or reordered: the error
//!   names the seal and the first of its lines), or whose `prev` is not the hash of the seal
//!   before it (a seal altered or removed, files reordered); in a `/1` file, a line whose
//!   `chain.prev` is not the SHA-256 of the line before it;
//! - a `file_open` header whose `prev_file` is not the file before it (a file is missing);
//! - within one `instance_id`, a `seq` that skips numbers no `loss` record declares, or that
//!   repeats or goes back; a new instance that does not start at `seq` 1 with `start`;
//! - a torn line (no `\n` at the end of a file) that the next file's `file_open` does not
//!   record as `recovered_torn_line`, or that is not at the end of a file;
//! - a line that is not one JSON object, an empty directory, no `audit.log`.
//!
//! The oldest files may be gone by retention: the first file's `prev_file` then names a file
//! that is not there, which is accepted only when a `file_delete` line records its deletion.
//!
//! Once the chain holds, the query index beside each rotated file (`<file>.idx`, `.bits`) is
//! compared with the index its lines make: one that does not describe its file (edited, even
//! resealed, or another file's) fails too, since a query that trusted it would leave records
//! out.
//!
//! What a chain cannot show: whole lines removed from the end of the newest file, or a suffix
//! rewritten with recomputed hashes (checkpoints, keyed, close that gap). The lines after the
//! last seal of a running proxy are not sealed yet ([`VerifyReport::unsealed_lines`]).
//! [`VerifyReport::last_hash`] is the value to keep elsewhere (an anchor).
//!
//! This file walks the directory (the listing is [`crate::audit::files::Listing`]'s); `lines`
//! reads lines and their fields, `records` checks each line's place (file header, run, `seq`),
//! `seals` the chain and checkpoints, `report` says what was found, and `export` checks a
//! sink's copy as a collector exported it.

mod export;
mod lines;
mod records;
mod report;
mod seals;

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use crate::audit::chain::{self, Segment};
use crate::audit::files::{is_rotated_name, Listing, ACTIVE_FILE};
use crate::audit::index::sidecar::{self, has_index};
use crate::audit::index::IndexBuilder;
use crate::audit::schema::SCHEMA;
pub use export::{strip_header, verify_export, ExportReport};
pub use lines::MAX_LINE_BYTES;
use lines::{read_line, text, unreadable, Fields};
pub use report::{Previous, Problem, VerifyError, VerifyReport};

/// Verifies the audit directory `dir`; see the module documentation.
pub fn verify_dir(dir: &Path) -> Result<VerifyReport, VerifyError> {
    verify_dir_with_key(dir, None)
}

/// [`verify_dir`], also checking every `checkpoint` line's HMAC against `checkpoint_key`.
pub fn verify_dir_with_key(
    dir: &Path,
    checkpoint_key: Option<&[u8]>,
) -> Result<VerifyReport, VerifyError> {
    let (files, has_active) = list_files(dir)?;
    let mut verifier = Verifier::new(&files);
    verifier.checkpoint_key = checkpoint_key.map(<[u8]>::to_vec);
    match verifier.run(dir) {
        Ok(()) => verifier.finish(has_active),
        Err(error) => Err(verifier.first_error(dir, error)),
    }
}

/// The audit files of `dir` in rotation order, and whether `audit.log` is among them.
fn list_files(dir: &Path) -> Result<(Vec<String>, bool), VerifyError> {
    let listing = Listing::of(dir).map_err(|error| VerifyError {
        file: None,
        line: None,
        problem: Problem::Io(format!("cannot read the directory: {error}")),
    })?;
    // Any other `audit-*.log` is not the writer's: a file put there, or renamed.
    if let Some(name) = listing.rotated.iter().find(|name| !is_rotated_name(name)) {
        return Err(VerifyError {
            file: Some(name.clone()),
            line: None,
            problem: Problem::BadFileName,
        });
    }
    if listing.rotated.is_empty() && !listing.has_active {
        return Err(VerifyError { file: None, line: None, problem: Problem::EmptyDirectory });
    }
    let has_active = listing.has_active;
    Ok((listing.in_rotation_order(), has_active))
}

/// One run (instance) being followed.
struct Run {
    instance: String,
    /// The next expected seq (1 before the first record); unknown when the trail starts in
    /// the middle of this run (its beginning deleted by retention).
    next_seq: Option<u64>,
    stopped: bool,
}

struct Verifier<'a> {
    files: &'a [String],
    /// The key checkpoints are checked against, when given.
    checkpoint_key: Option<Vec<u8>>,
    report: VerifyReport,
    /// The chain's head: the hash the next `/1` line must carry as `chain.prev`, or the next
    /// seal as `prev` (the hash of the last seal, or of the last `/1` line).
    last_hash: String,
    /// Where the head was made, for messages.
    head_at: Option<(usize, u64)>,
    /// The lines since the last seal of a `/2` file, and where the first of them is.
    segment: Option<(Segment, Option<(usize, u64)>)>,
    /// The schema of the file being read, and the instance its `file_open` names (`/2`).
    file_schema: &'static str,
    file_instance: String,
    /// The run's `stop` was sealed: the writer writes nothing after that seal.
    final_seal: bool,
    /// Where the last complete line is, for messages.
    last_line: Option<(usize, u64)>,
    /// A torn line at the end of the previous file, waiting for the next `file_open`.
    torn: Option<(usize, u64)>,
    run: Option<Run>,
    instances: HashSet<String>,
    /// Files recorded as deleted by `file_delete` lines.
    deleted: HashSet<String>,
    /// The first file's `prev_file`, gone: must be recorded by a `file_delete` line.
    pruned_head: Option<String>,
    /// The first query index that does not match its file: reported once the chain holds.
    index_mismatch: Option<VerifyError>,
}

/// The error naming line `line` (or the whole file) of file `index` of `files`.
fn locate(files: &[String], index: usize, line: Option<u64>, problem: Problem) -> VerifyError {
    VerifyError { file: Some(files[index].clone()), line, problem }
}

/// One complete line being checked: where it is, and what it holds.
#[derive(Clone, Copy)]
struct Line<'l> {
    /// Its file's place in the listing.
    index: usize,
    /// Its number in its file, from 1.
    number: u64,
    /// Its bytes, without the `\n`.
    bytes: &'l [u8],
    fields: &'l Fields,
}

impl<'a> Verifier<'a> {
    fn new(files: &'a [String]) -> Self {
        Self {
            files,
            checkpoint_key: None,
            report: VerifyReport { files: files.len(), ..VerifyReport::default() },
            last_hash: crate::util::hex::hex(&chain::GENESIS),
            head_at: None,
            segment: None,
            file_schema: SCHEMA,
            file_instance: String::new(),
            final_seal: false,
            last_line: None,
            torn: None,
            run: None,
            instances: HashSet::new(),
            deleted: HashSet::new(),
            pruned_head: None,
            index_mismatch: None,
        }
    }

    fn at(&self, index: usize, line: Option<u64>, problem: Problem) -> VerifyError {
        locate(self.files, index, line, problem)
    }

    /// What makes the errors of line `number` of file `index`. It holds the file names only,
    /// not the verifier, which stays free to change meanwhile.
    fn errors_at(&self, index: usize, number: u64) -> impl Fn(Problem) -> VerifyError + Copy + 'a {
        let files = self.files;
        move |problem| locate(files, index, Some(number), problem)
    }

    fn run(&mut self, dir: &Path) -> Result<(), VerifyError> {
        let mut buffer = Vec::new();
        for index in 0..self.files.len() {
            let file = File::open(dir.join(&self.files[index]))
                .map_err(|error| self.at(index, None, unreadable(error)))?;
            let mut reader = BufReader::with_capacity(1 << 16, file);
            let mut number = 0;
            // Rotated files with an index: their lines make the index to compare it with.
            let path = dir.join(&self.files[index]);
            let mut built =
                (self.files[index] != ACTIVE_FILE && has_index(&path)).then(IndexBuilder::default);
            loop {
                let read = read_line(&mut reader, &mut buffer);
                let read =
                    read.map_err(|error| self.at(index, Some(number + 1), error.problem()))?;
                let Some(terminated) = read else { break };
                number += 1;
                if !terminated {
                    // A torn line: acceptable only if the next file's header recovers it.
                    if index + 1 == self.files.len() {
                        return Err(self.at(
                            index,
                            Some(number),
                            Problem::TornNotRecovered { next: None },
                        ));
                    }
                    self.torn = Some((index, number));
                    break;
                }
                self.line(index, number, &buffer)?;
                if let Some(built) = &mut built {
                    built.add_line(&buffer);
                }
            }
            if let Some(built) = built {
                match sidecar::check(&path, built) {
                    Ok(checked) => self.report.indexes += u64::from(checked),
                    Err(why) => {
                        let why = why.to_string();
                        let error = self.at(index, None, Problem::IndexMismatch { why });
                        self.index_mismatch.get_or_insert(error);
                    }
                }
            }
            if number == 0 {
                // The trace of a crash between creating a file and writing its header; the
                // next file's header names it and chains over it. Not so for the last file.
                if index + 1 == self.files.len() {
                    return Err(self.at(index, None, Problem::EmptyFile));
                }
                self.report.empty_files += 1;
            }
        }
        Ok(())
    }

    fn finish(mut self, has_active: bool) -> Result<VerifyReport, VerifyError> {
        if let Some(name) = self.pruned_head.take() {
            if !self.deleted.contains(&name) {
                return Err(self.at(0, Some(1), Problem::UnrecordedDeletion { name }));
            }
            self.report.pruned_before = Some(name);
        }
        if !has_active {
            let last = self.files.last().cloned().unwrap_or_default();
            return Err(VerifyError {
                file: Some(ACTIVE_FILE.to_owned()),
                line: None,
                problem: Problem::NoActiveFile { last },
            });
        }
        if let Some(error) = self.index_mismatch {
            return Err(error);
        }
        self.report.last_instance_stopped = self.run.as_ref().is_some_and(|run| run.stopped);
        self.report.unsealed_lines =
            self.segment.as_ref().map_or(0, |(segment, _)| segment.lines());
        self.report.last_hash = self.last_hash;
        Ok(self.report)
    }

    /// `error` was found; but when the first file chains to a deleted file that no
    /// `file_delete` line seen so far records, that comes first unless a later line does.
    fn first_error(&self, dir: &Path, error: VerifyError) -> VerifyError {
        match &self.pruned_head {
            Some(name)
                if !self.deleted.contains(name) && !deletion_recorded(dir, self.files, name) =>
            {
                self.at(0, Some(1), Problem::UnrecordedDeletion { name: name.clone() })
            }
            _ => error,
        }
    }
}

/// Whether any line of `files` is a `file_delete` record of `name`.
fn deletion_recorded(dir: &Path, files: &[String], name: &str) -> bool {
    let mut buffer = Vec::new();
    for file in files {
        let Ok(file) = File::open(dir.join(file)) else { continue };
        let mut reader = BufReader::with_capacity(1 << 16, file);
        while let Ok(Some(_)) = read_line(&mut reader, &mut buffer) {
            if memchr::memmem::find(&buffer, b"\"file_delete\"").is_none() {
                continue;
            }
            let Ok(fields) = serde_json::from_slice::<Fields>(&buffer) else { continue };
            if text(&fields, "action") == Some("file_delete") && text(&fields, "file") == Some(name)
            {
                return true;
            }
        }
    }
    false
}
