//! The proxy's ACL in front of a real Redis: enforce mode answers byte for byte as Redis does
//! (NOPERM wording of the upstream's version, MULTI / EXECABORT, NOAUTH) and never forwards
//! a denied command; observe mode forwards everything and records each would-be denial;
//! `ACL LOG` served by the proxy matches Redis's own entries with the real client's address.

use std::net::SocketAddr;

use crate::support::client::show;
use crate::support::scratch::trail;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

/// The same users, as a users file and as `ACL SETUSER` arguments.
const USERS: &[(&str, &str)] = &[
    ("alice", "on >secret ~app:* &chan:* -@all +@read +set +multi +exec +acl|log +publish +ping"),
    ("legacy", "on >old ~* -@all +get"),
    ("sel", "on >pw +mget ~key (+mget ~key ~otherkey)"),
];

/// The users file of [`USERS`] (and an open default user) in `scratch`.
fn users_file(scratch: &Scratch) -> std::path::PathBuf {
    let text: String = USERS.iter().map(|(name, rules)| format!("user {name} {rules}\n")).collect();
    scratch.users_file(&format!("user default on nopass ~* &* +@all\n{text}"))
}

/// A Redis with the same users defined with `ACL SETUSER`.
async fn redis_with_users() -> RedisServer {
    let redis = RedisServer::start(&[]);
    let mut admin = RawClient::connect(redis.addr).await;
    for (name, rules) in USERS {
        let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", name.as_bytes()];
        let rules: Vec<&str> = rules.split(' ').collect();
        // A selector is one argument for SETUSER.
        let joined = rules.join(" ");
        let (root, selector) = match joined.find('(') {
            Some(at) => (joined[..at].trim_end().to_owned(), Some(joined[at..].to_owned())),
            None => (joined.clone(), None),
        };
        let root: Vec<String> = root.split(' ').map(str::to_owned).collect();
        args.extend(root.iter().map(|r| r.as_bytes()));
        if let Some(selector) = &selector {
            args.push(selector.as_bytes());
        }
        assert_eq!(admin.call(&args).await, b"+OK\r\n", "SETUSER {name}");
    }
    redis
}

/// Sends `script` one command at a time and returns each reply.
async fn replies(addr: SocketAddr, script: &[&[&[u8]]]) -> Vec<Vec<u8>> {
    let mut client = RawClient::connect(addr).await;
    let mut out = Vec::new();
    for command in script {
        out.push(client.call(command).await);
    }
    out
}

const SCRIPT: &[&[&[u8]]] = &[
    &[b"GET", b"app:1"],
    &[b"AUTH", b"legacy", b"old"],
    &[b"EXEC"],
    &[b"MULTI"],
    &[b"AUTH", b"alice", b"wrong"],
    &[b"AUTH", b"alice", b"secret"],
    &[b"GET", b"app:1"],
    &[b"GET", b"other"],
    &[b"DEL", b"app:1"],
    &[b"CONFIG", b"GET", b"maxmemory"],
    &[b"PUBLISH", b"nochan", b"m"],
    &[b"PUBLISH", b"chan:1", b"m"],
    &[b"SET", b"app:1", b"v"],
    &[b"MULTI"],
    &[b"SET", b"app:2", b"v"],
    &[b"SET", b"other", b"v"],
    &[b"EXEC"],
    &[b"GET", b"app:2"],
    &[b"MULTI"],
    &[b"GET", b"app:1"],
    &[b"EXEC"],
    &[b"GET"],
    &[b"NOSUCHCOMMAND", b"x"],
    &[b"AUTH", b"sel", b"pw"],
    &[b"MGET", b"key", b"otherkey", b"someotherkey"],
    &[b"MGET", b"key", b"otherkey"],
];

/// `[(field, value)]` of the first five fields of each ACL LOG entry (the fields Redis 7.0
/// and the proxy's 7.2 format share, client info aside).
fn log_fields(reply: &[u8]) -> Vec<Vec<(String, String)>> {
    let (frame, _) = redis_protocol::resp2::decode::decode(reply).unwrap().unwrap();
    let redis_protocol::resp2::types::OwnedFrame::Array(entries) = frame else { panic!("array") };
    entries
        .into_iter()
        .map(|entry| {
            let redis_protocol::resp2::types::OwnedFrame::Array(items) = entry else {
                panic!("entry")
            };
            items.chunks(2).take(5).map(|pair| (text(&pair[0]), text(&pair[1]))).collect()
        })
        .collect()
}

fn text(frame: &redis_protocol::resp2::types::OwnedFrame) -> String {
    use redis_protocol::resp2::types::OwnedFrame;
    match frame {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => {
            String::from_utf8_lossy(b).into()
        }
        OwnedFrame::Integer(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_mode_answers_as_redis_does_and_forwards_no_denied_command() {
    crate::require_redis!();
    let scratch = Scratch::new("acl-enforce");
    let direct = redis_with_users().await;
    let behind = redis_with_users().await;
    let users = users_file(&scratch);
    let toml = format!("[auth]\nusers_file = \"{}\"\n[acl]\nmode = \"enforce\"\n", users.display());
    let proxy = TestProxy::start_with(behind.addr, &toml).await;

    let expected = replies(direct.addr, SCRIPT).await;
    let got = replies(proxy.addr, SCRIPT).await;
    for (index, (want, have)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(
            show(have),
            show(want),
            "reply {index} to {:?}",
            SCRIPT[index].iter().map(|a| String::from_utf8_lossy(a)).collect::<Vec<_>>()
        );
    }

    // Redis behind the proxy never saw a denied command.
    let mut admin = RawClient::connect(behind.addr).await;
    let stats =
        String::from_utf8_lossy(&admin.call(&[b"INFO", b"commandstats"]).await).into_owned();
    for denied in ["cmdstat_del", "cmdstat_config|get"] {
        assert!(!stats.contains(denied), "{denied} reached Redis: {stats}");
    }
    assert!(stats.contains("cmdstat_get"), "allowed commands did: {stats}");

    // The proxy's ACL LOG has Redis's entries (count, reason, context, object, username).
    let mut direct_admin = RawClient::connect(direct.addr).await;
    let theirs_reply = direct_admin.call(&[b"ACL", b"LOG"]).await;
    let theirs = log_fields(&theirs_reply);
    let mut client = RawClient::connect(proxy.addr).await;
    client.call(&[b"AUTH", b"alice", b"secret"]).await;
    let ours_reply = client.call(&[b"ACL", b"LOG"]).await;
    let ours = log_fields(&ours_reply);
    assert_eq!(ours, theirs, "ACL LOG entries, newest first");
    assert!(theirs.len() >= 6, "the script produces denials of every kind: {theirs:?}");
    // The fields of the Redis behind (seven before 7.2), and the client's own address.
    let shown = String::from_utf8_lossy(&ours_reply);
    let header =
        |reply: &[u8]| String::from_utf8_lossy(reply).split("\r\n").nth(1).map(str::to_owned);
    assert_eq!(header(&ours_reply), header(&theirs_reply), "{shown}");
    let ids = |reply: &[u8]| memchr::memmem::find(reply, b"entry-id").is_some();
    assert_eq!(ids(&ours_reply), ids(&theirs_reply), "{shown}");
    assert!(shown.contains("addr=127.0.0.1:"), "{shown}");
    assert!(shown.contains(&format!("laddr={}", proxy.addr)), "the proxy's listener: {shown}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_forwards_and_records_would_be_denials() {
    crate::require_redis!();
    let scratch = Scratch::new("acl-observe");
    let audit_dir = scratch.path().join("audit");
    // Redis itself lets everyone do everything: only the proxy's policy would deny.
    let redis = RedisServer::start(&[]);
    let users = users_file(&scratch);
    let toml = format!(
        "[auth]\nusers_file = \"{}\"\n[acl]\nmode = \"enforce\"\nobserve_users = [\"legacy\"]\n",
        users.display()
    );
    let (proxy, sink) = TestProxy::start_audited(redis.addr, &audit_dir, &toml).await;
    let mut admin = RawClient::connect(redis.addr).await;
    for (name, _) in USERS {
        let args: Vec<&[u8]> =
            vec![b"ACL", b"SETUSER", name.as_bytes(), b"on", b"nopass", b"~*", b"&*", b"+@all"];
        admin.call(&args).await;
    }

    let mut legacy = RawClient::connect(proxy.addr).await;
    assert_eq!(legacy.call(&[b"AUTH", b"legacy", b"anything"]).await, b"+OK\r\n");
    assert_eq!(legacy.call(&[b"SET", b"k", b"v"]).await, b"+OK\r\n", "observed, so forwarded");
    assert_eq!(legacy.call(&[b"GET", b"k"]).await, b"$1\r\nv\r\n");
    let mut alice = RawClient::connect(proxy.addr).await;
    assert_eq!(alice.call(&[b"AUTH", b"alice", b"x"]).await, b"+OK\r\n");
    assert_eq!(
        alice.call(&[b"DEL", b"k"]).await,
        b"-NOPERM this user has no permissions to run the 'del' command\r\n",
        "alice stays enforced"
    );
    assert_eq!(admin.call(&[b"EXISTS", b"k"]).await, b":1\r\n");

    sink.sync();
    let lines = trail(&audit_dir);
    let denials: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["action"] == "acl_denied").collect();
    let summary: Vec<(String, String, String, String)> = denials
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
            (s("user"), s("reason"), s("object"), s("mode"))
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("legacy".into(), "command".into(), "set".into(), "observe".into()),
            ("alice".into(), "command".into(), "del".into(), "enforce".into()),
        ]
    );
    for denial in &denials {
        assert_eq!(denial["source"], "proxy");
        assert_eq!(denial["policy_version"].as_str().map(str::len), Some(16));
        assert_eq!(denial["client"]["ip"], "127.0.0.1");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_user_with_a_password_means_noauth_first() {
    crate::require_redis!();
    let scratch = Scratch::new("acl-noauth");
    let redis = RedisServer::start(&["--requirepass", "pw"]);
    let path = scratch.users_file("user default on >pw ~* &* +@all -flushall\n");
    let toml = format!("[auth]\nusers_file = \"{}\"\n", path.display());
    let proxy = TestProxy::start_with(redis.addr, &toml).await;
    let script: &[&[&[u8]]] =
        &[&[b"GET", b"k"], &[b"GET"], &[b"AUTH", b"pw"], &[b"FLUSHALL"], &[b"PING"]];
    let got = replies(proxy.addr, script).await;
    let want: [&[u8]; 5] = [
        b"-NOAUTH Authentication required.\r\n",
        b"-ERR wrong number of arguments for 'get' command\r\n",
        b"+OK\r\n",
        b"-NOPERM this user has no permissions to run the 'flushall' command\r\n",
        b"+PONG\r\n",
    ];
    assert_eq!(got, want.map(<[u8]>::to_vec));
    proxy.shutdown().await;
}

/// A Redis where each of `names` may do anything: only the proxy's policy restricts them.
async fn redis_allowing(names: &[&str]) -> RedisServer {
    let redis = RedisServer::start(&[]);
    let mut admin = RawClient::connect(redis.addr).await;
    for name in names {
        let args: Vec<&[u8]> =
            vec![b"ACL", b"SETUSER", name.as_bytes(), b"on", b"nopass", b"~*", b"&*", b"+@all"];
        assert_eq!(admin.call(&args).await, b"+OK\r\n");
    }
    redis
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_policy_and_closes_deleted_or_disabled_users() {
    crate::require_redis!();
    let scratch = Scratch::new("acl-reload");
    let audit_dir = scratch.path().join("audit");
    let users = scratch.users_file("user alice on nopass ~* -@all +get +auth\nuser bob on nopass ~* +@all\nuser carol on nopass ~* +@all\n");
    let redis = redis_allowing(&["alice", "bob", "carol"]).await;
    let toml = format!("[auth]\nusers_file = \"{}\"\n", users.display());
    let (proxy, sink) = TestProxy::start_audited(redis.addr, &audit_dir, &toml).await;
    let first_version = proxy.reload_policy().expect("same file reloads");

    let login = |name: &'static str| async move {
        let mut client = RawClient::connect(proxy.addr).await;
        assert_eq!(client.call(&[b"AUTH", name.as_bytes(), b"x"]).await, b"+OK\r\n");
        client
    };
    let mut alice = login("alice").await;
    let mut bob = login("bob").await;
    let mut carol = login("carol").await;
    assert_eq!(
        alice.call(&[b"SET", b"k", b"v"]).await,
        b"-NOPERM this user has no permissions to run the 'set' command\r\n"
    );

    std::fs::write(
        &users,
        "user alice on nopass ~* -@all +get +set\nuser carol off nopass ~* +@all\n",
    )
    .unwrap();
    let second_version = proxy.reload_policy().expect("valid file");
    assert_ne!(first_version, second_version);
    assert_eq!(
        alice.call(&[b"SET", b"k", b"v"]).await,
        b"+OK\r\n",
        "re-evaluated on its next command"
    );
    assert!(bob.read_to_close().await.is_empty(), "deleted: closed without a reply");
    assert!(carol.read_to_close().await.is_empty(), "disabled: closed");

    std::fs::write(&users, "user alice on nopass +nosuchcommand\n").unwrap();
    let error = proxy.reload_policy().expect_err("a bad file is refused");
    assert!(error.contains("line 1: Error in ACL rule '+nosuchcommand'"), "{error}");
    assert_eq!(alice.call(&[b"SET", b"k", b"w"]).await, b"+OK\r\n", "the old policy stays");

    // The closed sessions' events are written as their tasks end.
    let mut lines = Vec::new();
    for _ in 0..500 {
        sink.sync();
        lines = trail(&audit_dir);
        let removed = lines.iter().filter(|l| l["close"]["reason"] == "user_removed").count();
        if removed >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let actions: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| {
            l["kind"] == "system" && l["action"].as_str().unwrap_or("").starts_with("policy")
        })
        .map(|l| (l["action"].as_str().unwrap(), l["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("policy_load", "success"),
            ("policy_reload", "success"),
            ("policy_reload", "success"),
            ("policy_reload_failed", "failure"),
        ]
    );
    let closes: Vec<&str> = lines
        .iter()
        .filter(|l| l["action"] == "session_close")
        .filter_map(|l| l["close"]["reason"].as_str())
        .collect();
    assert_eq!(closes.iter().filter(|r| **r == "user_removed").count(), 2, "{closes:?}");
    let denial = lines.iter().find(|l| l["action"] == "acl_denied").expect("a denial");
    assert_eq!(denial["policy_version"].as_str(), Some(&*first_version));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_or_misattribute_nothing() {
    crate::require_redis!();
    let scratch = Scratch::new("acl-reload-load");
    std::fs::create_dir_all(scratch.path()).unwrap();
    let users = scratch.path().join("users.acl");
    let versions =
        ["user alice on nopass ~k* -@all +get +auth\n", "user alice on nopass ~k* +@read +auth\n"];
    std::fs::write(&users, versions[0]).unwrap();
    let redis = redis_allowing(&["alice"]).await;
    let toml = format!("[auth]\nusers_file = \"{}\"\n", users.display());
    let proxy = TestProxy::start_with(redis.addr, &toml).await;

    const BATCHES: usize = 40;
    const BATCH: usize = 50;
    let addr = proxy.addr;
    let load = tokio::spawn(async move {
        let mut client = RawClient::connect(addr).await;
        assert_eq!(client.call(&[b"AUTH", b"alice", b"x"]).await, b"+OK\r\n");
        let mut answered = 0;
        for _ in 0..BATCHES {
            let batch: Vec<u8> = (0..BATCH)
                .flat_map(|_| crate::support::client::encode_command(&[b"GET", b"k1"]))
                .collect();
            client.send(&batch).await;
            for _ in 0..BATCH {
                assert_eq!(client.read_reply().await, b"$-1\r\n", "allowed by both versions");
                answered += 1;
            }
        }
        answered
    });
    for round in 0..20 {
        std::fs::write(&users, versions[round % 2]).unwrap();
        proxy.reload_policy().expect("valid");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(load.await.unwrap(), BATCHES * BATCH);
    let records = proxy.sink.wait_for(1 + BATCHES * BATCH).await;
    let gets: Vec<_> = records.iter().filter(|r| r.command_name() == "GET").collect();
    assert_eq!(gets.len(), BATCHES * BATCH, "one record per command");
    assert!(gets.iter().all(|r| &r.user[..] == b"alice"), "every command attributed to alice");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_auth_changes_the_user_the_next_commands_are_checked_as() {
    crate::require_redis!();
    let scratch = Scratch::new("acl-pipelined-auth");
    let users = scratch.users_file(
        "user alice on nopass ~* -@all +get +auth +multi +exec\nuser bob on nopass ~* +@all\n",
    );
    let redis = redis_allowing(&["alice", "bob"]).await;
    let toml = format!("[auth]\nusers_file = \"{}\"\n", users.display());
    let proxy = TestProxy::start_with(redis.addr, &toml).await;
    let mut client = RawClient::connect(proxy.addr).await;
    assert_eq!(client.call(&[b"AUTH", b"alice", b"x"]).await, b"+OK\r\n");
    let script: [&[&[u8]]; 8] = [
        &[b"SET", b"k", b"1"],
        &[b"AUTH", b"bob", b"x"],
        &[b"SET", b"k", b"2"],
        &[b"AUTH", b"alice", b"x"],
        &[b"MULTI"],
        &[b"AUTH", b"bob", b"x"],
        &[b"EXEC"],
        &[b"SET", b"k", b"3"],
    ];
    let pipeline: Vec<u8> =
        script.iter().flat_map(|c| crate::support::client::encode_command(c)).collect();
    client.send(&pipeline).await;
    let mut replies = Vec::new();
    for _ in 0..script.len() {
        replies.push(client.read_reply().await);
    }
    let want: [&[u8]; 8] = [
        b"-NOPERM this user has no permissions to run the 'set' command\r\n",
        b"+OK\r\n",
        b"+OK\r\n",
        b"+OK\r\n",
        b"+OK\r\n",
        b"+QUEUED\r\n",
        b"*1\r\n+OK\r\n",
        b"+OK\r\n",
    ];
    assert_eq!(replies, want.map(<[u8]>::to_vec), "each SET checked as the user it runs as");
    let records = proxy.sink.wait_for(9).await;
    let users: Vec<String> =
        records.iter().map(|r| String::from_utf8_lossy(&r.user).into_owned()).collect();
    assert_eq!(
        users,
        ["default", "alice", "alice", "bob", "bob", "alice", "alice", "alice", "bob"]
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_log_groups_bounds_and_encodes_resp3_with_consistent_times() {
    crate::require_server!(crate::support::redis::Server::Redis72);
    let scratch = Scratch::new("acl-log");
    let users =
        scratch.users_file("user default on nopass ~app:* -@all +get +hello +acl|log +ping\n");
    // Entry ids and timestamps are Redis 7.2's: the proxy gives them in front of 7.2.
    let redis = RedisServer::start_server(crate::support::redis::Server::Redis72, &[]);
    let toml = format!("[auth]\nusers_file = \"{}\"\n[acl]\nlog_max_len = 2\n", users.display());
    let proxy = TestProxy::start_with(redis.addr, &toml).await;
    let started_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    let mut client = RawClient::connect(proxy.addr).await;
    for command in
        [&[&b"DEL"[..], b"a"][..], &[b"DEL", b"a"], &[b"GET", b"x"], &[b"SET", b"a", b"b"]]
    {
        assert!(client.call(command).await.starts_with(b"-NOPERM"));
    }
    let hello = client.call(&[b"HELLO", b"3"]).await;
    assert!(hello.starts_with(b"%"), "{}", show(&hello));
    let reply = client.call(&[b"ACL", b"LOG"]).await;
    let (frame, _) = redis_protocol::resp3::decode::complete::decode(&reply).unwrap().unwrap();
    use redis_protocol::resp3::types::OwnedFrame;
    let OwnedFrame::Array { data: entries, .. } = frame else { panic!("{}", show(&reply)) };
    assert_eq!(entries.len(), 2, "acl.log_max_len = 2 keeps the two newest");
    let finished_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    let mut ids = Vec::new();
    for (entry, (object, count)) in entries.iter().zip([("set", 1), ("x", 1)]) {
        let OwnedFrame::Map { data, .. } = entry else { panic!("a RESP3 map: {}", show(&reply)) };
        assert_eq!(data.len(), 10, "ten fields");
        let field = |name: &str| {
            data.iter()
                .find(|(k, _)| matches!(k, OwnedFrame::BlobString { data, .. } if data == name.as_bytes()))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {name}"))
        };
        let int = |name: &str| match field(name) {
            OwnedFrame::Number { data, .. } => data,
            other => panic!("{name}: {other:?}"),
        };
        assert!(
            matches!(field("object"), OwnedFrame::BlobString { data, .. } if data == object.as_bytes())
        );
        assert_eq!(int("count"), count);
        assert!(matches!(field("age-seconds"), OwnedFrame::Double { .. }), "a RESP3 double");
        let (created, updated) = (int("timestamp-created"), int("timestamp-last-updated"));
        assert!(started_ms <= created && created <= updated && updated <= finished_ms);
        ids.push(int("entry-id"));
    }
    // DEL a twice grouped into entry 0, then GET x (1) and SET a (2): newest first.
    assert_eq!(ids, [2, 1]);
    let grouped = String::from_utf8_lossy(&reply).into_owned();
    assert!(grouped.contains(&format!("laddr={}", proxy.addr)), "{grouped}");
    proxy.shutdown().await;
}
