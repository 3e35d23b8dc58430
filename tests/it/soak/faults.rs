//! The fault injector: on a fixed schedule, one fault at a time — Redis killed and started
//! again, Redis frozen (SIGSTOP/SIGCONT) or paused (`CLIENT PAUSE`), the audit disk full, the
//! syslog collector down, a SIGHUP reload — until the run's end.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::client::encode_command;
use crate::support::process::signal;
use crate::support::rsyslog::Rsyslog;
use crate::support::tmpfs::Tmpfs;
use crate::support::RedisServer;

/// The faults, in the order the schedule cycles through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL, then a new redis-server on the same port (no persistence: the data is gone).
    RestartRedis,
    /// SIGSTOP, 1.5 s, SIGCONT: Redis neither reads nor answers.
    FreezeRedis,
    /// `CLIENT PAUSE 1000 ALL` from a connection of its own.
    PauseRedis,
    /// The audit tmpfs has no free block for 2 s.
    FillAuditDisk,
    /// The syslog collector stopped for 2 s, then started again on the same port.
    StopCollector,
    /// SIGHUP to the proxy: the users file is read again and the audit file rotated.
    Reload,
}

const CYCLE: [Fault; 6] = [
    Fault::Reload,
    Fault::FreezeRedis,
    Fault::FillAuditDisk,
    Fault::RestartRedis,
    Fault::StopCollector,
    Fault::PauseRedis,
];

/// What the injector acts on.
#[derive(Debug)]
pub struct Targets {
    pub redis: RedisServer,
    pub collector: Rsyslog,
    pub disk: AuditDisk,
    pub proxy_pid: u32,
}

/// Injects one fault every `every`, from now until `until`; returns the faults injected, in
/// order. Runs on a thread of its own (each fault blocks while it lasts).
pub fn inject(targets: &mut Targets, every: Duration, until: Instant) -> Vec<Fault> {
    let mut injected = Vec::new();
    let mut next = Instant::now() + every;
    for fault in CYCLE.iter().copied().cycle() {
        // A fault still lasting at the end would overlap the clients' wind-down.
        if next + Duration::from_secs(3) >= until {
            break;
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        apply(targets, fault);
        injected.push(fault);
        next += every;
    }
    injected
}

fn apply(targets: &mut Targets, fault: Fault) {
    match fault {
        Fault::RestartRedis => targets.redis.restart(),
        Fault::FreezeRedis => {
            signal(targets.redis.pid(), "STOP");
            std::thread::sleep(Duration::from_millis(1500));
            signal(targets.redis.pid(), "CONT");
        }
        Fault::PauseRedis => {
            let mut admin = TcpStream::connect(targets.redis.addr).expect("connect to Redis");
            admin.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            admin.write_all(&encode_command(&[b"CLIENT", b"PAUSE", b"1000", b"ALL"])).unwrap();
            let mut reply = [0u8; 5];
            admin.read_exact(&mut reply).expect("CLIENT PAUSE's reply");
            assert_eq!(&reply, b"+OK\r\n", "CLIENT PAUSE");
        }
        Fault::FillAuditDisk => {
            targets.disk.fill();
            std::thread::sleep(Duration::from_secs(2));
            targets.disk.free();
        }
        Fault::StopCollector => {
            targets.collector.stop();
            std::thread::sleep(Duration::from_secs(2));
            targets.collector.restart();
        }
        Fault::Reload => signal(targets.proxy_pid, "HUP"),
    }
}

/// A tmpfs for the audit trail. "Full" is a resize to the size already used: the disk is full
/// at once, without writing (and holding in RAM) a filler file.
#[derive(Debug)]
pub struct AuditDisk {
    disk: Tmpfs,
    size: u64,
}

impl AuditDisk {
    /// Mounts a tmpfs of `size` bytes; `None` when mounting is not allowed (not root).
    pub fn mount(size: u64) -> Option<Self> {
        Some(Self { disk: Tmpfs::mount(size)?, size })
    }

    pub fn path(&self) -> &Path {
        self.disk.path()
    }

    /// No free block left: the size shrinks to what is used (plus a page, since the writer
    /// may grow the file meanwhile: tmpfs refuses a size under its use, so this retries).
    pub fn fill(&self) {
        for attempt in 1..=20u64 {
            if self.disk.resize(self.disk.used() + 4096 * attempt) {
                return;
            }
        }
        panic!("could not shrink the audit tmpfs to its use");
    }

    /// The whole size back.
    pub fn free(&self) {
        assert!(self.disk.resize(self.size), "could not grow the audit tmpfs back");
    }
}
