//! One client connection: reads requests, forwards their original bytes, frames Redis's
//! replies, pairs each with its command in order, writes the reply bytes back, and hands one
//! record per command to the sink.
//!
//! Both sockets are driven from one task by a poll loop (as `tokio::io::copy_bidirectional`
//! does): no channel, no lock, no second task per client. Reply bytes are forwarded as soon as
//! they are framed, even mid-reply, so a large reply never sits whole in the proxy.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::acl::log::LogEvent;
use crate::acl::{Denial, Policy, Verdict};
use crate::audit::event::{CloseStats, SecurityAction, SecurityEvent, SessionAction, SessionEvent};
use crate::command::{extract_keys, Class, CommandInfo, CommandTable, Keys};
use crate::config::{AclMode, AuthMode, OnError, OnFull};
use crate::proxy::pipeline::{Expect, LocalReply, Slot, WriteQueue};
use crate::proxy::session::{Effect, PubSubFamily, Session};
use crate::proxy::{upstream, ProxyContext};
use crate::record::{CommandRecord, ReplySource, ReplyStatus};
use crate::resp::encode;
use crate::resp::reply::{ReplyInfo, ReplyScanner};
use crate::resp::request::string2ll;
use crate::resp::request::{Request, RequestDecoder};

/// Room kept free in a read buffer before each read.
const READ_SIZE: usize = 16 * 1024;
/// With `audit.on_full = "block"`, how often a stalled client re-checks the audit queue.
const AUDIT_RECHECK: std::time::Duration = std::time::Duration::from_millis(5);

/// An unknown command Redis refuses at queue time whatever the user's permissions, which
/// makes it discard the transaction at EXEC: sent in place of a command the proxy refused
/// inside MULTI, so that the upstream transaction fails as Redis's own would.
const ABORT_TRANSACTION: &[u8] = b"*1\r\n$28\r\nredis-audit-proxy|abort-multi\r\n";

/// What the ACL gate decided for one command.
#[derive(Debug)]
enum Gate {
    /// Forward it.
    Forward,
    /// Answer it here; Redis does not see it.
    Answer(LocalReply),
    /// Refused inside MULTI: send [`ABORT_TRANSACTION`] instead and answer with this.
    AbortQueued(LocalReply),
    /// EXEC refused inside MULTI: abort the upstream transaction, send EXEC, answer with
    /// this.
    AbortExec(LocalReply),
}

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
    let Accepted { stream: client, peer, local_addr, fd, tls } = client;
    let span = tracing::debug_span!("conn", id, client = %peer);
    async move {
        let started = Instant::now();
        let upstream =
            match upstream::connect(&ctx.config.upstream, ctx.upstream_tls().as_deref()).await {
                Ok(stream) => Ok(stream),
                Err(error) => {
                    tracing::warn!(%error, "client connected while the upstream is unavailable");
                    ctx.metrics.upstream_connect_error();
                    Err(error.to_string())
                }
            };
        let mut conn = Connection::new(ctx, id, peer, client, upstream, started);
        conn.local_addr = local_addr;
        conn.fd = fd;
        conn.tls = tls;
        conn.login_upstream(started);
        let open = conn.session_event(SessionAction::Open, None);
        conn.ctx.sink.session(open);
        conn.user_from_certificate();
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
}

/// State of one client connection and its upstream.
struct Connection<C> {
    ctx: Arc<ProxyContext>,
    peer: SocketAddr,
    client: C,
    /// `None` while Redis is unreachable; commands then get a proxy-written error.
    upstream: Option<upstream::UpstreamStream>,
    /// Why the upstream is unavailable, for those errors.
    upstream_error: String,
    last_connect_attempt: Instant,
    client_in: BytesMut,
    upstream_in: BytesMut,
    /// Bytes at the front of `upstream_in` already framed but not yet queued to the client.
    upstream_scanned: usize,
    to_upstream: WriteQueue,
    to_client: WriteQueue,
    client_needs_flush: bool,
    upstream_needs_flush: bool,
    decoder: RequestDecoder,
    scanner: ReplyScanner,
    pending: VecDeque<Slot>,
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
    /// With `auth.mode = "proxy"`: an AUTH, HELLO or RESET waiting for the commands before
    /// it to be answered, because it changes the user the next commands run as.
    deferred: Option<Request>,
    /// Read nothing more until every command in flight is answered: with a policy, after a
    /// command that may change the user (AUTH, HELLO AUTH, RESET, an EXEC that ran one), so
    /// that the next command is checked as the user it will run as.
    hold_until_idle: bool,
    /// An AUTH, HELLO AUTH or RESET was queued in the current MULTI.
    multi_changes_user: bool,
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
        upstream: Result<upstream::UpstreamStream, String>,
        now: Instant,
    ) -> Self {
        let limits = ctx.config.proxy.limits;
        let authenticated = match ctx.config.auth.mode {
            AuthMode::Passthrough => !ctx.auth_required(),
            AuthMode::Proxy => ctx.policy().is_none_or(|policy| policy.default_is_open()),
        };
        let (upstream, upstream_error) = match upstream {
            Ok(stream) => (Some(stream), String::new()),
            Err(error) => (None, error),
        };
        Self {
            peer,
            client,
            upstream,
            upstream_error,
            last_connect_attempt: now,
            client_in: BytesMut::new(),
            upstream_in: BytesMut::new(),
            upstream_scanned: 0,
            to_upstream: WriteQueue::default(),
            to_client: WriteQueue::default(),
            client_needs_flush: false,
            upstream_needs_flush: false,
            decoder: RequestDecoder::new(limits.request),
            scanner: ReplyScanner::new(limits.reply_max_depth),
            pending: VecDeque::new(),
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
            policy: ctx.policy(),
            policy_watch: ctx.watch_policy(),
            local_addr: None,
            fd: -1,
            tls: None,
            deferred: None,
            hold_until_idle: false,
            multi_changes_user: false,
            ctx,
        }
    }

    async fn run(&mut self, drain: &CancellationToken, hard_stop: &CancellationToken) -> Exit {
        let idle_timeout = self.ctx.config.proxy.idle_timeout;
        loop {
            let idle_deadline = idle_timeout.map(|timeout| self.last_activity + timeout);
            // A clone, so the select can borrow `self`; `user_still_allowed` marks the
            // connection's own receiver seen, so the next clone waits for the next swap.
            let mut policy_watch = self.policy_watch.clone();
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
                other => return other,
            }
        }
    }

    /// Redis's idle rule: not blocked (nothing in flight), not subscribed, not monitoring.
    fn is_idle(&self) -> bool {
        self.pending.is_empty()
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
        let tls = self.ctx.upstream_tls();
        match upstream::connect(&self.ctx.config.upstream, tls.as_deref()).await {
            Ok(stream) => {
                tracing::info!("upstream reachable again");
                self.upstream = Some(stream);
                self.scanner = ReplyScanner::new(self.ctx.config.proxy.limits.reply_max_depth);
                self.upstream_in.clear();
                self.upstream_scanned = 0;
                self.upstream_protocol_error = false;
                self.login_upstream(Instant::now());
            }
            Err(error) => {
                self.ctx.metrics.upstream_connect_error();
                self.upstream_error = error.to_string();
            }
        }
    }

    /// With `auth.mode = "proxy"`, logs the upstream connection in as the service user
    /// before any client command.
    fn login_upstream(&mut self, now: Instant) {
        let auth = &self.ctx.config.auth;
        if auth.mode != AuthMode::Proxy || self.upstream.is_none() {
            return;
        }
        if let Some((user, password)) = &auth.upstream_login {
            let login = encode_args(&[b"AUTH", user.as_bytes(), &password.0]);
            self.push_internal(login, true, now);
        }
    }

    /// Records what is still in flight as unanswered and closes both sides.
    async fn finish(mut self, graceful: bool) {
        let now = Instant::now();
        while let Some(slot) = self.pending.pop_front() {
            let status = if slot.expect == Expect::Nothing {
                ReplyStatus::Skipped
            } else {
                ReplyStatus::Unanswered
            };
            self.emit(slot, status, None, ReplySource::Upstream, now);
        }
        if graceful {
            let _ = self.client.shutdown().await;
        }
        let mut totals = std::mem::take(&mut self.totals);
        totals.reason = self.close_reason.unwrap_or("client_closed");
        totals.duration = now.saturating_duration_since(self.opened);
        self.ctx.sink.session(self.session_event(SessionAction::Close, Some(totals)));
    }

    fn session_event(&self, action: SessionAction, close: Option<CloseStats>) -> SessionEvent {
        SessionEvent {
            action,
            time: std::time::SystemTime::now(),
            conn_id: self.session.id,
            client_addr: self.peer,
            user: self.session.user.clone(),
            client_name: self.session.name.clone(),
            client_lib: self.session.lib_name.clone(),
            client_lib_ver: self.session.lib_ver.clone(),
            close,
            tls: self.tls.clone(),
        }
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Exit> {
        let limits = self.ctx.config.proxy.limits;
        loop {
            let mut progress = false;

            if self.decode_stalled && self.reading_client && self.has_room_for_requests() {
                if self.upstream.is_none() && self.reconnect_due() {
                    return Poll::Ready(Exit::Reconnect);
                }
                self.decode_requests(Instant::now());
            }

            if self.reading_client && self.audit_blocks() {
                // Back-pressure from the audit writer: read nothing until it catches up.
                let timer = self
                    .audit_recheck
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(AUDIT_RECHECK)));
                if timer.as_mut().poll(cx).is_ready() {
                    timer.as_mut().reset(Instant::now() + AUDIT_RECHECK);
                    progress = true;
                }
            } else if self.reading_client && self.has_room_for_requests() {
                if self.client_in.capacity() - self.client_in.len() < READ_SIZE / 4 {
                    self.client_in.reserve(READ_SIZE);
                }
                match tokio_util::io::poll_read_buf(
                    Pin::new(&mut self.client),
                    cx,
                    &mut self.client_in,
                ) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Exit::ClientClosed),
                    Poll::Ready(Ok(_)) => {
                        progress = true;
                        let now = Instant::now();
                        self.last_activity = now;
                        if self.upstream.is_none() && self.reconnect_due() {
                            self.decode_stalled = true;
                            return Poll::Ready(Exit::Reconnect);
                        }
                        self.decode_requests(now);
                        if self.client_in.len() > limits.query_buffer_max_bytes {
                            return Poll::Ready(Exit::QueryBufferLimit);
                        }
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Exit::ClientError(error)),
                    Poll::Pending => {}
                }
            }

            if let Some(stream) = self.upstream.as_mut() {
                if !self.to_upstream.is_empty() {
                    match self.to_upstream.poll_write_to(stream, cx, usize::MAX) {
                        Poll::Ready(Ok(_)) => {
                            progress = true;
                            self.upstream_needs_flush = true;
                        }
                        Poll::Ready(Err(error)) => {
                            self.upstream_lost(&error.to_string());
                            progress = true;
                        }
                        Poll::Pending => {}
                    }
                } else if self.upstream_needs_flush {
                    match Pin::new(stream).poll_flush(cx) {
                        Poll::Ready(Ok(())) => self.upstream_needs_flush = false,
                        Poll::Ready(Err(error)) => {
                            self.upstream_lost(&error.to_string());
                            progress = true;
                        }
                        Poll::Pending => {}
                    }
                }
            }

            if self.to_client.len() < limits.output_buffer_bytes {
                if let Some(stream) = self.upstream.as_mut() {
                    if self.upstream_in.capacity() - self.upstream_in.len() < READ_SIZE / 4 {
                        self.upstream_in.reserve(READ_SIZE);
                    }
                    match tokio_util::io::poll_read_buf(Pin::new(stream), cx, &mut self.upstream_in)
                    {
                        Poll::Ready(Ok(0)) => {
                            self.upstream_closed();
                            progress = true;
                        }
                        Poll::Ready(Ok(_)) => {
                            progress = true;
                            if let Err(error) = self.frame_replies(Instant::now()) {
                                tracing::warn!(%error, "invalid reply from the upstream");
                                self.upstream_lost(&format!("invalid reply: {error}"));
                            }
                        }
                        Poll::Ready(Err(error)) => {
                            self.upstream_lost(&error.to_string());
                            progress = true;
                        }
                        Poll::Pending => {}
                    }
                }
            }

            let allowed = self.writable_to_client(cx);
            if !self.to_client.is_empty() && allowed > 0 {
                match self.to_client.poll_write_to(&mut self.client, cx, allowed) {
                    Poll::Ready(Ok(_)) => {
                        progress = true;
                        self.client_needs_flush = true;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Exit::ClientError(error)),
                    Poll::Pending => {}
                }
            } else if self.client_needs_flush {
                match Pin::new(&mut self.client).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.client_needs_flush = false,
                    Poll::Ready(Err(error)) => return Poll::Ready(Exit::ClientError(error)),
                    Poll::Pending => {}
                }
            }

            let flushed = self.to_client.is_empty() && !self.client_needs_flush;
            if flushed && (self.close_when_flushed || (self.draining && self.pending.is_empty())) {
                return Poll::Ready(Exit::Done);
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// How many queued bytes may go to the client now: all of them, except that with
    /// `audit.durability = "write" | "fsync"` the last byte of a reply waits until its record is
    /// durable (registering a wake-up for then).
    fn writable_to_client(&mut self, cx: &mut Context<'_>) -> usize {
        let written = self.to_client.written();
        while let Some(&(end, ticket)) = self.durability_gates.front() {
            if end <= written || self.ctx.sink.poll_durable(ticket, cx).is_ready() {
                // Nothing of it left to hold, or durable: later bytes have gates of their own.
                self.durability_gates.pop_front();
                continue;
            }
            return (end - 1 - written) as usize;
        }
        usize::MAX
    }

    fn has_room_for_requests(&self) -> bool {
        let limits = &self.ctx.config.proxy.limits;
        self.pending.len() < limits.pipeline_max_depth
            && self.to_upstream.len() < limits.output_buffer_bytes
            && !self.audit_blocks()
    }

    /// `on_full = "block"` and the audit queue is full.
    fn audit_blocks(&self) -> bool {
        self.ctx.config.audit.on_full == OnFull::Block && self.ctx.sink.is_full()
    }

    fn reconnect_due(&self) -> bool {
        self.last_connect_attempt.elapsed() >= self.ctx.config.upstream.reconnect_interval
    }

    /// Decodes every complete request in `client_in` and forwards or answers each.
    fn decode_requests(&mut self, now: Instant) {
        self.decode_stalled = false;
        if self.discarding_input {
            self.client_in.clear();
            return;
        }
        if self.tls.is_none()
            && self.totals.commands == 0
            && self.pending.is_empty()
            && self.client_in.starts_with(&[0x16, 0x03])
        {
            // A TLS ClientHello on the plain listener: Redis would wait for a line end that
            // never comes; close at once and say why.
            tracing::info!(client = %self.peer, "TLS handshake on the plain listener: closing");
            self.close_reason.get_or_insert("tls_on_plain_port");
            self.reading_client = false;
            self.close_when_flushed = true;
            self.client_in.clear();
            return;
        }
        while self.reading_client {
            if self.hold_until_idle {
                if !self.pending.is_empty() {
                    self.decode_stalled = true;
                    return;
                }
                self.hold_until_idle = false;
            }
            if let Some(request) = self.deferred.take() {
                if !self.pending.is_empty() {
                    self.deferred = Some(request);
                    self.decode_stalled = true;
                    return;
                }
                self.handle_request(request, now);
                continue;
            }
            let awaiting_auth = self.auth_in_flight > 0 && !self.session.authenticated;
            if awaiting_auth || !self.has_room_for_requests() {
                self.decode_stalled = true;
                return;
            }
            match self.decoder.decode(&mut self.client_in, self.session.authenticated) {
                Ok(Some(request)) => self.handle_request(request, now),
                Ok(None) => return,
                Err(error) => {
                    tracing::debug!(%error, "protocol error from client");
                    self.close_reason.get_or_insert("protocol_error");
                    let args = vec![Bytes::from_static(b"(protocol-error)")];
                    if self.session.expects_reply(&Effect::None) {
                        self.reading_client = false;
                        let reply = LocalReply {
                            bytes: error.to_reply(),
                            status: ReplyStatus::Error,
                            close_after: true,
                        };
                        self.push_local(args, 0, reply, now);
                    } else {
                        // With replies off, Redis swallows the error, and with nothing left to
                        // write it never reaches its close-after-reply: the connection stays
                        // open and whatever follows is ignored. So here too.
                        self.discarding_input = true;
                        self.client_in.clear();
                        self.push_answered_by_proxy(args, 0, None, now);
                    }
                    return;
                }
            }
        }
    }

    fn handle_request(&mut self, request: Request, now: Instant) {
        if self.ctx.config.auth.mode == AuthMode::Proxy {
            let name = request.args.first().map(|n| n.to_ascii_lowercase());
            if matches!(name.as_deref(), Some(b"auth" | b"hello" | b"reset")) {
                if !self.pending.is_empty() {
                    // It changes who the next commands run as: let what came before finish.
                    self.deferred = Some(request);
                    return;
                }
                if let Some(request) = self.authenticate_here(request, now) {
                    self.handle_checked_request(request, now);
                }
                return;
            }
        }
        self.handle_checked_request(request, now);
    }

    /// With `auth.mode = "proxy"`: AUTH and HELLO's AUTH option are checked against the users
    /// file and answered here, with Redis's replies; credentials never reach Redis. Returns
    /// the request to forward (HELLO without its AUTH option, RESET), if any.
    fn authenticate_here(&mut self, request: Request, now: Instant) -> Option<Request> {
        let args = &request.args;
        let name = args[0].to_ascii_lowercase();
        let in_multi = self.session.multi_requested;
        let request_bytes = request.raw.len() as u64;
        let error = |text: &str| LocalReply {
            bytes: encode::error(text),
            status: ReplyStatus::Error,
            close_after: false,
        };
        if name == b"reset" {
            // Back to the default user once Redis answers; the upstream connection is logged
            // in again right after it, and nothing more is read until both are answered.
            let upstream = self.upstream.is_some();
            self.handle_checked_request(request, now);
            if upstream {
                self.login_upstream(now);
                self.hold_until_idle = true;
            }
            return None;
        }
        let policy = self.current_policy()?;
        if in_multi {
            let has_auth =
                name == b"auth" || args.iter().skip(2).any(|a| a.eq_ignore_ascii_case(b"auth"));
            if !has_auth {
                // HELLO without AUTH is queued by Redis and run at EXEC, as sent.
                return Some(request);
            }
        }
        let answered = self.session.expects_reply(&Effect::of(args));
        if in_multi {
            // Redis would queue it and authenticate at EXEC; the proxy cannot answer inside
            // the EXEC reply, so it refuses, and the transaction fails as with any refusal.
            let reply = error(
                "ERR AUTH and HELLO AUTH inside MULTI are not supported with auth.mode = \"proxy\"",
            );
            if self.upstream.is_none() {
                self.answer_here(request.args, request_bytes, answered, reply, now);
                return None;
            }
            self.to_upstream.push(Bytes::from_static(ABORT_TRANSACTION));
            self.pending.push_back(Slot {
                args: request.args,
                command: None,
                class: None,
                keys: Keys::new(),
                effect: Effect::None,
                expect: if answered { Expect::One } else { Expect::Nothing },
                local: None,
                substitute: Some(reply),
                request_bytes,
                reply_bytes: 0,
                started: now,
            });
            self.release_ready_slots(now);
            return None;
        }
        let (user, password, rest) = if name == b"auth" {
            match args.len() {
                1 => {
                    let reply = error("ERR wrong number of arguments for 'auth' command");
                    self.answer_here(request.args, request_bytes, answered, reply, now);
                    return None;
                }
                2 if policy.users().get(b"default").is_some_and(|u| u.nopass) => {
                    let reply = error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
                    self.answer_here(request.args, request_bytes, answered, reply, now);
                    return None;
                }
                2 => (Bytes::from_static(b"default"), args[1].clone(), None),
                3 => (args[1].clone(), args[2].clone(), None),
                _ => {
                    self.answer_here(
                        request.args,
                        request_bytes,
                        answered,
                        error("ERR syntax error"),
                        now,
                    );
                    return None;
                }
            }
        } else {
            match parse_hello(args) {
                Err(text) => {
                    self.answer_here(request.args, request_bytes, answered, error(&text), now);
                    return None;
                }
                Ok((None, forward)) => {
                    let open = self.session.logged_in || policy.default_is_open();
                    if !open {
                        let reply = error(policy.hello_noauth_text());
                        self.answer_here(request.args, request_bytes, answered, reply, now);
                        return None;
                    }
                    return proxy_request(&forward);
                }
                Ok((Some((user, password)), forward)) => (user, password, Some(forward)),
            }
        };
        let accepted = policy.users().get(&user).is_some_and(|u| u.accepts(&password));
        let object = args[0].clone();
        if !accepted {
            let command_name = if name == b"auth" { "auth" } else { "hello" };
            self.authentication_failed("auth", Some(user), object, command_name, &policy);
            let reply = error("WRONGPASS invalid username-password pair or user is disabled.");
            self.answer_here(request.args, request_bytes, answered, reply, now);
            return None;
        }
        self.authenticated_as(user, "auth", object, &policy);
        match rest {
            Some(forward) => proxy_request(&forward),
            None => {
                let ok = LocalReply {
                    bytes: Bytes::from_static(b"+OK\r\n"),
                    status: ReplyStatus::Ok,
                    close_after: false,
                };
                self.answer_here(request.args, request_bytes, answered, ok, now);
                None
            }
        }
    }

    /// Answers a command here, or (under `CLIENT REPLY OFF|SKIP`) records it unanswered.
    fn answer_here(
        &mut self,
        args: Vec<Bytes>,
        request_bytes: u64,
        answered: bool,
        reply: LocalReply,
        now: Instant,
    ) {
        if answered {
            self.push_local(args, request_bytes, reply, now);
        } else {
            self.push_answered_by_proxy(args, request_bytes, None, now);
        }
    }

    /// With `tls.user_from`, the client certificate's name is the connection's user when the
    /// users file has it enabled (authenticated without AUTH, as Valkey's
    /// `tls-auth-clients-user`); otherwise the connection stays unauthenticated and a
    /// `tls-cert` security event says why.
    fn user_from_certificate(&mut self) {
        let Some(facts) = self.tls.clone() else { return };
        let Some(tls) = &self.ctx.config.tls else { return };
        if tls.user_from == crate::config::UserFrom::None || facts.client_cert_sha256.is_none() {
            return; // no mapping, or no certificate (client_auth = "optional")
        }
        let Some(policy) = self.current_policy() else { return };
        let name = facts.client_name.as_deref().map(|n| Bytes::copy_from_slice(n.as_bytes()));
        let enabled = name.as_ref().and_then(|n| policy.users().get(n)).is_some_and(|u| u.enabled);
        let subject = facts.client_subject.clone().unwrap_or_default();
        let subject = Bytes::from(subject);
        match name {
            Some(user) if enabled => self.authenticated_as(user, "tls-cert", subject, &policy),
            name => self.authentication_failed("tls-cert", name, subject, "", &policy),
        }
    }

    /// The proxy authenticated this connection (AUTH, HELLO AUTH or a client certificate):
    /// the security event (with `auth.record_success`), then the user changes.
    fn authenticated_as(
        &mut self,
        user: Bytes,
        reason: &'static str,
        object: Bytes,
        policy: &Policy,
    ) {
        if self.ctx.config.auth.record_success {
            let event = self.proxy_security_event(
                SecurityAction::AuthSuccess,
                reason,
                Some(user.clone()),
                object,
                policy,
            );
            self.ctx.sink.security(event);
        }
        self.set_user(user, true);
    }

    /// The proxy refused an authentication: the security event and the `ACL LOG` entry.
    fn authentication_failed(
        &self,
        reason: &'static str,
        username: Option<Bytes>,
        object: Bytes,
        command_name: &str,
        policy: &Policy,
    ) {
        let event = self.proxy_security_event(
            SecurityAction::AuthFailure,
            reason,
            username.clone(),
            object.clone(),
            policy,
        );
        self.ctx.sink.security(event);
        self.log_acl_event(reason, "toplevel", object, username.unwrap_or_default(), command_name);
    }

    /// A security event the proxy decided about this connection's authentication, before any
    /// command (context `toplevel`).
    fn proxy_security_event(
        &self,
        action: SecurityAction,
        reason: &'static str,
        username: Option<Bytes>,
        object: Bytes,
        policy: &Policy,
    ) -> SecurityEvent {
        SecurityEvent {
            action,
            time: std::time::SystemTime::now(),
            conn_id: self.session.id,
            client_addr: self.peer,
            user: self.session.user.clone(),
            username,
            reason,
            context: "toplevel",
            object: Some(object),
            source: "proxy",
            mode: None,
            policy_version: Some(Arc::clone(&policy.version)),
        }
    }

    /// The connection's user changes now (`auth.mode = "proxy"`).
    fn set_user(&mut self, user: Bytes, logged_in: bool) {
        let changed = self.session.user != user;
        self.session.user = user;
        self.session.logged_in = logged_in;
        self.session.authenticated =
            logged_in || self.current_policy().is_none_or(|p| p.default_is_open());
        if changed {
            let event = self.session_event(SessionAction::Auth, None);
            self.ctx.sink.session(event);
        }
    }

    fn handle_checked_request(&mut self, request: Request, now: Instant) {
        let command = self.commands.resolve(&request.args).cloned();
        let mut keys = Keys::new();
        let class = command.as_ref().map(|info| {
            extract_keys(info, &request.args, &mut keys);
            self.class_of(info, &request.args)
        });
        let mut effect = Effect::of(&request.args);
        let in_multi = self.session.multi_requested;
        let answered = self.session.expects_reply(&effect);
        let request_bytes = request.raw.len() as u64;
        let audit = &self.ctx.config.audit;
        if (audit.on_full == OnFull::Reject && self.ctx.sink.is_full())
            || (audit.on_error == OnError::Reject && self.ctx.sink.is_failing())
        {
            // Fail-closed: what cannot be recorded is not run.
            let reply = LocalReply {
                bytes: Bytes::from_static(
                    b"-ERR audit trail unavailable: the audit queue is full or the disk is failing, command not executed\r\n",
                ),
                status: ReplyStatus::Error,
                close_after: false,
            };
            self.push_local(request.args, request_bytes, reply, now);
            return;
        }
        if self.upstream.is_none() {
            let reply = if effect == Effect::Quit {
                self.reading_client = false;
                LocalReply {
                    bytes: Bytes::from_static(b"+OK\r\n"),
                    status: ReplyStatus::Ok,
                    close_after: true,
                }
            } else {
                LocalReply {
                    bytes: encode::error(&format!("ERR {}", self.upstream_error)),
                    status: ReplyStatus::Error,
                    close_after: false,
                }
            };
            self.push_local(request.args, request_bytes, reply, now);
            return;
        }
        let gate = match &command {
            Some(command) => self.acl_gate(command, &request.args, &keys, &effect, in_multi),
            None => Gate::Forward,
        };
        let (forwarded, substitute) = match gate {
            Gate::Forward => (request.raw, None),
            Gate::Answer(reply) => {
                if matches!(effect, Effect::Multi | Effect::Exec | Effect::Discard) {
                    // Refused: it changes nothing.
                    self.session.multi_requested = in_multi;
                }
                // Recorded as the command it is (a denial is still a `del`).
                self.pending.push_back(Slot {
                    args: request.args,
                    command,
                    class,
                    keys,
                    effect: Effect::None,
                    expect: if answered { Expect::One } else { Expect::Nothing },
                    local: answered.then_some(reply),
                    substitute: None,
                    request_bytes,
                    reply_bytes: 0,
                    started: now,
                });
                self.release_ready_slots(now);
                return;
            }
            Gate::AbortQueued(reply) => {
                // Not queued: whatever it would have done does not happen.
                effect = Effect::None;
                (Bytes::from_static(ABORT_TRANSACTION), Some(reply))
            }
            Gate::AbortExec(reply) => {
                self.push_internal(Bytes::from_static(ABORT_TRANSACTION), answered, now);
                (request.raw, Some(reply))
            }
        };
        let expect = match effect {
            _ if !answered => Expect::Nothing,
            Effect::Subscribe(family) | Effect::Unsubscribe(family) => Expect::Confirmations {
                family,
                subscribe: matches!(effect, Effect::Subscribe(_)),
                named: request.args.len() as u64 - 1,
                remaining: None,
            },
            _ => Expect::One,
        };
        match &effect {
            Effect::Quit => self.reading_client = false,
            Effect::Auth(_) | Effect::Hello { user: Some(_), .. } => self.auth_in_flight += 1,
            _ => {}
        }
        let changes_user =
            matches!(effect, Effect::Auth(_) | Effect::Hello { user: Some(_), .. } | Effect::Reset);
        if in_multi && changes_user {
            self.multi_changes_user = true;
        } else if self.policy.is_some()
            && (changes_user || (effect == Effect::Exec && self.multi_changes_user))
        {
            self.hold_until_idle = true;
        }
        if matches!(effect, Effect::Exec | Effect::Discard | Effect::Reset) {
            self.multi_changes_user = false;
        }
        self.to_upstream.push(forwarded);
        self.pending.push_back(Slot {
            args: request.args,
            command,
            class,
            keys,
            effect,
            expect,
            local: None,
            substitute,
            request_bytes,
            reply_bytes: 0,
            started: now,
        });
        if !answered {
            self.release_ready_slots(now);
        }
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

    /// Checks a command against the policy in Redis's order: an unknown command, a wrong
    /// arity and NO_MULTI inside MULTI are Redis's to answer; then NOAUTH; then the ACL.
    /// Returns the reply the proxy gives instead of forwarding: a `-NOAUTH` or `-NOPERM` in
    /// enforce mode, or `ACL LOG`, which the proxy serves. Denials are recorded in both
    /// modes.
    fn acl_gate(
        &mut self,
        command: &Arc<CommandInfo>,
        args: &[Bytes],
        keys: &Keys,
        effect: &Effect,
        in_multi: bool,
    ) -> Gate {
        let Some(policy) = self.current_policy() else { return Gate::Forward };
        if !command.arity_ok(args.len())
            || (in_multi && command.flags.iter().any(|f| f == "no_multi"))
        {
            return Gate::Forward;
        }
        let user = self.session.user.clone();
        let error =
            |bytes: Bytes| LocalReply { bytes, status: ReplyStatus::Error, close_after: false };
        if !self.session.logged_in && !policy.default_is_open() && !effect.is_no_auth() {
            let proxy_auth = self.ctx.config.auth.mode == AuthMode::Proxy;
            if policy.mode_for(&user) == AclMode::Observe && !proxy_auth {
                return Gate::Forward;
            }
            return Gate::Answer(error(Bytes::from_static(
                b"-NOAUTH Authentication required.\r\n",
            )));
        }
        if let Verdict::Deny { denial, enforced } = policy.decide(&user, command, args, keys) {
            let context = if in_multi { "multi" } else { "toplevel" };
            self.record_denial(&policy, &denial, command, args, enforced, context);
            if !enforced {
                return Gate::Forward;
            }
            let reply = policy.noperm_reply(&denial, &user, &command.name);
            if *effect == Effect::Exec {
                // Redis wraps a refused EXEC in EXECABORT, inside MULTI or not.
                let text = String::from_utf8_lossy(&reply[1..reply.len() - 2]).into_owned();
                let abort = error(encode::error(&format!(
                    "EXECABORT Transaction discarded because of: {text}"
                )));
                return if in_multi { Gate::AbortExec(abort) } else { Gate::Answer(abort) };
            }
            if !in_multi {
                return Gate::Answer(error(reply));
            }
            return Gate::AbortQueued(error(reply));
        }
        if self.ctx.config.auth.mode == AuthMode::Proxy && !in_multi {
            if let Some(reply) = self.acl_command_here(&policy, command, args) {
                return Gate::Answer(reply);
            }
        }
        if command.name == "acl|log" && !in_multi {
            let now_ms = unix_millis();
            let resp3 = self.session.protocol == 3;
            let reply = self
                .ctx
                .acl_log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .command(args, resp3, now_ms);
            let status =
                if reply.first() == Some(&b'-') { ReplyStatus::Error } else { ReplyStatus::Ok };
            return Gate::Answer(LocalReply { bytes: reply, status, close_after: false });
        }
        Gate::Forward
    }

    /// With `auth.mode = "proxy"` the users are the proxy's: the ACL subcommands about them
    /// are answered here (never by Redis, whose users are the service user's business).
    fn acl_command_here(
        &self,
        policy: &Policy,
        command: &CommandInfo,
        args: &[Bytes],
    ) -> Option<LocalReply> {
        let reply = |bytes: Bytes| {
            let status =
                if bytes.first() == Some(&b'-') { ReplyStatus::Error } else { ReplyStatus::Ok };
            LocalReply { bytes, status, close_after: false }
        };
        let bulk = |value: &[u8]| {
            let mut out = format!("${}\r\n", value.len()).into_bytes();
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
            out
        };
        Some(reply(match command.name.as_str() {
            "acl|whoami" => Bytes::from(bulk(&self.session.user)),
            "acl|users" => {
                let mut out = format!("*{}\r\n", policy.users().len()).into_bytes();
                for user in policy.users().iter() {
                    out.extend_from_slice(&bulk(&user.name));
                }
                Bytes::from(out)
            }
            "acl|dryrun" => Bytes::from(match policy.dry_run(&self.commands, &args[2..]) {
                Ok(None) => b"+OK\r\n".to_vec(),
                Ok(Some(text)) => bulk(text.as_bytes()),
                Err(text) => encode::error(&text).to_vec(),
            }),
            "acl|load" => match self.ctx.reload_policy() {
                Ok(_) => Bytes::from_static(b"+OK\r\n"),
                Err(error) => encode::error(&format!("ERR {error}")),
            },
            "acl|list" => {
                let mut out = format!("*{}\r\n", policy.users().len()).into_bytes();
                for user in policy.users().iter() {
                    let mut line = b"user ".to_vec();
                    line.extend_from_slice(&user.name);
                    line.push(b' ');
                    line.extend_from_slice(user.describe().as_bytes());
                    out.extend_from_slice(&bulk(&line));
                }
                Bytes::from(out)
            }
            "acl|getuser" => match policy.users().get(&args[2]) {
                Some(user) => getuser_reply(user, self.session.protocol == 3),
                None if self.session.protocol == 3 => Bytes::from_static(b"_\r\n"),
                None => Bytes::from_static(b"$-1\r\n"),
            },
            "acl|setuser" => match policy.setuser(args) {
                Ok(text) => match self.ctx.change_users(text, "acl setuser") {
                    Ok(()) => Bytes::from_static(b"+OK\r\n"),
                    Err(error) => encode::error(&format!("ERR {error}")),
                },
                Err(error) => encode::error(&error),
            },
            "acl|deluser" => match policy.deluser(&args[2..]) {
                Ok((_, 0)) => Bytes::from_static(b":0\r\n"),
                Ok((text, removed)) => match self.ctx.change_users(text, "acl deluser") {
                    Ok(()) => Bytes::from(format!(":{removed}\r\n")),
                    Err(error) => encode::error(&format!("ERR {error}")),
                },
                Err(error) => encode::error(&error),
            },
            "acl|save" => match self.ctx.save_users() {
                Ok(()) => Bytes::from_static(b"+OK\r\n"),
                Err(_) => encode::error("ERR There was an error trying to save the ACLs. Please check the server logs for more information"),
            },
            _ => return None,
        }))
    }

    /// Sends `bytes` to Redis on the proxy's own behalf: the reply is dropped and no record
    /// is written.
    fn push_internal(&mut self, bytes: Bytes, answered: bool, now: Instant) {
        self.to_upstream.push(bytes);
        let dropped =
            LocalReply { bytes: Bytes::new(), status: ReplyStatus::Ok, close_after: false };
        self.pending.push_back(Slot {
            args: Vec::new(),
            command: None,
            class: None,
            keys: Keys::new(),
            effect: Effect::None,
            expect: if answered { Expect::One } else { Expect::Nothing },
            local: None,
            substitute: Some(dropped),
            request_bytes: 0,
            reply_bytes: 0,
            started: now,
        });
    }

    /// A denial the proxy decided: a security event and an `ACL LOG` entry.
    fn record_denial(
        &self,
        policy: &Policy,
        denial: &Denial,
        command: &CommandInfo,
        args: &[Bytes],
        enforced: bool,
        context: &'static str,
    ) {
        let object = Bytes::copy_from_slice(denial.object(&command.name, args));
        self.ctx.sink.security(SecurityEvent {
            action: SecurityAction::AclDenied,
            time: std::time::SystemTime::now(),
            conn_id: self.session.id,
            client_addr: self.peer,
            user: self.session.user.clone(),
            username: None,
            reason: denial.reason.as_str(),
            context,
            object: Some(object.clone()),
            source: "proxy",
            mode: Some(if enforced { "enforce" } else { "observe" }),
            policy_version: Some(Arc::clone(&policy.version)),
        });
        self.log_acl_event(
            denial.reason.as_str(),
            context,
            object,
            self.session.user.clone(),
            &command.name,
        );
    }

    /// Adds an entry to the proxy's `ACL LOG`, with this client's info.
    fn log_acl_event(
        &self,
        reason: &'static str,
        context: &'static str,
        object: Bytes,
        username: Bytes,
        command_name: &str,
    ) {
        let event = LogEvent {
            reason,
            context,
            object,
            username,
            client_info: self.client_info(command_name),
            time_ms: unix_millis(),
        };
        self.ctx.acl_log.lock().unwrap_or_else(PoisonError::into_inner).add(event);
    }

    /// This client as `CLIENT LIST` describes it (Redis 7.2 fields), with the real client's
    /// address; the memory fields are the proxy's own buffers for it.
    fn client_info(&self, command_name: &str) -> String {
        let session = &self.session;
        let in_multi = session.multi_requested;
        let mut flags = String::new();
        if session.subscriptions.any() {
            flags.push('P');
        }
        if in_multi {
            flags.push('x');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        let text = |value: &Option<Bytes>| {
            value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
        };
        let age = self.opened.elapsed().as_secs();
        let idle = self.last_activity.elapsed().as_secs();
        let laddr = self.local_addr.map(|a| a.to_string()).unwrap_or_default();
        let qbuf = self.client_in.len();
        let qbuf_free = self.client_in.capacity().saturating_sub(qbuf);
        let omem = self.to_client.len();
        format!(
            "id={} addr={} laddr={laddr} fd={} name={} age={age} idle={idle} flags={flags} db={} \
             sub={} psub={} ssub={} multi={} qbuf={qbuf} qbuf-free={qbuf_free} argv-mem=0 \
             multi-mem=0 rbs={} rbp=0 obl=0 oll=0 omem={omem} tot-mem={} events=r cmd={command_name} \
             user={} redir=-1 resp={} lib-name={} lib-ver={}",
            session.id,
            self.peer,
            self.fd,
            text(&session.name),
            session.db,
            session.subscriptions.channels,
            session.subscriptions.patterns,
            session.subscriptions.shard,
            if in_multi { session.queued_count as i64 } else { -1 },
            self.client_in.capacity(),
            self.client_in.capacity() + self.upstream_in.capacity() + omem,
            String::from_utf8_lossy(&session.user),
            session.protocol,
            text(&session.lib_name),
            text(&session.lib_ver),
        )
    }

    /// The command's class: static from its flags, except for scripts that declare theirs
    /// (EVAL's shebang, remembered by SHA1 for EVALSHA; SCRIPT LOAD teaches it too) and for
    /// FCALL of a function whose library was loaded through the proxy.
    fn class_of(&self, command: &CommandInfo, args: &[Bytes]) -> Class {
        let declared = match command.name.as_str() {
            "eval" => args.get(1).and_then(|body| self.ctx.learn_script(body)),
            "evalsha" => args.get(1).and_then(|sha| self.ctx.script_class(sha)),
            "script|load" => {
                if let Some(body) = args.get(2) {
                    self.ctx.learn_script(body);
                }
                None
            }
            "fcall" => args.get(1).and_then(|name| self.ctx.function_class(name)),
            "function|load" => {
                if let Some(code) = args.last().filter(|_| args.len() >= 3) {
                    self.ctx.learn_library(code);
                }
                None
            }
            _ => None,
        };
        declared.unwrap_or_else(|| Class::of(command))
    }

    fn push_local(
        &mut self,
        args: Vec<Bytes>,
        request_bytes: u64,
        reply: LocalReply,
        now: Instant,
    ) {
        self.push_answered_by_proxy(args, request_bytes, Some(reply), now);
    }

    /// Queues a command Redis will not see: answered with `reply`, or (`None`) not at all.
    fn push_answered_by_proxy(
        &mut self,
        args: Vec<Bytes>,
        request_bytes: u64,
        reply: Option<LocalReply>,
        now: Instant,
    ) {
        let expect = if reply.is_some() { Expect::One } else { Expect::Nothing };
        self.pending.push_back(Slot {
            args,
            command: None,
            class: None,
            keys: Keys::new(),
            effect: Effect::None,
            expect,
            local: reply,
            substitute: None,
            request_bytes,
            reply_bytes: 0,
            started: now,
        });
        self.release_ready_slots(now);
    }

    /// Frames the replies now in `upstream_in`, pairs them, and queues their bytes.
    fn frame_replies(&mut self, now: Instant) -> Result<(), crate::resp::reply::ReplyError> {
        loop {
            self.scanner.capture_children =
                matches!(self.pending.front(), Some(Slot { effect: Effect::Exec, .. }))
                    && !self.session.queued.is_empty();
            let (used, done) = self.scanner.scan(&self.upstream_in[self.upstream_scanned..])?;
            self.upstream_scanned += used;
            if !done {
                break;
            }
            self.on_reply(now);
        }
        self.forward_scanned();
        Ok(())
    }

    /// Queues the framed upstream bytes to the client (cut-through, no copy).
    fn forward_scanned(&mut self) {
        // A reply being replaced is held back until it is whole, then dropped.
        let replacing = matches!(self.pending.front(), Some(Slot { substitute: Some(_), .. }));
        if replacing && self.scanner.is_mid_reply() {
            return;
        }
        if self.upstream_scanned > 0 {
            let bytes = self.upstream_in.split_to(self.upstream_scanned).freeze();
            self.upstream_scanned = 0;
            self.to_client.push(bytes);
        }
    }

    /// One whole reply was framed: pair it with its command, or let it through unasked.
    fn on_reply(&mut self, now: Instant) {
        let info = self.scanner.reply();
        let confirmation = if info.kind == b'>' || (info.kind == b'*' && self.in_pubsub_context()) {
            confirmation_of(info)
        } else {
            None
        };
        if let Some((family, subscribe)) = confirmation {
            if let Some(total) = info.children[2].head.integer() {
                self.session.subscriptions.confirm(family, subscribe, total.max(0) as u64);
            }
        }
        if self.is_unsolicited(info, confirmation) {
            return;
        }
        let is_error = info.is_error();
        let bytes = info.bytes;
        let Some(slot) = self.pending.front_mut() else {
            tracing::debug!("reply from the upstream with no command waiting for it");
            return;
        };
        slot.reply_bytes += bytes;
        if let Expect::Confirmations { family, subscribe, named, remaining } = &mut slot.expect {
            if !is_error && confirmation == Some((*family, *subscribe)) {
                let left = remaining.get_or_insert_with(|| {
                    if *named > 0 || *subscribe {
                        *named
                    } else {
                        self.session.subscriptions.confirmations_for_all(*family)
                    }
                });
                *left = left.saturating_sub(1);
                if *left > 0 {
                    return;
                }
            }
        }
        let mut slot = self.pending.pop_front().expect("checked above");
        if slot.args.is_empty() && is_error {
            tracing::error!(
                "the upstream refused the proxy's own command (auth.upstream_user login or transaction abort)"
            );
        }
        if let Some(substitute) = &slot.substitute {
            // Forward what came before this reply, drop the reply, send the replacement.
            // `forward_scanned` held the reply back, so all of it is still here.
            let reply = (bytes as usize).min(self.upstream_scanned);
            let earlier = self.upstream_in.split_to(self.upstream_scanned - reply).freeze();
            self.to_client.push(earlier);
            let _ = self.upstream_in.split_to(reply);
            self.upstream_scanned = 0;
            slot.reply_bytes = substitute.bytes.len() as u64;
            self.to_client.push(substitute.bytes.clone());
        }
        self.complete(slot, now);
        self.release_ready_slots(now);
    }

    /// Whether the reply just framed was sent unasked (pub/sub message, invalidation, MONITOR
    /// line) rather than answering the command at the head of the queue.
    fn is_unsolicited(&self, info: &ReplyInfo, confirmation: Option<(PubSubFamily, bool)>) -> bool {
        let head_wants = |wanted: (PubSubFamily, bool)| {
            matches!(
                self.pending.front(),
                Some(Slot { expect: Expect::Confirmations { family, subscribe, .. }, .. })
                    if (*family, *subscribe) == wanted
            )
        };
        match info.kind {
            b'>' => confirmation.is_none_or(|wanted| !head_wants(wanted)),
            b'*' if self.in_pubsub_context() => match confirmation {
                Some(wanted) => !head_wants(wanted),
                None => is_message(info),
            },
            b'+' => {
                self.session.monitor && info.head.as_bytes().first().is_some_and(u8::is_ascii_digit)
            }
            _ => false,
        }
    }

    /// Security events Redis's reply shows: an AUTH / HELLO AUTH accepted or refused, or a
    /// command refused for lack of permission (`-NOPERM`, Redis 7.0 and 7.2+ wordings).
    /// Refusals also enter the proxy's `ACL LOG`.
    fn note_security(
        &mut self,
        slot: &Slot,
        status: ReplyStatus,
        code: Option<&[u8]>,
        text: &[u8],
    ) {
        let attempted = match &slot.effect {
            Effect::Auth(user) | Effect::Hello { user: Some(user), .. } => Some(user.clone()),
            _ => None,
        };
        let contains = |needle: &[u8]| memchr::memmem::find(text, needle).is_some();
        let (action, reason) = match (&attempted, status, code) {
            (Some(_), ReplyStatus::Ok, _) if !self.ctx.config.auth.record_success => return,
            (Some(_), ReplyStatus::Ok, _) => (SecurityAction::AuthSuccess, "auth"),
            (Some(_), ReplyStatus::Error, Some(b"WRONGPASS")) => {
                (SecurityAction::AuthFailure, "auth")
            }
            (_, ReplyStatus::Error, Some(b"NOPERM")) => {
                let reason = if contains(b"to run the") {
                    "command"
                } else if contains(b"channel") {
                    "channel"
                } else if contains(b"key") {
                    "key"
                } else {
                    "command"
                };
                (SecurityAction::AclDenied, reason)
            }
            _ => return,
        };
        let policy = self.current_policy();
        let object = match (action, &slot.command) {
            (SecurityAction::AclDenied, Some(command)) if reason == "command" => {
                Some(Bytes::copy_from_slice(command.name.as_bytes()))
            }
            // Redis does not name the key or channel: the policy, when it has this user,
            // finds the one Redis refused.
            (SecurityAction::AclDenied, Some(command)) => policy.as_ref().and_then(|policy| {
                match policy.decide(&self.session.user, command, &slot.args, &slot.keys) {
                    Verdict::Deny { denial, .. } if denial.reason.as_str() == reason => {
                        Some(Bytes::copy_from_slice(denial.object(&command.name, &slot.args)))
                    }
                    _ => None,
                }
            }),
            (SecurityAction::AclDenied, None) => None,
            _ => slot.args.first().cloned(),
        };
        let context = if self.session.in_multi { "multi" } else { "toplevel" };
        self.ctx.sink.security(SecurityEvent {
            action,
            time: std::time::SystemTime::now(),
            conn_id: self.session.id,
            client_addr: self.peer,
            user: self.session.user.clone(),
            username: attempted.clone(),
            reason,
            context,
            object: object.clone(),
            source: "redis",
            mode: None,
            policy_version: policy.map(|p| Arc::clone(&p.version)),
        });
        if action != SecurityAction::AuthSuccess {
            let username = attempted.unwrap_or_else(|| self.session.user.clone());
            let name = slot.command.as_ref().map_or("", |c| c.name.as_str());
            self.log_acl_event(reason, context, object.unwrap_or_default(), username, name);
        }
    }

    /// RESP2 arrays may be pub/sub traffic: the client is subscribed or is subscribing.
    fn in_pubsub_context(&self) -> bool {
        self.session.in_resp2_pubsub()
            || matches!(
                self.pending.front(),
                Some(Slot { expect: Expect::Confirmations { .. }, .. })
            )
    }

    /// The head slot got its whole reply: update the session, emit the record.
    fn complete(&mut self, slot: Slot, now: Instant) {
        let info = self.scanner.reply();
        let (kind, head, is_null) = (info.kind, info.head, info.is_null());
        let authenticated_by_default = match self.ctx.config.auth.mode {
            AuthMode::Passthrough => !self.ctx.auth_required(),
            AuthMode::Proxy => self.policy.as_ref().is_none_or(|p| p.default_is_open()),
        };
        let (status, error_code) = if let Some(substitute) = &slot.substitute {
            let code =
                (substitute.status == ReplyStatus::Error).then(|| error_code_of(&substitute.bytes));
            (substitute.status, code)
        } else if info.is_error() {
            (ReplyStatus::Error, head.known_error_code().map(Bytes::copy_from_slice))
        } else if kind == b'+' && head.as_bytes() == b"QUEUED" {
            (ReplyStatus::Queued, None)
        } else {
            (ReplyStatus::Ok, None)
        };
        if matches!(slot.effect, Effect::Auth(_) | Effect::Hello { user: Some(_), .. }) {
            self.auth_in_flight = self.auth_in_flight.saturating_sub(1);
        }
        if let Some(code) = &error_code {
            self.upstream_protocol_error = head.as_bytes().starts_with(b"ERR Protocol error");
            if code.as_ref() == b"NOAUTH" {
                self.session.authenticated = false;
                self.ctx.set_auth_required(true);
            }
        } else if !self.session.authenticated && !slot.effect.is_no_auth() {
            // Redis ran a command for a client that never authenticated: no AUTH is needed.
            self.session.authenticated = true;
            self.ctx.set_auth_required(false);
        }
        if slot.substitute.is_none() {
            self.note_security(&slot, status, error_code.as_deref(), head.as_bytes());
        }
        // The record carries the user and database the command ran with.
        let record_user = self.session.user.clone();
        let record_db = self.session.db;
        let mut slot = slot;
        match status {
            ReplyStatus::Queued => {
                self.session.queue(&slot.effect);
                if let Some(class) = slot.class {
                    let union =
                        self.session.queued_class.map_or(class, |so_far| so_far.union(class));
                    self.session.queued_class = Some(union);
                }
            }
            ReplyStatus::Ok if slot.effect == Effect::Exec => {
                if kind == b'*' && !is_null {
                    // EXEC is what it ran: write if any queued command writes.
                    slot.class = Some(self.session.queued_class.unwrap_or(Class::NonReadWrite));
                    let elements: Vec<bool> = self
                        .scanner
                        .take_child_status()
                        .iter()
                        .map(|child| matches!(child.kind, b'-' | b'!'))
                        .collect();
                    self.session.apply_exec(&elements, authenticated_by_default);
                } else {
                    self.session.apply(&Effect::Exec, authenticated_by_default);
                }
            }
            ReplyStatus::Ok => self.session.apply(&slot.effect, authenticated_by_default),
            ReplyStatus::Error if matches!(slot.effect, Effect::Exec | Effect::Discard) => {
                self.session.apply(&slot.effect, authenticated_by_default)
            }
            _ => {}
        }
        if self.session.user != record_user {
            let event = self.session_event(SessionAction::Auth, None);
            self.ctx.sink.session(event);
        }
        if slot.effect == Effect::Quit {
            self.close_when_flushed = true;
            self.close_reason.get_or_insert("quit");
        }
        self.emit_as(slot, status, error_code, ReplySource::Upstream, now, record_user, record_db);
    }

    /// Releases the head slots that need nothing from Redis: proxy-written replies (written
    /// now, in their place) and commands Redis will not answer.
    fn release_ready_slots(&mut self, now: Instant) {
        while let Some(slot) = self.pending.front() {
            if slot.local.is_none() && slot.expect != Expect::Nothing {
                return;
            }
            let mut slot = self.pending.pop_front().expect("checked above");
            match slot.local.take() {
                Some(reply) => {
                    self.forward_scanned();
                    slot.reply_bytes = reply.bytes.len() as u64;
                    self.to_client.push(reply.bytes.clone());
                    if reply.close_after {
                        self.close_when_flushed = true;
                        self.reading_client = false;
                    }
                    let code =
                        (reply.status == ReplyStatus::Error).then(|| error_code_of(&reply.bytes));
                    self.emit(slot, reply.status, code, ReplySource::Proxy, now);
                }
                None => self.emit(slot, ReplyStatus::Skipped, None, ReplySource::Upstream, now),
            }
        }
    }

    /// Redis closed the connection (CLIENT KILL, its `timeout`, QUIT, a crash): a direct client
    /// would see its connection close right here, with no reply to what was still waiting, and
    /// so does ours. What was framed is forwarded first; the rest is recorded as unanswered.
    fn upstream_closed(&mut self) {
        tracing::debug!("upstream closed the connection");
        self.close_reason.get_or_insert("upstream_closed");
        self.drop_upstream();
    }

    /// The upstream connection failed (reset, I/O error, bytes that are not RESP): each command
    /// still waiting gets an error naming the upstream and the cause, in order, then the client
    /// is closed. A reply already partly forwarded cannot be completed: then the client is
    /// closed at once.
    fn upstream_lost(&mut self, cause: &str) {
        tracing::debug!(cause, "upstream connection failed");
        self.close_reason.get_or_insert("upstream_error");
        self.drop_upstream();
        if self.scanner.is_mid_reply() || self.upstream_protocol_error {
            return;
        }
        let address = &self.ctx.config.upstream.address;
        let message = encode::error(&format!("ERR upstream {address} connection lost: {cause}"));
        for slot in &mut self.pending {
            if slot.local.is_none() && slot.expect != Expect::Nothing {
                slot.local = Some(LocalReply {
                    bytes: message.clone(),
                    status: ReplyStatus::Error,
                    close_after: true,
                });
            }
        }
        self.release_ready_slots(Instant::now());
    }

    fn drop_upstream(&mut self) {
        self.upstream = None;
        self.to_upstream = WriteQueue::default();
        self.forward_scanned();
        self.reading_client = false;
        self.close_when_flushed = true;
    }

    fn emit(
        &mut self,
        slot: Slot,
        status: ReplyStatus,
        error_code: Option<Bytes>,
        source: ReplySource,
        now: Instant,
    ) {
        let (user, db) = (self.session.user.clone(), self.session.db);
        self.emit_as(slot, status, error_code, source, now, user, db);
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_as(
        &mut self,
        slot: Slot,
        status: ReplyStatus,
        error_code: Option<Bytes>,
        source: ReplySource,
        now: Instant,
        user: Bytes,
        db: u32,
    ) {
        if slot.args.is_empty() {
            return; // the proxy's own command (`push_internal`): not the client's
        }
        self.totals.commands += 1;
        self.totals.errors += u64::from(status == ReplyStatus::Error);
        self.totals.bytes_in += slot.request_bytes;
        self.totals.bytes_out += slot.reply_bytes;
        let ticket = self.ctx.sink.record(CommandRecord {
            conn_id: self.session.id,
            client_addr: self.peer,
            user,
            db,
            args: slot.args,
            command: slot.command,
            class: slot.class,
            keys: slot.keys,
            status,
            error_code,
            source,
            request_bytes: slot.request_bytes,
            reply_bytes: slot.reply_bytes,
            latency: now.saturating_duration_since(slot.started),
            time: std::time::SystemTime::now(),
            client_name: self.session.name.clone(),
            client_lib: self.session.lib_name.clone(),
            client_lib_ver: self.session.lib_ver.clone(),
            resp: self.session.protocol,
        });
        if let Some(ticket) = ticket {
            // The reply's bytes are queued by now (a local one was pushed, an upstream one is
            // framed up to here): its last byte waits for the record.
            self.forward_scanned();
            self.durability_gates.push_back((self.to_client.pushed(), ticket));
        }
    }
}

/// `ACL GETUSER` for an existing user, as Redis 7.2 writes it: flags, passwords (hashes),
/// the root selector's commands, keys and channels, then the other selectors.
fn getuser_reply(user: &crate::acl::User, resp3: bool) -> Bytes {
    let mut out = Vec::with_capacity(512);
    let bulk = |out: &mut Vec<u8>, value: &[u8]| {
        out.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    let map = |out: &mut Vec<u8>, pairs: usize| {
        let header = if resp3 { format!("%{pairs}\r\n") } else { format!("*{}\r\n", 2 * pairs) };
        out.extend_from_slice(header.as_bytes());
    };
    let selector = |out: &mut Vec<u8>, selector: &crate::acl::user::Selector| {
        bulk(out, b"commands");
        bulk(out, selector.describe_commands().as_bytes());
        bulk(out, b"keys");
        bulk(out, selector.describe_keys().as_bytes());
        bulk(out, b"channels");
        bulk(out, selector.describe_channels().as_bytes());
    };
    map(&mut out, 6);
    bulk(&mut out, b"flags");
    let flags = user.flag_names();
    let set = if resp3 { '~' } else { '*' };
    out.extend_from_slice(format!("{set}{}\r\n", flags.len()).as_bytes());
    for flag in flags {
        bulk(&mut out, flag.as_bytes());
    }
    bulk(&mut out, b"passwords");
    out.extend_from_slice(format!("*{}\r\n", user.password_hashes.len()).as_bytes());
    for hash in &user.password_hashes {
        bulk(&mut out, hash.as_bytes());
    }
    selector(&mut out, user.root());
    bulk(&mut out, b"selectors");
    out.extend_from_slice(format!("*{}\r\n", user.selectors.len() - 1).as_bytes());
    for other in &user.selectors[1..] {
        map(&mut out, 3);
        selector(&mut out, other);
    }
    Bytes::from(out)
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]` as Redis 7.0 parses it: the
/// credentials, if given, and the command to forward without them. `Err` is Redis's error.
fn parse_hello(args: &[Bytes]) -> Result<(Option<(Bytes, Bytes)>, Bytes), String> {
    let mut forward: Vec<&[u8]> = vec![&args[0]];
    if let Some(version) = args.get(1) {
        match string2ll(version) {
            None => return Err("ERR Protocol version is not an integer or out of range".into()),
            Some(v) if !(2..=3).contains(&v) => {
                return Err("NOPROTO unsupported protocol version".into())
            }
            Some(_) => forward.push(version),
        }
    }
    let mut credentials = None;
    let mut at = 2;
    while at < args.len() {
        let more = args.len() - 1 - at;
        let option = &args[at];
        if option.eq_ignore_ascii_case(b"auth") && more >= 2 {
            credentials = Some((args[at + 1].clone(), args[at + 2].clone()));
            at += 3;
        } else if option.eq_ignore_ascii_case(b"setname") && more >= 1 {
            forward.push(option);
            forward.push(&args[at + 1]);
            at += 2;
        } else {
            return Err(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(option)
            ));
        }
    }
    Ok((credentials, encode_args(&forward)))
}

/// A command as RESP multibulk.
fn encode_args(args: &[&[u8]]) -> Bytes {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    Bytes::from(out)
}

/// A request from a command the proxy encoded itself.
fn proxy_request(raw: &[u8]) -> Option<Request> {
    let mut decoder = RequestDecoder::new(crate::resp::request::RequestLimits::default());
    decoder.decode(&mut BytesMut::from(raw), true).ok().flatten()
}

/// Wall-clock time in Unix milliseconds.
fn unix_millis() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `Some((family, subscribe))` when the reply is a (un)subscribe confirmation.
fn confirmation_of(info: &ReplyInfo) -> Option<(PubSubFamily, bool)> {
    if info.child_count != 3 {
        return None;
    }
    Some(match info.children[0].head.as_bytes() {
        b"subscribe" => (PubSubFamily::Channel, true),
        b"unsubscribe" => (PubSubFamily::Channel, false),
        b"psubscribe" => (PubSubFamily::Pattern, true),
        b"punsubscribe" => (PubSubFamily::Pattern, false),
        b"ssubscribe" => (PubSubFamily::Shard, true),
        b"sunsubscribe" => (PubSubFamily::Shard, false),
        _ => return None,
    })
}

/// A pub/sub message (`message`, `pmessage`, `smessage`) delivered as an array.
fn is_message(info: &ReplyInfo) -> bool {
    matches!(info.children[0].head.as_bytes(), b"message" | b"pmessage" | b"smessage")
}

/// The first word of a proxy-written `-ERR ...` reply.
fn error_code_of(reply: &[u8]) -> Bytes {
    let text = reply.strip_prefix(b"-").unwrap_or(reply);
    let end = text.iter().position(|&b| b == b' ' || b == b'\r').unwrap_or(text.len());
    Bytes::copy_from_slice(&text[..end])
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
