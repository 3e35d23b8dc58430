//! Key extraction and classification against a real Redis: every line of
//! [`crate::keys_corpus`] is sent to redis-server as `COMMAND GETKEYSANDFLAGS <line>` and
//! its answer must equal `CommandTable::keys_and_flags` for the table built from that
//! server's `COMMAND` reply and for the embedded table (same keys, same flags, same order;
//! nothing where Redis answers an error). Every command and subcommand's class must follow
//! its `write` / `readonly` flags in the same `COMMAND` output.
//!
//! `KEYS_SHOW=1 cargo test --test it keys -- --nocapture` prints Redis's answer to every line.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use redis_audit_proxy::command::{Class, CommandTable};
use redis_protocol::resp2::types::OwnedFrame;
use tokio::time::Instant;

use crate::keys_corpus::{self, Line};
use crate::support::{RawClient, RedisServer};

/// Keys with their flags, in order.
type Keys = Vec<(Vec<u8>, Vec<String>)>;

/// What `COMMAND GETKEYSANDFLAGS` answered: keys with their flags, or an error message.
type Answer = Result<Keys, String>;

/// One command or subcommand of the `COMMAND` reply (the parts these tests need).
#[derive(Debug)]
struct CommandDoc {
    /// `get`, `config|get`.
    name: String,
    flags: Vec<String>,
    has_key_specs: bool,
    subcommands: Vec<Self>,
}

impl CommandDoc {
    /// The class the flags give: `write` wins over `readonly`.
    fn class(&self) -> Class {
        class_from_flags(&self.flags)
    }

    /// The arguments naming this command: `["config", "get"]` for `config|get`.
    fn args(&self) -> Vec<Bytes> {
        self.name.split('|').map(|part| Bytes::copy_from_slice(part.as_bytes())).collect()
    }
}

/// A redis-server, a connection to it, its `COMMAND` reply and the table built from it.
struct Live {
    _server: RedisServer,
    client: RawClient,
    docs: Vec<CommandDoc>,
    table: CommandTable,
}

impl Live {
    async fn start() -> Self {
        let server = RedisServer::start(&[]);
        let mut client = RawClient::connect(server.addr).await;
        client.send(b"*1\r\n$7\r\nCOMMAND\r\n").await;
        let reply = client.read_reply().await;
        let table = CommandTable::from_command_reply(&reply).expect("the COMMAND reply parses");
        let docs = match decode(&reply) {
            OwnedFrame::Array(entries) => entries.iter().map(command_doc).collect(),
            other => panic!("COMMAND replied {other:?}"),
        };
        Self { _server: server, client, docs, table }
    }

    /// Every command, then each container's subcommands.
    fn all_docs(&self) -> impl Iterator<Item = &CommandDoc> {
        self.docs.iter().flat_map(|doc| std::iter::once(doc).chain(&doc.subcommands))
    }

    /// Redis's own answer for `line`.
    async fn getkeysandflags(&mut self, line: &Line) -> Answer {
        let mut args: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYSANDFLAGS"];
        args.extend(line.iter().map(Vec::as_slice));
        let reply = self.client.call(&args).await;
        parse_answer(decode(&reply))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_flags_match_command_getkeysandflags() {
    crate::require_redis!();
    let started = Instant::now();
    let mut live = Live::start().await;
    let embedded = CommandTable::embedded();
    let corpus = keys_corpus::corpus();
    let show = std::env::var_os("KEYS_SHOW").is_some();

    let mut mismatches = Vec::new();
    let (mut with_keys, mut errors) = (0, 0);
    for line in &corpus {
        let redis = live.getkeysandflags(line).await;
        match &redis {
            Ok(keys) if !keys.is_empty() => with_keys += 1,
            Ok(_) => {}
            Err(_) => errors += 1,
        }
        if show {
            eprintln!("{} => {}", show_line(line), show_answer(&redis));
        }
        let args = to_bytes(line);
        let expected: &[(Vec<u8>, Vec<String>)] = redis.as_deref().unwrap_or_default();
        let live_ours = ours(&live.table, &args);
        let embedded_ours = ours(&embedded, &args);
        let mut wrong = Vec::new();
        if live_ours == embedded_ours {
            wrong.push(("live and embedded", live_ours));
        } else {
            wrong.push(("live", live_ours));
            wrong.push(("embedded", embedded_ours));
        }
        wrong.retain(|(_, ours)| ours.as_deref() != Ok(expected));
        if !wrong.is_empty() {
            let mut report = format!("{}\n    redis: {}", show_line(line), show_answer(&redis));
            for (which, ours) in wrong {
                let shown = ours
                    .map_or_else(|panic| format!("PANIC: {panic}"), |ours| show_answer(&Ok(ours)));
                let _ = write!(report, "\n    ours ({which}): {shown}");
            }
            mismatches.push(report);
        }
    }
    eprintln!(
        "keys: {} lines ({with_keys} with keys, {errors} errors in Redis) in {:?}",
        corpus.len(),
        started.elapsed()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches with COMMAND GETKEYSANDFLAGS:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_covers_every_command_with_keys() {
    crate::require_redis!();
    let live = Live::start().await;
    let corpus = keys_corpus::corpus();
    assert!(corpus.len() >= 500, "the corpus has only {} lines", corpus.len());

    let containers: BTreeSet<&str> = live
        .docs
        .iter()
        .filter(|doc| !doc.subcommands.is_empty())
        .map(|doc| doc.name.as_str())
        .collect();
    let mut used = BTreeSet::new();
    for line in &corpus {
        let Some(first) = line.first() else { continue };
        let name = String::from_utf8_lossy(first).to_lowercase();
        match line.get(1) {
            Some(sub) if containers.contains(name.as_str()) => {
                used.insert(format!("{name}|{}", String::from_utf8_lossy(sub).to_lowercase()));
            }
            _ => {
                used.insert(name);
            }
        }
    }
    let with_keys: Vec<&str> =
        live.all_docs().filter(|doc| doc.has_key_specs).map(|doc| doc.name.as_str()).collect();
    let missing: Vec<&str> =
        with_keys.iter().copied().filter(|name| !used.contains(*name)).collect();
    eprintln!(
        "keys corpus: {} lines, {} commands and subcommands with key specs, {} missing",
        corpus.len(),
        with_keys.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "commands with key specs absent from the corpus: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_follows_command_flags() {
    crate::require_redis!();
    let mut live = Live::start().await;
    let embedded = CommandTable::embedded();

    let mut mismatches = Vec::new();
    let mut count = 0;
    for doc in live.all_docs() {
        count += 1;
        let args = doc.args();
        let expected = Some(doc.class());
        for (which, table) in [("live", &live.table), ("embedded", &embedded)] {
            let class = table.class_of(&args);
            if class != expected {
                mismatches.push(format!(
                    "{} (flags {:?}): {which} class {class:?}, expected {expected:?}",
                    doc.name, doc.flags
                ));
            }
            let full_name = table.full_name(&args);
            if full_name.as_deref() != Some(doc.name.as_str()) {
                mismatches.push(format!("{}: {which} full name {full_name:?}", doc.name));
            }
        }
    }
    assert!(count > 300, "only {count} commands and subcommands in COMMAND");

    // Independently of the COMMAND reply: COMMAND INFO for a handful of names.
    let names: &[&str] = &[
        "get",
        "set",
        "ping",
        "publish",
        "subscribe",
        "multi",
        "exec",
        "eval",
        "eval_ro",
        "fcall_ro",
        "sort",
        "sort_ro",
        "xreadgroup",
        "georadius",
        "config|get",
        "client|list",
        "xinfo|stream",
        "xgroup|create",
        "object|encoding",
        "memory|usage",
    ];
    let mut args: Vec<&[u8]> = vec![b"COMMAND", b"INFO"];
    args.extend(names.iter().map(|name| name.as_bytes()));
    let reply = live.client.call(&args).await;
    let OwnedFrame::Array(entries) = decode(&reply) else {
        panic!("COMMAND INFO replied {reply:?}")
    };
    assert_eq!(entries.len(), names.len());
    for (name, entry) in names.iter().zip(&entries) {
        let doc = command_doc(entry);
        assert_eq!(doc.name, *name);
        let in_command = live.all_docs().find(|other| other.name == doc.name);
        assert_eq!(in_command.map(|other| &other.flags), Some(&doc.flags), "{name}: flags");
        for (which, table) in [("live", &live.table), ("embedded", &embedded)] {
            let class = table.class_of(&doc.args());
            if class != Some(doc.class()) {
                mismatches.push(format!(
                    "COMMAND INFO {name} (flags {:?}): {which} class {class:?}",
                    doc.flags
                ));
            }
        }
    }
    let expected: &[(&str, Class)] = &[
        ("get", Class::Read),
        ("set", Class::Write),
        ("ping", Class::NonReadWrite),
        ("eval", Class::NonReadWrite),
        ("eval_ro", Class::Read),
        ("xinfo|stream", Class::Read),
        ("xgroup|create", Class::Write),
        ("config|get", Class::NonReadWrite),
    ];
    for (name, class) in expected {
        let doc = live.all_docs().find(|doc| doc.name == *name).expect("a known command");
        assert_eq!(doc.class(), *class, "{name}: flags {:?}", doc.flags);
    }

    for table in [&live.table, &embedded] {
        for (line, name) in [
            ("CONFIG get", "config|get"),
            ("config GET maxmemory", "config|get"),
            ("xinfo STREAM", "xinfo|stream"),
            ("XINFO stream s FULL", "xinfo|stream"),
            ("ObJeCt EnCoDiNg k", "object|encoding"),
            ("GET k", "get"),
            ("get", "get"),
            ("SET k v GET", "set"),
            ("CONFIG", "config"),
        ] {
            let args = to_bytes(&keys_corpus::parse(line));
            let ours = table.full_name(&args);
            if ours.as_deref() != Some(name) {
                mismatches.push(format!("full_name({line}) = {ours:?}, expected {name:?}"));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} class mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn unknown_commands_and_empty_lines() {
    let table = CommandTable::embedded();
    for line in ["NOSUCHCOMMAND a b", "NOSUCHCOMMAND", "CONFIG nosuch", "CONFIG nosuch k", "\"\" k"]
    {
        let args = to_bytes(&keys_corpus::parse(line));
        assert_eq!(table.keys_and_flags(&args), Vec::new(), "{line}: keys");
        assert_eq!(table.class_of(&args), None, "{line}: class");
        assert_eq!(table.full_name(&args), None, "{line}: full name");
    }
    assert_eq!(table.keys_and_flags(&[]), Vec::new());
    assert_eq!(table.class_of(&[]), None);
    assert_eq!(table.full_name(&[]), None);
    // A line that is only a command name with keys: too few arguments, no panic.
    for name in ["GET", "MSET", "EVAL", "XREAD", "SORT", "MIGRATE", "BITFIELD", "XINFO", "OBJECT"] {
        let args = [Bytes::from_static(name.as_bytes())];
        assert_eq!(table.keys_and_flags(&args), Vec::new(), "{name}: keys");
    }
}

/// Our answer, in the shape of Redis's; `Err` with the message when it panics.
fn ours(table: &CommandTable, args: &[Bytes]) -> Result<Keys, String> {
    let keys = std::panic::catch_unwind(AssertUnwindSafe(|| table.keys_and_flags(args))).map_err(
        |panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|message| (*message).to_owned()))
                .unwrap_or_default()
        },
    )?;
    Ok(keys
        .into_iter()
        .map(|(key, flags)| (key.to_vec(), flags.into_iter().map(str::to_owned).collect()))
        .collect())
}

fn class_from_flags(flags: &[String]) -> Class {
    if flags.iter().any(|flag| flag == "write") {
        Class::Write
    } else if flags.iter().any(|flag| flag == "readonly") {
        Class::Read
    } else {
        Class::NonReadWrite
    }
}

fn to_bytes(line: &Line) -> Vec<Bytes> {
    line.iter().map(|arg| Bytes::copy_from_slice(arg)).collect()
}

/// Decodes one whole RESP2 reply.
fn decode(reply: &[u8]) -> OwnedFrame {
    match redis_protocol::resp2::decode::decode(reply) {
        Ok(Some((frame, len))) if len == reply.len() => frame,
        other => panic!("not one whole RESP2 reply ({other:?}): {:?}", reply.escape_ascii()),
    }
}

/// Reads a `COMMAND GETKEYSANDFLAGS` reply: `[[key, [flag, ...]], ...]` or an error.
fn parse_answer(frame: OwnedFrame) -> Answer {
    let entries = match frame {
        OwnedFrame::Error(message) => return Err(message),
        OwnedFrame::Array(entries) => entries,
        other => panic!("COMMAND GETKEYSANDFLAGS replied {other:?}"),
    };
    Ok(entries
        .into_iter()
        .map(|entry| match entry {
            OwnedFrame::Array(pair) => match <[OwnedFrame; 2]>::try_from(pair) {
                Ok([OwnedFrame::BulkString(key), OwnedFrame::Array(flags)]) => {
                    (key, flags.iter().map(text).collect())
                }
                Ok(pair) => panic!("unexpected key entry {pair:?}"),
                Err(pair) => panic!("unexpected key entry {pair:?}"),
            },
            other => panic!("unexpected key entry {other:?}"),
        })
        .collect())
}

/// One 10-element entry of a `COMMAND` / `COMMAND INFO` reply.
fn command_doc(frame: &OwnedFrame) -> CommandDoc {
    let OwnedFrame::Array(fields) = frame else { panic!("command entry {frame:?}") };
    assert_eq!(fields.len(), 10, "command entry {frame:?}");
    let list = |field: &OwnedFrame| match field {
        OwnedFrame::Array(items) => items.clone(),
        other => panic!("expected an array, got {other:?}"),
    };
    CommandDoc {
        name: text(&fields[0]),
        flags: list(&fields[2]).iter().map(text).collect(),
        has_key_specs: !list(&fields[8]).is_empty(),
        subcommands: list(&fields[9]).iter().map(command_doc).collect(),
    }
}

/// A simple or bulk string as text.
fn text(frame: &OwnedFrame) -> String {
    match frame {
        OwnedFrame::SimpleString(bytes) | OwnedFrame::BulkString(bytes) => {
            String::from_utf8_lossy(bytes).into_owned()
        }
        other => panic!("expected a string, got {other:?}"),
    }
}

/// `"SET" "k" "v"`, bytes escaped.
fn show_line(line: &Line) -> String {
    let mut out = String::new();
    for (n, arg) in line.iter().enumerate() {
        let space = if n == 0 { "" } else { " " };
        let _ = write!(out, "{space}\"{}\"", arg.escape_ascii());
    }
    out
}

/// `error: ...`, `(none)` or `"k" [RW access update], ...`.
fn show_answer(answer: &Answer) -> String {
    match answer {
        Err(message) => format!("error: {message}"),
        Ok(keys) if keys.is_empty() => "(none)".to_owned(),
        Ok(keys) => keys
            .iter()
            .map(|(key, flags)| format!("\"{}\" [{}]", key.escape_ascii(), flags.join(" ")))
            .collect::<Vec<_>>()
            .join(", "),
    }
}
