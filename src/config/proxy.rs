//! `[proxy]` validated: the client-facing side ([`ProxyConfig`]), its `[proxy.limits]`
//! ([`Limits`]), and the validator that turns [`RawProxy`] into them.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::{positive, Invalid, Problem};
use super::raw::{RawLimits, RawProxy};
use crate::resp::request::RequestLimits;

/// The client-facing side.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Address clients connect to.
    pub listen: SocketAddr,
    /// Most clients connected at once.
    pub max_clients: usize,
    /// Close clients idle this long (not blocked, subscribed or monitoring); `None` = never.
    pub(crate) idle_timeout: Option<Duration>,
    /// How long in-flight commands may take to finish on shutdown.
    pub(crate) shutdown_grace: Duration,
    /// `proxy.runtime`: how client connections are spread over threads.
    pub runtime: Runtime,
    /// `proxy.threads`: threads serving clients (0 in the file = [`default_threads`], resolved
    /// here).
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

/// Most `proxy.threads`.
const MAX_THREADS: u64 = 1024;

/// `proxy.threads = 0` on a host with `cpus` CPUs: one per CPU less one, at least one. The one
/// left is Redis's: a sidecar shares its host with Redis's main thread, and threads beyond the
/// CPUs it leaves wake each other across CPUs that Redis needs. On 2 CPUs one thread cost the
/// shared pool 30 % less CPU per request than two, and the dedicated mode and TLS no more
/// (README, Decisions; docs/benchmarks.md, "Threads").
pub(crate) fn default_threads(cpus: usize) -> usize {
    cpus.saturating_sub(1).max(1)
}

/// Per-connection bounds, each a `[proxy.limits]` key.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Limits on one request, as Redis applies them.
    pub request: RequestLimits,
    /// Largest unparsed request buffer.
    pub(crate) query_buffer_max_bytes: usize,
    /// Most commands waiting for their reply.
    pub pipeline_max_depth: usize,
    /// Deepest reply nesting accepted from Redis.
    pub(crate) reply_max_depth: usize,
    /// Bytes queued towards one side before the other side stops being read.
    pub output_buffer_bytes: usize,
    /// Script SHA1s whose declared class is remembered.
    pub(crate) script_cache_entries: usize,
}

/// `text` as `IP:PORT`.
pub(super) fn parse_socket_addr(key: &'static str, text: &str) -> Result<SocketAddr, Invalid> {
    text.trim().parse().map_err(|_| Invalid::new(key, Problem::NotIpPort(text.to_owned())))
}

impl RawProxy {
    /// Checks `[proxy]` and `[proxy.limits]`.
    pub fn validate(&self) -> Result<ProxyConfig, Invalid> {
        let listen = parse_socket_addr("proxy.listen", &self.listen)?;
        let max_clients = positive("proxy.max_clients", self.max_clients)?;
        if self.threads > MAX_THREADS {
            return Err(Invalid::other(
                "proxy.threads",
                format!("{} is above {MAX_THREADS}", self.threads),
            ));
        }
        let threads = match self.threads {
            0 => default_threads(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            ),
            n => n as usize,
        };
        Ok(ProxyConfig {
            listen,
            max_clients: max_clients as usize,
            idle_timeout: (self.timeout > 0).then(|| Duration::from_secs(self.timeout)),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            runtime: self.runtime,
            threads,
            limits: self.limits.validate()?,
        })
    }
}

impl RawLimits {
    /// Checks `[proxy.limits]`: every bound at least 1, and a query buffer that can hold one
    /// argument or one inline line.
    pub fn validate(&self) -> Result<Limits, Invalid> {
        let inline_max_bytes = positive("proxy.limits.inline_max_bytes", self.inline_max_bytes)?;
        let bulk_max_bytes = positive("proxy.limits.bulk_max_bytes", self.bulk_max_bytes)?;
        let multibulk_max_len = positive("proxy.limits.multibulk_max_len", self.multibulk_max_len)?;
        if multibulk_max_len > i32::MAX as u64 {
            return Err(Invalid::other(
                "proxy.limits.multibulk_max_len",
                format!("{multibulk_max_len} is above Redis's own limit of {}", i32::MAX),
            ));
        }
        let query_buffer_max_bytes =
            positive("proxy.limits.query_buffer_max_bytes", self.query_buffer_max_bytes)?;
        if query_buffer_max_bytes < bulk_max_bytes.max(inline_max_bytes) {
            return Err(Invalid::other(
                "proxy.limits.query_buffer_max_bytes",
                format!(
                    "{query_buffer_max_bytes} cannot hold one argument of bulk_max_bytes \
                     ({bulk_max_bytes}) or one inline line of inline_max_bytes ({inline_max_bytes})"
                ),
            ));
        }
        let size = |key, value| positive(key, value).map(|value| value as usize);
        Ok(Limits {
            request: RequestLimits {
                inline_max_bytes: inline_max_bytes as usize,
                bulk_max_bytes,
                multibulk_max_len,
                unauthenticated_multibulk_max_len: self.unauthenticated_multibulk_max_len,
                unauthenticated_bulk_max_bytes: self.unauthenticated_bulk_max_bytes,
            },
            query_buffer_max_bytes: query_buffer_max_bytes as usize,
            pipeline_max_depth: size("proxy.limits.pipeline_max_depth", self.pipeline_max_depth)?,
            reply_max_depth: size("proxy.limits.reply_max_depth", self.reply_max_depth)?,
            output_buffer_bytes: size(
                "proxy.limits.output_buffer_bytes",
                self.output_buffer_bytes,
            )?,
            script_cache_entries: size(
                "proxy.limits.script_cache_entries",
                self.script_cache_entries,
            )?,
        })
    }
}
