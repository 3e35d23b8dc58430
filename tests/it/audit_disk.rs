//! A full disk under the audit trail (a small tmpfs the test mounts): lines that cannot be
//! written are kept and written once space returns; `on_error = "reject"` refuses commands
//! meanwhile; the trail stays intact and says what happened.

use std::process::Command;
use std::time::Duration;

use crate::support::scratch::trail;
use crate::support::tmpfs::Tmpfs;
use crate::support::{RawClient, RedisServer, TestProxy};

/// A proxy whose audit directory is on a 256 KiB tmpfs already 200 KiB full, with `toml`;
/// `None` where no tmpfs can be mounted.
async fn proxy_on_a_nearly_full_disk(
    redis: &RedisServer,
    toml: &str,
) -> Option<(
    Tmpfs,
    std::path::PathBuf,
    TestProxy,
    std::sync::Arc<redis_audit_proxy::audit::AuditSink>,
)> {
    let disk = Tmpfs::mount(256 * 1024)?;
    std::fs::write(disk.path().join("filler"), vec![0u8; 200 * 1024]).unwrap();
    let dir = disk.path().join("trail");
    let (proxy, audit) = TestProxy::start_audited(redis.addr, &dir, toml).await;
    Some((disk, dir, proxy, audit))
}

#[tokio::test]
async fn a_full_disk_keeps_the_lines_and_writes_them_when_space_returns() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let toml = "[audit]\non_error = \"reject\"\n";
    let Some((disk, dir, proxy, audit)) = proxy_on_a_nearly_full_disk(&redis, toml).await else {
        let how = "run the tests as root, as CI does";
        crate::support::skip::missing("a small tmpfs (mounting needs root)", how);
        return;
    };
    let filler = disk.path().join("filler");
    let mut client = RawClient::connect(proxy.addr).await;
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..3000 {
        let reply = client.call(&[b"SET", format!("key:{i}").as_bytes(), b"v"]).await;
        if reply.starts_with(b"-ERR audit trail unavailable") {
            refused += 1;
            if refused == 5 {
                break;
            }
        } else {
            assert_eq!(reply, b"+OK\r\n");
            accepted += 1;
        }
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(refused, 5, "the disk never filled up ({accepted} accepted)");
    assert!(audit.stats().write_errors.load(std::sync::atomic::Ordering::Relaxed) > 0);
    // Space returns: the kept lines are written, and commands run again.
    std::fs::remove_file(&filler).unwrap();
    let mut again = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if client.call(&[b"SET", b"after", b"v"]).await == b"+OK\r\n" {
            again = true;
            break;
        }
    }
    assert!(again, "commands still refused after space returned");
    proxy.shutdown().await;
    let report = redis_audit_proxy::audit::verify::verify_dir(&dir).expect("the trail is intact");
    assert_eq!(report.lost_events, 0, "nothing was dropped: the lines were kept");
    let lines = trail(&dir);
    let ran = lines
        .iter()
        .filter(|l| l["kind"] == "command" && l["result"]["source"] == "upstream")
        .count();
    assert_eq!(ran, accepted + 1, "every command that ran is recorded");
    let actions: Vec<&str> = lines.iter().filter_map(|l| l["action"].as_str()).collect();
    assert!(actions.contains(&"sink_failed") && actions.contains(&"sink_recovered"), "{actions:?}");
}

#[test]
fn on_error_shutdown_stops_the_proxy_with_status_1() {
    use std::io::{Read, Write};
    crate::require_redis!();
    let Some(disk) = Tmpfs::mount(128 * 1024) else {
        let how = "run the tests as root, as CI does";
        crate::support::skip::missing("a small tmpfs (mounting needs root)", how);
        return;
    };
    let redis = RedisServer::start(&[]);
    std::fs::write(disk.path().join("filler"), vec![0u8; 110 * 1024]).unwrap();
    let config = disk.path().join("proxy.toml");
    std::fs::write(&config, "[audit]\non_error = \"shutdown\"\n").unwrap();
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], crate::support::redis::free_port()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-audit-proxy"))
        .args(["--config", &config.display().to_string(), "--listen", &listen.to_string()])
        .args(["--upstream", &redis.addr.to_string(), "--log-level", "error"])
        .args(["--admin", "127.0.0.1:0"])
        .args(["--audit-dir", &disk.path().join("trail").display().to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stream = loop {
        if let Ok(stream) = std::net::TcpStream::connect(listen) {
            break stream;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut exit = None;
    for _ in 0..3000 {
        if stream.write_all(b"PING\r\n").is_err() {
            break;
        }
        let mut reply = [0u8; 7];
        if stream.read_exact(&mut reply).is_err() {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            exit = Some(status);
            break;
        }
    }
    let status = match exit {
        Some(status) => status,
        None => {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                assert!(std::time::Instant::now() < deadline, "the proxy did not stop");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("audit trail failed"), "{stderr}");
}

#[tokio::test]
async fn on_error_continue_keeps_serving_and_declares_what_did_not_fit() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let toml = "[audit]\nqueue_max_bytes = 65536\n";
    let Some((disk, dir, proxy, audit)) = proxy_on_a_nearly_full_disk(&redis, toml).await else {
        let how = "run the tests as root, as CI does";
        crate::support::skip::missing("a small tmpfs (mounting needs root)", how);
        return;
    };
    let filler = disk.path().join("filler");
    let mut client = RawClient::connect(proxy.addr).await;
    // Far more than fits on the disk: every command is served all the same.
    for i in 0..1500 {
        assert_eq!(client.call(&[b"SET", format!("key:{i}").as_bytes(), b"v"]).await, b"+OK\r\n");
    }
    assert!(audit.stats().write_errors.load(std::sync::atomic::Ordering::Relaxed) > 0);
    std::fs::remove_file(&filler).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.shutdown().await;
    let report = redis_audit_proxy::audit::verify::verify_dir(&dir).expect("the trail is intact");
    let lines = trail(&dir);
    let recorded = lines.iter().filter(|l| l["kind"] == "command").count() as u64;
    assert!(report.lost_events > 0, "the queue filled while the disk was full");
    assert_eq!(recorded + report.lost_events, 1500, "every command recorded or declared lost");
}
