//! What the sequences are drawn from (the users on both sides, their permissions, the catalog
//! of commands) and the generator stepping the model.

use super::*;

/// The two configurations of the default user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DefaultUser {
    /// `nopass`: every connection starts authenticated.
    Open,
    /// `>dpw`: every connection starts unauthenticated.
    Password,
}

/// `(name, rules)` of every user, as in the users file (one `user` line each).
pub(super) fn users(default: DefaultUser) -> Vec<(&'static str, Vec<&'static str>)> {
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
pub(super) struct Policy {
    pub(super) default: DefaultUser,
    /// `(user, command) -> allowed`, for the users that can log in.
    pub(super) allowed: HashMap<(String, Cmd), bool>,
}

impl Policy {
    pub(super) fn credentials_ok(&self, user: &[u8], password: &[u8]) -> bool {
        match user {
            b"default" => self.default == DefaultUser::Open || password == b"dpw",
            b"alice" => password == b"a",
            b"bob" => password == b"b",
            _ => false,
        }
    }

    pub(super) fn allows(&self, user: &str, c: &Cmd) -> bool {
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
pub(super) struct Kind {
    pub(super) name: &'static str,
    weight: usize,
    pub(super) forms: Vec<Cmd>,
}

pub(super) fn catalog() -> Vec<Kind> {
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
pub(super) fn arity_ok(c: &Cmd) -> bool {
    !(upper(&c[0]) == "MULTI" && c.len() != 1)
}

// ------------------------------------------------------------------------------------------
// Generation.

/// One generated sequence and what the model expects of it.
#[derive(Debug)]
pub(super) struct Sequence {
    pub(super) index: usize,
    pub(super) seed: u64,
    pub(super) cmds: Vec<Cmd>,
    pub(super) preds: Vec<Pred>,
    /// The ECHO reply that ends both streams.
    pub(super) sentinel: Vec<u8>,
    pub(super) mode: Mode,
    /// Random cut points (for [`Mode::Bytes`]) and chunk sizes (for [`Mode::Chunks`]).
    pub(super) cuts: Vec<usize>,
}

/// How the proxied side sends a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Everything in one write.
    AtOnce,
    /// Groups of whole commands, with short pauses.
    Chunks,
    /// Cut at random bytes (also inside commands), with short pauses.
    Bytes,
    /// One command at a time, each after the replies to the previous ones.
    Lockstep,
}

pub(super) fn generate(index: usize, seed: u64, policy: &Arc<Policy>, kinds: &[Kind]) -> Sequence {
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
