//! Replies and clients at the edges: a reply nested 5,000 levels deep passes byte for byte,
//! and the proxy binary's memory stays bounded while a client floods it without reading.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::client::show;
use crate::support::redis::free_port;
use crate::support::KillOnDrop;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

const BINARY: &str = env!("CARGO_BIN_EXE_redis-audit-proxy");

// --- Deep replies ----------------------------------------------------------------------------

/// Length of the first whole RESP2 reply in `buf`, without recursion (any depth).
fn flat_reply_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    let mut pending: u64 = 1;
    while pending > 0 {
        let end = pos + buf.get(pos..)?.windows(2).position(|w| w == b"\r\n")?;
        let kind = buf[pos];
        let line = std::str::from_utf8(&buf[pos + 1..end]).expect("ASCII header");
        pos = end + 2;
        pending -= 1;
        match kind {
            b'*' => {
                let n: i64 = line.parse().expect("array length");
                pending += u64::try_from(n).unwrap_or(0);
            }
            b'$' => {
                let n: i64 = line.parse().expect("bulk length");
                if let Ok(n) = usize::try_from(n) {
                    pos += n + 2;
                    if pos > buf.len() {
                        return None;
                    }
                }
            }
            b'+' | b'-' | b':' => {}
            other => panic!("unexpected reply type {:?}", char::from(other)),
        }
    }
    Some(pos)
}

async fn read_flat_reply(client: &mut RawClient, who: &str) -> Vec<u8> {
    loop {
        if let Some(len) = flat_reply_len(&client.buffer) {
            return client.buffer.drain(..len).collect();
        }
        if client.fill().await.is_none() {
            panic!(
                "{who}: the connection closed before a whole reply; got {} bytes: {}",
                client.buffer.len(),
                show(&client.buffer)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_nested_5000_deep_passes_byte_for_byte_and_the_connection_stays_usable() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let script: &[u8] =
        b"local t = {} local c = t for i=1,4999 do local n = {} c[1] = n c = n end return t";
    let mut direct = RawClient::connect(redis.addr).await;
    let mut through = RawClient::connect(proxy.addr).await;
    direct.send_command(&[b"EVAL", script, b"0"]).await;
    let want = read_flat_reply(&mut direct, "Redis directly").await;
    through.send_command(&[b"EVAL", script, b"0"]).await;
    let got = read_flat_reply(&mut through, "through the proxy").await;
    assert!(
        got == want,
        "the deep reply through the proxy ({} bytes: {}) differs from Redis's ({} bytes: {}): {}",
        got.len(),
        show(&got),
        want.len(),
        show(&want),
        crate::replication::first_difference(&got, &want)
    );
    assert_eq!(show(&through.call(&[b"PING"]).await), "+PONG\\r\\n", "after the deep reply");
    assert_eq!(direct.call(&[b"PING"]).await, b"+PONG\r\n");
}

// --- Memory of the binary under a flood --------------------------------------------------------

/// VmRSS of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e} (did the proxy exit?)"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

const FLOOD_BYTES: u64 = 50 << 20;
const RSS_LIMIT_KIB: u64 = 64 << 10;

/// Starts the binary with `auth.mode = "proxy"` in front of a `--requirepass` Redis, floods it
/// with 50 MB of `PING\n` from a client that never reads (after `AUTH a x` when
/// `authenticate`), and asserts its VmRSS stays under 64 MiB.
fn flood_without_reading(authenticate: bool) {
    let redis = RedisServer::start(&["--requirepass", "service-secret"]);
    let scratch = Scratch::new("repl-flood");
    let users = scratch.users_file("user default off\nuser a on >x ~* +@all\n");
    let config = scratch.path().join("proxy.toml");
    // A small audit queue, so that what is measured is the connection's buffering, not records
    // of the flood waiting for the disk (the writer holds up to about twice queue_max_bytes).
    let mut toml = String::from(
        "[auth]\nmode = \"proxy\"\nupstream_user = \"default\"\n\
         upstream_password = \"service-secret\"\n\n[audit]\nqueue_max_bytes = 4194304\n",
    );
    if !authenticate {
        // Each refused PING would be a command record: left out, so that the proxy answers
        // -NOAUTH as fast as it can and what is measured is where those replies go.
        toml.push_str("\n[audit.filters]\nignore_high_frequency = [\"ping\"]\n");
    }
    std::fs::write(&config, toml).unwrap();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let audit_dir = scratch.path().join("audit");
    let child = Command::new(BINARY)
        .args(["--config", config.to_str().unwrap(), "--users", users.to_str().unwrap()])
        .args(["--listen", &listen.to_string(), "--upstream", &redis.addr.to_string()])
        .args(["--admin", "127.0.0.1:0", "--audit-dir", audit_dir.to_str().unwrap()])
        .args(["--log-level", "error"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}"));
    let mut child = KillOnDrop(child);
    let pid = child.0.id();

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(listen) {
            Ok(stream) => break stream,
            Err(error) => {
                assert!(Instant::now() < deadline, "the proxy never listened on {listen}: {error}");
                assert!(child.0.try_wait().unwrap().is_none(), "the proxy exited early");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if authenticate {
        use std::io::Read;
        stream.write_all(b"AUTH a x\r\n").unwrap();
        let mut ok = [0u8; 5];
        stream.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"+OK\r\n", "AUTH a x");
    }
    let baseline = rss_kib(pid);

    let written = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let (written, done) = (written.clone(), done.clone());
        std::thread::spawn(move || {
            let chunk = b"PING\n".repeat(13_107);
            while written.load(Ordering::Relaxed) < FLOOD_BYTES {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
                written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            done.store(true, Ordering::Relaxed);
        })
    };

    // Until the writer has finished, or made no progress for 4 s (the proxy stopped reading;
    // a proxy that reads in bursts while its memory grows has not stopped), or 12 s passed;
    // the peak VmRSS meanwhile.
    let started = Instant::now();
    let mut peak = baseline;
    let mut last = (0, Instant::now());
    while !done.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(12) {
        std::thread::sleep(Duration::from_millis(200));
        peak = peak.max(rss_kib(pid));
        let now = written.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(4) {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(pid);
    peak = peak.max(after);
    let sent = written.load(Ordering::Relaxed);
    let state = if done.load(Ordering::Relaxed) {
        "finished (or was cut off)"
    } else if last.1.elapsed() >= Duration::from_secs(4) {
        "blocked"
    } else {
        "was still writing at the time limit"
    };
    let _ = stream.shutdown(Shutdown::Both);
    writer.join().expect("writer thread");
    assert!(child.0.try_wait().unwrap().is_none(), "the proxy died during the flood");
    assert!(
        after < RSS_LIMIT_KIB && peak < RSS_LIMIT_KIB,
        "proxy VmRSS {after} KiB after the flood (peak {peak} KiB, baseline {baseline} KiB), limit \
         {RSS_LIMIT_KIB} KiB; the writer {state} after {sent} of {FLOOD_BYTES} bytes in {:?}",
        started.elapsed()
    );
    eprintln!(
        "flood ({}authenticated): VmRSS {after} KiB (peak {peak}, baseline {baseline}); writer \
         {state} after {sent} bytes",
        if authenticate { "" } else { "un" }
    );
}

#[test]
fn the_binary_stays_under_64_mib_while_an_authenticated_client_floods_it_without_reading() {
    crate::require_redis!();
    flood_without_reading(true);
}

#[test]
fn the_binary_stays_under_64_mib_while_an_unauthenticated_client_floods_it_without_reading() {
    crate::require_redis!();
    flood_without_reading(false);
}
