//! Randomized stateful differential test of session tracking in `auth.mode = "proxy"`.
//!
//! Random command sequences mix everything that changes a connection's state (MULTI with the
//! right and the wrong arity, WATCH, EXEC, DISCARD, `CLIENT REPLY ON|OFF|SKIP`, HELLO 2/3 with
//! and without `AUTH`, AUTH right and wrong with and without a user name, RESET, good and bad
//! SELECT, SUBSCRIBE / UNSUBSCRIBE with and without channels, PUBLISH to oneself, MONITOR,
//! `CLIENT SETNAME`) with data commands whose values look like pub/sub traffic (`SET k message`,
//! `RPUSH l subscribe x 1`, `EVAL "return {'subscribe','x',1}" 0`, ...) and commands some users
//! are denied (FLUSHALL, CONFIG GET, EVAL, keys and channels outside a user's patterns).
//!
//! Each sequence runs on a fresh connection straight to a reference Redis that has the same
//! users as the proxy's users file (pipelined at once), then on a fresh connection through the
//! proxy (at once, in random chunks at command boundaries, cut at random bytes, or one command
//! at a time waiting for its replies). Every sequence ends with `RESET`, `AUTH bob b` and
//! `ECHO <sentinel>`, and both sides are read until the sentinel's reply; the two byte streams
//! must be equal after normalising only what differs between two servers: HELLO's connection
//! `id`, MONITOR's timestamp and client address, and the order of the channels an
//! argument-less UNSUBSCRIBE confirms (Redis's hash table order).
//!
//! The generator steps a model of Redis 7.0's connection state (reply suppression flags,
//! MULTI and its queue and dirty flag, WATCHed keys and the data they see, user and
//! authentication, database, protocol, subscriptions, MONITOR; permissions are asked of the
//! reference Redis once with `ACL DRYRUN`). The model is checked against every direct reply
//! (a disagreement is a bug of this test, reported as such). It predicts, for every command,
//! the record the proxy must write: the same arguments in the same order, the user and
//! database Redis used (the state when the command was sent; for an AUTH or HELLO AUTH that
//! succeeds, the user it logged in as, as `acl_auth.rs` pins), and the status (`queued`,
//! `skipped` when `CLIENT REPLY` suppressed the reply, `error`, `ok`; not asserted for a
//! `CLIENT REPLY OFF | SKIP` that Redis refuses, a documented limit, nor for a MONITOR that
//! Redis ignores). A HELLO AUTH may be recorded without its `AUTH user pass` (the HELLO the
//! proxy forwards). After all sequences,
//! `INFO commandstats` of the Redis behind the proxy must count the same calls as the reference
//! for every command the proxy forwards as sent, so no command Redis refused to every user who
//! sent it (FLUSHALL of alice, CONFIG GET of default, ...) reached Redis through the proxy.
//!
//! Not generated, because they are documented deviations or Redis 7.0 writes replies no
//! client can pair:
//! - AUTH / HELLO AUTH inside MULTI: refused in this mode (README, "Identity").
//! - `CLIENT REPLY` inside MULTI: Redis applies it inside EXEC and writes an EXEC array with
//!   fewer elements than announced (README, known limits of pairing).
//! - SUBSCRIBE / UNSUBSCRIBE inside MULTI: Redis writes one EXEC element per channel
//!   (README: "a SUBSCRIBE queued inside MULTI is not counted").
//! - MULTI while in MONITOR: Redis writes monitor lines inside EXEC's array.
//! - CLIENT REPLY OFF|SKIP while in MONITOR: refused by the proxy (README, known limits).
//! - AUTH, HELLO AUTH and ACL WHOAMI while in MONITOR: the proxy answers them itself, so
//!   Redis never shows them to the monitor (credentials never reach Redis, README).
//! - ACL WHOAMI inside MULTI: the proxy answers it itself only outside MULTI; inside, Redis
//!   runs it at EXEC as the service user.
//! - PUBLISH to a channel of one's own inside MULTI after a queued HELLO: Redis 7.0 writes the
//!   message inside EXEC's array, as an extra RESP2 element once HELLO 2 ran. (A RESP3 push
//!   inside EXEC's array, without a HELLO, is generated: RESP3 clients skip pushes.)
//!
//! `RAP_STATEFUL_SEED=<n>` replays another seed, `RAP_STATEFUL_SEQUENCES=<n>` runs more or
//! fewer sequences, `RAP_STATEFUL_ONLY=<index>` runs one sequence of the seed (each sequence
//! has its own seed derived from the base seed and its index), `RAP_STATEFUL_SHOW=1` prints
//! every sequence with what the model expects, `RAP_STATEFUL_MODEL_ONLY=1` only checks the
//! model against the reference (no proxy), `RAP_STATEFUL_SELF_CHECK=1` plays the proxied side
//! against the reference too (checks this harness: sending modes, reading, normalisation; no
//! records), `RAP_STATEFUL_MAX_FAILURES=<n>` changes how many failing sequences end a test (8).
//!
//! A failure shows the seed, the sequence with the model's state before every command and what
//! Redis answered it, the first differing reply (frames around it, escaped, both sides) or the
//! first wrong record, and a one-line summary of the other failing sequences.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use memchr::memmem;
use redis_audit_proxy::event::{CommandRecord, ReplyStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::client::encode_command;
use crate::support::rng::Rng;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

/// The seed when `RAP_STATEFUL_SEED` is not set.
const SEED: u64 = 0x5eed_57a7_ef01_2025;
/// Sequences per test (two tests: the default user open, the default user with a password).
const SEQUENCES: usize = 500;
/// Commands per sequence, before the three of the tail.
const MIN_LEN: usize = 10;
const MAX_LEN: usize = 30;
/// How long the proxied side may keep us waiting for a reply before the sequence fails.
const PROXY_WAIT: Duration = Duration::from_secs(2);
/// How long the direct side may take (a stall there is a bug of this test).
const DIRECT_WAIT: Duration = Duration::from_secs(5);
/// Failing sequences after which a test stops (each may cost a [`PROXY_WAIT`]).
const MAX_FAILURES: usize = 8;

/// Keys: alice may use `app:*` only.
const KEYS: &[&str] = &["app:k", "app:l", "k", "l"];
/// Values that collide with pub/sub words.
const VALUES: &[&str] = &["message", "subscribe", "1", "x"];
/// `(user, password)` for AUTH and HELLO AUTH: right and wrong, a disabled user, no such user.
const CREDENTIALS: &[(&str, &str)] = &[
    ("default", "dpw"),
    ("default", "wrong"),
    ("alice", "a"),
    ("alice", "wrong"),
    ("bob", "b"),
    ("eve", "e"),
    ("nobody", "x"),
];
/// The users that can be logged in (eve is off, nobody does not exist).
const LOGIN_USERS: &[&str] = &["default", "alice", "bob"];

/// One command: its arguments.
type Cmd = Vec<Vec<u8>>;

fn cmd(words: &[&str]) -> Cmd {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

fn show_cmd(c: &Cmd) -> String {
    c.iter().map(|a| a.escape_ascii().to_string()).collect::<Vec<_>>().join(" ")
}

/// Bytes for messages: escaped, cut short when long.
fn show(bytes: &[u8]) -> String {
    let text = bytes.escape_ascii().to_string();
    if text.len() > 600 {
        format!("{}... ({} bytes)", &text[..600], bytes.len())
    } else {
        text
    }
}

// ------------------------------------------------------------------------------------------
// Random numbers.

/// The seed of sequence `index` (splitmix64 of the base seed and the index).
fn sequence_seed(base: u64, index: usize) -> u64 {
    let mut z = base.wrapping_add((index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

// ------------------------------------------------------------------------------------------
// Users, on both sides.

/// The two configurations of the default user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DefaultUser {
    /// `nopass`: every connection starts authenticated.
    Open,
    /// `>dpw`: every connection starts unauthenticated.
    Password,
}

/// `(name, rules)` of every user, as in the users file (one `user` line each).
fn users(default: DefaultUser) -> Vec<(&'static str, Vec<&'static str>)> {
    let password = match default {
        DefaultUser::Open => "nopass",
        DefaultUser::Password => ">dpw",
    };
    vec![
        (
            "default",
            vec![
                "on",
                password,
                "~*",
                "&*",
                "-@all",
                "+@read",
                "+@write",
                "+@connection",
                "+@transaction",
                "+@pubsub",
                "+@scripting",
                "+acl|whoami",
                "-flushall",
            ],
        ),
        (
            "alice",
            vec![
                "on",
                ">a",
                "~app:*",
                "&chan*",
                "-@all",
                "+@read",
                "+@write",
                "+@connection",
                "+@transaction",
                "+@pubsub",
                "+acl|whoami",
                "-flushall",
            ],
        ),
        ("bob", vec!["on", ">b", "~*", "&*", "+@all"]),
        ("eve", vec!["off", ">e", "+@all"]),
    ]
}

/// What the model knows about the users: passwords and, from `ACL DRYRUN` on the reference,
/// which user may run which command of the catalog.
#[derive(Debug)]
struct Policy {
    default: DefaultUser,
    /// `(user, command) -> allowed`, for the users that can log in.
    allowed: HashMap<(String, Cmd), bool>,
}

impl Policy {
    fn credentials_ok(&self, user: &[u8], password: &[u8]) -> bool {
        match user {
            b"default" => self.default == DefaultUser::Open || password == b"dpw",
            b"alice" => password == b"a",
            b"bob" => password == b"b",
            _ => false,
        }
    }

    fn allows(&self, user: &str, c: &Cmd) -> bool {
        let key = (user.to_owned(), permission_key(c));
        *self.allowed.get(&key).unwrap_or_else(|| {
            panic!("no ACL DRYRUN answer for {user} and {} (test bug)", show_cmd(c))
        })
    }
}

/// The catalog form whose permission stands for `c` (the tail's ECHO has a unique argument).
fn permission_key(c: &Cmd) -> Cmd {
    if upper(&c[0]) == "ECHO" {
        return cmd(&["ECHO", "message"]);
    }
    c.clone()
}

// ------------------------------------------------------------------------------------------
// The catalog of commands the generator draws from.

/// A family of commands and its relative weight in the draw.
#[derive(Debug)]
struct Kind {
    name: &'static str,
    weight: usize,
    forms: Vec<Cmd>,
}

fn catalog() -> Vec<Kind> {
    let mut kinds = Vec::new();
    let mut add = |name, weight, forms: Vec<Cmd>| kinds.push(Kind { name, weight, forms });
    add("multi", 7, vec![cmd(&["MULTI"])]);
    add("multi-arity", 2, vec![cmd(&["MULTI", "x"])]);
    add("exec", 6, vec![cmd(&["EXEC"])]);
    add("discard", 2, vec![cmd(&["DISCARD"])]);
    add("watch", 3, KEYS.iter().map(|k| cmd(&["WATCH", k])).collect());
    add(
        "client-reply",
        9,
        ["ON", "ON", "ON", "OFF", "SKIP", "SKIP"]
            .iter()
            .map(|mode| cmd(&["CLIENT", "REPLY", mode]))
            .collect(),
    );
    add(
        "hello",
        5,
        vec![
            cmd(&["HELLO"]),
            cmd(&["HELLO", "2"]),
            cmd(&["HELLO", "3"]),
            cmd(&["HELLO", "3"]),
            cmd(&["HELLO", "3"]),
            cmd(&["HELLO", "4"]),
            cmd(&["HELLO", "3", "SETNAME", "n1"]),
        ],
    );
    let mut hello_auth = Vec::new();
    for proto in ["2", "3"] {
        for (user, password) in CREDENTIALS {
            hello_auth.push(cmd(&["HELLO", proto, "AUTH", user, password]));
        }
    }
    hello_auth.push(cmd(&["HELLO", "3", "AUTH", "alice", "a", "SETNAME", "n2"]));
    hello_auth.push(cmd(&["HELLO", "2", "AUTH", "bob", "b", "SETNAME", "n3"]));
    add("hello-auth", 4, hello_auth);
    let mut auth = vec![cmd(&["AUTH", "dpw"]), cmd(&["AUTH", "wrong"])];
    auth.extend(CREDENTIALS.iter().map(|(user, password)| cmd(&["AUTH", user, password])));
    add("auth", 7, auth);
    add("reset", 3, vec![cmd(&["RESET"])]);
    add("select", 6, ["0", "1", "2", "3", "99", "x"].iter().map(|n| cmd(&["SELECT", n])).collect());
    add(
        "subscribe",
        4,
        vec![
            cmd(&["SUBSCRIBE", "chan1"]),
            cmd(&["SUBSCRIBE", "chan2"]),
            cmd(&["SUBSCRIBE", "chan1", "chan2"]),
            cmd(&["SUBSCRIBE", "news"]),
            cmd(&["SUBSCRIBE", "chan1", "news"]),
        ],
    );
    add(
        "unsubscribe",
        4,
        vec![
            cmd(&["UNSUBSCRIBE"]),
            cmd(&["UNSUBSCRIBE"]),
            cmd(&["UNSUBSCRIBE", "chan1"]),
            cmd(&["UNSUBSCRIBE", "chan1", "chan2"]),
            cmd(&["UNSUBSCRIBE", "news"]),
        ],
    );
    add(
        "publish",
        3,
        vec![
            cmd(&["PUBLISH", "chan1", "message"]),
            cmd(&["PUBLISH", "chan2", "subscribe"]),
            cmd(&["PUBLISH", "news", "m"]),
        ],
    );
    add("monitor", 1, vec![cmd(&["MONITOR"])]);
    add("setname", 1, vec![cmd(&["CLIENT", "SETNAME", "n4"])]);
    add("whoami", 4, vec![cmd(&["ACL", "WHOAMI"])]);
    let mut data = Vec::new();
    for key in KEYS {
        for value in VALUES {
            data.push(cmd(&["SET", key, value]));
        }
        data.push(cmd(&["GET", key]));
        data.push(cmd(&["INCR", key]));
        data.push(cmd(&["DEL", key]));
        data.push(cmd(&["LPUSH", key, "message"]));
        data.push(cmd(&["RPUSH", key, "subscribe", "x", "1"]));
        data.push(cmd(&["LRANGE", key, "0", "-1"]));
        data.push(cmd(&["LRANGE", key, "0", "-1"]));
    }
    data.push(cmd(&["MGET", "app:k", "app:l"]));
    data.push(cmd(&["MGET", "app:k", "k"]));
    data.push(cmd(&["MGET", "k", "l"]));
    for _ in 0..3 {
        data.push(cmd(&["EVAL", "return {'subscribe','x',1}", "0"]));
        data.push(cmd(&["EVAL", "return {'message','c','m'}", "0"]));
        data.push(cmd(&["PING"]));
        data.push(cmd(&["PING", "message"]));
        data.push(cmd(&["ECHO", "message"]));
    }
    add("data", 35, data);
    add("denied", 3, vec![cmd(&["FLUSHALL"]), cmd(&["CONFIG", "GET", "maxmemory"])]);
    kinds
}

/// Commands whose arity is wrong (Redis answers them before anything else).
fn arity_ok(c: &Cmd) -> bool {
    !(upper(&c[0]) == "MULTI" && c.len() != 1)
}

// ------------------------------------------------------------------------------------------
// The model of a Redis 7.0 connection.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Str(Vec<u8>),
    List(usize),
}

#[derive(Debug, Clone, Default)]
struct Multi {
    queued: Vec<Cmd>,
    /// A command was refused while queueing: EXEC answers EXECABORT.
    dirty: bool,
}

/// What a reply must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Any reply that is not an error.
    Any,
    /// An error starting with this text.
    Err(&'static str),
    /// This simple string.
    Status(&'static str),
    /// This bulk string, or a null.
    Bulk(Option<Vec<u8>>),
    /// This integer.
    Int(i64),
    /// A null array (EXEC after a WATCHed key changed).
    Nil,
    /// EXEC's array, element by element.
    Exec(Vec<Self>),
}

/// What Redis writes for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    /// One reply (not written when CLIENT REPLY suppresses it).
    Reply(Expect),
    /// This many (un)subscribe confirmations, written even under CLIENT REPLY OFF | SKIP
    /// (Redis 7.0 writes them as pushes).
    Confirm(usize),
    /// `CLIENT REPLY OFF | SKIP`: no reply by design.
    Silent,
    /// MONITOR while monitoring: Redis ignores it without a reply.
    Nothing,
}

/// The model's prediction for one command.
#[derive(Debug, Clone)]
struct Pred {
    out: Out,
    /// Its reply is suppressed by CLIENT REPLY OFF or SKIP.
    suppressed: bool,
    /// State when the command was read.
    user: String,
    db: u32,
    authed: bool,
    in_multi: bool,
    monitor: bool,
    resp: u8,
    subscribed: usize,
    /// The user its record must carry.
    record_user: String,
}

impl Pred {
    /// The record's status, when it is well defined.
    fn status(&self) -> Option<ReplyStatus> {
        match &self.out {
            Out::Silent => Some(ReplyStatus::Skipped),
            Out::Nothing => None,
            Out::Confirm(_) if self.suppressed => None,
            Out::Confirm(_) => Some(ReplyStatus::Ok),
            Out::Reply(_) if self.suppressed => Some(ReplyStatus::Skipped),
            Out::Reply(Expect::Err(_)) => Some(ReplyStatus::Error),
            Out::Reply(Expect::Status("QUEUED")) => Some(ReplyStatus::Queued),
            Out::Reply(_) => Some(ReplyStatus::Ok),
        }
    }

    fn describe(&self) -> String {
        let out = match &self.out {
            Out::Reply(e) if self.suppressed => format!("(suppressed {})", describe_expect(e)),
            Out::Reply(e) => describe_expect(e),
            Out::Confirm(n) => format!("{n} confirmation(s)"),
            Out::Silent => "no reply (CLIENT REPLY)".to_owned(),
            Out::Nothing => "no reply (already monitoring)".to_owned(),
        };
        let mut state = format!("user={} db={} resp{}", self.user, self.db, self.resp);
        if !self.authed {
            state.push_str(" unauthenticated");
        }
        if self.in_multi {
            state.push_str(" in-multi");
        }
        if self.monitor {
            state.push_str(" monitor");
        }
        if self.subscribed > 0 {
            state.push_str(&format!(" subscribed={}", self.subscribed));
        }
        format!("{state} -> {out}")
    }
}

fn describe_expect(e: &Expect) -> String {
    match e {
        Expect::Any => "reply".to_owned(),
        Expect::Err(text) => format!("-{text}..."),
        Expect::Status(text) => format!("+{text}"),
        Expect::Nil => "nil".to_owned(),
        Expect::Bulk(Some(value)) => format!("\"{}\"", value.escape_ascii()),
        Expect::Bulk(None) => "null".to_owned(),
        Expect::Int(n) => format!(":{n}"),
        Expect::Exec(elements) => {
            format!("[{}]", elements.iter().map(describe_expect).collect::<Vec<_>>().join(", "))
        }
    }
}

/// A Redis 7.0.15 connection, as far as these commands go.
#[derive(Debug, Clone)]
struct Model {
    policy: Arc<Policy>,
    user: String,
    authed: bool,
    db: u32,
    resp: u8,
    multi: Option<Multi>,
    /// `CLIENT_REPLY_OFF`, `CLIENT_REPLY_SKIP` (this command), `CLIENT_REPLY_SKIP_NEXT`.
    off: bool,
    skip: bool,
    skip_next: bool,
    subs: BTreeSet<Vec<u8>>,
    monitor: bool,
    watched: BTreeSet<(u32, Vec<u8>)>,
    /// A WATCHed key changed: EXEC answers nil.
    cas_dirty: bool,
    data: BTreeMap<(u32, Vec<u8>), Value>,
}

impl Model {
    fn new(policy: Arc<Policy>) -> Self {
        let authed = policy.default == DefaultUser::Open;
        Self {
            policy,
            user: "default".to_owned(),
            authed,
            db: 0,
            resp: 2,
            multi: None,
            off: false,
            skip: false,
            skip_next: false,
            subs: BTreeSet::new(),
            monitor: false,
            watched: BTreeSet::new(),
            cas_dirty: false,
            data: BTreeMap::new(),
        }
    }

    /// Runs one command (as `processCommand` and `resetClient` do) and says what Redis writes.
    fn step(&mut self, c: &Cmd) -> Pred {
        let before = Pred {
            out: Out::Nothing,
            suppressed: false,
            user: self.user.clone(),
            db: self.db,
            authed: self.authed,
            in_multi: self.multi.is_some(),
            monitor: self.monitor,
            resp: self.resp,
            subscribed: self.subs.len(),
            record_user: self.user.clone(),
        };
        let (out, logged_in) = self.process(c);
        // Replies are suppressed when they are written, after the command changed the flags.
        let suppressed = self.off || self.skip;
        self.skip = false;
        if self.skip_next {
            self.skip = true;
            self.skip_next = false;
        }
        let record_user = logged_in.unwrap_or_else(|| before.user.clone());
        Pred { out, suppressed, record_user, ..before }
    }

    fn process(&mut self, c: &Cmd) -> (Out, Option<String>) {
        let name = upper(&c[0]);
        if !arity_ok(c) {
            return (self.reject(&name, "ERR wrong number of arguments"), None);
        }
        if !self.authed && !matches!(name.as_str(), "AUTH" | "HELLO" | "RESET") {
            return (self.reject(&name, "NOAUTH"), None);
        }
        if !self.policy.allows(&self.user, c) {
            return (self.reject(&name, "NOPERM"), None);
        }
        if self.resp == 2
            && !self.subs.is_empty()
            && !matches!(name.as_str(), "PING" | "SUBSCRIBE" | "UNSUBSCRIBE" | "RESET")
        {
            return (self.reject(&name, "ERR Can't execute"), None);
        }
        if self.monitor && touches_keyspace(&name) {
            return (self.reject(&name, "ERR Replica can't interact with the keyspace"), None);
        }
        if let Some(multi) = self.multi.as_mut() {
            if !matches!(name.as_str(), "EXEC" | "DISCARD" | "MULTI" | "WATCH" | "RESET") {
                multi.queued.push(c.clone());
                return (Out::Reply(Expect::Status("QUEUED")), None);
            }
        }
        self.call(c, false)
    }

    /// `rejectCommand`: flags the transaction, or aborts it for EXEC.
    fn reject(&mut self, name: &str, error: &'static str) -> Out {
        if name == "EXEC" {
            // `execCommandAbort`, inside MULTI or not: the transaction and the WATCHes go.
            self.end_multi();
            return Out::Reply(Expect::Err("EXECABORT"));
        }
        if let Some(multi) = self.multi.as_mut() {
            multi.dirty = true;
        }
        Out::Reply(Expect::Err(error))
    }

    fn end_multi(&mut self) {
        self.multi = None;
        self.watched.clear();
        self.cas_dirty = false;
    }

    fn touch(&mut self, key: &[u8]) {
        if self.watched.contains(&(self.db, key.to_vec())) {
            self.cas_dirty = true;
        }
    }

    fn call(&mut self, c: &Cmd, in_exec: bool) -> (Out, Option<String>) {
        let reply = |e| (Out::Reply(e), None);
        let error = |text| (Out::Reply(Expect::Err(text)), None);
        let ok = || (Out::Reply(Expect::Status("OK")), None);
        let name = upper(&c[0]);
        let key = (self.db, c.get(1).cloned().unwrap_or_default());
        match name.as_str() {
            "PING" | "ECHO" | "MGET" | "EVAL" | "CONFIG" | "PUBLISH" => reply(Expect::Any),
            "ACL" => reply(Expect::Bulk(Some(self.user.clone().into_bytes()))),
            "SELECT" => {
                let Some(n) = parse_int(&c[1]) else {
                    return error("ERR value is not an integer or out of range");
                };
                if !(0..16).contains(&n) {
                    return error("ERR DB index is out of range");
                }
                self.db = n as u32;
                ok()
            }
            "HELLO" => {
                let mut proto = None;
                if let Some(version) = c.get(1) {
                    match parse_int(version) {
                        None => return error("ERR Protocol version is not an integer"),
                        Some(v @ 2..=3) => proto = Some(v as u8),
                        Some(_) => return error("NOPROTO"),
                    }
                }
                let mut credentials = None;
                let mut at = 2;
                while at < c.len() {
                    let more = c.len() - 1 - at;
                    if upper(&c[at]) == "AUTH" && more >= 2 {
                        credentials = Some((c[at + 1].clone(), c[at + 2].clone()));
                        at += 3;
                    } else if upper(&c[at]) == "SETNAME" && more >= 1 {
                        at += 2;
                    } else {
                        return error("ERR Syntax error in HELLO option");
                    }
                }
                let mut logged_in = None;
                if let Some((user, password)) = credentials {
                    if !self.policy.credentials_ok(&user, &password) {
                        return error("WRONGPASS");
                    }
                    self.user = String::from_utf8(user).unwrap();
                    self.authed = true;
                    logged_in = Some(self.user.clone());
                }
                if !self.authed {
                    return error("NOAUTH HELLO must be called");
                }
                if let Some(proto) = proto {
                    self.resp = proto;
                }
                (Out::Reply(Expect::Any), logged_in)
            }
            "AUTH" => {
                let (user, password) = match c.len() {
                    2 if self.policy.default == DefaultUser::Open => {
                        return error("ERR AUTH <password> called without any password");
                    }
                    2 => (b"default".to_vec(), c[1].clone()),
                    3 => (c[1].clone(), c[2].clone()),
                    _ => return error("ERR syntax error"),
                };
                if !self.policy.credentials_ok(&user, &password) {
                    return error("WRONGPASS");
                }
                self.user = String::from_utf8(user).unwrap();
                self.authed = true;
                (Out::Reply(Expect::Status("OK")), Some(self.user.clone()))
            }
            "RESET" => {
                self.end_multi();
                self.subs.clear();
                self.monitor = false;
                self.user = "default".to_owned();
                self.authed = self.policy.default == DefaultUser::Open;
                self.db = 0;
                self.resp = 2;
                self.off = false;
                self.skip_next = false;
                reply(Expect::Status("RESET"))
            }
            "MULTI" => {
                if self.multi.is_some() {
                    return error("ERR MULTI calls can not be nested");
                }
                self.multi = Some(Multi::default());
                ok()
            }
            "EXEC" => {
                let Some(multi) = self.multi.take() else {
                    return error("ERR EXEC without MULTI");
                };
                let cas_dirty = self.cas_dirty;
                self.end_multi();
                if multi.dirty {
                    return error("EXECABORT");
                }
                if cas_dirty {
                    return reply(Expect::Nil);
                }
                let mut elements = Vec::new();
                for queued in &multi.queued {
                    match self.call(queued, true).0 {
                        Out::Reply(e) => elements.push(e),
                        other => panic!("{other:?} inside EXEC (test bug)"),
                    }
                }
                reply(Expect::Exec(elements))
            }
            "DISCARD" => {
                if self.multi.is_none() {
                    return error("ERR DISCARD without MULTI");
                }
                self.end_multi();
                ok()
            }
            "WATCH" => {
                if self.multi.is_some() {
                    return error("ERR WATCH inside MULTI is not allowed");
                }
                self.watched.insert(key);
                ok()
            }
            "CLIENT" => match upper(&c[1]).as_str() {
                "SETNAME" => ok(),
                "REPLY" => match upper(&c[2]).as_str() {
                    "ON" => {
                        self.off = false;
                        self.skip = false;
                        ok()
                    }
                    "OFF" => {
                        self.off = true;
                        (Out::Silent, None)
                    }
                    _ => {
                        if !self.off {
                            self.skip_next = true;
                        }
                        (Out::Silent, None)
                    }
                },
                other => panic!("CLIENT {other} is not modelled"),
            },
            "SUBSCRIBE" => {
                for channel in &c[1..] {
                    self.subs.insert(channel.clone());
                }
                (Out::Confirm(c.len() - 1), None)
            }
            "UNSUBSCRIBE" => {
                if c.len() == 1 {
                    let count = self.subs.len().max(1);
                    self.subs.clear();
                    return (Out::Confirm(count), None);
                }
                for channel in &c[1..] {
                    self.subs.remove(channel);
                }
                (Out::Confirm(c.len() - 1), None)
            }
            "MONITOR" => {
                if self.monitor {
                    return (Out::Nothing, None);
                }
                if in_exec {
                    return error("ERR MONITOR isn't allowed for DENY BLOCKING client");
                }
                self.monitor = true;
                ok()
            }
            "FLUSHALL" => {
                let existing: Vec<(u32, Vec<u8>)> =
                    self.watched.iter().filter(|k| self.data.contains_key(*k)).cloned().collect();
                if !existing.is_empty() {
                    self.cas_dirty = true;
                }
                self.data.clear();
                ok()
            }
            "SET" => {
                self.data.insert(key.clone(), Value::Str(c[2].clone()));
                self.touch(&c[1]);
                ok()
            }
            "GET" => match self.data.get(&key) {
                Some(Value::List(_)) => error("WRONGTYPE"),
                Some(Value::Str(value)) => reply(Expect::Bulk(Some(value.clone()))),
                None => reply(Expect::Bulk(None)),
            },
            "LRANGE" => match self.data.get(&key) {
                Some(Value::Str(_)) => error("WRONGTYPE"),
                _ => reply(Expect::Any),
            },
            "INCR" => {
                let next = match self.data.get(&key) {
                    None => 1,
                    Some(Value::List(_)) => return error("WRONGTYPE"),
                    Some(Value::Str(value)) => match parse_int(value) {
                        Some(n) => n + 1,
                        None => return error("ERR value is not an integer or out of range"),
                    },
                };
                self.data.insert(key.clone(), Value::Str(next.to_string().into_bytes()));
                self.touch(&c[1]);
                reply(Expect::Int(next))
            }
            "DEL" => {
                let existed = self.data.remove(&key).is_some();
                if existed {
                    self.touch(&c[1]);
                }
                reply(Expect::Int(i64::from(existed)))
            }
            "LPUSH" | "RPUSH" => {
                let length = match self.data.get(&key) {
                    Some(Value::Str(_)) => return error("WRONGTYPE"),
                    Some(Value::List(n)) => *n,
                    None => 0,
                };
                let length = length + c.len() - 2;
                self.data.insert(key.clone(), Value::List(length));
                self.touch(&c[1]);
                reply(Expect::Int(length as i64))
            }
            other => panic!("{other} is not modelled"),
        }
    }
}

/// Commands a MONITOR client may not run ("Replica can't interact with the keyspace").
fn touches_keyspace(name: &str) -> bool {
    matches!(
        name,
        "GET"
            | "MGET"
            | "LRANGE"
            | "SET"
            | "INCR"
            | "DEL"
            | "LPUSH"
            | "RPUSH"
            | "FLUSHALL"
            | "EVAL"
            | "PUBLISH"
    )
}

fn parse_int(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Why `c` is not generated in the model's state (see the module documentation).
fn excluded(m: &Model, c: &Cmd) -> Option<&'static str> {
    let name = upper(&c[0]);
    let hello_auth = name == "HELLO" && c.iter().skip(2).any(|a| upper(a) == "AUTH");
    let sub = c.get(1).map(|a| upper(a)).unwrap_or_default();
    if m.multi.is_some() {
        if name == "AUTH" || hello_auth {
            return Some("AUTH inside MULTI");
        }
        if name == "CLIENT" && sub == "REPLY" {
            return Some("CLIENT REPLY inside MULTI");
        }
        if matches!(name.as_str(), "SUBSCRIBE" | "UNSUBSCRIBE") {
            return Some("SUBSCRIBE inside MULTI");
        }
        if name == "ACL" {
            return Some("ACL WHOAMI inside MULTI");
        }
        let queued_hello = m.multi.iter().flat_map(|q| &q.queued).any(|q| upper(&q[0]) == "HELLO");
        if name == "PUBLISH" && !m.subs.is_empty() && (m.resp == 2 || queued_hello) {
            return Some("PUBLISH to oneself inside MULTI after a queued HELLO");
        }
    }
    if m.monitor && (c == &cmd(&["MULTI"]) || name == "AUTH" || hello_auth || name == "ACL") {
        return Some("MULTI, AUTH or ACL WHOAMI while monitoring");
    }
    if m.monitor
        && name == "CLIENT"
        && sub == "REPLY"
        && c.get(2).map(|m| upper(m)) != Some("ON".into())
    {
        return Some("CLIENT REPLY OFF|SKIP while monitoring");
    }
    None
}

// ------------------------------------------------------------------------------------------
// Generation.

/// One generated sequence and what the model expects of it.
#[derive(Debug)]
struct Sequence {
    index: usize,
    seed: u64,
    cmds: Vec<Cmd>,
    preds: Vec<Pred>,
    /// The ECHO reply that ends both streams.
    sentinel: Vec<u8>,
    mode: Mode,
    /// Random cut points (for [`Mode::Bytes`]) and chunk sizes (for [`Mode::Chunks`]).
    cuts: Vec<usize>,
}

/// How the proxied side sends a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Everything in one write.
    AtOnce,
    /// Groups of whole commands, with short pauses.
    Chunks,
    /// Cut at random bytes (also inside commands), with short pauses.
    Bytes,
    /// One command at a time, each after the replies to the previous ones.
    Lockstep,
}

fn generate(index: usize, seed: u64, policy: &Arc<Policy>, kinds: &[Kind]) -> Sequence {
    let mut rng = Rng::new(seed);
    let mut model = Model::new(policy.clone());
    let total: usize = kinds.iter().map(|k| k.weight).sum();
    let len = MIN_LEN + rng.below(MAX_LEN - MIN_LEN + 1);
    let (mut cmds, mut preds) = (Vec::new(), Vec::new());
    let kind = |name: &str| kinds.iter().find(|k| k.name == name).unwrap();
    while cmds.len() < len {
        // Nudges towards the rarer situations, from the model's state.
        let subscribed = !model.subs.is_empty();
        let nudge = if !model.authed && rng.chance(35) {
            Some(kind(if rng.chance(50) { "auth" } else { "hello-auth" }))
        } else if subscribed && model.resp == 2 && rng.chance(30) {
            Some(kind(if rng.chance(70) { "unsubscribe" } else { "reset" }))
        } else if subscribed && model.resp == 3 && rng.chance(25) {
            Some(kind(if rng.chance(50) { "publish" } else { "data" }))
        } else if model.user == "bob" && !model.monitor && rng.chance(4) {
            Some(kind("monitor"))
        } else {
            None
        };
        let c = if let Some((_, key)) =
            model.watched.iter().next().filter(|_| model.multi.is_none() && rng.chance(10))
        {
            cmd(&["SET", &String::from_utf8_lossy(key), "1"])
        } else {
            let kind = nudge.unwrap_or_else(|| {
                let mut draw = rng.below(total);
                kinds
                    .iter()
                    .find(|k| {
                        let hit = draw < k.weight;
                        draw = draw.saturating_sub(k.weight);
                        hit
                    })
                    .unwrap()
            });
            kind.forms[rng.below(kind.forms.len())].clone()
        };
        if excluded(&model, &c).is_some() {
            continue;
        }
        preds.push(model.step(&c));
        cmds.push(c);
    }
    let sentinel = format!("sentinel-{index}-{:016x}", rng.next());
    for c in [cmd(&["RESET"]), cmd(&["AUTH", "bob", "b"]), cmd(&["ECHO", &sentinel])] {
        preds.push(model.step(&c));
        cmds.push(c);
    }
    let mode = match rng.below(8) {
        0 | 1 => Mode::AtOnce,
        2 | 3 => Mode::Chunks,
        4 => Mode::Bytes,
        _ => Mode::Lockstep,
    };
    let cuts = (0..cmds.len()).map(|_| rng.below(1 << 16)).collect();
    let sentinel = format!("${}\r\n{sentinel}\r\n", sentinel.len()).into_bytes();
    Sequence { index, seed, cmds, preds, sentinel, mode, cuts }
}

// ------------------------------------------------------------------------------------------
// RESP frames of a reply stream.

#[derive(Debug, Clone)]
struct Frame {
    kind: u8,
    /// The first line, without the type byte.
    head: Vec<u8>,
    /// A bulk string's payload.
    payload: Option<Vec<u8>>,
    /// Elements of an aggregate (pushes written inside an aggregate are left out: Redis 7.0
    /// writes a PUBLISH's message push inside EXEC's array).
    children: Vec<Self>,
    null: bool,
    start: usize,
    end: usize,
}

impl Frame {
    fn is_error(&self) -> bool {
        matches!(self.kind, b'-' | b'!')
    }

    fn error_text(&self) -> &[u8] {
        match self.kind {
            b'!' => self.payload.as_deref().unwrap_or_default(),
            _ => &self.head,
        }
    }

    fn first_word(&self) -> &[u8] {
        self.children.first().and_then(|c| c.payload.as_deref()).unwrap_or_default()
    }

    /// A MONITOR line, `+<secs>.<micros> [<db> <addr>] ...`.
    fn is_monitor_line(&self) -> bool {
        self.kind == b'+'
            && self.head.first().is_some_and(u8::is_ascii_digit)
            && memmem::find(&self.head, b" [").is_some()
    }

    /// Written unasked: a monitor line or a RESP3 message push.
    fn is_unsolicited(&self) -> bool {
        self.is_monitor_line() || (self.kind == b'>' && self.first_word() == b"message")
    }

    fn is_confirmation(&self) -> bool {
        matches!(self.kind, b'>' | b'*')
            && self.children.len() == 3
            && matches!(self.first_word(), b"subscribe" | b"unsubscribe")
    }
}

/// The frame starting at `start`: `Ok(None)` when incomplete.
fn parse_frame(buf: &[u8], start: usize) -> Result<Option<Frame>, String> {
    let Some(line_len) = memmem::find(&buf[start..], b"\r\n") else { return Ok(None) };
    let kind = buf[start];
    let head = buf[start + 1..start + line_len].to_vec();
    let mut pos = start + line_len + 2;
    let mut frame =
        Frame { kind, head, payload: None, children: Vec::new(), null: false, start, end: 0 };
    let number = |head: &[u8]| {
        parse_int(head).ok_or_else(|| format!("bad length \"{}\"", head.escape_ascii()))
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {}
        b'$' | b'=' | b'!' => {
            let len = number(&frame.head)?;
            if len < 0 {
                frame.null = true;
            } else {
                let len = len as usize;
                if buf.len() < pos + len + 2 {
                    return Ok(None);
                }
                frame.payload = Some(buf[pos..pos + len].to_vec());
                if &buf[pos + len..pos + len + 2] != b"\r\n" {
                    return Err("bulk string not ended by CRLF".to_owned());
                }
                pos += len + 2;
            }
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n = number(&frame.head)?;
            if n < 0 {
                frame.null = true;
            } else {
                let count = if kind == b'%' { 2 * n as usize } else { n as usize };
                while frame.children.len() < count {
                    let Some(child) = parse_frame(buf, pos)? else { return Ok(None) };
                    pos = child.end;
                    if child.kind != b'>' {
                        frame.children.push(child);
                    }
                }
            }
        }
        other => return Err(format!("unknown type byte 0x{other:02x}")),
    }
    frame.end = pos;
    Ok(Some(frame))
}

/// Every whole frame of `buf`, and an error if what follows them is not RESP.
fn parse_all(buf: &[u8]) -> (Vec<Frame>, Option<String>) {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        match parse_frame(buf, pos) {
            Ok(Some(frame)) => {
                pos = frame.end;
                frames.push(frame);
            }
            Ok(None) => return (frames, Some(format!("incomplete frame at byte {pos}"))),
            Err(error) => return (frames, Some(format!("{error} at byte {pos}"))),
        }
    }
    (frames, None)
}

fn matches_expect(e: &Expect, f: &Frame) -> bool {
    match e {
        Expect::Any => !f.is_error(),
        Expect::Err(prefix) => f.is_error() && f.error_text().starts_with(prefix.as_bytes()),
        Expect::Status(text) => f.kind == b'+' && f.head == text.as_bytes(),
        Expect::Nil => (f.kind == b'*' && f.null) || f.kind == b'_',
        Expect::Bulk(Some(value)) => f.kind == b'$' && f.payload.as_ref() == Some(value),
        Expect::Bulk(None) => (f.kind == b'$' && f.null) || f.kind == b'_',
        Expect::Int(n) => f.kind == b':' && parse_int(&f.head) == Some(*n),
        Expect::Exec(elements) => {
            f.kind == b'*'
                && !f.null
                && f.children.len() == elements.len()
                && elements.iter().zip(&f.children).all(|(e, f)| matches_expect(e, f))
        }
    }
}

/// The direct stream, checked against the model, frame by frame.
#[derive(Debug)]
struct Walk {
    /// The command each frame answers (`None`: monitor line or message push).
    owner: Vec<Option<usize>>,
    /// Frames written once command `i` is answered (for [`Mode::Lockstep`]).
    frames_after: Vec<usize>,
}

fn walk(stream: &[u8], preds: &[Pred]) -> Result<Walk, String> {
    let (frames, error) = parse_all(stream);
    if let Some(error) = error {
        return Err(format!("the direct stream is not RESP: {error}"));
    }
    let mut owner = vec![None; frames.len()];
    let mut frames_after = Vec::new();
    let mut next = 0;
    for (i, pred) in preds.iter().enumerate() {
        let wanted = match &pred.out {
            Out::Reply(_) if !pred.suppressed => 1,
            Out::Confirm(n) => *n,
            _ => 0,
        };
        for _ in 0..wanted {
            while next < frames.len() && frames[next].is_unsolicited() {
                next += 1;
            }
            let Some(frame) = frames.get(next) else {
                return Err(format!("command #{i}: its reply is missing"));
            };
            owner[next] = Some(i);
            next += 1;
            let (fits, what) = match &pred.out {
                Out::Reply(e) => (matches_expect(e, frame), describe_expect(e)),
                _ => (frame.is_confirmation(), "a confirmation".to_owned()),
            };
            if !fits {
                return Err(format!(
                    "command #{i}: expected {what}, Redis wrote \"{}\"",
                    show(&stream[frame.start..frame.end])
                ));
            }
        }
        frames_after.push(next);
    }
    if let Some(extra) = frames[next..].iter().find(|f| !f.is_unsolicited()) {
        return Err(format!(
            "Redis wrote a reply nobody expected: \"{}\"",
            show(&stream[extra.start..extra.end])
        ));
    }
    Ok(Walk { owner, frames_after })
}

// ------------------------------------------------------------------------------------------
// Normalisation: only what differs between any two connections.

/// HELLO's `id` value and MONITOR's timestamp and client address replaced, and the channels
/// of consecutive UNSUBSCRIBE confirmations in sorted order (an argument-less UNSUBSCRIBE
/// confirms in the order of Redis's hash table, which differs between two servers). MONITOR
/// lines are compared as a sorted list after the rest: they arrive unasked, and a reply the
/// proxy writes itself may come before the line Redis writes just after a previous command.
fn normalise(stream: &[u8]) -> Vec<u8> {
    let sorted = sort_unsubscribe_runs(&crate::differential::normalise(stream, &[]));
    let (frames, _) = parse_all(&sorted);
    let (mut rest, mut lines) = (Vec::new(), Vec::new());
    for frame in &frames {
        let bytes = &sorted[frame.start..frame.end];
        if bytes.starts_with(b"+<time> [") {
            lines.push(bytes.to_vec());
        } else {
            rest.extend_from_slice(bytes);
        }
    }
    let parsed: usize = frames.last().map_or(0, |frame| frame.end);
    rest.extend_from_slice(&sorted[parsed..]);
    lines.sort();
    rest.extend_from_slice(b"\n-- monitor lines --\n");
    for line in lines {
        rest.extend_from_slice(&line);
    }
    rest
}

fn sort_unsubscribe_runs(stream: &[u8]) -> Vec<u8> {
    let (frames, _) = parse_all(stream);
    let is_unsubscribe = |f: &Frame| f.is_confirmation() && f.first_word() == b"unsubscribe";
    let mut out = Vec::with_capacity(stream.len());
    let mut k = 0;
    while k < frames.len() {
        let run = frames[k..].iter().take_while(|f| is_unsubscribe(f)).count();
        if run == 0 {
            out.extend_from_slice(&stream[frames[k].start..frames[k].end]);
            k += 1;
            continue;
        }
        let run = &frames[k..k + run];
        let mut names: Vec<&[u8]> =
            run.iter().map(|f| &stream[f.children[1].start..f.children[1].end]).collect();
        names.sort_unstable();
        for (f, name) in run.iter().zip(names) {
            out.extend_from_slice(&stream[f.start..f.children[1].start]);
            out.extend_from_slice(name);
            out.extend_from_slice(&stream[f.children[1].end..f.end]);
        }
        k += run.len();
    }
    out.extend_from_slice(&stream[frames.last().map_or(0, |f| f.end)..]);
    out
}

// ------------------------------------------------------------------------------------------
// Running a sequence.

/// What one side received.
#[derive(Debug)]
struct Received {
    bytes: Vec<u8>,
    local: SocketAddr,
    /// Why reading stopped before the sentinel, if it did.
    stalled: Option<String>,
}

/// Reads into `buf` until `done` or `deadline`; false on a timeout or a close.
async fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    mut done: impl FnMut(&[u8]) -> bool,
) -> Result<(), String> {
    let mut chunk = vec![0u8; 64 * 1024];
    while !done(buf) {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err("timed out".to_owned()),
            Ok(Ok(0)) | Ok(Err(_)) => return Err("connection closed".to_owned()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(())
}

/// Whole frames at the front of `buf` (all of them if what follows is not RESP).
fn frame_count(buf: &[u8]) -> usize {
    let (frames, error) = parse_all(buf);
    match error {
        Some(e) if !e.starts_with("incomplete") => usize::MAX,
        _ => frames.len(),
    }
}

async fn run_direct(addr: SocketAddr, seq: &Sequence) -> Received {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the reference");
    stream.set_nodelay(true).unwrap();
    let local = stream.local_addr().unwrap();
    let bytes: Vec<u8> = seq.cmds.iter().flat_map(encode).collect();
    stream.write_all(&bytes).await.unwrap();
    let mut buf = Vec::new();
    let deadline = Instant::now() + DIRECT_WAIT;
    let stalled =
        read_until(&mut stream, &mut buf, deadline, |b| b.ends_with(&seq.sentinel)).await.err();
    Received { bytes: buf, local, stalled }
}

fn encode(c: &Cmd) -> Vec<u8> {
    let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
    encode_command(&args)
}

async fn run_proxied(addr: SocketAddr, seq: &Sequence, walk: &Walk) -> Received {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the proxy");
    stream.set_nodelay(true).unwrap();
    let local = stream.local_addr().unwrap();
    let encoded: Vec<Vec<u8>> = seq.cmds.iter().map(encode).collect();
    let all: Vec<u8> = encoded.concat();
    let mut buf = Vec::new();
    let pause = || tokio::time::sleep(Duration::from_micros(300));
    match seq.mode {
        Mode::AtOnce => stream.write_all(&all).await.unwrap(),
        Mode::Chunks => {
            let mut i = 0;
            let mut cut = seq.cuts.iter();
            while i < encoded.len() {
                let size = 1 + cut.next().unwrap_or(&0) % 4;
                let end = (i + size).min(encoded.len());
                stream.write_all(&encoded[i..end].concat()).await.unwrap();
                pause().await;
                i = end;
            }
        }
        Mode::Bytes => {
            let mut cuts: Vec<usize> = seq.cuts.iter().map(|c| 1 + c % all.len().max(2)).collect();
            cuts.truncate(6);
            cuts.push(all.len());
            cuts.sort_unstable();
            cuts.dedup();
            let mut start = 0;
            for end in cuts {
                if end > start && end <= all.len() {
                    stream.write_all(&all[start..end]).await.unwrap();
                    pause().await;
                    start = end;
                }
            }
        }
        Mode::Lockstep => {
            for (i, bytes) in encoded.iter().enumerate() {
                stream.write_all(bytes).await.unwrap();
                let want = walk.frames_after[i];
                let deadline = Instant::now() + PROXY_WAIT;
                if let Err(why) =
                    read_until(&mut stream, &mut buf, deadline, |b| frame_count(b) >= want).await
                {
                    let stalled = format!(
                        "{why} waiting for the replies up to command #{i} ({want} frames, got {})",
                        frame_count(&buf)
                    );
                    return Received { bytes: buf, local, stalled: Some(stalled) };
                }
            }
        }
    }
    let deadline = Instant::now() + PROXY_WAIT;
    let stalled = read_until(&mut stream, &mut buf, deadline, |b| b.ends_with(&seq.sentinel))
        .await
        .err()
        .map(|why| format!("{why} waiting for the sentinel's reply"));
    Received { bytes: buf, local, stalled }
}

// ------------------------------------------------------------------------------------------
// Reports.

fn describe_sequence(seq: &Sequence) -> String {
    let mut out =
        format!("sequence {} (seed {}, proxied side sent {:?}):\n", seq.index, seq.seed, seq.mode);
    for (i, (c, p)) in seq.cmds.iter().zip(&seq.preds).enumerate() {
        out.push_str(&format!("  #{i:02} {:<42} {}\n", show_cmd(c), p.describe()));
    }
    out
}

fn frame_label(walk: &Walk, at: usize, seq: &Sequence) -> String {
    match walk.owner.get(at) {
        Some(Some(i)) => format!("reply to #{i} {}", show_cmd(&seq.cmds[*i])),
        Some(None) => "unsolicited (monitor line or message push)".to_owned(),
        None => "past the end of the direct stream".to_owned(),
    }
}

/// Where the proxied stream first differs from the direct one, frame by frame.
/// A one-line summary and the details.
fn describe_difference(
    seq: &Sequence,
    walk: &Walk,
    direct: &[u8],
    proxied: &[u8],
) -> (String, String) {
    let (direct, proxied) = (normalise(direct), normalise(proxied));
    let (ours, _) = parse_all(&direct);
    let (theirs, error) = parse_all(&proxied);
    let bytes = |stream: &[u8], f: &Frame| stream[f.start..f.end].to_vec();
    let at = (0..ours.len().max(theirs.len()))
        .find(|&k| match (ours.get(k), theirs.get(k)) {
            (Some(a), Some(b)) => bytes(&direct, a) != bytes(&proxied, b),
            _ => true,
        })
        .unwrap_or(0);
    let cell = |frames: &[Frame], stream: &[u8], k: usize| {
        frames.get(k).map_or_else(|| "(none)".to_owned(), |f| show(&bytes(stream, f)))
    };
    let state = match walk.owner.get(at) {
        Some(Some(i)) => format!(" [{}]", seq.preds[*i].describe()),
        _ => String::new(),
    };
    let summary = format!(
        "bytes differ at frame {at}, {}{state}: direct {}, proxied {}",
        frame_label(walk, at, seq),
        cell(&ours, &direct, at),
        cell(&theirs, &proxied, at)
    );
    let mut out = format!(
        "first difference at frame {at} ({}); proxied stream{}:\n",
        frame_label(walk, at, seq),
        error.map(|e| format!(" (then not RESP: {e})")).unwrap_or_default()
    );
    for k in at.saturating_sub(3)..(at + 4) {
        let mark = if k == at { ">>" } else { "  " };
        if k >= ours.len() && k >= theirs.len() {
            break;
        }
        out.push_str(&format!(
            "{mark} frame {k} [{}]\n     direct : {}\n     proxied: {}\n",
            frame_label(walk, k, seq),
            cell(&ours, &direct, k),
            cell(&theirs, &proxied, k),
        ));
    }
    let byte = direct
        .iter()
        .zip(proxied.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(direct.len().min(proxied.len()));
    out.push_str(&format!(
        "normalised streams first differ at byte {byte}\n  direct : {}\n  proxied: {}\n",
        show(&direct),
        show(&proxied)
    ));
    (summary, out)
}

/// HELLO without its `AUTH user pass` option: the proxy records the HELLO it forwards.
fn without_hello_auth(c: &Cmd) -> Cmd {
    if upper(&c[0]) != "HELLO" {
        return c.clone();
    }
    let mut out = c[..c.len().min(2)].to_vec();
    let mut at = 2;
    while at < c.len() {
        if upper(&c[at]) == "AUTH" && at + 2 < c.len() {
            at += 3;
        } else {
            out.push(c[at].clone());
            at += 1;
        }
    }
    out
}

fn record_user(r: &CommandRecord) -> String {
    String::from_utf8_lossy(&r.user).into_owned()
}

/// The records of one sequence against the model's.
fn check_records(seq: &Sequence, records: &[CommandRecord]) -> Result<(), String> {
    for (i, (c, p)) in seq.cmds.iter().zip(&seq.preds).enumerate() {
        let Some(r) = records.get(i) else {
            return Err(format!(
                "{} records for {} commands: none for #{i} {}",
                records.len(),
                seq.cmds.len(),
                show_cmd(c)
            ));
        };
        let args: Cmd = r.args.iter().map(|a| a.to_vec()).collect();
        let mut problems = Vec::new();
        if &args != c && args != without_hello_auth(c) {
            problems.push(format!("it is the record of `{}`", show_cmd(&args)));
        }
        if record_user(r) != p.record_user {
            problems.push(format!("user {} (Redis used {})", record_user(r), p.record_user));
        }
        if r.db != p.db {
            problems.push(format!("db {} (Redis used {})", r.db, p.db));
        }
        // README, known limits of pairing: a CLIENT REPLY OFF | SKIP that Redis refuses is
        // assumed to succeed; its error is forwarded but not attributed.
        let refused_reply_mode = upper(&c[0]) == "CLIENT"
            && matches!(upper(&c[2]).as_str(), "OFF" | "SKIP")
            && matches!(p.out, Out::Reply(Expect::Err(_)));
        if let Some(status) = p.status().filter(|_| !refused_reply_mode) {
            if r.status != status {
                problems.push(format!("status {:?} (expected {status:?})", r.status));
            }
        }
        if !problems.is_empty() {
            return Err(format!(
                "record #{i} (`{}`): {}; records so far: {}",
                show_cmd(c),
                problems.join(", "),
                records[..=i]
                    .iter()
                    .map(|r| format!(
                        "{}({} db{} {:?})",
                        String::from_utf8_lossy(&r.args[0]),
                        record_user(r),
                        r.db,
                        r.status
                    ))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    if records.len() != seq.cmds.len() {
        return Err(format!("{} records for {} commands", records.len(), seq.cmds.len()));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Set-up.

/// The reference Redis, the Redis behind the proxy, the proxy, and admin connections to both.
struct Setup {
    _scratch: Scratch,
    reference: RedisServer,
    _behind: RedisServer,
    proxy: TestProxy,
    reference_admin: RawClient,
    behind_admin: RawClient,
}

async fn expect_ok(client: &mut RawClient, args: &[&str]) {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let reply = client.call(&args).await;
    assert_eq!(reply, b"+OK\r\n", "{args:?}: {}", show(&reply));
}

async fn start(default: DefaultUser) -> Setup {
    let scratch = Scratch::new("stateful");
    std::fs::create_dir_all(scratch.path()).unwrap();
    let users_file = scratch.path().join("users.acl");
    let users = users(default);
    let text: String =
        users.iter().map(|(name, rules)| format!("user {name} {}\n", rules.join(" "))).collect();
    std::fs::write(&users_file, text).unwrap();

    let reference = RedisServer::start(&[]);
    let mut reference_admin = RawClient::connect(reference.addr).await;
    expect_ok(
        &mut reference_admin,
        &["ACL", "SETUSER", "admin", "on", ">adminpw", "~*", "&*", "+@all"],
    )
    .await;
    expect_ok(&mut reference_admin, &["AUTH", "admin", "adminpw"]).await;
    for (name, rules) in &users {
        let mut args = vec!["ACL", "SETUSER", *name, "reset"];
        args.extend(rules.iter().copied());
        expect_ok(&mut reference_admin, &args).await;
    }

    let behind = RedisServer::start(&["--requirepass", "service-secret"]);
    let mut behind_admin = RawClient::connect(behind.addr).await;
    expect_ok(&mut behind_admin, &["AUTH", "service-secret"]).await;
    let toml = format!(
        "[auth]\nmode = \"proxy\"\nusers_file = \"{}\"\nupstream_user = \"default\"\nupstream_password = \"service-secret\"\n\
         [audit]\ngroup_refusals_secs = 0\n",
        users_file.display()
    );
    let proxy = TestProxy::start_with(behind.addr, &toml).await;
    Setup { _scratch: scratch, reference, _behind: behind, proxy, reference_admin, behind_admin }
}

/// Asks the reference, with `ACL DRYRUN`, which user may run which command.
async fn dry_run(admin: &mut RawClient, default: DefaultUser, kinds: &[Kind]) -> Policy {
    let mut forms: Vec<Cmd> = kinds.iter().flat_map(|k| k.forms.iter().cloned()).collect();
    forms.extend([cmd(&["RESET"]), cmd(&["AUTH", "bob", "b"])]);
    forms.retain(arity_ok);
    forms.sort();
    forms.dedup();
    let mut questions = Vec::new();
    let mut pipeline = Vec::new();
    for user in LOGIN_USERS {
        for form in &forms {
            let mut args: Vec<&[u8]> = vec![b"ACL", b"DRYRUN", user.as_bytes()];
            args.extend(form.iter().map(Vec::as_slice));
            pipeline.extend(encode_command(&args));
            questions.push(((*user).to_owned(), form.clone()));
        }
    }
    admin.send(&pipeline).await;
    let mut allowed = HashMap::new();
    for question in questions {
        let reply = admin.read_reply().await;
        let verdict = match reply.first() {
            Some(b'+') => true,
            Some(b'$') => false,
            _ => panic!("ACL DRYRUN {} {}: {}", question.0, show_cmd(&question.1), show(&reply)),
        };
        allowed.insert(question, verdict);
    }
    Policy { default, allowed }
}

/// Empties databases 0-3 on both sides (FLUSHDB, so that any FLUSHALL in the command
/// statistics is a client's).
async fn flush(setup: &mut Setup) {
    let mut pipeline = Vec::new();
    for db in ["0", "1", "2", "3"] {
        pipeline.extend(encode_command(&[b"SELECT", db.as_bytes()]));
        pipeline.extend(encode_command(&[b"FLUSHDB"]));
    }
    for admin in [&mut setup.reference_admin, &mut setup.behind_admin] {
        admin.send(&pipeline).await;
        for _ in 0..8 {
            let reply = admin.read_reply().await;
            assert_eq!(reply, b"+OK\r\n", "flush: {}", show(&reply));
        }
    }
}

async fn commandstats(admin: &mut RawClient) -> BTreeMap<String, u64> {
    let reply = admin.call(&[b"INFO", b"commandstats"]).await;
    String::from_utf8_lossy(&reply)
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.strip_prefix("calls=")?.split(',').next()?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Commands the proxy does not forward as sent (it answers AUTH, HELLO AUTH and the ACL
/// commands itself and logs in on its own), the admin connections' INFO, and the proxy's
/// start-up questions.
fn not_compared(name: &str) -> bool {
    // `client|reply`: the proxy follows each CLIENT REPLY OFF|SKIP with its own CLIENT REPLY ON.
    // `monitor`: a MONITOR from a client already monitoring, which Redis ignores without a
    // reply, the proxy answers (with nothing) itself.
    matches!(name, "auth" | "hello" | "info" | "client|reply" | "monitor")
        || name.starts_with("acl|")
        || name.starts_with("command")
}

/// Situations the generator must keep producing (counted over a run and printed).
const SITUATIONS: &[&str] = &[
    "MULTI refused, then AUTH / CLIENT REPLY / SUBSCRIBE",
    "EXEC applied a queued SELECT",
    "EXEC applied a queued HELLO",
    "EXEC nil after a WATCHed key changed",
    "EXECABORT",
    "state changed under CLIENT REPLY OFF/SKIP",
    "confirmations under CLIENT REPLY OFF/SKIP",
    "RESET reply skipped",
    "AUTH or HELLO AUTH logged in",
    "AUTH or HELLO AUTH refused",
    "refused by the RESP2 pub/sub context",
    "refused with NOPERM",
    "refused with NOAUTH",
    "message push to oneself",
    "pub/sub-looking data reply while subscribed (RESP3)",
    "MONITOR on",
    "monitor line",
    "argument-less UNSUBSCRIBE of several channels",
];

/// Counts the situations of [`SITUATIONS`] one sequence produces.
fn coverage(seq: &Sequence, covered: &mut BTreeMap<&'static str, usize>) {
    let mut hit = |what: &'static str| *covered.entry(what).or_default() += 1;
    let mut multi_refused = false;
    for (i, (c, p)) in seq.cmds.iter().zip(&seq.preds).enumerate() {
        let name = upper(&c[0]);
        let next = seq.preds.get(i + 1);
        let error =
            |prefix: &str| matches!(&p.out, Out::Reply(Expect::Err(e)) if e.starts_with(prefix));
        if name == "MULTI" && !p.in_multi && matches!(&p.out, Out::Reply(Expect::Err(_))) {
            multi_refused = true;
        }
        if multi_refused && matches!(name.as_str(), "AUTH" | "CLIENT" | "SUBSCRIBE" | "HELLO") {
            hit("MULTI refused, then AUTH / CLIENT REPLY / SUBSCRIBE");
            multi_refused = false;
        }
        if let (Some(next), "EXEC") = (next, name.as_str()) {
            if matches!(&p.out, Out::Reply(Expect::Exec(_))) && next.db != p.db {
                hit("EXEC applied a queued SELECT");
            }
            if matches!(&p.out, Out::Reply(Expect::Exec(_))) && next.resp != p.resp {
                hit("EXEC applied a queued HELLO");
            }
        }
        if matches!(&p.out, Out::Reply(Expect::Nil)) {
            hit("EXEC nil after a WATCHed key changed");
        }
        if error("EXECABORT") {
            hit("EXECABORT");
        }
        if let Some(next) = next.filter(|_| p.suppressed) {
            let changed = (next.db, &next.user, next.resp, next.in_multi, next.monitor)
                != (p.db, &p.user, p.resp, p.in_multi, p.monitor);
            if changed && name != "RESET" {
                hit("state changed under CLIENT REPLY OFF/SKIP");
            }
            if matches!(p.out, Out::Confirm(_)) {
                hit("confirmations under CLIENT REPLY OFF/SKIP");
            }
        }
        if name == "RESET" && p.suppressed {
            hit("RESET reply skipped");
        }
        if p.record_user != p.user || (name == "AUTH" && p.status() == Some(ReplyStatus::Ok)) {
            hit("AUTH or HELLO AUTH logged in");
        }
        if error("WRONGPASS") {
            hit("AUTH or HELLO AUTH refused");
        }
        if error("ERR Can't execute") {
            hit("refused by the RESP2 pub/sub context");
        }
        if error("NOPERM") {
            hit("refused with NOPERM");
        }
        if error("NOAUTH") {
            hit("refused with NOAUTH");
        }
        let subscribed_to = |channel: &[u8]| {
            p.subscribed > 0 && seq.cmds[..i].iter().any(|c| c.contains(&channel.to_vec()))
        };
        if name == "PUBLISH" && p.resp == 3 && !p.in_multi && subscribed_to(&c[1]) {
            hit("message push to oneself");
        }
        if matches!(name.as_str(), "EVAL" | "LRANGE") && p.resp == 3 && p.subscribed > 0 {
            hit("pub/sub-looking data reply while subscribed (RESP3)");
        }
        if name == "MONITOR" && matches!(&p.out, Out::Reply(Expect::Status("OK"))) {
            hit("MONITOR on");
        }
        if p.monitor && !p.suppressed && !error("") {
            hit("monitor line");
        }
        if c.len() == 1 && name == "UNSUBSCRIBE" && matches!(p.out, Out::Confirm(n) if n > 1) {
            hit("argument-less UNSUBSCRIBE of several channels");
        }
    }
}

// ------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_sessions_default_user_open() {
    run(DefaultUser::Open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_sessions_default_user_with_password() {
    run(DefaultUser::Password).await;
}

async fn run(default: DefaultUser) {
    crate::require_redis!();
    let started = Instant::now();
    let base = env_number("RAP_STATEFUL_SEED").unwrap_or(SEED);
    let count = env_number("RAP_STATEFUL_SEQUENCES").map_or(SEQUENCES, |n| n as usize);
    let only = env_number("RAP_STATEFUL_ONLY").map(|n| n as usize);
    let show_all = std::env::var_os("RAP_STATEFUL_SHOW").is_some();
    let model_only = std::env::var_os("RAP_STATEFUL_MODEL_ONLY").is_some();
    let self_check = std::env::var_os("RAP_STATEFUL_SELF_CHECK").is_some();
    let max_failures = env_number("RAP_STATEFUL_MAX_FAILURES").map_or(MAX_FAILURES, |n| n as usize);
    eprintln!(
        "stateful ({default:?} default user): seed {base} (RAP_STATEFUL_SEED), {count} sequences"
    );

    let mut setup = start(default).await;
    let kinds = catalog();
    let policy = Arc::new(dry_run(&mut setup.reference_admin, default, &kinds).await);

    let mut failures: Vec<(usize, String, String)> = Vec::new();
    let mut ran = 0;
    let mut commands = 0;
    let mut covered: BTreeMap<&'static str, usize> = BTreeMap::new();
    for index in 0..count {
        if only.is_some_and(|only| only != index) {
            continue;
        }
        let seq = generate(index, sequence_seed(base, index), &policy, &kinds);
        if show_all {
            eprintln!("{}", describe_sequence(&seq));
        }
        ran += 1;
        commands += seq.cmds.len();
        coverage(&seq, &mut covered);
        flush(&mut setup).await;
        let direct = run_direct(setup.reference.addr, &seq).await;
        let walk = match (&direct.stalled, walk(&direct.bytes, &seq.preds)) {
            (None, Ok(walk)) => walk,
            (stalled, walked) => panic!(
                "the test's model of Redis disagrees with Redis itself (a bug of this test, not \
                 of the proxy): seed {base}, {}{}\nstalled: {stalled:?}\ndirect stream: {}",
                describe_sequence(&seq),
                walked.err().unwrap_or_default(),
                show(&direct.bytes)
            ),
        };
        if model_only {
            continue;
        }
        let before = setup.proxy.sink.records().len();
        let proxied = if self_check {
            flush(&mut setup).await;
            run_proxied(setup.reference.addr, &seq, &walk).await
        } else {
            run_proxied(setup.proxy.addr, &seq, &walk).await
        };
        let failure = if normalise(&direct.bytes) != normalise(&proxied.bytes) {
            let (summary, details) =
                describe_difference(&seq, &walk, &direct.bytes, &proxied.bytes);
            let stalled = proxied.stalled.as_ref().map(|s| format!(" (proxied side: {s})"));
            Some((summary, format!("the bytes differ{}\n{details}", stalled.unwrap_or_default())))
        } else if self_check {
            None
        } else {
            let records: Vec<CommandRecord> = setup.proxy.sink.records()[before..]
                .iter()
                .filter(|r| r.client_addr == proxied.local)
                .cloned()
                .collect();
            check_records(&seq, &records).err().map(|e| {
                let summary =
                    format!("record differs: {}", e.split("; records so far").next().unwrap_or(&e));
                (summary, format!("the records differ: {e}"))
            })
        };
        if let Some((summary, failure)) = failure {
            failures.push((index, summary, format!("{}{failure}", describe_sequence(&seq))));
            if failures.len() >= max_failures {
                break;
            }
        }
    }
    // Let the last connections end before reading the statistics.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reference_stats = commandstats(&mut setup.reference_admin).await;
    let behind_stats = commandstats(&mut setup.behind_admin).await;
    setup.proxy.shutdown().await;
    eprintln!(
        "stateful ({default:?} default user): {ran} sequences, {commands} commands, {} failing, \
         in {:?}",
        failures.len(),
        started.elapsed()
    );
    eprintln!("stateful ({default:?} default user): situations generated: {covered:?}");
    // Every command forwarded as sent ran as often behind the proxy as on the reference: none
    // that Redis refused to everyone who sent it reached Redis through the proxy.
    let names: BTreeSet<&String> = reference_stats.keys().chain(behind_stats.keys()).collect();
    let (mut differences, mut excess) = (Vec::new(), Vec::new());
    for name in names.into_iter().filter(|name| !not_compared(name)) {
        let theirs = reference_stats.get(name).copied().unwrap_or(0);
        let ours = behind_stats.get(name).copied().unwrap_or(0);
        let line = format!("  {name}: {ours} calls behind the proxy, {theirs} on the reference");
        if ours > theirs {
            excess.push(line.clone());
        }
        if ours != theirs {
            differences.push(line);
        }
    }

    if let Some((index, _, first)) = failures.first() {
        let others: Vec<String> = failures[1..]
            .iter()
            .map(|(i, summary, _)| format!("  sequence {i}: {summary}"))
            .collect();
        let excess = if excess.is_empty() || model_only || self_check {
            String::new()
        } else {
            format!(
                "\nRan more often behind the proxy than on the reference (forwarded although \
                 Redis would have refused them?):\n{}",
                excess.join("\n")
            )
        };
        panic!(
            "{} of {ran} sequences differ (stopping after {max_failures}); seed {base} \
             ({default:?} default user), replay one with RAP_STATEFUL_SEED={base} \
             RAP_STATEFUL_ONLY={index}\n\nFIRST: {first}\nOTHERS:\n{}{excess}",
            failures.len(),
            others.join("\n")
        );
    }
    if only.is_none() && count >= SEQUENCES {
        let missing: Vec<&str> = SITUATIONS
            .iter()
            .copied()
            .filter(|s| !covered.contains_key(s))
            .filter(|s| default == DefaultUser::Password || !s.contains("NOAUTH"))
            .collect();
        assert!(missing.is_empty(), "the generator no longer produces {missing:?}");
    }
    if model_only || self_check {
        return;
    }
    for denied in ["flushall", "config|get", "monitor", "eval"] {
        if !reference_stats.contains_key(denied) {
            assert!(!behind_stats.contains_key(denied), "{denied} reached Redis through the proxy");
        }
    }
    assert!(
        differences.is_empty(),
        "INFO commandstats differ (seed {base}):\n{}\nreference: {reference_stats:?}\nbehind the \
         proxy: {behind_stats:?}",
        differences.join("\n")
    );
}
