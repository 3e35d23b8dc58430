//! redis-audit-proxy: a transparent sidecar in front of an unmodified Redis that records
//! every command, and (in later parts) checks Redis ACL rules and serves a durable ACL LOG.
//!
//! # Layout
//!
//! - [`acl`]: ACL users and selectors, the permission check, the policy, ACL LOG.
//! - [`admin`]: the admin HTTP plane: metrics, health, reload.
//! - [`app`]: wiring; binds the listener, runs, drains on shutdown.
//! - [`audit`]: the audit trail: events, writer thread, files, verify.
//! - [`cli`]: the command-line contract (clap).
//! - [`command`]: the command table, keys and channels, read/write classification.
//! - [`config`]: `proxy.toml` → raw → validated [`config::Config`].
//! - [`explain`]: the `explain` subcommand (class, categories, keys, channels of a command line).
//! - [`proxy`]: the data plane.
//!   - [`proxy::listener`]: accept loop, `max_clients`.
//!   - [`proxy::connection`]: one client: forward, frame, pair, record.
//!   - [`proxy::pipeline`]: in-order pending slots, write queues.
//!   - [`proxy::session`]: per-connection state (db, user, protocol, MULTI, pub/sub, ...).
//!   - [`proxy::upstream`]: connecting to Redis.
//! - [`resp`]: our request decoder, reply framer and proxy-written replies.
//! - [`tls`]: rustls configurations for both sides, and what a handshake tells the audit.
//! - [`query`]: audit queries over the files (DescribeAuditRecords filters and paging).
//! - [`record`]: the per-command record and the sink interface.

pub mod acl;
pub mod admin;
pub mod app;
pub mod audit;
pub mod cli;
pub mod command;
pub mod config;
pub mod explain;
pub mod proxy;
pub mod query;
pub mod record;
pub mod resp;
pub mod tls;

/// Exit code for bad configuration or usage (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
