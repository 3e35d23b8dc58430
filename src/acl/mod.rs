//! Redis ACL rules in the proxy: users and selectors in Redis's syntax, the pure permission
//! check, the compiled policy, the `ACL LOG` and the ACL subcommands the proxy serves.

pub mod check;
pub mod command_ids;
pub mod commands;
pub mod config;
pub(crate) mod glob;
pub mod log;
pub mod policy;
pub mod user;
pub mod users;

pub use check::{check, Denial, DenyReason};
pub use command_ids::CommandIds;
pub use policy::{Policy, Verdict};
pub use user::{RuleError, User};
pub use users::{MissingDefault, Users, UsersFileError};
