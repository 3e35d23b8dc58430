//! A raw-bytes RESP client: writes exactly the given bytes, reads whole replies framed by
//! redis-protocol (the oracle), or raw bytes until a condition.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One TCP connection speaking raw bytes.
#[derive(Debug)]
pub struct RawClient {
    pub stream: TcpStream,
    /// Bytes read but not yet returned.
    pub buffer: Vec<u8>,
}

/// How long a read may wait before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Self { stream, buffer: Vec::new() }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends one command as multibulk.
    pub async fn send_command(&mut self, args: &[&[u8]]) {
        self.send(&encode_command(args)).await;
    }

    /// Reads until `buffer` holds at least one whole reply (RESP2 or RESP3) and returns its bytes.
    pub async fn read_reply(&mut self) -> Vec<u8> {
        loop {
            if let Some(len) = reply_len(&self.buffer) {
                return self.buffer.drain(..len).collect();
            }
            self.fill().await.expect("connection closed before a whole reply");
        }
    }

    /// Sends a command and returns its reply bytes.
    /// `SET key:<i> value` for `i` in `from..from + count`, pipelined 200 at a time; every
    /// reply must be `+OK`.
    pub async fn pipelined_sets(&mut self, from: usize, count: usize) {
        for batch in (from..from + count).collect::<Vec<_>>().chunks(200) {
            let mut bytes = Vec::new();
            for i in batch {
                bytes.extend(encode_command(&[b"SET", format!("key:{i}").as_bytes(), b"value"]));
            }
            self.send(&bytes).await;
            for _ in batch {
                assert_eq!(self.read_reply().await, b"+OK\r\n");
            }
        }
    }

    pub async fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send_command(args).await;
        self.read_reply().await
    }

    /// Reads more bytes; `None` on EOF.
    pub async fn fill(&mut self) -> Option<usize> {
        // On the heap: a 64 KiB array in every inlined `call` swells debug-build futures.
        let mut chunk = vec![0u8; 65536];
        let n = tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut chunk))
            .await
            .expect("read timed out")
            .ok()?;
        if n == 0 {
            return None;
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Some(n)
    }

    /// Reads until EOF and returns everything buffered.
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill().await.is_some() {}
        std::mem::take(&mut self.buffer)
    }
}

/// Encodes a command as a RESP multibulk array.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Length of the first whole reply in `buf`, using redis-protocol's RESP3 decoder for RESP3
/// types and its RESP2 decoder otherwise (its RESP3 decoder rejects RESP2 nulls).
pub fn reply_len(buf: &[u8]) -> Option<usize> {
    if buf.is_empty() {
        return None;
    }
    let resp2 = redis_protocol::resp2::decode::decode_range(buf);
    if let Ok(Some((_, len))) = resp2 {
        return Some(len);
    }
    match redis_protocol::resp3::decode::complete::decode_range(buf) {
        Ok(Some((_, len))) => Some(len),
        _ => None,
    }
}

/// Streams up to this many bytes are shown whole by [`show`].
pub const SHOW_WHOLE: usize = 2048;

/// Bytes for assertion messages, escaped: whole when up to [`SHOW_WHOLE`] bytes (as they are:
/// `+PONG\r\n`), else their size, [`fnv1a`] hash, and quoted head and tail (two long streams
/// differ in the hash at least).
pub fn show(bytes: &[u8]) -> String {
    if bytes.len() <= SHOW_WHOLE {
        bytes.escape_ascii().to_string()
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

/// FNV-1a, to tell large streams apart without printing them.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
