//! The audit writer: a queue of rendered lines (bounded in bytes) feeding a dedicated thread
//! that batches and appends them to `audit.log`, seals them ([`chain`]), rotates the file by
//! rename, and recovers after a crash. The proxy's threads render their lines and enqueue
//! them; they never touch the file. The writer takes the whole queue at once (one lock, one
//! swap), so a busy proxy costs it one wake-up per batch, not per line.
//!
//! Sequence numbers are taken under the same lock as the enqueue, so the file's order is the
//! `seq` order. A line that does not fit the queue (its budget: [`backlog`]) is dropped but
//! keeps its number; the next event enqueued is preceded by a `loss` record naming the missing
//! range, so every number is accounted for. System events are never dropped.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit::backlog::{self, Budget, Kind};
use crate::audit::chain::{self, ChainAlg};
use crate::audit::config::Retention;
use crate::audit::event::{event_time, render_body, rfc3339_micros_bytes, AuditEvent, Envelope};
use crate::audit::index::FacetStarts;
use crate::audit::line;
use crate::audit::sinks::Sinks;
use crate::event::{SinkSnapshot, SystemEvent};

use crate::audit::active::{ActiveFile, Batch};
pub use crate::audit::files::rotated_files;
pub use crate::audit::files::ACTIVE_FILE;
/// The `prev` hash of the very first line of a `redis-audit/1` directory.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// A batch this large is written before the rest of what the writer took is batched.
const BATCH_WRITE_BYTES: usize = 4 << 20;

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The audit directory.
    pub dir: PathBuf,
    /// Rotate the active file before it passes this size.
    pub rotate_bytes: u64,
    /// Rotate the active file when it is this old.
    pub rotate_interval: Option<Duration>,
    /// What to keep of the rotated files.
    pub retention: Retention,
    /// Bytes of events queued before command events are dropped (session and security
    /// events: this and a reserve; see [`backlog`]).
    pub queue_max_bytes: usize,
    /// Fsync after each batch.
    pub fsync: bool,
    /// HMAC checkpoints: the key, and every how many records (0: only at shutdown).
    pub checkpoint: Option<(Vec<u8>, u64)>,
    /// The chain's hash function.
    pub chain_alg: ChainAlg,
    /// A seal at least every this many lines...
    pub seal_records: u64,
    /// ...and once the oldest unsealed line is this old.
    pub seal_interval: Duration,
    /// With `durability = "async"` (no client waits for the file), how long the writer lets
    /// events gather after a batch that emptied the queue: one wake-up per batch instead of
    /// one per event, each of which would cost the sending connection a futex wake and the
    /// machine a context switch. `None`: write as soon as an event arrives.
    pub coalesce: Option<Duration>,
    /// `[[audit.sinks]]`: copies of what is written, sent beside the file.
    pub sinks: Vec<crate::audit::sinks::config::SinkConfig>,
}

/// Bytes kept free in the active file for the seal that may follow its last line (a seal line
/// with an HMAC checkpoint is about 330 bytes).
const SEAL_ROOM: usize = 512;

/// How often the writer wakes up without events, to rotate by time.
const TICK: Duration = Duration::from_secs(1);

/// Counters of the audit log.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Events written.
    pub written: AtomicU64,
    /// Events dropped because the queue was full: commands past `queue_max_bytes`, session
    /// and security events past its reserve too ([`backlog`]).
    pub dropped_queue_full: AtomicU64,
    /// Bytes written to files.
    pub bytes_written: AtomicU64,
    /// Files rotated.
    pub rotations: AtomicU64,
    /// Write errors.
    pub write_errors: AtomicU64,
    /// Rotated files deleted by retention.
    pub deletions: AtomicU64,
    /// fsyncs done (`durability = "fsync"`).
    pub fsyncs: AtomicU64,
    /// Time spent in them, in microseconds.
    pub fsync_micros: AtomicU64,
}

/// One rendered line waiting in the queue.
#[derive(Debug, Clone, Copy)]
struct QueuedLine {
    /// Its bytes, newline included.
    len: usize,
    seq: u64,
    /// For a command line: where the values the query index counts start in it.
    facets: Option<FacetStarts>,
}

/// What the writer is asked besides lines, in queue order.
#[derive(Debug)]
enum Control {
    /// Acknowledge once everything before it was tried.
    Flush(mpsc::SyncSender<()>),
    /// Rotate now (SIGHUP): close the active file under its rotated name, start a new one.
    Rotate,
}

/// Lines rendered by the proxy's threads, in `seq` order, as the bytes they are written as.
/// Swapped whole between the two sides.
#[derive(Debug, Default)]
struct Lines {
    bytes: Vec<u8>,
    lines: Vec<QueuedLine>,
    /// Each control with the number of lines before it.
    controls: Vec<(usize, Control)>,
}

impl Lines {
    fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.controls.is_empty()
    }

    /// Appends one line: the head (with `seq`), then `body`. `facets` are positions in `body`.
    fn push(
        &mut self,
        time: &[u8; 27],
        seq: u64,
        body: &[u8],
        facets: Option<&FacetStarts>,
    ) -> usize {
        let start = self.bytes.len();
        line::push_head(&mut self.bytes, time, Some(seq));
        let head = self.bytes.len() - start;
        self.bytes.extend_from_slice(body);
        self.bytes.push(b'\n');
        let len = self.bytes.len() - start;
        let facets = facets.map(|starts| starts.map(|at| at.saturating_add(head)));
        self.lines.push(QueuedLine { len, seq, facets });
        len
    }

    /// Empties it, releasing what a burst made it hold beyond a normal batch.
    fn clear(&mut self) {
        const KEEP_BYTES: usize = 4 << 20;
        self.bytes.clear();
        self.lines.clear();
        self.controls.clear();
        if self.bytes.capacity() > KEEP_BYTES {
            self.bytes.shrink_to(KEEP_BYTES / 4);
            self.lines.shrink_to(KEEP_BYTES / 4 / 256);
        }
    }
}

/// The producers' side of the queue.
#[derive(Debug)]
struct Queue {
    next_seq: u64,
    /// Dropped sequence numbers not yet reported.
    lost: backlog::Lost,
    /// False once the log is closing: nothing more is taken.
    open: bool,
    pending: Lines,
    /// The writer waits on `Shared::wake` for lines (set and cleared by it, under the lock):
    /// producers signal only then, so a busy or coalescing writer costs them no wake-up.
    writer_waiting: bool,
}

/// What the proxy's threads and the writer thread share.
#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Bytes of lines enqueued and not yet written (a failed batch stays counted).
    queued_bytes: AtomicUsize,
    queue_max_bytes: usize,
    stats: AuditStats,
    /// Set by [`AuditLog::stall`]: the writer waits before its next batch while it is.
    stalled: AtomicBool,
    /// Every record with a seq up to this is written (and fsynced, with `fsync`).
    durable: Durable,
    /// Set while writes fail (disk full, I/O error); cleared by the first that succeeds.
    failing: AtomicBool,
    /// Signalled at the first failure of a run of them (`on_error = "shutdown"` waits on it).
    failed: tokio::sync::Notify,
    envelope: Envelope,
    /// The sinks the writer hands what it wrote to.
    sinks: Arc<Sinks>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enqueues the line of an event of `kind` that happened at `time`, whose fields after
    /// the head are `body` (see [`mod@line`]), if its `budget` admits it; a command line's
    /// `facets` are positions in `body`.
    fn submit_line(
        &self,
        time: SystemTime,
        body: &[u8],
        facets: Option<&FacetStarts>,
        (budget, kind): (Budget, Option<Kind>),
    ) -> Option<u64> {
        let time = rfc3339_micros_bytes(time);
        let bytes = line::HEAD_MAX_BYTES + body.len();
        let mut queue = self.lock();
        if !queue.open {
            return None;
        }
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        if let (false, Some(kind)) = (budget.admits(queued, bytes, self.queue_max_bytes), kind) {
            let seq = queue.next_seq;
            queue.next_seq += 1;
            queue.lost.add(seq, kind);
            self.stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if let Some(loss) = queue.lost.take_event() {
            let mut loss_body = Vec::with_capacity(512);
            render_body(&loss, &self.envelope, &mut loss_body);
            let seq = queue.next_seq;
            queue.next_seq += 1;
            let time = rfc3339_micros_bytes(event_time(&loss));
            let len = queue.pending.push(&time, seq, &loss_body, None);
            self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        }
        let seq = queue.next_seq;
        queue.next_seq += 1;
        let len = queue.pending.push(&time, seq, body, facets);
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        self.wake_writer(queue);
        Some(seq)
    }

    fn wake_writer(&self, mut queue: std::sync::MutexGuard<'_, Queue>) {
        if std::mem::take(&mut queue.writer_waiting) {
            drop(queue);
            self.wake.notify_one();
        }
    }

    fn submit(&self, event: &AuditEvent, droppable: bool) -> Option<u64> {
        let budget = if droppable { Budget::Droppable } else { Budget::of_event(event) };
        line::with_scratch(|body| {
            render_body(event, &self.envelope, body);
            self.submit_line(event_time(event), body, None, (budget, Kind::of_event(event)))
        })
    }

    fn system(&self, action: &'static str, detail: serde_json::Value) {
        self.submit(
            &AuditEvent::System(SystemEvent { action, time: SystemTime::now(), detail }),
            false,
        );
    }

    /// Queues a system event of the writer's own, even once the log is closing (the losses of
    /// sinks, found while it writes its last batches), sequenced like the rest.
    fn system_from_writer(&self, action: &'static str, detail: serde_json::Value) {
        let event = AuditEvent::System(SystemEvent { action, time: SystemTime::now(), detail });
        let mut body = Vec::with_capacity(512);
        render_body(&event, &self.envelope, &mut body);
        let mut queue = self.lock();
        let seq = queue.next_seq;
        queue.next_seq += 1;
        let len = queue.pending.push(&rfc3339_micros_bytes(event_time(&event)), seq, &body, None);
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
    }

    /// Records, as `sink_loss` system events, what sinks declared lost since the last look.
    fn record_sink_losses(&self) {
        for missed in self.sinks.take_file_notes() {
            self.system_from_writer("sink_loss", missed.detail());
        }
    }

    fn control(&self, control: Control) -> bool {
        let mut queue = self.lock();
        if !queue.open {
            return false;
        }
        let at = queue.pending.lines.len();
        queue.pending.controls.push((at, control));
        drop(queue);
        self.wake.notify_one();
        true
    }
}

/// The handle the proxy enqueues events on.
#[derive(Debug)]
pub struct AuditLog {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    /// Opens the audit directory (creating it), recovers from an earlier run, starts the
    /// writer thread.
    pub fn open(config: WriterConfig, envelope: Envelope) -> io::Result<Self> {
        std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
            .create(&config.dir)?;
        let sinks = Arc::new(Sinks::start(&config.sinks, envelope.clone())?);
        let files = ActiveFile::open(&config, &envelope, Arc::clone(&sinks))?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                next_seq: 1,
                lost: backlog::Lost::default(),
                open: true,
                pending: Lines::default(),
                writer_waiting: false,
            }),
            wake: Condvar::new(),
            queued_bytes: AtomicUsize::new(0),
            queue_max_bytes: config.queue_max_bytes,
            stats: AuditStats::default(),
            stalled: AtomicBool::new(false),
            durable: Durable::default(),
            failing: AtomicBool::new(false),
            failed: tokio::sync::Notify::new(),
            envelope,
            sinks,
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || run_writer(files, &shared))?
        };
        Ok(Self { shared, writer: Mutex::new(Some(thread)) })
    }

    /// Counters.
    pub fn stats(&self) -> &AuditStats {
        &self.shared.stats
    }

    /// Holds the writer before its next batch until the guard drops, as a disk slower than
    /// the traffic would: for drills and tests of `on_full`.
    pub fn stall(&self) -> Stall {
        self.shared.stalled.store(true, Ordering::SeqCst);
        Stall(Arc::clone(&self.shared))
    }

    /// True while the queue holds more than its byte budget.
    pub fn is_full(&self) -> bool {
        self.shared.queued_bytes.load(Ordering::Relaxed) >= self.shared.queue_max_bytes
    }

    /// True while writing the trail fails.
    pub fn is_failing(&self) -> bool {
        self.shared.failing.load(Ordering::Relaxed)
    }

    /// Completes at the first write failure (for `on_error = "shutdown"`).
    pub async fn failed(&self) {
        self.shared.failed.notified().await;
    }

    /// Ready once every record up to `seq` is durable.
    pub fn poll_durable(&self, seq: u64, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.durable.poll(seq, cx)
    }

    /// Enqueues an event; never blocks on the disk. When the queue is full, a `droppable`
    /// event is dropped (counted; its seq is declared by the next `loss` record); any other is
    /// queued beyond the budget, a session or security event only within its reserve
    /// ([`backlog`]). Returns the event's seq, `None` when dropped.
    pub fn submit(&self, event: &AuditEvent, droppable: bool) -> Option<u64> {
        self.shared.submit(event, droppable)
    }

    /// Enqueues a command line already rendered from `"instance_id"` on by
    /// [`line::push_command_body`], with the facet positions it returned, as
    /// [`submit`](Self::submit) does an event.
    pub fn submit_command(
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
    pub fn flush(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.shared.control(Control::Flush(ack)) {
            let _ = done.recv();
        }
    }

    /// Asks the writer to rotate now, after what is already queued (for SIGHUP and external
    /// rotation tools: the file they move away is complete, and `audit.log` is new).
    pub fn rotate(&self) {
        self.shared.control(Control::Rotate);
    }

    /// Counters of the `[[audit.sinks]]` sinks.
    pub fn sink_snapshots(&self) -> Vec<SinkSnapshot> {
        self.shared.sinks.snapshots()
    }

    /// Writes what is queued and stops the writer thread (and the sinks, once they sent what
    /// they hold or their grace ran out).
    pub fn close(&self) {
        self.shared.sinks.begin_close();
        {
            let mut queue = self.shared.lock();
            queue.open = false;
        }
        self.shared.wake.notify_one();
        if let Some(thread) = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = thread.join();
        }
    }

    /// Bytes of events waiting to be written (for the `audit_queue_bytes` metric).
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.load(Ordering::Relaxed)
    }
}

/// The durable watermark and who waits on it.
#[derive(Debug, Default)]
struct Durable {
    seq: AtomicU64,
    waiters: Mutex<Vec<Waker>>,
}

impl Durable {
    fn advance(&self, seq: u64) {
        self.seq.fetch_max(seq, Ordering::SeqCst);
        let waiters =
            std::mem::take(&mut *self.waiters.lock().unwrap_or_else(PoisonError::into_inner));
        for waker in waiters {
            waker.wake();
        }
    }

    fn poll(&self, seq: u64, cx: &mut Context<'_>) -> Poll<()> {
        if self.seq.load(Ordering::SeqCst) >= seq {
            return Poll::Ready(());
        }
        {
            let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
        }
        // Checked again: the writer may have advanced between the first look and the push.
        if self.seq.load(Ordering::SeqCst) >= seq {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Keeps the writer stalled until dropped.
#[derive(Debug)]
pub struct Stall(Arc<Shared>);

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

/// The writer's state across batches.
struct Writer<'a> {
    files: ActiveFile,
    batch: Batch,
    shared: &'a Shared,
}

impl Writer<'_> {
    /// Adds one queued line (without its newline) to the batch, rotating first when it would
    /// not fit the active file with a seal after it, and seals when `seal_records` lines are
    /// unsealed.
    fn append(&mut self, line: &[u8], queued: QueuedLine) {
        let Self { files, batch, shared, .. } = self;
        // A seal may follow any line (every `seal_records`, at the interval, at stop), and a
        // seal is never rotated away from the lines it seals: room is kept for one.
        let size = files.size + (batch.bytes.len() + line.len() + 1 + SEAL_ROOM) as u64;
        if size > files.rotate_bytes && write_batch(files, batch, shared) {
            files.rotate(&shared.envelope, &shared.stats);
        }
        if let Some(starts) = &queued.facets {
            files.index.add_command(line, starts);
        }
        files.records_in_file += 1;
        batch.bytes.extend_from_slice(line);
        batch.bytes.push(b'\n');
        batch.unhashed_lines += 1;
        batch.queued += queued.len;
        batch.events += 1;
        batch.last_seq = Some(queued.seq);
        if files.unsealed(batch) >= files.seal_records {
            files.seal(batch);
        }
        // A long queue (after a stall) is written as it is taken, so its copy here stays small
        // and its first replies are released early; a failing disk is retried at the tick.
        if batch.bytes.len() >= BATCH_WRITE_BYTES && !shared.failing.load(Ordering::Relaxed) {
            write_batch(files, batch, shared);
        }
    }

    /// Takes a batch of queued lines and controls, in order.
    fn take(&mut self, lines: &mut Lines, acks: &mut Vec<mpsc::SyncSender<()>>) {
        let mut controls = std::mem::take(&mut lines.controls).into_iter().peekable();
        let mut offset = 0;
        for (index, queued) in lines.lines.iter().enumerate() {
            while let Some((_, control)) = controls.next_if(|(at, _)| *at == index) {
                self.control(control, acks);
            }
            let line = &lines.bytes[offset..offset + queued.len - 1];
            offset += queued.len;
            self.append(line, *queued);
        }
        for (_, control) in controls {
            self.control(control, acks);
        }
    }

    fn control(&mut self, control: Control, acks: &mut Vec<mpsc::SyncSender<()>>) {
        match control {
            Control::Flush(ack) => acks.push(ack),
            Control::Rotate => {
                if write_batch(&mut self.files, &mut self.batch, self.shared) {
                    self.files.rotate(&self.shared.envelope, &self.shared.stats);
                }
            }
        }
    }
}

fn run_writer(files: ActiveFile, shared: &Shared) {
    let stats = &shared.stats;
    let envelope = &shared.envelope;
    let coalesce = files.coalesce;
    let mut writer = Writer {
        files,
        batch: Batch { bytes: Vec::with_capacity(1 << 20), ..Batch::default() },
        shared,
    };
    let mut taken = Lines::default();
    let mut acks = Vec::new();
    writer.files.enforce_retention(envelope, stats);
    loop {
        let open = {
            let mut queue = shared.lock();
            if queue.pending.is_empty() && queue.open {
                queue.writer_waiting = true;
                queue =
                    shared.wake.wait_timeout(queue, TICK).unwrap_or_else(PoisonError::into_inner).0;
                queue.writer_waiting = false;
            }
            std::mem::swap(&mut queue.pending, &mut taken);
            queue.open
        };
        if !open && taken.is_empty() {
            break;
        }
        while shared.stalled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let processed = taken.lines.len();
        writer.take(&mut taken, &mut acks);
        taken.clear();
        let Writer { files, batch, .. } = &mut writer;
        if files.unsealed(batch) > 0 && files.sealed_at.elapsed() >= files.seal_interval {
            files.seal(batch);
        }
        if write_batch(&mut writer.files, &mut writer.batch, shared) {
            writer.files.rotate_if_old(envelope, stats);
        }
        shared.record_sink_losses();
        let waited_on = !acks.is_empty();
        if waited_on {
            // A flush also waits for the indexes of files already rotated.
            writer.files.join_index_savers();
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        if let (Some(pause), true) = (coalesce, processed > 0 && !waited_on && open) {
            // Not waiting on the queue meanwhile: producers enqueue without waking this thread.
            std::thread::sleep(pause);
        }
    }
    if !shared.sinks.is_empty() {
        // Everything up to `stop` goes to the sinks, which get their grace to send it; what
        // they could not is recorded before the final seal, which they get too.
        write_batch(&mut writer.files, &mut writer.batch, shared);
        shared.sinks.drain();
        shared.record_sink_losses();
        let mut last = Lines::default();
        std::mem::swap(&mut shared.lock().pending, &mut last);
        writer.take(&mut last, &mut acks);
    }
    let Writer { mut files, mut batch, .. } = writer;
    // The last line of a run is a seal over everything before it (the one just made, when
    // nothing came after it).
    if files.unsealed(&batch) > 0 {
        files.seal(&mut batch);
    }
    write_batch(&mut files, &mut batch, shared);
    shared.sinks.close(CLOSE_SEAL_GRACE);
    let late: u64 = shared.sinks.take_file_notes().iter().map(|missed| missed.lines).sum();
    if late > 0 {
        // Nothing can follow the final seal in the file: the log says it.
        tracing::warn!(
            lines = late,
            "audit sinks could not send the end of the run (counted in audit_sink_dropped_total)"
        );
    }
}

/// How long the sinks get to send the final seal, after they sent the rest of a run.
const CLOSE_SEAL_GRACE: Duration = Duration::from_secs(1);

/// Writes the batch; on failure keeps it for the next try (its queue budget stays taken, so a
/// failing disk fills the queue and `on_full` applies). Notes failure and recovery as system
/// events, sequenced like the rest, and written once the disk works again.
fn write_batch(files: &mut ActiveFile, batch: &mut Batch, shared: &Shared) -> bool {
    if batch.bytes.is_empty() {
        return true;
    }
    files.hash_batch(batch);
    let started = tokio::time::Instant::now();
    match files.write(&batch.bytes) {
        Ok(()) => {
            files.note_last_line(&batch.bytes);
            if files.fsync {
                // The write itself is a copy to the page cache; the time is the fsync's.
                let micros = started.elapsed().as_micros() as u64;
                shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                shared.stats.fsync_micros.fetch_add(micros, Ordering::Relaxed);
            }
            shared.stats.bytes_written.fetch_add(batch.bytes.len() as u64, Ordering::Relaxed);
            shared.stats.written.fetch_add(batch.events, Ordering::Relaxed);
            shared.queued_bytes.fetch_sub(batch.queued, Ordering::Relaxed);
            if let Some(seq) = batch.last_seq.take() {
                shared.durable.advance(seq);
            }
            batch.bytes.clear();
            (batch.queued, batch.events, batch.hashed) = (0, 0, 0);
            if shared.failing.swap(false, Ordering::SeqCst) {
                tracing::warn!("writing the audit trail works again");
                let errors = shared.stats.write_errors.load(Ordering::Relaxed);
                shared.system("sink_recovered", json!({"write_errors": errors}));
            }
            true
        }
        Err(error) => {
            shared.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            if !shared.failing.swap(true, Ordering::SeqCst) {
                tracing::error!(%error, "writing the audit trail failed; retrying every second");
                shared.system("sink_failed", json!({"error": error.to_string()}));
                shared.failed.notify_one();
            }
            false
        }
    }
}

/// Identifies a checkpoint key without revealing it: the first 16 hex digits of its SHA-256.
pub fn checkpoint_key_id(key: &[u8]) -> String {
    hex_sha256(key)[..16].to_owned()
}

pub use chain::checkpoint_hmac;

/// Lower-case hex SHA-256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(64);
    hex_sha256_into(bytes, &mut out);
    out
}

/// [`hex_sha256`] into `out`, replacing what it held (no allocation: once per line).
pub fn hex_sha256_into(bytes: &[u8], out: &mut String) {
    let mut text = [0u8; 64];
    for (pair, byte) in text.chunks_exact_mut(2).zip(Sha256::digest(bytes)) {
        pair[0] = line::HEX[usize::from(byte >> 4)];
        pair[1] = line::HEX[usize::from(byte & 15)];
    }
    out.clear();
    // Only hex digits were written.
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
}
