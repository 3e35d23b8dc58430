//! The client-facing TLS listener's side of accepting a client: the handshake within
//! `tls.handshake_timeout`, its facts for the audit trail, failures recorded as security
//! events, and certificates reloaded on SIGHUP without touching open connections.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::config::TlsConfig;
use crate::event::{SecurityAction, SecurityEvent};
use crate::proxy::connection::Accepted;
use crate::proxy::ProxyContext;
use crate::tls::{describe_handshake_error, server_config, TlsError, TlsFacts};
use crate::util::sync::RwLockAnyway;

/// The TLS listener's configuration, swapped whole on reload.
#[derive(Debug, Clone)]
pub struct TlsListener {
    config: TlsConfig,
    server: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl TlsListener {
    /// Builds the server configuration from `[tls]`.
    pub fn new(config: &TlsConfig) -> Result<Self, TlsError> {
        let server = server_config(config)?;
        Ok(Self { config: config.clone(), server: Arc::new(RwLock::new(server)) })
    }

    /// Reads the certificate, key and CA files again; new handshakes use them, open
    /// connections keep theirs. On an error the configuration in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let server = server_config(&self.config)?;
        *self.server.write_anyway() = server;
        Ok(())
    }

    /// Runs the handshake with a client: `None` (the failure recorded) when it fails or
    /// takes longer than `tls.handshake_timeout`.
    pub async fn handshake(
        &self,
        ctx: &ProxyContext,
        stream: TcpStream,
        peer: SocketAddr,
        local_addr: Option<SocketAddr>,
        fd: i32,
        at: tokio::time::Instant,
    ) -> Option<Accepted<TlsStream<TcpStream>>> {
        let server = Arc::clone(&self.server.read_anyway());
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let outcome =
            tokio::time::timeout(self.config.handshake_timeout, acceptor.accept(stream)).await;
        let failure = match outcome {
            Ok(Ok(stream)) => {
                let facts = TlsFacts::of(stream.get_ref().1, self.config.user_from);
                let tls = Some(Arc::new(facts));
                return Some(Accepted { stream, peer, local_addr, fd, tls, at });
            }
            Ok(Err(error)) => {
                let is_cert = error
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|tls| {
                        matches!(
                            tls,
                            rustls::Error::InvalidCertificate(_)
                                | rustls::Error::NoCertificatesPresented
                        )
                    });
                (
                    if is_cert { "tls-cert" } else { "tls-handshake" },
                    describe_handshake_error(&error),
                )
            }
            Err(_) => ("tls-handshake", "handshake timed out".to_owned()),
        };
        let (reason, message) = failure;
        tracing::info!(client = %peer, reason, %message, "TLS handshake failed");
        ctx.sink.security(SecurityEvent {
            command: None,
            action: SecurityAction::TlsRejected,
            time: std::time::SystemTime::now(),
            conn_id: 0,
            client_addr: peer,
            user: bytes::Bytes::new(),
            username: None,
            reason,
            context: "toplevel",
            object: Some(bytes::Bytes::from(message)),
            source: "proxy",
            mode: None,
            policy_version: None,
        });
        None
    }
}
