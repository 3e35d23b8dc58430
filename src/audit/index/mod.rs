//! The index of one rotated audit file: its first and last command times, how many command
//! records it holds, and counts and bitmaps per value of the fields queries filter on. Built
//! as the writer writes the file (or from the file), kept beside it ([`sidecar`]:
//! rotated files never change, so it is built once).

pub mod sidecar;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::util::hex::hex_sha256;
use sidecar::FileFacts;

/// What a query needs to know of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Layout of this index ([`INDEX_VERSION`]); an older one is rebuilt.
    #[serde(default)]
    pub version: u32,
    /// `time` of its earliest command record (RFC 3339, µs, UTC: compares as text).
    pub first_time: String,
    /// `time` of its latest command record.
    pub last_time: String,
    /// Command records.
    pub commands: u64,
    /// Command records per value of each filterable field (`user`, `ip`, `db`, `command`,
    /// `class`, `node`), the value as its JSON text; a field with more than
    /// [`MAX_FACET_VALUES`] values is left out (queries on it read the file).
    #[serde(default)]
    pub facets: BTreeMap<String, BTreeMap<String, u64>>,
    /// The file it indexes, as it was indexed (checked before the index is used).
    #[serde(default)]
    pub file: FileFacts,
    /// Hex SHA-256 of the bitmaps (`<file>.bits`) made with it.
    #[serde(default)]
    pub(crate) bits_sha256: String,
    /// Hex SHA-256 of this summary's JSON without the seal ([`sidecar::seal`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub seal: String,
}

/// The current index layout (3: tied to its file and sealed).
pub(crate) const INDEX_VERSION: u32 = 3;

/// Most distinct values one field's counts keep.
pub(crate) const MAX_FACET_VALUES: usize = 10_000;

/// The filterable fields: name, and the text that precedes the value in a command line
/// (each occurs once in a command record, so the first occurrence is the field).
pub(crate) const FACETS: [(&str, &[u8]); 6] = [
    ("user", b"\"user\":"),
    ("ip", b"\"ip\":"),
    ("db", b"\"db\":"),
    ("command", b"\"command\":{\"name\":"),
    ("class", b"\"class\":"),
    ("node", b"\"node\":"),
];

/// Where each field is in [`FACETS`].
pub(crate) mod facet {
    /// `user`.
    pub(crate) const USER: usize = 0;
    /// `client.ip`.
    pub(crate) const IP: usize = 1;
    /// `db`.
    pub(crate) const DB: usize = 2;
    /// `command.name`.
    pub(crate) const COMMAND: usize = 3;
    /// `command.class`.
    pub(crate) const CLASS: usize = 4;
    /// `node`.
    pub(crate) const NODE: usize = 5;
}

/// The JSON text of the value after `prefix` in `line`: a string with its quotes, or a
/// number.
pub(crate) fn field_text<'a>(
    line: &'a [u8],
    prefix: &memchr::memmem::Finder<'_>,
) -> Option<&'a [u8]> {
    let at = prefix.find(line)? + prefix.needle().len();
    value_at(line, at)
}

/// The JSON text of the value that starts at `at` in `line` (see [`field_text`]).
pub(crate) fn value_at(line: &[u8], at: usize) -> Option<&[u8]> {
    let rest = line.get(at..)?;
    if rest.first() == Some(&b'"') {
        // A JSON string: up to the first quote not escaped.
        let mut escaped = false;
        for (i, &b) in rest.iter().enumerate().skip(1) {
            match b {
                b'\\' if !escaped => escaped = true,
                b'"' if !escaped => return Some(&rest[..=i]),
                _ => escaped = false,
            }
        }
        None
    } else {
        let end = rest.iter().position(|b| matches!(b, b',' | b'}'))?;
        Some(&rest[..end])
    }
}

/// One value of one field while a file is indexed: its count, and its bitmap while the field
/// keeps bitmaps.
#[derive(Debug, Default)]
struct FacetValue {
    count: u64,
    bits: Vec<u64>,
}

/// One field's values while a file is indexed. Counts stop (the field is left out of the
/// summary) past [`MAX_FACET_VALUES`] values, bitmaps past [`MAX_BITMAP_VALUES`].
#[derive(Debug, Default)]
struct Facet {
    /// Each value's place in `values`.
    places: FxHashMap<Box<[u8]>, usize>,
    values: Vec<(Box<[u8]>, FacetValue)>,
    /// The place of the value added last: consecutive lines often share a value (one
    /// client's commands, one user), and comparing it is cheaper than hashing it.
    last: usize,
    counting: bool,
    mapping: bool,
}

impl Facet {
    fn new() -> Self {
        Self { counting: true, mapping: true, ..Self::default() }
    }

    fn add(&mut self, value: &[u8], rank: usize) {
        let place = match self.values.get(self.last) {
            Some((last, _)) if **last == *value => self.last,
            _ => match self.places.get(value) {
                Some(&place) => place,
                None if std::str::from_utf8(value).is_err() => return,
                None => {
                    let distinct = self.values.len();
                    self.mapping &= distinct < MAX_BITMAP_VALUES;
                    self.counting &= distinct < MAX_FACET_VALUES;
                    if !self.counting {
                        return;
                    }
                    self.places.insert(value.into(), distinct);
                    self.values.push((value.into(), FacetValue::default()));
                    distinct
                }
            },
        };
        self.last = place;
        let entry = &mut self.values[place].1;
        entry.count += 1;
        if self.mapping {
            if entry.bits.len() <= rank / 64 {
                entry.bits.resize(rank / 64 + 1, 0);
            }
            entry.bits[rank / 64] |= 1 << (rank % 64);
        }
    }
}

/// Where each of a command line's [`FACETS`] values starts, in [`FACETS`] order: known to
/// whoever rendered the line, so the writer indexes it without searching it.
pub(crate) type FacetStarts = [usize; FACETS.len()];

/// The start a command line gives its node: none in the line, the file's (`file_open`).
pub(crate) const NODE_OF_FILE: usize = usize::MAX;

/// A file's index while its lines go by: fed by the writer as it writes the active file, or
/// by [`build`] from a file that has no index.
#[derive(Debug)]
pub struct IndexBuilder {
    summary: Summary,
    facets: Vec<Facet>,
    command_kind: memchr::memmem::Finder<'static>,
    finders: Vec<memchr::memmem::Finder<'static>>,
    /// The node of every command line of a `redis-audit/2` file (its `file_open` names it,
    /// the lines do not), as JSON text.
    file_node: Option<Box<[u8]>>,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        Self {
            summary: Summary {
                version: INDEX_VERSION,
                first_time: String::new(),
                last_time: String::new(),
                commands: 0,
                facets: BTreeMap::new(),
                file: FileFacts::default(),
                bits_sha256: String::new(),
                seal: String::new(),
            },
            facets: (0..FACETS.len()).map(|_| Facet::new()).collect(),
            // Built once: a finder per search, not per line.
            command_kind: memchr::memmem::Finder::new(b"\"kind\":\"command\""),
            finders: FACETS
                .iter()
                .map(|(_, prefix)| memchr::memmem::Finder::new(*prefix))
                .collect(),
            file_node: None,
        }
    }
}

impl IndexBuilder {
    /// The index of a `redis-audit/2` file written on `node`.
    pub(crate) fn for_node(node: &str) -> Self {
        let node = serde_json::Value::String(node.to_owned()).to_string();
        Self { file_node: Some(node.into_bytes().into()), ..Self::default() }
    }

    /// Takes one line of the file, of any kind, searching it for its facets.
    pub(crate) fn add_line(&mut self, line: &[u8]) {
        if self.command_kind.find(line).is_none() {
            if line.starts_with(crate::audit::chain::V2_FILE_PREFIX) {
                self.file_node = field_text(line, &self.finders[facet::NODE]).map(Into::into);
            }
            return;
        }
        let Some(rank) = self.add_time(line) else { return };
        for (index, (facet, finder)) in self.facets.iter_mut().zip(&self.finders).enumerate() {
            if facet.counting {
                let value = match field_text(line, finder) {
                    None if index == facet::NODE => self.file_node.as_deref(),
                    value => value,
                };
                if let Some(value) = value {
                    facet.add(value, rank);
                }
            }
        }
    }

    /// Takes one command line whose facet values start at `starts` (the node's at
    /// [`NODE_OF_FILE`]: the file's).
    pub(crate) fn add_command(&mut self, line: &[u8], starts: &FacetStarts) {
        let Some(rank) = self.add_time(line) else { return };
        for (facet, &start) in self.facets.iter_mut().zip(starts) {
            if facet.counting {
                let value = match start {
                    NODE_OF_FILE => self.file_node.as_deref(),
                    start => value_at(line, start),
                };
                if let Some(value) = value {
                    facet.add(value, rank);
                }
            }
        }
    }

    /// Counts a command line and its time; its rank among the file's command lines.
    fn add_time(&mut self, line: &[u8]) -> Option<usize> {
        let time = line_time(line)?;
        let summary = &mut self.summary;
        if summary.commands == 0 || time < summary.first_time.as_str() {
            time.clone_into(&mut summary.first_time);
        }
        if summary.commands == 0 || time > summary.last_time.as_str() {
            time.clone_into(&mut summary.last_time);
        }
        summary.commands += 1;
        Some(summary.commands as usize - 1)
    }

    /// The summary, sealed for its sidecar, and the bitmaps of a whole file whose lines were
    /// all taken; `file` is the file's size and last line.
    pub(crate) fn finish_file(self, file: FileFacts) -> (Summary, Bitmaps) {
        let (mut summary, bitmaps) = self.finish();
        sidecar::seal(&mut summary, &bitmaps, file);
        (summary, bitmaps)
    }

    /// The summary and bitmaps of the lines taken.
    pub fn finish(self) -> (Summary, Bitmaps) {
        let Self { mut summary, facets, .. } = self;
        // Every bitmap as long as the file's records, so intersections line up.
        let words = (summary.commands as usize).div_ceil(64);
        let mut fields = BTreeMap::new();
        for (facet, (name, _)) in facets.into_iter().zip(FACETS) {
            let mut counts = BTreeMap::new();
            let mut bitmaps = BTreeMap::new();
            for (value, FacetValue { count, mut bits }) in facet.values {
                // Only UTF-8 values were taken.
                let value = String::from_utf8(value.into_vec()).unwrap_or_default();
                if facet.mapping {
                    bits.resize(words, 0);
                    bitmaps.insert(value.clone(), bits);
                }
                counts.insert(value, count);
            }
            if facet.counting && !counts.is_empty() {
                summary.facets.insert(name.to_owned(), counts);
            }
            if facet.mapping && !bitmaps.is_empty() {
                fields.insert(name.to_owned(), bitmaps);
            }
        }
        (summary, Bitmaps { fields })
    }
}

/// Reads a file once: its summary (command count, time range, counts per field value, the
/// file's facts, sealed) and its bitmaps. Times are taken from the fixed place the writer puts
/// them.
pub fn build(file: &Path) -> io::Result<(Summary, Bitmaps)> {
    /// Read this much at a time; lines are taken from it in place.
    const CHUNK_BYTES: usize = 4 << 20;
    let mut reader = File::open(file)?;
    let mut index = IndexBuilder::default();
    let mut chunk = vec![0u8; CHUNK_BYTES];
    // Bytes at the start of `chunk` that belong to a line begun in the previous read.
    let mut carried = 0;
    let mut bytes = 0u64;
    // The last complete line so far (without its newline), when there is one.
    let mut last_line: Option<Vec<u8>> = None;
    loop {
        if carried == chunk.len() {
            // A line longer than the chunk: room for it.
            chunk.resize(chunk.len() * 2, 0);
        }
        let read = reader.read(&mut chunk[carried..])?;
        if read == 0 {
            // What is left has no newline: a torn last line, not indexed.
            break;
        }
        bytes += read as u64;
        let filled = carried + read;
        let mut start = 0;
        let mut last = None;
        for end in memchr::memchr_iter(b'\n', &chunk[..filled]) {
            index.add_line(&chunk[start..=end]);
            last = Some(start..end);
            start = end + 1;
        }
        if let Some(range) = last {
            last_line = Some(chunk[range].to_vec());
        }
        chunk.copy_within(start..filled, 0);
        carried = filled - start;
    }
    let last_line_sha256 = last_line.map(|line| hex_sha256(&line)).unwrap_or_default();
    Ok(index.finish_file(FileFacts { bytes, last_line_sha256 }))
}

/// The `time` of an audit line, read from its fixed place (first in `redis-audit/2` lines,
/// after the schema in `/1`).
pub(crate) fn line_time(line: &[u8]) -> Option<&str> {
    const PREFIX: &[u8] = b"{\"time\":\"";
    const PREFIX_V1: &[u8] = b"{\"schema\":\"redis-audit/1\",\"time\":\"";
    let rest = line.strip_prefix(PREFIX).or_else(|| line.strip_prefix(PREFIX_V1))?;
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Most distinct values of one field kept as bitmaps (a field with more is left out, and a
/// query filtering on it together with another field reads the file).
pub(crate) const MAX_BITMAP_VALUES: usize = 256;

/// For each `(field, value)`, which of the file's command records (by rank, oldest first)
/// have it: queries with several filters count their matches by intersecting these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bitmaps {
    /// Bitmaps by field, then by value (the value's JSON text).
    pub fields: BTreeMap<String, BTreeMap<String, Vec<u64>>>,
}

impl Bitmaps {
    /// How many records have every `(field, value)`; `None` when a field has no bitmaps.
    pub fn count(&self, filters: &[(&str, String)]) -> Option<u64> {
        let mut acc: Option<Vec<u64>> = None;
        for (field, value) in filters {
            let values = self.fields.get(*field)?;
            let Some(bits) = values.get(value) else { return Some(0) };
            acc = Some(match acc {
                None => bits.clone(),
                Some(so_far) => so_far.iter().zip(bits).map(|(a, b)| a & b).collect(),
            });
        }
        acc.map(|bits| bits.iter().map(|w| u64::from(w.count_ones())).sum())
    }

    /// The bytes of `<file>.bits`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (field, values) in &self.fields {
            for (value, bits) in values {
                for text in [field.as_bytes(), value.as_bytes()] {
                    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
                    out.extend_from_slice(text);
                }
                out.extend_from_slice(&(bits.len() as u32).to_le_bytes());
                for word in bits {
                    out.extend_from_slice(&word.to_le_bytes());
                }
            }
        }
        out
    }

    /// Bitmaps from the bytes of `<file>.bits` (`None`: not such bytes).
    pub fn decode(mut bytes: &[u8]) -> Option<Self> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
            *bytes = rest;
            Some(head)
        }
        fn length(bytes: &mut &[u8]) -> Option<usize> {
            Some(u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?) as usize)
        }
        let mut bitmaps = Self::default();
        while !bytes.is_empty() {
            let n = length(&mut bytes)?;
            let field = String::from_utf8(take(&mut bytes, n)?.to_vec()).ok()?;
            let n = length(&mut bytes)?;
            let value = String::from_utf8(take(&mut bytes, n)?.to_vec()).ok()?;
            let words = length(&mut bytes)?;
            let raw = take(&mut bytes, words.checked_mul(8)?)?;
            let bits =
                raw.chunks(8).map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8]))).collect();
            bitmaps.fields.entry(field).or_default().insert(value, bits);
        }
        Some(bitmaps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(user: &str, db: u32) -> Vec<u8> {
        format!(
            "{{\"schema\":\"redis-audit/1\",\"time\":\"2026-11-20T00:00:0{}.000000Z\",\"seq\":1,\
             \"node\":\"n\",\"kind\":\"command\",\"client\":{{\"ip\":\"10.0.0.1\",\"port\":1}},\
             \"user\":\"{user}\",\"db\":{db},\"command\":{{\"name\":\"get\",\"class\":\"read\"}}}}\n",
            db % 10
        )
        .into_bytes()
    }

    #[test]
    fn values_are_counted_and_mapped_by_rank_up_to_their_caps() {
        let mut index = IndexBuilder::default();
        // 257 users: one more than bitmaps keep; counts keep them all.
        for rank in 0..=MAX_BITMAP_VALUES {
            index.add_line(&line(&format!("u{rank}"), (rank % 2) as u32));
        }
        index.add_line(b"{\"schema\":\"redis-audit/1\",\"kind\":\"system\"}\n");
        let (summary, bitmaps) = index.finish();
        assert_eq!(summary.commands, MAX_BITMAP_VALUES as u64 + 1);
        assert_eq!(summary.first_time, "2026-11-20T00:00:00.000000Z");
        assert_eq!(summary.last_time, "2026-11-20T00:00:01.000000Z");
        assert_eq!(summary.facets["user"].len(), MAX_BITMAP_VALUES + 1);
        assert_eq!(summary.facets["db"]["1"], MAX_BITMAP_VALUES as u64 / 2);
        assert!(!bitmaps.fields.contains_key("user"), "past the bitmap cap");
        let odd = &bitmaps.fields["db"]["1"];
        assert_eq!(odd.len(), (MAX_BITMAP_VALUES + 1).div_ceil(64), "as long as the file");
        assert_eq!(odd[0], 0xaaaa_aaaa_aaaa_aaaa, "odd ranks");
        assert_eq!(bitmaps.count(&[("db", "1".into()), ("node", "\"n\"".into())]), Some(128));

        let mut index = IndexBuilder::default();
        for rank in 0..=MAX_FACET_VALUES {
            index.add_line(&line(&format!("u{rank}"), 0));
        }
        let (summary, _) = index.finish();
        assert!(!summary.facets.contains_key("user"), "past the count cap");
        assert_eq!(summary.facets["db"]["0"], MAX_FACET_VALUES as u64 + 1);
    }
}
