//! `ACL LOG` without a users file (passthrough, the default deployment): the proxy's log, fed by
//! the `-NOPERM` and `-WRONGPASS` replies Redis gave through the proxy, with each client's own
//! address (`acl.log_source = "proxy"`), while Redis still decides who may run `ACL LOG`; and
//! Redis's own log with `acl.log_source = "upstream"`.

use crate::support::redis::Server;
use crate::support::{RawClient, RedisServer, TestProxy};

/// Users on the Redis behind the proxy and on the reference Redis: alice may read `app:*` and
/// run ACL LOG; carol may run anything but ACL.
const SETUSERS: [&[&[u8]]; 2] = [
    &[b"ACL", b"SETUSER", b"alice", b"on", b">pw", b"~app:*", b"+get", b"+acl|log"],
    &[b"ACL", b"SETUSER", b"carol", b"on", b">pw", b"~*", b"&*", b"+@all", b"-@admin", b"-acl"],
];

/// What alice's client does before reading the log.
const SCRIPT: &[&[&[u8]]] = &[
    &[b"AUTH", b"alice", b"wrong"],
    &[b"AUTH", b"nobody", b"pw"],
    &[b"AUTH", b"alice", b"pw"],
    &[b"GET", b"other"],
    &[b"GET", b"other"],
    &[b"SET", b"app:1", b"v"],
    &[b"GET", b"app:1"],
];

async fn redis_with_users(server: Server) -> RedisServer {
    let redis = RedisServer::start_server(server, &[]);
    let mut admin = RawClient::connect(redis.addr).await;
    for args in SETUSERS {
        assert_eq!(admin.call(args).await, b"+OK\r\n");
    }
    redis
}

/// The value after the field name at `parts[i]`: an integer (`:N`) or a bulk string.
fn value_after(parts: &[&str], i: usize) -> String {
    match parts.get(i + 1) {
        Some(integer) if integer.starts_with(':') => integer.to_string(),
        _ => parts.get(i + 2).copied().unwrap_or_default().to_owned(),
    }
}

/// The fields of each entry that do not depend on time or on the connection.
fn entries(reply: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(reply).into_owned();
    let parts: Vec<&str> = text.split("\r\n").collect();
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if matches!(*part, "count" | "reason" | "context" | "object" | "username") {
            out.push(format!("{part}={}", value_after(&parts, i)));
        }
    }
    out
}

/// The `client-info` values of the entries.
fn client_infos(reply: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(reply).into_owned();
    let parts: Vec<&str> = text.split("\r\n").collect();
    parts
        .iter()
        .enumerate()
        .filter(|(_, part)| **part == "client-info")
        .map(|(i, _)| value_after(&parts, i))
        .collect()
}

crate::on_every_server!(
    without_a_users_file_acl_log_is_the_proxys_with_each_clients_address,
    without_a_users_file_acl_log_is_the_proxys_on_redis_7_2,
    without_a_users_file_acl_log_is_the_proxys_on_valkey_8_0 => acl_log_is_the_proxys
);

/// The proxy's ACL LOG against the log of a `server` of the same version the script ran on
/// directly.
async fn acl_log_is_the_proxys(server: Server) {
    crate::require_server!(server);
    let reference = redis_with_users(server).await;
    let behind = redis_with_users(server).await;
    let proxy = TestProxy::start(behind.addr).await;

    let mut direct = RawClient::connect(reference.addr).await;
    let mut through = RawClient::connect(proxy.addr).await;
    for command in SCRIPT {
        assert_eq!(through.call(command).await, direct.call(command).await, "{command:?}");
    }
    let theirs = direct.call(&[b"ACL", b"LOG"]).await;
    let ours = through.call(&[b"ACL", b"LOG"]).await;
    assert_eq!(entries(&ours), entries(&theirs), "{}", String::from_utf8_lossy(&ours));
    assert!(
        entries(&ours).contains(&"reason=auth".to_owned()),
        "{entries:?}",
        entries = entries(&ours)
    );
    assert!(entries(&ours).contains(&"count=:2".to_owned()), "the two GET other: one entry");
    // The shape of the Redis behind: seven fields per entry up to 7.1, ten from 7.2.
    let shape =
        |reply: &[u8]| String::from_utf8_lossy(reply).split("\r\n").nth(1).map(str::to_owned);
    assert_eq!(shape(&ours), shape(&theirs), "{}", String::from_utf8_lossy(&ours));
    assert!(ours.starts_with(b"*4\r\n"), "{}", String::from_utf8_lossy(&ours));
    // Each entry names the client as the proxy sees it: its own address, not the proxy's.
    let own = format!("addr={}", through.stream.local_addr().unwrap());
    let infos = client_infos(&ours);
    assert_eq!(infos.len(), 4);
    assert!(infos.iter().all(|info| info.contains(&own)), "{own} in {infos:#?}");

    // Redis decides who may run ACL LOG: carol may not, and gets Redis's own refusal.
    let mut carol_direct = RawClient::connect(reference.addr).await;
    let mut carol = RawClient::connect(proxy.addr).await;
    for client in [&mut carol_direct, &mut carol] {
        assert_eq!(client.call(&[b"AUTH", b"carol", b"pw"]).await, b"+OK\r\n");
    }
    let refused = carol.call(&[b"ACL", b"LOG"]).await;
    assert!(refused.starts_with(b"-NOPERM"), "{}", String::from_utf8_lossy(&refused));
    assert_eq!(refused, carol_direct.call(&[b"ACL", b"LOG"]).await);
    // A syntax error is Redis's too.
    let wrong = through.call(&[b"ACL", b"LOG", b"many"]).await;
    assert_eq!(wrong, direct.call(&[b"ACL", b"LOG", b"many"]).await);

    // RESET clears the proxy's log, and Redis's with it.
    assert_eq!(through.call(&[b"ACL", b"LOG", b"RESET"]).await, b"+OK\r\n");
    let after = through.call(&[b"ACL", b"LOG"]).await;
    // carol's refused ACL LOG came after: Redis logged it, and so did the proxy before RESET.
    assert_eq!(after, b"*0\r\n", "{}", String::from_utf8_lossy(&after));
    let mut admin = RawClient::connect(behind.addr).await;
    assert_eq!(admin.call(&[b"ACL", b"LOG"]).await, b"*0\r\n");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_source_upstream_shows_redis_own_log() {
    crate::require_redis!();
    let behind = redis_with_users(Server::Debian).await;
    let proxy = TestProxy::start_with(behind.addr, "[acl]\nlog_source = \"upstream\"\n").await;
    let mut through = RawClient::connect(proxy.addr).await;
    for command in SCRIPT {
        through.call(command).await;
    }
    let ours = through.call(&[b"ACL", b"LOG"]).await;
    let mut admin = RawClient::connect(behind.addr).await;
    let redis_own = admin.call(&[b"ACL", b"LOG"]).await;
    assert_eq!(entries(&ours), entries(&redis_own));
    // Redis saw the proxy's connection, not the client's.
    let own = format!("addr={}", through.stream.local_addr().unwrap());
    assert!(client_infos(&ours).iter().all(|info| !info.contains(&own)));
    proxy.shutdown().await;
}
