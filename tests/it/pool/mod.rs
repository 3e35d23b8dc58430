//! The shared upstream pool (`[upstream] pool = "shared"`): clients that share connections
//! never see each other's state or replies (transactions, WATCH, blocking commands, pub/sub,
//! client ids, databases, protocols), 1,000 clients fit on four connections, real client
//! programs work through it, it recovers from killed connections, its metrics move, and bad
//! pool settings are refused.
//!
//! Redis is the oracle throughout: the tests look at its `CLIENT LIST` (from an admin
//! connection straight to it) to count the pool's connections, named
//! `redis-audit-proxy-shared`, and compare the replies of a shared client with those of a
//! client connected directly where that matters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redis_audit_proxy::config::Config;
use redis_audit_proxy::event::ReplyStatus;
use tokio::net::TcpStream;
use tokio::sync::Barrier;

use crate::clients::{benchmark_line, cli_stdout, run, REDIS_BENCHMARK, REDIS_CLI};
use crate::differential::POOL_NAME;
use crate::support::adversary::{next_reply, send_quietly};
use crate::support::client::{encode_command, show};
use crate::support::rng::Rng;
use crate::support::{RawClient, RedisServer, TestProxy};

/// How long a reply may take before the test calls the proxy stuck: generous, a liveness
/// bound, not a latency one (a client waiting behind a blocked one would wait forever).
const LIVENESS: Duration = Duration::from_secs(5);
/// "Nothing more is coming" for a client that asked for nothing.
const SILENCE: Duration = Duration::from_millis(300);

/// The proxy configuration for a shared pool of `size` connections per state.
fn shared(size: usize) -> String {
    format!("[upstream]\npool = \"shared\"\npool_size = {size}\n")
}

/// A Redis and a proxy in front of it sharing `size` connections per state.
/// `server` behind a shared pool of one connection, and a connection to it directly (call
/// `require_server!` first).
async fn one_shared_in_front_of(
    server: crate::support::redis::Server,
) -> (RedisServer, TestProxy, RawClient) {
    let redis = RedisServer::start_server(server, &[]);
    let proxy = TestProxy::start_with(redis.addr, &shared(1)).await;
    let direct = RawClient::connect(redis.addr).await;
    (redis, proxy, direct)
}

async fn start(size: usize) -> (RedisServer, TestProxy) {
    crate::support::redis::assert_available();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start_with(redis.addr, &shared(size)).await;
    (redis, proxy)
}

/// Sends one command and returns its reply, shown escaped (`<no reply>` after [`LIVENESS`],
/// `<closed ...>` on a close), so a failing assertion shows what came instead.
async fn call(client: &mut RawClient, args: &[&str]) -> String {
    send(client, args).await;
    next_reply(client, LIVENESS).await
}

/// Sends one command without reading its reply.
async fn send(client: &mut RawClient, args: &[&str]) {
    let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
    send_quietly(client, &encode_command(&args)).await;
}

/// A reply as [`call`] shows it.
fn reply(bytes: &[u8]) -> String {
    show(bytes)
}

/// The lines of Redis's `CLIENT LIST`, asked on `admin` (a direct connection).
async fn client_list(admin: &mut RawClient) -> Vec<String> {
    let list = admin.call(&[b"CLIENT", b"LIST"]).await;
    String::from_utf8_lossy(&list)
        .lines()
        .filter(|line| line.starts_with("id="))
        .map(str::to_owned)
        .collect()
}

/// The value of `field` (`id`, `name`, ...) in one CLIENT LIST line.
fn field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    line.split(' ').find_map(|pair| pair.strip_prefix(field)?.strip_prefix('='))
}

/// True for a CLIENT LIST line of one of the pool's own connections.
fn is_pool(line: &str) -> bool {
    field(line, "name") == Some(POOL_NAME)
}

/// The `INFO clients` value of `name` on `admin`.
async fn info_clients(admin: &mut RawClient, name: &str) -> u64 {
    let info = admin.call(&[b"INFO", b"clients"]).await;
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in INFO clients: {}", show(&info)))
}

/// Waits until Redis reports `count` blocked clients (a liveness bound of 10 s).
async fn wait_blocked(admin: &mut RawClient, count: u64) {
    for _ in 0..500 {
        if info_clients(admin, "blocked_clients").await == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("Redis never reported {count} blocked clients: {:?}", client_list(admin).await);
}

/// A transaction on A while B writes the same key on the shared connection; every reply in
/// order (A's and B's interleaved as sent).
async fn transaction_exchange(addr: SocketAddr) -> Vec<String> {
    let mut a = RawClient::connect(addr).await;
    let mut b = RawClient::connect(addr).await;
    vec![
        call(&mut a, &["MULTI"]).await,
        call(&mut a, &["SET", "k", "a"]).await,
        call(&mut a, &["INCR", "n"]).await,
        call(&mut b, &["SET", "k", "b"]).await,
        call(&mut b, &["GET", "k"]).await,
        call(&mut a, &["EXEC"]).await,
        call(&mut b, &["GET", "k"]).await,
        call(&mut b, &["GET", "n"]).await,
    ]
}

/// WATCH on A, a write to the watched key by B (so EXEC aborts), then a WATCH that only sees
/// writes to other keys (so EXEC runs); every reply in order.
async fn watch_exchange(addr: SocketAddr) -> Vec<String> {
    let mut a = RawClient::connect(addr).await;
    let mut b = RawClient::connect(addr).await;
    vec![
        call(&mut a, &["WATCH", "k"]).await,
        call(&mut b, &["SET", "k", "x"]).await,
        call(&mut a, &["MULTI"]).await,
        call(&mut a, &["SET", "k", "y"]).await,
        call(&mut a, &["EXEC"]).await,
        call(&mut b, &["GET", "k"]).await,
        call(&mut a, &["WATCH", "k"]).await,
        call(&mut b, &["SET", "other", "z"]).await,
        call(&mut a, &["GET", "k"]).await,
        call(&mut a, &["MULTI"]).await,
        call(&mut a, &["SET", "k", "y"]).await,
        call(&mut a, &["EXEC"]).await,
        call(&mut b, &["GET", "k"]).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_is_isolated_from_clients_sharing_its_connection() {
    crate::require_redis!();
    let (redis, proxy) = start(1).await;
    let mut admin = RawClient::connect(redis.addr).await;

    let direct = transaction_exchange(redis.addr).await;
    assert_eq!(admin.call(&[b"FLUSHALL"]).await, b"+OK\r\n");
    let proxied = transaction_exchange(proxy.addr).await;
    let expected = [
        reply(b"+OK\r\n"),
        reply(b"+QUEUED\r\n"),
        reply(b"+QUEUED\r\n"),
        reply(b"+OK\r\n"),
        reply(b"$1\r\nb\r\n"),
        reply(b"*2\r\n+OK\r\n:1\r\n"),
        reply(b"$1\r\na\r\n"),
        reply(b"$1\r\n1\r\n"),
    ];
    assert_eq!(direct, expected, "the oracle: Redis directly");
    assert_eq!(proxied, expected, "through the shared pool (pool_size = 1)");

    assert_eq!(admin.call(&[b"FLUSHALL"]).await, b"+OK\r\n");
    let direct = watch_exchange(redis.addr).await;
    assert_eq!(admin.call(&[b"FLUSHALL"]).await, b"+OK\r\n");
    let proxied = watch_exchange(proxy.addr).await;
    let expected = [
        reply(b"+OK\r\n"),
        reply(b"+OK\r\n"),
        reply(b"+OK\r\n"),
        reply(b"+QUEUED\r\n"),
        reply(b"*-1\r\n"),
        reply(b"$1\r\nx\r\n"),
        reply(b"+OK\r\n"),
        reply(b"+OK\r\n"),
        reply(b"$1\r\nx\r\n"),
        reply(b"+OK\r\n"),
        reply(b"+QUEUED\r\n"),
        reply(b"*1\r\n+OK\r\n"),
        reply(b"$1\r\ny\r\n"),
    ];
    assert_eq!(direct, expected, "the oracle: Redis directly");
    assert_eq!(proxied, expected, "through the shared pool (pool_size = 1)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_clients_do_not_block_the_clients_sharing_their_connection() {
    crate::require_redis!();
    let (redis, proxy) = start(1).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut a = RawClient::connect(proxy.addr).await;
    let mut b = RawClient::connect(proxy.addr).await;
    let mut c = RawClient::connect(proxy.addr).await;
    // B and C use the one shared connection first, so A and C block on connections of their
    // own only if the proxy pins them.
    assert_eq!(call(&mut b, &["PING"]).await, reply(b"+PONG\r\n"));
    assert_eq!(call(&mut c, &["PING"]).await, reply(b"+PONG\r\n"));
    send(&mut a, &["BLPOP", "q", "0"]).await;
    send(&mut c, &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]).await;
    wait_blocked(&mut admin, 2).await;

    assert_eq!(call(&mut b, &["PING"]).await, reply(b"+PONG\r\n"), "B waits behind A");
    assert_eq!(call(&mut b, &["SET", "k", "v"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut b, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));

    assert_eq!(call(&mut b, &["LPUSH", "q", "v"]).await, reply(b":1\r\n"));
    assert_eq!(next_reply(&mut a, LIVENESS).await, reply(b"*2\r\n$1\r\nq\r\n$1\r\nv\r\n"));
    let id = call(&mut b, &["XADD", "s", "*", "f", "x"]).await;
    let id = id.strip_prefix('$').and_then(|rest| rest.split("\\r\\n").nth(1)).unwrap_or(&id);
    let stream = format!(
        "*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n${}\r\n{id}\r\n*2\r\n$1\r\nf\r\n$1\r\nx\r\n",
        id.len()
    );
    assert_eq!(next_reply(&mut c, LIVENESS).await, reply(stream.as_bytes()));

    // Unblocked, both go on as any client.
    assert_eq!(call(&mut a, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
    assert_eq!(call(&mut c, &["LLEN", "q"]).await, reply(b":0\r\n"));
    assert_eq!(info_clients(&mut admin, "blocked_clients").await, 0);
}

/// CLIENT PAUSE holds a write on the shared connection, and what follows it there: the pausing
/// client's next commands (a read, its UNPAUSE) must not wait behind it (they would until the
/// pause timed out). Redis's and Valkey's own `pause` tests do this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pausing_client_is_not_held_behind_the_write_its_pause_holds() {
    crate::require_redis!();
    let (redis, proxy) = start(1).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut pauser = RawClient::connect(proxy.addr).await;
    let mut writer = RawClient::connect(proxy.addr).await;
    // Both on the one shared connection first.
    assert_eq!(call(&mut pauser, &["PING"]).await, reply(b"+PONG\r\n"));
    assert_eq!(call(&mut writer, &["PING"]).await, reply(b"+PONG\r\n"));
    let pause = ["CLIENT", "PAUSE", "20000", "WRITE"];
    assert_eq!(call(&mut pauser, &pause).await, reply(b"+OK\r\n"));
    send(&mut writer, &["SET", "k", "v"]).await;
    wait_blocked(&mut admin, 1).await;
    assert_eq!(call(&mut pauser, &["GET", "k"]).await, reply(b"$-1\r\n"), "a read while paused");
    assert_eq!(call(&mut pauser, &["CLIENT", "UNPAUSE"]).await, reply(b"+OK\r\n"));
    assert_eq!(next_reply(&mut writer, LIVENESS).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut pauser, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
}

/// Valkey 8 answers an UNSUBSCRIBE of a client that is not subscribed with one -NOSUB error
/// where Redis confirms each channel it names: on a shared connection the proxy's count of its
/// replies must not take the replies of the clients after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_answered_with_one_error_takes_no_other_clients_replies() {
    use crate::support::redis::Server;
    crate::require_server!(Server::Valkey80);
    let (_valkey, proxy, mut direct) = one_shared_in_front_of(Server::Valkey80).await;
    let nosub = call(&mut direct, &["UNSUBSCRIBE", "foo", "bar", "quux"]).await;
    assert!(nosub.starts_with("-NOSUB"), "the oracle: {nosub}");
    let mut unsubscriber = RawClient::connect(proxy.addr).await;
    let mut other = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut other, &["PING"]).await, reply(b"+PONG\r\n"));
    for unsubscribe in [&["UNSUBSCRIBE", "foo", "bar", "quux"][..], &["PUNSUBSCRIBE", "f*", "b*"]] {
        let want = call(&mut direct, unsubscribe).await;
        assert_eq!(call(&mut unsubscriber, unsubscribe).await, want, "{unsubscribe:?}");
    }
    // The clients on the shared connection get their own replies, in order.
    for n in 0..4 {
        let value = format!("v{n}");
        assert_eq!(call(&mut other, &["SET", "k", &value]).await, reply(b"+OK\r\n"));
        let got = call(&mut other, &["GET", "k"]).await;
        assert_eq!(got, reply(format!("${}\r\n{value}\r\n", value.len()).as_bytes()));
        assert_eq!(call(&mut unsubscriber, &["ECHO", &value]).await, got, "ECHO {value}");
    }
}

/// The shared connection that carried the last record of connection `conn_id`.
/// Clients are packed: while the first shared connection is not busy, every client of its state
/// joins it, so that Redis reads their commands together (spreading them over `pool_size`
/// connections doubled Redis's CPU per command); the second client opens a second one, kept for
/// clients moving off the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_share_the_first_connection_while_it_is_not_busy() {
    let (redis, proxy) = start(4).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut client = RawClient::connect(proxy.addr).await;
        assert_eq!(
            call(&mut client, &["SET", &format!("k{i}"), &i.to_string()]).await,
            reply(b"+OK\r\n")
        );
        clients.push(client);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let value = i.to_string();
        assert_eq!(call(client, &["GET", &format!("k{i}")]).await, reply(&bulk(&value)));
    }
    let list = client_list(&mut admin).await;
    let pool = list.iter().filter(|line| is_pool(line)).count();
    assert_eq!(pool, 2, "shared connections for 20 clients, none busy: {list:#?}");
    let records = proxy.sink.wait_for(40).await;
    let first = records[0].upstream_conn;
    let second = records.iter().find(|r| r.upstream_conn != first).map(|r| r.conn_id);
    let on_first = records.iter().filter(|r| r.upstream_conn == first).count();
    assert!(first.is_some() && second == Some(records[1].conn_id), "{records:#?}");
    assert_eq!(on_first, 38, "the commands of all clients but the second on the first");
}

fn bulk(value: &str) -> Vec<u8> {
    format!("${}\r\n{value}\r\n", value.len()).into_bytes()
}

fn upstream_conn_of(proxy: &TestProxy, conn_id: u64) -> Option<u64> {
    let records = proxy.sink.records();
    records.iter().rev().find(|record| record.conn_id == conn_id)?.upstream_conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_another_clients_deep_pipeline_moves_to_a_less_busy_connection() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let toml = format!("{}pool_busy_replies = 100\n", shared(2));
    let proxy = TestProxy::start_with(redis.addr, &toml).await;
    // A and B share the first connection (packed onto it while it is not busy); X, the second
    // client, opened the second.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = RawClient::connect(proxy.addr).await;
        assert_eq!(call(&mut client, &["PING"]).await, reply(b"+PONG\r\n"));
        clients.push(client);
    }
    let ids: Vec<u64> = {
        let records = proxy.sink.wait_for(3).await;
        records.iter().map(|record| record.conn_id).collect()
    };
    let (a_id, b_id) = (ids[0], ids[2]);
    let first = upstream_conn_of(&proxy, a_id);
    assert!(first.is_some());
    assert_eq!(upstream_conn_of(&proxy, b_id), first, "A and B share a connection");
    let mut b = clients.pop().unwrap();
    let mut a = clients.remove(0);

    // A's deep pipeline: 100,000 INCRs in one write, its replies read as they come, so that
    // the proxy keeps feeding them to the shared connection.
    const DEPTH: usize = 100_000;
    let mut pipeline = Vec::new();
    for _ in 0..DEPTH {
        pipeline.extend(encode_command(&[b"INCR", b"n"]));
    }
    a.send(&pipeline).await;
    assert_eq!(a.read_reply().await, b":1\r\n", "A's commands are being answered");
    let reader = tokio::spawn(async move {
        for _ in 1..DEPTH {
            a.read_reply().await;
        }
        a
    });
    // B asks meanwhile: the connection owes A thousands of replies, so B moves (between its
    // replies) to the second one and waits for its own command only.
    let mut moved_to = first;
    while moved_to == first && !reader.is_finished() {
        let value = call(&mut b, &["GET", "n"]).await;
        assert!(value.starts_with('$'), "{value}");
        moved_to = upstream_conn_of(&proxy, b_id);
    }
    let mut a = reader.await.unwrap();
    assert!(moved_to.is_some() && moved_to != first, "B moved off A's busy connection");
    assert_eq!(call(&mut b, &["GET", "n"]).await, reply(b"$6\r\n100000\r\n"));
    assert_eq!(call(&mut a, &["GET", "n"]).await, reply(b"$6\r\n100000\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_messages_reach_only_the_subscriber() {
    crate::require_redis!();
    let (_redis, proxy) = start(1).await;
    let mut a = RawClient::connect(proxy.addr).await;
    let mut b = RawClient::connect(proxy.addr).await;
    let mut c = RawClient::connect(proxy.addr).await;
    // C uses the shared connection before and after the subscription.
    assert_eq!(call(&mut c, &["SET", "k", "v"]).await, reply(b"+OK\r\n"));
    assert_eq!(
        call(&mut a, &["SUBSCRIBE", "c"]).await,
        reply(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n")
    );

    assert_eq!(call(&mut b, &["PUBLISH", "c", "m"]).await, reply(b":1\r\n"));
    assert_eq!(
        next_reply(&mut a, LIVENESS).await,
        reply(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n")
    );
    assert_eq!(call(&mut c, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
    assert_eq!(call(&mut c, &["PUBLISH", "c", "m2"]).await, reply(b":1\r\n"));
    assert_eq!(
        next_reply(&mut a, LIVENESS).await,
        reply(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nm2\r\n")
    );

    // Nobody else got a message: nothing unasked, and the next reply is their own.
    for (name, client) in [("B", &mut b), ("C", &mut c)] {
        assert_eq!(next_reply(client, SILENCE).await, "<no reply>", "{name} got bytes unasked");
        assert_eq!(call(client, &["PING"]).await, reply(b"+PONG\r\n"), "{name}");
        assert!(client.buffer.is_empty(), "{name} has more: {}", show(&client.buffer));
    }

    // Unsubscribed, A goes back to plain commands and gets no more messages.
    assert_eq!(
        call(&mut a, &["UNSUBSCRIBE", "c"]).await,
        reply(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n")
    );
    assert_eq!(call(&mut b, &["PUBLISH", "c", "late"]).await, reply(b":0\r\n"));
    assert_eq!(call(&mut a, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
    assert_eq!(next_reply(&mut a, SILENCE).await, "<no reply>", "A after UNSUBSCRIBE");
}

/// The integer of a `:<n>\r\n` reply as [`call`] shows it.
fn integer(shown: &str) -> u64 {
    shown
        .strip_prefix(':')
        .and_then(|rest| rest.strip_suffix("\\r\\n"))
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("not an integer reply: {shown}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_is_stable_and_names_the_clients_own_connection() {
    crate::require_redis!();
    let (redis, proxy) = start(2).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut a = RawClient::connect(proxy.addr).await;
    let mut b = RawClient::connect(proxy.addr).await;

    let first = integer(&call(&mut a, &["CLIENT", "ID"]).await);
    assert_eq!(call(&mut a, &["SET", "k", "v"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut b, &["SET", "j", "w"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut a, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
    assert_eq!(call(&mut a, &["GET", "j"]).await, reply(b"$1\r\nw\r\n"));
    let again = integer(&call(&mut a, &["CLIENT", "ID"]).await);
    assert_eq!(first, again, "A's CLIENT ID changed between commands");
    let other = integer(&call(&mut b, &["CLIENT", "ID"]).await);
    assert_ne!(first, other, "A and B got the same CLIENT ID");

    // Each id is a connection of Redis's that is not one of the pool's shared ones.
    let list = client_list(&mut admin).await;
    for id in [first, other] {
        let line = list
            .iter()
            .find(|line| field(line, "id") == Some(&id.to_string()))
            .unwrap_or_else(|| panic!("CLIENT ID {id} is no connection of Redis's: {list:#?}"));
        assert!(!is_pool(line), "CLIENT ID {id} is a shared connection: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_reply_modes_and_tracking_stay_with_their_client() {
    crate::require_redis!();
    let (redis, proxy) = start(1).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut a = RawClient::connect(proxy.addr).await;
    let mut b = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut b, &["SET", "k", "v"]).await, reply(b"+OK\r\n"));

    // A name is the client's, not the shared connection's.
    assert_eq!(call(&mut a, &["CLIENT", "SETNAME", "app-a"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut b, &["CLIENT", "GETNAME"]).await, reply(b"$-1\r\n"));
    assert_eq!(call(&mut a, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
    assert_eq!(call(&mut a, &["CLIENT", "GETNAME"]).await, reply(b"$5\r\napp-a\r\n"));
    let list = client_list(&mut admin).await;
    assert!(
        list.iter().any(|line| is_pool(line)),
        "the pool's connection lost its name: {list:#?}"
    );

    // CLIENT REPLY OFF silences B only, until its CLIENT REPLY ON (sent behind a command
    // whose reply B must never see).
    let args: [&[&[u8]]; 2] = [&[b"CLIENT", b"REPLY", b"OFF"], &[b"SET", b"k", b"quiet"]];
    send_quietly(&mut b, &args.iter().flat_map(|args| encode_command(args)).collect::<Vec<_>>())
        .await;
    assert_eq!(call(&mut a, &["PING"]).await, reply(b"+PONG\r\n"));
    assert_eq!(call(&mut b, &["CLIENT", "REPLY", "ON"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut b, &["GET", "k"]).await, reply(b"$5\r\nquiet\r\n"));
    assert_eq!(call(&mut a, &["GET", "k"]).await, reply(b"$5\r\nquiet\r\n"));

    // Tracking on A (RESP3 pushes): the invalidation for B's write reaches A, and only A.
    let mut c = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut c, &["PING"]).await, reply(b"+PONG\r\n"));
    assert!(call(&mut a, &["HELLO", "3"]).await.starts_with('%'));
    assert_eq!(call(&mut a, &["CLIENT", "TRACKING", "ON"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut a, &["GET", "k"]).await, reply(b"$5\r\nquiet\r\n"));
    assert_eq!(call(&mut b, &["SET", "k", "new"]).await, reply(b"+OK\r\n"));
    assert_eq!(
        next_reply(&mut a, LIVENESS).await,
        reply(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n")
    );
    assert_eq!(call(&mut c, &["GET", "k"]).await, reply(b"$3\r\nnew\r\n"));
    for (name, client) in [("B", &mut b), ("C", &mut c)] {
        assert_eq!(next_reply(client, SILENCE).await, "<no reply>", "{name} got bytes unasked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_and_hello_move_a_client_to_connections_of_its_state() {
    crate::require_redis!();
    let (redis, proxy) = start(1).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut a = RawClient::connect(proxy.addr).await;
    let mut b = RawClient::connect(proxy.addr).await;
    let mut c = RawClient::connect(proxy.addr).await;

    assert_eq!(call(&mut a, &["SELECT", "3"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut a, &["SET", "k", "v"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut b, &["GET", "k"]).await, reply(b"$-1\r\n"), "B is in db 0");
    assert_eq!(call(&mut b, &["SET", "k", "zero"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut a, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"), "A is in db 3");
    assert_eq!(call(&mut c, &["SELECT", "3"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut c, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"), "C is in db 3");
    assert_eq!(call(&mut c, &["SELECT", "0"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut c, &["GET", "k"]).await, reply(b"$4\r\nzero\r\n"), "C is in db 0");
    assert_eq!(call(&mut a, &["DBSIZE"]).await, reply(b":1\r\n"));
    // Where the keys really are.
    assert_eq!(admin.call(&[b"GET", b"k"]).await, b"$4\r\nzero\r\n");
    assert_eq!(admin.call(&[b"SELECT", b"3"]).await, b"+OK\r\n");
    assert_eq!(admin.call(&[b"GET", b"k"]).await, b"$1\r\nv\r\n");

    // C speaks RESP3 from now on, B still RESP2: each gets its own protocol's replies.
    let hello = call(&mut c, &["HELLO", "3"]).await;
    assert!(hello.starts_with('%'), "HELLO 3 answered {hello}");
    assert_eq!(call(&mut b, &["HSET", "h", "f", "v"]).await, reply(b":1\r\n"));
    for _ in 0..2 {
        assert_eq!(call(&mut c, &["HGETALL", "h"]).await, reply(b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"));
        assert_eq!(call(&mut b, &["HGETALL", "h"]).await, reply(b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"));
        assert_eq!(call(&mut c, &["GET", "missing"]).await, reply(b"_\r\n"));
        assert_eq!(call(&mut b, &["GET", "missing"]).await, reply(b"$-1\r\n"));
    }
    let hello = call(&mut c, &["HELLO", "2"]).await;
    assert!(hello.starts_with('*'), "HELLO 2 answered {hello}");
    assert_eq!(call(&mut c, &["HGETALL", "h"]).await, reply(b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"));
}

mod implicit;
mod logins;
mod scale;
mod stalls;

/// An UNSUBSCRIBE naming three channels, of a client that is not subscribed, gets three
/// confirmations: twenty clients sending it with a PING on one shared connection each get
/// exactly their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_channel_unsubscribes_of_shared_clients_keep_every_reply_with_its_client() {
    crate::require_redis!();
    let (redis, proxy) = start(1).await;
    let mut direct = RawClient::connect(redis.addr).await;
    let mut expected = Vec::new();
    for command in [&["UNSUBSCRIBE", "a", "b", "c"][..], &["PING"]] {
        send(&mut direct, command).await;
    }
    for _ in 0..4 {
        expected.push(next_reply(&mut direct, LIVENESS).await);
    }
    let barrier = Arc::new(Barrier::new(20));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (barrier, expected) = (Arc::clone(&barrier), expected.clone());
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            let mut client = RawClient::connect(addr).await;
            barrier.wait().await;
            for _ in 0..50 {
                let pipeline: Vec<u8> = [
                    encode_command(&[b"UNSUBSCRIBE", b"a", b"b", b"c"]),
                    encode_command(&[b"PING"]),
                ]
                .concat();
                send_quietly(&mut client, &pipeline).await;
                for want in &expected {
                    assert_eq!(&next_reply(&mut client, LIVENESS).await, want);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("every client got its own replies");
    }
}
