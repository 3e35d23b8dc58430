//! What `audit verify` reports: an intact directory's counts, or the first place where it
//! breaks and why.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::audit::schema::{SCHEMA, SCHEMA_V1};

/// What an intact directory holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Audit files read (rotated ones and `audit.log`).
    pub files: usize,
    /// Complete (newline-terminated) lines.
    pub lines: u64,
    /// Sequenced records (every line but the `file_open` / `file_delete` markers).
    pub records: u64,
    /// Sequenced records per `kind` (`command`, `session`, `system`).
    pub kinds: BTreeMap<String, u64>,
    /// Unsequenced marker lines (`file_open`, `file_delete`).
    pub markers: u64,
    /// Distinct `instance_id`s (proxy runs).
    pub instances: u64,
    /// Runs that ended without a `stop` record before the next run began (crashes).
    pub unclean_instances: u64,
    /// Whether the newest run ended with `stop` (false: still running, or crashed).
    pub last_instance_stopped: bool,
    /// `loss` records.
    pub loss_records: u64,
    /// Events those `loss` records declare dropped.
    pub lost_events: u64,
    /// Torn lines left by a crash and recorded as recovered by the next `file_open`.
    pub torn_lines_recovered: u64,
    /// Empty files before the last one (a crash right after a file was created); the chain
    /// passes over them.
    pub empty_files: u64,
    /// `file_delete` records (files removed by retention).
    pub files_deleted: u64,
    /// The file before the oldest one present, deleted by retention (recorded by a
    /// `file_delete` line); the chain starts from that file's last line, not from genesis.
    pub pruned_before: Option<String>,
    /// The chain's head: the hash of the last seal (`/2`; of the last line in `/1`). Keep it
    /// elsewhere to detect a later truncation.
    pub last_hash: String,
    /// Seals checked (`seal` lines and `/2` `file_open` lines).
    pub seals: u64,
    /// Lines after the last seal: not sealed yet (a running proxy seals within
    /// `audit.seal_interval_ms`; a crashed one's are sealed by the next start's `file_open`).
    pub unsealed_lines: u64,
    /// `checkpoint` lines seen.
    pub checkpoints: u64,
    /// Of which checked against the key given (`--checkpoint-key-file`).
    pub checkpoints_verified: u64,
    /// Query indexes (`<file>.idx`) found to describe their files.
    pub indexes: u64,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<String> =
            self.kinds.iter().map(|(kind, count)| format!("{count} {kind}")).collect();
        write!(
            f,
            "intact: {} files, {} lines, {} records ({}), instances: {}, declared losses: {} \
             ({} events)",
            self.files,
            self.lines,
            self.records,
            kinds.join(", "),
            self.instances,
            self.loss_records,
            self.lost_events,
        )?;
        if self.seals > 0 {
            write!(f, ", seals: {}", self.seals)?;
        }
        if self.unsealed_lines > 0 {
            write!(f, ", lines after the last seal (not sealed yet): {}", self.unsealed_lines)?;
        }
        if self.checkpoints > 0 {
            write!(
                f,
                ", checkpoints: {} ({} verified with the key)",
                self.checkpoints, self.checkpoints_verified
            )?;
        }
        if self.indexes > 0 {
            write!(f, ", query indexes matching their files: {}", self.indexes)?;
        }
        if self.torn_lines_recovered > 0 {
            write!(f, ", torn lines recovered: {}", self.torn_lines_recovered)?;
        }
        if self.empty_files > 0 {
            write!(f, ", empty files: {}", self.empty_files)?;
        }
        if self.unclean_instances > 0 {
            write!(f, ", runs ended without stop: {}", self.unclean_instances)?;
        }
        if let Some(pruned) = &self.pruned_before {
            write!(f, ", starts after {pruned} (deleted by retention)")?;
        }
        if !self.last_instance_stopped {
            write!(f, ", last run not stopped (running or crashed)")?;
        }
        write!(f, ", last hash {}", self.last_hash)
    }
}

/// The first place where a directory breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// File name inside the directory, when the problem is in one file.
    pub file: Option<String>,
    /// 1-based line number in `file`, when the problem is at one line.
    pub line: Option<u64>,
    /// What is wrong.
    pub problem: Problem,
}

impl VerifyError {
    /// `<dir>/<file>:<line>: <problem>` (the parts that apply), on one line.
    pub fn display_in(&self, dir: &Path) -> String {
        let mut out = match &self.file {
            Some(file) => dir.join(file).display().to_string(),
            None => dir.display().to_string(),
        };
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
        }
        out.push_str(&format!(": {}", self.problem));
        out
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: {}", self.problem),
            (Some(file), None) => write!(f, "{file}: {}", self.problem),
            _ => write!(f, "{}", self.problem),
        }
    }
}

impl std::error::Error for VerifyError {}

/// What the chain of a line was compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    /// The very first line of the directory: the genesis hash.
    Genesis,
    /// The line before, in the same file.
    Line(u64),
    /// The seal before (`redis-audit/2`): its file and line (boxed: the error stays small).
    Seal(Box<(String, u64)>),
    /// The last complete line of the file before.
    FileEnd {
        /// That file.
        file: String,
        /// Its last complete line.
        line: u64,
    },
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The directory or a file cannot be read.
    #[error("{0}")]
    Io(String),
    /// No audit files at all.
    #[error("no audit files here (no audit.log, no rotated audit-*.log)")]
    EmptyDirectory,
    /// Rotated files but no `audit.log`.
    #[error(
        "the active file audit.log is missing (the trail ends at {last}): deleted, or the \
         proxy stopped while rotating"
    )]
    NoActiveFile {
        /// The newest rotated file.
        last: String,
    },
    /// An `audit-*.log` whose name is not a rotated file's.
    #[error("not an audit file name (rotated files are audit-yyyymmddThhmmss.mmmZ-nnnn.log)")]
    BadFileName,
    /// The last file is empty: no `file_open` line.
    #[error(
        "empty file (no file_open line): a crash right after it was created, not yet \
         recovered by a restart"
    )]
    EmptyFile,
    /// A line longer than [`MAX_LINE_BYTES`](super::MAX_LINE_BYTES).
    #[error("line longer than {max} bytes")]
    LineTooLong {
        /// The limit.
        max: usize,
    },
    /// Not parseable as JSON, or not an object.
    #[error("not a JSON object: {error}")]
    NotJson {
        /// The parser's message.
        error: String,
    },
    /// A partial line glued to the next record: a torn write in the middle of a file.
    #[error("torn line in the middle of the file (a partial record followed by another record)")]
    TornInMiddle,
    /// A required field is absent or has the wrong type.
    #[error("field \"{field}\" is missing or not {expected}")]
    BadField {
        /// The field (dotted path).
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// `schema` is not ours.
    #[error("schema is {found:?}, expected \"{SCHEMA}\" or \"{SCHEMA_V1}\"")]
    Schema {
        /// The value found.
        found: String,
    },
    /// `chain` is not the line's last field.
    #[error("\"chain\" is not the last field of the line")]
    ChainNotLast,
    /// `chain.alg` is not an algorithm of the schema.
    #[error("chain.alg is {found:?}, expected \"sha256\" (or \"blake3\" in a seal)")]
    ChainAlg {
        /// The value found.
        found: String,
    },
    /// `chain.prev` does not match the hash of what precedes the line.
    #[error("{}", chain_message(expected, found, previous))]
    ChainMismatch {
        /// The hash of the previous line (or genesis).
        expected: String,
        /// The line's `chain.prev`.
        found: String,
        /// What the line should chain to.
        previous: Previous,
    },
    /// A seal whose `hash` is not that of the lines since the seal before it.
    #[error("{}", seal_message(*declared, *found, first))]
    SealMismatch {
        /// The lines the seal says it covers.
        declared: u64,
        /// The lines since the seal before it.
        found: u64,
        /// Where the first of those is.
        first: Option<(String, u64)>,
    },
    /// A line after the seal that ends a run (its `stop`, then that seal): the writer never
    /// writes one, so it was appended later.
    #[error("line after the seal that ended its run (after stop): appended to the trail later")]
    AfterFinalSeal,
    /// The first line of a file is not a `file_open` header.
    #[error("first line is {found}, not a system file_open header")]
    NoFileOpen {
        /// `kind/action` of the line.
        found: String,
    },
    /// A `file_open` header that is not the first line of its file.
    #[error("file_open header in the middle of a file")]
    FileOpenNotFirst,
    /// A line without `seq` that is not a file marker.
    #[error("{found} record without \"seq\" (only file_open and file_delete lines have none)")]
    Unsequenced {
        /// `kind/action` of the line.
        found: String,
    },
    /// A checkpoint whose HMAC does not match the chain head (the trail was rewritten) or that
    /// was made with another key.
    #[error("checkpoint does not verify: {why}")]
    BadCheckpoint {
        /// What does not match.
        why: String,
    },
    /// A `file_open` / `file_delete` marker with a `seq`.
    #[error("{action} line carries a \"seq\" (markers have none)")]
    SequencedMarker {
        /// The marker.
        action: String,
    },
    /// `prev_file` names a file present, but not the one before this file.
    #[error(
        "file_open names prev_file {}, but the file before it is {}",
        or_null(found),
        or_null(expected)
    )]
    PrevFileMismatch {
        /// The file before this one in rotation order (none for the first file).
        expected: Option<String>,
        /// The header's `prev_file`.
        found: Option<String>,
    },
    /// `prev_file` names a file that is not in the directory.
    #[error("missing file: file_open names prev_file {name}, which is not in the directory")]
    MissingFile {
        /// The missing file.
        name: String,
    },
    /// The first file's `prev_file` is gone and no `file_delete` line records its deletion.
    #[error(
        "missing file: file_open names prev_file {name}, which is not in the directory, and \
         no file_delete line records its deletion"
    )]
    UnrecordedDeletion {
        /// The missing file.
        name: String,
    },
    /// A torn last line nothing accounts for.
    #[error("{}", torn_message(next))]
    TornNotRecovered {
        /// The next file, whose `file_open` says `recovered_torn_line: false`; none when this
        /// is the last file.
        next: Option<String>,
    },
    /// `recovered_torn_line: true` after a file that ends with a complete line.
    #[error("file_open says recovered_torn_line, but {prev_file} ends with a complete line")]
    SpuriousRecovery {
        /// The previous file.
        prev_file: String,
    },
    /// A `seq` larger than the next expected, with no `loss` record.
    #[error(
        "seq gap: expected {expected}, found {found}: seq {expected}..={} missing without a \
         loss record",
        found - 1
    )]
    SeqGap {
        /// The next expected seq.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// A `seq` smaller than the next expected.
    #[error("seq goes backwards: expected {expected}, found {found} (duplicated or reordered)")]
    SeqBackwards {
        /// The next expected seq.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// A `loss` record that does not describe the gap before it.
    #[error("loss record does not match the gap: {why}")]
    BadLoss {
        /// What does not match.
        why: String,
    },
    /// A run whose first record is not `seq` 1, `system` `start`.
    #[error("instance {instance} begins with seq {seq} ({found}), expected seq 1, system start")]
    InstanceStart {
        /// The instance.
        instance: String,
        /// The seq found.
        seq: u64,
        /// `kind/action` found.
        found: String,
    },
    /// A line of another instance without a `file_open` starting it.
    #[error(
        "instance_id changes from {expected} to {found} without a file_open (lines of another \
         run spliced in?)"
    )]
    InstanceSwitch {
        /// The current instance.
        expected: String,
        /// The line's instance.
        found: String,
    },
    /// An instance that reappears after another one.
    #[error("instance_id {instance} reappears after another run")]
    InstanceReused {
        /// The instance.
        instance: String,
    },
    /// A line of a collector's export that is neither an RFC 5424 message nor a JSON line.
    #[error("neither an RFC 5424 syslog message nor a JSON line")]
    NotSyslog,
    /// A line of the file trail missing from a sink's copy where no `loss` line declares it.
    #[error(
        "the copy lacks {file}:{line} ({}) here and no loss line declares it: that line was \
         removed, edited or reordered in the copy",
        seq.map_or("no seq".to_owned(), |seq| format!("seq {seq}"))
    )]
    CopyLacks {
        /// The trail's file.
        file: String,
        /// Its line.
        line: u64,
        /// Its seq.
        seq: Option<u64>,
    },
    /// A line of a sink's copy that is not byte for byte the trail's line with its seq.
    #[error("differs from {file}:{line}, the file's line with the same seq: edited in the copy")]
    CopyDiffers {
        /// The trail's file.
        file: String,
        /// Its line.
        line: u64,
    },
    /// A line of a sink's copy found nowhere in the file trail.
    #[error("not in the audit directory (from another trail, or edited)")]
    NotInTrail,
    /// The query index beside a file does not describe it.
    #[error("query index does not match the file: {why} (delete its .idx and .bits)")]
    IndexMismatch {
        /// What differs.
        why: String,
    },
}

fn or_null(name: &Option<String>) -> &str {
    name.as_deref().unwrap_or("null")
}

fn chain_message(expected: &str, found: &str, previous: &Previous) -> String {
    match previous {
        Previous::Genesis => format!(
            "chain broken: the first line of the directory has prev {found}, expected the \
             genesis hash {expected}"
        ),
        Previous::Line(line) => format!(
            "chain broken: prev is {found}, but line {line} hashes to {expected} (line {line} \
             was altered, or lines were removed or reordered here)"
        ),
        Previous::Seal(at) => format!(
            "chain broken: the seal's prev is {found}, but the seal before it ({}:{}) hashes to \
             {expected} (a seal was altered or removed, or files were reordered)",
            at.0, at.1
        ),
        Previous::FileEnd { file, line } => format!(
            "chain broken between files: prev is {found}, but the last complete line of {file} \
             (line {line}) hashes to {expected} (it was altered, or lines were removed)"
        ),
    }
}

fn seal_message(declared: u64, found: u64, first: &Option<(String, u64)>) -> String {
    let lines = match first {
        Some((file, line)) => format!("the {found} lines from {file}:{line} to this seal"),
        None => "the lines since the seal before it (none)".to_owned(),
    };
    if declared == found {
        format!(
            "seal broken: {lines} do not hash to its hash (one of them was altered, or lines \
             were reordered or replaced)"
        )
    } else {
        format!(
            "seal broken: it covers {declared} lines, but {lines} are {found} (lines were \
             removed or inserted)"
        )
    }
}

fn torn_message(next: &Option<String>) -> String {
    match next {
        Some(next) => format!(
            "torn line (no newline at the end of the file), but the next file {next} does not \
             record recovering it (recovered_torn_line is false)"
        ),
        None => "torn line (no newline at the end of the last file): a write in progress, a \
                 crash not yet recovered by a restart, or a truncated file"
            .to_owned(),
    }
}
