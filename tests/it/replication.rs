//! Replication through the proxy: `redis-cli --rdb` (disk-based `$<len>` and diskless `$EOF:`
//! transfers), a real replica whose primary is the proxy (the RDB, then the replication stream one
//! way and `REPLCONF ACK` the other), the records of a replica's connection, and a replication
//! link that tries to carry other commands.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use redis_audit_proxy::event::CommandRecord;

use crate::support::client::{encode_command, show};
use crate::support::rng::Rng;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

const REDIS_CLI: &str = "/usr/bin/redis-cli";
const REDIS_CHECK_RDB: &str = "/usr/bin/redis-check-rdb";

/// How long any wait for replication may take before the test fails.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);
/// Small string keys written before a dump or a sync.
const KEYS: usize = 300;
/// One value this large (incompressible), so that the RDB payload spans many reads.
const BIG_LEN: usize = 4 << 20;
/// Keys [`populate`] writes: the strings, a hash, a list, a sorted set and the big value.
const POPULATED: usize = KEYS + 4;

/// Fails the test (never skips it) when a program it needs is not installed.
fn require_program(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is not installed: run `make test` (it installs the Debian package redis-tools), \
         or `apt-get install redis-tools`"
    );
}

/// The value [`populate`] gives `key:{i}`.
fn small_value(i: usize) -> String {
    format!("value-{i}-{}", "x".repeat(i % 50))
}

/// Writes [`POPULATED`] keys to `addr` (directly): `key:0..KEYS`, `hash`, `list`, `zset`, `big`.
async fn populate(addr: SocketAddr) -> Vec<u8> {
    let mut client = RawClient::connect(addr).await;
    let mut batch = Vec::new();
    for i in 0..KEYS {
        let key = format!("key:{i}");
        batch.extend(encode_command(&[b"SET", key.as_bytes(), small_value(i).as_bytes()]));
    }
    batch.extend(encode_command(&[b"HSET", b"hash", b"f1", b"v1", b"f2", b"v2"]));
    batch.extend(encode_command(&[b"RPUSH", b"list", b"a", b"b", b"c"]));
    batch.extend(encode_command(&[b"ZADD", b"zset", b"1", b"a", b"2.5", b"b"]));
    client.send(&batch).await;
    for n in 0..KEYS + 3 {
        let reply = client.read_reply().await;
        assert!(matches!(reply.first(), Some(b'+' | b':')), "populate reply {n}: {}", show(&reply));
    }
    // Random bytes LZF cannot compress, so the RDB really carries `BIG_LEN` bytes.
    let big = Rng::new(0x9e37_79b9_7f4a_7c15).fill(BIG_LEN);
    assert_eq!(client.call(&[b"SET", b"big", &big]).await, b"+OK\r\n", "SET big");
    assert_eq!(client.call(&[b"DBSIZE"]).await, format!(":{POPULATED}\r\n").as_bytes());
    big
}

/// Runs `program` with `args`; fails the test when it has not exited within `limit`.
async fn run(program: &str, args: &[&str], limit: Duration) -> Output {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish within {limit:?}"))
        .expect("wait for the program")
}

/// `redis-cli -h 127.0.0.1 -p <port> --rdb <path>`.
async fn dump_rdb(addr: SocketAddr, path: &Path) -> Output {
    let port = addr.port().to_string();
    let path = path.to_str().expect("UTF-8 scratch path");
    run(REDIS_CLI, &["-h", "127.0.0.1", "-p", &port, "--rdb", path], Duration::from_secs(60)).await
}

fn describe(output: &Output) -> String {
    format!(
        "exit {}; stdout: {}; stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// An RDB file cut into what may differ between two dumps of the same data (the values of
/// `ctime`, `used-mem` and `repl-offset`, and so the checksum) and what may not.
#[derive(Debug)]
struct RdbParts {
    /// `REDIS0010`.
    header: Vec<u8>,
    /// Auxiliary fields (opcode 0xFA), integers shown in decimal.
    aux: Vec<(String, String)>,
    /// Everything after the auxiliary fields up to the 8-byte checksum.
    body_start: usize,
}

/// Aux fields whose values change from one dump of unchanged data to the next.
const VOLATILE_AUX: [&str; 3] = ["ctime", "used-mem", "repl-offset"];

/// Reads one RDB string (length-prefixed, or an integer encoding) at `*pos`.
fn rdb_string(bytes: &[u8], pos: &mut usize, what: &str) -> String {
    let at = |i: usize| -> u8 {
        *bytes.get(i).unwrap_or_else(|| panic!("{what}: RDB ends inside its aux fields"))
    };
    let first = at(*pos);
    *pos += 1;
    let len = match first >> 6 {
        0 => usize::from(first & 0x3f),
        1 => {
            let len = (usize::from(first & 0x3f) << 8) | usize::from(at(*pos));
            *pos += 1;
            len
        }
        2 => {
            let width = if first == 0x80 { 4 } else { 8 };
            let mut len = 0usize;
            for _ in 0..width {
                len = (len << 8) | usize::from(at(*pos));
                *pos += 1;
            }
            len
        }
        _ => {
            let width = match first & 0x3f {
                0 => 1,
                1 => 2,
                2 => 4,
                other => panic!("{what}: unexpected string encoding {other} in an aux field"),
            };
            let mut raw = [0u8; 8];
            for (i, slot) in raw.iter_mut().take(width).enumerate() {
                *slot = at(*pos + i);
            }
            // Little-endian, sign-extended.
            if raw[width - 1] & 0x80 != 0 {
                raw[width..].fill(0xff);
            }
            *pos += width;
            return i64::from_le_bytes(raw).to_string();
        }
    };
    let end = *pos + len;
    assert!(end <= bytes.len(), "{what}: RDB ends inside an aux string");
    let text = String::from_utf8_lossy(&bytes[*pos..end]).into_owned();
    *pos = end;
    text
}

fn rdb_parts(bytes: &[u8], what: &str) -> RdbParts {
    assert!(
        bytes.len() > 9 + 8 && bytes.starts_with(b"REDIS"),
        "{what}: not an RDB file ({} bytes, starting {})",
        bytes.len(),
        show(&bytes[..bytes.len().min(64)])
    );
    let mut pos = 9;
    let mut aux = Vec::new();
    while bytes.get(pos) == Some(&0xfa) {
        pos += 1;
        let key = rdb_string(bytes, &mut pos, what);
        let value = rdb_string(bytes, &mut pos, what);
        aux.push((key, value));
    }
    RdbParts { header: bytes[..9].to_vec(), aux, body_start: pos }
}

/// Where two byte strings first differ, for messages.
pub(crate) fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(at) => format!(
            "first difference at byte {at}: {} vs {}",
            show(&a[at..a.len().min(at + 32)]),
            show(&b[at..b.len().min(at + 32)])
        ),
        None => format!("one is a prefix of the other ({} vs {} bytes)", a.len(), b.len()),
    }
}

/// Asserts that `proxied` is the RDB `direct` is, up to the aux values that change by themselves.
fn assert_same_rdb(proxied: &[u8], direct: &[u8]) {
    let p = rdb_parts(proxied, "the RDB through the proxy");
    let d = rdb_parts(direct, "the RDB from Redis directly");
    assert_eq!(p.header, d.header, "RDB version");
    let keys = |parts: &RdbParts| parts.aux.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&p), keys(&d), "aux fields: {:?} vs {:?}", p.aux, d.aux);
    for ((key, pv), (_, dv)) in p.aux.iter().zip(&d.aux) {
        if !VOLATILE_AUX.contains(&key.as_str()) {
            assert_eq!(pv, dv, "aux field {key}");
        }
    }
    assert_eq!(
        proxied.len(),
        direct.len(),
        "the RDB through the proxy has {} bytes, the direct one {}: {}",
        proxied.len(),
        direct.len(),
        first_difference(proxied, direct)
    );
    let p_body = &proxied[p.body_start..proxied.len() - 8];
    let d_body = &direct[d.body_start..direct.len() - 8];
    assert!(
        p_body == d_body,
        "the RDB data through the proxy differs from the direct one: {}",
        first_difference(p_body, d_body)
    );
}

/// The text of a bulk-string reply.
fn bulk_text(reply: &[u8]) -> String {
    assert!(reply.starts_with(b"$"), "expected a bulk string, got {}", show(reply));
    let start = reply.windows(2).position(|w| w == b"\r\n").expect("a header line") + 2;
    String::from_utf8_lossy(&reply[start..reply.len() - 2]).into_owned()
}

/// `INFO <section>` as text.
async fn info(client: &mut RawClient, section: &str) -> String {
    bulk_text(&client.call(&[b"INFO", section.as_bytes()]).await)
}

/// The value of `name:` in INFO text.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

/// The primary's `slave0:ip=..,port=..,state=..,offset=..,lag=..` line as a map.
fn slave0(info: &str) -> BTreeMap<String, String> {
    field(info, "slave0")
        .unwrap_or_default()
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn dbsize(client: &mut RawClient) -> Vec<u8> {
    client.call(&[b"DBSIZE"]).await
}

/// Polls DBSIZE on a server loading an RDB until it answers (not `-LOADING`).
async fn dbsize_after_loading(client: &mut RawClient) -> Vec<u8> {
    let deadline = Instant::now() + SYNC_TIMEOUT;
    loop {
        let reply = dbsize(client).await;
        if !reply.starts_with(b"-LOADING") {
            return reply;
        }
        assert!(Instant::now() < deadline, "still loading after {SYNC_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- 1. redis-cli --rdb -------------------------------------------------------------------------

/// `redis-cli --rdb` through the proxy against a primary started with `primary_args`: exits 0,
/// writes a valid RDB equal to the direct dump (up to ctime/used-mem/repl-offset), loadable.
async fn rdb_through_the_proxy_equals_the_direct_dump(primary_args: &[&str]) {
    require_program(REDIS_CLI);
    require_program(REDIS_CHECK_RDB);
    let scratch = Scratch::new("repl-rdb");
    std::fs::create_dir_all(scratch.path()).unwrap();
    let dir = scratch.path().join("primary");
    std::fs::create_dir_all(&dir).unwrap();
    let mut args = vec!["--dir", dir.to_str().unwrap()];
    args.extend_from_slice(primary_args);
    let redis = RedisServer::start(&args);
    let big = populate(redis.addr).await;
    let proxy = TestProxy::start(redis.addr).await;

    let direct_path = scratch.path().join("direct.rdb");
    let direct = dump_rdb(redis.addr, &direct_path).await;
    assert!(
        direct.status.success(),
        "redis-cli --rdb against Redis directly: {}",
        describe(&direct)
    );

    let proxied_path = scratch.path().join("proxied.rdb");
    let proxied = dump_rdb(proxy.addr, &proxied_path).await;
    assert!(
        proxied.status.success(),
        "redis-cli --rdb through the proxy failed: {}",
        describe(&proxied)
    );
    let proxied_bytes = std::fs::read(&proxied_path).expect("redis-cli wrote the RDB file");
    let direct_bytes = std::fs::read(&direct_path).expect("redis-cli wrote the direct RDB file");
    assert!(
        direct_bytes.len() > BIG_LEN,
        "the direct RDB has {} bytes, less than the big value",
        direct_bytes.len()
    );
    assert_same_rdb(&proxied_bytes, &direct_bytes);

    // Valid: redis-check-rdb accepts it (checksum included), and a fresh Redis loads it.
    let check =
        run(REDIS_CHECK_RDB, &[proxied_path.to_str().unwrap()], Duration::from_secs(30)).await;
    assert!(check.status.success(), "redis-check-rdb on the proxied RDB: {}", describe(&check));
    let loaded = RedisServer::start(&[
        "--dir",
        scratch.path().to_str().unwrap(),
        "--dbfilename",
        "proxied.rdb",
    ]);
    let mut client = RawClient::connect(loaded.addr).await;
    assert_eq!(
        show(&dbsize_after_loading(&mut client).await),
        show(format!(":{POPULATED}\r\n").as_bytes()),
        "keys in a Redis loaded from the proxied RDB"
    );
    let got = client.call(&[b"GET", b"big"]).await;
    let mut want = format!("${BIG_LEN}\r\n").into_bytes();
    want.extend_from_slice(&big);
    want.extend_from_slice(b"\r\n");
    assert!(
        got == want,
        "the big value loaded from the proxied RDB: {}",
        first_difference(&got, &want)
    );
    let key = format!("${}\r\n{}\r\n", small_value(7).len(), small_value(7));
    assert_eq!(show(&client.call(&[b"GET", b"key:7"]).await), show(key.as_bytes()));
    assert_eq!(
        client.call(&[b"LRANGE", b"list", b"0", b"-1"]).await,
        b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
    );

    // The proxy recorded redis-cli's SYNC (loose: only that some record names it).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let records = proxy.sink.records();
        if records.iter().any(|r| r.command_name().eq_ignore_ascii_case("sync")) {
            break;
        }
        assert!(Instant::now() < deadline, "no record of redis-cli's SYNC: {}", summary(&records));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_rdb_through_the_proxy_writes_the_direct_rdb_with_disk_based_replication() {
    crate::require_redis!();
    // Redis 7.0's default is diskless: disk-based must be asked for. The save delay (10 ms per
    // key, about 3 s) makes Redis send its one-a-second "\n" keep-alives before `$<len>\r\n`.
    rdb_through_the_proxy_equals_the_direct_dump(&[
        "--repl-diskless-sync",
        "no",
        "--rdb-key-save-delay",
        "10000",
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_rdb_through_the_proxy_writes_the_direct_rdb_with_diskless_replication() {
    crate::require_redis!();
    // The payload comes as `$EOF:<40 random chars>\r\n<rdb><the same 40 chars>`.
    rdb_through_the_proxy_equals_the_direct_dump(&[
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ])
    .await;
}

/// Records for messages: connection, first words, status and source of at most the last 24.
fn summary(records: &[CommandRecord]) -> String {
    let skip = records.len().saturating_sub(24);
    let lines: Vec<String> = records[skip..]
        .iter()
        .map(|r| {
            let args: Vec<String> =
                r.args.iter().take(2).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            format!("#{} {} ({}, {:?})", r.conn_id, args.join(" "), r.status.as_str(), r.source)
        })
        .collect();
    let which = if skip > 0 { ", the last 24" } else { "" };
    format!("{} records{which}: [{}]", records.len(), lines.join(", "))
}

// --- 2. A replica whose primary is the proxy ----------------------------------------------------

/// A primary with [`populate`]d data, the proxy in front of it, and a replica of the proxy that
/// has completed its first sync (all bounded by [`SYNC_TIMEOUT`]).
struct ReplicaSetup {
    primary: RedisServer,
    proxy: TestProxy,
    replica: RedisServer,
    big: Vec<u8>,
    _scratch: Scratch,
}

async fn replica_of_the_proxy(primary_args: &[&str]) -> ReplicaSetup {
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

// --- 3. Records of a replica's connection -------------------------------------------------------

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

// --- 4. A replication link carries nothing else -------------------------------------------------

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
