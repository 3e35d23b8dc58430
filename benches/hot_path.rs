//! Micro-benchmark of the per-command hot path: decoding a request and framing its reply.
//! Run with `cargo bench --bench hot_path`; prints nanoseconds per command.
#![allow(clippy::disallowed_types, clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
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
    println!("decode request: {decode_ns:.1} ns/command");
    println!("frame reply:    {frame_ns:.1} ns/reply");
    println!("classify:       {classify_ns:.1} ns/command (resolve, keys, class; mixed commands)");
}
