//! The sinks beside the audit files (`[[audit.sinks]]`): each a bounded queue of the file's own
//! lines, fed by the writer thread after it wrote them, and drained by the sink's own thread
//! (`syslog`, `stdout`). What a sink misses is declared, to it by a `loss` line in its copy and
//! to the file by a `sink_loss` record.
//!
//! The writer hands over exactly the bytes it wrote to the file (`file_open`, records, seals,
//! `file_delete`), so a collector's copy can be checked against the file line by line. Handing
//! over is one copy into the queue under its lock; framing and sending happen on the sink's
//! thread. A sink whose queue is full misses lines (`on_full = "drop"`) or makes the writer wait
//! (`"block"`), and nothing else: a collector that is down never stops the file.

pub mod config;
mod connection;
mod relp;
mod stdout;
pub mod syslog;
mod transport;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use memchr::memmem::Finder;
use tokio::time::Instant;

use serde_json::json;

use crate::audit::event::{render, AuditEvent};
use crate::audit::schema::Envelope;
use crate::audit::sinks::config::{SinkConfig, SinkKind, SinkOnFull};
use crate::event::{SinkSnapshot, SystemEvent};
use crate::util::sync::LockAnyway;

/// A take of fewer bytes than this waits `coalesce_ms` for more.
const COALESCE_BELOW_BYTES: usize = 32 * 1024;
/// How long closing waits for the sinks to send what they hold.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long closing then waits for an abandoned sink's thread to declare what it held (it
/// notices between two attempts: a connection attempt lasts up to `connect_timeout_ms`).
const GIVE_UP_WAIT: Duration = Duration::from_secs(1);

/// Lines a sink missed: their seq range (lines without a seq, such as seals, are counted but
/// have none) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Missed {
    /// The sink's name.
    pub sink: String,
    /// `queue_full`, `connection_lost`, `write_failed` or `closed`.
    pub reason: &'static str,
    /// Lowest and highest seq among them (`None`: only lines without one).
    pub seqs: Option<(u64, u64)>,
    /// How many lines.
    pub lines: u64,
}

impl Missed {
    fn new(sink: &str, reason: &'static str) -> Self {
        Self { sink: sink.to_owned(), reason, seqs: None, lines: 0 }
    }

    /// Adds the lines of `bytes` (whole lines). The file's lines are in `seq` order, so only
    /// the first and the last line that have one are read, and lines are found with `memchr`:
    /// a sink that misses a whole queue (a collector that never reads) costs the writer little
    /// more than a newline count.
    fn add_lines(&mut self, bytes: &[u8]) {
        let mut first = None;
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len())) {
            let line = &bytes[start..end];
            start = end + 1;
            if !line.is_empty() {
                self.lines += 1;
                if first.is_none() {
                    first = line_seq(line);
                }
            }
        }
        let Some(first) = first else { return };
        let mut end = bytes.len();
        let mut last = None;
        for at in memchr::memrchr_iter(b'\n', bytes).chain(std::iter::once(usize::MAX)) {
            let from = at.wrapping_add(1);
            if let Some(seq) = (from < end).then(|| line_seq(&bytes[from..end])).flatten() {
                last = Some(seq);
                break;
            }
            end = at;
        }
        let last = last.unwrap_or(first);
        self.add_range(first.min(last), first.max(last));
    }

    fn add(&mut self, seq: Option<u64>) {
        self.lines += 1;
        if let Some(seq) = seq {
            self.add_range(seq, seq);
        }
    }

    /// Widens the seq range to cover `lo..=hi` (lines are counted by the caller).
    fn add_range(&mut self, lo: u64, hi: u64) {
        self.seqs = Some(self.seqs.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
    }

    /// The fields of the `loss` (copy) and `sink_loss` (file) records.
    pub(crate) fn detail(&self) -> serde_json::Value {
        let (first, last) = self.seqs.map_or((None, None), |(lo, hi)| (Some(lo), Some(hi)));
        json!({"lost": {"sink": self.sink, "reason": self.reason, "first_seq": first,
                        "last_seq": last, "lines": self.lines}})
    }

    /// The unsequenced `loss` line a sink's copy gets where the gap is.
    fn render_line(&self, envelope: &Envelope, out: &mut Vec<u8>) {
        let event = AuditEvent::System(SystemEvent {
            action: "loss",
            time: SystemTime::now(),
            detail: self.detail(),
        });
        render(&event, None, envelope, out);
        out.push(b'\n');
    }
}

/// The `seq` of a line, read from its head (`{"time":"…","seq":N,`); `None` for the writer's
/// own lines, which have none.
pub(crate) fn line_seq(line: &[u8]) -> Option<u64> {
    let head = &line[..line.len().min(crate::audit::schema::HEAD_MAX_BYTES)];
    static SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"seq\":"));
    let at = SEQ.find(head)? + 6;
    let digits = head[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&head[at..at + digits]).ok()?.parse().ok()
}

/// A sink's counters (`/metrics`: `audit_sink_*{sink="…"}`).
#[derive(Debug, Default)]
pub(crate) struct SinkCounters {
    /// Lines delivered to the destination (written to its socket or stream; with RELP,
    /// acknowledged by the collector).
    pub sent: AtomicU64,
    /// Lines missed: dropped from a full queue, or declared lost with a broken connection.
    pub dropped: AtomicU64,
    /// Bytes held for the sink: its queue and what its thread took and has not sent yet.
    pub queue_bytes: AtomicUsize,
    /// Connections made after the first.
    pub reconnects: AtomicU64,
    /// Failed connection attempts and writes.
    pub errors: AtomicU64,
    /// When the last error happened (Unix seconds; 0: never). The error's text is logged, never
    /// a metric label.
    pub(crate) last_error_unix: AtomicU64,
    /// Records cut to fit `max_message_bytes`.
    pub truncated: AtomicU64,
    /// RELP: messages sent again on a new session because the collector had not
    /// acknowledged them when the last one broke.
    pub resent: AtomicU64,
}

/// What the writer and one sink's thread share.
#[derive(Debug)]
pub(crate) struct SinkShared {
    name: String,
    on_full: SinkOnFull,
    capacity: usize,
    queue: Mutex<SinkQueue>,
    /// Signalled when lines arrive or the sinks close.
    ready: Condvar,
    /// Signalled when the sink's thread took lines (room for a blocked writer).
    room: Condvar,
    /// Set once the writer is done: the thread sends what it holds and stops.
    closing: AtomicBool,
    /// Set when the log starts closing: a writer blocked on this full queue waits at most
    /// [`CLOSE_GRACE`] more, so that a collector that is down cannot hold a shutdown.
    unblock: AtomicBool,
    /// Set when closing ran out of time for this sink with lines still held: its thread stops
    /// trying and declares them lost, so that the file records it before its final seal.
    abandoned: AtomicBool,
    counters: SinkCounters,
    /// Losses the file has not recorded yet (`sink_loss`), taken by the writer.
    file_notes: Mutex<Vec<Missed>>,
}

#[derive(Debug, Default)]
struct SinkQueue {
    bytes: Vec<u8>,
    /// Lines dropped since the last ones queued: declared by a `loss` line before the next.
    missed: Option<Missed>,
}

impl SinkShared {
    /// The empty queue of the sink `name`, holding at most `capacity` bytes.
    fn new(name: String, on_full: SinkOnFull, capacity: usize) -> Self {
        Self {
            name,
            on_full,
            capacity,
            queue: Mutex::new(SinkQueue::default()),
            ready: Condvar::new(),
            room: Condvar::new(),
            closing: AtomicBool::new(false),
            unblock: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            counters: SinkCounters::default(),
            file_notes: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SinkQueue> {
        self.queue.lock_anyway()
    }

    /// Notes a failure: counted and stamped; `error` is logged, rate-limited by the caller.
    pub(crate) fn note_error(&self) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        self.counters.last_error_unix.store(now.as_secs(), Ordering::Relaxed);
    }

    /// Declares lines lost by the sink's thread (a broken connection): the copy gets a `loss`
    /// line before what is queued next, the file a `sink_loss` record.
    pub(crate) fn note_lost(&self, missed: &Missed, envelope: &Envelope) -> Vec<u8> {
        self.counters.dropped.fetch_add(missed.lines, Ordering::Relaxed);
        self.file_notes.lock_anyway().push(missed.clone());
        let mut line = Vec::with_capacity(256);
        missed.render_line(envelope, &mut line);
        line
    }

    /// Takes what is queued into `out` (emptied first), waiting up to `wait` for something.
    /// Returns false once closing and nothing is left.
    pub(crate) fn take(&self, out: &mut Vec<u8>, wait: Duration) -> bool {
        out.clear();
        let mut queue = self.lock();
        if queue.bytes.is_empty() && !self.closing.load(Ordering::SeqCst) {
            queue = self.ready.wait_timeout(queue, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
        std::mem::swap(&mut queue.bytes, out);
        // Under the lock, so that the lines are always counted on one side or the other.
        self.counters.queue_bytes.store(out.len(), Ordering::SeqCst);
        let closing = self.closing.load(Ordering::SeqCst);
        drop(queue);
        self.room.notify_all();
        !(closing && out.is_empty())
    }

    /// After a [`SinkShared::take`] that got few lines: waits `pause` (unless closing), then
    /// appends what arrived meanwhile to `out`. Fewer, larger writes to the collector: a
    /// system call and a TLS record each.
    pub(crate) fn take_more(&self, out: &mut Vec<u8>, pause: Duration) {
        if pause.is_zero() || out.len() >= COALESCE_BELOW_BYTES {
            return;
        }
        connection::sleep_unless_closing(self, pause);
        let mut queue = self.lock();
        out.extend_from_slice(&queue.bytes);
        queue.bytes.clear();
        self.counters.queue_bytes.store(out.len(), Ordering::SeqCst);
        drop(queue);
        self.room.notify_all();
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// See `abandoned`: the thread should stop and call [`SinkShared::give_up`].
    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// The end of a thread that could not deliver everything: `missed` (the lines it held)
    /// and whatever is still queued are declared lost, and nothing is held any more.
    pub(crate) fn give_up(&self, mut missed: Missed, envelope: &Envelope) {
        let queued = std::mem::take(&mut self.lock().bytes);
        missed.add_lines(&queued);
        if missed.lines > 0 {
            self.note_lost(&missed, envelope);
        }
        // Only now: `drain` takes the notes once nothing is held.
        self.counters.queue_bytes.store(0, Ordering::SeqCst);
    }

    /// Lines queued or taken by the thread and not delivered yet.
    fn holds_lines(&self) -> bool {
        !self.lock().bytes.is_empty() || self.counters.queue_bytes.load(Ordering::SeqCst) > 0
    }

    pub(crate) fn counters(&self) -> &SinkCounters {
        &self.counters
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Declares the gap not yet declared (nothing more may come to declare it: the log is
    /// closing), past the queue's budget by one line.
    fn declare_pending(&self, envelope: &Envelope) {
        let mut queue = self.lock();
        if let Some(missed) = queue.missed.take() {
            missed.render_line(envelope, &mut queue.bytes);
            self.file_notes.lock_anyway().push(missed);
        }
        drop(queue);
        self.ready.notify_one();
    }

    /// Queues `bytes` (whole lines) as the sink's `on_full` says.
    fn offer(&self, bytes: &[u8], envelope: &Envelope) {
        let mut queue = self.lock();
        let mut room = self.capacity.saturating_sub(queue.bytes.len());
        if self.on_full == SinkOnFull::Block {
            let waiting_since = Instant::now();
            // A batch larger than the whole queue is taken once the queue is empty.
            while !queue.bytes.is_empty()
                && queue.bytes.len() + bytes.len() > self.capacity
                && !(self.unblock.load(Ordering::SeqCst) && waiting_since.elapsed() > CLOSE_GRACE)
            {
                queue = self
                    .room
                    .wait_timeout(queue, Duration::from_millis(100))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            room = self.capacity.saturating_sub(queue.bytes.len());
            if queue.bytes.is_empty() {
                // A batch larger than the whole queue is taken whole once the queue is empty.
                room = room.max(bytes.len());
            }
        }
        let fits = if bytes.len() <= room {
            bytes.len()
        } else {
            // The whole lines that fit; the rest is missed.
            memchr::memrchr(b'\n', &bytes[..room]).map_or(0, |at| at + 1)
        };
        if fits > 0 {
            if let Some(missed) = queue.missed.take() {
                // The gap is declared where it is: after the lines before it.
                missed.render_line(envelope, &mut queue.bytes);
                self.file_notes.lock_anyway().push(missed);
            }
            queue.bytes.extend_from_slice(&bytes[..fits]);
        }
        if fits < bytes.len() {
            let missed = queue.missed.get_or_insert_with(|| Missed::new(&self.name, "queue_full"));
            let before = missed.lines;
            missed.add_lines(&bytes[fits..]);
            let dropped = missed.lines - before;
            self.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        drop(queue);
        self.ready.notify_one();
    }
}

/// The sinks of one audit log.
#[derive(Debug)]
pub(crate) struct Sinks {
    sinks: Vec<Arc<SinkShared>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    envelope: Envelope,
    /// Set by [`close`](Self::close): nothing more is handed over.
    closed: AtomicBool,
}

impl Sinks {
    /// Starts one thread per sink. Failing to connect is not an error here: a sink connects
    /// (and reconnects) on its thread, and misses what its queue cannot hold meanwhile.
    pub(crate) fn start(configs: &[SinkConfig], envelope: Envelope) -> std::io::Result<Self> {
        let mut sinks = Vec::with_capacity(configs.len());
        let mut threads = Vec::with_capacity(configs.len());
        for config in configs {
            let shared =
                Arc::new(SinkShared::new(config.name.clone(), config.on_full, config.queue_bytes));
            let thread = std::thread::Builder::new().name(format!("audit-sink-{}", config.name));
            let (for_thread, envelope) = (Arc::clone(&shared), envelope.clone());
            let thread = match &config.kind {
                SinkKind::Stdout => thread.spawn(move || stdout::run(&for_thread, &envelope))?,
                SinkKind::Syslog(syslog) => {
                    let syslog = syslog.clone();
                    if syslog.transport.is_relp() {
                        thread.spawn(move || relp::run(&for_thread, &syslog, &envelope))?
                    } else {
                        thread.spawn(move || transport::run(&for_thread, &syslog, &envelope))?
                    }
                }
            };
            sinks.push(shared);
            threads.push(thread);
        }
        Ok(Self { sinks, threads: Mutex::new(threads), envelope, closed: AtomicBool::new(false) })
    }

    /// True when there is no sink.
    pub(crate) fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Hands lines just written to the file (whole lines) to every sink.
    pub(crate) fn offer(&self, bytes: &[u8]) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        for sink in &self.sinks {
            sink.offer(bytes, &self.envelope);
        }
    }

    /// The losses the file has not recorded yet, as `sink_loss` records to write.
    pub(crate) fn take_file_notes(&self) -> Vec<Missed> {
        self.sinks
            .iter()
            .flat_map(|sink| std::mem::take(&mut *sink.file_notes.lock_anyway()))
            .collect()
    }

    /// Counters of every sink.
    pub(crate) fn snapshots(&self) -> Vec<SinkSnapshot> {
        self.sinks
            .iter()
            .map(|sink| {
                let c = &sink.counters;
                SinkSnapshot {
                    name: sink.name.clone(),
                    sent: c.sent.load(Ordering::Relaxed),
                    dropped: c.dropped.load(Ordering::Relaxed),
                    queue_bytes: (c.queue_bytes.load(Ordering::Relaxed) + sink.lock().bytes.len())
                        as u64,
                    reconnects: c.reconnects.load(Ordering::Relaxed),
                    errors: c.errors.load(Ordering::Relaxed),
                    last_error_unix: c.last_error_unix.load(Ordering::Relaxed),
                    truncated: c.truncated.load(Ordering::Relaxed),
                    resent: c.resent.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// The log is closing: a writer blocked on a full sink waits at most [`CLOSE_GRACE`].
    pub(crate) fn begin_close(&self) {
        for sink in &self.sinks {
            sink.unblock.store(true, Ordering::SeqCst);
        }
    }

    /// Waits, up to [`CLOSE_GRACE`], until every sink sent what it was handed.
    pub(crate) fn drain(&self) {
        let deadline = Instant::now() + CLOSE_GRACE;
        for sink in &self.sinks {
            while Instant::now() < deadline && sink.holds_lines() {
                std::thread::sleep(Duration::from_millis(2));
            }
            if sink.holds_lines() {
                // Out of time (a collector that is down): the thread declares what it holds.
                sink.abandoned.store(true, Ordering::SeqCst);
                sink.ready.notify_all();
                let given_up = Instant::now() + GIVE_UP_WAIT;
                while Instant::now() < given_up && sink.holds_lines() {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            // What it missed last is declared now, so that the file records it before its
            // final seal.
            sink.declare_pending(&self.envelope);
        }
    }

    pub(crate) fn close(&self, grace: Duration) {
        self.begin_close();
        self.closed.store(true, Ordering::SeqCst);
        for sink in &self.sinks {
            sink.declare_pending(&self.envelope);
            sink.closing.store(true, Ordering::SeqCst);
            sink.ready.notify_all();
        }
        let deadline = Instant::now() + grace;
        let threads = std::mem::take(&mut *self.threads.lock_anyway());
        for (sink, thread) in self.sinks.iter().zip(threads) {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
            let mut queue = sink.lock();
            let mut missed =
                queue.missed.take().unwrap_or_else(|| Missed::new(&sink.name, "closed"));
            let held = std::mem::take(&mut queue.bytes);
            drop(queue);
            let before = missed.lines;
            missed.add_lines(&held);
            sink.counters.dropped.fetch_add(missed.lines - before, Ordering::Relaxed);
            if missed.lines > 0 {
                sink.file_notes.lock_anyway().push(missed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::sinks::config::SinkOnFull;

    fn envelope() -> Envelope {
        Envelope::new(crate::audit::config::KeyNames::Clear, "i".into(), "n".into(), "u".into())
    }

    fn sink(capacity: usize) -> SinkShared {
        SinkShared::new("s".into(), SinkOnFull::Drop, capacity)
    }

    fn lines(seqs: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in seqs {
            out.extend_from_slice(
                format!("{{\"time\":\"2026-12-06T05:07:32.123456Z\",\"seq\":{seq},\"kind\":\"command\"}}\n")
                    .as_bytes(),
            );
        }
        out
    }

    #[test]
    fn the_seq_is_read_from_the_head() {
        assert_eq!(line_seq(&lines(42..=42)), Some(42));
        assert_eq!(
            line_seq(b"{\"time\":\"2026-12-06T05:07:32.123456Z\",\"kind\":\"system\"}"),
            None
        );
    }

    #[test]
    fn a_full_queue_keeps_whole_lines_and_declares_the_rest_where_the_gap_is() {
        let envelope = envelope();
        let one = lines(1..=1).len();
        let sink = sink(one * 3 + 10);
        sink.offer(&lines(1..=5), &envelope);
        assert_eq!(sink.counters.dropped.load(Ordering::Relaxed), 2);
        let mut taken = Vec::new();
        assert!(sink.take(&mut taken, Duration::ZERO));
        assert_eq!(taken, lines(1..=3));
        sink.offer(&lines(6..=6), &envelope);
        sink.take(&mut taken, Duration::ZERO);
        let text = String::from_utf8(taken).unwrap();
        let mut got = text.lines();
        let loss: serde_json::Value = serde_json::from_str(got.next().unwrap()).unwrap();
        assert_eq!(loss["action"], "loss");
        assert_eq!(
            loss["lost"],
            json!({"sink": "s", "reason": "queue_full", "first_seq": 4, "last_seq": 5, "lines": 2})
        );
        assert_eq!(line_seq(got.next().unwrap().as_bytes()), Some(6));
        let notes = std::mem::take(&mut *sink.file_notes.lock().unwrap());
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].seqs, Some((4, 5)));
    }

    #[test]
    fn missed_lines_count_every_line_and_range_the_sequenced_ones() {
        let seal = b"{\"time\":\"t\",\"kind\":\"system\",\"action\":\"seal\"}\n";
        let mut bytes = seal.to_vec();
        bytes.extend(lines(7..=9));
        bytes.extend_from_slice(seal);
        let mut missed = Missed::new("s", "queue_full");
        missed.add_lines(&bytes);
        assert_eq!((missed.lines, missed.seqs), (5, Some((7, 9))));
        missed.add_lines(seal);
        missed.add_lines(&lines(3..=3));
        assert_eq!((missed.lines, missed.seqs), (7, Some((3, 9))));
        missed.add_lines(b"");
        assert_eq!(missed.lines, 7);
    }
}
