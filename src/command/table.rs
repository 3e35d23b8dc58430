//! The command table: every command and subcommand with its arity, flags, ACL categories and
//! key specs, read from Redis's own `COMMAND` reply (live from the upstream, or the copy
//! embedded in the binary).

use std::sync::Arc;

use bytes::Bytes;
use redis_protocol::resp2::types::OwnedFrame;
use rustc_hash::FxHashMap as HashMap;

use crate::command::keys::{GetKeys, KeyFlags};
use crate::resp::reply::ReplyScanner;
use crate::util::sync::LockAnyway;

/// The raw `COMMAND` reply of the Redis version in `embedded.version`
/// (regenerate both with `scripts/gen-command-table.sh`).
const EMBEDDED_REPLY: &[u8] = include_bytes!("embedded.resp");
/// The Redis version the embedded table was read from.
pub const EMBEDDED_VERSION: &str = include_str!("embedded.version");
/// That version's `ACL CAT`, one category per line.
const EMBEDDED_CATEGORIES: &str = include_str!("embedded.categories");

/// Where a key search starts (Redis `begin_search`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginSearch {
    /// At this argument index.
    Index(i64),
    /// After this keyword, searched from `startfrom` (forwards when positive, backwards when
    /// negative).
    Keyword {
        /// The keyword, as Redis spells it.
        keyword: Bytes,
        /// Where the search starts.
        startfrom: i64,
    },
    /// Not describable: the command's own key function decides.
    Unknown,
}

/// How many keys follow (Redis `find_keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindKeys {
    /// A range: `lastkey` relative to the first key (negative: from the end), every `keystep`,
    /// `limit` dividing what remains.
    Range {
        /// Last key, relative.
        lastkey: i64,
        /// Step between keys.
        keystep: i64,
        /// When non-zero, only `1/limit` of the remaining arguments are keys.
        limit: i64,
    },
    /// A count argument at `keynumidx`, keys from `firstkey`, every `keystep`.
    Keynum {
        /// Index of the count, relative to the search start.
        keynumidx: i64,
        /// First key, relative to the search start.
        firstkey: i64,
        /// Step between keys.
        keystep: i64,
    },
    /// Not describable.
    Unknown,
}

/// One key spec of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// RO/RW/OW/RM, access/update/insert/delete, not_key, incomplete, variable_flags.
    pub flags: KeyFlags,
    /// Where the search starts.
    pub begin_search: BeginSearch,
    /// Which arguments are keys.
    pub find_keys: FindKeys,
}

/// What the table knows about one command or subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandInfo {
    /// Full name as Redis writes it: `get`, `config|get`.
    pub name: String,
    /// Redis arity: exact when positive, minimum when negative (the name counts).
    pub arity: i64,
    /// Command flags (`write`, `readonly`, `admin`, ...).
    pub flags: Vec<String>,
    /// ACL categories, implied ones included (`@write`, `@string`, `@slow`, ...).
    pub categories: Vec<String>,
    /// Key specs, in Redis's order.
    pub key_specs: Vec<KeySpec>,
    /// Subcommands by lower-case name (for containers such as CONFIG). Fx hashing: the names
    /// come from Redis, not from clients, and lookups are on the per-command path.
    pub subcommands: HashMap<Box<[u8]>, Arc<Self>>,
    /// Redis's hand-written key function for this command, if it has one.
    pub getkeys: Option<GetKeys>,
    /// Has the `write` flag.
    pub(crate) is_write: bool,
    /// Has the `readonly` flag.
    pub(crate) is_readonly: bool,
    /// Has the `no_mandatory_keys` flag.
    pub(crate) no_mandatory_keys: bool,
    /// A small number for the name, the same in every table this process reads
    /// ([`stat_id`]): per-command counters are an array indexed by it, not a map of names.
    pub(crate) stat_id: usize,
}

/// The process-wide number of a command's full name: dense from 0, in order of first sight,
/// never reused, so a table read again (MODULE LOAD, reload) keeps its commands' numbers.
pub(crate) fn stat_id(full_name: &str) -> usize {
    static IDS: std::sync::Mutex<Option<std::collections::HashMap<String, usize>>> =
        std::sync::Mutex::new(None);
    let mut ids = IDS.lock_anyway();
    let ids = ids.get_or_insert_with(Default::default);
    let next = ids.len();
    *ids.entry(full_name.to_owned()).or_insert(next)
}

impl CommandInfo {
    /// True when `argc` arguments (the name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        if self.arity > 0 {
            self.arity == argc
        } else {
            argc >= -self.arity
        }
    }
}

/// A command table that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The reply is an error (`COMMAND` renamed away, denied, NOAUTH, ...).
    #[error("COMMAND was refused: {0}")]
    Refused(String),
    /// The reply is not a whole RESP value, or nests too deep.
    #[error("the COMMAND reply is not valid RESP")]
    Malformed,
    /// An entry does not have the shape of a COMMAND entry.
    #[error("unexpected COMMAND entry: {0}")]
    Entry(String),
}

/// Where the table in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableSource {
    /// Read from the upstream at this address.
    Live(String),
    /// The copy embedded in the binary.
    Embedded,
}

/// Every command Redis knows, by lower-case name.
#[derive(Debug, Clone)]
pub struct CommandTable {
    commands: HashMap<Box<[u8]>, Arc<CommandInfo>>,
    /// The ACL categories Redis knows (`ACL CAT`), in its order, without `@`.
    pub categories: Vec<String>,
    /// Where it came from.
    pub source: TableSource,
    /// The Redis version the table describes (`redis_version` of `INFO server`).
    pub version: String,
}

/// Longest command name looked up without allocating.
const NAME_BUFFER: usize = 32;

impl CommandTable {
    /// Parses the raw RESP2 (or RESP3) reply of `COMMAND`.
    pub fn from_command_reply(reply: &[u8]) -> Result<Self, TableError> {
        // Check the shape with our own bounded framer first: redis-protocol recurses, and
        // this reply comes from the network.
        let mut scanner = ReplyScanner::new(16);
        match scanner.scan(reply) {
            Ok((used, true)) if used == reply.len() => {}
            _ => return Err(TableError::Malformed),
        }
        if scanner.reply().is_error() {
            let text = String::from_utf8_lossy(&reply[1..]).trim_end().to_owned();
            return Err(TableError::Refused(text));
        }
        let frame = match redis_protocol::resp2::decode::decode(reply) {
            Ok(Some((frame, _))) => frame,
            _ => match redis_protocol::resp3::decode::complete::decode(reply) {
                Ok(Some((frame, _))) => resp3_to_resp2(frame),
                _ => return Err(TableError::Malformed),
            },
        };
        let OwnedFrame::Array(entries) = frame else { return Err(TableError::Malformed) };
        let mut commands = HashMap::default();
        commands.reserve(entries.len());
        for entry in &entries {
            let info = parse_entry(entry, None)?;
            commands.insert(
                info.name.as_bytes().to_ascii_lowercase().into_boxed_slice(),
                Arc::new(info),
            );
        }
        let categories = EMBEDDED_CATEGORIES.lines().map(str::to_owned).collect();
        let version = EMBEDDED_VERSION.trim().to_owned();
        Ok(Self { commands, categories, source: TableSource::Embedded, version })
    }

    /// The table embedded in the binary.
    pub fn embedded() -> Self {
        Self::from_command_reply(EMBEDDED_REPLY).expect("the embedded COMMAND reply is valid")
    }

    /// Replaces the category list with the raw reply of `ACL CAT`; keeps the current list when
    /// the reply is an error or not a list of names.
    pub fn set_categories_from_reply(&mut self, reply: &[u8]) -> Result<(), TableError> {
        let mut scanner = ReplyScanner::new(4);
        match scanner.scan(reply) {
            Ok((used, true)) if used == reply.len() => {}
            _ => return Err(TableError::Malformed),
        }
        match redis_protocol::resp2::decode::decode(reply) {
            Ok(Some((OwnedFrame::Array(items), _))) => {
                let names: Option<Vec<String>> = items
                    .iter()
                    .map(|item| text(item).map(|t| String::from_utf8_lossy(t).into_owned()))
                    .collect();
                self.categories = names.ok_or(TableError::Malformed)?;
                Ok(())
            }
            Ok(Some((OwnedFrame::Error(error), _))) => Err(TableError::Refused(error)),
            _ => Err(TableError::Malformed),
        }
    }

    /// Number of top-level commands.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// True when the table has no command.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Every top-level command.
    pub fn commands(&self) -> impl Iterator<Item = &Arc<CommandInfo>> {
        self.commands.values()
    }

    /// A top-level command by name, any case.
    pub fn get(&self, name: &[u8]) -> Option<&Arc<CommandInfo>> {
        let mut buffer = [0u8; NAME_BUFFER];
        let lower = buffer.get_mut(..name.len())?;
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        self.commands.get(&*lower)
    }

    /// The command a request runs, as Redis's `lookupCommand` finds it: the subcommand of a
    /// container when there is a second argument; `None` for an unknown command or subcommand.
    pub fn resolve(&self, args: &[Bytes]) -> Option<&Arc<CommandInfo>> {
        let command = self.get(args.first()?)?;
        if command.subcommands.is_empty() || args.len() == 1 {
            return Some(command);
        }
        let sub = &args[1];
        let mut buffer = [0u8; NAME_BUFFER];
        let lower = buffer.get_mut(..sub.len())?;
        lower.copy_from_slice(sub);
        lower.make_ascii_lowercase();
        command.subcommands.get(&*lower)
    }

    /// Commands that differ between this table and `other` (added, removed or changed), by
    /// full name, sorted.
    pub fn differences(&self, other: &Self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (name, info) in &self.commands {
            match other.commands.get(name) {
                Some(theirs) if theirs == info => {}
                _ => names.push(info.name.clone()),
            }
        }
        for (name, info) in &other.commands {
            if !self.commands.contains_key(name) {
                names.push(info.name.clone());
            }
        }
        names.sort();
        names
    }
}

/// Flattens RESP3 maps and sets into arrays, as they read in RESP2.
fn resp3_to_resp2(frame: redis_protocol::resp3::types::OwnedFrame) -> OwnedFrame {
    use redis_protocol::resp3::types::OwnedFrame as F3;
    match frame {
        F3::BlobString { data, .. }
        | F3::SimpleString { data, .. }
        | F3::VerbatimString { data, .. } => OwnedFrame::BulkString(data),
        F3::Number { data, .. } => OwnedFrame::Integer(data),
        F3::Array { data, .. } | F3::Push { data, .. } => {
            OwnedFrame::Array(data.into_iter().map(resp3_to_resp2).collect())
        }
        F3::Set { data, .. } => OwnedFrame::Array(data.into_iter().map(resp3_to_resp2).collect()),
        F3::Map { data, .. } => OwnedFrame::Array(
            data.into_iter().flat_map(|(k, v)| [resp3_to_resp2(k), resp3_to_resp2(v)]).collect(),
        ),
        F3::SimpleError { data, .. } => OwnedFrame::Error(data),
        _ => OwnedFrame::Null,
    }
}

fn text(frame: &OwnedFrame) -> Option<&[u8]> {
    match frame {
        OwnedFrame::SimpleString(data) | OwnedFrame::BulkString(data) => Some(data),
        _ => None,
    }
}

fn integer(frame: &OwnedFrame) -> Option<i64> {
    match frame {
        OwnedFrame::Integer(n) => Some(*n),
        other => text(other).and_then(crate::resp::args::string2ll),
    }
}

fn array(frame: &OwnedFrame) -> &[OwnedFrame] {
    match frame {
        OwnedFrame::Array(items) => items,
        _ => &[],
    }
}

/// Reads a RESP2 map (a flat array of name/value pairs) into `(name, value)` pairs.
fn pairs(frame: &OwnedFrame) -> impl Iterator<Item = (&[u8], &OwnedFrame)> {
    array(frame).chunks(2).filter_map(|pair| match pair {
        [name, value] => Some((text(name)?, value)),
        _ => None,
    })
}

fn strings(frame: &OwnedFrame) -> Vec<String> {
    array(frame).iter().filter_map(text).map(|t| String::from_utf8_lossy(t).into_owned()).collect()
}

fn parse_entry(entry: &OwnedFrame, parent: Option<&str>) -> Result<CommandInfo, TableError> {
    let fields = array(entry);
    let bad = || {
        let name = fields.first().and_then(text).map(String::from_utf8_lossy).unwrap_or_default();
        TableError::Entry(name.into_owned())
    };
    if fields.len() < 7 {
        return Err(bad());
    }
    let name = String::from_utf8_lossy(text(&fields[0]).ok_or_else(bad)?).to_lowercase();
    let arity = integer(&fields[1]).ok_or_else(bad)?;
    let flags = strings(&fields[2]);
    let categories = strings(&fields[6]);
    let key_specs = match fields.get(8) {
        Some(specs) => {
            array(specs).iter().map(parse_key_spec).collect::<Option<Vec<_>>>().ok_or_else(bad)?
        }
        None => Vec::new(),
    };
    let mut subcommands = HashMap::default();
    if let Some(subs) = fields.get(9) {
        for sub in array(subs) {
            let info = parse_entry(sub, Some(&name))?;
            let short = info.name.rsplit('|').next().unwrap_or(&info.name).as_bytes().to_vec();
            subcommands.insert(short.into_boxed_slice(), Arc::new(info));
        }
    }
    let has = |flag: &str| flags.iter().any(|f| f == flag);
    let getkeys = if parent.is_none() { GetKeys::for_command(&name) } else { None };
    Ok(CommandInfo {
        stat_id: stat_id(&name),
        is_write: has("write"),
        is_readonly: has("readonly"),
        no_mandatory_keys: has("no_mandatory_keys"),
        name,
        arity,
        flags,
        categories,
        key_specs,
        subcommands,
        getkeys,
    })
}

fn parse_key_spec(spec: &OwnedFrame) -> Option<KeySpec> {
    let mut flags = KeyFlags::default();
    let mut begin_search = BeginSearch::Unknown;
    let mut find_keys = FindKeys::Unknown;
    for (name, value) in pairs(spec) {
        match name {
            b"flags" => {
                for flag in array(value).iter().filter_map(text) {
                    flags = flags | KeyFlags::from_name(flag)?;
                }
            }
            b"begin_search" => begin_search = parse_begin_search(value)?,
            b"find_keys" => find_keys = parse_find_keys(value)?,
            _ => {}
        }
    }
    Some(KeySpec { flags, begin_search, find_keys })
}

/// `{type: index|keyword|unknown, spec: {...}}`
fn typed_spec(frame: &OwnedFrame) -> Option<(&[u8], &OwnedFrame)> {
    let (mut kind, mut spec) = (None, None);
    for (name, value) in pairs(frame) {
        match name {
            b"type" => kind = text(value),
            b"spec" => spec = Some(value),
            _ => {}
        }
    }
    Some((kind?, spec.unwrap_or(&OwnedFrame::Null)))
}

fn field<'a>(spec: &'a OwnedFrame, wanted: &[u8]) -> Option<&'a OwnedFrame> {
    pairs(spec).find(|(name, _)| *name == wanted).map(|(_, value)| value)
}

fn parse_begin_search(frame: &OwnedFrame) -> Option<BeginSearch> {
    let (kind, spec) = typed_spec(frame)?;
    Some(match kind {
        b"index" => BeginSearch::Index(integer(field(spec, b"index")?)?),
        b"keyword" => BeginSearch::Keyword {
            keyword: Bytes::copy_from_slice(text(field(spec, b"keyword")?)?),
            startfrom: integer(field(spec, b"startfrom")?)?,
        },
        _ => BeginSearch::Unknown,
    })
}

fn parse_find_keys(frame: &OwnedFrame) -> Option<FindKeys> {
    let (kind, spec) = typed_spec(frame)?;
    Some(match kind {
        b"range" => FindKeys::Range {
            lastkey: integer(field(spec, b"lastkey")?)?,
            keystep: integer(field(spec, b"keystep")?)?,
            limit: integer(field(spec, b"limit")?)?,
        },
        b"keynum" => FindKeys::Keynum {
            keynumidx: integer(field(spec, b"keynumidx")?)?,
            firstkey: integer(field(spec, b"firstkey")?)?,
            keystep: integer(field(spec, b"keystep")?)?,
        },
        _ => FindKeys::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect()
    }

    #[test]
    fn the_embedded_table_reads_whole() {
        let table = CommandTable::embedded();
        assert!(table.len() > 200, "{} commands", table.len());
        let get = table.resolve(&args("GET k")).unwrap();
        assert_eq!((get.name.as_str(), get.arity, get.is_readonly), ("get", 2, true));
        assert_eq!(get.categories, ["@read", "@string", "@fast"]);
        let config_get = table.resolve(&args("Config GET maxmemory")).unwrap();
        assert_eq!(config_get.name, "config|get");
        assert!(table.resolve(&args("config nosuch")).is_none());
        assert_eq!(table.resolve(&args("CONFIG")).unwrap().name, "config");
        assert!(table.resolve(&args("nosuchcommand")).is_none());
        assert_eq!(table.categories.len(), 21);
        assert_eq!(
            (table.categories[0].as_str(), table.categories[20].as_str()),
            ("keyspace", "scripting")
        );
        let xread = table.resolve(&args("xread")).unwrap();
        assert!(
            matches!(&xread.key_specs[0].begin_search, BeginSearch::Keyword { keyword, .. } if keyword.as_ref() == b"STREAMS")
        );
    }

    #[test]
    fn categories_come_from_acl_cat() {
        let mut table = CommandTable::embedded();
        table.set_categories_from_reply(b"*2\r\n$4\r\nread\r\n$6\r\nsearch\r\n").unwrap();
        assert_eq!(table.categories, ["read", "search"]);
        let refused = table.set_categories_from_reply(b"-NOPERM no\r\n");
        assert_eq!(refused, Err(TableError::Refused("NOPERM no".into())));
        assert_eq!(table.categories, ["read", "search"], "kept on refusal");
    }

    #[test]
    fn refused_and_malformed_replies_are_errors() {
        assert_eq!(
            CommandTable::from_command_reply(b"-NOAUTH Authentication required.\r\n").unwrap_err(),
            TableError::Refused("NOAUTH Authentication required.".into())
        );
        assert_eq!(
            CommandTable::from_command_reply(b"*2\r\n:1\r\n").unwrap_err(),
            TableError::Malformed
        );
        let deep = b"*1\r\n".repeat(100);
        assert_eq!(CommandTable::from_command_reply(&deep).unwrap_err(), TableError::Malformed);
    }

    #[test]
    fn differences_name_changed_commands() {
        let table = CommandTable::embedded();
        let mut other = table.clone();
        let mut get = (**other.get(b"get").unwrap()).clone();
        get.arity = 3;
        other.commands.insert(Box::from(&b"get"[..]), Arc::new(get));
        other.commands.remove(&b"set"[..]);
        assert_eq!(table.differences(&other), ["get", "set"]);
        assert!(table.differences(&table).is_empty());
    }
}
