//! `[audit]` validated: the validator of [`RawAudit`] into the audit trail's own
//! [`AuditConfig`] (its `[audit.filters]` are checked as they are read: [`Filters`]), and the
//! HMAC key files it reads.
//!
//! [`Filters`]: crate::audit::filter::Filters

use std::path::PathBuf;
use std::time::Duration;

use super::error::{positive, Invalid, Problem};
use super::raw::RawAudit;
use super::{AuditConfig, Checkpoints, KeyMode, KeyNames, Retention};

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
            page_cache_bytes: self.page_cache_bytes,
            group_refusals_secs: self.group_refusals_secs,
            filters: self.filters.clone(),
            checkpoint,
            chain_alg: self.chain_alg,
            seal_records: self.seal_records,
            seal_interval: Duration::from_millis(self.seal_interval_ms.clamp(1, 3_600_000)),
            sinks,
        })
    }
}
