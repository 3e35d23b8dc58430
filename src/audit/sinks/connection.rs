//! A sink's connection to its collector: TCP, TLS (rustls) or UDP, opened with the sink's
//! timeouts; and the back-off sleep between attempts, cut short when the sinks close.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;

use super::SinkShared;
use crate::audit::sinks::config::SyslogConfig;

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
pub(super) enum Connection {
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Udp(UdpSocket),
}

impl Connection {
    /// Connects as the sink's settings say (TLS settings are read from their files at each
    /// attempt, so a renewed certificate is used at the next reconnection).
    pub(super) fn connect(config: &SyslogConfig) -> Result<Self, SinkError> {
        let tls = match &config.tls {
            Some(tls) => {
                let client = crate::tls::client_config(tls)?;
                Some((client, crate::tls::server_name(&tls.server_name)?))
            }
            None => None,
        };
        Self::open(config, tls.as_ref())
    }

    fn open(
        config: &SyslogConfig,
        tls: Option<&(Arc<ClientConfig>, ServerName<'static>)>,
    ) -> Result<Self, SinkError> {
        let addrs: Vec<_> = config.address.to_socket_addrs()?.collect();
        let first = *addrs.first().ok_or_else(|| SinkError::NoAddress(config.address.clone()))?;
        if config.transport.is_datagram() {
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
    pub(super) fn is_open(&mut self) -> bool {
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

    pub(super) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Tcp(stream) => stream.write_all(bytes),
            Self::Tls(stream) => stream.write_all(bytes).and_then(|()| stream.flush()),
            Self::Udp(socket) => socket.send(bytes).map(drop),
        }
    }

    /// Reads what the collector sent (RELP's responses), waiting at most the connection's
    /// read timeout (`connect_timeout`).
    pub(super) fn read(&mut self, into: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(stream) => stream.read(into),
            Self::Tls(stream) => stream.read(into),
            Self::Udp(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    pub(super) fn close(self) {
        if let Self::Tls(mut stream) = self {
            stream.conn.send_close_notify();
            let _ = stream.flush();
        }
    }
}

/// A sink's connection attempts: the back-off between them, the reconnection count, and one
/// log line when the collector is lost and one when it is back (not one per attempt).
pub(super) struct Attempts {
    connected_before: bool,
    failing: bool,
    backoff: Duration,
}

impl Attempts {
    pub(super) fn new(config: &SyslogConfig) -> Self {
        Self { connected_before: false, failing: false, backoff: config.reconnect_min }
    }

    /// A connection (or session) was made.
    pub(super) fn connected(&mut self, shared: &SinkShared, config: &SyslogConfig) {
        if self.connected_before {
            shared.counters().reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if self.failing {
            tracing::warn!(sink = shared.name(), "audit sink connected again");
        }
        (self.connected_before, self.failing, self.backoff) = (true, false, config.reconnect_min);
    }

    /// An attempt failed: counted, logged if it is the first since the collector was lost.
    pub(super) fn failed(
        &mut self,
        shared: &SinkShared,
        config: &SyslogConfig,
        error: &dyn std::fmt::Display,
    ) {
        shared.note_error();
        if !self.failing {
            tracing::error!(sink = shared.name(), address = %config.address, %error,
                "audit sink cannot reach its collector; retrying with back-off");
            self.failing = true;
        }
    }

    /// An open connection broke (its own error was logged where it happened).
    pub(super) fn broke(&mut self) {
        self.failing = true;
    }

    /// Waits before the next attempt, twice as long as before (up to `reconnect_max_ms`).
    pub(super) fn back_off(&mut self, shared: &SinkShared, config: &SyslogConfig) {
        sleep_unless_closing(shared, self.backoff);
        self.backoff = (self.backoff * 2).min(config.reconnect_max);
    }
}

pub(super) fn sleep_unless_closing(shared: &SinkShared, pause: Duration) {
    let step = Duration::from_millis(20);
    let mut slept = Duration::ZERO;
    while slept < pause && !shared.is_closing() && !shared.is_abandoned() {
        std::thread::sleep(step.min(pause - slept));
        slept += step;
    }
}
