//! The console (`GET /ui`) in a real browser: headless Chromium, driven over WebDriver, signs
//! in with the API key, filters and pages the audit records, opens a session, and reads the
//! security, report and live views; every table is compared with the API's own answer fetched
//! by the test, values chosen by clients (a key, a user name, a library name that are HTML)
//! must show as text, and a screenshot of each view lands in `target/console-screenshots/`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::support::http::{http, http_with_head};
use crate::support::webdriver::{screenshot_dir, Browser};
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

/// alice may read and write `app:*` only; bob may only read. In observe mode both are let
/// through and their denials recorded.
/// The third user's name is HTML (Redis takes any name without spaces).
const USERS_FILE: &str = "user default on nopass ~* &* +@all\n\
    user alice on nopass ~app:* -@all +get +set +auth\n\
    user bob on nopass ~* -@all +@read +auth\n\
    user <img/src=x/onerror=alert(3)> on nopass ~* &* +@all\n";
/// A key, a user name tried and a user name that exists, which a page parsing them as HTML
/// would act on.
const EVIL_KEY: &str = "<img src=x onerror=alert(1)>";
const EVIL_USER: &str = "<img src=x onerror=alert(2)>";
const EVIL_NAMED: &str = "<img/src=x/onerror=alert(3)>";
const LOGIN_SHOWN: &str = "return !document.getElementById('login').hidden;";
const KEYS: [(&str, &str); 2] = [("x-api-key", "ops"), ("x-api-secret-key", "s3cret")];

/// A JSON API's answer, fetched with the keys.
async fn api(admin: SocketAddr, path: &str) -> Value {
    let (status, body) = http(admin, "GET", path, &admin.to_string(), &KEYS).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// A value as the page shows it (`show()` in app.js): strings as they are, null as nothing,
/// objects as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn rows_of(items: &[Value], fields: &[&str]) -> Vec<Vec<String>> {
    items.iter().map(|item| fields.iter().map(|f| shown(&item[*f])).collect()).collect()
}

/// The text of every cell of a table's body, row by row.
async fn table(browser: &Browser, id: &str) -> Vec<Vec<String>> {
    let script = "return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr'), \
                  (tr) => Array.from(tr.cells, (td) => td.textContent));";
    let rows = browser.eval(script, json!([id])).await;
    serde_json::from_value(rows).unwrap()
}

async fn text(browser: &Browser, id: &str) -> String {
    let script = "return document.getElementById(arguments[0]).textContent;";
    browser.eval(script, json!([id])).await.as_str().unwrap().to_owned()
}

/// How often a view has been drawn.
async fn loads(browser: &Browser, view: &str) -> u64 {
    let script =
        "return Number(document.getElementById('view-' + arguments[0]).dataset.loads || 0);";
    browser.eval(script, json!([view])).await.as_u64().unwrap()
}

/// Runs `act` and waits until `view` has been drawn again, visible.
async fn redrawn(browser: &Browser, view: &str, before: u64) {
    let script = format!(
        "const v = document.getElementById('view-{view}'); \
         return !v.hidden && Number(v.dataset.loads || 0) > {before};"
    );
    browser.wait_until(&format!("the {view} view"), &script).await;
}

/// Fails when the page holds an element that data could only have made by being parsed as HTML.
async fn nothing_injected(browser: &Browser, view: &str) {
    let script = "return [document.querySelectorAll('img').length, \
                  document.querySelectorAll('script').length];";
    assert_eq!(browser.eval(script, json!([])).await, json!([0, 1]), "in the {view} view");
}

async fn screenshot(browser: &Browser, name: &str) {
    browser.screenshot(&screenshot_dir().join(format!("{name}.png"))).await;
}

/// The record filters' values as the page sent them (the page chose the time range).
async fn form_params(browser: &Browser) -> String {
    let script = "const p = new URLSearchParams(); \
                  for (const [k, v] of new FormData(document.getElementById('records-form'))) \
                  { if (String(v).trim() !== '') p.set(k, String(v).trim()); } return p.toString();";
    browser.eval(script, json!([])).await.as_str().unwrap().to_owned()
}

const RECORD_FIELDS: [&str; 7] = [
    "ExecuteTime",
    "AccountName",
    "HostAddress",
    "DatabaseName",
    "SQLType",
    "SQLText",
    "TotalExecutionTimes",
];

/// The records table against `DescribeAuditRecords` with the form's filters and `page`.
async fn records_match_api(browser: &Browser, admin: SocketAddr, page: u32) -> Value {
    let params = form_params(browser).await;
    let answer = api(admin, &format!("/api/v1/audit-records?{params}&PageNumber={page}")).await;
    let items = answer["Items"]["SQL"].as_array().unwrap();
    assert!(!items.is_empty(), "{params}: {answer}");
    assert_eq!(table(browser, "records-table").await, rows_of(items, &RECORD_FIELDS), "{params}");
    let total = answer["TotalRecordCount"].as_u64().unwrap();
    let pages = total.div_ceil(answer["PageSize"].as_u64().unwrap());
    let status = format!("Page {page} of {pages} · {total} records");
    assert_eq!(text(browser, "records-status").await, status);
    answer
}

/// Every client's traffic: a user named in HTML writing a key named in HTML, alice (reads,
/// writes, a key and a command outside her rights), bob (a write he may not make), a failed
/// AUTH by another user named in HTML.
async fn traffic(proxy: SocketAddr) {
    let mut named = RawClient::connect(proxy).await;
    assert_eq!(named.call(&[b"AUTH", EVIL_NAMED.as_bytes(), b"x"]).await, b"+OK\r\n");
    assert_eq!(named.call(&[b"SET", EVIL_KEY.as_bytes(), b"v"]).await, b"+OK\r\n");

    let mut alice = RawClient::connect(proxy).await;
    assert_eq!(alice.call(&[b"AUTH", b"alice", b"x"]).await, b"+OK\r\n");
    for i in 0..40 {
        let key = format!("app:{i}");
        assert!(!alice.call(&[b"GET", key.as_bytes()]).await.starts_with(b"-"));
    }
    for i in 0..5 {
        let key = format!("app:{i}");
        assert_eq!(alice.call(&[b"SET", key.as_bytes(), b"v"]).await, b"+OK\r\n");
    }
    // Observe mode: forwarded, and recorded as what enforcing would refuse.
    assert_eq!(alice.call(&[b"GET", EVIL_KEY.as_bytes()]).await, b"$1\r\nv\r\n");
    assert_eq!(alice.call(&[b"DEL", b"app:1"]).await, b":1\r\n");

    let mut bob = RawClient::connect(proxy).await;
    assert_eq!(bob.call(&[b"AUTH", b"bob", b"x"]).await, b"+OK\r\n");
    assert!(!bob.call(&[b"GET", b"data:1"]).await.starts_with(b"-"));
    assert_eq!(bob.call(&[b"SET", b"data:1", b"v"]).await, b"+OK\r\n");

    let mut stranger = RawClient::connect(proxy).await;
    let reply = stranger.call(&[b"AUTH", EVIL_USER.as_bytes(), b"pw"]).await;
    assert!(reply.starts_with(b"-WRONGPASS"), "{}", String::from_utf8_lossy(&reply));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_every_view_as_the_apis_answer_it() {
    crate::require_redis!();
    crate::require!(
        crate::support::webdriver::chromium_present(),
        "Chromium or chromedriver",
        crate::support::webdriver::INSTALL_CHROMIUM
    );
    let scratch = Scratch::new("console");
    let users = scratch.users_file(USERS_FILE);
    let redis = RedisServer::start(&[]);
    let mut setup = RawClient::connect(redis.addr).await;
    for name in ["alice", "bob", EVIL_NAMED] {
        let args: [&[u8]; 8] =
            [b"ACL", b"SETUSER", name.as_bytes(), b"on", b"nopass", b"~*", b"&*", b"+@all"];
        assert_eq!(setup.call(&args).await, b"+OK\r\n");
    }
    // No open endpoint: every answer with data needs the key, /metrics too.
    let toml = format!(
        "[auth]\nusers_file = \"{}\"\n[acl]\nmode = \"observe\"\n\
         [admin]\napi_key = \"ops\"\napi_secret = \"s3cret\"\nopen_endpoints = []\n",
        users.display()
    );
    let (proxy, sink) =
        TestProxy::start_audited(redis.addr, &scratch.path().join("audit"), &toml).await;
    let admin = proxy.admin_addr();
    traffic(proxy.addr).await;
    sink.sync();

    // The page and its two files need no key, and say what they may load; nothing else is open.
    let host = admin.to_string();
    for (path, content_type) in
        [("/ui", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")]
    {
        let (status, head, body) = http_with_head(admin, "GET", path, &host, &[]).await;
        assert_eq!(status, 200, "{path}: {head}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains(&format!("content-type: {content_type}")), "{path}: {head}");
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(
            head.contains(
                "content-security-policy: default-src 'self'; script-src 'self'; style-src 'self'"
            ),
            "{head}"
        );
        assert!(!body.is_empty());
    }
    for path in ["/api/v1/audit-records", "/metrics", "/v1/session-logs", "/ui/secrets", "/ui.js"] {
        assert_eq!(http(admin, "GET", path, &host, &[]).await.0, 401, "{path} without a key");
    }
    assert_eq!(http(admin, "GET", "/ui/secrets", &host, &KEYS).await.0, 404);
    assert_eq!(http(admin, "POST", "/ui", &host, &[]).await.0, 405);

    let browser = Browser::start(1280, 800).await;
    browser.goto(&format!("http://{admin}/ui")).await;
    // Each view its own boxed future: one future for all would overflow a debug build's stack.
    Box::pin(sign_in_and_records(&browser, admin)).await;
    Box::pin(sessions_view(&browser, admin)).await;
    Box::pin(security_view(&browser, admin)).await;
    Box::pin(report_view(&browser, admin)).await;
    Box::pin(live_view(&browser, admin, proxy.addr)).await;
    Box::pin(narrow_records(&browser, admin)).await;

    // A key that stops working mid-session: the next 401 brings the form back.
    browser.eval("sessionStorage.setItem('rap.apiSecret', 'revoked');", json!([])).await;
    browser.click("nav [data-view=sessions]").await;
    browser.wait_until("the form after a 401", LOGIN_SHOWN).await;
    nothing_injected(&browser, "login").await;
    drop(browser);
    proxy.shutdown().await;
}

/// Signs in (a wrong secret first), then the records: everything, alice's reads, page 2.
async fn sign_in_and_records(browser: &Browser, admin: SocketAddr) {
    browser.wait_until("the login form", LOGIN_SHOWN).await;
    screenshot(browser, "login").await;
    // A wrong secret: the server's 401 brings the form back with its message.
    browser.type_into("#login-key", "ops").await;
    browser.type_into("#login-secret", "wrong").await;
    browser.click("#login-form button[type=submit]").await;
    browser
        .wait_until(
            "the form again after a wrong secret",
            "return !document.getElementById('login').hidden && \
             document.getElementById('error').textContent.includes('wrong API key or secret');",
        )
        .await;
    browser.type_into("#login-key", "ops").await;
    browser.type_into("#login-secret", "s3cret").await;
    browser.click("#login-form button[type=submit]").await;
    redrawn(browser, "records", 0).await;
    // Everything of the last day on one page.
    browser.select("#records-form [name=PageSize]", "100").await;
    let before = loads(browser, "records").await;
    browser.click("#records-form button[type=submit]").await;
    redrawn(browser, "records", before).await;
    let stored = browser
        .eval("return [sessionStorage.getItem('rap.apiKey'), sessionStorage.getItem('rap.apiSecret')];", json!([]))
        .await;
    assert_eq!(stored, json!(["ops", "s3cret"]), "the keys live in the tab's session storage");
    // Unfiltered: the whole last day, newest first.
    let everything = records_match_api(browser, admin, 1).await;
    assert!(everything["TotalRecordCount"].as_u64().unwrap() >= 50, "{everything}");
    let cells = table(browser, "records-table").await.concat();
    assert!(cells.contains(&format!("SET {EVIL_KEY}")), "the key as text: {cells:?}");
    nothing_injected(browser, "records").await;
    screenshot(browser, "records").await;

    // alice's reads: 40 GETs of app:* and the GET of the HTML key, 30 a page.
    browser.type_into("#records-form [name=AccountName]", "alice").await;
    browser.select("#records-form [name=PageSize]", "30").await;
    browser.select("#records-form [name=SQLType]", "read").await;
    let before = loads(browser, "records").await;
    browser.click("#records-form button[type=submit]").await;
    redrawn(browser, "records", before).await;
    let first = records_match_api(browser, admin, 1).await;
    assert_eq!(first["TotalRecordCount"], 41, "{first}");
    let rows = table(browser, "records-table").await;
    assert_eq!(rows.len(), 30);
    assert!(rows.iter().all(|row| row[1] == "alice" && row[4] == "read"), "{rows:?}");
    assert_eq!(rows[0][5], format!("GET {EVIL_KEY}"), "newest first");
    let disabled = "return [document.getElementById('records-prev').disabled, \
                    document.getElementById('records-next').disabled];";
    assert_eq!(browser.eval(disabled, json!([])).await, json!([true, false]));
    nothing_injected(browser, "records filtered").await;
    screenshot(browser, "records-filtered").await;
    let before = loads(browser, "records").await;
    browser.click("#records-next").await;
    redrawn(browser, "records", before).await;
    records_match_api(browser, admin, 2).await;
    assert_eq!(table(browser, "records-table").await.len(), 11);
    assert_eq!(browser.eval(disabled, json!([])).await, json!([false, true]));
    screenshot(browser, "records-page-2").await;
}

/// The sessions, and one opened: its user's records while it was open.
async fn sessions_view(browser: &Browser, admin: SocketAddr) {
    // Sessions, then one opened: its user's records while it was open.
    let before = loads(browser, "sessions").await;
    browser.click("nav [data-view=sessions]").await;
    redrawn(browser, "sessions", before).await;
    let answer = api(admin, "/v1/session-logs?offset=0&limit=25").await;
    let mut expected = rows_of(
        answer["sessions"].as_array().unwrap(),
        &["sessionId", "user", "ipAddress", "userAgent", "startTime", "endTime", "type"],
    );
    for row in &mut expected {
        if row[5].is_empty() {
            row[5] = "open".to_owned();
        }
    }
    let rows = table(browser, "sessions-table").await;
    assert_eq!(rows, expected);
    assert!(rows.iter().any(|row| row[1] == EVIL_NAMED), "the user name as text: {rows:?}");
    nothing_injected(browser, "sessions").await;
    screenshot(browser, "sessions").await;
    let alice_row = rows.iter().position(|row| row[1] == "alice").expect("alice's session");
    let before = loads(browser, "records").await;
    browser.click(&format!("#sessions-table tbody tr:nth-child({}) button", alice_row + 1)).await;
    redrawn(browser, "records", before).await;
    let opened = records_match_api(browser, admin, 1).await;
    // Her 40 GETs, 5 SETs, the GET of the HTML key and the DEL (the AUTH is not recorded
    // under her name).
    assert_eq!(opened["TotalRecordCount"], 47, "{opened}");
    let form = form_params(browser).await;
    assert!(form.contains("AccountName=alice&HostAddress=127.0.0.1"), "{form}");
}

/// The durable ACL LOG and the activity log.
async fn security_view(browser: &Browser, admin: SocketAddr) {
    // The durable ACL LOG and the activity log.
    let before = loads(browser, "security").await;
    browser.click("nav [data-view=security]").await;
    redrawn(browser, "security", before).await;
    let answer = api(admin, "/api/v1/acl-log?offset=0&limit=25").await;
    let expected: Vec<Vec<String>> = answer["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let user = if shown(&e["username"]).is_empty() { &e["user"] } else { &e["username"] };
            let client = format!("{}:{}", shown(&e["client"]["ip"]), e["client"]["port"]);
            [&e["time"], &e["action"], &e["reason"], &e["object"]]
                .map(shown)
                .into_iter()
                .chain([shown(user), client, shown(&e["mode"]), shown(&e["source"])])
                .collect()
        })
        .collect();
    let rows = table(browser, "acl-table").await;
    assert_eq!(rows, expected);
    assert!(rows.iter().any(|row| row[4] == EVIL_USER), "the user name as text: {rows:?}");
    assert!(rows.iter().any(|row| row[3] == EVIL_KEY && row[6] == "observe"), "{rows:?}");
    let answer = api(admin, "/v1/logs?offset=0&limit=25").await;
    let expected = rows_of(
        answer["logs"].as_array().unwrap(),
        &["timestamp", "action", "user", "resource", "status", "details"],
    );
    // Reads are logged (`api_read`): those written since the page's own read (its own, the
    // test's, and earlier ones still in the writer's queue then), and the writer's seals, come
    // first in the test's answer, and the rest is the page's, shifted by as many.
    let rows = table(browser, "logs-table").await;
    let newer = (0..expected.len())
        .find(|&k| {
            let both = (expected.len() - k).min(rows.len());
            both > 0 && expected[k..k + both] == rows[..both]
        })
        .unwrap_or_else(|| panic!("{rows:#?}\n----\n{expected:#?}"));
    let since = |row: &Vec<String>| row[1] == "system.api_read" || row[1] == "system.seal";
    assert!(expected[..newer].iter().all(since), "{expected:?}");
    nothing_injected(browser, "security").await;
    screenshot(browser, "security").await;
}

/// The observe report.
async fn report_view(browser: &Browser, admin: SocketAddr) {
    // The observe report.
    let before = loads(browser, "report").await;
    browser.click("nav [data-view=report]").await;
    redrawn(browser, "report", before).await;
    let report = api(admin, "/api/v1/report").await;
    let expected: Vec<Vec<String>> = report["denials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let clients: Vec<String> = g["clients"].as_array().unwrap().iter().map(shown).collect();
            let line = &g["users_file_line"];
            let line = if line.is_null() {
                String::new()
            } else {
                format!("{}: {}", line["number"], shown(&line["text"]))
            };
            ["user", "reason", "command", "pattern", "count", "first", "last"]
                .map(|f| shown(&g[f]))
                .into_iter()
                .chain([clients.join(" "), line])
                .collect()
        })
        .collect();
    let rows = table(browser, "denials-table").await;
    assert_eq!(rows, expected);
    let groups: Vec<[&str; 4]> =
        rows.iter().map(|r| [r[0].as_str(), r[1].as_str(), r[2].as_str(), r[4].as_str()]).collect();
    for group in [
        ["alice", "key", "get", "1"],
        ["alice", "command", "del", "1"],
        ["bob", "command", "set", "1"],
    ] {
        assert!(groups.contains(&group), "{group:?} in {groups:?}");
    }
    let users = table(browser, "users-table").await;
    let alice = users.iter().find(|row| row[0] == "alice").expect("alice's activity");
    assert_eq!(alice[1], report["users"]["alice"]["commands"].to_string());
    assert!(alice[2].starts_with("get ×41"), "{alice:?}");
    nothing_injected(browser, "report").await;
    screenshot(browser, "report").await;
}

/// A narrow screen: the records as cards, nothing wider than the window.
async fn narrow_records(browser: &Browser, admin: SocketAddr) {
    // A narrow screen: the records as cards, nothing wider than the window.
    browser.resize(400, 800).await;
    let before = loads(browser, "records").await;
    browser.click("nav [data-view=records]").await;
    redrawn(browser, "records", before).await;
    records_match_api(browser, admin, 1).await;
    let layout = "const t = document.querySelector('#records-table'); \
                  return [getComputedStyle(t.querySelector('thead')).display, \
                  getComputedStyle(t.querySelector('tbody tr')).display, \
                  document.documentElement.scrollWidth <= window.innerWidth, window.innerWidth];";
    let layout = browser.eval(layout, json!([])).await;
    assert_eq!(layout[0], "none", "{layout}");
    assert_eq!(layout[1], "block", "{layout}");
    assert_eq!(layout[2], true, "nothing scrolls sideways: {layout}");
    assert!(layout[3].as_u64().unwrap() <= 400, "{layout}");
    screenshot(browser, "records-narrow").await;
    browser.resize(1280, 800).await;
}

/// The live view: rates from successive scrapes while a client runs GETs, and the denial and
/// drop counters as /metrics has them.
async fn live_view(browser: &Browser, admin: SocketAddr, proxy: SocketAddr) {
    let running = Arc::new(AtomicBool::new(true));
    let load = tokio::spawn({
        let running = Arc::clone(&running);
        async move {
            let mut client = RawClient::connect(proxy).await;
            while running.load(Ordering::Relaxed) {
                assert!(!client.call(&[b"GET", b"app:live"]).await.starts_with(b"-"));
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    });
    browser.click("nav [data-view=live]").await;
    browser
        .wait_until(
            "reads per second above zero, four points charted",
            "return Number(document.getElementById('live-read').textContent) > 0 && \
             document.querySelector('#live-chart polyline.read').getAttribute('points')\
             .split(' ').length >= 4;",
        )
        .await;
    screenshot(browser, "live").await;
    running.store(false, Ordering::Relaxed);
    load.await.unwrap();
    let (status, metrics) = http(admin, "GET", "/metrics", &admin.to_string(), &KEYS).await;
    assert_eq!(status, 200);
    let sum = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let denials = sum("redis_audit_proxy_acl_denials_total");
    let drops = sum("redis_audit_proxy_audit_events_dropped_total");
    assert!(denials >= 3.0, "alice's two and bob's one: {metrics}");
    let script = format!(
        "return document.getElementById('live-denials').textContent === '{denials}' && \
         document.getElementById('live-drops').textContent === '{drops}';"
    );
    browser.wait_until("the denial and drop counters of /metrics", &script).await;
    nothing_injected(browser, "live").await;
}
