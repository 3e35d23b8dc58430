//! The scripts of the differential transparency suite (run by [`crate::differential`]).
//!
//! A [`Script`] is a sequence of [`Step`]s on one or more connections. The runner plays it
//! against a real redis-server directly and through the proxy and compares what every
//! connection received. Scripts are grouped by topic; each group runs in its own test with its
//! own redis-server. Every script must be deterministic against a real Redis: multi-connection
//! interleavings are sequenced with sentinels (`sync`), `wait_for` and `wait_blocked`, never
//! with sleeps alone.

use crate::support::client::encode_command;
use crate::support::rng::Rng;

mod connection;
mod protocol;
mod pubsub;
mod transactions;

pub use connection::*;
pub use protocol::*;
pub use pubsub::*;
pub use transactions::*;

/// One thing the runner does.
#[derive(Clone)]
pub enum Step {
    /// Writes `bytes` on `conn`, in separate writes cut at `splits` (offsets into `bytes`).
    Send { conn: usize, bytes: Vec<u8>, splits: Vec<usize> },
    /// Writes `build(id)` on `conn`, `id` being the client id learned on `id_of`.
    SendWithId { conn: usize, id_of: usize, build: fn(u64) -> Vec<u8> },
    /// Sends `CLIENT ID` on `conn` and remembers the id (its reply is normalised).
    LearnId(usize),
    /// Sends `ECHO token` (or `PING token`, for RESP2 subscribed mode) on `conn` and reads
    /// until its reply arrived: everything sent before on `conn` has been answered.
    Sync { conn: usize, ping: bool, token: String },
    /// Reads on `conn` until `pattern` arrived (searched after the previous wait's match).
    WaitFor { conn: usize, pattern: Vec<u8> },
    /// Polls Redis (on the admin connection) until this many clients are blocked.
    WaitBlocked(u64),
    /// Sleeps this many milliseconds.
    Sleep(u64),
    /// Reads on `conn` until nothing new arrived for a quiet period.
    Quiet(usize),
    /// Reads on `conn` until the peer closes it.
    Closes(usize),
}

impl Step {
    /// A one-line description for failure messages (never the whole payload).
    pub fn describe(&self) -> String {
        match self {
            Self::Send { conn, bytes, splits } => {
                let shown: Vec<u8> = bytes.iter().copied().take(60).collect();
                let more = if bytes.len() > 60 { "..." } else { "" };
                format!(
                    "send on {conn} ({} bytes, {} cuts): \"{}\"{more}",
                    bytes.len(),
                    splits.len(),
                    shown.escape_ascii()
                )
            }
            Self::SendWithId { conn, id_of, build } => {
                format!("send on {conn} with the id of {id_of}: \"{}\"", build(0).escape_ascii())
            }
            Self::LearnId(conn) => format!("CLIENT ID on {conn}"),
            Self::Sync { conn, ping, token } => {
                let verb = if *ping { "PING" } else { "ECHO" };
                format!("sync on {conn} ({verb} {token})")
            }
            Self::WaitFor { conn, pattern } => {
                format!("wait on {conn} for \"{}\"", pattern.escape_ascii())
            }
            Self::WaitBlocked(count) => format!("wait for {count} blocked clients"),
            Self::Sleep(ms) => format!("sleep {ms} ms"),
            Self::Quiet(conn) => format!("read on {conn} until quiet"),
            Self::Closes(conn) => format!("read on {conn} until closed"),
        }
    }
}

/// A named byte script; built with the methods below.
#[derive(Clone)]
pub struct Script {
    pub name: &'static str,
    pub steps: Vec<Step>,
    /// Patterns the direct stream of a connection must contain (one of each list): proof that
    /// the script exercises what its name says, whatever the proxy does.
    pub expects: Vec<(usize, Vec<Vec<u8>>)>,
    syncs: usize,
}

impl Script {
    pub fn new(name: &'static str) -> Self {
        Self { name, steps: Vec::new(), expects: Vec::new(), syncs: 0 }
    }

    /// How many connections the script uses.
    pub fn connections(&self) -> usize {
        let highest = self.steps.iter().map(|step| match step {
            Step::Send { conn, .. }
            | Step::SendWithId { conn, .. }
            | Step::Sync { conn, .. }
            | Step::WaitFor { conn, .. } => *conn,
            Step::LearnId(conn) | Step::Quiet(conn) | Step::Closes(conn) => *conn,
            Step::WaitBlocked(_) | Step::Sleep(_) => 0,
        });
        highest.max().unwrap_or(0) + 1
    }

    fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// Sends on connection 0 in one write.
    pub fn send(self, bytes: impl AsRef<[u8]>) -> Self {
        self.send_on(0, bytes)
    }

    pub fn send_on(self, conn: usize, bytes: impl AsRef<[u8]>) -> Self {
        self.send_split(conn, bytes, Vec::new())
    }

    /// Sends in several writes, cut at `splits`.
    pub fn send_split(self, conn: usize, bytes: impl AsRef<[u8]>, splits: Vec<usize>) -> Self {
        self.step(Step::Send { conn, bytes: bytes.as_ref().to_vec(), splits })
    }

    pub fn send_with_id(self, conn: usize, id_of: usize, build: fn(u64) -> Vec<u8>) -> Self {
        self.step(Step::SendWithId { conn, id_of, build })
    }

    pub fn learn_id(self, conn: usize) -> Self {
        self.step(Step::LearnId(conn))
    }

    /// `ECHO sync:N` on connection 0.
    pub fn sync(self) -> Self {
        self.sync_on(0)
    }

    pub fn sync_on(self, conn: usize) -> Self {
        self.sentinel(conn, false)
    }

    /// `PING sync:N`: the sentinel that works in RESP2 subscribed mode.
    pub fn ping_sync_on(self, conn: usize) -> Self {
        self.sentinel(conn, true)
    }

    fn sentinel(mut self, conn: usize, ping: bool) -> Self {
        self.syncs += 1;
        let token = format!("sync:{}", self.syncs);
        self.step(Step::Sync { conn, ping, token })
    }

    /// Waits on `monitor` until the MONITOR line of the last sentinel arrived.
    pub fn wait_monitored_sync(self, monitor: usize) -> Self {
        let pattern = format!("\"sync:{}\"\r\n", self.syncs).into_bytes();
        self.wait_for(monitor, pattern)
    }

    pub fn wait_for(self, conn: usize, pattern: impl AsRef<[u8]>) -> Self {
        self.step(Step::WaitFor { conn, pattern: pattern.as_ref().to_vec() })
    }

    pub fn wait_blocked(self, count: u64) -> Self {
        self.step(Step::WaitBlocked(count))
    }

    pub fn sleep(self, ms: u64) -> Self {
        self.step(Step::Sleep(ms))
    }

    pub fn quiet(self, conn: usize) -> Self {
        self.step(Step::Quiet(conn))
    }

    pub fn closes(self, conn: usize) -> Self {
        self.step(Step::Closes(conn))
    }

    /// The direct stream of `conn` must contain `pattern`.
    pub fn expect(mut self, conn: usize, pattern: impl AsRef<[u8]>) -> Self {
        self.expects.push((conn, vec![pattern.as_ref().to_vec()]));
        self
    }

    /// The direct stream of `conn` must contain Redis's `redis` or Valkey 8's `valkey` form of
    /// the same reply.
    pub fn expect_either(mut self, conn: usize, redis: &str, valkey: &str) -> Self {
        self.expects.push((conn, vec![redis.as_bytes().to_vec(), valkey.as_bytes().to_vec()]));
        self
    }
}

/// One multibulk command.
pub fn cmd(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode_command(&args)
}

/// One multibulk command with binary arguments.
pub fn bcmd(args: &[&[u8]]) -> Vec<u8> {
    encode_command(args)
}

/// Several multibulk commands, concatenated.
pub fn cmds(list: &[&[&str]]) -> Vec<u8> {
    list.iter().flat_map(|args| cmd(args)).collect()
}

/// `count` distinct cut points in `1..len`, sorted.
pub fn random_splits(len: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let mut cuts: Vec<usize> = (0..count).map(|_| 1 + rng.below(len - 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Cut points at the awkward places of a RESP byte stream: between `\r` and `\n`, right
/// after a `*` or `$` (inside a length), and in the middle of a length or a payload; about
/// `count` of them, picked pseudo-randomly.
pub fn awkward_splits(bytes: &[u8], count: usize, seed: u64) -> Vec<usize> {
    let candidates: Vec<usize> = (1..bytes.len())
        .filter(|&at| {
            bytes[at - 1] == b'\r'
                || matches!(bytes[at - 1], b'*' | b'$')
                || (bytes[at - 1].is_ascii_digit() && bytes[at].is_ascii_digit())
        })
        .collect();
    let mut rng = Rng::new(seed);
    let mut cuts: Vec<usize> = (0..count).map(|_| *rng.pick(&candidates)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Every offset: one write per byte.
pub fn every_byte(bytes: &[u8]) -> Vec<usize> {
    (1..bytes.len()).collect()
}

/// `count` pseudo-random bytes.
pub fn random_bytes(count: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).fill(count)
}

/// Every byte value once, 0 to 255.
fn all_bytes() -> Vec<u8> {
    (0..=255u8).collect()
}

/// 1,000 commands of mixed kinds (multibulk and inline, replies of every RESP2 type,
/// errors included).
pub fn thousand_commands() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..1000 {
        let key = format!("key:{}", i % 37);
        let list = format!("list:{}", i % 3);
        let value = format!("value-{i}");
        let number = i.to_string();
        let part = match i % 10 {
            0 => cmd(&["SET", &key, &value]),
            1 => cmd(&["GET", &key]),
            2 => cmd(&["INCR", &format!("counter:{}", i % 5)]),
            3 => cmd(&["RPUSH", &list, &number]),
            4 => format!("ECHO \"inline {i}\"\r\n").into_bytes(),
            5 => cmd(&["LRANGE", &list, "-3", "-1"]),
            6 => cmd(&["HSET", "hash", &key, &number]),
            7 => cmd(&["INCR", &key]),
            8 => format!("EXISTS {key} nokey\r\n").into_bytes(),
            _ => cmd(&["GET", "missing"]),
        };
        out.extend_from_slice(&part);
    }
    out
}
