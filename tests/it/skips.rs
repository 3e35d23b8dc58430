//! A test whose tool is missing fails and says how to install it; only
//! `REDIS_AUDIT_PROXY_ALLOW_SKIP=1` turns that into a skip, and the skip is printed. Checked by
//! running this very test binary on one test, with a PATH on which no `redis-server` is found.

use std::process::Command;

use crate::support::skip::ALLOW_SKIP;
use crate::support::Scratch;

/// The test run on its own: it needs redis-server, and calls `require_redis!` first.
const NEEDS_REDIS: &str = "records::every_command_yields_one_record_in_order";

fn run_without_redis(allow_skip: bool) -> std::process::Output {
    let empty = Scratch::new("no-tools");
    std::fs::create_dir_all(empty.path()).unwrap();
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command.args(["--exact", NEEDS_REDIS, "--test-threads", "1"]);
    command.env("PATH", empty.path()).env_remove(ALLOW_SKIP);
    if allow_skip {
        command.env(ALLOW_SKIP, "1");
    }
    command.output().expect("the test binary runs")
}

#[test]
fn a_missing_tool_fails_the_test_unless_skipping_is_allowed() {
    let failed = run_without_redis(false);
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert!(!failed.status.success(), "passed without redis-server: {stdout}");
    assert!(stdout.contains("redis-server is not installed: `make test` installs it"), "{stdout}");

    let skipped = run_without_redis(true);
    let stderr = String::from_utf8_lossy(&skipped.stderr);
    assert!(skipped.status.success(), "{stderr}{}", String::from_utf8_lossy(&skipped.stdout));
    assert!(
        stderr
            .contains(&format!("SKIPPED (1 so far): {NEEDS_REDIS}: redis-server is not installed")),
        "{stderr}"
    );
}
