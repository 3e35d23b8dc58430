//! Connecting to the upstream Redis: address resolution, connect timeout, TCP_NODELAY, and an
//! error text that names the upstream and the cause.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::UpstreamConfig;

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
    /// Connection attempt took too long.
    #[error("upstream {address} unavailable: connect timed out after {} ms", .timeout.as_millis())]
    Timeout {
        /// The configured address.
        address: String,
        /// The limit that passed.
        timeout: Duration,
    },
}

/// Opens one TCP connection to Redis.
pub async fn connect(config: &UpstreamConfig) -> Result<TcpStream, UpstreamError> {
    let address = &config.address;
    let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(address.as_str()))
        .await
        .map_err(|_| UpstreamError::Timeout {
            address: address.clone(),
            timeout: config.connect_timeout,
        })?
        .map_err(|source| UpstreamError::Connect { address: address.clone(), source })?;
    // Nagle would hold small pipelined replies back by up to 40 ms.
    let _ = stream.set_nodelay(true);
    Ok(stream)
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
}

/// Largest `COMMAND` reply accepted (Redis 7 sends about 90 KiB; modules add some).
const MAX_COMMAND_REPLY: usize = 16 * 1024 * 1024;

/// Sends `request` and reads one whole reply, at most [`MAX_COMMAND_REPLY`] bytes.
async fn read_reply(stream: &mut TcpStream, request: &[u8]) -> Result<Vec<u8>, FetchTableError> {
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

/// Reads the live command table with `COMMAND` (and its categories with `ACL CAT`) on a
/// connection of its own.
pub async fn fetch_command_table(
    config: &UpstreamConfig,
) -> Result<crate::command::CommandTable, FetchTableError> {
    let mut stream = connect(config).await?;
    let read = async {
        let reply = read_reply(&mut stream, b"*1\r\n$7\r\nCOMMAND\r\n").await?;
        let mut table = crate::command::CommandTable::from_command_reply(&reply)?;
        table.source = crate::command::TableSource::Live(config.address.clone());
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
