//! `proxy.toml` as written: serde structs mirroring the file, with every default. Nothing else.
//!
//! Every key and its default is documented in `proxy.toml.example`; `Config::validate` turns
//! this into the typed [`Config`](super::Config), one section at a time. A closed set of values
//! is an enum here already, so a value outside it is refused while the file is parsed, naming
//! the line, the key and the accepted values.

use serde::{Deserialize, Serialize};

use super::{
    AclMode, AuthMode, ClientAuth, Durability, KeyMode, LogSource, MirrorUsers, OnError, OnFull,
    PoolMode, Runtime, UserFrom,
};
use crate::audit::chain::ChainAlg;
use crate::audit::filter::Filters;
use crate::resp::request::RequestLimits;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[proxy]`
    pub proxy: RawProxy,
    /// `[upstream]`
    pub upstream: RawUpstream,
    /// `[admin]`
    pub admin: RawAdmin,
    /// `[audit]`
    pub audit: RawAudit,
    /// `[auth]`
    pub auth: RawAuth,
    /// `[acl]`
    pub acl: RawAcl,
    /// `[tls]`: present = a client-facing TLS listener.
    pub tls: Option<RawTls>,
    /// `[cluster]`
    pub cluster: super::cluster::RawCluster,
}

/// `[proxy]`: the client-facing side.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProxy {
    /// Address clients connect to.
    pub listen: String,
    /// Most clients connected at once (Redis `maxclients`).
    pub max_clients: u64,
    /// Close a client idle for this many seconds; 0 = never (Redis `timeout`).
    pub timeout: u64,
    /// On SIGTERM/SIGINT, how long in-flight commands may take to finish.
    pub shutdown_grace_ms: u64,
    /// How client connections are spread over threads.
    pub runtime: Runtime,
    /// Threads serving clients; 0 = one per CPU less one (left to Redis), at least one.
    pub threads: u64,
    /// `[proxy.limits]`
    pub limits: RawLimits,
}

impl Default for RawProxy {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6380".into(),
            max_clients: 10_000,
            timeout: 0,
            shutdown_grace_ms: 10_000,
            runtime: Runtime::MultiThread,
            threads: 0,
            limits: RawLimits::default(),
        }
    }
}

/// `[proxy.limits]`: every bound on what one connection may make the proxy hold.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Longest inline command line (Redis `PROTO_INLINE_MAX_SIZE`).
    pub inline_max_bytes: u64,
    /// Largest bulk argument (Redis `proto-max-bulk-len`).
    pub bulk_max_bytes: u64,
    /// Most arguments in one command.
    pub multibulk_max_len: u64,
    /// Most arguments before the client has authenticated.
    pub unauthenticated_multibulk_max_len: u64,
    /// Largest argument before the client has authenticated.
    pub unauthenticated_bulk_max_bytes: u64,
    /// Largest unparsed request buffer (Redis `client-query-buffer-limit`).
    pub(crate) query_buffer_max_bytes: u64,
    /// Most commands forwarded and still waiting for their reply, per connection (each holds
    /// about 300 bytes of the proxy's memory while it waits).
    pub pipeline_max_depth: u64,
    /// Deepest nesting accepted in a reply from Redis (8 bytes of framer state per level;
    /// a Lua script can make Redis nest about 8,000 levels).
    pub(crate) reply_max_depth: u64,
    /// Bytes queued towards one side before the proxy stops reading the other.
    pub output_buffer_bytes: u64,
    /// Script SHA1s whose declared class (shebang flags) is remembered for EVALSHA.
    pub(crate) script_cache_entries: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        // Redis's own request limits, as the parser defaults to them.
        let request = RequestLimits::default();
        Self {
            inline_max_bytes: request.inline_max_bytes as u64,
            bulk_max_bytes: request.bulk_max_bytes,
            multibulk_max_len: request.multibulk_max_len,
            unauthenticated_multibulk_max_len: request.unauthenticated_multibulk_max_len,
            unauthenticated_bulk_max_bytes: request.unauthenticated_bulk_max_bytes,
            query_buffer_max_bytes: 1024 * 1024 * 1024,
            pipeline_max_depth: 20_000,
            reply_max_depth: 65_536,
            output_buffer_bytes: 1024 * 1024,
            script_cache_entries: 10_000,
        }
    }
}

/// `[upstream]`: the Redis behind the proxy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    /// `host:port` of Redis.
    pub address: String,
    /// How long one connection attempt may take.
    pub(crate) connect_timeout_ms: u64,
    /// How often a client whose upstream is down retries it.
    pub reconnect_interval_ms: u64,
    /// Passthrough behind `requirepass`: the user the proxy logs in as to read the command
    /// table (`COMMAND`); without it, the credentials of the first client to authenticate.
    pub(crate) table_user: Option<String>,
    /// Its password (a secret: never logged).
    pub(crate) table_password: Option<String>,
    /// `[upstream.tls]`: present = TLS to Redis.
    pub tls: Option<RawUpstreamTls>,
    /// `dedicated` (one upstream connection per client) or `shared`.
    pub pool: PoolMode,
    /// Shared connections per upstream state (database, protocol).
    pub pool_size: u64,
    /// A shared or spare connection no client used for this long is closed.
    pub pool_idle_ms: u64,
    /// Replies a shared connection holds for one client that does not read them, before that
    /// client is closed (as Redis's `client-output-buffer-limit` closes it).
    pub(crate) pool_unread_max_bytes: u64,
    /// A client with nothing in flight whose shared connection owes more replies than this
    /// (to other clients) moves to a less busy one before its next command.
    pub pool_busy_replies: u64,
    /// A shared connection that owes replies and delivered none for this long (a long script,
    /// a slow command) is busy too: clients move off it and new ones do not join it.
    pub pool_stall_ms: u64,
    /// `host:port` of Redis Sentinels: the proxy connects to the primary they name for
    /// `master_name` (then `address` is used only until one answers).
    pub sentinels: Vec<String>,
    /// The name the sentinels monitor the primary under.
    pub(crate) master_name: String,
    /// The sentinels' own login, if they ask for one.
    pub(crate) sentinel_user: Option<String>,
    /// Its password (a secret: never logged).
    pub(crate) sentinel_password: Option<String>,
    /// How often the primary is asked for again, besides following `+switch-master`.
    pub sentinel_check_interval_ms: u64,
}

/// `[upstream.tls]`: how the proxy speaks TLS to Redis.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstreamTls {
    /// PEM CA bundle Redis's certificate must chain to; without it, the system roots.
    pub ca_file: Option<String>,
    /// PEM client certificate chain, for Redis's `tls-auth-clients`.
    pub cert_file: Option<String>,
    /// Its PEM private key.
    pub key_file: Option<String>,
    /// Name checked against Redis's certificate (and sent as SNI); default: the host of
    /// `upstream.address`.
    pub server_name: Option<String>,
    /// Accept any certificate from Redis (labs only; logged loudly).
    pub insecure_skip_verify: bool,
}

/// `[tls]`: the client-facing TLS listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    /// Address of the TLS listener (beside `proxy.listen`, which stays plain).
    pub listen: String,
    /// PEM certificate chain presented to clients.
    pub cert_file: String,
    /// Its PEM private key.
    pub key_file: String,
    /// PEM CA bundle client certificates must chain to.
    pub ca_file: Option<String>,
    /// `none`, `optional` or `required`.
    pub client_auth: ClientAuth,
    /// `cn`, `san` or `none`: which name of a client certificate is its ACL user.
    pub user_from: UserFrom,
    /// Longest TLS handshake.
    pub handshake_timeout_ms: u64,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6390".into(),
            cert_file: String::new(),
            key_file: String::new(),
            ca_file: None,
            client_auth: ClientAuth::None,
            user_from: UserFrom::None,
            handshake_timeout_ms: 10_000,
        }
    }
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:6379".into(),
            connect_timeout_ms: 2_000,
            reconnect_interval_ms: 1_000,
            table_user: None,
            table_password: None,
            tls: None,
            pool: PoolMode::Dedicated,
            pool_size: 4,
            pool_idle_ms: 60_000,
            pool_busy_replies: 1024,
            pool_stall_ms: 100,
            pool_unread_max_bytes: 1 << 30,
            sentinels: Vec::new(),
            master_name: String::new(),
            sentinel_user: None,
            sentinel_password: None,
            sentinel_check_interval_ms: 5_000,
        }
    }
}

/// `[admin]`: the admin plane (metrics, health, query API).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Loopback address of the admin HTTP server.
    pub listen: String,
    /// API key with access to everything (`x-api-key`); none = no key needed.
    pub api_key: Option<String>,
    /// Its secret (`x-api-secret-key`).
    pub(crate) api_secret: Option<String>,
    /// API key with access to `/metrics`, `/livez` and `/readyz` only.
    pub(crate) metrics_api_key: Option<String>,
    /// Its secret.
    pub(crate) metrics_api_secret: Option<String>,
    /// Endpoints served without a key even when keys are set.
    pub(crate) open_endpoints: Vec<String>,
    /// Most admin connections at once.
    pub max_connections: u64,
    /// Longest wait for a request's headers.
    pub(crate) request_timeout_ms: u64,
    /// Largest request head (at least 8192).
    pub max_request_bytes: u64,
    /// Host names (no port) accepted in `Host` and, for POST, `Origin`, besides IP addresses
    /// and `localhost`.
    pub allowed_hosts: Vec<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9379".into(),
            api_key: None,
            api_secret: None,
            metrics_api_key: None,
            metrics_api_secret: None,
            open_endpoints: ["/metrics", "/livez", "/readyz"].map(String::from).to_vec(),
            max_connections: 64,
            request_timeout_ms: 10_000,
            max_request_bytes: 65_536,
            allowed_hosts: Vec::new(),
        }
    }
}

/// `[audit]`: the audit trail.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    /// Write the audit trail at all.
    pub enabled: bool,
    /// Directory of the audit files.
    pub dir: String,
    /// `async`, `write` or `fsync`.
    pub durability: Durability,
    /// `drop`, `block` or `reject`.
    pub on_full: OnFull,
    /// `continue`, `reject` or `shutdown`: what happens while writing the trail fails.
    pub on_error: OnError,
    /// Rotate `audit.log` before it passes this size.
    pub rotate_bytes: u64,
    /// Rotate `audit.log` when it is this many seconds old (0 = only by size).
    pub(crate) rotate_interval: u64,
    /// Keep at most this many rotated files (0 = no limit).
    pub retain_files: u64,
    /// Keep at most this many bytes of audit files, the active one included (0 = no limit).
    pub(crate) retain_bytes: u64,
    /// Delete rotated files older than this many seconds (0 = no limit).
    pub(crate) retain_age: u64,
    /// Bytes of events queued for the writer before command events are dropped.
    pub queue_max_bytes: u64,
    /// Key names in records: `clear`, `hmac` (HMAC-SHA256 with the key in `hmac_key_file`) or
    /// `off`.
    pub keys: KeyMode,
    /// File holding the HMAC key (its bytes, trailing newline ignored) for `keys = "hmac"`.
    pub(crate) hmac_key_file: Option<String>,
    /// Record command arguments (secrets redacted); off by default.
    pub(crate) capture_args: bool,
    /// Most bytes of arguments recorded per command.
    pub(crate) args_max_bytes: u64,
    /// With `durability = "async"`: microseconds the writer lets events gather after a batch
    /// (0 = write each as it comes).
    pub(crate) coalesce_us: u64,
    /// Bytes at the end of the active audit file left in the kernel's page cache; older ones are
    /// written back and dropped (0 = the kernel decides).
    pub(crate) page_cache_bytes: u64,
    /// Records of identical refused commands (same command, same error) from one connection
    /// within this many seconds become one record with a `count`; 0 = one record each.
    pub(crate) group_refusals_secs: u64,
    /// File holding the key of HMAC checkpoints (none: no checkpoints).
    pub checkpoint_key_file: Option<String>,
    /// A checkpoint every this many records (0: only when the writer stops).
    pub(crate) checkpoint_records: u64,
    /// The hash of the chain's seals: `blake3` or `sha256`.
    pub chain_alg: ChainAlg,
    /// A seal at least every this many lines.
    pub(crate) seal_records: u64,
    /// A seal once the oldest unsealed line is this many milliseconds old.
    pub seal_interval_ms: u64,
    /// `[audit.filters]`
    pub filters: Filters,
    /// `[[audit.sinks]]`: copies of the trail sent beside the files (none by default; the
    /// example file shows one commented out, with every key and its default).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<super::sinks::RawSink>,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: "./data/audit".into(),
            durability: Durability::Async,
            on_full: OnFull::Drop,
            on_error: OnError::Continue,
            rotate_bytes: 100 * 1024 * 1024,
            rotate_interval: 86_400,
            retain_files: 100,
            retain_bytes: 0,
            retain_age: 0,
            queue_max_bytes: 64 * 1024 * 1024,
            keys: KeyMode::Clear,
            hmac_key_file: None,
            capture_args: false,
            args_max_bytes: 1024,
            coalesce_us: 10000,
            page_cache_bytes: 8 * 1024 * 1024,
            group_refusals_secs: 60,
            checkpoint_key_file: None,
            checkpoint_records: 10_000,
            chain_alg: ChainAlg::Blake3,
            seal_records: 1000,
            seal_interval_ms: 1000,
            filters: Filters::default(),
            sinks: Vec::new(),
        }
    }
}

/// `[auth]`: who the client is.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// `passthrough` (Redis authenticates) or `proxy` (the proxy does, from the users file).
    pub mode: AuthMode,
    /// Users file in Redis ACL file syntax.
    pub users_file: Option<String>,
    /// With `mode = "proxy"`: the user the proxy logs in to Redis as.
    pub upstream_user: Option<String>,
    /// Its password (a secret: never logged).
    pub upstream_password: Option<String>,
    /// Successful authentications become security events (failures always do).
    pub(crate) record_success: bool,
    /// With `mode = "proxy"`: `auto`, `on` or `off` — give each proxy user a Redis user with
    /// the same rules, which each client's upstream connection logs in as, so that Redis
    /// checks scripts and SORT patterns as the client's user.
    pub mirror_users: MirrorUsers,
    /// Prefix of the mirrored users' names in Redis.
    pub(crate) mirror_prefix: String,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            mode: AuthMode::Passthrough,
            users_file: None,
            upstream_user: None,
            upstream_password: None,
            record_success: true,
            mirror_users: MirrorUsers::Auto,
            mirror_prefix: "rap:".into(),
        }
    }
}

/// `[acl]`: what the client may do.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAcl {
    /// `enforce` or `observe`.
    pub mode: AclMode,
    /// Users kept in observe mode while the rest is enforced.
    pub observe_users: Vec<String>,
    /// Most entries the proxy's `ACL LOG` keeps (Redis's `acllog-max-len`).
    pub log_max_len: u64,
    /// Without a users file, whose log `ACL LOG` shows: `proxy` or `upstream`.
    pub log_source: LogSource,
}

impl Default for RawAcl {
    fn default() -> Self {
        Self {
            mode: AclMode::Enforce,
            observe_users: Vec::new(),
            log_max_len: 128,
            log_source: LogSource::Proxy,
        }
    }
}
