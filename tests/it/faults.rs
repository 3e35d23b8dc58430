//! Upstream faults: Redis killed under connected clients, Redis down when the proxy starts,
//! an upstream that closes mid-reply or sends bytes that are not RESP; and graceful shutdown
//! with commands in flight. Faults a real server cannot produce use
//! [`MockRedis`](crate::support::mock::MockRedis).

use std::net::SocketAddr;
use std::time::Duration;

use redis_audit_proxy::event::{CommandRecord, ReplySource, ReplyStatus};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::client::show;
use crate::support::mock::MockRedis;
use crate::support::{RawClient, RedisServer, TestProxy};

/// Longest a test waits for the proxy to close a connection.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Reads until the peer closes (EOF or reset) and returns everything read, buffered bytes
/// first; fails the test when the connection is still open after [`CLOSE_WAIT`].
async fn read_until_closed(client: &mut RawClient) -> Vec<u8> {
    let mut out = std::mem::take(&mut client.buffer);
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + CLOSE_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, client.stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Err(_) => {
                panic!("connection still open after {CLOSE_WAIT:?}; read so far: {}", show(&out))
            }
        }
    }
}

/// Waits (at most 5 s) until Redis reports `count` clients blocked in a blocking command.
async fn wait_for_blocked_clients(redis: SocketAddr, count: usize) {
    let mut admin = RawClient::connect(redis).await;
    let wanted = format!("blocked_clients:{count}\r\n");
    for _ in 0..250 {
        let info = admin.call(&[b"INFO", b"clients"]).await;
        if info.windows(wanted.len()).any(|w| w == wanted.as_bytes()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("Redis never reported {wanted:?}");
}

fn find<'a>(records: &'a [CommandRecord], name: &str) -> &'a CommandRecord {
    records
        .iter()
        .find(|r| r.command_name() == name)
        .unwrap_or_else(|| panic!("no record for {name}: {records:?}"))
}

/// True when `bytes` is exactly one `\r\n`-terminated line.
fn is_one_line(bytes: &[u8]) -> bool {
    bytes.ends_with(b"\r\n") && bytes.windows(2).filter(|w| w == b"\r\n").count() == 1
}

#[tokio::test]
async fn killed_redis_closes_clients_as_a_direct_connection_would() {
    crate::require_redis!();
    let mut redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let mut idle = RawClient::connect(proxy.addr).await;
    assert_eq!(idle.call(&[b"PING"]).await, b"+PONG\r\n");
    let mut blocked = RawClient::connect(proxy.addr).await;
    // A PING pipelined behind the blocking command waits in Redis too.
    let mut pipeline = crate::support::client::encode_command(&[b"BLPOP", b"list", b"0"]);
    pipeline.extend_from_slice(b"PING\r\n");
    blocked.send(&pipeline).await;
    wait_for_blocked_clients(redis.addr, 1).await;

    redis.kill();

    let started = Instant::now();
    let idle_bytes = read_until_closed(&mut idle).await;
    assert!(idle_bytes.is_empty(), "idle client got {}", show(&idle_bytes));
    let blocked_bytes = read_until_closed(&mut blocked).await;
    // Redis closed the connection: a direct client would see the close and nothing else.
    assert!(blocked_bytes.is_empty(), "blocked client got {}", show(&blocked_bytes));
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    let records = proxy.sink.wait_for(3).await;
    let names: Vec<String> = records.iter().map(CommandRecord::command_name).collect();
    assert_eq!(names, ["PING", "BLPOP", "PING"], "{records:?}");
    assert_eq!(records[0].status, ReplyStatus::Ok);
    for record in &records[1..] {
        assert_eq!(record.status, ReplyStatus::Unanswered, "{record:?}");
        assert_eq!(record.reply_bytes, 0, "{record:?}");
    }

    redis.restart();
    let mut fresh = RawClient::connect(proxy.addr).await;
    assert_eq!(fresh.call(&[b"PING"]).await, b"+PONG\r\n");
    assert_eq!(fresh.call(&[b"SET", b"k", b"v"]).await, b"+OK\r\n");
    assert_eq!(fresh.call(&[b"GET", b"k"]).await, b"$1\r\nv\r\n");
}

#[tokio::test]
async fn proxy_started_while_redis_is_down_answers_errors_then_recovers() {
    crate::require_redis!();
    let mut redis = RedisServer::start(&[]);
    redis.kill();
    let proxy =
        TestProxy::start_with(redis.addr, "[upstream]\nreconnect_interval_ms = 100\n").await;

    let mut client = RawClient::connect(proxy.addr).await;
    // Three pipelined commands, one of them inline: one error each, in order.
    client.send(b"*1\r\n$4\r\nPING\r\nGET a\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\nb\r\n").await;
    let prefix = format!("-ERR upstream {} unavailable: ", redis.addr);
    for i in 0..3 {
        let reply = client.read_reply().await;
        assert!(
            reply.starts_with(prefix.as_bytes()) && is_one_line(&reply),
            "reply {i}: {}, expected one line starting with {prefix:?}",
            show(&reply)
        );
    }
    let records = proxy.sink.wait_for(3).await;
    let names: Vec<String> = records.iter().map(CommandRecord::command_name).collect();
    assert_eq!(names, ["PING", "GET", "SET"]);
    for record in &records {
        assert_eq!(record.status, ReplyStatus::Error, "{record:?}");
        assert_eq!(record.source, ReplySource::Proxy, "{record:?}");
        assert_eq!(record.error_code.as_deref(), Some(&b"ERR"[..]), "{record:?}");
    }
    // Nothing more than one reply per command.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut extra = [0u8; 64];
    let more = tokio::time::timeout(Duration::from_millis(100), client.stream.read(&mut extra));
    assert!(more.await.is_err(), "unexpected bytes or close after the three errors");

    // QUIT while the upstream is down: +OK, then the connection closes.
    let mut quitter = RawClient::connect(proxy.addr).await;
    quitter.send(b"QUIT\r\n").await;
    assert_eq!(read_until_closed(&mut quitter).await, b"+OK\r\n");

    redis.restart();
    // The same client reconnects on its own, at most once per reconnect interval.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = client.call(&[b"PING"]).await;
        if reply == b"+PONG\r\n" {
            break;
        }
        assert!(reply.starts_with(prefix.as_bytes()), "unexpected reply {}", show(&reply));
        assert!(Instant::now() < deadline, "client never reconnected to the restarted Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.call(&[b"SET", b"a", b"b"]).await, b"+OK\r\n");
    assert_eq!(client.call(&[b"GET", b"a"]).await, b"$1\r\nb\r\n");
    let last = proxy.sink.records().pop().expect("records");
    assert_eq!((last.command_name(), last.source), ("GET".to_owned(), ReplySource::Upstream));
}

#[tokio::test]
async fn upstream_closing_mid_reply_forwards_the_partial_bytes_then_closes() {
    let upstream = MockRedis::faulty().await;
    let proxy = TestProxy::start(upstream.addr).await;
    let mut bystander = RawClient::connect(proxy.addr).await;
    assert_eq!(bystander.call(&[b"PING"]).await, b"+PONG\r\n");

    let mut client = RawClient::connect(proxy.addr).await;
    client.send_command(&[b"HALF"]).await;
    // What a direct client of that server would see: the partial reply, then the close.
    assert_eq!(read_until_closed(&mut client).await, b"$10\r\nhello");

    assert_eq!(bystander.call(&[b"PING"]).await, b"+PONG\r\n");
    let records = proxy.sink.wait_for(3).await;
    let half = find(&records, "HALF");
    assert_eq!(half.status, ReplyStatus::Unanswered, "{half:?}");
    assert_eq!(half.error_code, None);
}

#[tokio::test]
async fn upstream_sending_garbage_closes_that_client_only() {
    let upstream = MockRedis::faulty().await;
    let proxy = TestProxy::start(upstream.addr).await;
    let mut bystander = RawClient::connect(proxy.addr).await;
    assert_eq!(bystander.call(&[b"PING"]).await, b"+PONG\r\n");

    let mut client = RawClient::connect(proxy.addr).await;
    client.send_command(&[b"GARBAGE"]).await;
    let got = read_until_closed(&mut client).await;
    // Garbage never reaches the client: the command gets the proxy's own error, naming the
    // upstream and the cause, and the connection closes.
    let prefix = format!("-ERR upstream {} ", upstream.addr);
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with(prefix.as_bytes()) && is_one_line(&got) && text.contains("invalid reply"),
        "client got {}",
        show(&got)
    );

    // Garbage in the middle of a reply: at most the valid start of it, then the close.
    let mut mid = RawClient::connect(proxy.addr).await;
    mid.send_command(&[b"BADTAIL"]).await;
    let got_mid = read_until_closed(&mut mid).await;
    assert!(b"*2\r\n$1\r\na\r\n".starts_with(&got_mid), "client got {}", show(&got_mid));

    assert_eq!(bystander.call(&[b"PING"]).await, b"+PONG\r\n");
    let mut newcomer = RawClient::connect(proxy.addr).await;
    assert_eq!(newcomer.call(&[b"PING"]).await, b"+PONG\r\n");

    let records = proxy.sink.wait_for(5).await;
    let garbage = find(&records, "GARBAGE");
    assert_eq!((garbage.status, garbage.source), (ReplyStatus::Error, ReplySource::Proxy));
    assert_eq!(garbage.reply_bytes, got.len() as u64, "{garbage:?}");
    assert_eq!(find(&records, "BADTAIL").status, ReplyStatus::Unanswered);
}

#[tokio::test]
async fn graceful_shutdown_finishes_short_commands_and_closes_the_rest() {
    crate::require_redis!();
    let redis = RedisServer::start(&["--enable-debug-command", "yes"]);
    let proxy = TestProxy::start_with(redis.addr, "[proxy]\nshutdown_grace_ms = 300\n").await;
    let (addr, sink) = (proxy.addr, proxy.sink.clone());

    let mut idle = RawClient::connect(addr).await;
    assert_eq!(idle.call(&[b"PING"]).await, b"+PONG\r\n");
    let mut blocked = RawClient::connect(addr).await;
    blocked.send_command(&[b"BLPOP", b"k", b"0"]).await;
    wait_for_blocked_clients(redis.addr, 1).await;
    let mut sleeper = RawClient::connect(addr).await;
    sleeper.send_command(&[b"DEBUG", b"SLEEP", b"0.1"]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let stopping = tokio::spawn(async move {
        let started = Instant::now();
        proxy.shutdown().await;
        started.elapsed()
    });

    assert_eq!(read_until_closed(&mut idle).await, b"", "idle client is closed, no reply");
    assert_eq!(read_until_closed(&mut sleeper).await, b"+OK\r\n", "in-flight reply comes first");
    assert_eq!(read_until_closed(&mut blocked).await, b"", "blocked client closed after grace");
    let took = tokio::time::timeout(Duration::from_secs(2), stopping)
        .await
        .expect("shutdown returns within 2 s")
        .unwrap();
    assert!(took >= Duration::from_millis(300), "the grace period was not waited for: {took:?}");
    assert!(TcpStream::connect(addr).await.is_err(), "listener still accepts after shutdown");

    let records = sink.wait_for(3).await;
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(find(&records, "PING").status, ReplyStatus::Ok);
    let debug = find(&records, "DEBUG");
    assert_eq!((debug.status, debug.source), (ReplyStatus::Ok, ReplySource::Upstream));
    assert_eq!(find(&records, "BLPOP").status, ReplyStatus::Unanswered);
}
