//! `[audit]` validated: the validators of [`RawAudit`] and its `[audit.filters]` into the audit
//! trail's own types ([`AuditConfig`], [`Filters`]), and the HMAC key files they read.

use std::path::PathBuf;
use std::time::Duration;

use super::error::{positive, Invalid, Problem};
use super::raw::{FilterKind, RawAudit, RawFilters};
use super::{AuditConfig, Checkpoints, KeyMode, KeyNames, Retention};
use crate::audit::filter::{Filters, Network};

/// Reads an HMAC key from `path` (a trailing newline is not part of it; at least 16 bytes);
/// `key` names the setting (or the flag) in the error.
pub fn read_key_file(key: &'static str, path: &str) -> Result<Vec<u8>, Invalid> {
    let bytes = std::fs::read(path)
        .map_err(|error| Invalid::new(key, Problem::Unreadable { path: path.to_owned(), error }))?;
    let secret = bytes.strip_suffix(b"\n").unwrap_or(&bytes).to_vec();
    if secret.len() < 16 {
        return Err(Invalid::other(
            key,
            format!("\"{path}\" holds {} bytes; an HMAC key needs at least 16", secret.len()),
        ));
    }
    Ok(secret)
}

impl RawAudit {
    /// Checks `[audit]`, its filters and its sinks, and reads its key files.
    pub fn validate(&self) -> Result<AuditConfig, Invalid> {
        if self.dir.trim().is_empty() {
            return Err(Invalid::other("audit.dir", "must not be empty"));
        }
        if self.seal_records == 0 {
            return Err(Invalid::new("audit.seal_records", Problem::Zero));
        }
        let keys = match (self.keys, &self.hmac_key_file) {
            (KeyMode::Clear, _) => KeyNames::Clear,
            (KeyMode::Off, _) => KeyNames::Off,
            (KeyMode::Hmac, Some(path)) => {
                KeyNames::Hmac(read_key_file("audit.hmac_key_file", path)?)
            }
            (KeyMode::Hmac, None) => {
                return Err(Invalid::other(
                    "audit.hmac_key_file",
                    "is required with keys = \"hmac\"",
                ))
            }
        };
        let filters = self.filters.validate()?;
        let sinks = super::sinks::validate_sinks(&self.sinks)?;
        let checkpoint = match &self.checkpoint_key_file {
            Some(path) => Some(Checkpoints {
                key: read_key_file("audit.checkpoint_key_file", path)?,
                every: self.checkpoint_records,
            }),
            None => None,
        };
        let rotate_bytes = positive("audit.rotate_bytes", self.rotate_bytes)?;
        let queue_max_bytes = positive("audit.queue_max_bytes", self.queue_max_bytes)?;
        let limit = |value: u64| (value > 0).then_some(value);
        let seconds = |value: u64| (value > 0).then(|| Duration::from_secs(value));
        Ok(AuditConfig {
            enabled: self.enabled,
            dir: PathBuf::from(&self.dir),
            rotate_bytes,
            rotate_interval: seconds(self.rotate_interval),
            retention: Retention {
                files: limit(self.retain_files),
                bytes: limit(self.retain_bytes),
                age: seconds(self.retain_age),
            },
            queue_max_bytes: queue_max_bytes as usize,
            on_full: self.on_full,
            on_error: self.on_error,
            durability: self.durability,
            keys,
            capture_args: self.capture_args,
            args_max_bytes: self.args_max_bytes as usize,
            coalesce: Duration::from_micros(self.coalesce_us.min(100_000)),
            group_refusals_secs: self.group_refusals_secs,
            filters,
            checkpoint,
            chain_alg: self.chain_alg,
            seal_records: self.seal_records,
            seal_interval: Duration::from_millis(self.seal_interval_ms.clamp(1, 3_600_000)),
            sinks,
        })
    }
}

impl RawFilters {
    /// Checks `[audit.filters]`: system events cannot be left out, networks parse, command
    /// names are compared in lower case.
    pub fn validate(&self) -> Result<Filters, Invalid> {
        if self.kinds.contains(&FilterKind::System) {
            return Err(Invalid::other("audit.filters.kinds", "system events are always kept"));
        }
        let networks = |key: &'static str, list: &[String]| {
            list.iter()
                .map(|n| Network::parse(n).map_err(|e| Invalid::new(key, e.into())))
                .collect::<Result<Vec<_>, _>>()
        };
        let lower = |list: &[String]| list.iter().map(|c| c.to_lowercase()).collect::<Vec<_>>();
        Ok(Filters {
            commands: self.kinds.contains(&FilterKind::Command),
            sessions: self.kinds.contains(&FilterKind::Session),
            classes: self.classes,
            include_users: self.include_users.clone(),
            exclude_users: self.exclude_users.clone(),
            include_commands: lower(&self.include_commands),
            exclude_commands: lower(&self.exclude_commands),
            include_networks: networks("audit.filters.include_networks", &self.include_networks)?,
            exclude_networks: networks("audit.filters.exclude_networks", &self.exclude_networks)?,
            ignore_high_frequency: lower(&self.ignore_high_frequency),
        })
    }
}
