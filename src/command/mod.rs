//! What each command is: the command table (from Redis's `COMMAND`), which arguments are keys
//! and channels (as Redis's ACL check finds them), and its read / write / non_read_write class.

pub mod class;
pub mod keys;
pub mod slot;
pub mod table;

use bytes::Bytes;

pub use class::{Class, ClassSet};
pub use keys::{extract_channels, extract_keys, ChannelRef, ChannelUse, KeyFlags, KeyRef, Keys};
pub use table::{CommandInfo, CommandTable, TableError, TableSource};

impl CommandTable {
    /// What `COMMAND GETKEYSANDFLAGS <args>` answers: each key with its flags as Redis names
    /// them; empty where Redis answers an error (unknown command, wrong arity, no keys).
    pub fn keys_and_flags(&self, args: &[Bytes]) -> Vec<(Bytes, Vec<&'static str>)> {
        let Some(command) = self.resolve(args) else { return Vec::new() };
        if !keys::has_keys(command) {
            return Vec::new();
        }
        let mut found = Keys::new();
        extract_keys(command, args, &mut found);
        found.into_iter().map(|key| (args[key.index].clone(), key.flags.names())).collect()
    }

    /// The static class of a command line; `None` for an unknown command.
    pub fn class_of(&self, args: &[Bytes]) -> Option<Class> {
        self.resolve(args).map(|command| Class::of(command))
    }

    /// The full name Redis gives the command (`config|get`); `None` when unknown.
    pub fn full_name(&self, args: &[Bytes]) -> Option<String> {
        self.resolve(args).map(|command| command.name.clone())
    }
}
