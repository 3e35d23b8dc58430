//! The chain checks of `audit verify`: a `/2` seal against the lines since the seal before it
//! and against that seal's hash; a `/1` line against the SHA-256 of the line before it, across
//! files; and checkpoints' HMACs, when the key is given.

use serde_json::Value;

use super::lines::{bad, clip, text, Fields};
use super::{Line, Previous, Problem, Verifier, VerifyError};
use crate::audit::chain::{checkpoint_hmac, checkpoint_key_id, ChainAlg, Segment};
use crate::audit::schema::SCHEMA_V1;
use crate::util::hex::{hex, hex_sha256, is_hex_hash, parse_hash};

impl Verifier<'_> {
    /// A seal (a `seal` line, or the `file_open` that begins a file): its `prev` is the hash of
    /// the seal before it, its `hash` that of the lines since then; with `pruned` (the first
    /// file, whose predecessors retention deleted) neither can be checked.
    pub(super) fn seal(&mut self, line: Line<'_>, pruned: bool) -> Result<(), VerifyError> {
        let Line { index, number, bytes, fields } = line;
        let at = self.errors_at(index, number);
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
                let head = parse_hash(prev).unwrap_or_default();
                (Segment::new(alg, head), None)
            });
            if !segment.is_sealed_by(lines, hash) {
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
        self.last_hash = hex(&head);
        self.head_at = Some((index, number));
        self.segment = Some((Segment::new(alg, head), None));
        Ok(())
    }

    /// A line of a `redis-audit/1` file: each carries the schema, its instance and the
    /// SHA-256 of the line before it.
    pub(super) fn line_v1(&mut self, line: Line<'_>) -> Result<(), VerifyError> {
        let Line { index, number, bytes, fields } = line;
        let at = self.errors_at(index, number);
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
                self.marker(line, action, instance)?;
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
    pub(super) fn file_open(
        &mut self,
        index: usize,
        fields: &Fields,
        prev: &str,
    ) -> Result<(), VerifyError> {
        let at = self.errors_at(index, 1);
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

    /// A checkpoint (a `/1` `checkpoint` line, a `/2` seal's `chain`): `hmac` =
    /// HMAC-SHA256(key, `vouched`), the hex hash it vouches for (in `/1` the chain head, its
    /// `prev`; in `/2` the seal's `hash`).
    pub(super) fn checkpoint(&mut self, fields: &Fields, vouched: &str) -> Result<(), Problem> {
        self.report.checkpoints += 1;
        let Some(key) = &self.checkpoint_key else { return Ok(()) };
        let bad = |why: String| Problem::BadCheckpoint { why };
        let key_id = checkpoint_key_id(key);
        match text(fields, "key_id") {
            Some(found) if found == key_id => {}
            found => {
                return Err(bad(format!("made with key {found:?}, not with this one ({key_id})")))
            }
        }
        let expected = checkpoint_hmac(key, vouched);
        if text(fields, "hmac") != Some(expected.as_str()) {
            return Err(bad(
                "its hmac does not match the chain head: the lines before it were rewritten".into(),
            ));
        }
        self.report.checkpoints_verified += 1;
        Ok(())
    }
}
