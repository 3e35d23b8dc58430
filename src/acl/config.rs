//! The ACL settings, validated (`[acl]`).

/// Policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclConfig {
    /// Enforce or only observe.
    pub mode: AclMode,
    /// Users kept in observe mode whatever `mode` says.
    pub observe_users: Vec<String>,
    /// Most entries of the proxy's `ACL LOG`.
    pub log_max_len: usize,
    /// `acl.log_source`.
    pub log_source: LogSource,
}

/// `acl.log_source`: without a users file, whose log `ACL LOG` shows (with one, always the
/// proxy's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// The proxy's: the denials and failed logins Redis answered through the proxy, with the
    /// real client's address. Redis still decides who may run `ACL LOG`.
    Proxy,
    /// Redis's own, whose entries name the proxy's address.
    Upstream,
}

/// `acl.mode`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AclMode {
    /// Deny with `-NOPERM` as Redis would.
    Enforce,
    /// Forward, and record the would-be denial.
    Observe,
}

impl AclMode {
    /// The name `acl.mode` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Observe => "observe",
        }
    }
}

impl LogSource {
    /// The name `acl.log_source` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::Upstream => "upstream",
        }
    }
}
