//! The set-up most audit tests share: a real Redis, a scratch directory, and the proxy in
//! front of that Redis writing its audit trail into the directory.

use std::sync::Arc;

use redis_audit_proxy::audit::AuditSink;

use crate::support::{RedisServer, Scratch, TestProxy};

/// A proxy writing the real audit trail, with the Redis it fronts and the directory it writes.
/// Destructure it whole (`let AuditedProxy { redis, dir, proxy, audit } = ...`): a field left
/// in the temporary is dropped at the end of the statement (Redis stopped, directory removed).
#[derive(Debug)]
pub struct AuditedProxy {
    /// The Redis behind the proxy (default options).
    pub redis: RedisServer,
    /// The audit directory.
    pub dir: Scratch,
    /// The proxy.
    pub proxy: TestProxy,
    /// Its audit sink: `sync()` waits until the records so far are in the files.
    pub audit: Arc<AuditSink>,
}

impl AuditedProxy {
    /// Starts Redis, and the proxy writing into a new scratch directory named after `tag`;
    /// `toml` is extra configuration (e.g. `[audit]` keys). Fails the test when redis-server
    /// is not installed.
    pub async fn start(tag: &str, toml: &str) -> Self {
        crate::support::redis::assert_available();
        let redis = RedisServer::start(&[]);
        let dir = Scratch::new(tag);
        let (proxy, audit) = TestProxy::start_audited(redis.addr, dir.path(), toml).await;
        Self { redis, dir, proxy, audit }
    }
}
