//! redis-audit-proxy: a transparent sidecar in front of an unmodified Redis that records
//! every command, checks Redis ACL rules before anything is forwarded, and serves a durable
//! ACL LOG.
//!
//! # Layout
//!
//! Each module uses only those on the rows below it (`scripts/check-layers.py` checks this
//! against the same picture in the README):
//!
//! ```text
//! app                      wiring: listeners, the shared context, start-up, reload, drain
//! admin                    the admin HTTP plane: metrics page, health, reload, queries, console
//! proxy, cli               the data plane; the command-line contract
//! config, query            proxy.toml → Config (composing each subsystem's settings); queries
//! audit, metrics, explain  the trail and its sinks; Prometheus counters; explain
//! acl, event               users, the policy, ACL LOG; records and events, the EventSink
//! command, tls             the command table, keys, classes; rustls for both sides
//! resp, util               the wire (decoder, framer, encoders); hex, ids, locks, time
//! ```
//!
//! - [`util`]: hex and SHA-256 text, random bytes and UUID-shaped ids, locks that outlive a
//!   panic, Unix milliseconds.
//! - [`resp`]: our request decoder, reply framer and proxy-written replies.
//! - [`command`]: the command table, keys and channels, read/write classification.
//! - [`tls`]: rustls configurations for both sides, and what a handshake tells the audit.
//! - [`acl`]: ACL users and selectors, the permission check, the policy, ACL LOG, the ACL
//!   subcommands the proxy answers.
//! - [`event`]: what the proxy reports (command records; session, security and system
//!   events) and the [`event::EventSink`] they go to.
//! - [`audit`]: the audit trail: rendering, writer thread, seals, files, index, sinks, verify.
//! - [`metrics`]: the Prometheus counters, an [`event::EventSink`] wrapper that counts.
//! - [`explain`]: the `explain` subcommand (class, categories, keys, channels of a command line).
//! - [`query`]: audit queries over the files (DescribeAuditRecords filters and paging, logs,
//!   report, suggest-acl).
//! - [`config`]: `proxy.toml` → raw → validated [`config::Config`].
//! - [`proxy`]: the data plane.
//!   - [`proxy::listener`], [`proxy::tls_listener`]: accept loops, `max_clients`, handshakes.
//!   - [`proxy::cores`]: `proxy.runtime = "per_core"`: a runtime and a `SO_REUSEPORT` listener
//!     per thread.
//!   - [`proxy::connection`]: one client: the socket pump, request intake, reply pairing,
//!     completion, events.
//!   - [`proxy::gate`]: the one pure decision per command (arity, NOAUTH, NO_MULTI, ACL).
//!   - [`proxy::auth`]: AUTH and HELLO answered by the proxy (`auth.mode = "proxy"`).
//!   - [`proxy::mirror`]: Redis users mirroring the proxy's, provisioned upstream.
//!   - [`proxy::cluster`]: Redis Cluster sidecars: node addresses rewritten to the proxies'.
//!   - [`proxy::sentinel`]: the primary Redis Sentinel names, followed across failovers.
//!   - [`proxy::pin`], [`proxy::pool`]: `upstream.pool = "shared"`: which commands need a
//!     connection of their own, and the shared and spare upstream connections.
//!   - [`proxy::pipeline`]: the in-order queue of commands in flight, write queues.
//!   - [`proxy::session`]: confirmed per-connection state (db, user, protocol, MULTI, ...).
//!   - [`proxy::upstream`]: where Redis is, connecting (and logging in) to it.
//! - [`cli`]: the command-line contract (clap).
//! - [`admin`]: the admin HTTP plane: metrics page, health, reload, audit queries, console.
//! - [`app`]: wiring; binds the listeners, runs, drains on shutdown.

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
