//! `audit report` and `GET /api/v1/report`: a proxy in observe mode in front of a Redis that
//! allows everything, traffic with known would-be denials, and the report's groups, counts,
//! users-file lines and per-user activity checked; the CLI's JSON and the admin API's agree
//! with the library's.

use redis_audit_proxy::query::report;
use redis_audit_proxy::query::AuditQuery;

use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

const BINARY: &str = env!("CARGO_BIN_EXE_redis-audit-proxy");

/// Line 2 defines alice, line 3 bob; bob's password must never show in the report.
const USERS_FILE: &str = "user default on nopass ~* &* +@all\n\
    user alice on nopass ~app:* -@all +get +set +auth\n\
    user bob on >bobs-secret ~* -@all +@read +auth\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_groups_observed_denials_and_counts_what_users_ran() {
    crate::require_redis!();
    let scratch = Scratch::new("report");
    let users = scratch.users_file(USERS_FILE);
    let audit_dir = scratch.path().join("audit");
    let redis = RedisServer::start(&[]);
    let mut admin = RawClient::connect(redis.addr).await;
    for name in ["alice", "bob"] {
        let args: [&[u8]; 8] =
            [b"ACL", b"SETUSER", name.as_bytes(), b"on", b"nopass", b"~*", b"&*", b"+@all"];
        assert_eq!(admin.call(&args).await, b"+OK\r\n");
    }
    let toml = format!("[auth]\nusers_file = \"{}\"\n[acl]\nmode = \"observe\"\n", users.display());
    let (proxy, sink) = TestProxy::start_audited(redis.addr, &audit_dir, &toml).await;

    let mut alice = RawClient::connect(proxy.addr).await;
    let script: &[&[&[u8]]] = &[
        &[b"AUTH", b"alice", b"x"],
        &[b"GET", b"app:1"],
        &[b"SET", b"app:2", b"v"],
        &[b"GET", b"secret:1"],
        &[b"GET", b"secret:2"],
        &[b"GET", b"secret:3"],
        &[b"DEL", b"app:1"],
        &[b"HSET", b"app:h", b"f", b"v"],
    ];
    for command in script {
        let reply = alice.call(command).await;
        assert!(!reply.starts_with(b"-"), "observe mode forwards {command:?}: {reply:?}");
    }
    let mut bob = RawClient::connect(proxy.addr).await;
    assert_eq!(bob.call(&[b"AUTH", b"bob", b"anything"]).await, b"+OK\r\n");
    for _ in 0..2 {
        assert_eq!(bob.call(&[b"SET", b"data:1", b"v"]).await, b"+OK\r\n");
    }
    sink.sync();

    let everything = AuditQuery::range(None, None).unwrap();
    let built = report::build(&audit_dir, &everything, Some(USERS_FILE.as_bytes())).unwrap();
    let groups: Vec<(&str, &str, Option<&str>, &str, u64)> = built
        .denials
        .iter()
        .map(|g| {
            (g.user.as_str(), g.reason.as_str(), g.command.as_deref(), g.pattern.as_str(), g.count)
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("alice", "key", Some("get"), "secret:*", 3),
            ("bob", "command", Some("set"), "set", 2),
            ("alice", "command", Some("del"), "del", 1),
            ("alice", "command", Some("hset"), "hset", 1),
        ],
        "{built:#?}"
    );
    let secret = &built.denials[0];
    assert!(secret.first <= secret.last && !secret.first.is_empty());
    assert_eq!(secret.clients, vec![alice.stream.local_addr().unwrap().to_string()]);
    assert_eq!(secret.policy_versions.len(), 1);
    let line = secret.users_file_line.as_ref().expect("alice's line");
    assert_eq!(
        (line.number, line.text.as_str()),
        (2, "user alice on nopass ~app:* -@all +get +set +auth")
    );
    let bob_line = built.denials[1].users_file_line.as_ref().expect("bob's line");
    assert_eq!(bob_line.text, "user bob on >*** ~* -@all +@read +auth");
    let alice_ran = &built.users["alice"];
    assert_eq!(alice_ran.top_commands.first(), Some(&("get".to_owned(), 4)));
    assert!(alice_ran.top_key_prefixes.contains(&("secret:*".to_owned(), 3)), "{alice_ran:?}");
    assert!(!built.truncated);

    // The CLI prints the same report.
    let output = std::process::Command::new(BINARY)
        .args(["audit", "report", "--dir"])
        .arg(&audit_dir)
        .arg("--users")
        .arg(&users)
        .arg("--json")
        .output()
        .expect("run the binary");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let printed_groups = printed["denials"].as_array().unwrap();
    assert_eq!(printed_groups.len(), 4);
    assert_eq!(printed_groups[0]["pattern"], "secret:*");
    assert_eq!(printed_groups[0]["count"], 3);
    let text = std::process::Command::new(BINARY)
        .args(["audit", "report", "--dir"])
        .arg(&audit_dir)
        .output()
        .expect("run the binary");
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("secret:* by get"), "{text}");
    assert!(!text.contains("bobs-secret"));

    // And the admin API, with the users file in force.
    let addr = proxy.admin_addr();
    let (status, body) =
        crate::support::http::http(addr, "GET", "/api/v1/report", &addr.to_string(), &[]).await;
    assert_eq!(status, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["denials"][0]["users_file_line"]["number"], 2);
    assert!(!body.contains("bobs-secret"), "{body}");
    let (status, _) = crate::support::http::http(
        addr,
        "GET",
        "/api/v1/report?start=yesterday",
        &addr.to_string(),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    proxy.shutdown().await;
}
