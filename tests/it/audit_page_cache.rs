//! The audit trail in the page cache: the active file keeps only about its last
//! `audit.page_cache_bytes` there (drop-behind), measured with util-linux's `fincore`.

use std::path::Path;

use crate::clients::{run, REDIS_BENCHMARK};
use crate::support::{RedisServer, TestProxy};

const FINCORE: &str = "/usr/bin/fincore";

/// Bytes of `file` in the page cache, as `fincore` counts them.
async fn resident_bytes(file: &Path) -> u64 {
    let path = file.to_str().expect("a UTF-8 path");
    let output = run(FINCORE, &["--bytes", "--noheadings", "--output", "RES", path], b"").await;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "fincore {path}: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text.trim().parse().unwrap_or_else(|_| panic!("fincore printed {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_file_leaves_only_its_tail_in_the_page_cache() {
    crate::require_redis!();
    crate::require!(
        Path::new(REDIS_BENCHMARK).exists(),
        REDIS_BENCHMARK,
        "`make test` installs it"
    );
    crate::require!(Path::new(FINCORE).exists(), FINCORE, "`apt-get install util-linux`");
    let redis = RedisServer::start(&[]);
    // On the build's disk, not /tmp: a tmpfs keeps every page whatever the advice.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("page-cache-{}", crate::support::redis::free_port()));
    let _ = std::fs::remove_dir_all(&dir);
    const KEEP: u64 = 1024 * 1024;
    let toml = format!("[audit]\npage_cache_bytes = {KEEP}\nrotate_bytes = 1073741824\n");
    let (proxy, audit) = TestProxy::start_audited(redis.addr, &dir, &toml).await;
    let port = proxy.addr.port().to_string();
    let benchmark = |requests: &'static str| {
        let args = ["-h", "127.0.0.1", "-p", &port, "-t", "set", "-n", requests, "-P", "16", "-q"];
        async move {
            let output = run(REDIS_BENCHMARK, &args, b"").await;
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        }
    };
    benchmark("120000").await;
    // A page is dropped by the first advice after its write-back ended: a pause for the last
    // write-backs to end, then a few more steps of lines.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    benchmark("4000").await;
    audit.sync();
    let file = dir.join("audit.log");
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size > 30 * KEEP, "the benchmark wrote only {size} bytes of trail");
    // The tail kept, the step between two advices (a quarter of it, at least 64 KiB), and the
    // step whose write-back the last advice started: about 1.5 MiB of 30 and more.
    let resident = resident_bytes(&file).await;
    assert!(
        resident <= 3 * KEEP,
        "{resident} of the active file's {size} bytes are in the page cache, with \
         page_cache_bytes = {KEEP}"
    );
    proxy.shutdown().await;
    let report = redis_audit_proxy::audit::verify::verify_dir(&dir).expect("the trail is intact");
    assert_eq!(report.lost_events, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
