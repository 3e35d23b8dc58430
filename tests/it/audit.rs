//! The audit trail as it lands on disk (schema `redis-audit/2`, docs/audit-schema.md): every
//! command accounted for under concurrency, gapless `seq` with `loss` records for drops, a
//! `tail -F` follower that sees every line exactly once across rotations, no secrets or values
//! in any file, binary and truncated keys, and the chain continued by a restart.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis_audit_proxy::audit::AuditSink;
use serde_json::{json, Value};

use crate::support::client::encode_command;
use crate::support::scratch::{audit_files, file_lines, parse, trail, trail_lines};
use crate::support::{AuditedProxy, RawClient, TestProxy};

const GENESIS: [u8; 32] = [0; 32];

fn lines(dir: &Path) -> Vec<Value> {
    trail(dir)
}

/// Syncs and rereads the files until `done` holds (fails after 5 s).
async fn wait_for(dir: &Path, sink: &AuditSink, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..500 {
        sink.sync();
        let lines = lines(dir);
        if done(&lines) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the audit trail never reached the expected state");
}

/// Waits until the sessions of the clients on these ports have their `session_close` lines.
async fn wait_for_closes(
    dir: &Path,
    sink: &AuditSink,
    ports: impl Iterator<Item = u16>,
) -> Vec<Value> {
    let ports: HashSet<u64> = ports.map(u64::from).collect();
    let closed = |lines: &[Value]| {
        lines
            .iter()
            .filter(|l| l["action"] == "session_close")
            .filter(|l| ports.contains(&l["client"]["port"].as_u64().unwrap()))
            .count()
            == ports.len()
    };
    wait_for(dir, sink, closed).await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn blake3_of(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// The seals, checked independently of the proxy's code: each seal (a `seal` line or a
/// `file_open`) has `prev` = the BLAKE3 of the seal before it (`first` before the first) and
/// `hash` = BLAKE3(that ‖ every line since, with its newline); returns the last seal's hash.
fn assert_chain(lines: &[String], first: [u8; 32]) -> [u8; 32] {
    let (mut head, mut segment, mut count) = (first, Vec::new(), 0u64);
    for (index, line) in lines.iter().enumerate() {
        let value: Value = serde_json::from_str(line).unwrap();
        let seal = value["action"] == "seal" || value["action"] == "file_open";
        if !seal {
            assert!(value.get("chain").is_none(), "only seals carry the chain: {line}");
            segment.extend_from_slice(line.as_bytes());
            segment.push(b'\n');
            count += 1;
            continue;
        }
        let chain = &value["chain"];
        assert_eq!(chain["alg"], "blake3");
        assert_eq!(chain["prev"], hex(&head), "chain broken at line {index}: {line}");
        let mut hasher = blake3::Hasher::new();
        hasher.update(&head);
        hasher.update(&segment);
        assert_eq!(chain["hash"], hex(hasher.finalize().as_bytes()), "seal at line {index}");
        assert_eq!(chain["lines"], count, "seal at line {index}");
        (head, count) = (blake3_of(line.as_bytes()), 0);
        segment.clear();
    }
    head
}

/// `seq` of the lines that have one (all but the writer's own `file_open` lines).
fn seqs(lines: &[Value]) -> Vec<u64> {
    lines.iter().filter_map(|line| line["seq"].as_u64()).collect()
}

fn is_rfc3339_micros_utc(time: &str) -> bool {
    let b = time.as_bytes();
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22, 23, 24, 25];
    b.len() == 27
        && digits.iter().all(|&i| b[i].is_ascii_digit())
        && (b[4], b[7], b[10], b[13], b[16], b[19], b[26])
            == (b'-', b'-', b'T', b':', b':', b'.', b'Z')
}

fn command_name(line: &Value) -> &str {
    line["command"]["name"].as_str().unwrap()
}

fn key_strings(line: &Value) -> Vec<String> {
    line["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key.as_str().expect("a UTF-8 key").to_owned())
        .collect()
}

/// One command a test client sends, with the name and keys its record must carry.
#[derive(Debug, Clone)]
struct Sent {
    args: Vec<Vec<u8>>,
    name: String,
    keys: Vec<String>,
}

fn sent(args: &[&str], keys: &[&str]) -> Sent {
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
async fn pipeline(client: &mut RawClient, batch: &[Sent]) -> Vec<Vec<u8>> {
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

/// What a follower saw.
#[derive(Debug, Default)]
struct Followed {
    lines: Vec<String>,
    /// Times the file it had open was renamed away (and then read to its end).
    renames_seen: usize,
    /// Rotated files it never had open (more than one rotation between two of its looks),
    /// read from the directory instead.
    caught_up: usize,
}

/// Reads what `file` holds past its position; whole lines go to `lines`, the rest stays in
/// `partial`.
fn drain(file: &mut File, partial: &mut Vec<u8>, lines: &mut Vec<String>) {
    let mut chunk = [0u8; 65536];
    loop {
        let n = file.read(&mut chunk).unwrap();
        if n == 0 {
            return;
        }
        partial.extend_from_slice(&chunk[..n]);
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            lines.push(String::from_utf8(line[..end].to_vec()).unwrap());
        }
    }
}

/// Follows `dir/audit.log` as `tail -F` does: reads what is appended; when the path names
/// another file (or none) than the one open, that one was renamed away, so it is read to its
/// end and the path reopened. Like Filebeat or Vector (which also watch the rotated names and
/// know files by inode), it first reads, in name order, any rotated file it has not read yet:
/// with rotations faster than its looks, a follower of the path alone misses whole files.
/// Returns once `stop` is set and the current file is read to its end.
fn follow(dir: &Path, stop: &AtomicBool) -> Followed {
    let path = dir.join("audit.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Followed::default();
    let mut done: HashSet<u64> = HashSet::new();
    let unread = |done: &HashSet<u64>, open: Option<u64>| -> Vec<(PathBuf, u64)> {
        let mut files: Vec<(PathBuf, u64)> = audit_files(dir)
            .into_iter()
            .filter(|file| file != &path)
            .filter_map(|file| {
                let inode = std::fs::metadata(&file).ok()?.ino();
                Some((file, inode))
            })
            .filter(|(_, inode)| !done.contains(inode) && Some(*inode) != open)
            .collect();
        files.sort();
        files
    };
    let mut partial = Vec::new();
    'reopen: loop {
        assert!(std::time::Instant::now() < deadline, "follower stuck");
        for (rotated, inode) in unread(&done, None) {
            let mut file = File::open(&rotated).unwrap();
            drain(&mut file, &mut partial, &mut seen.lines);
            assert!(partial.is_empty(), "{} ends mid-line", rotated.display());
            done.insert(inode);
            seen.caught_up += 1;
        }
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::NotFound => {
                // Between the rename and the new file.
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Err(error) => panic!("{error}"),
        };
        let inode = file.metadata().unwrap().ino();
        if !unread(&done, Some(inode)).is_empty() {
            // Rotated again meanwhile: older files come first.
            continue;
        }
        loop {
            assert!(std::time::Instant::now() < deadline, "follower stuck");
            let stopping = stop.load(Ordering::SeqCst);
            drain(&mut file, &mut partial, &mut seen.lines);
            let renamed = match std::fs::metadata(&path) {
                Ok(metadata) => metadata.ino() != inode,
                Err(error) if error.kind() == ErrorKind::NotFound => true,
                Err(error) => panic!("{error}"),
            };
            if renamed {
                drain(&mut file, &mut partial, &mut seen.lines);
                assert!(partial.is_empty(), "a rotated file ended mid-line");
                done.insert(inode);
                seen.renames_seen += 1;
                continue 'reopen;
            }
            if stopping {
                assert!(partial.is_empty(), "the active file ended mid-line");
                return seen;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tail_follower_sees_every_line_once_across_rotations() {
    let config = "[audit]\nrotate_bytes = 8192\nretain_files = 0\n";
    let AuditedProxy { redis: _redis, dir, proxy, audit: sink } =
        AuditedProxy::start("rotation", config).await;
    let stop = Arc::new(AtomicBool::new(false));
    let follower = {
        let (dir, stop) = (dir.path().to_path_buf(), Arc::clone(&stop));
        std::thread::spawn(move || follow(&dir, &stop))
    };
    let tasks: Vec<_> = (0..2)
        .map(|c| {
            let addr = proxy.addr;
            tokio::spawn(async move {
                let mut client = RawClient::connect(addr).await;
                for chunk in 0..20 {
                    let batch: Vec<Sent> = (0..50)
                        .map(|i| {
                            let key = format!("rot:{c}:{chunk}:{i}");
                            sent(&["SET", &key, "v"], &[&key])
                        })
                        .collect();
                    pipeline(&mut client, &batch).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    sink.sync();
    proxy.shutdown().await;
    stop.store(true, Ordering::SeqCst);
    let followed = follower.join().unwrap();

    let files = audit_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    let mut all = Vec::new();
    let mut previous: Option<String> = None;
    for path in &files {
        let metadata = std::fs::metadata(path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600, "{}", path.display());
        assert!(metadata.len() <= 8192, "{} passed rotate_bytes", path.display());
        let lines = file_lines(path);
        let first: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["action"], "file_open", "{}", path.display());
        assert_eq!(first["file"], "audit.log");
        assert_eq!(first["prev_file"], previous.as_deref().map_or(Value::Null, Value::from));
        assert_eq!(first["recovered_torn_line"], false);
        assert!(first.get("seq").is_none(), "file_open lines have no seq");
        previous = Some(path.file_name().unwrap().to_str().unwrap().to_owned());
        all.extend(lines);
    }
    eprintln!(
        "{} files; the follower saw {} renames and read {} rotated files it never had open",
        files.len(),
        followed.renames_seen,
        followed.caught_up
    );
    assert!(followed.renames_seen >= 1, "the follower saw the active file renamed away");
    assert_eq!(followed.lines.len(), all.len(), "the follower saw every line exactly once");
    assert!(followed.lines == all, "the follower saw the lines in file order");
    assert_chain(&all, GENESIS);
    let values = parse(&all);
    let seq = seqs(&values);
    assert_eq!(seq, (1..=seq.len() as u64).collect::<Vec<_>>());
    assert_eq!(values.iter().filter(|l| l["kind"] == "command").count(), 2000);
    assert_eq!(
        sink.stats().rotations.load(Ordering::Relaxed),
        files.len() as u64 - 1,
        "one rotation per rotated file"
    );
}

/// Sends one command of text arguments and returns its reply.
async fn call(client: &mut RawClient, args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    client.call(&args).await
}

#[tokio::test]
async fn passwords_and_values_never_reach_the_trail() {
    let AuditedProxy { redis: _redis, dir, proxy, audit: sink } =
        AuditedProxy::start("secrets", "").await;
    let secret = "canary-secret-7f3a";
    let value = "canary-value-9b2c";
    let mut client = RawClient::connect(proxy.addr).await;
    let reply = call(&mut client, &["AUTH", secret]).await;
    assert!(reply.starts_with(b"-"), "no password is set: {:?}", String::from_utf8_lossy(&reply));
    assert_eq!(call(&mut client, &["CONFIG", "SET", "requirepass", secret]).await, b"+OK\r\n");
    assert_eq!(call(&mut client, &["AUTH", secret]).await, b"+OK\r\n");
    assert_eq!(call(&mut client, &["CONFIG", "SET", "requirepass", ""]).await, b"+OK\r\n");
    let hello = call(&mut client, &["HELLO", "3", "AUTH", "default", secret]).await;
    assert!(hello.starts_with(b"%"), "{:?}", String::from_utf8_lossy(&hello));
    let migrate = call(
        &mut client,
        &["MIGRATE", "127.0.0.1", "1", "", "0", "100", "AUTH", secret, "KEYS", "k"],
    )
    .await;
    assert_eq!(migrate, b"+NOKEY\r\n");
    assert_eq!(
        call(
            &mut client,
            &["ACL", "SETUSER", "canary-user", "on", &format!(">{secret}"), "+@all", "~*"]
        )
        .await,
        b"+OK\r\n"
    );
    assert_eq!(call(&mut client, &["AUTH", "canary-user", secret]).await, b"+OK\r\n");
    assert_eq!(call(&mut client, &["SET", "k", value]).await, b"+OK\r\n");
    drop(client);

    let lines =
        wait_for(dir.path(), &sink, |lines| lines.iter().any(|l| l["action"] == "session_close"))
            .await;
    proxy.shutdown().await;
    for path in audit_files(dir.path()) {
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(secret), "{} holds the password", path.display());
        assert!(!text.contains(value), "{} holds the value", path.display());
    }
    let names: Vec<(&str, Option<&str>)> = lines
        .iter()
        .filter(|l| l["kind"] == "command")
        .map(|l| (command_name(l), l["command"]["sub"].as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("auth", None),
            ("config", Some("set")),
            ("auth", None),
            ("config", Some("set")),
            ("hello", None),
            ("migrate", None),
            ("acl", Some("setuser")),
            ("auth", None),
            ("set", None),
        ]
    );
    let commands: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "command").collect();
    assert_eq!(commands[0]["result"]["status"], "error");
    assert!(key_strings(commands[5]).contains(&"k".to_owned()), "MIGRATE's KEYS are keys");
    assert_eq!(commands[8]["user"], "canary-user", "the user AUTH switched to");
    assert_eq!(key_strings(commands[8]), ["k"]);
}

/// `2026-11-22T04:40:00.123456Z` back to a time (proleptic Gregorian, H. Hinnant's algorithm).
fn parse_time(time: &str) -> SystemTime {
    assert!(is_rfc3339_micros_utc(time), "{time}");
    let number = |range: std::ops::Range<usize>| time[range].parse::<i64>().unwrap();
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + number(11..13) * 3600 + number(14..16) * 60 + number(17..19);
    UNIX_EPOCH + Duration::from_secs(seconds as u64) + Duration::from_micros(number(20..26) as u64)
}

/// A command's `time` is when its request arrived, not when its reply came.
#[tokio::test]
async fn command_time_is_when_the_request_arrived() {
    let AuditedProxy { redis: _redis, dir, proxy, audit: sink } =
        AuditedProxy::start("time", "").await;
    let mut client = RawClient::connect(proxy.addr).await;
    let sent_at = SystemTime::now();
    assert_eq!(call(&mut client, &["BLPOP", "nothing", "0.3"]).await, b"*-1\r\n");
    let replied_at = SystemTime::now();
    sink.sync();
    let lines = lines(dir.path());
    let blpop = lines.iter().find(|l| l["kind"] == "command").unwrap();
    assert_eq!(command_name(blpop), "blpop");
    assert_eq!(blpop["result"]["status"], "ok");
    let time = parse_time(blpop["time"].as_str().unwrap());
    let slack = Duration::from_millis(100);
    assert!(time + Duration::from_millis(1) >= sent_at, "{time:?} before {sent_at:?}");
    assert!(time <= sent_at + slack, "the time of the request, not of the reply");
    let duration = Duration::from_micros(blpop["duration_us"].as_u64().unwrap());
    assert!(duration >= Duration::from_millis(290), "{duration:?}");
    assert!(time + duration <= replied_at + Duration::from_millis(1));
    proxy.shutdown().await;
}

/// An error reply's text is the script's (or a module's) to choose: its first word is not
/// always an error code, and must not carry a value into the trail, whatever its shape (an
/// upper-case token such as an AWS access key id looks like a code).
#[tokio::test]
async fn script_error_text_never_reaches_the_trail() {
    let AuditedProxy { redis: _redis, dir, proxy, audit: sink } =
        AuditedProxy::start("script-error", "").await;
    let values = ["canary-value-5e1d", "AKIACANARY5E1D7F3A"];
    let mut client = RawClient::connect(proxy.addr).await;
    for value in values {
        let reply = call(&mut client, &["EVAL", "return {err=ARGV[1]}", "0", value]).await;
        assert_eq!(reply, format!("-{value}\r\n").into_bytes(), "Redis sends the text as is");
    }
    sink.sync();
    let lines = lines(dir.path());
    let evals: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "command").collect();
    assert_eq!(evals.len(), values.len());
    for eval in &evals {
        assert_eq!(command_name(eval), "eval");
        assert_eq!(eval["result"]["status"], "error");
    }
    for path in audit_files(dir.path()) {
        let text = std::fs::read_to_string(&path).unwrap();
        for (value, eval) in values.iter().zip(&evals) {
            assert!(
                !text.contains(value),
                "the script's argument {value} reached {} as result.error_code: {}",
                path.display(),
                eval["result"]
            );
        }
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn binary_keys_are_base64_and_long_key_lists_are_truncated() {
    let AuditedProxy { redis: _redis, dir, proxy, audit: sink } =
        AuditedProxy::start("keys", "").await;
    let mut client = RawClient::connect(proxy.addr).await;
    assert_eq!(client.call(&[b"SET", b"\xff\x00", b"v"]).await, b"+OK\r\n");
    let long: Vec<Vec<u8>> =
        (0..20).map(|i| format!("{i:02}{}", "k".repeat(1022)).into_bytes()).collect();
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(long.iter().map(Vec::as_slice));
    client.call(&mget).await;
    // Exactly the cap (16 keys of 1 KiB) is not truncated.
    client.call(&mget[..17]).await;
    sink.sync();
    let raw = trail_lines(dir.path());
    let lines = parse(&raw);
    let commands: Vec<(&Value, &String)> =
        lines.iter().zip(&raw).filter(|(l, _)| l["kind"] == "command").collect();
    assert_eq!(commands.len(), 3);

    let (binary, _) = commands[0];
    assert_eq!(binary["keys"], serde_json::json!([{"b64": "/wA="}]));
    // Keys listed whole and in clear: the counts would restate them, and are left out.
    for restated in ["key_count", "key_bytes", "keys_truncated"] {
        assert!(binary.get(restated).is_none(), "{restated}: {binary}");
    }

    let (truncated, line) = commands[1];
    assert_eq!(truncated["key_count"], 20);
    assert_eq!(truncated["key_bytes"], 20 * 1024);
    assert_eq!(truncated["keys_truncated"], true);
    let shown = key_strings(truncated);
    assert_eq!(shown.len(), 16, "16 KiB of key names are written");
    assert!(shown.iter().zip(&long).all(|(s, l)| s.as_bytes() == l.as_slice()), "the first ones");
    assert!(line.len() < 16 * 1024 + 2048, "the line stays bounded: {}", line.len());

    let (at_cap, _) = commands[2];
    assert!(at_cap.get("key_count").is_none() && at_cap.get("keys_truncated").is_none());
    assert_eq!(key_strings(at_cap).len(), 16);
    // A reader of the query API gets them back.
    let records = trail(dir.path());
    let records: Vec<&Value> = records.iter().filter(|l| l["kind"] == "command").collect();
    assert_eq!((&records[0]["key_count"], &records[0]["key_bytes"]), (&json!(1), &json!(2)));
    assert_eq!(
        (&records[2]["key_count"], &records[2]["keys_truncated"]),
        (&json!(16), &json!(false))
    );
    assert_eq!(records[1]["key_count"], 20);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_restart_continues_the_chain_with_a_new_instance() {
    let AuditedProxy { redis, dir, proxy: first, audit: sink } =
        AuditedProxy::start("restart", "").await;
    RawClient::connect(first.addr).await.call(&[b"PING"]).await;
    first.shutdown().await;
    drop(sink);
    let before = file_lines(dir.path().join("audit.log"));
    let old: Value = serde_json::from_str(&before[before.len() - 2]).unwrap();
    assert_eq!(old["action"], "stop");
    let last: Value = serde_json::from_str(before.last().unwrap()).unwrap();
    assert_eq!(last["action"], "seal", "the last line of a run is a seal over all before it");

    let (second, sink) = TestProxy::start_audited(redis.addr, dir.path(), "").await;
    RawClient::connect(second.addr).await.call(&[b"PING"]).await;
    sink.sync();
    let files = audit_files(dir.path());
    assert_eq!(files.len(), 2, "the old audit.log was rotated away: {files:?}");
    assert_eq!(file_lines(&files[0]), before, "and kept as it was");
    let after = file_lines(dir.path().join("audit.log"));
    let open: Value = serde_json::from_str(&after[0]).unwrap();
    assert_eq!(open["action"], "file_open");
    assert_eq!(open["prev_file"], files[0].file_name().unwrap().to_str().unwrap());
    assert_eq!(open["recovered_torn_line"], false);
    assert_eq!(open["chain"]["prev"], hex(&blake3_of(before.last().unwrap().as_bytes())));
    assert_eq!(open["chain"]["lines"], 0, "the old run sealed everything");
    let old_open: Value = serde_json::from_str(&before[0]).unwrap();
    assert_ne!(open["instance_id"], old_open["instance_id"], "a new instance");
    assert_chain(&trail_lines(dir.path()), GENESIS);
    let values = trail(dir.path());
    let values =
        &values[values.iter().position(|v| v["instance_id"] == open["instance_id"]).unwrap()..];
    assert_eq!(values[1]["action"], "start");
    let seq = seqs(values);
    assert_eq!(seq, (1..=seq.len() as u64).collect::<Vec<_>>(), "seq restarts at 1");
    assert!(values.iter().all(|v| v["instance_id"] == open["instance_id"]));
    second.shutdown().await;
}

#[tokio::test]
async fn a_restart_after_a_torn_line_links_to_the_last_whole_line() {
    let AuditedProxy { redis, dir, proxy: first, audit: _sink } =
        AuditedProxy::start("torn", "").await;
    first.shutdown().await;
    let before = file_lines(dir.path().join("audit.log"));
    // A crash in the middle of a write leaves an unterminated line.
    let mut file =
        std::fs::OpenOptions::new().append(true).open(dir.path().join("audit.log")).unwrap();
    std::io::Write::write_all(&mut file, b"{\"time\":\"20").unwrap();
    drop(file);

    let (second, sink) = TestProxy::start_audited(redis.addr, dir.path(), "").await;
    sink.sync();
    let open: Value = serde_json::from_str(&file_lines(dir.path().join("audit.log"))[0]).unwrap();
    assert_eq!(open["action"], "file_open");
    assert_eq!(open["recovered_torn_line"], true);
    // It seals what followed the last whole seal (nothing: the run stopped cleanly), skipping
    // the torn line.
    assert_eq!(open["chain"]["prev"], hex(&blake3_of(before.last().unwrap().as_bytes())));
    assert_eq!(open["chain"]["lines"], 0);
    second.shutdown().await;
}
