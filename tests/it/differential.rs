//! Differential transparency: every script of [`crate::corpus`] is played against one real
//! redis-server twice, first directly, then through the proxy, and each connection must receive
//! the same bytes both times.
//!
//! Only values that legitimately differ between two connections are normalised before the
//! comparison: client ids (the `CLIENT ID` replies the runner asked for, `id` in HELLO,
//! `id=` in CLIENT INFO/LIST), addresses, file descriptors, ages and buffer sizes in CLIENT
//! INFO/LIST, and MONITOR timestamps and client addresses. Before each run the admin
//! connection (direct to Redis) waits until every connection of the previous run is gone and
//! flushes everything, so both runs start from the same state.
//!
//! Every group also runs over TLS on both sides (the `_over_tls` tests): "directly" is then
//! Redis's TLS port reached with a TLS client, "through the proxy" is the proxy's TLS
//! listener with the proxy speaking TLS to that same port. TLS carries the same byte stream,
//! so the scripts, the normalisation and the comparison are the same; the admin connection
//! stays plain, on Redis's plain port.
//!
//! Every group also runs with `[upstream] pool = "shared"` (in [`crate::differential_shared`]):
//! the script connections then share two upstream connections per state and are pinned to one
//! of their own when they need it, and every byte must still be the same. Two things change in
//! the harness, nothing in the scripts: the admin's reset waits until the connections Redis
//! lists, its own aside, are no more than the pool's own (shared and spare connections stay
//! open between runs; the proxy's `/metrics` counts them, as pinned connections must be none,
//! and `CLIENT LIST` cannot tell them all apart: a shared connection that Redis refused its
//! `CLIENT SETNAME` before any login, and a spare, have no name); and the proxied stream loses
//! the CLIENT LIST lines of the connections named `redis-audit-proxy-shared` (any client of a
//! pooling proxy sees them; they are the proxy's, not another client's).
//!
//! `DIFFERENTIAL_SHOW=1 cargo test --test it differential -- --nocapture` prints what every
//! script received directly (normalised), to review what a script really exercises.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memchr::memmem;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::corpus::{self, Script, Step};
use crate::support::certs::{self, Authority};
use crate::support::client::{encode_command, reply_len};
use crate::support::http::http;
use crate::support::{RedisServer, Scratch, TestProxy};

/// Longest any single wait may take before the run fails.
const WAIT_LIMIT: Duration = Duration::from_secs(10);
/// "No more bytes are coming" for scripts that have no other way to know.
const QUIET: Duration = Duration::from_millis(150);
/// Pause at the end of a run, to catch bytes nobody waited for.
const SETTLE: Duration = Duration::from_millis(20);
/// Pause between the writes of a split send, so each arrives on its own.
const SPLIT_PAUSE: Duration = Duration::from_millis(1);
/// Streams longer than this are shown around their first difference only.
const SHOW_WHOLE: usize = 2048;

/// Fields of CLIENT INFO / CLIENT LIST lines that differ between any two connections: who
/// and where the client is, how old, and buffer sizes and peaks that depend on how TCP
/// segments arrived (how many pipelined commands Redis read and answered in one go) and on
/// when `clientsCron` last resized the buffers.
const VOLATILE_CLIENT_FIELDS: &[&str] = &[
    "id",
    "addr",
    "laddr",
    "fd",
    "age",
    "idle",
    "qbuf",
    "qbuf-free",
    "rbs",
    "rbp",
    "obl",
    "oll",
    "omem",
    "tot-mem",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands() {
    check(corpus::inline()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors() {
    check(corpus::protocol_errors()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines() {
    check(corpus::pipelines()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keys_and_values() {
    check(corpus::binary()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values() {
    check(corpus::large_values()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3() {
    check(corpus::resp3()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub() {
    check(corpus::pubsub()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions() {
    check(corpus::transactions()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands() {
    check(corpus::blocking()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor() {
    check(corpus::monitor()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reply() {
    check(corpus::client_reply()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_state() {
    check(corpus::connection_state()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated() {
    check_with(
        corpus::unauthenticated(),
        Over::Plain,
        Pool::Dedicated,
        &["--requirepass", corpus::PASSWORD],
        Some(corpus::PASSWORD),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_over_tls() {
    check_tls(corpus::inline()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_over_tls() {
    check_tls(corpus::protocol_errors()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_over_tls() {
    check_tls(corpus::pipelines()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keys_and_values_over_tls() {
    check_tls(corpus::binary()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_over_tls() {
    check_tls(corpus::large_values()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_over_tls() {
    check_tls(corpus::resp3()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_over_tls() {
    check_tls(corpus::pubsub()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_over_tls() {
    check_tls(corpus::transactions()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_over_tls() {
    check_tls(corpus::blocking()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_over_tls() {
    check_tls(corpus::monitor()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reply_over_tls() {
    check_tls(corpus::client_reply()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_state_over_tls() {
    check_tls(corpus::connection_state()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_over_tls() {
    check_with(
        corpus::unauthenticated(),
        Over::Tls,
        Pool::Dedicated,
        &["--requirepass", corpus::PASSWORD],
        Some(corpus::PASSWORD),
    )
    .await;
}

#[test]
fn corpus_is_large_and_names_are_unique() {
    let groups = [
        corpus::inline(),
        corpus::protocol_errors(),
        corpus::pipelines(),
        corpus::binary(),
        corpus::resp3(),
        corpus::pubsub(),
        corpus::transactions(),
        corpus::blocking(),
        corpus::monitor(),
        corpus::client_reply(),
        corpus::connection_state(),
        corpus::unauthenticated(),
    ];
    // `large_values` is left out here: building its 64 MiB value is the slow part.
    let mut names: Vec<&str> = groups.iter().flatten().map(|s| s.name).collect();
    names.extend(["large_value_64mib_set_get_strlen", "large_values_1mib_pipeline_cut"]);
    let total = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), total, "script names are unique");
    assert!(total >= 60, "the corpus has {total} scripts");
}

#[test]
fn normalisation_touches_only_volatile_values() {
    let hello = b"%2\r\n$2\r\nid\r\n:17\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n:17\r\n";
    assert_eq!(
        normalise(hello, &[]),
        b"%2\r\n$2\r\nid\r\n:?\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n:17\r\n".to_vec()
    );
    let info = b"$60\r\nid=7 addr=127.0.0.1:5 laddr=127.0.0.1:6 fd=9 name=x age=0 db=0\n\r\n";
    assert_eq!(
        normalise(info, &[]),
        b"$?\r\nid=? addr=? laddr=? fd=? name=x age=? db=0\n\r\n".to_vec()
    );
    let monitor = b"+1795319593.871344 [0 127.0.0.1:41234] \"SET\" \"k\" \"v\"\r\n+OK\r\n";
    assert_eq!(
        normalise(monitor, &[]),
        b"+<time> [0 <addr>] \"SET\" \"k\" \"v\"\r\n+OK\r\n".to_vec()
    );
    let lua = b"+1795319593.871344 [0 lua] \"SET\"\r\n";
    assert_eq!(normalise(lua, &[]), b"+<time> [0 lua] \"SET\"\r\n".to_vec());
    assert_eq!(normalise(b":5\r\n:5\r\n", &[(4, 8)]), b":5\r\n:?\r\n".to_vec());
    let truncated = b"$10\r\nabc";
    assert_eq!(normalise(truncated, &[]), truncated.to_vec());
    // The shared pool's lines go only when asked, and only theirs.
    let list = b"$58\r\nid=3 name=redis-audit-proxy-shared db=0\nid=4 name=me db=0\n\r\n";
    assert_eq!(normalise_with(list, &[], true), b"$?\r\nid=? name=me db=0\n\r\n".to_vec());
    assert_eq!(
        normalise(list, &[]),
        b"$?\r\nid=? name=redis-audit-proxy-shared db=0\nid=? name=me db=0\n\r\n".to_vec()
    );
    let named_alike = b"$43\r\nid=5 name=redis-audit-proxy-shared-not db=0\r\n";
    assert_eq!(
        normalise_with(named_alike, &[], true),
        b"$?\r\nid=? name=redis-audit-proxy-shared-not db=0\r\n".to_vec()
    );
}

/// Plays every script directly and through the proxy, and fails with every difference.
async fn check(scripts: Vec<Script>) {
    check_with(scripts, Over::Plain, Pool::Dedicated, &[], None).await;
}

/// [`check`] over TLS on both sides.
async fn check_tls(scripts: Vec<Script>) {
    check_with(scripts, Over::Tls, Pool::Dedicated, &[], None).await;
}

/// Plain TCP everywhere, or TLS on both sides of the proxy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Over {
    Plain,
    /// TLS from the client to Redis's TLS port or to the proxy's TLS listener, and from the
    /// proxy to Redis's TLS port.
    Tls,
}

/// How the proxy holds its upstream connections.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Pool {
    /// One upstream connection per client (the default).
    Dedicated,
    /// `pool = "shared"` with two shared connections per (login, db, protocol) state: the scripts
    /// with several connections then share one more often than not.
    Shared,
}

/// The name the shared pool gives its own upstream connections (`CLIENT SETNAME`).
pub(crate) const POOL_NAME: &str = "redis-audit-proxy-shared";

impl Pool {
    /// The proxy's configuration for this mode.
    fn toml(self) -> &'static str {
        match self {
            Self::Dedicated => "",
            Self::Shared => "[upstream]\npool = \"shared\"\npool_size = 2\n",
        }
    }
}

/// How a script connection is opened.
#[derive(Clone)]
enum Transport {
    Plain,
    /// TLS with this client configuration (trusting the test CA, SNI `localhost`).
    Tls(Arc<rustls::ClientConfig>),
}

/// A redis-server and the proxy in front of it, as `over` asks.
struct Setup {
    pool: Pool,
    redis: RedisServer,
    proxy: TestProxy,
    /// Where the script connections go directly (Redis's plain or TLS port)...
    direct: SocketAddr,
    /// ...and through the proxy (its plain or TLS listener).
    proxied: SocketAddr,
    transport: Transport,
    /// The certificates of a TLS setup, removed on drop.
    _scratch: Option<Scratch>,
}

impl Setup {
    /// Starts Redis (debug commands enabled, plus `extra` arguments) and the proxy.
    async fn start(over: Over, pool: Pool, extra: &[&str]) -> Self {
        let mut args: Vec<String> = vec!["--enable-debug-command".into(), "yes".into()];
        args.extend(extra.iter().map(|&arg| arg.to_owned()));
        if over == Over::Plain {
            let redis = RedisServer::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
            let proxy = TestProxy::start_with(redis.addr, pool.toml()).await;
            let (direct, proxied) = (redis.addr, proxy.addr);
            return Self {
                pool,
                redis,
                proxy,
                direct,
                proxied,
                transport: Transport::Plain,
                _scratch: None,
            };
        }
        let scratch = Scratch::new("differential-tls");
        let dir = scratch.path();
        let ca = Authority::new(dir, "differential");
        let server = ca.server(dir, "server");
        let tls_port = crate::support::redis::free_port();
        // Client certificates are not asked for: the plain corpus has no notion of them.
        args.extend([
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            server.cert_file.display().to_string(),
            "--tls-key-file".to_owned(),
            server.key_file.display().to_string(),
            "--tls-ca-cert-file".to_owned(),
            ca.ca_file.display().to_string(),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ]);
        let redis = RedisServer::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let redis_tls = SocketAddr::from(([127, 0, 0, 1], tls_port));
        // The proxy's TLS listener with the same certificate, and TLS to Redis's TLS port.
        let toml = format!(
            r#"{pool}
[tls]
listen = "127.0.0.1:0"
cert_file = "{cert}"
key_file = "{key}"
ca_file = "{ca}"
client_auth = "none"

[upstream.tls]
ca_file = "{ca}"
server_name = "localhost"
"#,
            cert = server.cert_file.display(),
            key = server.key_file.display(),
            ca = ca.ca_file.display(),
            pool = pool.toml(),
        );
        let proxy = TestProxy::start_with(redis_tls, &toml).await;
        let proxied = proxy.tls_addr();
        let transport = Transport::Tls(certs::client_config(&ca.ca_file, None));
        Self { pool, redis, proxy, direct: redis_tls, proxied, transport, _scratch: Some(scratch) }
    }
}

/// [`check`] `over` plain or TLS, the proxy's upstream connections as `pool` says, against a
/// server started with `extra` arguments; `password` is for the admin.
pub(crate) async fn check_with(
    scripts: Vec<Script>,
    over: Over,
    pool: Pool,
    extra: &[&str],
    password: Option<&str>,
) {
    crate::require_redis!();
    let started = Instant::now();
    let setup = Setup::start(over, pool, extra).await;
    let mut admin =
        Admin::connect(setup.redis.addr, password, &setup).await.expect("admin connection");
    let mut failures = Vec::new();
    for script in &scripts {
        // Boxed: the futures of a script run are large in debug builds.
        let outcome = Box::pin(differ(script, &setup, &mut admin)).await;
        if let Err(failure) = outcome {
            failures.push(format!("script `{}`: {failure}", script.name));
        }
    }
    setup.proxy.shutdown().await;
    eprintln!("{} scripts over {over:?}, {pool:?}, in {:?}", scripts.len(), started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} scripts differ:\n\n{}",
        failures.len(),
        scripts.len(),
        failures.join("\n\n")
    );
}

/// One script: both runs, then the comparison.
async fn differ(script: &Script, setup: &Setup, admin: &mut Admin) -> Result<(), String> {
    let transport = &setup.transport;
    admin.reset().await?;
    let direct = play(script, setup.direct, transport, admin)
        .await
        .map_err(|e| format!("direct run: {e}"))?;
    admin.reset().await?;
    let proxied = play(script, setup.proxied, transport, admin)
        .await
        .map_err(|e| format!("proxied run: {e}"))?;
    if std::env::var_os("DIFFERENTIAL_SHOW").is_some() {
        for (conn, stream) in direct.streams.iter().enumerate() {
            let stream = normalise(stream, &direct.masks[conn]);
            eprintln!("{} [{conn}]: {}", script.name, show(&stream));
        }
    }
    let mut problems = Vec::new();
    for (conn, pattern) in &script.expects {
        if memmem::find(&direct.streams[*conn], pattern).is_none() {
            problems.push(format!(
                "the direct stream of connection {conn} lacks \"{}\" (the script does not test \
                 what it claims): {}",
                pattern.escape_ascii(),
                show(&direct.streams[*conn])
            ));
        }
    }
    // Only the proxied stream can show the pool's connections (see the module documentation).
    let drop_pool_lines = setup.pool == Pool::Shared;
    for conn in 0..script.connections() {
        let a = normalise(&direct.streams[conn], &direct.masks[conn]);
        let b = normalise_with(&proxied.streams[conn], &proxied.masks[conn], drop_pool_lines);
        if a != b {
            problems.push(describe_difference(conn, &a, &b));
        }
        if direct.closed[conn] != proxied.closed[conn] {
            problems.push(format!(
                "connection {conn}: closed by the server directly: {}, through the proxy: {}",
                direct.closed[conn], proxied.closed[conn]
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// What one run received.
struct Run {
    /// Every byte each connection received, in order.
    streams: Vec<Vec<u8>>,
    /// Byte ranges of each stream holding a `CLIENT ID` reply the runner asked for.
    masks: Vec<Vec<(usize, usize)>>,
    /// Whether the server side closed each connection.
    closed: Vec<bool>,
}

/// Plays `script` against `target` (Redis or the proxy).
async fn play(
    script: &Script,
    target: SocketAddr,
    transport: &Transport,
    admin: &mut Admin,
) -> Result<Run, String> {
    let mut conns = Vec::new();
    for _ in 0..script.connections() {
        conns.push(Conn::open(target, transport).await?);
    }
    for (index, step) in script.steps.iter().enumerate() {
        run_step(step, &mut conns, admin)
            .await
            .map_err(|e| format!("step {index} ({}): {e}", step.describe()))?;
    }
    tokio::time::sleep(SETTLE).await;
    let mut run = Run { streams: Vec::new(), masks: Vec::new(), closed: Vec::new() };
    for conn in conns {
        let (bytes, closed) = conn.inbox.snapshot();
        run.streams.push(bytes);
        run.closed.push(closed);
        run.masks.push(conn.id_reply.into_iter().collect());
    }
    Ok(run)
}

async fn run_step(step: &Step, conns: &mut [Conn], admin: &mut Admin) -> Result<(), String> {
    match step {
        Step::Send { conn, bytes, splits } => conns[*conn].write(bytes, splits).await,
        Step::SendWithId { conn, id_of, build } => {
            let id = conns[*id_of].id.ok_or("no id learned on that connection")?;
            conns[*conn].write(&build(id), &[]).await;
        }
        Step::LearnId(conn) => conns[*conn].learn_id().await?,
        Step::Sync { conn, ping, token } => {
            let verb = if *ping { "PING" } else { "ECHO" };
            let conn = &mut conns[*conn];
            conn.write(&corpus::cmd(&[verb, token]), &[]).await;
            conn.wait_for(format!("\r\n{token}\r\n").as_bytes()).await?;
        }
        Step::WaitFor { conn, pattern } => conns[*conn].wait_for(pattern).await?,
        Step::WaitBlocked(count) => admin.wait_blocked(*count).await?,
        Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
        Step::Quiet(conn) => conns[*conn].quiet().await?,
        Step::Closes(conn) => conns[*conn].closed().await?,
    }
    Ok(())
}

/// What a connection's reader task collected.
#[derive(Default)]
struct Inbox {
    received: Mutex<Received>,
    changed: Notify,
}

#[derive(Default)]
struct Received {
    bytes: Vec<u8>,
    closed: bool,
}

impl Inbox {
    fn snapshot(&self) -> (Vec<u8>, bool) {
        let received = self.received.lock().unwrap();
        (received.bytes.clone(), received.closed)
    }
}

/// A script connection: written by the steps, read continuously by its own task (so a large
/// reply never stalls a large request). Plain TCP or TLS.
struct Conn {
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    inbox: Arc<Inbox>,
    reader: JoinHandle<()>,
    /// Where the next `wait_for` starts searching.
    cursor: usize,
    /// The id learned with `CLIENT ID`, and where its reply is in the stream.
    id: Option<u64>,
    id_reply: Option<(usize, usize)>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Conn {
    async fn open(addr: SocketAddr, transport: &Transport) -> Result<Self, String> {
        let inbox = Arc::new(Inbox::default());
        let (writer, reader): (Box<dyn AsyncWrite + Send + Unpin>, _) = match transport {
            Transport::Plain => {
                let stream =
                    TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                let (reader, writer) = stream.into_split();
                (Box::new(writer), tokio::spawn(read_all(reader, inbox.clone())))
            }
            Transport::Tls(config) => {
                let stream = certs::connect(addr, config.clone())
                    .await
                    .map_err(|e| format!("TLS connect {addr}: {e}"))?;
                stream.get_ref().0.set_nodelay(true).map_err(|e| e.to_string())?;
                let (reader, writer) = tokio::io::split(stream);
                (Box::new(writer), tokio::spawn(read_all(reader, inbox.clone())))
            }
        };
        Ok(Self { writer, inbox, reader, cursor: 0, id: None, id_reply: None })
    }

    /// Writes `bytes`, cut at `splits`. A write error means the server closed the connection,
    /// as it may after a protocol error: the rest is dropped, as for any client.
    async fn write(&mut self, bytes: &[u8], splits: &[usize]) {
        let mut start = 0;
        for &cut in splits.iter().chain(std::iter::once(&bytes.len())) {
            if cut <= start || cut > bytes.len() {
                continue;
            }
            if start > 0 {
                tokio::time::sleep(SPLIT_PAUSE).await;
            }
            // The flush sends what TLS still buffers (a no-op on plain TCP), so each cut
            // leaves before the pause, and everything before the next step.
            let chunk = &bytes[start..cut];
            if self.writer.write_all(chunk).await.is_err() || self.writer.flush().await.is_err() {
                return;
            }
            start = cut;
        }
    }

    /// Waits until `done` finds what it looks for in what was received so far.
    async fn wait<T>(
        &self,
        what: &str,
        mut done: impl FnMut(&Received) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let changed = self.inbox.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(found) = done(&self.inbox.received.lock().unwrap()) {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let (bytes, closed) = self.inbox.snapshot();
                return Err(format!(
                    "timed out waiting for {what} (closed: {closed}); received {}",
                    show(&bytes)
                ));
            }
        }
    }

    /// Reads until `pattern` arrived after the cursor, and moves the cursor past it.
    async fn wait_for(&mut self, pattern: &[u8]) -> Result<(), String> {
        let from = self.cursor;
        // Where the search resumes: earlier bytes were already searched (large replies).
        let mut searched = from;
        let what = format!("\"{}\"", pattern.escape_ascii());
        self.cursor = self
            .wait(&what, |received| {
                let start = searched.saturating_sub(pattern.len()).max(from);
                searched = received.bytes.len();
                memmem::find(&received.bytes[start..], pattern).map(|at| start + at + pattern.len())
            })
            .await?;
        Ok(())
    }

    /// Sends `CLIENT ID` and reads its reply, the next line.
    async fn learn_id(&mut self) -> Result<(), String> {
        self.write(&corpus::cmd(&["CLIENT", "ID"]), &[]).await;
        let from = self.cursor;
        let end = self
            .wait("the CLIENT ID reply", |received| {
                memmem::find(&received.bytes[from..], b"\r\n").map(|at| from + at + 2)
            })
            .await?;
        let line = self.inbox.received.lock().unwrap().bytes[from..end - 2].to_vec();
        let id = line
            .strip_prefix(b":")
            .and_then(|digits| std::str::from_utf8(digits).ok()?.parse().ok())
            .ok_or_else(|| format!("CLIENT ID answered \"{}\"", line.escape_ascii()))?;
        self.id = Some(id);
        self.id_reply = Some((from, end));
        self.cursor = end;
        Ok(())
    }

    /// Reads until nothing new arrived for [`QUIET`].
    async fn quiet(&self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut seen = self.inbox.snapshot().0.len();
        loop {
            tokio::time::sleep(QUIET).await;
            let (bytes, closed) = self.inbox.snapshot();
            if bytes.len() == seen || closed {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("bytes kept coming".into());
            }
            seen = bytes.len();
        }
    }

    /// Reads until the server closes the connection.
    async fn closed(&self) -> Result<(), String> {
        self.wait("the connection to close", |received| received.closed.then_some(())).await
    }
}

/// The reader task: appends everything to the inbox until EOF or a read error (a reset after
/// the server closed with unread input counts as a close, and so does a TLS peer closing
/// without `close_notify`).
async fn read_all(mut reader: impl AsyncRead + Unpin, inbox: Arc<Inbox>) {
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut chunk).await.unwrap_or(0);
        {
            let mut received = inbox.received.lock().unwrap();
            if n == 0 {
                received.closed = true;
            } else {
                received.bytes.extend_from_slice(&chunk[..n]);
            }
        }
        inbox.changed.notify_waiters();
        if n == 0 {
            return;
        }
    }
}

/// A connection straight to Redis for resetting state and polling, never part of a script;
/// with the shared pool, also the address of the proxy's admin plane, whose metrics count the
/// pool's connections.
struct Admin(Conn, Option<SocketAddr>);

impl Admin {
    async fn connect(
        addr: SocketAddr,
        password: Option<&str>,
        setup: &Setup,
    ) -> Result<Self, String> {
        let metrics = (setup.pool == Pool::Shared).then(|| setup.proxy.admin_addr());
        let mut admin = Self(Conn::open(addr, &Transport::Plain).await?, metrics);
        if let Some(password) = password {
            admin.expect_ok(&[b"AUTH", password.as_bytes()]).await?;
        }
        Ok(admin)
    }

    /// Sends a command and returns its whole reply.
    async fn call(&mut self, args: &[&[u8]]) -> Result<Vec<u8>, String> {
        self.0.write(&encode_command(args), &[]).await;
        let from = self.0.cursor;
        let end = self
            .0
            .wait("an admin reply", |received| {
                reply_len(&received.bytes[from..]).map(|len| from + len)
            })
            .await?;
        self.0.cursor = end;
        Ok(self.0.inbox.received.lock().unwrap().bytes[from..end].to_vec())
    }

    async fn expect_ok(&mut self, args: &[&[u8]]) -> Result<(), String> {
        let reply = self.call(args).await?;
        if reply == b"+OK\r\n" {
            Ok(())
        } else {
            Err(format!("admin {} answered {}", args[0].escape_ascii(), show(&reply)))
        }
    }

    /// The value of `field` in `INFO clients`.
    async fn clients_field(&mut self, field: &str) -> Result<u64, String> {
        let reply = self.call(&[b"INFO", b"clients"]).await?;
        let text = String::from_utf8_lossy(&reply);
        text.lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':')?.trim().parse().ok())
            .ok_or_else(|| format!("no {field} in INFO clients: {text:?}"))
    }

    /// Polls until `field` is `value`.
    async fn wait_clients_field(&mut self, field: &str, value: u64) -> Result<(), String> {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let now = self.clients_field(field).await?;
            if now == value {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{field} stayed {now}, expected {value}"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn wait_blocked(&mut self, count: u64) -> Result<(), String> {
        self.wait_clients_field("blocked_clients", count).await
    }

    /// How many connections `CLIENT LIST` shows (the admin's among them).
    async fn connections(&mut self) -> Result<u64, String> {
        let reply = self.call(&[b"CLIENT", b"LIST"]).await?;
        let text = String::from_utf8_lossy(&reply);
        Ok(text.lines().filter(|line| line.contains(" addr=")).count() as u64)
    }

    /// Polls until the only connections left are the admin and the pool's own: the proxy
    /// counts no pinned connection, and Redis no more connections than the admin plus the
    /// shared and spare ones the proxy counts (fewer when a spare was closed by Redis and the
    /// proxy has not looked at it yet).
    async fn wait_pool_only(&mut self, metrics: SocketAddr) -> Result<(), String> {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let (status, page) = http(metrics, "GET", "/metrics", &metrics.to_string(), &[]).await;
            if status != 200 {
                return Err(format!("the proxy's /metrics answered {status}: {page}"));
            }
            // A state's series appears once a connection was in it: absent is 0.
            let gauge = |state: &str| {
                let series =
                    format!("redis_audit_proxy_upstream_connections{{state=\"{state}\"}} ");
                page.lines()
                    .find_map(|line| line.strip_prefix(&series)?.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let (shared, spare, pinned) = (gauge("shared"), gauge("spare"), gauge("pinned"));
            let connections = self.connections().await?;
            if pinned == 0 && connections <= 1 + shared + spare {
                return Ok(());
            }
            if Instant::now() > deadline {
                let list = self.call(&[b"CLIENT", b"LIST"]).await?;
                return Err(format!(
                    "Redis lists {connections} connections, the proxy counts {shared} shared, \
                     {spare} spare and {pinned} pinned ones: {}",
                    show(&list)
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the previous run's connections are gone (the admin is the only client
    /// left, the shared pool's aside), then flushes every database and the script cache.
    async fn reset(&mut self) -> Result<(), String> {
        match self.1 {
            None => self.wait_clients_field("connected_clients", 1).await?,
            Some(metrics) => self.wait_pool_only(metrics).await?,
        }
        self.expect_ok(&[b"FLUSHALL"]).await?;
        self.expect_ok(&[b"SCRIPT", b"FLUSH"]).await
    }
}

/// `stream` with the volatile values replaced (see the module documentation). `masks` are the
/// byte ranges of `CLIENT ID` replies the runner asked for.
pub(crate) fn normalise(stream: &[u8], masks: &[(usize, usize)]) -> Vec<u8> {
    normalise_with(stream, masks, false)
}

/// [`normalise`], also dropping the CLIENT LIST lines of the shared pool's own connections
/// when `drop_pool_lines`.
fn normalise_with(stream: &[u8], masks: &[(usize, usize)], drop_pool_lines: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream.len());
    let mut pos = 0;
    // The previous bulk payload: an integer after `id` is HELLO's client id.
    let mut previous: &[u8] = b"";
    while pos < stream.len() {
        if let Some(&(_, end)) = masks.iter().find(|(start, _)| *start == pos) {
            out.extend_from_slice(b":?\r\n");
            pos = end;
            previous = b"";
            continue;
        }
        let Some(line_len) = memmem::find(&stream[pos..], b"\r\n") else { break };
        let line = &stream[pos..pos + line_len];
        let next = pos + line_len + 2;
        match line.first() {
            Some(kind @ (b'$' | b'=' | b'!')) => {
                let size = std::str::from_utf8(&line[1..]).ok().and_then(|s| s.parse().ok());
                if let Some(size) = size {
                    let size: usize = size;
                    if next + size + 2 > stream.len() {
                        break; // truncated: the rest is compared as it is
                    }
                    let payload = &stream[next..next + size];
                    match normalise_client_lines(payload, drop_pool_lines) {
                        Cow::Borrowed(_) => out.extend_from_slice(&stream[pos..next + size]),
                        Cow::Owned(changed) => {
                            out.push(*kind);
                            out.extend_from_slice(b"?\r\n");
                            out.extend_from_slice(&changed);
                        }
                    }
                    out.extend_from_slice(&stream[next + size..next + size + 2]);
                    previous = payload;
                    pos = next + size + 2;
                    continue;
                }
            }
            Some(b'+') => {
                if let Some(line) = normalise_monitor_line(line) {
                    out.extend_from_slice(&line);
                    out.extend_from_slice(b"\r\n");
                    previous = b"";
                    pos = next;
                    continue;
                }
            }
            Some(b':') if previous == b"id" => {
                out.extend_from_slice(b":?\r\n");
                previous = b"";
                pos = next;
                continue;
            }
            _ => {}
        }
        out.extend_from_slice(&stream[pos..next]);
        previous = b"";
        pos = next;
    }
    out.extend_from_slice(&stream[pos..]);
    out
}

/// CLIENT INFO / CLIENT LIST text (`id=... addr=...` lines, possibly as a `txt:` verbatim
/// string) with the volatile fields replaced by `?`, and without the lines of connections
/// named [`POOL_NAME`] when `drop_pool_lines`.
fn normalise_client_lines(payload: &[u8], drop_pool_lines: bool) -> Cow<'_, [u8]> {
    let (prefix, body) = match payload.strip_prefix(b"txt:") {
        Some(body) => (&b"txt:"[..], body),
        None => (&b""[..], payload),
    };
    if !body.starts_with(b"id=") {
        return Cow::Borrowed(payload);
    }
    let pool_field = format!("name={POOL_NAME}");
    let mut out = prefix.to_vec();
    // Each line with its `\n` (the last may have none), so a dropped line leaves no trace.
    for line in body.split_inclusive(|&b| b == b'\n') {
        let (line, newline) = match line.strip_suffix(b"\n") {
            Some(line) => (line, &b"\n"[..]),
            None => (line, &b""[..]),
        };
        if drop_pool_lines && line.split(|&b| b == b' ').any(|field| field == pool_field.as_bytes())
        {
            continue;
        }
        for (index, field) in line.split(|&b| b == b' ').enumerate() {
            if index > 0 {
                out.push(b' ');
            }
            let key = field.split(|&b| b == b'=').next().unwrap_or_default();
            if field.contains(&b'=') && VOLATILE_CLIENT_FIELDS.iter().any(|v| v.as_bytes() == key) {
                out.extend_from_slice(key);
                out.extend_from_slice(b"=?");
            } else {
                out.extend_from_slice(field);
            }
        }
        out.extend_from_slice(newline);
    }
    Cow::Owned(out)
}

/// A MONITOR line `+<secs>.<micros> [<db> <addr>] ...` with the time and a network address
/// replaced (`lua` and `unix:` sources are kept).
fn normalise_monitor_line(line: &[u8]) -> Option<Vec<u8>> {
    let rest = line.strip_prefix(b"+")?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let (stamp, rest) = rest.split_at(space);
    let is_stamp = stamp.contains(&b'.') && stamp.iter().all(|&b| b.is_ascii_digit() || b == b'.');
    let rest = rest.strip_prefix(b" [")?;
    if !is_stamp {
        return None;
    }
    let close = rest.iter().position(|&b| b == b']')?;
    let (inside, tail) = rest.split_at(close);
    let space = inside.iter().position(|&b| b == b' ')?;
    let (db, source) = (&inside[..space], &inside[space + 1..]);
    let is_address = source.contains(&b':') && !source.starts_with(b"unix:");
    let mut out = b"+<time> [".to_vec();
    out.extend_from_slice(db);
    out.push(b' ');
    out.extend_from_slice(if is_address { b"<addr>" } else { source });
    out.extend_from_slice(tail);
    Some(out)
}

/// A stream for a failure message: whole when short, else its size and hash.
fn show(bytes: &[u8]) -> String {
    if bytes.len() <= SHOW_WHOLE {
        format!("\"{}\"", bytes.escape_ascii())
    } else {
        let head = &bytes[..SHOW_WHOLE / 2];
        let tail = &bytes[bytes.len() - 256..];
        format!(
            "{} bytes, fnv1a {:016x}: \"{}\" ... \"{}\"",
            bytes.len(),
            fnv1a(bytes),
            head.escape_ascii(),
            tail.escape_ascii()
        )
    }
}

fn describe_difference(conn: usize, direct: &[u8], proxied: &[u8]) -> String {
    let at = direct
        .iter()
        .zip(proxied)
        .position(|(a, b)| a != b)
        .unwrap_or(direct.len().min(proxied.len()));
    if direct.len() <= SHOW_WHOLE && proxied.len() <= SHOW_WHOLE {
        return format!(
            "connection {conn} differs at byte {at}:\n  direct : \"{}\"\n  proxied: \"{}\"",
            direct.escape_ascii(),
            proxied.escape_ascii()
        );
    }
    let window = |bytes: &[u8]| {
        let start = at.saturating_sub(200);
        let end = (at + 200).min(bytes.len());
        format!("\"{}\"", bytes[start.min(end)..end].escape_ascii())
    };
    format!(
        "connection {conn} differs at byte {at} (shown from byte {}):\n  direct : {} bytes, fnv1a \
         {:016x}: {}\n  proxied: {} bytes, fnv1a {:016x}: {}",
        at.saturating_sub(200),
        direct.len(),
        fnv1a(direct),
        window(direct),
        proxied.len(),
        fnv1a(proxied),
        window(proxied)
    )
}

/// FNV-1a, to tell large streams apart without printing them.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
