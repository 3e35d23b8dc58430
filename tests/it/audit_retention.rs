//! Audit files rotate by size and by age, and retention deletes the oldest rotated files,
//! recording each deletion in the trail.

use std::time::Duration;

use crate::support::scratch::{rotated_files, trail};
use crate::support::{AuditedProxy, RawClient};

#[tokio::test]
async fn retention_keeps_the_newest_files_and_records_deletions() {
    crate::require_redis!();
    let AuditedProxy { redis: _redis, dir, proxy, audit } =
        AuditedProxy::start("retention", "[audit]\nrotate_bytes = 4096\nretain_files = 2\n").await;
    let mut client = RawClient::connect(proxy.addr).await;
    for i in 0..200 {
        client.call(&[b"SET", format!("key{i}").as_bytes(), b"v"]).await;
    }
    audit.sync();
    let files = rotated_files(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(audit.stats().deletions.load(std::sync::atomic::Ordering::Relaxed) > 0);
    let lines = trail(dir.path());
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
}

#[tokio::test]
async fn the_active_file_rotates_by_age() {
    crate::require_redis!();
    let AuditedProxy { redis: _redis, dir, proxy, audit } =
        AuditedProxy::start("interval", "[audit]\nrotate_interval = 1\n").await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.call(&[b"PING"]).await;
    audit.sync();
    assert!(rotated_files(dir.path()).is_empty(), "nothing rotates before the interval");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let files = rotated_files(dir.path());
    assert_eq!(files.len(), 1, "rotated once, then idle files are not rotated: {files:?}");
    client.call(&[b"PING"]).await;
    proxy.shutdown().await;
    let lines = trail(dir.path());
    let pings = lines.iter().filter(|l| l["kind"] == "command").count();
    assert_eq!(pings, 2);
}

#[tokio::test]
async fn one_proxy_per_audit_directory() {
    crate::require_redis!();
    let AuditedProxy { redis: _redis, dir, proxy, audit: _audit } =
        AuditedProxy::start("lock", "").await;
    let config = redis_audit_proxy::config::Config::validate(
        Default::default(),
        "test",
        &redis_audit_proxy::config::Overrides {
            audit_dir: Some(dir.path().display().to_string()),
            ..Default::default()
        },
    )
    .unwrap();
    let error = redis_audit_proxy::audit::AuditSink::open(
        &config.audit,
        &config.upstream.address,
        config.proxy.listen,
    )
    .unwrap_err();
    assert!(error.to_string().contains("in use by another process"), "{error}");
    proxy.shutdown().await;
    // Released with the first proxy; a leftover of an interrupted rotation is cleaned up.
    std::fs::write(dir.path().join("audit.log.new"), b"").unwrap();
    let second = redis_audit_proxy::audit::AuditSink::open(
        &config.audit,
        &config.upstream.address,
        config.proxy.listen,
    )
    .expect("lock released");
    assert!(!dir.path().join("audit.log.new").exists());
    drop(second);
}

#[tokio::test]
async fn the_trail_rotates_on_request_and_stays_verifiable() {
    crate::require_redis!();
    let AuditedProxy { redis: _redis, dir, proxy, audit } = AuditedProxy::start("reopen", "").await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.call(&[b"PING"]).await;
    audit.reopen();
    client.call(&[b"PING"]).await;
    proxy.shutdown().await;
    assert_eq!(rotated_files(dir.path()).len(), 1);
    let report = redis_audit_proxy::audit::verify::verify_dir(dir.path()).expect("intact");
    assert_eq!(report.files, 2);
}
