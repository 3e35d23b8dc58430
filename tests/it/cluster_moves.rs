//! A cluster that changes while clients write: redis-py's `RedisCluster` writes through a
//! sidecar per node while `redis-cli --cluster reshard` moves 1,000 slots, or while a replica
//! takes over with `CLUSTER FAILOVER`; on Redis with the sidecars' map, and on Valkey 8 nodes
//! that announce their sidecars themselves. The `-ASK` and `-MOVED` redirects name sidecars, no
//! INCR is lost or counted twice, and no client reaches a node directly (the nodes ran exactly
//! the INCRs the sidecars recorded). (redis-py's `incr` sends `INCRBY key 1`.)

use std::net::SocketAddr;
use std::time::Duration;

use crate::clients::REDIS_CLI;
use crate::support::cluster::{
    calls_on, cluster, failover, find_replica, full_syncs, reshard, unmapped_sidecars,
    valkey_cluster, wait_ok, wait_replicas_synced,
};
use crate::support::redis::free_port;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

const NODES: usize = 3;
/// Keys the client increments, round after round.
const KEYS: usize = 200;
/// The python that has redis-py (Debian's `python3-redis`).
const PYTHON: &str = "/usr/bin/python3";

/// Fails the test (or skips it, when allowed) without redis-cli or redis-py.
macro_rules! require_cluster_tools {
    () => {
        crate::require_redis!();
        crate::require!(
            std::path::Path::new(REDIS_CLI).exists(),
            REDIS_CLI,
            "`make test` installs it (or `apt-get install redis-tools`)"
        );
        let has_redis_py = std::process::Command::new(PYTHON)
            .args(["-c", "from redis.cluster import RedisCluster"])
            .status()
            .is_ok_and(|status| status.success());
        crate::require!(
            has_redis_py,
            "redis-py (python3-redis)",
            "`make test` installs it (scripts/ensure-redis-py.sh, or `apt-get install \
             python3-redis`)"
        );
    };
}

/// A sidecar in front of each of `servers`, mapped to one another.
async fn sidecars(servers: &[RedisServer]) -> (Vec<SocketAddr>, Vec<TestProxy>) {
    let sidecars: Vec<SocketAddr> =
        servers.iter().map(|_| SocketAddr::from(([127, 0, 0, 1], free_port()))).collect();
    let mut toml = "[cluster]\nmode = \"sidecar\"\n[cluster.announce]\n".to_owned();
    for (server, sidecar) in servers.iter().zip(&sidecars) {
        toml.push_str(&format!("\"{}\" = \"{sidecar}\"\n", server.addr));
    }
    let mut proxies = Vec::new();
    for (server, listen) in servers.iter().zip(&sidecars) {
        proxies.push(TestProxy::start_on(server.addr, *listen, &toml).await);
    }
    (sidecars, proxies)
}

/// Runs redis-py's RedisCluster through the first sidecar while `change` runs, then checks that
/// no INCR was lost or run twice and that the nodes ran exactly what the sidecars recorded, on
/// a primary and its `replicas` each. Returns the INCRs sent and the redirects the sidecars
/// passed on.
async fn write_while(
    scratch: &Scratch,
    replicas: u64,
    servers: &[RedisServer],
    sidecars: &[SocketAddr],
    proxies: &[TestProxy],
    change: impl std::future::Future<Output = ()>,
) -> (u64, u64) {
    wait_replicas_synced(servers).await;
    let stop = scratch.path().join("stop");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/redis_py_cluster.py");
    let port = sidecars[0].port().to_string();
    let keys = KEYS.to_string();
    let stop_text = stop.display().to_string();
    let client = tokio::spawn(async move {
        let output = tokio::process::Command::new(PYTHON)
            .args([script, port.as_str(), keys.as_str(), stop_text.as_str()])
            .kill_on_drop(true)
            .output()
            .await
            .expect("python3 runs");
        assert!(
            output.status.success(),
            "the cluster client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("JSON")
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let full_syncs_before = full_syncs(servers).await;
    change.await;
    for server in servers {
        wait_ok(server.addr).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&stop, b"").unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&client.await.expect("the client task")).expect("the client's JSON");
    let counts: Vec<u64> =
        report["counts"].as_array().expect("counts").iter().map(|n| n.as_u64().unwrap()).collect();
    let sent: u64 = counts.iter().sum();

    // No INCR lost or run twice: each counter holds what the client counted.
    let mut reader = RawClient::connect(sidecars[0]).await;
    for (i, count) in counts.iter().enumerate() {
        let key = format!("counter:{i}");
        let mut reply = reader.call(&[b"GET", key.as_bytes()]).await;
        for _ in 0..3 {
            // A key elsewhere: follow the sidecar named in -MOVED / -ASK, as a client would.
            let text = String::from_utf8_lossy(&reply).into_owned();
            let Some(target) = text.strip_prefix("-MOVED ").or_else(|| text.strip_prefix("-ASK "))
            else {
                break;
            };
            let address: SocketAddr = target.split_whitespace().nth(1).unwrap().parse().unwrap();
            assert!(sidecars.contains(&address), "{text} names a node, not a sidecar");
            let mut there = RawClient::connect(address).await;
            if text.starts_with("-ASK") {
                there.call(&[b"ASKING"]).await;
            }
            reply = there.call(&[b"GET", key.as_bytes()]).await;
        }
        let value = format!("${}\r\n{count}\r\n", count.to_string().len());
        assert_eq!(String::from_utf8_lossy(&reply), value, "{key}");
    }
    // Every INCR the nodes ran, a sidecar recorded: none reached a node directly. A replica
    // counts what its primary ran too, once the replication stream caught up (up to 20 s: a
    // loaded machine once needed more than 5).
    let mut ran = 0;
    for _ in 0..400 {
        ran = calls_on(servers, "incrby").await;
        if ran >= sent * (1 + replicas) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut recorded, mut redirected) = (0, 0);
    for proxy in proxies {
        for record in proxy.sink.records() {
            if record.command.as_ref().is_some_and(|c| c.name == "incrby") {
                match record.error_code.as_deref() {
                    None => recorded += 1,
                    Some(b"MOVED" | b"ASK") => redirected += 1,
                    Some(other) => panic!("INCRBY failed: {}", String::from_utf8_lossy(other)),
                }
            }
        }
    }
    assert_eq!(recorded, sent, "INCRs recorded by the sidecars, sent");
    // A replica brought up to date by a full resynchronization (an old primary after a
    // failover, on a loaded machine) loads a snapshot and runs none of the INCRs in it: then
    // the nodes ran each at least once and at most once per copy.
    if full_syncs(servers).await == full_syncs_before {
        assert_eq!(ran, sent * (1 + replicas), "INCRs run by the nodes (replicas included)");
    } else {
        assert!((sent..=sent * (1 + replicas)).contains(&ran), "{ran} INCRs run for {sent}");
    }
    eprintln!("cluster_moves: {} rounds, {sent} INCRs, {redirected} redirected", report["rounds"]);
    (sent, redirected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_move_under_load_and_every_write_goes_through_a_sidecar_exactly_once() {
    require_cluster_tools!();
    let _one_cluster = crate::support::redis::CLUSTER_LOCK.lock().await;
    let scratch = Scratch::new("cluster-moves");
    std::fs::create_dir_all(scratch.path()).unwrap();
    let servers = cluster(&scratch, NODES, 0).await;
    let (sidecars, proxies) = sidecars(&servers).await;
    let reshard = reshard(REDIS_CLI, &servers);
    let (sent, redirected) = write_while(&scratch, 0, &servers, &sidecars, &proxies, reshard).await;
    assert!(redirected > 0, "the moved slots redirected the client ({sent} INCRs)");
    for proxy in proxies {
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_under_load_moves_the_clients_to_the_new_primary_through_its_sidecar() {
    require_cluster_tools!();
    let _one_cluster = crate::support::redis::CLUSTER_LOCK.lock().await;
    let scratch = Scratch::new("cluster-failover");
    std::fs::create_dir_all(scratch.path()).unwrap();
    // Three primaries, each with a replica.
    let servers = cluster(&scratch, 2 * NODES, 1).await;
    let (sidecars, proxies) = sidecars(&servers).await;
    let replica = find_replica(&servers).await;
    let (sent, redirected) =
        write_while(&scratch, 1, &servers, &sidecars, &proxies, failover(replica)).await;
    assert!(sent > 0 && redirected > 0, "the client was sent to the new primary ({sent} INCRs)");
    for proxy in proxies {
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_valkey_announcing_its_sidecars_slots_move_under_load_through_them() {
    use crate::support::redis::Server;
    require_cluster_tools!();
    crate::require_server!(Server::Valkey80);
    let _one_cluster = crate::support::redis::CLUSTER_LOCK.lock().await;
    let scratch = Scratch::new("valkey-moves");
    std::fs::create_dir_all(scratch.path()).unwrap();
    let (servers, sidecars) = valkey_cluster(&scratch, NODES, 0).await;
    let proxies = unmapped_sidecars(&servers, &sidecars).await;
    let cli = Server::Valkey80.binary().with_file_name("valkey-cli");
    let reshard = reshard(cli.to_str().unwrap(), &servers);
    let (sent, redirected) = write_while(&scratch, 0, &servers, &sidecars, &proxies, reshard).await;
    assert!(redirected > 0, "the moved slots redirected the client ({sent} INCRs)");
    for proxy in proxies {
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_valkey_announcing_its_sidecars_a_failover_under_load_goes_through_them() {
    use crate::support::redis::Server;
    require_cluster_tools!();
    crate::require_server!(Server::Valkey80);
    let _one_cluster = crate::support::redis::CLUSTER_LOCK.lock().await;
    let scratch = Scratch::new("valkey-failover");
    std::fs::create_dir_all(scratch.path()).unwrap();
    // Three primaries, each with a replica; a replica reaches its primary at the address the
    // primary announces, its sidecar (the link comes up once the sidecars are there).
    let (servers, sidecars) = valkey_cluster(&scratch, 2 * NODES, 1).await;
    let proxies = unmapped_sidecars(&servers, &sidecars).await;
    let replica = find_replica(&servers).await;
    let (sent, redirected) =
        write_while(&scratch, 1, &servers, &sidecars, &proxies, failover(replica)).await;
    assert!(sent > 0 && redirected > 0, "the client was sent to the new primary ({sent} INCRs)");
    for proxy in proxies {
        proxy.shutdown().await;
    }
}
