//! Command ids for ACL bitmaps: every command and subcommand of the table gets a small
//! number, as Redis's `ACLGetCommandID`, so a selector's permissions are a bitmap.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::command::{CommandInfo, CommandTable};

/// Ids of every command and subcommand of one command table.
#[derive(Debug)]
pub struct CommandIds {
    by_name: FxHashMap<Box<str>, u16>,
    commands: Vec<Entry>,
    /// ACL categories Redis knows, without `@`, lower case.
    categories: Vec<String>,
}

#[derive(Debug)]
struct Entry {
    info: Arc<CommandInfo>,
    parent: Option<u16>,
    children: Vec<u16>,
    no_auth: bool,
    channels: Option<ChannelArgs>,
}

/// Which arguments of a command are channels, for the ACL check (`ACLDoesCommandHaveChannels`:
/// the unsubscribe commands have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelArgs {
    /// PUBLISH, SPUBLISH: argument 1, matched against the patterns.
    First,
    /// SUBSCRIBE, SSUBSCRIBE: every argument, matched against the patterns.
    All,
    /// PSUBSCRIBE: every argument, which must equal a pattern literally.
    AllLiteral,
}

impl CommandIds {
    /// Numbers the commands of `table` (sorted by name, so ids are stable for a table).
    pub fn new(table: &CommandTable) -> Self {
        let mut top: Vec<&Arc<CommandInfo>> = table.commands().collect();
        top.sort_by(|a, b| a.name.cmp(&b.name));
        let mut ids = Self {
            by_name: FxHashMap::default(),
            commands: Vec::new(),
            categories: table.categories.iter().map(|c| c.to_ascii_lowercase()).collect(),
        };
        for info in top {
            let parent = ids.add(info, None);
            let mut subs: Vec<&Arc<CommandInfo>> = info.subcommands.values().collect();
            subs.sort_by(|a, b| a.name.cmp(&b.name));
            for sub in subs {
                let child = ids.add(sub, Some(parent));
                ids.commands[usize::from(parent)].children.push(child);
            }
        }
        ids
    }

    fn add(&mut self, info: &Arc<CommandInfo>, parent: Option<u16>) -> u16 {
        let id = u16::try_from(self.commands.len()).unwrap_or(u16::MAX);
        self.by_name.insert(info.name.to_ascii_lowercase().into_boxed_str(), id);
        self.commands.push(Entry {
            info: Arc::clone(info),
            parent,
            children: Vec::new(),
            no_auth: info.flags.iter().any(|f| f == "no_auth"),
            channels: match info.name.as_str() {
                "publish" | "spublish" => Some(ChannelArgs::First),
                "subscribe" | "ssubscribe" => Some(ChannelArgs::All),
                "psubscribe" => Some(ChannelArgs::AllLiteral),
                _ => None,
            },
        });
        id
    }

    /// The id of a command by full name (`get`, `config|get`), as the table spells it.
    pub fn id(&self, full_name: &str) -> Option<u16> {
        self.by_name.get(full_name).copied()
    }

    /// Redis's `ACLLookupCommand`: `name` or `container|sub`, any case; more than one `|`
    /// finds nothing.
    pub(crate) fn lookup(&self, name: &[u8]) -> Option<u16> {
        let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
        let mut parts = name.split('|');
        let (base, sub) = (parts.next()?, parts.next());
        if parts.next().is_some() {
            return None;
        }
        let base_id = self.id(base)?;
        match sub {
            None => Some(base_id),
            Some(_) if self.children(base_id).is_empty() => None,
            Some(_) => self.id(&name),
        }
    }

    /// The subcommands of a container.
    pub fn children(&self, id: u16) -> &[u16] {
        &self.commands[usize::from(id)].children
    }

    /// True for a subcommand.
    pub(crate) fn has_parent(&self, id: u16) -> bool {
        self.commands[usize::from(id)].parent.is_some()
    }

    /// True for commands any connection may run (`auth`, `hello`, `quit`, ...).
    pub(crate) fn is_no_auth(&self, id: u16) -> bool {
        self.commands[usize::from(id)].no_auth
    }

    /// Which arguments are channels the ACL checks.
    pub(crate) fn channel_args(&self, id: u16) -> Option<ChannelArgs> {
        self.commands[usize::from(id)].channels
    }

    /// True when Redis knows the category (`read`, no `@`), any case.
    pub(crate) fn has_category(&self, category: &str) -> bool {
        self.categories.iter().any(|c| c.eq_ignore_ascii_case(category))
    }

    /// Every id whose command is in `category` (no `@`), containers before their
    /// subcommands.
    pub(crate) fn in_category<'a>(&'a self, category: &'a str) -> impl Iterator<Item = u16> + 'a {
        let wanted = format!("@{}", category.to_ascii_lowercase());
        (0..self.commands.len()).filter_map(move |id| {
            let info = &self.commands[id].info;
            info.categories.iter().any(|c| c.eq_ignore_ascii_case(&wanted)).then_some(id as u16)
        })
    }

    /// Number of 64-bit words a bitmap over these ids needs.
    pub fn words(&self) -> usize {
        self.commands.len().div_ceil(64).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_subcommands_and_lookups() {
        let ids = CommandIds::new(&CommandTable::embedded());
        let config = ids.id("config").unwrap();
        let config_get = ids.id("config|get").unwrap();
        assert!(ids.children(config).contains(&config_get));
        assert!(ids.children(ids.id("get").unwrap()).is_empty());
        assert!(ids.has_parent(config_get) && !ids.has_parent(config));
        assert_eq!(ids.lookup(b"CONFIG|Get"), Some(config_get), "any case");
        assert_eq!(ids.lookup(b"Config"), Some(config));
        assert_eq!(ids.lookup(b"config|get|x"), None, "more than one |");
        assert_eq!(ids.lookup(b"config|nosuch"), None);
        assert_eq!(ids.lookup(b"get|x"), None, "not a container");
        assert_eq!(ids.lookup(b"nosuch"), None);
        assert_eq!(ids.lookup(b"\xffget"), None);
        assert_eq!(ids.words(), ids.commands.len().div_ceil(64));
        assert!(ids.words() > 1);
    }

    #[test]
    fn flags_channels_and_categories() {
        let ids = CommandIds::new(&CommandTable::embedded());
        let id = |name| ids.id(name).unwrap();
        assert!(ids.is_no_auth(id("auth")) && ids.is_no_auth(id("hello")));
        assert!(!ids.is_no_auth(id("get")));
        assert_eq!(ids.channel_args(id("publish")), Some(ChannelArgs::First));
        assert_eq!(ids.channel_args(id("spublish")), Some(ChannelArgs::First));
        assert_eq!(ids.channel_args(id("subscribe")), Some(ChannelArgs::All));
        assert_eq!(ids.channel_args(id("ssubscribe")), Some(ChannelArgs::All));
        assert_eq!(ids.channel_args(id("psubscribe")), Some(ChannelArgs::AllLiteral));
        assert_eq!(ids.channel_args(id("unsubscribe")), None, "Redis checks no channel there");
        assert_eq!(ids.channel_args(id("get")), None);
        assert!(ids.has_category("read") && ids.has_category("KeySpace"));
        assert!(!ids.has_category("nosuch") && !ids.has_category("@read"));
        let dangerous: Vec<u16> = ids.in_category("Dangerous").collect();
        assert!(dangerous.contains(&id("flushall")) && dangerous.contains(&id("config|set")));
        assert!(!dangerous.contains(&id("get")));
    }
}
