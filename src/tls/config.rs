//! The TLS settings of both sides, validated: `[tls]` (the client-facing listener) and
//! `[upstream.tls]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[upstream.tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsConfig {
    /// CA bundle for Redis's certificate; `None`: the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain presented to Redis.
    pub cert_file: Option<PathBuf>,
    /// Its key.
    pub key_file: Option<PathBuf>,
    /// Name checked against Redis's certificate and sent as SNI.
    pub server_name: String,
    /// Accept any certificate (labs only).
    pub insecure_skip_verify: bool,
}

/// `[tls]`: the client-facing TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Its address.
    pub listen: SocketAddr,
    /// Certificate chain.
    pub cert_file: PathBuf,
    /// Key.
    pub key_file: PathBuf,
    /// CA bundle for client certificates.
    pub ca_file: Option<PathBuf>,
    /// Whether client certificates are asked for.
    pub client_auth: ClientAuth,
    /// Which certificate name becomes the ACL user.
    pub user_from: UserFrom,
    /// Longest handshake.
    pub(crate) handshake_timeout: Duration,
}

/// `tls.client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// Asked for; a client without one may still connect.
    Optional,
    /// Required, and verified against `tls.ca_file`.
    Required,
}

/// `tls.user_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserFrom {
    /// Certificates name no user.
    None,
    /// The subject's common name.
    Cn,
    /// The first DNS name or e-mail of the subject alternative names.
    San,
}

impl ClientAuth {
    /// The name `tls.client_auth` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

impl UserFrom {
    /// The name `tls.user_from` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Cn => "cn",
            Self::San => "san",
        }
    }
}
