//! Where the command table comes from: the upstream's `COMMAND` when it answers, the embedded
//! copy when `COMMAND` is renamed away, refused or unreachable, and a warning when the two
//! disagree.

use std::io::Write;
use std::sync::{Arc, Mutex};

use redis_audit_proxy::command::TableSource;

use crate::support::mock::{Answer, MockRedis};
use crate::support::{RedisServer, TestProxy};

/// Captures the log lines emitted on this thread while the guard lives.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn start(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn live_table_when_the_upstream_answers_command() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let log = Captured::default();
    let guard = log.start();
    let proxy = TestProxy::start(redis.addr).await;
    drop(guard);
    let table = proxy.commands();
    assert_eq!(table.source, TableSource::Live(redis.addr.to_string()));
    assert!(table.get(b"getdel").is_some());
    assert_eq!(table.categories.first().map(String::as_str), Some("keyspace"), "from ACL CAT");
    assert!(table.categories.iter().any(|c| c == "scripting"));
    assert!(log.text().contains("command table read from the upstream"), "{}", log.text());
    assert!(!log.text().contains("differs"), "same version as embedded: {}", log.text());
}

#[tokio::test]
async fn embedded_table_when_command_is_renamed_away_or_refused() {
    crate::require_redis!();
    for extra in [&["--rename-command", "COMMAND", ""][..], &["--requirepass", "pw"]] {
        let redis = RedisServer::start(extra);
        let log = Captured::default();
        let guard = log.start();
        let proxy = TestProxy::start(redis.addr).await;
        drop(guard);
        assert_eq!(proxy.commands().source, TableSource::Embedded, "{extra:?}");
        let text = log.text();
        assert!(text.contains("using the command table embedded in the binary"), "{text}");
        assert!(text.contains("COMMAND was refused"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_requirepass_the_first_accepted_auth_reads_the_live_table() {
    crate::require_redis!();
    let redis = RedisServer::start(&["--requirepass", "pw"]);
    let proxy = TestProxy::start(redis.addr).await;
    assert_eq!(proxy.commands().source, TableSource::Embedded, "COMMAND needs a login");
    let mut client = crate::support::RawClient::connect(proxy.addr).await;
    assert_eq!(client.call(&[b"AUTH", b"wrong"]).await[..10], b"-WRONGPASS"[..]);
    assert_eq!(client.call(&[b"AUTH", b"pw"]).await, b"+OK\r\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while proxy.commands().source == TableSource::Embedded {
        assert!(std::time::Instant::now() < deadline, "the table stayed the embedded one");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(matches!(proxy.commands().source, TableSource::Live(_)));
    proxy.shutdown().await;
}

/// A fake upstream of another "version": the embedded COMMAND reply with DECR's arity
/// changed. It answers COMMAND with that table and anything else with `+PONG`.
async fn other_version_upstream() -> MockRedis {
    let embedded = include_bytes!("../../src/command/embedded.resp");
    let original = b"$4\r\ndecr\r\n:2\r\n";
    let at = embedded.windows(original.len()).position(|w| w == original).expect("decr entry");
    let mut reply = embedded.to_vec();
    reply[at + original.len() - 3] = b'3';
    MockRedis::start(move |args| {
        if args.first().is_some_and(|name| name.eq_ignore_ascii_case(b"COMMAND")) {
            Answer::Reply(reply.clone())
        } else {
            Answer::Reply(b"+PONG\r\n".to_vec())
        }
    })
    .await
}

#[tokio::test]
async fn a_warning_names_the_commands_that_differ() {
    let mock = other_version_upstream().await;
    let upstream = mock.addr;
    let log = Captured::default();
    let guard = log.start();
    let proxy = TestProxy::start(upstream).await;
    drop(guard);
    let table = proxy.commands();
    assert_eq!(table.source, TableSource::Live(upstream.to_string()));
    assert_eq!(table.get(b"decr").unwrap().arity, 3, "the upstream's table is used");
    let text = log.text();
    assert!(text.contains("differs from the embedded one"), "{text}");
    assert!(text.contains("count=1") && text.contains("commands=decr"), "{text}");
}
