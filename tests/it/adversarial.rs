//! Adversarial clients against the findings of the December 2026 security review
//! (`security-2026-12.md`): each test plays a finding's trigger against a real Redis and
//! checks both what the client is answered and that nothing refused ran on the upstream.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_audit_proxy::command::{Class, TableSource};
use redis_audit_proxy::config::{Config, Overrides};
use redis_audit_proxy::record::{CommandRecord, ReplyStatus};
use tokio::io::AsyncReadExt;

use crate::support::client::{encode_command, reply_len, show};
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

/// The service login of proxy mode, for an upstream started with `--requirepass service-secret`.
const SERVICE: &str = "upstream_user = \"default\"\nupstream_password = \"service-secret\"\n";

/// Writes `text` as the users file of a fresh scratch directory.
fn users_file(scratch: &Scratch, text: &str) -> PathBuf {
    std::fs::create_dir_all(scratch.path()).unwrap();
    let path = scratch.path().join("users.acl");
    std::fs::write(&path, text).unwrap();
    path
}

/// `[auth]` in proxy mode with this users file, plus `extra` `[auth]` keys.
fn proxy_mode(users: &Path, extra: &str) -> String {
    format!("[auth]\nmode = \"proxy\"\nusers_file = \"{}\"\n{extra}", users.display())
}

/// A connection to `addr`, logged in with `auth` (`AUTH` arguments) when not empty.
async fn admin(addr: SocketAddr, auth: &[&[u8]]) -> RawClient {
    let mut client = RawClient::connect(addr).await;
    if !auth.is_empty() {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        args.extend_from_slice(auth);
        assert_eq!(client.call(&args).await, b"+OK\r\n", "admin login");
    }
    client
}

/// `INFO commandstats` of the connection's server.
async fn commandstats(admin: &mut RawClient) -> String {
    String::from_utf8_lossy(&admin.call(&[b"INFO", b"commandstats"]).await).into_owned()
}

/// `calls=` of `cmdstat_<command>` (0 when absent).
fn calls(stats: &str, command: &str) -> u64 {
    let needle = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&needle))
        .map_or(0, |rest| rest.split(',').next().unwrap_or_default().parse().unwrap())
}

/// A Redis holding `users` (`ACL SETUSER` rules, space-separated) and an admin connection
/// logged in as `root`. Without a `default` entry, `default` is reset as a users file's
/// `user default off`.
async fn reference(users: &[(&str, &str)], extra: &[&str]) -> (RedisServer, RawClient) {
    let redis = RedisServer::start(extra);
    let mut admin = RawClient::connect(redis.addr).await;
    let root: [&[u8]; 8] = [b"ACL", b"SETUSER", b"root", b"on", b">rootpw", b"~*", b"&*", b"+@all"];
    assert_eq!(admin.call(&root).await, b"+OK\r\n");
    assert_eq!(admin.call(&[b"AUTH", b"root", b"rootpw"]).await, b"+OK\r\n");
    let mut rules: Vec<(&str, String)> =
        users.iter().map(|(name, rules)| (*name, (*rules).to_owned())).collect();
    if !users.iter().any(|(name, _)| *name == "default") {
        rules.push(("default", "reset".to_owned()));
    }
    for (name, rules) in &rules {
        let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", name.as_bytes()];
        args.extend(rules.split(' ').map(str::as_bytes));
        assert_eq!(admin.call(&args).await, b"+OK\r\n", "SETUSER {name} {rules}");
    }
    (redis, admin)
}

/// The next whole reply, shown escaped; `<no reply>` after `wait`, `<closed ...>` on EOF or
/// reset (with what was buffered), instead of panicking, so a test shows the whole exchange.
async fn next_reply(client: &mut RawClient, wait: Duration) -> String {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(len) = reply_len(&client.buffer) {
            let reply: Vec<u8> = client.buffer.drain(..len).collect();
            return show(&reply);
        }
        let mut chunk = vec![0u8; 65536];
        match tokio::time::timeout_at(deadline, client.stream.read(&mut chunk)).await {
            Err(_) => return "<no reply>".to_owned(),
            Ok(Ok(0) | Err(_)) => {
                return format!("<closed after {:?}>", show(&std::mem::take(&mut client.buffer)))
            }
            Ok(Ok(n)) => client.buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Writes `bytes`; a peer that already closed shows in the next read, not as a panic here.
async fn send_quietly(client: &mut RawClient, bytes: &[u8]) {
    let _ = tokio::io::AsyncWriteExt::write_all(&mut client.stream, bytes).await;
}

/// Sends `script` in one write and reads `count` replies.
async fn pipeline(client: &mut RawClient, script: &[&[&[u8]]], count: usize) -> Vec<String> {
    let bytes: Vec<u8> = script.iter().flat_map(|command| encode_command(command)).collect();
    send_quietly(client, &bytes).await;
    let mut replies = Vec::new();
    for _ in 0..count {
        replies.push(next_reply(client, Duration::from_secs(5)).await);
    }
    replies
}

/// Sends each command of `script` and reads its reply before the next.
async fn one_by_one(client: &mut RawClient, script: &[&[&[u8]]]) -> Vec<String> {
    let mut replies = Vec::new();
    for command in script {
        send_quietly(client, &encode_command(command)).await;
        replies.push(next_reply(client, Duration::from_secs(5)).await);
    }
    replies
}

/// True when the peer closes the connection within 5 s (EOF or reset).
async fn closes(client: &mut RawClient) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut chunk = vec![0u8; 65536];
    loop {
        match tokio::time::timeout_at(deadline, client.stream.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// The records once at least `count` arrived, or whatever there is after 5 s.
async fn records_after(proxy: &TestProxy, count: usize) -> Vec<CommandRecord> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let records = proxy.sink.records();
        if records.len() >= count || Instant::now() >= deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The records once at least `count` arrived (or after 5 s), and anything more that comes
/// within 200 ms.
async fn records_settled(proxy: &TestProxy, count: usize) -> Vec<CommandRecord> {
    records_after(proxy, count).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.sink.records()
}

/// `(command, status)` of each record.
fn summary(records: &[CommandRecord]) -> Vec<(String, &'static str)> {
    records.iter().map(|r| (r.command_name().to_lowercase(), r.status.as_str())).collect()
}

fn is_command(record: &CommandRecord, name: &[u8]) -> bool {
    record.args.first().is_some_and(|arg| arg.eq_ignore_ascii_case(name))
}

const ALICE_C1: &str = "on >secret ~app:* -@all +@read +@write +multi +exec +discard";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_wrong_arity_multi_lets_no_save_sync_or_psync_run_upstream() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-c1");
    let users = users_file(&scratch, &format!("user default off\nuser alice {ALICE_C1}\n"));
    let dir = scratch.path().display().to_string();
    // --dir: a SAVE or SYNC that gets through writes its RDB into the scratch directory.
    let behind = RedisServer::start(&["--requirepass", "service-secret", "--dir", &dir]);
    let (reference, _root) = reference(&[("alice", ALICE_C1)], &["--dir", &dir]).await;
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, SERVICE)).await;

    let script: [&[&[u8]]; 4] =
        [&[b"MULTI", b"x"], &[b"SAVE"], &[b"SYNC"], &[b"PSYNC", b"?", b"-1"]];
    let want = pipeline(&mut RawClient::connect(reference.addr).await, &script, 4).await;
    let got = pipeline(&mut RawClient::connect(proxy.addr).await, &script, 4).await;
    assert_eq!(
        want,
        [
            show(b"-ERR wrong number of arguments for 'multi' command\r\n"),
            show(b"-NOAUTH Authentication required.\r\n"),
            show(b"-NOAUTH Authentication required.\r\n"),
            show(b"-NOAUTH Authentication required.\r\n"),
        ],
        "what Redis answers"
    );
    assert_eq!(got, want, "the proxy answers as Redis does");

    let mut upstream = admin(behind.addr, &[b"service-secret"]).await;
    let stats = commandstats(&mut upstream).await;
    for ran in ["cmdstat_save", "cmdstat_sync", "cmdstat_psync"] {
        assert!(!stats.contains(ran), "{ran} reached Redis as the service user: {stats}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_user_s_save_inside_multi_is_answered_as_redis_does_and_never_runs() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-c1-multi");
    let users = users_file(&scratch, &format!("user default off\nuser alice {ALICE_C1}\n"));
    let dir = scratch.path().display().to_string();
    let behind = RedisServer::start(&["--requirepass", "service-secret", "--dir", &dir]);
    let (reference, _root) = reference(&[("alice", ALICE_C1)], &["--dir", &dir]).await;
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, SERVICE)).await;

    let script: [&[&[u8]]; 4] =
        [&[b"AUTH", b"alice", b"secret"], &[b"MULTI"], &[b"SAVE"], &[b"EXEC"]];
    let want = one_by_one(&mut RawClient::connect(reference.addr).await, &script).await;
    let got = one_by_one(&mut RawClient::connect(proxy.addr).await, &script).await;
    assert_eq!(
        want,
        [
            show(b"+OK\r\n"),
            show(b"+OK\r\n"),
            show(b"-ERR Command not allowed inside a transaction\r\n"),
            show(b"-EXECABORT Transaction discarded because of previous errors.\r\n"),
        ],
        "what Redis answers"
    );
    assert_eq!(got, want, "the proxy answers as Redis does");

    let mut upstream = admin(behind.addr, &[b"service-secret"]).await;
    let stats = commandstats(&mut upstream).await;
    assert_eq!(calls(&stats, "save"), 0, "SAVE never ran: {stats}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_the_table_does_not_know_need_auth_and_full_rights_and_the_table_is_live() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-c2");
    let users =
        users_file(&scratch, "user default off\nuser alice on >secret ~app:* +@all -@dangerous\n");
    let behind =
        RedisServer::start(&["--requirepass", "s", "--rename-command", "FLUSHALL", "XFLUSH"]);
    let mut upstream = admin(behind.addr, &[b"s"]).await;
    assert_eq!(upstream.call(&[b"SET", b"keep", b"1"]).await, b"+OK\r\n");
    let toml = proxy_mode(&users, "upstream_user = \"default\"\nupstream_password = \"s\"\n");
    let proxy = TestProxy::start_with(behind.addr, &toml).await;

    let mut client = RawClient::connect(proxy.addr).await;
    let unauthenticated = one_by_one(&mut client, &[&[b"SET", b"k", b"v"], &[b"XFLUSH"]]).await;
    assert_eq!(
        unauthenticated,
        [
            show(b"-NOAUTH Authentication required.\r\n"),
            show(b"-NOAUTH Authentication required.\r\n")
        ]
    );
    let mut alice = RawClient::connect(proxy.addr).await;
    assert_eq!(alice.call(&[b"AUTH", b"alice", b"secret"]).await, b"+OK\r\n");
    let renamed = one_by_one(&mut alice, &[&[b"XFLUSH"]]).await;
    assert_eq!(
        renamed,
        [show(b"-ERR unknown command 'XFLUSH', with args beginning with: \r\n")],
        "a command the table does not know, for a user without +@all ~* &*: Redis's answer to \
         an unknown command, and nothing forwarded"
    );

    assert_eq!(upstream.call(&[b"EXISTS", b"keep"]).await, b":1\r\n", "nothing was flushed");
    assert_eq!(upstream.call(&[b"EXISTS", b"k"]).await, b":0\r\n");
    let stats = commandstats(&mut upstream).await;
    assert!(!stats.contains("cmdstat_flushall"), "XFLUSH reached Redis: {stats}");
    assert!(
        matches!(proxy.commands().source, TableSource::Live(_)),
        "the table is read with the service login: {:?}",
        proxy.commands().source
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_mode_reads_the_live_table_with_the_configured_table_login() {
    crate::require_redis!();
    let behind = RedisServer::start(&["--requirepass", "s"]);
    let toml = "[upstream]\ntable_user = \"default\"\ntable_password = \"s\"\n";
    let proxy = TestProxy::start_with(behind.addr, toml).await;
    assert!(
        matches!(proxy.commands().source, TableSource::Live(_)),
        "{:?}",
        proxy.commands().source
    );
    let mut client = RawClient::connect(proxy.addr).await;
    let replies = one_by_one(&mut client, &[&[b"AUTH", b"s"], &[b"SET", b"k", b"v"]]).await;
    assert_eq!(replies, [show(b"+OK\r\n"), show(b"+OK\r\n")]);
    let mut upstream = admin(behind.addr, &[b"s"]).await;
    assert_eq!(upstream.call(&[b"GET", b"k"]).await, b"$1\r\nv\r\n");
    proxy.shutdown().await;
}

const ALICE_H1: &str = "on >secret ~app:* +@all -@dangerous";
const WRITE_SECRET: &[u8] = b"return redis.call('SET','secret','pwned')";
const LIBRARY: &[u8] = b"#!lua name=lib\n\
    redis.register_function('w', function(k, a) return redis.call('SET', 'secret', 'x') end)";

/// Proxy mode in front of a `--requirepass service-secret` Redis that has [`LIBRARY`]
/// loaded; the reference Redis has it too.
async fn h1_setup(
    scratch: &Scratch,
    users_text: &str,
    users: &[(&str, &str)],
    extra_auth: &str,
) -> (RedisServer, RedisServer, RawClient, RawClient, TestProxy) {
    let file = users_file(scratch, users_text);
    let behind = RedisServer::start(&["--requirepass", "service-secret"]);
    let (reference, mut reference_admin) = reference(users, &[]).await;
    let mut upstream = admin(behind.addr, &[b"service-secret"]).await;
    for server in [&mut upstream, &mut reference_admin] {
        assert_eq!(server.call(&[b"FUNCTION", b"LOAD", LIBRARY]).await, b"$3\r\nlib\r\n");
    }
    let proxy =
        TestProxy::start_with(behind.addr, &proxy_mode(&file, &format!("{SERVICE}{extra_auth}")))
            .await;
    (behind, reference, upstream, reference_admin, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_and_fcall_run_with_the_user_s_own_rights_as_on_redis_with_mirrored_users() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-h1");
    let (_behind, reference, mut upstream, mut reference_admin, proxy) = h1_setup(
        &scratch,
        &format!("user default off\nuser alice {ALICE_H1}\n"),
        &[("alice", ALICE_H1)],
        "",
    )
    .await;
    let script: [&[&[u8]]; 3] =
        [&[b"AUTH", b"alice", b"secret"], &[b"EVAL", WRITE_SECRET, b"0"], &[b"FCALL", b"w", b"0"]];
    let want = one_by_one(&mut RawClient::connect(reference.addr).await, &script).await;
    let got = one_by_one(&mut RawClient::connect(proxy.addr).await, &script).await;
    // Redis 7.0.15: "-ERR The user executing the script can't access at least one of the keys
    // mentioned in the command arguments script: <sha1 or w>, on @user_...:N." (nothing
    // connection-specific to normalise).
    assert!(want[1].starts_with("-ERR") && want[2].starts_with("-ERR"), "{want:?}");
    assert_eq!(got, want, "the proxy's replies are Redis's own");
    assert_eq!(reference_admin.call(&[b"GET", b"secret"]).await, b"$-1\r\n");
    assert_eq!(upstream.call(&[b"GET", b"secret"]).await, b"$-1\r\n", "the script wrote upstream");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mirrored_users_eval_and_fcall_are_refused_to_users_narrower_than_all() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-h1-off");
    let (_behind, _reference, mut upstream, _reference_admin, proxy) = h1_setup(
        &scratch,
        &format!("user default off\nuser alice {ALICE_H1}\nuser root on >rootpw ~* &* +@all\n"),
        &[("alice", ALICE_H1)],
        "mirror_users = \"off\"\n",
    )
    .await;
    let mut alice = RawClient::connect(proxy.addr).await;
    assert_eq!(alice.call(&[b"AUTH", b"alice", b"secret"]).await, b"+OK\r\n");
    let replies =
        one_by_one(&mut alice, &[&[b"EVAL", WRITE_SECRET, b"0"], &[b"FCALL", b"w", b"0"]]).await;
    for reply in &replies {
        assert!(reply.starts_with("-NOPERM"), "{replies:?}");
    }
    assert_eq!(upstream.call(&[b"GET", b"secret"]).await, b"$-1\r\n", "the script wrote upstream");
    let stats = commandstats(&mut upstream).await;
    assert_eq!(calls(&stats, "eval") + calls(&stats, "fcall"), 0, "{stats}");

    // A user with every right still runs scripts.
    let mut root = RawClient::connect(proxy.addr).await;
    assert_eq!(root.call(&[b"AUTH", b"root", b"rootpw"]).await, b"+OK\r\n");
    assert_eq!(
        root.call(&[b"EVAL", b"return redis.call('SET','app:ok','1')", b"0"]).await,
        b"+OK\r\n"
    );
    assert_eq!(upstream.call(&[b"GET", b"app:ok"]).await, b"$1\r\n1\r\n");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_by_and_get_need_read_access_to_every_key_as_on_redis_in_both_mirror_modes() {
    crate::require_redis!();
    const BOB: &str = "on >pw ~app:* -@all +rpush +sort +get";
    for extra_auth in ["", "mirror_users = \"off\"\n"] {
        let scratch = Scratch::new("adv-h1-sort");
        let (_behind, reference, mut upstream, mut reference_admin, proxy) = h1_setup(
            &scratch,
            &format!("user default off\nuser bob {BOB}\n"),
            &[("bob", BOB)],
            extra_auth,
        )
        .await;
        for server in [&mut upstream, &mut reference_admin] {
            assert_eq!(server.call(&[b"SET", b"secret", b"topsecret"]).await, b"+OK\r\n");
        }
        let script: [&[&[u8]]; 5] = [
            &[b"AUTH", b"bob", b"pw"],
            &[b"RPUSH", b"app:l", b"secret"],
            &[b"SORT", b"app:l", b"BY", b"nosort", b"GET", b"*"],
            &[b"SORT", b"app:l", b"BY", b"w_*"],
            &[b"SORT", b"app:l", b"BY", b"nosort", b"GET", b"*", b"STORE", b"app:out"],
        ];
        let want = one_by_one(&mut RawClient::connect(reference.addr).await, &script).await;
        let got = one_by_one(&mut RawClient::connect(proxy.addr).await, &script).await;
        assert_eq!(
            want[2..],
            [
                show(b"-ERR GET option of SORT denied due to insufficient ACL permissions.\r\n"),
                show(b"-ERR BY option of SORT denied due to insufficient ACL permissions.\r\n"),
                show(b"-ERR GET option of SORT denied due to insufficient ACL permissions.\r\n"),
            ],
            "what Redis answers"
        );
        assert_eq!(got, want, "{extra_auth:?}: the proxy answers as Redis does");
        assert_eq!(
            upstream.call(&[b"EXISTS", b"app:out"]).await,
            b":0\r\n",
            "{extra_auth:?}: SORT ... GET * STORE copied the secret upstream"
        );
        assert_eq!(
            upstream.call(&[b"LRANGE", b"app:l", b"0", b"-1"]).await,
            b"*1\r\n$6\r\nsecret\r\n"
        );
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_reply_skip_does_not_shift_replies_onto_a_failed_auth() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-h2");
    let users =
        users_file(&scratch, "user default on >pw -@all +ping\nuser admin on >x +@all ~*\n");
    // Redis itself only has requirepass: looser than the users file.
    let behind = RedisServer::start(&["--requirepass", "pw"]);
    let mut upstream = admin(behind.addr, &[b"pw"]).await;
    assert_eq!(upstream.call(&[b"SET", b"keep", b"1"]).await, b"+OK\r\n");
    let (reference, _root) =
        reference(&[("default", "reset on >pw -@all +ping"), ("admin", "on >x +@all ~*")], &[])
            .await;
    let toml = format!("[auth]\nusers_file = \"{}\"\n", users.display());
    let proxy = TestProxy::start_with(behind.addr, &toml).await;

    let script: [&[&[u8]]; 4] =
        [&[b"CLIENT", b"REPLY", b"SKIP"], &[b"PING"], &[b"AUTH", b"admin", b"bad"], &[b"FLUSHALL"]];
    let mut direct = admin(reference.addr, &[b"pw"]).await;
    let want = pipeline(&mut direct, &script, 4).await;
    let mut client = admin(proxy.addr, &[b"pw"]).await;
    let got = pipeline(&mut client, &script, 4).await;
    assert_eq!(
        want,
        [
            show(b"-NOPERM this user has no permissions to run the 'client|reply' command\r\n"),
            show(b"+PONG\r\n"),
            show(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"),
            show(b"-NOPERM this user has no permissions to run the 'flushall' command\r\n"),
        ],
        "what Redis answers"
    );
    assert_eq!(got, want, "the proxy answers as Redis does");

    assert_eq!(upstream.call(&[b"EXISTS", b"keep"]).await, b":1\r\n", "FLUSHALL ran");
    let stats = commandstats(&mut upstream).await;
    assert_eq!(calls(&stats, "flushall"), 0, "{stats}");
    let records = records_after(&proxy, 5).await;
    let flushall = records.iter().find(|r| is_command(r, b"FLUSHALL")).expect("a FLUSHALL record");
    assert_eq!(flushall.user, "default", "the failed AUTH did not change the user");
    assert_eq!(flushall.status, ReplyStatus::Error);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_lookalike_replies_after_unsubscribing_are_paired_and_recorded_in_order() {
    crate::require_redis!();
    let reference = RedisServer::start(&[]);
    let behind = RedisServer::start(&[]);
    let proxy = TestProxy::start(behind.addr).await;
    let script: [&[&[u8]]; 5] = [
        &[b"SUBSCRIBE", b"c"],
        &[b"UNSUBSCRIBE", b"c"],
        &[b"SET", b"k", b"message"],
        &[b"MGET", b"k"],
        &[b"EVAL", b"return {'subscribe','x',1}", b"0"],
    ];
    let want = one_by_one(&mut RawClient::connect(reference.addr).await, &script).await;
    let got = one_by_one(&mut RawClient::connect(proxy.addr).await, &script).await;
    assert_eq!(got, want, "replies as a direct connection gets them");

    let records = records_settled(&proxy, 5).await;
    assert_eq!(
        summary(&records),
        [
            ("subscribe".to_owned(), "ok"),
            ("unsubscribe".to_owned(), "ok"),
            ("set".to_owned(), "ok"),
            ("mget".to_owned(), "ok"),
            ("eval".to_owned(), "ok"),
        ],
        "one record per command, in order, with its reply's status"
    );
    assert!(records.iter().all(|r| r.status == ReplyStatus::Ok));
    let mut upstream = admin(behind.addr, &[]).await;
    assert_eq!(upstream.call(&[b"GET", b"k"]).await, b"$7\r\nmessage\r\n");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reply_skip_then_hello_3_in_proxy_mode_is_paired_as_redis_does() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-h2-hello");
    let users = users_file(&scratch, "user default on nopass ~* &* +@all\n");
    let reference = RedisServer::start(&[]);
    let behind = RedisServer::start(&[]);
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, "")).await;
    let script: [&[&[u8]]; 4] = [
        &[b"CLIENT", b"REPLY", b"SKIP"],
        &[b"HELLO", b"3"],
        &[b"SET", b"k", b"v"],
        &[b"GET", b"k"],
    ];
    let want = pipeline(&mut RawClient::connect(reference.addr).await, &script, 2).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let got = pipeline(&mut client, &script, 2).await;
    assert_eq!(want, [show(b"+OK\r\n"), show(b"$1\r\nv\r\n")], "what Redis answers");
    assert_eq!(got, want, "the proxy answers as Redis does");
    assert_eq!(
        next_reply(&mut client, Duration::from_millis(300)).await,
        "<no reply>",
        "nothing more"
    );

    let records = records_settled(&proxy, 4).await;
    assert_eq!(
        summary(&records),
        [
            ("client".to_owned(), "skipped"),
            ("hello".to_owned(), "skipped"),
            ("set".to_owned(), "ok"),
            ("get".to_owned(), "ok"),
        ]
    );
    let mut upstream = admin(behind.addr, &[]).await;
    assert_eq!(upstream.call(&[b"GET", b"k"]).await, b"$1\r\nv\r\n");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_refusals_makes_the_proxy_stop_reading_it() {
    crate::require_redis!();
    const TOTAL: u64 = 50_000_000;
    // What a proxy that stops reading may still have answered: output_buffer_bytes (1 MiB)
    // plus the loopback socket buffers (about 4.3 MB measured with a peer that never reads),
    // one request read's worth more, at 34 bytes a -NOAUTH: about 170,000.
    const BOUND: usize = 250_000;
    let scratch = Scratch::new("adv-h3");
    let users = users_file(&scratch, "user default off\n");
    let behind = RedisServer::start(&[]);
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, "")).await;
    let mut upstream = admin(behind.addr, &[]).await;
    let pings_before = calls(&commandstats(&mut upstream).await, "ping");

    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, stop, addr) = (Arc::clone(&written), Arc::clone(&stop), proxy.addr);
        std::thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
            let chunk = b"PING\n".repeat(13_107);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                let left = TOTAL - written.load(Ordering::Relaxed);
                if left == 0 {
                    break;
                }
                match stream.write(&chunk[..chunk.len().min(left as usize)]) {
                    Ok(n) => {
                        written.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            stream // kept open (never read) until the test has looked
        })
    };

    // Ten seconds of writing. The proxy must stop reading long before 10 million commands:
    // the records (one per queued -NOAUTH) stay bounded and stop growing once the writes
    // block. Stops early past the bound (every record is kept in memory).
    let started = Instant::now();
    let (mut most, mut at_six) = (0, None);
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        most = proxy.sink.records().len();
        if at_six.is_none() && started.elapsed() >= Duration::from_secs(6) {
            at_six = Some(most);
        }
        if most > BOUND {
            stop.store(true, Ordering::Relaxed);
            break;
        }
    }
    let stream = tokio::task::spawn_blocking(move || writer.join().unwrap()).await.unwrap();
    let accepted = written.load(Ordering::Relaxed);
    let at_end = proxy.sink.records().len();
    assert!(
        most <= BOUND && at_end <= BOUND,
        "records (= queued -NOAUTH replies) kept growing: {at_six:?} after 6 s, {at_end} \
         after {:?} ({accepted} bytes accepted)",
        started.elapsed()
    );
    let at_six = at_six.expect("sampled at 6 s");
    assert!(
        at_end - at_six < 1_000,
        "the proxy still read between 6 s and 10 s: {at_six} then {at_end} records"
    );
    assert!(accepted < TOTAL, "the proxy read all {TOTAL} bytes within 10 s");
    let stats = commandstats(&mut upstream).await;
    assert_eq!(calls(&stats, "ping"), pings_before, "no refused PING reached Redis: {stats}");
    drop(stream);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_client_keeps_redis_s_bulk_length_limit_after_the_service_login() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-h4");
    let users = users_file(&scratch, "user default off\nuser alice on >secret ~* +@all\n");
    let behind = RedisServer::start(&["--requirepass", "service-secret"]);
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, SERVICE)).await;
    let mut request = b"*2\r\n$4\r\nECHO\r\n$20000\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'a', 20_000));
    request.extend_from_slice(b"\r\n");

    let mut outcomes = Vec::new();
    // A direct connection to a requirepass Redis, then the proxy.
    for addr in [behind.addr, proxy.addr] {
        let mut client = RawClient::connect(addr).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The peer may close before taking it all.
        send_quietly(&mut client, &request).await;
        let reply = next_reply(&mut client, Duration::from_secs(5)).await;
        outcomes.push((reply, closes(&mut client).await));
    }
    assert_eq!(
        outcomes[0],
        (show(b"-ERR Protocol error: unauthenticated bulk length\r\n"), true),
        "what Redis does"
    );
    assert_eq!(outcomes[1], outcomes[0], "the proxy does as Redis does");
    let mut upstream = admin(behind.addr, &[b"service-secret"]).await;
    let stats = commandstats(&mut upstream).await;
    assert_eq!(calls(&stats, "echo"), 0, "{stats}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_selector_token_in_the_users_file_is_refused_at_configuration() {
    crate::require_redis!();
    for line in ["user a on (\"\")", "user a on (~x \"\")"] {
        let scratch = Scratch::new("adv-m3");
        let users = users_file(&scratch, &format!("user default off\n{line}\n"));
        let raw = toml::from_str(&proxy_mode(&users, "")).expect("TOML parses");
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".into()),
            admin: Some("127.0.0.1:0".into()),
            upstream: Some("127.0.0.1:6379".into()),
            ..Overrides::default()
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Config::validate(raw, "test", &overrides).map(|_| ())
        }));
        match outcome {
            Err(_) => panic!("{line}: Config::validate panicked"),
            Ok(result) => assert!(result.is_err(), "{line}: accepted"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_setuser_with_an_empty_selector_token_is_an_error_and_the_connection_lives() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-m3-setuser");
    let users =
        users_file(&scratch, "user default off\nuser ops on >pw -@all +acl|setuser +ping\n");
    let behind = RedisServer::start(&[]);
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, "")).await;
    let mut upstream = admin(behind.addr, &[]).await;
    let mut ops = RawClient::connect(proxy.addr).await;
    assert_eq!(ops.call(&[b"AUTH", b"ops", b"pw"]).await, b"+OK\r\n");
    let before = commandstats(&mut upstream).await;
    // Redis 7.0.15 answers each with "-ERR Error in ACL SETUSER modifier '...': Syntax error".
    let script: [&[&[u8]]; 4] = [
        &[b"ACL", b"SETUSER", b"u", b"(", b"\"\"", b")"],
        &[b"ACL", b"SETUSER", b"u", b"(\"\")"],
        &[b"ACL", b"SETUSER", b"u", b"(~x \"\")"],
        &[b"PING"],
    ];
    let replies = one_by_one(&mut ops, &script).await;
    for reply in &replies[..3] {
        assert!(reply.starts_with("-ERR"), "{replies:?}");
    }
    assert_eq!(replies[3], show(b"+PONG\r\n"), "{replies:?}");

    let redis_users = upstream.call(&[b"ACL", b"USERS"]).await;
    assert!(
        !redis_users.windows(7).any(|w| w == b"$1\r\nu\r\n"),
        "SETUSER reached Redis: {}",
        show(&redis_users)
    );
    let stats = commandstats(&mut upstream).await;
    assert_eq!(calls(&stats, "acl|setuser"), calls(&before, "acl|setuser"), "{stats}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_function_load_does_not_change_how_fcall_is_classified() {
    crate::require_redis!();
    // A read-only declaration of the name, then the real library: a function that writes.
    const POISON: &[u8] = b"#!lua name=x\nredis.register_function{function_name='payments_write', \
        callback=function(k,a) return 1 end, flags={'no-writes'}}";
    const PAYMENTS: &[u8] = b"#!lua name=payments\nredis.register_function('payments_write', \
        function(k, a) return redis.call('SET', 'app:paid', '1') end)";
    let scratch = Scratch::new("adv-m4");
    let users = users_file(&scratch, "user default off\nuser admin on >adminpw ~* &* +@all\n");
    let behind = RedisServer::start(&[]);
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, "")).await;
    let noauth = show(b"-NOAUTH Authentication required.\r\n");

    let mut attacker = RawClient::connect(proxy.addr).await;
    let mut operator = RawClient::connect(proxy.addr).await;
    // Refused loads before and after the real one.
    assert_eq!(
        one_by_one(&mut attacker, &[&[b"FUNCTION", b"LOAD", POISON]]).await,
        [noauth.as_str()]
    );
    let replies = one_by_one(
        &mut operator,
        &[&[b"AUTH", b"admin", b"adminpw"], &[b"FUNCTION", b"LOAD", PAYMENTS]],
    )
    .await;
    assert_eq!(replies, [show(b"+OK\r\n"), show(b"$8\r\npayments\r\n")]);
    assert_eq!(
        one_by_one(&mut attacker, &[&[b"FUNCTION", b"LOAD", POISON]]).await,
        [noauth.as_str()]
    );
    assert_eq!(operator.call(&[b"FCALL", b"payments_write", b"0"]).await, b"+OK\r\n");

    let records = records_after(&proxy, 5).await;
    let fcall = records.iter().find(|r| is_command(r, b"FCALL")).expect("an FCALL record");
    assert_eq!(fcall.class, Some(Class::Write), "a writing function is recorded as a write");
    let mut upstream = admin(behind.addr, &[]).await;
    assert_eq!(upstream.call(&[b"GET", b"app:paid"]).await, b"$1\r\n1\r\n");
    assert_eq!(
        upstream.call(&[b"FUNCTION", b"LIST", b"LIBRARYNAME", b"x"]).await,
        b"*0\r\n",
        "the refused library never reached Redis"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_file_without_default_leaves_unauthenticated_clients_unauthenticated() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-m6");
    let users = users_file(&scratch, "user alice on >secret ~* +@all\n");
    let behind = RedisServer::start(&[]);
    let mut upstream = admin(behind.addr, &[]).await;
    assert_eq!(upstream.call(&[b"SET", b"keep", b"1"]).await, b"+OK\r\n");
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, "")).await;
    let mut client = RawClient::connect(proxy.addr).await;
    assert_eq!(
        one_by_one(&mut client, &[&[b"FLUSHALL"]]).await,
        [show(b"-NOAUTH Authentication required.\r\n")]
    );
    assert_eq!(upstream.call(&[b"EXISTS", b"keep"]).await, b":1\r\n", "FLUSHALL ran");
    assert_eq!(calls(&commandstats(&mut upstream).await, "flushall"), 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_subcommands_inside_multi_never_reach_redis_s_own_users() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-m8");
    let users = users_file(&scratch, "user default off\nuser carol on >pw ~* +@all\n");
    let behind = RedisServer::start(&["--requirepass", "service-secret"]);
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, SERVICE)).await;
    let mut upstream = admin(behind.addr, &[b"service-secret"]).await;
    let mut carol = RawClient::connect(proxy.addr).await;
    assert_eq!(carol.call(&[b"AUTH", b"carol", b"pw"]).await, b"+OK\r\n");
    // Counted from here: whatever the proxy itself does upstream at start or login is not
    // the client's.
    let before = commandstats(&mut upstream).await;
    let script: [&[&[u8]]; 4] = [
        &[b"MULTI"],
        &[b"ACL", b"LIST"],
        &[b"ACL", b"SETUSER", b"evil", b"on", b">x", b"+@all", b"~*"],
        &[b"EXEC"],
    ];
    let replies = one_by_one(&mut carol, &script).await;
    assert_eq!(replies[0], show(b"+OK\r\n"));
    assert!(
        replies[1].starts_with('-') && replies[2].starts_with('-'),
        "ACL inside MULTI is refused: {replies:?}"
    );
    assert!(replies[3].starts_with("-EXECABORT"), "the transaction is aborted: {replies:?}");

    let redis_users = show(&upstream.call(&[b"ACL", b"USERS"]).await);
    assert!(!redis_users.contains("evil"), "a Redis user was created: {redis_users}");
    let stats = commandstats(&mut upstream).await;
    for ran in ["acl|list", "acl|setuser"] {
        assert_eq!(calls(&stats, ran), calls(&before, ran), "{ran} reached Redis: {stats}");
    }
    proxy.shutdown().await;
}
