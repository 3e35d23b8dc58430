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

mod link;
mod rdb;
mod replica;

pub(crate) use rdb::first_difference;
use rdb::*;
use replica::*;

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

/// [`crate::require!`] for a program of Debian's redis-tools.
macro_rules! require_program {
    ($path:expr) => {
        crate::require!(
            std::path::Path::new($path).exists(),
            $path,
            "`make test` installs it (the Debian package redis-tools)"
        );
    };
}
pub(super) use require_program;

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
