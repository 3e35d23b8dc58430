//! A test whose tool is missing fails and says how to install it — unless the environment
//! says skipping is allowed (`REDIS_AUDIT_PROXY_ALLOW_SKIP=1`): then it returns early, and a
//! line on the real stderr (libtest shows no output of a passing test) names the test, the
//! tool, how to install it, and how many tests were skipped so far, so a run that skipped
//! never looks like one that tested.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The variable that allows skipping.
pub const ALLOW_SKIP: &str = "REDIS_AUDIT_PROXY_ALLOW_SKIP";

static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// `what` is missing: fails the test with `install` (how to get it), or, with skipping
/// allowed, reports the skip; the caller then returns.
pub fn missing(what: &str, install: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    if std::env::var(ALLOW_SKIP).as_deref() != Ok("1") {
        panic!("{what} is not installed: {install} (or set {ALLOW_SKIP}=1 to skip such tests)");
    }
    let count = SKIPPED.fetch_add(1, Ordering::Relaxed) + 1;
    let line = format!("SKIPPED ({count} so far): {test}: {what} is not installed: {install}\n");
    // Straight to the process's stderr: `eprintln!` would be captured and dropped.
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Returns from the calling test (after [`missing`]) when `$present` is false.
#[macro_export]
macro_rules! require {
    ($present:expr, $what:expr, $install:expr) => {
        if !$present {
            $crate::support::skip::missing($what, $install);
            return;
        }
    };
}

/// [`require!`] for redis-server: a test never passes silently without the real server it is
/// about.
#[macro_export]
macro_rules! require_redis {
    () => {
        $crate::require!(
            $crate::support::redis::available(),
            "redis-server",
            "`make test` installs it (or `apt-get install redis-server`)"
        );
    };
}

/// [`require!`] for a server built by `scripts/ensure-upstreams.sh` (or Debian's).
#[macro_export]
macro_rules! require_server {
    ($server:expr) => {
        $crate::require_redis!();
        $crate::require!(
            $server.available(),
            &format!("{:?}", $server),
            "`make test` builds it (or `bash scripts/ensure-upstreams.sh`)"
        );
    };
}
