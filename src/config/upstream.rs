//! `[upstream]` validated: the Redis behind the proxy ([`UpstreamConfig`]), how clients share
//! connections to it ([`PoolMode`]), TLS to it, and the validator of [`RawUpstream`].

use std::path::PathBuf;
use std::time::Duration;

use super::auth::Secret;
use super::error::{positive, Invalid, Problem};
use super::raw::{RawUpstream, RawUpstreamTls};
use super::sentinel::SentinelConfig;
use super::UpstreamTlsConfig;

/// The Redis behind the proxy.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `host:port`, resolved at each connection.
    pub address: String,
    /// How long one connection attempt may take.
    pub(crate) connect_timeout: Duration,
    /// How often a client without an upstream retries.
    pub(crate) reconnect_interval: Duration,
    /// The login used to read the command table in passthrough mode (`upstream.table_user`,
    /// `upstream.table_password`).
    pub table_login: Option<(String, Secret)>,
    /// `[upstream.tls]`: TLS to Redis.
    pub tls: Option<UpstreamTlsConfig>,
    /// `upstream.pool`.
    pub pool: PoolMode,
    /// `upstream.pool_size`: the most shared connections per upstream state (clients are
    /// packed onto the oldest that is not busy; a second is kept for those moving off it).
    pub pool_size: usize,
    /// `upstream.pool_idle_ms`.
    pub(crate) pool_idle: Duration,
    /// `upstream.pool_unread_max_bytes`.
    pub(crate) pool_unread_max_bytes: usize,
    /// `upstream.pool_busy_replies`.
    pub(crate) pool_busy_replies: u64,
    /// `upstream.pool_stall_ms`.
    pub(crate) pool_stall: Duration,
    /// `upstream.sentinels`: the sentinels that name the primary, when set.
    pub sentinel: Option<SentinelConfig>,
}

/// `upstream.pool`: how client connections map onto upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// One upstream connection per client, for its whole life.
    Dedicated,
    /// Clients share a few upstream connections per state and get one of their own (are
    /// pinned) while they need it: MULTI, WATCH, blocking, pub/sub, ... (`docs/pinning.md`).
    Shared,
}

impl PoolMode {
    /// The name `upstream.pool` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dedicated => "dedicated",
            Self::Shared => "shared",
        }
    }
}

/// Most `upstream.pool_size`.
const MAX_POOL_SIZE: u64 = 256;

/// `text` as `HOST:PORT` (`[v6]:PORT` too): the host, without brackets.
pub(super) fn host_of(key: &'static str, text: &str) -> Result<String, Invalid> {
    let bad = || Invalid::new(key, Problem::NotHostPort(text.to_owned()));
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(host.to_owned())
}

impl RawUpstream {
    /// Checks `[upstream]` and `[upstream.tls]`.
    pub fn validate(&self) -> Result<UpstreamConfig, Invalid> {
        let address = self.address.trim().to_owned();
        let host = host_of("upstream.address", &address)?;
        let connect_timeout_ms = positive("upstream.connect_timeout_ms", self.connect_timeout_ms)?;
        let pool_size = positive("upstream.pool_size", self.pool_size)?;
        if pool_size > MAX_POOL_SIZE {
            return Err(Invalid::other(
                "upstream.pool_size",
                format!("must be at most {MAX_POOL_SIZE}"),
            ));
        }
        let pool_idle_ms = positive("upstream.pool_idle_ms", self.pool_idle_ms)?;
        let pool_busy_replies = positive("upstream.pool_busy_replies", self.pool_busy_replies)?;
        let pool_stall_ms = positive("upstream.pool_stall_ms", self.pool_stall_ms)?;
        let pool_unread_max_bytes =
            positive("upstream.pool_unread_max_bytes", self.pool_unread_max_bytes)?;
        let table_login = login_of(
            ("upstream.table_user", &self.table_user),
            ("upstream.table_password", &self.table_password),
        )?;
        let sentinel_login = login_of(
            ("upstream.sentinel_user", &self.sentinel_user),
            ("upstream.sentinel_password", &self.sentinel_password),
        )?;
        let sentinel = super::sentinel::validate(
            &self.sentinels,
            &self.master_name,
            sentinel_login,
            self.sentinel_check_interval_ms,
            Duration::from_millis(connect_timeout_ms),
        )?;
        Ok(UpstreamConfig {
            sentinel,
            connect_timeout: Duration::from_millis(connect_timeout_ms),
            reconnect_interval: Duration::from_millis(self.reconnect_interval_ms),
            table_login,
            tls: self.tls.as_ref().map(|tls| tls.validate(&host)).transpose()?,
            pool: self.pool,
            pool_size: pool_size as usize,
            pool_idle: Duration::from_millis(pool_idle_ms),
            pool_unread_max_bytes: usize::try_from(pool_unread_max_bytes).unwrap_or(usize::MAX),
            pool_busy_replies,
            pool_stall: Duration::from_millis(pool_stall_ms),
            address,
        })
    }
}

/// A user and password pair of keys: the user defaults to `default`; a user without a password
/// is refused.
fn login_of(
    (user_key, user): (&'static str, &Option<String>),
    (password_key, password): (&'static str, &Option<String>),
) -> Result<Option<(String, Secret)>, Invalid> {
    match (user, password) {
        (user, Some(password)) => Ok(Some((
            user.clone().unwrap_or_else(|| "default".to_owned()),
            Secret(password.as_bytes().to_vec()),
        ))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(Invalid::new(password_key, Problem::NeededWith(user_key))),
    }
}

impl RawUpstreamTls {
    /// Checks `[upstream.tls]` (by building the client configuration it describes); `host`
    /// is the default server name.
    pub fn validate(&self, host: &str) -> Result<UpstreamTlsConfig, Invalid> {
        let path = |value: &Option<String>| value.as_ref().map(PathBuf::from);
        let config = UpstreamTlsConfig {
            ca_file: path(&self.ca_file),
            cert_file: path(&self.cert_file),
            key_file: path(&self.key_file),
            server_name: self.server_name.clone().unwrap_or_else(|| host.to_owned()),
            insecure_skip_verify: self.insecure_skip_verify,
        };
        if config.cert_file.is_some() != config.key_file.is_some() {
            return Err(Invalid::other(
                "upstream.tls.key_file",
                "cert_file and key_file go together",
            ));
        }
        crate::tls::client_config(&config)
            .map_err(|e| Invalid::other("upstream.tls", e.to_string()))?;
        crate::tls::server_name(&config.server_name)
            .map_err(|e| Invalid::other("upstream.tls.server_name", e.to_string()))?;
        Ok(config)
    }
}
