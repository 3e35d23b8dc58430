//! The data plane: listener, per-client connections, upstream connections, and what they share.

pub mod connection;
pub mod listener;
pub mod pipeline;
pub mod session;
pub mod upstream;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::record::CommandSink;

/// What every connection shares: configuration, the record sink, and what was learned
/// about the upstream.
#[derive(Debug)]
pub struct ProxyContext {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Where per-command records go.
    pub sink: Arc<dyn CommandSink>,
    /// Learned from Redis's replies: a new connection must AUTH before anything else
    /// (so Redis's tighter unauthenticated request limits apply to it).
    pub auth_required: AtomicBool,
    next_connection_id: AtomicU64,
}

impl ProxyContext {
    /// A context for `config`, sending records to `sink`.
    pub fn new(config: Arc<Config>, sink: Arc<dyn CommandSink>) -> Self {
        Self {
            config,
            sink,
            auth_required: AtomicBool::new(false),
            next_connection_id: AtomicU64::new(1),
        }
    }

    /// A new connection id, unique within the process.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether a new connection starts unauthenticated.
    pub fn auth_required(&self) -> bool {
        self.auth_required.load(Ordering::Relaxed)
    }

    /// Records what a reply proved about the default user.
    pub fn set_auth_required(&self, required: bool) {
        if self.auth_required() != required {
            self.auth_required.store(required, Ordering::Relaxed);
        }
    }
}
