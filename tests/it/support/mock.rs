//! A scripted fake Redis for the faults a real server cannot produce (a reply cut short, bytes
//! that are not RESP, another version's command table): it frames each request and answers
//! what a script says.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::support::client::reply_len;

/// What [`MockRedis`] does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Writes these bytes and reads the next request.
    Reply(Vec<u8>),
    /// Writes these bytes (a partial reply, say), then closes the connection.
    ReplyAndClose(Vec<u8>),
}

/// The script: the answer to one request, given its arguments (`[b"GET", b"k"]`).
pub type Script = dyn Fn(&[Vec<u8>]) -> Answer + Send + Sync;

/// A stand-in for Redis on a free loopback port, answering every request of every connection
/// by its script; it stops accepting when dropped.
#[derive(Debug)]
pub struct MockRedis {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MockRedis {
    /// Starts one answering by `script`.
    pub async fn start(script: impl Fn(&[Vec<u8>]) -> Answer + Send + Sync + 'static) -> Self {
        let script: Arc<Script> = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, script.clone()));
            }
        });
        Self { addr, task }
    }

    /// One that misbehaves on cue: `PING` → `+PONG`; `HALF` → half of a bulk reply, then the
    /// close; `GARBAGE` → `@@@\r\n` (not RESP), leaving the connection open; `BADTAIL` → an
    /// array whose second element is garbage; anything else → an error.
    pub async fn faulty() -> Self {
        Self::start(|args| {
            let name = args.first().map(Vec::as_slice).unwrap_or_default();
            match name {
                b"PING" => Answer::Reply(b"+PONG\r\n".to_vec()),
                b"HALF" => Answer::ReplyAndClose(b"$10\r\nhello".to_vec()),
                b"GARBAGE" => Answer::Reply(b"@@@\r\n".to_vec()),
                b"BADTAIL" => Answer::Reply(b"*2\r\n$1\r\na\r\n@@@\r\n".to_vec()),
                _ => Answer::Reply(b"-ERR fake upstream\r\n".to_vec()),
            }
        })
        .await
    }
}

impl Drop for MockRedis {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers the requests of one connection until the peer closes or the script closes.
async fn serve(mut stream: TcpStream, script: Arc<Script>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(len) = reply_len(&buffer) else {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let request: Vec<u8> = buffer.drain(..len).collect();
        let (bytes, close) = match script(&request_args(&request)) {
            Answer::Reply(bytes) => (bytes, false),
            Answer::ReplyAndClose(bytes) => (bytes, true),
        };
        if stream.write_all(&bytes).await.is_err() || close {
            return;
        }
    }
}

/// The arguments of one multibulk request (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n` → `GET`, `k`);
/// none when it is not a multibulk array of bulk strings.
pub fn request_args(request: &[u8]) -> Vec<Vec<u8>> {
    fn line(bytes: &[u8], at: &mut usize) -> Option<Vec<u8>> {
        let end = *at + bytes.get(*at..)?.windows(2).position(|w| w == b"\r\n")?;
        let text = bytes[*at..end].to_vec();
        *at = end + 2;
        Some(text)
    }
    fn parse(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
        let mut at = 0;
        let count: usize =
            std::str::from_utf8(line(bytes, &mut at)?.strip_prefix(b"*")?).ok()?.parse().ok()?;
        let mut args = Vec::with_capacity(count);
        for _ in 0..count {
            let len: usize = std::str::from_utf8(line(bytes, &mut at)?.strip_prefix(b"$")?)
                .ok()?
                .parse()
                .ok()?;
            args.push(bytes.get(at..at + len)?.to_vec());
            at += len + 2;
        }
        Some(args)
    }
    parse(request).unwrap_or_default()
}
