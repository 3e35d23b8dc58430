//! Real client programs through the proxy: redis-cli (arguments, RESP3, an interactive session
//! on stdin, `--pipe` mass insertion) and redis-benchmark (plain and pipelined). Each program
//! runs under tokio::process, so the proxy keeps running on the test's runtime meanwhile.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use redis_audit_proxy::event::ReplyStatus;
use tokio::io::AsyncWriteExt;

use crate::support::client::encode_command;
use crate::support::{RawClient, RedisServer, TestProxy};

pub(crate) const REDIS_CLI: &str = "/usr/bin/redis-cli";
pub(crate) const REDIS_BENCHMARK: &str = "/usr/bin/redis-benchmark";

/// [`crate::require!`] for a program of Debian's redis-tools.
macro_rules! require_program {
    ($program:expr) => {
        crate::require!(
            Path::new($program).exists(),
            $program,
            "`make test` installs it (or `apt-get install redis-tools`)"
        );
    };
}

/// Runs `program` with `args`, feeding it `stdin` (closed afterwards); fails the test when it
/// has not exited within 30 s.
pub(crate) async fn run(program: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_vec();
    // Written from its own task, so that a program filling its stdout cannot deadlock us.
    let feeder = tokio::spawn(async move {
        let _ = pipe.write_all(&input).await;
    });
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish within 30 s"))
        .expect("wait for the program");
    let _ = feeder.await;
    output
}

/// `redis-cli -h 127.0.0.1 -p <port> <args...>`, fed `stdin`.
async fn cli(addr: SocketAddr, args: &[&str], stdin: &[u8]) -> Output {
    let port = addr.port().to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", port.as_str()];
    all.extend_from_slice(args);
    run(REDIS_CLI, &all, stdin).await
}

/// Runs redis-cli and returns its stdout, failing the test on a non-zero exit.
pub(crate) async fn cli_stdout(addr: SocketAddr, args: &[&str]) -> String {
    let output = cli(addr, args, b"").await;
    assert!(
        output.status.success(),
        "redis-cli {args:?} exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("redis-cli prints text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_commands_as_arguments() {
    crate::require_redis!();
    require_program!(REDIS_CLI);
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let p = proxy.addr;

    assert_eq!(cli_stdout(p, &["SET", "greeting", "hello world"]).await, "OK\n");
    assert_eq!(cli_stdout(p, &["GET", "greeting"]).await, "hello world\n");
    assert_eq!(cli_stdout(p, &["INCR", "visits"]).await, "1\n");
    assert_eq!(cli_stdout(p, &["INCR", "visits"]).await, "2\n");
    assert_eq!(cli_stdout(p, &["HSET", "user:1", "name", "ada", "lang", "rust"]).await, "2\n");
    let hgetall = cli_stdout(p, &["--raw", "HGETALL", "user:1"]).await;
    assert_eq!(hgetall, "name\nada\nlang\nrust\n");
    assert_eq!(cli_stdout(p, &["--raw", "GET", "missing"]).await, "\n");
    let error = cli(p, &["--raw", "HGET", "greeting", "f"], b"").await;
    let direct_error = cli(redis.addr, &["--raw", "HGET", "greeting", "f"], b"").await;
    let shown = String::from_utf8_lossy(&error.stdout);
    assert!(shown.starts_with("WRONGTYPE Operation against a key"), "{shown:?}");
    assert_eq!(shown, String::from_utf8_lossy(&direct_error.stdout));

    // Byte for byte what redis-cli prints when talking to Redis directly.
    for args in [&["--raw", "HGETALL", "user:1"][..], &["GET", "greeting"], &["TYPE", "user:1"]] {
        assert_eq!(cli_stdout(p, args).await, cli_stdout(redis.addr, args).await, "{args:?}");
    }

    let records = proxy.sink.wait_for(11).await;
    assert_eq!(records.len(), 11, "one record per redis-cli command: {records:?}");
    let names: Vec<String> = records.iter().take(8).map(|r| r.command_name()).collect();
    assert_eq!(names, ["SET", "GET", "INCR", "INCR", "HSET", "HGETALL", "GET", "HGET"]);
    assert_eq!(records[7].status, ReplyStatus::Error);
    assert_eq!(records[7].error_code.as_deref(), Some(&b"WRONGTYPE"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_resp3() {
    crate::require_redis!();
    require_program!(REDIS_CLI);
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let p = proxy.addr;
    assert_eq!(cli_stdout(p, &["-3", "HSET", "h", "f1", "v1", "f2", "v2"]).await, "2\n");
    assert_eq!(cli_stdout(p, &["-3", "ZADD", "z", "1.5", "a", "2", "b"]).await, "2\n");
    // Maps, arrays of pairs with doubles, nulls, sets: as redis-cli shows them from Redis.
    let commands: [&[&str]; 5] = [
        &["-3", "HGETALL", "h"],
        &["-3", "ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &["-3", "GET", "missing"],
        &["-3", "--raw", "HGETALL", "h"],
        &["-3", "SMEMBERS", "nokey"],
    ];
    for args in commands {
        assert_eq!(cli_stdout(p, args).await, cli_stdout(redis.addr, args).await, "{args:?}");
    }
    assert_eq!(cli_stdout(p, &["-3", "HGETALL", "h"]).await, "f1 v1\nf2 v2\n");
    let records = proxy.sink.records();
    assert!(records.iter().any(|r| r.command_name().eq_ignore_ascii_case("hello")), "{records:?}");
    assert!(records.iter().all(|r| r.status == ReplyStatus::Ok), "{records:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_session_on_stdin() {
    crate::require_redis!();
    require_program!(REDIS_CLI);
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let session =
        b"SET x 5\nINCR x\nGET x\nHSET h name ada\nHGETALL h\nSELECT 2\nSET y 1\nDBSIZE\nPING\n";
    let output = cli(proxy.addr, &[], session).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "OK\n6\n6\n1\nname\nada\nOK\nOK\n1\nPONG\n"
    );
    let records = proxy.sink.wait_for(9).await;
    let script: Vec<(String, u32)> =
        records.iter().map(|r| (r.command_name().to_ascii_uppercase(), r.db)).collect();
    let tail = &script[script.len() - 9..];
    let expected: Vec<(String, u32)> = [
        ("SET", 0),
        ("INCR", 0),
        ("GET", 0),
        ("HSET", 0),
        ("HGETALL", 0),
        ("SELECT", 0),
        ("SET", 2),
        ("DBSIZE", 2),
        ("PING", 2),
    ]
    .iter()
    .map(|(name, db)| ((*name).to_owned(), *db))
    .collect();
    assert_eq!(tail, expected.as_slice(), "all records: {script:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_pipe_mass_insertion() {
    crate::require_redis!();
    require_program!(REDIS_CLI);
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let mut input = Vec::new();
    for i in 0..10_000 {
        let key = format!("pipe:{i}");
        let value = format!("value-{i}");
        input.extend_from_slice(&encode_command(&[b"SET", key.as_bytes(), value.as_bytes()]));
    }
    let output = cli(proxy.addr, &["--pipe"], &input).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.lines().any(|l| l == "errors: 0, replies: 10000"), "summary: {stdout}");

    let mut direct = RawClient::connect(redis.addr).await;
    assert_eq!(direct.call(&[b"DBSIZE"]).await, b":10000\r\n");
    assert_eq!(direct.call(&[b"GET", b"pipe:9999"]).await, b"$10\r\nvalue-9999\r\n");

    // One record per command sent, in order: the 10,000 SETs, then the ECHO redis-cli adds
    // to find the end of the replies.
    let records = proxy.sink.wait_for(10_001).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let records_now = proxy.sink.records();
    assert_eq!(records_now.len(), 10_001, "{:?}", records_now.last());
    for (i, record) in records.iter().take(10_000).enumerate() {
        assert_eq!(record.command_name(), "SET");
        assert_eq!(record.args[1].as_ref(), format!("pipe:{i}").as_bytes());
        assert_eq!(record.status, ReplyStatus::Ok);
    }
    assert_eq!(records[10_000].command_name(), "ECHO");
    assert!(records.iter().all(|r| r.conn_id == records[0].conn_id));
}

/// The `NAME: <rate> requests per second...` line redis-benchmark -q prints for `name`.
pub(crate) fn benchmark_line<'a>(stdout: &'a str, name: &str) -> Option<&'a str> {
    stdout
        .split(['\r', '\n'])
        .map(str::trim)
        .find(|line| line.starts_with(&format!("{name}: ")) && line.contains("requests per second"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_through_the_proxy() {
    crate::require_redis!();
    require_program!(REDIS_BENCHMARK);
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let port = proxy.addr.port().to_string();
    for extra in [&[][..], &["-P", "16"]] {
        let mut args =
            vec!["-h", "127.0.0.1", "-p", &port, "-t", "set,get", "-n", "2000", "-c", "10", "-q"];
        args.extend_from_slice(extra);
        let output = run(REDIS_BENCHMARK, &args, b"").await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "redis-benchmark {extra:?}: {}\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        for name in ["SET", "GET"] {
            assert!(
                benchmark_line(&stdout, name).is_some(),
                "{extra:?}: no {name} line in {stdout:?}"
            );
        }
    }
    let mut direct = RawClient::connect(redis.addr).await;
    assert_eq!(direct.call(&[b"EXISTS", b"key:__rand_int__"]).await, b":1\r\n");
    let records = proxy.sink.records();
    let count = |name: &str| records.iter().filter(|r| r.command_name() == name).count();
    assert!(
        count("SET") >= 4000 && count("GET") >= 4000,
        "SET {} GET {}",
        count("SET"),
        count("GET")
    );
    let errors: Vec<_> = records.iter().filter(|r| r.status == ReplyStatus::Error).collect();
    assert!(errors.is_empty(), "{errors:?}");
}
