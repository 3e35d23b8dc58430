//! The audit writer: a queue of rendered lines (bounded in bytes) feeding a dedicated thread
//! that batches and appends them to `audit.log`, seals them ([`chain`](crate::audit::chain)), rotates the file by
//! rename, and recovers after a crash. The proxy's threads render their lines and enqueue
//! them; they never touch the file. The writer takes the whole queue at once (one lock, one
//! swap), so a busy proxy costs it one wake-up per batch, not per line.
//!
//! Sequence numbers are taken under the same lock as the enqueue, so the file's order is the
//! `seq` order. A line that does not fit the queue (its budget: [`backlog`](crate::audit::backlog)) is dropped but
//! keeps its number; the next event enqueued is preceded by a `loss` record naming the missing
//! range, so every number is accounted for. System events are never dropped.
//!
//! - this file: the settings, the counters and the [`AuditLog`] handle the proxy holds;
//! - `queue`: the producers' side: lines, `seq`, losses, controls, the durable watermark;
//! - `thread`: the writer loop: batches, seals, writes, flush acknowledgements, the last seal;
//! - `active`: the active file: its chain state, rotation by rename, retention, crash recovery.
//! - `drop_behind`: what of the active file is dropped from the page cache behind the writes.

mod active;
mod drop_behind;
mod queue;
mod thread;

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::audit::backlog::{Budget, Kind};
use crate::audit::chain::ChainAlg;
use crate::audit::config::Retention;
use crate::audit::event::AuditEvent;
use crate::audit::index::FacetStarts;
use crate::audit::schema::Envelope;
use crate::audit::sinks::Sinks;
use crate::event::SinkSnapshot;
use crate::util::sync::LockAnyway;

use active::ActiveFile;
use queue::{Control, Shared};

/// Settings of the writer.
#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    /// The audit directory.
    pub dir: PathBuf,
    /// Rotate the active file before it passes this size.
    pub rotate_bytes: u64,
    /// Rotate the active file when it is this old.
    pub(crate) rotate_interval: Option<Duration>,
    /// What to keep of the rotated files.
    pub retention: Retention,
    /// Bytes of events queued before command events are dropped (session and security
    /// events: this and a reserve; see [`backlog`](crate::audit::backlog)).
    pub queue_max_bytes: usize,
    /// Fsync after each batch.
    pub fsync: bool,
    /// HMAC checkpoints: the key, and every how many records (0: only at shutdown).
    pub checkpoint: Option<(Vec<u8>, u64)>,
    /// The chain's hash function.
    pub chain_alg: ChainAlg,
    /// A seal at least every this many lines...
    pub(crate) seal_records: u64,
    /// ...and once the oldest unsealed line is this old.
    pub(crate) seal_interval: Duration,
    /// With `durability = "async"` (no client waits for the file), how long the writer lets
    /// events gather after a batch that emptied the queue: one wake-up per batch instead of
    /// one per event, each of which would cost the sending connection a futex wake and the
    /// machine a context switch. `None`: write as soon as an event arrives.
    pub(crate) coalesce: Option<Duration>,
    /// `[[audit.sinks]]`: copies of what is written, sent beside the file.
    pub sinks: Vec<crate::audit::sinks::config::SinkConfig>,
    /// Bytes at the end of the active file left in the page cache ([`drop_behind`]; 0: all).
    pub(crate) page_cache_bytes: u64,
}

/// Counters of the audit log.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Events written.
    pub written: AtomicU64,
    /// Events dropped because the queue was full: commands past `queue_max_bytes`, session
    /// and security events past its reserve too ([`backlog`](crate::audit::backlog)).
    pub dropped_queue_full: AtomicU64,
    /// Bytes written to files.
    pub(crate) bytes_written: AtomicU64,
    /// Files rotated.
    pub rotations: AtomicU64,
    /// Write errors.
    pub write_errors: AtomicU64,
    /// Rotated files deleted by retention.
    pub deletions: AtomicU64,
    /// fsyncs done (`durability = "fsync"`).
    pub(crate) fsyncs: AtomicU64,
    /// Time spent in them, in microseconds.
    pub(crate) fsync_micros: AtomicU64,
}

/// The handle the proxy enqueues events on.
#[derive(Debug)]
pub(crate) struct AuditLog {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    /// Opens the audit directory (creating it), recovers from an earlier run, starts the
    /// writer thread.
    pub(crate) fn open(config: WriterConfig, envelope: Envelope) -> io::Result<Self> {
        std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
            .create(&config.dir)?;
        let sinks = Arc::new(Sinks::start(&config.sinks, envelope.clone())?);
        let files = ActiveFile::open(&config, &envelope, Arc::clone(&sinks))?;
        let shared = Arc::new(Shared::new(config.queue_max_bytes, envelope, sinks));
        let coalesce = config.coalesce;
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || thread::run_writer(files, coalesce, &shared))?
        };
        Ok(Self { shared, writer: Mutex::new(Some(thread)) })
    }

    /// Counters.
    pub(crate) fn stats(&self) -> &AuditStats {
        &self.shared.stats
    }

    /// Holds the writer before its next batch until the guard drops, as a disk slower than
    /// the traffic would: for tests of `on_full` (built with the `test-util` feature only).
    #[cfg(feature = "test-util")]
    pub(crate) fn stall(&self) -> Stall {
        self.shared.stalled.store(true, Ordering::SeqCst);
        Stall(Arc::clone(&self.shared))
    }

    /// True while the queue holds more than its byte budget.
    pub(crate) fn is_full(&self) -> bool {
        self.shared.queued_bytes.load(Ordering::Relaxed) >= self.shared.queue_max_bytes
    }

    /// True while writing the trail fails.
    pub(crate) fn is_failing(&self) -> bool {
        self.shared.failing.load(Ordering::Relaxed)
    }

    /// Completes at the first write failure (for `on_error = "shutdown"`).
    pub(crate) async fn failed(&self) {
        self.shared.failed.notified().await;
    }

    /// Ready once every record up to `seq` is durable.
    pub(crate) fn poll_durable(&self, seq: u64, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.durable.poll(seq, cx)
    }

    /// Enqueues an event; never blocks on the disk. When the queue is full, a `droppable`
    /// event is dropped (counted; its seq is declared by the next `loss` record); any other is
    /// queued beyond the budget, a session or security event only within its reserve
    /// ([`backlog`](crate::audit::backlog)). Returns the event's seq, `None` when dropped.
    pub(crate) fn submit(&self, event: &AuditEvent, droppable: bool) -> Option<u64> {
        self.shared.submit(event, droppable)
    }

    /// Enqueues a command line already rendered from `"instance_id"` on by
    /// [`crate::audit::line::push_command_body`], with the facet positions it returned, as
    /// [`submit`](Self::submit) does an event.
    pub(crate) fn submit_command(
        &self,
        time: SystemTime,
        body: &[u8],
        facets: &FacetStarts,
        droppable: bool,
    ) -> Option<u64> {
        let budget = if droppable { Budget::Droppable } else { Budget::Always };
        self.shared.submit_line(time, body, Some(facets), (budget, Some(Kind::Command)))
    }

    /// Waits until everything enqueued so far was tried (written, or kept for a retry).
    pub(crate) fn flush(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.shared.control(Control::Flush(ack)) {
            let _ = done.recv();
        }
    }

    /// Asks the writer to rotate now, after what is already queued (for SIGHUP and external
    /// rotation tools: the file they move away is complete, and `audit.log` is new).
    pub(crate) fn rotate(&self) {
        self.shared.control(Control::Rotate);
    }

    /// Counters of the `[[audit.sinks]]` sinks.
    pub(crate) fn sink_snapshots(&self) -> Vec<SinkSnapshot> {
        self.shared.sinks.snapshots()
    }

    /// Writes what is queued and stops the writer thread (and the sinks, once they sent what
    /// they hold or their grace ran out).
    pub(crate) fn close(&self) {
        self.shared.sinks.begin_close();
        {
            let mut queue = self.shared.lock();
            queue.open = false;
        }
        self.shared.wake.notify_one();
        if let Some(thread) = self.writer.lock_anyway().take() {
            let _ = thread.join();
        }
    }

    /// Bytes of events waiting to be written (for the `audit_queue_bytes` metric).
    pub(crate) fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.load(Ordering::Relaxed)
    }
}

/// Keeps the writer stalled until dropped (built with the `test-util` feature only).
#[cfg(feature = "test-util")]
#[derive(Debug)]
pub struct Stall(Arc<Shared>);

#[cfg(feature = "test-util")]
impl Drop for Stall {
    fn drop(&mut self) {
        self.0.stalled.store(false, Ordering::SeqCst);
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}
