//! The soak's clients: workers running a random mix (SET/GET with random values checked,
//! pipelines, MULTI/EXEC, BLPOP with short timeouts, PUBLISH, SUBSCRIBE), pattern subscribers
//! receiving what is published, and slowloris clients (a byte every few seconds, or a command
//! never finished). Each reconnects when the proxy closes it, until the run's end.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::{sleep, sleep_until, Instant};

use super::subject::IDLE_TIMEOUT;
use super::wire::{
    bulk, Answer, Cmd, Conn, Ended, Expect, ReadFail, RecordKey, Sent, Tally, CLIENT_IP,
    REPLY_DEADLINE, TOKEN_PREFIX,
};
use crate::support::rng::Rng;

/// The channel pattern subscribers listen to; workers PUBLISH to `soakt:news:<token>`.
const NEWS: &[u8] = b"soakt:news:*";

/// Where and until when a client runs.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub proxy: SocketAddr,
    /// When it connects first (connections are spread over a ramp).
    pub start: Instant,
    /// When it stops starting anything new.
    pub end: Instant,
    /// Mean pause between a worker's operations.
    pub think: Duration,
}

/// One client's connection: its name (in its tokens), its port and a counter for its tokens.
struct Session {
    conn: Conn,
    name: String,
    port: u16,
    next: u64,
}

impl Session {
    /// Connects; `None` (counted) when it fails.
    async fn open(plan: &Plan, name: String, tally: &mut Tally) -> Option<Self> {
        let conn = match Conn::open(CLIENT_IP, plan.proxy).await {
            Ok(conn) => conn,
            Err(hung) => {
                tally.connect_errors += 1;
                if hung {
                    tally.hangs.push(format!("connecting {name}"));
                }
                return None;
            }
        };
        tally.connections += 1;
        Some(Self { port: conn.port(), conn, name, next: 0 })
    }

    fn token(&mut self) -> String {
        self.next += 1;
        format!("{TOKEN_PREFIX}{}:{}", self.name, self.next)
    }
}

fn exact(bytes: &[u8]) -> Expect {
    Expect::Exact(bytes.to_vec())
}

/// A random operation of the mix, as one pipeline.
fn operation(session: &mut Session, rng: &mut Rng) -> Vec<Cmd> {
    match rng.below(6) {
        // SET then GET of a random value: the value must come back.
        0 => {
            let key = session.token();
            let len = 1 + rng.below(64);
            let value = rng.fill(len);
            vec![
                Cmd::keyed(&[b"SET", key.as_bytes(), &value], &key, exact(b"+OK\r\n")),
                Cmd::keyed(&[b"GET", key.as_bytes()], &key, Expect::Exact(bulk(&value))),
            ]
        }
        // A pipeline of 16 INCRBYs, each on a key of its own.
        1 => (0..16)
            .map(|_| {
                let key = session.token();
                let by = (1 + rng.below(1000)).to_string();
                let reply = format!(":{by}\r\n").into_bytes();
                Cmd::keyed(&[b"INCRBY", key.as_bytes(), by.as_bytes()], &key, Expect::Exact(reply))
            })
            .collect(),
        // A transaction.
        2 => {
            let (a, b) = (session.token(), session.token());
            let value = rng.text(32);
            let exec_reply = b"*2\r\n+OK\r\n:1\r\n";
            vec![
                Cmd::keyless(&[b"MULTI"], session.port, exact(b"+OK\r\n")),
                Cmd::keyed(&[b"SET", a.as_bytes(), &value], &a, exact(b"+QUEUED\r\n")),
                Cmd::keyed(&[b"INCR", b.as_bytes()], &b, exact(b"+QUEUED\r\n")),
                Cmd::keyless(&[b"EXEC"], session.port, exact(exec_reply)),
            ]
        }
        // BLPOP with a 0.1 s timeout: on an empty list it times out, after an RPUSH it pops.
        3 => {
            let key = session.token();
            if rng.chance(50) {
                vec![Cmd::keyed(&[b"BLPOP", key.as_bytes(), b"0.1"], &key, exact(b"*-1\r\n"))]
            } else {
                let mut popped = b"*2\r\n".to_vec();
                popped.extend(bulk(key.as_bytes()));
                popped.extend(bulk(b"v"));
                vec![
                    Cmd::keyed(&[b"RPUSH", key.as_bytes(), b"v"], &key, exact(b":1\r\n")),
                    Cmd::keyed(&[b"BLPOP", key.as_bytes(), b"0.1"], &key, Expect::Exact(popped)),
                ]
            }
        }
        // PUBLISH to a channel the pattern subscribers receive.
        4 => {
            let channel = format!("{TOKEN_PREFIX}news:{}", session.token());
            let message = rng.text(32);
            vec![Cmd::keyed(&[b"PUBLISH", channel.as_bytes(), &message], &channel, Expect::Integer)]
        }
        // SUBSCRIBE, PING in subscribed mode, UNSUBSCRIBE.
        _ => {
            let channel = session.token();
            let confirm = |kind: &str, count: &str| {
                let mut reply = b"*3\r\n".to_vec();
                reply.extend(bulk(kind.as_bytes()));
                reply.extend(bulk(channel.as_bytes()));
                reply.extend(format!(":{count}\r\n").as_bytes());
                reply
            };
            let (subscribed, unsubscribed) =
                (confirm("subscribe", "1"), confirm("unsubscribe", "0"));
            vec![
                Cmd::keyed(
                    &[b"SUBSCRIBE", channel.as_bytes()],
                    &channel,
                    Expect::Exact(subscribed),
                ),
                Cmd::keyless(&[b"PING"], session.port, exact(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")),
                Cmd::keyed(
                    &[b"UNSUBSCRIBE", channel.as_bytes()],
                    &channel,
                    Expect::Exact(unsubscribed),
                ),
            ]
        }
    }
}

/// Counts how a pipeline ended badly.
fn note_end(ended: &Ended, tally: &mut Tally) {
    match ended {
        Ended::Answered { .. } => {}
        Ended::Closed => tally.closes += 1,
        Ended::Hung(what) => tally.hangs.push(what.clone()),
    }
}

/// A moment before reconnecting (0–1 s), so that the clients of a restarted Redis do not all
/// come back at once.
async fn back_off(rng: &mut Rng) {
    sleep(Duration::from_millis(rng.below(1000) as u64)).await;
}

/// A worker: operations of the mix with random pauses, until the plan's end.
pub async fn worker(id: usize, plan: Plan, seed: u64) -> Tally {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    sleep_until(plan.start).await;
    let mut connections = 0;
    'connect: while Instant::now() < plan.end {
        connections += 1;
        let Some(mut session) =
            Session::open(&plan, format!("{id}-{connections}"), &mut tally).await
        else {
            back_off(&mut rng).await;
            continue;
        };
        loop {
            let pause =
                Duration::from_millis(rng.below(2 * plan.think.as_millis() as usize + 1) as u64);
            if Instant::now() + pause >= plan.end {
                break 'connect;
            }
            sleep(pause).await;
            let cmds = operation(&mut session, &mut rng);
            let ended = session.conn.pipeline(cmds, &mut tally).await;
            note_end(&ended, &mut tally);
            match ended {
                Ended::Answered { .. } => {}
                Ended::Closed => {
                    back_off(&mut rng).await;
                    continue 'connect;
                }
                Ended::Hung(_) => return tally,
            }
        }
    }
    tally
}

/// A pattern subscriber: PSUBSCRIBE to what workers publish, then counts messages until the
/// plan's end.
pub async fn subscriber(id: usize, plan: Plan, seed: u64) -> Tally {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    sleep_until(plan.start).await;
    let mut connections = 0;
    while Instant::now() < plan.end {
        connections += 1;
        let name = format!("sub{id}-{connections}");
        let Some(mut session) = Session::open(&plan, name, &mut tally).await else {
            back_off(&mut rng).await;
            continue;
        };
        let mut confirm = b"*3\r\n".to_vec();
        confirm.extend(bulk(b"psubscribe"));
        confirm.extend(bulk(NEWS));
        confirm.extend(b":1\r\n");
        let psubscribe = Cmd::keyless(&[b"PSUBSCRIBE", NEWS], session.port, Expect::Exact(confirm));
        let ended = session.conn.pipeline(vec![psubscribe], &mut tally).await;
        note_end(&ended, &mut tally);
        if ended != (Ended::Answered { all_upstream: true }) {
            back_off(&mut rng).await;
            continue;
        }
        // Messages come when they come: wait for them until the end, not for a deadline.
        loop {
            match session.conn.read_reply(plan.end).await {
                Ok(message) if message.starts_with(b"*4\r\n$8\r\npmessage\r\n") => {
                    tally.messages += 1
                }
                Ok(other) => tally
                    .wrong_reply(format!("a subscriber got {}", String::from_utf8_lossy(&other))),
                Err(ReadFail::Deadline) => return tally,
                Err(ReadFail::Closed) => {
                    tally.closes += 1;
                    back_off(&mut rng).await;
                    break;
                }
            }
        }
    }
    tally
}

/// A slowloris client that sends one byte every 2 s: each command takes a minute or so to
/// arrive, and the proxy must keep serving everyone else meanwhile (and not close it: it is
/// not idle).
pub async fn dripper(id: usize, plan: Plan, seed: u64) -> Tally {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    sleep_until(plan.start).await;
    let mut connections = 0;
    'connect: while Instant::now() < plan.end {
        connections += 1;
        let Ok(mut conn) = Conn::open(CLIENT_IP, plan.proxy).await else {
            tally.connect_errors += 1;
            back_off(&mut rng).await;
            continue;
        };
        tally.connections += 1;
        for n in 0.. {
            let key = format!("{TOKEN_PREFIX}drip{id}-{connections}:{n}");
            let bytes = crate::support::client::encode_command(&[b"SET", key.as_bytes(), b"slow"]);
            for byte in bytes {
                sleep(Duration::from_secs(2)).await;
                if Instant::now() >= plan.end {
                    break 'connect; // the command never finished: nothing to account
                }
                if conn.write(&[byte]).await.is_err() {
                    tally.closes += 1;
                    continue 'connect;
                }
            }
            match conn.read_reply(Instant::now() + REPLY_DEADLINE).await {
                Ok(reply) => {
                    let answer = if super::wire::is_proxy_error(&reply) {
                        tally.proxy_errors += 1;
                        Answer::Proxy
                    } else {
                        tally.upstream_replies += 1;
                        Answer::Upstream
                    };
                    tally.sent.push(Sent { key: slow_set(&key), answer });
                }
                Err(fail) => {
                    tally.sent.push(Sent { key: slow_set(&key), answer: Answer::Nothing });
                    if fail == ReadFail::Deadline {
                        tally.hangs.push(format!("the reply to dripper {id}'s SET"));
                        return tally;
                    }
                    tally.closes += 1;
                    continue 'connect;
                }
            }
        }
    }
    tally
}

fn slow_set(token: &str) -> RecordKey {
    RecordKey::Token { token: token.to_owned(), command: "set".to_owned() }
}

/// How long after its last byte a stalled client may stay open: the proxy's idle timeout,
/// plus a margin for a loaded machine (its timer, a busy runtime).
pub const STALL_DEADLINE: Duration = Duration::from_secs(IDLE_TIMEOUT.as_secs() + 15);

/// A slowloris client that sends half a command and then nothing: the proxy must close it
/// within [`STALL_DEADLINE`] (Redis's `timeout` rule: a client with a partial command is idle).
pub async fn staller(plan: Plan, seed: u64) -> Tally {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    sleep_until(plan.start).await;
    // Only a stall that can be closed before the run's end is started.
    while Instant::now() + STALL_DEADLINE < plan.end {
        let Ok(mut conn) = Conn::open(CLIENT_IP, plan.proxy).await else {
            tally.connect_errors += 1;
            back_off(&mut rng).await;
            continue;
        };
        tally.connections += 1;
        if conn.write(b"*2\r\n$3\r\nGET\r\n$").await.is_err() {
            tally.closes += 1;
            continue;
        }
        match conn.read_reply(Instant::now() + STALL_DEADLINE).await {
            Err(ReadFail::Closed) => tally.stalls_closed += 1,
            Err(ReadFail::Deadline) => {
                tally.hangs.push(format!("a stalled client still open after {STALL_DEADLINE:?}"));
                return tally;
            }
            Ok(reply) => tally
                .wrong_reply(format!("a stalled client got {}", String::from_utf8_lossy(&reply))),
        }
    }
    tally
}
