//! `redis-cli --rdb` through the proxy (disk-based `$<len>` and diskless `$EOF:` transfers)
//! writes the RDB a direct dump writes.

use super::*;

/// An RDB file cut into what may differ between two dumps of the same data (the values of
/// `ctime`, `used-mem` and `repl-offset`, and so the checksum) and what may not.
#[derive(Debug)]
pub(super) struct RdbParts {
    /// `REDIS0010`.
    pub(super) header: Vec<u8>,
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

/// `redis-cli --rdb` through the proxy against a primary started with `primary_args`: exits 0,
/// writes a valid RDB equal to the direct dump (up to ctime/used-mem/repl-offset), loadable.
async fn rdb_through_the_proxy_equals_the_direct_dump(primary_args: &[&str]) {
    require_program!(REDIS_CLI);
    require_program!(REDIS_CHECK_RDB);
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
pub(super) fn summary(records: &[CommandRecord]) -> String {
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
