//! The audit-trail findings of the December 2026 security review (`security-2026-12.md`), M1,
//! M5 and M7, played against the real proxy and trail: client strings cannot make huge lines
//! or an unbounded backlog (M1), index sidecars are checked against their file before a query
//! trusts them (M5), and a flood of refusals cannot push older evidence out (M7).

use std::path::Path;
use std::time::Duration;

use redis_audit_proxy::audit::verify::verify_dir;
use redis_audit_proxy::record::CommandSink;
use serde_json::Value;

use crate::support::client::encode_command;
use crate::support::scratch::{trail, trail_lines};
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

/// The longest line a client string may cause (the review's bound).
const LINE_BOUND: usize = 64 * 1024;

/// Every line of the trail is at most [`LINE_BOUND`] bytes, and `audit verify` passes.
fn assert_short_lines_and_intact(dir: &Path) {
    for line in trail_lines(dir) {
        assert!(line.len() <= LINE_BOUND, "a {} byte line: {}...", line.len(), &line[..300]);
    }
    verify_dir(dir).expect("the trail verifies");
}

/// Syncs and rereads the trail until `done` holds (fails after 10 s).
async fn wait_for(
    dir: &Path,
    sink: &redis_audit_proxy::audit::AuditSink,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    for _ in 0..1000 {
        sink.sync();
        let lines = trail(dir);
        if done(&lines) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the audit trail never reached the expected state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m1_huge_client_names_and_user_names_are_cut_in_every_event() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-m1-names");
    let redis = RedisServer::start(&[]);
    // A 1 MiB user name, as an administrator (or a compromised one) may create.
    let long_user = format!("u{}", "x".repeat(1 << 20));
    let mut upstream = RawClient::connect(redis.addr).await;
    let setuser: [&[u8]; 7] =
        [b"ACL", b"SETUSER", long_user.as_bytes(), b"on", b"nopass", b"~*", b"+@all"];
    assert_eq!(upstream.call(&setuser).await, b"+OK\r\n");
    let (proxy, sink) = TestProxy::start_audited(redis.addr, scratch.path(), "").await;

    let name = vec![b'a'; 8 << 20];
    let mut client = RawClient::connect(proxy.addr).await;
    assert_eq!(client.call(&[b"CLIENT", b"SETNAME", &name]).await, b"+OK\r\n");
    // A session_auth event with the new user, then an auth_failure naming a long user.
    assert_eq!(client.call(&[b"AUTH", long_user.as_bytes(), b"any"]).await, b"+OK\r\n");
    let missing = format!("{long_user}-missing");
    let refused = client.call(&[b"AUTH", missing.as_bytes(), b"pw"]).await;
    assert!(refused.starts_with(b"-WRONGPASS"), "{}", String::from_utf8_lossy(&refused));
    client.call(&[b"PING"]).await;
    let port = client.stream.local_addr().unwrap().port();
    drop(client);

    let closed = |lines: &[Value]| {
        lines.iter().any(|l| l["action"] == "session_close" && l["client"]["port"] == port)
    };
    let lines = wait_for(scratch.path(), &sink, closed).await;
    proxy.shutdown().await;
    assert_short_lines_and_intact(scratch.path());

    let mine: Vec<&Value> = lines.iter().filter(|l| l["client"]["port"] == port).collect();
    let close = mine.iter().find(|l| l["action"] == "session_close").unwrap();
    assert_eq!(close["client"]["name"].as_str().unwrap().len(), 256, "cut as command lines cut");
    assert_eq!(close["client"]["truncated"], true);
    assert_eq!(close["user"].as_str().unwrap().len(), 256);
    assert_eq!(close["user_truncated"], true);
    let auth = mine.iter().find(|l| l["action"] == "session_auth").unwrap();
    assert_eq!(auth["client"]["truncated"], true);
    assert_eq!(auth["user_truncated"], true);
    let failure = mine.iter().find(|l| l["action"] == "auth_failure").unwrap();
    assert_eq!(failure["user"].as_str().unwrap().len(), 256);
    assert_eq!(failure["user_truncated"], true);
    // The connection cuts the attempted name itself before the event is made.
    assert_eq!(failure["username"].as_str().unwrap().len(), 256);
    // The command lines already cut them; they still do.
    let setname = mine.iter().find(|l| l["kind"] == "command").unwrap();
    assert_eq!(setname["client"]["truncated"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m1_security_events_from_a_flood_stay_within_the_queue_reserve_while_the_disk_stalls() {
    crate::require_redis!();
    const QUEUE_MAX: u64 = 64 * 1024;
    const FAILURES: usize = 5_000;
    // The reserve session and security events may use past the queue's budget.
    const RESERVE: u64 = 1 << 20;
    let scratch = Scratch::new("adv-m1-backlog");
    let redis = RedisServer::start(&[]);
    let toml = format!("[audit]\nqueue_max_bytes = {QUEUE_MAX}\n");
    let (proxy, sink) = TestProxy::start_audited(redis.addr, scratch.path(), &toml).await;
    let queue_bytes = || CommandSink::stats(&*sink).unwrap().queue_bytes;

    let stall = sink.stall();
    // Each refused AUTH is a command record (dropped once the queue is full) and an
    // auth_failure security event (about 500 bytes: 2.7 MB in all, without a bound).
    let mut client = RawClient::connect(proxy.addr).await;
    let mut pipeline = Vec::new();
    for _ in 0..FAILURES {
        pipeline.extend(encode_command(&[b"AUTH", b"nosuchuser", b"pw"]));
    }
    client.send(&pipeline).await;
    for _ in 0..FAILURES {
        assert!(client.read_reply().await.starts_with(b"-WRONGPASS"));
    }
    let most = queue_bytes();
    assert!(
        // One line may pass it: the loss record queued ahead of an event.
        most <= QUEUE_MAX + RESERVE + 1024,
        "{most} bytes queued for a stalled disk (queue_max_bytes {QUEUE_MAX})"
    );
    drop(stall);
    drop(client);
    sink.sync();
    proxy.shutdown().await;

    // Nothing lost silently: the dropped events are declared, by kind, and the trail verifies.
    let lines = trail(scratch.path());
    let failures = lines.iter().filter(|l| l["action"] == "auth_failure").count() as u64;
    let declared: u64 = lines
        .iter()
        .filter(|l| l["action"] == "loss")
        .map(|l| l["lost"]["kinds"]["security"].as_u64().unwrap_or(0))
        .sum();
    assert!(declared > 0, "some auth_failure events were dropped");
    assert_eq!(failures + declared, FAILURES as u64, "each one written or declared");
    assert_short_lines_and_intact(scratch.path());
}
