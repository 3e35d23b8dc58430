//! The runner: plays one script directly and through the proxy, each connection with a
//! reader task collecting what it receives, and an admin connection resetting Redis between
//! runs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memchr::memmem;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::normalise::{describe_difference, normalise, normalise_with};
use super::{Pool, Setup, Transport};
use crate::corpus::{self, Script, Step};
use crate::support::certs;
use crate::support::client::{encode_command, reply_len, show};
use crate::support::http::http;

/// Longest any single wait may take before the run fails.
const WAIT_LIMIT: Duration = Duration::from_secs(10);
/// "No more bytes are coming" for scripts that have no other way to know.
const QUIET: Duration = Duration::from_millis(150);
/// Pause at the end of a run, to catch bytes nobody waited for.
const SETTLE: Duration = Duration::from_millis(20);
/// Pause between the writes of a split send, so each arrives on its own.
const SPLIT_PAUSE: Duration = Duration::from_millis(1);

/// One script: both runs, then the comparison.
pub(super) async fn differ(
    script: &Script,
    setup: &Setup,
    admin: &mut Admin,
) -> Result<(), String> {
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
    for (conn, patterns) in &script.expects {
        let stream = &direct.streams[*conn];
        if !patterns.iter().any(|pattern| memmem::find(stream, pattern).is_some()) {
            let wanted: Vec<String> =
                patterns.iter().map(|p| format!("\"{}\"", p.escape_ascii())).collect();
            problems.push(format!(
                "the direct stream of connection {conn} lacks {} (the script does not test \
                 what it claims): {}",
                wanted.join(" or "),
                show(stream)
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
pub(super) struct Admin(Conn, Option<SocketAddr>);

impl Admin {
    pub(super) async fn connect(
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
