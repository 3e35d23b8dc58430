//! What the line format fixes, shared by the cold path ([`super::event`], serde) and the hot
//! one ([`super::line`]): the schema names, the limits on what a client can make a line hold,
//! the head every line starts with, and the [`Envelope`] a process's lines share.

use crate::audit::json::push_u64;

/// The schema the files are written in; each file's `file_open` line declares it.
pub(crate) const SCHEMA: &str = "redis-audit/2";
/// The schema of the files older versions wrote (read by `audit verify` and queries).
pub(crate) const SCHEMA_V1: &str = "redis-audit/1";

/// Total bytes of key names written in one command record before the rest are left out (and
/// `keys_truncated` is set).
pub(crate) const MAX_KEY_BYTES: usize = 16 * 1024;

/// Longest client-controlled string written (client name, library name or version, user
/// name, a security event's `username` or `object`); longer ones are cut, and
/// `client.truncated` / `user_truncated` / `username_truncated` / `object_truncated` say so.
/// With it, no client string makes a line longer than a few KiB (escaped, each cut string is
/// at most 6 × 256 bytes).
pub(crate) const MAX_NAME_BYTES: usize = 256;

/// The longest head [`push_head`] writes.
pub(crate) const HEAD_MAX_BYTES: usize = 64;

/// Appends what every line but a file's first starts with: `{"time":…,` and `"seq":N,` when it
/// has one. `time` is [`rfc3339_micros_bytes`](crate::audit::time::rfc3339_micros_bytes)'s
/// text. (What every line of a file shares — schema, instance, node, upstream — is written
/// once, in its `file_open` line.)
pub fn push_head(out: &mut Vec<u8>, time: &[u8; 27], seq: Option<u64>) {
    out.extend_from_slice(b"{\"time\":\"");
    out.extend_from_slice(time);
    out.extend_from_slice(b"\",");
    if let Some(seq) = seq {
        out.extend_from_slice(b"\"seq\":");
        push_u64(out, seq);
        out.push(b',');
    }
}

/// What every line of one process shares (written once per file, in its `file_open` line).
#[derive(Debug, Clone)]
pub struct Envelope {
    /// How key names are written.
    pub keys: crate::audit::config::KeyNames,
    /// New at each start (UUID v4 form).
    pub instance_id: String,
    /// Host name.
    pub node: String,
    /// The upstream address.
    pub upstream: String,
}

impl Envelope {
    /// The envelope of one process.
    pub fn new(
        keys: crate::audit::config::KeyNames,
        instance_id: String,
        node: String,
        upstream: String,
    ) -> Self {
        Self { keys, instance_id, node, upstream }
    }

    /// What session ids start with: the instance id's first eight characters.
    pub(crate) fn session_prefix(&self) -> &str {
        self.instance_id.get(..8).unwrap_or(&self.instance_id)
    }

    /// The session id of a connection: unique across restarts.
    pub fn session_id(&self, conn_id: u64) -> String {
        format!("{}-{conn_id}", self.session_prefix())
    }
}
