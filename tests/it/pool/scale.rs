//! The shared pool at scale and under faults: 1,000 clients on four connections, real client
//! programs, killed shared connections, idle connections closed, Redis killed under clients.

use super::*;

/// What one of the many clients checks: `rounds` times, three `SET key:<i> <random>` each
/// followed by its `GET`, pipelined in one write; every reply must be its own.
async fn own_values(client: &mut RawClient, i: usize, rng: &mut Rng) -> Result<(), String> {
    let key = format!("key:{i}");
    let values: Vec<String> = (0..3).map(|_| format!("{:016x}", rng.next())).collect();
    let mut pipeline = Vec::new();
    let mut expected = Vec::new();
    for value in &values {
        pipeline.extend(encode_command(&[b"SET", key.as_bytes(), value.as_bytes()]));
        pipeline.extend(encode_command(&[b"GET", key.as_bytes()]));
        expected.push(reply(b"+OK\r\n"));
        expected.push(reply(format!("${}\r\n{value}\r\n", value.len()).as_bytes()));
    }
    send_quietly(client, &pipeline).await;
    for (n, want) in expected.iter().enumerate() {
        // Generous: a thousand clients on two shared cores, in a debug build.
        let got = next_reply(client, Duration::from_secs(60)).await;
        if &got != want {
            return Err(format!("client {i}, reply {n}: {got}, expected {want}"));
        }
    }
    Ok(())
}

/// Raises this process's open-file limit to its hard limit (prlimit, no unsafe code) when
/// the soft one is under `needed`, and fails the test with how to fix it when it cannot.
fn ensure_open_files(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let parse = |text: &str| -> Option<(u64, u64)> {
        let line = text.lines().find(|line| line.starts_with("Max open files"))?;
        let mut numbers = line.split_whitespace().skip(3);
        let soft = numbers.next()?.parse().unwrap_or(u64::MAX);
        let hard = numbers.next()?.parse().unwrap_or(u64::MAX);
        Some((soft, hard))
    };
    let Some((soft, hard)) = parse(&limits) else { return };
    if soft >= needed {
        return;
    }
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .status();
    let now = parse(&std::fs::read_to_string("/proc/self/limits").unwrap_or_default());
    let soft = now.map_or(soft, |(soft, _)| soft);
    assert!(
        soft >= needed,
        "this test needs {needed} open files and the limit is {soft} (hard {hard}): run it \
         after `ulimit -n {needed}` or more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_share_four_connections_and_get_their_own_replies() {
    crate::require_redis!();
    const CLIENTS: usize = 1000;
    // Each client is two sockets of this process (the test's end and the proxy's); the pool,
    // the admin and the runtime need a few more. Redis's sockets are another process's.
    ensure_open_files(2 * CLIENTS as u64 + 256);
    let (redis, proxy) = start(4).await;
    let mut admin = RawClient::connect(redis.addr).await;
    // Everyone connected and through a first round, then the CLIENT LIST, then two more rounds.
    let connected = Arc::new(Barrier::new(CLIENTS + 1));
    let counted = Arc::new(Barrier::new(CLIENTS + 1));
    let seed = u64::from(std::process::id()) << 20;
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (connected, counted, addr) = (connected.clone(), counted.clone(), proxy.addr);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed + i as u64);
            let first = async {
                let stream =
                    TcpStream::connect(addr).await.map_err(|e| format!("connect {i}: {e}"))?;
                let mut client = RawClient { stream, buffer: Vec::new() };
                own_values(&mut client, i, &mut rng).await?;
                Ok::<_, String>(client)
            }
            .await;
            // A failed client still reaches the barriers, so the test reports it, not a hang.
            connected.wait().await;
            counted.wait().await;
            let mut client = first?;
            for _ in 0..2 {
                own_values(&mut client, i, &mut rng).await?;
            }
            Ok::<_, String>(())
        }));
    }
    tokio::time::timeout(Duration::from_secs(120), connected.wait())
        .await
        .expect("the thousand clients connected and ran a round within 120 s");
    let list = client_list(&mut admin).await;
    let pool = list.iter().filter(|line| is_pool(line)).count();
    let others: Vec<&String> = list.iter().filter(|line| !is_pool(line)).collect();
    assert!((1..=4).contains(&pool), "{pool} shared connections for a pool of 4: {list:#?}");
    // The admin, and room for a connection or two the proxy keeps for itself.
    assert!(others.len() <= 3, "connections besides the pool's: {others:#?}");
    counted.wait().await;

    let mut failures = Vec::new();
    for task in tasks {
        if let Err(failure) = task.await.expect("client task") {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(admin.call(&[b"DBSIZE"]).await, format!(":{CLIENTS}\r\n").into_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_and_redis_cli_through_the_shared_pool() {
    crate::require_redis!();
    crate::require!(
        std::path::Path::new(REDIS_BENCHMARK).exists() && std::path::Path::new(REDIS_CLI).exists(),
        "redis-benchmark and redis-cli",
        "`make test` installs them (or `apt-get install redis-tools`)"
    );
    let (redis, proxy) = start(4).await;
    let port = proxy.addr.port().to_string();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "set,get,incr,lpush",
        "-n",
        "20000",
        "-c",
        "50",
        "-P",
        "16",
        "-q",
    ];
    let output = run(REDIS_BENCHMARK, &args, b"").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "redis-benchmark: {}\n{stdout}{stderr}", output.status);
    assert!(!format!("{stdout}{stderr}").contains("rror"), "{stdout}{stderr}");
    for name in ["SET", "GET", "INCR", "LPUSH"] {
        assert!(benchmark_line(&stdout, name).is_some(), "no {name} line in {stdout:?}");
    }
    let records = proxy.sink.records();
    let errors: Vec<_> = records.iter().filter(|r| r.status == ReplyStatus::Error).collect();
    assert!(errors.is_empty(), "{} errors: {:?}", errors.len(), errors.first());

    // Every INCR and LPUSH of the 50 clients landed once on the same key.
    let mut admin = RawClient::connect(redis.addr).await;
    assert_eq!(admin.call(&[b"GET", b"counter:__rand_int__"]).await, b"$5\r\n20000\r\n");
    assert_eq!(admin.call(&[b"LLEN", b"mylist"]).await, b":20000\r\n");
    let list = client_list(&mut admin).await;
    let pool = list.iter().filter(|line| is_pool(line)).count();
    assert!((1..=4).contains(&pool), "{pool} shared connections for a pool of 4: {list:#?}");

    assert_eq!(cli_stdout(proxy.addr, &["set", "a", "b"]).await, "OK\n");
    assert_eq!(cli_stdout(proxy.addr, &["get", "a"]).await, "b\n");
    assert_eq!(cli_stdout(proxy.addr, &["incr", "counter:__rand_int__"]).await, "20001\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_shared_connections_are_replaced_and_pinned_clients_keep_theirs() {
    crate::require_redis!();
    let (redis, proxy) = start(2).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut x = RawClient::connect(proxy.addr).await;
    let mut y = RawClient::connect(proxy.addr).await;
    let mut blocked = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut x, &["SET", "k", "v"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut y, &["SET", "j", "w"]).await, reply(b"+OK\r\n"));
    send(&mut blocked, &["BLPOP", "q", "0"]).await;
    wait_blocked(&mut admin, 1).await;

    let list = client_list(&mut admin).await;
    let ids: Vec<String> = list
        .iter()
        .filter(|line| is_pool(line))
        .filter_map(|line| field(line, "id").map(str::to_owned))
        .collect();
    assert!(!ids.is_empty(), "no shared connection to kill: {list:#?}");
    for id in &ids {
        assert_eq!(admin.call(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]).await, b":1\r\n");
    }
    // No pause for the proxy to notice: a command racing the close must succeed too.
    let list = client_list(&mut admin).await;
    assert!(
        !list.iter().any(|line| ids.iter().any(|id| field(line, "id") == Some(id))),
        "killed connections still listed: {list:#?}"
    );

    // The idle clients' next commands succeed on new shared connections.
    assert_eq!(call(&mut x, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
    assert_eq!(call(&mut y, &["GET", "j"]).await, reply(b"$1\r\nw\r\n"));
    assert_eq!(call(&mut y, &["SET", "j", "w2"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut x, &["GET", "j"]).await, reply(b"$2\r\nw2\r\n"));
    let list = client_list(&mut admin).await;
    let pool = list.iter().filter(|line| is_pool(line)).count();
    assert!((1..=2).contains(&pool), "{pool} shared connections for a pool of 2: {list:#?}");

    // The blocked client kept its own connection and is still waiting.
    assert_eq!(info_clients(&mut admin, "blocked_clients").await, 1);
    assert_eq!(next_reply(&mut blocked, SILENCE).await, "<no reply>");
    assert_eq!(call(&mut x, &["LPUSH", "q", "item"]).await, reply(b":1\r\n"));
    assert_eq!(next_reply(&mut blocked, LIVENESS).await, reply(b"*2\r\n$1\r\nq\r\n$4\r\nitem\r\n"));
    assert_eq!(call(&mut blocked, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_clients_close_after_pool_idle_ms_and_reopen_on_demand() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let toml = format!("{}pool_idle_ms = 200\n", shared(2));
    let proxy = TestProxy::start_with(redis.addr, &toml).await;
    let mut admin = RawClient::connect(redis.addr).await;
    let mut a = RawClient::connect(proxy.addr).await;
    let mut b = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut a, &["SET", "k", "v"]).await, reply(b"+OK\r\n"));
    // B is pinned for its transaction; its connection then goes back to the spares.
    assert_eq!(call(&mut b, &["MULTI"]).await, reply(b"+OK\r\n"));
    assert_eq!(call(&mut b, &["EXEC"]).await, reply(b"*0\r\n"));
    let list = client_list(&mut admin).await;
    assert!(list.iter().any(|line| is_pool(line)), "no shared connection in use: {list:#?}");

    // Every client gone: the shared and spare connections close (only the admin is left).
    drop((a, b));
    let mut list = Vec::new();
    for _ in 0..100 {
        list = client_list(&mut admin).await;
        if list.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(list.len(), 1, "10 s without clients, still open: {list:#?}");
    let mut c = RawClient::connect(proxy.addr).await;
    assert_eq!(call(&mut c, &["GET", "k"]).await, reply(b"$1\r\nv\r\n"));
    let list = client_list(&mut admin).await;
    assert!(list.iter().any(|line| is_pool(line)), "no shared connection reopened: {list:#?}");
}

/// Debian's Python, which its `python3-redis` package is for.
const PYTHON: &str = "/usr/bin/python3";
/// redis-py's connection-pool script (see the file).
const REDIS_PY_SCRIPT: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/redis_py_pool.py");

/// The script's transcript against `addr`; fails the test when the script fails.
async fn redis_py_transcript(addr: SocketAddr) -> String {
    let port = addr.port().to_string();
    let output = run(PYTHON, &[REDIS_PY_SCRIPT, &port], b"").await;
    assert!(
        output.status.success(),
        "redis-py against {addr} exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the script prints text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_connection_pool_through_the_shared_pool() {
    crate::require_redis!();
    let (redis, proxy) = start(4).await;
    crate::require!(
        std::path::Path::new(PYTHON).exists(),
        PYTHON,
        "`make test` installs it with redis-py (scripts/ensure-redis-py.sh, or `apt-get install \
         python3-redis`)"
    );
    let check = run(PYTHON, &["-c", "import redis"], b"").await;
    assert!(
        check.status.success(),
        "redis-py is not installed: `make test` installs it (scripts/ensure-redis-py.sh, or \
         `apt-get install python3-redis`): {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut admin = RawClient::connect(redis.addr).await;
    assert_eq!(call(&mut admin, &["FLUSHALL"]).await, reply(b"+OK\r\n"));
    let direct = redis_py_transcript(redis.addr).await;
    assert_eq!(call(&mut admin, &["FLUSHALL"]).await, reply(b"+OK\r\n"));
    let proxied = redis_py_transcript(proxy.addr).await;
    assert_eq!(proxied, direct, "redis-py through the shared pool and directly");
    assert!(direct.contains("total b'640'"), "16 threads × 40 WATCH increments: {direct}");
    let admin_addr = proxy.admin_addr();
    let host = admin_addr.to_string();
    let (status, metrics) =
        crate::support::http::http(admin_addr, "GET", "/metrics", &host, &[]).await;
    assert_eq!(status, 200, "{metrics}");
    // WATCH finds its client pinned already by the MULTI before it, so it counts no pin of its
    // own; SELECT (db=2) and CLIENT SETNAME (client_name) come from redis-py's connect.
    for reason in ["transaction", "pubsub", "blocking", "connection_state", "client_identity"] {
        let series = format!("redis_audit_proxy_upstream_pins_total{{reason=\"{reason}\"}}");
        assert!(metrics.contains(&series), "no {reason} pin counted:\n{metrics}");
    }
}
