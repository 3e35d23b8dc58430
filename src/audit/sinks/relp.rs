//! A RELP sink's thread (`transport = "relp"` or `"relp_tls"`): rsyslog's Reliable Event
//! Logging Protocol, where each syslog message is a numbered transaction the collector
//! acknowledges. What was sent and not acknowledged when a connection breaks is sent again,
//! first, on the next one, so a collector that restarts misses nothing while the sink's queue
//! holds (when it overflows, `on_full` applies as for any sink).
//!
//! Frames (librelp's `doc/relp.html`): `TXNR SP COMMAND SP DATALEN [SP DATA] LF`. A session
//! opens with `open` (offers `relp_version`, `relp_software`, `commands=syslog`), each message
//! is a `syslog` transaction answered by `rsp` with `200 OK`, and it ends with `close`; the
//! collector may announce `serverclose` (transaction 0) before it goes. At most
//! `relp_window` messages are unacknowledged at once, which bounds what the thread holds.
//!
//! RELP delivers at least once: a message the collector took whose acknowledgement the break
//! lost is delivered twice, and the copy then shows that line's `seq` twice.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::connection::{Attempts, Connection, SinkError};
use super::syslog::Header;
use super::transport::TICK;
use super::{line_seq, Missed, SinkShared, CLOSE_GRACE};
use crate::audit::schema::Envelope;
use crate::audit::sinks::config::SyslogConfig;

/// Transaction numbers run from 1 to this, then start at 1 again (RELP's limit).
const MAX_TXNR: u64 = 999_999_999;
/// The longest frame accepted from the collector (responses are a few dozen bytes): a
/// collector that sends more is broken or hostile, and is disconnected.
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Bytes of frames written at once.
const CHUNK_BYTES: usize = 64 * 1024;

/// What is wrong with the collector's side of a session.
#[derive(Debug, thiserror::Error)]
pub(super) enum RelpError {
    /// Connecting, reading or writing failed, or the collector closed the connection.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Bytes that are not a RELP frame.
    #[error("the collector sent a malformed RELP frame")]
    Malformed,
    /// The collector refused the session (its `open` response was not `200`).
    #[error("the collector refused the RELP session: {0}")]
    Refused(String),
    /// The collector announced that it closes the session.
    #[error("the collector closed the RELP session (serverclose)")]
    ServerClose,
}

impl From<io::Error> for RelpError {
    fn from(error: io::Error) -> Self {
        Self::Sink(SinkError::Io(error))
    }
}

/// One frame: `TXNR SP COMMAND SP DATALEN [SP DATA] LF`.
#[derive(Debug, PartialEq, Eq)]
struct Frame<'a> {
    txnr: u64,
    command: &'a [u8],
    data: &'a [u8],
}

/// The frame at the head of `bytes` and its length, `None` while it is incomplete.
fn parse_frame(bytes: &[u8]) -> Result<Option<(Frame<'_>, usize)>, RelpError> {
    let (txnr, at) = match number(bytes, 0)? {
        None => return Ok(None),
        Some((txnr, b' ', at)) => (txnr, at),
        Some(_) => return Err(RelpError::Malformed),
    };
    let command_len = bytes[at..].iter().take_while(|b| b.is_ascii_alphabetic()).count();
    if command_len > 32 {
        return Err(RelpError::Malformed);
    }
    let Some(&after) = bytes.get(at + command_len) else { return Ok(None) };
    if command_len == 0 || after != b' ' {
        return Err(RelpError::Malformed);
    }
    let command = &bytes[at..at + command_len];
    let Some((len, separator, at)) = number(bytes, at + command_len + 1)? else {
        return Ok(None);
    };
    let len = usize::try_from(len).map_err(|_| RelpError::Malformed)?;
    // DATALEN LF when there is no data, DATALEN SP DATA LF when there is.
    let end = match (len, separator) {
        (0, b'\n') => return Ok(Some((Frame { txnr, command, data: b"" }, at))),
        (1..=MAX_FRAME_BYTES, b' ') => at + len,
        _ => return Err(RelpError::Malformed),
    };
    match bytes.get(end) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((Frame { txnr, command, data: &bytes[at..end] }, end + 1))),
        Some(_) => Err(RelpError::Malformed),
    }
}

/// The decimal number at `at` (1 to 9 digits), the byte after it (a space or LF), and where
/// what follows that byte starts; `None` while the bytes end first.
fn number(bytes: &[u8], at: usize) -> Result<Option<(u64, u8, usize)>, RelpError> {
    let count = bytes.get(at..).unwrap_or_default().iter().take_while(|b| b.is_ascii_digit());
    let count = count.count();
    if count > 9 {
        return Err(RelpError::Malformed);
    }
    let Some(&separator) = bytes.get(at + count) else { return Ok(None) };
    if count == 0 || !(separator == b' ' || separator == b'\n') {
        return Err(RelpError::Malformed);
    }
    let value = bytes[at..at + count].iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Ok(Some((value, separator, at + count + 1)))
}

/// Appends one frame.
fn push_frame(txnr: u64, command: &[u8], data: &[u8], out: &mut Vec<u8>) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(number.format(txnr).as_bytes());
    out.push(b' ');
    out.extend_from_slice(command);
    out.push(b' ');
    out.extend_from_slice(number.format(data.len()).as_bytes());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

/// A response's status code (`200 OK` → 200).
fn status(data: &[u8]) -> Option<u16> {
    let code = data.get(..3)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// The messages sent and not acknowledged yet, oldest first, in one buffer.
struct Window {
    sent: VecDeque<Unacked>,
    /// The messages' bytes; `sent` holds offsets into it.
    bytes: Vec<u8>,
    /// Where the oldest message starts in `bytes` (what is before it was acknowledged).
    start: usize,
    limit: usize,
    next_txnr: u64,
}

struct Unacked {
    txnr: u64,
    seq: Option<u64>,
    end: usize,
}

impl Window {
    fn new(limit: usize) -> Self {
        Self { sent: VecDeque::new(), bytes: Vec::new(), start: 0, limit, next_txnr: 2 }
    }

    fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    fn is_full(&self) -> bool {
        self.sent.len() >= self.limit
    }

    /// Bytes held for messages not acknowledged.
    fn held(&self) -> usize {
        self.bytes.len() - self.start
    }

    fn take_txnr(&mut self) -> u64 {
        let txnr = self.next_txnr;
        self.next_txnr = if txnr >= MAX_TXNR { 1 } else { txnr + 1 };
        txnr
    }

    /// Holds the message just appended to `self.bytes` after `from`, framed into `out`.
    fn push(&mut self, from: usize, seq: Option<u64>, out: &mut Vec<u8>) {
        let txnr = self.take_txnr();
        push_frame(txnr, b"syslog", &self.bytes[from..], out);
        self.sent.push_back(Unacked { txnr, seq, end: self.bytes.len() });
    }

    /// A new session (its `open` was transaction 1): every message held is framed again into
    /// `out`, oldest first, with new numbers.
    fn resend(&mut self, out: &mut Vec<u8>) -> u64 {
        self.next_txnr = 2;
        let mut from = self.start;
        for index in 0..self.sent.len() {
            let txnr = self.take_txnr();
            let end = self.sent[index].end;
            push_frame(txnr, b"syslog", &self.bytes[from..end], out);
            self.sent[index].txnr = txnr;
            from = end;
        }
        self.sent.len() as u64
    }

    /// Removes the message `txnr` was (normally the oldest); its seq, if it was held.
    fn acknowledge(&mut self, txnr: u64) -> Option<Option<u64>> {
        let index = self.sent.iter().position(|sent| sent.txnr == txnr)?;
        let acked = self.sent.remove(index)?;
        if index == 0 {
            self.start = acked.end;
        }
        // An acknowledgement out of order leaves its bytes until the older ones are gone.
        if self.sent.is_empty() {
            self.bytes.clear();
            self.start = 0;
        } else if self.start > self.bytes.len() / 2 {
            self.bytes.drain(..self.start);
            for sent in &mut self.sent {
                sent.end -= self.start;
            }
            self.start = 0;
        }
        Some(acked.seq)
    }

    /// Everything held, as lost (emptied).
    fn lose(&mut self, into: &mut Missed) {
        for sent in self.sent.drain(..) {
            into.add(sent.seq);
        }
        self.bytes.clear();
        self.start = 0;
    }
}

/// An open RELP session.
struct Session {
    connection: Connection,
    /// Bytes read from the collector and not parsed yet.
    inbox: Vec<u8>,
}

impl Session {
    /// Connects and opens the session.
    fn open(config: &SyslogConfig) -> Result<Self, RelpError> {
        let mut session = Self { connection: Connection::connect(config)?, inbox: Vec::new() };
        let offers = format!(
            "relp_version=0\nrelp_software=redis-audit-proxy,{},-\ncommands=syslog",
            env!("CARGO_PKG_VERSION")
        );
        let mut out = Vec::with_capacity(offers.len() + 16);
        push_frame(1, b"open", offers.as_bytes(), &mut out);
        session.connection.write(&out)?;
        loop {
            let answer = session.next_frame()?.map(|(frame, used)| {
                let code = (frame.txnr, frame.command == b"rsp", status(frame.data));
                (
                    code,
                    String::from_utf8_lossy(&frame.data[..frame.data.len().min(80)]).into_owned(),
                    used,
                )
            });
            match answer {
                Some(((1, true, Some(200)), _, used)) => {
                    session.inbox.drain(..used);
                    return Ok(session);
                }
                Some((_, text, _)) => return Err(RelpError::Refused(text)),
                None => session.fill()?,
            }
        }
    }

    /// The next complete frame in the inbox (and its length), if there is one.
    fn next_frame(&self) -> Result<Option<(Frame<'_>, usize)>, RelpError> {
        parse_frame(&self.inbox)
    }

    /// Reads once more from the collector (waiting at most the connection's read timeout).
    fn fill(&mut self) -> Result<(), RelpError> {
        let mut buffer = [0u8; 4096];
        let read = self.connection.read(&mut buffer)?;
        if read == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        self.inbox.extend_from_slice(&buffer[..read]);
        Ok(())
    }

    /// Reads what the collector answered (at least once), and applies every complete response:
    /// acknowledged messages leave the window (counted in `acknowledged` as they do, since a
    /// `serverclose` may follow the last answers); one it refused is added to `refused`.
    fn read_answers(
        &mut self,
        window: &mut Window,
        acknowledged: &AtomicU64,
        refused: &mut Missed,
    ) -> Result<(), RelpError> {
        self.fill()?;
        let mut used = 0;
        while let Some((frame, length)) = parse_frame(&self.inbox[used..])? {
            used += length;
            match (frame.txnr, frame.command) {
                (0, b"serverclose") => return Err(RelpError::ServerClose),
                (txnr, b"rsp") => {
                    let ok = status(frame.data) == Some(200);
                    if let Some(seq) = window.acknowledge(txnr) {
                        if ok {
                            acknowledged.fetch_add(1, Ordering::Relaxed);
                        } else {
                            refused.add(seq);
                        }
                    }
                }
                _ => return Err(RelpError::Malformed),
            }
        }
        self.inbox.drain(..used);
        Ok(())
    }

    /// Ends the session politely: `close`, and its response if it comes soon.
    fn close(mut self, txnr: u64) {
        let mut out = Vec::new();
        push_frame(txnr, b"close", b"", &mut out);
        if self.connection.write(&out).is_ok() {
            let _ = self.fill();
        }
        self.connection.close();
    }
}

/// The thread's loop: until the log closes and everything queued was acknowledged (or, the
/// collector being out of reach at the end, declared lost).
pub(super) fn run(shared: &SinkShared, config: &SyslogConfig, envelope: &Envelope) {
    let header = Header::for_sink(config, envelope);
    let counters = shared.counters();
    let mut window = Window::new(config.relp_window);
    let mut session: Option<Session> = None;
    let mut attempts = Attempts::new(config);
    // Lines taken from the queue, and how far they were sent.
    let (mut pending, mut sent_to) = (Vec::new(), 0usize);
    // `loss` lines to send before the next queued line.
    let mut declare: Vec<u8> = Vec::new();
    let mut out = Vec::with_capacity(CHUNK_BYTES * 2);
    let mut closing_since: Option<Instant> = None;
    while !shared.is_abandoned() {
        if sent_to >= pending.len() && closing_since.is_none() {
            sent_to = 0;
            let wait = if window.is_empty() { TICK } else { Duration::ZERO };
            if !shared.take(&mut pending, wait) {
                closing_since = Some(Instant::now());
            } else if window.is_empty() && !pending.is_empty() {
                shared.take_more(&mut pending, config.coalesce);
            }
        }
        let held = pending.len().saturating_sub(sent_to) + window.held() + declare.len();
        counters.queue_bytes.store(held, Ordering::SeqCst);
        if let Some(since) = closing_since {
            if held == 0 || since.elapsed() > CLOSE_GRACE {
                break;
            }
        }
        if held == 0 {
            continue;
        }
        out.clear();
        if session.is_none() {
            match Session::open(config) {
                Ok(opened) => {
                    attempts.connected(shared, config);
                    session = Some(opened);
                    let resent = window.resend(&mut out);
                    counters.resent.fetch_add(resent, Ordering::Relaxed);
                    if resent > 0 && write(&mut session, &out, shared).is_err() {
                        attempts.broke();
                    }
                }
                Err(error) => {
                    attempts.failed(shared, config, &error);
                    if closing_since.is_none() {
                        attempts.back_off(shared, config);
                    } else {
                        std::thread::sleep(Duration::from_millis(100).min(config.reconnect_max));
                    }
                }
            }
            continue;
        }
        // Frame messages while the window has room: `loss` lines first, then queued lines.
        while !window.is_full() && !declare.is_empty() {
            let end = memchr::memchr(b'\n', &declare).map_or(declare.len(), |at| at + 1);
            let message_at = window.bytes.len();
            header.push_message(declare[..end].trim_ascii_end(), &mut window.bytes);
            window.push(message_at, None, &mut out);
            declare.drain(..end);
        }
        while !window.is_full() && sent_to < pending.len() && out.len() < CHUNK_BYTES {
            let end =
                memchr::memchr(b'\n', &pending[sent_to..]).map_or(pending.len(), |at| sent_to + at);
            let line = &pending[sent_to..end];
            sent_to = end + 1;
            if line.is_empty() {
                continue;
            }
            let message_at = window.bytes.len();
            if header.push_message(line, &mut window.bytes) {
                counters.truncated.fetch_add(1, Ordering::Relaxed);
            }
            window.push(message_at, line_seq(line), &mut out);
        }
        if !out.is_empty() && write(&mut session, &out, shared).is_err() {
            attempts.broke();
            continue;
        }
        // Wait for answers when nothing more may or can be sent now.
        let waiting = window.is_full() || (sent_to >= pending.len() && declare.is_empty());
        if waiting && !window.is_empty() {
            let mut refused = Missed::new(shared.name(), "refused");
            let Some(open) = session.as_mut() else { continue };
            if let Err(error) = open.read_answers(&mut window, &counters.sent, &mut refused) {
                shared.note_error();
                tracing::error!(sink = shared.name(), %error,
                    "audit sink's RELP session broke; what was not acknowledged is sent again");
                attempts.broke();
                session = None;
            }
            if refused.lines > 0 {
                tracing::error!(
                    sink = shared.name(),
                    lines = refused.lines,
                    "the collector refused messages; they are declared lost"
                );
                declare.extend(shared.note_lost(&refused, envelope));
            }
        }
    }
    let mut missed = Missed::new(shared.name(), "closed");
    window.lose(&mut missed);
    if sent_to < pending.len() {
        missed.add_lines(&pending[sent_to..]);
    }
    missed.add_lines(&declare);
    shared.give_up(missed, envelope);
    if let Some(open) = session {
        open.close(window.take_txnr());
    }
}

/// Writes `out` on the session; a failed write ends the session (its window is kept, to be
/// sent again).
fn write(session: &mut Option<Session>, out: &[u8], shared: &SinkShared) -> Result<(), ()> {
    let Some(open) = session.as_mut() else { return Err(()) };
    if let Err(error) = open.connection.write(out) {
        shared.note_error();
        tracing::error!(sink = shared.name(), %error,
            "audit sink's RELP session broke; what was not acknowledged is sent again");
        *session = None;
        return Err(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_whole_and_wait_when_cut() {
        let bytes = b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n4 rsp 0\n0 serverclose 0\n";
        let (first, used) = parse_frame(bytes).unwrap().unwrap();
        assert_eq!((first.txnr, first.command), (1, &b"rsp"[..]));
        assert_eq!(status(first.data), Some(200));
        let (second, more) = parse_frame(&bytes[used..]).unwrap().unwrap();
        assert_eq!(second, Frame { txnr: 4, command: b"rsp", data: b"" });
        let (third, _) = parse_frame(&bytes[used + more..]).unwrap().unwrap();
        assert_eq!((third.txnr, third.command), (0, &b"serverclose"[..]));
        for cut in 0..used {
            assert!(parse_frame(&bytes[..cut]).unwrap().is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_frames_are_refused() {
        for bad in [
            &b"x rsp 6 200 OK\n"[..],
            b"1 rsp 6 200 OKX",
            b"1 rsp 6 200 OK\r",
            b"1  rsp 0\n",
            b"1 rsp 0 \n",
            b"1234567890 rsp 0\n",
            b"1 rsp 99999999 ",
            b"1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 0\n",
            b"1 r5p 0\n",
        ] {
            assert!(parse_frame(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn frames_written_read_back() {
        let mut out = Vec::new();
        push_frame(7, b"syslog", b"<134>1 - - - - - - {}", &mut out);
        push_frame(8, b"close", b"", &mut out);
        assert_eq!(out, b"7 syslog 21 <134>1 - - - - - - {}\n8 close 0\n");
        let (frame, used) = parse_frame(&out).unwrap().unwrap();
        assert_eq!(frame.data, b"<134>1 - - - - - - {}");
        assert_eq!(parse_frame(&out[used..]).unwrap().unwrap().0.command, b"close");
    }

    #[test]
    fn the_window_resends_what_was_not_acknowledged_in_order() {
        let mut window = Window::new(3);
        let mut out = Vec::new();
        for (seq, text) in [(10, &b"a"[..]), (11, b"bb"), (12, b"ccc")] {
            let at = window.bytes.len();
            window.bytes.extend_from_slice(text);
            window.push(at, Some(seq), &mut out);
        }
        assert!(window.is_full());
        assert_eq!(out, b"2 syslog 1 a\n3 syslog 2 bb\n4 syslog 3 ccc\n");
        assert_eq!(window.acknowledge(2), Some(Some(10)));
        assert_eq!(window.acknowledge(2), None, "twice");
        assert_eq!(window.held(), 5);
        out.clear();
        assert_eq!(window.resend(&mut out), 2);
        assert_eq!(out, b"2 syslog 2 bb\n3 syslog 3 ccc\n");
        assert_eq!(window.acknowledge(3), Some(Some(12)), "out of order");
        assert_eq!(window.acknowledge(2), Some(Some(11)));
        assert!(window.is_empty() && window.held() == 0);
        window.next_txnr = MAX_TXNR;
        assert_eq!((window.take_txnr(), window.take_txnr()), (MAX_TXNR, 1));
    }
}
