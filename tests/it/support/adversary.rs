//! Helpers for the adversarial suites: proxy auth mode in front of a Redis with a service
//! login, a reference Redis holding the same users, and clients that show every reply (or the
//! close) instead of panicking, so a failing test shows the whole exchange.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use redis_audit_proxy::event::CommandRecord;
use tokio::io::AsyncReadExt;

use crate::support::client::{encode_command, reply_len, show};
use crate::support::{RawClient, RedisServer, TestProxy};

/// The service login of proxy mode, for an upstream started with `--requirepass service-secret`.
pub const SERVICE: &str = "upstream_user = \"default\"\nupstream_password = \"service-secret\"\n";

/// `[auth]` in proxy mode with this users file, plus `extra` `[auth]` keys.
pub fn proxy_mode(users: &Path, extra: &str) -> String {
    format!("[auth]\nmode = \"proxy\"\nusers_file = \"{}\"\n{extra}", users.display())
}

/// A connection to `addr`, logged in with `auth` (`AUTH` arguments) when not empty.
pub async fn admin(addr: SocketAddr, auth: &[&[u8]]) -> RawClient {
    let mut client = RawClient::connect(addr).await;
    if !auth.is_empty() {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        args.extend_from_slice(auth);
        assert_eq!(client.call(&args).await, b"+OK\r\n", "admin login");
    }
    client
}

/// `INFO commandstats` of the connection's server.
pub async fn commandstats(admin: &mut RawClient) -> String {
    String::from_utf8_lossy(&admin.call(&[b"INFO", b"commandstats"]).await).into_owned()
}

/// `calls=` of `cmdstat_<command>` (0 when absent).
pub fn calls(stats: &str, command: &str) -> u64 {
    let needle = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&needle))
        .map_or(0, |rest| rest.split(',').next().unwrap_or_default().parse().unwrap())
}

/// A Redis holding `users` (`ACL SETUSER` rules, space-separated) and an admin connection
/// logged in as `root`. Without a `default` entry, `default` is reset as a users file's
/// `user default off`.
pub async fn reference(users: &[(&str, &str)], extra: &[&str]) -> (RedisServer, RawClient) {
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
pub async fn next_reply(client: &mut RawClient, wait: Duration) -> String {
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
pub async fn send_quietly(client: &mut RawClient, bytes: &[u8]) {
    let _ = tokio::io::AsyncWriteExt::write_all(&mut client.stream, bytes).await;
}

/// Sends `script` in one write and reads `count` replies.
pub async fn pipeline(client: &mut RawClient, script: &[&[&[u8]]], count: usize) -> Vec<String> {
    let bytes: Vec<u8> = script.iter().flat_map(|command| encode_command(command)).collect();
    send_quietly(client, &bytes).await;
    let mut replies = Vec::new();
    for _ in 0..count {
        replies.push(next_reply(client, Duration::from_secs(5)).await);
    }
    replies
}

/// Sends each command of `script` and reads its reply before the next.
pub async fn one_by_one(client: &mut RawClient, script: &[&[&[u8]]]) -> Vec<String> {
    let mut replies = Vec::new();
    for command in script {
        send_quietly(client, &encode_command(command)).await;
        replies.push(next_reply(client, Duration::from_secs(5)).await);
    }
    replies
}

/// True when the peer closes the connection within 5 s (EOF or reset).
pub async fn closes(client: &mut RawClient) -> bool {
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
pub async fn records_after(proxy: &TestProxy, count: usize) -> Vec<CommandRecord> {
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
pub async fn records_settled(proxy: &TestProxy, count: usize) -> Vec<CommandRecord> {
    records_after(proxy, count).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.sink.records()
}

/// `(command, status)` of each record.
pub fn summary(records: &[CommandRecord]) -> Vec<(String, &'static str)> {
    records.iter().map(|r| (r.command_name().to_lowercase(), r.status.as_str())).collect()
}

pub fn is_command(record: &CommandRecord, name: &[u8]) -> bool {
    record.args.first().is_some_and(|arg| arg.eq_ignore_ascii_case(name))
}
