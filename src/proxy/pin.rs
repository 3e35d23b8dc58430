//! Which commands need an upstream connection of the client's own under
//! `upstream.pool = "shared"` (a "pin"), why, and whether the pin outlives the command's state.
//! The decision is pure: it reads the command and its arguments, never the session; the
//! rules and their reasons are documented in `docs/pinning.md`.

use bytes::Bytes;

use crate::command::CommandInfo;

/// Why a client needs an upstream connection of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// MULTI: the queued commands and EXEC belong to the connection that ran MULTI.
    Transaction,
    /// WATCH: the watched keys belong to the connection that EXEC runs on.
    Watch,
    /// A command that may block (the `blocking` flag; XREAD / XREADGROUP with BLOCK).
    Blocking,
    /// WAIT / WAITAOF: they count acknowledgements of the connection's own write offset.
    Wait,
    /// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE: messages arrive on the subscribed connection.
    PubSub,
    /// MONITOR: the connection becomes a feed of every command.
    Monitor,
    /// CLIENT REPLY: the connection stops (or skips) replying.
    ClientReply,
    /// Client-side caching: tracking, its redirection and invalidations are per connection.
    Tracking,
    /// The connection is the client's identity to Redis: its id, address, name.
    ClientIdentity,
    /// Commands that configure or may close the connection they run on.
    ClientControl,
    /// CLIENT PAUSE, CLIENT UNPAUSE: the pausing client must not wait behind another client's
    /// write that the pause holds on a shared connection.
    Pause,
    /// A command a `CLIENT PAUSE ... WRITE` Redis accepted through this proxy holds
    /// ([`held_by_write_pause`]): held on a connection of its own, not in front of other
    /// clients' reads on a shared one.
    HeldByPause,
    /// SELECT, HELLO, RESET, AUTH: they change the user, database or protocol, which the
    /// shared connections are keyed by.
    ConnectionState,
    /// SYNC, PSYNC, REPLCONF: the connection becomes (or talks as) a replica.
    Replication,
    /// READONLY, READWRITE, ASKING: cluster routing flags of the connection.
    Cluster,
    /// DEBUG, SCRIPT DEBUG: Redis's own test and debugging tools.
    Debug,
}

impl PinReason {
    /// Every reason, in a fixed order (the tests check the docs and labels against it).
    #[cfg(test)]
    pub const ALL: [Self; 16] = [
        Self::Transaction,
        Self::Watch,
        Self::Blocking,
        Self::Wait,
        Self::PubSub,
        Self::Monitor,
        Self::ClientReply,
        Self::Tracking,
        Self::ClientIdentity,
        Self::ClientControl,
        Self::Pause,
        Self::HeldByPause,
        Self::ConnectionState,
        Self::Replication,
        Self::Cluster,
        Self::Debug,
    ];

    /// The metric label / doc name, snake_case, e.g. "transaction".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transaction => "transaction",
            Self::Watch => "watch",
            Self::Blocking => "blocking",
            Self::Wait => "wait",
            // Redis spells it as one word (the PUBSUB command, the @pubsub category).
            Self::PubSub => "pubsub",
            Self::Monitor => "monitor",
            Self::ClientReply => "client_reply",
            Self::Tracking => "tracking",
            Self::ClientIdentity => "client_identity",
            Self::ClientControl => "client_control",
            Self::Pause => "pause",
            Self::HeldByPause => "held_by_pause",
            Self::ConnectionState => "connection_state",
            Self::Replication => "replication",
            Self::Cluster => "cluster",
            Self::Debug => "debug",
        }
    }

    /// True when the client stays pinned for the rest of its connection once it ran such a
    /// command (its answers would otherwise change when it moved, e.g. CLIENT ID must stay
    /// stable).
    pub fn for_good(self) -> bool {
        match self {
            // These end with a state the proxy sees in the replies (EXEC, the last
            // unsubscribe, the blocked command's reply, the command's own reply).
            Self::Transaction
            | Self::Watch
            | Self::Blocking
            | Self::HeldByPause
            | Self::PubSub
            | Self::ConnectionState => false,
            // These leave something on the connection that has no visible end, or whose
            // answers would change on another connection (ids, offsets, flags).
            Self::Wait
            | Self::Monitor
            | Self::ClientReply
            | Self::Tracking
            | Self::ClientIdentity
            | Self::ClientControl
            | Self::Pause
            | Self::Replication
            | Self::Cluster
            | Self::Debug => true,
        }
    }
}

/// The reason `args` (name first, as the client sent them; `command` is its command-table
/// entry, `command.name` is lower-case like "client|id", "xread", "get") must run on a
/// connection of its own, or None when it can share. `proxy_auth`: true when the proxy answers
/// AUTH itself (auth.mode = "proxy"), then AUTH does not pin (HELLO still does: its reply and
/// protocol are the connection's).
pub fn pin_reason(command: &CommandInfo, args: &[Bytes], proxy_auth: bool) -> Option<PinReason> {
    let reason = match command.name.as_str() {
        // why: the queued commands and EXEC must reach the connection that ran MULTI.
        "multi" => PinReason::Transaction,
        // why: EXEC checks the keys watched by the connection it runs on.
        "watch" => PinReason::Watch,
        // why: they count replicas' acknowledgements of this connection's last write offset.
        "wait" | "waitaof" => PinReason::Wait,
        // why: they block only with BLOCK; without it they answer at once like any read.
        "xread" | "xreadgroup" => return has_block_option(args).then_some(PinReason::Blocking),
        // why: messages are pushed to the subscribed connection, not to a client.
        "subscribe" | "psubscribe" | "ssubscribe" => PinReason::PubSub,
        // why: how many replies an unsubscribe gets depends on the server, not only on the
        // channels it names: Redis confirms each one even when the client is not subscribed,
        // Valkey 8 answers one -NOSUB error. On a shared connection a wrong count would hand
        // the next replies (other clients') to this client; a connection of its own pairs them
        // as a direct client does.
        "unsubscribe" | "punsubscribe" | "sunsubscribe" => PinReason::PubSub,
        // why: the connection turns into a stream of every command the server runs.
        "monitor" => PinReason::Monitor,
        // why: OFF / SKIP silence the replies of the connection, whoever's commands they are.
        "client|reply" => PinReason::ClientReply,
        // why: tracking and its invalidations, redirection and CACHING hint are per connection.
        "client|tracking" | "client|caching" | "client|getredir" | "client|trackinginfo" => {
            PinReason::Tracking
        }
        // why: id, address and name are the connection's; they must not change under the client.
        "client|id" | "client|info" | "client|list" | "client|getname" | "client|setname" => {
            PinReason::ClientIdentity
        }
        // why: HELLO ... SETNAME names the connection, as CLIENT SETNAME does.
        "hello" if hello_sets_name(args) => PinReason::ClientIdentity,
        // why: KILL spares (SKIPME) or may close its own connection; the others flag theirs.
        "client|kill" | "client|no-evict" | "client|no-touch" | "client|capa" => {
            PinReason::ClientControl
        }
        // why: a pause holds every shared connection with a write in flight, and what follows
        // on it: the pausing client's next commands (its INFO, its UNPAUSE) must not wait there
        // until the pause times out.
        "client|pause" | "client|unpause" => PinReason::Pause,
        // why: they change the database, protocol or user the connection is shared under.
        "select" | "hello" | "reset" => PinReason::ConnectionState,
        // why: AUTH changes the connection's user, unless the proxy answers it itself.
        "auth" => return (!proxy_auth).then_some(PinReason::ConnectionState),
        // why: the connection becomes a replication link (or reports as one).
        "sync" | "psync" | "replconf" => PinReason::Replication,
        // why: cluster routing flags of the connection; ASKING applies to its next command.
        "readonly" | "readwrite" | "asking" => PinReason::Cluster,
        // why: test tools that send out-of-band pushes, stall or debug scripts on the connection.
        "debug" | "script|debug" => PinReason::Debug,
        // why: a blocked command holds its connection until it is answered (modules too).
        _ if command.flags.iter().any(|flag| flag == "blocking") => PinReason::Blocking,
        _ => return None,
    };
    Some(reason)
}

/// Whether Redis holds `command` while clients are paused with `CLIENT PAUSE ... WRITE`: as
/// `processCommand` decides (Redis 7.2 `server.c`), the commands flagged `write` and those
/// flagged `may_replicate`, a flag `COMMAND` does not show: EVAL, EVALSHA, FCALL, PFCOUNT,
/// PUBLISH, SPUBLISH (`src/commands/*.json`). A script whose shebang declares `no-writes` is not
/// held by Redis but is taken as held here: a connection of its own answers it all the same.
pub fn held_by_write_pause(command: &CommandInfo) -> bool {
    matches!(
        command.name.as_str(),
        "eval" | "evalsha" | "fcall" | "pfcount" | "publish" | "spublish"
    ) || command.flags.iter().any(|flag| flag == "write")
}

/// Whether XREAD / XREADGROUP options (before STREAMS) include BLOCK, read as Redis's
/// `xreadCommand` reads them: an option's value is skipped, so a group or consumer named
/// "block" is not taken for the option. Unknown options are stepped over rather than ending
/// the scan, so an option a newer server adds cannot hide a BLOCK after it.
fn has_block_option(args: &[Bytes]) -> bool {
    let mut index = 1;
    while index < args.len() {
        let more = args.len() - index - 1;
        let option = &args[index][..];
        if option.eq_ignore_ascii_case(b"BLOCK") && more >= 1 {
            return true;
        } else if option.eq_ignore_ascii_case(b"STREAMS") && more >= 1 {
            return false;
        } else if option.eq_ignore_ascii_case(b"COUNT") && more >= 1 {
            index += 1;
        } else if option.eq_ignore_ascii_case(b"GROUP") && more >= 2 {
            index += 2;
        }
        index += 1;
    }
    false
}

/// Whether `HELLO protover [AUTH username password] [SETNAME name]` has SETNAME, read as
/// Redis's `helloCommand` reads its options (so a user or password "setname" is not one).
fn hello_sets_name(args: &[Bytes]) -> bool {
    let mut index = 2;
    while index < args.len() {
        let more = args.len() - index - 1;
        let option = &args[index][..];
        if option.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            return true;
        } else if option.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            index += 2;
        } else {
            // Redis refuses the whole HELLO here: nothing is named.
            return false;
        }
        index += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::command::CommandTable;

    fn table() -> &'static CommandTable {
        static TABLE: OnceLock<CommandTable> = OnceLock::new();
        TABLE.get_or_init(CommandTable::embedded)
    }

    fn words(line: &str) -> Vec<Bytes> {
        line.split(' ').map(|word| Bytes::copy_from_slice(word.as_bytes())).collect()
    }

    /// The reason for `line`, resolved in the embedded table (Redis 7.0).
    fn reason(line: &str, proxy_auth: bool) -> Option<PinReason> {
        let args = words(line);
        let command = table().resolve(&args).unwrap_or_else(|| panic!("{line}: not in table"));
        pin_reason(command, &args, proxy_auth)
    }

    /// A command the embedded Redis 7.0 table lacks (7.2, Valkey 8 or a module's).
    fn reason_of_newer(name: &str, flags: &[&str], line: &str) -> Option<PinReason> {
        let mut command = (**table().get(b"ping").expect("ping")).clone();
        command.name = name.to_owned();
        command.flags = flags.iter().map(|flag| (*flag).to_owned()).collect();
        pin_reason(&command, &words(line), false)
    }

    #[test]
    fn every_reason_has_a_command() {
        use PinReason::*;
        let cases = [
            ("MULTI", Transaction),
            ("WATCH k", Watch),
            ("BLPOP l 0", Blocking),
            ("WAIT 1 0", Wait),
            ("SUBSCRIBE c", PubSub),
            ("MONITOR", Monitor),
            ("CLIENT REPLY OFF", ClientReply),
            ("CLIENT TRACKING on", Tracking),
            ("CLIENT ID", ClientIdentity),
            ("CLIENT NO-EVICT on", ClientControl),
            ("CLIENT PAUSE 10", Pause),
            ("SELECT 1", ConnectionState),
            ("PSYNC ? -1", Replication),
            ("READONLY", Cluster),
            ("DEBUG SLEEP 0", Debug),
        ];
        for (line, expected) in cases {
            assert_eq!(reason(line, false), Some(expected), "{line}");
        }
        let covered: Vec<PinReason> = cases.iter().map(|(_, reason)| *reason).collect();
        // HeldByPause is not the command's alone: it needs a write pause the pool knows of
        // (`held_by_write_pause`, `pool::pause`).
        let of_commands: Vec<PinReason> =
            PinReason::ALL.into_iter().filter(|r| *r != HeldByPause).collect();
        assert_eq!(covered, of_commands, "every reason, in ALL's order");
        assert_eq!(reason("CLIENT UNPAUSE", false), Some(Pause));
        for unsubscribe in ["UNSUBSCRIBE", "PUNSUBSCRIBE p*", "SUNSUBSCRIBE a b"] {
            assert_eq!(reason(unsubscribe, false), Some(PubSub), "{unsubscribe}");
        }
    }

    #[test]
    fn the_rules_by_command() {
        use PinReason::*;
        let cases = [
            ("BRPOP l 0", Blocking),
            ("BLMOVE a b LEFT RIGHT 0", Blocking),
            ("BRPOPLPUSH a b 0", Blocking),
            ("BLMPOP 0 1 l LEFT", Blocking),
            ("BZPOPMIN z 0", Blocking),
            ("BZPOPMAX z 0", Blocking),
            ("BZMPOP 0 1 z MIN", Blocking),
            ("PSUBSCRIBE a*", PubSub),
            ("SSUBSCRIBE s", PubSub),
            ("CLIENT CACHING yes", Tracking),
            ("CLIENT GETREDIR", Tracking),
            ("CLIENT TRACKINGINFO", Tracking),
            ("CLIENT INFO", ClientIdentity),
            ("CLIENT LIST", ClientIdentity),
            ("CLIENT GETNAME", ClientIdentity),
            ("CLIENT SETNAME n", ClientIdentity),
            ("CLIENT KILL ID 7", ClientControl),
            ("HELLO 3", ConnectionState),
            ("HELLO 3 AUTH setname pw", ConnectionState),
            ("HELLO 3 SETNAME n", ClientIdentity),
            ("HELLO 3 AUTH u pw SetName n", ClientIdentity),
            ("RESET", ConnectionState),
            ("SYNC", Replication),
            ("REPLCONF listening-port 1", Replication),
            ("READWRITE", Cluster),
            ("ASKING", Cluster),
            ("SCRIPT DEBUG yes", Debug),
        ];
        for (line, expected) in cases {
            assert_eq!(reason(line, false), Some(expected), "{line}");
        }
    }

    #[test]
    fn names_in_any_case() {
        assert_eq!(reason("cLiEnT iD", false), Some(PinReason::ClientIdentity));
        assert_eq!(reason("MuLtI", false), Some(PinReason::Transaction));
        assert_eq!(reason("bLpOp l 0", false), Some(PinReason::Blocking));
        assert_eq!(reason("xReAd BlOcK 0 StReAmS s $", false), Some(PinReason::Blocking));
    }

    #[test]
    fn xread_pins_only_with_block() {
        let blocking = Some(PinReason::Blocking);
        assert_eq!(reason("XREAD COUNT 1 STREAMS s 0", false), None);
        assert_eq!(reason("xread block 0 streams s $", false), blocking);
        assert_eq!(reason("XREAD COUNT 5 BLOCK 100 STREAMS s 0", false), blocking);
        assert_eq!(reason("XREAD STREAMS block 0", false), None, "a key named block");
        assert_eq!(reason("XREAD COUNT block STREAMS s 0", false), None, "COUNT's value");
        assert_eq!(reason("XREADGROUP GROUP g c STREAMS s >", false), None);
        assert_eq!(reason("XREADGROUP GROUP g c NOACK BLOCK 0 STREAMS s >", false), blocking);
        assert_eq!(reason("XREADGROUP GROUP block block STREAMS s >", false), None);
        assert_eq!(reason("XREADGROUP GROUP g c NEWOPT 1 BLOCK 0 STREAMS s >", false), blocking);
    }

    #[test]
    fn ordinary_commands_share() {
        for line in [
            "GET k",
            "SET k v",
            "EVAL return 0",
            "FCALL f 0",
            "PUBLISH c m",
            "PING",
            "ECHO e",
            "INFO",
            "CONFIG GET maxmemory",
            "EXEC",
            "DISCARD",
            "UNWATCH",
            "CLIENT UNBLOCK 7",
            "ACL WHOAMI",
            "SAVE",
            "QUIT",
            "SCRIPT KILL",
            "XADD s * f v",
        ] {
            assert_eq!(reason(line, false), None, "{line}");
        }
    }

    #[test]
    fn auth_pins_unless_the_proxy_answers_it() {
        assert_eq!(reason("AUTH pw", false), Some(PinReason::ConnectionState));
        assert_eq!(reason("AUTH u pw", false), Some(PinReason::ConnectionState));
        assert_eq!(reason("AUTH u pw", true), None);
        assert_eq!(reason("HELLO 3 AUTH u pw", true), Some(PinReason::ConnectionState));
    }

    #[test]
    fn newer_commands() {
        assert_eq!(
            reason_of_newer("waitaof", &["noscript"], "WAITAOF 1 0 0"),
            Some(PinReason::Wait)
        );
        // Valkey 8 flags WAIT blocking: it is still a Wait.
        assert_eq!(reason_of_newer("wait", &["blocking"], "WAIT 1 0"), Some(PinReason::Wait));
        let no_touch = reason_of_newer("client|no-touch", &[], "CLIENT NO-TOUCH on");
        assert_eq!(no_touch, Some(PinReason::ClientControl));
        let capa = reason_of_newer("client|capa", &[], "CLIENT CAPA redirect");
        assert_eq!(capa, Some(PinReason::ClientControl));
        let module = reason_of_newer("mod.bpop", &["write", "blocking"], "MOD.BPOP k 0");
        assert_eq!(module, Some(PinReason::Blocking));
        assert_eq!(reason_of_newer("client|setinfo", &[], "CLIENT SETINFO lib-name x"), None);
    }

    #[test]
    fn a_write_pause_holds_writes_and_what_may_replicate() {
        let held = |line: &str| {
            let args = words(line);
            held_by_write_pause(table().resolve(&args).expect(line))
        };
        for line in [
            "SET k v",
            "EVAL return 0",
            "EVALSHA abc 0",
            "FCALL f 0",
            "PFCOUNT h",
            "PUBLISH c m",
            "DEL k",
            "XADD s * f v",
        ] {
            assert!(held(line), "{line} is held");
        }
        for line in [
            "GET k",
            "EVAL_RO return 0",
            "FCALL_RO f 0",
            "PING",
            "INFO",
            "CLIENT UNPAUSE",
            "SCAN 0",
        ] {
            assert!(!held(line), "{line} runs");
        }
    }

    #[test]
    fn labels_and_durations() {
        let labels: Vec<&str> = PinReason::ALL.iter().map(|reason| reason.as_str()).collect();
        let mut unique = labels.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), labels.len(), "labels are unique");
        assert!(labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        let for_good: Vec<&str> =
            PinReason::ALL.iter().filter(|r| r.for_good()).map(|r| r.as_str()).collect();
        assert_eq!(
            for_good,
            [
                "wait",
                "monitor",
                "client_reply",
                "tracking",
                "client_identity",
                "client_control",
                "pause",
                "replication",
                "cluster",
                "debug"
            ]
        );
    }
}
