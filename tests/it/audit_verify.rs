//! `audit verify` on directories the real proxy wrote: intact ones pass with the right counts
//! (rotation, restarts, crash recovery, declared losses, retention); each kind of tampering on
//! a copy is named at its file and line, by `verify_dir` and by the binary (exit 1, one line).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use redis_audit_proxy::audit::verify::{verify_dir, Previous, Problem, VerifyError};
use serde_json::Value;
use sha2::Digest as _;

use crate::support::{AuditedProxy, RawClient, RedisServer, Scratch, TestProxy};

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

/// A command line of `file` with a command line after it (lines 3.. of the file).
fn command_line_in(dir: &Path, file: &str) -> usize {
    let all = lines(&dir.join(file));
    (2..all.len() - 1)
        .find(|&i| json(&all[i])["kind"] == "command" && json(&all[i + 1])["kind"] == "command")
        .expect("two command lines in a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_edited_byte_breaks_the_seal_over_its_line() {
    crate::require_redis!();
    let (_redis, dir) = rotated_trail("edit", 40).await;
    let (_, file) = middle_file(dir.path());
    let path = dir.path().join(&file);
    let mut all = lines(&path);
    // A command line: change one byte of its key name.
    let index = command_line_in(dir.path(), &file);
    let at = memchr::memmem::find(&all[index], b"\"key-").unwrap() + 3;
    all[index][at] = b'z';
    write_lines(&path, &all);
    let ((seal_file, seal_line), first) = covering_seal(dir.path(), &file, index as u64 + 1);
    let error = assert_broken(
        dir.path(),
        &seal_file,
        Some(seal_line),
        |problem| matches!(problem, Problem::SealMismatch { declared, found, .. } if declared == found),
    );
    let Problem::SealMismatch { first: named, .. } = error.problem else { unreachable!() };
    assert_eq!(named, Some(first), "the error names where the broken batch begins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_reordered_and_inserted_lines_are_named() {
    crate::require_redis!();
    let (_redis, dir) = rotated_trail("lines", 40).await;
    let (_, file) = middle_file(dir.path());
    let index = command_line_in(dir.path(), &file);

    let seq_of = |line: &[u8]| json(line)["seq"].as_u64().unwrap();
    let with_seq = |line: &[u8], seq: u64| {
        let mut value = json(line);
        value["seq"] = seq.into();
        serde_json::to_vec(&value).unwrap()
    };

    // Removed: the sequence names the line after it; with the sequence renumbered to hide
    // that, the seal over it still breaks, counting one line less than it sealed.
    let deleted = dir.copy("deleted-line");
    let path = deleted.path().join(&file);
    let mut all = lines(&path);
    let removed = all.remove(index);
    write_lines(&path, &all);
    let (expected, found) = (seq_of(&removed), seq_of(&removed) + 1);
    assert_broken(deleted.path(), &file, Some(index as u64 + 1), |problem| {
        *problem == Problem::SeqGap { expected, found }
    });
    for line in all.iter_mut().skip(index) {
        if json(line).get("seq").is_some() {
            *line = with_seq(line, seq_of(line) - 1);
        }
    }
    write_lines(&path, &all);
    let ((seal_file, seal_line), _) = covering_seal(deleted.path(), &file, index as u64);
    assert_broken(
        deleted.path(),
        &seal_file,
        Some(seal_line),
        |problem| matches!(problem, Problem::SealMismatch { declared, found, .. } if *declared == found + 1),
    );

    // Reordered, keeping the sequence in order: the seal over them breaks.
    let swapped = dir.copy("swapped-lines");
    let path = swapped.path().join(&file);
    let mut all = lines(&path);
    let (first, second) = (seq_of(&all[index]), seq_of(&all[index + 1]));
    (all[index], all[index + 1]) =
        (with_seq(&all[index + 1], first), with_seq(&all[index], second));
    write_lines(&path, &all);
    let ((seal_file, seal_line), _) = covering_seal(swapped.path(), &file, index as u64 + 1);
    assert_broken(
        swapped.path(),
        &seal_file,
        Some(seal_line),
        |problem| matches!(problem, Problem::SealMismatch { declared, found, .. } if declared == found),
    );

    // Inserted (a copy of a line): the sequence goes back at it.
    let inserted = dir.copy("inserted-line");
    let path = inserted.path().join(&file);
    let mut all = lines(&path);
    let copy = all[index].clone();
    all.insert(index, copy);
    write_lines(&path, &all);
    let (expected, found) = (seq_of(&all[index]) + 1, seq_of(&all[index]));
    assert_broken(inserted.path(), &file, Some(index as u64 + 2), |problem| {
        *problem == Problem::SeqBackwards { expected, found }
    });

    // A seal altered (its prev): named, with the seal before it.
    let altered = dir.copy("altered-seal");
    let path = altered.path().join(&file);
    let mut all = lines(&path);
    let mut open = json(&all[0]);
    open["chain"]["prev"] = "ab".repeat(32).into();
    all[0] = serde_json::to_vec(&open).unwrap();
    write_lines(&path, &all);
    let files = audit_files(altered.path());
    let before = files[files.iter().position(|f| *f == file).unwrap() - 1].clone();
    let last =
        positions(altered.path()).into_iter().rfind(|(f, _, seal)| *f == before && *seal).unwrap();
    assert_broken(altered.path(), &file, Some(1), |problem| {
        matches!(problem, Problem::ChainMismatch { previous: Previous::Seal(at), .. }
            if at.0 == last.0 && at.1 == last.1)
    });

    // The original is untouched and still intact.
    verify_dir(dir.path()).expect("intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_middle_file_is_named_by_the_next_header() {
    crate::require_redis!();
    let (_redis, dir) = rotated_trail("missing-file", 40).await;
    let (index, file) = middle_file(dir.path());
    let next = audit_files(dir.path())[index + 1].clone();
    std::fs::remove_file(dir.path().join(&file)).unwrap();
    assert_broken(
        dir.path(),
        &next,
        Some(1),
        |problem| matches!(problem, Problem::MissingFile { name } if *name == file),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_last_line_is_a_torn_line_nothing_recovered() {
    crate::require_redis!();
    let (_redis, dir) = rotated_trail("truncated", 40).await;
    let files = audit_files(dir.path());
    let truncate = |dir: &Path, file: &str| -> u64 {
        let path = dir.join(file);
        let all = lines(&path);
        let bytes = std::fs::read(&path).unwrap();
        let cut = bytes.len() - 1 - all.last().unwrap().len() / 2;
        std::fs::write(&path, &bytes[..cut]).unwrap();
        all.len() as u64
    };

    // A rotated file: the next file's header does not say it recovered a torn line.
    let (index, file) = middle_file(dir.path());
    let rotated = dir.copy("torn-rotated");
    let line = truncate(rotated.path(), &file);
    let next = files[index + 1].clone();
    assert_broken(rotated.path(), &file, Some(line), |problem| {
        *problem == Problem::TornNotRecovered { next: Some(next.clone()) }
    });

    // The active file: nothing after it.
    let active = dir.copy("torn-active");
    let line = truncate(active.path(), "audit.log");
    assert_broken(active.path(), "audit.log", Some(line), |problem| {
        *problem == Problem::TornNotRecovered { next: None }
    });

    // A torn line glued to the next record, in the middle of a file.
    let glued = dir.copy("torn-middle");
    let path = glued.path().join(&file);
    let mut all = lines(&path);
    let half = all[2].len() / 2;
    let tail = all.remove(3);
    all[2].truncate(half);
    all[2].extend_from_slice(&tail);
    write_lines(&path, &all);
    assert_broken(glued.path(), &file, Some(3), |problem| *problem == Problem::TornInMiddle);

    // Lines that are not JSON at all.
    for (tag, garbage) in [("garbage", &b"hello"[..]), ("blank", b"")] {
        let copy = dir.copy(tag);
        let path = copy.path().join(&file);
        let mut all = lines(&path);
        all[2] = garbage.to_vec();
        write_lines(&path, &all);
        assert_broken(copy.path(), &file, Some(3), |problem| {
            matches!(problem, Problem::NotJson { .. })
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_active_file_is_reported() {
    crate::require_redis!();
    let (_redis, dir) = rotated_trail("no-active", 40).await;
    let files = audit_files(dir.path());
    std::fs::remove_file(dir.path().join("audit.log")).unwrap();
    let last = files[files.len() - 2].clone();
    assert_broken(dir.path(), "audit.log", None, |problem| {
        *problem == Problem::NoActiveFile { last: last.clone() }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appended_forged_line_is_caught_unless_its_seal_is_recomputed() {
    crate::require_redis!();
    let (_redis, dir) = rotated_trail("forged", 40).await;
    let honest = verify_dir(dir.path()).expect("intact");
    let path = dir.path().join("audit.log");
    let all = lines(&path);
    let n = all.len();
    // A command record made from a real one, with the next seq and another key, appended
    // after the seal that ended the run.
    let files = audit_files(dir.path());
    let template = files
        .iter()
        .rev()
        .flat_map(|file| lines(&dir.path().join(file)).into_iter().rev())
        .find(|line| json(line)["kind"] == "command")
        .expect("a command line to imitate");
    let mut forged = json(&template);
    let stop = json(&all[n - 2]);
    assert_eq!(stop["action"], "stop");
    forged["seq"] = (stop["seq"].as_u64().unwrap() + 1).into();
    forged["keys"] = serde_json::json!(["forged"]);
    let mut appended = all.clone();
    appended.push(serde_json::to_vec(&forged).unwrap());
    write_lines(&path, &appended);
    assert_broken(dir.path(), "audit.log", Some(n as u64 + 1), |problem| {
        *problem == Problem::AfterFinalSeal
    });

    // Inserted before the stop and resealed, the seals alone cannot tell (they have no key):
    // the last hash kept elsewhere can.
    let mut inserted = all;
    forged["seq"] = stop["seq"].clone();
    let mut stop = stop;
    stop["seq"] = (forged["seq"].as_u64().unwrap() + 1).into();
    inserted[n - 2] = serde_json::to_vec(&forged).unwrap();
    inserted.insert(n - 1, serde_json::to_vec(&stop).unwrap());
    write_lines(&path, &inserted);
    reseal(dir.path());
    let report = verify_dir(dir.path()).expect("a resealed forgery passes");
    assert_ne!(report.last_hash, honest.last_hash, "but the anchor moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_torn_line_is_recovered_by_the_next_run() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("crash");
    record_run(&redis, dir.path(), ROTATE, 10).await;
    // Make it look like a crash mid-write: no `stop`, and half a line at the end.
    let active = dir.path().join("audit.log");
    let mut all = lines(&active);
    assert_eq!(json(&all.pop().unwrap())["action"], "seal");
    let stop = all.pop().unwrap();
    assert_eq!(json(&stop)["action"], "stop");
    // The lines the crashed run left after its last seal: the next start seals them.
    let last_seal = all.iter().rposition(|line| is_seal(line)).unwrap();
    let unsealed = (all.len() - 1 - last_seal) as u64;
    let last_seal = all[last_seal].clone();
    write_lines(&active, &all);
    let mut bytes = std::fs::read(&active).unwrap();
    bytes.extend_from_slice(&stop[..stop.len() / 2]);
    std::fs::write(&active, &bytes).unwrap();
    let torn_line = all.len() as u64 + 1;
    assert_broken(dir.path(), "audit.log", Some(torn_line), |problem| {
        *problem == Problem::TornNotRecovered { next: None }
    });
    let before = audit_files(dir.path());

    let second = record_run(&redis, dir.path(), ROTATE, 1).await;
    let report = verify_dir(dir.path()).expect("recovered");
    assert_eq!(report.torn_lines_recovered, 1);
    assert_eq!((report.instances, report.unclean_instances), (2, 1), "the first run crashed");
    assert!(report.last_instance_stopped);
    assert_eq!(report.kinds.get("command"), Some(&11));

    // The crashed file was rotated away; the next file's header records the recovery and
    // chains to the last complete line before the torn one.
    let after = audit_files(dir.path());
    let rotated: Vec<&String> = after.iter().filter(|name| !before.contains(name)).collect();
    let old_active = rotated.iter().find(|name| {
        std::fs::read(dir.path().join(name)).unwrap().ends_with(&stop[..stop.len() / 2])
    });
    let old_active = old_active.expect("the crashed audit.log, rotated").to_string();
    let position = after.iter().position(|name| *name == old_active).unwrap();
    let header = json(&lines(&dir.path().join(&after[position + 1]))[0]);
    assert_eq!(header["action"], "file_open");
    assert_eq!(header["instance_id"], second.as_str());
    assert_eq!(header["recovered_torn_line"], true);
    assert_eq!(header["prev_file"], old_active.as_str());
    assert_eq!(header["chain"]["prev"], blake3_hex(&last_seal).as_str());
    assert_eq!(header["chain"]["lines"], unsealed);

    let output = verify_binary(dir.path());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("torn lines recovered: 1"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_starts_a_new_instance_that_chains_on() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("restart");
    let first = record_run(&redis, dir.path(), ROTATE, 12).await;
    let files = audit_files(dir.path());
    let second = record_run(&redis, dir.path(), ROTATE, 7).await;
    assert_ne!(first, second);
    let report = verify_dir(dir.path()).expect("intact");
    assert_eq!((report.instances, report.unclean_instances), (2, 0));
    assert_eq!(report.kinds.get("command"), Some(&19));
    assert_eq!(report.kinds.get("system"), Some(&4), "two starts, two stops");
    assert_eq!(report.torn_lines_recovered, 0);
    assert!(report.last_instance_stopped);

    // The first run's audit.log was rotated at the second start; the next file begins the
    // second run and names it.
    let after = audit_files(dir.path());
    let old_active = after[files.len() - 1].clone();
    let header = json(&lines(&dir.path().join(&after[files.len()]))[0]);
    assert_eq!(header["instance_id"], second.as_str());
    assert_eq!(header["prev_file"], old_active.as_str());
    assert_eq!(header["recovered_torn_line"], false);

    let output = verify_binary(dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8(output.stdout).unwrap().contains("instances: 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_losses_verify_and_resealed_sequence_damage_is_named() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("losses");
    // A queue too small for any command record: every command is dropped and declared.
    record_run(&redis, dir.path(), "[audit]\nqueue_max_bytes = 1\n", 5).await;
    let report = verify_dir(dir.path()).expect("declared losses are no break");
    assert_eq!((report.loss_records, report.lost_events), (1, 5));
    assert_eq!(report.kinds.get("command"), None);
    assert_eq!(report.records, 5, "start, session open, loss, session close, stop");

    let active = lines(&dir.path().join("audit.log"));
    let actions: Vec<String> =
        active.iter().map(|line| json(line)["action"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        actions,
        ["file_open", "start", "session_open", "loss", "session_close", "stop", "seal"]
    );
    let loss = json(&active[3]);
    assert_eq!(loss["seq"], 8);
    assert_eq!(
        loss["lost"],
        serde_json::json!({"reason": "queue_full", "first_seq": 3, "last_seq": 7, "count": 5,
                           "kinds": {"command": 5}})
    );

    // Each change below is resealed (every prev recomputed), so only the sequence shows it.
    let tamper = |tag: &str, change: &dyn Fn(&mut Vec<Vec<u8>>)| {
        let copy = dir.copy(tag);
        let path = copy.path().join("audit.log");
        let mut all = lines(&path);
        change(&mut all);
        write_lines(&path, &all);
        reseal(copy.path());
        copy
    };
    let no_loss = tamper("no-loss", &|all| {
        all.remove(3);
    });
    assert_broken(no_loss.path(), "audit.log", Some(4), |problem| {
        *problem == Problem::SeqGap { expected: 3, found: 9 }
    });
    let wrong_count = tamper("loss-count", &|all| {
        let mut loss = json(&all[3]);
        loss["lost"]["count"] = 4.into();
        all[3] = serde_json::to_vec(&loss).unwrap();
    });
    assert_broken(
        wrong_count.path(),
        "audit.log",
        Some(4),
        |problem| matches!(problem, Problem::BadLoss { why } if why.contains("count is 4")),
    );
    let duplicated = tamper("duplicate", &|all| {
        let line = all[2].clone();
        all.insert(3, line);
    });
    assert_broken(duplicated.path(), "audit.log", Some(4), |problem| {
        *problem == Problem::SeqBackwards { expected: 3, found: 2 }
    });
    let headless = tamper("no-start", &|all| {
        all.remove(1);
    });
    assert_broken(headless.path(), "audit.log", Some(2), |problem| {
        matches!(problem, Problem::InstanceStart { seq: 2, .. })
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletions_are_accepted_only_when_recorded() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("retention");
    record_run(&redis, dir.path(), "[audit]\nrotate_bytes = 4096\nretain_files = 2\n", 40).await;
    let files = audit_files(dir.path());
    assert_eq!(files.len(), 3, "two rotated files and audit.log: {files:?}");
    let report = verify_dir(dir.path()).expect("retention is no break");
    let first = json(&lines(&dir.path().join(&files[0]))[0]);
    let pruned = first["prev_file"].as_str().expect("the first file follows a deleted one");
    assert_eq!(report.pruned_before.as_deref(), Some(pruned));
    assert!(report.files_deleted >= 1);

    // The oldest remaining file removed by hand: no file_delete line records it.
    std::fs::remove_file(dir.path().join(&files[0])).unwrap();
    assert_broken(dir.path(), &files[1], Some(1), |problem| {
        *problem == Problem::UnrecordedDeletion { name: files[0].clone() }
    });
}

#[test]
fn an_empty_or_missing_directory_fails_with_one_line() {
    let dir = Scratch::new("empty");
    std::fs::create_dir_all(dir.path()).unwrap();
    let error = verify_dir(dir.path()).unwrap_err();
    assert_eq!((error.file, error.line, error.problem), (None, None, Problem::EmptyDirectory));
    let output = verify_binary(dir.path());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1);
    assert!(
        stderr.starts_with(&format!("redis-audit-proxy: {}: no audit files", dir.path().display()))
    );

    let missing = dir.path().join("nope");
    let output = verify_binary(&missing);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot read the directory"), "{stderr}");
}

/// A crash between creating `audit.log` (by a rotation) and writing its header leaves an empty
/// file; the next start should chain its header to the last line before that empty file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_a_rotation_created_audit_log_is_chained_over() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("empty-active");
    record_run(&redis, dir.path(), "", 3).await;
    // What the rotation leaves when the process dies between the rename and the header.
    let stamp = redis_audit_proxy::audit::event::rfc3339_micros(std::time::SystemTime::now());
    let compact: String = stamp[..23].chars().filter(|c| *c != '-' && *c != ':').collect();
    let rotated = format!("audit-{compact}Z-0000.log");
    std::fs::rename(dir.path().join("audit.log"), dir.path().join(rotated)).unwrap();
    std::fs::write(dir.path().join("audit.log"), b"").unwrap();
    assert_broken(dir.path(), "audit.log", None, |problem| *problem == Problem::EmptyFile);

    record_run(&redis, dir.path(), "", 1).await;
    let report = verify_dir(dir.path()).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((report.empty_files, report.instances), (1, 2));
}

/// HMAC checkpoints: verified with the key; a trail rewritten with recomputed hashes passes the
/// chain but not the checkpoints.
#[tokio::test]
async fn checkpoints_catch_a_rewritten_trail() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let keys = Scratch::new("checkpoint-key");
    std::fs::create_dir_all(keys.path()).unwrap();
    let key_file = keys.path().join("key");
    std::fs::write(&key_file, "checkpoint-key-0123456789\n").unwrap();
    let dir = Scratch::new("checkpoints");
    let toml = format!(
        "[audit]\ncheckpoint_key_file = \"{}\"\ncheckpoint_records = 5\n",
        key_file.display()
    );
    record_run(&redis, dir.path(), &toml, 12).await;
    let key = b"checkpoint-key-0123456789";
    let report = redis_audit_proxy::audit::verify::verify_dir_with_key(dir.path(), Some(key))
        .expect("intact");
    assert!(report.checkpoints >= 3, "{report:?}");
    assert_eq!(report.checkpoints, report.checkpoints_verified);
    // Rewrite a command's key and recompute every seal: the chain verifies...
    let path = dir.path().join("audit.log");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let target = lines.iter().position(|l| l.contains("\"kind\":\"command\"")).unwrap();
    lines[target] = lines[target].replacen("\"keys\":[\"", "\"keys\":[\"forged-", 1);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    reseal(dir.path());
    redis_audit_proxy::audit::verify::verify_dir(dir.path()).expect("without the key it passes");
    // ...but not the checkpoints.
    let error = redis_audit_proxy::audit::verify::verify_dir_with_key(dir.path(), Some(key))
        .expect_err("the checkpoint catches it");
    assert!(error.to_string().contains("checkpoint does not verify"), "{error}");
    let wrong = redis_audit_proxy::audit::verify::verify_dir_with_key(
        dir.path(),
        Some(b"another-key-of-16+bytes"),
    )
    .expect_err("another key");
    assert!(wrong.to_string().contains("made with key"), "{wrong}");
}

/// A trail written by the previous release (`redis-audit/1`, checked in under
/// `tests/fixtures/audit-v1`: four files, a SET, an MSET, a GET, an LPUSH that failed, an
/// INCR): it verifies, a run of this version chains onto it (its `file_open` seals from the
/// last `/1` line's SHA-256), and queries return whole records from both schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_trail_verifies_and_a_v2_run_chains_onto_it() {
    crate::require_redis!();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit-v1");
    let dir = Scratch::new("v1");
    std::fs::create_dir_all(dir.path()).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let report = verify_dir(dir.path()).expect("the /1 trail verifies");
    assert_eq!((report.kinds.get("command"), report.files, report.seals), (Some(&5), 4, 0));
    assert_eq!(report.indexes, 3, "and so do its query indexes");
    let v1_last = lines(&dir.path().join("audit.log")).pop().unwrap();
    let v1_head: String =
        sha2::Sha256::digest(&v1_last).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(report.last_hash, v1_head);

    let redis = RedisServer::start(&[]);
    record_run(&redis, dir.path(), "", 2).await;
    let report = verify_dir(dir.path()).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((report.kinds.get("command"), report.instances), (Some(&7), 2));
    let files = audit_files(dir.path());
    let open = json(&lines(&dir.path().join("audit.log"))[0]);
    assert_eq!(open["schema"], "redis-audit/2");
    assert_eq!(open["prev_file"], files[files.len() - 2].as_str());
    assert_eq!(open["chain"]["prev"], v1_head.as_str());
    assert_eq!(open["chain"]["lines"], 0);

    // Queries: the same whole records from either schema.
    let query = redis_audit_proxy::query::AuditQuery::new(
        Some("2026-01-01T00:00:00Z"),
        Some("2099-01-01T00:00:00Z"),
        None,
        None,
        None,
        None,
        None,
        None,
        Some("100"),
        None,
        false,
    )
    .unwrap();
    let page = redis_audit_proxy::query::run(dir.path(), &query).unwrap();
    assert_eq!(page.total, 7);
    let (new, old) = (&page.records[0], &page.records[6]);
    assert_eq!(
        (&new["schema"], &old["schema"]),
        (&"redis-audit/2".into(), &"redis-audit/1".into())
    );
    let fields = |record: &Value| -> Vec<String> {
        let mut names: Vec<String> = record.as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    };
    // Everything but the per-line chain, which /2 replaced with seals.
    let old_fields: Vec<String> = fields(old).into_iter().filter(|f| f != "chain").collect();
    assert_eq!(fields(new), old_fields, "{new}\n{old}");
    assert_eq!(fields(&new["command"]), fields(&old["command"]));
    assert_eq!(new["command"]["categories"], old["command"]["categories"], "both SETs");
    assert_eq!(new["upstream"], redis.addr.to_string().as_str());
    assert_eq!(new["instance_id"], open["instance_id"]);
    assert_eq!((&new["key_count"], &new["keys_truncated"]), (&1.into(), &false.into()));

    // The node filter: a `/1` line names its node, a `/2` file names it once, in its first line.
    let on_node = |node: &str| {
        let query = redis_audit_proxy::query::AuditQuery::new(
            Some("2026-01-01T00:00:00Z"),
            Some("2099-01-01T00:00:00Z"),
            None,
            None,
            None,
            None,
            None,
            Some(node),
            Some("100"),
            None,
            false,
        )
        .unwrap();
        redis_audit_proxy::query::run(dir.path(), &query).unwrap().total
    };
    let here = open["node"].as_str().unwrap();
    let same = u64::from(here == "vm");
    assert_eq!(on_node(here), 2 + 5 * same, "this run's node");
    assert_eq!(on_node("vm"), 5 + 2 * same, "the fixture's node");
    assert_eq!(on_node("no-such-node"), 0);
}

/// A run that idles past `seal_interval_ms` before it stops: the seal the interval makes after
/// `stop` is the run's last line, and no empty seal follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_run_ends_with_one_seal_after_stop() {
    let AuditedProxy { redis: _redis, dir, proxy, audit: _sink } =
        AuditedProxy::start("idle-seal", "[audit]\nseal_interval_ms = 20\n").await;
    RawClient::connect(proxy.addr).await.call(&[b"PING"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    proxy.shutdown().await;
    let all = lines(&dir.path().join("audit.log"));
    let actions: Vec<Value> = all.iter().map(|line| json(line)["action"].clone()).collect();
    assert_eq!(actions[actions.len() - 2..], ["stop", "seal"], "{actions:?}");
    assert!(actions.iter().filter(|a| *a == "seal").count() >= 2, "interval seals: {actions:?}");
    let report = verify_dir(dir.path()).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(report.unsealed_lines, 0);
}

/// `audit.chain_alg = "sha256"` (for FIPS sites): its seals say so and verify, a directory
/// whose runs used different algorithms verifies, and an edit is caught as with BLAKE3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_seals_verify_and_mix_with_blake3_ones() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("sha256");
    record_run(&redis, dir.path(), "[audit]\nrotate_bytes = 4096\n", 10).await;
    let sha = "[audit]\nchain_alg = \"sha256\"\n";
    record_run(&redis, dir.path(), sha, 10).await;
    let report = verify_dir(dir.path()).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((report.kinds.get("command"), report.instances), (Some(&20), 2));
    let active = lines(&dir.path().join("audit.log"));
    let open = json(&active[0]);
    assert_eq!(open["chain"]["alg"], "sha256");
    let last = active.last().unwrap();
    assert_eq!(json(last)["chain"]["alg"], "sha256");
    let head: String = sha2::Sha256::digest(last).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(report.last_hash, head, "the head is the last seal's SHA-256");

    // The first seal of the second run closes a segment the first run opened (BLAKE3).
    let files = audit_files(dir.path());
    let second =
        files.iter().position(|f| json(&lines(&dir.path().join(f))[0])["chain"]["alg"] == "sha256");
    let second = second.expect("a file of the sha256 run");
    assert!(
        second > 0
            && json(&lines(&dir.path().join(&files[second - 1]))[0])["chain"]["alg"] == "blake3"
    );

    // One byte of a command line of the sha256 run changed: its seal breaks.
    let path = dir.path().join("audit.log");
    let mut all = active.clone();
    let index = command_line_in(dir.path(), "audit.log");
    let at = memchr::memmem::find(&all[index], b"\"key-").unwrap() + 3;
    all[index][at] = b'z';
    write_lines(&path, &all);
    let ((seal_file, seal_line), _) = covering_seal(dir.path(), "audit.log", index as u64 + 1);
    assert_broken(
        dir.path(),
        &seal_file,
        Some(seal_line),
        |problem| matches!(problem, Problem::SealMismatch { declared, found, .. } if declared == found),
    );
}
