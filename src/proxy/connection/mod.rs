//! One client connection: its state, its life (open, serve, reconnect, drain, close) and the
//! upstream logins; the socket pump, request intake, reply framing and pairing, completion
//! and event emission live in the submodules.
//!
//! Both sockets are driven from one task by a poll loop (as `tokio::io::copy_bidirectional`
//! does): no channel, no lock, no second task per client.

mod complete;
mod events;
mod intake;
mod link;
mod pump;
mod replication;
mod replies;
mod topology;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::acl::Policy;
use crate::command::CommandTable;
use crate::config::AuthMode;
use crate::event::{CloseStats, SessionAction};
use crate::event::{ReplySource, ReplyStatus};
use crate::proxy::pipeline::{Internal, Pending, Preset, Slot, WriteQueue};
use crate::proxy::session::Session;
use crate::proxy::{upstream, ProxyContext};
use crate::resp::encode;
use crate::resp::reply::ReplyScanner;
use crate::resp::request::{Request, RequestDecoder};

pub use replies::Route;

/// Why a connection's drive loop stopped.
#[derive(Debug)]
enum Exit {
    /// Everything owed to the client was written; close.
    Done,
    /// The client closed its side.
    ClientClosed,
    /// Reading from or writing to the client failed.
    ClientError(io::Error),
    /// The client's unparsed input grew past `query_buffer_max_bytes`.
    QueryBufferLimit,
    /// No upstream, commands are waiting, and it is time to try connecting again.
    Reconnect,
    /// Nothing is in flight and the client moves between upstream connections (shared mode).
    Relink,
}

/// Serves one accepted client until it leaves, the proxy stops, or `hard_stop` fires.
pub async fn serve<C>(
    ctx: Arc<ProxyContext>,
    client: Accepted<C>,
    drain: CancellationToken,
    hard_stop: CancellationToken,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = ctx.next_connection_id();
    let Accepted { stream: client, peer, local_addr, fd, tls, at } = client;
    let span = tracing::debug_span!("conn", id, client = %peer);
    async move {
        let started = Instant::now();
        // Shared mode starts on a shared connection, unless the upstream login follows the
        // client's user (mirrored users): then a connection of its own, unpinned later.
        let shared = ctx.pool.is_some() && ctx.mirrors().is_none();
        let upstream = if shared {
            FirstLink::Shared
        } else {
            let (address, moved) = ctx.target.watch();
            let tls = ctx.upstream_tls();
            match upstream::connect(&address, &ctx.config.upstream, tls.as_deref()).await {
                Ok(stream) => {
                    let state = if ctx.pool.is_some() { "pinned" } else { "dedicated" };
                    FirstLink::Dedicated(link::Link::dedicated(stream, moved, &ctx.metrics, state))
                }
                Err(error) => {
                    tracing::warn!(%error, "client connected while the upstream is unavailable");
                    ctx.metrics.upstream_connect_error();
                    FirstLink::Unavailable(error)
                }
            }
        };
        let mut conn = Connection::new(ctx, id, peer, client, upstream, started);
        // Redis decides whether a connection is logged in as `default` when it accepts it: the
        // same instant here, not when this task first ran (later, on a busy runtime).
        conn.implicit_since = Some(at);
        if shared {
            conn.link_shared(conn.state_key()).await;
        }
        conn.local_addr = local_addr;
        conn.fd = fd;
        conn.tls = tls;
        let open = conn.session_event(SessionAction::Open, None);
        conn.ctx.sink.session(open);
        conn.user_from_certificate();
        conn.login_upstream(started);
        let exit = conn.run(&drain, &hard_stop).await;
        let reason = match &exit {
            Exit::ClientError(_) => "client_error",
            Exit::QueryBufferLimit => "query_buffer_limit",
            _ => "client_closed",
        };
        conn.close_reason.get_or_insert(reason);
        match &exit {
            Exit::ClientError(error) => tracing::debug!(%error, "client connection failed"),
            Exit::QueryBufferLimit => {
                tracing::warn!("closing client that reached max query buffer length")
            }
            other => tracing::debug!(exit = ?other, "connection closed"),
        }
        conn.finish(matches!(exit, Exit::Done)).await;
    }
    .instrument(span)
    .await
}

/// A client the listener accepted (and, on the TLS listener, finished the handshake with).
#[derive(Debug)]
pub struct Accepted<C> {
    /// The client's stream.
    pub stream: C,
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's address it came in on.
    pub local_addr: Option<SocketAddr>,
    /// The socket's descriptor.
    pub fd: i32,
    /// The handshake's facts, on the TLS listener.
    pub tls: Option<Arc<crate::tls::TlsFacts>>,
    /// When the listener accepted it (before any handshake).
    pub at: Instant,
}

/// State of one client connection and its upstream.
struct Connection<C> {
    ctx: Arc<ProxyContext>,
    peer: SocketAddr,
    client: C,
    /// `None` while Redis is unreachable; commands then get a proxy-written error.
    upstream: Option<link::Link>,
    /// A move between upstream connections to make once nothing is in flight.
    relink: Option<link::Relink>,
    /// Shared mode: ran a command whose answer or effect ties it to its connection for good
    /// (CLIENT ID, MONITOR, ...): never unpinned.
    pinned_for_good: bool,
    /// Shared mode: pin before the next command (after a WAIT sent on the shared connection).
    pin_after: Option<crate::proxy::pin::PinReason>,
    /// Shared mode, passthrough: an AUTH on a shared connection already logged in with its
    /// credentials; the client's later commands wait for its reply (see `link::placed`).
    login_trial: Option<link::LoginTrial>,
    /// Shared mode: no less busy connection was found for the command waiting; it goes on the
    /// busy one (cleared once it is placed).
    stay_put: bool,
    /// A WATCH was sent and no EXEC, DISCARD, UNWATCH or RESET answered since.
    watching: bool,
    /// `pending.sent()` as of the last submission to a shared connection.
    submitted: u64,
    /// Passthrough: the credentials Redis last accepted from this client (the key of the
    /// shared connections it may use).
    client_login: crate::proxy::pool::Login,
    /// Passthrough, shared: when the client connected or ran `RESET`, until its login without
    /// credentials is decided by the pool's probe (`pool::implicit`).
    implicit_since: Option<Instant>,
    /// Why the upstream is unavailable, for those errors.
    upstream_error: String,
    last_connect_attempt: Instant,
    client_in: BytesMut,
    upstream_in: BytesMut,
    /// Bytes at the front of `upstream_in` framed but not yet forwarded or dropped: only
    /// ever part of the reply being framed.
    upstream_scanned: usize,
    /// Where the bytes of the reply being framed go.
    route: Route,
    to_upstream: WriteQueue,
    to_client: WriteQueue,
    /// Offset in the client stream just past the last reply the proxy wrote itself.
    local_end: u64,
    client_needs_flush: bool,
    upstream_needs_flush: bool,
    decoder: RequestDecoder,
    scanner: ReplyScanner,
    pending: Pending,
    session: Session,
    /// The command table as of this connection's start.
    commands: Arc<CommandTable>,
    /// What the session did, for its close event.
    totals: CloseStats,
    /// Why the connection is closing, once known.
    close_reason: Option<&'static str>,
    /// When it was accepted.
    opened: Instant,
    /// Wakes a client stalled by a full audit queue (`on_full = "block"`) to look again.
    audit_recheck: Option<Pin<Box<tokio::time::Sleep>>>,
    /// `(end of a reply in the client stream, its record's ticket)`: with durable audit modes,
    /// the reply's last byte waits for the ticket.
    durability_gates: VecDeque<(u64, u64)>,
    /// AUTH / HELLO AUTH commands in flight. While one is in flight for a client that has not
    /// authenticated, nothing behind it is decoded: Redis runs the AUTH before it reads the
    /// next request, and which limits apply to that request depends on the AUTH's outcome.
    auth_in_flight: usize,
    /// After a protocol error whose reply `CLIENT REPLY OFF` swallowed: input is read (to see
    /// the client leave) and ignored, as Redis does.
    discarding_input: bool,
    /// Complete requests may wait in `client_in` (pipeline full, or a reconnect came first).
    decode_stalled: bool,
    /// False once nothing more will be read from the client (QUIT, protocol error, drain).
    reading_client: bool,
    /// Close once `to_client` is written.
    close_when_flushed: bool,
    /// Shutting down: finish what is in flight, then close.
    draining: bool,
    /// Redis's last error was a protocol error: it closes the connection itself next.
    upstream_protocol_error: bool,
    last_activity: Instant,
    /// The ACL policy as of the last command, and the watch that says when it changed.
    policy: Option<Arc<Policy>>,
    policy_watch: tokio::sync::watch::Receiver<u64>,
    /// The proxy's own address for this client (`laddr=` of its client info).
    local_addr: Option<SocketAddr>,
    /// The client socket's descriptor (`fd=` of its client info).
    fd: i32,
    /// The TLS handshake's facts, on the TLS listener.
    tls: Option<Arc<crate::tls::TlsFacts>>,
    /// A request the gate cannot decide until the commands in flight are answered.
    waiting: Option<Request>,
    /// Redis confirmed the upstream connection runs as the client's mirrored user.
    runs_as_mirror: bool,
    /// The presets Redis accepted before the login of the connection being set up to pin to.
    presets_before_login: Vec<Preset>,
    /// The latest refused command's record, held to count identical repeats.
    refusals: events::RefusalGroup,
    /// Set once a SYNC / PSYNC is forwarded: where the replication is.
    replication: Option<replication::Replication>,
}

/// A new client's upstream connection, before its first command.
enum FirstLink {
    /// `upstream.pool = "shared"`: a shared connection is taken next.
    Shared,
    /// A connection of its own.
    Dedicated(link::Link),
    /// Redis could not be reached: the client's commands get this error until it can.
    Unavailable(upstream::UpstreamError),
}

impl<C> Connection<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    fn new(
        ctx: Arc<ProxyContext>,
        id: u64,
        peer: SocketAddr,
        client: C,
        upstream: FirstLink,
        now: Instant,
    ) -> Self {
        let limits = ctx.config.proxy.limits;
        let policy = ctx.policy();
        let authenticated = authenticated_by_default(&ctx, policy.as_deref());
        let (upstream, upstream_error) = match upstream {
            FirstLink::Dedicated(link) => (Some(link), String::new()),
            FirstLink::Shared => (None, String::new()),
            FirstLink::Unavailable(error) => (None, error.to_string()),
        };
        Self {
            peer,
            client,
            upstream,
            upstream_error,
            relink: None,
            pinned_for_good: false,
            pin_after: None,
            login_trial: None,
            stay_put: false,
            watching: false,
            submitted: 0,
            client_login: crate::proxy::pool::Login::Default,
            implicit_since: Some(now),
            last_connect_attempt: now,
            client_in: BytesMut::new(),
            upstream_in: BytesMut::new(),
            upstream_scanned: 0,
            route: Route::Stream,
            to_upstream: WriteQueue::default(),
            to_client: WriteQueue::default(),
            local_end: 0,
            client_needs_flush: false,
            upstream_needs_flush: false,
            decoder: RequestDecoder::new(limits.request),
            scanner: ReplyScanner::new(limits.reply_max_depth),
            pending: Pending::default(),
            session: Session::new(id, authenticated),
            commands: ctx.commands(),
            totals: CloseStats::default(),
            close_reason: None,
            opened: now,
            audit_recheck: None,
            durability_gates: VecDeque::new(),
            auth_in_flight: 0,
            discarding_input: false,
            decode_stalled: false,
            reading_client: true,
            close_when_flushed: false,
            draining: false,
            upstream_protocol_error: false,
            last_activity: now,
            policy,
            policy_watch: ctx.watch_policy(),
            local_addr: None,
            fd: -1,
            tls: None,
            waiting: None,
            runs_as_mirror: false,
            presets_before_login: Vec::new(),
            refusals: events::RefusalGroup::default(),
            replication: None,
            ctx,
        }
    }

    async fn run(&mut self, drain: &CancellationToken, hard_stop: &CancellationToken) -> Exit {
        let idle_timeout = self.ctx.config.proxy.idle_timeout;
        loop {
            let idle_deadline = idle_timeout.map(|timeout| self.last_activity + timeout);
            let refusal_deadline = self.refusal_deadline();
            // A clone, so the select can borrow `self`; `user_still_allowed` marks the
            // connection's own receiver seen, so the next clone waits for the next swap.
            let mut policy_watch = self.policy_watch.clone();
            let moved = self.upstream.as_ref().and_then(link::Link::moved);
            let exit = tokio::select! {
                exit = poll_fn(|cx| self.poll_drive(cx)) => exit,
                () = drain.cancelled(), if !self.draining => {
                    self.begin_drain();
                    continue;
                }
                () = hard_stop.cancelled() => {
                    self.close_reason.get_or_insert("shutdown");
                    return Exit::Done;
                }
                Ok(()) = policy_watch.changed() => {
                    if !self.user_still_allowed() {
                        tracing::info!(user = %String::from_utf8_lossy(&self.session.user), "user deleted or disabled by a policy reload: closing");
                        self.close_reason.get_or_insert("user_removed");
                        return Exit::Done;
                    }
                    continue;
                }
                () = cancelled_opt(moved.as_ref()) => {
                    // The primary moved (Sentinel): Redis would have closed this client.
                    tracing::info!("the upstream primary moved: closing as Redis would");
                    self.close_reason.get_or_insert("primary_moved");
                    self.upstream_closed();
                    continue;
                }
                () = sleep_until_opt(refusal_deadline) => {
                    self.flush_refusals(true);
                    continue;
                }
                () = sleep_until_opt(idle_deadline) => {
                    if self.is_idle() {
                        self.close_reason.get_or_insert("idle_timeout");
                        return Exit::Done;
                    }
                    self.last_activity = Instant::now();
                    continue;
                }
            };
            match exit {
                Exit::Reconnect => self.reconnect().await,
                Exit::Relink => self.relink().await,
                other => return other,
            }
        }
    }

    /// Redis's idle rule: not blocked (nothing in flight), not subscribed, not monitoring.
    fn is_idle(&self) -> bool {
        self.replication.is_none()
            && self.pending.is_empty()
            && !self.session.subscriptions.any()
            && !self.session.monitor
            && self.to_client.is_empty()
    }

    fn begin_drain(&mut self) {
        self.close_reason.get_or_insert("shutdown");
        self.draining = true;
        self.reading_client = false;
    }

    async fn reconnect(&mut self) {
        self.last_connect_attempt = Instant::now();
        if self.ctx.pool.is_some() && !self.pinned_for_good {
            self.reset_upstream_reader();
            self.link_shared(self.state_key()).await;
            return;
        }
        let tls = self.ctx.upstream_tls();
        let (address, moved) = self.ctx.target.watch();
        match upstream::connect(&address, &self.ctx.config.upstream, tls.as_deref()).await {
            Ok(stream) => {
                tracing::info!("upstream reachable again");
                let state = if self.ctx.pool.is_some() { "pinned" } else { "dedicated" };
                let metrics = &self.ctx.metrics;
                self.upstream = Some(link::Link::dedicated(stream, moved, metrics, state));
                self.reset_upstream_reader();
                self.runs_as_mirror = false;
                self.login_upstream(Instant::now());
            }
            Err(error) => {
                self.ctx.metrics.upstream_connect_error();
                self.upstream_error = error.to_string();
            }
        }
    }

    /// With `auth.mode = "proxy"`, logs the upstream connection in before the session's next
    /// command (see [`login_upstream_as`](Self::login_upstream_as)).
    fn login_upstream(&mut self, now: Instant) {
        let (user, authenticated) = (self.session.user.clone(), self.session.authenticated);
        self.login_upstream_as(&user, authenticated, now);
    }

    /// With `auth.mode = "proxy"`, logs the upstream connection in for a session of `user`:
    /// as the Redis user mirroring it when mirrored users are in force, else as the service
    /// user. A session that may run nothing (`default` off, not logged in) is not logged in
    /// at all: Redis then refuses its commands too.
    fn login_upstream_as(&mut self, user: &[u8], authenticated: bool, now: Instant) {
        if self.ctx.config.auth.mode != AuthMode::Proxy
            || !matches!(self.upstream, Some(link::Link::Dedicated { .. }))
        {
            return;
        }
        self.runs_as_mirror = false;
        if let Some(mirrors) = self.ctx.mirrors() {
            let policy = self.current_policy();
            let enabled = policy.is_some_and(|p| p.users().get(user).is_some_and(|u| u.enabled));
            if !(authenticated && enabled) {
                return;
            }
            if let Some((name, password)) = mirrors.login(user) {
                let login = encode::command(&[b"AUTH", &name, password.as_bytes()]);
                self.to_upstream.push(login);
                self.pending.push(Slot::internal(Internal::Login { mirror: true }, now));
                return;
            }
            // A user whose mirror is still being provisioned (a policy change a moment ago):
            // the service login, with the gate refusing what Redis would check as it.
        }
        if let Some((user, password)) = &self.ctx.config.auth.upstream_login {
            let login = encode::command(&[b"AUTH", user.as_bytes(), &password.0]);
            self.to_upstream.push(login);
            self.pending.push(Slot::internal(Internal::Login { mirror: false }, now));
        }
    }

    /// Records what is still in flight as unanswered and closes both sides.
    async fn finish(mut self, graceful: bool) {
        let now = Instant::now();
        self.flush_refusals(false);
        self.give_back_pinned();
        while let Some(slot) = self.pending.pop_front() {
            self.emit(
                slot,
                ReplyStatus::Unanswered,
                None,
                ReplySource::Upstream,
                now,
                self.ran_as(),
            );
        }
        if graceful {
            let _ = self.client.shutdown().await;
        }
        let mut totals = std::mem::take(&mut self.totals);
        totals.reason = self.close_reason.unwrap_or("client_closed");
        totals.duration = now.saturating_duration_since(self.opened);
        self.ctx.sink.session(self.session_event(SessionAction::Close, Some(totals)));
    }

    /// The ACL policy for this command, re-read when a reload swapped it.
    fn current_policy(&mut self) -> Option<Arc<Policy>> {
        if self.policy_watch.has_changed().unwrap_or(false) {
            self.policy_watch.mark_unchanged();
            self.policy = self.ctx.policy();
        }
        self.policy.clone()
    }

    /// After a policy swap: false when this connection's user was deleted or disabled
    /// (the connection must close, as Redis closes a deleted user's clients).
    fn user_still_allowed(&mut self) -> bool {
        let Some(policy) = self.current_policy() else { return true };
        if !self.session.logged_in {
            return true;
        }
        policy.users().get(&self.session.user).is_some_and(|user| user.enabled)
    }

    /// Whether a session that has not logged in may run commands.
    fn authenticated_by_default(&self) -> bool {
        authenticated_by_default(&self.ctx, self.policy.as_deref())
    }
}

/// Whether a new (or reset) session may run commands without AUTH: in proxy mode when the
/// users file's `default` is `on nopass`, in passthrough when Redis was not seen to ask.
fn authenticated_by_default(ctx: &ProxyContext, policy: Option<&Policy>) -> bool {
    match ctx.config.auth.mode {
        AuthMode::Passthrough => !ctx.auth_required(),
        AuthMode::Proxy => policy.is_none_or(Policy::default_is_open),
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Completes when `token` is cancelled; never without one.
async fn cancelled_opt(token: Option<&CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}
