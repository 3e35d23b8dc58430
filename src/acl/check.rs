//! The policy decision, a pure function: may this user run this command with these
//! arguments? Follows `ACLCheckAllUserCommandPerm`, including which denial Redis reports
//! when no selector allows the command.

use bytes::Bytes;

use crate::acl::command_ids::{ChannelArgs, CommandIds};
use crate::acl::glob;
use crate::acl::user::{Selector, User, KEY_READ, KEY_WRITE};
use crate::command::{KeyFlags, Keys};

/// What a denial is about. Ordered as Redis's `ACL_DENIED_*` values: when several selectors
/// deny, the highest wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DenyReason {
    /// The command (or subcommand) is not allowed.
    Command = 1,
    /// A key is not allowed.
    Key = 2,
    /// A channel is not allowed.
    Channel = 4,
}

impl DenyReason {
    /// As `ACL LOG` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Key => "key",
            Self::Channel => "channel",
        }
    }
}

/// A denied command: why, and which argument (0 for a command denial).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    /// Command, key or channel.
    pub reason: DenyReason,
    /// Index in the arguments of the key or channel denied.
    pub arg_index: usize,
}

impl Denial {
    /// The `ACL LOG` object: the command's full name, or the key or channel as sent.
    pub fn object<'a>(&self, full_name: &'a str, args: &'a [Bytes]) -> &'a [u8] {
        match self.reason {
            DenyReason::Command => full_name.as_bytes(),
            DenyReason::Key | DenyReason::Channel => {
                args.get(self.arg_index).map_or(&[][..], |arg| &arg[..])
            }
        }
    }
}

/// Checks `args` (the command with id `id`, whose keys are `keys`) against every selector
/// of `user`: allowed when any selector allows it; otherwise the denial Redis would log.
pub fn check(
    user: &User,
    ids: &CommandIds,
    id: u16,
    args: &[Bytes],
    keys: &Keys,
) -> Result<(), Denial> {
    let mut relevant = DenyReason::Command;
    let (mut last_index, mut index) = (0, 0);
    for selector in &user.selectors {
        match check_selector(selector, ids, id, args, keys) {
            Ok(()) => return Ok(()),
            Err(denial) => {
                // As Redis: a command denial leaves the index where the previous selector
                // put it; ties between equal reasons go to the later argument.
                if denial.reason != DenyReason::Command {
                    index = denial.arg_index;
                }
                if denial.reason > relevant || (denial.reason == relevant && index > last_index) {
                    relevant = denial.reason;
                    last_index = index;
                }
            }
        }
    }
    Err(Denial { reason: relevant, arg_index: last_index })
}

/// `ACLUserCheckCmdWithUnrestrictedKeyAccess` for read access: some selector allows the
/// command and may read every key (`~*`, `%R~*`, `allkeys`). Redis requires it for SORT's
/// BY and GET patterns, which read keys the command does not name.
pub(crate) fn allows_reading_every_key(
    user: &User,
    ids: &CommandIds,
    id: u16,
    args: &[Bytes],
    keys: &Keys,
) -> bool {
    user.selectors.iter().any(|selector| {
        check_selector(selector, ids, id, args, keys).is_ok()
            && (selector.all_keys
                || selector.keys.iter().any(|pattern| {
                    pattern.pattern == b"*" && pattern.permissions & KEY_READ == KEY_READ
                }))
    })
}

fn check_selector(
    selector: &Selector,
    ids: &CommandIds,
    id: u16,
    args: &[Bytes],
    keys: &Keys,
) -> Result<(), Denial> {
    let command_denied = Denial { reason: DenyReason::Command, arg_index: 0 };
    if !selector.all_commands && !ids.is_no_auth(id) && !selector.allows_id(id) {
        let first_arg_allowed = args.len() >= 2
            && selector.first_args_of(id).is_some_and(|allowed| {
                let arg = args.get(if ids.has_parent(id) { 2 } else { 1 });
                arg.is_some_and(|arg| allowed.iter().any(|a| a.eq_ignore_ascii_case(arg)))
            });
        if !first_arg_allowed {
            return Err(command_denied);
        }
    }
    if !selector.all_keys {
        for key in keys {
            // Indexes come from the key extraction, within `args`; `get` keeps a table with
            // odd key specs from panicking here.
            let Some(name) = args.get(key.index) else { continue };
            if !key_allowed(selector, name, key.flags) {
                return Err(Denial { reason: DenyReason::Key, arg_index: key.index });
            }
        }
    }
    if !selector.all_channels {
        if let Some(kind) = ids.channel_args(id) {
            let end = if kind == ChannelArgs::First { args.len().min(2) } else { args.len() };
            for (index, channel) in args.iter().enumerate().take(end).skip(1) {
                let channel = &channel[..];
                let allowed = selector.channels.iter().any(|pattern| {
                    if kind == ChannelArgs::AllLiteral {
                        pattern == channel
                    } else {
                        glob::matches(pattern, channel)
                    }
                });
                if !allowed {
                    return Err(Denial { reason: DenyReason::Channel, arg_index: index });
                }
            }
        }
    }
    Ok(())
}

/// `ACLSelectorCheckKey`: the key's flags say which permissions a pattern needs.
fn key_allowed(selector: &Selector, key: &[u8], flags: KeyFlags) -> bool {
    let mut needed = 0;
    if flags.contains(KeyFlags::ACCESS) {
        needed |= KEY_READ;
    }
    if flags.contains(KeyFlags::INSERT)
        || flags.contains(KeyFlags::DELETE)
        || flags.contains(KeyFlags::UPDATE)
    {
        needed |= KEY_WRITE;
    }
    selector.keys.iter().any(|pattern| {
        pattern.permissions & needed == needed && glob::matches(&pattern.pattern, key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::users::Users;
    use crate::command::{extract_keys, CommandTable};

    type Check<T> = fn(&User, &CommandIds, u16, &[Bytes], &Keys) -> T;

    /// Runs `check` (or another function of the same shape) on `line` for `user` of the
    /// users file `file`.
    fn with<T>(file: &str, user: &str, line: &str, check: Check<T>) -> T {
        let table = CommandTable::embedded();
        let ids = CommandIds::new(&table);
        let users = Users::parse(file.as_bytes(), &ids).unwrap();
        let args: Vec<Bytes> =
            line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
        let command = table.resolve(&args).unwrap();
        let mut keys = Keys::new();
        extract_keys(command, &args, &mut keys);
        let id = ids.id(&command.name).unwrap();
        check(users.get(user.as_bytes()).unwrap(), &ids, id, &args, &keys)
    }

    fn run(file: &str, user: &str, line: &str) -> Result<(), Denial> {
        with(file, user, line, check)
    }

    fn reads_every_key(rules: &str, line: &str) -> bool {
        with(&format!("user u on nopass {rules}\n"), "u", line, allows_reading_every_key)
    }

    #[test]
    fn reasons_are_named_as_acl_log_names_them() {
        assert_eq!(DenyReason::Command.as_str(), "command");
        assert_eq!(DenyReason::Key.as_str(), "key");
        assert_eq!(DenyReason::Channel.as_str(), "channel");
    }

    #[test]
    fn the_object_is_the_command_or_the_argument_denied() {
        let args: Vec<Bytes> = vec![Bytes::from_static(b"GET"), Bytes::from_static(b"k1")];
        let command = Denial { reason: DenyReason::Command, arg_index: 1 };
        assert_eq!(command.object("get", &args), b"get");
        let key = Denial { reason: DenyReason::Key, arg_index: 1 };
        assert_eq!(key.object("get", &args), b"k1");
        let channel = Denial { reason: DenyReason::Channel, arg_index: 0 };
        assert_eq!(channel.object("get", &args), b"GET");
        let beyond = Denial { reason: DenyReason::Key, arg_index: 2 };
        assert_eq!(beyond.object("get", &args), b"");
    }

    #[test]
    fn among_selectors_the_highest_reason_then_the_later_argument_is_reported() {
        // The root selector denies the key at index 3, the second the one at index 1: ties
        // between equal reasons go to the later argument, whatever the selectors' order.
        let file = "user u on nopass ~a ~b +mget (~b ~c +mget)\n";
        let denial = run(file, "u", "MGET a b c").unwrap_err();
        assert_eq!((denial.reason, denial.arg_index), (DenyReason::Key, 3));
        let file = "user u on nopass ~b ~c +mget (~a ~b +mget)\n";
        let denial = run(file, "u", "MGET a b c").unwrap_err();
        assert_eq!((denial.reason, denial.arg_index), (DenyReason::Key, 3));
        // A channel denial outranks a command denial.
        let file = "user u on nopass resetchannels &x +publish (&* +get)\n";
        let denial = run(file, "u", "PUBLISH other m").unwrap_err();
        assert_eq!((denial.reason, denial.arg_index), (DenyReason::Channel, 1));
        let denial = run(file, "u", "SUBSCRIBE x other").unwrap_err();
        assert_eq!((denial.reason, denial.arg_index), (DenyReason::Command, 0));
        // A shard channel is no key to the ACL (`NOT_KEY`): a user without key patterns may
        // publish to it, as in Redis.
        assert_eq!(run("user u on nopass &* +spublish\n", "u", "SPUBLISH ch m"), Ok(()));
        let denial = run("user u on nopass &x +spublish\n", "u", "SPUBLISH ch m").unwrap_err();
        assert_eq!((denial.reason, denial.arg_index), (DenyReason::Channel, 1));
        // Any selector that allows it wins.
        assert_eq!(run("user u on nopass ~a +get (~b +get)\n", "u", "GET b"), Ok(()));
    }

    #[test]
    fn commands_taken_away_after_all() {
        let file = "user u on nopass ~* &* +@all -get -config|set -@dangerous +flushall\n";
        let command = Err(Denial { reason: DenyReason::Command, arg_index: 0 });
        for (line, expected) in [
            ("GET k", command),
            ("SET k v", Ok(())),
            ("GETSET k v", Ok(())),
            ("CONFIG SET maxmemory 1", command),
            ("CONFIG GET maxmemory", command),
            ("DEBUG SLEEP 0", command),
            ("FLUSHALL", Ok(())),
            ("ZADD z 1 m", Ok(())),
            ("XADD s * f v", Ok(())),
        ] {
            assert_eq!(run(file, "u", line), expected, "{line}");
        }
    }

    #[test]
    fn first_arguments_and_channel_patterns() {
        let file = "user u on nopass ~* resetchannels &news.* -@all +select|0 +config|get \
                    +publish +psubscribe +subscribe\n";
        assert_eq!(run(file, "u", "SELECT 0"), Ok(()));
        let denial = run(file, "u", "SELECT 1").unwrap_err();
        assert_eq!((denial.reason, denial.arg_index), (DenyReason::Command, 0));
        let several = "user u on nopass -@all +select|0 +select|1 +select|0\n";
        assert_eq!(run(several, "u", "SELECT 0"), Ok(()));
        assert_eq!(run(several, "u", "SELECT 1"), Ok(()));
        assert!(run(several, "u", "SELECT 2").is_err());
        assert_eq!(run(file, "u", "CONFIG GET maxmemory"), Ok(()));
        assert!(run(file, "u", "CONFIG SET maxmemory 1").is_err());
        // A channel is matched against the patterns; a pattern subscribed to must be one of
        // them, literally (Redis's `ACLCheckChannelAgainstList` with `is_pattern`).
        assert_eq!(run(file, "u", "PUBLISH news.1 m"), Ok(()));
        assert_eq!(run(file, "u", "SUBSCRIBE news.1 news.2"), Ok(()));
        assert_eq!(run(file, "u", "PSUBSCRIBE news.*"), Ok(()));
        let denial = run(file, "u", "PSUBSCRIBE news.* news.1");
        assert_eq!(denial, Err(Denial { reason: DenyReason::Channel, arg_index: 2 }));
        let denial = run(file, "u", "SUBSCRIBE news.1 sport.1");
        assert_eq!(denial, Err(Denial { reason: DenyReason::Channel, arg_index: 2 }));
    }

    #[test]
    fn a_key_pattern_allows_what_its_permissions_cover() {
        let file = "user u on nopass %R~r:* %W~w:* ~rw:* +@all\n";
        let key = |index| Err(Denial { reason: DenyReason::Key, arg_index: index });
        // DEL deletes (write), LPUSH inserts (write), SET updates (write), GET reads,
        // GETDEL reads and deletes, LMOVE reads and deletes its source, inserts its target.
        for (line, expected) in [
            ("DEL r:1", key(1)),
            ("DEL w:1", Ok(())),
            ("LPUSH r:1 v", key(1)),
            ("LPUSH w:1 v", Ok(())),
            ("SET r:1 v", key(1)),
            ("SET w:1 v", Ok(())),
            ("GET r:1", Ok(())),
            ("GET w:1", key(1)),
            ("GETDEL r:1", key(1)),
            ("GETDEL w:1", key(1)),
            ("GETDEL rw:1", Ok(())),
            ("LMOVE rw:1 w:1 LEFT LEFT", Ok(())),
            ("LMOVE r:1 w:1 LEFT LEFT", key(1)),
            ("LMOVE rw:1 r:1 LEFT LEFT", key(2)),
            ("GET other", key(1)),
        ] {
            assert_eq!(run(file, "u", line), expected, "{line}");
        }
    }

    #[test]
    fn reading_every_key_needs_a_selector_that_allows_the_command_and_reads_everything() {
        assert!(reads_every_key("~* +sort", "SORT k"));
        assert!(reads_every_key("allkeys +sort", "SORT k"));
        assert!(reads_every_key("%R~* +sort", "SORT k"));
        assert!(reads_every_key("~k +sort (%RW~* +sort)", "SORT k"));
        assert!(!reads_every_key("%W~* ~k +sort", "SORT k"));
        assert!(!reads_every_key("~k* +sort", "SORT k"));
        assert!(!reads_every_key("~* +get", "SORT k"), "the command is not allowed");
        assert!(!reads_every_key("~k +sort (~* +get)", "SORT k"));
    }
}
