//! Configuration: load `proxy.toml`, apply command-line overrides, validate into typed values.
//!
//! Two stages, as ripgrep's low/high arguments: [`raw::RawConfig`] is the file as written (closed
//! sets already enums), and [`Config`] is what the proxy runs on, with addresses parsed, limits
//! checked and durations typed. Each section has a file holding its validator (`validate` on the
//! raw table) and, where the configuration owns them, its validated types (`proxy`, `upstream`,
//! `admin`, `auth`, `cluster`); the validated types of `acl`, `audit`, the sinks and `tls` belong
//! to those subsystems and are re-exported here. `cluster` and `sinks` keep their raw tables
//! beside their validators; every other raw table is in [`raw`]. Every error names where the
//! value came from, the key and what is wrong, on one line ([`error`]).

pub mod acl;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod cluster;
pub mod error;
pub mod proxy;
pub mod raw;
pub mod sentinel;
pub mod sinks;
pub mod tls;
pub mod upstream;

#[cfg(test)]
mod tests;

use std::path::Path;

use raw::RawConfig;

pub use self::admin::{AdminConfig, ApiKey, MIN_ADMIN_REQUEST_BYTES};
pub use self::audit::read_key_file;
pub use self::auth::{AuthConfig, AuthMode, MirrorUsers, Secret, UsersFile};
pub use self::error::{ConfigError, Invalid, Problem};
pub use self::proxy::{Limits, ProxyConfig, Runtime};
pub use self::upstream::{PoolMode, UpstreamConfig};
pub use crate::acl::config::{AclConfig, AclMode, LogSource};
pub use crate::audit::config::{
    AuditConfig, Checkpoints, Durability, KeyMode, KeyNames, OnError, OnFull, Retention,
};
pub use crate::tls::config::{ClientAuth, TlsConfig, UpstreamTlsConfig, UserFrom};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[proxy]`
    pub proxy: ProxyConfig,
    /// `[upstream]`
    pub upstream: UpstreamConfig,
    /// `[admin]`
    pub admin: AdminConfig,
    /// `[audit]`
    pub audit: AuditConfig,
    /// `[auth]`
    pub auth: AuthConfig,
    /// `[acl]`
    pub acl: AclConfig,
    /// `[tls]`: a client-facing TLS listener.
    pub tls: Option<TlsConfig>,
    /// `[cluster]`: Redis Cluster through per-node sidecars.
    pub cluster: cluster::ClusterConfig,
}

/// Values given on the command line; each replaces its key from the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen` → `proxy.listen`
    pub listen: Option<String>,
    /// `--upstream` → `upstream.address`
    pub upstream: Option<String>,
    /// `--admin` → `admin.listen`
    pub admin: Option<String>,
    /// `--audit-dir` → `audit.dir`
    pub audit_dir: Option<String>,
    /// `--users` → `auth.users_file`
    pub users: Option<String>,
    /// `--mode` → `acl.mode`
    pub mode: Option<AclMode>,
}

impl Overrides {
    /// Writes the overrides into `raw`; returns each key replaced with its flag.
    fn apply(&self, raw: &mut RawConfig) -> Vec<(&'static str, &'static str)> {
        let mut from_flag = Vec::new();
        for (value, target, key, flag) in [
            (&self.listen, &mut raw.proxy.listen, "proxy.listen", "--listen"),
            (&self.upstream, &mut raw.upstream.address, "upstream.address", "--upstream"),
            (&self.admin, &mut raw.admin.listen, "admin.listen", "--admin"),
            (&self.audit_dir, &mut raw.audit.dir, "audit.dir", "--audit-dir"),
        ] {
            if let Some(value) = value {
                target.clone_from(value);
                from_flag.push((key, flag));
            }
        }
        if let Some(users) = &self.users {
            raw.auth.users_file = Some(users.clone());
            from_flag.push(("auth.users_file", "--users"));
        }
        from_flag
    }
}

impl Config {
    /// The login the proxy reads Redis's command table with: the service login in proxy
    /// auth mode, `upstream.table_user` in passthrough.
    pub fn table_login(&self) -> Option<(&str, &[u8])> {
        let login = match self.auth.mode {
            AuthMode::Proxy => &self.auth.upstream_login,
            AuthMode::Passthrough => &self.upstream.table_login,
        };
        login.as_ref().map(|(user, password)| (user.as_str(), &password.0[..]))
    }

    /// Loads `path` (or the built-in defaults when `None`) and applies `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let (raw, source_name) = match path {
            Some(path) => {
                let file = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { file: file.clone(), source })?;
                (Self::parse_raw(&text, &file)?, file)
            }
            None => (RawConfig::default(), "built-in defaults".to_owned()),
        };
        Self::validate(raw, &source_name, overrides)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Self, ConfigError> {
        Self::validate(Self::parse_raw(text, file)?, file, &Overrides::default())
    }

    fn parse_raw(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|error| error::parse_error(text, file, &error))
    }

    /// Turns the raw file plus overrides into a typed configuration, one section at a time.
    pub fn validate(
        mut raw: RawConfig,
        source_name: &str,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let from_flag = overrides.apply(&mut raw);
        let located = |invalid: Invalid| {
            let source_name = from_flag
                .iter()
                .find(|(key, _)| *key == invalid.key)
                .map_or_else(|| source_name.to_owned(), |(_, flag)| format!("command line {flag}"));
            ConfigError::Invalid { source_name, invalid }
        };
        Self::validate_sections(&raw, overrides.mode).map_err(located)
    }

    fn validate_sections(raw: &RawConfig, mode: Option<AclMode>) -> Result<Self, Invalid> {
        let proxy = raw.proxy.validate()?;
        let upstream = raw.upstream.validate()?;
        let admin = raw.admin.validate()?;
        let audit = raw.audit.validate()?;
        let acl = raw.acl.validate(mode);
        let auth = raw.auth.validate()?;
        let tls = raw.tls.as_ref().map(|tls| tls.validate(auth.mode)).transpose()?;
        let cluster = raw.cluster.validate()?;
        Ok(Self { proxy, upstream, admin, audit, auth, acl, tls, cluster })
    }
}
