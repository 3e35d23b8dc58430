//! `audit.keys`: key names in clear, as HMAC-SHA256, or not at all.

use crate::support::scratch::trail;
use crate::support::{AuditedProxy, RawClient, RedisServer, Scratch, TestProxy};

async fn keys_written(redis: &RedisServer, toml: &str) -> Vec<serde_json::Value> {
    let dir = Scratch::new("keys");
    let (proxy, _audit) = TestProxy::start_audited(redis.addr, dir.path(), toml).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.call(&[b"SET", b"user:alice@example.com", b"v"]).await;
    client.call(&[b"GET", b"user:alice@example.com"]).await;
    client.call(&[b"MGET", b"a", b"b"]).await;
    proxy.shutdown().await;
    let lines = trail(dir.path());
    let text = lines.iter().map(|l| l.to_string()).collect::<String>();
    if !toml.is_empty() {
        assert!(!text.contains("alice"), "the key name leaked: {text}");
    }
    lines.into_iter().filter(|l| l["kind"] == "command").collect()
}

#[tokio::test]
async fn keys_in_clear_as_hmac_or_off() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let clear = keys_written(&redis, "").await;
    assert_eq!(clear[0]["keys"], serde_json::json!(["user:alice@example.com"]));

    let secret = Scratch::new("hmac-key");
    std::fs::create_dir_all(secret.path()).unwrap();
    let key_file = secret.path().join("key");
    std::fs::write(&key_file, "a-secret-hmac-key-of-32-bytes!!!\n").unwrap();
    let toml = format!("[audit]\nkeys = \"hmac\"\nhmac_key_file = \"{}\"\n", key_file.display());
    let hmac = keys_written(&redis, &toml).await;
    let first = hmac[0]["keys"][0]["hmac"].as_str().unwrap().to_owned();
    assert_eq!(first.len(), 32);
    assert_eq!(hmac[1]["keys"][0]["hmac"], first.as_str(), "the same key, the same value");
    assert_ne!(hmac[2]["keys"][0]["hmac"], hmac[2]["keys"][1]["hmac"]);
    assert_eq!(hmac[0]["key_count"], 1);

    let off = keys_written(&redis, "[audit]\nkeys = \"off\"\n").await;
    assert!(off.iter().all(|l| l.get("keys").is_none()));
    assert_eq!(off[2]["key_count"], 2);
    assert_eq!(off[0]["key_bytes"], 22);
}

#[tokio::test]
async fn captured_arguments_never_show_secrets() {
    crate::require_redis!();
    let AuditedProxy { redis: _redis, dir, proxy, audit: _audit } =
        AuditedProxy::start("capture", "[audit]\ncapture_args = true\nargs_max_bytes = 64\n").await;
    let mut client = RawClient::connect(proxy.addr).await;
    let secret = "canary-secret-31c7";
    let lines: Vec<Vec<&[u8]>> = vec![
        vec![b"AUTH", secret.as_bytes()],
        vec![b"AUTH", b"alice", secret.as_bytes()],
        vec![b"HELLO", b"3", b"AUTH", b"default", secret.as_bytes()],
        vec![b"HELLO", b"2"],
        vec![
            b"ACL",
            b"SETUSER",
            b"carol",
            b"on",
            format!(">{secret}").leak().as_bytes(),
            b"~*",
            b"+@all",
        ],
        vec![b"CONFIG", b"SET", b"masterauth", secret.as_bytes()],
        vec![
            b"MIGRATE",
            b"127.0.0.1",
            b"1",
            b"",
            b"0",
            b"10",
            b"AUTH",
            secret.as_bytes(),
            b"KEYS",
            b"k",
        ],
        vec![b"SET", b"k", b"visible-value"],
        vec![b"SET", b"long", &[b'x'; 100]],
    ];
    for line in &lines {
        client.call(line).await;
    }
    proxy.shutdown().await;
    let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert!(!text.contains(secret), "a secret reached the trail");
    let commands: Vec<serde_json::Value> =
        trail(dir.path()).into_iter().filter(|l| l["kind"] == "command").collect();
    assert_eq!(commands.len(), lines.len());
    let redacted = serde_json::json!({"redacted": true});
    assert_eq!(commands[0]["args"], serde_json::json!([redacted]));
    assert_eq!(commands[1]["args"], serde_json::json!(["alice", redacted]));
    assert_eq!(commands[4]["args"][3], redacted);
    assert_eq!(commands[5]["args"], serde_json::json!(["SET", "masterauth", redacted]));
    assert_eq!(commands[7]["args"], serde_json::json!(["k", "visible-value"]));
    assert_eq!(commands[8]["args_truncated"], true);
    assert_eq!(commands[8]["args"][1].as_str().unwrap().len(), 64 - 4);
}

#[tokio::test]
async fn filters_leave_out_and_count() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let run = |toml: &'static str| {
        let redis_addr = redis.addr;
        async move {
            let dir = Scratch::new("filters");
            let (proxy, _audit) = TestProxy::start_audited(redis_addr, dir.path(), toml).await;
            let mut client = RawClient::connect(proxy.addr).await;
            for line in [
                &[&b"PING"[..]][..],
                &[b"SET", b"k", b"v"],
                &[b"GET", b"k"],
                &[b"CONFIG", b"GET", b"maxmemory"],
                &[b"NOSUCH"],
            ] {
                client.call(line).await;
            }
            drop(client);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            proxy.shutdown().await;
            trail(dir.path())
        }
    };
    // Tair's "writes only", no high-frequency PING, no sessions.
    let lines = run(
        "[audit.filters]\nkinds = [\"command\"]\nclasses = [\"write\", \"unknown\"]\nignore_high_frequency = [\"ping\"]\n",
    )
    .await;
    let commands: Vec<&str> = lines
        .iter()
        .filter(|l| l["kind"] == "command")
        .map(|l| l["command"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["set", "(unknown)"]);
    assert!(lines.iter().all(|l| l["kind"] != "session"));
    let stop = lines.iter().find(|l| l["action"] == "stop").unwrap();
    assert_eq!(stop["filtered"]["class"], 2, "GET and CONFIG GET");
    assert_eq!(stop["filtered"]["high_frequency"], 1);
    assert_eq!(stop["filtered"]["kind"], 2, "session open and close");
    // Commands by name (a container covers its subcommands) and client networks.
    let lines = run("[audit.filters]\nexclude_commands = [\"config\", \"get\"]\n").await;
    let names: Vec<&str> = lines
        .iter()
        .filter(|l| l["kind"] == "command")
        .map(|l| l["command"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ping", "set", "(unknown)"]);
    let lines = run("[audit.filters]\nexclude_networks = [\"127.0.0.0/8\"]\n").await;
    assert!(lines.iter().all(|l| l["kind"] == "system"), "everything from loopback left out");
    let stop = lines.iter().find(|l| l["action"] == "stop").unwrap();
    assert_eq!(stop["filtered"]["network"], 7, "5 commands and 2 session events");
}

#[tokio::test]
async fn auth_outcomes_and_redis_denials_are_security_events() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let mut admin = RawClient::connect(redis.addr).await;
    let user = [
        &b"ACL"[..],
        b"SETUSER",
        b"alice",
        b"on",
        b">alice-pw-7d2e",
        b"~app:*",
        b"+get",
        b"+multi",
        b"+exec",
    ];
    assert_eq!(admin.call(&user).await, b"+OK\r\n");
    let dir = Scratch::new("security");
    let (proxy, _audit) = TestProxy::start_audited(redis.addr, dir.path(), "").await;
    let mut client = RawClient::connect(proxy.addr).await;
    for line in [
        &[&b"AUTH"[..], b"alice", b"wrong-pw-91aa"][..],
        &[b"AUTH", b"alice", b"alice-pw-7d2e"],
        &[b"GET", b"app:1"],
        &[b"GET", b"other"],
        &[b"SET", b"app:1", b"v"],
        &[b"MULTI"],
        &[b"GET", b"other"],
        &[b"EXEC"],
    ] {
        client.call(line).await;
    }
    proxy.shutdown().await;
    let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert!(
        !text.contains("alice-pw-7d2e") && !text.contains("wrong-pw-91aa"),
        "a password leaked"
    );
    let lines = trail(dir.path());
    let security: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["kind"] == "security").collect();
    let summary: Vec<(&str, &str, &str, &str)> = security
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap(),
                l["reason"].as_str().unwrap(),
                l["context"].as_str().unwrap(),
                l["object"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("auth_failure", "auth", "toplevel", "AUTH"),
            ("auth_success", "auth", "toplevel", "AUTH"),
            // Redis does not name the key; without a users file the proxy names the one key
            // of a single-key command.
            ("acl_denied", "key", "toplevel", "other"),
            ("acl_denied", "command", "toplevel", "set"),
            ("acl_denied", "key", "multi", "other"),
        ]
    );
    assert_eq!(security[0]["username"], "alice");
    assert_eq!(security[0]["user"], "default");
    assert_eq!(security[2]["user"], "alice");
    assert!(security.iter().all(|l| l["source"] == "redis" && l["seq"].is_u64()));
    let auth = lines.iter().find(|l| l["action"] == "session_auth").expect("a session_auth line");
    assert_eq!(auth["user"], "alice");
}
