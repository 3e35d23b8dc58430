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
