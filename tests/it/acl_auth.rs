//! `auth.mode = "proxy"`: the proxy authenticates clients against its users file, answers
//! AUTH and HELLO with Redis's exact replies and errors, logs in upstream as a service user,
//! and never passes a client's credentials to Redis.

use crate::support::client::show;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

const USERS_FILE: &str = "user default off\n\
    user alice on >secret ~app:* -@all +@read +acl|whoami +acl|log +acl|dryrun +hello\n\
    user bob off >pw +@all ~*\n";

/// The same users on a real Redis, to compare with.
async fn reference_redis() -> RedisServer {
    let redis = RedisServer::start(&[]);
    let mut admin = RawClient::connect(redis.addr).await;
    let setusers: [&[&[u8]]; 3] = [
        &[
            b"ACL",
            b"SETUSER",
            b"alice",
            b"on",
            b">secret",
            b"~app:*",
            b"-@all",
            b"+@read",
            b"+acl|whoami",
            b"+acl|log",
            b"+acl|dryrun",
            b"+hello",
        ],
        &[b"ACL", b"SETUSER", b"bob", b"off", b">pw", b"+@all", b"~*"],
        &[b"ACL", b"SETUSER", b"default", b"reset"],
    ];
    for args in setusers {
        assert_eq!(admin.call(args).await, b"+OK\r\n");
    }
    redis
}

/// HELLO's map carries the connection id, which differs: replace its value.
fn normalize(reply: &[u8]) -> String {
    let text = show(reply);
    match text.find("id\\r\\n:") {
        Some(at) => {
            let start = at + "id\\r\\n:".len();
            let end = text[start..].find('\\').map_or(text.len(), |e| start + e);
            format!("{}N{}", &text[..start], &text[end..])
        }
        None => text,
    }
}

const SCRIPT: &[&[&[u8]]] = &[
    &[b"GET", b"app:1"],
    &[b"AUTH"],
    &[b"AUTH", b"a", b"b", b"c"],
    &[b"AUTH", b"pw"],
    &[b"AUTH", b"alice", b"wrong"],
    &[b"AUTH", b"bob", b"pw"],
    &[b"AUTH", b"nobody", b"pw"],
    &[b"HELLO", b"4"],
    &[b"HELLO", b"x"],
    &[b"HELLO", b"3", b"FOO"],
    &[b"HELLO", b"3"],
    &[b"PING"],
    &[b"HELLO", b"2", b"AUTH", b"alice", b"secret", b"SETNAME", b"app1"],
    &[b"ACL", b"WHOAMI"],
    &[b"GET", b"app:1"],
    &[b"GET", b"other"],
    &[b"SET", b"app:1", b"v"],
    &[b"ACL", b"DRYRUN", b"alice", b"GET", b"other"],
    &[b"ACL", b"DRYRUN", b"alice", b"GET", b"app:2"],
    &[b"ACL", b"DRYRUN", b"nobody", b"GET", b"x"],
    &[b"ACL", b"DRYRUN", b"alice", b"NOSUCH"],
    &[b"AUTH", b"alice", b"secret"],
    &[b"CLIENT", b"GETNAME"],
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_auth_answers_as_redis_does_without_passing_credentials() {
    crate::require_redis!();
    let scratch = Scratch::new("acl-auth");
    let users = scratch.users_file(USERS_FILE);
    let reference = reference_redis().await;
    // Redis behind the proxy knows only its service user.
    let behind = RedisServer::start(&["--requirepass", "service-secret"]);
    let toml = format!(
        "[auth]\nmode = \"proxy\"\nusers_file = \"{}\"\nupstream_user = \"default\"\nupstream_password = \"service-secret\"\n",
        users.display()
    );
    let proxy = TestProxy::start_with(behind.addr, &toml).await;

    let mut direct = RawClient::connect(reference.addr).await;
    let mut through = RawClient::connect(proxy.addr).await;
    for (index, command) in SCRIPT.iter().enumerate() {
        let want = normalize(&direct.call(command).await);
        let got = normalize(&through.call(command).await);
        assert_eq!(
            got,
            want,
            "reply {index} to {:?}",
            command.iter().map(|a| String::from_utf8_lossy(a)).collect::<Vec<_>>()
        );
    }

    // The failed logins are in the proxy's ACL LOG as in Redis's.
    let log_values = |reply: Vec<u8>| -> Vec<String> {
        let text = String::from_utf8_lossy(&reply).into_owned();
        let parts: Vec<&str> = text.split("\r\n").collect();
        let mut out = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            if matches!(*part, "count" | "reason" | "context" | "object" | "username") {
                out.push(format!("{part}={}", parts.get(i + 2).copied().unwrap_or_default()));
            }
        }
        out
    };
    let theirs = log_values(direct.call(&[b"ACL", b"LOG"]).await);
    let ours = log_values(through.call(&[b"ACL", b"LOG"]).await);
    assert_eq!(ours, theirs);
    assert!(theirs.iter().filter(|f| *f == "reason=auth").count() >= 4, "{theirs:?}");

    // Redis behind the proxy never saw a client's credentials: no failed AUTH there.
    let mut admin = RawClient::connect(behind.addr).await;
    assert_eq!(admin.call(&[b"AUTH", b"service-secret"]).await, b"+OK\r\n");
    assert_eq!(admin.call(&[b"ACL", b"LOG"]).await, b"*0\r\n");
    let stats =
        String::from_utf8_lossy(&admin.call(&[b"INFO", b"commandstats"]).await).into_owned();
    assert!(stats.contains("cmdstat_auth:calls="), "the service login: {stats}");
    assert!(!stats.contains("cmdstat_set"), "denied SET never forwarded: {stats}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_auth_applies_in_order() {
    crate::require_redis!();
    let scratch = Scratch::new("acl-auth-pipeline");
    let users = scratch
        .users_file("user default on nopass ~* -@all +get +auth\nuser alice on >secret ~* +@all\n");
    let redis = RedisServer::start(&[]);
    // Each refusal its own record (not grouped with the identical one before it).
    let toml = format!(
        "[auth]\nmode = \"proxy\"\nusers_file = \"{}\"\n[audit]\ngroup_refusals_secs = 0\n",
        users.display()
    );
    let proxy = TestProxy::start_with(redis.addr, &toml).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let mut pipeline = Vec::new();
    for command in [
        &[&b"SET"[..], b"k", b"1"][..],
        &[b"GET", b"k"],
        &[b"AUTH", b"alice", b"secret"],
        &[b"SET", b"k", b"2"],
        &[b"GET", b"k"],
        &[b"RESET"],
        &[b"SET", b"k", b"3"],
    ] {
        pipeline.extend(crate::support::client::encode_command(command));
    }
    client.send(&pipeline).await;
    let mut replies = Vec::new();
    for _ in 0..7 {
        replies.push(show(&client.read_reply().await));
    }
    let expected: [&[u8]; 7] = [
        b"-NOPERM this user has no permissions to run the 'set' command\r\n",
        b"$-1\r\n",
        b"+OK\r\n",
        b"+OK\r\n",
        b"$1\r\n2\r\n",
        b"+RESET\r\n",
        b"-NOPERM this user has no permissions to run the 'set' command\r\n",
    ];
    assert_eq!(replies, expected.map(show));
    let records = proxy.sink.wait_for(7).await;
    let users: Vec<String> =
        records.iter().map(|r| String::from_utf8_lossy(&r.user).into_owned()).collect();
    assert_eq!(users, ["default", "default", "alice", "alice", "alice", "alice", "default"]);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_setuser_getuser_list_deluser_save_act_on_the_proxys_users() {
    crate::require_redis!();
    let scratch = Scratch::new("acl-setuser");
    let users = scratch.users_file("user default off\nuser admin on >adminpw ~* &* +@all\n");
    let reference = RedisServer::start(&[]);
    let behind = RedisServer::start(&[]);
    let toml = format!("[auth]\nmode = \"proxy\"\nusers_file = \"{}\"\n", users.display());
    let proxy = TestProxy::start_with(behind.addr, &toml).await;
    let mut direct = RawClient::connect(reference.addr).await;
    let mut admin = RawClient::connect(proxy.addr).await;
    assert_eq!(admin.call(&[b"AUTH", b"admin", b"adminpw"]).await, b"+OK\r\n");

    // The same SETUSER commands give the same replies and the same user as in Redis.
    let same: [&[&[u8]]; 5] = [
        &[b"ACL", b"SETUSER", b"carol", b"on", b">pw", b"~c:*", b"+get"],
        &[b"ACL", b"SETUSER", b"carol", b"(~a"],
        &[b"ACL", b"SETUSER", b"carol", b"+nosuchcommand"],
        &[b"ACL", b"SETUSER", b"bad name"],
        &[b"ACL", b"GETUSER", b"carol"],
    ];
    for command in same {
        assert_eq!(
            show(&admin.call(command).await),
            show(&direct.call(command).await),
            "{command:?}"
        );
    }
    assert_eq!(admin.call(&[b"ACL", b"GETUSER", b"nobody"]).await, b"$-1\r\n");
    let list = String::from_utf8_lossy(&admin.call(&[b"ACL", b"LIST"]).await).into_owned();
    let theirs = String::from_utf8_lossy(&direct.call(&[b"ACL", b"LIST"]).await).into_owned();
    let carol_line =
        |text: &str| text.lines().find(|l| l.starts_with("user carol")).map(str::to_owned);
    assert_eq!(carol_line(&list), carol_line(&theirs));
    assert!(carol_line(&list).is_some(), "{list}");

    // carol exists for the proxy only: she logs in, and her rules apply at once.
    let mut carol = RawClient::connect(proxy.addr).await;
    assert_eq!(carol.call(&[b"AUTH", b"carol", b"pw"]).await, b"+OK\r\n");
    assert_eq!(carol.call(&[b"GET", b"c:1"]).await, b"$-1\r\n");
    assert_eq!(
        carol.call(&[b"GET", b"x"]).await,
        b"-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
    );

    // SAVE writes the users in force, atomically, in the file's own syntax.
    assert_eq!(admin.call(&[b"ACL", b"SAVE"]).await, b"+OK\r\n");
    let saved = std::fs::read_to_string(&users).unwrap();
    assert!(saved.contains("user carol on #"), "{saved}");
    assert!(saved.contains("user admin on #"), "{saved}");
    assert!(!saved.contains("adminpw"), "only hashes: {saved}");

    assert_eq!(
        show(&admin.call(&[b"ACL", b"DELUSER", b"default"]).await),
        show(&direct.call(&[b"ACL", b"DELUSER", b"default"]).await)
    );
    assert_eq!(admin.call(&[b"ACL", b"DELUSER", b"carol", b"nobody"]).await, b":1\r\n");
    assert!(carol.read_to_close().await.is_empty(), "a deleted user's connection is closed");
    let mut again = RawClient::connect(proxy.addr).await;
    assert_eq!(
        again.call(&[b"AUTH", b"carol", b"pw"]).await,
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    // ACL LOAD goes back to the saved file.
    assert_eq!(admin.call(&[b"ACL", b"LOAD"]).await, b"+OK\r\n");
    assert_eq!(again.call(&[b"AUTH", b"carol", b"pw"]).await, b"+OK\r\n");
    // Redis behind the proxy knows carol only as her mirror, whose password only the proxy
    // derives: her own credentials never reached it.
    let mut behind_admin = RawClient::connect(behind.addr).await;
    let redis_users =
        String::from_utf8_lossy(&behind_admin.call(&[b"ACL", b"USERS"]).await).into_owned();
    assert!(!redis_users.split("\r\n").any(|name| name == "carol"), "{redis_users}");
    let wrong = behind_admin.call(&[b"AUTH", b"rap:carol", b"pw"]).await;
    assert!(wrong.starts_with(b"-WRONGPASS"), "{}", show(&wrong));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_inside_multi_is_refused_and_the_transaction_fails() {
    crate::require_redis!();
    let scratch = Scratch::new("acl-auth-multi");
    let users =
        scratch.users_file("user default on nopass ~* &* +@all\nuser alice on >pw ~* +@all\n");
    let redis = RedisServer::start(&[]);
    let toml = format!("[auth]\nmode = \"proxy\"\nusers_file = \"{}\"\n", users.display());
    let proxy = TestProxy::start_with(redis.addr, &toml).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let script: [&[&[u8]]; 7] = [
        &[b"MULTI"],
        &[b"SET", b"k", b"v"],
        &[b"AUTH", b"alice", b"pw"],
        &[b"EXEC"],
        &[b"EXISTS", b"k"],
        &[b"MULTI"],
        &[b"HELLO", b"3"],
    ];
    let mut replies = Vec::new();
    for command in script {
        replies.push(show(&client.call(command).await));
    }
    replies.push(show(&client.call(&[b"EXEC"]).await));
    assert_eq!(replies[..5], [
        show(b"+OK\r\n"),
        show(b"+QUEUED\r\n"),
        show(b"-ERR AUTH and HELLO AUTH inside MULTI are not supported with auth.mode = \"proxy\"\r\n"),
        show(b"-EXECABORT Transaction discarded because of previous errors.\r\n"),
        show(b":0\r\n"),
    ]);
    assert_eq!(replies[6], show(b"+QUEUED\r\n"), "HELLO without AUTH is queued as in Redis");
    assert!(replies[7].starts_with("*1\\r\\n%"), "EXEC ran HELLO 3: {}", replies[7]);
    proxy.shutdown().await;
}
