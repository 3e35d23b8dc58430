//! The writer thread: takes the whole queue at once, appends its lines to the batch (sealing
//! and rotating as they go), writes the batch, acknowledges flushes, and at close writes the
//! final seal. A failed write keeps the batch for the next try and says so in the trail.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, PoisonError};
use std::time::Duration;

use serde_json::json;

use super::active::{ActiveFile, Batch};
use super::queue::{Control, Lines, QueuedLine, Shared};

/// A batch this large is written before the rest of what the writer took is batched.
const BATCH_WRITE_BYTES: usize = 4 << 20;

/// Bytes kept free in the active file for the seal that may follow its last line (a seal line
/// with an HMAC checkpoint is about 330 bytes).
const SEAL_ROOM: usize = 512;

/// How often the writer wakes up without events, to rotate by time.
const TICK: Duration = Duration::from_secs(1);

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

/// The writer thread: takes what the queue holds, batch by batch, until the log closes; then
/// writes the rest, lets the sinks send it, and ends the run with a seal. `coalesce`:
/// [`WriterConfig::coalesce`](super::WriterConfig::coalesce), a setting of this loop only.
pub(super) fn run_writer(files: ActiveFile, coalesce: Option<Duration>, shared: &Shared) {
    let stats = &shared.stats;
    let envelope = &shared.envelope;
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
        #[cfg(feature = "test-util")]
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
