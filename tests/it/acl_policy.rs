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
//! A second test sends denied commands to Redis for real. A twin of each accepted user
//! (`<name>-twin`: the same rules, then `on nopass`) is created on both sides; the commands
//! DRYRUN refuses to it (an even spread of each reason) are sent on a connection
//! authenticated as the twin (nothing runs: Redis refuses them first). Redis's reply must be
//! `Policy::noperm_reply` byte for byte (EXEC aside: Redis wraps it in `-EXECABORT`), and the
//! `ACL LOG` entry it adds must have our denial's reason and object, context `toplevel` and
//! the twin's name.
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
use crate::support::rng::Rng;
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

/// The users of one batch of `ACL SETUSER`, each also compiled alone with `Policy::compile`.
struct Created {
    accepted: Vec<Accepted>,
    /// Refused by both.
    rejected: usize,
    /// Refusals whose message (Redis's `modifier '<op>': <message>`) was compared.
    messages_checked: usize,
    /// Users on which the two sides disagree, each with both answers.
    mismatches: Vec<String>,
}

/// Creates `users` (name and rules) with pipelined `ACL SETUSER` and compiles each alone:
/// both must accept it, or both refuse it with the same message. With `show`, prints every
/// user with Redis's answer.
async fn create_users(
    client: &mut RawClient,
    table: &CommandTable,
    users: Vec<(String, Vec<String>)>,
    show: bool,
) -> Created {
    let mut batch = Vec::new();
    for (name, rules) in &users {
        let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", name.as_bytes()];
        args.extend(rules.iter().map(|rule| rule.as_bytes()));
        batch.extend(encode_command(&args));
    }
    client.send(&batch).await;
    let replies = read_replies(client, users.len()).await;
    let mut created =
        Created { accepted: Vec::new(), rejected: 0, messages_checked: 0, mismatches: Vec::new() };
    for ((name, rules), (kind, payload)) in users.into_iter().zip(replies) {
        let line = format!("user {name} {}", rules.join(" "));
        let ours = Policy::compile(line.as_bytes(), table, AclMode::Enforce, &[]);
        let redis = String::from_utf8_lossy(&payload).into_owned();
        if show {
            eprintln!("{line}\n    => {}", if kind == b'+' { "OK" } else { &redis });
        }
        match (kind, ours) {
            (b'+', Ok(_)) => created.accepted.push(Accepted { name, rules }),
            (b'-', Err(error)) => {
                created.rejected += 1;
                let ours = error.to_string();
                // `ERR Error in ACL SETUSER modifier '<op>': <message>`
                let modifier = redis
                    .strip_prefix("ERR Error in ACL SETUSER modifier '")
                    .and_then(|rest| rest.split_once("': "));
                if let Some((op, message)) = modifier {
                    created.messages_checked += 1;
                    // Password rules, and plain words after one (maybe the rest of a password
                    // with a space), are never echoed by the proxy.
                    let op_shown = ours.contains("(password rule, not shown)")
                        || ours.contains("(a word after a password, not shown)")
                        || ours.contains(&format!("'{op}'"));
                    if !ours.ends_with(message) || !op_shown {
                        created
                            .mismatches
                            .push(format!("{line}\n    redis: {redis}\n    ours:  {ours}"));
                    }
                }
            }
            (_, ours) => created.mismatches.push(format!(
                "{line}\n    redis: {}\n    ours:  {}",
                if kind == b'+' { "OK".to_owned() } else { redis },
                match ours {
                    Ok(_) => "compiled".to_owned(),
                    Err(error) => error.to_string(),
                }
            )),
        }
    }
    created
}

/// The users file of `users`, compiled once.
fn compile_users(users: &[Accepted], table: &CommandTable, seed: u64) -> Policy {
    let file: String =
        users.iter().map(|user| format!("user {} {}\n", user.name, user.rules.join(" "))).collect();
    Policy::compile(file.as_bytes(), table, AclMode::Enforce, &[])
        .unwrap_or_else(|error| panic!("seed {seed}: the users file does not compile: {error}"))
}

/// What both tests draw from the seed: a Redis, the command table read from it as the proxy
/// reads it, the random users both sides accepted, and the random commands.
struct Setup {
    seed: u64,
    started: Instant,
    /// Runs as long as the test.
    _server: RedisServer,
    /// A connection as `default`, which may run everything.
    client: RawClient,
    table: CommandTable,
    accepted: Vec<Accepted>,
    /// Users refused by both sides.
    rejected: usize,
    /// Refusals whose message was compared.
    messages_checked: usize,
    cases: Vec<Case>,
}

impl Setup {
    /// Starts Redis, reads the table, creates the users (`ACL SETUSER` and `Policy::compile`
    /// must agree on each) and draws the commands.
    async fn new() -> Self {
        let started = Instant::now();
        let seed =
            std::env::var("ACL_POLICY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(SEED);
        let mut rng = Rng::new(seed);
        let show_users = std::env::var_os("ACL_POLICY_SHOW").is_some();
        let server = RedisServer::start(&[]);
        let mut client = RawClient::connect(server.addr).await;

        // The table as the proxy reads it from its upstream: COMMAND, ACL CAT, and the
        // version from INFO server (it words the -NOPERM replies).
        let reply = client.call(&[b"COMMAND"]).await;
        let mut table = CommandTable::from_command_reply(&reply).expect("the COMMAND reply parses");
        let categories = client.call(&[b"ACL", b"CAT"]).await;
        table.set_categories_from_reply(&categories).expect("the ACL CAT reply parses");
        let info = client.call(&[b"INFO", b"server"]).await;
        let info = String::from_utf8_lossy(&info).into_owned();
        table.version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .expect("INFO server gives redis_version")
            .trim()
            .to_owned();
        let names = Names::new(&table);

        let users: Vec<(String, Vec<String>)> =
            (0..USERS).map(|i| (format!("u{i}"), user_rules(&mut rng, &names))).collect();
        let created = create_users(&mut client, &table, users, show_users).await;
        assert!(
            created.mismatches.is_empty(),
            "seed {seed}: ACL SETUSER and Policy::compile disagree on {} of {USERS} users:\n{}",
            created.mismatches.len(),
            created.mismatches.join("\n")
        );
        assert!(
            created.accepted.len() >= USERS / 3 && created.rejected > 0,
            "seed {seed}: {} users accepted and {} refused: the generator degenerated",
            created.accepted.len(),
            created.rejected
        );

        let cases: Vec<Case> =
            (0..COMMANDS).map(|_| random_command(&mut rng, &names, &table)).collect();
        Self {
            seed,
            started,
            _server: server,
            client,
            table,
            accepted: created.accepted,
            rejected: created.rejected,
            messages_checked: created.messages_checked,
            cases,
        }
    }
}

/// Puts every case to every user with pipelined `ACL DRYRUN <user> <command>` and hands
/// each answer to `each` with the indexes of the case and the user.
async fn dryrun_all(
    client: &mut RawClient,
    cases: &[Case],
    users: &[Accepted],
    mut each: impl FnMut(usize, usize, Answer),
) {
    let pairs: Vec<(usize, usize)> =
        (0..cases.len()).flat_map(|case| (0..users.len()).map(move |user| (case, user))).collect();
    for chunk in pairs.chunks(BATCH) {
        let mut batch = Vec::new();
        for &(case, user) in chunk {
            let (case, name) = (&cases[case], &users[user].name);
            let header = format!(
                "*{}\r\n$3\r\nACL\r\n$6\r\nDRYRUN\r\n${}\r\n{name}\r\n",
                case.args.len() + 3,
                name.len()
            );
            batch.extend_from_slice(header.as_bytes());
            batch.extend_from_slice(&case.encoded);
        }
        client.send(&batch).await;
        let replies = read_replies(client, chunk.len()).await;
        for (&(case, user), (kind, payload)) in chunk.iter().zip(replies) {
            each(case, user, redis_answer(kind, &payload));
        }
    }
}

/// The arguments of a command for a message, `""` for an empty one.
fn shown_args(args: &[Bytes]) -> String {
    let shown: Vec<String> =
        args.iter().map(|arg| if arg.is_empty() { "\"\"".to_owned() } else { show(arg) }).collect();
    shown.join(" ")
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
    let mut setup = Setup::new().await;
    let seed = setup.seed;
    let policy = compile_users(&setup.accepted, &setup.table, seed);

    // Commands: every one put to every accepted user.
    let (cases, accepted) = (&setup.cases, &setup.accepted);
    let mut counts = Counts::default();
    let mut mismatches = Vec::new();
    dryrun_all(&mut setup.client, cases, accepted, |case_index, user, redis| {
        let (case, user) = (&cases[case_index], &accepted[user]);
        let ours = case.info.as_ref().map(|info| {
            let verdict = policy.decide(user.name.as_bytes(), info, &case.args, &case.keys);
            our_answer(verdict, info, &case.args)
        });
        match &redis {
            Answer::Error(_) => {
                counts.skipped += 1;
                return;
            }
            Answer::Allow => counts.allowed += 1,
            Answer::Command(_) => counts.command += 1,
            Answer::Key(_) => counts.key += 1,
            Answer::Channel(_) => counts.channel += 1,
            Answer::Unexpected(_) => {}
        }
        counts.compared += 1;
        if ours.as_ref() != Some(&redis) {
            mismatches.push(Mismatch {
                user: user.name.clone(),
                case: case_index,
                text: format!(
                    "user {} {}\n    command: {}\n    redis: {redis}\n    ours:  {}",
                    user.name,
                    user.rules.join(" "),
                    shown_args(&case.args),
                    ours.map_or_else(|| "unknown command".to_owned(), |ours| ours.to_string())
                ),
            });
        }
    })
    .await;
    let total = counts.compared + counts.skipped;
    let summary = format!(
        "seed {seed}: {} users ({} more refused by both, {} with Redis's error message \
         checked), {COMMANDS} commands, {total} cases: {} compared ({} allowed, {} command, {} \
         key, {} channel denials), {} skipped (DRYRUN error), {} mismatches, in {:?}",
        setup.accepted.len(),
        setup.rejected,
        setup.messages_checked,
        counts.compared,
        counts.allowed,
        counts.command,
        counts.key,
        counts.channel,
        counts.skipped,
        mismatches.len(),
        setup.started.elapsed()
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

/// Denials of each reason really sent to Redis (an even spread of those DRYRUN gives).
const PER_REASON: usize = 2000;
/// Denials of each reason that must be compared, at the least.
const MIN_PER_REASON: usize = 20;
/// Denials that must be compared, at the least.
const MIN_DENIALS: usize = 300;

/// The fields of the newest entry of an `ACL LOG` reply (Redis 7.0: `count`, `reason`,
/// `context`, `object`, `username`, `age-seconds`, `client-info`); `Err` with the reply when
/// it is not a non-empty list of such entries.
fn newest_log_entry(reply: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    use redis_protocol::resp2::types::OwnedFrame;
    let value = |frame: &OwnedFrame| match frame {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => b.clone(),
        OwnedFrame::Integer(i) => i.to_string().into_bytes(),
        other => format!("{other:?}").into_bytes(),
    };
    let unexpected = || format!("ACL LOG replied {}", show(reply));
    let Ok(Some((OwnedFrame::Array(entries), _))) = redis_protocol::resp2::decode::decode(reply)
    else {
        return Err(unexpected());
    };
    let Some(OwnedFrame::Array(items)) = entries.first() else { return Err(unexpected()) };
    Ok(items
        .chunks(2)
        .filter(|pair| pair.len() == 2)
        .map(|pair| (String::from_utf8_lossy(&value(&pair[0])).into_owned(), value(&pair[1])))
        .collect())
}

/// What Redis answers a command it refuses with `noperm` (the `-NOPERM` error of
/// [`Policy::noperm_reply`]): that error, except for EXEC, which Redis 7.0 refuses with
/// `-EXECABORT Transaction discarded because of: <error>` inside MULTI or not
/// (`rejectCommand` calls `execCommandAbort` for any EXEC).
fn denied_reply(noperm: &[u8], full_name: &str) -> Vec<u8> {
    match noperm.strip_prefix(b"-") {
        Some(error) if full_name == "exec" => {
            [&b"-EXECABORT Transaction discarded because of: "[..], error].concat()
        }
        _ => noperm.to_vec(),
    }
}

/// A denial as a log entry shows it: `reason=... context=... object=... username=...`.
fn shown_entry(entry: &BTreeMap<String, Vec<u8>>) -> String {
    ["count", "reason", "context", "object", "username"]
        .iter()
        .map(|field| {
            let value = entry.get(*field).map_or_else(|| "<missing>".to_owned(), |v| show(v));
            format!("{field}={value}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_match_redis_acl_log_and_noperm_reply() {
    crate::require_redis!();
    let mut setup = Setup::new().await;
    let seed = setup.seed;

    // A twin of each user: its rules, then `on nopass` (flags and passwords only, not
    // permissions), so that a connection can authenticate as it. Both sides use the twin's
    // name: it is in the ACL LOG entry.
    let twins: Vec<(String, Vec<String>)> = setup
        .accepted
        .iter()
        .map(|user| {
            let mut rules = user.rules.clone();
            rules.extend(["on".to_owned(), "nopass".to_owned()]);
            (format!("{}-twin", user.name), rules)
        })
        .collect();
    let count = twins.len();
    let created = create_users(&mut setup.client, &setup.table, twins, false).await;
    assert!(
        created.mismatches.is_empty() && created.accepted.len() == count,
        "seed {seed}: {} of {count} twins accepted by both sides; disagreements:\n{}",
        created.accepted.len(),
        created.mismatches.join("\n")
    );
    let twins = created.accepted;
    let policy = compile_users(&twins, &setup.table, seed);

    // The denials, by DRYRUN's reason: only those are sent for real (Redis refuses them
    // before running anything). Errors and allowed commands are left out.
    let mut denials: [Vec<(usize, usize)>; 3] = Default::default();
    dryrun_all(&mut setup.client, &setup.cases, &twins, |case, user, answer| {
        let reason = match answer {
            Answer::Command(_) => 0,
            Answer::Key(_) => 1,
            Answer::Channel(_) => 2,
            _ => return,
        };
        denials[reason].push((case, user));
    })
    .await;
    let sample: Vec<(usize, usize, usize)> = denials
        .iter()
        .enumerate()
        .flat_map(|(reason, all)| {
            let taken = all.len().min(PER_REASON);
            (0..taken).map(move |i| {
                let (case, user) = all[i * all.len() / taken];
                (reason, case, user)
            })
        })
        .collect();
    let commands: std::collections::BTreeSet<&str> = sample
        .iter()
        .filter_map(|&(_, case, _)| setup.cases[case].info.as_ref().map(|info| info.name.as_str()))
        .collect();

    // Each denial: ACL LOG RESET (so that no entry groups with an older one), the command
    // on the twin's connection, then ACL LOG 1.
    let reset = encode_command(&[b"ACL", b"LOG", b"RESET"]);
    let mut newest_and_reset = encode_command(&[b"ACL", b"LOG", b"1"]);
    newest_and_reset.extend_from_slice(&reset);
    setup.client.send(&reset).await;
    assert_eq!(setup.client.read_reply().await, b"+OK\r\n", "ACL LOG RESET");
    let mut connections: BTreeMap<usize, RawClient> = BTreeMap::new();
    let mut compared = [0usize; 3];
    let mut exec = 0;
    let mut mismatches = Vec::new();
    for &(reason, case_index, user) in &sample {
        let (case, twin) = (&setup.cases[case_index], &twins[user]);
        let connection = match connections.entry(user) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let mut connection =
                    RawClient::connect(setup.client.stream.peer_addr().unwrap()).await;
                let reply = connection.call(&[b"AUTH", twin.name.as_bytes(), b"x"]).await;
                assert_eq!(reply, b"+OK\r\n", "AUTH {}", twin.name);
                entry.insert(connection)
            }
        };
        let mut command = format!("*{}\r\n", case.args.len()).into_bytes();
        command.extend_from_slice(&case.encoded);
        connection.send(&command).await;
        let redis_reply = connection.read_reply().await;
        setup.client.send(&newest_and_reset).await;
        let log = setup.client.read_reply().await;
        assert_eq!(setup.client.read_reply().await, b"+OK\r\n", "ACL LOG RESET");

        // Ours: the reply the proxy gives and the entry it logs.
        let verdict = case
            .info
            .as_ref()
            .map(|info| (info, policy.decide(twin.name.as_bytes(), info, &case.args, &case.keys)));
        let (ours, problems) = match (verdict, newest_log_entry(&log)) {
            (Some((info, Verdict::Deny { denial, .. })), Ok(entry)) => {
                let noperm = policy.noperm_reply(&denial, twin.name.as_bytes(), &info.name);
                let reply = denied_reply(&noperm, &info.name);
                exec += usize::from(reply != noperm);
                let object = denial.object(&info.name, &case.args);
                let expected: [(&str, &[u8]); 5] = [
                    ("count", b"1"),
                    ("reason", denial.reason.as_str().as_bytes()),
                    ("context", b"toplevel"),
                    ("object", object),
                    ("username", twin.name.as_bytes()),
                ];
                let mut problems: Vec<String> = expected
                    .iter()
                    .filter(|(field, value)| entry.get(*field).map(Vec::as_slice) != Some(value))
                    .map(|(field, _)| format!("log {field} differs"))
                    .collect();
                if redis_reply != reply {
                    problems.insert(0, "reply differs".to_owned());
                }
                let fields: Vec<String> = expected
                    .iter()
                    .map(|(field, value)| format!("{field}={}", show(value)))
                    .collect();
                let ours = format!("reply {}, log {}", show(&reply), fields.join(" "));
                (ours, problems)
            }
            (_, Err(error)) => ("-".to_owned(), vec![error]),
            (Some((_, Verdict::Allow)), _) => ("allowed".to_owned(), vec!["ours allows".into()]),
            (None, _) => ("unknown command".to_owned(), vec!["ours does not know it".into()]),
        };
        compared[reason] += 1;
        if !problems.is_empty() {
            let entry = newest_log_entry(&log).map_or_else(|error| error, |e| shown_entry(&e));
            mismatches.push(Mismatch {
                user: twin.name.clone(),
                case: case_index,
                text: format!(
                    "user {} {}\n    command: {}\n    {}\n    redis: reply {}, log {entry}\n    \
                     ours:  {ours}",
                    twin.name,
                    twin.rules.join(" "),
                    shown_args(&case.args),
                    problems.join(", "),
                    show(&redis_reply),
                ),
            });
        }
    }
    let summary = format!(
        "seed {seed}: {} twin users, {} denials by DRYRUN ({} command, {} key, {} channel), {} \
         sent to Redis ({} distinct commands) on {} connections: {} compared ({} command, {} key, \
         {} channel; {exec} EXEC wrapped in EXECABORT), {} mismatches, in {:?}",
        twins.len(),
        denials.iter().map(Vec::len).sum::<usize>(),
        denials[0].len(),
        denials[1].len(),
        denials[2].len(),
        sample.len(),
        commands.len(),
        connections.len(),
        compared.iter().sum::<usize>(),
        compared[0],
        compared[1],
        compared[2],
        mismatches.len(),
        setup.started.elapsed()
    );
    eprintln!("acl_policy: {summary}");
    assert!(mismatches.is_empty(), "{summary}\n{}", shown_mismatches(&mismatches));
    assert!(compared.iter().sum::<usize>() >= MIN_DENIALS, "{summary}: too few denials compared");
    assert!(
        compared.iter().all(|&count| count >= MIN_PER_REASON),
        "{summary}: each reason must be compared {MIN_PER_REASON} times at the least"
    );
}
