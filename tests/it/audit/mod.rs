//! The audit trail as it lands on disk (schema `redis-audit/2`, docs/audit-schema.md): every
//! command accounted for under concurrency, gapless `seq` with `loss` records for drops, a
//! `tail -F` follower that sees every line exactly once across rotations, no secrets or values
//! in any file, binary and truncated keys, and the chain continued by a restart.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis_audit_proxy::audit::AuditSink;
use serde_json::{json, Value};

use crate::support::client::encode_command;
use crate::support::scratch::{audit_files, file_lines, parse, trail, trail_lines};
use crate::support::{AuditedProxy, RawClient, TestProxy};

mod accounting;
mod contents;
mod follow;

use accounting::*;

const GENESIS: [u8; 32] = [0; 32];

fn lines(dir: &Path) -> Vec<Value> {
    trail(dir)
}

/// Syncs and rereads the files until `done` holds (fails after 5 s).
async fn wait_for(dir: &Path, sink: &AuditSink, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..500 {
        sink.sync();
        let lines = lines(dir);
        if done(&lines) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the audit trail never reached the expected state");
}

/// Waits until the sessions of the clients on these ports have their `session_close` lines.
async fn wait_for_closes(
    dir: &Path,
    sink: &AuditSink,
    ports: impl Iterator<Item = u16>,
) -> Vec<Value> {
    let ports: HashSet<u64> = ports.map(u64::from).collect();
    let closed = |lines: &[Value]| {
        lines
            .iter()
            .filter(|l| l["action"] == "session_close")
            .filter(|l| ports.contains(&l["client"]["port"].as_u64().unwrap()))
            .count()
            == ports.len()
    };
    wait_for(dir, sink, closed).await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn blake3_of(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// The seals, checked independently of the proxy's code: each seal (a `seal` line or a
/// `file_open`) has `prev` = the BLAKE3 of the seal before it (`first` before the first) and
/// `hash` = BLAKE3(that ‖ every line since, with its newline); returns the last seal's hash.
fn assert_chain(lines: &[String], first: [u8; 32]) -> [u8; 32] {
    let (mut head, mut segment, mut count) = (first, Vec::new(), 0u64);
    for (index, line) in lines.iter().enumerate() {
        let value: Value = serde_json::from_str(line).unwrap();
        let seal = value["action"] == "seal" || value["action"] == "file_open";
        if !seal {
            assert!(value.get("chain").is_none(), "only seals carry the chain: {line}");
            segment.extend_from_slice(line.as_bytes());
            segment.push(b'\n');
            count += 1;
            continue;
        }
        let chain = &value["chain"];
        assert_eq!(chain["alg"], "blake3");
        assert_eq!(chain["prev"], hex(&head), "chain broken at line {index}: {line}");
        let mut hasher = blake3::Hasher::new();
        hasher.update(&head);
        hasher.update(&segment);
        assert_eq!(chain["hash"], hex(hasher.finalize().as_bytes()), "seal at line {index}");
        assert_eq!(chain["lines"], count, "seal at line {index}");
        (head, count) = (blake3_of(line.as_bytes()), 0);
        segment.clear();
    }
    head
}

/// `seq` of the lines that have one (all but the writer's own `file_open` lines).
fn seqs(lines: &[Value]) -> Vec<u64> {
    lines.iter().filter_map(|line| line["seq"].as_u64()).collect()
}

fn is_rfc3339_micros_utc(time: &str) -> bool {
    let b = time.as_bytes();
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22, 23, 24, 25];
    b.len() == 27
        && digits.iter().all(|&i| b[i].is_ascii_digit())
        && (b[4], b[7], b[10], b[13], b[16], b[19], b[26])
            == (b'-', b'-', b'T', b':', b':', b'.', b'Z')
}

fn command_name(line: &Value) -> &str {
    line["command"]["name"].as_str().unwrap()
}

fn key_strings(line: &Value) -> Vec<String> {
    line["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key.as_str().expect("a UTF-8 key").to_owned())
        .collect()
}

#[tokio::test]
async fn a_restart_continues_the_chain_with_a_new_instance() {
    crate::require_redis!();
    let AuditedProxy { redis, dir, proxy: first, audit: sink } =
        AuditedProxy::start("restart", "").await;
    RawClient::connect(first.addr).await.call(&[b"PING"]).await;
    first.shutdown().await;
    drop(sink);
    let before = file_lines(dir.path().join("audit.log"));
    let old: Value = serde_json::from_str(&before[before.len() - 2]).unwrap();
    assert_eq!(old["action"], "stop");
    let last: Value = serde_json::from_str(before.last().unwrap()).unwrap();
    assert_eq!(last["action"], "seal", "the last line of a run is a seal over all before it");

    let (second, sink) = TestProxy::start_audited(redis.addr, dir.path(), "").await;
    RawClient::connect(second.addr).await.call(&[b"PING"]).await;
    sink.sync();
    let files = audit_files(dir.path());
    assert_eq!(files.len(), 2, "the old audit.log was rotated away: {files:?}");
    assert_eq!(file_lines(&files[0]), before, "and kept as it was");
    let after = file_lines(dir.path().join("audit.log"));
    let open: Value = serde_json::from_str(&after[0]).unwrap();
    assert_eq!(open["action"], "file_open");
    assert_eq!(open["prev_file"], files[0].file_name().unwrap().to_str().unwrap());
    assert_eq!(open["recovered_torn_line"], false);
    assert_eq!(open["chain"]["prev"], hex(&blake3_of(before.last().unwrap().as_bytes())));
    assert_eq!(open["chain"]["lines"], 0, "the old run sealed everything");
    let old_open: Value = serde_json::from_str(&before[0]).unwrap();
    assert_ne!(open["instance_id"], old_open["instance_id"], "a new instance");
    assert_chain(&trail_lines(dir.path()), GENESIS);
    let values = trail(dir.path());
    let values =
        &values[values.iter().position(|v| v["instance_id"] == open["instance_id"]).unwrap()..];
    assert_eq!(values[1]["action"], "start");
    let seq = seqs(values);
    assert_eq!(seq, (1..=seq.len() as u64).collect::<Vec<_>>(), "seq restarts at 1");
    assert!(values.iter().all(|v| v["instance_id"] == open["instance_id"]));
    second.shutdown().await;
}

#[tokio::test]
async fn a_restart_after_a_torn_line_links_to_the_last_whole_line() {
    crate::require_redis!();
    let AuditedProxy { redis, dir, proxy: first, audit: _sink } =
        AuditedProxy::start("torn", "").await;
    first.shutdown().await;
    let before = file_lines(dir.path().join("audit.log"));
    // A crash in the middle of a write leaves an unterminated line.
    let mut file =
        std::fs::OpenOptions::new().append(true).open(dir.path().join("audit.log")).unwrap();
    std::io::Write::write_all(&mut file, b"{\"time\":\"20").unwrap();
    drop(file);

    let (second, sink) = TestProxy::start_audited(redis.addr, dir.path(), "").await;
    sink.sync();
    let open: Value = serde_json::from_str(&file_lines(dir.path().join("audit.log"))[0]).unwrap();
    assert_eq!(open["action"], "file_open");
    assert_eq!(open["recovered_torn_line"], true);
    // It seals what followed the last whole seal (nothing: the run stopped cleanly), skipping
    // the torn line.
    assert_eq!(open["chain"]["prev"], hex(&blake3_of(before.last().unwrap().as_bytes())));
    assert_eq!(open["chain"]["lines"], 0);
    second.shutdown().await;
}
