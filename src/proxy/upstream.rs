//! Connecting to the upstream Redis: address resolution, connect timeout, TCP_NODELAY, and an
//! error text that names the upstream and the cause.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::UpstreamConfig;
use crate::util::sync::RwLockAnyway;

/// Why the upstream could not be reached; its `Display` goes into `-ERR` replies and logs.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connection attempt failed.
    #[error("upstream {address} unavailable: {source}")]
    Connect {
        /// The configured address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS handshake with Redis failed (untrusted or wrong-host certificate, ...).
    #[error("upstream {address} unavailable: TLS handshake failed: {message}")]
    Tls {
        /// The configured address.
        address: String,
        /// Why.
        message: String,
    },
    /// Connection attempt took too long.
    #[error("upstream {address} unavailable: connect timed out after {} ms", .timeout.as_millis())]
    Timeout {
        /// The configured address.
        address: String,
        /// The limit that passed.
        timeout: Duration,
    },
}

/// How the proxy speaks TLS to Redis (`[upstream.tls]`), built once from the configuration.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls").field("name", &self.name).finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// From `[upstream.tls]`; `Ok(None)` without it.
    pub(crate) fn from_config(
        config: &UpstreamConfig,
    ) -> Result<Option<Arc<Self>>, crate::tls::TlsError> {
        let Some(tls) = &config.tls else { return Ok(None) };
        if tls.insecure_skip_verify {
            tracing::warn!(
                upstream = %config.address,
                "upstream.tls.insecure_skip_verify = true: Redis's certificate is NOT verified; \
                 anyone on the path can impersonate it (labs only)"
            );
        }
        let client = crate::tls::client_config(tls)?;
        let name = crate::tls::server_name(&tls.server_name)?;
        Ok(Some(Arc::new(Self { connector: tokio_rustls::TlsConnector::from(client), name })))
    }
}

/// A connection to Redis: plain TCP or TLS over it.
#[derive(Debug)]
pub enum UpstreamStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (boxed: the session state is large).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Where new upstream connections go: `upstream.address`, or with Sentinel the primary it last
/// named. A connection takes [`Target::watch`]'s token with its address: the token is cancelled
/// when the primary moves, and the connection then closes as a direct client's would (Sentinel
/// kills the clients of a demoted primary; a dead one's are gone anyway).
#[derive(Debug)]
pub struct Target {
    current: std::sync::RwLock<(Arc<str>, tokio_util::sync::CancellationToken)>,
}

impl Target {
    /// A target at `address`.
    pub fn new(address: &str) -> Self {
        let current = (Arc::from(address), tokio_util::sync::CancellationToken::new());
        Self { current: std::sync::RwLock::new(current) }
    }

    /// The address new connections go to.
    pub fn address(&self) -> Arc<str> {
        Arc::clone(&self.read().0)
    }

    /// The address, and a token cancelled when it changes.
    pub fn watch(&self) -> (Arc<str>, tokio_util::sync::CancellationToken) {
        self.read().clone()
    }

    /// Points new connections at `address`; if it is a change, the connections made to the old
    /// one are told to close. Returns whether it changed.
    pub(crate) fn switch(&self, address: &str) -> bool {
        let mut current = self.current.write_anyway();
        if &*current.0 == address {
            return false;
        }
        current.1.cancel();
        *current = (Arc::from(address), tokio_util::sync::CancellationToken::new());
        true
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, (Arc<str>, tokio_util::sync::CancellationToken)> {
        self.current.read_anyway()
    }
}

/// Opens one connection to Redis: TCP, then the TLS handshake when `tls` is given, both
/// within `connect_timeout`.
pub async fn connect(
    address: &str,
    config: &UpstreamConfig,
    tls: Option<&UpstreamTls>,
) -> Result<UpstreamStream, UpstreamError> {
    let address = &address.to_owned();
    let timeout =
        || UpstreamError::Timeout { address: address.clone(), timeout: config.connect_timeout };
    let attempt = async {
        let stream = TcpStream::connect(address.as_str())
            .await
            .map_err(|source| UpstreamError::Connect { address: address.clone(), source })?;
        // Nagle would hold small pipelined replies back by up to 40 ms.
        let _ = stream.set_nodelay(true);
        match tls {
            None => Ok(UpstreamStream::Plain(stream)),
            Some(tls) => {
                let stream =
                    tls.connector.connect(tls.name.clone(), stream).await.map_err(|e| {
                        UpstreamError::Tls {
                            address: address.clone(),
                            message: crate::tls::describe_handshake_error(&e),
                        }
                    })?;
                Ok(UpstreamStream::Tls(Box::new(stream)))
            }
        }
    };
    tokio::time::timeout(config.connect_timeout, attempt).await.map_err(|_| timeout())?
}

/// Why the live command table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchTableError {
    /// No connection.
    #[error(transparent)]
    Unavailable(#[from] UpstreamError),
    /// The connection failed or the reply was too large.
    #[error("reading the COMMAND reply failed: {0}")]
    Io(String),
    /// Redis answered, but not with a usable table.
    #[error(transparent)]
    Table(#[from] crate::command::TableError),
    /// Redis refused the login (the text is Redis's error, never the password).
    #[error("the upstream refused the login as '{user}': {message}")]
    Login {
        /// The user.
        user: String,
        /// Redis's error.
        message: String,
    },
}

/// Largest `COMMAND` reply accepted (Redis 7 sends about 90 KiB; modules add some).
const MAX_COMMAND_REPLY: usize = 16 * 1024 * 1024;

/// Sends `request` and reads one whole reply, at most [`MAX_COMMAND_REPLY`] bytes.
pub(crate) async fn read_reply(
    stream: &mut UpstreamStream,
    request: &[u8],
) -> Result<Vec<u8>, FetchTableError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = |error: std::io::Error| FetchTableError::Io(error.to_string());
    stream.write_all(request).await.map_err(io)?;
    let mut scanner = crate::resp::reply::ReplyScanner::new(16);
    let mut reply = Vec::with_capacity(128 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(FetchTableError::Io("connection closed mid-reply".into()));
        }
        reply.extend_from_slice(&chunk[..n]);
        if reply.len() > MAX_COMMAND_REPLY {
            return Err(FetchTableError::Io("reply larger than 16 MiB".into()));
        }
        let (_, done) =
            scanner.scan(&chunk[..n]).map_err(|error| FetchTableError::Io(error.to_string()))?;
        if done {
            return Ok(reply);
        }
    }
}

/// `redis_version:x.y.z` from an `INFO server` reply.
fn redis_version_of(reply: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(reply);
    let line = text.lines().find_map(|line| line.strip_prefix("redis_version:"))?;
    Some(line.trim().to_owned())
}

/// Logs `stream` in as `user` (`AUTH user password`).
pub(crate) async fn login(
    stream: &mut UpstreamStream,
    user: &str,
    password: &[u8],
) -> Result<(), FetchTableError> {
    let reply =
        read_reply(stream, &crate::resp::encode::command(&[b"AUTH", user.as_bytes(), password]))
            .await?;
    if reply.first() == Some(&b'-') {
        let message = String::from_utf8_lossy(&reply[1..]).trim_end().to_owned();
        return Err(FetchTableError::Login { user: user.to_owned(), message });
    }
    Ok(())
}

/// Opens a connection to Redis and logs it in as `login` (if given), within
/// `connect_timeout`.
pub(crate) async fn connect_as(
    address: &str,
    config: &UpstreamConfig,
    login: Option<(&str, &[u8])>,
) -> Result<UpstreamStream, FetchTableError> {
    let tls = UpstreamTls::from_config(config)
        .map_err(|error| FetchTableError::Io(format!("TLS configuration: {error}")))?;
    let mut stream = connect(address, config, tls.as_deref()).await?;
    if let Some((user, password)) = login {
        tokio::time::timeout(config.connect_timeout, self::login(&mut stream, user, password))
            .await
            .map_err(|_| FetchTableError::Io("login timed out".into()))??;
    }
    Ok(stream)
}

/// Reads the live command table with `COMMAND` (and its categories with `ACL CAT`) on a
/// connection of its own, logged in as `login` when Redis requires it.
pub async fn fetch_command_table(
    address: &str,
    config: &UpstreamConfig,
    login: Option<(&str, &[u8])>,
) -> Result<crate::command::CommandTable, FetchTableError> {
    let mut stream = connect_as(address, config, login).await?;
    let read = async {
        let reply = read_reply(&mut stream, b"*1\r\n$7\r\nCOMMAND\r\n").await?;
        let mut table = crate::command::CommandTable::from_command_reply(&reply)?;
        table.source = crate::command::TableSource::Live(address.to_owned());
        let categories = read_reply(&mut stream, b"*2\r\n$3\r\nACL\r\n$3\r\nCAT\r\n").await?;
        if let Err(error) = table.set_categories_from_reply(&categories) {
            tracing::warn!(%error, "ACL CAT unavailable: using the embedded category list");
        }
        let info = read_reply(&mut stream, b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n").await?;
        match redis_version_of(&info) {
            Some(version) => table.version = version,
            None => tracing::warn!(
                assumed = %table.version,
                "INFO server did not give redis_version; NOPERM replies use the assumed version's wording"
            ),
        }
        Ok(table)
    };
    tokio::time::timeout(config.connect_timeout * 5, read)
        .await
        .map_err(|_| FetchTableError::Io("timed out".into()))?
}
