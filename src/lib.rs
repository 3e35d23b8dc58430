//! redis-audit-proxy: a transparent sidecar in front of an unmodified Redis that records
//! every command, checks Redis ACL rules before anything is forwarded, and serves a durable
//! ACL LOG.
//!
//! # Layout
//!
//! - [`acl`]: ACL users and selectors, the permission check, the policy, ACL LOG, the ACL
//!   subcommands the proxy answers.
//! - [`admin`]: the admin HTTP plane: metrics page, health, reload, audit queries, console.
//! - [`app`]: wiring; binds the listener, runs, drains on shutdown.
//! - [`audit`]: the audit trail: events, writer thread, seals, files, verify.
//! - [`cli`]: the command-line contract (clap).
//! - [`command`]: the command table, keys and channels, read/write classification.
//! - [`config`]: `proxy.toml` → raw → validated [`config::Config`].
//! - [`event`]: what the proxy reports (command records; session, security and system
//!   events) and the [`event::EventSink`] they go to.
//! - [`explain`]: the `explain` subcommand (class, categories, keys, channels of a command line).
//! - [`metrics`]: the Prometheus counters, an [`event::EventSink`] wrapper that counts.
//! - [`proxy`]: the data plane.
//!   - [`proxy::listener`], [`proxy::tls_listener`]: accept loops, `max_clients`, handshakes.
//!   - [`proxy::cores`]: `proxy.runtime = "per_core"`: a runtime and a `SO_REUSEPORT` listener
//!     per thread.
//!   - [`proxy::connection`]: one client: the socket pump, request intake, reply pairing,
//!     events.
//!   - [`proxy::gate`]: the one pure decision per command (arity, NOAUTH, NO_MULTI, ACL).
//!   - [`proxy::auth`]: AUTH and HELLO answered by the proxy (`auth.mode = "proxy"`).
//!   - [`proxy::mirror`]: Redis users mirroring the proxy's, provisioned upstream.
//!   - [`proxy::cluster`]: Redis Cluster sidecars: node addresses rewritten to the proxies'.
//!   - [`proxy::pin`], [`proxy::pool`]: `upstream.pool = "shared"`: which commands need a
//!     connection of their own, and the shared and spare upstream connections.
//!   - [`proxy::pipeline`]: the in-order queue of commands in flight, write queues.
//!   - [`proxy::session`]: confirmed per-connection state (db, user, protocol, MULTI, ...).
//!   - [`proxy::upstream`]: connecting (and logging in) to Redis.
//! - [`resp`]: our request decoder, reply framer and proxy-written replies.
//! - [`tls`]: rustls configurations for both sides, and what a handshake tells the audit.
//! - [`query`]: audit queries over the files (DescribeAuditRecords filters and paging).
//! - [`util`]: the bottom layer, importing no other module: hex and SHA-256 text, random bytes
//!   and UUID-shaped ids.
//!
pub mod acl;
pub mod admin;
pub mod app;
pub mod audit;
pub mod cli;
pub mod command;
pub mod config;
pub mod event;
pub mod explain;
pub mod metrics;
pub mod proxy;
pub mod query;

pub mod resp;
pub mod tls;
pub mod util;

/// Exit code for bad configuration or usage (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
