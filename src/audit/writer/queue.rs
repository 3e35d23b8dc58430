//! The queue between the proxy's threads and the writer thread: lines rendered by the
//! producers, appended under one lock with their `seq`, the loss accounting of what does not fit
//! ([`backlog`]), the controls (flush, rotate) in queue order, and the durable watermark the
//! writer advances and connections wait on.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use crate::audit::backlog::{self, Budget, Kind};
use crate::audit::event::{event_time, render_body, AuditEvent};
use crate::audit::index::FacetStarts;
use crate::audit::line::with_scratch;
use crate::audit::schema::{push_head, Envelope, HEAD_MAX_BYTES};
use crate::audit::sinks::Sinks;
use crate::audit::time::rfc3339_micros_bytes;
use crate::event::SystemEvent;
use crate::util::sync::LockAnyway;

use super::AuditStats;

/// One rendered line waiting in the queue.
#[derive(Debug, Clone, Copy)]
pub(super) struct QueuedLine {
    /// Its bytes, newline included.
    pub(super) len: usize,
    pub(super) seq: u64,
    /// For a command line: where the values the query index counts start in it.
    pub(super) facets: Option<FacetStarts>,
}

/// What the writer is asked besides lines, in queue order.
#[derive(Debug)]
pub(super) enum Control {
    /// Acknowledge once everything before it was tried.
    Flush(mpsc::SyncSender<()>),
    /// Rotate now (SIGHUP): close the active file under its rotated name, start a new one.
    Rotate,
}

/// Lines rendered by the proxy's threads, in `seq` order, as the bytes they are written as.
/// Swapped whole between the two sides.
#[derive(Debug, Default)]
pub(super) struct Lines {
    pub(super) bytes: Vec<u8>,
    pub(super) lines: Vec<QueuedLine>,
    /// Each control with the number of lines before it.
    pub(super) controls: Vec<(usize, Control)>,
}

impl Lines {
    pub(super) fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.controls.is_empty()
    }

    /// Appends one line: the head (with `seq`), then `body`. `facets` are positions in `body`.
    pub(super) fn push(
        &mut self,
        time: &[u8; 27],
        seq: u64,
        body: &[u8],
        facets: Option<&FacetStarts>,
    ) -> usize {
        let start = self.bytes.len();
        push_head(&mut self.bytes, time, Some(seq));
        let head = self.bytes.len() - start;
        self.bytes.extend_from_slice(body);
        self.bytes.push(b'\n');
        let len = self.bytes.len() - start;
        let facets = facets.map(|starts| starts.map(|at| at.saturating_add(head)));
        self.lines.push(QueuedLine { len, seq, facets });
        len
    }

    /// Empties it, releasing what a burst made it hold beyond a normal batch.
    pub(super) fn clear(&mut self) {
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
pub(super) struct Queue {
    pub(super) next_seq: u64,
    /// Dropped sequence numbers not yet reported.
    pub(super) lost: backlog::Lost,
    /// False once the log is closing: nothing more is taken.
    pub(super) open: bool,
    pub(super) pending: Lines,
    /// The writer waits on `Shared::wake` for lines (set and cleared by it, under the lock):
    /// producers signal only then, so a busy or coalescing writer costs them no wake-up.
    pub(super) writer_waiting: bool,
}

/// What the proxy's threads and the writer thread share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) queue: Mutex<Queue>,
    pub(super) wake: Condvar,
    /// Bytes of lines enqueued and not yet written (a failed batch stays counted).
    pub(super) queued_bytes: AtomicUsize,
    pub(super) queue_max_bytes: usize,
    pub(super) stats: AuditStats,
    /// Set by [`AuditLog::stall`](super::AuditLog::stall): the writer waits before its next
    /// batch while it is (a test hook: built with the `test-util` feature only).
    #[cfg(feature = "test-util")]
    pub(super) stalled: AtomicBool,
    /// Every record with a seq up to this is written (and fsynced, with `fsync`).
    pub(super) durable: Durable,
    /// Set while writes fail (disk full, I/O error); cleared by the first that succeeds.
    pub(super) failing: AtomicBool,
    /// Signalled at the first failure of a run of them (`on_error = "shutdown"` waits on it).
    pub(super) failed: tokio::sync::Notify,
    pub(super) envelope: Envelope,
    /// The sinks the writer hands what it wrote to.
    pub(super) sinks: Arc<Sinks>,
}

impl Shared {
    /// The state of a writer whose queue holds at most `queue_max_bytes` (see [`backlog`]),
    /// empty, open, its first `seq` 1.
    pub(super) fn new(queue_max_bytes: usize, envelope: Envelope, sinks: Arc<Sinks>) -> Self {
        Self {
            queue: Mutex::new(Queue {
                next_seq: 1,
                lost: backlog::Lost::default(),
                open: true,
                pending: Lines::default(),
                writer_waiting: false,
            }),
            wake: Condvar::new(),
            queued_bytes: AtomicUsize::new(0),
            queue_max_bytes,
            stats: AuditStats::default(),
            #[cfg(feature = "test-util")]
            stalled: AtomicBool::new(false),
            durable: Durable::default(),
            failing: AtomicBool::new(false),
            failed: tokio::sync::Notify::new(),
            envelope,
            sinks,
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock_anyway()
    }

    /// Enqueues the line of an event of `kind` that happened at `time`, whose fields after
    /// the head are `body` (see [`crate::audit::line`]), if its `budget` admits it; a command line's
    /// `facets` are positions in `body`.
    pub(super) fn submit_line(
        &self,
        time: SystemTime,
        body: &[u8],
        facets: Option<&FacetStarts>,
        (budget, kind): (Budget, Option<Kind>),
    ) -> Option<u64> {
        let time = rfc3339_micros_bytes(time);
        let bytes = HEAD_MAX_BYTES + body.len();
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

    pub(super) fn wake_writer(&self, mut queue: std::sync::MutexGuard<'_, Queue>) {
        if std::mem::take(&mut queue.writer_waiting) {
            drop(queue);
            self.wake.notify_one();
        }
    }

    pub(super) fn submit(&self, event: &AuditEvent, droppable: bool) -> Option<u64> {
        let budget = if droppable { Budget::Droppable } else { Budget::of_event(event) };
        with_scratch(|body| {
            render_body(event, &self.envelope, body);
            self.submit_line(event_time(event), body, None, (budget, Kind::of_event(event)))
        })
    }

    pub(super) fn system(&self, action: &'static str, detail: serde_json::Value) {
        self.submit(
            &AuditEvent::System(SystemEvent { action, time: SystemTime::now(), detail }),
            false,
        );
    }

    /// Queues a system event of the writer's own, even once the log is closing (the losses of
    /// sinks, found while it writes its last batches), sequenced like the rest.
    pub(super) fn system_from_writer(&self, action: &'static str, detail: serde_json::Value) {
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
    pub(super) fn record_sink_losses(&self) {
        for missed in self.sinks.take_file_notes() {
            self.system_from_writer("sink_loss", missed.detail());
        }
    }

    pub(super) fn control(&self, control: Control) -> bool {
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

/// The durable watermark and who waits on it.
#[derive(Debug, Default)]
pub(super) struct Durable {
    seq: AtomicU64,
    waiters: Mutex<Vec<Waker>>,
}

impl Durable {
    pub(super) fn advance(&self, seq: u64) {
        self.seq.fetch_max(seq, Ordering::SeqCst);
        let waiters = std::mem::take(&mut *self.waiters.lock_anyway());
        for waker in waiters {
            waker.wake();
        }
    }

    pub(super) fn poll(&self, seq: u64, cx: &mut Context<'_>) -> Poll<()> {
        if self.seq.load(Ordering::SeqCst) >= seq {
            return Poll::Ready(());
        }
        {
            let mut waiters = self.waiters.lock_anyway();
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
