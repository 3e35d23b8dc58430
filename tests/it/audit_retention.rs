//! Audit files rotate by size and by age, and retention deletes the oldest rotated files,
//! recording each deletion in the trail.

use std::time::Duration;

use crate::support::{RawClient, RedisServer, TestProxy};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rap-{tag}-{}-{}",
        std::process::id(),
        crate::support::redis::free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn rotated(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("audit-"))
        .collect();
    names.sort();
    names
}

fn all_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut files = rotated(dir);
    files.push("audit.log".into());
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(dir.join(f))
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .map(|line| serde_json::from_str(&line).expect("a JSON line"))
        .collect()
}

#[tokio::test]
async fn retention_keeps_the_newest_files_and_records_deletions() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = temp_dir("retention");
    let (proxy, audit) = TestProxy::start_audited(
        redis.addr,
        &dir,
        "[audit]\nrotate_bytes = 4096\nretain_files = 2\n",
    )
    .await;
    let mut client = RawClient::connect(proxy.addr).await;
    for i in 0..200 {
        client.call(&[b"SET", format!("key{i}").as_bytes(), b"v"]).await;
    }
    audit.sync();
    let files = rotated(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(audit.stats().deletions.load(std::sync::atomic::Ordering::Relaxed) > 0);
    let lines = all_lines(&dir);
    let deleted: Vec<&str> = lines
        .iter()
        .filter(|l| l["action"] == "file_delete")
        .map(|l| l["file"].as_str().unwrap())
        .collect();
    assert!(!deleted.is_empty());
    assert!(deleted.iter().all(|name| !files.iter().any(|f| f == name)), "deleted files are gone");
    assert!(lines
        .iter()
        .filter(|l| l["action"] == "file_delete")
        .all(|l| l["reason"] == "retain_files"));
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_active_file_rotates_by_age() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = temp_dir("interval");
    let (proxy, audit) =
        TestProxy::start_audited(redis.addr, &dir, "[audit]\nrotate_interval = 1\n").await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.call(&[b"PING"]).await;
    audit.sync();
    assert!(rotated(&dir).is_empty(), "nothing rotates before the interval");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let files = rotated(&dir);
    assert_eq!(files.len(), 1, "rotated once, then idle files are not rotated: {files:?}");
    client.call(&[b"PING"]).await;
    proxy.shutdown().await;
    let lines = all_lines(&dir);
    let pings = lines.iter().filter(|l| l["kind"] == "command").count();
    assert_eq!(pings, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn one_proxy_per_audit_directory() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = temp_dir("lock");
    let (proxy, _audit) = TestProxy::start_audited(redis.addr, &dir, "").await;
    let config = redis_audit_proxy::config::Config::validate(
        Default::default(),
        "test",
        &redis_audit_proxy::config::Overrides {
            audit_dir: Some(dir.display().to_string()),
            ..Default::default()
        },
    )
    .unwrap();
    let error = redis_audit_proxy::audit::AuditSink::open(&config).unwrap_err();
    assert!(error.to_string().contains("in use by another process"), "{error}");
    proxy.shutdown().await;
    // Released with the first proxy; a leftover of an interrupted rotation is cleaned up.
    std::fs::write(dir.join("audit.log.new"), b"").unwrap();
    let second = redis_audit_proxy::audit::AuditSink::open(&config).expect("lock released");
    assert!(!dir.join("audit.log.new").exists());
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}
