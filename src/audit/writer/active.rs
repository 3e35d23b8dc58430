//! The active file and what the writer keeps across batches: the batch not yet written, the
//! open seal, rotation by rename, retention, the `file_open` and `file_delete` lines, and the
//! query index of the file being written.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::audit::chain::{ChainAlg, Segment};
use crate::audit::config::Retention;
use crate::audit::event::{render, AuditEvent};
use crate::audit::files::{
    chain_anchor, create_active, ends_torn, lock_dir, newest_rotated, rotated_files, rotated_name,
    ACTIVE_FILE, NEXT_FILE,
};
use crate::audit::index::sidecar::FileFacts;
use crate::audit::index::IndexBuilder;
use crate::audit::schema::{push_head, Envelope, SCHEMA};
use crate::audit::time::rfc3339_micros_bytes;
use crate::util::hex::hex_sha256;

use super::drop_behind::DropBehind;
use super::{AuditStats, WriterConfig};
use crate::event::SystemEvent;

/// The lines not yet in the file: written together, or kept together for a retry (same
/// bytes, same seals) when the disk fails.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) bytes: Vec<u8>,
    /// How much of `bytes` the open segment has taken (the rest is hashed before a seal or
    /// the write, in one pass).
    pub(super) hashed: usize,
    /// Lines in `bytes[hashed..]`.
    pub(super) unhashed_lines: u64,
    /// Their queue budget, released once written.
    pub(super) queued: usize,
    pub(super) events: u64,
    /// Highest seq among them.
    pub(super) last_seq: Option<u64>,
}

/// The active file and the chain state.
pub(super) struct ActiveFile {
    pub(super) dir: PathBuf,
    pub(super) file: File,
    pub(super) size: u64,
    pub(super) rotate_bytes: u64,
    /// The lines written since the last seal (the open segment).
    pub(super) segment: Segment,
    /// The hash seals are made with.
    pub(super) alg: ChainAlg,
    /// `WriterConfig::seal_records` (at most `checkpoint_records` with a checkpoint key).
    pub(super) seal_records: u64,
    /// `WriterConfig::seal_interval`.
    pub(super) seal_interval: Duration,
    /// When the last seal was made.
    pub(super) sealed_at: tokio::time::Instant,
    /// The last line written, for the query index's facts about a rotated file.
    pub(super) last_line: Vec<u8>,
    /// Counter that keeps rotated names unique within one second.
    pub(super) rotation_counter: u32,
    /// When the active file was opened.
    pub(super) opened_at: SystemTime,
    /// Records (not the writer's own lines) in the active file: an idle file is not rotated.
    pub(super) records_in_file: u64,
    pub(super) rotate_interval: Option<Duration>,
    pub(super) retention: Retention,
    /// The newest rotated file: new names must sort after it, whatever the clock does.
    pub(super) newest_rotated_name: Option<String>,
    /// Held for the writer's life: one proxy per audit directory.
    pub(super) _lock: File,
    /// Fsync after each batch.
    pub(super) fsync: bool,
    /// The HMAC checkpoint key: every seal then carries a checkpoint.
    pub(super) checkpoint_key: Option<Vec<u8>>,
    /// The active file's query index, built as its lines are written.
    pub(super) index: IndexBuilder,
    /// Threads saving the indexes of rotated files; joined before the writer ends, so that a
    /// stopped proxy leaves no half-written sidecar behind.
    pub(super) index_savers: Vec<std::thread::JoinHandle<()>>,
    /// The sinks each line written is handed to, once it is in the file.
    pub(super) sinks: std::sync::Arc<crate::audit::sinks::Sinks>,
    /// What of the file is dropped from the page cache behind the writes.
    pub(super) drop_behind: DropBehind,
}

impl Drop for ActiveFile {
    fn drop(&mut self) {
        self.join_index_savers();
    }
}

impl ActiveFile {
    /// Waits for the threads saving rotated files' indexes.
    pub(super) fn join_index_savers(&mut self) {
        for saver in self.index_savers.drain(..) {
            let _ = saver.join();
        }
    }

    /// Opens a fresh active file: an `audit.log` left by an earlier run is first rotated away
    /// (noting a torn last line, the trace of a crash mid-write), and the new file's first line
    /// links to the last complete line before it.
    pub(super) fn open(
        config: &WriterConfig,
        envelope: &Envelope,
        sinks: std::sync::Arc<crate::audit::sinks::Sinks>,
    ) -> io::Result<Self> {
        let lock = lock_dir(&config.dir)?;
        let active = config.dir.join(ACTIVE_FILE);
        // A rotation interrupted before its rename leaves at most a header here, never a record.
        let _ = fs::remove_file(config.dir.join(NEXT_FILE));
        let mut counter = 0;
        let newest = newest_rotated(&config.dir)?;
        let (prev_file, torn) = if active.exists() {
            let torn = ends_torn(&active)?;
            let rotated = rotated_name(&config.dir, &mut counter, newest.as_deref());
            fs::rename(&active, config.dir.join(&rotated))?;
            (Some(rotated), torn)
        } else {
            (newest, false)
        };
        // The chain goes on from the newest file with a complete line (an empty file, left by
        // a crash, is skipped): its last seal, and the lines after it, which this file's
        // `file_open` seals.
        let segment = chain_anchor(&config.dir, config.chain_alg)?;
        let newest_rotated_name = prev_file.clone();
        let file = create_active(&active)?;
        let seal_records = match &config.checkpoint {
            Some((_, every)) if *every > 0 => config.seal_records.min(*every),
            _ => config.seal_records,
        };
        let mut this = Self {
            dir: config.dir.clone(),
            file,
            size: 0,
            rotate_bytes: config.rotate_bytes.max(1),
            segment,
            alg: config.chain_alg,
            seal_records: seal_records.max(1),
            seal_interval: config.seal_interval,
            sealed_at: tokio::time::Instant::now(),
            last_line: Vec::new(),
            rotation_counter: counter,
            opened_at: SystemTime::now(),
            records_in_file: 0,
            rotate_interval: config.rotate_interval,
            retention: config.retention,
            newest_rotated_name,
            _lock: lock,
            fsync: config.fsync,
            drop_behind: DropBehind::new(config.page_cache_bytes),
            checkpoint_key: config.checkpoint.as_ref().map(|(key, _)| key.clone()),
            index: IndexBuilder::for_node(&envelope.node),
            index_savers: Vec::new(),
            sinks,
        };
        this.write_file_open(envelope, prev_file.as_deref(), torn)?;
        Ok(this)
    }

    /// Writes one unsequenced line of the writer's own (`file_delete`), in the open segment.
    pub(super) fn write_marker(
        &mut self,
        envelope: &Envelope,
        action: &'static str,
        detail: serde_json::Value,
    ) -> io::Result<()> {
        let event = AuditEvent::System(SystemEvent { action, time: SystemTime::now(), detail });
        let mut line = Vec::with_capacity(512);
        render(&event, None, envelope, &mut line);
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.sinks.offer(&line);
        self.segment.update(&line, 1);
        self.size += line.len() as u64;
        self.note_last_line(&line);
        Ok(())
    }

    /// Lines not yet sealed: those hashed into the open segment and those of `batch` not yet.
    pub(super) fn unsealed(&self, batch: &Batch) -> u64 {
        self.segment.lines() + batch.unhashed_lines
    }

    /// Takes the batch's lines not yet hashed into the open segment.
    pub(super) fn hash_batch(&mut self, batch: &mut Batch) {
        self.segment.update(&batch.bytes[batch.hashed..], batch.unhashed_lines);
        (batch.hashed, batch.unhashed_lines) = (batch.bytes.len(), 0);
    }

    /// Appends a seal line to `batch`: the hash of every line since the last seal, chained to
    /// it, with a checkpoint (an HMAC of that hash) when there is a key.
    pub(super) fn seal(&mut self, batch: &mut Batch) {
        self.hash_batch(batch);
        let start = batch.bytes.len();
        push_head(&mut batch.bytes, &rfc3339_micros_bytes(SystemTime::now()), None);
        batch
            .bytes
            .extend_from_slice(b"\"kind\":\"system\",\"action\":\"seal\",\"outcome\":\"success\",");
        self.segment.push_seal_field(self.alg, self.checkpoint_key.as_deref(), &mut batch.bytes);
        batch.bytes.push(b'}');
        self.segment = Segment::new(self.alg, self.alg.hash(&batch.bytes[start..]));
        batch.bytes.push(b'\n');
        batch.hashed = batch.bytes.len();
        self.sealed_at = tokio::time::Instant::now();
    }

    /// Keeps the last complete line of what was just written.
    pub(super) fn note_last_line(&mut self, written: &[u8]) {
        let end = written.len().saturating_sub(1);
        let start = memchr::memrchr(b'\n', &written[..end]).map_or(0, |at| at + 1);
        self.last_line.clear();
        self.last_line.extend_from_slice(&written[start..end]);
    }

    /// Rotates when the active file is older than `rotate_interval` and holds records (the
    /// writer's own lines do not count, or an idle proxy would rotate history away).
    pub(super) fn rotate_if_old(&mut self, envelope: &Envelope, stats: &AuditStats) {
        let Some(interval) = self.rotate_interval else { return };
        let age = SystemTime::now().duration_since(self.opened_at).unwrap_or_default();
        if age >= interval && self.records_in_file > 0 {
            self.rotate(envelope, stats);
        }
    }

    /// Deletes the oldest rotated files past the retention limits, recording each deletion.
    pub(super) fn enforce_retention(&mut self, envelope: &Envelope, stats: &AuditStats) {
        let Retention { files, bytes, age } = self.retention;
        if files.is_none() && bytes.is_none() && age.is_none() {
            return;
        }
        let Ok(names) = rotated_files(&self.dir) else { return };
        let entries: Vec<(String, u64, SystemTime)> = names
            .into_iter()
            .filter_map(|name| {
                let metadata = fs::metadata(self.dir.join(&name)).ok()?;
                Some((name, metadata.len(), metadata.modified().ok()?))
            })
            .collect();
        let mut total: u64 = self.size + entries.iter().map(|(_, size, _)| size).sum::<u64>();
        let now = SystemTime::now();
        for (index, (name, size, modified)) in entries.iter().enumerate() {
            let remaining = (entries.len() - index) as u64;
            let reason = if files.is_some_and(|max| remaining > max) {
                "retain_files"
            } else if bytes.is_some_and(|max| total > max) {
                "retain_bytes"
            } else if age.is_some_and(|max| now.duration_since(*modified).unwrap_or_default() > max)
            {
                "retain_age"
            } else {
                break;
            };
            if let Err(error) = fs::remove_file(self.dir.join(name)) {
                tracing::error!(%error, file = %name, "deleting an old audit file failed");
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            total -= size;
            let _ = fs::remove_file(self.dir.join(format!("{name}.idx")));
            let _ = fs::remove_file(self.dir.join(format!("{name}.bits")));
            stats.deletions.fetch_add(1, Ordering::Relaxed);
            let detail = json!({"file": name, "bytes": size, "reason": reason});
            if let Err(error) = self.write_marker(envelope, "file_delete", detail) {
                tracing::error!(%error, "recording an audit file deletion failed");
            }
        }
    }

    /// Writes a new file's first line: the schema and what every line of this run shares, the
    /// previous file, and a seal over the lines left unsealed before it.
    pub(super) fn write_file_open(
        &mut self,
        envelope: &Envelope,
        prev_file: Option<&str>,
        torn: bool,
    ) -> io::Result<()> {
        let detail = json!({
            "instance_id": envelope.instance_id,
            "node": envelope.node,
            "upstream": envelope.upstream,
            "file": ACTIVE_FILE,
            "prev_file": prev_file,
            "recovered_torn_line": torn,
        });
        let mut line = Vec::with_capacity(768);
        line.extend_from_slice(b"{\"schema\":\"");
        line.extend_from_slice(SCHEMA.as_bytes());
        line.extend_from_slice(b"\",\"time\":\"");
        line.extend_from_slice(&rfc3339_micros_bytes(SystemTime::now()));
        line.extend_from_slice(
            b"\",\"kind\":\"system\",\"action\":\"file_open\",\"outcome\":\"success\",",
        );
        // The detail's fields, without its braces.
        let fields = detail.to_string();
        line.extend_from_slice(&fields.as_bytes()[1..fields.len() - 1]);
        line.push(b',');
        self.segment.push_seal_field(self.alg, self.checkpoint_key.as_deref(), &mut line);
        line.push(b'}');
        let head = self.alg.hash(&line);
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.sinks.offer(&line);
        self.segment = Segment::new(self.alg, head);
        self.sealed_at = tokio::time::Instant::now();
        self.size += line.len() as u64;
        self.note_last_line(&line);
        Ok(())
    }

    /// Appends `bytes` (and fsyncs with `fsync`). On failure the file is cut back to what it
    /// held before, so no partial line stays in it.
    pub(super) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let result = self.file.write_all(bytes).and_then(|()| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                self.size += bytes.len() as u64;
                self.sinks.offer(bytes);
                self.drop_behind.wrote(&self.file, self.size);
                Ok(())
            }
            Err(error) => {
                let _ = self.file.set_len(self.size);
                Err(error)
            }
        }
    }

    /// Renames `audit.log` to a unique rotated name and starts a new one, whose first line
    /// names the previous file and chains to its last line. The new file is created first, so
    /// a failure leaves the writer on the current file.
    pub(super) fn rotate(&mut self, envelope: &Envelope, stats: &AuditStats) {
        let active = self.dir.join(ACTIVE_FILE);
        let next = self.dir.join(NEXT_FILE);
        let rotated = rotated_name(
            &self.dir,
            &mut self.rotation_counter,
            self.newest_rotated_name.as_deref(),
        );
        let result = create_active(&next).and_then(|file| {
            fs::rename(&active, self.dir.join(&rotated)).inspect_err(|_| {
                let _ = fs::remove_file(&next);
            })?;
            fs::rename(&next, &active)?;
            Ok(file)
        });
        let file = match result {
            Ok(file) => file,
            Err(error) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "rotating the audit file failed; writing on in the current one");
                return;
            }
        };
        let (closed_bytes, closed_last_hash) = (self.size, hex_sha256(&self.last_line));
        self.drop_behind.rotated(&self.file, closed_bytes);
        self.file = file;
        self.size = 0;
        self.opened_at = SystemTime::now();
        self.records_in_file = 0;
        self.newest_rotated_name = Some(rotated.clone());
        stats.rotations.fetch_add(1, Ordering::Relaxed);
        // The query index of the file just closed, made as it was written and saved off the
        // writer thread, so that no query pays for it (best effort: a query builds a missing
        // one from the file).
        let closed = self.dir.join(&rotated);
        let index = std::mem::replace(&mut self.index, IndexBuilder::for_node(&envelope.node));
        // Tied to the file as it was closed: what it holds and its last line's hash.
        let facts = FileFacts { bytes: closed_bytes, last_line_sha256: closed_last_hash };
        self.index_savers.retain(|saver| !saver.is_finished());
        let saver = std::thread::Builder::new().name("audit-index".into()).spawn(move || {
            let (summary, bitmaps) = index.finish_file(facts);
            crate::audit::index::sidecar::save_index(&closed, &summary, &bitmaps);
        });
        self.index_savers.extend(saver.ok());
        if let Err(error) = self.write_file_open(envelope, Some(&rotated), false) {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, "writing the new audit file's header failed");
        }
        self.enforce_retention(envelope, stats);
    }
}
