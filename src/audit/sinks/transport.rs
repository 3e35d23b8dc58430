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
use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;

use super::syslog::{push_octet_counted, Header};
use super::{line_seq, Missed, SinkShared};
use crate::audit::schema::Envelope;
use crate::audit::sinks::config::{SyslogConfig, SyslogTransport};

/// Bytes of framed messages written at once.
const CHUNK_BYTES: usize = 64 * 1024;
/// How long the thread waits for lines before looking again.
const TICK: Duration = Duration::from_millis(200);

/// Why a connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub(super) enum SinkError {
    /// Resolving, connecting or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The TLS settings cannot be used (a file, the server name).
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The address resolves to nothing.
    #[error("{0} resolves to no address")]
    NoAddress(String),
}

/// An open connection to the collector.
enum Connection {
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Udp(UdpSocket),
}

impl Connection {
    fn open(
        config: &SyslogConfig,
        tls: Option<&(Arc<ClientConfig>, ServerName<'static>)>,
    ) -> Result<Self, SinkError> {
        let addrs: Vec<_> = config.address.to_socket_addrs()?.collect();
        let first = *addrs.first().ok_or_else(|| SinkError::NoAddress(config.address.clone()))?;
        if config.transport == SyslogTransport::Udp {
            let bind = if first.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let socket = UdpSocket::bind(bind)?;
            socket.connect(first)?;
            return Ok(Self::Udp(socket));
        }
        let mut last_error = None;
        let stream = addrs.iter().find_map(|addr| {
            TcpStream::connect_timeout(addr, config.connect_timeout)
                .map_err(|error| last_error = Some(error))
                .ok()
        });
        let stream =
            stream.ok_or_else(|| last_error.unwrap_or_else(|| io::ErrorKind::NotFound.into()))?;
        // A collector that stops reading makes a write fail after this long, rather than
        // hold the sink's thread (its queue then fills and `on_full` applies meanwhile).
        stream.set_write_timeout(Some(config.connect_timeout))?;
        stream.set_read_timeout(Some(config.connect_timeout))?;
        let Some((client, name)) = tls else { return Ok(Self::Tcp(stream)) };
        let connection = ClientConnection::new(Arc::clone(client), name.clone())
            .map_err(|error| crate::tls::TlsError::Rustls(error.to_string()))?;
        let mut stream = StreamOwned::new(connection, stream);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Self::Tls(Box::new(stream)))
    }

    /// False once the collector closed its side (found without blocking). A collector never
    /// writes to a syslog connection, so end-of-stream, or an error, means it is gone.
    fn is_open(&mut self) -> bool {
        let socket = match self {
            Self::Tcp(stream) => &*stream,
            Self::Tls(stream) => &stream.sock,
            Self::Udp(_) => return true,
        };
        if socket.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let peeked = socket.peek(&mut byte);
        let open = match peeked {
            Ok(0) => false,
            Ok(_) => match self {
                // TLS records from the collector: session tickets, or a close_notify.
                Self::Tls(stream) => {
                    let read = stream.conn.read_tls(&mut stream.sock);
                    let state = stream.conn.process_new_packets();
                    read.is_ok() && state.is_ok_and(|state| !state.peer_has_closed())
                }
                _ => true,
            },
            Err(error) => error.kind() == io::ErrorKind::WouldBlock,
        };
        let socket = match self {
            Self::Tcp(stream) => &*stream,
            Self::Tls(stream) => &stream.sock,
            Self::Udp(_) => return true,
        };
        open && socket.set_nonblocking(false).is_ok()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Tcp(stream) => stream.write_all(bytes),
            Self::Tls(stream) => stream.write_all(bytes).and_then(|()| stream.flush()),
            Self::Udp(socket) => socket.send(bytes).map(drop),
        }
    }

    fn close(self) {
        if let Self::Tls(mut stream) = self {
            stream.conn.send_close_notify();
            let _ = stream.flush();
        }
    }
}

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
    let header = Header {
        facility: config.facility.code(),
        hostname: config.hostname.clone().unwrap_or_else(|| envelope.node.clone()),
        app_name: config.app_name.clone(),
        procid: std::process::id(),
        max_message_bytes: config.max_message_bytes,
    };
    let counters = shared.counters();
    let stream = config.transport != SyslogTransport::Udp;
    let mut connection: Option<Connection> = None;
    let mut connected_before = false;
    let mut failing = false;
    let mut backoff = config.reconnect_min;
    // Lines taken from the queue, and how far they were sent.
    let (mut pending, mut sent_to) = (Vec::new(), 0usize);
    let mut in_flight =
        InFlight { chunks: VecDeque::new(), bytes: 0, limit: config.inflight_bytes };
    // `loss` lines to send first on the next connection.
    let mut declare: Vec<u8> = Vec::new();
    let (mut out, mut message) = (Vec::with_capacity(CHUNK_BYTES * 2), Vec::new());
    loop {
        if sent_to >= pending.len() {
            (sent_to, pending) = (0, std::mem::take(&mut pending));
            counters.queue_bytes.store(0, Ordering::Relaxed);
            if !shared.take(&mut pending, TICK) {
                break;
            }
            if pending.is_empty() {
                continue;
            }
        }
        if connection.as_mut().is_some_and(|open| stream && !open.is_open()) {
            if let Some(broken) = connection.take() {
                broken.close();
            }
            declare.extend(lose_in_flight(shared, &mut in_flight, None, envelope));
        }
        if connection.is_none() {
            let tls = match &config.tls {
                Some(tls) => crate::tls::client_config(tls)
                    .and_then(|client| Ok((client, crate::tls::server_name(&tls.server_name)?)))
                    .map(Some)
                    .map_err(SinkError::from),
                None => Ok(None),
            };
            match tls.and_then(|tls| Connection::open(config, tls.as_ref())) {
                Ok(open) => {
                    if connected_before {
                        counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    if failing {
                        tracing::warn!(sink = shared.name(), "audit sink connected again");
                    }
                    (connected_before, failing, backoff) = (true, false, config.reconnect_min);
                    connection = Some(open);
                }
                Err(error) => {
                    shared.note_error();
                    if !failing {
                        tracing::error!(sink = shared.name(), address = %config.address, %error,
                            "audit sink cannot reach its collector; retrying with back-off");
                        failing = true;
                    }
                    if shared.is_closing() {
                        break;
                    }
                    sleep_unless_closing(shared, backoff);
                    backoff = (backoff * 2).min(config.reconnect_max);
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
                failing = true;
                connection = None;
                declare.extend(lose_in_flight(shared, &mut in_flight, Some(chunk), envelope));
            }
            None => {}
        }
        counters.queue_bytes.store(left, Ordering::SeqCst);
    }
    if sent_to < pending.len() {
        let mut missed = Missed::new(shared.name(), "closed");
        missed.add_lines(&pending[sent_to..]);
        shared.note_lost(&missed, envelope);
    }
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

fn sleep_unless_closing(shared: &SinkShared, pause: Duration) {
    let step = Duration::from_millis(20);
    let mut slept = Duration::ZERO;
    while slept < pause && !shared.is_closing() {
        std::thread::sleep(step.min(pause - slept));
        slept += step;
    }
}
