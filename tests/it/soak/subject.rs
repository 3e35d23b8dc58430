//! The proxy under soak: the real binary (SIGHUP reloads need a process of its own), its
//! configuration, its stderr log in a file, and its resident memory sampled while it runs.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::process::rss_kib;
use crate::support::redis::free_port;
use crate::support::KillOnDrop;

const BINARY: &str = env!("CARGO_BIN_EXE_redis-audit-proxy");

/// The proxy's idle timeout (`proxy.timeout`, seconds): a stalled client is closed after it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the proxy is started with.
#[derive(Debug)]
pub struct Setup<'a> {
    pub upstream: SocketAddr,
    pub collector: SocketAddr,
    pub audit_dir: &'a Path,
    /// Where the config, the users file and the stderr log go.
    pub work_dir: &'a Path,
    pub max_clients: usize,
    /// `upstream.pool`: `"dedicated"` or `"shared"`.
    pub pool: &'a str,
}

/// The running binary.
#[derive(Debug)]
pub struct Subject {
    pub addr: SocketAddr,
    pub stderr_log: PathBuf,
    child: KillOnDrop,
}

impl Subject {
    /// Writes the configuration and starts the binary; waits until it accepts connections.
    pub fn start(setup: &Setup<'_>) -> Self {
        std::fs::create_dir_all(setup.work_dir).unwrap();
        // Every client's user may run everything: the users file is there so that SIGHUP has a
        // policy to reload (each reload is a `policy_reload` record the soak counts).
        let users = setup.work_dir.join("users.acl");
        std::fs::write(&users, "user default on nopass ~* &* +@all\n").unwrap();
        // `write` durability: a reply leaves only once its record is written, so no answered
        // command may be missing from the trail. `block`: a full queue holds clients back
        // instead of dropping records. `reject`: while the disk is full new commands are
        // refused (and the client gets an error), never run unrecorded.
        let config = format!(
            "[proxy]\nmax_clients = {max_clients}\ntimeout = {timeout}\n\
             [upstream]\nreconnect_interval_ms = 500\npool = \"{pool}\"\n\
             [audit]\ndurability = \"write\"\non_full = \"block\"\non_error = \"reject\"\n\
             queue_max_bytes = 16777216\nretain_files = 0\n\
             [[audit.sinks]]\ntype = \"syslog\"\nname = \"collector\"\naddress = \"{collector}\"\n\
             transport = \"tcp\"\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n",
            max_clients = setup.max_clients,
            timeout = IDLE_TIMEOUT.as_secs(),
            collector = setup.collector,
            pool = setup.pool,
        );
        let config_path = setup.work_dir.join("proxy.toml");
        std::fs::write(&config_path, config).unwrap();
        let stderr_log = setup.work_dir.join("proxy.stderr.log");
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(BINARY)
            .arg("--config")
            .arg(&config_path)
            .arg("--users")
            .arg(&users)
            .arg("--audit-dir")
            .arg(setup.audit_dir)
            .args(["--listen", &listen.to_string(), "--admin", "127.0.0.1:0"])
            .args(["--upstream", &setup.upstream.to_string(), "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .expect("start the proxy binary");
        let mut child = KillOnDrop(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(listen).is_err() {
            let exited = child.0.try_wait().unwrap();
            assert!(exited.is_none(), "the proxy exited early ({exited:?}): see {stderr_log:?}");
            assert!(Instant::now() < deadline, "the proxy never listened on {listen}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { addr: listen, stderr_log, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// SIGTERM, then waits (at most `grace`) for a clean exit; returns its status code.
    pub fn stop(&mut self, grace: Duration) -> Option<i32> {
        crate::support::process::signal(self.pid(), "TERM");
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not exit within {grace:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it logged on stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

/// The proxy's RSS sampled every 250 ms on a thread of its own, until [`stop`](Self::stop).
#[derive(Debug)]
pub struct RssSampler {
    running: Arc<AtomicBool>,
    thread: JoinHandle<Vec<u64>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let flag = running.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while flag.load(Ordering::Relaxed) {
                samples.extend(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(250));
            }
            samples
        });
        Self { running, thread }
    }

    /// Stops sampling; returns the samples in KiB.
    pub fn stop(self) -> Vec<u64> {
        self.running.store(false, Ordering::Relaxed);
        self.thread.join().expect("the RSS sampler")
    }
}
