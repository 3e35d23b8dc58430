//! `audit.durability = "write" | "fsync"`: a client gets a reply only after its record is in
//! the file, so a crash of the proxy never loses the record of an answered command.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::scratch::trail;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

#[tokio::test]
async fn a_reply_waits_for_its_record_in_write_mode() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    for mode in ["write", "fsync"] {
        let dir = Scratch::new(mode);
        let config = format!("[audit]\ndurability = \"{mode}\"\n");
        let (proxy, audit) = TestProxy::start_audited(redis.addr, dir.path(), &config).await;
        let mut client = RawClient::connect(proxy.addr).await;
        assert_eq!(client.call(&[b"SET", b"k", b"before"]).await, b"+OK\r\n");
        let stall = audit.stall();
        client.send_command(&[b"SET", b"k", b"during"]).await;
        let early = tokio::time::timeout(Duration::from_millis(300), client.read_reply()).await;
        assert!(early.is_err(), "{mode}: the reply came before its record was written");
        drop(stall);
        assert_eq!(client.read_reply().await, b"+OK\r\n");
        // No sync: the record is in the file because the reply arrived.
        let sets = trail(dir.path())
            .iter()
            .filter(|l| l["kind"] == "command" && l["command"]["name"] == "set")
            .count();
        assert_eq!(sets, 2, "{mode}");
        proxy.shutdown().await;
    }
}

fn call(stream: &mut TcpStream, request: &[u8]) -> Vec<u8> {
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).unwrap();
        reply.push(byte[0]);
    }
    reply
}

/// Starts the binary with `durability = mode`; returns it and a connected client.
fn start_binary(
    redis: &RedisServer,
    dir: &std::path::Path,
    mode: &str,
) -> (std::process::Child, TcpStream) {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("proxy.toml");
    std::fs::write(&config, format!("[audit]\ndurability = \"{mode}\"\n")).unwrap();
    let listen = SocketAddr::from(([127, 0, 0, 1], crate::support::redis::free_port()));
    let child = Command::new(env!("CARGO_BIN_EXE_redis-audit-proxy"))
        .args(["--config", &config.display().to_string()])
        .args(["--listen", &listen.to_string(), "--upstream", &redis.addr.to_string()])
        .args(["--audit-dir", &dir.join("trail").display().to_string()])
        .args(["--log-level", "error", "--admin", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stream = loop {
        if let Ok(stream) = TcpStream::connect(listen) {
            break stream;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (child, stream)
}

#[test]
fn after_kill_9_in_async_mode_a_restart_recovers_and_the_trail_verifies() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("kill-async");
    let (mut child, mut stream) = start_binary(&redis, dir.path(), "async");
    for _ in 0..300 {
        assert!(call(&mut stream, b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n").starts_with(b":"));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // async may lose what was queued; whatever it wrote is whole lines or one torn tail.
    let (mut child, mut stream) = start_binary(&redis, dir.path(), "async");
    assert!(call(&mut stream, b"PING\r\n").starts_with(b"+PONG"));
    child.kill().unwrap();
    child.wait().unwrap();
    let trail_dir = dir.path().join("trail");
    let report = redis_audit_proxy::audit::verify::verify_dir(&trail_dir).expect("verifies");
    assert_eq!(report.instances, 2);
    let incrs = std::fs::read_dir(&trail_dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .map(|text| text.matches("\"name\":\"incr\"").count())
        .sum::<usize>();
    assert!(incrs <= 300, "{incrs}");
}

#[test]
fn after_kill_9_every_answered_command_is_in_the_trail() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    for mode in ["write", "fsync"] {
        let dir = Scratch::new(&format!("kill-{mode}"));
        let (mut child, mut stream) = start_binary(&redis, dir.path(), mode);
        let mut answered = 0;
        for _ in 0..300 {
            let reply = call(&mut stream, b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n");
            assert!(reply.starts_with(b":"));
            answered += 1;
        }
        // Crash right after the last reply: nothing drains, nothing flushes.
        child.kill().unwrap();
        child.wait().unwrap();
        let lines = trail(&dir.path().join("trail"));
        let incrs = lines
            .iter()
            .filter(|l| l["kind"] == "command" && l["command"]["name"] == "incr")
            .count();
        assert_eq!(incrs, answered, "{mode}: answered commands missing from the trail");
        assert!(lines.iter().all(|l| l["action"] != "stop"), "it was a crash");
        let report = redis_audit_proxy::audit::verify::verify_dir(&dir.path().join("trail"))
            .expect("a crashed trail still verifies");
        assert_eq!(report.files, 1);
    }
}
