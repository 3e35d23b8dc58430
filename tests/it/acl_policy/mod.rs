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
use crate::support::redis::Server;
use crate::support::rng::Rng;
use crate::support::{RawClient, RedisServer};

mod answers;
mod denials;
mod generate;
mod setup;

use answers::*;
use generate::*;
use setup::*;

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

crate::on_every_server!(
    decide_matches_acl_dryrun,
    decide_matches_acl_dryrun_on_redis_7_2,
    decide_matches_acl_dryrun_on_valkey_8_0 => decide_matches_acl_dryrun_on
);

async fn decide_matches_acl_dryrun_on(server: Server) {
    crate::require_server!(server);
    let mut setup = Setup::new(server).await;
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
