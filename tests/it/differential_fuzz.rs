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

fn closed_or_open(closed: bool) -> &'static str {
    if closed {
        "closed"
    } else {
        "open"
    }
}

fn describe(
    seed: u64,
    index: usize,
    stream: &[u8],
    chunks: &[(Vec<u8>, u64)],
    what: &str,
) -> String {
    let sizes: Vec<String> =
        chunks.iter().map(|(chunk, pause)| format!("{}+{pause}ms", chunk.len())).collect();
    format!(
        "seed {seed}, stream {index}: \"{}\"\n  chunks: [{}]\n  {what}",
        stream.escape_ascii(),
        sizes.join(", ")
    )
}

fn fail(shared: &Shared, message: String) {
    let mut failures = shared.failures.lock().unwrap();
    failures.push(message);
    if failures.len() >= REPORT_MAX {
        shared.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends `chunks` on a fresh connection to `addr` while reading, and returns what came back
/// and whether the server closed; open means `quiet` passed after the last write and the
/// last byte received.
async fn play(
    addr: SocketAddr,
    chunks: &[(Vec<u8>, u64)],
    quiet: Duration,
) -> Result<Outcome, String> {
    let connection = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    connection.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut reader, mut writer) = connection.into_split();
    let finished: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let writer_finished = Arc::clone(&finished);
    let chunks = chunks.to_vec();
    let write = tokio::spawn(async move {
        for (chunk, pause) in chunks {
            if pause > 0 {
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            // Writes after the server closed fail: what came back is compared all the same.
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
        }
        *writer_finished.lock().unwrap() = Some(Instant::now());
        writer
    });
    let started = Instant::now();
    let mut outcome = Outcome { bytes: Vec::new(), closed: false };
    let mut last_byte = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        if started.elapsed() > STREAM_LIMIT {
            return Err(format!("{addr}: the stream took over {STREAM_LIMIT:?}"));
        }
        let since = finished.lock().unwrap().map(|at| at.max(last_byte));
        let wait = since.map_or(quiet, |since| quiet.saturating_sub(since.elapsed()));
        if since.is_some() && wait.is_zero() {
            break;
        }
        match tokio::time::timeout(wait, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                outcome.closed = true;
                break;
            }
            Ok(Ok(n)) => {
                outcome.bytes.extend_from_slice(&buf[..n]);
                last_byte = Instant::now();
            }
            Err(_) => {}
        }
    }
    // The writer is done or failing; keep the connection until here so it was not closed early.
    let _writer = write.await.map_err(|e| format!("writer: {e}"))?;
    Ok(outcome)
}

/// A plain connection to one server for resetting it between streams.
struct Admin(TcpStream, Vec<u8>);

impl Admin {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("admin connection");
        Self(stream, Vec::new())
    }

    async fn call(&mut self, args: &[&[u8]]) -> Result<Vec<u8>, String> {
        self.0.write_all(&encode_command(args)).await.map_err(|e| format!("admin write: {e}"))?;
        let deadline = Instant::now() + STREAM_LIMIT;
        loop {
            if let Some(len) = reply_len(&self.1) {
                return Ok(self.1.drain(..len).collect());
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.0.read(&mut buf))
                .await
                .map_err(|_| "admin reply timed out".to_owned())?
                .map_err(|e| format!("admin read: {e}"))?;
            if n == 0 {
                return Err("admin connection closed".into());
            }
            self.1.extend_from_slice(&buf[..n]);
        }
    }

    /// Waits until the admin is the server's only client, then empties the server.
    async fn reset(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STREAM_LIMIT;
        loop {
            let info = self.call(&[b"INFO", b"clients"]).await?;
            let info = String::from_utf8_lossy(&info);
            if info.lines().any(|line| line.trim() == "connected_clients:1") {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("the previous connections stayed: {info}"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let reply = self.call(&[b"FLUSHALL"]).await?;
        if reply != b"+OK\r\n" {
            return Err(format!("FLUSHALL answered \"{}\"", reply.escape_ascii()));
        }
        Ok(())
    }
}

/// One stream of requests, as the module documentation's grammar says.
fn generate(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(5) {
        return (0..1 + rng.below(40)).map(|_| *rng.pick(PROTO)).collect();
    }
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(6) {
        match rng.below(100) {
            0..=3 => {
                let extra: &[&[u8]] = &[b"\r\n", b"*0\r\n", b"*-1\r\n"];
                out.extend_from_slice(extra[rng.below(extra.len())]);
            }
            4..=44 => out.extend(multibulk(&command(rng))),
            45..=69 => {
                let args = command(rng);
                out.extend(inline(rng, &args));
            }
            _ => {
                let args = command(rng);
                let request = if rng.chance(75) { multibulk(&args) } else { inline(rng, &args) };
                out.extend(mutate(rng, request));
            }
        }
    }
    out
}

/// A command from the safe list, its name in random case; sometimes of the wrong arity.
fn command(rng: &mut Rng) -> Vec<Vec<u8>> {
    let key = |rng: &mut Rng| rng.pick(KEYS).as_bytes().to_vec();
    let mut args: Vec<Vec<u8>> = Vec::new();
    let name: &str = match rng.below(19) {
        0 => {
            if rng.chance(50) {
                args.push(arg(rng));
            }
            "ping"
        }
        1 => {
            args.push(arg(rng));
            "echo"
        }
        2 => {
            args.push(key(rng));
            args.push(arg(rng));
            match rng.below(8) {
                0 => args.extend([b"EX".to_vec(), time(rng)]),
                1 => args.extend([b"px".to_vec(), time(rng)]),
                2 => args.push(b"NX".to_vec()),
                3 => args.push(b"xx".to_vec()),
                4 => args.push(b"GET".to_vec()),
                _ => {}
            }
            "set"
        }
        3 => {
            args.push(key(rng));
            "get"
        }
        4 => {
            args.push(key(rng));
            "incr"
        }
        5..=7 => {
            for _ in 0..1 + rng.below(3) {
                args.push(key(rng));
            }
            ["del", "exists", "mget"][rng.below(3)]
        }
        8 => {
            args.push(key(rng));
            for _ in 0..1 + rng.below(3) {
                args.push(arg(rng));
            }
            "lpush"
        }
        9 => {
            args.extend([key(rng), number(rng), number(rng)]);
            "lrange"
        }
        10 => {
            args.push(key(rng));
            for _ in 0..1 + rng.below(2) {
                args.extend([arg(rng), arg(rng)]);
            }
            "hset"
        }
        11 => {
            args.extend([key(rng), arg(rng)]);
            "hget"
        }
        12 => {
            for _ in 0..1 + rng.below(2) {
                args.extend([key(rng), arg(rng)]);
            }
            "mset"
        }
        13 => {
            args.extend([key(rng), arg(rng)]);
            "append"
        }
        14..=16 => {
            args.push(key(rng));
            ["strlen", "ttl", "type"][rng.below(3)]
        }
        17 => {
            args.extend([key(rng), time(rng)]);
            "expire"
        }
        _ => {
            let letters: String =
                (0..1 + rng.below(5)).map(|_| char::from(b'a' + rng.below(26) as u8)).collect();
            args.push(arg(rng));
            return [format!("zz{letters}").into_bytes()].into_iter().chain(args).collect();
        }
    };
    if rng.chance(15) {
        if !args.is_empty() && rng.chance(50) {
            args.pop();
        } else {
            args.push(arg(rng));
        }
    }
    let name: Vec<u8> =
        name.bytes().map(|b| if rng.chance(50) { b.to_ascii_uppercase() } else { b }).collect();
    [name].into_iter().chain(args).collect()
}

fn number(rng: &mut Rng) -> Vec<u8> {
    rng.pick(NUMBERS).as_bytes().to_vec()
}

/// An expiry (seconds or milliseconds): never one that could pass while a stream runs, which
/// would make Redis's own replies depend on timing (`SET k v PX 1` then `HGET k f`).
fn time(rng: &mut Rng) -> Vec<u8> {
    rng.pick(TIMES).as_bytes().to_vec()
}

fn arg(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0..=3 => rng.pick(KEYS).as_bytes().to_vec(),
        4 | 5 => number(rng),
        _ => (0..rng.below(9)).map(|_| *rng.pick(PROTO)).collect(),
    }
}

fn multibulk(args: &[Vec<u8>]) -> Vec<u8> {
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    encode_command(&refs)
}

/// An inline request: arguments raw (separators in them split or end the line) or quoted.
fn inline(rng: &mut Rng, args: &[Vec<u8>]) -> Vec<u8> {
    let quote = rng.chance(50);
    let mut out = args[0].clone();
    for arg in &args[1..] {
        out.push(b' ');
        if quote {
            out.push(b'"');
            for &b in arg {
                match b {
                    b'"' | b'\\' => out.extend([b'\\', b]),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b' '..=b'~' => out.push(b),
                    _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                }
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(arg);
        }
    }
    out.extend_from_slice(if rng.chance(80) { b"\r\n" } else { b"\n" });
    out
}

/// `request` with one mutation of the grammar's `mutate`.
fn mutate(rng: &mut Rng, mut request: Vec<u8>) -> Vec<u8> {
    let positions = |request: &[u8], byte: u8| -> Vec<usize> {
        request.iter().enumerate().filter(|&(_, &b)| b == byte).map(|(i, _)| i).collect()
    };
    match rng.below(7) {
        // A bulk length: off by a little, or not a length.
        0 => {
            let dollars = positions(&request, b'$');
            if let Some(&at) = dollars.get(rng.below(dollars.len().max(1))) {
                let end = at + request[at..].iter().position(|&b| b == b'\r').unwrap_or(1);
                let len: i64 = std::str::from_utf8(&request[at + 1..end])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let new = match rng.below(6) {
                    0 => (len + 1).to_string(),
                    1 => (len + 2).to_string(),
                    2 => (len - 1).to_string(),
                    3 => "-1".to_owned(),
                    4 => rng.pick(&["abc", "", "99999999999"]).to_string(),
                    _ => (len - 2).max(0).to_string(),
                };
                request.splice(at + 1..end, new.into_bytes());
            }
        }
        // A CRLF, CR or LF removed.
        1 => {
            let crs = positions(&request, b'\r');
            if let Some(&at) = crs.get(rng.below(crs.len().max(1))) {
                let range = match rng.below(3) {
                    0 => at..at + 2,
                    1 => at..at + 1,
                    _ => at + 1..at + 2,
                };
                request.drain(range.start..range.end.min(request.len()));
            }
        }
        // The count.
        2 => {
            if request.first() == Some(&b'*') {
                let end = request.iter().position(|&b| b == b'\r').unwrap_or(1);
                let count: i64 = std::str::from_utf8(&request[1..end])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let new = match rng.below(5) {
                    0 => (count + 1).to_string(),
                    1 => (count - 1).to_string(),
                    _ => rng
                        .pick(&["-1", "-7", "0", "x", "", "1048577", "2147483648", "99999999999"])
                        .to_string(),
                };
                request.splice(1..end, new.into_bytes());
            }
        }
        // A garbage first byte.
        3 => request[0] = *rng.pick(b"#\0\xff$ \"\r"),
        // A bulk's type byte.
        4 => {
            let dollars = positions(&request, b'$');
            if let Some(&at) = dollars.get(rng.below(dollars.len().max(1))) {
                request[at] = *rng.pick(b":x");
            }
        }
        // Cut short.
        5 => request.truncate(rng.below(request.len())),
        // A random byte inserted.
        _ => {
            let at = rng.below(request.len() + 1);
            request.insert(at, *rng.pick(PROTO));
        }
    }
    request
}

/// `stream` cut into chunks, each with the pause (ms) before it: whole, single bytes, or
/// 1..16-byte pieces.
fn split(rng: &mut Rng, stream: &[u8]) -> Vec<(Vec<u8>, u64)> {
    let mode = rng.below(10);
    if mode < 3 || stream.is_empty() {
        return vec![(stream.to_vec(), 0)];
    }
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let size = if mode == 3 && stream.len() <= 80 { 1 } else { 1 + rng.below(16) };
        let end = (at + size).min(stream.len());
        chunks.push((stream[at..end].to_vec(), rng.below(3) as u64));
        at = end;
    }
    chunks
}
