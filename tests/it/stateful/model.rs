//! The model of a Redis 7.0 connection: reply suppression, MULTI, WATCH, user, database,
//! protocol, subscriptions, MONITOR; what it expects of every reply and record.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    Str(Vec<u8>),
    List(usize),
}

#[derive(Debug, Clone, Default)]
pub(super) struct Multi {
    pub(super) queued: Vec<Cmd>,
    /// A command was refused while queueing: EXEC answers EXECABORT.
    pub(super) dirty: bool,
}

/// What a reply must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expect {
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
pub(super) enum Out {
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
pub(super) struct Pred {
    pub(super) out: Out,
    /// Its reply is suppressed by CLIENT REPLY OFF or SKIP.
    pub(super) suppressed: bool,
    /// State when the command was read.
    pub(super) user: String,
    pub(super) db: u32,
    pub(super) authed: bool,
    pub(super) in_multi: bool,
    pub(super) monitor: bool,
    pub(super) resp: u8,
    pub(super) subscribed: usize,
    /// The user its record must carry.
    pub(super) record_user: String,
}

impl Pred {
    /// The record's status, when it is well defined.
    pub(super) fn status(&self) -> Option<ReplyStatus> {
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

    pub(super) fn describe(&self) -> String {
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

pub(super) fn describe_expect(e: &Expect) -> String {
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
pub(super) struct Model {
    pub(super) policy: Arc<Policy>,
    pub(super) user: String,
    pub(super) authed: bool,
    pub(super) db: u32,
    pub(super) resp: u8,
    pub(super) multi: Option<Multi>,
    /// `CLIENT_REPLY_OFF`, `CLIENT_REPLY_SKIP` (this command), `CLIENT_REPLY_SKIP_NEXT`.
    pub(super) off: bool,
    pub(super) skip: bool,
    skip_next: bool,
    pub(super) subs: BTreeSet<Vec<u8>>,
    pub(super) monitor: bool,
    pub(super) watched: BTreeSet<(u32, Vec<u8>)>,
    /// A WATCHed key changed: EXEC answers nil.
    cas_dirty: bool,
    pub(super) data: BTreeMap<(u32, Vec<u8>), Value>,
}

impl Model {
    pub(super) fn new(policy: Arc<Policy>) -> Self {
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
    pub(super) fn step(&mut self, c: &Cmd) -> Pred {
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

    pub(super) fn call(&mut self, c: &Cmd, in_exec: bool) -> (Out, Option<String>) {
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

pub(super) fn parse_int(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Why `c` is not generated in the model's state (see the module documentation).
pub(super) fn excluded(m: &Model, c: &Cmd) -> Option<&'static str> {
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
