//! `[acl]` validated: the validator of [`RawAcl`] into [`AclConfig`] (the type is the ACL's
//! own, in [`crate::acl::config`]), with `--mode` replacing `acl.mode`.

use super::raw::RawAcl;
use super::{AclConfig, AclMode};

impl RawAcl {
    /// `[acl]` as the proxy runs it; `mode` (from `--mode`) replaces `acl.mode`.
    pub fn validate(&self, mode: Option<AclMode>) -> AclConfig {
        AclConfig {
            mode: mode.unwrap_or(self.mode),
            observe_users: self.observe_users.clone(),
            log_max_len: usize::try_from(self.log_max_len).unwrap_or(usize::MAX),
            log_source: self.log_source,
        }
    }
}
