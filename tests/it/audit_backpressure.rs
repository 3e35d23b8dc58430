//! `audit.on_full`: what the proxy does while the audit writer is behind (a stalled writer
//! stands for a disk slower than the traffic).

use std::time::Duration;

use crate::support::scratch::trail;
use crate::support::{AuditedProxy, RawClient};

#[tokio::test]
async fn reject_refuses_commands_it_cannot_record_and_runs_none_of_them() {
    crate::require_redis!();
    let AuditedProxy { redis, dir, proxy, audit } =
        AuditedProxy::start("reject", "[audit]\non_full = \"reject\"\nqueue_max_bytes = 4096\n")
            .await;
    let mut client = RawClient::connect(proxy.addr).await;
    let stall = audit.stall();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..40 {
        let reply = client.call(&[b"INCR", b"counter"]).await;
        if reply.starts_with(b"-ERR audit trail unavailable") {
            refused += 1;
        } else {
            assert!(reply.starts_with(b":"), "{:?}", String::from_utf8_lossy(&reply));
            accepted += 1;
        }
    }
    assert!(refused > 0 && accepted > 0, "accepted {accepted}, refused {refused}");
    drop(stall);
    audit.sync();
    // Once the writer caught up, commands run again.
    assert_eq!(
        client.call(&[b"INCR", b"counter"]).await,
        format!(":{}\r\n", accepted + 1).into_bytes()
    );
    let mut direct = RawClient::connect(redis.addr).await;
    assert_eq!(
        direct.call(&[b"GET", b"counter"]).await,
        format!("${}\r\n{}\r\n", (accepted + 1).to_string().len(), accepted + 1).into_bytes()
    );
    proxy.shutdown().await;
    // Every command that ran is recorded; refusals are recorded or declared lost.
    let lines = trail(dir.path());
    let ran = lines
        .iter()
        .filter(|l| l["kind"] == "command" && l["result"]["source"] == "upstream")
        .count();
    assert_eq!(ran, accepted + 1);
    let refused_recorded =
        lines.iter().filter(|l| l["kind"] == "command" && l["result"]["source"] == "proxy").count();
    let lost: u64 = lines
        .iter()
        .filter(|l| l["action"] == "loss")
        .map(|l| l["lost"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(refused_recorded as u64 + lost, refused as u64);
}

#[tokio::test]
async fn block_stalls_clients_until_the_writer_catches_up_and_loses_nothing() {
    crate::require_redis!();
    let AuditedProxy { redis: _redis, dir, proxy, audit } =
        AuditedProxy::start("block", "[audit]\non_full = \"block\"\nqueue_max_bytes = 4096\n")
            .await;
    let mut client = RawClient::connect(proxy.addr).await;
    let stall = audit.stall();
    // The proxy reads no more from a client while the queue is full: one command at a time,
    // the client gets stuck once the records of the first few fill the queue.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&done);
    let task = tokio::spawn(async move {
        for i in 1..=200 {
            assert_eq!(client.call(&[b"INCR", b"counter"]).await, format!(":{i}\r\n").into_bytes());
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let while_stalled = done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(while_stalled > 0 && while_stalled < 200, "{while_stalled} commands ran while stalled");
    drop(stall);
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("unblocked").unwrap();
    proxy.shutdown().await;
    let lines = trail(dir.path());
    assert_eq!(lines.iter().filter(|l| l["kind"] == "command").count(), 200);
    assert!(lines.iter().all(|l| l["action"] != "loss"), "block never drops");
}

#[tokio::test]
async fn drop_keeps_serving_and_declares_what_it_dropped() {
    crate::require_redis!();
    let AuditedProxy { redis: _redis, dir, proxy, audit } =
        AuditedProxy::start("drop", "[audit]\nqueue_max_bytes = 4096\n").await;
    let mut client = RawClient::connect(proxy.addr).await;
    let stall = audit.stall();
    for i in 1..=100 {
        assert_eq!(client.call(&[b"INCR", b"counter"]).await, format!(":{i}\r\n").into_bytes());
    }
    drop(stall);
    client.call(&[b"PING"]).await;
    proxy.shutdown().await;
    let lines = trail(dir.path());
    let recorded = lines.iter().filter(|l| l["kind"] == "command").count() as u64;
    let lost: u64 = lines
        .iter()
        .filter(|l| l["action"] == "loss")
        .map(|l| l["lost"]["count"].as_u64().unwrap())
        .sum();
    assert!(lost > 0);
    assert_eq!(recorded + lost, 101, "every command recorded or declared lost");
    let dropped = audit.stats().dropped_queue_full.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dropped, lost);
}

#[tokio::test]
async fn a_long_queue_after_a_stall_is_written_whole_and_in_order() {
    crate::require_redis!();
    let AuditedProxy { redis: _redis, dir, proxy, audit } =
        AuditedProxy::start("long-queue", "").await;
    let mut client = RawClient::connect(proxy.addr).await;
    // About 6 MiB of lines queued while the writer is held: more than one of its 4 MiB batches.
    const COMMANDS: usize = 16_000;
    let stall = audit.stall();
    let mut pipeline = Vec::new();
    for i in 0..COMMANDS {
        let key = format!("key:{i:0>40}");
        pipeline.extend(crate::support::client::encode_command(&[b"SET", key.as_bytes(), b"v"]));
    }
    client.send(&pipeline).await;
    for _ in 0..COMMANDS {
        assert_eq!(client.read_reply().await, b"+OK\r\n");
    }
    let queued = redis_audit_proxy::event::EventSink::stats(&*audit).unwrap().queue_bytes;
    assert!(queued > 5 << 20, "queued: {queued}");
    drop(stall);
    proxy.shutdown().await;
    let lines = trail(dir.path());
    let keys: Vec<String> = lines
        .iter()
        .filter(|l| l["kind"] == "command")
        .map(|l| l["keys"][0].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..COMMANDS).map(|i| format!("key:{i:0>40}")).collect();
    assert_eq!(keys, expected, "every command once, in order");
    let report = redis_audit_proxy::audit::verify::verify_dir(dir.path());
    assert!(report.is_ok(), "the chain is intact: {report:?}");
}
