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

mod export;
mod report;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde_json::{Map, Value};

use crate::audit::chain::{self, ChainAlg, Segment};
use crate::audit::event::{SCHEMA, SCHEMA_V1};
use crate::audit::index::sidecar::{self, has_index};
use crate::audit::index::IndexBuilder;
use crate::audit::writer::{hex_sha256, ACTIVE_FILE, GENESIS_HASH};
pub use export::{strip_header, verify_export, ExportReport};
pub use report::{Previous, Problem, VerifyError, VerifyReport};

/// Longest line accepted (the writer's lines are far shorter: keys are capped at 16 KiB).
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

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
    let at_dir = |error: io::Error| VerifyError {
        file: None,
        line: None,
        problem: Problem::Io(format!("cannot read the directory: {error}")),
    };
    let mut rotated = Vec::new();
    let mut has_active = false;
    for entry in fs::read_dir(dir).map_err(at_dir)? {
        let entry = entry.map_err(at_dir)?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if name == ACTIVE_FILE {
            has_active = true;
        } else if name.starts_with("audit-") && name.ends_with(".log") {
            if !is_rotated_name(&name) {
                return Err(VerifyError {
                    file: Some(name),
                    line: None,
                    problem: Problem::BadFileName,
                });
            }
            rotated.push(name);
        }
    }
    rotated.sort();
    if rotated.is_empty() && !has_active {
        return Err(VerifyError { file: None, line: None, problem: Problem::EmptyDirectory });
    }
    if has_active {
        rotated.push(ACTIVE_FILE.to_owned());
    }
    Ok((rotated, has_active))
}

/// `audit-yyyymmddThhmmss.mmmZ-nnnn.log`
fn is_rotated_name(name: &str) -> bool {
    const PATTERN: &[u8] = b"audit-########T######.###Z-####.log";
    name.len() == PATTERN.len()
        && name.bytes().zip(PATTERN).all(|(byte, &want)| match want {
            b'#' => byte.is_ascii_digit(),
            _ => byte == want,
        })
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

fn locate(files: &[String], index: usize, line: Option<u64>, problem: Problem) -> VerifyError {
    VerifyError { file: Some(files[index].clone()), line, problem }
}

/// A JSON line's fields.
type Fields = Map<String, Value>;

impl<'a> Verifier<'a> {
    fn new(files: &'a [String]) -> Self {
        Self {
            files,
            checkpoint_key: None,
            report: VerifyReport { files: files.len(), ..VerifyReport::default() },
            last_hash: GENESIS_HASH.to_owned(),
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

    fn run(&mut self, dir: &Path) -> Result<(), VerifyError> {
        let mut buffer = Vec::new();
        for index in 0..self.files.len() {
            let io_error = |error: io::Error| Problem::Io(format!("cannot read: {error}"));
            let file = File::open(dir.join(&self.files[index]))
                .map_err(|error| self.at(index, None, io_error(error)))?;
            let mut reader = BufReader::with_capacity(1 << 16, file);
            let mut number = 0;
            // Rotated files with an index: their lines make the index to compare it with.
            let path = dir.join(&self.files[index]);
            let mut built =
                (self.files[index] != ACTIVE_FILE && has_index(&path)).then(IndexBuilder::default);
            loop {
                let read = read_line(&mut reader, &mut buffer);
                let read = read.map_err(|error| {
                    let problem = match error {
                        ReadError::Io(error) => io_error(error),
                        ReadError::TooLong => Problem::LineTooLong { max: MAX_LINE_BYTES },
                    };
                    self.at(index, Some(number + 1), problem)
                })?;
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

    fn line(&mut self, index: usize, number: u64, bytes: &[u8]) -> Result<(), VerifyError> {
        let files = self.files;
        let at = |problem| locate(files, index, Some(number), problem);
        let fields: Fields = match serde_json::from_slice(bytes) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return Err(at(Problem::NotJson { error: "not an object".to_owned() })),
            Err(error) => {
                let rest = bytes.get(1..).unwrap_or_default();
                let glued = memchr::memmem::find(rest, b"{\"schema\":").is_some()
                    || memchr::memmem::find(rest, b"{\"time\":").is_some();
                let problem = if glued {
                    Problem::TornInMiddle
                } else {
                    Problem::NotJson { error: error.to_string() }
                };
                return Err(at(problem));
            }
        };
        if number == 1 {
            self.file_schema = match text(&fields, "schema") {
                Some(SCHEMA) => SCHEMA,
                Some(SCHEMA_V1) => SCHEMA_V1,
                Some(other) => return Err(at(Problem::Schema { found: clip(other) })),
                None => return Err(at(bad("schema", "a string"))),
            };
        }
        if self.file_schema == SCHEMA_V1 {
            self.line_v1(index, number, bytes, &fields)?;
        } else {
            self.line_v2(index, number, bytes, &fields)?;
        }
        self.last_line = Some((index, number));
        self.report.lines += 1;
        Ok(())
    }

    /// A line of a `redis-audit/2` file: the instance and schema are its `file_open`'s, the
    /// chain is in its seals.
    fn line_v2(
        &mut self,
        index: usize,
        number: u64,
        bytes: &[u8],
        fields: &Fields,
    ) -> Result<(), VerifyError> {
        let files = self.files;
        let at = |problem| locate(files, index, Some(number), problem);
        let kind = text(fields, "kind").ok_or_else(|| at(bad("kind", "a string")))?;
        let action = match (kind, text(fields, "action")) {
            // A command line has no action: it is always `command`.
            ("command", None) => "command",
            (_, Some(action)) => action,
            _ => return Err(at(bad("action", "a string"))),
        };
        let marker = kind == "system" && matches!(action, "file_open" | "file_delete" | "seal");
        let is_open = kind == "system" && action == "file_open";
        if std::mem::take(&mut self.final_seal) && !is_open {
            return Err(at(Problem::AfterFinalSeal));
        }
        if number == 1 {
            if !is_open {
                return Err(at(Problem::NoFileOpen { found: format!("{kind}/{action}") }));
            }
            let instance =
                text(fields, "instance_id").ok_or_else(|| at(bad("instance_id", "a string")))?;
            text(fields, "node").ok_or_else(|| at(bad("node", "a string")))?;
            self.file_instance = instance.to_owned();
            let pruned = self.file_header(index, fields)?;
            self.seal(index, number, fields, bytes, pruned)?;
        } else if is_open {
            return Err(at(Problem::FileOpenNotFirst));
        }
        let instance = std::mem::take(&mut self.file_instance);
        let result = match fields.get("seq") {
            None if marker && action == "seal" => {
                self.final_seal = self.run.as_ref().is_some_and(|run| run.stopped);
                self.seal(index, number, fields, bytes, false)
            }
            None if marker => self.marker(index, number, fields, action, &instance),
            None => Err(at(Problem::Unsequenced { found: format!("{kind}/{action}") })),
            Some(_) if marker => Err(at(Problem::SequencedMarker { action: action.to_owned() })),
            Some(seq) => match seq.as_u64() {
                Some(seq) => self.sequenced(fields, seq, kind, action, &instance).map_err(at),
                None => Err(at(bad("seq", "a positive integer"))),
            },
        };
        self.file_instance = instance;
        result?;
        if marker {
            self.report.markers += 1;
        } else {
            self.report.records += 1;
            *self.report.kinds.entry(kind.to_owned()).or_default() += 1;
        }
        if !(is_open || (marker && action == "seal")) {
            // A line the next seal covers.
            let (segment, start) = self.segment.get_or_insert_with(|| {
                let head = chain::parse_hex(&self.last_hash).unwrap_or_default();
                (Segment::new(ChainAlg::default(), head), None)
            });
            segment.update(bytes, 0);
            segment.update(b"\n", 1);
            start.get_or_insert((index, number));
        }
        Ok(())
    }

    /// A seal (a `seal` line, or the `file_open` that begins a file): its `prev` is the hash of
    /// the seal before it, its `hash` that of the lines since then; with `pruned` (the first
    /// file, whose predecessors retention deleted) neither can be checked.
    fn seal(
        &mut self,
        index: usize,
        number: u64,
        fields: &Fields,
        bytes: &[u8],
        pruned: bool,
    ) -> Result<(), VerifyError> {
        let files = self.files;
        let at = |problem| locate(files, index, Some(number), problem);
        let chain = fields.get("chain").and_then(Value::as_object);
        let chain = chain.ok_or_else(|| at(bad("chain", "an object")))?;
        let alg = text(chain, "alg").ok_or_else(|| at(bad("chain.alg", "a string")))?;
        let alg =
            ChainAlg::from_name(alg).ok_or_else(|| at(Problem::ChainAlg { found: clip(alg) }))?;
        let hex_field = |name: &str, label: &'static str| {
            text(chain, name)
                .filter(|value| is_hex_hash(value))
                .ok_or_else(|| at(bad(label, "64 lowercase hex digits")))
        };
        let (prev, hash) = (hex_field("prev", "chain.prev")?, hex_field("hash", "chain.hash")?);
        let lines = chain.get("lines").and_then(Value::as_u64);
        let lines = lines.ok_or_else(|| at(bad("chain.lines", "a non-negative integer")))?;
        let open = self.segment.take();
        if !pruned {
            if prev != self.last_hash {
                let previous = match self.head_at {
                    Some((file, line)) => {
                        Previous::Seal(Box::new((self.files[file].clone(), line)))
                    }
                    None => Previous::Genesis,
                };
                return Err(at(Problem::ChainMismatch {
                    expected: self.last_hash.clone(),
                    found: clip(prev),
                    previous,
                }));
            }
            let (segment, start) = open.unwrap_or_else(|| {
                let head = chain::parse_hex(prev).unwrap_or_default();
                (Segment::new(alg, head), None)
            });
            if segment.lines() != lines || chain::hex(&segment.finish()) != hash {
                let first = start.map(|(file, line)| (self.files[file].clone(), line));
                return Err(at(Problem::SealMismatch {
                    declared: lines,
                    found: segment.lines(),
                    first,
                }));
            }
        }
        if chain.contains_key("hmac") {
            self.checkpoint(chain, hash).map_err(at)?;
        }
        self.report.seals += 1;
        let head = alg.hash(bytes);
        self.last_hash = chain::hex(&head);
        self.head_at = Some((index, number));
        self.segment = Some((Segment::new(alg, head), None));
        Ok(())
    }

    /// A line of a `redis-audit/1` file: each carries the schema, its instance and the
    /// SHA-256 of the line before it.
    fn line_v1(
        &mut self,
        index: usize,
        number: u64,
        bytes: &[u8],
        fields: &Fields,
    ) -> Result<(), VerifyError> {
        let files = self.files;
        let at = |problem| locate(files, index, Some(number), problem);
        let schema = text(fields, "schema").ok_or_else(|| at(bad("schema", "a string")))?;
        if schema != SCHEMA_V1 {
            return Err(at(Problem::Schema { found: clip(schema) }));
        }
        let chain = fields.get("chain").and_then(Value::as_object);
        let chain = chain.ok_or_else(|| at(bad("chain", "an object")))?;
        if fields.keys().next_back().map(String::as_str) != Some("chain") {
            return Err(at(Problem::ChainNotLast));
        }
        let alg = text(chain, "alg").ok_or_else(|| at(bad("chain.alg", "a string")))?;
        if alg != "sha256" {
            return Err(at(Problem::ChainAlg { found: clip(alg) }));
        }
        let prev = text(chain, "prev").ok_or_else(|| at(bad("chain.prev", "a string")))?;
        let kind = text(fields, "kind").ok_or_else(|| at(bad("kind", "a string")))?;
        let action = text(fields, "action").ok_or_else(|| at(bad("action", "a string")))?;
        let instance =
            text(fields, "instance_id").ok_or_else(|| at(bad("instance_id", "a string")))?;
        let marker =
            kind == "system" && matches!(action, "file_open" | "file_delete" | "checkpoint");

        if number == 1 {
            if !(kind == "system" && action == "file_open") {
                return Err(at(Problem::NoFileOpen { found: format!("{kind}/{action}") }));
            }
            self.file_open(index, fields, prev)?;
        } else {
            if kind == "system" && action == "file_open" {
                return Err(at(Problem::FileOpenNotFirst));
            }
            if prev != self.last_hash {
                return Err(at(Problem::ChainMismatch {
                    expected: self.last_hash.clone(),
                    found: clip(prev),
                    previous: Previous::Line(number - 1),
                }));
            }
        }

        match fields.get("seq") {
            None if marker && action == "checkpoint" => {
                self.checkpoint(fields, prev).map_err(at)?;
                self.report.markers += 1;
            }
            None if marker => {
                self.marker(index, number, fields, action, instance)?;
                self.report.markers += 1;
            }
            None => return Err(at(Problem::Unsequenced { found: format!("{kind}/{action}") })),
            Some(_) if marker => {
                return Err(at(Problem::SequencedMarker { action: action.to_owned() }))
            }
            Some(seq) => {
                let seq = seq.as_u64().ok_or_else(|| at(bad("seq", "a positive integer")))?;
                self.sequenced(fields, seq, kind, action, instance).map_err(at)?;
                self.report.records += 1;
                *self.report.kinds.entry(kind.to_owned()).or_default() += 1;
            }
        }
        self.last_hash = hex_sha256(bytes);
        Ok(())
    }

    /// The header of a `/1` file `index`: [`Self::file_header`], and the chain across files.
    fn file_open(&mut self, index: usize, fields: &Fields, prev: &str) -> Result<(), VerifyError> {
        let files = self.files;
        let at = |problem| locate(files, index, Some(1), problem);
        if self.file_header(index, fields)? {
            // The oldest files were deleted by retention (to be confirmed by a file_delete
            // line): the chain starts from their last line.
            if !is_hex_hash(prev) {
                return Err(at(bad("chain.prev", "64 lowercase hex digits")));
            }
            self.last_hash = prev.to_owned();
            return Ok(());
        }
        if prev != self.last_hash {
            let previous = match self.last_line {
                Some((file, line)) if index > 0 => {
                    Previous::FileEnd { file: self.files[file].clone(), line }
                }
                _ => Previous::Genesis,
            };
            return Err(at(Problem::ChainMismatch {
                expected: self.last_hash.clone(),
                found: clip(prev),
                previous,
            }));
        }
        Ok(())
    }

    /// The header of file `index`: torn-line recovery and `prev_file`. True when the file
    /// before it is gone, deleted by retention (which a `file_delete` line must confirm): the
    /// chain then starts at this header.
    fn file_header(&mut self, index: usize, fields: &Fields) -> Result<bool, VerifyError> {
        let files = self.files;
        let at = |problem| locate(files, index, Some(1), problem);
        if text(fields, "file") != Some(ACTIVE_FILE) {
            return Err(at(bad("file", "\"audit.log\"")));
        }
        let recovered = fields.get("recovered_torn_line").and_then(Value::as_bool);
        let recovered = recovered.ok_or_else(|| at(bad("recovered_torn_line", "a boolean")))?;
        let prev_file = match fields.get("prev_file") {
            Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name.clone()),
            _ => return Err(at(bad("prev_file", "a string or null"))),
        };
        match (self.torn.take(), recovered) {
            (Some((torn_index, torn_line)), false) => {
                let next = Some(self.files[index].clone());
                return Err(self.at(
                    torn_index,
                    Some(torn_line),
                    Problem::TornNotRecovered { next },
                ));
            }
            (Some(_), true) => self.report.torn_lines_recovered += 1,
            (None, true) if index > 0 => {
                let prev_file = self.files[index - 1].clone();
                return Err(at(Problem::SpuriousRecovery { prev_file }));
            }
            (None, _) => {}
        }
        let expected_file = index.checked_sub(1).map(|before| self.files[before].clone());
        if prev_file != expected_file {
            return Err(match prev_file {
                Some(name) if !self.files.contains(&name) => {
                    if index == 0 {
                        self.pruned_head = Some(name);
                        return Ok(true);
                    }
                    at(Problem::MissingFile { name })
                }
                found => at(Problem::PrevFileMismatch { expected: expected_file, found }),
            });
        }
        Ok(false)
    }

    /// A checkpoint (a `/1` `checkpoint` line, a `/2` seal's `chain`): `hmac` =
    /// HMAC-SHA256(key, `vouched`), the hex hash it vouches for (in `/1` the chain head, its
    /// `prev`; in `/2` the seal's `hash`).
    fn checkpoint(&mut self, fields: &Fields, vouched: &str) -> Result<(), Problem> {
        self.report.checkpoints += 1;
        let Some(key) = &self.checkpoint_key else { return Ok(()) };
        let bad = |why: String| Problem::BadCheckpoint { why };
        let key_id = crate::audit::writer::checkpoint_key_id(key);
        match text(fields, "key_id") {
            Some(found) if found == key_id => {}
            found => {
                return Err(bad(format!("made with key {found:?}, not with this one ({key_id})")))
            }
        }
        let expected = crate::audit::writer::checkpoint_hmac(key, vouched);
        if text(fields, "hmac") != Some(expected.as_str()) {
            return Err(bad(
                "its hmac does not match the chain head: the lines before it were rewritten".into(),
            ));
        }
        self.report.checkpoints_verified += 1;
        Ok(())
    }

    /// A `file_open` or `file_delete` line: the run it belongs to, the deletion it records.
    fn marker(
        &mut self,
        index: usize,
        number: u64,
        fields: &Fields,
        action: &str,
        instance: &str,
    ) -> Result<(), VerifyError> {
        let files = self.files;
        let at = |problem| locate(files, index, Some(number), problem);
        if action == "file_open" {
            let same = self.run.as_ref().is_some_and(|run| run.instance == instance);
            if !same {
                // A new run begins with a new file.
                if !self.instances.insert(instance.to_owned()) {
                    return Err(at(Problem::InstanceReused { instance: clip(instance) }));
                }
                if let Some(run) = &self.run {
                    if !run.stopped {
                        self.report.unclean_instances += 1;
                    }
                }
                // A trail whose beginning was deleted may start in the middle of a run.
                let next_seq =
                    if index == 0 && self.pruned_head.is_some() { None } else { Some(1) };
                self.run = Some(Run { instance: instance.to_owned(), next_seq, stopped: false });
                self.report.instances += 1;
            }
            return Ok(());
        }
        self.same_run(instance).map_err(at)?;
        let file = text(fields, "file").ok_or_else(|| at(bad("file", "a string")))?;
        self.deleted.insert(file.to_owned());
        self.report.files_deleted += 1;
        Ok(())
    }

    fn same_run(&self, instance: &str) -> Result<&Run, Problem> {
        match &self.run {
            Some(run) if run.instance == instance => Ok(run),
            Some(run) => Err(Problem::InstanceSwitch {
                expected: run.instance.clone(),
                found: clip(instance),
            }),
            // Unreachable: line 1 of every file is a file_open, which starts a run.
            None => Err(bad("instance_id", "that of a file_open before it")),
        }
    }

    /// A sequenced record: its place in its run's sequence.
    fn sequenced(
        &mut self,
        fields: &Fields,
        seq: u64,
        kind: &str,
        action: &str,
        instance: &str,
    ) -> Result<(), Problem> {
        let expected = self.same_run(instance)?.next_seq;
        if expected == Some(1) && (seq != 1 || kind != "system" || action != "start") {
            return Err(Problem::InstanceStart {
                instance: clip(instance),
                seq,
                found: format!("{kind}/{action}"),
            });
        }
        if let Some(expected) = expected.filter(|expected| seq < *expected) {
            return Err(Problem::SeqBackwards { expected, found: seq });
        }
        if kind == "system" && action == "loss" {
            let count = check_loss(fields, expected, seq)?;
            self.report.loss_records += 1;
            self.report.lost_events = self.report.lost_events.saturating_add(count);
        } else if let Some(expected) = expected.filter(|expected| seq != *expected) {
            return Err(Problem::SeqGap { expected, found: seq });
        }
        if let Some(run) = &mut self.run {
            run.next_seq = Some(seq.saturating_add(1));
            if kind == "system" && action == "stop" {
                run.stopped = true;
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

/// Checks a `loss` record with `seq` found where `expected` was due (unknown at the start of a
/// trail whose beginning was deleted); returns its count.
fn check_loss(fields: &Fields, expected: Option<u64>, seq: u64) -> Result<u64, Problem> {
    let lost = fields.get("lost").and_then(Value::as_object);
    let lost = lost.ok_or_else(|| bad("lost", "an object"))?;
    let number = |field: &'static str, name| {
        lost.get(field).and_then(Value::as_u64).ok_or_else(|| bad(name, "a non-negative integer"))
    };
    let first = number("first_seq", "lost.first_seq")?;
    let last = number("last_seq", "lost.last_seq")?;
    let count = number("count", "lost.count")?;
    let why = if expected.is_some_and(|expected| first != expected) {
        let before = expected.unwrap_or_default().saturating_sub(1);
        format!("first_seq is {first}, but the last seq before it was {before}")
    } else if last < first {
        format!("last_seq {last} is before first_seq {first}")
    } else if Some(seq) != last.checked_add(1) {
        format!("the loss record has seq {seq}, expected last_seq + 1")
    } else if Some(count) != (last - first).checked_add(1) {
        format!(
            "count is {count}, but {first}..={last} is {} events",
            (last - first).saturating_add(1)
        )
    } else {
        return Ok(count);
    };
    Err(Problem::BadLoss { why })
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

fn text<'f>(fields: &'f Fields, name: &str) -> Option<&'f str> {
    fields.get(name).and_then(Value::as_str)
}

fn bad(field: &'static str, expected: &'static str) -> Problem {
    Problem::BadField { field, expected }
}

fn is_hex_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A value from the file, for a one-line message: escaped and at most 100 characters.
fn clip(value: &str) -> String {
    let escaped: String = value.escape_debug().collect();
    match escaped.char_indices().nth(100) {
        Some((at, _)) => format!("{}...", &escaped[..at]),
        None => escaped,
    }
}

enum ReadError {
    Io(io::Error),
    TooLong,
}

/// Reads the next line into `buffer` (without its `\n`): `None` at the end of the file,
/// `Some(false)` for a last line without `\n` (torn).
fn read_line(reader: &mut impl BufRead, buffer: &mut Vec<u8>) -> Result<Option<bool>, ReadError> {
    buffer.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(ReadError::Io(error)),
        };
        if available.is_empty() {
            return Ok((!buffer.is_empty()).then_some(false));
        }
        let (take, done) = match memchr::memchr(b'\n', available) {
            Some(at) => (at, true),
            None => (available.len(), false),
        };
        if buffer.len() + take > MAX_LINE_BYTES {
            return Err(ReadError::TooLong);
        }
        buffer.extend_from_slice(&available[..take]);
        reader.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Some(true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_are_recognised() {
        assert!(is_rotated_name("audit-20261122T044934.315Z-0001.log"));
        assert!(!is_rotated_name("audit-20261122T044934.315Z-001.log"));
        assert!(!is_rotated_name("audit-2026112T044934.315Z-0001.log"));
        assert!(!is_rotated_name("audit-backup.log"));
    }

    #[test]
    fn lines_are_read_whole_and_torn_ones_flagged() {
        let data = b"one\n\ntwo\nthree";
        let mut reader = BufReader::with_capacity(2, &data[..]);
        let mut buffer = Vec::new();
        let mut lines = Vec::new();
        while let Ok(Some(terminated)) = read_line(&mut reader, &mut buffer) {
            lines.push((String::from_utf8(buffer.clone()).unwrap(), terminated));
        }
        let expected = [("one", true), ("", true), ("two", true), ("three", false)];
        let expected: Vec<(String, bool)> =
            expected.iter().map(|(text, terminated)| ((*text).to_owned(), *terminated)).collect();
        assert_eq!(lines, expected);
    }

    #[test]
    fn loss_records_must_describe_the_gap() {
        let loss = |first: u64, last: u64, count: u64| -> Fields {
            let value = serde_json::json!({
                "lost": {"reason": "queue_full", "first_seq": first, "last_seq": last,
                         "count": count}
            });
            value.as_object().unwrap().clone()
        };
        assert_eq!(check_loss(&loss(5, 7, 3), Some(5), 8), Ok(3));
        assert_eq!(check_loss(&loss(5, 7, 3), None, 8), Ok(3));
        let bad = |fields, expected| {
            matches!(check_loss(&fields, expected, 8), Err(Problem::BadLoss { .. }))
        };
        assert!(bad(loss(4, 7, 4), Some(5)));
        assert!(bad(loss(5, 7, 2), Some(5)));
        assert!(bad(loss(5, 6, 2), Some(5)));
        assert!(bad(loss(5, 6, 2), None));
        assert!(bad(loss(7, 5, 0), None));
    }

    #[test]
    fn clip_keeps_messages_on_one_line() {
        assert_eq!(clip("a\nb"), "a\\nb");
        assert_eq!(clip(&"x".repeat(150)).len(), 103);
    }
}
