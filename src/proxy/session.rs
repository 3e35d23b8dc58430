//! Per-connection state the proxy must track to pair replies and describe commands: protocol,
//! database, user, name, MULTI, MONITOR, subscriptions, `CLIENT REPLY` mode.
//!
//! A command's effect is worked out from its arguments when it is read ([`Effect::of`]) and
//! applied only when Redis's reply shows it succeeded ([`Session::apply`]), or, inside MULTI,
//! when the EXEC reply shows that its queued copy succeeded. Nothing is applied when a request
//! is read, so a command the proxy or Redis refuses changes nothing.

use bytes::Bytes;

use crate::resp::args::string2ll;

/// The pub/sub families, each with its own subscribe / unsubscribe pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubFamily {
    /// `SUBSCRIBE` / `UNSUBSCRIBE`
    Channel,
    /// `PSUBSCRIBE` / `PUNSUBSCRIBE`
    Pattern,
    /// `SSUBSCRIBE` / `SUNSUBSCRIBE`
    Shard,
}

/// The commands whose replies or effects the proxy must understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Anything else: one reply, no effect on the connection.
    None,
    /// `SELECT n`
    Select(u32),
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`
    Hello {
        /// Protocol asked for.
        protocol: Option<u8>,
        /// User of the last AUTH option.
        user: Option<Bytes>,
        /// SETNAME option.
        name: Option<Bytes>,
    },
    /// `AUTH [user] pass`
    Auth(Bytes),
    /// `RESET`
    Reset,
    /// `QUIT`
    Quit,
    /// `MULTI`
    Multi,
    /// `EXEC`
    Exec,
    /// `DISCARD`
    Discard,
    /// `MONITOR`
    Monitor,
    /// `(P|S)SUBSCRIBE`: one confirmation per argument.
    Subscribe(PubSubFamily),
    /// `(P|S)UNSUBSCRIBE`: one confirmation per argument, or per current subscription.
    Unsubscribe(PubSubFamily),
    /// `CLIENT SETNAME name`
    SetName(Bytes),
    /// `CLIENT SETINFO LIB-NAME|LIB-VER value`
    SetInfo {
        /// True for LIB-NAME, false for LIB-VER.
        lib_name: bool,
        /// The value.
        value: Bytes,
    },
    /// `CLIENT REPLY ON|OFF|SKIP`
    ClientReply(ReplyMode),
    /// `SYNC` / `PSYNC`: Redis replicates to the client from its reply on.
    Replicate,
}

/// `CLIENT REPLY` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    /// Every command is answered.
    On,
    /// No command is answered until `CLIENT REPLY ON`.
    Off,
    /// The next command is not answered.
    Skip,
}

/// Lower-cases `name` into `out` when it is short enough to be a known command.
fn lowercase<'a>(name: &[u8], out: &'a mut [u8; 16]) -> Option<&'a [u8]> {
    let target = out.get_mut(..name.len())?;
    target.copy_from_slice(name);
    target.make_ascii_lowercase();
    Some(target)
}

impl Effect {
    /// Works out what a command will do to the connection if it succeeds.
    pub fn of(args: &[Bytes]) -> Self {
        let mut name_buf = [0u8; 16];
        let Some(name) = args.first().and_then(|n| lowercase(n, &mut name_buf)) else {
            return Self::None;
        };
        match name {
            b"select" if args.len() == 2 => string2ll(&args[1])
                .and_then(|n| u32::try_from(n).ok())
                .map_or(Self::None, Self::Select),
            b"hello" => Self::hello(args),
            b"auth" if args.len() == 2 => Self::Auth(Bytes::from_static(b"default")),
            b"auth" if args.len() == 3 => Self::Auth(args[1].clone()),
            b"reset" => Self::Reset,
            b"quit" => Self::Quit,
            b"multi" => Self::Multi,
            b"exec" => Self::Exec,
            b"discard" => Self::Discard,
            b"monitor" => Self::Monitor,
            b"sync" | b"psync" => Self::Replicate,
            b"subscribe" => Self::Subscribe(PubSubFamily::Channel),
            b"psubscribe" => Self::Subscribe(PubSubFamily::Pattern),
            b"ssubscribe" => Self::Subscribe(PubSubFamily::Shard),
            b"unsubscribe" => Self::Unsubscribe(PubSubFamily::Channel),
            b"punsubscribe" => Self::Unsubscribe(PubSubFamily::Pattern),
            b"sunsubscribe" => Self::Unsubscribe(PubSubFamily::Shard),
            b"client" if args.len() >= 3 => Self::client(args),
            _ => Self::None,
        }
    }

    fn client(args: &[Bytes]) -> Self {
        let mut sub_buf = [0u8; 16];
        let mut value_buf = [0u8; 16];
        let sub = lowercase(&args[1], &mut sub_buf);
        match (sub, args.len()) {
            (Some(b"setname"), 3) => Self::SetName(args[2].clone()),
            (Some(b"reply"), 3) => match lowercase(&args[2], &mut value_buf) {
                Some(b"on") => Self::ClientReply(ReplyMode::On),
                Some(b"off") => Self::ClientReply(ReplyMode::Off),
                Some(b"skip") => Self::ClientReply(ReplyMode::Skip),
                _ => Self::None,
            },
            (Some(b"setinfo"), 4) => match lowercase(&args[2], &mut value_buf) {
                Some(b"lib-name") => Self::SetInfo { lib_name: true, value: args[3].clone() },
                Some(b"lib-ver") => Self::SetInfo { lib_name: false, value: args[3].clone() },
                _ => Self::None,
            },
            _ => Self::None,
        }
    }

    fn hello(args: &[Bytes]) -> Self {
        let protocol = match args.get(1) {
            None => None,
            Some(version) => match string2ll(version) {
                Some(v @ 2..=3) => Some(v as u8),
                // Redis answers NOPROTO; nothing changes.
                _ => return Self::None,
            },
        };
        let (mut user, mut name) = (None, None);
        let mut rest = args.get(2..).unwrap_or(&[]);
        while let Some((option, tail)) = rest.split_first() {
            if option.eq_ignore_ascii_case(b"auth") && tail.len() >= 2 {
                user = Some(tail[0].clone());
                rest = &tail[2..];
            } else if option.eq_ignore_ascii_case(b"setname") && !tail.is_empty() {
                name = Some(tail[0].clone());
                rest = &tail[1..];
            } else {
                // Redis answers a syntax error; nothing changes.
                return Self::None;
            }
        }
        Self::Hello { protocol, user, name }
    }

    /// True when this command, succeeding, is answered although replies are `mode`:
    /// `CLIENT REPLY ON` always, `RESET` under OFF (it clears OFF, not a pending SKIP).
    pub(crate) fn answered_when(&self, mode: ReplyMode) -> bool {
        match self {
            Self::ClientReply(ReplyMode::On) => true,
            Self::Reset => mode != ReplyMode::Skip,
            _ => mode == ReplyMode::On,
        }
    }

    /// True for the commands a client may send before authenticating (Redis's `no_auth` flag).
    pub(crate) fn is_no_auth(&self) -> bool {
        matches!(self, Self::Hello { .. } | Self::Auth(_) | Self::Reset | Self::Quit)
    }
}

/// Subscriptions per family, as counted by Redis's confirmations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subscriptions {
    /// Channels (`SUBSCRIBE`).
    pub channels: u64,
    /// Patterns (`PSUBSCRIBE`).
    pub patterns: u64,
    /// Shard channels (`SSUBSCRIBE`).
    pub(crate) shard: u64,
}

impl Subscriptions {
    /// True when any subscription is active.
    pub fn any(&self) -> bool {
        self.channels + self.patterns + self.shard > 0
    }

    /// How many of `family` an argument-less unsubscribe will confirm (at least one).
    pub(crate) fn confirmations_for_all(&self, family: PubSubFamily) -> u64 {
        let count = match family {
            PubSubFamily::Channel => self.channels,
            PubSubFamily::Pattern => self.patterns,
            PubSubFamily::Shard => self.shard,
        };
        count.max(1)
    }

    /// Applies one confirmation; `total` is the count Redis reports in it (channels plus
    /// patterns for the first two families, shard channels for the third).
    pub(crate) fn confirm(&mut self, family: PubSubFamily, subscribe: bool, total: u64) {
        let previous = self.channels + self.patterns;
        match family {
            PubSubFamily::Shard => self.shard = total,
            PubSubFamily::Channel | PubSubFamily::Pattern => {
                let slot = if family == PubSubFamily::Channel {
                    &mut self.channels
                } else {
                    &mut self.patterns
                };
                if subscribe && total > previous {
                    *slot += 1;
                } else if !subscribe && total < previous {
                    *slot = slot.saturating_sub(1);
                }
            }
        }
    }
}

/// What the proxy knows about one client connection: only what Redis (or the proxy, for what
/// it answers itself) confirmed. Nothing here changes when a request is read.
#[derive(Debug, Clone)]
pub struct Session {
    /// Proxy-assigned id.
    pub id: u64,
    /// RESP version of replies: 2 until a `HELLO 3` succeeds.
    pub protocol: u8,
    /// Selected database.
    pub db: u32,
    /// Authenticated user (`default` until an AUTH succeeds).
    pub user: Bytes,
    /// Whether Redis will run commands for this client without an AUTH first.
    pub authenticated: bool,
    /// An AUTH or HELLO AUTH succeeded (since the connection opened or the last RESET).
    pub logged_in: bool,
    /// `CLIENT SETNAME` / `HELLO SETNAME`.
    pub name: Option<Bytes>,
    /// `CLIENT SETINFO LIB-NAME`.
    pub(crate) lib_name: Option<Bytes>,
    /// `CLIENT SETINFO LIB-VER`.
    pub(crate) lib_ver: Option<Bytes>,
    /// Inside MULTI (as Redis confirmed).
    pub in_multi: bool,
    /// Effects of commands queued in the current MULTI, by their index in it.
    pub queued: Vec<(usize, Effect)>,
    /// Commands queued so far in the current MULTI.
    pub(crate) queued_count: usize,
    /// Union of the classes of the commands queued in the current MULTI.
    pub(crate) queued_class: Option<crate::command::Class>,
    /// MONITOR is on: `+<timestamp> ...` lines arrive unasked.
    pub monitor: bool,
    /// Active subscriptions.
    pub subscriptions: Subscriptions,
    /// `CLIENT REPLY` mode, as confirmed. Redis itself always answers (the proxy turns its
    /// replies back on after each OFF / SKIP); the proxy withholds what Redis would not send.
    pub(crate) reply_mode: ReplyMode,
}

impl Session {
    /// A fresh connection.
    pub fn new(id: u64, authenticated: bool) -> Self {
        Self {
            id,
            protocol: 2,
            db: 0,
            user: Bytes::from_static(b"default"),
            authenticated,
            logged_in: false,
            name: None,
            lib_name: None,
            lib_ver: None,
            in_multi: false,
            queued: Vec::new(),
            queued_count: 0,
            queued_class: None,
            monitor: false,
            subscriptions: Subscriptions::default(),
            reply_mode: ReplyMode::On,
        }
    }

    /// True while Redis would send this client no reply to a command (`CLIENT REPLY OFF`, or
    /// the command after `CLIENT REPLY SKIP`). Pushes (pub/sub, invalidations) still go out.
    pub(crate) fn silenced(&self) -> bool {
        self.reply_mode != ReplyMode::On
    }

    /// A command was answered (or its answer withheld): a pending SKIP is used up.
    pub(crate) fn end_of_command(&mut self) {
        if self.reply_mode == ReplyMode::Skip {
            self.reply_mode = ReplyMode::On;
        }
    }

    /// Applies `effect` after Redis (or the proxy) answered it successfully (not an error,
    /// not QUEUED).
    pub fn apply(&mut self, effect: &Effect, authenticated_by_default: bool) {
        match effect {
            Effect::Select(db) => self.db = *db,
            Effect::Hello { protocol, user, name } => {
                if let Some(protocol) = protocol {
                    self.protocol = *protocol;
                }
                if let Some(user) = user {
                    self.user = user.clone();
                    self.authenticated = true;
                    self.logged_in = true;
                }
                if let Some(name) = name {
                    self.name = (!name.is_empty()).then(|| name.clone());
                }
            }
            Effect::Auth(user) => {
                self.user = user.clone();
                self.authenticated = true;
                self.logged_in = true;
            }
            Effect::Reset => {
                let id = self.id;
                let (lib_name, lib_ver) = (self.lib_name.take(), self.lib_ver.take());
                *self = Self::new(id, authenticated_by_default);
                self.lib_name = lib_name;
                self.lib_ver = lib_ver;
            }
            Effect::Multi => {
                self.end_multi();
                self.in_multi = true;
            }
            Effect::Exec | Effect::Discard => self.end_multi(),
            Effect::Monitor => self.monitor = true,
            Effect::SetName(name) => self.name = (!name.is_empty()).then(|| name.clone()),
            Effect::SetInfo { lib_name: true, value } => self.lib_name = Some(value.clone()),
            Effect::SetInfo { lib_name: false, value } => self.lib_ver = Some(value.clone()),
            // SKIP while OFF leaves replies off, as Redis does.
            Effect::ClientReply(ReplyMode::Skip) if self.reply_mode == ReplyMode::Off => {}
            Effect::ClientReply(mode) => self.reply_mode = *mode,
            Effect::None
            | Effect::Quit
            | Effect::Subscribe(_)
            | Effect::Unsubscribe(_)
            | Effect::Replicate => {}
        }
    }

    /// Notes a `+QUEUED` reply for a command with `effect`.
    pub fn queue(&mut self, effect: &Effect) {
        if *effect != Effect::None {
            self.queued.push((self.queued_count, effect.clone()));
        }
        self.queued_count += 1;
    }

    /// Applies the effects of queued commands whose EXEC element is not an error. A queued
    /// (un)subscribe (one channel: the gate refuses more inside MULTI) is counted from the
    /// total its confirmation carries.
    pub(crate) fn apply_exec(
        &mut self,
        elements: &[crate::resp::summary::Child],
        by_default: bool,
    ) {
        let queued = std::mem::take(&mut self.queued);
        for (index, effect) in &queued {
            let Some(element) = elements.get(*index) else { continue };
            if matches!(element.kind, b'-' | b'!') {
                continue;
            }
            match effect {
                Effect::Subscribe(family) | Effect::Unsubscribe(family) => {
                    if let Some(total) = element.last_integer {
                        let subscribe = matches!(effect, Effect::Subscribe(_));
                        self.subscriptions.confirm(*family, subscribe, total.max(0) as u64);
                    }
                }
                other => self.apply(other, by_default),
            }
        }
        self.end_multi();
    }

    fn end_multi(&mut self) {
        self.in_multi = false;
        self.queued.clear();
        self.queued_count = 0;
        self.queued_class = None;
    }

    /// True when unasked replies may arrive as RESP2 arrays (pub/sub messages): Redis
    /// confirmed a subscription and the protocol is RESP2.
    pub(crate) fn in_resp2_pubsub(&self) -> bool {
        self.protocol == 2 && self.subscriptions.any()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect()
    }

    #[test]
    fn effects_are_read_case_insensitively() {
        assert_eq!(Effect::of(&args(&["SeLeCt", "3"])), Effect::Select(3));
        assert_eq!(Effect::of(&args(&["select", "-1"])), Effect::None);
        assert_eq!(
            Effect::of(&args(&["hello", "3", "auth", "a", "p", "AUTH", "b", "q", "setname", "n"])),
            Effect::Hello {
                protocol: Some(3),
                user: Some(Bytes::from_static(b"b")),
                name: Some(Bytes::from_static(b"n"))
            }
        );
        assert_eq!(Effect::of(&args(&["hello", "4"])), Effect::None);
        assert_eq!(Effect::of(&args(&["hello", "3", "auth", "a"])), Effect::None);
        assert_eq!(
            Effect::of(&args(&["AUTH", "pw"])),
            Effect::Auth(Bytes::from_static(b"default"))
        );
        assert_eq!(
            Effect::of(&args(&["client", "REPLY", "Skip"])),
            Effect::ClientReply(ReplyMode::Skip)
        );
        assert_eq!(Effect::of(&args(&["client", "reply", "maybe"])), Effect::None);
        assert_eq!(
            Effect::of(&args(&["punsubscribe"])),
            Effect::Unsubscribe(PubSubFamily::Pattern)
        );
        assert_eq!(Effect::of(&args(&["averyveryverylongcommandname"])), Effect::None);
    }

    #[test]
    fn client_reply_modes_follow_confirmed_commands() {
        let mut session = Session::new(1, true);
        let mut delivered = Vec::new();
        for effect in [
            Effect::None,
            Effect::ClientReply(ReplyMode::Skip),
            Effect::None,
            Effect::None,
            Effect::ClientReply(ReplyMode::Off),
            Effect::None,
            Effect::ClientReply(ReplyMode::Skip),
            Effect::None,
            Effect::ClientReply(ReplyMode::On),
            Effect::None,
        ] {
            let silenced = session.silenced() && effect != Effect::ClientReply(ReplyMode::On);
            delivered.push(
                !silenced
                    && !matches!(effect, Effect::ClientReply(ReplyMode::Off | ReplyMode::Skip)),
            );
            session.end_of_command();
            session.apply(&effect, true);
        }
        assert_eq!(
            delivered,
            vec![true, false, false, true, false, false, false, false, true, true]
        );
    }

    #[test]
    fn subscription_counts_follow_confirmations() {
        let mut subs = Subscriptions::default();
        subs.confirm(PubSubFamily::Channel, true, 1);
        subs.confirm(PubSubFamily::Channel, true, 2);
        subs.confirm(PubSubFamily::Channel, true, 2); // already subscribed
        subs.confirm(PubSubFamily::Pattern, true, 3);
        subs.confirm(PubSubFamily::Shard, true, 1);
        assert_eq!(subs, Subscriptions { channels: 2, patterns: 1, shard: 1 });
        assert_eq!(subs.confirmations_for_all(PubSubFamily::Channel), 2);
        subs.confirm(PubSubFamily::Channel, false, 2);
        subs.confirm(PubSubFamily::Channel, false, 1);
        assert_eq!(subs.confirmations_for_all(PubSubFamily::Channel), 1);
        assert_eq!(subs.channels, 0);
    }

    #[test]
    fn exec_applies_only_successful_queued_effects() {
        let mut session = Session::new(1, true);
        session.apply(&Effect::Multi, true);
        session.queue(&Effect::Select(2));
        session.queue(&Effect::None);
        session.queue(&Effect::Select(99));
        let ok = crate::resp::summary::Child { kind: b'+', ..Default::default() };
        let error = crate::resp::summary::Child { kind: b'-', ..Default::default() };
        session.apply_exec(&[ok, ok, error], true);
        assert_eq!(session.db, 2);
        assert!(!session.in_multi);
    }
}
