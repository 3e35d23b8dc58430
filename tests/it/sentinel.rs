//! `upstream.sentinels`: a real primary, a real replica and a real Sentinel. The proxy connects
//! to the primary Sentinel names; after a failover new clients reach the new primary, and the
//! clients of the old one are closed as Redis closes a direct client's connection.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::require_redis;
use crate::support::client::show;
use crate::support::redis::free_port;
use crate::support::scratch::trail;
use crate::support::{KillOnDrop, RawClient, RedisServer, Scratch, TestProxy};

/// A Sentinel (`redis-server --sentinel`) monitoring `primary` as `mymaster`, quorum 1.
fn start_sentinel(scratch: &Scratch, primary: SocketAddr) -> (KillOnDrop, SocketAddr) {
    let port = free_port();
    std::fs::create_dir_all(scratch.path()).unwrap();
    let conf = scratch.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor mymaster 127.0.0.1 {primary_port} 1\n\
             sentinel down-after-milliseconds mymaster 1000\n\
             sentinel failover-timeout mymaster 10000\n",
            dir = scratch.path().display(),
            primary_port = primary.port(),
        ),
    )
    .unwrap();
    let child = Command::new("redis-server")
        .arg(&conf)
        .args(["--sentinel", "--loglevel", "warning", "--logfile", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server --sentinel");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "sentinel on {addr} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (KillOnDrop(child), addr)
}

/// Polls `check` every 100 ms until it holds (panics with `what` after `secs`).
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PINGs on `stream`: false once the server closed it.
async fn still_open(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut reply)).await;
    !matches!(read, Ok(Ok(0) | Err(_)))
}

/// Waits until the sentinel knows `replica` and finds it up: it learns replicas from the
/// primary's INFO (at once, then every 10 s).
async fn sees_the_replica(sentinel: &mut RawClient, replica: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replicas = sentinel.call(&[b"SENTINEL", b"REPLICAS", b"mymaster"]).await;
        let text = String::from_utf8_lossy(&replicas).into_owned();
        if text.contains(&replica.port().to_string()) && !text.contains("s_down") {
            return;
        }
        assert!(Instant::now() < deadline, "the sentinel did not see the replica: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn port_of(client: &mut RawClient) -> Vec<u8> {
    client.call(&[b"CONFIG", b"GET", b"port"]).await
}

#[tokio::test]
async fn after_a_failover_new_clients_reach_the_new_primary_and_old_ones_close_as_redis_closes_them(
) {
    require_redis!();
    let primary = RedisServer::start(&[]);
    let replica_of = format!("127.0.0.1 {}", primary.addr.port());
    let replica = RedisServer::start(&["--replicaof", &replica_of]);
    let scratch = Scratch::new("sentinel");
    let (_sentinel, sentinel_addr) = start_sentinel(&scratch, primary.addr);
    let mut sentinel = RawClient::connect(sentinel_addr).await;
    sees_the_replica(&mut sentinel, replica.addr).await;

    // `upstream.address` names no server: the proxy goes where the sentinel says.
    let audit = Scratch::new("sentinel-audit");
    let toml = format!(
        "[upstream]\nsentinels = [\"{sentinel_addr}\"]\nmaster_name = \"mymaster\"\n\
         sentinel_check_interval_ms = 200\n"
    );
    let unused = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (proxy, sink) = TestProxy::start_audited(unused, audit.path(), &toml).await;
    let mut before = RawClient::connect(proxy.addr).await;
    let primary_port =
        format!("${}\r\n{}\r\n", primary.addr.port().to_string().len(), primary.addr.port());
    assert!(port_of(&mut before).await.ends_with(primary_port.as_bytes()));
    assert_eq!(before.call(&[b"SET", b"written", b"before"]).await, b"+OK\r\n");
    let mut direct = tokio::net::TcpStream::connect(primary.addr).await.unwrap();

    // Until the sentinel has fresh facts about the replica it finds no good one: retry.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let failover = sentinel.call(&[b"SENTINEL", b"FAILOVER", b"mymaster"]).await;
        if failover == b"+OK\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "SENTINEL FAILOVER: {}", show(&failover));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Redis closes a direct client of the demoted primary (Sentinel kills its clients); the
    // proxy closes its client too.
    let closed = tokio::time::timeout(Duration::from_secs(30), before.read_to_close()).await;
    assert!(closed.is_ok(), "the proxy's client of the old primary was not closed");
    // Sentinel turns the old primary into a replica once it sees it still claims to be one
    // (its INFO period), and kills its clients then.
    let deadline = Instant::now() + Duration::from_secs(30);
    while still_open(&mut direct).await {
        assert!(Instant::now() < deadline, "the direct client of the old primary was not closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let replica_port =
        format!("${}\r\n{}\r\n", replica.addr.port().to_string().len(), replica.addr.port());
    let proxy_addr = proxy.addr;
    eventually(30, "a new client reaches the new primary", || {
        let replica_port = replica_port.clone();
        async move {
            let mut after = RawClient::connect(proxy_addr).await;
            port_of(&mut after).await.ends_with(replica_port.as_bytes())
                && after.call(&[b"SET", b"written", b"after"]).await == b"+OK\r\n"
        }
    })
    .await;
    let mut check = RawClient::connect(replica.addr).await;
    assert_eq!(check.call(&[b"GET", b"written"]).await, b"$5\r\nafter\r\n");

    sink.sync();
    let switches: Vec<_> = trail(audit.path())
        .into_iter()
        .filter(|line| line["kind"] == "system" && line["action"] == "primary_switch")
        .collect();
    assert_eq!(switches.len(), 1, "{switches:?}");
    assert_eq!(switches[0]["to"], format!("127.0.0.1:{}", replica.addr.port()));
    assert_eq!(switches[0]["from"], format!("127.0.0.1:{}", primary.addr.port()));
    // The proxy closed its client when the primary moved (before Sentinel got round to killing
    // the old primary's clients).
    let moved = trail(audit.path()).into_iter().filter(|l| l["close"]["reason"] == "primary_moved");
    assert_eq!(moved.count(), 1);
    proxy.shutdown().await;
}

/// The primary dies while a client writes through the proxy, reconnecting when its connection
/// closes (as a client of Redis does): Sentinel promotes the replica, the proxy follows, and the
/// client's writes go on to the new primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_replaced_and_a_writing_client_recovers_through_the_proxy() {
    require_redis!();
    let mut primary = RedisServer::start(&[]);
    let replica_of = format!("127.0.0.1 {}", primary.addr.port());
    let replica = RedisServer::start(&["--replicaof", &replica_of]);
    let scratch = Scratch::new("sentinel-kill");
    let (_sentinel, sentinel_addr) = start_sentinel(&scratch, primary.addr);
    let mut sentinel = RawClient::connect(sentinel_addr).await;
    sees_the_replica(&mut sentinel, replica.addr).await;
    let toml = format!(
        "[upstream]\nsentinels = [\"{sentinel_addr}\"]\nmaster_name = \"mymaster\"\n\
         sentinel_check_interval_ms = 200\nreconnect_interval_ms = 100\n"
    );
    let proxy = TestProxy::start_with(primary.addr, &toml).await;

    // A client that INCRs, and reconnects whenever its connection goes or Redis refuses.
    let proxy_addr = proxy.addr;
    let writer = tokio::spawn(async move {
        let (mut written, mut failures) = (0u32, 0u32);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut client = tokio::net::TcpStream::connect(proxy_addr).await.unwrap();
        // Until 200 writes reached the new primary after the failover (the test kills the old
        // one after 50).
        while written < 250 && Instant::now() < deadline {
            match incr(&mut client).await {
                Some(reply) if reply.starts_with(b":") => written += 1,
                _ => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Ok(stream) = tokio::net::TcpStream::connect(proxy_addr).await {
                        client = stream;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (written, failures)
    });
    // Once writes are flowing, the primary dies.
    let mut check = RawClient::connect(primary.addr).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while check.call(&[b"GET", b"counter"]).await == b"$-1\r\n" {
        assert!(Instant::now() < deadline, "no write reached the primary");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(check);
    tokio::time::sleep(Duration::from_millis(500)).await;
    primary.kill();

    let (written, failures) = writer.await.expect("the writer");
    assert_eq!(written, 250, "the client recovered and went on writing ({failures} failures)");
    assert!(failures > 0, "the client saw the primary go, as a client of Redis would");
    // The new primary holds the counter, and counts the writes made after the failover too.
    let mut new_primary = RawClient::connect(replica.addr).await;
    let role = new_primary.call(&[b"ROLE"]).await;
    assert!(role.starts_with(b"*3\r\n$6\r\nmaster"), "{}", String::from_utf8_lossy(&role));
    let value =
        String::from_utf8_lossy(&new_primary.call(&[b"GET", b"counter"]).await).into_owned();
    let value: u32 = value.lines().nth(1).unwrap().parse().unwrap();
    assert!(value >= 200, "the new primary counted {value} of 250 writes");
    proxy.shutdown().await;
}

/// One `INCR counter` on `stream`; `None` when the connection is gone.
async fn incr(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n").await.ok()?;
    let mut reply = vec![0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut reply)).await;
    match read {
        Ok(Ok(n)) if n > 0 => Some(reply[..n].to_vec()),
        _ => None,
    }
}

/// A proxy in front of a sentinel: `SENTINEL SET ... auth-pass` is recorded with the secret
/// redacted, and the sentinel answers through it as it does directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_commands_through_the_proxy_are_recorded_with_secrets_redacted() {
    require_redis!();
    let primary = RedisServer::start(&[]);
    let scratch = Scratch::new("sentinel-commands");
    let (_sentinel, sentinel_addr) = start_sentinel(&scratch, primary.addr);
    let audit = Scratch::new("sentinel-commands-audit");
    let toml = "[audit]\ncapture_args = true\n";
    let (proxy, sink) = TestProxy::start_audited(sentinel_addr, audit.path(), toml).await;
    let mut direct = RawClient::connect(sentinel_addr).await;
    let mut through = RawClient::connect(proxy.addr).await;
    let ask = [&b"SENTINEL"[..], b"GET-MASTER-ADDR-BY-NAME", b"mymaster"];
    assert_eq!(through.call(&ask).await, direct.call(&ask).await);
    let set = [&b"SENTINEL"[..], b"SET", b"mymaster", b"auth-pass", b"hunter2-secret"];
    assert_eq!(through.call(&set).await, b"+OK\r\n");
    sink.sync();
    let lines = trail(audit.path());
    let recorded = lines
        .iter()
        .find(|l| {
            l["command"]["name"].as_str().is_some_and(|n| n.starts_with("sentinel"))
                && l["args"].to_string().contains("auth-pass")
        })
        .unwrap_or_else(|| panic!("no SENTINEL SET record in {lines:#?}"));
    assert!(recorded["args"].to_string().contains("redacted"), "{recorded}");
    let whole = std::fs::read_to_string(audit.path().join("audit.log")).unwrap();
    assert!(!whole.contains("hunter2-secret"), "the password reached the trail");
    proxy.shutdown().await;
}
