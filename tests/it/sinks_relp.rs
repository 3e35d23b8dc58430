//! `transport = "relp"` and `"relp_tls"` against a real rsyslogd with `imrelp`: every line of
//! the file arrives, in order, byte for byte; a collector stopped and started again mid-run
//! costs the copy nothing (what it had not acknowledged is sent again), and no loss is
//! declared.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::support::rsyslog::{CollectorTls, Input, Rsyslog};
use crate::support::scratch::{json, trail_lines};
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

/// The messages received, with each repeated delivery removed (RELP delivers at least once: a
/// repetition must be the same bytes as the first delivery); and how many were repeated.
fn first_deliveries(received: &[(u32, String, String)]) -> (Vec<String>, usize) {
    let mut seen: BTreeMap<Option<u64>, HashSet<&str>> = BTreeMap::new();
    let mut first = Vec::new();
    let mut repeated = 0;
    for (_, _, msg) in received {
        let seq = json(msg)["seq"].as_u64();
        let same = seen.entry(seq).or_default();
        if seq.is_some() && !same.is_empty() {
            assert!(same.contains(msg.as_str()), "seq {seq:?} came twice with other bytes: {msg}");
        }
        if same.insert(msg) {
            first.push(msg.clone());
        } else {
            repeated += 1;
        }
    }
    (first, repeated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relp_over_tls_delivers_a_100000_command_run_byte_for_byte_in_order() {
    crate::require_redis!();
    crate::require_rsyslog!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("sink-relp-tls");
    let (ca, tls) = CollectorTls::issue(&dir.path().join("certs"));
    let proxy_identity = ca.client(&dir.path().join("certs"), "proxy");
    let collector = Rsyslog::start_input(&dir.path().join("rsyslog"), Input::Relp(Some(&tls)));
    let toml = format!(
        "[audit]\n[[audit.sinks]]\ntype = \"syslog\"\nname = \"siem\"\naddress = \"{}\"\n\
         transport = \"relp_tls\"\nca_file = \"{}\"\nserver_name = \"localhost\"\n\
         cert_file = \"{}\"\nkey_file = \"{}\"\n",
        collector.addr,
        ca.ca_file.display(),
        proxy_identity.cert_file.display(),
        proxy_identity.key_file.display()
    );
    let audit_dir = dir.path().join("audit");
    let (proxy, audit) = TestProxy::start_audited(redis.addr, &audit_dir, &toml).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.pipelined_sets(0, 100_000).await;
    drop(client);
    proxy.shutdown().await;

    let file = trail_lines(&audit_dir);
    assert!(file.len() > 100_000, "{} lines", file.len());
    let received = collector.wait_for(file.len());
    let messages: Vec<&String> = received.iter().map(|(_, _, msg)| msg).collect();
    assert_eq!(messages, file.iter().collect::<Vec<_>>(), "the file's lines, in order, once");
    let stats = &redis_audit_proxy::event::EventSink::stats(&*audit).unwrap().sinks[0];
    assert_eq!((stats.sent, stats.dropped, stats.resent), (file.len() as u64, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relp_resends_what_a_restarted_collector_had_not_acknowledged() {
    crate::require_redis!();
    crate::require_rsyslog!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("sink-relp-restart");
    let mut collector = Rsyslog::start_input(&dir.path().join("rsyslog"), Input::Relp(None));
    // The queue (16 MiB by default) holds what arrives while the collector is down.
    let toml = format!(
        "[audit]\n[[audit.sinks]]\ntype = \"syslog\"\nname = \"siem\"\naddress = \"{}\"\n\
         transport = \"relp\"\nreconnect_min_ms = 20\nreconnect_max_ms = 200\n",
        collector.addr
    );
    let audit_dir = dir.path().join("audit");
    let (proxy, audit) = TestProxy::start_audited(redis.addr, &audit_dir, &toml).await;
    let mut client = RawClient::connect(proxy.addr).await;
    for round in 0..3 {
        client.pipelined_sets(round * 10_000, 5_000).await;
        // Stopped while the sink is sending: the proxy serves on, every command answered.
        collector.stop();
        client.pipelined_sets(round * 10_000 + 5_000, 5_000).await;
        collector.restart();
    }
    client.pipelined_sets(30_000, 2_000).await;
    drop(client);
    proxy.shutdown().await;

    redis_audit_proxy::audit::verify::verify_dir(&audit_dir).expect("the trail verifies");
    let file = trail_lines(&audit_dir);
    assert!(!file.iter().any(|line| json(line)["action"] == "sink_loss"), "RELP declared no loss");
    let received = collector.wait_for(file.len());
    let (first, repeated) = first_deliveries(&received);
    assert_eq!(first, file, "every line of the file, in order (first deliveries)");
    let stats = &redis_audit_proxy::event::EventSink::stats(&*audit).unwrap().sinks[0];
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert!(stats.reconnects >= 1 && stats.errors >= 1, "{stats:?}");
    // Each line was acknowledged at least once; a delivery whose acknowledgement the stop
    // took was sent again.
    let deliveries = received.len() as u64;
    assert!(stats.sent >= file.len() as u64 && stats.sent <= deliveries, "{stats:?}");
    assert!(deliveries <= stats.sent + stats.resent, "{repeated} repeated, {stats:?}");
    // The collector's RFC 5424 export verifies against the file, repetitions included.
    let report =
        redis_audit_proxy::audit::verify::verify_export(&collector.export, Some(&audit_dir))
            .unwrap_or_else(|error| panic!("the export verifies: {error}"));
    assert_eq!(report.loss_lines, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relp_with_the_collector_down_at_the_end_declares_what_it_could_not_deliver() {
    crate::require_redis!();
    crate::require_rsyslog!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("sink-relp-down");
    let mut collector = Rsyslog::start_input(&dir.path().join("rsyslog"), Input::Relp(None));
    let toml = format!(
        "[audit]\n[[audit.sinks]]\ntype = \"syslog\"\nname = \"siem\"\naddress = \"{}\"\n\
         transport = \"relp\"\nreconnect_min_ms = 20\nreconnect_max_ms = 100\n\
         connect_timeout_ms = 200\n",
        collector.addr
    );
    let audit_dir = dir.path().join("audit");
    let (proxy, audit) = TestProxy::start_audited(redis.addr, &audit_dir, &toml).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.pipelined_sets(0, 1_000).await;
    collector.wait_for(1_000);
    collector.stop();
    client.pipelined_sets(1_000, 1_000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(client);
    proxy.shutdown().await;

    // The file says which lines the sink never delivered, and the counters agree.
    redis_audit_proxy::audit::verify::verify_dir(&audit_dir).expect("the trail verifies");
    let file = trail_lines(&audit_dir);
    let losses: Vec<serde_json::Value> = file
        .iter()
        .map(|line| json(line))
        .filter(|record| record["action"] == "sink_loss")
        .map(|record| record["lost"].clone())
        .collect();
    let lines: u64 = losses.iter().map(|loss| loss["lines"].as_u64().unwrap()).sum();
    assert!(lines >= 1_000, "the commands after the stop: {losses:?}");
    // The counter also has the file's own last lines, from its `sink_loss` records on: they
    // came after the sink gave up, and nothing can follow the final seal to say so (the log
    // does).
    let stats = &redis_audit_proxy::event::EventSink::stats(&*audit).unwrap().sinks[0];
    let declared_at = file.iter().position(|line| json(line)["action"] == "sink_loss").unwrap();
    assert_eq!(stats.dropped, lines + (file.len() - declared_at) as u64, "{stats:?}");
    let received = collector.received();
    let first = received.iter().filter_map(|(_, _, msg)| json(msg)["seq"].as_u64()).max();
    let declared_from = losses.iter().filter_map(|loss| loss["first_seq"].as_u64()).min();
    assert!(
        declared_from.is_some_and(|from| first.is_some_and(|last| from <= last + 1)),
        "the declared range starts where the delivered ones end: {first:?}, {losses:?}"
    );
}
