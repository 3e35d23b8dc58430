//! A syslog sink's thread: connects to the collector (TCP, TLS or UDP), reconnects with a
//! bounded exponential back-off, sends the queued lines as RFC 5424 messages, and declares
//! what a broken connection may have taken with it.
//!
//! TCP tells the sending program nothing about what the collector read: when a connection
//! breaks, the messages in the kernel's buffers and the collector's are gone, and which ones
//! cannot be known. So the last `inflight_bytes` sent on it are declared lost (a `loss` line
//! sent first on the next connection, a `sink_loss` record in the file): the declared range
//! covers what is missing, and may name some lines that did arrive.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::connection::{Attempts, Connection};
use super::syslog::{push_octet_counted, Header};
use super::{line_seq, Missed, SinkShared};
use crate::audit::schema::Envelope;
use crate::audit::sinks::config::SyslogConfig;

/// Bytes of framed messages written at once.
const CHUNK_BYTES: usize = 64 * 1024;
/// How often, at most, a connection is looked at for a collector that closed it.
const OPEN_CHECK_EVERY: Duration = Duration::from_millis(10);
/// How long the thread waits for lines before looking again.
pub(super) const TICK: Duration = Duration::from_millis(200);

/// What was sent on the current connection, newest last, kept while it is within the last
/// `inflight_bytes`: what a break declares lost.
struct InFlight {
    chunks: VecDeque<(Missed, usize)>,
    bytes: usize,
    limit: usize,
}

impl InFlight {
    fn push(&mut self, sent: Missed, bytes: usize) {
        self.chunks.push_back((sent, bytes));
        self.bytes += bytes;
        while self.chunks.front().is_some_and(|(_, oldest)| self.bytes - oldest >= self.limit) {
            if let Some((_, oldest)) = self.chunks.pop_front() {
                self.bytes -= oldest;
            }
        }
    }

    /// Everything held, as one range (emptied).
    fn take(&mut self, into: &mut Missed) {
        for (chunk, _) in self.chunks.drain(..) {
            into.lines += chunk.lines;
            if let Some((lo, hi)) = chunk.seqs {
                into.add_range(lo, hi);
            }
        }
        self.bytes = 0;
    }
}

/// The thread's loop: until the log closes and everything queued was sent (or declared lost).
pub(super) fn run(shared: &SinkShared, config: &SyslogConfig, envelope: &Envelope) {
    let header = Header::for_sink(config, envelope);
    let counters = shared.counters();
    let stream = !config.transport.is_datagram();
    let mut connection: Option<Connection> = None;
    let mut attempts = Attempts::new(config);
    // Lines taken from the queue, and how far they were sent.
    let (mut pending, mut sent_to) = (Vec::new(), 0usize);
    let mut in_flight =
        InFlight { chunks: VecDeque::new(), bytes: 0, limit: config.inflight_bytes };
    // `loss` lines to send first on the next connection.
    let mut declare: Vec<u8> = Vec::new();
    let (mut out, mut message) = (Vec::with_capacity(CHUNK_BYTES * 2), Vec::new());
    let mut last_check = Instant::now();
    while !shared.is_abandoned() {
        if sent_to >= pending.len() {
            (sent_to, pending) = (0, std::mem::take(&mut pending));
            counters.queue_bytes.store(0, Ordering::Relaxed);
            if !shared.take(&mut pending, TICK) {
                break;
            }
            if pending.is_empty() {
                continue;
            }
            shared.take_more(&mut pending, config.coalesce);
        }
        // Whether the collector closed its side, looked at between chunks at most every
        // OPEN_CHECK_EVERY (three system calls): what is written meanwhile to a connection
        // that is gone is within the in-flight bytes a break declares lost.
        let check = stream && last_check.elapsed() >= OPEN_CHECK_EVERY;
        if check {
            last_check = Instant::now();
        }
        if connection.as_mut().is_some_and(|open| check && !open.is_open()) {
            if let Some(broken) = connection.take() {
                broken.close();
            }
            declare.extend(lose_in_flight(shared, &mut in_flight, None, envelope));
        }
        if connection.is_none() {
            match Connection::connect(config) {
                Ok(open) => {
                    attempts.connected(shared, config);
                    connection = Some(open);
                }
                Err(error) => {
                    attempts.failed(shared, config, &error);
                    if shared.is_closing() {
                        break;
                    }
                    attempts.back_off(shared, config);
                    continue;
                }
            }
        }
        // Frame one chunk: the pending `loss` lines, then queued lines.
        out.clear();
        let mut chunk = Missed::new(shared.name(), "connection_lost");
        for line in declare.split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
            message.clear();
            header.push_message(line, &mut message);
            frame(stream, &message, &mut out);
        }
        while sent_to < pending.len() && out.len() < CHUNK_BYTES {
            let end =
                memchr::memchr(b'\n', &pending[sent_to..]).map_or(pending.len(), |at| sent_to + at);
            let line = &pending[sent_to..end];
            sent_to = end + 1;
            message.clear();
            if header.push_message(line, &mut message) {
                counters.truncated.fetch_add(1, Ordering::Relaxed);
            }
            chunk.add(line_seq(line));
            if stream {
                frame(true, &message, &mut out);
            } else if let Some(open) = connection.as_mut() {
                // One datagram per message; a lost one goes unnoticed (RFC 5426).
                if open.write(&message).is_err() {
                    shared.note_error();
                }
            }
        }
        let left = pending.len() - sent_to.min(pending.len());
        if !stream {
            counters.sent.fetch_add(chunk.lines, Ordering::Relaxed);
            counters.queue_bytes.store(left, Ordering::SeqCst);
            declare.clear();
            continue;
        }
        let written = connection.as_mut().map(|open| open.write(&out));
        match written {
            Some(Ok(())) => {
                counters.sent.fetch_add(chunk.lines, Ordering::Relaxed);
                declare.clear();
                in_flight.push(chunk, out.len());
            }
            Some(Err(error)) => {
                shared.note_error();
                tracing::error!(sink = shared.name(), %error,
                    "audit sink's connection broke; what it had in flight is declared lost");
                attempts.broke();
                connection = None;
                declare.extend(lose_in_flight(shared, &mut in_flight, Some(chunk), envelope));
            }
            None => {}
        }
        counters.queue_bytes.store(left, Ordering::SeqCst);
    }
    let mut missed = Missed::new(shared.name(), "closed");
    missed.add_lines(&pending[sent_to.min(pending.len())..]);
    shared.give_up(missed, envelope);
    if let Some(open) = connection {
        open.close();
    }
}

/// Declares what was in flight on a broken connection (and `chunk`, whose write failed);
/// returns the `loss` line to send first on the next connection.
fn lose_in_flight(
    shared: &SinkShared,
    in_flight: &mut InFlight,
    chunk: Option<Missed>,
    envelope: &Envelope,
) -> Vec<u8> {
    let mut lost = Missed::new(shared.name(), "connection_lost");
    in_flight.take(&mut lost);
    if let Some(chunk) = chunk {
        lost.lines += chunk.lines;
        if let Some((lo, hi)) = chunk.seqs {
            lost.add_range(lo, hi);
        }
    }
    if lost.lines == 0 {
        return Vec::new();
    }
    shared.note_lost(&lost, envelope)
}

fn frame(octet_counted: bool, message: &[u8], out: &mut Vec<u8>) {
    if octet_counted {
        push_octet_counted(message, out);
    } else {
        out.extend_from_slice(message);
    }
}
