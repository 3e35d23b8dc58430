//! Shared connections held up: by a long script, or by a write a `CLIENT PAUSE WRITE` holds.
//! The clients sharing them are answered as direct clients would be: a write held by a pause
//! seen through the proxy runs on a connection of its own, and a connection silent past
//! `upstream.pool_stall_ms` while it owes replies is left before the next command.

use std::time::Duration;

use super::{call, next_reply, reply, send, start, upstream_conn_of, wait_blocked, LIVENESS};
use crate::support::{RawClient, TestProxy};

/// Three clients through `proxy`, each having sent a PING: the first and the third, which
/// share the first shared connection (packed onto it; the second client opened the second),
/// that connection's number and the third's `conn_id`.
async fn two_sharing_the_first_connection(
    proxy: &TestProxy,
) -> (RawClient, RawClient, Option<u64>, u64) {
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = RawClient::connect(proxy.addr).await;
        assert_eq!(call(&mut client, &["PING"]).await, reply(b"+PONG\r\n"));
        clients.push(client);
    }
    let records = proxy.sink.wait_for(3).await;
    let (first_id, third_id) = (records[0].conn_id, records[2].conn_id);
    let first = upstream_conn_of(proxy, first_id);
    assert!(first.is_some() && upstream_conn_of(proxy, third_id) == first, "{records:#?}");
    let third = clients.pop().expect("three clients");
    (clients.swap_remove(0), third, first, third_id)
}

/// A long script on a shared connection: the other clients on it are not held behind it. Before
/// their next command they move off the connection, silent past `pool_stall_ms`, and Redis answers
/// them as it answers a direct client during a script: `-BUSY`, then SCRIPT KILL and PING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_script_leaves_the_clients_sharing_its_connection_answered() {
    let (redis, proxy) = start(4).await;
    let mut admin = RawClient::connect(redis.addr).await;
    assert_eq!(admin.call(&[b"CONFIG", b"SET", b"busy-reply-threshold", b"10"]).await, b"+OK\r\n");
    let (mut runner, mut other, ..) = two_sharing_the_first_connection(&proxy).await;
    send(&mut runner, &["EVAL", "while true do end", "0"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = call(&mut other, &["PING"]).await;
    assert!(busy.starts_with("-BUSY"), "PING during the script: {busy}");
    assert_eq!(call(&mut other, &["SCRIPT", "KILL"]).await, reply(b"+OK\r\n"));
    let killed = next_reply(&mut runner, LIVENESS).await;
    assert!(killed.contains("Script killed"), "the script's reply: {killed}");
    for client in [&mut runner, &mut other] {
        assert_eq!(call(client, &["PING"]).await, reply(b"+PONG\r\n"));
    }
}

/// `CLIENT PAUSE WRITE` from outside the proxy holds A's SET, and what follows it on A's shared
/// connection. C, which shares it, sends a read once the connection has been silent past
/// `pool_stall_ms`: it moves to another connection first and is answered at once, as a direct
/// client would be, while A's write stays held until the pause ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_a_paused_write_stalled_its_connection_is_answered() {
    let (redis, proxy) = start(4).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let (mut a, mut c, first, c_id) = two_sharing_the_first_connection(&proxy).await;
    let pause = [&b"CLIENT"[..], b"PAUSE", b"60000", b"WRITE"];
    assert_eq!(admin.call(&pause).await, b"+OK\r\n");
    send(&mut a, &["SET", "k", "v"]).await;
    wait_blocked(&mut admin, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(call(&mut c, &["GET", "k"]).await, reply(b"$-1\r\n"), "a read during the pause");
    assert_ne!(upstream_conn_of(&proxy, c_id), first, "C moved off the held connection");
    assert_eq!(admin.call(&[b"CLIENT", b"UNPAUSE"]).await, b"+OK\r\n");
    assert_eq!(next_reply(&mut a, LIVENESS).await, reply(b"+OK\r\n"), "A's write, after");
    assert_eq!(call(&mut c, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
}

/// A `CLIENT PAUSE WRITE` sent through the proxy: the writes it holds each wait on a connection
/// of their own, as three direct clients would (three blocked clients to Redis, as in Redis's
/// own `Test multiple clients can be queued up and unblocked`), and a read sent at once by a
/// client sharing a held writer's connection is answered at once. After the pause the writers
/// go back to shared connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_held_by_a_pause_through_the_proxy_wait_on_connections_of_their_own() {
    let (redis, proxy) = start(4).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut pauser = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut pauser, &["PING"]).await, reply(b"+PONG\r\n"));
    let (mut a, mut c, first, c_id) = two_sharing_the_first_connection(&proxy).await;
    let mut writers = vec![a];
    for _ in 0..2 {
        let mut writer = RawClient::connect(proxy.addr).await;
        assert_eq!(call(&mut writer, &["PING"]).await, reply(b"+PONG\r\n"));
        writers.push(writer);
    }
    let pause = ["CLIENT", "PAUSE", "60000", "WRITE"];
    assert_eq!(call(&mut pauser, &pause).await, reply(b"+OK\r\n"));
    for (i, writer) in writers.iter_mut().enumerate() {
        send(writer, &["SET", &format!("k{i}"), "v"]).await;
    }
    assert_eq!(call(&mut c, &["GET", "k0"]).await, reply(b"$-1\r\n"), "a read during the pause");
    assert_eq!(
        upstream_conn_of(&proxy, c_id),
        first,
        "the read ran on the held writer's connection"
    );
    wait_blocked(&mut admin, 3).await;
    assert_eq!(call(&mut pauser, &["CLIENT", "UNPAUSE"]).await, reply(b"+OK\r\n"));
    for writer in &mut writers {
        assert_eq!(next_reply(writer, LIVENESS).await, reply(b"+OK\r\n"), "a write, after");
    }
    let held: Vec<_> = proxy
        .sink
        .records()
        .into_iter()
        .filter(|r| r.command.as_ref().is_some_and(|info| info.name == "set"))
        .collect();
    assert_eq!(held.len(), 3, "{held:#?}");
    assert!(held.iter().all(|r| r.upstream_conn.is_none()), "each on its own: {held:#?}");
    a = writers.swap_remove(0);
    assert_eq!(call(&mut a, &["GET", "k0"]).await, reply(b"$1\r\nv\r\n"));
    let a_id = held.iter().map(|r| r.conn_id).min().expect("A's SET");
    assert!(upstream_conn_of(&proxy, a_id).is_some(), "A is back on a shared connection");
    assert_eq!(held_by_pause_pins(&proxy).await, 3.0);
}

/// A client pinned by a write pause stays on its own connection while the pause lasts: its
/// next held command does not go back to a shared connection first (one pin, not two), and the
/// client returns to a shared one only once the pause is over. A script declaring `no-writes`
/// is pinned all the same and answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pinned_by_a_pause_stays_pinned_until_it_ends() {
    let (_redis, proxy) = start(4).await;
    let mut pauser = RawClient::connect(proxy.addr).await;
    let mut client = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut client, &["PING"]).await, reply(b"+PONG\r\n"));
    let pause = ["CLIENT", "PAUSE", "60000", "WRITE"];
    assert_eq!(call(&mut pauser, &pause).await, reply(b"+OK\r\n"));
    let script = "#!lua flags=no-writes\nreturn 1";
    assert_eq!(call(&mut client, &["EVAL", script, "0"]).await, reply(b":1\r\n"));
    send(&mut client, &["SET", "k", "v"]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(call(&mut pauser, &["CLIENT", "UNPAUSE"]).await, reply(b"+OK\r\n"));
    assert_eq!(next_reply(&mut client, LIVENESS).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut client, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
    let records = proxy.sink.wait_for(6).await;
    // The pauser runs CLIENT commands only: these are the client's.
    let ran_on = |name: &str| {
        let record =
            records.iter().find(|r| r.command.as_ref().is_some_and(|info| info.name == name));
        record.map(|r| r.upstream_conn)
    };
    assert_eq!(ran_on("eval"), Some(None), "EVAL on its own connection: {records:#?}");
    assert_eq!(ran_on("set"), Some(None), "SET on its own connection: {records:#?}");
    assert!(matches!(ran_on("get"), Some(Some(_))), "GET back on a shared one: {records:#?}");
    assert_eq!(held_by_pause_pins(&proxy).await, 1.0);
}

/// The proxy's `upstream_pins_total` for `held_by_pause`, from its `/metrics`.
async fn held_by_pause_pins(proxy: &TestProxy) -> f64 {
    let admin = proxy.admin_addr();
    let (status, metrics) =
        crate::support::http::http(admin, "GET", "/metrics", &admin.to_string(), &[]).await;
    assert_eq!(status, 200, "{metrics}");
    let pins = "redis_audit_proxy_upstream_pins_total{reason=\"held_by_pause\"}";
    crate::support::http::sample(&metrics, pins)
}
