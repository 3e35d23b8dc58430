//! Differential fuzzing against Redis (issue 19, item 3): random request byte streams are sent
//! to a real redis-server directly and, on a fresh connection, through the proxy; both must
//! receive the same reply bytes (after [`crate::differential::normalise`]) and end the same
//! way: closed by the server, or still open once no byte came for [`QUIET`].
//!
//! Each worker has two identical redis-servers, one reached directly and one behind its own
//! proxy, so the two runs of a stream go side by side; an admin connection to each server waits
//! until the previous stream's connections are gone and FLUSHALLs before every stream, so both
//! start from an empty server. Every stream is drawn from its own seed (the run's seed and its
//! index), so a failure names the seed and index that replay it alone. A stream that differs is
//! played once more with a quiet time of 1 s, and fails only if it differs again (both
//! attempts are shown): one that agrees then met a slow reply on a loaded machine.
//!
//! Grammar of a stream (everything drawn from the seeded [`Rng`]):
//!
//! ```text
//! stream    := request{1..6} | noise                       (noise: 5 %, 1..40 bytes from PROTO)
//! request   := multibulk(cmd) | inline(cmd) | mutate(multibulk(cmd) | inline(cmd))
//!            | "\r\n" | "*0\r\n" | "*-1\r\n"
//! cmd       := NAME args, NAME in random case, from
//!              PING [msg] | ECHO msg | SET k v [EX t | PX t | NX | XX | GET] | GET k | INCR k
//!              | DEL k+ | EXISTS k+ | LPUSH k v+ | LRANGE k n n | HSET k (f v)+ | HGET k f
//!              | MGET k+ | MSET (k v)+ | APPEND k v | STRLEN k | EXPIRE k t | TTL k | TYPE k
//!              | zz<letters>  (an unknown command)
//!              and, 15 % of the time, one argument added or removed (wrong arity)
//! arg       := key "k0".."k3" | number ("0", "-1", "100", "1.5", i64::MAX, ...)
//! t         := an expiry that cannot pass during a stream: "0", "-1", "100000", "1000000",
//!              invalid ones ("1.5", i64::MAX, "01", " 1"); never a few seconds or milliseconds,
//!              where Redis's own replies would depend on timing (`SET k v PX 1` then `HGET k f`)
//!            | 0..8 bytes from PROTO (binary, CR, LF, space, quotes, NUL, 0xff; may be empty)
//! multibulk := "*" N CRLF ( "$" len CRLF arg CRLF ){N}
//! inline    := NAME (" " (arg | '"' escaped(arg) '"'))* ("\r\n" | "\n")
//! mutate    := one of: a bulk length off by 1..2 or "-1", "abc", "", "99999999999";
//!              a CRLF, CR or LF removed; the count "-1", "-7", "0", "x", "", N±1, "1048577",
//!              "2147483648", "99999999999"; a garbage first byte ('#', NUL, 0xff, '$', ' ',
//!              '"', CR); '$' replaced by ':' or 'x'; cut short; a random byte inserted
//! ```
//!
//! PROTO holds no letters beyond `a`, `b`, `k`, `v`, so no argument or cut can spell a command
//! outside the list above (SHUTDOWN, DEBUG, CONFIG, MONITOR, SUBSCRIBE, CLIENT, MULTI, BLPOP,
//! SAVE are never sent). Lengths stay small, so Redis's "too big" request errors (which depend on
//! how much had arrived) never apply. The stream is then cut into random chunks (whole, single
//! bytes, or 1..16 bytes) written with pauses of 0..2 ms, while the reply is read concurrently.
//!
//! `DIFFERENTIAL_FUZZ_STREAMS` (default 400) sets the count, `DIFFERENTIAL_FUZZ_SEED` the seed
//! (default fixed), `DIFFERENTIAL_FUZZ_WORKERS` (default 4) the pairs of servers, and
//! `DIFFERENTIAL_FUZZ_ONLY=<index>` replays one stream. `make fuzz-differential` runs 100,000
//! streams with a fresh seed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::differential::normalise;
use crate::support::client::{encode_command, reply_len};
use crate::support::rng::Rng;
use crate::support::{RedisServer, TestProxy};

mod generate;
mod run;

use generate::*;
use run::*;

/// The seed when `DIFFERENTIAL_FUZZ_SEED` is not set.
const SEED: u64 = 0x00d1_ff0f_5eed_2026;
/// Streams when `DIFFERENTIAL_FUZZ_STREAMS` is not set: about 10 s on 2 cores.
const STREAMS: usize = 400;
/// "No more bytes are coming": this long without a byte after the last write.
const QUIET: Duration = Duration::from_millis(100);
/// The quiet time of the one replay of a stream that differed.
const QUIET_RETRY: Duration = Duration::from_secs(1);
/// Longest one run of a stream may take (writing and reading) before it counts as a failure.
const STREAM_LIMIT: Duration = Duration::from_secs(5);
/// A proxy is replaced after this many streams, so its in-memory records stay bounded.
const PROXY_STREAMS: usize = 2000;
/// Mismatches reported before the run stops.
const REPORT_MAX: usize = 5;

/// Bytes arguments and noise are drawn from: binary, separators, quotes, RESP type bytes,
/// digits, and only letters that spell no command.
const PROTO: &[u8] = b"abkv01 9-+:$*\r\n\r\n\0\xff\x01\"'\\{}\t.";

/// An argument's key names.
const KEYS: &[&str] = &["k0", "k1", "k2", "k3"];
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "10",
    "100",
    "1000",
    "1.5",
    "9223372036854775807",
    "-9223372036854775808",
    "01",
    " 1",
];

/// Expiry arguments: invalid, immediate (0 and negative delete at once), or at least 100 s.
const TIMES: &[&str] = &["0", "-1", "100000", "1000000", "1.5", "9223372036854775807", "01", " 1"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_fuzz() {
    crate::require_redis!();
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok());
    let seed = env("DIFFERENTIAL_FUZZ_SEED").unwrap_or(SEED);
    let streams = env("DIFFERENTIAL_FUZZ_STREAMS").map_or(STREAMS, |n| n as usize);
    let workers = env("DIFFERENTIAL_FUZZ_WORKERS").map_or(4, |n| n.max(1) as usize);
    let only = env("DIFFERENTIAL_FUZZ_ONLY").map(|n| n as usize);
    let indices: Vec<usize> = match only {
        Some(index) => vec![index],
        None => (0..streams).collect(),
    };
    assert!(!indices.is_empty(), "DIFFERENTIAL_FUZZ_STREAMS is 0: nothing would be compared");
    eprintln!(
        "differential_fuzz: seed {seed} (DIFFERENTIAL_FUZZ_SEED), {} streams, {workers} workers",
        indices.len()
    );
    let started = Instant::now();
    let shared = Arc::new(Shared {
        seed,
        indices,
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        failures: Mutex::new(Vec::new()),
        stats: Mutex::new(Stats::default()),
    });
    let tasks: Vec<_> = (0..workers.min(shared.indices.len()))
        .map(|_| tokio::spawn(worker(Arc::clone(&shared))))
        .collect();
    for task in tasks {
        task.await.expect("a worker panicked");
    }
    let failures = shared.failures.lock().unwrap();
    let stats = shared.stats.lock().unwrap();
    eprintln!(
        "differential_fuzz: {} streams compared in {:.1} s: {} closed by the server, {} with \
         replies, {} reply bytes",
        stats.compared,
        started.elapsed().as_secs_f64(),
        stats.closed,
        stats.answered,
        stats.reply_bytes
    );
    assert!(
        failures.is_empty(),
        "seed {seed}: {} stream(s) differ (replay one with DIFFERENTIAL_FUZZ_SEED={seed} \
         DIFFERENTIAL_FUZZ_ONLY=<index>):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert_eq!(stats.compared, shared.indices.len(), "every stream was compared");
    // The generator must not degenerate into streams Redis only ignores or only refuses.
    if shared.indices.len() >= 100 {
        assert!(
            stats.closed * 20 >= stats.compared && stats.closed * 10 <= stats.compared * 9,
            "{} of {} streams closed: the generator degenerated",
            stats.closed,
            stats.compared
        );
        assert!(
            stats.answered * 2 >= stats.compared,
            "only {} streams got replies",
            stats.answered
        );
    }
}

struct Shared {
    seed: u64,
    indices: Vec<usize>,
    next: AtomicUsize,
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
    stats: Mutex<Stats>,
}

#[derive(Default)]
struct Stats {
    compared: usize,
    closed: usize,
    answered: usize,
    reply_bytes: usize,
}

/// What one run of a stream received.
#[derive(PartialEq, Eq)]
struct Outcome {
    bytes: Vec<u8>,
    closed: bool,
}

/// Two servers, one behind the proxy, taking streams until none is left.
async fn worker(shared: Arc<Shared>) {
    let direct_redis = RedisServer::start(&[]);
    let proxied_redis = RedisServer::start(&[]);
    let mut direct_admin = Admin::connect(direct_redis.addr).await;
    let mut proxied_admin = Admin::connect(proxied_redis.addr).await;
    let mut proxy = TestProxy::start(proxied_redis.addr).await;
    let mut served = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let at = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(&index) = shared.indices.get(at) else { break };
        if served == PROXY_STREAMS {
            proxy.shutdown().await;
            proxy = TestProxy::start(proxied_redis.addr).await;
            served = 0;
        }
        served += 1;
        let mut rng =
            Rng::new(shared.seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let stream = generate(&mut rng);
        let chunks = split(&mut rng, &stream);
        // A difference is replayed once with a longer quiet time: one that goes away then was
        // a slow reply on a loaded machine, not a difference in what was sent.
        let mut attempts = Vec::new();
        let mut agreed = None;
        for quiet in [QUIET, QUIET_RETRY] {
            let ready = async {
                direct_admin.reset().await?;
                proxied_admin.reset().await
            };
            if let Err(error) = ready.await {
                attempts.push(format!("before it: {error}"));
                break;
            }
            let (direct, proxied) = tokio::join!(
                play(direct_redis.addr, &chunks, quiet),
                play(proxy.addr, &chunks, quiet)
            );
            match (direct, proxied) {
                (Ok(direct), Ok(proxied)) => {
                    if normalise(&direct.bytes, &[]) == normalise(&proxied.bytes, &[])
                        && direct.closed == proxied.closed
                    {
                        agreed = Some(direct);
                        break;
                    }
                    attempts.push(format!(
                        "quiet {quiet:?}:\n    direct  ({}): \"{}\"\n    proxied ({}): \"{}\"",
                        closed_or_open(direct.closed),
                        direct.bytes.escape_ascii(),
                        closed_or_open(proxied.closed),
                        proxied.bytes.escape_ascii()
                    ));
                }
                (direct, proxied) => {
                    let error = direct.err().or(proxied.err()).unwrap_or_default();
                    attempts.push(format!("quiet {quiet:?}: {error}"));
                }
            }
        }
        let Some(direct) = agreed else {
            fail(&shared, describe(shared.seed, index, &stream, &chunks, &attempts.join("\n  ")));
            continue;
        };
        if !attempts.is_empty() {
            eprintln!(
                "differential_fuzz: {}\n  (agreed only with a longer quiet time)",
                describe(shared.seed, index, &stream, &chunks, &attempts.join("\n  "))
            );
        }
        let mut stats = shared.stats.lock().unwrap();
        stats.compared += 1;
        stats.closed += usize::from(direct.closed);
        stats.answered += usize::from(!direct.bytes.is_empty());
        stats.reply_bytes += direct.bytes.len();
    }
    proxy.shutdown().await;
}
