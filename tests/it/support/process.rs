//! Facts about and levers on processes for long tests: the open-files limit (raised with
//! util-linux's `prlimit`, since the crate forbids `unsafe` and so calls no `setrlimit`), a
//! process's resident memory, and signals.

use std::process::Command;

/// Raises this process's open-files limit (soft and hard) to at least `need` and returns the
/// soft limit now in force; children started afterwards inherit it. Raising the hard limit
/// needs root (CAP_SYS_RESOURCE); without it the soft limit goes up to the hard one, and an
/// `Err` says what is missing when that is not enough.
pub fn raise_open_files(need: u64) -> Result<u64, String> {
    let (soft, hard) = open_files_limits()?;
    if soft >= need {
        return Ok(soft);
    }
    let target = need.max(hard);
    let pid = std::process::id().to_string();
    let raised = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={target}:{target}")])
        .status()
        .map_err(|e| format!("cannot run prlimit (util-linux): {e}"))?;
    if !raised.success() {
        // Not root: the soft limit can still reach the hard one.
        let _ =
            Command::new("prlimit").args(["--pid", &pid, &format!("--nofile={hard}:")]).status();
    }
    let (soft, hard) = open_files_limits()?;
    if soft < need {
        return Err(format!(
            "the open-files limit is {soft} (hard {hard}) and {need} are needed: raising the \
             hard limit needs CAP_SYS_RESOURCE (root, outside a restricted container; the test \
             raises it then), or raise it before (`ulimit -Hn {need}; ulimit -n {need}`)"
        ));
    }
    Ok(soft)
}

/// This process's open-files limits, `(soft, hard)`, from /proc/self/limits.
pub fn open_files_limits() -> Result<(u64, u64), String> {
    let limits = std::fs::read_to_string("/proc/self/limits").map_err(|e| e.to_string())?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .ok_or("no `Max open files` in /proc/self/limits")?;
    let numbers: Vec<u64> =
        line.split_whitespace().filter_map(|word| word.parse().ok()).take(2).collect();
    match numbers[..] {
        [soft, hard] => Ok((soft, hard)),
        _ => Err(format!("cannot read the limits in {line:?}")),
    }
}

/// The resident set size of process `pid` in KiB (`VmRSS` in /proc/<pid>/status); `None` when
/// the process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `signal` (`"HUP"`, `"STOP"`, `"CONT"`, ...) to process `pid` with kill(1); panics
/// when kill fails.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {pid} failed");
}
