//! The records of a replica's connection, and a replication link that tries to carry other
//! commands.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas_psync_is_recorded_and_the_replication_stream_is_not() {
    crate::require_redis!();
    let setup =
        replica_of_the_proxy(&["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"])
            .await;
    let mut p = RawClient::connect(setup.primary.addr).await;
    let mut r = RawClient::connect(setup.replica.addr).await;

    // 1,000 writes to the primary, directly: the proxy sees them only as replication stream.
    let mut batch = Vec::new();
    for i in 0..1000 {
        let key = format!("stream:{i}");
        batch.extend(encode_command(&[b"SET", key.as_bytes(), b"v"]));
    }
    p.send(&batch).await;
    for _ in 0..1000 {
        assert_eq!(p.read_reply().await, b"+OK\r\n");
    }
    let want = format!(":{}\r\n", POPULATED + 1000);
    let deadline = Instant::now() + SYNC_TIMEOUT;
    while dbsize(&mut r).await != want.as_bytes() {
        assert!(Instant::now() < deadline, "the replica did not receive the 1,000 writes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let REPLCONF ACKs come and go (one a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let is = |record: &CommandRecord, name: &str| {
        record.args.first().is_some_and(|a| a.eq_ignore_ascii_case(name.as_bytes()))
    };
    let records = setup.proxy.sink.records();
    let streamed: Vec<_> = records.iter().filter(|r| is(r, "set") || is(r, "select")).collect();
    assert!(
        streamed.is_empty(),
        "the replication stream was recorded as commands of the replica ({} SET/SELECT \
         records): {}",
        streamed.len(),
        summary(&records)
    );
    let own: Vec<_> = records
        .iter()
        .filter(|r| {
            !(is(r, "replconf") && r.args.get(1).is_some_and(|a| a.eq_ignore_ascii_case(b"ack")))
        })
        .cloned()
        .collect();
    assert!(
        own.len() < 20,
        "{} records (REPLCONF ACKs aside) after 1,000 writes to the primary: {}",
        own.len(),
        summary(&own)
    );

    // The PSYNC (or SYNC) is recorded: now, or at the latest when the replica lets go.
    let has_sync =
        |records: &[CommandRecord]| records.iter().any(|r| is(r, "psync") || is(r, "sync"));
    if !has_sync(&setup.proxy.sink.records()) {
        assert_eq!(r.call(&[b"REPLICAOF", b"NO", b"ONE"]).await, b"+OK\r\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !has_sync(&setup.proxy.sink.records()) {
            assert!(
                Instant::now() < deadline,
                "no SYNC/PSYNC record, even after the replica let go: {}",
                summary(&setup.proxy.sink.records())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let records = setup.proxy.sink.records();
    assert!(!records.iter().any(|r| is(r, "set")), "{}", summary(&records));
}

// --- A replication link carries nothing else ---------------------------------------------------

/// Sends SYNC on `client` and reads until the whole RDB payload (`$<len>` form) has come.
async fn sync_and_read_payload(client: &mut RawClient) {
    client.send(b"SYNC\r\n").await;
    loop {
        let start = client.buffer.iter().take_while(|&&b| b == b'\n').count();
        let rest = &client.buffer[start..];
        if let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
            let len: usize = std::str::from_utf8(&rest[1..end]).unwrap().parse().unwrap();
            if rest.len() >= end + 2 + len {
                client.buffer.clear();
                return;
            }
        }
        client.fill().await.expect("the payload");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_link_carries_nothing_but_replconf() {
    crate::require_redis!();
    let primary = RedisServer::start(&["--repl-diskless-sync", "no"]);
    let config_set: &[&[u8]] = &[b"CONFIG", b"SET", b"maxmemory", b"12345678"];
    let maxmemory: &[&[u8]] = &[b"CONFIG", b"GET", b"maxmemory"];
    let mut admin = RawClient::connect(primary.addr).await;

    // Redis itself runs a command that does not touch the keyspace from a replica.
    let mut direct = RawClient::connect(primary.addr).await;
    sync_and_read_payload(&mut direct).await;
    direct.send(&encode_command(config_set)).await;
    let deadline = Instant::now() + SYNC_TIMEOUT;
    while !admin.call(maxmemory).await.ends_with(b"12345678\r\n") {
        assert!(Instant::now() < deadline, "Redis never ran the replica's CONFIG SET");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(direct);
    assert_eq!(admin.call(&[b"CONFIG", b"SET", b"maxmemory", b"0"]).await, b"+OK\r\n");

    // Through the proxy, the link is closed instead.
    let proxy = TestProxy::start(primary.addr).await;
    let mut replica = RawClient::connect(proxy.addr).await;
    sync_and_read_payload(&mut replica).await;
    replica.send(b"*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$1\r\n0\r\n").await;
    replica.send(&encode_command(config_set)).await;
    let _ = replica.read_to_close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(admin.call(maxmemory).await, b"*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n");
    proxy.shutdown().await;
}
