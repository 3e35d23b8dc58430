//! Audit queries (`GET /api/v1/audit-records` and `audit query`) over a trail the proxy wrote
//! with real clients: each filter against a count made from the files themselves, paging
//! edges, every error code, API keys, the CLI and the API giving the same answer, and rotated
//! files skipped through their index.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use redis_audit_proxy::audit::index::{self, sidecar};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::scratch::trail;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

const BINARY: &str = env!("CARGO_BIN_EXE_redis-audit-proxy");

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn utc_now_minus(seconds: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    utc_at(now - seconds)
}

/// `yyyy-MM-ddTHH:mm:ssZ` of a Unix time in seconds.
fn utc_at(seconds: u64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_secs(seconds);
    let text = redis_audit_proxy::audit::event::rfc3339_micros(time);
    format!("{}Z", &text[..19])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_paging_errors_and_the_cli_agree() {
    crate::require_redis!();
    let scratch = Scratch::new("query");
    let dir = scratch.path().join("audit");
    let redis = RedisServer::start(&[]);
    let mut admin = RawClient::connect(redis.addr).await;
    for user in [&b"alice"[..], b"bob"] {
        admin.call(&[b"ACL", b"SETUSER", user, b"on", b"nopass", b"~*", b"&*", b"+@all"]).await;
    }
    let toml = "[audit]\nrotate_bytes = 20000\n[admin]\nmetrics_api_key = \"scraper\"\nmetrics_api_secret = \"m\"\napi_key = \"ops\"\napi_secret = \"s\"\nopen_endpoints = []\n";
    let (proxy, sink) = TestProxy::start_audited(redis.addr, &dir, toml).await;
    let start = utc_now_minus(5);
    for (user, db, count) in [("alice", "0", 70), ("bob", "3", 45), ("default", "0", 25)] {
        let mut client = RawClient::connect(proxy.addr).await;
        if user != "default" {
            client.call(&[b"AUTH", user.as_bytes(), b"x"]).await;
        }
        client.call(&[b"SELECT", db.as_bytes()]).await;
        for i in 0..count {
            let key = format!("{user}:{i}");
            client.call(&[b"SET", key.as_bytes(), b"v"]).await;
            client.call(&[b"GET", key.as_bytes()]).await;
        }
        // One error each (WRONGTYPE), for the Status filter.
        let key = format!("{user}:0");
        client.call(&[b"LPUSH", key.as_bytes(), b"x"]).await;
        client.call(&[b"CONFIG", b"GET", b"maxmemory"]).await;
    }
    sink.sync();
    let end_seconds =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // The second after the last command: a range from it holds none of them (the minute
    // rolls over like any other second).
    let (end, after_end) = (utc_at(end_seconds), utc_at(end_seconds + 1));
    let lines = trail(&dir);
    let commands: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "command").collect();
    let rotated = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with("audit-")
                && e.file_name().to_string_lossy().ends_with(".log")
        })
        .count();
    assert!(rotated >= 3, "several rotated files: {rotated}");
    // The writer indexes each file it rotates, off its own thread.
    let indexed = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log.idx"))
            .count()
    };
    for _ in 0..500 {
        if indexed() >= rotated {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(indexed(), rotated, "an index beside every rotated file");
    // The writer's index of each file, made as it wrote the file, is what reading it gives.
    for entry in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("audit-") && name.ends_with(".log") {
            let path = entry.path();
            let (summary, bitmaps) = index::build(&path).unwrap();
            assert!(summary.commands > 0, "{name}");
            assert_eq!(sidecar::summary(&path).unwrap(), summary, "{name}");
            assert_eq!(sidecar::bitmaps(&path).unwrap(), bitmaps, "{name}");
        }
    }
    let count = |pred: &dyn Fn(&Value) -> bool| commands.iter().filter(|r| pred(r)).count() as u64;
    let ops = [("x-api-key", "ops"), ("x-api-secret-key", "s")];
    let range = format!("StartTime={start}&EndTime={after_end}");
    let api = |extra: &str| format!("/api/v1/audit-records?{range}{extra}");

    let (status, all) = get(proxy.admin_addr(), &api(""), &ops).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["TotalRecordCount"], count(&|_| true));
    // Status, the one filter beyond Tair's: the indexes cannot count it, the files are read.
    let errors = count(&|r| r["result"]["status"] == "error");
    assert_eq!(errors, 3);
    for (extra, want) in [
        ("&Status=error", errors),
        ("&Status=ok", count(&|r| r["result"]["status"] == "ok")),
        ("&Status=error&AccountName=alice", 1),
    ] {
        let (status, page) = get(proxy.admin_addr(), &api(extra), &ops).await;
        assert_eq!(
            (status, page["TotalRecordCount"].as_u64()),
            (200, Some(want)),
            "{extra}: {page}"
        );
    }
    let (status, refused) = get(proxy.admin_addr(), &api("&Status=fine"), &ops).await;
    assert_eq!((status, refused["Code"].as_str()), (400, Some("InvalidStatus.Malformed")));
    assert_eq!(all["PageSize"], 30);
    assert_eq!(all["Items"]["SQL"].as_array().unwrap().len(), 30);
    let first = &all["Items"]["SQL"][0];
    assert_eq!(first["SQLText"], "CONFIG GET", "newest first: {first}");
    for (extra, expected) in [
        ("&AccountName=alice", count(&|r| r["user"] == "alice")),
        ("&AccountName=bob&DatabaseName=3", count(&|r| r["user"] == "bob" && r["db"] == 3)),
        ("&DatabaseName=3", count(&|r| r["db"] == 3)),
        ("&QueryKeywords=GET", count(&|r| r["command"]["name"] == "get")),
        ("&QueryKeywords=config", count(&|r| r["command"]["name"] == "config")),
        ("&SQLType=write", count(&|r| r["command"]["class"] == "write")),
        ("&SQLType=non_read_write", count(&|r| r["command"]["class"] == "non_read_write")),
        ("&HostAddress=127.0.0.1", count(&|_| true)),
        ("&HostAddress=10.0.0.1", 0),
    ] {
        let (status, page) = get(proxy.admin_addr(), &api(extra), &ops).await;
        assert_eq!(status, 200, "{extra}: {page}");
        assert_eq!(page["TotalRecordCount"], expected, "{extra}");
        assert!(expected > 0 || extra.contains("10.0.0.1"), "{extra} selects something");
    }
    // Paging: pages follow each other without overlap; past the end, no items but the total.
    let (_, page1) = get(proxy.admin_addr(), &api("&PageSize=50&PageNumber=1"), &ops).await;
    let (_, page2) = get(proxy.admin_addr(), &api("&PageSize=50&PageNumber=2"), &ops).await;
    let texts = |p: &Value| {
        p["Items"]["SQL"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["SQLText"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(&page1).len(), 50);
    assert!(
        texts(&page2).iter().all(|t| !texts(&page1).contains(t) || t.starts_with("CONFIG")),
        "no overlap"
    );
    let last = (count(&|_| true) / 100) + 2;
    let (_, beyond) =
        get(proxy.admin_addr(), &api(&format!("&PageSize=100&PageNumber={last}")), &ops).await;
    assert_eq!(beyond["Items"]["SQL"].as_array().unwrap().len(), 0);
    assert_eq!(beyond["TotalRecordCount"], count(&|_| true));
    // Every error code.
    for (path, code) in [
        (format!("/api/v1/audit-records?EndTime={end}"), "InvalidStartTime.Malformed"),
        (
            format!("/api/v1/audit-records?StartTime=yesterday&EndTime={end}"),
            "InvalidStartTime.Malformed",
        ),
        (format!("/api/v1/audit-records?StartTime={start}"), "InvalidEndTime.Malformed"),
        (
            format!("/api/v1/audit-records?StartTime={end}&EndTime={start}"),
            "InvalidEndTime.Malformed",
        ),
        (
            "/api/v1/audit-records?StartTime=2026-01-01T00:00:00Z&EndTime=2026-01-03T00:00:00Z"
                .to_owned(),
            "InvalidEndTime.Malformed",
        ),
        (api("&PageSize=10"), "InvalidPageSize.Malformed"),
        (api("&PageNumber=0"), "InvalidPageNumbers.Malformed"),
        (api("&DatabaseName=300"), "InvalidDatabaseName.Malformed"),
        (api("&SQLType=admin"), "InvalidSQLType.Malformed"),
    ] {
        let (status, body) = get(proxy.admin_addr(), &path, &ops).await;
        assert_eq!((status, body["Code"].as_str()), (400, Some(code)), "{path}: {body}");
        assert!(body["RequestId"].is_string());
    }
    // API keys.
    assert_eq!(get(proxy.admin_addr(), &api(""), &[]).await.0, 401);
    let scraper = [("x-api-key", "scraper"), ("x-api-secret-key", "m")];
    assert_eq!(get(proxy.admin_addr(), &api(""), &scraper).await.0, 403);

    // The CLI over the same directory gives the same page.
    let output = Command::new(BINARY)
        .args([
            "audit",
            "query",
            "--dir",
            dir.to_str().unwrap(),
            "--start",
            &start,
            "--end",
            &after_end,
        ])
        .args(["--user", "alice", "--page-size", "50", "--page", "2", "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let cli: Value = serde_json::from_slice(&output.stdout).unwrap();
    let (_, http) =
        get(proxy.admin_addr(), &api("&AccountName=alice&PageSize=50&PageNumber=2"), &ops).await;
    assert_eq!(cli["Items"], http["Items"]);
    assert_eq!(cli["TotalRecordCount"], http["TotalRecordCount"]);
    let table = Command::new(BINARY)
        .args(["audit", "query", "--dir", dir.to_str().unwrap(), "--keyword", "config"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("CONFIG GET") && table.contains("page 1 of 3 records"), "{table}");

    // Reads of the API are recorded.
    sink.sync();
    let reads = trail(&dir).iter().filter(|l| l["action"] == "api_read").count();
    assert!(reads >= 12, "{reads}");
    proxy.shutdown().await;

    // Indexes let a query skip rotated files outside its range.
    let query =
        redis_audit_proxy::query::AuditQuery::range(Some(&after_end), Some("2099-01-01T00:00:00Z"))
            .unwrap();
    let page = redis_audit_proxy::query::run(&dir, &query).unwrap();
    assert_eq!(page.total, 0);
    assert!(page.files_skipped >= rotated, "{} skipped of {rotated}", page.files_skipped);
}

/// One second after `time` (`yyyy-MM-ddTHH:mm:ssZ`), for an inclusive end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cloud_logs_sessions_and_the_acl_log_history() {
    crate::require_redis!();
    let scratch = Scratch::new("query-logs");
    let dir = scratch.path().join("audit");
    let users = scratch.users_file(
        "user default on nopass ~* -@all +get +auth +client\nuser alice on >pw ~* +@all\n",
    );
    let redis = RedisServer::start(&[]);
    let mut admin = RawClient::connect(redis.addr).await;
    admin.call(&[b"ACL", b"SETUSER", b"alice", b"on", b">pw", b"~*", b"+@all"]).await;
    let toml = format!(
        "[auth]\nusers_file = \"{}\"\n[admin]\nmetrics_api_key = \"scraper\"\nmetrics_api_secret = \"m\"\napi_key = \"ops\"\napi_secret = \"s\"\n",
        users.display()
    );
    let (proxy, sink) = TestProxy::start_audited(redis.addr, &dir, &toml).await;
    let ops = [("x-api-key", "ops"), ("x-api-secret-key", "s")];
    {
        let mut closed = RawClient::connect(proxy.addr).await;
        assert!(closed.call(&[b"SET", b"k", b"v"]).await.starts_with(b"-NOPERM"));
        assert!(closed.call(&[b"AUTH", b"alice", b"wrong"]).await.starts_with(b"-WRONGPASS"));
        assert_eq!(closed.call(&[b"AUTH", b"alice", b"pw"]).await, b"+OK\r\n");
    }
    let mut open = RawClient::connect(proxy.addr).await;
    assert_eq!(open.call(&[b"GET", b"k"]).await, b"$-1\r\n");
    let mut ended = false;
    for _ in 0..200 {
        sink.sync();
        if trail(&dir).iter().any(|l| l["action"] == "session_close") {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ended, "the first session closed");

    let (status, logs) = get(proxy.admin_addr(), "/v1/logs", &ops).await;
    assert_eq!(status, 200, "{logs}");
    let actions: Vec<&str> =
        logs["logs"].as_array().unwrap().iter().map(|l| l["action"].as_str().unwrap()).collect();
    let position = |action: &str| {
        actions
            .iter()
            .position(|a| *a == action)
            .unwrap_or_else(|| panic!("{action} in {actions:?}"))
    };
    assert!(
        position("security.auth_success") < position("security.auth_failure"),
        "newest first: {actions:?}"
    );
    assert!(position("security.auth_failure") < position("security.acl_denied"));
    assert!(actions.contains(&"system.start") && actions.contains(&"system.policy_load"));
    let denial = &logs["logs"][position("security.acl_denied")];
    assert_eq!(
        (denial["status"].as_str(), denial["resource"].as_str()),
        (Some("failure"), Some("acl"))
    );
    assert_eq!(denial["details"]["object"], "set");
    assert_eq!(denial["details"]["client"]["ip"], "127.0.0.1");
    for field in ["timestamp", "user", "resourceId"] {
        assert!(!denial[field].is_null(), "{field}: {denial}");
    }

    let (_, sessions) = get(proxy.admin_addr(), "/v1/session-logs", &ops).await;
    let list = sessions["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{sessions}");
    assert!(list[0]["endTime"].is_null(), "the newest session is still open: {sessions}");
    assert_eq!(list[1]["user"], "alice", "the user the session ended as");
    assert!(list[1]["endTime"].is_string());
    assert_eq!(list[1]["ipAddress"], "127.0.0.1");
    assert_eq!(list[1]["type"], "resp");
    for field in ["sessionId", "startTime", "userAgent"] {
        assert!(list[1].get(field).is_some(), "{field}");
    }

    let (_, history) = get(proxy.admin_addr(), "/api/v1/acl-log?limit=2", &ops).await;
    assert_eq!(history["total"], 3, "the denial and both authentications: {history}");
    let entries = history["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["action"], "auth_success");
    assert!(entries[0]["time"].as_str().unwrap().ends_with('Z'));
    let (_, rest) = get(proxy.admin_addr(), "/api/v1/acl-log?limit=2&offset=2", &ops).await;
    assert_eq!(rest["entries"][0]["action"], "acl_denied");

    assert_eq!(get(proxy.admin_addr(), "/v1/logs?limit=0", &ops).await.0, 400);
    assert_eq!(get(proxy.admin_addr(), "/v1/logs?offset=-1", &ops).await.0, 400);
    assert_eq!(get(proxy.admin_addr(), "/v1/session-logs", &[]).await.0, 401);
    let scraper = [("x-api-key", "scraper"), ("x-api-secret-key", "m")];
    assert_eq!(get(proxy.admin_addr(), "/v1/session-logs", &scraper).await.0, 403, "no log access");
    proxy.shutdown().await;
}
