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

/// Skips the calling test (returns early) when redis-server is not installed.
#[macro_export]
macro_rules! require_redis {
    () => {
        if !$crate::support::redis::available() {
            eprintln!("skipped: redis-server not installed (run `make test`)");
            return;
        }
    };
}
