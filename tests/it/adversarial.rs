//! Adversarial clients against the findings of the December 2026 security review
//! (`security-2026-12.md`) about what may run: C1, C2, H1, M3, M6, M8. Each test plays a
//! finding's trigger against a real Redis and checks both what the client is answered and
//! that nothing refused ran on the upstream.

use redis_audit_proxy::command::TableSource;
use redis_audit_proxy::config::{Config, Overrides};

use crate::support::adversary::*;
use crate::support::client::show;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

const ALICE_C1: &str = "on >secret ~app:* -@all +@read +@write +multi +exec +discard";

/// Proxy auth mode with `default` off and alice, in front of a Redis with the service login;
/// a reference Redis holding alice. Both write any RDB into the scratch directory.
async fn c1_setup(tag: &str) -> (Scratch, RedisServer, RedisServer, TestProxy) {
    let scratch = Scratch::new(tag);
    let users = scratch.users_file(&format!("user default off\nuser alice {ALICE_C1}\n"));
    let dir = scratch.path().display().to_string();
    // --dir: a SAVE or SYNC that gets through writes its RDB into the scratch directory.
    let behind = RedisServer::start(&["--requirepass", "service-secret", "--dir", &dir]);
    let (reference, _root) = reference(&[("alice", ALICE_C1)], &["--dir", &dir]).await;
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, SERVICE)).await;
    (scratch, behind, reference, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_wrong_arity_multi_lets_no_save_sync_or_psync_run_upstream() {
    crate::require_redis!();
    let (_scratch, behind, reference, proxy) = c1_setup("adv-c1").await;

    let script: [&[&[u8]]; 4] =
        [&[b"MULTI", b"x"], &[b"SAVE"], &[b"SYNC"], &[b"PSYNC", b"?", b"-1"]];
    let want = pipeline(&mut RawClient::connect(reference.addr).await, &script, 4).await;
    let got = pipeline(&mut RawClient::connect(proxy.addr).await, &script, 4).await;
    assert_eq!(
        want,
        [
            show(b"-ERR wrong number of arguments for 'multi' command\r\n"),
            show(b"-NOAUTH Authentication required.\r\n"),
            show(b"-NOAUTH Authentication required.\r\n"),
            show(b"-NOAUTH Authentication required.\r\n"),
        ],
        "what Redis answers"
    );
    assert_eq!(got, want, "the proxy answers as Redis does");

    let mut upstream = admin(behind.addr, &[b"service-secret"]).await;
    let stats = commandstats(&mut upstream).await;
    for ran in ["cmdstat_save", "cmdstat_sync", "cmdstat_psync"] {
        assert!(!stats.contains(ran), "{ran} reached Redis as the service user: {stats}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_user_s_save_inside_multi_is_answered_as_redis_does_and_never_runs() {
    crate::require_redis!();
    let (_scratch, behind, reference, proxy) = c1_setup("adv-c1-multi").await;

    let script: [&[&[u8]]; 4] =
        [&[b"AUTH", b"alice", b"secret"], &[b"MULTI"], &[b"SAVE"], &[b"EXEC"]];
    let want = one_by_one(&mut RawClient::connect(reference.addr).await, &script).await;
    let got = one_by_one(&mut RawClient::connect(proxy.addr).await, &script).await;
    assert_eq!(
        want,
        [
            show(b"+OK\r\n"),
            show(b"+OK\r\n"),
            show(b"-ERR Command not allowed inside a transaction\r\n"),
            show(b"-EXECABORT Transaction discarded because of previous errors.\r\n"),
        ],
        "what Redis answers"
    );
    assert_eq!(got, want, "the proxy answers as Redis does");

    let mut upstream = admin(behind.addr, &[b"service-secret"]).await;
    let stats = commandstats(&mut upstream).await;
    assert_eq!(calls(&stats, "save"), 0, "SAVE never ran: {stats}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_the_table_does_not_know_need_auth_and_full_rights_and_the_table_is_live() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-c2");
    let users =
        scratch.users_file("user default off\nuser alice on >secret ~app:* +@all -@dangerous\n");
    let behind =
        RedisServer::start(&["--requirepass", "s", "--rename-command", "FLUSHALL", "XFLUSH"]);
    let mut upstream = admin(behind.addr, &[b"s"]).await;
    assert_eq!(upstream.call(&[b"SET", b"keep", b"1"]).await, b"+OK\r\n");
    let toml = proxy_mode(&users, "upstream_user = \"default\"\nupstream_password = \"s\"\n");
    let proxy = TestProxy::start_with(behind.addr, &toml).await;

    let mut client = RawClient::connect(proxy.addr).await;
    let unauthenticated = one_by_one(&mut client, &[&[b"SET", b"k", b"v"], &[b"XFLUSH"]]).await;
    assert_eq!(
        unauthenticated,
        [
            show(b"-NOAUTH Authentication required.\r\n"),
            show(b"-NOAUTH Authentication required.\r\n")
        ]
    );
    let mut alice = RawClient::connect(proxy.addr).await;
    assert_eq!(alice.call(&[b"AUTH", b"alice", b"secret"]).await, b"+OK\r\n");
    let renamed = one_by_one(&mut alice, &[&[b"XFLUSH"]]).await;
    assert_eq!(
        renamed,
        [show(b"-ERR unknown command 'XFLUSH', with args beginning with: \r\n")],
        "a command the table does not know, for a user without +@all ~* &*: Redis's answer to \
         an unknown command, and nothing forwarded"
    );

    assert_eq!(upstream.call(&[b"EXISTS", b"keep"]).await, b":1\r\n", "nothing was flushed");
    assert_eq!(upstream.call(&[b"EXISTS", b"k"]).await, b":0\r\n");
    let stats = commandstats(&mut upstream).await;
    assert!(!stats.contains("cmdstat_flushall"), "XFLUSH reached Redis: {stats}");
    assert!(
        matches!(proxy.commands().source, TableSource::Live(_)),
        "the table is read with the service login: {:?}",
        proxy.commands().source
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_mode_reads_the_live_table_with_the_configured_table_login() {
    crate::require_redis!();
    let behind = RedisServer::start(&["--requirepass", "s"]);
    let toml = "[upstream]\ntable_user = \"default\"\ntable_password = \"s\"\n";
    let proxy = TestProxy::start_with(behind.addr, toml).await;
    assert!(
        matches!(proxy.commands().source, TableSource::Live(_)),
        "{:?}",
        proxy.commands().source
    );
    let mut client = RawClient::connect(proxy.addr).await;
    let replies = one_by_one(&mut client, &[&[b"AUTH", b"s"], &[b"SET", b"k", b"v"]]).await;
    assert_eq!(replies, [show(b"+OK\r\n"), show(b"+OK\r\n")]);
    let mut upstream = admin(behind.addr, &[b"s"]).await;
    assert_eq!(upstream.call(&[b"GET", b"k"]).await, b"$1\r\nv\r\n");
    proxy.shutdown().await;
}

const ALICE_H1: &str = "on >secret ~app:* +@all -@dangerous";
const WRITE_SECRET: &[u8] = b"return redis.call('SET','secret','pwned')";
const LIBRARY: &[u8] = b"#!lua name=lib\n\
    redis.register_function('w', function(k, a) return redis.call('SET', 'secret', 'x') end)";

/// Proxy mode in front of a `--requirepass service-secret` Redis that has [`LIBRARY`]
/// loaded; the reference Redis has it too.
async fn h1_setup(
    scratch: &Scratch,
    users_text: &str,
    users: &[(&str, &str)],
    extra_auth: &str,
) -> (RedisServer, RedisServer, RawClient, RawClient, TestProxy) {
    let file = scratch.users_file(users_text);
    let behind = RedisServer::start(&["--requirepass", "service-secret"]);
    let (reference, mut reference_admin) = reference(users, &[]).await;
    let mut upstream = admin(behind.addr, &[b"service-secret"]).await;
    for server in [&mut upstream, &mut reference_admin] {
        assert_eq!(server.call(&[b"FUNCTION", b"LOAD", LIBRARY]).await, b"$3\r\nlib\r\n");
    }
    let proxy =
        TestProxy::start_with(behind.addr, &proxy_mode(&file, &format!("{SERVICE}{extra_auth}")))
            .await;
    (behind, reference, upstream, reference_admin, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_and_fcall_run_with_the_user_s_own_rights_as_on_redis_with_mirrored_users() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-h1");
    let (_behind, reference, mut upstream, mut reference_admin, proxy) = h1_setup(
        &scratch,
        &format!("user default off\nuser alice {ALICE_H1}\n"),
        &[("alice", ALICE_H1)],
        "",
    )
    .await;
    let script: [&[&[u8]]; 3] =
        [&[b"AUTH", b"alice", b"secret"], &[b"EVAL", WRITE_SECRET, b"0"], &[b"FCALL", b"w", b"0"]];
    let want = one_by_one(&mut RawClient::connect(reference.addr).await, &script).await;
    let got = one_by_one(&mut RawClient::connect(proxy.addr).await, &script).await;
    // Redis 7.0.15: "-ERR The user executing the script can't access at least one of the keys
    // mentioned in the command arguments script: <sha1 or w>, on @user_...:N." (nothing
    // connection-specific to normalise).
    assert!(want[1].starts_with("-ERR") && want[2].starts_with("-ERR"), "{want:?}");
    assert_eq!(got, want, "the proxy's replies are Redis's own");
    assert_eq!(reference_admin.call(&[b"GET", b"secret"]).await, b"$-1\r\n");
    assert_eq!(upstream.call(&[b"GET", b"secret"]).await, b"$-1\r\n", "the script wrote upstream");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mirrored_users_eval_and_fcall_are_refused_to_users_narrower_than_all() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-h1-off");
    let (_behind, _reference, mut upstream, _reference_admin, proxy) = h1_setup(
        &scratch,
        &format!("user default off\nuser alice {ALICE_H1}\nuser root on >rootpw ~* &* +@all\n"),
        &[("alice", ALICE_H1)],
        "mirror_users = \"off\"\n",
    )
    .await;
    let mut alice = RawClient::connect(proxy.addr).await;
    assert_eq!(alice.call(&[b"AUTH", b"alice", b"secret"]).await, b"+OK\r\n");
    let replies =
        one_by_one(&mut alice, &[&[b"EVAL", WRITE_SECRET, b"0"], &[b"FCALL", b"w", b"0"]]).await;
    for reply in &replies {
        assert!(reply.starts_with("-NOPERM"), "{replies:?}");
    }
    assert_eq!(upstream.call(&[b"GET", b"secret"]).await, b"$-1\r\n", "the script wrote upstream");
    let stats = commandstats(&mut upstream).await;
    assert_eq!(calls(&stats, "eval") + calls(&stats, "fcall"), 0, "{stats}");

    // A user with every right still runs scripts.
    let mut root = RawClient::connect(proxy.addr).await;
    assert_eq!(root.call(&[b"AUTH", b"root", b"rootpw"]).await, b"+OK\r\n");
    assert_eq!(
        root.call(&[b"EVAL", b"return redis.call('SET','app:ok','1')", b"0"]).await,
        b"+OK\r\n"
    );
    assert_eq!(upstream.call(&[b"GET", b"app:ok"]).await, b"$1\r\n1\r\n");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_by_and_get_need_read_access_to_every_key_as_on_redis_in_both_mirror_modes() {
    crate::require_redis!();
    const BOB: &str = "on >pw ~app:* -@all +rpush +sort +get";
    for extra_auth in ["", "mirror_users = \"off\"\n"] {
        let scratch = Scratch::new("adv-h1-sort");
        let (_behind, reference, mut upstream, mut reference_admin, proxy) = h1_setup(
            &scratch,
            &format!("user default off\nuser bob {BOB}\n"),
            &[("bob", BOB)],
            extra_auth,
        )
        .await;
        for server in [&mut upstream, &mut reference_admin] {
            assert_eq!(server.call(&[b"SET", b"secret", b"topsecret"]).await, b"+OK\r\n");
        }
        let script: [&[&[u8]]; 5] = [
            &[b"AUTH", b"bob", b"pw"],
            &[b"RPUSH", b"app:l", b"secret"],
            &[b"SORT", b"app:l", b"BY", b"nosort", b"GET", b"*"],
            &[b"SORT", b"app:l", b"BY", b"w_*"],
            &[b"SORT", b"app:l", b"BY", b"nosort", b"GET", b"*", b"STORE", b"app:out"],
        ];
        let want = one_by_one(&mut RawClient::connect(reference.addr).await, &script).await;
        let got = one_by_one(&mut RawClient::connect(proxy.addr).await, &script).await;
        assert_eq!(
            want[2..],
            [
                show(b"-ERR GET option of SORT denied due to insufficient ACL permissions.\r\n"),
                show(b"-ERR BY option of SORT denied due to insufficient ACL permissions.\r\n"),
                show(b"-ERR GET option of SORT denied due to insufficient ACL permissions.\r\n"),
            ],
            "what Redis answers"
        );
        assert_eq!(got, want, "{extra_auth:?}: the proxy answers as Redis does");
        assert_eq!(
            upstream.call(&[b"EXISTS", b"app:out"]).await,
            b":0\r\n",
            "{extra_auth:?}: SORT ... GET * STORE copied the secret upstream"
        );
        assert_eq!(
            upstream.call(&[b"LRANGE", b"app:l", b"0", b"-1"]).await,
            b"*1\r\n$6\r\nsecret\r\n"
        );
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_selector_token_in_the_users_file_is_refused_at_configuration() {
    crate::require_redis!();
    for line in ["user a on (\"\")", "user a on (~x \"\")"] {
        let scratch = Scratch::new("adv-m3");
        let users = scratch.users_file(&format!("user default off\n{line}\n"));
        let raw = toml::from_str(&proxy_mode(&users, "")).expect("TOML parses");
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".into()),
            admin: Some("127.0.0.1:0".into()),
            upstream: Some("127.0.0.1:6379".into()),
            ..Overrides::default()
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Config::validate(raw, "test", &overrides).map(|_| ())
        }));
        match outcome {
            Err(_) => panic!("{line}: Config::validate panicked"),
            Ok(result) => assert!(result.is_err(), "{line}: accepted"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_setuser_with_an_empty_selector_token_is_an_error_and_the_connection_lives() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-m3-setuser");
    let users = scratch.users_file("user default off\nuser ops on >pw -@all +acl|setuser +ping\n");
    let behind = RedisServer::start(&[]);
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, "")).await;
    let mut upstream = admin(behind.addr, &[]).await;
    let mut ops = RawClient::connect(proxy.addr).await;
    assert_eq!(ops.call(&[b"AUTH", b"ops", b"pw"]).await, b"+OK\r\n");
    let before = commandstats(&mut upstream).await;
    // Redis 7.0.15 answers each with "-ERR Error in ACL SETUSER modifier '...': Syntax error".
    let script: [&[&[u8]]; 4] = [
        &[b"ACL", b"SETUSER", b"u", b"(", b"\"\"", b")"],
        &[b"ACL", b"SETUSER", b"u", b"(\"\")"],
        &[b"ACL", b"SETUSER", b"u", b"(~x \"\")"],
        &[b"PING"],
    ];
    let replies = one_by_one(&mut ops, &script).await;
    for reply in &replies[..3] {
        assert!(reply.starts_with("-ERR"), "{replies:?}");
    }
    assert_eq!(replies[3], show(b"+PONG\r\n"), "{replies:?}");

    let redis_users = upstream.call(&[b"ACL", b"USERS"]).await;
    assert!(
        !redis_users.windows(7).any(|w| w == b"$1\r\nu\r\n"),
        "SETUSER reached Redis: {}",
        show(&redis_users)
    );
    let stats = commandstats(&mut upstream).await;
    assert_eq!(calls(&stats, "acl|setuser"), calls(&before, "acl|setuser"), "{stats}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_file_without_default_leaves_unauthenticated_clients_unauthenticated() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-m6");
    let users = scratch.users_file("user alice on >secret ~* +@all\n");
    let behind = RedisServer::start(&[]);
    let mut upstream = admin(behind.addr, &[]).await;
    assert_eq!(upstream.call(&[b"SET", b"keep", b"1"]).await, b"+OK\r\n");
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, "")).await;
    let mut client = RawClient::connect(proxy.addr).await;
    assert_eq!(
        one_by_one(&mut client, &[&[b"FLUSHALL"]]).await,
        [show(b"-NOAUTH Authentication required.\r\n")]
    );
    assert_eq!(upstream.call(&[b"EXISTS", b"keep"]).await, b":1\r\n", "FLUSHALL ran");
    assert_eq!(calls(&commandstats(&mut upstream).await, "flushall"), 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_subcommands_inside_multi_never_reach_redis_s_own_users() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-m8");
    let users = scratch.users_file("user default off\nuser carol on >pw ~* +@all\n");
    let behind = RedisServer::start(&["--requirepass", "service-secret"]);
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, SERVICE)).await;
    let mut upstream = admin(behind.addr, &[b"service-secret"]).await;
    let mut carol = RawClient::connect(proxy.addr).await;
    assert_eq!(carol.call(&[b"AUTH", b"carol", b"pw"]).await, b"+OK\r\n");
    // Counted from here: whatever the proxy itself does upstream at start or login is not
    // the client's.
    let before = commandstats(&mut upstream).await;
    let script: [&[&[u8]]; 4] = [
        &[b"MULTI"],
        &[b"ACL", b"LIST"],
        &[b"ACL", b"SETUSER", b"evil", b"on", b">x", b"+@all", b"~*"],
        &[b"EXEC"],
    ];
    let replies = one_by_one(&mut carol, &script).await;
    assert_eq!(replies[0], show(b"+OK\r\n"));
    assert!(
        replies[1].starts_with('-') && replies[2].starts_with('-'),
        "ACL inside MULTI is refused: {replies:?}"
    );
    assert!(replies[3].starts_with("-EXECABORT"), "the transaction is aborted: {replies:?}");

    let redis_users = show(&upstream.call(&[b"ACL", b"USERS"]).await);
    assert!(!redis_users.contains("evil"), "a Redis user was created: {redis_users}");
    let stats = commandstats(&mut upstream).await;
    for ran in ["acl|list", "acl|setuser"] {
        assert_eq!(calls(&stats, ran), calls(&before, ran), "{ran} reached Redis: {stats}");
    }
    proxy.shutdown().await;
}
