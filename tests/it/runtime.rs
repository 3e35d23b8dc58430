//! `proxy.runtime = "per_core"`: several threads, each with its own `SO_REUSEPORT` listener on
//! the one port, serve many concurrent clients correctly; `max_clients` counts across them; the
//! drain and the grace period stop every thread's clients.

use std::time::{Duration, Instant};

use redis_audit_proxy::event::ReplyStatus;
use tokio::task::JoinSet;

use crate::support::client::encode_command;
use crate::support::{RawClient, RedisServer, TestProxy};

/// Four threads on a two-core machine: more listeners than cores, so that the kernel's spread
/// of 200 connections over them reaches every listener.
const PER_CORE: &str = "[proxy]\nruntime = \"per_core\"\nthreads = 4\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_serves_many_concurrent_clients() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start_with(redis.addr, PER_CORE).await;
    const CLIENTS: usize = 200;
    const ROUNDS: usize = 20;

    // Every client at once: a pipelined SET + GET + INCR of its own keys per round, each reply
    // checked, so a reply paired with the wrong client or command shows.
    let mut clients = JoinSet::new();
    for n in 0..CLIENTS {
        let addr = proxy.addr;
        clients.spawn(async move {
            let mut client = RawClient::connect(addr).await;
            let key = format!("client:{n}");
            let counter = format!("counter:{n}");
            for round in 0..ROUNDS {
                let value = format!("{n}-{round}");
                let mut batch = encode_command(&[b"SET", key.as_bytes(), value.as_bytes()]);
                batch.extend(encode_command(&[b"GET", key.as_bytes()]));
                batch.extend(encode_command(&[b"INCR", counter.as_bytes()]));
                batch.extend(encode_command(&[b"INCR", b"shared"]));
                client.send(&batch).await;
                assert_eq!(client.read_reply().await, b"+OK\r\n");
                let expected = format!("${}\r\n{value}\r\n", value.len());
                assert_eq!(client.read_reply().await, expected.as_bytes(), "client {n}");
                assert_eq!(client.read_reply().await, format!(":{}\r\n", round + 1).as_bytes());
                assert_eq!(client.read_reply().await[0], b':');
            }
        });
    }
    let deadline = Duration::from_secs(60);
    tokio::time::timeout(deadline, async {
        while let Some(result) = clients.join_next().await {
            result.expect("a client failed");
        }
    })
    .await
    .expect("every client is served within 60 s");

    let mut check = RawClient::connect(redis.addr).await;
    let total = (CLIENTS * ROUNDS).to_string();
    let expected = format!(":{total}\r\n");
    assert_eq!(
        check.call(&[b"GET", b"shared"]).await,
        format!("${}\r\n{total}\r\n", total.len()).as_bytes()
    );
    assert_eq!(check.call(&[b"INCRBY", b"shared", b"0"]).await, expected.as_bytes());

    // One record per command, each answered.
    let records = proxy.sink.wait_for(CLIENTS * ROUNDS * 4).await;
    assert_eq!(records.len(), CLIENTS * ROUNDS * 4);
    assert!(records.iter().all(|r| r.status == ReplyStatus::Ok), "every command answered");
    let connections: std::collections::HashSet<u64> = records.iter().map(|r| r.conn_id).collect();
    assert_eq!(connections.len(), CLIENTS, "one connection id per client");

    tokio::time::timeout(Duration::from_secs(10), proxy.shutdown())
        .await
        .expect("shutdown completes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_max_clients_counts_across_threads() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let toml = format!("{PER_CORE}max_clients = 5\n");
    let proxy = TestProxy::start_with(redis.addr, &toml).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut client = RawClient::connect(proxy.addr).await;
        assert_eq!(client.call(&[b"PING"]).await, b"+PONG\r\n");
        held.push(client);
    }
    // Whichever thread's listener the sixth lands on, the slots are the same.
    for _ in 0..8 {
        let mut refused = RawClient::connect(proxy.addr).await;
        assert_eq!(refused.read_to_close().await, b"-ERR max number of clients reached\r\n");
    }
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut client = RawClient::connect(proxy.addr).await;
        // Accepted: PONG; refused: the error, then the close.
        let reply = client.call(&[b"PING"]).await;
        if reply == b"+PONG\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "a slot never came free: {reply:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_shutdown_drains_every_thread_then_stops_listening() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let toml = format!("{PER_CORE}shutdown_grace_ms = 5000\n");
    let proxy = TestProxy::start_with(redis.addr, &toml).await;
    let addr = proxy.addr;

    // Clients spread over the threads: half idle, half with a BLPOP in flight that Redis
    // answers (nil) after 0.5 s, inside the grace period.
    let mut idle = Vec::new();
    let mut blocked = Vec::new();
    for n in 0..16 {
        let mut client = RawClient::connect(addr).await;
        assert_eq!(client.call(&[b"PING"]).await, b"+PONG\r\n");
        if n % 2 == 0 {
            idle.push(client);
        } else {
            let key = format!("empty:{n}");
            client.send_command(&[b"BLPOP", key.as_bytes(), b"0.5"]).await;
            blocked.push(client);
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), proxy.shutdown())
        .await
        .expect("shutdown completes within the grace period");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "the BLPOPs were waited for: {took:?}");
    assert!(took < Duration::from_secs(5), "no client outlived its command: {took:?}");

    for mut client in blocked {
        // The answer in flight, then the close.
        assert_eq!(client.read_to_close().await, b"*-1\r\n");
    }
    for mut client in idle {
        assert_eq!(client.read_to_close().await, b"");
    }
    // Every thread's listener is closed.
    for _ in 0..8 {
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still listening on {addr}");
    }
}
