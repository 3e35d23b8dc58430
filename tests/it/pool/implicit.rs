//! Clients that never log in, in passthrough: Redis decides when a connection is made whether
//! it is logged in as `default`, and the shared pool must not let a client that came later run
//! on a connection made before the door shut (`src/proxy/pool/implicit.rs`).

use super::*;

/// Clients that never log in, around `CONFIG SET requirepass` and back, on `addr` in front of
/// the Redis `admin` is connected to; every reply in order. Redis decides whether a connection
/// is logged in as `default` when it is made: the clients that came before the password keep
/// running, those after it are asked to log in.
async fn password_set_later_exchange(addr: SocketAddr, admin: &mut RawClient) -> Vec<String> {
    let mut before = RawClient::connect(addr).await;
    let mut replies = vec![call(&mut before, &["SET", "k", "v"]).await];
    let set: [&[u8]; 4] = [b"CONFIG", b"SET", b"requirepass", b"pw"];
    assert_eq!(admin.call(&set).await, b"+OK\r\n");
    let mut after = RawClient::connect(addr).await;
    replies.extend([
        call(&mut after, &["GET", "k"]).await,
        call(&mut after, &["CLIENT", "SETINFO", "LIB-NAME", "x"]).await,
        call(&mut before, &["GET", "k"]).await,
        call(&mut after, &["AUTH", "pw"]).await,
        call(&mut after, &["GET", "k"]).await,
    ]);
    let mut another = RawClient::connect(addr).await;
    replies.push(call(&mut another, &["GET", "k"]).await);
    // The door opens again: a client after that runs without a password.
    let unset: [&[u8]; 4] = [b"CONFIG", b"SET", b"requirepass", b""];
    assert_eq!(admin.call(&unset).await, b"+OK\r\n");
    let mut last = RawClient::connect(addr).await;
    replies.extend([call(&mut last, &["GET", "k"]).await, call(&mut another, &["GET", "k"]).await]);
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_set_while_the_pool_runs_is_asked_of_the_clients_that_come_after() {
    crate::support::redis::assert_available();
    let mut exchanges = Vec::new();
    for through_proxy in [false, true] {
        let redis = RedisServer::start(&[]);
        // One shared connection: the clients after the password are given the one made before.
        let proxy = TestProxy::start_with(redis.addr, &shared(1)).await;
        let mut admin = RawClient::connect(redis.addr).await;
        let addr = if through_proxy { proxy.addr } else { redis.addr };
        exchanges.push(password_set_later_exchange(addr, &mut admin).await);
    }
    assert!(exchanges[0][1].starts_with("-NOAUTH"), "{:?}", exchanges[0]);
    assert_eq!(exchanges[1], exchanges[0], "through the shared pool, then directly");
}

/// A Redis that asked for a password from the start and stops asking: the pool's connections
/// for clients that have not logged in are not logged in; a new one made after the door opened
/// is (its `CLIENT SETNAME` runs), so the client's login is decided again and it runs, as a
/// direct client would. Then the door shuts again, for the clients after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_finds_the_door_opened_after_the_pool_found_it_shut() {
    crate::support::redis::assert_available();
    let redis = RedisServer::start(&["--requirepass", "pw"]);
    let proxy = TestProxy::start_with(redis.addr, &shared(1)).await;
    let mut admin = RawClient::connect(redis.addr).await;
    assert_eq!(admin.call(&[b"AUTH", b"pw"]).await, b"+OK\r\n");
    let noauth = reply(b"-NOAUTH Authentication required.\r\n");
    let mut first = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut first, &["GET", "k"]).await, noauth);
    drop(first);
    let unset: [&[u8]; 4] = [b"CONFIG", b"SET", b"requirepass", b""];
    assert_eq!(admin.call(&unset).await, b"+OK\r\n");
    // The connection made while the door was shut goes: the next one is made with it open.
    let kill: [&[u8]; 5] = [b"CLIENT", b"KILL", b"USER", b"default", b"SKIPME"];
    let killed = admin.call(&[kill[0], kill[1], kill[2], kill[3], kill[4], b"yes"]).await;
    assert!(killed.starts_with(b":"), "{}", String::from_utf8_lossy(&killed));
    let mut second = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut second, &["SET", "k", "v"]).await, reply(b"+OK\r\n"));
    let set: [&[u8]; 4] = [b"CONFIG", b"SET", b"requirepass", b"pw"];
    assert_eq!(admin.call(&set).await, b"+OK\r\n");
    let mut third = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut third, &["GET", "k"]).await, noauth);
    assert_eq!(call(&mut second, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
}
