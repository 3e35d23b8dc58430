//! The gate: one pure decision per command, taken before anything is forwarded, in Redis's
//! order — arity, NOAUTH, NO_MULTI, the ACL — with no exit ahead of them.
//!
//! It reads only confirmed session state. Where the outcome depends on state a command still
//! in flight may change (the user after an AUTH, whether a MULTI took), it answers
//! [`Decision::Wait`] and the connection decides again once those commands are answered; a
//! command the gate allows is forwarded the same way whatever they do, so the common case
//! never waits.

use bytes::Bytes;

use crate::acl::{Denial, DenyReason, Policy, Verdict};
use crate::command::{CommandInfo, Keys};
use crate::config::{AclMode, AuthMode};
use crate::proxy::session::{Effect, ReplyMode};
use crate::resp::args::string2ll;
use crate::resp::encode;

/// What the gate knows about the session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    /// The user commands run as (confirmed).
    pub user: &'a [u8],
    /// Redis runs this client's commands without an AUTH first (confirmed).
    pub authenticated: bool,
    /// Inside MULTI (confirmed).
    pub in_multi: bool,
    /// An AUTH, HELLO AUTH or RESET is in flight: the user may still change.
    pub(crate) user_unsettled: bool,
    /// A MULTI, EXEC, DISCARD or RESET is in flight: MULTI may still start or end.
    pub(crate) multi_unsettled: bool,
    /// Subscribed in RESP2 (confirmed): Redis runs only the pub/sub commands, PING, QUIT and
    /// RESET.
    pub(crate) resp2_subscribed: bool,
    /// MONITOR is on (confirmed).
    pub monitor: bool,
    /// A (P|S)(UN)SUBSCRIBE, HELLO, MONITOR, RESET or EXEC is in flight: the two above may
    /// still change.
    pub(crate) pubsub_unsettled: bool,
    /// Nothing is in flight.
    pub idle: bool,
    /// Who checks credentials.
    pub(crate) auth_mode: AuthMode,
    /// Redis runs this connection's commands as the client's own user (passthrough, or
    /// mirrored users in proxy mode), so it checks script bodies and SORT patterns itself.
    pub(crate) upstream_is_client_user: bool,
}

/// The command being decided.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Command<'a> {
    /// As the table knows it; `None` when the table does not.
    pub info: Option<&'a CommandInfo>,
    /// Name and arguments.
    pub args: &'a [Bytes],
    /// Its keys.
    pub keys: &'a Keys,
    /// What it does to the session if it succeeds.
    pub(crate) effect: &'a Effect,
}

/// What happens to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Decide again once the commands in flight are answered.
    Wait,
    /// Send the client's bytes to Redis. `observed`: a denial recorded but not enforced.
    Forward {
        /// The would-be denial, in observe mode.
        observed: Option<Denial>,
    },
    /// The proxy answers `reply`; Redis never runs the command.
    Refuse(Refusal),
    /// The proxy answers the command itself.
    Serve(Service),
}

/// A command the proxy refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The reply, in Redis's words.
    pub reply: Bytes,
    /// The ACL denial behind it (a security event and an `ACL LOG` entry), if any.
    pub denial: Option<Denial>,
    /// Inside MULTI, what Redis is sent instead so that the transaction fails as Redis's own
    /// would after a refused command.
    pub abort: Abort,
}

/// How a refusal inside MULTI reaches the upstream transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abort {
    /// Not in MULTI: Redis is sent nothing.
    None,
    /// A command Redis refuses at queue time takes its place, so EXEC answers EXECABORT.
    Queued,
    /// The refused command is EXEC: the transaction is discarded.
    Exec,
}

/// Commands the proxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// `ACL LOG`, with the real clients' addresses.
    AclLog,
    /// An ACL subcommand about the proxy's users (`auth.mode = "proxy"`).
    AclCommand,
    /// `AUTH` or `HELLO` against the users file (`auth.mode = "proxy"`).
    Authenticate,
    /// A command Redis would ignore without a reply (MONITOR while monitoring).
    NoReply,
}

/// ACL subcommands about users, answered from the users file in proxy mode.
pub(crate) const ACL_COMMANDS_SERVED: &[&str] = &[
    "acl|whoami",
    "acl|users",
    "acl|dryrun",
    "acl|load",
    "acl|list",
    "acl|getuser",
    "acl|setuser",
    "acl|deluser",
    "acl|save",
];

/// Commands whose bodies make Redis run other commands on the server side.
const SCRIPT_COMMANDS: &[&str] = &["eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"];

const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";

/// Decides what happens to `command` sent by the session `view` describes.
pub(crate) fn decide(view: &View<'_>, command: &Command<'_>, policy: Option<&Policy>) -> Decision {
    let proxy_auth = view.auth_mode == AuthMode::Proxy;
    let args = command.args;
    let lowered;
    let name: &str = match command.info {
        Some(info) => &info.name,
        None => {
            lowered = String::from_utf8_lossy(args.first().map_or(&[][..], |n| &n[..]))
                .to_ascii_lowercase();
            &lowered
        }
    };
    let refuse = |reply: Bytes, denial: Option<Denial>| refusal(view, name, reply, denial);
    // Redis 7.2 and Valkey 8 drop the error of a failed login while replies wait in the
    // connection's output buffer (`addAuthErrReply`): a client that pipelines AUTH behind other
    // commands never gets it, and every later reply is paired with the wrong command. Sent
    // when nothing is in flight, the error always comes. (With `auth.mode = "proxy"` the proxy
    // answers logins itself.)
    let logs_in = matches!(command.effect, Effect::Auth(_) | Effect::Hello { user: Some(_), .. });
    if logs_in && !proxy_auth && !view.idle {
        return Decision::Wait;
    }
    // Without a users file Redis is the only authority: everything goes to it, except what
    // the proxy could not pair.
    let Some(policy) = policy else {
        return match unpairable(view, name, command.effect, args) {
            Some(decision) => decision,
            None => Decision::Forward { observed: None },
        };
    };

    // 1. Arity (an unknown command is Redis's to answer, after NOAUTH and the policy below).
    if let Some(info) = command.info {
        if !info.arity_ok(args.len()) {
            let text = format!("ERR wrong number of arguments for '{name}' command");
            return refuse(encode::error(&text), None);
        }
    }

    // 2. NOAUTH.
    let no_auth = command.info.is_some_and(|info| info.flags.iter().any(|f| f == "no_auth"));
    if !no_auth {
        if view.user_unsettled {
            return Decision::Wait;
        }
        if !view.authenticated {
            if policy.mode_for(view.user) == AclMode::Observe && !proxy_auth {
                return Decision::Forward { observed: None };
            }
            return refuse(Bytes::from_static(NOAUTH), None);
        }
    }
    if proxy_auth && matches!(name, "auth" | "hello" | "reset") {
        // They change who the next commands run as: what came before finishes first.
        if !view.idle {
            return Decision::Wait;
        }
        if view.in_multi && name != "reset" {
            let with_auth =
                name == "auth" || args.iter().skip(2).any(|arg| arg.eq_ignore_ascii_case(b"auth"));
            if !with_auth {
                // HELLO without AUTH is queued by Redis and run at EXEC, as sent.
                return Decision::Forward { observed: None };
            }
            // Redis would authenticate at EXEC; the proxy cannot answer inside the EXEC reply.
            let text =
                "ERR AUTH and HELLO AUTH inside MULTI are not supported with auth.mode = \"proxy\"";
            return refuse(encode::error(text), None);
        }
    }

    // 3. NO_MULTI inside MULTI: refused before the ACL, as Redis does.
    let no_multi = command.info.is_some_and(|info| info.flags.iter().any(|f| f == "no_multi"));
    if no_multi && (view.in_multi || view.multi_unsettled) {
        return refuse(encode::error("ERR Command not allowed inside a transaction"), None);
    }

    // 4. The ACL.
    let verdict = match command.info {
        Some(info) => policy.decide(view.user, info, args, command.keys),
        None => match policy.decide_unknown(view.user) {
            // Refused with Redis's own answer to a command it does not know: a renamed or
            // newer command a narrower user may not run looks, to it, like no command at all.
            Verdict::Deny { enforced: true, .. } => {
                return refuse(encode::error(&unknown_command_text(args)), None);
            }
            _ => Verdict::Allow,
        },
    };
    let mut observed = None;
    if let Verdict::Deny { denial, enforced } = verdict {
        if enforced {
            let reply = policy.noperm_reply(&denial, view.user, name);
            return refuse(reply, Some(denial));
        }
        observed = Some(denial);
    }

    // 5. Work Redis does on the server side, when Redis would check it as the service user.
    if !view.upstream_is_client_user && observed.is_none() {
        if SCRIPT_COMMANDS.contains(&name) && !policy.is_unrestricted(view.user) {
            let denial = Denial { reason: DenyReason::Command, arg_index: 0 };
            if policy.mode_for(view.user) == AclMode::Observe {
                observed = Some(denial);
            } else {
                let reply = policy.noperm_reply(&denial, view.user, name);
                return refuse(reply, Some(denial));
            }
        } else if let (Some(info), Some((text, at))) =
            (command.info, sort_pattern_refused(name, args))
        {
            if !policy.reads_every_key(view.user, info, args, command.keys) {
                // Redis's own error text; a key denial (the pattern) for the security event.
                let denial = Denial { reason: DenyReason::Key, arg_index: at };
                if policy.mode_for(view.user) == AclMode::Enforce {
                    return refuse(encode::error(text), Some(denial));
                }
                observed = Some(denial);
            }
        }
    }

    // 6. What the proxy could not pair inside MULTI, and what it answers itself.
    if let Some(decision) = unpairable(view, name, command.effect, args) {
        return decision;
    }
    let authenticates = proxy_auth && matches!(name, "auth" | "hello");
    let served =
        authenticates || name == "acl|log" || (proxy_auth && ACL_COMMANDS_SERVED.contains(&name));
    if served {
        // Redis refuses what is not pub/sub in a RESP2 subscribed context (after the ACL).
        if view.pubsub_unsettled {
            return Decision::Wait;
        }
        if view.resp2_subscribed {
            let text = format!(
                "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            );
            return refuse(encode::error(&text), None);
        }
    }
    if authenticates {
        return Decision::Serve(Service::Authenticate);
    }
    if served {
        if view.multi_unsettled {
            return Decision::Wait;
        }
        if view.in_multi && proxy_auth {
            // Inside MULTI Redis would answer about its own users (the service user's).
            let text = format!("ERR '{name}' inside MULTI is not supported by the proxy");
            return refuse(encode::error(&text), None);
        }
    }
    if served && !view.in_multi {
        let service = if name == "acl|log" { Service::AclLog } else { Service::AclCommand };
        return Decision::Serve(service);
    }
    Decision::Forward { observed }
}

/// A refusal, wrapped as Redis wraps a refused EXEC, with what it does to a transaction.
fn refusal(view: &View<'_>, name: &str, reply: Bytes, denial: Option<Denial>) -> Decision {
    if view.multi_unsettled {
        // Whether Redis must be told to abort a transaction depends on the MULTI in flight.
        return Decision::Wait;
    }
    if name == "exec" {
        // Redis answers a refused EXEC with EXECABORT and discards the transaction.
        let text = String::from_utf8_lossy(&reply[1..reply.len().saturating_sub(2).max(1)]);
        let reply = encode::error(&format!("EXECABORT Transaction discarded because of: {text}"));
        let abort = if view.in_multi { Abort::Exec } else { Abort::None };
        return Decision::Refuse(Refusal { reply, denial, abort });
    }
    let abort = if view.in_multi { Abort::Queued } else { Abort::None };
    Decision::Refuse(Refusal { reply, denial, abort })
}

/// Commands whose replies inside EXEC Redis itself frames wrongly (`CLIENT REPLY OFF|SKIP`
/// silences the rest of the EXEC reply; a SUBSCRIBE of several channels adds replies after
/// it): the proxy could not pair what follows, so it refuses them inside MULTI (and
/// `CLIENT REPLY OFF|SKIP` in MONITOR). Outside MULTI a `CLIENT REPLY OFF|SKIP` is followed by
/// the proxy's probe, which must not be queued.
fn unpairable(view: &View<'_>, name: &str, effect: &Effect, args: &[Bytes]) -> Option<Decision> {
    if *effect == Effect::Monitor {
        // Redis ignores a MONITOR from a client already monitoring, without a reply (unless
        // the RESP2 pub/sub context refuses it first).
        return if view.pubsub_unsettled {
            Some(Decision::Wait)
        } else {
            (view.monitor && !view.resp2_subscribed).then_some(Decision::Serve(Service::NoReply))
        };
    }
    let silences = matches!(effect, Effect::ClientReply(mode) if *mode != ReplyMode::On);
    let unpairable = match effect {
        Effect::Subscribe(_) | Effect::Unsubscribe(_) => args.len() != 2,
        _ => silences,
    };
    if !unpairable {
        return None;
    }
    if view.multi_unsettled || (silences && view.pubsub_unsettled) {
        return Some(Decision::Wait);
    }
    if view.in_multi {
        let text = format!("ERR '{name}' inside MULTI is not supported by the proxy");
        return Some(refusal(view, name, encode::error(&text), None));
    }
    // While monitoring, Redis also silences the monitor lines of the commands it does not
    // answer, which the proxy's probe would make it send.
    (silences && view.monitor).then(|| {
        let text = format!("ERR '{name}' while in MONITOR is not supported by the proxy");
        refusal(view, name, encode::error(&text), None)
    })
}

/// Redis's answer to a command it does not know (`commandCheckExistence`): an unknown
/// subcommand of a known container, or an unknown command with its first arguments.
fn unknown_command_text(args: &[Bytes]) -> String {
    let c_string = |arg: &Bytes| {
        let end = memchr::memchr(0, arg).unwrap_or(arg.len());
        String::from_utf8_lossy(&arg[..end]).into_owned()
    };
    let clip = |text: String, most: usize| text.chars().take(most).collect::<String>();
    let name = args.first().map(c_string).unwrap_or_default();
    if CONTAINERS.contains(&name.to_ascii_lowercase().as_str()) && args.len() >= 2 {
        let sub = clip(c_string(&args[1]), 128);
        return format!("ERR unknown subcommand '{sub}'. Try {} HELP.", name.to_ascii_uppercase());
    }
    let mut shown = String::new();
    for arg in args.iter().skip(1) {
        if shown.len() >= 128 {
            break;
        }
        let room = 128 - shown.len();
        shown.push_str(&format!("'{}' ", clip(c_string(arg), room)));
    }
    format!("ERR unknown command '{}', with args beginning with: {shown}", clip(name, 128))
}

/// Redis's container commands (those with subcommands).
const CONTAINERS: &[&str] = &[
    "acl", "client", "cluster", "command", "config", "debug", "function", "latency", "memory",
    "module", "object", "pubsub", "script", "slowlog", "xgroup", "xinfo",
];

/// `SORT` / `SORT_RO` options that make Redis read keys named by a pattern: Redis refuses them
/// (with this text) to a user without read access to every key; with the pattern's index.
/// Follows `sortCommandGeneric`'s parse, so an earlier syntax or LIMIT error (which Redis
/// answers first) yields `None`.
pub(crate) fn sort_pattern_refused(name: &str, args: &[Bytes]) -> Option<(&'static str, usize)> {
    let readonly = match name {
        "sort" => false,
        "sort_ro" => true,
        _ => return None,
    };
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        let arg = &args[j];
        let is = |word: &[u8]| arg.eq_ignore_ascii_case(word);
        if is(b"asc") || is(b"desc") || is(b"alpha") {
        } else if is(b"limit") && left >= 2 {
            string2ll(&args[j + 1])?;
            string2ll(&args[j + 2])?;
            j += 2;
        } else if !readonly && is(b"store") && left >= 1 {
            j += 1;
        } else if is(b"by") && left >= 1 {
            // C string semantics: the pattern ends at a NUL byte.
            let pattern = &args[j + 1];
            let end = memchr::memchr(0, pattern).unwrap_or(pattern.len());
            if memchr::memchr(b'*', &pattern[..end]).is_some() {
                let text = "ERR BY option of SORT denied due to insufficient ACL permissions.";
                return Some((text, j + 1));
            }
            j += 1;
        } else if is(b"get") && left >= 1 {
            let text = "ERR GET option of SORT denied due to insufficient ACL permissions.";
            return Some((text, j + 1));
        } else {
            return None;
        }
        j += 1;
    }
    None
}

#[cfg(test)]
mod tests;
