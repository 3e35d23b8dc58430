//! A real replica whose primary is the proxy: the RDB, then the replication stream one way and
//! `REPLCONF ACK` the other.

use super::*;

/// A primary with [`populate`]d data, the proxy in front of it, and a replica of the proxy that
/// has completed its first sync (all bounded by [`SYNC_TIMEOUT`]).
pub(super) struct ReplicaSetup {
    pub(super) primary: RedisServer,
    pub(super) proxy: TestProxy,
    pub(super) replica: RedisServer,
    pub(super) big: Vec<u8>,
    _scratch: Scratch,
}

pub(super) async fn replica_of_the_proxy(primary_args: &[&str]) -> ReplicaSetup {
    let scratch = Scratch::new("repl-replica");
    let primary_dir = scratch.path().join("primary");
    let replica_dir = scratch.path().join("replica");
    std::fs::create_dir_all(&primary_dir).unwrap();
    std::fs::create_dir_all(&replica_dir).unwrap();
    let mut args = vec!["--dir", primary_dir.to_str().unwrap()];
    args.extend_from_slice(primary_args);
    let primary = RedisServer::start(&args);
    let big = populate(primary.addr).await;
    let proxy = TestProxy::start(primary.addr).await;
    let proxy_port = proxy.addr.port().to_string();
    let replica = RedisServer::start(&[
        "--dir",
        replica_dir.to_str().unwrap(),
        "--replicaof",
        "127.0.0.1",
        &proxy_port,
    ]);

    let mut p = RawClient::connect(primary.addr).await;
    let mut r = RawClient::connect(replica.addr).await;
    let deadline = Instant::now() + SYNC_TIMEOUT;
    loop {
        let replica_info = info(&mut r, "replication").await;
        let link_up = field(&replica_info, "master_link_status") == Some("up");
        if link_up && dbsize(&mut r).await == dbsize(&mut p).await {
            assert_eq!(field(&replica_info, "master_port"), Some(proxy_port.as_str()));
            break;
        }
        if Instant::now() >= deadline {
            let primary_info = info(&mut p, "replication").await;
            panic!(
                "the replica did not sync through the proxy within {SYNC_TIMEOUT:?}.\n\
                 replica INFO replication:\n{replica_info}\nprimary INFO replication:\n\
                 {primary_info}\nproxy records: {}",
                summary(&proxy.sink.records())
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ReplicaSetup { primary, proxy, replica, big, _scratch: scratch }
}

/// `MGET` of `keys` on both servers: the same bytes.
async fn assert_same_values(p: &mut RawClient, r: &mut RawClient, keys: &[String], what: &str) {
    for chunk in keys.chunks(500) {
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(chunk.iter().map(|k| k.as_bytes()));
        let on_primary = p.call(&args).await;
        let on_replica = r.call(&args).await;
        assert!(
            on_primary == on_replica,
            "{what}: values differ between the primary and the replica: {}",
            first_difference(&on_primary, &on_replica)
        );
    }
}

async fn a_replica_of_the_proxy_syncs_and_stays_in_sync(primary_args: &[&str]) {
    let setup = replica_of_the_proxy(primary_args).await;
    let mut p = RawClient::connect(setup.primary.addr).await;
    let mut r = RawClient::connect(setup.replica.addr).await;

    // The first sync carried every value.
    let initial: Vec<String> = (0..KEYS).map(|i| format!("key:{i}")).collect();
    assert_same_values(&mut p, &mut r, &initial, "after the first sync").await;
    let got = r.call(&[b"GET", b"big"]).await;
    let mut want = format!("${BIG_LEN}\r\n").into_bytes();
    want.extend_from_slice(&setup.big);
    want.extend_from_slice(b"\r\n");
    assert!(got == want, "the big value on the replica: {}", first_difference(&got, &want));
    assert_eq!(
        r.call(&[b"HGETALL", b"hash"]).await,
        p.call(&[b"HGETALL", b"hash"]).await,
        "hash on the replica"
    );

    // Three seconds of writes to the primary (directly): the link stays up all along.
    let mut written: Vec<String> = Vec::new();
    let mut increments = 0u64;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let mut batch = Vec::new();
        for _ in 0..50 {
            let n = written.len();
            let key = format!("w:{n}");
            batch.extend(encode_command(&[b"SET", key.as_bytes(), format!("{n}").as_bytes()]));
            batch.extend(encode_command(&[b"INCR", b"counter"]));
            written.push(key);
            increments += 1;
        }
        p.send(&batch).await;
        for _ in 0..100 {
            let reply = p.read_reply().await;
            assert!(matches!(reply.first(), Some(b'+' | b':')), "write: {}", show(&reply));
        }
        let replica_info = info(&mut r, "replication").await;
        assert_eq!(
            field(&replica_info, "master_link_status"),
            Some("up"),
            "the replica's link went down while the primary was written to:\n{replica_info}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // It catches up with every write.
    let want_counter = format!("${}\r\n{increments}\r\n", increments.to_string().len());
    let deadline = Instant::now() + SYNC_TIMEOUT;
    loop {
        let counter = r.call(&[b"GET", b"counter"]).await;
        if counter == want_counter.as_bytes() && dbsize(&mut r).await == dbsize(&mut p).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica did not catch up within {SYNC_TIMEOUT:?}: counter {} (want {increments}), \
             replica INFO replication:\n{}",
            show(&counter),
            info(&mut r, "replication").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_same_values(&mut p, &mut r, &written, "after three seconds of writes").await;

    // REPLCONF ACK flows back through the proxy: the primary sees the replica online, at its
    // own offset, and the acknowledged offset advances with new writes.
    let acked = wait_for_ack(&mut p, None).await;
    for i in 0..100 {
        let key = format!("late:{i}");
        assert_eq!(p.call(&[b"SET", key.as_bytes(), b"v"]).await, b"+OK\r\n");
    }
    let later = wait_for_ack(&mut p, Some(acked)).await;
    assert!(later > acked, "the acknowledged offset did not advance: {acked} then {later}");

    // Still the one link: one full sync, no reconnection, no partial resync.
    let stats = info(&mut p, "stats").await;
    assert_eq!(field(&stats, "sync_full"), Some("1"), "full syncs on the primary:\n{stats}");
    assert_eq!(field(&stats, "sync_partial_ok"), Some("0"), "partial resyncs:\n{stats}");
    let replica_info = info(&mut r, "replication").await;
    assert_eq!(field(&replica_info, "master_link_status"), Some("up"), "{replica_info}");
    let late: Vec<String> = (0..100).map(|i| format!("late:{i}")).collect();
    assert_same_values(&mut p, &mut r, &late, "after the acknowledged writes").await;
}

/// Waits until the primary reports its replica `online` with an acknowledged offset equal to
/// its own `master_repl_offset` (and above `after`); returns that offset.
async fn wait_for_ack(p: &mut RawClient, after: Option<u64>) -> u64 {
    let deadline = Instant::now() + SYNC_TIMEOUT;
    loop {
        let text = info(p, "replication").await;
        let replica = slave0(&text);
        let master_offset: u64 =
            field(&text, "master_repl_offset").and_then(|o| o.parse().ok()).unwrap_or(0);
        let acked: Option<u64> = replica.get("offset").and_then(|o| o.parse().ok());
        let online = replica.get("state").map(String::as_str) == Some("online");
        if let Some(acked) = acked {
            if online && acked == master_offset && after.is_none_or(|a| acked > a) {
                return acked;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the primary never saw the replica online with an up-to-date REPLCONF ACK within \
             {SYNC_TIMEOUT:?} (after {after:?}):\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_of_the_proxy_syncs_and_stays_in_sync_with_disk_based_replication() {
    crate::require_redis!();
    // `+FULLRESYNC <replid> <offset>\r\n`, then `$<len>\r\n<rdb>` with no CRLF after it, then
    // the replication stream.
    a_replica_of_the_proxy_syncs_and_stays_in_sync(&["--repl-diskless-sync", "no"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_of_the_proxy_syncs_and_stays_in_sync_with_diskless_replication() {
    crate::require_redis!();
    // One second of "\n" keep-alives after `+FULLRESYNC ...\r\n`, then `$EOF:<40>\r\n...<40>`.
    a_replica_of_the_proxy_syncs_and_stays_in_sync(&[
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "1",
    ])
    .await;
}
