//! The audit-trail findings of the December 2026 security review (`security-2026-12.md`), M1,
//! M5 and M7, played against the real proxy and trail: client strings cannot make huge lines
//! or an unbounded backlog (M1), index sidecars are checked against their file before a query
//! trusts them (M5), and a flood of refusals cannot push older evidence out (M7).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use redis_audit_proxy::audit::event::rfc3339_micros;
use redis_audit_proxy::audit::index::sidecar;
use redis_audit_proxy::audit::index::{Bitmaps, Summary};
use redis_audit_proxy::audit::verify::{verify_dir, Problem};
use redis_audit_proxy::event::EventSink;
use redis_audit_proxy::query::AuditQuery;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::client::encode_command;
use crate::support::scratch::{rotated_files, trail, trail_lines};
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
    let queue_bytes = || EventSink::stats(&*sink).unwrap().queue_bytes;

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

/// `yyyy-MM-ddTHH:mm:ssZ` of `time` plus `shift` seconds (a query bound).
fn query_time(time: SystemTime, shift: i64) -> String {
    let time = if shift >= 0 {
        time + Duration::from_secs(shift as u64)
    } else {
        time - Duration::from_secs(shift.unsigned_abs())
    };
    format!("{}Z", &rfc3339_micros(time)[..19])
}

/// Matching command records over the whole directory, as `audit query` and the API count them.
fn total(dir: &Path, range: &(String, String), user: Option<&str>, db: Option<&str>) -> u64 {
    let (start, end) = (Some(range.0.as_str()), Some(range.1.as_str()));
    let query = AuditQuery::new(start, end, user, None, db, None, None, None, None, None, false);
    redis_audit_proxy::query::run(dir, &query.unwrap()).unwrap().total
}

fn sidecar(file: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", file.display()))
}

fn assert_private(path: &Path) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m5_an_edited_or_misplaced_index_sidecar_is_not_trusted_by_queries() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-m5");
    let dir = scratch.path().to_owned();
    let redis = RedisServer::start(&[]);
    let mut upstream = RawClient::connect(redis.addr).await;
    let alice: [&[u8]; 7] = [b"ACL", b"SETUSER", b"alice", b"on", b"nopass", b"~*", b"+@all"];
    assert_eq!(upstream.call(&alice).await, b"+OK\r\n");
    let started = SystemTime::now();
    let (proxy, sink) =
        TestProxy::start_audited(redis.addr, &dir, "[audit]\nrotate_bytes = 8192\n").await;
    for user in ["alice", "default"] {
        let mut client = RawClient::connect(proxy.addr).await;
        client.call(&[b"AUTH", user.as_bytes(), b"x"]).await;
        for i in 0..60 {
            client.call(&[b"SET", format!("{user}:{i}").as_bytes(), b"v"]).await;
        }
    }
    sink.sync();
    proxy.shutdown().await;
    let range = (query_time(started, -5), query_time(SystemTime::now(), 5));

    // Every rotated file and its index (written off the writer's thread; waited for).
    let rotated: Vec<PathBuf> = rotated_files(&dir).iter().map(|name| dir.join(name)).collect();
    assert!(rotated.len() >= 4, "{} rotated files", rotated.len());
    for _ in 0..500 {
        if rotated.iter().all(|file| sidecar(file, ".idx").exists()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for file in &rotated {
        assert_private(&sidecar(file, ".idx"));
        assert_private(&sidecar(file, ".bits"));
    }
    let lines = trail(&dir);
    let commands = lines.iter().filter(|l| l["kind"] == "command");
    let alice_commands = commands.clone().filter(|l| l["user"] == "alice").count() as u64;
    let all_commands = commands.count() as u64;
    let expect = |why: &str| {
        assert_eq!(total(&dir, &range, None, None), all_commands, "{why}: all records");
        let alice = total(&dir, &range, Some("alice"), None);
        assert_eq!(alice, alice_commands, "{why}: alice's (counted from the index)");
        let alice_db0 = total(&dir, &range, Some("alice"), Some("0"));
        assert_eq!(alice_db0, alice_commands, "{why}: alice's on db 0 (from the bitmaps)");
    };
    expect("intact indexes");
    let report = verify_dir(&dir).expect("intact");
    assert_eq!(report.indexes, rotated.len() as u64, "every index checked against its file");

    // A rotated file holding some of alice's records (not the first: its neighbour's index is
    // the misplaced one below).
    let victim = rotated
        .iter()
        .skip(1)
        .find(|file| std::fs::read_to_string(file).unwrap().contains("\"user\":\"alice\""))
        .expect("a rotated file with alice's records")
        .clone();
    let (idx, bits) = (sidecar(&victim, ".idx"), sidecar(&victim, ".bits"));
    let edit = |change: &dyn Fn(&mut Value)| {
        let mut summary: Value = serde_json::from_slice(&std::fs::read(&idx).unwrap()).unwrap();
        change(&mut summary);
        std::fs::write(&idx, serde_json::to_vec(&summary).unwrap()).unwrap();
    };
    edit(&|summary| summary["commands"] = 0.into());
    expect("an index saying the file holds no command");
    edit(&|summary| {
        summary["first_time"] = "2000-01-01T00:00:00.000000Z".into();
        summary["last_time"] = "2000-01-01T00:00:01.000000Z".into();
    });
    expect("an index moving the file's time range out of the query's");
    edit(&|summary| summary["facets"]["user"]["\"alice\""] = 0.into());
    expect("an index hiding one user's records");
    std::fs::write(&bits, b"").unwrap();
    expect("emptied bitmaps");
    // A neighbour's index, sealed and intact, but of another file.
    std::fs::copy(sidecar(&rotated[0], ".idx"), &idx).unwrap();
    std::fs::copy(sidecar(&rotated[0], ".bits"), &bits).unwrap();
    expect("another file's index");
    // An index edited by someone who knows its layout and reseals it passes a query's checks
    // (the seal has no key), but not `audit verify`, which compares every index with the
    // index its file's lines make.
    let mut forged: Summary = serde_json::from_slice(&std::fs::read(&idx).unwrap()).unwrap();
    forged.commands = 0;
    let bitmaps = Bitmaps::decode(&std::fs::read(&bits).unwrap()).unwrap();
    let facts = forged.file.clone();
    sidecar::seal(&mut forged, &bitmaps, facts);
    std::fs::write(&idx, serde_json::to_vec(&forged).unwrap()).unwrap();
    let error = verify_dir(&dir).expect_err("a resealed index is caught");
    assert!(matches!(error.problem, Problem::IndexMismatch { .. }), "{error}");
    assert_eq!(error.file.as_deref(), victim.file_name().unwrap().to_str());
    std::fs::remove_file(&idx).unwrap();
    expect("the index deleted");
    // The file itself cut short (its index no longer describes it): read, not counted.
    let text = std::fs::read(&victim).unwrap();
    let cut =
        text.len() - 1 - text[..text.len() - 1].iter().rev().position(|&b| b == b'\n').unwrap();
    let lost = text[cut..].windows(15).filter(|w| w == b"\"kind\":\"command").count() as u64;
    std::fs::write(&victim, &text[..cut]).unwrap();
    assert_eq!(total(&dir, &range, None, None), all_commands - lost, "a truncated file is read");

    // The indexes rebuilt by those queries are private too.
    assert_private(&idx);
    assert_private(&bits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m7_a_pre_auth_flood_cannot_push_older_evidence_out_through_retention() {
    crate::require_redis!();
    const PINGS: u64 = 200_000;
    const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
    let scratch = Scratch::new("adv-m7");
    let dir = scratch.path().join("audit");
    let users = scratch.users_file("user default off\nuser alice on >secret ~* &* +@all\n");
    let behind = RedisServer::start(&["--requirepass", "service-secret"]);
    // Without grouping, 200,000 records (about 100 MB) would rotate through these files many
    // times over: the trail keeps about 256 KiB.
    let toml = format!(
        "[auth]\nmode = \"proxy\"\nusers_file = \"{}\"\nupstream_user = \"default\"\n\
         upstream_password = \"service-secret\"\n[audit]\nrotate_bytes = 65536\nretain_files = 3\n",
        users.display()
    );
    let (proxy, sink) = TestProxy::start_audited(behind.addr, &dir, &toml).await;

    // The evidence: a write by an authenticated user, before the flood.
    let mut alice = RawClient::connect(proxy.addr).await;
    assert_eq!(alice.call(&[b"AUTH", b"alice", b"secret"]).await, b"+OK\r\n");
    assert_eq!(alice.call(&[b"SET", b"evidence", b"v"]).await, b"+OK\r\n");

    // The flood: inline PINGs from an unauthenticated client, its replies read by a task of
    // their own so that the proxy's back-pressure never slows it down.
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let port = stream.local_addr().unwrap().port();
    let (mut from_proxy, mut to_proxy) = stream.into_split();
    let replies = tokio::spawn(async move {
        let (mut read, mut buffer) = (0u64, vec![0u8; 1 << 16]);
        let want = PINGS * NOAUTH.len() as u64;
        while read < want {
            let n = tokio::time::timeout(Duration::from_secs(30), from_proxy.read(&mut buffer))
                .await
                .expect("replies keep coming")
                .unwrap();
            assert!(n > 0, "closed after {read} bytes of replies");
            read += n as u64;
        }
        read
    });
    let chunk = b"PING\n".repeat(10_000);
    for _ in 0..PINGS / 10_000 {
        to_proxy.write_all(&chunk).await.unwrap();
    }
    assert_eq!(replies.await.unwrap(), PINGS * NOAUTH.len() as u64, "one -NOAUTH per PING");
    drop(to_proxy);
    // The group of repeats is recorded when its connection closes.
    let closed = |lines: &[Value]| {
        lines.iter().any(|l| l["action"] == "session_close" && l["client"]["port"] == port)
    };
    let lines = wait_for(&dir, &sink, closed).await;
    drop(alice);
    proxy.shutdown().await;

    let evidence = lines.iter().find(|l| {
        l["kind"] == "command"
            && l["user"] == "alice"
            && l["keys"] == serde_json::json!(["evidence"])
    });
    assert!(evidence.is_some(), "the early record survived the flood");
    let pings: Vec<&Value> =
        lines.iter().filter(|l| l["kind"] == "command" && l["client"]["port"] == port).collect();
    assert!(pings.len() <= 3, "{} records for the flood", pings.len());
    assert!(pings.iter().all(|l| l["result"]["error_code"] == "NOAUTH"));
    let counted: u64 = pings.iter().map(|l| l["count"].as_u64().unwrap_or(1)).sum();
    assert_eq!(counted, PINGS, "the records account for every PING");
    let deletions = lines.iter().filter(|l| l["action"] == "file_delete").count();
    assert_eq!(deletions, 0, "nothing rotated out");
    verify_dir(&dir).expect("the trail verifies");
}
