//! A real `redis-server` on a free loopback port, killed on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True when `redis-server` is on PATH.
pub fn available() -> bool {
    Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok()
}

/// Which server: Debian's `redis-server` (7.0), or one built from `../shared/upstreams` by
/// `scripts/ensure-upstreams.sh` (`make test` runs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// `redis-server` on PATH (Debian's 7.0.15).
    Debian,
    /// Redis 7.2.6.
    Redis72,
    /// Valkey 8.0.1.
    Valkey80,
}

impl Server {
    /// Whether its binary is there.
    pub fn available(self) -> bool {
        match self {
            Self::Debian => available(),
            _ => self.path().is_file(),
        }
    }

    /// The server binary; a built one that is missing fails the test, saying how to build it.
    pub fn binary(self) -> PathBuf {
        if self == Self::Debian {
            return PathBuf::from("redis-server");
        }
        let path = self.path();
        assert!(
            path.is_file(),
            "{} is not built: `make test` builds it (or `bash scripts/ensure-upstreams.sh`)",
            path.display()
        );
        path
    }

    /// Where the built binary is (Debian's: its name, found on PATH).
    fn path(self) -> PathBuf {
        let (name, binary) = match self {
            Self::Debian => return PathBuf::from("redis-server"),
            Self::Redis72 => ("redis-7.2.6", "redis-server"),
            Self::Valkey80 => ("valkey-8.0.1", "valkey-server"),
        };
        let cache = std::env::var_os("UPSTREAMS_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/redis-audit-proxy-upstreams")
        });
        cache.join(name).join("src").join(binary)
    }
}

/// Held by each test that builds a Redis Cluster: one cluster at a time (each node also binds
/// its bus port, port + 10000, which no free-port check reserved).
pub static CLUSTER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// For fixtures: fails when redis-server is missing (the test itself checks first with
/// `require_redis!`, which may skip it).
pub fn assert_available() {
    assert!(available(), "redis-server is not installed: the test must `require_redis!()` first");
}

/// A running redis-server.
#[derive(Debug)]
pub struct RedisServer {
    pub addr: SocketAddr,
    child: Child,
    extra: Vec<String>,
    server: Server,
}

impl RedisServer {
    /// Starts a server with no persistence, plus `extra` config arguments (`["--requirepass", "pw"]`).
    pub fn start(extra: &[&str]) -> Self {
        Self::start_server(Server::Debian, extra)
    }

    /// [`start`](Self::start) for `server`. A port another process took between our check and
    /// the server's bind (a parallel test, a cluster node's bus port) makes the server exit at
    /// once: then it starts again on another port.
    pub fn start_server(server: Server, extra: &[&str]) -> Self {
        Self::start_picking(server, extra, free_port)
    }

    /// [`start`](Self::start) on a port below the ephemeral range
    /// ([`free_port_outside_ephemeral`]), for a server restarted while thousands of
    /// connections come and go: none of them can take its port as a local port meanwhile (a
    /// connect to the port while nothing listens could even connect to itself).
    pub fn start_outside_ephemeral(extra: &[&str]) -> Self {
        Self::start_picking(Server::Debian, extra, free_port_outside_ephemeral)
    }

    fn start_picking(server: Server, extra: &[&str], pick: fn() -> u16) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..5 {
            let port = pick();
            // What an earlier server on this port left there is not this one's.
            let _ = std::fs::remove_dir_all(work_dir(port));
            let child = spawn(server, port, &extra);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut started = Self { addr, child, extra: extra.clone(), server };
            if started.wait_ready() {
                return started;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Waits until the server answers on its port; false if it exited first (its port was
    /// taken).
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect(self.addr).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on {} did not start", self.addr);
    }

    /// The server process's id (for signals such as SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port after [`kill`](Self::kill).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.child = spawn(self.server, self.addr.port(), &self.extra);
            std::thread::sleep(Duration::from_millis(50));
            if let Ok(None) = self.child.try_wait() {
                break;
            }
            assert!(Instant::now() < deadline, "redis-server did not restart");
        }
        assert!(self.wait_ready(), "redis-server did not restart on {}", self.addr);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The working directory of the server on `port` (kept across [`RedisServer::restart`]).
fn work_dir(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("rap-redis-{port}"))
}

fn spawn(server: Server, port: u16, extra: &[String]) -> Child {
    // Its own working directory: a replica's full sync writes dump.rdb there, and a server
    // started in the same directory later would load it (the repository root, otherwise).
    let dir = work_dir(port);
    std::fs::create_dir_all(&dir).expect("a directory for redis-server");
    Command::new(server.binary())
        .args(["--dir", dir.to_str().expect("a UTF-8 temporary directory")])
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--daemonize", "no", "--logfile", "", "--loglevel", "warning"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A loopback port nobody uses right now, below the ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768–60999 by default), where the kernel never picks a
/// local port for a connect: a server restarted on it finds it free however many connections
/// were made meanwhile.
pub fn free_port_outside_ephemeral() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range");
    let low: u16 =
        range.ok().and_then(|r| r.split_whitespace().next()?.parse().ok()).unwrap_or(32768);
    assert!(low > 2048, "the ephemeral range starts at {low}: no room below it");
    let span = (low - 1024).min(10_000);
    let clock = std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().subsec_nanos();
    let start = (clock ^ std::process::id()) as u16 % span;
    (0..span)
        .map(|i| low - span + (start + i) % span)
        .find(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// Three tests running `$run(server)`, one per server: Debian's, Redis 7.2, Valkey 8.
#[macro_export]
macro_rules! on_every_server {
    ($debian:ident, $redis72:ident, $valkey80:ident => $run:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $debian() {
            $run($crate::support::redis::Server::Debian).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $redis72() {
            $run($crate::support::redis::Server::Redis72).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $valkey80() {
            $run($crate::support::redis::Server::Valkey80).await;
        }
    };
}
