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
use redis_audit_proxy::record::ReplyStatus;
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
async fn start(size: usize) -> (RedisServer, TestProxy) {
    crate::require_redis!();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_messages_reach_only_the_subscriber() {
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

/// What one of the many clients checks: `rounds` times, three `SET key:<i> <random>` each
/// followed by its `GET`, pipelined in one write; every reply must be its own.
async fn own_values(client: &mut RawClient, i: usize, rng: &mut Rng) -> Result<(), String> {
    let key = format!("key:{i}");
    let values: Vec<String> = (0..3).map(|_| format!("{:016x}", rng.next())).collect();
    let mut pipeline = Vec::new();
    let mut expected = Vec::new();
    for value in &values {
        pipeline.extend(encode_command(&[b"SET", key.as_bytes(), value.as_bytes()]));
        pipeline.extend(encode_command(&[b"GET", key.as_bytes()]));
        expected.push(reply(b"+OK\r\n"));
        expected.push(reply(format!("${}\r\n{value}\r\n", value.len()).as_bytes()));
    }
    send_quietly(client, &pipeline).await;
    for (n, want) in expected.iter().enumerate() {
        // Generous: a thousand clients on two shared cores, in a debug build.
        let got = next_reply(client, Duration::from_secs(60)).await;
        if &got != want {
            return Err(format!("client {i}, reply {n}: {got}, expected {want}"));
        }
    }
    Ok(())
}

/// Raises this process's open-file limit to its hard limit (prlimit, no unsafe code) when
/// the soft one is under `needed`, and fails the test with how to fix it when it cannot.
fn ensure_open_files(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let parse = |text: &str| -> Option<(u64, u64)> {
        let line = text.lines().find(|line| line.starts_with("Max open files"))?;
        let mut numbers = line.split_whitespace().skip(3);
        let soft = numbers.next()?.parse().unwrap_or(u64::MAX);
        let hard = numbers.next()?.parse().unwrap_or(u64::MAX);
        Some((soft, hard))
    };
    let Some((soft, hard)) = parse(&limits) else { return };
    if soft >= needed {
        return;
    }
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .status();
    let now = parse(&std::fs::read_to_string("/proc/self/limits").unwrap_or_default());
    let soft = now.map_or(soft, |(soft, _)| soft);
    assert!(
        soft >= needed,
        "this test needs {needed} open files and the limit is {soft} (hard {hard}): run it \
         after `ulimit -n {needed}` or more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_share_four_connections_and_get_their_own_replies() {
    const CLIENTS: usize = 1000;
    // Each client is two sockets of this process (the test's end and the proxy's); the pool,
    // the admin and the runtime need a few more. Redis's sockets are another process's.
    ensure_open_files(2 * CLIENTS as u64 + 256);
    let (redis, proxy) = start(4).await;
    let mut admin = RawClient::connect(redis.addr).await;
    // Everyone connected and through a first round, then the CLIENT LIST, then two more rounds.
    let connected = Arc::new(Barrier::new(CLIENTS + 1));
    let counted = Arc::new(Barrier::new(CLIENTS + 1));
    let seed = u64::from(std::process::id()) << 20;
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (connected, counted, addr) = (connected.clone(), counted.clone(), proxy.addr);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed + i as u64);
            let first = async {
                let stream =
                    TcpStream::connect(addr).await.map_err(|e| format!("connect {i}: {e}"))?;
                let mut client = RawClient { stream, buffer: Vec::new() };
                own_values(&mut client, i, &mut rng).await?;
                Ok::<_, String>(client)
            }
            .await;
            // A failed client still reaches the barriers, so the test reports it, not a hang.
            connected.wait().await;
            counted.wait().await;
            let mut client = first?;
            for _ in 0..2 {
                own_values(&mut client, i, &mut rng).await?;
            }
            Ok::<_, String>(())
        }));
    }
    tokio::time::timeout(Duration::from_secs(120), connected.wait())
        .await
        .expect("the thousand clients connected and ran a round within 120 s");
    let list = client_list(&mut admin).await;
    let pool = list.iter().filter(|line| is_pool(line)).count();
    let others: Vec<&String> = list.iter().filter(|line| !is_pool(line)).collect();
    assert!((1..=4).contains(&pool), "{pool} shared connections for a pool of 4: {list:#?}");
    // The admin, and room for a connection or two the proxy keeps for itself.
    assert!(others.len() <= 3, "connections besides the pool's: {others:#?}");
    counted.wait().await;

    let mut failures = Vec::new();
    for task in tasks {
        if let Err(failure) = task.await.expect("client task") {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(admin.call(&[b"DBSIZE"]).await, format!(":{CLIENTS}\r\n").into_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_and_redis_cli_through_the_shared_pool() {
    assert!(
        std::path::Path::new(REDIS_BENCHMARK).exists() && std::path::Path::new(REDIS_CLI).exists(),
        "redis-benchmark and redis-cli are not installed: `make test` installs them (or \
         `apt-get install redis-tools`)"
    );
    let (redis, proxy) = start(4).await;
    let port = proxy.addr.port().to_string();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "set,get,incr,lpush",
        "-n",
        "20000",
        "-c",
        "50",
        "-P",
        "16",
        "-q",
    ];
    let output = run(REDIS_BENCHMARK, &args, b"").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "redis-benchmark: {}\n{stdout}{stderr}", output.status);
    assert!(!format!("{stdout}{stderr}").contains("rror"), "{stdout}{stderr}");
    for name in ["SET", "GET", "INCR", "LPUSH"] {
        assert!(benchmark_line(&stdout, name).is_some(), "no {name} line in {stdout:?}");
    }
    let records = proxy.sink.records();
    let errors: Vec<_> = records.iter().filter(|r| r.status == ReplyStatus::Error).collect();
    assert!(errors.is_empty(), "{} errors: {:?}", errors.len(), errors.first());

    // Every INCR and LPUSH of the 50 clients landed once on the same key.
    let mut admin = RawClient::connect(redis.addr).await;
    assert_eq!(admin.call(&[b"GET", b"counter:__rand_int__"]).await, b"$5\r\n20000\r\n");
    assert_eq!(admin.call(&[b"LLEN", b"mylist"]).await, b":20000\r\n");
    let list = client_list(&mut admin).await;
    let pool = list.iter().filter(|line| is_pool(line)).count();
    assert!((1..=4).contains(&pool), "{pool} shared connections for a pool of 4: {list:#?}");

    assert_eq!(cli_stdout(proxy.addr, &["set", "a", "b"]).await, "OK\n");
    assert_eq!(cli_stdout(proxy.addr, &["get", "a"]).await, "b\n");
    assert_eq!(cli_stdout(proxy.addr, &["incr", "counter:__rand_int__"]).await, "20001\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_shared_connections_are_replaced_and_pinned_clients_keep_theirs() {
    let (redis, proxy) = start(2).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut x = RawClient::connect(proxy.addr).await;
    let mut y = RawClient::connect(proxy.addr).await;
    let mut blocked = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut x, &["SET", "k", "v"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut y, &["SET", "j", "w"]).await, reply(b"+OK\r\n"));
    send(&mut blocked, &["BLPOP", "q", "0"]).await;
    wait_blocked(&mut admin, 1).await;

    let list = client_list(&mut admin).await;
    let ids: Vec<String> = list
        .iter()
        .filter(|line| is_pool(line))
        .filter_map(|line| field(line, "id").map(str::to_owned))
        .collect();
    assert!(!ids.is_empty(), "no shared connection to kill: {list:#?}");
    for id in &ids {
        assert_eq!(admin.call(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]).await, b":1\r\n");
    }
    // No pause for the proxy to notice: a command racing the close must succeed too.
    let list = client_list(&mut admin).await;
    assert!(
        !list.iter().any(|line| ids.iter().any(|id| field(line, "id") == Some(id))),
        "killed connections still listed: {list:#?}"
    );

    // The idle clients' next commands succeed on new shared connections.
    assert_eq!(call(&mut x, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
    assert_eq!(call(&mut y, &["GET", "j"]).await, reply(b"$1\r\nw\r\n"));
    assert_eq!(call(&mut y, &["SET", "j", "w2"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut x, &["GET", "j"]).await, reply(b"$2\r\nw2\r\n"));
    let list = client_list(&mut admin).await;
    let pool = list.iter().filter(|line| is_pool(line)).count();
    assert!((1..=2).contains(&pool), "{pool} shared connections for a pool of 2: {list:#?}");

    // The blocked client kept its own connection and is still waiting.
    assert_eq!(info_clients(&mut admin, "blocked_clients").await, 1);
    assert_eq!(next_reply(&mut blocked, SILENCE).await, "<no reply>");
    assert_eq!(call(&mut x, &["LPUSH", "q", "item"]).await, reply(b":1\r\n"));
    assert_eq!(next_reply(&mut blocked, LIVENESS).await, reply(b"*2\r\n$1\r\nq\r\n$4\r\nitem\r\n"));
    assert_eq!(call(&mut blocked, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_clients_close_after_pool_idle_ms_and_reopen_on_demand() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let toml = format!("{}pool_idle_ms = 200\n", shared(2));
    let proxy = TestProxy::start_with(redis.addr, &toml).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut a = RawClient::connect(proxy.addr).await;
    let mut b = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut a, &["SET", "k", "v"]).await, reply(b"+OK\r\n"));
    // B is pinned for its transaction; its connection then goes back to the spares.
    assert_eq!(call(&mut b, &["MULTI"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut b, &["EXEC"]).await, reply(b"*0\r\n"));
    let list = client_list(&mut admin).await;
    assert!(list.iter().any(|line| is_pool(line)), "no shared connection in use: {list:#?}");

    // Every client gone: the shared and spare connections close (only the admin is left).
    drop((a, b));
    let mut list = Vec::new();
    for _ in 0..100 {
        list = client_list(&mut admin).await;
        if list.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(list.len(), 1, "10 s without clients, still open: {list:#?}");
    let mut c = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut c, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
    let list = client_list(&mut admin).await;
    assert!(list.iter().any(|line| is_pool(line)), "no shared connection reopened: {list:#?}");
}

/// A Redis whose default user needs a password, with users `alice` (keys `alice:*`) and
/// `bob` (keys `bob:*`), and an admin connection logged in.
async fn with_users() -> (RedisServer, RawClient) {
    crate::require_redis!();
    let redis = RedisServer::start(&["--requirepass", "adminpw"]);
    let mut admin = RawClient::connect(redis.addr).await;
    assert_eq!(admin.call(&[b"AUTH", b"adminpw"]).await, b"+OK\r\n");
    for (user, password, keys) in [("alice", ">a", "~alice:*"), ("bob", ">b", "~bob:*")] {
        let rules: [&[u8]; 7] = [
            b"ACL",
            b"SETUSER",
            user.as_bytes(),
            b"on",
            password.as_bytes(),
            keys.as_bytes(),
            b"+@all",
        ];
        assert_eq!(admin.call(&rules).await, b"+OK\r\n", "{user}");
    }
    (redis, admin)
}

/// Clients logged in as different users, one with a wrong password and one not logged in,
/// taking turns; every reply in order.
async fn logins_exchange(addr: SocketAddr) -> Vec<String> {
    let mut a = RawClient::connect(addr).await;
    let mut b = RawClient::connect(addr).await;
    let mut c = RawClient::connect(addr).await;
    let mut d = RawClient::connect(addr).await;
    let mut replies = vec![
        call(&mut a, &["AUTH", "alice", "a"]).await,
        call(&mut b, &["AUTH", "bob", "b"]).await,
        call(&mut d, &["AUTH", "alice", "wrong"]).await,
    ];
    for round in ["1", "2"] {
        replies.extend([
            call(&mut a, &["SET", "alice:k", round]).await,
            call(&mut b, &["SET", "bob:k", round]).await,
            call(&mut c, &["GET", "alice:k"]).await,
            call(&mut d, &["GET", "alice:k"]).await,
            call(&mut a, &["GET", "bob:k"]).await,
            call(&mut b, &["GET", "alice:k"]).await,
            call(&mut a, &["ACL", "WHOAMI"]).await,
            call(&mut b, &["ACL", "WHOAMI"]).await,
            call(&mut a, &["GET", "alice:k"]).await,
        ]);
    }
    // RESET logs A out: it must not stay on alice's connections.
    replies.extend([
        call(&mut a, &["RESET"]).await,
        call(&mut a, &["GET", "alice:k"]).await,
        call(&mut b, &["GET", "bob:k"]).await,
        call(&mut d, &["AUTH", "bob", "b"]).await,
        call(&mut d, &["GET", "bob:k"]).await,
        call(&mut d, &["GET", "alice:k"]).await,
    ]);
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_share_only_connections_logged_in_as_their_own_user() {
    let (redis, mut admin) = with_users().await;
    let proxy = TestProxy::start_with(redis.addr, &shared(1)).await;
    let direct = logins_exchange(redis.addr).await;
    assert_eq!(admin.call(&[b"FLUSHALL"]).await, b"+OK\r\n");
    let proxied = logins_exchange(proxy.addr).await;
    // The oracle says what a login allows; spot checks that it is the exchange meant.
    assert!(direct[5].starts_with("-NOAUTH"), "{direct:?}");
    assert!(direct[7].starts_with("-NOPERM"), "{direct:?}");
    assert_eq!(direct[9], reply(b"$5\r\nalice\r\n"), "{direct:?}");
    assert_eq!(proxied, direct, "through the shared pool (pool_size = 1), then directly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_user_loses_its_shared_connections() {
    let (redis, mut admin) = with_users().await;
    let proxy = TestProxy::start_with(redis.addr, &shared(1)).await;
    let mut direct = RawClient::connect(redis.addr).await;
    let mut proxied = RawClient::connect(proxy.addr).await;
    for client in [&mut direct, &mut proxied] {
        assert_eq!(call(client, &["AUTH", "alice", "a"]).await, reply(b"+OK\r\n"));
        assert_eq!(call(client, &["SET", "alice:k", "v"]).await, reply(b"+OK\r\n"));
    }
    // Redis closes every connection logged in as a deleted user.
    assert_eq!(admin.call(&[b"ACL", b"DELUSER", b"alice"]).await, b":1\r\n");
    let direct_next = call(&mut direct, &["GET", "alice:k"]).await;
    assert!(direct_next.starts_with("<closed"), "the oracle: {direct_next}");
    // Closed as directly, or refused: never run as alice, never left without an answer.
    let next = call(&mut proxied, &["GET", "alice:k"]).await;
    assert!(
        next.starts_with("<closed") || next.starts_with('-'),
        "after ACL DELUSER alice, alice's client got {next} for GET alice:k"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_shared_clients_leaves_none_waiting() {
    crate::require_redis!();
    let mut redis = RedisServer::start(&[]);
    let toml = format!("{}reconnect_interval_ms = 100\n", shared(2));
    let proxy = TestProxy::start_with(redis.addr, &toml).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut idle = RawClient::connect(proxy.addr).await;
    let mut blocked = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut idle, &["SET", "k", "v"]).await, reply(b"+OK\r\n"));
    send(&mut blocked, &["BLPOP", "q", "0"]).await;
    wait_blocked(&mut admin, 1).await;

    redis.kill();
    // The blocked client's own connection is gone: closed, as directly.
    let shown = next_reply(&mut blocked, LIVENESS).await;
    assert!(shown.starts_with("<closed"), "the blocked client got {shown}");
    // The idle client may be closed too, or answered with an error: never left waiting.
    let shown = call(&mut idle, &["GET", "k"]).await;
    assert!(shown.starts_with("<closed") || shown.starts_with('-'), "the idle client got {shown}");

    redis.restart();
    let mut fresh = RawClient::connect(proxy.addr).await;
    let mut answered = String::new();
    // The proxy retries every 100 ms; a few refusals while Redis starts are fine.
    for _ in 0..50 {
        answered = call(&mut fresh, &["PING"]).await;
        if answered == reply(b"+PONG\r\n") {
            break;
        }
        assert!(answered.starts_with("-ERR upstream"), "{answered}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answered, reply(b"+PONG\r\n"));
    assert_eq!(call(&mut fresh, &["SET", "k", "again"]).await, reply(b"+OK\r\n"));
    if !shown.starts_with("<closed") {
        // Still connected: the idle client is served again too.
        let mut again = String::new();
        for _ in 0..50 {
            again = call(&mut idle, &["GET", "k"]).await;
            if !again.starts_with("-ERR upstream") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(again, reply(b"$5\r\nagain\r\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_broken_or_unfinished_command_never_reaches_the_shared_connection() {
    let (redis, proxy) = start(1).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut a = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut a, &["SET", "k", "v"]).await, reply(b"+OK\r\n"));
    let shared_ids = |list: &[String]| -> Vec<String> {
        let pool = list.iter().filter(|line| is_pool(line));
        pool.filter_map(|line| field(line, "id").map(str::to_owned)).collect()
    };
    let before = shared_ids(&client_list(&mut admin).await);
    assert_eq!(before.len(), 1, "one shared connection");

    // A protocol error: B gets Redis's error and is closed; the shared connection stays.
    let mut b = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut b, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
    send_quietly(&mut b, b"*1\r\n$x\r\n").await;
    let error = next_reply(&mut b, LIVENESS).await;
    assert!(error.starts_with("-ERR Protocol error"), "{error}");
    assert!(next_reply(&mut b, LIVENESS).await.starts_with("<closed"));

    // An unfinished command (a SET whose value never comes), then C leaves: not one byte of
    // it may be on the shared connection, or A's next command would become its value.
    let mut c = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut c, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
    send_quietly(&mut c, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20\r\nonly-ten-b").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(c);

    // D leaves with many large replies still coming: none of them reaches A.
    let mut d = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut d, &["SET", "big", &"x".repeat(256 * 1024)]).await, reply(b"+OK\r\n"));
    let gets: Vec<u8> = (0..200).flat_map(|_| encode_command(&[b"GET", b"big"])).collect();
    send_quietly(&mut d, &gets).await;
    drop(d);

    for _ in 0..3 {
        assert_eq!(call(&mut a, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
        assert_eq!(call(&mut a, &["PING"]).await, reply(b"+PONG\r\n"));
    }
    assert_eq!(next_reply(&mut a, SILENCE).await, "<no reply>");
    let after = shared_ids(&client_list(&mut admin).await);
    assert_eq!(after, before, "the shared connection was closed or replaced");
}

/// `CLIENT SETINFO` in its forms, then `CLIENT INFO`'s library fields; every reply in order.
async fn setinfo_exchange(addr: SocketAddr) -> Vec<String> {
    let mut client = RawClient::connect(addr).await;
    let mut replies = Vec::new();
    for args in [
        &["CLIENT", "SETINFO", "LIB-NAME", "mylib"][..],
        &["CLIENT", "SETINFO", "lib-ver", "1.0"],
        &["CLIENT", "SETINFO", "LIB-NAME", "bad name"],
        &["CLIENT", "SETINFO", "LIB-NAME"],
        &["CLIENT", "SETINFO", "nosuch", "x"],
        &["CLIENT", "SETINFO"],
    ] {
        replies.push(call(&mut client, args).await);
    }
    // CLIENT INFO's lib-name= and lib-ver= fields only (Redis 7.2 and later show them).
    let info = call(&mut client, &["CLIENT", "INFO"]).await;
    let libs: Vec<&str> = info.split(' ').filter(|field| field.starts_with("lib-")).collect();
    replies.push(libs.join(" "));
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_setinfo_answers_as_redis_does() {
    let (redis, proxy) = start(1).await;
    let direct = setinfo_exchange(redis.addr).await;
    let proxied = setinfo_exchange(proxy.addr).await;
    assert_eq!(proxied, direct, "through the shared pool, then directly");
}

/// The value of one sample line (`name{labels} value`) of a metrics page, 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_pins_shared_connections_and_their_writes() {
    let (_redis, proxy) = start(2).await;
    let mut a = RawClient::connect(proxy.addr).await;
    let mut b = RawClient::connect(proxy.addr).await;
    let mut c = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut a, &["MULTI"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut a, &["INCR", "n"]).await, reply(b"+QUEUED\r\n"));
    assert_eq!(call(&mut a, &["EXEC"]).await, reply(b"*1\r\n:1\r\n"));
    assert_eq!(
        call(&mut b, &["SUBSCRIBE", "c"]).await,
        reply(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n")
    );
    // A pipeline on the shared connections: writes that may carry several commands each.
    let pipeline: Vec<u8> =
        (0..20).flat_map(|i| encode_command(&[b"SET", format!("k{i}").as_bytes(), b"v"])).collect();
    send_quietly(&mut c, &pipeline).await;
    for _ in 0..20 {
        assert_eq!(next_reply(&mut c, LIVENESS).await, reply(b"+OK\r\n"));
    }

    let admin = proxy.admin_addr();
    let (status, metrics) =
        crate::support::http::http(admin, "GET", "/metrics", &admin.to_string(), &[]).await;
    assert_eq!(status, 200, "{metrics}");
    let pins = |reason: &str| {
        sample(&metrics, &format!("redis_audit_proxy_upstream_pins_total{{reason=\"{reason}\"}}"))
    };
    assert!(pins("transaction") >= 1.0, "{metrics}");
    // The label docs/pinning.md gives SUBSCRIBE's reason.
    assert!(pins("pubsub") >= 1.0, "{metrics}");
    let writes = sample(&metrics, "redis_audit_proxy_upstream_writes_total");
    let commands = sample(&metrics, "redis_audit_proxy_upstream_write_commands_total");
    assert!(writes > 0.0, "{metrics}");
    assert!(commands >= writes, "{commands} commands in {writes} writes: {metrics}");
    assert!(commands >= 20.0, "the 20 SETs went through shared connections: {metrics}");
    let connections = |state: &str| {
        sample(&metrics, &format!("redis_audit_proxy_upstream_connections{{state=\"{state}\"}}"))
    };
    assert!((1.0..=2.0).contains(&connections("shared")), "{metrics}");
    assert!(connections("pinned") >= 1.0, "B is subscribed: {metrics}");
}

#[test]
fn bad_pool_settings_are_refused_naming_the_key() {
    for (text, key) in [
        ("[upstream]\npool = \"bogus\"\n", "upstream.pool"),
        ("[upstream]\npool = \"shared\"\npool_size = 0\n", "upstream.pool_size"),
    ] {
        let error = Config::from_toml_str(text, "p.toml").expect_err(text).to_string();
        assert!(error.contains(key), "{text:?}: {error:?} does not name {key}");
        assert!(error.contains("p.toml"), "{text:?}: {error:?} does not name the file");
    }
    for text in [
        "[upstream]\npool = \"dedicated\"\n",
        "[upstream]\npool = \"shared\"\n",
        "[upstream]\npool = \"shared\"\npool_size = 1\npool_idle_ms = 500\n",
    ] {
        if let Err(error) = Config::from_toml_str(text, "p.toml") {
            panic!("{text:?} refused: {error}");
        }
    }
}
