//! What the pool knows of a `CLIENT PAUSE ... WRITE` that Redis accepted from a client of this
//! proxy: while it lasts, a client's command that the pause holds runs on a connection of its
//! own (`PinReason::HeldByPause`), so that it does not hold the reads of the clients sharing its
//! connection, which Redis answers at once during a write pause.
//!
//! A pause the proxy did not see (sent to Redis directly, through another proxy, or FAILOVER's)
//! is not known here: then a shared connection holding a paused write is left by its other
//! clients once it has been silent for `upstream.pool_stall_ms` (docs/pinning.md).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::time::Instant;

use crate::resp::args::string2ll;

/// The end of the pause the proxy last saw Redis accept, and whether it pauses writes only.
#[derive(Debug)]
pub(super) struct KnownPause {
    /// Microseconds after `born` when it ends; 0 when none is known.
    until_us: AtomicU64,
    /// The last pause paused writes only (`WRITE`), not every command (`ALL`).
    writes_only: AtomicBool,
    born: Instant,
}

impl Default for KnownPause {
    fn default() -> Self {
        Self {
            until_us: AtomicU64::new(0),
            writes_only: AtomicBool::new(false),
            born: Instant::now(),
        }
    }
}

impl KnownPause {
    /// Redis accepted `args` (as the client sent them), a `CLIENT PAUSE timeout [WRITE|ALL]` or
    /// a `CLIENT UNPAUSE`, now. As Redis does, a new pause sets the mode and keeps the later end
    /// (timed from its reply here, a little after Redis started it: the proxy's end is later).
    pub(super) fn accepted(&self, args: &[Bytes]) {
        let now = self.now_us();
        match args.get(1) {
            Some(sub) if sub.eq_ignore_ascii_case(b"unpause") => {
                self.until_us.store(0, Ordering::Relaxed)
            }
            Some(sub) if sub.eq_ignore_ascii_case(b"pause") => {
                let Some(millis) = args.get(2).and_then(|arg| string2ll(arg)) else { return };
                let millis = u64::try_from(millis).unwrap_or(0);
                let writes_only =
                    args.get(3).is_some_and(|mode| mode.eq_ignore_ascii_case(b"write"));
                self.writes_only.store(writes_only, Ordering::Relaxed);
                self.until_us
                    .fetch_max(now.saturating_add(millis.saturating_mul(1000)), Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// True while a write pause is known to last. One load per command when none is known.
    pub(super) fn writes_paused(&self) -> bool {
        let until = self.until_us.load(Ordering::Relaxed);
        until != 0 && self.writes_only.load(Ordering::Relaxed) && self.now_us() < until
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_micros()).unwrap_or(u64::MAX).max(1)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn words(line: &str) -> Vec<Bytes> {
        crate::resp::args::split_args(line.as_bytes()).expect("a command line")
    }

    #[test]
    fn a_write_pause_lasts_until_its_end_or_unpause() {
        let pause = KnownPause::default();
        assert!(!pause.writes_paused());
        pause.accepted(&words("CLIENT PAUSE 60000 WRITE"));
        assert!(pause.writes_paused());
        pause.accepted(&words("client unpause"));
        assert!(!pause.writes_paused());
        // ALL is not a write pause (every command waits, on whatever connection).
        pause.accepted(&words("CLIENT PAUSE 60000"));
        assert!(!pause.writes_paused());
        pause.accepted(&words("CLIENT PAUSE 60000 all"));
        assert!(!pause.writes_paused());
        // The mode is the last one's, the end the later one's.
        pause.accepted(&words("CLIENT PAUSE 0 write"));
        assert!(pause.writes_paused());
    }

    #[test]
    fn a_write_pause_ends_on_time() {
        let pause = KnownPause::default();
        pause.accepted(&words("CLIENT PAUSE 1 WRITE"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!pause.writes_paused());
    }
}
