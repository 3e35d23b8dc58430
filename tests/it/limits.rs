//! Bad input and bounds: protocol errors and request limits (compared byte for byte with what
//! Redis itself answers to the same bytes), slow clients, `max_clients`, pipeline depth,
//! query buffer and idle timeout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use redis_audit_proxy::event::{ReplySource, ReplyStatus};

use crate::support::client::encode_command;
use crate::support::client::show;
use crate::support::{RawClient, RedisServer, TestProxy};

/// A raw connection that tolerates the peer closing on it: writes report failure instead of
/// panicking, reads stop at EOF, at a reset or after a bounded wait.
struct Wire {
    stream: TcpStream,
}

impl Wire {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Self { stream }
    }

    /// Writes `bytes`; false when the peer already closed.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Reads until the peer closes or `wait` passes: the bytes read, and whether it closed.
    async fn read_for(&mut self, wait: Duration) -> (Vec<u8>, bool) {
        read_for(&mut self.stream, wait).await
    }

    /// Reads exactly `len` bytes (fails the test after 10 s or on close).
    async fn read_exact(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        tokio::time::timeout(Duration::from_secs(10), self.stream.read_exact(&mut out))
            .await
            .expect("read timed out")
            .expect("connection closed early");
        out
    }
}

/// Reads until the peer closes (EOF or reset) or `wait` passes: the bytes read, and whether
/// it closed.
async fn read_for<R: AsyncRead + Unpin>(reader: &mut R, wait: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    let deadline = Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut chunk)).await {
            Err(_) => return (out, false),
            Ok(Ok(0) | Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends `bytes` on a fresh connection and reads until the peer closes (at most 5 s).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut wire = Wire::connect(addr).await;
    wire.send(bytes).await;
    wire.read_for(Duration::from_secs(5)).await
}

/// Sends the same bytes to Redis and to the proxy: both must answer exactly `expected` and
/// then close the connection.
async fn assert_rejected_like_redis(
    redis: SocketAddr,
    proxy: SocketAddr,
    bytes: &[u8],
    expected: &[u8],
) {
    let (from_redis, redis_closed) = exchange(redis, bytes).await;
    assert_eq!(show(&from_redis), show(expected), "Redis itself answers differently");
    assert!(redis_closed, "Redis closes after {}", show(expected));
    let (from_proxy, proxy_closed) = exchange(proxy, bytes).await;
    assert_eq!(show(&from_proxy), show(expected), "the proxy differs from Redis");
    assert!(proxy_closed, "the proxy must close the connection after {}", show(expected));
}

/// Reads `count` replies on `client`, concatenated.
async fn read_replies(client: &mut RawClient, count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..count {
        out.extend_from_slice(&client.read_reply().await);
    }
    out
}

#[tokio::test]
async fn oversized_inline_request_is_refused_like_redis() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let line = vec![b'a'; 64 * 1024];
    // Exactly 64 KiB without a line end is still within the limit, for both.
    for addr in [redis.addr, proxy.addr] {
        let mut wire = Wire::connect(addr).await;
        assert!(wire.send(&line).await);
        let (early, closed) = wire.read_for(Duration::from_millis(300)).await;
        assert!(early.is_empty() && !closed, "{addr}: {} closed={closed}", show(&early));
        // One byte more and it is too big.
        assert!(wire.send(b"a").await);
        let (reply, closed) = wire.read_for(Duration::from_secs(5)).await;
        assert_eq!(
            show(&reply),
            show(b"-ERR Protocol error: too big inline request\r\n"),
            "{addr}"
        );
        assert!(closed, "{addr} must close");
    }
    let mut oversized = line;
    oversized.extend_from_slice(&[b'a'; 4000]);
    assert_rejected_like_redis(
        redis.addr,
        proxy.addr,
        &oversized,
        b"-ERR Protocol error: too big inline request\r\n",
    )
    .await;
    let records = proxy.sink.wait_for(2).await;
    assert!(records
        .iter()
        .all(|r| r.source == ReplySource::Proxy && r.status == ReplyStatus::Error));
}

#[tokio::test]
async fn oversized_bulk_length_is_refused_like_redis() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    assert_rejected_like_redis(
        redis.addr,
        proxy.addr,
        b"*2\r\n$3\r\nGET\r\n$536870913\r\n",
        b"-ERR Protocol error: invalid bulk length\r\n",
    )
    .await;
    // The largest allowed length is accepted: no error while its payload is awaited.
    let mut wire = Wire::connect(proxy.addr).await;
    assert!(wire.send(b"*2\r\n$3\r\nGET\r\n$536870912\r\nabc").await);
    let (early, closed) = wire.read_for(Duration::from_millis(200)).await;
    assert!(early.is_empty() && !closed, "{} closed={closed}", show(&early));
}

#[tokio::test]
async fn configured_bulk_max_bytes_is_honoured_like_redis_proto_max_bulk_len() {
    crate::require_redis!();
    // 1 MiB is the smallest proto-max-bulk-len Redis accepts.
    let redis = RedisServer::start(&["--proto-max-bulk-len", "1048576"]);
    let proxy =
        TestProxy::start_with(redis.addr, "[proxy.limits]\nbulk_max_bytes = 1048576\n").await;
    assert_rejected_like_redis(
        redis.addr,
        proxy.addr,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048577\r\n",
        b"-ERR Protocol error: invalid bulk length\r\n",
    )
    .await;
    // A value of exactly the limit goes through.
    let value = vec![b'v'; 1024 * 1024];
    let mut client = RawClient::connect(proxy.addr).await;
    assert_eq!(client.call(&[b"SET", b"k", &value]).await, b"+OK\r\n");
    assert_eq!(client.call(&[b"STRLEN", b"k"]).await, b":1048576\r\n");
}

#[tokio::test]
async fn deeply_nested_request_is_refused_and_the_proxy_keeps_serving() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let mut bystander = RawClient::connect(proxy.addr).await;
    assert_eq!(bystander.call(&[b"PING"]).await, b"+PONG\r\n");
    let nested = b"*1\r\n".repeat(10_000);
    assert_rejected_like_redis(
        redis.addr,
        proxy.addr,
        &nested,
        b"-ERR Protocol error: expected '$', got '*'\r\n",
    )
    .await;
    assert_eq!(bystander.call(&[b"PING"]).await, b"+PONG\r\n");
    let mut newcomer = RawClient::connect(proxy.addr).await;
    assert_eq!(newcomer.call(&[b"ECHO", b"alive"]).await, b"$5\r\nalive\r\n");
    let records = proxy.sink.wait_for(4).await;
    let refused = records
        .iter()
        .find(|r| r.source == ReplySource::Proxy)
        .unwrap_or_else(|| panic!("no proxy-written record: {records:?}"));
    assert_eq!(refused.status, ReplyStatus::Error);
    assert_eq!(refused.error_code.as_deref(), Some(&b"ERR"[..]));
}

#[tokio::test]
async fn unauthenticated_limits_apply_until_auth_like_redis() {
    crate::require_redis!();
    let redis = RedisServer::start(&["--requirepass", "pw"]);
    let proxy = TestProxy::start(redis.addr).await;
    assert_rejected_like_redis(
        redis.addr,
        proxy.addr,
        b"*11\r\n",
        b"-ERR Protocol error: unauthenticated multibulk length\r\n",
    )
    .await;
    assert_rejected_like_redis(
        redis.addr,
        proxy.addr,
        b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$16385\r\n",
        b"-ERR Protocol error: unauthenticated bulk length\r\n",
    )
    .await;

    let mset: Vec<&[u8]> =
        vec![b"MSET", b"k1", b"v1", b"k2", b"v2", b"k3", b"v3", b"k4", b"v4", b"k5", b"v5"];
    let big = vec![b'x'; 16385];
    let mut script = encode_command(&[b"AUTH", b"pw"]);
    script.extend_from_slice(&encode_command(&mset));
    script.extend_from_slice(&encode_command(&[b"SET", b"big", &big]));
    script.extend_from_slice(&encode_command(&[b"STRLEN", b"big"]));
    script.extend_from_slice(&encode_command(&[b"GET", b"k5"]));
    let expected = b"+OK\r\n+OK\r\n+OK\r\n:16385\r\n$2\r\nv5\r\n";
    // Pipelined behind AUTH, and after AUTH has answered: the same answers as Redis's.
    for addr in [redis.addr, proxy.addr] {
        let mut client = RawClient::connect(addr).await;
        client.send(&script).await;
        assert_eq!(show(&read_replies(&mut client, 5).await), show(expected), "{addr}");
        let mut client = RawClient::connect(addr).await;
        assert_eq!(client.call(&[b"AUTH", b"pw"]).await, b"+OK\r\n", "{addr}");
        assert_eq!(client.call(&mset).await, b"+OK\r\n", "{addr}");
        assert_eq!(client.call(&[b"SET", b"big", &big]).await, b"+OK\r\n", "{addr}");
    }
    // A failed AUTH leaves the limits in place: Redis refuses the long command behind it.
    let mut script = encode_command(&[b"AUTH", b"wrong"]);
    script.extend_from_slice(&encode_command(&mset));
    let (from_redis, redis_closed) = exchange(redis.addr, &script).await;
    let (from_proxy, proxy_closed) = exchange(proxy.addr, &script).await;
    assert!(
        from_redis.ends_with(b"-ERR Protocol error: unauthenticated multibulk length\r\n"),
        "{}",
        show(&from_redis)
    );
    assert_eq!(show(&from_proxy), show(&from_redis), "the proxy differs from Redis");
    assert_eq!(proxy_closed, redis_closed);
}

#[tokio::test]
async fn byte_by_byte_client_gets_complete_replies() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let big: Vec<u8> =
        (0..2048u32).map(|i| b"abcdefghijklmnopqrstuvwxyz"[i as usize % 26]).collect();
    let mut script = Vec::new();
    let mut expected = Vec::new();
    for i in 0..15 {
        script.extend_from_slice(&encode_command(&[b"SET", format!("slow:{i}").as_bytes(), b"v"]));
        expected.extend_from_slice(b"+OK\r\n");
    }
    script.extend_from_slice(b"PING\r\n");
    expected.extend_from_slice(b"+PONG\r\n");
    script.extend_from_slice(&encode_command(&[b"INCR", b"slow:n"]));
    expected.extend_from_slice(b":1\r\n");
    script.extend_from_slice(&encode_command(&[b"SET", b"slow:big", &big]));
    expected.extend_from_slice(b"+OK\r\n");
    script.extend_from_slice(b"GET slow:14\r\n");
    expected.extend_from_slice(b"$1\r\nv\r\n");
    script.extend_from_slice(&encode_command(&[b"GET", b"slow:big"]));
    expected
        .extend_from_slice(format!("$2048\r\n{}\r\n", String::from_utf8_lossy(&big)).as_bytes());

    let mut wire = Wire::connect(proxy.addr).await;
    for (i, byte) in script.iter().enumerate() {
        assert!(wire.send(std::slice::from_ref(byte)).await, "write {i} failed");
        if i % 256 == 255 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    let got = wire.read_exact(expected.len()).await;
    assert_eq!(show(&got), show(&expected));
    let (extra, _) = wire.read_for(Duration::from_millis(100)).await;
    assert!(extra.is_empty(), "extra bytes {}", show(&extra));
    let records = proxy.sink.wait_for(20).await;
    assert_eq!(records.len(), 20);

    // The same script sent in one write straight to Redis (after a flush) answers the same.
    let mut direct = RawClient::connect(redis.addr).await;
    assert_eq!(direct.call(&[b"FLUSHALL"]).await, b"+OK\r\n");
    direct.send(&script).await;
    assert_eq!(show(&read_replies(&mut direct, 20).await), show(&expected));
}

#[tokio::test]
async fn max_clients_refuses_the_extra_client_like_redis() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start_with(redis.addr, "[proxy]\nmax_clients = 2\n").await;
    let mut first = RawClient::connect(proxy.addr).await;
    assert_eq!(first.call(&[b"PING"]).await, b"+PONG\r\n");
    let mut second = RawClient::connect(proxy.addr).await;
    assert_eq!(second.call(&[b"PING"]).await, b"+PONG\r\n");

    let (refused, closed) = exchange(proxy.addr, b"PING\r\n").await;
    assert_eq!(show(&refused), show(b"-ERR max number of clients reached\r\n"));
    assert!(closed, "the refused client must be closed");
    assert_eq!(second.call(&[b"PING"]).await, b"+PONG\r\n", "accepted clients are unaffected");

    drop(first);
    // The slot frees once the proxy has seen the close; a new client then gets in.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut wire = Wire::connect(proxy.addr).await;
        wire.send(b"PING\r\n").await;
        let (reply, _) = wire.read_for(Duration::from_millis(500)).await;
        if reply.starts_with(b"+PONG\r\n") {
            break;
        }
        assert_eq!(show(&reply), show(b"-ERR max number of clients reached\r\n"));
        assert!(Instant::now() < deadline, "no slot freed after a client left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shallow_pipeline_depth_applies_back_pressure_without_loss() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start_with(redis.addr, "[proxy.limits]\npipeline_max_depth = 4\n").await;
    let mut script = Vec::new();
    let mut expected = Vec::new();
    for i in 1..=1000 {
        script.extend_from_slice(&encode_command(&[b"INCR", b"counter"]));
        expected.extend_from_slice(format!(":{i}\r\n").as_bytes());
    }
    let mut wire = Wire::connect(proxy.addr).await;
    assert!(wire.send(&script).await);
    let got = wire.read_exact(expected.len()).await;
    assert_eq!(show(&got), show(&expected));
    let records = proxy.sink.wait_for(1000).await;
    assert_eq!(records.len(), 1000);
    assert!(records.iter().all(|r| r.status == ReplyStatus::Ok && r.command_name() == "INCR"));
}

#[tokio::test]
async fn query_buffer_limit_closes_only_the_offending_client() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start_with(
        redis.addr,
        "[proxy.limits]\nbulk_max_bytes = 1048576\nquery_buffer_max_bytes = 1048576\n",
    )
    .await;
    let mut bystander = RawClient::connect(proxy.addr).await;
    assert_eq!(bystander.call(&[b"PING"]).await, b"+PONG\r\n");

    let wire = Wire::connect(proxy.addr).await;
    let (mut reader, mut writer) = wire.stream.into_split();
    // A 1 MiB argument plus its header cannot fit a 1 MiB query buffer; sent slowly.
    let sender = tokio::spawn(async move {
        let _ = writer.write_all(b"*3\r\n$3\r\nSET\r\n$4\r\nhuge\r\n$1048576\r\n").await;
        let chunk = vec![b'z'; 64 * 1024];
        for _ in 0..16 {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = writer.write_all(b"\r\n").await;
        // Keep the write side open so that only the proxy can end the connection.
        tokio::time::sleep(Duration::from_secs(6)).await;
    });
    let (got, closed) = read_for(&mut reader, Duration::from_secs(5)).await;
    sender.abort();
    assert!(got.is_empty(), "nothing is answered, got {}", show(&got));
    assert!(closed, "the client over the query buffer limit must be closed");

    assert_eq!(bystander.call(&[b"PING"]).await, b"+PONG\r\n");
    assert_eq!(
        bystander.call(&[b"EXISTS", b"huge"]).await,
        b":0\r\n",
        "the request was not forwarded"
    );
}

#[tokio::test]
async fn idle_timeout_closes_idle_clients_but_not_blocked_ones() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start_with(redis.addr, "[proxy]\ntimeout = 1\n").await;
    let mut idle = Wire::connect(proxy.addr).await;
    let mut blocked = Wire::connect(proxy.addr).await;
    let started = Instant::now();
    assert!(idle.send(b"PING\r\n").await);
    assert_eq!(idle.read_exact(7).await, b"+PONG\r\n");
    assert!(blocked.send(&encode_command(&[b"BLPOP", b"queue", b"0"])).await);

    let (got, closed) = idle.read_for(Duration::from_secs(4)).await;
    let after = started.elapsed();
    assert!(got.is_empty() && closed, "idle client: {} closed={closed}", show(&got));
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(3500)).contains(&after),
        "idle client closed after {after:?}, expected about 1 s"
    );

    // Blocked for more than twice the timeout: still open, and it gets its element.
    let (got, closed) = blocked.read_for(Duration::from_secs(2)).await;
    assert!(got.is_empty() && !closed, "blocked client: {} closed={closed}", show(&got));
    let mut pusher = RawClient::connect(proxy.addr).await;
    assert_eq!(pusher.call(&[b"RPUSH", b"queue", b"item"]).await, b":1\r\n");
    let element = b"*2\r\n$5\r\nqueue\r\n$4\r\nitem\r\n";
    assert_eq!(show(&blocked.read_exact(element.len()).await), show(element));
}

/// Redis applies the unauthenticated limits to whatever follows a failed AUTH as soon as the
/// AUTH has run, before the rest of the long request arrives: an unauthenticated client can
/// never make it buffer a large request. The proxy must refuse at the same point.
#[tokio::test]
async fn unauthenticated_limits_apply_behind_a_failed_auth_before_the_request_is_complete() {
    crate::require_redis!();
    let redis = RedisServer::start(&["--requirepass", "pw"]);
    let proxy = TestProxy::start(redis.addr).await;
    let wrongpass = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    let cases: [(&[u8], &[u8]); 2] = [
        (b"*11\r\n$4\r\nMSET\r\n", b"-ERR Protocol error: unauthenticated multibulk length\r\n"),
        (
            b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$536870912\r\nstart-of-a-512-MiB-value",
            b"-ERR Protocol error: unauthenticated bulk length\r\n",
        ),
    ];
    let mut differences = Vec::new();
    for (long_request, refusal) in cases {
        let mut bytes = encode_command(&[b"AUTH", b"wrong"]);
        bytes.extend_from_slice(long_request);
        let mut expected = wrongpass.to_vec();
        expected.extend_from_slice(refusal);
        let (from_redis, redis_closed) = exchange(redis.addr, &bytes).await;
        assert_eq!(show(&from_redis), show(&expected), "Redis itself answers differently");
        assert!(redis_closed);
        let mut wire = Wire::connect(proxy.addr).await;
        wire.send(&bytes).await;
        let (from_proxy, proxy_closed) = wire.read_for(Duration::from_secs(2)).await;
        if from_proxy != expected || !proxy_closed {
            differences.push(format!(
                "after {}: proxy sent {} (closed={proxy_closed}), Redis sent {} and closed",
                show(&bytes),
                show(&from_proxy),
                show(&expected)
            ));
        }
    }
    assert!(differences.is_empty(), "{differences:#?}");
}
