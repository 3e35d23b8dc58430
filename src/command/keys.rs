//! Which arguments of a command are keys and channels, found exactly as Redis's ACL check
//! finds them (`getKeysFromCommandWithSpecs`, `getChannelsFromCommand` in db.c): key specs
//! first, Redis's hand-written key functions where the specs are not enough.

use bytes::Bytes;

use crate::command::table::{BeginSearch, CommandInfo, FindKeys};
use crate::resp::args::string2ll;

/// Key flags, as Redis names them and in Redis's order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KeyFlags(u16);

const KEY_FLAG_NAMES: [&str; 11] = [
    "RO",
    "RW",
    "OW",
    "RM",
    "access",
    "update",
    "insert",
    "delete",
    "not_key",
    "incomplete",
    "variable_flags",
];

impl KeyFlags {
    /// Read-only.
    pub const RO: Self = Self(1);
    /// Read-write.
    pub const RW: Self = Self(1 << 1);
    /// Overwrite.
    pub const OW: Self = Self(1 << 2);
    /// Remove.
    pub const RM: Self = Self(1 << 3);
    /// The value is read.
    pub const ACCESS: Self = Self(1 << 4);
    /// The value is updated.
    pub const UPDATE: Self = Self(1 << 5);
    /// A value is inserted.
    pub(crate) const INSERT: Self = Self(1 << 6);
    /// A value is deleted.
    pub const DELETE: Self = Self(1 << 7);
    /// Not a key (looks like one in the spec).
    pub(crate) const NOT_KEY: Self = Self(1 << 8);
    /// The spec may miss keys.
    pub(crate) const INCOMPLETE: Self = Self(1 << 9);
    /// The flags depend on the arguments.
    pub(crate) const VARIABLE_FLAGS: Self = Self(1 << 10);

    /// The flag named `name` (any case), as `COMMAND` writes it.
    pub(crate) fn from_name(name: &[u8]) -> Option<Self> {
        KEY_FLAG_NAMES
            .iter()
            .position(|known| known.as_bytes().eq_ignore_ascii_case(name))
            .map(|bit| Self(1 << bit))
    }

    /// The names of the flags set, in Redis's order.
    pub fn names(self) -> Vec<&'static str> {
        KEY_FLAG_NAMES
            .iter()
            .enumerate()
            .filter(|(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, n)| *n)
            .collect()
    }

    /// True when every flag of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for KeyFlags {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// The keys of one command; most have one or two, kept inline without allocating.
pub type Keys = smallvec::SmallVec<[KeyRef; 3]>;

/// One key of a command: its argument index and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef {
    /// Index in the arguments (the command name is 0).
    pub index: usize,
    /// How the command uses it.
    pub flags: KeyFlags,
}

/// How a command uses a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelUse {
    /// SUBSCRIBE, SSUBSCRIBE.
    Subscribe,
    /// PSUBSCRIBE: the argument is a pattern.
    PatternSubscribe,
    /// UNSUBSCRIBE, SUNSUBSCRIBE.
    Unsubscribe,
    /// PUNSUBSCRIBE.
    PatternUnsubscribe,
    /// PUBLISH, SPUBLISH.
    Publish,
}

impl ChannelUse {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::PatternSubscribe => "pattern-subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::PatternUnsubscribe => "pattern-unsubscribe",
            Self::Publish => "publish",
        }
    }
}

/// One channel of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelRef {
    /// Index in the arguments.
    pub index: usize,
    /// How it is used.
    pub usage: ChannelUse,
}

/// Redis's hand-written key functions (`getkeys_proc`), used where key specs fall short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetKeys {
    /// `genericGetKeys(store, count, first, step)`: `numkeys`-style commands.
    Generic {
        /// Index of a destination key, or 0.
        store: usize,
        /// Index of the key count.
        count: usize,
        /// Index of the first key.
        first: usize,
    },
    /// SET: `RW access update` with a GET option, else `OW update`.
    Set,
    /// BITFIELD: `RO access` when only GET/OVERFLOW appear.
    Bitfield,
    /// SORT: the sort key, and the last `STORE` destination.
    Sort,
    /// SORT_RO: the sort key.
    SortRo,
    /// MIGRATE: one key, or the keys after `KEYS`.
    Migrate,
    /// GEORADIUS*: the key and a STORE/STOREDIST destination.
    Georadius,
    /// XREAD*: half the arguments after `STREAMS`.
    Xread,
}

impl GetKeys {
    /// The key function Redis registers for `name` (lower case).
    pub(crate) fn for_command(name: &str) -> Option<Self> {
        let generic = |store, count, first| Some(Self::Generic { store, count, first });
        match name {
            "set" => Some(Self::Set),
            "bitfield" => Some(Self::Bitfield),
            "sort" => Some(Self::Sort),
            "sort_ro" => Some(Self::SortRo),
            "migrate" => Some(Self::Migrate),
            "georadius" | "georadiusbymember" => Some(Self::Georadius),
            "xread" | "xreadgroup" => Some(Self::Xread),
            "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => {
                generic(0, 2, 3)
            }
            "blmpop" | "bzmpop" => generic(0, 2, 3),
            "zunionstore" | "zinterstore" | "zdiffstore" => generic(1, 2, 3),
            "zunion" | "zinter" | "zdiff" | "zintercard" | "sintercard" | "lmpop" | "zmpop" => {
                generic(0, 1, 2)
            }
            _ => None,
        }
    }

    fn keys(self, args: &[Bytes], out: &mut Keys) {
        let is = |index: usize, word: &str| c_str_eq(&args[index], word.as_bytes());
        let key = |index, flags| KeyRef { index, flags };
        let none = KeyFlags::default();
        match self {
            Self::Generic { store, count, first } => {
                let Some(count_arg) = args.get(count) else { return };
                let num = atoi(count_arg);
                if num < 1 || num > (args.len() as i64 - first as i64) {
                    return;
                }
                out.extend((0..num as usize).map(|i| key(first + i, none)));
                if store > 0 {
                    out.push(key(store, none));
                }
            }
            Self::Set => {
                let get = (3..args.len()).any(|i| is(i, "get"));
                let flags = if get {
                    KeyFlags::RW | KeyFlags::ACCESS | KeyFlags::UPDATE
                } else {
                    KeyFlags::OW | KeyFlags::UPDATE
                };
                out.push(key(1, flags));
            }
            Self::Bitfield => {
                let mut readonly = true;
                let mut i = 2;
                while i < args.len() {
                    let remaining = args.len() - i - 1;
                    if is(i, "get") && remaining >= 2 {
                        i += 2;
                    } else if (is(i, "set") || is(i, "incrby")) && remaining >= 3 {
                        readonly = false;
                        break;
                    } else if is(i, "overflow") && remaining >= 1 {
                        i += 1;
                    } else {
                        readonly = false;
                        break;
                    }
                    i += 1;
                }
                let flags = if readonly {
                    KeyFlags::RO | KeyFlags::ACCESS
                } else {
                    KeyFlags::RW | KeyFlags::ACCESS | KeyFlags::UPDATE
                };
                out.push(key(1, flags));
            }
            Self::SortRo => out.push(key(1, KeyFlags::RO | KeyFlags::ACCESS)),
            Self::Sort => {
                out.push(key(1, KeyFlags::RO | KeyFlags::ACCESS));
                let mut store = None;
                let mut i = 2;
                while i < args.len() {
                    if is(i, "limit") {
                        i += 2;
                    } else if is(i, "store") && i + 1 < args.len() {
                        // The last STORE wins, as in SORT itself.
                        store = Some(i + 1);
                    } else if is(i, "get") || is(i, "by") {
                        i += 1;
                    }
                    i += 1;
                }
                if let Some(index) = store {
                    out.push(key(index, KeyFlags::OW | KeyFlags::UPDATE));
                }
            }
            Self::Migrate => {
                let (mut first, mut num) = (3, 1);
                let mut i = 6;
                while args.len() > 6 && i < args.len() {
                    if is(i, "keys") {
                        if !args[3].is_empty() {
                            num = 0; // a syntax error: MIGRATE reports it
                        } else {
                            first = i + 1;
                            num = args.len() - first;
                        }
                        break;
                    }
                    if is(i, "auth") {
                        i += 1;
                    } else if is(i, "auth2") {
                        i += 2;
                    }
                    i += 1;
                }
                let flags = KeyFlags::RW | KeyFlags::ACCESS | KeyFlags::DELETE;
                out.extend((first..first + num).filter(|&i| i < args.len()).map(|i| key(i, flags)));
            }
            Self::Georadius => {
                let mut stored = None;
                let mut i = 5;
                while i < args.len() {
                    if (is(i, "store") || is(i, "storedist")) && i + 1 < args.len() {
                        stored = Some(i + 1);
                        i += 1;
                    }
                    i += 1;
                }
                out.push(key(1, none));
                if let Some(index) = stored {
                    out.push(key(index, none));
                }
            }
            Self::Xread => {
                let mut streams = None;
                let mut i = 1;
                while i < args.len() {
                    if is(i, "block") || is(i, "count") {
                        i += 1;
                    } else if is(i, "group") {
                        i += 2;
                    } else if is(i, "noack") {
                    } else if is(i, "streams") {
                        streams = Some(i);
                        break;
                    } else {
                        break;
                    }
                    i += 1;
                }
                let Some(streams) = streams else { return };
                let num = args.len() - streams - 1;
                if num == 0 || !num.is_multiple_of(2) {
                    return;
                }
                out.extend((streams + 1..streams + 1 + num / 2).map(|i| key(i, none)));
            }
        }
    }
}

/// Redis compares option names with `strcasecmp`, which stops at a NUL byte: `GET\0x` reads
/// as `GET`.
fn c_str_eq(arg: &[u8], word: &[u8]) -> bool {
    let end = memchr::memchr(0, arg).unwrap_or(arg.len());
    arg[..end].eq_ignore_ascii_case(word)
}

/// C's `atoi` as Redis uses it: `strtol` (leading spaces, a sign, digits up to the first
/// non-digit, clamped to the 64-bit range), then cast to a 32-bit `int`.
fn atoi(text: &[u8]) -> i64 {
    i64::from(strtol(text) as i32)
}

fn strtol(text: &[u8]) -> i64 {
    let text = match text.iter().position(|b| !b.is_ascii_whitespace()) {
        Some(start) => &text[start..],
        None => return 0,
    };
    let (negative, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let mut value: i128 = 0;
    for &digit in digits.iter().take_while(|b| b.is_ascii_digit()) {
        value = (value * 10 + i128::from(digit - b'0')).min(i128::from(i64::MAX) + 1);
    }
    let value = if negative { -value } else { value };
    value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// True when Redis considers the command to have keys (`doesCommandHaveKeys`).
pub(crate) fn has_keys(command: &CommandInfo) -> bool {
    command.getkeys.is_some()
        || command.key_specs.iter().any(|s| !s.flags.contains(KeyFlags::NOT_KEY))
}

/// The keys of `args` for `command`, as Redis's ACL check finds them; none when the arity is
/// wrong (Redis refuses the command before any ACL check).
pub fn extract_keys(command: &CommandInfo, args: &[Bytes], out: &mut Keys) {
    out.clear();
    if !command.arity_ok(args.len()) {
        return;
    }
    let has_keyspec = command.key_specs.iter().any(|s| !s.flags.contains(KeyFlags::NOT_KEY));
    let variable = command.key_specs.iter().any(|s| s.flags.contains(KeyFlags::VARIABLE_FLAGS));
    if has_keyspec && !variable && keys_from_specs(command, args, out) {
        return;
    }
    out.clear();
    if let Some(getkeys) = command.getkeys {
        getkeys.keys(args, out);
    }
}

/// `getKeysUsingKeySpecs`: false when a spec is invalid for these arguments.
fn keys_from_specs(command: &CommandInfo, args: &[Bytes], out: &mut Keys) -> bool {
    let argc = args.len() as i64;
    for spec in &command.key_specs {
        if spec.flags.contains(KeyFlags::NOT_KEY) {
            continue;
        }
        let first = match &spec.begin_search {
            BeginSearch::Index(index) => *index,
            BeginSearch::Keyword { keyword, startfrom } => {
                let found = if *startfrom > 0 {
                    (*startfrom..argc - 1).find(|&i| c_str_eq(&args[i as usize], keyword))
                } else {
                    (1..=argc + startfrom)
                        .rev()
                        .find(|&i| i < argc && c_str_eq(&args[i as usize], keyword))
                };
                match found {
                    Some(at) => at + 1,
                    None => continue, // keyword absent: this spec has no keys
                }
            }
            BeginSearch::Unknown => return false,
        };
        let (first, last, step) = match &spec.find_keys {
            FindKeys::Range { lastkey, keystep, limit } => {
                let last = if *lastkey >= 0 {
                    first + lastkey
                } else if *limit == 0 {
                    argc + lastkey
                } else {
                    first + ((argc - first) / limit + lastkey)
                };
                (first, last, *keystep)
            }
            FindKeys::Keynum { keynumidx, firstkey, keystep } => {
                if *keynumidx >= argc {
                    return false;
                }
                let Some(count_arg) = args.get((first + keynumidx) as usize) else { return false };
                // Redis parses a 64-bit count, then uses it as a 32-bit `int`.
                let numkeys = match string2ll(count_arg) {
                    Some(n) if n >= 0 => i64::from(n as i32),
                    _ => return false,
                };
                let first = first + firstkey;
                (first, first + numkeys - 1, *keystep)
            }
            FindKeys::Unknown => return false,
        };
        if last >= argc || last < first || first >= argc || step < 1 {
            return false;
        }
        let mut index = first;
        while index <= last {
            out.push(KeyRef { index: index as usize, flags: spec.flags });
            index += step;
        }
        if spec.flags.contains(KeyFlags::INCOMPLETE) {
            return false;
        }
    }
    true
}

/// The channels of `args` (`getChannelsFromCommand`): only the pub/sub commands have them.
pub fn extract_channels(command: &CommandInfo, args: &[Bytes]) -> Vec<ChannelRef> {
    let (usage, count) = match command.name.as_str() {
        "subscribe" | "ssubscribe" => (ChannelUse::Subscribe, None),
        "psubscribe" => (ChannelUse::PatternSubscribe, None),
        "unsubscribe" | "sunsubscribe" => (ChannelUse::Unsubscribe, None),
        "punsubscribe" => (ChannelUse::PatternUnsubscribe, None),
        "publish" | "spublish" => (ChannelUse::Publish, Some(1)),
        _ => return Vec::new(),
    };
    let stop = count.map_or(args.len(), |n| (1 + n).min(args.len()));
    (1..stop).map(|index| ChannelRef { index, usage }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::table::CommandTable;

    fn keys(table: &CommandTable, line: &str) -> Vec<(String, Vec<&'static str>)> {
        let args: Vec<Bytes> =
            line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
        table
            .keys_and_flags(&args)
            .into_iter()
            .map(|(key, flags)| (String::from_utf8_lossy(&key).into_owned(), flags))
            .collect()
    }

    #[test]
    fn specs_and_key_functions() {
        let table = CommandTable::embedded();
        let k = |line: &str| keys(&table, line);
        assert_eq!(k("GET a"), [("a".into(), vec!["RO", "access"])]);
        assert_eq!(k("SET a 1"), [("a".into(), vec!["OW", "update"])]);
        assert_eq!(k("SET a 1 EX 5 get"), [("a".into(), vec!["RW", "access", "update"])]);
        assert_eq!(k("MSET a 1 b 2").len(), 2);
        assert_eq!(
            k("SORT s BY w GET g STORE d STORE e"),
            [("s".into(), vec!["RO", "access"]), ("e".into(), vec!["OW", "update"])]
        );
        assert_eq!(k("BITFIELD b GET u8 0 OVERFLOW WRAP"), [("b".into(), vec!["RO", "access"])]);
        assert_eq!(k("BITFIELD b GET u8 0 SET u8 0 1")[0].1, ["RW", "access", "update"]);
        assert_eq!(k("MIGRATE h 1  0 10 COPY AUTH pw KEYS x y").len(), 2);
        assert_eq!(k("XREAD COUNT 2 STREAMS a b 0 0").len(), 2);
        assert_eq!(k("EVAL s 2 a b c").len(), 2);
        assert!(k("EVAL s 3 a b").is_empty());
        assert!(k("GET").is_empty(), "arity");
        assert!(k("PING").is_empty());
    }

    #[test]
    fn atoi_reads_like_c() {
        assert_eq!(atoi(b"  2abc"), 2);
        assert_eq!(atoi(b"-3"), -3);
        assert_eq!(atoi(b"x"), 0);
        assert_eq!(atoi(b"-4294967295"), 1, "32-bit int cast");
        assert_eq!(atoi(b"9223372036854775807"), -1);
        assert_eq!(atoi(b"99999999999999999999999"), -1, "strtol clamps");
    }

    #[test]
    fn channels_of_pubsub_commands() {
        let table = CommandTable::embedded();
        let args: Vec<Bytes> = ["PUBLISH", "c", "m"].iter().map(|w| Bytes::from(*w)).collect();
        let publish = table.resolve(&args).unwrap();
        assert_eq!(
            extract_channels(publish, &args),
            [ChannelRef { index: 1, usage: ChannelUse::Publish }]
        );
        let args: Vec<Bytes> = ["PSUBSCRIBE", "a*", "b*"].iter().map(|w| Bytes::from(*w)).collect();
        assert_eq!(extract_channels(table.resolve(&args).unwrap(), &args).len(), 2);
    }
}
