//! Which events the trail keeps (`[audit.filters]`): by kind, class, user, command and client
//! network, plus EMQX-style "high-frequency" commands left out. What a filter leaves out is
//! counted by reason and reported in the `stop` event; system events are always kept.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::command::ClassSet;
use crate::event::CommandRecord;
use crate::event::SessionEvent;

/// A client network, `a.b.c.d/n` or `x::/n` (written so in `proxy.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct Network {
    base: u128,
    prefix: u8,
    v4: bool,
}

/// Text that is not a network.
#[derive(Debug, thiserror::Error)]
#[error("\"{0}\" is not a network of the form ADDRESS/PREFIX")]
pub(crate) struct BadNetwork(pub String);

impl Network {
    /// Parses `addr/prefix` (a bare address is a /32 or /128).
    pub(crate) fn parse(text: &str) -> Result<Self, BadNetwork> {
        let bad = || BadNetwork(text.to_owned());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.trim().parse().map_err(|_| bad())?;
        let (bits, v4) = match address {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), true),
            IpAddr::V6(v6) => (u128::from(v6), false),
        };
        let width = if v4 { 32 } else { 128 };
        let prefix: u8 = match prefix {
            Some(p) => p.trim().parse().ok().filter(|p| *p <= width).ok_or_else(bad)?,
            None => width,
        };
        Ok(Self { base: bits & mask(prefix, width), prefix, v4 })
    }

    /// True when `address` is in the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub(crate) fn contains(&self, address: IpAddr) -> bool {
        let (bits, v4) = match address {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), true),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (u128::from(u32::from(v4)), true),
                None => (u128::from(v6), false),
            },
        };
        let width = if self.v4 { 32 } else { 128 };
        v4 == self.v4 && bits & mask(self.prefix, width) == self.base
    }
}

impl TryFrom<String> for Network {
    type Error = BadNetwork;

    fn try_from(text: String) -> Result<Self, BadNetwork> {
        Self::parse(&text)
    }
}

impl From<Network> for String {
    fn from(network: Network) -> Self {
        let address = if network.v4 {
            IpAddr::from(std::net::Ipv4Addr::from(network.base as u32))
        } else {
            IpAddr::from(std::net::Ipv6Addr::from(network.base))
        };
        format!("{address}/{}", network.prefix)
    }
}

fn mask(prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        (u128::MAX << (128 - u32::from(prefix))) >> (128 - u32::from(width))
    }
}

/// `[audit.filters]`, read straight from `proxy.toml`: what the trail leaves out (always
/// counted; system events always kept). Each value is checked as it is read (kinds, classes,
/// networks), and command names are kept in lower case, so there is nothing left to validate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filters {
    /// Kinds kept: `command`, `session`.
    pub kinds: Kinds,
    /// Classes kept: `read`, `write`, `non_read_write`, `unknown`.
    pub classes: ClassSet,
    /// When not empty, only these users.
    pub(crate) include_users: Vec<String>,
    /// Never these users.
    pub(crate) exclude_users: Vec<String>,
    /// When not empty, only these commands (a name such as `config` covers its subcommands;
    /// `config|set` only that one).
    #[serde(deserialize_with = "lower_case")]
    pub(crate) include_commands: Vec<String>,
    /// Never these commands.
    #[serde(deserialize_with = "lower_case")]
    pub(crate) exclude_commands: Vec<String>,
    /// When not empty, only clients in these networks.
    pub(crate) include_networks: Vec<Network>,
    /// Never clients in these networks.
    pub(crate) exclude_networks: Vec<Network>,
    /// Commands left out as high-frequency traffic (e.g. `ping`).
    #[serde(deserialize_with = "lower_case")]
    pub(crate) ignore_high_frequency: Vec<String>,
}

impl Default for Filters {
    fn default() -> Self {
        Self {
            kinds: Kinds { commands: true, sessions: true },
            classes: ClassSet::ALL,
            include_users: Vec::new(),
            exclude_users: Vec::new(),
            include_commands: Vec::new(),
            exclude_commands: Vec::new(),
            include_networks: Vec::new(),
            exclude_networks: Vec::new(),
            ignore_high_frequency: Vec::new(),
        }
    }
}

/// Command names as written, in lower case.
fn lower_case<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(deserializer)?;
    Ok(names.iter().map(|name| name.to_lowercase()).collect())
}

/// `audit.filters.kinds`: which event kinds are kept, written as a list of [`FilterKind`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    /// Keep command events.
    pub commands: bool,
    /// Keep session events.
    pub sessions: bool,
}

/// An entry of `audit.filters.kinds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FilterKind {
    /// Command events.
    Command,
    /// Session events.
    Session,
    /// System events: named only to be refused with the reason (they are always kept).
    System,
}

impl FilterKind {
    /// The name the entry takes (the tests check serde's against it).
    #[cfg(test)]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Session => "session",
            Self::System => "system",
        }
    }
}

impl Serialize for Kinds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let kept = [(self.commands, FilterKind::Command), (self.sessions, FilterKind::Session)];
        serializer.collect_seq(kept.into_iter().filter(|(kept, _)| *kept).map(|(_, kind)| kind))
    }
}

impl<'de> Deserialize<'de> for Kinds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let kinds = Vec::<FilterKind>::deserialize(deserializer)?;
        if kinds.contains(&FilterKind::System) {
            return Err(serde::de::Error::custom("system events are always kept"));
        }
        Ok(Self {
            commands: kinds.contains(&FilterKind::Command),
            sessions: kinds.contains(&FilterKind::Session),
        })
    }
}

/// Why an event was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Reason {
    /// Its kind is not kept.
    Kind,
    /// Its class is not kept.
    Class,
    /// Its user is not kept.
    User,
    /// Its command is not kept.
    Command,
    /// Its client's network is not kept.
    Network,
    /// A high-frequency command.
    HighFrequency,
}

const REASONS: [&str; 6] = ["kind", "class", "user", "command", "network", "high_frequency"];

/// Events left out, by reason.
#[derive(Debug, Default)]
pub struct FilterCounts([AtomicU64; 6]);

impl FilterCounts {
    /// Counts one event left out.
    pub fn count(&self, reason: Reason) {
        self.0[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts as a JSON object (for the `stop` event).
    pub fn to_json(&self) -> serde_json::Value {
        let counts: serde_json::Map<String, serde_json::Value> = REASONS
            .iter()
            .zip(&self.0)
            .map(|(name, count)| ((*name).to_owned(), json!(count.load(Ordering::Relaxed))))
            .collect();
        serde_json::Value::Object(counts)
    }

    /// Each reason with its count.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        REASONS.iter().zip(&self.0).map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
    }

    /// Total left out.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl Filters {
    /// True when nothing is left out (the common case: no work per event).
    pub(crate) fn keeps_everything(&self) -> bool {
        *self == Self::default()
    }

    fn user_reason(&self, user: &[u8]) -> Option<Reason> {
        left_out(&self.include_users, &self.exclude_users, |u| u.as_bytes() == user)
            .then_some(Reason::User)
    }

    fn network_reason(&self, address: IpAddr) -> Option<Reason> {
        left_out(&self.include_networks, &self.exclude_networks, |n| n.contains(address))
            .then_some(Reason::Network)
    }

    /// Why this command's record is left out, if it is.
    pub fn command(&self, record: &CommandRecord) -> Option<Reason> {
        if !self.kinds.commands {
            return Some(Reason::Kind);
        }
        let full = record.command.as_ref().map_or("(unknown)", |c| c.name.as_str());
        let container = full.split('|').next().unwrap_or(full);
        let named = |c: &String| c == full || c == container;
        if self.ignore_high_frequency.iter().any(named) {
            return Some(Reason::HighFrequency);
        }
        if !self.classes.contains(record.class) {
            return Some(Reason::Class);
        }
        if left_out(&self.include_commands, &self.exclude_commands, named) {
            return Some(Reason::Command);
        }
        self.user_reason(&record.user).or_else(|| self.network_reason(record.client_addr.ip()))
    }

    /// Why this session event is left out, if it is.
    pub fn session(&self, event: &SessionEvent) -> Option<Reason> {
        if !self.kinds.sessions {
            return Some(Reason::Kind);
        }
        self.network_reason(event.client_addr.ip())
    }
}

/// True when an include list is set and no entry matches, or an exclude entry matches.
fn left_out<T>(include: &[T], exclude: &[T], matches: impl Fn(&T) -> bool) -> bool {
    (!include.is_empty() && !include.iter().any(&matches)) || exclude.iter().any(&matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let net = Network::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()), "v4-mapped");
        let v6 = Network::parse("fd00::/8").unwrap();
        assert!(
            v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap())
        );
        assert!(Network::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Network::parse("127.0.0.1").unwrap().contains("127.0.0.1".parse().unwrap()));
        for text in ["10.1.0.0/16", "fd00::/8", "0.0.0.0/0"] {
            assert_eq!(String::from(Network::parse(text).unwrap()), text, "written back");
        }
        for bad in ["10.0.0.0/33", "nope/8", "10.0.0.0/x"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }
}
