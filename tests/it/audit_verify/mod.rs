//! `audit verify` on directories the real proxy wrote: intact ones pass with the right counts
//! (rotation, restarts, crash recovery, declared losses, retention); each kind of tampering on
//! a copy is named at its file and line, by `verify_dir` and by the binary (exit 1, one line).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use redis_audit_proxy::audit::verify::{verify_dir, Previous, Problem, VerifyError};
use serde_json::Value;
use sha2::Digest as _;

use crate::support::{AuditedProxy, RawClient, RedisServer, Scratch, TestProxy};

mod edits;
mod formats;
mod runs;

use edits::*;

const BINARY: &str = env!("CARGO_BIN_EXE_redis-audit-proxy");

/// Small files, so that a few dozen commands span several of them.
const ROTATE: &str = "[audit]\nrotate_bytes = 4096\n";

/// One proxy run on `dir`: start, `commands` SETs on one connection, graceful shutdown
/// (`stop` written, writer closed). Returns the run's instance id.
async fn record_run(redis: &RedisServer, dir: &Path, toml: &str, commands: usize) -> String {
    let (proxy, sink) = TestProxy::start_audited(redis.addr, dir, toml).await;
    let mut client = RawClient::connect(proxy.addr).await;
    for i in 0..commands {
        let key = format!("key-{i:03}");
        assert_eq!(client.call(&[b"SET", key.as_bytes(), b"value"]).await, b"+OK\r\n");
    }
    drop(client);
    proxy.shutdown().await;
    sink.envelope.instance_id.clone()
}

/// The audit files in rotation order, independently of the verifier.
fn audit_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("audit-") && name.ends_with(".log"))
        .collect();
    names.sort();
    if dir.join("audit.log").exists() {
        names.push("audit.log".to_owned());
    }
    names
}

/// The complete lines of a file (without their `\n`).
fn lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes.last(), Some(&b'\n'), "{} ends with a whole line", path.display());
    bytes[..bytes.len() - 1].split(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut bytes = Vec::new();
    for line in lines {
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }
    std::fs::write(path, bytes).unwrap();
}

fn json(line: &[u8]) -> Value {
    serde_json::from_slice(line).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn blake3_hex(bytes: &[u8]) -> String {
    hex(blake3::hash(bytes).as_bytes())
}

fn is_seal(line: &[u8]) -> bool {
    let value = json(line);
    value["action"] == "seal" || value["action"] == "file_open"
}

/// Recomputes every seal in order (its `prev`, `lines` and `hash`), as a forger who rewrites
/// the whole trail would: only the sequence checks can then catch what was changed.
fn reseal(dir: &Path) {
    let (mut head, mut segment, mut count) = ([0u8; 32], Vec::new(), 0u64);
    for name in audit_files(dir) {
        let path = dir.join(&name);
        let mut all = lines(&path);
        for line in &mut all {
            if !is_seal(line) {
                segment.extend_from_slice(line);
                segment.push(b'\n');
                count += 1;
                continue;
            }
            let mut value = json(line);
            let mut hasher = blake3::Hasher::new();
            hasher.update(&head);
            hasher.update(&segment);
            value["chain"]["prev"] = hex(&head).into();
            value["chain"]["lines"] = count.into();
            value["chain"]["hash"] = hex(hasher.finalize().as_bytes()).into();
            *line = serde_json::to_vec(&value).unwrap();
            head = *blake3::hash(line).as_bytes();
            (segment, count) = (Vec::new(), 0);
        }
        write_lines(&path, &all);
    }
}

/// Every line of the trail in order, as (file, 1-based line, is a seal).
fn positions(dir: &Path) -> Vec<(String, u64, bool)> {
    let mut out = Vec::new();
    for name in audit_files(dir) {
        for (i, line) in lines(&dir.join(&name)).iter().enumerate() {
            out.push((name.clone(), i as u64 + 1, is_seal(line)));
        }
    }
    out
}

/// The seal that covers the line at (`file`, `line`), and the first line it covers.
fn covering_seal(dir: &Path, file: &str, line: u64) -> ((String, u64), (String, u64)) {
    let all = positions(dir);
    let at = all.iter().position(|(f, l, _)| f == file && *l == line).unwrap();
    let seal = all[at..].iter().find(|(_, _, seal)| *seal).expect("a seal after it");
    let start = all[..at].iter().rposition(|(_, _, seal)| *seal).map_or(0, |i| i + 1);
    ((seal.0.clone(), seal.1), (all[start].0.clone(), all[start].1))
}

fn verify_binary(dir: &Path) -> Output {
    Command::new(BINARY)
        .args(["audit", "verify", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BINARY}: {e}"))
}

/// `verify_dir` fails at `file`:`line` with a problem `expected` accepts, and the binary
/// prints that place on one stderr line and exits 1.
fn assert_broken(
    dir: &Path,
    file: &str,
    line: Option<u64>,
    expected: impl Fn(&Problem) -> bool,
) -> VerifyError {
    let error = verify_dir(dir).expect_err("the damage must be detected");
    assert_eq!((error.file.as_deref(), error.line), (Some(file), line), "{error}");
    assert!(expected(&error.problem), "unexpected problem: {error}");

    let output = verify_binary(dir);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    let place = match line {
        Some(line) => format!("{}:{line}: ", dir.join(file).display()),
        None => format!("{}: ", dir.join(file).display()),
    };
    assert!(stderr.starts_with(&format!("redis-audit-proxy: {place}")), "{stderr}");
    assert!(stderr.contains(&error.problem.to_string()), "{stderr}");
    error
}

/// A directory of one proxy run with `commands` SETs over several files.
async fn rotated_trail(tag: &str, commands: usize) -> (RedisServer, Scratch) {
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new(tag);
    record_run(&redis, dir.path(), ROTATE, commands).await;
    let files = audit_files(dir.path());
    assert!(files.len() >= 4, "several files: {files:?}");
    (redis, dir)
}

/// A rotated file in the middle of the trail, with enough lines to tamper inside it.
fn middle_file(dir: &Path) -> (usize, String) {
    let files = audit_files(dir);
    let index = files.len() / 2;
    assert!(index > 0 && index + 1 < files.len());
    assert!(lines(&dir.join(&files[index])).len() >= 5, "{} has a few lines", files[index]);
    (index, files[index].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intact_trail_verifies_with_its_counts() {
    crate::require_redis!();
    let (_redis, dir) = rotated_trail("intact", 40).await;
    let files = audit_files(dir.path());
    let report = verify_dir(dir.path()).expect("intact");
    assert_eq!(report.files, files.len());
    assert_eq!(report.kinds.get("command"), Some(&40));
    assert_eq!(report.kinds.get("session"), Some(&2), "one session open and close");
    assert_eq!(report.kinds.get("system"), Some(&2), "start and stop");
    assert_eq!(report.records, 44);
    assert_eq!(report.markers, report.seals, "file_open and seal lines, no deletion");
    assert!(report.seals > files.len() as u64, "a file_open per file, and the last seal");
    assert_eq!(report.unsealed_lines, 0, "a stopped run ends with a seal");
    assert_eq!(report.lines, report.records + report.markers);
    assert_eq!((report.instances, report.unclean_instances), (1, 0));
    assert!(report.last_instance_stopped);
    assert_eq!((report.loss_records, report.lost_events, report.torn_lines_recovered), (0, 0, 0));
    assert_eq!(report.pruned_before, None);
    let last = lines(&dir.path().join("audit.log")).pop().unwrap();
    assert_eq!(json(&last)["action"], "seal");
    assert_eq!(report.last_hash, blake3_hex(&last));

    let output = verify_binary(dir.path());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stderr.is_empty());
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let intact = format!("{}: intact: {} files, ", dir.path().display(), files.len());
    assert!(stdout.starts_with(&intact), "{stdout}");
    assert!(stdout.contains("44 records (40 command, 2 session, 2 system)"), "{stdout}");
    assert!(stdout.contains("instances: 1, declared losses: 0"), "{stdout}");
}
