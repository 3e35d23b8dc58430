//! Test harness: real Redis servers, the proxy in-process, raw RESP clients, a collecting sink.

pub mod adversary;
pub mod audited;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod http;
pub mod mock;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod rng;
pub mod rsyslog;
pub mod scratch;
pub mod skip;
pub mod tmpfs;
pub mod webdriver;

pub use client::RawClient;

/// A child process killed when dropped, so that a failing test leaves no process behind.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub use audited::AuditedProxy;
pub use proxy::TestProxy;
pub use redis::RedisServer;
pub use scratch::Scratch;
