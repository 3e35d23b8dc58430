//! The per-line checks of `audit verify`: each line parsed and dispatched by schema; a `/2`
//! line's place in its file (the `file_open` first), its file header (`prev_file`, torn-line
//! recovery, retention), its run (`instance_id`, `start`, `stop`) and its `seq` with the
//! declared losses. The chain itself is checked in [`super::seals`].

use serde_json::Value;

use super::lines::{bad, clip, text, Fields};
use super::{Line, Problem, Run, Verifier, VerifyError};
use crate::audit::chain::{ChainAlg, Segment};
use crate::audit::files::ACTIVE_FILE;
use crate::audit::schema::{SCHEMA, SCHEMA_V1};

impl Verifier<'_> {
    /// Line `number` of file `index` (its bytes without the `\n`): parsed, then checked by the
    /// rules of its file's schema.
    pub(super) fn line(
        &mut self,
        index: usize,
        number: u64,
        bytes: &[u8],
    ) -> Result<(), VerifyError> {
        let at = self.errors_at(index, number);
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
        let line = Line { index, number, bytes, fields: &fields };
        if self.file_schema == SCHEMA_V1 {
            self.line_v1(line)?;
        } else {
            self.line_v2(line)?;
        }
        self.last_line = Some((index, number));
        self.report.lines += 1;
        Ok(())
    }

    /// A line of a `redis-audit/2` file: the instance and schema are its `file_open`'s, the
    /// chain is in its seals.
    pub(super) fn line_v2(&mut self, line: Line<'_>) -> Result<(), VerifyError> {
        let Line { index, number, bytes, fields } = line;
        let at = self.errors_at(index, number);
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
            self.seal(line, pruned)?;
        } else if is_open {
            return Err(at(Problem::FileOpenNotFirst));
        }
        let instance = std::mem::take(&mut self.file_instance);
        let result = match fields.get("seq") {
            None if marker && action == "seal" => {
                self.final_seal = self.run.as_ref().is_some_and(|run| run.stopped);
                self.seal(line, false)
            }
            None if marker => self.marker(line, action, &instance),
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
                let head = crate::util::hex::parse_hash(&self.last_hash).unwrap_or_default();
                (Segment::new(ChainAlg::default(), head), None)
            });
            segment.update(bytes, 0);
            segment.update(b"\n", 1);
            start.get_or_insert((index, number));
        }
        Ok(())
    }

    /// The header of file `index`: torn-line recovery and `prev_file`. True when the file
    /// before it is gone, deleted by retention (which a `file_delete` line must confirm): the
    /// chain then starts at this header.
    pub(super) fn file_header(
        &mut self,
        index: usize,
        fields: &Fields,
    ) -> Result<bool, VerifyError> {
        let at = self.errors_at(index, 1);
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

    /// A `file_open` or `file_delete` line: the run it belongs to, the deletion it records.
    pub(super) fn marker(
        &mut self,
        line: Line<'_>,
        action: &str,
        instance: &str,
    ) -> Result<(), VerifyError> {
        let Line { index, number, fields, .. } = line;
        let at = self.errors_at(index, number);
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

    pub(super) fn same_run(&self, instance: &str) -> Result<&Run, Problem> {
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
    pub(super) fn sequenced(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
