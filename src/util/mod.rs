//! The bottom layer: small helpers every subsystem shares and that depend on no other module of
//! the crate — hex and SHA-256 text ([`hex`]), random bytes and UUID-shaped ids ([`id`]), the
//! time in Unix milliseconds.

pub mod hex;
pub mod id;
pub mod sync;

/// Milliseconds since the Unix epoch, as Redis's `mstime()` (0 before 1970).
pub(crate) fn unix_millis() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}
