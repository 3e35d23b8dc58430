//! Configuration: load `proxy.toml`, apply command-line overrides, validate into typed values.
//!
//! Two stages, as ripgrep's low/high arguments: [`raw::RawConfig`] is the file as written, and
//! [`Config`] is what the proxy runs on, with addresses parsed, limits checked and durations
//! typed. Every error names where the value came from, the key and what is wrong, on one line.

pub mod cluster;
pub mod raw;
pub mod sinks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::resp::request::RequestLimits;
use raw::RawConfig;

pub use crate::acl::config::{AclConfig, AclMode, LogSource};
pub use crate::audit::config::{
    AuditConfig, Checkpoints, Durability, KeyNames, OnError, OnFull, Retention,
};
pub use crate::tls::config::{ClientAuth, TlsConfig, UpstreamTlsConfig, UserFrom};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[proxy]`
    pub proxy: ProxyConfig,
    /// `[upstream]`
    pub upstream: UpstreamConfig,
    /// `[admin]`
    pub admin: AdminConfig,
    /// `[audit]`
    pub audit: AuditConfig,
    /// `[auth]`
    pub auth: AuthConfig,
    /// `[acl]`
    pub acl: AclConfig,
    /// `[tls]`: a client-facing TLS listener.
    pub tls: Option<TlsConfig>,
    /// `[cluster]`: Redis Cluster through per-node sidecars.
    pub cluster: cluster::ClusterConfig,
}

/// The client-facing side.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Address clients connect to.
    pub listen: SocketAddr,
    /// Most clients connected at once.
    pub max_clients: usize,
    /// Close clients idle this long (not blocked, subscribed or monitoring); `None` = never.
    pub idle_timeout: Option<Duration>,
    /// How long in-flight commands may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// `proxy.runtime`: how client connections are spread over threads.
    pub runtime: Runtime,
    /// `proxy.threads`: threads serving clients (0 in the file = one per CPU, resolved here).
    pub threads: usize,
    /// Per-connection bounds.
    pub limits: Limits,
}

/// `proxy.runtime`: how client connections are spread over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// One tokio multi-thread runtime (work stealing) serves every connection.
    MultiThread,
    /// One single-threaded runtime per thread, each with its own `SO_REUSEPORT` listener on
    /// `proxy.listen`, serving the clients it accepted (and their upstream connections) on that
    /// thread alone. The admin plane, the TLS listener and signals stay on a shared runtime.
    PerCore,
}

impl Runtime {
    /// The name `proxy.runtime` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MultiThread => "multi_thread",
            Self::PerCore => "per_core",
        }
    }
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

/// Most `proxy.threads`.
const MAX_THREADS: u64 = 1024;

/// Per-connection bounds, each a `[proxy.limits]` key.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Limits on one request, as Redis applies them.
    pub request: RequestLimits,
    /// Largest unparsed request buffer.
    pub query_buffer_max_bytes: usize,
    /// Most commands waiting for their reply.
    pub pipeline_max_depth: usize,
    /// Deepest reply nesting accepted from Redis.
    pub reply_max_depth: usize,
    /// Bytes queued towards one side before the other side stops being read.
    pub output_buffer_bytes: usize,
    /// Script SHA1s whose declared class is remembered.
    pub script_cache_entries: usize,
}

/// The Redis behind the proxy.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `host:port`, resolved at each connection.
    pub address: String,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How often a client without an upstream retries.
    pub reconnect_interval: Duration,
    /// The login used to read the command table in passthrough mode (`upstream.table_user`,
    /// `upstream.table_password`).
    pub table_login: Option<(String, Secret)>,
    /// `[upstream.tls]`: TLS to Redis.
    pub tls: Option<UpstreamTlsConfig>,
    /// `upstream.pool`.
    pub pool: PoolMode,
    /// `upstream.pool_size`: shared connections per upstream state.
    pub pool_size: usize,
    /// `upstream.pool_idle_ms`.
    pub pool_idle: Duration,
    /// `upstream.pool_unread_max_bytes`.
    pub pool_unread_max_bytes: usize,
}

/// The admin plane.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Admin HTTP address.
    pub listen: SocketAddr,
    /// API keys; empty = no key needed.
    pub keys: Vec<ApiKey>,
    /// Endpoints served without a key.
    pub open_endpoints: Vec<String>,
    /// Most admin connections at once.
    pub max_connections: usize,
    /// Longest wait for a request's headers.
    pub request_timeout: Duration,
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

/// Identity.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Who authenticates clients.
    pub mode: AuthMode,
    /// Users file in Redis ACL syntax, and its contents as read at start-up (checked to
    /// compile against the embedded command table).
    pub users_file: Option<UsersFile>,
    /// With [`AuthMode::Proxy`]: the user and password each upstream connection logs in
    /// with (`None`: Redis's default user).
    pub upstream_login: Option<(String, Secret)>,
    /// Successful authentications become security events.
    pub record_success: bool,
    /// `auth.mirror_users`: whether clients run upstream as Redis users mirroring theirs.
    pub mirror_users: MirrorUsers,
    /// `auth.mirror_prefix`.
    pub mirror_prefix: String,
}

/// `auth.mirror_users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorUsers {
    /// Mirror when the service user may run `ACL SETUSER`; otherwise refuse what Redis would
    /// check as the service user (scripts, SORT patterns) to users narrower than everything.
    Auto,
    /// Mirror, or refuse to start.
    On,
    /// Never mirror: the refusals above apply.
    Off,
}

/// `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// AUTH and HELLO AUTH go to Redis; the proxy learns the user from the reply.
    Passthrough,
    /// The proxy checks credentials against the users file and answers AUTH itself.
    Proxy,
}

/// A value that must never be printed (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The users file.
#[derive(Debug, Clone)]
pub struct UsersFile {
    /// Where it is (read again on reload).
    pub path: PathBuf,
    /// What it held when the configuration was loaded.
    pub text: Vec<u8>,
}

/// Values given on the command line; each replaces its key from the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen` → `proxy.listen`
    pub listen: Option<String>,
    /// `--upstream` → `upstream.address`
    pub upstream: Option<String>,
    /// `--admin` → `admin.listen`
    pub admin: Option<String>,
    /// `--audit-dir` → `audit.dir`
    pub audit_dir: Option<String>,
    /// `--users` → `auth.users_file`
    pub users: Option<String>,
    /// `--mode` → `acl.mode`
    pub mode: Option<AclMode>,
}

/// A configuration that cannot be used. Its `Display` is the one line shown to the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{file}:{line}: {key}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// 1-based line of the problem.
        line: usize,
        /// Dotted key at that line.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("{source_name}: {key}: {message}")]
    Invalid {
        /// The file, or the command-line flag the value came from.
        source_name: String,
        /// Dotted key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// The login the proxy reads Redis's command table with: the service login in proxy
    /// auth mode, `upstream.table_user` in passthrough.
    pub fn table_login(&self) -> Option<(&str, &[u8])> {
        let login = match self.auth.mode {
            AuthMode::Proxy => &self.auth.upstream_login,
            AuthMode::Passthrough => &self.upstream.table_login,
        };
        login.as_ref().map(|(user, password)| (user.as_str(), &password.0[..]))
    }

    /// Loads `path` (or the built-in defaults when `None`) and applies `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let (raw, source_name) = match path {
            Some(path) => {
                let file = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { file: file.clone(), source })?;
                (Self::parse_raw(&text, &file)?, file)
            }
            None => (RawConfig::default(), "built-in defaults".to_owned()),
        };
        Self::validate(raw, &source_name, overrides)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Self, ConfigError> {
        Self::validate(Self::parse_raw(text, file)?, file, &Overrides::default())
    }

    fn parse_raw(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|error| {
            let offset = error.span().map_or(0, |span| span.start);
            let (line, key) = locate_key(text, offset);
            // A type error quotes the value: never a secret's.
            let secret = ["password", "secret", "api_key"].iter().any(|word| key.contains(word));
            let message = if secret {
                "invalid value (not shown: it holds a secret); expected a string".to_owned()
            } else {
                error.message().replace('\n', " ")
            };
            ConfigError::Parse { file: file.to_owned(), line, key, message }
        })
    }

    /// Turns the raw file plus overrides into a typed configuration.
    pub fn validate(
        mut raw: RawConfig,
        source_name: &str,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut from_flag: Vec<(&'static str, &'static str)> = Vec::new();
        if let Some(listen) = &overrides.listen {
            raw.proxy.listen.clone_from(listen);
            from_flag.push(("proxy.listen", "--listen"));
        }
        if let Some(upstream) = &overrides.upstream {
            raw.upstream.address.clone_from(upstream);
            from_flag.push(("upstream.address", "--upstream"));
        }
        if let Some(admin) = &overrides.admin {
            raw.admin.listen.clone_from(admin);
            from_flag.push(("admin.listen", "--admin"));
        }
        if let Some(dir) = &overrides.audit_dir {
            raw.audit.dir.clone_from(dir);
            from_flag.push(("audit.dir", "--audit-dir"));
        }
        if let Some(users) = &overrides.users {
            raw.auth.users_file = Some(users.clone());
            from_flag.push(("auth.users_file", "--users"));
        }
        let mode_from_flag = overrides.mode;
        let invalid = |key: &'static str, message: String| {
            let source_name = from_flag
                .iter()
                .find(|(k, _)| *k == key)
                .map_or_else(|| source_name.to_owned(), |(_, flag)| format!("command line {flag}"));
            ConfigError::Invalid { source_name, key, message }
        };

        let listen =
            parse_socket_addr(&raw.proxy.listen).map_err(|m| invalid("proxy.listen", m))?;
        let limits = &raw.proxy.limits;
        let positive = |key: &'static str, value: u64| -> Result<u64, ConfigError> {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
            Ok(value)
        };
        let max_clients = positive("proxy.max_clients", raw.proxy.max_clients)?;
        if raw.proxy.threads > MAX_THREADS {
            return Err(invalid(
                "proxy.threads",
                format!("{} is above {MAX_THREADS}", raw.proxy.threads),
            ));
        }
        let threads = match raw.proxy.threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n as usize,
        };
        let inline_max_bytes = positive("proxy.limits.inline_max_bytes", limits.inline_max_bytes)?;
        let bulk_max_bytes = positive("proxy.limits.bulk_max_bytes", limits.bulk_max_bytes)?;
        let multibulk_max_len =
            positive("proxy.limits.multibulk_max_len", limits.multibulk_max_len)?;
        if multibulk_max_len > i32::MAX as u64 {
            return Err(invalid(
                "proxy.limits.multibulk_max_len",
                format!("{multibulk_max_len} is above Redis's own limit of {}", i32::MAX),
            ));
        }
        let query_buffer_max_bytes =
            positive("proxy.limits.query_buffer_max_bytes", limits.query_buffer_max_bytes)?;
        if query_buffer_max_bytes < bulk_max_bytes.max(inline_max_bytes) {
            return Err(invalid(
                "proxy.limits.query_buffer_max_bytes",
                format!(
                    "{query_buffer_max_bytes} cannot hold one argument of bulk_max_bytes \
                     ({bulk_max_bytes}) or one inline line of inline_max_bytes ({inline_max_bytes})"
                ),
            ));
        }
        let limits = Limits {
            request: RequestLimits {
                inline_max_bytes: inline_max_bytes as usize,
                bulk_max_bytes,
                multibulk_max_len,
                unauthenticated_multibulk_max_len: limits.unauthenticated_multibulk_max_len,
                unauthenticated_bulk_max_bytes: limits.unauthenticated_bulk_max_bytes,
            },
            query_buffer_max_bytes: query_buffer_max_bytes as usize,
            pipeline_max_depth: positive(
                "proxy.limits.pipeline_max_depth",
                limits.pipeline_max_depth,
            )? as usize,
            reply_max_depth: positive("proxy.limits.reply_max_depth", limits.reply_max_depth)?
                as usize,
            output_buffer_bytes: positive(
                "proxy.limits.output_buffer_bytes",
                limits.output_buffer_bytes,
            )? as usize,
            script_cache_entries: positive(
                "proxy.limits.script_cache_entries",
                limits.script_cache_entries,
            )? as usize,
        };

        let address = raw.upstream.address.trim().to_owned();
        validate_host_port(&address).map_err(|m| invalid("upstream.address", m))?;
        let connect_timeout_ms =
            positive("upstream.connect_timeout_ms", raw.upstream.connect_timeout_ms)?;
        let pool_size = positive("upstream.pool_size", raw.upstream.pool_size)?;
        if pool_size > MAX_POOL_SIZE {
            return Err(invalid("upstream.pool_size", format!("must be at most {MAX_POOL_SIZE}")));
        }
        let pool_idle_ms = positive("upstream.pool_idle_ms", raw.upstream.pool_idle_ms)?;
        let pool_unread_max_bytes =
            positive("upstream.pool_unread_max_bytes", raw.upstream.pool_unread_max_bytes)?;
        let admin_listen =
            parse_socket_addr(&raw.admin.listen).map_err(|m| invalid("admin.listen", m))?;
        if raw.audit.dir.trim().is_empty() {
            return Err(invalid("audit.dir", "must not be empty".into()));
        }
        let on_error = match raw.audit.on_error.as_str() {
            "continue" => OnError::Continue,
            "reject" => OnError::Reject,
            "shutdown" => OnError::Shutdown,
            other => {
                return Err(invalid(
                    "audit.on_error",
                    format!("\"{other}\" is not one of \"continue\", \"reject\", \"shutdown\""),
                ))
            }
        };
        let durability = match raw.audit.durability.as_str() {
            "async" => Durability::Async,
            "write" => Durability::Write,
            "fsync" => Durability::Fsync,
            other => {
                return Err(invalid(
                    "audit.durability",
                    format!("\"{other}\" is not one of \"async\", \"write\", \"fsync\""),
                ))
            }
        };
        let chain_alg =
            crate::audit::chain::ChainAlg::from_name(&raw.audit.chain_alg).ok_or_else(|| {
                invalid(
                    "audit.chain_alg",
                    format!("\"{}\" is not one of \"blake3\", \"sha256\"", raw.audit.chain_alg),
                )
            })?;
        if raw.audit.seal_records == 0 {
            return Err(invalid("audit.seal_records", "must be at least 1".into()));
        }
        let on_full = match raw.audit.on_full.as_str() {
            "drop" => OnFull::Drop,
            "block" => OnFull::Block,
            "reject" => OnFull::Reject,
            other => {
                return Err(invalid(
                    "audit.on_full",
                    format!("\"{other}\" is not one of \"drop\", \"block\", \"reject\""),
                ))
            }
        };
        let keys = match (raw.audit.keys.as_str(), &raw.audit.hmac_key_file) {
            ("clear", _) => KeyNames::Clear,
            ("off", _) => KeyNames::Off,
            ("hmac", Some(path)) => KeyNames::Hmac(
                read_key_file("audit.hmac_key_file", path).map_err(|(k, m)| invalid(k, m))?,
            ),
            ("hmac", None) => {
                return Err(invalid(
                    "audit.hmac_key_file",
                    "is required with keys = \"hmac\"".into(),
                ))
            }
            (other, _) => {
                return Err(invalid(
                    "audit.keys",
                    format!("\"{other}\" is not one of \"clear\", \"hmac\", \"off\""),
                ))
            }
        };
        let filters = validate_filters(&raw.audit.filters).map_err(|(key, m)| invalid(key, m))?;
        let audit_sinks =
            sinks::validate_sinks(&raw.audit.sinks).map_err(|(key, m)| invalid(key, m))?;
        let checkpoint = match &raw.audit.checkpoint_key_file {
            Some(path) => Some((
                read_key_file("audit.checkpoint_key_file", path).map_err(|(k, m)| invalid(k, m))?,
                raw.audit.checkpoint_records,
            )),
            None => None,
        };
        let rotate_bytes = positive("audit.rotate_bytes", raw.audit.rotate_bytes)?;
        let queue_max_bytes = positive("audit.queue_max_bytes", raw.audit.queue_max_bytes)?;
        let mode = match mode_from_flag {
            Some(mode) => mode,
            None => match raw.acl.mode.as_str() {
                "enforce" => AclMode::Enforce,
                "observe" => AclMode::Observe,
                other => {
                    return Err(invalid(
                        "acl.mode",
                        format!("\"{other}\" is not one of \"enforce\", \"observe\""),
                    ))
                }
            },
        };

        let users_file = match &raw.auth.users_file {
            Some(path) => Some(read_users_file(path).map_err(|m| invalid("auth.users_file", m))?),
            None => None,
        };
        let auth_mode = match raw.auth.mode.as_str() {
            "passthrough" => AuthMode::Passthrough,
            "proxy" if users_file.is_none() => {
                return Err(invalid(
                    "auth.mode",
                    "\"proxy\" needs auth.users_file (the users the proxy authenticates)".into(),
                ))
            }
            "proxy" => AuthMode::Proxy,
            other => {
                return Err(invalid(
                    "auth.mode",
                    format!("\"{other}\" is not one of \"passthrough\", \"proxy\""),
                ))
            }
        };
        let upstream_login = match (&raw.auth.upstream_user, &raw.auth.upstream_password) {
            (Some(user), Some(password)) => {
                Some((user.clone(), Secret(password.as_bytes().to_vec())))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "auth.upstream_password",
                    "is needed with auth.upstream_user".into(),
                ))
            }
            (None, Some(_)) => Some((
                "default".to_owned(),
                Secret(raw.auth.upstream_password.clone().unwrap_or_default().into_bytes()),
            )),
        };

        let mirror_users = match raw.auth.mirror_users.as_str() {
            "auto" => MirrorUsers::Auto,
            "on" => MirrorUsers::On,
            "off" => MirrorUsers::Off,
            other => {
                return Err(invalid(
                    "auth.mirror_users",
                    format!("\"{other}\" is not one of \"auto\", \"on\", \"off\""),
                ))
            }
        };
        if crate::acl::user::has_spaces(raw.auth.mirror_prefix.as_bytes()) {
            return Err(invalid("auth.mirror_prefix", "must not contain spaces".into()));
        }
        let table_login = match (&raw.upstream.table_user, &raw.upstream.table_password) {
            (user, Some(password)) => Some((
                user.clone().unwrap_or_else(|| "default".to_owned()),
                Secret(password.as_bytes().to_vec()),
            )),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "upstream.table_password",
                    "is needed with upstream.table_user".into(),
                ))
            }
        };

        let mut admin_keys = Vec::new();
        for (key, secret, full, key_name) in [
            (&raw.admin.api_key, &raw.admin.api_secret, true, "admin.api_key"),
            (
                &raw.admin.metrics_api_key,
                &raw.admin.metrics_api_secret,
                false,
                "admin.metrics_api_key",
            ),
        ] {
            match (key, secret) {
                (Some(key), Some(secret)) => admin_keys.push(ApiKey {
                    key: key.clone(),
                    secret: Secret(secret.as_bytes().to_vec()),
                    full,
                    digest: ApiKey::digest(key.as_bytes(), secret.as_bytes()),
                }),
                (None, None) => {}
                _ => return Err(invalid(key_name, "needs both the key and its secret".into())),
            }
        }
        if raw.admin.max_request_bytes < MIN_ADMIN_REQUEST_BYTES {
            return Err(invalid(
                "admin.max_request_bytes",
                format!(
                    "{} is below {MIN_ADMIN_REQUEST_BYTES}, the smallest request buffer the HTTP \
                     server can work with",
                    raw.admin.max_request_bytes
                ),
            ));
        }
        let mut allowed_hosts = Vec::new();
        for host in &raw.admin.allowed_hosts {
            let name = host.trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
            if name.is_empty() || !name.chars().all(valid) {
                return Err(invalid(
                    "admin.allowed_hosts",
                    format!("\"{host}\" is not a host name (no scheme, port or path)"),
                ));
            }
            allowed_hosts.push(name);
        }
        let upstream_tls = match &raw.upstream.tls {
            None => None,
            Some(tls) => {
                let path = |value: &Option<String>| value.as_ref().map(PathBuf::from);
                let host = address.rsplit_once(':').map_or(address.as_str(), |(host, _)| host);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let config = UpstreamTlsConfig {
                    ca_file: path(&tls.ca_file),
                    cert_file: path(&tls.cert_file),
                    key_file: path(&tls.key_file),
                    server_name: tls.server_name.clone().unwrap_or_else(|| host.to_owned()),
                    insecure_skip_verify: tls.insecure_skip_verify,
                };
                if config.cert_file.is_some() != config.key_file.is_some() {
                    return Err(invalid(
                        "upstream.tls.key_file",
                        "cert_file and key_file go together".into(),
                    ));
                }
                crate::tls::client_config(&config)
                    .map_err(|e| invalid("upstream.tls", e.to_string()))?;
                crate::tls::server_name(&config.server_name)
                    .map_err(|e| invalid("upstream.tls.server_name", e.to_string()))?;
                Some(config)
            }
        };
        let tls = match &raw.tls {
            None => None,
            Some(tls) => {
                let listen: SocketAddr = tls.listen.trim().parse().map_err(|e| {
                    invalid("tls.listen", format!("\"{}\" is not an address: {e}", tls.listen))
                })?;
                let client_auth = match tls.client_auth.as_str() {
                    "none" => ClientAuth::None,
                    "optional" => ClientAuth::Optional,
                    "required" => ClientAuth::Required,
                    other => {
                        return Err(invalid(
                            "tls.client_auth",
                            format!(
                                "\"{other}\" is not one of \"none\", \"optional\", \"required\""
                            ),
                        ))
                    }
                };
                let user_from = match tls.user_from.as_str() {
                    "none" => UserFrom::None,
                    "cn" => UserFrom::Cn,
                    "san" => UserFrom::San,
                    other => {
                        return Err(invalid(
                            "tls.user_from",
                            format!("\"{other}\" is not one of \"none\", \"cn\", \"san\""),
                        ))
                    }
                };
                if client_auth != ClientAuth::None && tls.ca_file.is_none() {
                    return Err(invalid("tls.ca_file", "client_auth needs a CA file".into()));
                }
                if user_from != UserFrom::None
                    && (client_auth == ClientAuth::None || auth_mode != AuthMode::Proxy)
                {
                    return Err(invalid(
                        "tls.user_from",
                        "needs tls.client_auth = \"optional\" or \"required\" and auth.mode = \"proxy\" (the proxy must own the users it maps certificates to)".into(),
                    ));
                }
                if tls.cert_file.is_empty() || tls.key_file.is_empty() {
                    return Err(invalid(
                        "tls.cert_file",
                        "cert_file and key_file are needed".into(),
                    ));
                }
                let config = TlsConfig {
                    listen,
                    cert_file: PathBuf::from(&tls.cert_file),
                    key_file: PathBuf::from(&tls.key_file),
                    ca_file: tls.ca_file.as_ref().map(PathBuf::from),
                    client_auth,
                    user_from,
                    handshake_timeout: Duration::from_millis(tls.handshake_timeout_ms.max(1)),
                };
                crate::tls::server_config(&config).map_err(|e| invalid("tls", e.to_string()))?;
                Some(config)
            }
        };

        let cluster = raw.cluster.validate().map_err(|(key, message)| invalid(key, message))?;
        Ok(Self {
            cluster,
            proxy: ProxyConfig {
                listen,
                max_clients: max_clients as usize,
                idle_timeout: (raw.proxy.timeout > 0)
                    .then(|| Duration::from_secs(raw.proxy.timeout)),
                shutdown_grace: Duration::from_millis(raw.proxy.shutdown_grace_ms),
                runtime: raw.proxy.runtime,
                threads,
                limits,
            },
            upstream: UpstreamConfig {
                address,
                connect_timeout: Duration::from_millis(connect_timeout_ms),
                reconnect_interval: Duration::from_millis(raw.upstream.reconnect_interval_ms),
                table_login,
                tls: upstream_tls,
                pool: raw.upstream.pool,
                pool_size: pool_size as usize,
                pool_idle: Duration::from_millis(pool_idle_ms),
                pool_unread_max_bytes: usize::try_from(pool_unread_max_bytes).unwrap_or(usize::MAX),
            },
            tls,
            admin: AdminConfig {
                listen: admin_listen,
                keys: admin_keys,
                open_endpoints: raw.admin.open_endpoints.clone(),
                max_connections: raw.admin.max_connections.max(1) as usize,
                request_timeout: Duration::from_millis(raw.admin.request_timeout_ms.max(1)),
                max_request_bytes: raw.admin.max_request_bytes as usize,
                allowed_hosts,
            },
            audit: AuditConfig {
                enabled: raw.audit.enabled,
                dir: PathBuf::from(raw.audit.dir),
                rotate_bytes,
                rotate_interval: (raw.audit.rotate_interval > 0)
                    .then(|| Duration::from_secs(raw.audit.rotate_interval)),
                retention: Retention {
                    files: (raw.audit.retain_files > 0).then_some(raw.audit.retain_files),
                    bytes: (raw.audit.retain_bytes > 0).then_some(raw.audit.retain_bytes),
                    age: (raw.audit.retain_age > 0)
                        .then(|| Duration::from_secs(raw.audit.retain_age)),
                },
                queue_max_bytes: queue_max_bytes as usize,
                on_full,
                on_error,
                durability,
                keys,
                capture_args: raw.audit.capture_args,
                args_max_bytes: raw.audit.args_max_bytes as usize,
                coalesce: Duration::from_micros(raw.audit.coalesce_us.min(100_000)),
                group_refusals_secs: raw.audit.group_refusals_secs,
                filters,
                checkpoint: checkpoint.map(|(key, every)| Checkpoints { key, every }),
                chain_alg,
                seal_records: raw.audit.seal_records,
                seal_interval: Duration::from_millis(
                    raw.audit.seal_interval_ms.clamp(1, 3_600_000),
                ),
                sinks: audit_sinks,
            },
            auth: AuthConfig {
                mode: auth_mode,
                users_file,
                upstream_login,
                record_success: raw.auth.record_success,
                mirror_users,
                mirror_prefix: raw.auth.mirror_prefix.clone(),
            },
            acl: AclConfig {
                mode,
                observe_users: raw.acl.observe_users.clone(),
                log_max_len: usize::try_from(raw.acl.log_max_len).unwrap_or(usize::MAX),
                log_source: raw.acl.log_source,
            },
        })
    }
}

/// Reads the users file and checks that it compiles against the embedded command table. A
/// command or category name that table does not know is left for the upstream's live table,
/// which the file is compiled against at start-up (the start fails if it does not know it
/// either).
fn read_users_file(path: &str) -> Result<UsersFile, String> {
    let text = std::fs::read(path).map_err(|error| format!("{path}: {error}"))?;
    let table = crate::command::CommandTable::embedded();
    match crate::acl::Policy::compile(&text, &table, AclMode::Enforce, &[]) {
        Ok(_) => {}
        Err(error) if error.unknown_name => {}
        Err(error) => return Err(format!("{path}: {error}")),
    }
    Ok(UsersFile { path: PathBuf::from(path), text })
}

/// Reads an HMAC key from `path` (a trailing newline is not part of it; at least 16 bytes).
pub fn read_key_file(key: &'static str, path: &str) -> Result<Vec<u8>, (&'static str, String)> {
    let bytes =
        std::fs::read(path).map_err(|error| (key, format!("cannot read \"{path}\": {error}")))?;
    let secret = bytes.strip_suffix(b"\n").unwrap_or(&bytes).to_vec();
    if secret.len() < 16 {
        return Err((
            key,
            format!("\"{path}\" holds {} bytes; an HMAC key needs at least 16", secret.len()),
        ));
    }
    Ok(secret)
}

fn validate_filters(
    raw: &raw::RawFilters,
) -> Result<crate::audit::filter::Filters, (&'static str, String)> {
    use crate::audit::filter::{Filters, Network};
    for kind in &raw.kinds {
        match kind.as_str() {
            "command" | "session" => {}
            "system" => {
                return Err(("audit.filters.kinds", "system events are always kept".into()))
            }
            other => {
                return Err((
                    "audit.filters.kinds",
                    format!("\"{other}\" is not one of \"command\", \"session\""),
                ))
            }
        }
    }
    for class in &raw.classes {
        if !["read", "write", "non_read_write", "unknown"].contains(&class.as_str()) {
            return Err((
                "audit.filters.classes",
                format!(
                    "\"{class}\" is not one of \"read\", \"write\", \"non_read_write\", \"unknown\""
                ),
            ));
        }
    }
    let networks = |key: &'static str, list: &[String]| {
        list.iter().map(|n| Network::parse(n).map_err(|m| (key, m))).collect::<Result<Vec<_>, _>>()
    };
    let lower = |list: &[String]| list.iter().map(|c| c.to_lowercase()).collect::<Vec<_>>();
    Ok(Filters {
        commands: raw.kinds.iter().any(|k| k == "command"),
        sessions: raw.kinds.iter().any(|k| k == "session"),
        classes: raw.classes.clone(),
        include_users: raw.include_users.clone(),
        exclude_users: raw.exclude_users.clone(),
        include_commands: lower(&raw.include_commands),
        exclude_commands: lower(&raw.exclude_commands),
        include_networks: networks("audit.filters.include_networks", &raw.include_networks)?,
        exclude_networks: networks("audit.filters.exclude_networks", &raw.exclude_networks)?,
        ignore_high_frequency: lower(&raw.ignore_high_frequency),
    })
}

fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| format!("\"{text}\" is not an address of the form IP:PORT"))
}

fn validate_host_port(text: &str) -> Result<(), String> {
    let bad = || format!("\"{text}\" is not an address of the form HOST:PORT");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// The 1-based line of `offset` in `text` and the dotted key written there
/// (`[section]` header plus the key before `=`).
fn locate_key(text: &str, offset: usize) -> (usize, String) {
    let offset = offset.min(text.len());
    let line_number = text[..offset].matches('\n').count() + 1;
    let mut section = String::new();
    let mut key = String::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if index + 1 > line_number {
            break;
        }
        if let Some(header) = line.strip_prefix('[') {
            section = header.trim_end_matches(']').trim().to_owned();
            key.clear();
        } else if index + 1 == line_number {
            key = line.split('=').next().unwrap_or("").trim().to_owned();
        }
    }
    let dotted = match (section.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => section,
        (false, false) => format!("{section}.{key}"),
    };
    (line_number, if dotted.is_empty() { "(file)".to_owned() } else { dotted })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let config = Config::from_toml_str("", "proxy.toml").unwrap();
        assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:6380");
        assert_eq!(config.upstream.address, "127.0.0.1:6379");
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9379");
        assert_eq!(config.audit.dir, PathBuf::from("./data/audit"));
        assert_eq!(config.proxy.limits.request, RequestLimits::default());
        assert_eq!(config.acl.mode, AclMode::Enforce);
    }

    #[test]
    fn errors_name_file_line_key_and_problem() {
        let error = Config::from_toml_str("[proxy]\nlisten = \"x\"\n", "p.toml").unwrap_err();
        assert_eq!(
            error.to_string(),
            "p.toml: proxy.listen: \"x\" is not an address of the form IP:PORT"
        );
        let error = Config::from_toml_str("[proxy]\nlisen = 1\n", "p.toml").unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("p.toml:2: proxy.lisen: unknown field `lisen`"), "{text}");
        let error = Config::from_toml_str("[proxy.limits]\nbulk_max_bytes = \"big\"\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("p.toml:2: proxy.limits.bulk_max_bytes: invalid type"),
            "{error}"
        );
        assert!(!error.contains('\n'));
        for (text, key) in [
            ("[auth]\nupstream_password = 12345678\n", "auth.upstream_password"),
            ("[upstream]\ntable_password = [98765]\n", "upstream.table_password"),
            ("[admin]\napi_secret = 4242424242\n", "admin.api_secret"),
        ] {
            let error = Config::from_toml_str(text, "p.toml").unwrap_err().to_string();
            assert!(error.starts_with(&format!("p.toml:2: {key}: invalid value")), "{error}");
            for secret in ["12345678", "98765", "4242424242"] {
                assert!(!error.contains(secret), "a secret in {error}");
            }
        }
        let error = Config::from_toml_str("[proxy]\nmax_clients = 0\n", "p.toml").unwrap_err();
        assert_eq!(error.to_string(), "p.toml: proxy.max_clients: must be at least 1");
        let error =
            Config::from_toml_str("[audit]\ndurability = \"sync\"\n", "p.toml").unwrap_err();
        assert_eq!(
            error.to_string(),
            "p.toml: audit.durability: \"sync\" is not one of \"async\", \"write\", \"fsync\""
        );
        let error = Config::from_toml_str("[audit]\nchain_alg = \"md5\"\n", "p.toml").unwrap_err();
        assert_eq!(
            error.to_string(),
            "p.toml: audit.chain_alg: \"md5\" is not one of \"blake3\", \"sha256\""
        );
        let error = Config::from_toml_str("[audit]\nseal_records = 0\n", "p.toml").unwrap_err();
        assert_eq!(error.to_string(), "p.toml: audit.seal_records: must be at least 1");
        let config = Config::from_toml_str("[audit]\nchain_alg = \"sha256\"\n", "p.toml").unwrap();
        assert_eq!(config.audit.chain_alg, crate::audit::chain::ChainAlg::Sha256);
    }

    #[test]
    fn admin_request_heads_of_less_than_8192_bytes_are_refused() {
        let error = Config::from_toml_str("[admin]\nmax_request_bytes = 8191\n", "p.toml");
        assert_eq!(
            error.unwrap_err().to_string(),
            "p.toml: admin.max_request_bytes: 8191 is below 8192, the smallest request buffer \
             the HTTP server can work with"
        );
        let config = Config::from_toml_str("[admin]\nmax_request_bytes = 8192\n", "p.toml");
        assert_eq!(config.unwrap().admin.max_request_bytes, 8192);
    }

    #[test]
    fn admin_allowed_hosts_are_bare_names() {
        let text = "[admin]\nallowed_hosts = [\"Metrics.Internal.\", \"proxy-1\"]\n";
        let config = Config::from_toml_str(text, "p.toml").unwrap();
        assert_eq!(config.admin.allowed_hosts, ["metrics.internal", "proxy-1"]);
        for bad in ["http://x", "x:9379", "", "a b", "x/y"] {
            let text = format!("[admin]\nallowed_hosts = [\"{bad}\"]\n");
            let error = Config::from_toml_str(&text, "p.toml").unwrap_err().to_string();
            assert!(error.starts_with("p.toml: admin.allowed_hosts: "), "{bad}: {error}");
        }
    }

    #[test]
    fn filters_are_checked() {
        let error =
            Config::from_toml_str("[audit.filters]\nkinds = [\"system\"]\n", "p.toml").unwrap_err();
        assert_eq!(error.to_string(), "p.toml: audit.filters.kinds: system events are always kept");
        let error = Config::from_toml_str(
            "[audit.filters]\nexclude_networks = [\"10.0.0.0/99\"]\n",
            "p.toml",
        )
        .unwrap_err();
        assert!(
            error.to_string().starts_with("p.toml: audit.filters.exclude_networks:"),
            "{error}"
        );
        let config = Config::from_toml_str(
            "[audit.filters]\nkinds = [\"command\"]\nexclude_commands = [\"CONFIG\"]\n",
            "p.toml",
        )
        .unwrap();
        assert!(!config.audit.filters.sessions && config.audit.filters.commands);
        assert_eq!(config.audit.filters.exclude_commands, ["config"]);
    }

    #[test]
    fn hmac_keys_need_a_key_file() {
        let error = Config::from_toml_str("[audit]\nkeys = \"hmac\"\n", "p.toml").unwrap_err();
        assert_eq!(
            error.to_string(),
            "p.toml: audit.hmac_key_file: is required with keys = \"hmac\""
        );
        let dir = std::env::temp_dir().join(format!("rap-hmac-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "tiny\n").unwrap();
        let text = format!("[audit]\nkeys = \"hmac\"\nhmac_key_file = \"{}\"\n", short.display());
        let error = Config::from_toml_str(&text, "p.toml").unwrap_err().to_string();
        assert!(error.contains("holds 4 bytes"), "{error}");
        let good = dir.join("good");
        std::fs::write(&good, "0123456789abcdef0123\n").unwrap();
        let text = format!("[audit]\nkeys = \"hmac\"\nhmac_key_file = \"{}\"\n", good.display());
        let config = Config::from_toml_str(&text, "p.toml").unwrap();
        assert_eq!(config.audit.keys, KeyNames::Hmac(b"0123456789abcdef0123".to_vec()));
        assert!(!format!("{config:?}").contains("0123456789abcdef"), "the key is never shown");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flags_override_the_file_and_are_named_when_wrong() {
        let overrides = Overrides { upstream: Some("redis:6390".into()), ..Overrides::default() };
        let raw: RawConfig = toml::from_str("[upstream]\naddress = \"a:1\"\n").unwrap();
        let config = Config::validate(raw.clone(), "p.toml", &overrides).unwrap();
        assert_eq!(config.upstream.address, "redis:6390");
        let overrides = Overrides { upstream: Some("nope".into()), ..Overrides::default() };
        let error = Config::validate(raw, "p.toml", &overrides).unwrap_err();
        assert_eq!(
            error.to_string(),
            "command line --upstream: upstream.address: \"nope\" is not an address of the form HOST:PORT"
        );
    }

    #[test]
    fn runtime_and_threads() {
        let config = Config::from_toml_str("", "p.toml").unwrap();
        assert_eq!(config.proxy.runtime, Runtime::MultiThread);
        assert!(config.proxy.threads >= 1, "0 = one per CPU");
        let text = "[proxy]\nruntime = \"per_core\"\nthreads = 3\n";
        let config = Config::from_toml_str(text, "p.toml").unwrap();
        assert_eq!((config.proxy.runtime, config.proxy.threads), (Runtime::PerCore, 3));
        let error = Config::from_toml_str("[proxy]\nruntime = \"per_thread\"\n", "p.toml");
        let error = error.unwrap_err().to_string();
        assert!(error.contains("proxy.runtime") && error.contains("per_core"), "{error}");
        let error = Config::from_toml_str("[proxy]\nthreads = 5000\n", "p.toml").unwrap_err();
        assert_eq!(error.to_string(), "p.toml: proxy.threads: 5000 is above 1024");
    }

    #[test]
    fn the_example_file_is_valid_and_complete() {
        let text = include_str!("../../proxy.toml.example");
        Config::from_toml_str(text, "proxy.toml.example").unwrap();
        // Every key of the schema appears, uncommented and with its default, in the example.
        let example: toml::Table = toml::from_str(text).unwrap();
        let defaults = toml::Table::try_from(RawConfig::default()).unwrap();
        assert_eq!(example, defaults);
    }

    #[test]
    fn the_example_sink_lists_every_key_with_its_default() {
        // `[[audit.sinks]]` is an array (empty by default), so the example shows one table
        // commented out: uncommented, it must hold every key of a sink with its default, apart
        // from the TLS files, whose default is none.
        let text = include_str!("../../proxy.toml.example");
        let start = text.find("# [[audit.sinks]]\n").expect("the example shows a sink");
        let table: String = text[start..]
            .lines()
            .skip(1)
            .take_while(|line| line.starts_with("# "))
            .filter(|line| !line.starts_with("#  "))
            .map(|line| format!("{}\n", &line[2..]))
            .collect();
        let mut example: toml::Table = toml::from_str(&table).unwrap();
        for optional in ["ca_file", "cert_file", "key_file", "server_name"] {
            assert!(example.remove(optional).is_some(), "{optional} is shown");
        }
        let defaults = toml::Table::try_from(sinks::RawSink::default()).unwrap();
        assert_eq!(example, defaults);
    }
}
