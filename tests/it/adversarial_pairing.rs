//! Adversarial clients against the findings of the December 2026 security review
//! (`security-2026-12.md`) about reply pairing, session state and bounds: H2, H3, H4, M4.
//! Each test plays a finding's trigger against a real Redis and checks what the client is
//! answered, what the proxy recorded, and what ran on the upstream.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_audit_proxy::command::Class;
use redis_audit_proxy::event::ReplyStatus;

use crate::support::adversary::*;
use crate::support::client::show;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_reply_skip_does_not_shift_replies_onto_a_failed_auth() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-h2");
    let users = scratch.users_file("user default on >pw -@all +ping\nuser admin on >x +@all ~*\n");
    // Redis itself only has requirepass: looser than the users file.
    let behind = RedisServer::start(&["--requirepass", "pw"]);
    let mut upstream = admin(behind.addr, &[b"pw"]).await;
    assert_eq!(upstream.call(&[b"SET", b"keep", b"1"]).await, b"+OK\r\n");
    let (reference, _root) =
        reference(&[("default", "reset on >pw -@all +ping"), ("admin", "on >x +@all ~*")], &[])
            .await;
    let toml = format!("[auth]\nusers_file = \"{}\"\n", users.display());
    let proxy = TestProxy::start_with(behind.addr, &toml).await;

    let script: [&[&[u8]]; 4] =
        [&[b"CLIENT", b"REPLY", b"SKIP"], &[b"PING"], &[b"AUTH", b"admin", b"bad"], &[b"FLUSHALL"]];
    let mut direct = admin(reference.addr, &[b"pw"]).await;
    let want = pipeline(&mut direct, &script, 4).await;
    let mut client = admin(proxy.addr, &[b"pw"]).await;
    let got = pipeline(&mut client, &script, 4).await;
    assert_eq!(
        want,
        [
            show(b"-NOPERM this user has no permissions to run the 'client|reply' command\r\n"),
            show(b"+PONG\r\n"),
            show(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"),
            show(b"-NOPERM this user has no permissions to run the 'flushall' command\r\n"),
        ],
        "what Redis answers"
    );
    assert_eq!(got, want, "the proxy answers as Redis does");

    assert_eq!(upstream.call(&[b"EXISTS", b"keep"]).await, b":1\r\n", "FLUSHALL ran");
    let stats = commandstats(&mut upstream).await;
    assert_eq!(calls(&stats, "flushall"), 0, "{stats}");
    let records = records_after(&proxy, 5).await;
    let flushall = records.iter().find(|r| is_command(r, b"FLUSHALL")).expect("a FLUSHALL record");
    assert_eq!(flushall.user, "default", "the failed AUTH did not change the user");
    assert_eq!(flushall.status, ReplyStatus::Error);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_lookalike_replies_after_unsubscribing_are_paired_and_recorded_in_order() {
    crate::require_redis!();
    let reference = RedisServer::start(&[]);
    let behind = RedisServer::start(&[]);
    let proxy = TestProxy::start(behind.addr).await;
    let script: [&[&[u8]]; 5] = [
        &[b"SUBSCRIBE", b"c"],
        &[b"UNSUBSCRIBE", b"c"],
        &[b"SET", b"k", b"message"],
        &[b"MGET", b"k"],
        &[b"EVAL", b"return {'subscribe','x',1}", b"0"],
    ];
    let want = one_by_one(&mut RawClient::connect(reference.addr).await, &script).await;
    let got = one_by_one(&mut RawClient::connect(proxy.addr).await, &script).await;
    assert_eq!(got, want, "replies as a direct connection gets them");

    let records = records_settled(&proxy, 5).await;
    assert_eq!(
        summary(&records),
        [
            ("subscribe".to_owned(), "ok"),
            ("unsubscribe".to_owned(), "ok"),
            ("set".to_owned(), "ok"),
            ("mget".to_owned(), "ok"),
            ("eval".to_owned(), "ok"),
        ],
        "one record per command, in order, with its reply's status"
    );
    assert!(records.iter().all(|r| r.status == ReplyStatus::Ok));
    let mut upstream = admin(behind.addr, &[]).await;
    assert_eq!(upstream.call(&[b"GET", b"k"]).await, b"$7\r\nmessage\r\n");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reply_skip_then_hello_3_in_proxy_mode_is_paired_as_redis_does() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-h2-hello");
    let users = scratch.users_file("user default on nopass ~* &* +@all\n");
    let reference = RedisServer::start(&[]);
    let behind = RedisServer::start(&[]);
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, "")).await;
    let script: [&[&[u8]]; 4] = [
        &[b"CLIENT", b"REPLY", b"SKIP"],
        &[b"HELLO", b"3"],
        &[b"SET", b"k", b"v"],
        &[b"GET", b"k"],
    ];
    let want = pipeline(&mut RawClient::connect(reference.addr).await, &script, 2).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let got = pipeline(&mut client, &script, 2).await;
    assert_eq!(want, [show(b"+OK\r\n"), show(b"$1\r\nv\r\n")], "what Redis answers");
    assert_eq!(got, want, "the proxy answers as Redis does");
    assert_eq!(
        next_reply(&mut client, Duration::from_millis(300)).await,
        "<no reply>",
        "nothing more"
    );

    let records = records_settled(&proxy, 4).await;
    assert_eq!(
        summary(&records),
        [
            ("client".to_owned(), "skipped"),
            ("hello".to_owned(), "skipped"),
            ("set".to_owned(), "ok"),
            ("get".to_owned(), "ok"),
        ]
    );
    let mut upstream = admin(behind.addr, &[]).await;
    assert_eq!(upstream.call(&[b"GET", b"k"]).await, b"$1\r\nv\r\n");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_refusals_makes_the_proxy_stop_reading_it() {
    crate::require_redis!();
    const TOTAL: u64 = 50_000_000;
    // What a proxy that stops reading may still have answered: output_buffer_bytes (1 MiB)
    // plus the loopback socket buffers (about 4.3 MB measured with a peer that never reads),
    // one request read's worth more, at 34 bytes a -NOAUTH: about 170,000.
    const BOUND: usize = 250_000;
    let scratch = Scratch::new("adv-h3");
    let users = scratch.users_file("user default off\n");
    let behind = RedisServer::start(&[]);
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, "")).await;
    let mut upstream = admin(behind.addr, &[]).await;
    let pings_before = calls(&commandstats(&mut upstream).await, "ping");

    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, stop, addr) = (Arc::clone(&written), Arc::clone(&stop), proxy.addr);
        std::thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
            let chunk = b"PING\n".repeat(13_107);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                let left = TOTAL - written.load(Ordering::Relaxed);
                if left == 0 {
                    break;
                }
                match stream.write(&chunk[..chunk.len().min(left as usize)]) {
                    Ok(n) => {
                        written.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            stream // kept open (never read) until the test has looked
        })
    };

    // Ten seconds of writing. The proxy must stop reading long before 10 million commands:
    // the records (one per queued -NOAUTH) stay bounded and stop growing once the writes
    // block. Stops early past the bound (every record is kept in memory).
    let started = Instant::now();
    let (mut most, mut at_six) = (0, None);
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        most = proxy.sink.records().len();
        if at_six.is_none() && started.elapsed() >= Duration::from_secs(6) {
            at_six = Some(most);
        }
        if most > BOUND {
            stop.store(true, Ordering::Relaxed);
            break;
        }
    }
    let stream = tokio::task::spawn_blocking(move || writer.join().unwrap()).await.unwrap();
    let accepted = written.load(Ordering::Relaxed);
    let at_end = proxy.sink.records().len();
    assert!(
        most <= BOUND && at_end <= BOUND,
        "records (= queued -NOAUTH replies) kept growing: {at_six:?} after 6 s, {at_end} \
         after {:?} ({accepted} bytes accepted)",
        started.elapsed()
    );
    let at_six = at_six.expect("sampled at 6 s");
    assert!(
        at_end - at_six < 1_000,
        "the proxy still read between 6 s and 10 s: {at_six} then {at_end} records"
    );
    assert!(accepted < TOTAL, "the proxy read all {TOTAL} bytes within 10 s");
    let stats = commandstats(&mut upstream).await;
    assert_eq!(calls(&stats, "ping"), pings_before, "no refused PING reached Redis: {stats}");
    drop(stream);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_client_keeps_redis_s_bulk_length_limit_after_the_service_login() {
    crate::require_redis!();
    let scratch = Scratch::new("adv-h4");
    let users = scratch.users_file("user default off\nuser alice on >secret ~* +@all\n");
    let behind = RedisServer::start(&["--requirepass", "service-secret"]);
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, SERVICE)).await;
    let mut request = b"*2\r\n$4\r\nECHO\r\n$20000\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'a', 20_000));
    request.extend_from_slice(b"\r\n");

    let mut outcomes = Vec::new();
    // A direct connection to a requirepass Redis, then the proxy.
    for addr in [behind.addr, proxy.addr] {
        let mut client = RawClient::connect(addr).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The peer may close before taking it all.
        send_quietly(&mut client, &request).await;
        let reply = next_reply(&mut client, Duration::from_secs(5)).await;
        outcomes.push((reply, closes(&mut client).await));
    }
    assert_eq!(
        outcomes[0],
        (show(b"-ERR Protocol error: unauthenticated bulk length\r\n"), true),
        "what Redis does"
    );
    assert_eq!(outcomes[1], outcomes[0], "the proxy does as Redis does");
    let mut upstream = admin(behind.addr, &[b"service-secret"]).await;
    let stats = commandstats(&mut upstream).await;
    assert_eq!(calls(&stats, "echo"), 0, "{stats}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_function_load_does_not_change_how_fcall_is_classified() {
    crate::require_redis!();
    // A read-only declaration of the name, then the real library: a function that writes.
    const POISON: &[u8] = b"#!lua name=x\nredis.register_function{function_name='payments_write', \
        callback=function(k,a) return 1 end, flags={'no-writes'}}";
    const PAYMENTS: &[u8] = b"#!lua name=payments\nredis.register_function('payments_write', \
        function(k, a) return redis.call('SET', 'app:paid', '1') end)";
    let scratch = Scratch::new("adv-m4");
    let users = scratch.users_file("user default off\nuser admin on >adminpw ~* &* +@all\n");
    let behind = RedisServer::start(&[]);
    let proxy = TestProxy::start_with(behind.addr, &proxy_mode(&users, "")).await;
    let noauth = show(b"-NOAUTH Authentication required.\r\n");

    let mut attacker = RawClient::connect(proxy.addr).await;
    let mut operator = RawClient::connect(proxy.addr).await;
    // Refused loads before and after the real one.
    assert_eq!(
        one_by_one(&mut attacker, &[&[b"FUNCTION", b"LOAD", POISON]]).await,
        [noauth.as_str()]
    );
    let replies = one_by_one(
        &mut operator,
        &[&[b"AUTH", b"admin", b"adminpw"], &[b"FUNCTION", b"LOAD", PAYMENTS]],
    )
    .await;
    assert_eq!(replies, [show(b"+OK\r\n"), show(b"$8\r\npayments\r\n")]);
    assert_eq!(
        one_by_one(&mut attacker, &[&[b"FUNCTION", b"LOAD", POISON]]).await,
        [noauth.as_str()]
    );
    assert_eq!(operator.call(&[b"FCALL", b"payments_write", b"0"]).await, b"+OK\r\n");

    let records = records_after(&proxy, 5).await;
    let fcall = records.iter().find(|r| is_command(r, b"FCALL")).expect("an FCALL record");
    assert_eq!(fcall.class, Some(Class::Write), "a writing function is recorded as a write");
    let mut upstream = admin(behind.addr, &[]).await;
    assert_eq!(upstream.call(&[b"GET", b"app:paid"]).await, b"$1\r\n1\r\n");
    assert_eq!(
        upstream.call(&[b"FUNCTION", b"LIST", b"LIBRARYNAME", b"x"]).await,
        b"*0\r\n",
        "the refused library never reached Redis"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reply_off_inside_multi_is_refused_and_the_transaction_fails() {
    crate::require_redis!();
    // Redis queues it and then silences the rest of EXEC's reply, whose header promised more:
    // no client could pair what follows. The proxy refuses it inside MULTI (README).
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let script: [&[&[u8]]; 5] = [
        &[b"MULTI"],
        &[b"CLIENT", b"REPLY", b"OFF"],
        &[b"SET", b"k", b"v"],
        &[b"EXEC"],
        &[b"PING"],
    ];
    let got = pipeline(&mut RawClient::connect(proxy.addr).await, &script, 5).await;
    assert_eq!(
        got,
        [
            show(b"+OK\r\n"),
            show(b"-ERR 'client|reply' inside MULTI is not supported by the proxy\r\n"),
            show(b"+QUEUED\r\n"),
            show(b"-EXECABORT Transaction discarded because of previous errors.\r\n"),
            show(b"+PONG\r\n"),
        ]
    );
    let mut admin = RawClient::connect(redis.addr).await;
    assert_eq!(admin.call(&[b"EXISTS", b"k"]).await, b":0\r\n", "the transaction did not run");
    proxy.shutdown().await;
}
