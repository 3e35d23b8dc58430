//! `[admin]` validated: the admin plane ([`AdminConfig`]), its API keys ([`ApiKey`]), and the
//! validator of [`RawAdmin`].

use std::net::SocketAddr;
use std::time::Duration;

use super::auth::Secret;
use super::error::Invalid;
use super::proxy::parse_socket_addr;
use super::raw::RawAdmin;

/// The admin plane.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Admin HTTP address.
    pub listen: SocketAddr,
    /// API keys; empty = no key needed.
    pub keys: Vec<ApiKey>,
    /// Endpoints served without a key (request paths, compared as they are).
    pub(crate) open_endpoints: Vec<String>,
    /// Most admin connections at once.
    pub max_connections: usize,
    /// Longest wait for a request's headers.
    pub(crate) request_timeout: Duration,
    /// Largest request head (at least [`MIN_ADMIN_REQUEST_BYTES`]).
    pub max_request_bytes: usize,
    /// Host names accepted in `Host` and `Origin` besides IP addresses and `localhost`
    /// (lower case, no port).
    pub allowed_hosts: Vec<String>,
}

/// The smallest request buffer the admin HTTP server (hyper) can work with: a smaller
/// `admin.max_request_bytes` is refused rather than silently raised.
pub const MIN_ADMIN_REQUEST_BYTES: u64 = 8192;

/// One admin API key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// `x-api-key`.
    pub key: String,
    /// `x-api-secret-key` (a secret: `Debug` hides it).
    pub secret: Secret,
    /// Access to everything (`true`) or to metrics and health only.
    pub full: bool,
    /// [`ApiKey::digest`] of the key and secret, what a request's headers are compared with.
    pub digest: [u8; 32],
}

impl ApiKey {
    /// SHA-256 of a key and its secret (the key's length first, so no other pair gives the
    /// same input). Credentials are compared as these fixed-length digests, so the time of a
    /// comparison says nothing about the configured lengths; the configured pair is hashed
    /// once, at configuration.
    pub fn digest(key: &[u8], secret: &[u8]) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(key);
        hasher.update(secret);
        hasher.finalize().into()
    }
}

impl RawAdmin {
    /// Checks `[admin]`: the address, each key with its secret, the request size and the
    /// allowed host names.
    pub fn validate(&self) -> Result<AdminConfig, Invalid> {
        let listen = parse_socket_addr("admin.listen", &self.listen)?;
        let mut keys = Vec::new();
        for (key, secret, full, key_name) in [
            (&self.api_key, &self.api_secret, true, "admin.api_key"),
            (&self.metrics_api_key, &self.metrics_api_secret, false, "admin.metrics_api_key"),
        ] {
            match (key, secret) {
                (Some(key), Some(secret)) => keys.push(ApiKey {
                    key: key.clone(),
                    secret: Secret(secret.as_bytes().to_vec()),
                    full,
                    digest: ApiKey::digest(key.as_bytes(), secret.as_bytes()),
                }),
                (None, None) => {}
                _ => return Err(Invalid::other(key_name, "needs both the key and its secret")),
            }
        }
        if self.max_request_bytes < MIN_ADMIN_REQUEST_BYTES {
            return Err(Invalid::other(
                "admin.max_request_bytes",
                format!(
                    "{} is below {MIN_ADMIN_REQUEST_BYTES}, the smallest request buffer the HTTP \
                     server can work with",
                    self.max_request_bytes
                ),
            ));
        }
        let mut allowed_hosts = Vec::new();
        for host in &self.allowed_hosts {
            let name = host.trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
            if name.is_empty() || !name.chars().all(valid) {
                return Err(Invalid::other(
                    "admin.allowed_hosts",
                    format!("\"{host}\" is not a host name (no scheme, port or path)"),
                ));
            }
            allowed_hosts.push(name);
        }
        Ok(AdminConfig {
            listen,
            keys,
            open_endpoints: self.open_endpoints.clone(),
            max_connections: self.max_connections.max(1) as usize,
            request_timeout: Duration::from_millis(self.request_timeout_ms.max(1)),
            max_request_bytes: self.max_request_bytes as usize,
            allowed_hosts,
        })
    }
}
