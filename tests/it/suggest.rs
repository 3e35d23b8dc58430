//! `audit suggest-acl`: random synthetic workloads (users with their own key spaces and
//! command sets) run through an auditing proxy; the users file suggested from its trail loads,
//! lets the same workload through a proxy that enforces it without one denial, refuses a
//! command and a key each user never used, and every user line is accepted by a real Redis's
//! `ACL SETUSER`.

use std::collections::BTreeMap;

use redis_audit_proxy::acl::Policy;
use redis_audit_proxy::config::AclMode;
use redis_audit_proxy::query::AuditQuery;

use crate::support::rng::Rng;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

const BINARY: &str = env!("CARGO_BIN_EXE_redis-audit-proxy");
const USERS: [&str; 3] = ["alice", "bob", "carol"];
/// What a user may be given to run: a name and how many keys (0: a channel).
const MENU: &[(&str, usize)] = &[
    ("GET", 1),
    ("SET", 1),
    ("INCR", 1),
    ("LPUSH", 1),
    ("LRANGE", 1),
    ("HSET", 1),
    ("HGET", 1),
    ("EXISTS", 1),
    ("PUBLISH", 0),
];
const WORDS: [&str; 6] = ["user", "order", "cache", "session", "feed", "cart"];

/// One command of the workload: its user and arguments.
type Step = (String, Vec<Vec<u8>>);

fn args_of(name: &str, target: &str, rng: &mut Rng) -> Vec<Vec<u8>> {
    let value = format!("{}", rng.below(1000));
    let words: Vec<String> = match name {
        "GET" | "INCR" | "EXISTS" => vec![name.into(), target.into()],
        "SET" | "LPUSH" | "PUBLISH" => vec![name.into(), target.into(), value],
        "LRANGE" => vec![name.into(), target.into(), "0".into(), "-1".into()],
        "HSET" => vec![name.into(), target.into(), "f".into(), value],
        _ => vec![name.into(), target.into(), "f".into()],
    };
    words.into_iter().map(String::into_bytes).collect()
}

/// Each user gets 3 to 5 commands of the menu and two key prefixes of its own (and a channel
/// prefix); keys never collide across commands of different types.
fn workload(seed: u64) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut steps = Vec::new();
    for user in USERS {
        let mut menu: Vec<(&str, usize)> = MENU.to_vec();
        let mut mine = Vec::new();
        for _ in 0..3 + rng.below(3) {
            mine.push(menu.remove(rng.below(menu.len())));
        }
        let prefixes: Vec<String> =
            (0..2).map(|_| format!("{user}:{}:", WORDS[rng.below(WORDS.len())])).collect();
        for _ in 0..40 {
            let (name, keys) = mine[rng.below(mine.len())];
            let target = if keys == 0 {
                format!("news:{user}:{}", rng.below(5))
            } else {
                // One key type per command: the name is part of the key.
                let prefix = &prefixes[rng.below(prefixes.len())];
                format!("{prefix}{}:{}", name.to_ascii_lowercase(), rng.below(20))
            };
            steps.push((user.to_owned(), args_of(name, &target, &mut rng)));
        }
    }
    steps
}

/// Runs `steps`, each user on its own connection; returns each reply.
async fn run(addr: std::net::SocketAddr, steps: &[Step]) -> Vec<(Step, Vec<u8>)> {
    let mut clients: BTreeMap<String, RawClient> = BTreeMap::new();
    let mut replies = Vec::new();
    for step in steps {
        if !clients.contains_key(&step.0) {
            let mut client = RawClient::connect(addr).await;
            let auth = client.call(&[b"AUTH", step.0.as_bytes(), b"any"]).await;
            assert_eq!(auth, b"+OK\r\n", "AUTH {}", step.0);
            clients.insert(step.0.clone(), client);
        }
        let client = clients.get_mut(&step.0).expect("connected");
        let args: Vec<&[u8]> = step.1.iter().map(Vec::as_slice).collect();
        replies.push((step.clone(), client.call(&args).await));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suggested_users_file_lets_the_workload_through_and_nothing_more() {
    crate::require_redis!();
    let seed = 0x05ee_dac1 ^ u64::from(std::process::id());
    eprintln!("suggest-acl workload seed {seed:#x}");
    let scratch = Scratch::new("suggest-acl");
    std::fs::create_dir_all(scratch.path()).unwrap();
    // Redis lets everyone do everything: only the proxy's users file decides.
    let redis = RedisServer::start(&[]);
    let mut admin = RawClient::connect(redis.addr).await;
    for user in USERS {
        let args: [&[u8]; 8] =
            [b"ACL", b"SETUSER", user.as_bytes(), b"on", b"nopass", b"~*", b"&*", b"+@all"];
        assert_eq!(admin.call(&args).await, b"+OK\r\n");
    }
    let audit_dir = scratch.path().join("audit");
    let (proxy, sink) = TestProxy::start_audited(redis.addr, &audit_dir, "").await;
    let steps = workload(seed);
    for ((user, args), reply) in run(proxy.addr, &steps).await {
        assert!(!reply.starts_with(b"-"), "{user} {args:?}: {reply:?} (seed {seed:#x})");
    }
    sink.sync();
    let table = proxy.commands();
    proxy.shutdown().await;

    let everything = AuditQuery::range(None, None).unwrap();
    let suggested =
        redis_audit_proxy::query::suggest::suggest(&audit_dir, &everything, None, None, &table)
            .unwrap();
    eprintln!("{suggested}");
    Policy::compile(suggested.as_bytes(), &table, AclMode::Enforce, &[])
        .unwrap_or_else(|e| panic!("the suggestion does not load: {e}\n{suggested}"));
    // The CLI prints the same file.
    let output = std::process::Command::new(BINARY)
        .args(["audit", "suggest-acl", "--dir"])
        .arg(&audit_dir)
        .output()
        .expect("run the binary");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8(output.stdout).unwrap();
    let lines = |text: &str| -> Vec<String> {
        text.lines().filter(|l| l.starts_with("user ")).map(str::to_owned).collect()
    };
    assert_eq!(lines(&printed), lines(&suggested));
    // The three users, and `default`, which sent each AUTH before it succeeded.
    assert_eq!(lines(&suggested).len(), USERS.len() + 1, "{suggested}");
    assert!(
        lines(&suggested)
            .contains(&"user default on nopass resetkeys resetchannels -@all +auth".to_owned()),
        "{suggested}"
    );

    // Enforced, the suggestion lets the same workload through...
    let users_path = scratch.path().join("suggested.acl");
    std::fs::write(&users_path, &suggested).unwrap();
    let toml = format!("[auth]\nusers_file = \"{}\"\n", users_path.display());
    let enforcing = TestProxy::start_with(redis.addr, &toml).await;
    for ((user, args), reply) in run(enforcing.addr, &steps).await {
        assert!(
            !reply.starts_with(b"-NOPERM"),
            "{user} {args:?} denied (seed {seed:#x})\n{suggested}"
        );
    }
    // ...and nothing more: a command and a key each user never used.
    for user in USERS {
        let mut client = RawClient::connect(enforcing.addr).await;
        assert_eq!(client.call(&[b"AUTH", user.as_bytes(), b"any"]).await, b"+OK\r\n");
        let flush = client.call(&[b"FLUSHALL"]).await;
        assert!(flush.starts_with(b"-NOPERM"), "{user} FLUSHALL: {flush:?}");
        let used = steps.iter().find(|(who, args)| who == user && args.len() >= 2).unwrap();
        let mut outside = used.1.clone();
        outside[1] = b"elsewhere:k".to_vec();
        let args: Vec<&[u8]> = outside.iter().map(Vec::as_slice).collect();
        let reply = client.call(&args).await;
        assert!(reply.starts_with(b"-NOPERM"), "{user} {outside:?}: {reply:?}\n{suggested}");
    }
    enforcing.shutdown().await;

    // Every user line is valid ACL SETUSER input for a real Redis.
    // (Not `default`'s: it would lock this admin connection out.)
    for line in lines(&suggested).iter().filter(|line| !line.starts_with("user default ")) {
        let words: Vec<&[u8]> = line.split(' ').skip(1).map(str::as_bytes).collect();
        let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER"];
        args.extend(words);
        assert_eq!(admin.call(&args).await, b"+OK\r\n", "{line}");
    }
}
