//! Micro-benchmark of the per-command hot path: decoding a request and framing its reply.
//! Run with `cargo bench --bench hot_path`; prints nanoseconds per command.
#![allow(clippy::disallowed_types, clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use redis_audit_proxy::audit::chain::{ChainAlg, Segment};
use redis_audit_proxy::audit::line;
use redis_audit_proxy::audit::schema::{push_head, Envelope};
use redis_audit_proxy::audit::time::rfc3339_micros_bytes;
use redis_audit_proxy::command::{extract_keys, Class, CommandTable, Keys};
use redis_audit_proxy::resp::reply::ReplyScanner;
use redis_audit_proxy::resp::request::{RequestDecoder, RequestLimits};

fn main() {
    const COMMANDS: usize = 1_000_000;
    let request = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000001\r\n$3\r\nxyz\r\n";
    let mut pipeline = Vec::with_capacity(request.len() * 1000);
    for _ in 0..1000 {
        pipeline.extend_from_slice(request);
    }
    let mut decoder = RequestDecoder::new(RequestLimits::default());
    let started = Instant::now();
    let mut decoded = 0;
    while decoded < COMMANDS {
        let mut buf = BytesMut::from(&pipeline[..]);
        while let Some(request) = decoder.decode(&mut buf, true).expect("valid") {
            black_box(&request);
            decoded += 1;
        }
    }
    let decode_ns = started.elapsed().as_nanos() as f64 / decoded as f64;

    let replies = b"+OK\r\n$16\r\nvalue:0000000001\r\n".repeat(500);
    let mut scanner = ReplyScanner::new(512);
    let started = Instant::now();
    let mut framed = 0;
    while framed < COMMANDS {
        let mut at = 0;
        while at < replies.len() {
            let (used, done) = scanner.scan(&replies[at..]).expect("valid");
            at += used;
            framed += usize::from(done);
        }
    }
    let frame_ns = started.elapsed().as_nanos() as f64 / framed as f64;

    // Classifying: resolve the command, extract its keys, take its class.
    let table = CommandTable::embedded();
    let lines: Vec<Vec<Bytes>> = [
        "SET key:000000000001 xyz",
        "GET key:000000000001",
        "HSET h f v",
        "MGET a b c",
        "CONFIG GET maxmemory",
        "EVAL return 2 a b",
        "XREAD COUNT 1 STREAMS s1 s2 0 0",
        "SET k v EX 10 GET",
    ]
    .iter()
    .map(|line| line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect())
    .collect();
    let started = Instant::now();
    let mut classified = 0;
    while classified < COMMANDS {
        for args in &lines {
            // A fresh key list per command, as the proxy makes one per request.
            let mut keys = Keys::new();
            let command = table.resolve(args).expect("known");
            extract_keys(command, args, &mut keys);
            black_box((Class::of(command), &keys));
            classified += 1;
        }
    }
    let classify_ns = started.elapsed().as_nanos() as f64 / classified as f64;

    // Policy evaluation for a 20-rule user (selectors, key and channel patterns, first-args),
    // on the same mixed commands, keys already extracted as the proxy has them.
    let users = b"user app on >pw ~key:* %R~cache:* %W~out:* ~h ~a ~b ~c &chan:* -@all \
        +@read +@string +@hash -getdel +select|0 +config|get -flushall +eval +xread \
        (~s? +@stream) (~other:* +mget)\n";
    let policy = redis_audit_proxy::acl::Policy::compile(
        users,
        &table,
        redis_audit_proxy::config::AclMode::Enforce,
        &[],
    )
    .expect("valid users");
    let prepared: Vec<(Vec<Bytes>, Keys)> = lines
        .iter()
        .map(|args| {
            let mut keys = Keys::new();
            extract_keys(table.resolve(args).expect("known"), args, &mut keys);
            (args.clone(), keys)
        })
        .collect();
    let started = Instant::now();
    let mut decided = 0;
    while decided < COMMANDS {
        for (args, keys) in &prepared {
            let command = table.resolve(args).expect("known");
            black_box(policy.decide(b"app", command, args, keys));
            decided += 1;
        }
    }
    let policy_ns = started.elapsed().as_nanos() as f64 / decided as f64;
    // The audit writer's per-record work: render the JSON line and hash it for the chain.
    let args: Vec<Bytes> = "SET key:000000000001 xyz"
        .split(' ')
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect();
    let command = table.resolve(&args).cloned();
    let mut keys = Keys::new();
    extract_keys(command.as_deref().expect("known"), &args, &mut keys);
    let record = redis_audit_proxy::event::CommandRecord {
        upstream_conn: None,
        slot: None,
        conn_id: 42,
        client_addr: "127.0.0.1:50000".parse().expect("address"),
        user: Bytes::from_static(b"default"),
        db: 0,
        args,
        command,
        class: Some(Class::Write),
        keys,
        status: redis_audit_proxy::event::ReplyStatus::Ok,
        error_code: None,
        source: redis_audit_proxy::event::ReplySource::Upstream,
        request_bytes: 45,
        reply_bytes: 5,
        latency: std::time::Duration::from_micros(180),
        time: std::time::SystemTime::now(),
        client_name: None,
        client_lib: None,
        client_lib_ver: None,
        resp: 2,
        count: 1,
    };
    let envelope = Envelope::new(
        redis_audit_proxy::config::KeyNames::Clear,
        "406b1755-e9d8-4622-8038-cfaa54796898".into(),
        "bench".into(),
        "127.0.0.1:6379".into(),
    );
    const RECORDS: u64 = 300_000;
    // What the connection's thread does: the line's body, then its head (time, seq).
    let mut body = Vec::with_capacity(1024);
    let mut line = Vec::with_capacity(1024);
    let started = Instant::now();
    for seq in 0..RECORDS {
        body.clear();
        line::push_command_body(&mut body, &record, None, &envelope);
        line.clear();
        push_head(&mut line, &rfc3339_micros_bytes(line::command_time(&record)), Some(seq));
        line.extend_from_slice(&body);
        black_box(&line);
    }
    let render_ns = started.elapsed().as_nanos() as f64 / RECORDS as f64;
    // What the writer does: hash what it writes into the open segment, in batches as it
    // writes them (here 1,000 lines at a time), with each of the two algorithms.
    let mut batch = Vec::with_capacity(1000 * (line.len() + 1));
    for _ in 0..1000 {
        batch.extend_from_slice(&line);
        batch.push(b'\n');
    }
    let mut chain_ns = [0.0; 2];
    for (slot, alg) in chain_ns.iter_mut().zip([ChainAlg::Blake3, ChainAlg::Sha256]) {
        let mut segment = Segment::new(alg, [0; 32]);
        let started = Instant::now();
        for _ in 0..RECORDS / 1000 {
            segment.update(&batch, 1000);
        }
        black_box(segment.finish());
        *slot = started.elapsed().as_nanos() as f64 / RECORDS as f64;
    }
    let [blake3_ns, sha256_ns] = chain_ns;
    println!("decode request: {decode_ns:.1} ns/command");
    println!("frame reply:    {frame_ns:.1} ns/reply");
    println!("classify:       {classify_ns:.1} ns/command (resolve, keys, class; mixed commands)");
    println!(
        "acl policy:     {policy_ns:.1} ns/command (20-rule user with selectors; mixed commands)"
    );
    println!(
        "audit line:     {render_ns:.1} ns to render, {blake3_ns:.1} ns to seal (BLAKE3; SHA-256 \
         {sha256_ns:.1} ns), {} bytes",
        line.len() + 1
    );
    println!(
        "audit record:   {:.0} records/s on one core (render + seal hash)",
        1e9 / (render_ns + blake3_ns)
    );

    // A syslog sink's own work per record, on its thread: the RFC 5424 message around the
    // line and its octet-counting frame (TLS and the socket's write come on top of it).
    let header = redis_audit_proxy::audit::sinks::syslog::Header {
        facility: 16,
        hostname: "node-1".into(),
        app_name: "redis-audit-proxy".into(),
        procid: 4242,
        max_message_bytes: 8192,
    };
    let (mut message, mut framed) = (Vec::with_capacity(1024), Vec::with_capacity(1 << 20));
    let started = Instant::now();
    for _ in 0..RECORDS {
        message.clear();
        header.push_message(&line, &mut message);
        if framed.len() > 1 << 19 {
            framed.clear();
        }
        redis_audit_proxy::audit::sinks::syslog::push_octet_counted(&message, &mut framed);
    }
    black_box(&framed);
    let syslog_ns = started.elapsed().as_nanos() as f64 / RECORDS as f64;
    println!("syslog message: {syslog_ns:.1} ns/record (RFC 5424 header + octet counting)");
}
