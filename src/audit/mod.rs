//! The audit trail: every command, session and system event as one JSON line in tailer-safe,
//! sealed (hash-chained) files (schema in `docs/audit-schema.md`).
//!
//! - [`schema`], [`mod@json`], [`time`]: the bottom layer both renderings share: schema names,
//!   limits, each line's head and the envelope; the JSON writer; the RFC 3339 time.
//! - [`event`]: session, security and system events and their JSON rendering (serde).
//! - [`mod@line`]: command lines rendered straight from their records (the hot path).
//! - [`index`]: the query index the writer builds for each file, and its sidecar files.
//! - [`filter`]: which events are kept (`[audit.filters]`), and counts of the rest.
//! - [`redact`]: which arguments may be shown when argument capture is on.
//! - [`writer`]: the handle (`AuditLog`); inside it, the bounded queue, the writer thread, and
//!   the active file with its batches, seals, rotation and retention.
//! - [`chain`]: the seals that make the trail tamper-evident.
//! - [`files`]: the directory's file names, listing, lock, and where the chain stands in them.
//! - [`backlog`]: what the queue takes once full, and the `loss` records of what it drops.
//! - [`sinks`]: copies of the trail beside the files (`[[audit.sinks]]`: syslog, stdout).
//! - [`verify`]: `audit verify`, which checks a directory's chain and sequence.

pub mod backlog;
pub mod chain;
pub mod config;
pub mod event;
pub mod files;
pub mod filter;
pub mod index;
pub mod json;
pub mod line;
pub(crate) mod redact;
pub mod schema;
pub mod sinks;
pub mod time;
pub mod verify;
pub mod writer;

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::json;

use crate::event::{CommandRecord, EventSink, ReplySource, SessionEvent, SystemEvent};
use config::{AuditConfig, Durability, OnFull};
use event::AuditEvent;
use schema::Envelope;
use writer::{AuditLog, WriterConfig};

/// The sink that writes the audit trail.
#[derive(Debug)]
pub struct AuditSink {
    log: AuditLog,
    filters: filter::Filters,
    /// The filters leave nothing out (checked once: the common case costs nothing per event).
    keeps_everything: bool,
    /// Events the filters left out, by reason.
    pub filtered: filter::FilterCounts,
    /// `Some(args_max_bytes)` when arguments are captured.
    capture_args: Option<usize>,
    on_full: OnFull,
    durability: Durability,
    /// This process's envelope (instance id, node, upstream).
    pub envelope: Envelope,
}

impl AuditSink {
    /// Opens the audit directory of `config` and writes the `start` event, which names the
    /// proxy's `listen` address; `upstream` goes in every file's `file_open` line.
    pub fn open(
        config: &AuditConfig,
        upstream: &str,
        listen: std::net::SocketAddr,
    ) -> std::io::Result<Arc<Self>> {
        let envelope = Envelope::new(
            config.keys.clone(),
            crate::util::id::uuid_v4(),
            node_name(),
            upstream.to_owned(),
        );
        let log = AuditLog::open(
            WriterConfig {
                dir: config.dir.clone(),
                rotate_bytes: config.rotate_bytes,
                rotate_interval: config.rotate_interval,
                retention: config.retention,
                queue_max_bytes: config.queue_max_bytes,
                fsync: config.durability == Durability::Fsync,
                checkpoint: config.checkpoint.as_ref().map(|c| (c.key.clone(), c.every)),
                chain_alg: config.chain_alg,
                seal_records: config.seal_records,
                seal_interval: config.seal_interval,
                coalesce: (config.durability == Durability::Async && !config.coalesce.is_zero())
                    .then_some(config.coalesce),
                sinks: config.sinks.clone(),
                page_cache_bytes: config.page_cache_bytes,
            },
            envelope.clone(),
        )?;
        log.submit(
            &AuditEvent::System(SystemEvent {
                action: "start",
                time: SystemTime::now(),
                detail: json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "pid": std::process::id(),
                    "listen": listen.to_string(),
                    "durability": config.durability.as_str(),
                }),
            }),
            false,
        );
        Ok(Arc::new(Self {
            log,
            filters: config.filters.clone(),
            keeps_everything: config.filters.keeps_everything(),
            filtered: filter::FilterCounts::default(),
            capture_args: config.capture_args.then_some(config.args_max_bytes),
            on_full: config.on_full,
            durability: config.durability,
            envelope,
        }))
    }

    /// The writer's counters.
    pub fn stats(&self) -> &writer::AuditStats {
        self.log.stats()
    }

    /// Holds the writer (as a slow disk would) until the guard drops (a test hook: built with
    /// the `test-util` feature only).
    #[cfg(feature = "test-util")]
    pub fn stall(&self) -> writer::Stall {
        self.log.stall()
    }

    /// Completes at the first failure to write the trail.
    pub async fn failed(&self) {
        self.log.failed().await;
    }

    /// Rotates the trail now (SIGHUP).
    pub fn reopen(&self) {
        self.log.rotate();
    }

    /// Waits until every event enqueued so far is in the file.
    pub fn sync(&self) {
        self.log.flush();
    }
}

impl EventSink for AuditSink {
    fn record(&self, record: CommandRecord) -> Option<u64> {
        // With block and reject, a command that ran is always recorded (the clients wait or are
        // refused, so this stays bounded); what the proxy answered itself may be dropped.
        if !self.keeps_everything {
            if let Some(reason) = self.filters.command(&record) {
                self.filtered.count(reason);
                return None;
            }
        }
        let droppable = self.on_full == OnFull::Drop || record.source == ReplySource::Proxy;
        // Rendered here, on the connection's thread, into this thread's buffer: the queue
        // then holds the line's bytes, and the writer only chains and writes them.
        let seq = line::with_scratch(|body| {
            let facets = line::push_command_body(body, &record, self.capture_args, &self.envelope);
            self.log.submit_command(line::command_time(&record), body, &facets, droppable)
        });
        seq.filter(|_| self.durability != Durability::Async)
    }

    fn poll_durable(&self, ticket: u64, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.log.poll_durable(ticket, cx)
    }

    fn session(&self, event: SessionEvent) {
        if let Some(reason) = self.filters.session(&event) {
            self.filtered.count(reason);
            return;
        }
        self.log.submit(&AuditEvent::Session(Box::new(event)), false);
    }

    fn system(&self, event: SystemEvent) {
        self.log.submit(&AuditEvent::System(event), false);
    }

    fn security(&self, event: crate::event::SecurityEvent) {
        // Never filtered: this is the durable ACL LOG. Dropped (and declared) only past the
        // queue's reserve, when the disk has stalled long enough to fill it (see `backlog`).
        self.log.submit(&AuditEvent::Security(Box::new(event)), false);
    }

    fn stats(&self) -> Option<crate::event::SinkStats> {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = self.log.stats();
        Some(crate::event::SinkStats {
            written: stats.written.load(Relaxed),
            dropped_queue_full: stats.dropped_queue_full.load(Relaxed),
            filtered: self.filtered.counts().collect(),
            queue_bytes: self.log.queued_bytes() as u64,
            bytes_written: stats.bytes_written.load(Relaxed),
            rotations: stats.rotations.load(Relaxed),
            write_errors: stats.write_errors.load(Relaxed),
            deletions: stats.deletions.load(Relaxed),
            fsyncs: stats.fsyncs.load(Relaxed),
            fsync_micros: stats.fsync_micros.load(Relaxed),
            sinks: self.log.sink_snapshots(),
        })
    }

    fn is_full(&self) -> bool {
        self.log.is_full()
    }

    fn is_failing(&self) -> bool {
        self.log.is_failing()
    }

    fn flush(&self) {
        let detail = json!({"filtered": self.filtered.to_json()});
        let stop = SystemEvent { action: "stop", time: SystemTime::now(), detail };
        self.log.submit(&AuditEvent::System(stop), false);
        self.log.close();
    }
}

fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
