//! Accounting: every command of concurrent clients recorded once, in session order, and records
//! a full queue drops declared by loss records.

use super::*;

/// One command a test client sends, with the name and keys its record must carry.
#[derive(Debug, Clone)]
pub(super) struct Sent {
    pub(super) args: Vec<Vec<u8>>,
    pub(super) name: String,
    pub(super) keys: Vec<String>,
}

pub(super) fn sent(args: &[&str], keys: &[&str]) -> Sent {
    Sent {
        args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        // An unknown command's name is not written (it could be a password typed alone).
        name: if args[0] == "NOSUCHCMD" { "(unknown)".to_owned() } else { args[0].to_lowercase() },
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
    }
}

/// One cycle of 12 commands of client `c`: two errors (WRONGTYPE, unknown command), a MULTI/EXEC
/// block with two queued commands, multi-key commands.
fn cycle(c: usize, j: usize) -> Vec<Sent> {
    let s = format!("s:{c}:{j}");
    let (n, l, h, a, b) =
        (format!("n:{c}"), format!("l:{c}"), format!("h:{c}"), format!("a:{c}"), format!("b:{c}"));
    let field = format!("f{j}");
    vec![
        sent(&["SET", &s, "v"], &[&s]),
        sent(&["GET", &s], &[&s]),
        sent(&["LPUSH", &s, "x"], &[&s]), // WRONGTYPE
        sent(&["NOSUCHCMD", &s], &[]),    // unknown command
        sent(&["MULTI"], &[]),
        sent(&["INCR", &n], &[&n]),
        sent(&["LPUSH", &l, "a"], &[&l]),
        sent(&["EXEC"], &[]),
        sent(&["HSET", &h, &field, "v"], &[&h]),
        sent(&["DEL", &a, &b], &[&a, &b]),
        sent(&["PING"], &[]),
        sent(&["MGET", &s, &n], &[&s, &n]),
    ]
}

const CYCLES: usize = 41;
const PER_CLIENT: usize = CYCLES * 12 + 2 + 6;
const ERRORS_PER_CLIENT: u64 = CYCLES as u64 * 2;

/// Sends `batch` as one write and reads one reply per command.
pub(super) async fn pipeline(client: &mut RawClient, batch: &[Sent]) -> Vec<Vec<u8>> {
    let mut bytes = Vec::new();
    for command in batch {
        let args: Vec<&[u8]> = command.args.iter().map(Vec::as_slice).collect();
        bytes.extend_from_slice(&encode_command(&args));
    }
    client.send(&bytes).await;
    let mut replies = Vec::with_capacity(batch.len());
    for _ in batch {
        replies.push(client.read_reply().await);
    }
    replies
}

/// Client `c` sends its 500 commands; returns its local port and what it sent, in order.
async fn accounting_client(
    proxy: std::net::SocketAddr,
    redis: std::net::SocketAddr,
    c: usize,
) -> (u16, Vec<Sent>) {
    let mut client = RawClient::connect(proxy).await;
    let port = client.stream.local_addr().unwrap().port();
    let mut all = Vec::with_capacity(PER_CLIENT);
    for j in 0..CYCLES {
        let batch = cycle(c, j);
        let replies = pipeline(&mut client, &batch).await;
        assert!(
            replies[2].starts_with(b"-WRONGTYPE"),
            "{:?}",
            String::from_utf8_lossy(&replies[2])
        );
        assert!(replies[3].starts_with(b"-ERR unknown command"));
        assert!(replies[7].starts_with(b"*2\r\n"), "EXEC ran both");
        all.extend(batch);
        if j == CYCLES / 2 {
            // A subscription with one message in the middle: the message is not a command.
            let channel = format!("ch:{c}");
            let subscribe = sent(&["SUBSCRIBE", &channel], &[]);
            let confirmation = pipeline(&mut client, std::slice::from_ref(&subscribe)).await;
            assert!(confirmation[0].starts_with(b"*3\r\n$9\r\nsubscribe"));
            let mut publisher = RawClient::connect(redis).await;
            assert_eq!(
                publisher.call(&[b"PUBLISH", channel.as_bytes(), b"hello"]).await,
                b":1\r\n"
            );
            let message = client.read_reply().await;
            assert!(message.starts_with(b"*3\r\n$7\r\nmessage\r\n"), "{message:?}");
            let unsubscribe = sent(&["UNSUBSCRIBE", &channel], &[]);
            pipeline(&mut client, std::slice::from_ref(&unsubscribe)).await;
            all.push(subscribe);
            all.push(unsubscribe);
        }
    }
    let pings: Vec<Sent> = (0..6).map(|_| sent(&["PING"], &[])).collect();
    pipeline(&mut client, &pings).await;
    all.extend(pings);
    assert_eq!(all.len(), PER_CLIENT);
    (port, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_command_of_concurrent_clients_is_recorded_once_in_session_order() {
    crate::require_redis!();
    let AuditedProxy { redis, dir, proxy, audit: sink } =
        AuditedProxy::start("accounting", "").await;
    let tasks: Vec<_> =
        (0..4).map(|c| tokio::spawn(accounting_client(proxy.addr, redis.addr, c))).collect();
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    // The clients are gone: wait for their four session_close lines.
    let lines = wait_for_closes(dir.path(), &sink, clients.iter().map(|(port, _)| *port)).await;
    proxy.shutdown().await;
    let lines_after = lines_with_stop(dir.path(), &lines);

    // seq: gapless from 1 over every line, file order = seq order; nothing lost.
    let seq = seqs(&lines_after);
    assert_eq!(seq, (1..=seq.len() as u64).collect::<Vec<_>>());
    assert!(lines_after.iter().all(|l| l["action"] != "loss"));
    assert_eq!(sink.stats().dropped_queue_full.load(Ordering::Relaxed), 0);
    assert_eq!(lines_after.first().unwrap()["action"], "file_open");
    assert_eq!(lines_after[1]["action"], "start");
    assert_eq!(lines_after.last().unwrap()["action"], "stop");
    let instance = lines_after[0]["instance_id"].as_str().unwrap();
    for line in &lines_after {
        assert_eq!(line["schema"], "redis-audit/2");
        assert_eq!(line["instance_id"], instance);
        assert!(is_rfc3339_micros_utc(line["time"].as_str().unwrap()), "{line}");
    }
    assert_chain(&trail_lines(dir.path()), GENESIS);

    let commands: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "command").collect();
    assert_eq!(commands.len(), 4 * PER_CLIENT, "one record per command sent");
    for (port, sent) in &clients {
        let port = u64::from(*port);
        let open: Vec<&Value> = lines
            .iter()
            .filter(|l| l["action"] == "session_open" && l["client"]["port"] == port)
            .collect();
        assert_eq!(open.len(), 1);
        let session = open[0]["session_id"].as_str().unwrap();
        let of_session: Vec<&Value> = lines.iter().filter(|l| l["session_id"] == session).collect();
        assert_eq!(of_session.first().unwrap()["action"], "session_open");
        assert_eq!(of_session.last().unwrap()["action"], "session_close");
        let records = &of_session[1..of_session.len() - 1];
        assert_eq!(records.len(), sent.len(), "session {session}");
        for (index, (record, sent)) in records.iter().zip(sent).enumerate() {
            assert_eq!(record["kind"], "command");
            assert_eq!(record["client"]["port"], port);
            assert_eq!(
                (command_name(record), key_strings(record)),
                (sent.name.as_str(), sent.keys.clone()),
                "session {session}, command {index}"
            );
            assert_eq!(record["key_count"], sent.keys.len());
        }
        // What each kind of command looks like, from the first cycle.
        let (wrongtype, unknown, incr, exec) = (records[2], records[3], records[5], records[7]);
        assert_eq!(wrongtype["outcome"], "failure");
        assert_eq!(wrongtype["result"]["status"], "error");
        assert_eq!(wrongtype["result"]["error_code"], "WRONGTYPE");
        assert_eq!(wrongtype["result"]["source"], "upstream");
        assert_eq!(unknown["command"]["known"], false);
        assert_eq!(unknown["command"]["class"], Value::Null);
        assert_eq!(unknown["result"]["error_code"], "ERR");
        assert_eq!(incr["result"]["status"], "queued");
        assert_eq!(incr["outcome"], "success");
        assert_eq!(exec["result"]["status"], "ok");
        assert_eq!(exec["command"]["class"], "write", "EXEC is what it ran");
        assert_eq!(records[0]["command"]["class"], "write");
        assert_eq!(records[1]["command"]["class"], "read");
        let errors = records.iter().filter(|r| r["result"]["status"] == "error").count();
        assert_eq!(errors as u64, ERRORS_PER_CLIENT);
        let close = &of_session.last().unwrap()["close"];
        assert_eq!(close["reason"], "client_closed");
        assert_eq!(close["commands"], sent.len());
        assert_eq!(close["errors"], ERRORS_PER_CLIENT);
        let bytes_in: u64 = records.iter().map(|r| r["request_bytes"].as_u64().unwrap()).sum();
        let bytes_out: u64 = records.iter().map(|r| r["response_bytes"].as_u64().unwrap()).sum();
        assert_eq!(close["bytes_in"], bytes_in);
        assert_eq!(close["bytes_out"], bytes_out);
    }
}

/// The lines after shutdown: those seen before, then at most the `stop` line.
fn lines_with_stop(dir: &Path, before: &[Value]) -> Vec<Value> {
    let after = lines(dir);
    assert_eq!(&after[..before.len()], before, "lines written before stay as they were");
    assert_eq!(after.len(), before.len() + 1, "only the stop line was added");
    after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_dropped_by_a_full_queue_are_declared_by_loss_records() {
    crate::require_redis!();
    let AuditedProxy { redis: _redis, dir, proxy, audit: sink } =
        AuditedProxy::start("loss", "[audit]\nqueue_max_bytes = 2048\n").await;
    const CLIENTS: usize = 4;
    const COMMANDS: usize = 300;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let addr = proxy.addr;
            tokio::spawn(async move {
                let mut client = RawClient::connect(addr).await;
                let port = client.stream.local_addr().unwrap().port();
                // Every third key is long enough that its record never fits the queue.
                let keys: Vec<String> = (0..COMMANDS)
                    .map(|i| {
                        let pad = if i % 3 == 0 { 1600 } else { 0 };
                        format!("loss:{c}:{i:04}:{}", "p".repeat(pad))
                    })
                    .collect();
                for chunk in keys.chunks(100) {
                    let batch: Vec<Sent> =
                        chunk.iter().map(|key| sent(&["SET", key, "v"], &[key])).collect();
                    for reply in pipeline(&mut client, &batch).await {
                        assert_eq!(reply, b"+OK\r\n");
                    }
                }
                (port, keys)
            })
        })
        .collect();
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    wait_for_closes(dir.path(), &sink, clients.iter().map(|(port, _)| *port)).await;
    // The last range is declared by the next event that gets in: the stop line at the latest.
    proxy.shutdown().await;
    let lines = lines(dir.path());
    assert_eq!(lines.last().unwrap()["action"], "stop");

    let commands: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "command").collect();
    let losses: Vec<&Value> = lines.iter().filter(|l| l["action"] == "loss").collect();
    let lost: u64 = losses.iter().map(|l| l["lost"]["count"].as_u64().unwrap()).sum();
    assert!(lost >= (CLIENTS * COMMANDS / 3) as u64, "the long-key records never fit: {lost}");
    assert_eq!(commands.len() as u64 + lost, (CLIENTS * COMMANDS) as u64);
    assert_eq!(sink.stats().dropped_queue_full.load(Ordering::Relaxed), lost);

    // Every number from 1 to the last is either a line or inside exactly one loss range, and
    // each loss line comes right after the range it declares.
    let present: Vec<u64> = seqs(&lines);
    let mut owner: BTreeMap<u64, &str> = BTreeMap::new();
    for seq in &present {
        assert!(owner.insert(*seq, "line").is_none(), "seq {seq} twice");
    }
    for loss in &losses {
        let lost = &loss["lost"];
        assert_eq!(loss["kind"], "system");
        assert_eq!(lost["reason"], "queue_full");
        let (first, last) =
            (lost["first_seq"].as_u64().unwrap(), lost["last_seq"].as_u64().unwrap());
        assert!(first <= last);
        assert_eq!(lost["count"], last - first + 1);
        assert_eq!(loss["seq"], last + 1, "a loss line follows its range");
        for seq in first..=last {
            assert!(owner.insert(seq, "lost").is_none(), "seq {seq} both written and lost");
        }
    }
    let max = *present.iter().max().unwrap();
    assert_eq!(owner.keys().copied().collect::<Vec<_>>(), (1..=max).collect::<Vec<_>>());
    assert!(present.windows(2).all(|w| w[0] < w[1]), "file order is seq order");

    // Session events are never dropped; what got through keeps each session's order; the
    // close counts include the dropped records.
    for (port, keys) in &clients {
        let port = u64::from(*port);
        let of_client: Vec<&Value> = lines.iter().filter(|l| l["client"]["port"] == port).collect();
        assert_eq!(of_client.first().unwrap()["action"], "session_open");
        assert_eq!(of_client.last().unwrap()["action"], "session_close");
        assert_eq!(of_client.last().unwrap()["close"]["commands"], COMMANDS);
        let recorded: Vec<String> =
            of_client[1..of_client.len() - 1].iter().flat_map(|r| key_strings(r)).collect();
        let mut sent = keys.iter();
        for key in &recorded {
            assert!(sent.any(|k| k == key), "{key} out of order or never sent");
        }
    }
}
