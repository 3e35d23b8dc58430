//! The ACL permission check against a real Redis, judged by Redis's own `ACL DRYRUN`.
//!
//! Random users are written with every rule token Redis accepts (flags, passwords and hashes,
//! key patterns with `%R~` / `%W~` / `%RW~`, channel patterns, commands, subcommands, first
//! arguments, categories, selectors, `reset`, `clearselectors`) and a few it refuses. Each
//! one is created with `ACL SETUSER` and compiled alone with `Policy::compile`: both must
//! accept it or both refuse it, with Redis's error message. Then every random command (keys,
//! channels, `numkeys` arguments, first arguments such as `SELECT 0`) is put to every accepted
//! user, pipelined as `ACL DRYRUN <user> <command>`, and `Policy::decide` must give the same
//! verdict: allowed, or denied for the same reason (command, key or channel) naming the same
//! key or channel.
//!
//! `ACL_POLICY_SEED=<n> cargo test --test it acl_policy -- --nocapture` replays another seed;
//! `ACL_POLICY_SHOW=1` also prints every user with Redis's answer to its `ACL SETUSER`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use redis_audit_proxy::acl::{DenyReason, Policy, Verdict};
use redis_audit_proxy::command::table::{BeginSearch, FindKeys};
use redis_audit_proxy::command::{extract_keys, CommandInfo, CommandTable, Keys};
use redis_audit_proxy::config::AclMode;
use tokio::time::Instant;

use crate::support::client::{encode_command, reply_len, show};
use crate::support::{RawClient, RedisServer};

/// The seed when `ACL_POLICY_SEED` is not set.
const SEED: u64 = 0x00ac_1d2e_5eed_7015;
/// Users generated (some are refused by both sides and not used further).
const USERS: usize = 56;
/// Commands generated; each is put to every accepted user.
const COMMANDS: usize = 10_000;
/// DRYRUN commands sent before their replies are read.
const BATCH: usize = 500;
/// Mismatches shown in the failure message.
const SHOWN: usize = 20;

/// Keys commands use: the patterns below match many of them.
const KEYS: &[&str] =
    &["a", "ab", "ax", "b1", "bb", "k:1", "k:", "x", "*", "", "A", "a*", "ch1", "0", "zz"];
/// Key patterns of the users (`~*` is `allkeys`, chosen separately).
const KEY_PATTERNS: &[&str] = &[
    "a*", "b?", "[ab]*", "*x", "k:*", "\\*", "ab", "x", "[^a]*", "a\\*", "", "?", "[a-b]?",
    "k:[0-9]", "A*", "*", "a",
];
/// Channels of PUBLISH / SUBSCRIBE.
const CHANNELS: &[&str] =
    &["ch1", "ch2", "chx", "news.a", "news.b", "a", "x", "*", "n*", "ch*", "", "CH1"];
/// Channel patterns of the users (`&*` is `allchannels`), also PSUBSCRIBE arguments.
const CHANNEL_PATTERNS: &[&str] =
    &["ch*", "ch?", "news.*", "n*", "a", "*x", "[cn]*", "ch1", "", "*", "ch\\*"];
/// Numeric-looking arguments.
const NUMBERS: &[&str] = &["0", "1", "2", "3", "-1", "10"];
/// Keywords some commands look for.
const WORDS: &[&str] =
    &["GET", "STORE", "KEYS", "STREAMS", "LIMIT", "BY", "EX", "WITHSCORES", "LEFT", "COUNT", "v"];
/// Passwords for `>pw` and `<pw`.
const PASSWORDS: &[&str] = &["pw1", "pw2"];
/// Valid password hashes for `#` and `!`.
const HASHES: &[&str] = &[
    "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
];
/// Tokens Redis refuses (on top of those refused in context, such as `~a` after `allkeys`).
const INVALID: &[&str] = &[
    "+nosuchcmd",
    "-nosuchcmd",
    "%X~a",
    "%~a",
    "%RR~a",
    "<notapassword",
    "+config|get|x",
    "+get|a|b",
    "#tooshort",
    "!tooshort",
    "#5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8",
    "-select|0",
    "+select|",
    "+config|",
    "+config|nosuch",
    "+@nosuchcat",
    "-@",
    "+",
    "bogus",
    ")",
    "(on)",
    "(reset)",
    "(~a +nosuch)",
    "(allkeys ~a)",
    "(>pw1)",
    "(~a",
];
/// Commands the users name and the generator favours, so that rules and commands meet.
const FAVOURITES: &[&str] = &[
    "get",
    "set",
    "mget",
    "mset",
    "del",
    "exists",
    "incr",
    "append",
    "getdel",
    "hget",
    "hset",
    "lpush",
    "lrange",
    "lmove",
    "sadd",
    "smembers",
    "sinterstore",
    "zadd",
    "zrange",
    "zunionstore",
    "publish",
    "spublish",
    "subscribe",
    "ssubscribe",
    "psubscribe",
    "select",
    "eval",
    "evalsha",
    "fcall",
    "xadd",
    "xread",
    "copy",
    "rename",
    "sort",
    "expire",
    "type",
    "keys",
    "scan",
    "ping",
    "info",
    "auth",
    "bitop",
    "lmpop",
    "migrate",
    "georadius",
    "smove",
    "blmove",
    "config|get",
    "config|set",
    "client|id",
    "object|encoding",
    "memory|usage",
    "xinfo|stream",
];
/// Subcommands the users name more often than others.
const FAVOURITE_SUBCOMMANDS: &[&str] =
    &["config|get", "config|set", "client|id", "client|list", "object|encoding", "memory|usage"];
/// Commands without subcommands that first-argument rules (`+select|0`) name.
const FIRST_ARG_COMMANDS: &[&str] =
    &["select", "get", "set", "del", "incr", "echo", "publish", "subscribe", "psubscribe"];
/// Categories the users name more often than others.
const FAVOURITE_CATEGORIES: &[&str] =
    &["read", "write", "string", "keyspace", "pubsub", "hash", "list", "fast", "connection"];
/// Commands never generated (as the brief of this test: nothing that could stop the server
/// or tie up the connection, even though DRYRUN runs nothing).
const NOT_GENERATED: &[&str] = &["debug", "module", "shutdown", "monitor", "sync", "psync"];

/// xorshift64*: small, seeded, good enough to draw test cases.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True `percent` times in 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What the generators draw names from, all sorted so a seed always gives the same cases.
struct Names {
    /// Every top-level command.
    commands: Vec<String>,
    /// Every subcommand (`config|get`).
    subcommands: Vec<String>,
    /// `ACL CAT`.
    categories: Vec<String>,
    /// The commands and subcommands the command generator draws from.
    generated: Vec<Arc<CommandInfo>>,
    /// The [`FAVOURITES`] the table knows.
    favourites: Vec<Arc<CommandInfo>>,
}

impl Names {
    fn new(table: &CommandTable) -> Self {
        let mut top: Vec<&Arc<CommandInfo>> = table.commands().collect();
        top.sort_by(|a, b| a.name.cmp(&b.name));
        let mut subcommands = Vec::new();
        let mut generated = Vec::new();
        for info in &top {
            let mut subs: Vec<&Arc<CommandInfo>> = info.subcommands.values().collect();
            subs.sort_by(|a, b| a.name.cmp(&b.name));
            subcommands.extend(subs.iter().map(|sub| sub.name.clone()));
            if NOT_GENERATED.contains(&info.name.as_str()) {
                continue;
            }
            if subs.is_empty() {
                generated.push(Arc::clone(info));
            } else {
                generated.extend(subs.into_iter().cloned());
            }
        }
        let favourites = FAVOURITES
            .iter()
            .filter_map(|name| {
                let args: Vec<Bytes> = name.split('|').map(Bytes::from).collect();
                table.resolve(&args).cloned()
            })
            .collect();
        Self {
            commands: top.iter().map(|info| info.name.clone()).collect(),
            subcommands,
            categories: table.categories.clone(),
            generated,
            favourites,
        }
    }
}

/// Upper case, sometimes: rule words and command names are case-insensitive.
fn cased(rng: &mut Rng, word: &str) -> String {
    if rng.chance(10) {
        word.to_uppercase()
    } else {
        word.to_owned()
    }
}

/// The rules of one user (each one argument of `ACL SETUSER`).
fn user_rules(rng: &mut Rng, names: &Names) -> Vec<String> {
    let count = 1 + rng.below(9);
    let mut rules = Vec::with_capacity(count);
    // Most users may run something: start many of them from a category or everything.
    if rng.chance(60) {
        rules.push(if rng.chance(40) {
            "+@all".to_owned()
        } else {
            category_rule(rng, names, "+")
        });
    }
    for _ in 0..count {
        rules.push(user_rule(rng, names));
    }
    rules
}

/// One rule of `ACL SETUSER`.
fn user_rule(rng: &mut Rng, names: &Names) -> String {
    match rng.below(100) {
        0..=3 => cased_pick(rng, &["on", "off"]),
        4..=8 => password_rule(rng),
        9 => cased(rng, "reset"),
        10 => cased(rng, "clearselectors"),
        11..=21 => selector(rng, names),
        22 | 23 => (*rng.pick(INVALID)).to_owned(),
        _ => selector_rule(rng, names),
    }
}

fn rng_pick_str<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len())]
}

/// One of `items`, sometimes in upper case.
fn cased_pick(rng: &mut Rng, items: &[&str]) -> String {
    let word = rng_pick_str(rng, items);
    cased(rng, word)
}

fn password_rule(rng: &mut Rng) -> String {
    // Removing a password the user does not have is an error: rarer than adding one.
    match rng.below(8) {
        0 => cased(rng, "nopass"),
        1 => cased(rng, "resetpass"),
        2 | 3 => format!(">{}", rng.pick(PASSWORDS)),
        4 | 5 => format!("#{}", rng.pick(HASHES)),
        6 => format!("<{}", rng.pick(PASSWORDS)),
        _ => format!("!{}", rng.pick(HASHES)),
    }
}

/// `( ... )`: selector rules only, now and then one that is not allowed in a selector.
fn selector(rng: &mut Rng, names: &Names) -> String {
    let count = rng.below(5);
    let mut tokens: Vec<String> = (0..count).map(|_| selector_rule(rng, names)).collect();
    if rng.chance(5) {
        let bad = rng_pick_str(rng, &["on", "reset", ">pw1", "nopass", "clearselectors"]);
        tokens.push(bad.to_owned());
    }
    format!("({})", tokens.join(" "))
}

fn category_rule(rng: &mut Rng, names: &Names, sign: &str) -> String {
    let category = if rng.chance(50) {
        (*rng.pick(FAVOURITE_CATEGORIES)).to_owned()
    } else {
        rng.pick(&names.categories).clone()
    };
    cased(rng, &format!("{sign}@{category}"))
}

/// A rule valid inside a selector as well as at the root.
fn selector_rule(rng: &mut Rng, names: &Names) -> String {
    match rng.below(100) {
        0..=21 => {
            let pattern = rng.pick(KEY_PATTERNS);
            let prefix = match rng.below(10) {
                0..=4 => "~",
                5 => "%R~",
                6 => "%W~",
                7 => "%RW~",
                8 => "%WR~",
                _ => rng_pick_str(rng, &["%r~", "%w~", "%rw~"]),
            };
            format!("{prefix}{pattern}")
        }
        22..=27 => cased_pick(rng, &["allkeys", "~*", "resetkeys"]),
        28..=37 => format!("&{}", rng.pick(CHANNEL_PATTERNS)),
        38..=41 => cased_pick(rng, &["allchannels", "&*", "resetchannels"]),
        42..=51 => {
            let name = if rng.chance(70) {
                rng.pick(&names.favourites).name.clone()
            } else {
                rng.pick(&names.commands).clone()
            };
            cased(rng, &format!("+{name}"))
        }
        52..=56 => {
            let name = if rng.chance(60) {
                rng.pick(&names.favourites).name.clone()
            } else {
                rng.pick(&names.commands).clone()
            };
            cased(rng, &format!("-{name}"))
        }
        57..=62 => {
            let name = if rng.chance(60) {
                (*rng.pick(FAVOURITE_SUBCOMMANDS)).to_owned()
            } else {
                rng.pick(&names.subcommands).clone()
            };
            let sign = if rng.chance(70) { "+" } else { "-" };
            cased(rng, &format!("{sign}{name}"))
        }
        63..=70 => {
            let command = *rng.pick(FIRST_ARG_COMMANDS);
            format!("+{}|{}", cased(rng, command), first_arg(rng, command))
        }
        71..=82 => category_rule(rng, names, "+"),
        83..=88 => category_rule(rng, names, "-"),
        _ => cased_pick(rng, &["allcommands", "nocommands", "+@all", "-@all"]),
    }
}

/// A first argument for `command` (from the pools its arguments come from).
fn first_arg(rng: &mut Rng, command: &str) -> String {
    // Mostly from short lists, so that rules and commands name the same first argument.
    let common = rng.chance(80);
    let arg = match command {
        "select" if common => *rng.pick(&["0", "1"]),
        "select" => *rng.pick(NUMBERS),
        "publish" | "subscribe" if common => *rng.pick(&["ch1", "a"]),
        "publish" | "subscribe" => *rng.pick(CHANNELS),
        "psubscribe" if common => *rng.pick(&["ch*", "a"]),
        "psubscribe" => *rng.pick(CHANNEL_PATTERNS),
        _ if common => *rng.pick(&["a", "k:1", "x"]),
        _ => *rng.pick(KEYS),
    };
    // First arguments compare case-insensitively.
    cased(rng, arg)
}

/// One generated command: its arguments (the name first) and what the proxy knows of it.
struct Case {
    args: Vec<Bytes>,
    /// `None` when the table does not resolve it (then Redis must refuse it too).
    info: Option<Arc<CommandInfo>>,
    keys: Keys,
    /// The arguments as RESP bulk strings, to follow `ACL DRYRUN <user>`.
    encoded: Vec<u8>,
}

fn random_command(rng: &mut Rng, names: &Names, table: &CommandTable) -> Case {
    let args: Vec<String> = match rng.below(100) {
        0..=29 => {
            let info = Arc::clone(rng.pick(&names.favourites));
            command_args(rng, &info, None)
        }
        30..=44 => pubsub_args(rng),
        45..=57 => {
            let command = *rng.pick(FIRST_ARG_COMMANDS);
            let args: Vec<Bytes> = vec![Bytes::from(command)];
            let first = first_arg(rng, command);
            match table.resolve(&args) {
                Some(info) => command_args(rng, info, Some(first)),
                None => vec![command.to_owned(), first],
            }
        }
        _ => {
            let info = Arc::clone(rng.pick(&names.generated));
            command_args(rng, &info, None)
        }
    };
    let args: Vec<Bytes> = args.into_iter().map(Bytes::from).collect();
    let info = table.resolve(&args).cloned();
    let mut keys = Keys::new();
    if let Some(info) = &info {
        extract_keys(info, &args, &mut keys);
    }
    let mut encoded = Vec::new();
    for arg in &args {
        encoded.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        encoded.extend_from_slice(arg);
        encoded.extend_from_slice(b"\r\n");
    }
    Case { args, info, keys, encoded }
}

/// Arguments satisfying the arity of `info`, with `first` as argument 1 when given; a
/// `numkeys` argument is often right for the arguments that follow.
fn command_args(rng: &mut Rng, info: &CommandInfo, first: Option<String>) -> Vec<String> {
    let mut args: Vec<String> = info.name.split('|').map(|part| cased(rng, part)).collect();
    args.extend(first);
    let min = info.arity.unsigned_abs() as usize;
    let argc = if info.arity > 0 { min } else { min + rng.below(5) }.max(args.len());
    while args.len() < argc {
        let arg = match rng.below(100) {
            0..=59 => rng.pick(KEYS),
            60..=79 => rng.pick(NUMBERS),
            80..=89 => rng.pick(WORDS),
            _ => rng.pick(CHANNELS),
        };
        args.push((*arg).to_owned());
    }
    for spec in &info.key_specs {
        let (BeginSearch::Index(begin), FindKeys::Keynum { keynumidx, firstkey, .. }) =
            (&spec.begin_search, &spec.find_keys)
        else {
            continue;
        };
        let (count_at, first_key) = ((begin + keynumidx) as usize, (begin + firstkey) as usize);
        if count_at < args.len() && rng.chance(75) {
            let room = args.len().saturating_sub(first_key);
            let count =
                if room == 0 || rng.chance(10) { rng.below(3) } else { 1 + rng.below(room) };
            args[count_at] = count.to_string();
        }
    }
    args
}

/// PUBLISH / SPUBLISH / SUBSCRIBE / SSUBSCRIBE / PSUBSCRIBE (and the unsubscribes, which
/// have no channel permissions to check).
fn pubsub_args(rng: &mut Rng) -> Vec<String> {
    let command = match rng.below(20) {
        0..=5 => "publish",
        6..=7 => "spublish",
        8..=11 => "subscribe",
        12..=13 => "ssubscribe",
        14..=17 => "psubscribe",
        _ => rng_pick_str(rng, &["unsubscribe", "punsubscribe", "sunsubscribe"]),
    };
    let mut args = vec![cased(rng, command)];
    if command.ends_with("publish") {
        args.push((*rng.pick(CHANNELS)).to_owned());
        args.push("message".to_owned());
        return args;
    }
    for _ in 0..1 + rng.below(3) {
        let pool =
            if command == "psubscribe" && rng.chance(70) { CHANNEL_PATTERNS } else { CHANNELS };
        args.push((*rng.pick(pool)).to_owned());
    }
    args
}

/// What `ACL DRYRUN` answered, or what the policy decided, in the same terms.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Allow,
    /// The command's full name.
    Command(String),
    Key(Vec<u8>),
    Channel(Vec<u8>),
    /// An error reply: wrong arity, unknown command (not compared).
    Error(String),
    /// A reply of no known shape.
    Unexpected(Vec<u8>),
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Allow => write!(f, "allowed"),
            Self::Command(name) => write!(f, "command '{name}' denied"),
            Self::Key(key) => write!(f, "key '{}' denied", show(key)),
            Self::Channel(channel) => write!(f, "channel '{}' denied", show(channel)),
            Self::Error(message) => write!(f, "error: {message}"),
            Self::Unexpected(reply) => write!(f, "unexpected reply {}", show(reply)),
        }
    }
}

/// `text` between `start` and `end` when it is `...<start>X<end>`.
fn between<'a>(text: &'a [u8], start: &[u8], end: &[u8]) -> Option<&'a [u8]> {
    let at = text.windows(start.len()).position(|w| w == start)? + start.len();
    text[at..].strip_suffix(end)
}

/// Reads a DRYRUN reply (type byte and payload).
fn redis_answer(kind: u8, payload: &[u8]) -> Answer {
    match kind {
        b'+' if payload == b"OK" => Answer::Allow,
        b'-' => Answer::Error(String::from_utf8_lossy(payload).into_owned()),
        b'$' => {
            const RUN: &[u8] = b"no permissions to run the '";
            const ACCESS: &[u8] = b"no permissions to access the '";
            if let Some(name) = between(payload, RUN, b"' command") {
                Answer::Command(String::from_utf8_lossy(name).into_owned())
            } else if let Some(key) = between(payload, ACCESS, b"' key") {
                Answer::Key(key.to_vec())
            } else if let Some(channel) = between(payload, ACCESS, b"' channel") {
                Answer::Channel(channel.to_vec())
            } else {
                Answer::Unexpected(payload.to_vec())
            }
        }
        _ => Answer::Unexpected(payload.to_vec()),
    }
}

/// The policy's verdict in DRYRUN's terms.
fn our_answer(verdict: Verdict, info: &CommandInfo, args: &[Bytes]) -> Answer {
    let Verdict::Deny { denial, .. } = verdict else { return Answer::Allow };
    let object = || match args.get(denial.arg_index) {
        Some(arg) => arg.to_vec(),
        None => format!("<argument {} of {}>", denial.arg_index, args.len()).into_bytes(),
    };
    match denial.reason {
        DenyReason::Command => Answer::Command(info.name.clone()),
        DenyReason::Key => Answer::Key(object()),
        DenyReason::Channel => Answer::Channel(object()),
    }
}

/// One reply at the start of `buf`: its type byte, payload (the line of `+`, `-`, `:`, the
/// body of `$`; the whole reply otherwise) and length; `None` until it is all there.
fn next_reply(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let kind = *buf.first()?;
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    match kind {
        b'+' | b'-' | b':' => Some((kind, &buf[1..line_end], line_end + 2)),
        b'$' => {
            let len: i64 = std::str::from_utf8(&buf[1..line_end]).ok()?.parse().ok()?;
            let start = line_end + 2;
            if len < 0 {
                return Some((b'_', &[], start));
            }
            let end = start + len as usize;
            (buf.len() >= end + 2).then(|| (kind, &buf[start..end], end + 2))
        }
        _ => reply_len(buf).map(|len| (kind, &buf[..len], len)),
    }
}

/// Reads `count` replies: type byte and payload of each.
async fn read_replies(client: &mut RawClient, count: usize) -> Vec<(u8, Vec<u8>)> {
    let mut replies = Vec::with_capacity(count);
    let mut offset = 0;
    while replies.len() < count {
        let parsed = next_reply(&client.buffer[offset..])
            .map(|(kind, payload, len)| (kind, payload.to_vec(), len));
        match parsed {
            Some((kind, payload, len)) => {
                replies.push((kind, payload));
                offset += len;
            }
            None => {
                client.fill().await.expect("redis-server closed the connection");
            }
        }
    }
    client.buffer.drain(..offset);
    replies
}

/// A command on which `Policy::decide` and `ACL DRYRUN` disagree for a user.
struct Mismatch {
    user: String,
    case: usize,
    text: String,
}

/// Up to [`SHOWN`] mismatches, spread over users and commands: a few per user and per
/// command first, then the others in order.
fn shown_mismatches(mismatches: &[Mismatch]) -> String {
    let mut per_user: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_case: BTreeMap<usize, usize> = BTreeMap::new();
    let mut shown: Vec<usize> = Vec::new();
    for (index, mismatch) in mismatches.iter().enumerate() {
        let user = per_user.entry(&mismatch.user).or_default();
        let case = per_case.entry(mismatch.case).or_default();
        if shown.len() < SHOWN && *user < 3 && *case < 2 {
            *user += 1;
            *case += 1;
            shown.push(index);
        }
    }
    let rest: Vec<usize> = (0..mismatches.len()).filter(|i| !shown.contains(i)).collect();
    shown.extend(rest.into_iter().take(SHOWN.saturating_sub(shown.len())));
    let mut text = format!("{} of the mismatches:", shown.len());
    for index in shown {
        text.push('\n');
        text.push_str(&mismatches[index].text);
    }
    text
}

/// A user both sides accepted.
struct Accepted {
    name: String,
    rules: Vec<String>,
}

/// Counts of the command phase, by Redis's answer.
#[derive(Debug, Default)]
struct Counts {
    compared: usize,
    allowed: usize,
    command: usize,
    key: usize,
    channel: usize,
    skipped: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decide_matches_acl_dryrun() {
    crate::require_redis!();
    let started = Instant::now();
    let seed = std::env::var("ACL_POLICY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(SEED);
    let mut rng = Rng::new(seed);
    let show_users = std::env::var_os("ACL_POLICY_SHOW").is_some();
    let server = RedisServer::start(&[]);
    let mut client = RawClient::connect(server.addr).await;

    // The table as the proxy reads it from its upstream: COMMAND, then ACL CAT.
    let reply = client.call(&[b"COMMAND"]).await;
    let mut table = CommandTable::from_command_reply(&reply).expect("the COMMAND reply parses");
    let categories = client.call(&[b"ACL", b"CAT"]).await;
    table.set_categories_from_reply(&categories).expect("the ACL CAT reply parses");
    let names = Names::new(&table);

    // Users: ACL SETUSER and Policy::compile must agree on each.
    let users: Vec<(String, Vec<String>)> =
        (0..USERS).map(|i| (format!("u{i}"), user_rules(&mut rng, &names))).collect();
    let mut batch = Vec::new();
    for (name, rules) in &users {
        let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", name.as_bytes()];
        args.extend(rules.iter().map(|rule| rule.as_bytes()));
        batch.extend(encode_command(&args));
    }
    client.send(&batch).await;
    let replies = read_replies(&mut client, users.len()).await;
    let mut accepted = Vec::new();
    let mut user_mismatches = Vec::new();
    let (mut rejected, mut messages_checked) = (0, 0);
    for ((name, rules), (kind, payload)) in users.into_iter().zip(replies) {
        let line = format!("user {name} {}", rules.join(" "));
        let ours = Policy::compile(line.as_bytes(), &table, AclMode::Enforce, &[]);
        let redis = String::from_utf8_lossy(&payload).into_owned();
        if show_users {
            eprintln!("{line}\n    => {}", if kind == b'+' { "OK" } else { &redis });
        }
        match (kind, ours) {
            (b'+', Ok(_)) => accepted.push(Accepted { name, rules }),
            (b'-', Err(error)) => {
                rejected += 1;
                let ours = error.to_string();
                // `ERR Error in ACL SETUSER modifier '<op>': <message>`
                let modifier = redis
                    .strip_prefix("ERR Error in ACL SETUSER modifier '")
                    .and_then(|rest| rest.split_once("': "));
                if let Some((op, message)) = modifier {
                    messages_checked += 1;
                    let op_shown = ours.contains("(password rule, not shown)")
                        || ours.contains(&format!("'{op}'"));
                    if !ours.ends_with(message) || !op_shown {
                        user_mismatches
                            .push(format!("{line}\n    redis: {redis}\n    ours:  {ours}"));
                    }
                }
            }
            (_, ours) => user_mismatches.push(format!(
                "{line}\n    redis: {}\n    ours:  {}",
                if kind == b'+' { "OK".to_owned() } else { redis },
                match ours {
                    Ok(_) => "compiled".to_owned(),
                    Err(error) => error.to_string(),
                }
            )),
        }
    }
    assert!(
        user_mismatches.is_empty(),
        "seed {seed}: ACL SETUSER and Policy::compile disagree on {} of {USERS} users:\n{}",
        user_mismatches.len(),
        user_mismatches.join("\n")
    );
    assert!(
        accepted.len() >= USERS / 3 && rejected > 0,
        "seed {seed}: {} users accepted and {rejected} refused: the generator degenerated",
        accepted.len()
    );

    // The whole file of accepted users, compiled once.
    let file: String = accepted
        .iter()
        .map(|user| format!("user {} {}\n", user.name, user.rules.join(" ")))
        .collect();
    let policy = Policy::compile(file.as_bytes(), &table, AclMode::Enforce, &[])
        .unwrap_or_else(|error| panic!("seed {seed}: the users file does not compile: {error}"));

    // Commands: every one put to every accepted user.
    let cases: Vec<Case> =
        (0..COMMANDS).map(|_| random_command(&mut rng, &names, &table)).collect();
    let pairs: Vec<(usize, usize)> = (0..cases.len())
        .flat_map(|case| (0..accepted.len()).map(move |user| (case, user)))
        .collect();
    let mut counts = Counts::default();
    let mut mismatches = Vec::new();
    for chunk in pairs.chunks(BATCH) {
        let mut batch = Vec::new();
        for &(case, user) in chunk {
            let (case, name) = (&cases[case], &accepted[user].name);
            let header = format!(
                "*{}\r\n$3\r\nACL\r\n$6\r\nDRYRUN\r\n${}\r\n{name}\r\n",
                case.args.len() + 3,
                name.len()
            );
            batch.extend_from_slice(header.as_bytes());
            batch.extend_from_slice(&case.encoded);
        }
        client.send(&batch).await;
        let replies = read_replies(&mut client, chunk.len()).await;
        for (&(case_index, user), (kind, payload)) in chunk.iter().zip(replies) {
            let (case, user) = (&cases[case_index], &accepted[user]);
            let redis = redis_answer(kind, &payload);
            let ours = case.info.as_ref().map(|info| {
                let verdict = policy.decide(user.name.as_bytes(), info, &case.args, &case.keys);
                our_answer(verdict, info, &case.args)
            });
            match (&redis, &ours) {
                (Answer::Error(_), _) => {
                    counts.skipped += 1;
                    continue;
                }
                (Answer::Allow, _) => counts.allowed += 1,
                (Answer::Command(_), _) => counts.command += 1,
                (Answer::Key(_), _) => counts.key += 1,
                (Answer::Channel(_), _) => counts.channel += 1,
                (Answer::Unexpected(_), _) => {}
            }
            counts.compared += 1;
            if ours.as_ref() != Some(&redis) {
                let shown: Vec<String> = case
                    .args
                    .iter()
                    .map(|arg| if arg.is_empty() { "\"\"".to_owned() } else { show(arg) })
                    .collect();
                mismatches.push(Mismatch {
                    user: user.name.clone(),
                    case: case_index,
                    text: format!(
                        "user {} {}\n    command: {}\n    redis: {redis}\n    ours:  {}",
                        user.name,
                        user.rules.join(" "),
                        shown.join(" "),
                        ours.map_or_else(|| "unknown command".to_owned(), |ours| ours.to_string())
                    ),
                });
            }
        }
    }
    let total = counts.compared + counts.skipped;
    let summary = format!(
        "seed {seed}: {} users ({rejected} more refused by both, {messages_checked} with Redis's \
         error message checked), {COMMANDS} commands, {total} \
         cases: {} compared ({} allowed, {} command, {} key, {} channel denials), {} skipped \
         (DRYRUN error), {} mismatches, in {:?}",
        accepted.len(),
        counts.compared,
        counts.allowed,
        counts.command,
        counts.key,
        counts.channel,
        counts.skipped,
        mismatches.len(),
        started.elapsed()
    );
    eprintln!("acl_policy: {summary}");
    assert!(mismatches.is_empty(), "{summary}\n{}", shown_mismatches(&mismatches));
    assert!(counts.compared >= 10_000, "{summary}: too few cases compared");
    assert!(counts.skipped * 5 < total, "{summary}: too many cases skipped");
    assert!(
        counts.allowed > 0 && counts.command > 0 && counts.key > 0 && counts.channel > 0,
        "{summary}: every kind of answer must occur"
    );
}
