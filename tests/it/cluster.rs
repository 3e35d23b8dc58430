//! `cluster.mode = "sidecar"` in front of a real 3-node Redis Cluster (`redis-cli --cluster
//! create`), a proxy per node: `redis-cli -c` follows redirects from proxy to proxy only, every
//! command Redis ran went through a proxy (Redis's command counts equal the proxies' records),
//! `CLUSTER SLOTS` / `NODES` / `SHARDS` name only the proxies, and a node without a sidecar is
//! never handed to a client.

use std::net::SocketAddr;

use redis_audit_proxy::event::CommandRecord;

use crate::clients::{run, REDIS_BENCHMARK, REDIS_CLI};
use crate::support::cluster::{calls_on, cluster, unmapped_sidecars, valkey_cluster};
use crate::support::redis::free_port;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

const NODES: usize = 3;

/// `[cluster.announce]` entries mapping each node to its proxy.
fn announce(servers: &[RedisServer], proxies: &[SocketAddr]) -> String {
    let mut toml = "[cluster]\nmode = \"sidecar\"\n[cluster.announce]\n".to_owned();
    for (server, proxy) in servers.iter().zip(proxies) {
        toml.push_str(&format!("\"{}\" = \"{proxy}\"\n", server.addr));
    }
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_clients_reach_the_nodes_only_through_their_sidecars() {
    crate::require_redis!();
    let tools = [REDIS_CLI, REDIS_BENCHMARK].iter().all(|p| std::path::Path::new(p).exists());
    crate::require!(
        tools,
        "redis-cli and redis-benchmark",
        "`make test` installs them (or `apt-get install redis-tools`)"
    );
    let scratch = Scratch::new("cluster");
    let _one_cluster = crate::support::redis::CLUSTER_LOCK.lock().await;
    std::fs::create_dir_all(scratch.path()).unwrap();
    let servers = cluster(&scratch, NODES, 0).await;
    let addresses: Vec<SocketAddr> =
        (0..NODES).map(|_| SocketAddr::from(([127, 0, 0, 1], free_port()))).collect();
    let toml = announce(&servers, &addresses);
    let mut proxies = Vec::new();
    for (server, listen) in servers.iter().zip(&addresses) {
        proxies.push(TestProxy::start_on(server.addr, *listen, &toml).await);
    }

    // redis-cli -c, through the first proxy only, sets keys that live on every node.
    let port = addresses[0].port().to_string();
    for i in 0..60 {
        let key = format!("key:{i}");
        let args = ["-c", "-h", "127.0.0.1", "-p", port.as_str(), "SET", key.as_str(), "v"];
        let output = run(REDIS_CLI, &args, b"").await;
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "OK", "SET {key}");
    }
    // Every SET Redis ran came through a proxy: the nodes' counts equal the proxies' records.
    let ran = calls_on(&servers, "set").await;
    let recorded: u64 = proxies
        .iter()
        .map(|proxy| {
            proxy
                .sink
                .records()
                .iter()
                .filter(|r| {
                    r.command.as_ref().is_some_and(|c| c.name == "set") && r.error_code.is_none()
                })
                .count() as u64
        })
        .sum();
    assert_eq!((ran, recorded), (60, 60));
    // Each record names the slot of its key, as the node computes it.
    let mut node = RawClient::connect(servers[0].addr).await;
    for proxy in &proxies {
        for record in proxy.sink.records().iter().filter(|r| !r.keys.is_empty()) {
            let key = &record.args[record.keys[0].index];
            let theirs = node.call(&[b"CLUSTER", b"KEYSLOT", key]).await;
            let ours = record.slot.map(|slot| format!(":{slot}\r\n").into_bytes());
            assert_eq!(ours, Some(theirs), "{}", String::from_utf8_lossy(key));
        }
    }
    let moved: usize = proxies
        .iter()
        .map(|p| {
            p.sink.records().iter().filter(|r| r.error_code.as_deref() == Some(b"MOVED")).count()
        })
        .sum();
    assert!(moved > 0, "some keys live on other nodes: redirects were followed");

    // redis-benchmark --cluster learns the nodes from CLUSTER NODES through the first sidecar,
    // and so benchmarks every node through its sidecar.
    let before = calls_on(&servers, "set").await;
    let args = [
        "--cluster",
        "-h",
        "127.0.0.1",
        "-p",
        port.as_str(),
        "-t",
        "set",
        "-n",
        "3000",
        "-c",
        "5",
        "-r",
        "10000",
        "-q",
    ];
    let output = run(REDIS_BENCHMARK, &args, b"").await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let sets = |proxy: &TestProxy| {
        let records = proxy.sink.records();
        let ran = |r: &&CommandRecord| r.error_code.is_none();
        let set = |r: &&CommandRecord| r.command.as_ref().is_some_and(|c| c.name == "set");
        records.iter().filter(set).filter(ran).count()
    };
    let recorded: usize = proxies.iter().map(sets).sum();
    assert_eq!(calls_on(&servers, "set").await - before, 3000, "redis-benchmark's SETs ran");
    assert_eq!(recorded, 60 + 3000, "and every one went through a sidecar");

    // The topology names only the proxies, in RESP2 and RESP3.
    let node_ports: Vec<String> = servers.iter().map(|s| s.addr.port().to_string()).collect();
    let mut client = RawClient::connect(addresses[0]).await;
    for command in [
        &[&b"CLUSTER"[..], b"SLOTS"][..],
        &[b"CLUSTER", b"NODES"],
        &[b"CLUSTER", b"SHARDS"],
        &[b"HELLO", b"3"],
        &[b"CLUSTER", b"SLOTS"],
        &[b"CLUSTER", b"SHARDS"],
        &[b"CLUSTER", b"NODES"],
    ] {
        let reply = String::from_utf8_lossy(&client.call(command).await).into_owned();
        if command[0] == b"HELLO" {
            continue;
        }
        assert!(!reply.starts_with('-'), "{reply}");
        for port in &node_ports {
            assert!(!reply.contains(&format!(":{port}")), "node port {port} in {reply}");
            assert!(!reply.contains(&format!(":{port}\r")), "node port {port} in {reply}");
        }
        for proxy in &addresses {
            assert!(reply.contains(&proxy.port().to_string()), "{proxy} missing from {reply}");
        }
    }
    // A MOVED for a key elsewhere names a proxy.
    let mut plain = RawClient::connect(addresses[0]).await;
    let mut saw_moved = false;
    for i in 0..60 {
        let reply = plain.call(&[b"GET", format!("key:{i}").as_bytes()]).await;
        if reply.starts_with(b"-MOVED") {
            saw_moved = true;
            let text = String::from_utf8_lossy(&reply).into_owned();
            assert!(addresses.iter().any(|a| text.contains(&a.to_string())), "{text}");
        }
    }
    assert!(saw_moved);
    // Inside MULTI the topology would come back nested in EXEC's reply: refused.
    assert_eq!(plain.call(&[b"MULTI"]).await, b"+OK\r\n");
    let refused = plain.call(&[b"CLUSTER", b"SLOTS"]).await;
    assert!(refused.starts_with(b"-ERR 'cluster|slots' inside MULTI"), "{refused:?}");
    assert!(plain.call(&[b"EXEC"]).await.starts_with(b"-EXECABORT"));

    // A proxy that knows only its own node never hands the others out.
    let lonely = format!(
        "[cluster]\nmode = \"sidecar\"\n[cluster.announce]\n\"{}\" = \"127.0.0.1:1\"\n",
        servers[0].addr
    );
    let partial = TestProxy::start_with(servers[0].addr, &lonely).await;
    let mut client = RawClient::connect(partial.addr).await;
    let reply = String::from_utf8_lossy(&client.call(&[b"CLUSTER", b"SLOTS"]).await).into_owned();
    assert!(reply.starts_with("-ERR redis-audit-proxy: cluster node"), "{reply}");
    assert!(reply.contains("has no sidecar"));
    for port in &node_ports {
        assert!(!reply.contains(&format!(":{port} ")) || reply.contains("cluster node"));
    }
    partial.shutdown().await;
    for proxy in proxies {
        proxy.shutdown().await;
    }
}

/// Valkey 8 announces the sidecars itself (`cluster-announce-client-ipv4` and
/// `cluster-announce-port` name the proxy; the bus keeps its own port): the proxies need no map
/// (`cluster.mode` stays `off`), and cluster clients still reach the nodes only through them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_announcing_its_sidecars_needs_no_map() {
    use crate::support::redis::Server;
    crate::require_server!(Server::Valkey80);
    let tools = std::path::Path::new(REDIS_CLI).exists();
    crate::require!(tools, REDIS_CLI, "`make test` installs it (or `apt-get install redis-tools`)");
    let _one_cluster = crate::support::redis::CLUSTER_LOCK.lock().await;
    let scratch = Scratch::new("valkey-cluster");
    std::fs::create_dir_all(scratch.path()).unwrap();
    let (servers, sidecars) = valkey_cluster(&scratch, NODES, 0).await;
    let proxies = unmapped_sidecars(&servers, &sidecars).await;

    let port = sidecars[0].port().to_string();
    for i in 0..30 {
        let key = format!("key:{i}");
        let args = ["-c", "-h", "127.0.0.1", "-p", port.as_str(), "SET", key.as_str(), "v"];
        let output = run(REDIS_CLI, &args, b"").await;
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "OK", "SET {key}");
    }
    let ran = calls_on(&servers, "set").await;
    let recorded: usize = proxies
        .iter()
        .map(|proxy| {
            let records = proxy.sink.records();
            records
                .iter()
                .filter(|r| {
                    r.command.as_ref().is_some_and(|c| c.name == "set") && r.error_code.is_none()
                })
                .count()
        })
        .sum();
    assert_eq!((ran, recorded), (30, 30), "every SET the nodes ran came through a sidecar");
    // What the client is told names only the sidecars.
    let mut client = RawClient::connect(sidecars[0]).await;
    let slots = String::from_utf8_lossy(&client.call(&[b"CLUSTER", b"SLOTS"]).await).into_owned();
    for (server, sidecar) in servers.iter().zip(&sidecars) {
        assert!(!slots.contains(&format!(":{}\r", server.addr.port())), "{slots}");
        assert!(slots.contains(&format!(":{}\r", sidecar.port())), "{slots}");
    }
    for proxy in proxies {
        proxy.shutdown().await;
    }
}
