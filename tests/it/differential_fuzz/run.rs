//! Playing one stream on both sides, telling the outcomes apart, and the admin connections
//! that reset each server between streams.

use super::*;

pub(super) fn closed_or_open(closed: bool) -> &'static str {
    if closed {
        "closed"
    } else {
        "open"
    }
}

pub(super) fn describe(
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

pub(super) fn fail(shared: &Shared, message: String) {
    let mut failures = shared.failures.lock().unwrap();
    failures.push(message);
    if failures.len() >= REPORT_MAX {
        shared.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends `chunks` on a fresh connection to `addr` while reading, and returns what came back
/// and whether the server closed; open means `quiet` passed after the last write and the
/// last byte received.
pub(super) async fn play(
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
pub(super) struct Admin(pub(super) TcpStream, pub(super) Vec<u8>);

impl Admin {
    pub(super) async fn connect(addr: SocketAddr) -> Self {
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
    pub(super) async fn reset(&mut self) -> Result<(), String> {
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
