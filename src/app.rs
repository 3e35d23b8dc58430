//! Wiring: binds the listener, builds the shared context, runs until asked to stop, then
//! drains in-flight commands within the grace period.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::command::table::EMBEDDED_VERSION;
use crate::command::CommandTable;
use crate::config::sentinel::SentinelConfig;
use crate::config::{Config, Runtime, Secret};
use crate::event::EventSink;
use crate::event::SystemEvent;
use crate::proxy::cores::Cores;
use crate::proxy::{listener, upstream, ProxyContext};

/// A running proxy.
#[derive(Debug)]
pub struct App {
    /// Address the client listener is bound to (useful when configured with port 0).
    pub local_addr: SocketAddr,
    /// Address of the admin HTTP server.
    pub admin_local_addr: SocketAddr,
    admin_task: tokio::task::JoinHandle<()>,
    /// Address of the TLS listener, when `[tls]` is configured.
    pub tls_local_addr: Option<SocketAddr>,
    tls: Option<listener::TlsListener>,
    tls_accept_task: Option<tokio::task::JoinHandle<()>>,
    ctx: Arc<ProxyContext>,
    tracker: TaskTracker,
    drain: CancellationToken,
    hard_stop: CancellationToken,
    /// The plain-TCP accept loop, or one per thread with `proxy.runtime = "per_core"`.
    accept_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The per-core threads, with `proxy.runtime = "per_core"`.
    cores: Option<Cores>,
}

/// The plain-TCP client listener(s), bound before anything else starts.
enum ClientListeners {
    /// One listener, its connections spawned on the runtime `App::start` runs on.
    Shared(TcpListener),
    /// One listener per thread (`proxy.runtime = "per_core"`).
    PerCore(Cores),
}

impl App {
    /// Binds the listener and starts accepting clients.
    pub async fn start(config: Config, sink: Arc<dyn EventSink>) -> std::io::Result<Self> {
        let (listeners, local_addr) = match config.proxy.runtime {
            Runtime::MultiThread => {
                let listener = TcpListener::bind(config.proxy.listen).await?;
                let address = listener.local_addr()?;
                (ClientListeners::Shared(listener), address)
            }
            Runtime::PerCore => {
                let cores = Cores::start(config.proxy.listen, config.proxy.threads)?;
                let address = cores.local_addr();
                (ClientListeners::PerCore(cores), address)
            }
        };
        let ctx = Arc::new(ProxyContext::new(Arc::new(config), sink));
        let tracker = TaskTracker::new();
        let drain = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        if let Some(sentinel) = &ctx.config.upstream.sentinel {
            follow_sentinels(&ctx, sentinel, &tracker, &drain).await;
        }
        probe_upstream(&ctx).await;
        let live = load_command_table(&ctx, None).await;
        if let Some(file) = &ctx.config.auth.users_file {
            if ctx.policy().is_none() {
                // The file names what neither the embedded table nor the upstream's knows:
                // no policy would mean no checks, so the proxy does not start.
                let error = match crate::proxy::compile(&ctx.config, &file.text, &ctx.commands()) {
                    Err(error) => error.to_string(),
                    Ok(_) => "does not compile".to_owned(),
                };
                return Err(std::io::Error::other(format!(
                    "auth.users_file {}: {error} (command table: {:?})",
                    file.path.display(),
                    ctx.commands().source
                )));
            }
        }
        if ctx.config.auth.mode == crate::config::AuthMode::Proxy && ctx.policy().is_some() {
            mirror_users(&ctx).await?;
            tracker.spawn(keep_mirrors(Arc::clone(&ctx), drain.clone()));
        }
        tracker.spawn(keep_command_table(Arc::clone(&ctx), drain.clone(), live));
        let (tls, tls_local_addr, tls_accept_task) = match &ctx.config.tls {
            None => (None, None, None),
            Some(config) => {
                let tls = listener::TlsListener::new(config)
                    .map_err(|error| std::io::Error::other(error.to_string()))?;
                let tls_listener = TcpListener::bind(config.listen).await.map_err(|error| {
                    std::io::Error::new(
                        error.kind(),
                        format!("tls.listen {}: {error}", config.listen),
                    )
                })?;
                let address = tls_listener.local_addr()?;
                let task = tokio::spawn(listener::accept_loop(
                    tls_listener,
                    Some(tls.clone()),
                    Arc::clone(&ctx),
                    tracker.clone(),
                    drain.clone(),
                    hard_stop.clone(),
                ));
                tracing::info!(listen = %address, client_auth = config.client_auth.as_str(), "TLS listener started");
                (Some(tls), Some(address), Some(task))
            }
        };
        let admin_address = ctx.config.admin.listen;
        let admin_listener = TcpListener::bind(admin_address).await.map_err(|error| {
            std::io::Error::new(error.kind(), format!("admin.listen {admin_address}: {error}"))
        })?;
        let admin_local_addr = admin_listener.local_addr()?;
        let admin_state = Arc::new(crate::admin::AdminState {
            ctx: Arc::clone(&ctx),
            reload: admin_reloader(Arc::clone(&ctx), tls.clone()),
        });
        let admin_task = tokio::spawn(crate::admin::serve(
            admin_listener,
            admin_state,
            tracker.clone(),
            drain.clone(),
        ));
        tracing::info!(listen = %admin_local_addr, "admin plane started");
        let (accept_tasks, cores) = match listeners {
            ClientListeners::Shared(listener) => {
                let task = tokio::spawn(listener::accept_loop(
                    listener,
                    None,
                    Arc::clone(&ctx),
                    tracker.clone(),
                    drain.clone(),
                    hard_stop.clone(),
                ));
                (vec![task], None)
            }
            ClientListeners::PerCore(mut cores) => {
                (cores.accept(&ctx, &tracker, &drain, &hard_stop), Some(cores))
            }
        };
        if let Some(policy) = ctx.policy() {
            let detail = serde_json::json!({
                "policy_version": &*policy.version,
                "users": policy.users().len(),
                "mode": ctx.config.acl.mode.as_str(),
            });
            let time = std::time::SystemTime::now();
            ctx.sink.system(crate::event::SystemEvent { action: "policy_load", time, detail });
            tracing::info!(policy_version = %policy.version, users = policy.users().len(), "ACL policy loaded");
        }
        tracing::info!(
            listen = %local_addr,
            upstream = %ctx.config.upstream.address,
            runtime = ctx.config.proxy.runtime.as_str(),
            threads = ctx.config.proxy.threads,
            "proxy started"
        );
        Ok(Self {
            local_addr,
            admin_local_addr,
            admin_task,
            tls_local_addr,
            tls,
            tls_accept_task,
            ctx,
            tracker,
            drain,
            hard_stop,
            accept_tasks,
            cores,
        })
    }

    /// Reads the users file again (SIGHUP): the new policy applies to every connection's next
    /// command; on error the policy in force stays. Returns the new policy version.
    pub fn reload_policy(&self) -> Result<Arc<str>, crate::proxy::PolicyError> {
        self.ctx.reload_policy()
    }

    /// Reads the TLS certificates and keys again (SIGHUP), both sides: new handshakes use
    /// them, open connections keep theirs. On an error the ones in force stay; either way a
    /// system event says what happened.
    pub fn reload_tls(&self) -> Result<(), TlsReloadFailed> {
        reload_tls(&self.ctx, self.tls.as_ref())
    }

    /// The policy version in force, if a users file is configured.
    pub fn policy_version(&self) -> Option<Arc<str>> {
        self.ctx.policy().map(|policy| Arc::clone(&policy.version))
    }

    /// The command table new connections use.
    pub fn commands(&self) -> Arc<CommandTable> {
        self.ctx.commands()
    }

    /// Stops accepting, lets in-flight commands finish within the grace period, then closes
    /// what is left. Returns once every connection task has ended.
    pub async fn shutdown(self) {
        let grace = self.ctx.config.proxy.shutdown_grace;
        self.drain.cancel();
        for task in self.accept_tasks {
            let _ = task.await;
        }
        if let Some(task) = self.tls_accept_task {
            let _ = task.await;
        }
        let _ = self.admin_task.await;
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!(
                connections = self.tracker.len(),
                grace_ms = grace.as_millis() as u64,
                "grace period over: closing connections with commands in flight"
            );
            self.hard_stop.cancel();
            self.tracker.wait().await;
        }
        if let Some(cores) = self.cores {
            cores.stop().await;
        }
        self.ctx.sink.flush();
        tracing::info!("proxy stopped");
    }
}

/// The TLS reload failed on one side or both (`tls: ...; upstream.tls: ...`); the
/// certificates in force stay.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct TlsReloadFailed(Vec<String>);

fn reload_tls(
    ctx: &ProxyContext,
    tls: Option<&listener::TlsListener>,
) -> Result<(), TlsReloadFailed> {
    let mut errors = Vec::new();
    if let Some(tls) = tls {
        if let Err(error) = tls.reload() {
            errors.push(format!("tls: {error}"));
        }
    }
    if ctx.config.upstream.tls.is_some() {
        if let Err(error) = ctx.reload_upstream_tls() {
            errors.push(format!("upstream.tls: {error}"));
        }
    }
    if tls.is_none() && ctx.config.upstream.tls.is_none() {
        return Ok(());
    }
    let time = std::time::SystemTime::now();
    let event = if errors.is_empty() {
        tracing::info!("TLS certificates reloaded");
        SystemEvent { action: "tls_reload", time, detail: serde_json::json!({}) }
    } else {
        tracing::warn!(errors = %errors.join("; "), "TLS reload failed: the certificates in force stay");
        SystemEvent {
            action: "tls_reload_failed",
            time,
            detail: serde_json::json!({ "error": errors.join("; ") }),
        }
    };
    ctx.sink.system(event);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(TlsReloadFailed(errors))
    }
}

/// `upstream.sentinels`: connects to the primary the sentinels name (to `upstream.address`
/// until one does), and follows it from then on.
async fn follow_sentinels(
    ctx: &Arc<ProxyContext>,
    sentinel: &SentinelConfig,
    tracker: &TaskTracker,
    drain: &CancellationToken,
) {
    match crate::proxy::sentinel::ask_primary(sentinel).await {
        Ok(primary) => {
            tracing::info!(%primary, master = %sentinel.master_name, "Sentinel named the primary");
            ctx.target.switch(&primary);
        }
        Err(error) => tracing::warn!(
            %error,
            address = %ctx.config.upstream.address,
            "no sentinel named the primary yet: upstream.address is used until one does"
        ),
    }
    tracker.spawn(crate::proxy::sentinel::follow(
        sentinel.clone(),
        Arc::clone(&ctx.target),
        Arc::clone(&ctx.sink),
        ctx.config.upstream.reconnect_interval,
        drain.clone(),
    ));
}

/// `POST /api/v1/reload`: the users file (when configured) and the TLS certificates.
fn admin_reloader(
    ctx: Arc<ProxyContext>,
    tls: Option<listener::TlsListener>,
) -> crate::admin::Reloader {
    Arc::new(move || {
        let mut ok = true;
        let policy = if ctx.config.auth.users_file.is_some() {
            match ctx.reload_policy() {
                Ok(version) => serde_json::json!({"ok": true, "policy_version": &*version}),
                Err(error) => {
                    ok = false;
                    serde_json::json!({"ok": false, "error": error.to_string()})
                }
            }
        } else {
            serde_json::json!({"ok": true, "configured": false})
        };
        let tls = match reload_tls(&ctx, tls.as_ref()) {
            Ok(()) => serde_json::json!({"ok": true}),
            Err(error) => {
                ok = false;
                serde_json::json!({"ok": false, "error": error.to_string()})
            }
        };
        let detail = serde_json::json!({"policy": policy, "tls": tls});
        if ok {
            Ok(detail)
        } else {
            Err(detail)
        }
    })
}

/// How often the live command table is retried while the embedded one serves, and the least
/// time between two reads.
const TABLE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the live command table, logged in as the configured table login (or `login`); keeps
/// the table in use when it cannot. Returns true once the live table is in use.
async fn load_command_table(ctx: &ProxyContext, login: Option<(String, Secret)>) -> bool {
    let login = match &login {
        Some((user, password)) => Some((user.as_str(), &password.0[..])),
        None => ctx.config.table_login(),
    };
    match upstream::fetch_command_table(&ctx.target.address(), &ctx.config.upstream, login).await {
        Ok(live) => {
            let differences = live.differences(&CommandTable::embedded());
            if !differences.is_empty() {
                let shown: Vec<&str> = differences.iter().take(10).map(String::as_str).collect();
                tracing::warn!(
                    count = differences.len(),
                    commands = %shown.join(" "),
                    "the upstream's command table differs from the embedded one (Redis {}); \
                     using the upstream's",
                    EMBEDDED_VERSION.trim()
                );
            }
            tracing::info!(commands = live.len(), "command table read from the upstream");
            ctx.set_commands(live);
            true
        }
        Err(error) => {
            let live = matches!(ctx.commands().source, crate::command::TableSource::Live(_));
            if !live {
                tracing::warn!(
                    %error,
                    "using the command table embedded in the binary (Redis {})",
                    EMBEDDED_VERSION.trim()
                );
            } else {
                tracing::warn!(%error, "reading the command table again failed; the one in use stays");
            }
            live
        }
    }
}

/// Keeps the command table current: retries while the embedded one serves (the upstream
/// was unreachable, or refused an unauthenticated COMMAND until a client's login is known),
/// and reads it again when asked (MODULE LOAD through the proxy), at most every 5 s.
async fn keep_command_table(ctx: Arc<ProxyContext>, drain: CancellationToken, mut live: bool) {
    loop {
        let retry = async {
            if live {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(TABLE_RETRY).await;
        };
        tokio::select! {
            () = retry => {}
            () = ctx.table_wanted.notified() => {}
            () = drain.cancelled() => return,
        }
        let hint = ctx.take_table_login_hint();
        live = load_command_table(&ctx, hint).await;
        tokio::select! {
            () = tokio::time::sleep(TABLE_RETRY) => {}
            () = drain.cancelled() => return,
        }
    }
}

/// Provisions the mirrored users for the policy in force (`auth.mirror_users`), or says why
/// they are not used. `mirror_users = "on"` makes a failure fatal.
async fn mirror_users(ctx: &ProxyContext) -> std::io::Result<()> {
    use crate::config::MirrorUsers;
    let Some(policy) = ctx.policy() else { return Ok(()) };
    if ctx.config.auth.mirror_users == MirrorUsers::Off {
        ctx.set_mirrors(None);
        return Ok(());
    }
    let key = crate::proxy::mirror::derivation_key(&ctx.config);
    let time = std::time::SystemTime::now();
    match crate::proxy::mirror::provision(&ctx.config, &ctx.target.address(), &key, &policy).await {
        Ok(mirrors) => {
            tracing::info!(users = policy.users().len(), prefix = %ctx.config.auth.mirror_prefix, "mirrored users provisioned");
            ctx.set_mirrors(Some(mirrors));
            let detail = serde_json::json!({
                "policy_version": &*policy.version,
                "users": policy.users().len(),
                "prefix": &ctx.config.auth.mirror_prefix,
            });
            ctx.sink.system(SystemEvent { action: "mirror_users", time, detail });
            Ok(())
        }
        Err(error) => {
            ctx.set_mirrors(None);
            let detail = serde_json::json!({
                "policy_version": &*policy.version,
                "error": error.to_string(),
            });
            ctx.sink.system(SystemEvent { action: "mirror_users_failed", time, detail });
            if ctx.config.auth.mirror_users == MirrorUsers::On {
                return Err(std::io::Error::other(format!("auth.mirror_users = \"on\": {error}")));
            }
            tracing::warn!(%error, "mirrored users unavailable: EVAL, FCALL and SORT BY/GET are refused to users narrower than +@all ~* &*");
            Ok(())
        }
    }
}

/// Provisions the mirrored users again at every policy swap.
async fn keep_mirrors(ctx: Arc<ProxyContext>, drain: CancellationToken) {
    let mut watch = ctx.watch_policy();
    watch.mark_unchanged();
    loop {
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { return },
            () = drain.cancelled() => return,
        }
        let _ = mirror_users(&ctx).await;
    }
}

/// Connects once at start-up to report whether Redis is reachable and whether it asks new
/// connections to authenticate (which turns on Redis's unauthenticated request limits).
async fn probe_upstream(ctx: &ProxyContext) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = ctx.target.address();
    let tls = ctx.upstream_tls();
    let mut stream = match upstream::connect(&address, &ctx.config.upstream, tls.as_deref()).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "upstream not reachable at start-up; clients get errors until it is");
            return;
        }
    };
    let mut reply = [0u8; 64];
    let probe = async {
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        stream.read(&mut reply).await
    };
    match tokio::time::timeout(ctx.config.upstream.connect_timeout, probe).await {
        Ok(Ok(n)) => {
            let required = reply[..n].starts_with(b"-NOAUTH");
            ctx.set_auth_required(required);
            tracing::info!(auth_required = required, "upstream reachable");
        }
        _ => tracing::warn!("upstream did not answer PING at start-up"),
    }
}
