//! `[[audit.sinks]]` with real parts: a real rsyslogd (TLS and plain TCP) receives the file's
//! lines, byte for byte and in order, and what it misses while stopped is exactly what the
//! loss records declare; the real binary's stdout carries the file's lines; its logs stay on
//! stderr (no colour codes off a terminal, JSON with `--log-format json`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::client::encode_command;
use crate::support::redis::free_port;
use crate::support::rsyslog::{CollectorTls, Rsyslog};
use crate::support::scratch::{json, trail_lines};
use crate::support::{KillOnDrop, RawClient, RedisServer, Scratch};

const BINARY: &str = env!("CARGO_BIN_EXE_redis-audit-proxy");

/// The file's sequenced lines by seq.
fn by_seq(lines: &[String]) -> BTreeMap<u64, String> {
    lines.iter().filter_map(|line| Some((json(line)["seq"].as_u64()?, line.clone()))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_over_tls_receives_every_line_of_a_100000_command_run_in_order() {
    crate::require_redis!();
    crate::require_rsyslog!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("sink-tls");
    let (ca, tls) = CollectorTls::issue(&dir.path().join("certs"));
    let collector = Rsyslog::start(&dir.path().join("rsyslog"), Some(&tls));
    let sink = format!(
        "[[audit.sinks]]\ntype = \"syslog\"\nname = \"siem\"\naddress = \"{}\"\n\
         transport = \"tls\"\nca_file = \"{}\"\nserver_name = \"localhost\"\n",
        collector.addr,
        ca.ca_file.display()
    );
    let audit_dir = dir.path().join("audit");
    let (proxy, audit) = crate::support::TestProxy::start_audited(
        redis.addr,
        &audit_dir,
        &format!("[audit]\n{sink}"),
    )
    .await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.pipelined_sets(0, 100_000).await;
    drop(client);
    proxy.shutdown().await;

    let file = trail_lines(&audit_dir);
    assert!(file.len() > 100_000, "{} lines", file.len());
    let received = collector.wait_for(file.len());
    assert_eq!(received.len(), file.len(), "the collector has every line, nothing more");
    for (line, (pri, msgid, msg)) in file.iter().zip(&received) {
        assert_eq!(msg, line, "the same bytes, in the same order");
        let record = json(line);
        assert_eq!(msgid, record["kind"].as_str().unwrap());
        // local0 (16): info for commands, notice for system events.
        let expected = if record["kind"] == "system" { 16 * 8 + 5 } else { 16 * 8 + 6 };
        assert_eq!(*pri, expected, "{line}");
    }
    // The copy is verifiable as the file is: it starts with the file's `file_open` (its
    // constants) and ends with the seal over the run.
    assert_eq!(json(&received[0].2)["action"], "file_open");
    assert_eq!(json(&received.last().unwrap().2)["action"], "seal");
    let stats = &redis_audit_proxy::event::EventSink::stats(&*audit).unwrap().sinks[0];
    assert_eq!((stats.name.as_str(), stats.sent, stats.dropped), ("siem", file.len() as u64, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_stopped_mid_run_misses_exactly_what_loss_records_declare() {
    crate::require_redis!();
    crate::require_rsyslog!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("sink-restart");
    let mut collector = Rsyslog::start(&dir.path().join("rsyslog"), None);
    // A small queue, so that the outage overflows it; a fast back-off, so that the sink is
    // back soon after the collector.
    let toml = format!(
        "[audit]\n[[audit.sinks]]\ntype = \"syslog\"\nname = \"siem\"\naddress = \"{}\"\n\
         transport = \"tcp\"\nqueue_bytes = 65536\nreconnect_min_ms = 20\nreconnect_max_ms = 200\n",
        collector.addr
    );
    let audit_dir = dir.path().join("audit");
    let (proxy, audit) =
        crate::support::TestProxy::start_audited(redis.addr, &audit_dir, &toml).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.pipelined_sets(0, 5_000).await;
    // Stopped while the sink is still sending: the proxy serves on, every command answered.
    collector.stop();
    let started = Instant::now();
    client.pipelined_sets(5_000, 5_000).await;
    let outage = started.elapsed();
    collector.restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.pipelined_sets(10_000, 5_000).await;
    drop(client);
    proxy.shutdown().await;

    // The file with its `sink_loss` records is still a whole, sealed trail.
    redis_audit_proxy::audit::verify::verify_dir(&audit_dir).expect("the trail verifies");
    let file = trail_lines(&audit_dir);
    let file_by_seq = by_seq(&file);
    let received = collector.wait_for(1);
    let (mut seqs, mut declared) = (Vec::new(), Vec::new());
    for (_, _, msg) in &received {
        let record = json(msg);
        match record["seq"].as_u64() {
            Some(seq) => {
                assert_eq!(msg, &file_by_seq[&seq], "a received line is the file's line");
                seqs.push(seq);
            }
            None if record["action"] == "loss" => declared.push(record["lost"].clone()),
            None => {} // seals, file_open
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, no line twice");
    let reasons: Vec<&str> = declared.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    assert!(
        reasons.contains(&"queue_full"),
        "an outage of {outage:?} overflowed the queue: {declared:?}"
    );
    // Every line the collector misses lies in a range a loss record declared to it.
    let covered = |seq: u64| {
        declared.iter().any(|l| {
            l["first_seq"].as_u64().is_some_and(|first| first <= seq)
                && l["last_seq"].as_u64().is_some_and(|last| seq <= last)
        })
    };
    let got: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
    let missing: Vec<u64> = file_by_seq.keys().copied().filter(|s| !got.contains(s)).collect();
    assert!(!missing.is_empty(), "the outage cost the copy something");
    // The one exception: the file's last words, the `sink_loss` records of what the sinks
    // could not send by the time they stopped, written after them.
    let last_sent = seqs.last().copied().unwrap_or(0);
    let after_the_sinks =
        |seq: u64| seq > last_sent && json(&file_by_seq[&seq])["action"] == "sink_loss";
    let uncovered: Vec<u64> =
        missing.iter().copied().filter(|s| !covered(*s) && !after_the_sinks(*s)).collect();
    assert!(
        uncovered.is_empty(),
        "missed without a loss record: {uncovered:?}; declared {declared:?}; the file ends {:?}; the copy ends {:?}",
        &file[file.len().saturating_sub(4)..],
        &received[received.len().saturating_sub(4)..]
    );
    // The file records each of those losses too, and the counters agree with it.
    let file_losses: Vec<serde_json::Value> = file
        .iter()
        .map(|line| json(line))
        .filter(|record| record["action"] == "sink_loss")
        .map(|record| record["lost"].clone())
        .collect();
    for loss in &declared {
        assert!(file_losses.contains(loss), "{loss} is not in the file: {file_losses:?}");
    }
    let stats = &redis_audit_proxy::event::EventSink::stats(&*audit).unwrap().sinks[0];
    let lost_lines: u64 = file_losses.iter().map(|l| l["lines"].as_u64().unwrap()).sum();
    assert_eq!(stats.dropped, lost_lines);
    assert!(stats.reconnects >= 1 && stats.errors >= 1, "{stats:?}");
    // What a broken connection declares is bounded by inflight_bytes (1 MiB) plus one chunk.
    for loss in declared.iter().filter(|l| l["reason"] == "connection_lost") {
        assert!(loss["lines"].as_u64().unwrap() < (1 << 20) / 100, "{loss}");
    }
    // The collector's RFC 5424 export of the copy verifies, alone and against the file: its
    // gaps are all inside the ranges its loss lines declare.
    use redis_audit_proxy::audit::verify::verify_export;
    for against in [None, Some(audit_dir.as_path())] {
        let report = verify_export(&collector.export, against)
            .unwrap_or_else(|error| panic!("the export verifies: {error}"));
        assert_eq!(report.loss_lines, declared.len() as u64, "{report}");
        assert_eq!(report.records, seqs.len() as u64, "{report}");
    }
}

/// Sends `count` SETs on a blocking connection, pipelined 500 at a time.
fn blocking_sets(addr: SocketAddr, count: usize) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for batch in (0..count).collect::<Vec<_>>().chunks(500) {
        let mut bytes = Vec::new();
        for i in batch {
            bytes.extend(encode_command(&[b"SET", format!("key:{i}").as_bytes(), b"v"]));
        }
        stream.write_all(&bytes).unwrap();
        let mut replies = vec![0u8; 5 * batch.len()];
        stream.read_exact(&mut replies).unwrap();
        assert!(replies.chunks(5).all(|reply| reply == b"+OK\r\n"));
    }
}

/// Starts the binary with `args`, stdout and stderr piped, and waits for it to answer.
fn start_binary(args: &[&str], listen: SocketAddr) -> KillOnDrop {
    let child = Command::new(BINARY)
        .args(args)
        .args(["--listen", &listen.to_string(), "--admin", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the proxy");
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).is_err() {
        assert!(child.0.try_wait().unwrap().is_none(), "the proxy exited early");
        assert!(Instant::now() < deadline, "the proxy never listened on {listen}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Stops the binary with SIGTERM; returns its stdout and stderr (read while it ran, so that
/// a full pipe never holds it).
fn stop_binary(
    child: &mut KillOnDrop,
    stdout: std::thread::JoinHandle<Vec<u8>>,
) -> (String, String) {
    let status = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    assert!(status.unwrap().success());
    let mut stderr = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let exit = child.0.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "stderr: {stderr}");
    (String::from_utf8(stdout.join().unwrap()).unwrap(), stderr)
}

fn read_all_of(child: &mut KillOnDrop) -> std::thread::JoinHandle<Vec<u8>> {
    let mut pipe = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes).unwrap();
        bytes
    })
}

#[test]
fn the_binarys_stdout_sink_prints_exactly_the_files_lines() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("sink-stdout");
    std::fs::create_dir_all(dir.path()).unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, "[[audit.sinks]]\ntype = \"stdout\"\n").unwrap();
    let audit_dir = dir.path().join("audit");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut child = start_binary(
        &[
            "--config",
            config.to_str().unwrap(),
            "--upstream",
            &redis.addr.to_string(),
            "--audit-dir",
            audit_dir.to_str().unwrap(),
            "--log-level",
            "info",
        ],
        listen,
    );
    let stdout = read_all_of(&mut child);
    blocking_sets(listen, 10_000);
    let (stdout, stderr) = stop_binary(&mut child, stdout);
    let file = trail_lines(&audit_dir);
    assert!(file.len() > 10_000, "{} lines", file.len());
    let printed: Vec<&str> = stdout.lines().collect();
    assert_eq!(printed.len(), file.len(), "one stdout line per line of the file");
    assert!(printed.iter().zip(&file).all(|(out, line)| out == line), "the same lines in order");
    // The proxy's own logs went to stderr, without colour codes (it is not a terminal).
    assert!(!stderr.is_empty(), "info logs are on stderr");
    assert!(!stderr.contains('\u{1b}'), "no ANSI codes off a terminal: {stderr}");
}

#[test]
fn log_format_json_writes_one_object_a_line_on_stderr() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("log-json");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut child = start_binary(
        &[
            "--upstream",
            &redis.addr.to_string(),
            "--audit-dir",
            dir.path().to_str().unwrap(),
            "--log-level",
            "info",
            "--log-format",
            "json",
        ],
        listen,
    );
    let stdout = read_all_of(&mut child);
    blocking_sets(listen, 10);
    let (stdout, stderr) = stop_binary(&mut child, stdout);
    assert!(stdout.is_empty(), "without a stdout sink, nothing on stdout: {stdout}");
    assert!(stderr.lines().count() >= 2, "{stderr}");
    for line in stderr.lines() {
        let log = json(line);
        assert!(log["level"].is_string() && log["fields"].is_object(), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_reads_costs_the_proxy_nothing_with_drop() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("sink-stuck");
    // Accepts connections and never reads from them.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck_addr = stuck.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((stream, _)) = stuck.accept() {
            held.push(stream);
            if held.len() >= 8 {
                break;
            }
        }
    });
    let toml = format!(
        "[audit]\n[[audit.sinks]]\ntype = \"syslog\"\naddress = \"{stuck_addr}\"\n\
         transport = \"tcp\"\nqueue_bytes = 65536\nconnect_timeout_ms = 300\n"
    );
    let audit_dir = dir.path().join("audit");
    let (proxy, audit) =
        crate::support::TestProxy::start_audited(redis.addr, &audit_dir, &toml).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let sink_stats =
        || redis_audit_proxy::event::EventSink::stats(&*audit).unwrap().sinks[0].clone();
    for round in 0..10 {
        client.pipelined_sets(round * 2_000, 2_000).await;
        // Its queue and what its thread holds stay within twice queue_bytes.
        let stats = sink_stats();
        assert!(stats.queue_bytes <= 2 * 65536, "{stats:?}");
    }
    drop(client);
    proxy.shutdown().await;
    let stats = sink_stats();
    // The kernel's socket buffers took the first lines (several MB on loopback); the rest
    // were missed, and every line is one or the other.
    let file = trail_lines(&audit_dir);
    assert!(stats.dropped >= 5_000, "the stuck sink missed many lines: {stats:?}");
    assert!(stats.sent + stats.dropped >= file.len() as u64, "{stats:?}, {} lines", file.len());
    // The file has everything: the sink's troubles are in it as sink_loss records.
    let commands = file.iter().filter(|l| l.contains("\"kind\":\"command\"")).count();
    assert_eq!(commands, 20_000);
    assert!(file.iter().any(|l| l.contains("\"action\":\"sink_loss\"")));
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_block_a_collector_that_comes_up_late_misses_nothing() {
    crate::require_redis!();
    crate::require_rsyslog!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("sink-block");
    // The collector's port is known, but nothing listens on it yet.
    let mut collector = Rsyslog::start(&dir.path().join("rsyslog"), None);
    collector.stop();
    let toml = format!(
        "[audit]\n[[audit.sinks]]\ntype = \"syslog\"\naddress = \"{}\"\ntransport = \"tcp\"\n\
         on_full = \"block\"\nqueue_bytes = 65536\nreconnect_min_ms = 20\nreconnect_max_ms = 100\n",
        collector.addr
    );
    let audit_dir = dir.path().join("audit");
    let (proxy, audit) =
        crate::support::TestProxy::start_audited(redis.addr, &audit_dir, &toml).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.pipelined_sets(0, 3_000).await;
    collector.restart();
    client.pipelined_sets(3_000, 3_000).await;
    drop(client);
    proxy.shutdown().await;
    let file = trail_lines(&audit_dir);
    let received = collector.wait_for(file.len());
    let copy: Vec<&String> = received.iter().map(|(_, _, msg)| msg).collect();
    assert_eq!(copy.len(), file.len(), "nothing missed, nothing added");
    assert!(copy.iter().zip(&file).all(|(msg, line)| *msg == line), "the same lines in order");
    let stats = &redis_audit_proxy::event::EventSink::stats(&*audit).unwrap().sinks[0];
    assert_eq!(stats.dropped, 0);
    assert!(stats.errors >= 1, "it did wait for the collector: {stats:?}");
}

#[test]
fn udp_sends_one_datagram_per_line() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("sink-udp");
    std::fs::create_dir_all(dir.path()).unwrap();
    let collector = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    collector.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let config = dir.path().join("proxy.toml");
    let sink = format!(
        "[[audit.sinks]]\ntype = \"syslog\"\ntransport = \"udp\"\naddress = \"{}\"\nfacility = \"local3\"\n",
        collector.local_addr().unwrap()
    );
    std::fs::write(&config, sink).unwrap();
    let audit_dir = dir.path().join("audit");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut child = start_binary(
        &[
            "--config",
            config.to_str().unwrap(),
            "--upstream",
            &redis.addr.to_string(),
            "--audit-dir",
            audit_dir.to_str().unwrap(),
        ],
        listen,
    );
    let stdout = read_all_of(&mut child);
    blocking_sets(listen, 50);
    let _ = stop_binary(&mut child, stdout);
    let file = trail_lines(&audit_dir);
    let mut datagram = vec![0u8; 65536];
    for line in &file {
        let len = collector.recv(&mut datagram).expect("a datagram per line");
        let message = std::str::from_utf8(&datagram[..len]).unwrap();
        // local3 = 19: <19*8+severity>1 TIME HOST APP PROCID MSGID - MSG, unframed.
        assert!(message.starts_with("<15"), "{message}");
        assert!(message.ends_with(line.as_str()), "{message} / {line}");
    }
}
