//! The soak with faults (issue 19, item 4): `SOAK_CLIENTS` concurrent clients for
//! `SOAK_SECONDS` through the real binary while a fault injector restarts, freezes and pauses
//! Redis, fills the audit disk, stops the syslog collector and sends SIGHUP reloads, with
//! slowloris clients throughout; then the invariants (docs/reliability.md, "Soak with faults").
//! `make test` runs it at 60 s and 1,000 clients; `make soak` at 600 s and 10,000.

mod churn;
mod clients;
mod faults;
mod invariants;
mod subject;
mod wire;

use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::process::{raise_open_files, rss_kib};
use crate::support::redis::{free_port_outside_ephemeral, RedisServer};
use crate::support::rsyslog::{Input, Rsyslog};
use crate::support::Scratch;
use clients::Plan;
use faults::{AuditDisk, Targets};
use subject::{RssSampler, Setup, Subject};
use wire::Tally;

const BINARY: &str = env!("CARGO_BIN_EXE_redis-audit-proxy");

/// After the run's end, every client task must be done within this (a reply's deadline, a
/// stall's, and a margin).
const WIND_DOWN: Duration = Duration::from_secs(60);

/// Operations per second the workers aim at together (each is 1 to 16 commands, about 5 on
/// average): the load stays what a debug build on 2 shared cores serves with room to spare,
/// so that a slow reply means a fault, not an overloaded machine.
const OPERATIONS_PER_SECOND: u64 = 400;

/// The run's size, from the environment.
#[derive(Debug, Clone, Copy)]
struct Size {
    seconds: u64,
    clients: usize,
    seed: u64,
    /// `upstream.pool` (`SOAK_POOL`): `dedicated` (the default) or `shared`.
    pool: &'static str,
}

impl Size {
    fn from_env() -> Self {
        let var = |name: &str, default: u64| {
            std::env::var(name).ok().map_or(default, |v| {
                v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
            })
        };
        let clock = std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_nanos() as u64;
        Self {
            seconds: var("SOAK_SECONDS", 60),
            clients: var("SOAK_CLIENTS", 1000) as usize,
            seed: var("SOAK_SEED", clock),
            pool: match std::env::var("SOAK_POOL").as_deref() {
                Err(_) | Ok("dedicated") => "dedicated",
                Ok("shared") => "shared",
                Ok(other) => panic!("SOAK_POOL={other:?}: dedicated or shared"),
            },
        }
    }

    /// Open files the proxy needs: a socket per client, and one per client to Redis with
    /// dedicated upstream connections (with a shared pool, only clients pinned at the moment
    /// have one), plus room for the rest.
    fn open_files(self, connections: usize) -> u64 {
        let upstream = if self.pool == "shared" { connections / 4 } else { connections };
        (connections + upstream) as u64 + 1000
    }

    /// Pattern subscribers, drippers and stallers: 1 %, 0.5 % and 0.5 % of the clients.
    fn extras(self) -> (usize, usize, usize) {
        ((self.clients / 100).max(2), (self.clients / 200).max(2), (self.clients / 200).max(2))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_faults() {
    crate::require_redis!();
    crate::require_rsyslog!();
    let size = Size::from_env();
    let (subscribers, drippers, stallers) = size.extras();
    let connections = size.clients + subscribers + drippers + stallers;
    // This process holds the clients' sockets; the proxy (started from here, so with the
    // same limit) up to two per client; Redis one.
    if let Err(why) = raise_open_files(size.open_files(connections)) {
        panic!("the soak needs more open files (or SOAK_POOL=shared, which needs fewer): {why}");
    }
    // The trail of the whole run stays on the tmpfs: about 2 MB per second of this load.
    let Some(disk) = AuditDisk::mount((size.seconds * 4 + 256) << 20) else {
        let how = "run the tests as root, as CI does";
        crate::support::skip::missing("a tmpfs for the audit trail (mounting needs root)", how);
        return;
    };
    eprintln!("soak: {size:?}, {connections} connections");
    let work = Scratch::new("soak");
    let maxclients = (connections + 1000).to_string();
    // Both are restarted on their ports while thousands of connections come and go: ports
    // below the ephemeral range, which no connection can take meanwhile.
    let redis = RedisServer::start_outside_ephemeral(&["--maxclients", &maxclients]);
    let collector_port = free_port_outside_ephemeral();
    let collector =
        Rsyslog::start_on(&work.path().join("rsyslog"), Input::Tcp(None), collector_port);
    let audit_dir = disk.path().join("trail");
    let mut proxy = Subject::start(&Setup {
        upstream: redis.addr,
        collector: collector.addr,
        audit_dir: &audit_dir,
        work_dir: work.path(),
        max_clients: connections + 100,
        pool: size.pool,
    });
    let baseline = settled_rss(proxy.pid());
    let sampler = RssSampler::start(proxy.pid());

    // The clients, their connections spread over a ramp of up to 10 s.
    let now = Instant::now();
    let end = now + Duration::from_secs(size.seconds);
    let ramp = Duration::from_secs((size.seconds / 6).min(10));
    let think = Duration::from_millis(size.clients as u64 * 1000 / OPERATIONS_PER_SECOND)
        // A pause is at most twice this: under the idle timeout, so no worker is closed as idle.
        .min(subject::IDLE_TIMEOUT * 2 / 5);
    let plan = |i: usize, of: usize| Plan {
        proxy: proxy.addr,
        start: now + ramp * i as u32 / of as u32,
        end,
        think,
    };
    let mut tasks = JoinSet::new();
    for i in 0..size.clients {
        tasks.spawn(clients::worker(i, plan(i, size.clients), size.seed ^ i as u64));
    }
    for i in 0..subscribers {
        tasks.spawn(clients::subscriber(i, plan(i, subscribers), size.seed ^ (i as u64) << 32));
    }
    for i in 0..drippers {
        tasks.spawn(clients::dripper(i, plan(i, drippers), size.seed ^ (i as u64) << 40));
    }
    for i in 0..stallers {
        tasks.spawn(clients::staller(plan(i, stallers), size.seed ^ (i as u64) << 48));
    }

    // The faults, from after the ramp to the end, on a thread of their own.
    let mut targets = Targets { redis, collector, disk, proxy_pid: proxy.pid() };
    let every = Duration::from_secs((size.seconds / 12).clamp(4, 10));
    let fault_end = end.into_std();
    let injector = std::thread::spawn(move || {
        std::thread::sleep(ramp);
        let injected = faults::inject(&mut targets, every, fault_end);
        (targets, injected)
    });

    // Every client finishes by the end plus the wind-down.
    let mut tally = Tally::default();
    let deadline = end + WIND_DOWN;
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        tally.merge(joined.expect("a client task panicked"));
    }
    let unfinished = tasks.len();
    tasks.abort_all();
    let wound_down = Instant::now() - end;
    let (targets, injected) = tokio::task::spawn_blocking(move || injector.join())
        .await
        .unwrap()
        .expect("the fault injector panicked");

    // Memory: where it settles once the clients are gone, then after each churn wave (as many
    // connections again, opened and closed); the peak over all of it.
    let after = settled_rss(proxy.pid());
    let mut waves = Vec::new();
    for _ in 0..3 {
        let ponged = churn::wave(proxy.addr, connections).await;
        assert_eq!(ponged, connections, "a churn wave's connections did not all get a PONG");
        waves.push(settled_rss(proxy.pid()));
    }
    let samples = sampler.stop();
    let peak = samples.iter().copied().max().unwrap_or(0);
    // One sample in 20 (every 5 s), in MiB: how memory went during the run.
    let series: Vec<u64> = samples.iter().step_by(20).map(|kib| kib >> 10).collect();
    let exit = proxy.stop(Duration::from_secs(60));
    let stderr = proxy.stderr();

    let trail = invariants::Trail::read(&audit_dir);
    let report = format!(
        "soak: {size:?}: {} connections, {} replies from Redis, {} errors from the proxy, {} \
         closes, {} connect errors, {} pub/sub messages, {} stalled clients closed, {} commands; \
         faults {}; trail: {} files, {} lines, {} command records, {} policy reloads, \
         sink_failed {} / sink_recovered {}, {} sink_loss; proxy RSS baseline {baseline} KiB, \
         peak {peak} KiB, after {after} KiB, after each churn wave {waves:?} KiB, every 5 s \
         (MiB) {series:?}; clients done {wound_down:?} after the end",
        tally.connections,
        tally.upstream_replies,
        tally.proxy_errors,
        tally.closes,
        tally.connect_errors,
        tally.messages,
        tally.stalls_closed,
        tally.sent.len(),
        fault_counts(&injected),
        trail.files,
        trail.lines,
        trail.command_records,
        trail.reloads,
        trail.sink_failed,
        trail.sink_recovered,
        trail.sink_losses,
    );
    eprintln!("{report}");

    let mut failures = invariants::hangs(&tally, unfinished);
    failures.extend(invariants::memory(baseline, peak, &waves, connections));
    failures.extend(invariants::accounting(&tally.sent, &trail));
    if let Err(why) = invariants::verify(BINARY, &audit_dir) {
        failures.push(why);
    }
    let panics = invariants::panics(&stderr);
    if !panics.is_empty() {
        failures.push(format!("the proxy panicked: {panics:?}"));
    }
    if exit != Some(0) {
        failures.push(format!("the proxy exited with {exit:?} on SIGTERM"));
    }
    failures.extend(invariants::faults_took_effect(&injected, &trail, &tally));
    drop(targets);
    assert!(failures.is_empty(), "{report}\nbroken:\n- {}", failures.join("\n- "));
}

/// The proxy's RSS once it stops moving (three samples 500 ms apart within 1 %); the last
/// sample after 20 s otherwise.
fn settled_rss(pid: u32) -> u64 {
    let started = std::time::Instant::now();
    let mut last = Vec::new();
    loop {
        let rss = rss_kib(pid).expect("the proxy is running");
        last.push(rss);
        let recent = &last[last.len().saturating_sub(3)..];
        let (low, high) = (recent.iter().min().unwrap(), recent.iter().max().unwrap());
        let steady = recent.len() == 3 && high - low <= high / 100;
        if steady || started.elapsed() > Duration::from_secs(20) {
            return rss;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn fault_counts(injected: &[faults::Fault]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for fault in injected {
        *counts.entry(format!("{fault:?}")).or_insert(0) += 1;
    }
    format!("{counts:?}")
}
