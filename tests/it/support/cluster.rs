//! Redis Cluster fixtures: clusters of real servers built with `redis-cli --cluster create`
//! (or Valkey 8 nodes announcing their sidecars, built with `valkey-cli`), and what the tests
//! ask of them.

use std::net::SocketAddr;
use std::time::Duration;

use crate::clients::{run, REDIS_CLI};
use crate::support::redis::{free_port, Server};
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

/// `nodes` cluster-enabled servers, their slots assigned (`replicas` per primary), the cluster
/// `ok` on each.
pub async fn cluster(scratch: &Scratch, nodes: usize, replicas: usize) -> Vec<RedisServer> {
    let servers: Vec<RedisServer> = (0..nodes)
        .map(|i| {
            let conf = scratch.path().join(format!("nodes-{i}.conf"));
            RedisServer::start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf.to_str().unwrap(),
                "--cluster-node-timeout",
                "5000",
            ])
        })
        .collect();
    let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
    args.extend(servers.iter().map(|s| s.addr.to_string()));
    args.extend(["--cluster-replicas".into(), replicas.to_string(), "--cluster-yes".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run(REDIS_CLI, &args, b"").await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    for server in &servers {
        wait_ok(server.addr).await;
    }
    servers
}

/// Waits until `node` says `cluster_state:ok`.
pub async fn wait_ok(node: SocketAddr) {
    let mut admin = RawClient::connect(node).await;
    for _ in 0..400 {
        let info = admin.call(&[b"CLUSTER", b"INFO"]).await;
        if String::from_utf8_lossy(&info).contains("cluster_state:ok") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cluster not ok on {node}");
}

/// `INFO commandstats`'s `calls` of `command` on `node`.
pub async fn calls(node: SocketAddr, command: &str) -> u64 {
    let mut admin = RawClient::connect(node).await;
    let stats =
        String::from_utf8_lossy(&admin.call(&[b"INFO", b"commandstats"]).await).into_owned();
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits until every replica among `servers` is linked to its primary and done loading its
/// first copy: INCRs sent before would come to it inside a snapshot, not as commands run.
pub async fn wait_replicas_synced(servers: &[RedisServer]) {
    for server in servers {
        let mut admin = RawClient::connect(server.addr).await;
        for attempt in 0..400 {
            let info = admin.call(&[b"INFO", b"replication"]).await;
            let info = String::from_utf8_lossy(&info);
            let replica = info.lines().any(|line| line == "role:slave");
            if !replica
                || (info.lines().any(|line| line == "master_link_status:up")
                    && info.lines().any(|line| line == "master_sync_in_progress:0"))
            {
                break;
            }
            assert!(attempt < 399, "{}: replica not synced: {info}", server.addr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The full resynchronizations `servers` served (`INFO stats`' `sync_full`), together: a
/// replica loaded by one runs none of the commands it received.
pub async fn full_syncs(servers: &[RedisServer]) -> u64 {
    let mut total = 0;
    for server in servers {
        let mut admin = RawClient::connect(server.addr).await;
        let stats = String::from_utf8_lossy(&admin.call(&[b"INFO", b"stats"]).await).into_owned();
        total += stats
            .lines()
            .find_map(|line| line.strip_prefix("sync_full:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// The `calls` of `command` on all of `servers`, together.
pub async fn calls_on(servers: &[RedisServer], command: &str) -> u64 {
    let mut total = 0;
    for server in servers {
        total += calls(server.addr, command).await;
    }
    total
}

/// The second line of a bulk reply (a node id).
fn node_id(reply: Vec<u8>) -> String {
    String::from_utf8_lossy(&reply).lines().nth(1).unwrap().to_owned()
}

/// A replica among `servers`, once its link to its primary is up (a manual failover needs it).
pub async fn find_replica(servers: &[RedisServer]) -> SocketAddr {
    for server in servers {
        let mut admin = RawClient::connect(server.addr).await;
        if !admin.call(&[b"ROLE"]).await.starts_with(b"*5\r\n$5\r\nslave") {
            continue;
        }
        for _ in 0..400 {
            let info = admin.call(&[b"INFO", b"replication"]).await;
            if String::from_utf8_lossy(&info).contains("master_link_status:up") {
                return server.addr;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the replica {} never linked to its primary", server.addr);
    }
    panic!("no replica");
}

/// `CLUSTER FAILOVER` on `replica`, and waits until it is a primary.
pub async fn failover(replica: SocketAddr) {
    let mut admin = RawClient::connect(replica).await;
    assert_eq!(admin.call(&[b"CLUSTER", b"FAILOVER"]).await, b"+OK\r\n");
    for _ in 0..200 {
        if admin.call(&[b"ROLE"]).await.starts_with(b"*3\r\n$6\r\nmaster") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{replica} did not become a primary");
}

/// Valkey 8 nodes that announce their sidecars themselves (`cluster-announce-port` and
/// `cluster-announce-client-ipv4`; the bus on a port of its own), and a sidecar without a map
/// in front of each: returns the nodes and the sidecars' addresses, the cluster `ok`.
pub async fn valkey_cluster(
    scratch: &Scratch,
    nodes: usize,
    replicas: usize,
) -> (Vec<RedisServer>, Vec<SocketAddr>) {
    let sidecars: Vec<SocketAddr> =
        (0..nodes).map(|_| SocketAddr::from(([127, 0, 0, 1], free_port()))).collect();
    let servers: Vec<RedisServer> = sidecars
        .iter()
        .enumerate()
        .map(|(i, sidecar)| {
            let conf = scratch.path().join(format!("valkey-nodes-{i}.conf"));
            let bus = free_port().to_string();
            let announce = sidecar.port().to_string();
            RedisServer::start_server(
                Server::Valkey80,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    conf.to_str().unwrap(),
                    "--cluster-port",
                    &bus,
                    "--cluster-announce-bus-port",
                    &bus,
                    "--cluster-announce-client-ipv4",
                    "127.0.0.1",
                    "--cluster-announce-port",
                    &announce,
                ],
            )
        })
        .collect();
    let cli = Server::Valkey80.binary().with_file_name("valkey-cli");
    let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
    args.extend(servers.iter().map(|s| s.addr.to_string()));
    args.extend(["--cluster-replicas".into(), replicas.to_string(), "--cluster-yes".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run(cli.to_str().unwrap(), &args, b"").await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    for server in &servers {
        wait_ok(server.addr).await;
    }
    (servers, sidecars)
}

/// `cli --cluster reshard`: 1,000 slots from the first of `servers` to the second.
pub async fn reshard(cli: &str, servers: &[RedisServer]) {
    let mut first = RawClient::connect(servers[0].addr).await;
    let mut second = RawClient::connect(servers[1].addr).await;
    let from = node_id(first.call(&[b"CLUSTER", b"MYID"]).await);
    let to = node_id(second.call(&[b"CLUSTER", b"MYID"]).await);
    let node = servers[0].addr.to_string();
    let args = [
        "--cluster",
        "reshard",
        node.as_str(),
        "--cluster-from",
        from.as_str(),
        "--cluster-to",
        to.as_str(),
        "--cluster-slots",
        "1000",
        "--cluster-yes",
    ];
    let output = run(cli, &args, b"").await;
    assert!(output.status.success(), "reshard: {}", String::from_utf8_lossy(&output.stdout));
}

/// A proxy in front of each of `servers`, listening on its `sidecars` address, with no map: the
/// servers name the sidecars themselves (Valkey's `cluster-announce-*`).
pub async fn unmapped_sidecars(servers: &[RedisServer], sidecars: &[SocketAddr]) -> Vec<TestProxy> {
    let mut proxies = Vec::new();
    for (server, listen) in servers.iter().zip(sidecars) {
        proxies.push(TestProxy::start_on(server.addr, *listen, "").await);
    }
    proxies
}
