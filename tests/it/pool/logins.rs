//! The shared pool's logins, what never reaches a shared connection, CLIENT SETINFO, metrics
//! and bad settings.

use super::*;
use crate::support::http::sample;

/// A Redis whose default user needs a password, with users `alice` (keys `alice:*`) and
/// `bob` (keys `bob:*`), and an admin connection logged in.
async fn with_users() -> (RedisServer, RawClient) {
    crate::support::redis::assert_available();
    let redis = RedisServer::start(&["--requirepass", "adminpw"]);
    let mut admin = RawClient::connect(redis.addr).await;
    assert_eq!(admin.call(&[b"AUTH", b"adminpw"]).await, b"+OK\r\n");
    for (user, password, keys) in [("alice", ">a", "~alice:*"), ("bob", ">b", "~bob:*")] {
        let rules: [&[u8]; 7] = [
            b"ACL",
            b"SETUSER",
            user.as_bytes(),
            b"on",
            password.as_bytes(),
            keys.as_bytes(),
            b"+@all",
        ];
        assert_eq!(admin.call(&rules).await, b"+OK\r\n", "{user}");
    }
    (redis, admin)
}

/// Clients logged in as different users, one with a wrong password and one not logged in,
/// taking turns; every reply in order.
async fn logins_exchange(addr: SocketAddr) -> Vec<String> {
    let mut a = RawClient::connect(addr).await;
    let mut b = RawClient::connect(addr).await;
    let mut c = RawClient::connect(addr).await;
    let mut d = RawClient::connect(addr).await;
    let mut replies = vec![
        call(&mut a, &["AUTH", "alice", "a"]).await,
        call(&mut b, &["AUTH", "bob", "b"]).await,
        call(&mut d, &["AUTH", "alice", "wrong"]).await,
    ];
    for round in ["1", "2"] {
        replies.extend([
            call(&mut a, &["SET", "alice:k", round]).await,
            call(&mut b, &["SET", "bob:k", round]).await,
            call(&mut c, &["GET", "alice:k"]).await,
            call(&mut d, &["GET", "alice:k"]).await,
            call(&mut a, &["GET", "bob:k"]).await,
            call(&mut b, &["GET", "alice:k"]).await,
            call(&mut a, &["ACL", "WHOAMI"]).await,
            call(&mut b, &["ACL", "WHOAMI"]).await,
            call(&mut a, &["GET", "alice:k"]).await,
        ]);
    }
    // RESET logs A out: it must not stay on alice's connections.
    replies.extend([
        call(&mut a, &["RESET"]).await,
        call(&mut a, &["GET", "alice:k"]).await,
        call(&mut b, &["GET", "bob:k"]).await,
        call(&mut d, &["AUTH", "bob", "b"]).await,
        call(&mut d, &["GET", "bob:k"]).await,
        call(&mut d, &["GET", "alice:k"]).await,
    ]);
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_share_only_connections_logged_in_as_their_own_user() {
    crate::require_redis!();
    let (redis, mut admin) = with_users().await;
    let proxy = TestProxy::start_with(redis.addr, &shared(1)).await;
    let direct = logins_exchange(redis.addr).await;
    assert_eq!(admin.call(&[b"FLUSHALL"]).await, b"+OK\r\n");
    let proxied = logins_exchange(proxy.addr).await;
    // The oracle says what a login allows; spot checks that it is the exchange meant.
    assert!(direct[5].starts_with("-NOAUTH"), "{direct:?}");
    assert!(direct[7].starts_with("-NOPERM"), "{direct:?}");
    assert_eq!(direct[9], reply(b"$5\r\nalice\r\n"), "{direct:?}");
    assert_eq!(proxied, direct, "through the shared pool (pool_size = 1), then directly");
}

/// `AUTH alice a`, `ACL WHOAMI`, `GET alice:k` in one write, and their three replies.
async fn pipelined_login(client: &mut RawClient) -> Vec<String> {
    let commands: [&[&[u8]]; 3] =
        [&[b"AUTH", b"alice", b"a"], &[b"ACL", b"WHOAMI"], &[b"GET", b"alice:k"]];
    send_quietly(client, &commands.map(encode_command).concat()).await;
    let mut replies = Vec::new();
    for _ in 0..3 {
        replies.push(next_reply(client, LIVENESS).await);
    }
    replies
}

/// Passthrough: an AUTH with the credentials a group of shared connections is logged in with
/// runs on one of them (no connection of its own), and a login Redis refuses there (alice's
/// password changed since) leaves its client in its own state: the commands pipelined behind
/// it never run as alice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_joins_its_group_and_a_refused_one_runs_nothing_there() {
    crate::require_redis!();
    let (redis, mut admin) = with_users().await;
    let proxy = TestProxy::start_with(redis.addr, &shared(1)).await;
    let admin_addr = proxy.admin_addr();
    let pins = || async move {
        let host = admin_addr.to_string();
        let (_, metrics) =
            crate::support::http::http(admin_addr, "GET", "/metrics", &host, &[]).await;
        let series = "redis_audit_proxy_upstream_pins_total{reason=\"connection_state\"}";
        sample(&metrics, series)
    };
    let alices =
        |list: Vec<String>| list.iter().filter(|l| field(l, "user") == Some("alice")).count();

    let mut first = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut first, &["AUTH", "alice", "a"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut first, &["SET", "alice:k", "v"]).await, reply(b"+OK\r\n"));
    let (pinned, connections) = (pins().await, alices(client_list(&mut admin).await));
    assert_eq!(pinned, 1.0, "the first login of a state runs on a connection of its own");

    let mut second = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut second, &["AUTH", "alice", "a"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut second, &["ACL", "WHOAMI"]).await, reply(b"$5\r\nalice\r\n"));
    assert_eq!(call(&mut second, &["GET", "alice:k"]).await, reply(b"$1\r\nv\r\n"));
    assert_eq!(pins().await, pinned, "the second login joined alice's shared connection");
    // (A spare left by the first login's pin may close meanwhile: at most as many.)
    let now = alices(client_list(&mut admin).await);
    assert!(
        now <= connections,
        "no new connection: {now} logged in as alice, {connections} before"
    );

    // Redis no longer takes alice's password `a`; its connections stay logged in as alice.
    let change: [&[u8]; 5] = [b"ACL", b"SETUSER", b"alice", b"resetpass", b">a2"];
    assert_eq!(admin.call(&change).await, b"+OK\r\n");
    // bob's client, refused as alice, stays bob (while a login is in flight, a client not
    // logged in yet sends nothing anyway).
    let mut direct = RawClient::connect(redis.addr).await;
    let mut third = RawClient::connect(proxy.addr).await;
    for client in [&mut direct, &mut third] {
        assert_eq!(call(client, &["AUTH", "bob", "b"]).await, reply(b"+OK\r\n"));
        // (Through the proxy, the next command moves bob to bob's shared connection.)
        assert_eq!(call(client, &["GET", "bob:k"]).await, reply(b"$-1\r\n"));
    }
    let want = pipelined_login(&mut direct).await;
    assert!(want[0].starts_with("-WRONGPASS") && want[1].contains("bob"), "{want:?}");
    assert_eq!(pipelined_login(&mut third).await, want, "the refused login, then its own state");
    assert_eq!(call(&mut third, &["AUTH", "alice", "a2"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut third, &["ACL", "WHOAMI"]).await, reply(b"$5\r\nalice\r\n"));
    // The clients already logged in keep running as alice, as directly.
    assert_eq!(call(&mut second, &["GET", "alice:k"]).await, reply(b"$1\r\nv\r\n"));
    assert_eq!(call(&mut first, &["ACL", "WHOAMI"]).await, reply(b"$5\r\nalice\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_user_loses_its_shared_connections() {
    crate::require_redis!();
    let (redis, mut admin) = with_users().await;
    let proxy = TestProxy::start_with(redis.addr, &shared(1)).await;
    let mut direct = RawClient::connect(redis.addr).await;
    let mut proxied = RawClient::connect(proxy.addr).await;
    for client in [&mut direct, &mut proxied] {
        assert_eq!(call(client, &["AUTH", "alice", "a"]).await, reply(b"+OK\r\n"));
        assert_eq!(call(client, &["SET", "alice:k", "v"]).await, reply(b"+OK\r\n"));
    }
    // Redis closes every connection logged in as a deleted user.
    assert_eq!(admin.call(&[b"ACL", b"DELUSER", b"alice"]).await, b":1\r\n");
    let direct_next = call(&mut direct, &["GET", "alice:k"]).await;
    assert!(direct_next.starts_with("<closed"), "the oracle: {direct_next}");
    // Closed as directly, or refused: never run as alice, never left without an answer.
    let next = call(&mut proxied, &["GET", "alice:k"]).await;
    assert!(
        next.starts_with("<closed") || next.starts_with('-'),
        "after ACL DELUSER alice, alice's client got {next} for GET alice:k"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_shared_clients_leaves_none_waiting() {
    crate::require_redis!();
    let mut redis = RedisServer::start(&[]);
    let toml = format!("{}reconnect_interval_ms = 100\n", shared(2));
    let proxy = TestProxy::start_with(redis.addr, &toml).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut idle = RawClient::connect(proxy.addr).await;
    let mut blocked = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut idle, &["SET", "k", "v"]).await, reply(b"+OK\r\n"));
    send(&mut blocked, &["BLPOP", "q", "0"]).await;
    wait_blocked(&mut admin, 1).await;

    redis.kill();
    // The blocked client's own connection is gone: closed, as directly.
    let shown = next_reply(&mut blocked, LIVENESS).await;
    assert!(shown.starts_with("<closed"), "the blocked client got {shown}");
    // The idle client may be closed too, or answered with an error: never left waiting.
    let shown = call(&mut idle, &["GET", "k"]).await;
    assert!(shown.starts_with("<closed") || shown.starts_with('-'), "the idle client got {shown}");

    redis.restart();
    let mut fresh = RawClient::connect(proxy.addr).await;
    let mut answered = String::new();
    // The proxy retries every 100 ms; a few refusals while Redis starts are fine.
    for _ in 0..50 {
        answered = call(&mut fresh, &["PING"]).await;
        if answered == reply(b"+PONG\r\n") {
            break;
        }
        assert!(answered.starts_with("-ERR upstream"), "{answered}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answered, reply(b"+PONG\r\n"));
    assert_eq!(call(&mut fresh, &["SET", "k", "again"]).await, reply(b"+OK\r\n"));
    if !shown.starts_with("<closed") {
        // Still connected: the idle client is served again too.
        let mut again = String::new();
        for _ in 0..50 {
            again = call(&mut idle, &["GET", "k"]).await;
            if !again.starts_with("-ERR upstream") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(again, reply(b"$5\r\nagain\r\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_broken_or_unfinished_command_never_reaches_the_shared_connection() {
    crate::require_redis!();
    let (redis, proxy) = start(1).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut a = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut a, &["SET", "k", "v"]).await, reply(b"+OK\r\n"));
    let shared_ids = |list: &[String]| -> Vec<String> {
        let pool = list.iter().filter(|line| is_pool(line));
        pool.filter_map(|line| field(line, "id").map(str::to_owned)).collect()
    };
    let before = shared_ids(&client_list(&mut admin).await);
    assert_eq!(before.len(), 1, "one shared connection");

    // A protocol error: B gets Redis's error and is closed; the shared connection stays.
    let mut b = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut b, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
    send_quietly(&mut b, b"*1\r\n$x\r\n").await;
    let error = next_reply(&mut b, LIVENESS).await;
    assert!(error.starts_with("-ERR Protocol error"), "{error}");
    assert!(next_reply(&mut b, LIVENESS).await.starts_with("<closed"));

    // An unfinished command (a SET whose value never comes), then C leaves: not one byte of
    // it may be on the shared connection, or A's next command would become its value.
    let mut c = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut c, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
    send_quietly(&mut c, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20\r\nonly-ten-b").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(c);

    // D leaves with many large replies still coming: none of them reaches A.
    let mut d = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut d, &["SET", "big", &"x".repeat(256 * 1024)]).await, reply(b"+OK\r\n"));
    let gets: Vec<u8> = (0..200).flat_map(|_| encode_command(&[b"GET", b"big"])).collect();
    send_quietly(&mut d, &gets).await;
    drop(d);

    for _ in 0..3 {
        assert_eq!(call(&mut a, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
        assert_eq!(call(&mut a, &["PING"]).await, reply(b"+PONG\r\n"));
    }
    assert_eq!(next_reply(&mut a, SILENCE).await, "<no reply>");
    let after = shared_ids(&client_list(&mut admin).await);
    assert_eq!(after, before, "the shared connection was closed or replaced");
}

/// `CLIENT SETINFO` in its forms, then `CLIENT INFO`'s library fields; every reply in order.
async fn setinfo_exchange(addr: SocketAddr) -> Vec<String> {
    let mut client = RawClient::connect(addr).await;
    let mut replies = Vec::new();
    for args in [
        &["CLIENT", "SETINFO", "LIB-NAME", "mylib"][..],
        &["CLIENT", "SETINFO", "lib-ver", "1.0"],
        &["CLIENT", "SETINFO", "LIB-NAME", "bad name"],
        &["CLIENT", "SETINFO", "LIB-NAME"],
        &["CLIENT", "SETINFO", "nosuch", "x"],
        &["CLIENT", "SETINFO"],
    ] {
        replies.push(call(&mut client, args).await);
    }
    // CLIENT INFO's lib-name= and lib-ver= fields only (Redis 7.2 and later show them).
    let info = call(&mut client, &["CLIENT", "INFO"]).await;
    let libs: Vec<&str> = info.split(' ').filter(|field| field.starts_with("lib-")).collect();
    replies.push(libs.join(" "));
    replies
}

/// A user who may not run `CLIENT SETINFO` (redis-py and other libraries send it on connect)
/// is refused by Redis, in Redis's words and in its ACL LOG, through the shared pool as
/// directly: the proxy does not answer it for Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_setinfo_is_refused_as_redis_refuses_it() {
    use crate::support::redis::Server;
    crate::require_server!(Server::Redis72);
    let (redis, proxy, mut admin) = one_shared_in_front_of(Server::Redis72).await;
    let rules: [&[u8]; 7] = [b"ACL", b"SETUSER", b"plain", b"on", b">pw", b"~*", b"+get"];
    assert_eq!(admin.call(&rules).await, b"+OK\r\n");
    let mut replies = Vec::new();
    for addr in [redis.addr, proxy.addr] {
        assert_eq!(admin.call(&[b"ACL", b"LOG", b"RESET"]).await, b"+OK\r\n");
        let mut client = RawClient::connect(addr).await;
        let mut these = vec![call(&mut client, &["AUTH", "plain", "pw"]).await];
        for args in [&["CLIENT", "SETINFO", "LIB-NAME", "mylib"][..], &["GET", "k"]] {
            these.push(call(&mut client, args).await);
        }
        let log = String::from_utf8_lossy(&admin.call(&[b"ACL", b"LOG"]).await).into_owned();
        these.push(format!("logged: {}", log.contains("client|setinfo")));
        replies.push(these);
    }
    assert!(replies[0][1].starts_with("-NOPERM"), "{:?}", replies[0]);
    assert_eq!(replies[1], replies[0], "through the shared pool, then directly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_setinfo_answers_as_redis_does() {
    crate::require_redis!();
    let (redis, proxy) = start(1).await;
    let direct = setinfo_exchange(redis.addr).await;
    let proxied = setinfo_exchange(proxy.addr).await;
    assert_eq!(proxied, direct, "through the shared pool, then directly");
}

/// Calls of `CLIENT SETINFO` Redis ran (its `INFO commandstats`).
async fn setinfo_calls(admin: &mut RawClient) -> u64 {
    let stats = call(admin, &["INFO", "commandstats"]).await;
    let line = stats.split("\\r\\n").find(|l| l.starts_with("cmdstat_client|setinfo:"));
    let calls = line.and_then(|l| l.split(['=', ',']).nth(1)).and_then(|n| n.parse().ok());
    calls.unwrap_or(0)
}

/// A spare keeps the library its last client gave it: a client with the same one pins to it
/// without a `CLIENT SETINFO`, a client with none clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_is_given_only_the_library_it_lacks() {
    use crate::support::redis::Server;
    crate::require_server!(Server::Redis72);
    let (_redis, proxy, mut admin) = one_shared_in_front_of(Server::Redis72).await;
    let (admin_addr, spare) =
        (proxy.admin_addr(), "redis_audit_proxy_upstream_connections{state=\"spare\"}");
    for (lib, setinfo_sent) in [(Some("mylib"), 1), (Some("mylib"), 0), (None, 1)] {
        let mut client = RawClient::connect(proxy.addr).await;
        if let Some(lib) = lib {
            let set = call(&mut client, &["CLIENT", "SETINFO", "LIB-NAME", lib]).await;
            assert_eq!(set, reply(b"+OK\r\n"));
        }
        // What the pin sends (the client's own call ran on its shared connection).
        let before = setinfo_calls(&mut admin).await;
        // MULTI pins: a connection of its own, the first time a new one, then the spare the
        // client before left.
        assert_eq!(call(&mut client, &["MULTI"]).await, reply(b"+OK\r\n"));
        assert_eq!(call(&mut client, &["PING"]).await, reply(b"+QUEUED\r\n"));
        assert_eq!(call(&mut client, &["EXEC"]).await, reply(b"*1\r\n+PONG\r\n"));
        let list = client_list(&mut admin).await;
        let pinned = list.iter().find(|line| field(line, "cmd") == Some("exec"));
        let held = pinned.and_then(|line| field(line, "lib-name"));
        assert_eq!(held, Some(lib.unwrap_or_default()), "{list:?}");
        let sent = setinfo_calls(&mut admin).await - before;
        assert_eq!(sent, setinfo_sent, "CLIENT SETINFO calls for a client with {lib:?}");
        // The next command unpins: the connection goes back to the spares.
        assert_eq!(call(&mut client, &["GET", "k"]).await, reply(b"$-1\r\n"));
        let host = admin_addr.to_string();
        let deadline = std::time::Instant::now() + LIVENESS;
        loop {
            let (_, metrics) =
                crate::support::http::http(admin_addr, "GET", "/metrics", &host, &[]).await;
            if sample(&metrics, spare) == 1.0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no spare after the client unpinned");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_pins_shared_connections_and_their_writes() {
    crate::require_redis!();
    let (_redis, proxy) = start(2).await;
    let mut a = RawClient::connect(proxy.addr).await;
    let mut b = RawClient::connect(proxy.addr).await;
    let mut c = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut a, &["MULTI"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut a, &["INCR", "n"]).await, reply(b"+QUEUED\r\n"));
    assert_eq!(call(&mut a, &["EXEC"]).await, reply(b"*1\r\n:1\r\n"));
    assert_eq!(
        call(&mut b, &["SUBSCRIBE", "c"]).await,
        reply(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n")
    );
    // A pipeline on the shared connections: writes that may carry several commands each.
    let pipeline: Vec<u8> =
        (0..20).flat_map(|i| encode_command(&[b"SET", format!("k{i}").as_bytes(), b"v"])).collect();
    send_quietly(&mut c, &pipeline).await;
    for _ in 0..20 {
        assert_eq!(next_reply(&mut c, LIVENESS).await, reply(b"+OK\r\n"));
    }

    let admin = proxy.admin_addr();
    let (status, metrics) =
        crate::support::http::http(admin, "GET", "/metrics", &admin.to_string(), &[]).await;
    assert_eq!(status, 200, "{metrics}");
    let pins = |reason: &str| {
        sample(&metrics, &format!("redis_audit_proxy_upstream_pins_total{{reason=\"{reason}\"}}"))
    };
    assert!(pins("transaction") >= 1.0, "{metrics}");
    // The label docs/pinning.md gives SUBSCRIBE's reason.
    assert!(pins("pubsub") >= 1.0, "{metrics}");
    let writes = sample(&metrics, "redis_audit_proxy_upstream_writes_total");
    let commands = sample(&metrics, "redis_audit_proxy_upstream_write_commands_total");
    assert!(writes > 0.0, "{metrics}");
    assert!(commands >= writes, "{commands} commands in {writes} writes: {metrics}");
    assert!(commands >= 20.0, "the 20 SETs went through shared connections: {metrics}");
    let connections = |state: &str| {
        sample(&metrics, &format!("redis_audit_proxy_upstream_connections{{state=\"{state}\"}}"))
    };
    assert!((1.0..=2.0).contains(&connections("shared")), "{metrics}");
    assert!(connections("pinned") >= 1.0, "B is subscribed: {metrics}");
}

#[test]
fn bad_pool_settings_are_refused_naming_the_key() {
    for (text, key) in [
        ("[upstream]\npool = \"bogus\"\n", "upstream.pool"),
        ("[upstream]\npool = \"shared\"\npool_size = 0\n", "upstream.pool_size"),
        ("[upstream]\npool = \"shared\"\npool_stall_ms = 0\n", "upstream.pool_stall_ms"),
    ] {
        let error = Config::from_toml_str(text, "p.toml").expect_err(text).to_string();
        assert!(error.contains(key), "{text:?}: {error:?} does not name {key}");
        assert!(error.contains("p.toml"), "{text:?}: {error:?} does not name the file");
    }
    for text in [
        "[upstream]\npool = \"dedicated\"\n",
        "[upstream]\npool = \"shared\"\n",
        "[upstream]\npool = \"shared\"\npool_size = 1\npool_idle_ms = 500\n",
    ] {
        if let Err(error) = Config::from_toml_str(text, "p.toml") {
            panic!("{text:?} refused: {error}");
        }
    }
}

/// Each pin reason with a command that pins for it (what runs first, then the pinning
/// command); the replies must be Redis's own, and the reason's counter must move.
const PIN_CASES: &[(&str, &[&[&str]])] = &[
    ("transaction", &[&["MULTI"], &["SET", "k", "v"], &["EXEC"]]),
    ("watch", &[&["WATCH", "k"], &["UNWATCH"]]),
    ("blocking", &[&["BLPOP", "empty", "0.01"]]),
    ("wait", &[&["SET", "k", "v"], &["WAIT", "0", "0"], &["PING"]]),
    ("pubsub", &[&["SUBSCRIBE", "c"], &["UNSUBSCRIBE", "c"]]),
    ("monitor", &[&["MONITOR"]]),
    ("client_reply", &[&["CLIENT", "REPLY", "ON"]]),
    ("tracking", &[&["CLIENT", "TRACKING", "ON"], &["CLIENT", "TRACKING", "OFF"]]),
    ("client_identity", &[&["CLIENT", "GETNAME"]]),
    ("client_control", &[&["CLIENT", "KILL", "ID", "999999"]]),
    ("pause", &[&["CLIENT", "UNPAUSE"]]),
    ("connection_state", &[&["SELECT", "1"], &["GET", "k"]]),
    ("cluster", &[&["READONLY"]]),
    ("debug", &[&["DEBUG", "SLEEP", "0"]]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pin_reason_pins_and_answers_as_redis_does() {
    crate::require_redis!();
    let (redis, proxy) = start(2).await;
    let admin_addr = proxy.admin_addr();
    let host = admin_addr.to_string();
    for (reason, commands) in PIN_CASES {
        let series = format!("redis_audit_proxy_upstream_pins_total{{reason=\"{reason}\"}}");
        let (_, before) =
            crate::support::http::http(admin_addr, "GET", "/metrics", &host, &[]).await;
        let mut direct = RawClient::connect(redis.addr).await;
        let mut through = RawClient::connect(proxy.addr).await;
        // A first command on the shared connection, so that the pin is a move.
        assert_eq!(call(&mut through, &["PING"]).await, reply(b"+PONG\r\n"));
        for command in *commands {
            let want = call(&mut direct, command).await;
            assert_eq!(call(&mut through, command).await, want, "{reason}: {command:?}");
        }
        let (_, after) =
            crate::support::http::http(admin_addr, "GET", "/metrics", &host, &[]).await;
        assert_eq!(sample(&after, &series), sample(&before, &series) + 1.0, "{reason}");
    }
}

/// Clients that chose a database (and a protocol) before logging in as a user that may run
/// neither `SELECT` nor `HELLO`: their commands, transactions among them, run in that database
/// as that user. (Redis keeps both across AUTH; its own scripting tests log in so.)
async fn login_after_select_exchange(addr: SocketAddr) -> Vec<String> {
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(RawClient::connect(addr).await);
    }
    let hello = call(&mut clients[3], &["HELLO", "3"]).await;
    let mut replies = vec![(hello.starts_with('%')).to_string()];
    for (n, client) in clients.iter_mut().enumerate() {
        let key = format!("x{n}");
        replies.push(call(client, &["SELECT", "9"]).await);
        replies.push(call(client, &["AUTH", "carol", "c"]).await);
        replies.push(call(client, &["SET", &key, &key]).await);
        replies.push(call(client, &["GET", &key]).await);
    }
    replies.push(call(&mut clients[0], &["SELECT", "0"]).await);
    // Transactions at once: connections of their own, new ones among them.
    for (n, client) in clients.iter_mut().enumerate() {
        let key = format!("y{n}");
        replies.push(call(client, &["MULTI"]).await);
        replies.push(call(client, &["SET", &key, &key]).await);
    }
    for client in clients.iter_mut().rev() {
        replies.push(call(client, &["EXEC"]).await);
    }
    let mut check = RawClient::connect(addr).await;
    replies.push(call(&mut check, &["SELECT", "9"]).await);
    replies.push(call(&mut check, &["DBSIZE"]).await);
    replies.push(call(&mut check, &["MGET", "x0", "x3", "y0", "y1", "y2", "y3"]).await);
    replies.push(call(&mut check, &["SELECT", "0"]).await);
    replies.push(call(&mut check, &["DBSIZE"]).await);
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_after_select_runs_in_that_database_without_select_rights() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let mut admin = RawClient::connect(redis.addr).await;
    let rules: [&[u8]; 9] =
        [b"ACL", b"SETUSER", b"carol", b"on", b">c", b"~x*", b"+set", b"+get", b"+@transaction"];
    assert_eq!(admin.call(&rules).await, b"+OK\r\n");
    let proxy = TestProxy::start_with(redis.addr, &shared(1)).await;
    let direct = login_after_select_exchange(redis.addr).await;
    assert_eq!(admin.call(&[b"FLUSHALL"]).await, b"+OK\r\n");
    let proxied = login_after_select_exchange(proxy.addr).await;
    // The oracle: carol may not SELECT, and every key is in database 9.
    assert!(direct.iter().any(|r| r.starts_with("-NOPERM")), "{direct:?}");
    assert!(direct.last().is_some_and(|r| r == &reply(b":0\r\n")), "{direct:?}");
    assert_eq!(proxied, direct, "through the shared pool (pool_size = 1), then directly");
}
