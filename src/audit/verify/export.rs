//! `audit verify --syslog-export FILE [--dir DIR]`: checks a sink's copy of the trail as a
//! collector exported it (`docs/audit-schema.md` §6a) — one message a line, an RFC 5424 header
//! then the audit line (rsyslog's `RSYSLOG_SyslogProtocol23Format`), or plain JSON lines (a
//! stdout sink's copy).
//!
//! The header is stripped and the copy checked as the file is, with the chain code of
//! [`crate::audit::chain`]: every seal must match the lines between it and the seal before it
//! and chain to that seal, and `seq` may skip only numbers that the copy's own `loss` lines
//! (unsequenced, §6a) or the file's `loss` records declare. A seal over a declared loss, or
//! over a line cut to the sink's `max_message_bytes` (`sink_truncated`), cannot match: it is
//! counted as skipped, and the chain resumes from it. Lines before the copy's first seal are
//! not anchored (counted). With `--dir`, the directory is verified first, then every line of
//! the copy must be the file's line with its `seq` (lines without one: the file's next line),
//! byte for byte, and a file line between two lines of the copy may be missing only inside a
//! `loss` line's declared range.
//!
//! A line repeated byte for byte within the last [`REPEAT_WINDOW`] lines is a delivery made
//! twice (a RELP sink sends again what the collector had not acknowledged when a connection
//! broke): counted as `repeated`, and otherwise ignored.

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{BufReader, ErrorKind};
use std::path::Path;

use serde_json::Value;

use super::lines::{clip, read_line, text, unreadable, Fields, ReadError};
use super::{list_files, verify_dir, Problem, VerifyError};
use super::{Previous, MAX_LINE_BYTES};
use crate::audit::chain::{self, Hash, Segment};
use crate::audit::sinks::line_seq;
use crate::util::hex::hex;

/// What a sound copy holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Lines of the export.
    pub lines: u64,
    /// Sequenced records among them.
    pub records: u64,
    /// Seals (`seal` lines and `file_open`s).
    pub seals: u64,
    /// Seals whose hash and `prev` were recomputed and match.
    pub(crate) seals_checked: u64,
    /// Seals not checkable: the first of the copy, or over a declared loss or a cut line.
    pub(crate) seals_skipped: u64,
    /// The copy's own `loss` lines, and the lines they declare missed.
    pub loss_lines: u64,
    /// Lines those declare.
    pub(crate) declared_lost: u64,
    /// Lines cut to the sink's `max_message_bytes`.
    pub truncated: u64,
    /// Lines after the last seal (not sealed yet when the copy was exported).
    pub unsealed_lines: u64,
    /// Lines delivered a second time (the same bytes as a line among the last
    /// [`REPEAT_WINDOW`]), not counted above.
    pub repeated: u64,
    /// With `--dir`: lines found identical in the trail.
    pub compared: Option<u64>,
}

/// How far back a repeated line is recognised: the largest `relp_window`, since a RELP sink
/// sends again at most that many of its latest lines.
pub(crate) const REPEAT_WINDOW: usize = 65_536;

/// The last lines of the copy, by a keyed hash (random keys: a line cannot be made to pass as
/// a repetition of another).
#[derive(Default)]
struct Recent {
    hasher: RandomState,
    order: VecDeque<u64>,
    seen: HashSet<u64>,
}

impl Recent {
    /// True when `line` repeats one of the last lines; otherwise remembers it.
    fn repeats(&mut self, line: &[u8]) -> bool {
        let hash = self.hasher.hash_one(line);
        if self.seen.contains(&hash) {
            return true;
        }
        if self.order.len() == REPEAT_WINDOW {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        self.order.push_back(hash);
        self.seen.insert(hash);
        false
    }
}

impl std::fmt::Display for ExportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sound copy: {} lines, {} records, {} seals ({} checked, {} over a declared loss, a \
             cut line or the copy's start), {} loss lines declaring {} lines, {} cut lines, {} \
             unsealed lines",
            self.lines,
            self.records,
            self.seals,
            self.seals_checked,
            self.seals_skipped,
            self.loss_lines,
            self.declared_lost,
            self.truncated,
            self.unsealed_lines
        )?;
        if self.repeated > 0 {
            write!(f, "; {} lines delivered twice (ignored)", self.repeated)?;
        }
        if let Some(compared) = self.compared {
            write!(f, "; {compared} lines identical to the file trail's")?;
        }
        Ok(())
    }
}

/// The audit line inside one line of a collector's export: after the RFC 5424 header
/// (`<PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`, with an optional BOM before
/// MSG), or the line itself when it is already JSON. `None` for anything else.
pub fn strip_header(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if line.first() == Some(&b'{') {
        return Some(line);
    }
    let rest = line.strip_prefix(b"<")?;
    let pri = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let rest = rest.get(pri..).filter(|_| (1..=3).contains(&pri))?.strip_prefix(b">")?;
    let version = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut rest = rest.get(version..).filter(|_| (1..=2).contains(&version))?;
    // TIMESTAMP HOSTNAME APP-NAME PROCID MSGID: each a space, then printable ASCII.
    for _ in 0..5 {
        rest = rest.strip_prefix(b" ")?;
        let field = rest.iter().take_while(|b| b.is_ascii_graphic()).count();
        rest = rest.get(field..).filter(|_| field > 0)?;
    }
    rest = rest.strip_prefix(b" ")?;
    rest = match rest.first()? {
        b'-' => &rest[1..],
        b'[' => skip_structured_data(rest)?,
        _ => return None,
    };
    let msg = match rest.strip_prefix(b" ") {
        Some(msg) => msg,
        None if rest.is_empty() => rest,
        None => return None,
    };
    let msg = msg.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(msg);
    // rsyslog's %msg% may keep the space after SD.
    let blanks = msg.iter().take_while(|b| **b == b' ').count();
    Some(&msg[blanks..])
}

/// What follows one or more SD-ELEMENTs (`[id name="value"…]`, `\"`, `\\` and `\]` escaped
/// in values).
fn skip_structured_data(mut rest: &[u8]) -> Option<&[u8]> {
    while rest.first() == Some(&b'[') {
        let (mut at, mut quoted) = (1, false);
        loop {
            match *rest.get(at)? {
                b'\\' if quoted => at += 1,
                b'"' => quoted = !quoted,
                b']' if !quoted => break,
                _ => {}
            }
            at += 1;
        }
        rest = &rest[at + 1..];
    }
    Some(rest)
}

/// A declared loss of the copy: its `seq` range (`None` when only unsequenced lines were
/// missed) and how many lines.
#[derive(Debug, Clone, Copy)]
struct Declared {
    range: Option<(u64, u64)>,
    lines: u64,
}

/// Losses declared since the last line they may apply to.
#[derive(Debug, Default)]
struct Allowance(Vec<Declared>);

impl Allowance {
    fn covers(&self, seq: u64) -> bool {
        self.0.iter().any(|d| d.range.is_some_and(|(first, last)| (first..=last).contains(&seq)))
    }

    fn lines(&self) -> u64 {
        self.0.iter().map(|d| d.lines).sum()
    }
}

/// The copy's `loss` line (no `seq`): what it declares, or why it is not one.
fn declared(fields: &Fields) -> Result<Declared, Problem> {
    let bad = |why: &str| Problem::BadLoss { why: why.to_owned() };
    let lost = fields.get("lost").and_then(Value::as_object).ok_or_else(|| bad("no lost"))?;
    let lines = lost.get("lines").and_then(Value::as_u64).ok_or_else(|| bad("no lost.lines"))?;
    let range = match (lost.get("first_seq"), lost.get("last_seq")) {
        (Some(Value::Null), Some(Value::Null)) => None,
        (Some(first), Some(last)) => match (first.as_u64(), last.as_u64()) {
            (Some(first), Some(last)) if first <= last => Some((first, last)),
            _ => return Err(bad("first_seq..last_seq is not a range")),
        },
        _ => return Err(bad("no lost.first_seq or lost.last_seq")),
    };
    Ok(Declared { range, lines })
}

/// Verifies the export `export` of a sink's copy, against the trail in `dir` when given.
pub fn verify_export(export: &Path, dir: Option<&Path>) -> Result<ExportReport, VerifyError> {
    let name = export.display().to_string();
    let at = |line: Option<u64>, problem| VerifyError { file: Some(name.clone()), line, problem };
    let mut trail = match dir {
        Some(dir) => {
            verify_dir(dir).map_err(|error| VerifyError {
                file: Some(dir.join(error.file.as_deref().unwrap_or("")).display().to_string()),
                ..error
            })?;
            Some(Trail::open(dir)?)
        }
        None => None,
    };
    let file = File::open(export).map_err(|error| at(None, unreadable(error)))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut copy = SinkCopy::default();
    let mut buffer = Vec::new();
    let mut number = 0;
    loop {
        let read = read_line(&mut reader, &mut buffer)
            .map_err(|error| at(Some(number + 1), error.problem()))?;
        if read.is_none() {
            break;
        }
        number += 1;
        if buffer.iter().all(u8::is_ascii_whitespace) {
            continue; // a blank line (a collector's trailing newline)
        }
        let line = strip_header(&buffer).ok_or_else(|| at(Some(number), Problem::NotSyslog))?;
        copy.line(&name, number, line, trail.as_mut())
            .map_err(|problem| at(Some(number), problem))?;
    }
    copy.report.unsealed_lines = copy.segment.as_ref().map_or(0, Segment::lines);
    copy.report.compared = trail.map(|trail| trail.compared);
    Ok(copy.report)
}

/// The copy as read so far.
#[derive(Default)]
struct SinkCopy {
    report: ExportReport,
    /// The last seal's hash and line; `None` before the first.
    head: Option<(Hash, u64)>,
    /// The lines since it, and the first of them.
    segment: Option<Segment>,
    first: Option<u64>,
    /// A declared loss or a cut line in the segment: its seal cannot match.
    tainted: bool,
    /// The next `seq` due (unknown before the first record).
    next_seq: Option<u64>,
    /// Losses declared since the last record (for `seq`) and since the last line (for the
    /// trail).
    for_seq: Allowance,
    for_trail: Allowance,
    recent: Recent,
}

impl SinkCopy {
    fn line(
        &mut self,
        name: &str,
        number: u64,
        line: &[u8],
        trail: Option<&mut Trail>,
    ) -> Result<(), Problem> {
        if self.recent.repeats(line) {
            self.report.repeated += 1;
            return Ok(());
        }
        let fields: Fields = match serde_json::from_slice(line) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return Err(Problem::NotJson { error: "not an object".to_owned() }),
            Err(error) => return Err(Problem::NotJson { error: error.to_string() }),
        };
        self.report.lines += 1;
        let kind = text(&fields, "kind").unwrap_or_default();
        let action = text(&fields, "action").unwrap_or("command");
        let seq = fields.get("seq").and_then(Value::as_u64);
        if kind == "system" && action == "loss" && seq.is_none() {
            let loss = declared(&fields)?;
            self.report.loss_lines += 1;
            self.report.declared_lost += loss.lines;
            self.for_seq.0.push(loss);
            self.for_trail.0.push(loss);
            self.tainted = true;
            return Ok(());
        }
        let cut = fields.get("sink_truncated") == Some(&Value::Bool(true));
        if let Some(trail) = trail {
            trail.find(line, seq, cut, &self.for_trail)?;
            self.for_trail.0.clear();
        }
        if let Some(seq) = seq {
            self.sequenced(&fields, seq, kind, action)?;
        }
        if cut {
            self.report.truncated += 1;
            self.tainted = true;
        }
        match chain::seal_alg(line) {
            Some(alg) => self.seal(name, number, line, &fields, alg),
            None => {
                if let Some(segment) = &mut self.segment {
                    segment.update(line, 0);
                    segment.update(b"\n", 1);
                    self.first.get_or_insert(number);
                }
                Ok(())
            }
        }
    }

    /// A sequenced line: its place in its run's sequence, gaps only where declared.
    fn sequenced(
        &mut self,
        fields: &Fields,
        seq: u64,
        kind: &str,
        action: &str,
    ) -> Result<(), Problem> {
        self.report.records += 1;
        let starts_run = seq == 1 && kind == "system" && action == "start";
        let file_loss = if kind == "system" && action == "loss" {
            declared(fields).ok().and_then(|loss| loss.range)
        } else {
            None
        };
        match self.next_seq {
            Some(expected) if seq < expected && !starts_run => {
                return Err(Problem::SeqBackwards { expected, found: seq });
            }
            Some(expected) if seq > expected && !starts_run => {
                let covered = |missing: u64| {
                    self.for_seq.covers(missing)
                        || file_loss.is_some_and(|(first, last)| (first..=last).contains(&missing))
                };
                if let Some(missing) = (expected..seq).find(|missing| !covered(*missing)) {
                    return Err(Problem::SeqGap { expected: missing, found: seq });
                }
            }
            _ => {}
        }
        self.for_seq.0.clear();
        self.next_seq = Some(seq.saturating_add(1));
        Ok(())
    }

    /// A seal: checked against the lines since the seal before it, unless a declared loss or a
    /// cut line is among them, or the copy began after that seal.
    fn seal(
        &mut self,
        name: &str,
        number: u64,
        line: &[u8],
        fields: &Fields,
        alg: chain::ChainAlg,
    ) -> Result<(), Problem> {
        self.report.seals += 1;
        let chain = fields.get("chain").and_then(Value::as_object);
        let field = |key: &str| chain.and_then(|chain| chain.get(key));
        let prev = field("prev").and_then(Value::as_str).unwrap_or_default();
        let hash = field("hash").and_then(Value::as_str).unwrap_or_default();
        let lines = field("lines").and_then(Value::as_u64).unwrap_or_default();
        match (self.head, self.segment.take()) {
            (Some((head, head_line)), Some(segment)) if !self.tainted => {
                if prev != hex(&head) {
                    return Err(Problem::ChainMismatch {
                        expected: hex(&head),
                        found: clip(prev),
                        previous: Previous::Seal(Box::new((name.to_owned(), head_line))),
                    });
                }
                if !segment.is_sealed_by(lines, hash) {
                    return Err(Problem::SealMismatch {
                        declared: lines,
                        found: segment.lines(),
                        first: self.first.map(|first| (name.to_owned(), first)),
                    });
                }
                self.report.seals_checked += 1;
            }
            _ => self.report.seals_skipped += 1,
        }
        let head = alg.hash(line);
        self.head = Some((head, number));
        self.segment = Some(Segment::new(alg, head));
        self.first = None;
        self.tainted = false;
        Ok(())
    }
}

/// The file trail, read forward line by line as the copy is compared with it.
struct Trail {
    dir: std::path::PathBuf,
    files: Vec<String>,
    /// The file being read (`files.len()` at the end) and its reader.
    index: usize,
    reader: Option<BufReader<File>>,
    /// The current line and its number in its file.
    number: u64,
    buffer: Vec<u8>,
    /// The copy's first line was found: lines are then read on from it.
    aligned: bool,
    compared: u64,
}

impl Trail {
    fn open(dir: &Path) -> Result<Self, VerifyError> {
        let (files, _) = list_files(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            files,
            index: 0,
            reader: None,
            number: 0,
            buffer: Vec::new(),
            aligned: false,
            compared: 0,
        })
    }

    /// Moves to the next complete line of the trail; false at its end.
    fn advance(&mut self) -> Result<bool, Problem> {
        while self.index < self.files.len() {
            let reader = match &mut self.reader {
                Some(reader) => reader,
                None => {
                    let file = File::open(self.dir.join(&self.files[self.index]))
                        .map_err(|error| Problem::Io(format!("cannot read the trail: {error}")))?;
                    self.number = 0;
                    self.reader.insert(BufReader::with_capacity(1 << 16, file))
                }
            };
            match read_line(reader, &mut self.buffer) {
                Ok(Some(true)) => {
                    self.number += 1;
                    return Ok(true);
                }
                // The end of the file, or a torn line (in no segment, never sent).
                Ok(_) => {
                    self.reader = None;
                    self.index += 1;
                }
                Err(ReadError::Io(error)) if error.kind() == ErrorKind::Interrupted => {}
                Err(ReadError::Io(error)) => {
                    return Err(Problem::Io(format!("cannot read the trail: {error}")))
                }
                Err(ReadError::TooLong) => {
                    return Err(Problem::LineTooLong { max: MAX_LINE_BYTES });
                }
            }
        }
        Ok(false)
    }

    /// Finds the copy's `line` in the trail: the first is looked for from the trail's start;
    /// each next one must follow, the lines skipped to reach it within `allowance`.
    fn find(
        &mut self,
        line: &[u8],
        seq: Option<u64>,
        cut: bool,
        allowance: &Allowance,
    ) -> Result<(), Problem> {
        if !self.aligned {
            while self.advance()? {
                if self.buffer == line {
                    self.aligned = true;
                    self.compared += 1;
                    return Ok(());
                }
            }
            return Err(Problem::NotInTrail);
        }
        let mut budget = allowance.lines();
        while self.advance()? {
            let found = line_seq(&self.buffer);
            let same = match seq {
                Some(seq) => found == Some(seq),
                None => self.buffer == line,
            };
            if same {
                if !cut && self.buffer != line {
                    let file = self.files[self.index].clone();
                    return Err(Problem::CopyDiffers { file, line: self.number });
                }
                self.compared += u64::from(!cut);
                return Ok(());
            }
            let declared = budget > 0 && found.is_none_or(|found| allowance.covers(found));
            if !declared {
                let file = self.files[self.index].clone();
                return Err(Problem::CopyLacks { file, line: self.number, seq: found });
            }
            budget -= 1;
        }
        Err(Problem::NotInTrail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_stripped_whatever_their_structured_data() {
        let json = br#"{"time":"t","seq":1}"#;
        let with = |header: &[u8]| [header, &json[..]].concat();
        for header in [
            &b"<134>1 2026-12-06T06:01:32.123456Z host app 42 command - "[..],
            b"<134>1 2026-12-06T06:01:32Z host app 42 command - \xEF\xBB\xBF",
            b"<134>1 - - - - - [a b=\"x] \\\"y\"][c@1] ",
            b"<5>1 t h a p m -  ",
        ] {
            assert_eq!(strip_header(&with(header)), Some(&json[..]), "{header:?}");
        }
        assert_eq!(strip_header(json), Some(&json[..]), "a stdout sink's plain line");
        assert_eq!(strip_header(b"Dec  6 06:01:32 host app: {}"), None);
        assert_eq!(strip_header(b"<134>1 t h a p {}"), None, "a field is missing");
    }

    #[test]
    fn a_loss_line_declares_a_range_or_only_unsequenced_lines() {
        let fields = |lost: Value| serde_json::json!({ "lost": lost }).as_object().unwrap().clone();
        let loss = declared(&fields(serde_json::json!({"first_seq":3,"last_seq":5,"lines":4})));
        assert_eq!(loss.map(|d| (d.range, d.lines)), Ok((Some((3, 5)), 4)));
        let loss =
            declared(&fields(serde_json::json!({"first_seq":null,"last_seq":null,"lines":1})));
        assert_eq!(loss.map(|d| (d.range, d.lines)), Ok((None, 1)));
        assert!(
            declared(&fields(serde_json::json!({"first_seq":5,"last_seq":3,"lines":1}))).is_err()
        );
    }
}
