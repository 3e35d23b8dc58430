//! The admin plane against real parts: every metric moves when it should (driven by real
//! clients through the proxy), `/metrics` passes `promtool check metrics`, a real Prometheus
//! scrapes it and answers queries about it, health follows the upstream, API keys give 401 /
//! 403, and `POST /api/v1/reload` swaps the users file.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::http::sample;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

/// One HTTP/1.1 request (`Connection: close`, `Host` the address, as `curl` sends it): status
/// and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    crate::support::http::http(addr, method, path, &addr.to_string(), headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_audit_trail_commands_are_still_counted() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start_unaudited(redis.addr).await;
    let admin = proxy.admin_addr();
    let (_, before) = http(admin, "GET", "/metrics", &[]).await;
    let mut client = RawClient::connect(proxy.addr).await;
    assert_eq!(client.call(&[b"SET", b"k", b"v"]).await, b"+OK\r\n");
    assert_eq!(client.call(&[b"GET", b"k"]).await, b"$1\r\nv\r\n");
    assert!(client.call(&[b"INCR", b"k"]).await.starts_with(b"-ERR"));
    let (_, after) = http(admin, "GET", "/metrics", &[]).await;
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        moved(r#"redis_audit_proxy_commands_total{class="write",command="set",outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"redis_audit_proxy_commands_total{class="read",command="get",outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"redis_audit_proxy_commands_total{class="write",command="incr",outcome="error"}"#),
        1.0
    );
    assert_eq!(moved(r#"redis_audit_proxy_command_duration_seconds_count{class="write"}"#), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_moves_and_promtool_accepts_the_page() {
    crate::require_redis!();
    let scratch = Scratch::new("admin-metrics");
    let users = scratch.users_file("user default on nopass ~* &* -@all +get +set +auth +ping\n");
    let redis = RedisServer::start(&[]);
    let audit_dir = scratch.path().join("audit");
    let toml = format!(
        "[auth]\nusers_file = \"{}\"\n[audit.filters]\nignore_high_frequency = [\"ping\"]\n",
        users.display()
    );
    let (proxy, sink) = TestProxy::start_audited(redis.addr, &audit_dir, &toml).await;
    let admin = proxy.admin_addr();
    let (status, before) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(status, 200);

    let mut client = RawClient::connect(proxy.addr).await;
    assert_eq!(client.call(&[b"SET", b"k", b"v"]).await, b"+OK\r\n");
    assert_eq!(client.call(&[b"GET", b"k"]).await, b"$1\r\nv\r\n");
    assert_eq!(client.call(&[b"PING"]).await, b"+PONG\r\n");
    assert!(client.call(&[b"DEL", b"k"]).await.starts_with(b"-NOPERM"));
    assert!(client.call(&[b"AUTH", b"nobody", b"pw"]).await.starts_with(b"-WRONGPASS"));
    assert!(client.call(&[b"GET"]).await.starts_with(b"-ERR wrong number"));
    sink.sync();
    let (_, after) = http(admin, "GET", "/metrics", &[]).await;

    let moved = |series: &str, by: f64| {
        let delta = sample(&after, series) - sample(&before, series);
        assert_eq!(delta, by, "{series}: {before}\n----\n{after}");
    };
    moved(r#"redis_audit_proxy_commands_total{class="write",command="set",outcome="ok"}"#, 1.0);
    moved(r#"redis_audit_proxy_commands_total{class="read",command="get",outcome="ok"}"#, 1.0);
    moved(r#"redis_audit_proxy_commands_total{class="read",command="get",outcome="error"}"#, 1.0);
    moved(r#"redis_audit_proxy_commands_total{class="write",command="del",outcome="error"}"#, 1.0);
    moved(
        r#"redis_audit_proxy_acl_denials_total{mode="enforce",reason="command",source="proxy"}"#,
        1.0,
    );
    moved(r#"redis_audit_proxy_auth_total{reason="auth",result="failure",source="redis"}"#, 1.0);
    moved("redis_audit_proxy_connections_total", 1.0);
    moved("redis_audit_proxy_connections_open", 1.0);
    moved(r#"redis_audit_proxy_command_duration_seconds_count{class="read"}"#, 2.0);
    moved(r#"redis_audit_proxy_audit_events_filtered_total{reason="high_frequency"}"#, 1.0);
    assert!(
        sample(&after, "redis_audit_proxy_audit_events_written_total")
            > sample(&before, "redis_audit_proxy_audit_events_written_total")
    );
    assert!(sample(&after, "redis_audit_proxy_audit_bytes_written_total") > 0.0);
    assert_eq!(
        sample(&after, "redis_audit_proxy_acl_log_entries"),
        2.0,
        "the denial and the failed AUTH"
    );
    assert!(after.contains("redis_audit_proxy_policy_info{version=\""), "{after}");
    assert!(after.contains(&format!(
        "redis_audit_proxy_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    // Labels come from closed sets only: no key, user or address appears.
    for leaked in ["=\"k\"", "nobody", "127.0.0.1"] {
        assert!(!after.contains(leaked), "{leaked} in the metrics:\n{after}");
    }
    drop(client);
    // An upstream that cannot be reached is counted.
    drop(redis);
    let _ = RawClient::connect(proxy.addr).await.call(&[b"PING"]).await;
    let (_, down) = http(admin, "GET", "/metrics", &[]).await;
    assert!(sample(&down, "redis_audit_proxy_upstream_connect_errors_total") >= 1.0);

    // promtool, Prometheus's own checker, accepts the page.
    if let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        use std::io::Write as _;
        promtool.stdin.take().unwrap().write_all(down.as_bytes()).unwrap();
        let output = promtool.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    } else {
        crate::support::skip::missing(
            "promtool",
            "`make test` installs it (`apt-get install prometheus`)",
        );
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_keys_and_reload() {
    crate::require_redis!();
    let scratch = Scratch::new("admin-api");
    let users = scratch.users_file("user default on nopass ~* &* -@all +get\n");
    let mut redis = RedisServer::start(&[]);
    let toml = format!(
        "[auth]\nusers_file = \"{}\"\n[admin]\napi_key = \"ops\"\napi_secret = \"s3cret\"\nmetrics_api_key = \"scraper\"\nmetrics_api_secret = \"m\"\nopen_endpoints = [\"/livez\"]\n",
        users.display()
    );
    let proxy = TestProxy::start_with(redis.addr, &toml).await;
    let admin = proxy.admin_addr();
    let ops = [("x-api-key", "ops"), ("x-api-secret-key", "s3cret")];
    let scraper = [("x-api-key", "scraper"), ("x-api-secret-key", "m")];

    assert_eq!(http(admin, "GET", "/livez", &[]).await.0, 200, "open endpoint");
    assert_eq!(http(admin, "GET", "/metrics", &[]).await.0, 401, "missing key");
    assert_eq!(
        http(admin, "GET", "/metrics", &[("x-api-key", "ops"), ("x-api-secret-key", "no")]).await.0,
        401
    );
    assert_eq!(http(admin, "GET", "/metrics", &scraper).await.0, 200);
    let (status, body) = http(admin, "POST", "/api/v1/reload", &scraper).await;
    assert_eq!(status, 403, "the metrics key has no access to the API: {body}");
    assert_eq!(http(admin, "GET", "/nowhere", &ops).await.0, 404);
    assert_eq!(http(admin, "GET", "/api/v1/reload", &ops).await.0, 405);

    let (status, body) = http(admin, "GET", "/readyz", &ops).await;
    assert_eq!(status, 200, "{body}");
    redis.kill();
    let (status, body) = http(admin, "GET", "/readyz", &ops).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"upstream\":{\"ok\":false,\"error\""), "{body}");
    redis.restart();
    assert_eq!(http(admin, "GET", "/readyz", &ops).await.0, 200);

    let mut client = RawClient::connect(proxy.addr).await;
    assert!(client.call(&[b"SET", b"k", b"v"]).await.starts_with(b"-NOPERM"));
    std::fs::write(&users, "user default on nopass ~* &* +@all\n").unwrap();
    let (status, body) = http(admin, "POST", "/api/v1/reload", &ops).await;
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["policy"]["ok"], true);
    assert_eq!(reply["policy"]["policy_version"].as_str().map(str::len), Some(16));
    assert_eq!(client.call(&[b"SET", b"k", b"v"]).await, b"+OK\r\n", "the new policy applies");
    std::fs::write(&users, "user default on +nosuchcommand\n").unwrap();
    let (status, body) = http(admin, "POST", "/api/v1/reload", &ops).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("nosuchcommand"), "{body}");
    assert_eq!(client.call(&[b"SET", b"k", b"w"]).await, b"+OK\r\n", "the old policy stays");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_proxy() {
    crate::require_redis!();
    let installed = Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    crate::require!(
        installed,
        "prometheus",
        "`make test` installs it (`apt-get install prometheus`)"
    );
    let scratch = Scratch::new("admin-prometheus");
    std::fs::create_dir_all(scratch.path()).unwrap();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let mut client = RawClient::connect(proxy.addr).await;
    for _ in 0..5 {
        assert_eq!(client.call(&[b"SET", b"k", b"v"]).await, b"+OK\r\n");
    }
    let config = scratch.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: proxy\n    static_configs:\n      - targets: ['{}']\n",
            proxy.admin_addr()
        ),
    )
    .unwrap();
    let port = crate::support::redis::free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", scratch.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = SocketAddr::from(([127, 0, 0, 1], port));
    let query = "/api/v1/query?query=redis_audit_proxy_commands_total%7Bcommand%3D%22set%22%7D";
    let mut answer = String::new();
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(api).await.is_ok() {
            answer = http(api, "GET", query, &[]).await.1;
            if answer.contains("\"value\"") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let value: serde_json::Value =
        serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{answer}"));
    assert_eq!(value["status"], "success", "{answer}");
    let result = &value["data"]["result"][0];
    assert_eq!(result["metric"]["job"], "proxy");
    assert_eq!(result["metric"]["class"], "write");
    assert_eq!(result["value"][1], "5", "{answer}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_latency_is_exported_with_durable_audit() {
    crate::require_redis!();
    let scratch = Scratch::new("admin-fsync");
    let redis = RedisServer::start(&[]);
    let audit_dir = scratch.path().join("audit");
    let (proxy, sink) =
        TestProxy::start_audited(redis.addr, &audit_dir, "[audit]\ndurability = \"fsync\"\n").await;
    let mut client = RawClient::connect(proxy.addr).await;
    for _ in 0..3 {
        assert_eq!(client.call(&[b"SET", b"k", b"v"]).await, b"+OK\r\n");
    }
    sink.sync();
    let (_, metrics) = http(proxy.admin_addr(), "GET", "/metrics", &[]).await;
    assert!(sample(&metrics, "redis_audit_proxy_audit_fsyncs_total") >= 3.0, "{metrics}");
    assert!(sample(&metrics, "redis_audit_proxy_audit_fsync_seconds_total") > 0.0, "{metrics}");
    proxy.shutdown().await;
}

/// A connection that sent `head` and got `200`, tried until the one admin slot is free (a
/// refused connection is reset, or closed without an answer).
async fn served_once_free(admin: std::net::SocketAddr, head: &str) -> tokio::net::TcpStream {
    for _ in 0..100 {
        let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
        let _ = stream.write_all(head.as_bytes()).await;
        let mut first = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut first)).await;
        if let Ok(Ok(n)) = read {
            if first[..n].starts_with(b"HTTP/1.1 200") {
                return stream;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no connection was served in 100 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_connections_and_request_heads_are_bounded() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let toml = "[admin]\nmax_connections = 1\nmax_request_bytes = 8192\n";
    let proxy = TestProxy::start_with(redis.addr, toml).await;
    let admin = proxy.admin_addr();
    // A request head past max_request_bytes is refused, not buffered.
    let big = "x".repeat(64 * 1024);
    let (status, _) = http(admin, "GET", "/livez", &[("x-padding", &big)]).await;
    assert_eq!(status, 431, "request header fields too large");
    // One connection held open: a second one is closed without an answer. (The refused
    // connection's slot is free once the server has finished with it, a moment after the
    // client read its answer: until then a new connection is the one too many.)
    let head = format!("GET /livez HTTP/1.1\r\nHost: {admin}\r\n\r\n");
    let held = served_once_free(admin, &head).await;
    let mut refused = tokio::net::TcpStream::connect(admin).await.unwrap();
    let _ = refused.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "over max_connections: {}", String::from_utf8_lossy(&answer));
    drop(held);
    // Once the held connection is gone, a new one is served again.
    served_once_free(admin, &head).await;
    proxy.shutdown().await;
}
