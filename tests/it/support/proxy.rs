//! The proxy started in-process on 127.0.0.1:0, with a sink that keeps every record.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis_audit_proxy::app::App;
use redis_audit_proxy::config::{Config, Overrides};
use redis_audit_proxy::event::{CommandRecord, EventSink};

/// Keeps every record, in arrival order.
#[derive(Debug, Default)]
pub struct CollectSink {
    records: Mutex<Vec<CommandRecord>>,
}

impl EventSink for CollectSink {
    fn record(&self, record: CommandRecord) -> Option<u64> {
        self.records.lock().unwrap().push(record);
        None
    }
}

impl CollectSink {
    /// A copy of the records so far.
    pub fn records(&self) -> Vec<CommandRecord> {
        self.records.lock().unwrap().clone()
    }

    /// Waits until at least `count` records arrived (panics after 10 s).
    pub async fn wait_for(&self, count: usize) -> Vec<CommandRecord> {
        for _ in 0..1000 {
            let records = self.records();
            if records.len() >= count {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {count} records, got {}", self.records().len());
    }
}

/// A proxy running inside the test's runtime.
#[derive(Debug)]
pub struct TestProxy {
    pub addr: SocketAddr,
    pub sink: Arc<CollectSink>,
    app: Option<App>,
}

impl TestProxy {
    /// A proxy in front of `upstream` with the default configuration.
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::start_with(upstream, "").await
    }

    /// A proxy in front of `upstream` writing the real audit trail into `dir`; `toml` is extra
    /// configuration (e.g. `[audit]` keys). The returned sink can `sync()` to wait for the files.
    pub async fn start_audited(
        upstream: SocketAddr,
        dir: &std::path::Path,
        toml: &str,
    ) -> (Self, Arc<redis_audit_proxy::audit::AuditSink>) {
        let config = Self::config(upstream, toml, Some(dir));
        let audit = redis_audit_proxy::audit::AuditSink::open(
            &config.audit,
            &config.upstream.address,
            config.proxy.listen,
        )
        .expect("audit dir opens");
        let app = App::start(config, audit.clone()).await.expect("proxy starts");
        let proxy =
            Self { addr: app.local_addr, sink: Arc::new(CollectSink::default()), app: Some(app) };
        (proxy, audit)
    }

    fn config(upstream: SocketAddr, toml: &str, audit_dir: Option<&std::path::Path>) -> Config {
        Self::config_on(upstream, "127.0.0.1:0", toml, audit_dir)
    }

    fn config_on(
        upstream: SocketAddr,
        listen: &str,
        toml: &str,
        audit_dir: Option<&std::path::Path>,
    ) -> Config {
        let raw = toml::from_str(toml).expect("test config parses");
        let overrides = Overrides {
            listen: Some(listen.into()),
            admin: Some("127.0.0.1:0".into()),
            upstream: Some(upstream.to_string()),
            audit_dir: audit_dir.map(|d| d.display().to_string()),
            ..Overrides::default()
        };
        Config::validate(raw, "test", &overrides).expect("test config is valid")
    }

    /// A proxy in front of `upstream`; `toml` is extra configuration (e.g. `[proxy.limits]` keys).
    pub async fn start_with(upstream: SocketAddr, toml: &str) -> Self {
        let config = Self::config(upstream, toml, None);
        let sink = Arc::new(CollectSink::default());
        let app = App::start(config, sink.clone()).await.expect("proxy starts");
        Self { addr: app.local_addr, sink, app: Some(app) }
    }

    /// A proxy as the binary runs with `[audit] enabled = false`: its records go to the debug
    /// log only (`LogSink`), so none is built below debug level; `sink` collects nothing.
    pub async fn start_unaudited(upstream: SocketAddr) -> Self {
        let config = Self::config(upstream, "[audit]\nenabled = false\n", None);
        let app = App::start(config, Arc::new(redis_audit_proxy::event::LogSink))
            .await
            .expect("proxy starts");
        Self { addr: app.local_addr, sink: Arc::new(CollectSink::default()), app: Some(app) }
    }

    /// [`start_with`](Self::start_with), listening on `listen` (a port picked beforehand, when
    /// other proxies' configurations must name it).
    pub async fn start_on(upstream: SocketAddr, listen: SocketAddr, toml: &str) -> Self {
        let config = Self::config_on(upstream, &listen.to_string(), toml, None);
        let sink = Arc::new(CollectSink::default());
        let app = App::start(config, sink.clone()).await.expect("proxy starts");
        Self { addr: app.local_addr, sink, app: Some(app) }
    }

    /// The admin HTTP server's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.app.as_ref().expect("running").admin_local_addr
    }

    /// The TLS listener's address (`[tls]` configured).
    pub fn tls_addr(&self) -> SocketAddr {
        self.app.as_ref().expect("running").tls_local_addr.expect("a TLS listener")
    }

    /// Reloads the TLS certificates (as SIGHUP does).
    pub fn reload_tls(&self) -> Result<(), String> {
        self.app.as_ref().expect("running").reload_tls().map_err(|error| error.to_string())
    }

    /// Reloads the users file (as SIGHUP does).
    pub fn reload_policy(&self) -> Result<std::sync::Arc<str>, String> {
        self.app.as_ref().expect("running").reload_policy().map_err(|error| error.to_string())
    }

    /// The command table the proxy uses.
    pub fn commands(&self) -> std::sync::Arc<redis_audit_proxy::command::CommandTable> {
        self.app.as_ref().expect("running").commands()
    }

    /// Graceful shutdown (as on SIGTERM).
    pub async fn shutdown(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }
}
