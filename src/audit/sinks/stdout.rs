//! The stdout sink's thread: the file's lines, one JSON object a line, on the proxy's stdout
//! (for `kubectl logs` and node agents); the proxy's own logs stay on stderr.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Missed, SinkShared};
use crate::audit::schema::Envelope;

/// Writes what is queued until the log closes. A write that fails (stdout closed) loses those
/// lines, declared as any other loss; a stdout nobody reads fills the queue (`on_full`).
pub(super) fn run(shared: &SinkShared, envelope: &Envelope) {
    let counters = shared.counters();
    let mut taken = Vec::new();
    let mut failing = false;
    while shared.take(&mut taken, Duration::from_millis(200)) {
        if taken.is_empty() {
            continue;
        }
        let lines = memchr::memchr_iter(b'\n', &taken).count() as u64;
        let mut out = std::io::stdout().lock();
        match out.write_all(&taken).and_then(|()| out.flush()) {
            Ok(()) => {
                counters.sent.fetch_add(lines, Ordering::Relaxed);
                failing = false;
            }
            Err(error) => {
                shared.note_error();
                if !failing {
                    tracing::error!(sink = shared.name(), %error, "writing audit lines to stdout failed");
                    failing = true;
                }
                let mut missed = Missed::new(shared.name(), "write_failed");
                missed.add_lines(&taken);
                shared.note_lost(&missed, envelope);
            }
        }
        counters.queue_bytes.store(0, Ordering::Relaxed);
    }
}
