//! A real `rsyslogd` as the collector of a syslog sink: its own config file on a free loopback
//! port (`imtcp`, plain or TLS through the `gtls` driver, or `imrelp`, plain or TLS), writing
//! what it receives to a file as
//! `PRI|MSGID|MSG` lines; stopped (SIGTERM, so it writes what it read) and started again on
//! the same port and file.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's package puts the daemon.
pub const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// Whether rsyslogd, its gtls driver and its RELP input are installed.
pub fn present() -> bool {
    let module = |name: &str| {
        ["/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/aarch64-linux-gnu/rsyslog"]
            .iter()
            .any(|dir| Path::new(dir).join(name).exists())
    };
    Path::new(RSYSLOGD).exists() && module("lmnsd_gtls.so") && module("imrelp.so")
}

/// [`crate::require!`] for rsyslogd: a sink test never passes without the real collector.
#[macro_export]
macro_rules! require_rsyslog {
    () => {
        $crate::require!(
            $crate::support::rsyslog::present(),
            "rsyslogd with its gtls driver and imrelp",
            "`make test` installs it (scripts/ensure-rsyslog.sh, or `apt-get install rsyslog \
             rsyslog-gnutls rsyslog-relp`)"
        );
    };
}

/// The TLS files of a collector: its CA, certificate and key.
#[derive(Debug, Clone)]
pub struct CollectorTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl CollectorTls {
    /// A CA in `dir` and a collector certificate for `localhost` from it.
    pub fn issue(dir: &Path) -> (crate::support::certs::Authority, Self) {
        let ca = crate::support::certs::Authority::new(dir, "collector");
        let server = ca.server(dir, "collector");
        let tls = Self {
            ca_file: ca.ca_file.clone(),
            cert_file: server.cert_file,
            key_file: server.key_file,
        };
        (ca, tls)
    }
}

/// A running rsyslogd (killed on drop).
#[derive(Debug)]
pub struct Rsyslog {
    pub addr: SocketAddr,
    /// What it received, one `PRI|MSGID|MSG` line per message.
    pub output: PathBuf,
    /// The same messages as a collector exports them: RFC 5424, one a line
    /// (`RSYSLOG_SyslogProtocol23Format`).
    pub export: PathBuf,
    config: PathBuf,
    pid_file: PathBuf,
    child: Option<Child>,
}

/// How a collector listens.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// `imtcp`, plain or TLS (RFC 6587 octet counting, RFC 5425).
    Tcp(Option<&'a CollectorTls>),
    /// `imrelp`, plain or TLS; over TLS it wants a client certificate from the CA.
    Relp(Option<&'a CollectorTls>),
}

impl Rsyslog {
    /// Starts one in `dir`, on a free port, listening with `imtcp`.
    pub fn start(dir: &Path, tls: Option<&CollectorTls>) -> Self {
        Self::start_input(dir, Input::Tcp(tls))
    }

    /// Starts one in `dir`, on a free port.
    pub fn start_input(dir: &Path, input: Input<'_>) -> Self {
        Self::start_on(dir, input, crate::support::redis::free_port())
    }

    /// [`start_input`](Self::start_input) on `port`.
    pub fn start_on(dir: &Path, input: Input<'_>, port: u16) -> Self {
        assert!(present(), "rsyslogd is not installed: the test must `require_rsyslog!()` first");
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let output = dir.join("received.log");
        let export = dir.join("export.log");
        let listen = format!("address=\"127.0.0.1\" port=\"{port}\"");
        let input = match input {
            Input::Tcp(Some(tls)) => format!(
                "global(DefaultNetstreamDriverCAFile=\"{}\" DefaultNetstreamDriverCertFile=\"{}\" \
                 DefaultNetstreamDriverKeyFile=\"{}\")\n\
                 module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" \
                 StreamDriver.AuthMode=\"anon\")\n\
                 input(type=\"imtcp\" {listen})\n",
                tls.ca_file.display(),
                tls.cert_file.display(),
                tls.key_file.display()
            ),
            Input::Tcp(None) => format!("module(load=\"imtcp\")\ninput(type=\"imtcp\" {listen})\n"),
            Input::Relp(Some(tls)) => format!(
                "module(load=\"imrelp\")\n\
                 input(type=\"imrelp\" {listen} tls=\"on\" tls.cacert=\"{}\" \
                 tls.mycert=\"{}\" tls.myprivkey=\"{}\" tls.authmode=\"certvalid\")\n",
                tls.ca_file.display(),
                tls.cert_file.display(),
                tls.key_file.display()
            ),
            Input::Relp(None) => {
                format!("module(load=\"imrelp\")\ninput(type=\"imrelp\" {listen})\n")
            }
        };
        // The main queue is direct: what rsyslogd read is written before it reads more, so a
        // stopped collector has lost only what was still in the sockets, never a queue.
        let config = format!(
            "global(workDirectory=\"{work}\" maxMessageSize=\"64k\")\n\
             main_queue(queue.type=\"Direct\")\n\
             {input}\
             template(name=\"audit\" type=\"string\" string=\"%pri%|%msgid%|%msg%\\n\")\n\
             action(type=\"omfile\" file=\"{output}\" template=\"audit\" flushOnTXEnd=\"on\")\n\
             action(type=\"omfile\" file=\"{export}\" template=\"RSYSLOG_SyslogProtocol23Format\" \
             flushOnTXEnd=\"on\")\n",
            work = dir.join("work").display(),
            output = output.display(),
            export = export.display(),
        );
        let config_path = dir.join("rsyslog.conf");
        std::fs::write(&config_path, config).unwrap();
        let mut this = Self {
            addr,
            output,
            export,
            config: config_path,
            pid_file: dir.join("rsyslogd.pid"),
            child: None,
        };
        this.restart();
        this
    }

    /// Starts the daemon (again) and waits until it accepts connections.
    pub fn restart(&mut self) {
        let child = Command::new(RSYSLOGD)
            .args(["-n", "-f"])
            .arg(&self.config)
            .arg("-i")
            .arg(&self.pid_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log_file())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {RSYSLOGD}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr).is_err() {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().unwrap());
            assert!(
                exited.is_none(),
                "rsyslogd exited: {exited:?} (config {})",
                self.config.display()
            );
            assert!(Instant::now() < deadline, "rsyslogd never listened on {}", self.addr);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// rsyslogd's own messages (appended across restarts), for a failing test to show.
    fn log_file(&self) -> Stdio {
        let path = self.config.with_file_name("rsyslogd.log");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_or_else(|_| Stdio::null(), Stdio::from)
    }

    /// The end of rsyslogd's own messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.config.with_file_name("rsyslogd.log"));
        let text = text.unwrap_or_default();
        text.lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops it with SIGTERM (it writes what it read) and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }

    /// The messages received so far: `(pri, msgid, msg)`.
    pub fn received(&self) -> Vec<(u32, String, String)> {
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        text.lines()
            .map(|line| {
                let mut parts = line.splitn(3, '|');
                let pri = parts.next().unwrap().parse().unwrap_or_else(|_| panic!("{line}"));
                let msgid = parts.next().unwrap_or_default().to_owned();
                (pri, msgid, parts.next().unwrap_or_default().trim_start().to_owned())
            })
            .collect()
    }

    /// Waits until it received at least `count` messages and nothing more came for 300 ms.
    pub fn wait_for(&self, count: usize) -> Vec<(u32, String, String)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = 0;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.received().len();
            if now >= count && now == seen {
                return self.received();
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd received {now} messages, expected {count}; its log ends:\n{}",
                self.log_tail()
            );
            seen = now;
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
