//! Test harness: real Redis servers, the proxy in-process, raw RESP clients, a collecting sink.

pub mod certs;
pub mod client;
pub mod proxy;
pub mod redis;
pub mod scratch;

pub use client::RawClient;
pub use proxy::TestProxy;
pub use redis::RedisServer;
pub use scratch::Scratch;

/// Fails the calling test, saying how to install it, when redis-server is not installed: a
/// test never passes without the real server it is about.
#[macro_export]
macro_rules! require_redis {
    () => {
        assert!(
            $crate::support::redis::available(),
            "redis-server is not installed: `make test` installs it (or `apt-get install redis-server`)"
        );
    };
}
