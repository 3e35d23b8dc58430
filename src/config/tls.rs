//! `[tls]` validated: the validator of [`RawTls`] into [`TlsConfig`] (the type is the TLS
//! module's own, in [`crate::tls::config`]), checked by building the server configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::Invalid;
use super::raw::RawTls;
use super::{AuthMode, ClientAuth, TlsConfig, UserFrom};

impl RawTls {
    /// Checks `[tls]`; `auth_mode` is `auth.mode`, which mapping certificates to users needs
    /// to be `proxy`.
    pub fn validate(&self, auth_mode: AuthMode) -> Result<TlsConfig, Invalid> {
        let listen: SocketAddr = self.listen.trim().parse().map_err(|e| {
            Invalid::other("tls.listen", format!("\"{}\" is not an address: {e}", self.listen))
        })?;
        if self.client_auth != ClientAuth::None && self.ca_file.is_none() {
            return Err(Invalid::other("tls.ca_file", "client_auth needs a CA file"));
        }
        if self.user_from != UserFrom::None
            && (self.client_auth == ClientAuth::None || auth_mode != AuthMode::Proxy)
        {
            return Err(Invalid::other(
                "tls.user_from",
                "needs tls.client_auth = \"optional\" or \"required\" and auth.mode = \"proxy\" \
                 (the proxy must own the users it maps certificates to)",
            ));
        }
        if self.cert_file.is_empty() || self.key_file.is_empty() {
            return Err(Invalid::other("tls.cert_file", "cert_file and key_file are needed"));
        }
        let config = TlsConfig {
            listen,
            cert_file: PathBuf::from(&self.cert_file),
            key_file: PathBuf::from(&self.key_file),
            ca_file: self.ca_file.as_ref().map(PathBuf::from),
            client_auth: self.client_auth,
            user_from: self.user_from,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms.max(1)),
        };
        crate::tls::server_config(&config).map_err(|e| Invalid::other("tls", e.to_string()))?;
        Ok(config)
    }
}
