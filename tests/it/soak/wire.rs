//! One soak connection on the wire: commands sent as a pipeline, replies read with a deadline,
//! and what each command got back noted for the audit accounting — never a panic on a closed
//! or silent connection (faults make both normal).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::support::client::{encode_command, reply_len, show};

/// Longest a client waits for a reply (or for a write to be taken) before the soak counts it
/// as hung. Faults last at most 2 s each and never overlap, so this is generous.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(30);

/// Keys and channels of soak commands start with this, then name a client and a counter.
pub const TOKEN_PREFIX: &str = "soakt:";

/// The soak's clients connect from this address: the churn waves from another, so that their
/// keyless records are not taken for the clients'; and not from 127.0.0.1, where Redis and the
/// collector are restarted on their ports (a client's local port there would block them).
pub const CLIENT_IP: [u8; 4] = [127, 0, 0, 3];

/// How a command is found in the trail: by its token (a key or channel no other client uses)
/// and its name, or, for a command without keys, by its client's port (the records'
/// `client.port`; a port is reused by later connections, which then count together) and its
/// name. Not by a connection name: `CLIENT SETNAME` would pin every client to an upstream
/// connection of its own with `upstream.pool = "shared"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKey {
    Token { token: String, command: String },
    Keyless { port: u16, command: String },
}

/// What came back for a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A reply from Redis (forwarded by the proxy).
    Upstream,
    /// An error the proxy wrote itself (upstream unavailable, audit trail unavailable).
    Proxy,
    /// Nothing: the connection closed first.
    Nothing,
}

/// One command sent, and what it got.
#[derive(Debug, Clone)]
pub struct Sent {
    pub key: RecordKey,
    pub answer: Answer,
}

/// What a reply from Redis must be.
#[derive(Debug, Clone)]
pub enum Expect {
    Exact(Vec<u8>),
    Integer,
}

/// A command to send.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub args: Vec<Vec<u8>>,
    pub key: RecordKey,
    pub expect: Expect,
}

impl Cmd {
    /// A command found by `token` (one of its keys or channels).
    pub fn keyed(args: &[&[u8]], token: &str, expect: Expect) -> Self {
        let key = RecordKey::Token { token: token.to_owned(), command: name_of(args) };
        Self { args: args.iter().map(|a| a.to_vec()).collect(), key, expect }
    }

    /// A command without keys, found by its client's `port`.
    pub fn keyless(args: &[&[u8]], port: u16, expect: Expect) -> Self {
        let key = RecordKey::Keyless { port, command: name_of(args) };
        Self { args: args.iter().map(|a| a.to_vec()).collect(), key, expect }
    }
}

/// The command's name as a record writes it (lower case).
pub fn name_of(args: &[&[u8]]) -> String {
    String::from_utf8_lossy(args[0]).to_lowercase()
}

/// How a pipeline ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Every command got a reply.
    Answered { all_upstream: bool },
    /// The connection closed (or reset) before every reply came.
    Closed,
    /// Nothing came within [`REPLY_DEADLINE`]: what was awaited.
    Hung(String),
}

/// Counts of one client (or of all, once merged).
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: Vec<Sent>,
    pub connections: u64,
    pub connect_errors: u64,
    /// Connections the proxy closed (EOF or reset) while the client was using them.
    pub closes: u64,
    pub upstream_replies: u64,
    pub proxy_errors: u64,
    /// Pub/sub messages received by the pattern subscribers.
    pub messages: u64,
    /// Stalled (slowloris) connections the proxy closed for idleness, within the deadline.
    pub stalls_closed: u64,
    /// What waited past its deadline.
    pub hangs: Vec<String>,
    /// Replies from Redis that were not what Redis answers: count and the first few.
    pub wrong: u64,
    pub wrong_examples: Vec<String>,
}

impl Tally {
    pub fn merge(&mut self, other: Self) {
        self.sent.extend(other.sent);
        self.connections += other.connections;
        self.connect_errors += other.connect_errors;
        self.closes += other.closes;
        self.upstream_replies += other.upstream_replies;
        self.proxy_errors += other.proxy_errors;
        self.messages += other.messages;
        self.stalls_closed += other.stalls_closed;
        self.hangs.extend(other.hangs);
        self.wrong += other.wrong;
        if self.wrong_examples.len() < 10 {
            self.wrong_examples.extend(other.wrong_examples);
        }
    }

    pub fn wrong_reply(&mut self, what: String) {
        self.wrong += 1;
        if self.wrong_examples.len() < 10 {
            self.wrong_examples.push(what);
        }
    }
}

/// True for the errors the proxy writes itself (README: "Upstream down", `on_error`).
pub fn is_proxy_error(reply: &[u8]) -> bool {
    reply.starts_with(b"-ERR upstream ") || reply.starts_with(b"-ERR audit trail unavailable")
}

/// A connection to the proxy.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

/// Why a read gave nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadFail {
    Closed,
    Deadline,
}

impl Conn {
    /// Connects from `from` within [`REPLY_DEADLINE`]; `Err(true)` when the deadline passed.
    pub async fn open(from: [u8; 4], addr: SocketAddr) -> Result<Self, bool> {
        let connect = async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((from, 0)))?;
            socket.connect(addr).await
        };
        match timeout(REPLY_DEADLINE, connect).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true).unwrap();
                Ok(Self { stream, buffer: Vec::new() })
            }
            Ok(Err(_)) => Err(false),
            Err(_) => Err(true),
        }
    }

    /// The local port: the records' `client.port`.
    pub fn port(&self) -> u16 {
        self.stream.local_addr().map_or(0, |addr| addr.port())
    }

    /// Writes `bytes` within [`REPLY_DEADLINE`].
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ReadFail> {
        match timeout(REPLY_DEADLINE, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ReadFail::Closed),
            Err(_) => Err(ReadFail::Deadline),
        }
    }

    /// The next whole reply, if it comes by `deadline`.
    pub async fn read_reply(&mut self, deadline: Instant) -> Result<Vec<u8>, ReadFail> {
        loop {
            if let Some(len) = reply_len(&self.buffer) {
                return Ok(self.buffer.drain(..len).collect());
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) => return Err(ReadFail::Closed),
                Ok(Ok(n)) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(_) => return Err(ReadFail::Deadline),
            }
        }
    }

    /// Sends `cmds` as one pipeline and reads their replies, noting each in `tally`; replies
    /// from Redis are checked against their `expect` when the whole pipeline reached Redis
    /// (a pipeline cut by a fault may legitimately get other replies).
    pub async fn pipeline(&mut self, cmds: Vec<Cmd>, tally: &mut Tally) -> Ended {
        let mut bytes = Vec::new();
        for cmd in &cmds {
            let args: Vec<&[u8]> = cmd.args.iter().map(Vec::as_slice).collect();
            bytes.extend(encode_command(&args));
        }
        let mut replies = Vec::with_capacity(cmds.len());
        let mut ended = None;
        match self.write(&bytes).await {
            Ok(()) => {}
            Err(ReadFail::Closed) => ended = Some(Ended::Closed),
            Err(ReadFail::Deadline) => ended = Some(Ended::Hung(describe("writing", &cmds[0]))),
        }
        for cmd in &cmds {
            if ended.is_some() {
                tally.sent.push(Sent { key: cmd.key.clone(), answer: Answer::Nothing });
                continue;
            }
            match self.read_reply(Instant::now() + REPLY_DEADLINE).await {
                Ok(reply) => {
                    let answer = if is_proxy_error(&reply) {
                        tally.proxy_errors += 1;
                        Answer::Proxy
                    } else {
                        tally.upstream_replies += 1;
                        Answer::Upstream
                    };
                    tally.sent.push(Sent { key: cmd.key.clone(), answer });
                    replies.push(reply);
                }
                Err(ReadFail::Closed) => {
                    ended = Some(Ended::Closed);
                    tally.sent.push(Sent { key: cmd.key.clone(), answer: Answer::Nothing });
                }
                Err(ReadFail::Deadline) => {
                    ended = Some(Ended::Hung(describe("the reply to", cmd)));
                    tally.sent.push(Sent { key: cmd.key.clone(), answer: Answer::Nothing });
                }
            }
        }
        if let Some(ended) = ended {
            return ended;
        }
        let all_upstream = !replies.iter().any(|reply| is_proxy_error(reply));
        if all_upstream {
            for (cmd, reply) in cmds.iter().zip(&replies) {
                if !cmd.expect.matches(reply) {
                    let words: Vec<String> =
                        cmd.args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
                    tally.wrong_reply(format!("{words:?} got {}", show(reply)));
                }
            }
        }
        Ended::Answered { all_upstream }
    }
}

impl Expect {
    fn matches(&self, reply: &[u8]) -> bool {
        match self {
            Self::Exact(bytes) => reply == bytes.as_slice(),
            Self::Integer => reply.starts_with(b":"),
        }
    }
}

fn describe(what: &str, cmd: &Cmd) -> String {
    let words: Vec<String> =
        cmd.args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    format!("{what} {words:?} took longer than {REPLY_DEADLINE:?}")
}

/// RESP2 bulk string.
pub fn bulk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}
