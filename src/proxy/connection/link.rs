//! How a client reaches Redis: an upstream connection of its own, or (`upstream.pool =
//! "shared"`) a shared one, and the moves between the two: pinning before a command that
//! needs a connection of its own (`proxy::pin`), unpinning once nothing holds it.
//!
//! A move happens only when nothing is in flight, so replies never come from two
//! connections at once: a command that must pin waits until the commands before it are
//! answered. The state shared connections are keyed by (login, database, protocol) is the
//! session's, confirmed by Redis, so a client moves to shared connections in the state it is in.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::Connection;
use crate::command::CommandInfo;
use crate::config::{AuthMode, Secret};
use crate::event::ReplyStatus;
use crate::metrics::Metrics;
use crate::proxy::pin::{self, PinReason};
use crate::proxy::pipeline::{Internal, LocalReply, Slot};
use crate::proxy::pool::{Dedicated, LibInfo, Login, Lost, PoolError, SharedLink, StateKey};
use crate::proxy::session::Effect;
use crate::proxy::upstream::UpstreamStream;
use crate::resp::encode;
use tokio_util::sync::CancellationToken;

/// The client's way to Redis.
#[derive(Debug)]
pub(super) enum Link {
    /// An upstream connection of its own.
    Dedicated {
        /// The connection.
        stream: UpstreamStream,
        /// Cancelled when the primary it is connected to is no longer the target (Sentinel).
        moved: CancellationToken,
        /// Counts it among the open connections in its state (dedicated or pinned).
        _open: OpenGauge,
    },
    /// A shared upstream connection.
    Shared(SharedLink),
}

/// A move to make before the next command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Relink {
    /// To a connection of its own.
    Pin(PinReason),
    /// Back to the shared connections of its state.
    Unpin,
    /// To another shared connection: this one is gone, and nothing was in flight on it.
    Replace,
    /// To a less busy shared connection: this one owes other clients more than
    /// `upstream.pool_busy_replies` replies, and nothing of this client's is in flight.
    Relieve,
    /// To a shared connection of the group an AUTH's credentials name (`LoginTrial`).
    Join,
    /// Back to the shared connections of the client's own state, from a group it joined
    /// for an AUTH Redis refused.
    Back,
}

/// Passthrough, shared mode: an AUTH whose credentials are those a group of shared connections
/// is already logged in with runs on one of them rather than on a connection of its own. A
/// login Redis refuses leaves a connection as it was, so the shared connection keeps its
/// state either way; the client's own state changes only when Redis accepts. Until the reply
/// says which, the client's later commands wait: a refused client goes back to its own
/// state's connections before anything else of it runs.
#[derive(Debug)]
pub(super) struct LoginTrial {
    /// The group joined.
    key: StateKey,
    /// The AUTH went out on it.
    sent: bool,
}

/// Increments a gauge while it lives.
#[derive(Debug)]
pub(super) struct OpenGauge(IntGauge);

impl OpenGauge {
    fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Link {
    /// A connection of its own, counted as `state` (`dedicated` or `pinned`).
    pub(super) fn dedicated(
        stream: UpstreamStream,
        moved: CancellationToken,
        metrics: &Metrics,
        state: &str,
    ) -> Self {
        let open = OpenGauge::new(metrics.upstream_connections(state));
        Self::Dedicated { stream, moved, _open: open }
    }

    /// For a connection of its own, the token cancelled when its primary is no longer the
    /// target (a shared connection closes by itself then).
    pub(super) fn moved(&self) -> Option<CancellationToken> {
        match self {
            Self::Dedicated { moved, .. } => Some(moved.clone()),
            Self::Shared(_) => None,
        }
    }

    /// Reads what Redis sent into `buf`: `Err` when the connection is gone.
    pub(super) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<Result<usize, Lost>> {
        match self {
            Self::Dedicated { stream, .. } => {
                match tokio_util::io::poll_read_buf(Pin::new(stream), cx, buf) {
                    Poll::Ready(Ok(0)) => Poll::Ready(Err(Lost::Closed)),
                    Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
                    Poll::Ready(Err(error)) => Poll::Ready(Err(Lost::Failed(error.to_string()))),
                    Poll::Pending => Poll::Pending,
                }
            }
            Self::Shared(link) => link.poll_read(cx, buf),
        }
    }
}

impl<C> Connection<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    /// The state shared connections are keyed by, as Redis confirmed it for this session.
    pub(super) fn state_key(&self) -> StateKey {
        let login = match self.ctx.config.auth.mode {
            AuthMode::Passthrough => self.client_login.clone(),
            AuthMode::Proxy if self.runs_as_mirror => {
                match self.ctx.mirrors().and_then(|m| m.login(&self.session.user)) {
                    Some((user, password)) => {
                        Login::As { user, password: Secret(password.into_bytes()) }
                    }
                    None => Login::Default,
                }
            }
            AuthMode::Proxy => Login::Default,
        };
        StateKey { login, db: self.session.db, protocol: self.session.protocol }
    }

    /// Passthrough: after a reply to a command sent as the client wrote it, the login Redis
    /// confirmed (AUTH and HELLO AUTH), or a RESET's return to a new connection's.
    pub(super) fn track_login(&mut self, slot: &Slot, status: ReplyStatus) {
        if self.ctx.config.auth.mode != AuthMode::Passthrough || status != ReplyStatus::Ok {
            return;
        }
        match &slot.effect {
            Effect::Auth(user) | Effect::Hello { user: Some(user), .. } => {
                if let Some(password) = super::replies::password_of(&slot.args) {
                    let password = Secret(password.to_vec());
                    self.client_login = Login::As { user: user.clone(), password };
                }
            }
            Effect::Reset => {
                // Redis decides anew whether the connection is logged in as `default`.
                self.client_login = Login::Default;
                self.implicit_since = Some(Instant::now());
            }
            _ => {}
        }
    }

    /// Passthrough: the state an `AUTH` would put the client in if Redis accepts it.
    fn login_key(&self, command: Option<&CommandInfo>, args: &[Bytes]) -> Option<StateKey> {
        if self.ctx.config.auth.mode != AuthMode::Passthrough || command?.name != "auth" {
            return None;
        }
        let user = match args.len() {
            2 => Bytes::from_static(b"default"),
            3 => args[1].clone(),
            _ => return None,
        };
        let password = Secret(args.last()?.to_vec());
        let login = Login::As { user, password };
        Some(StateKey { login, db: self.session.db, protocol: self.session.protocol })
    }

    /// Shared mode, while a `LoginTrial` lasts: `Some(true)` for its AUTH, `Some(false)` for
    /// anything else, which waits (or, before the AUTH went out, goes back first).
    fn placed_in_trial(&mut self, command: Option<&CommandInfo>, args: &[Bytes]) -> Option<bool> {
        let trial = self.login_trial.as_ref()?;
        if trial.sent {
            return Some(false);
        }
        if self.login_key(command, args).as_ref() == Some(&trial.key) {
            self.login_trial = Some(LoginTrial { key: trial.key.clone(), sent: true });
            return Some(true);
        }
        if self.pending.is_empty() && self.to_upstream.is_empty() {
            // The AUTH it joined for did not go (the gate refused it meanwhile).
            self.login_trial = None;
            self.relink = Some(Relink::Back);
        }
        Some(false)
    }

    /// After the reply to a `LoginTrial`'s AUTH: refused, the client goes back to its own
    /// state's connections before its next command.
    pub(super) fn settle_login_trial(&mut self, slot: &Slot, status: ReplyStatus) {
        if self.login_trial.as_ref().is_some_and(|trial| trial.sent)
            && matches!(slot.effect, Effect::Auth(_))
        {
            self.login_trial = None;
            if status != ReplyStatus::Ok {
                self.relink = Some(Relink::Back);
            }
        }
    }

    /// In shared mode, for a command the gate lets through to Redis: false when it must wait
    /// for a move (pin or unpin), which `relink` then makes once nothing is in flight.
    pub(super) fn placed(&mut self, command: Option<&CommandInfo>, args: &[Bytes]) -> bool {
        if self.ctx.pool.is_none() {
            return true;
        }
        if self.relink.is_some() {
            return false;
        }
        if let Some(placed) = self.placed_in_trial(command, args) {
            return placed;
        }
        // AUTH stays on the shared connection only when the proxy answers it and the
        // upstream login does not follow the user.
        let proxy_auth =
            self.ctx.config.auth.mode == AuthMode::Proxy && self.ctx.mirrors().is_none();
        let reason = command.and_then(|info| pin::pin_reason(info, args, proxy_auth));
        if reason == Some(PinReason::Watch) {
            // Until an EXEC, DISCARD, UNWATCH or RESET is answered (see `track_watch`).
            self.watching = true;
        }
        let idle = self.pending.is_empty() && self.to_upstream.is_empty();
        match &self.upstream {
            Some(Link::Shared(link)) => {
                // WAIT's answer counts the replicas that acknowledged this connection's writes:
                // it runs where the client's writes went, and the client stays pinned after.
                let reason = match reason {
                    Some(PinReason::Wait) => {
                        self.pin_after = Some(PinReason::Wait);
                        return true;
                    }
                    Some(PinReason::ConnectionState) => match self.login_key(command, args) {
                        // The credentials the connection is logged in with: nothing changes,
                        // accepted or refused.
                        Some(key) if key == self.state_key() => return true,
                        Some(key)
                            if idle
                                && self.ctx.pool.as_ref().is_some_and(|p| p.has_group(&key)) =>
                        {
                            self.login_trial = Some(LoginTrial { key, sent: false });
                            self.relink = Some(Relink::Join);
                            return false;
                        }
                        _ => PinReason::ConnectionState,
                    },
                    Some(reason) => reason,
                    None => match self.pin_after {
                        Some(reason) => reason,
                        None if self.held_by_pause(command) => PinReason::HeldByPause,
                        None => {
                            // Behind another client's deep pipeline or long script: wait for one's
                            // own command only, on a less busy connection (between replies).
                            let upstream = &self.ctx.config.upstream;
                            let (replies, stall) =
                                (upstream.pool_busy_replies, upstream.pool_stall);
                            if idle && !self.stay_put && link.is_busy(replies, stall) {
                                self.relink = Some(Relink::Relieve);
                                return false;
                            }
                            self.stay_put = false;
                            return true;
                        }
                    },
                };
                if idle {
                    self.relink = Some(Relink::Pin(reason));
                }
                false
            }
            Some(Link::Dedicated { .. }) => {
                if let Some(reason) = reason {
                    self.pinned_for_good |= reason.for_good();
                    return true;
                }
                // A command a known write pause holds stays here: unpinned, it would be
                // pinned again at once, back and forth, and never sent.
                if idle && self.unpinnable() && !self.held_by_pause(command) {
                    self.relink = Some(Relink::Unpin);
                    return false;
                }
                true
            }
            None => true,
        }
    }

    /// Shared mode, the client leaving: a connection it was pinned to goes back to the spares
    /// when it is in the shared state.
    pub(super) fn give_back_pinned(&mut self) {
        let Some(pool) = self.ctx.pool.clone() else { return };
        if !(self.pending.is_empty() && self.to_upstream.is_empty() && self.unpinnable()) {
            return;
        }
        if let Some(Link::Dedicated { stream, moved, .. }) = self.upstream.take() {
            pool.give_back(&self.state_key(), stream, self.lib_info(), moved);
        }
    }

    /// True when `command` would wait on its connection for a write pause Redis accepted
    /// through this proxy (`pool::pause`).
    fn held_by_pause(&self, command: Option<&CommandInfo>) -> bool {
        let paused = self.ctx.pool.as_ref().is_some_and(|pool| pool.writes_paused());
        paused && command.is_some_and(pin::held_by_write_pause)
    }

    /// Nothing holds this client to its own connection any more.
    fn unpinnable(&self) -> bool {
        // A login the key does not name (AUTH inside MULTI) keeps the client where it is.
        let login_is_shared = match self.ctx.config.auth.mode {
            AuthMode::Passthrough => {
                !self.session.logged_in || matches!(self.client_login, Login::As { .. })
            }
            AuthMode::Proxy => true,
        };
        login_is_shared
            && !self.pinned_for_good
            && self.pin_after.is_none()
            && self.replication.is_none()
            && !self.watching
            && !self.session.in_multi
            && !self.session.monitor
            && !self.session.silenced()
            && !self.session.subscriptions.any()
            && self.session.name.is_none()
    }

    /// After a reply: an answered EXEC, DISCARD, UNWATCH or RESET ends a WATCH.
    pub(super) fn track_watch(&mut self, slot: &Slot) {
        if self.watching
            && (matches!(slot.effect, Effect::Exec | Effect::Discard | Effect::Reset)
                || slot.command.as_deref().is_some_and(|info| info.name == "unwatch"))
        {
            self.watching = false;
        }
    }

    /// Makes the move `placed` asked for. Nothing is in flight (for `Replace`, nothing on
    /// the connection that is gone).
    pub(super) async fn relink(&mut self) {
        let Some(relink) = self.relink.take() else { return };
        let Some(pool) = self.ctx.pool.clone() else { return };
        let key = self.state_key();
        let tls = self.ctx.upstream_tls();
        match relink {
            Relink::Pin(reason) => self.pin(&pool, &key, tls.as_deref(), reason).await,
            Relink::Join => {
                let joined = self.login_trial.as_ref().and_then(|trial| pool.join(&trial.key));
                match joined {
                    Some(link) => {
                        self.reset_upstream_reader();
                        self.upstream = Some(Link::Shared(link));
                    }
                    None => {
                        // The group is gone: the AUTH runs on a connection of its own.
                        self.login_trial = None;
                        let reason = PinReason::ConnectionState;
                        self.pin(&pool, &key, tls.as_deref(), reason).await;
                    }
                }
            }
            Relink::Unpin => {
                if let Some(Link::Dedicated { stream, moved, .. }) = self.upstream.take() {
                    pool.give_back(&key, stream, self.lib_info(), moved);
                    self.submitted = self.pending.sent();
                }
                self.reset_upstream_reader();
                self.link_shared(key).await;
            }
            Relink::Relieve => {
                let Some(Link::Shared(from)) = &self.upstream else { return };
                match pool.relieve(key, tls.as_deref(), from.id()).await {
                    Some(link) => {
                        self.ctx.metrics.upstream_relieved();
                        self.reset_upstream_reader();
                        self.upstream = Some(Link::Shared(link));
                    }
                    None => self.stay_put = true,
                }
            }
            Relink::Replace | Relink::Back => {
                self.reset_upstream_reader();
                self.link_shared(key).await;
                if self.upstream.is_none() && relink == Relink::Replace {
                    // Redis is gone (or refuses this login now): a direct client's connection
                    // would have closed with it, commands written or not.
                    self.upstream_closed();
                }
            }
        }
    }

    /// A connection of its own in state `key`, for `reason`.
    async fn pin(
        &mut self,
        pool: &crate::proxy::pool::Pool,
        key: &StateKey,
        tls: Option<&crate::proxy::upstream::UpstreamTls>,
        reason: PinReason,
    ) {
        match pool.dedicated(key, tls).await {
            Ok(Dedicated { stream, fresh, lib, moved }) => {
                self.ctx.metrics.upstream_pin(reason.as_str());
                self.pinned_for_good |= reason.for_good();
                self.pin_after = None;
                let metrics = &self.ctx.metrics;
                self.upstream = Some(Link::dedicated(stream, moved, metrics, "pinned"));
                self.reset_upstream_reader();
                self.set_up_pinned(key, fresh, &lib, Instant::now());
            }
            Err(error) => self.upstream_unavailable(error.to_string()),
        }
    }

    /// Takes a shared connection in state `key` (at start, after a move or a reconnect).
    pub(super) async fn link_shared(&mut self, mut key: StateKey) {
        self.login_trial = None;
        let Some(pool) = self.ctx.pool.clone() else { return };
        let tls = self.ctx.upstream_tls();
        // Passthrough, not logged in: as Redis would have logged in a new connection when the
        // client connected (or reset), decided once (`pool::implicit`); a client found to need
        // a login asks again, and at once when a connection made for it was logged in.
        let implicit = self.ctx.config.auth.mode == AuthMode::Passthrough
            && matches!(key.login, Login::Default | Login::Unauthenticated);
        let undecided =
            self.implicit_since.is_some() || self.client_login == Login::Unauthenticated;
        if implicit && undecided {
            let since = self.implicit_since.take().unwrap_or_else(Instant::now);
            self.client_login = pool.implicit_login(since, tls.as_deref()).await;
            key.login = self.client_login.clone();
        }
        let mut linked = pool.link(key.clone(), tls.as_deref()).await;
        if implicit && matches!(linked, Err(PoolError::Reopened { .. })) {
            self.client_login = pool.implicit_login(Instant::now(), tls.as_deref()).await;
            key.login = self.client_login.clone();
            linked = pool.link(key, tls.as_deref()).await;
        }
        match linked {
            Ok(link) => self.upstream = Some(Link::Shared(link)),
            Err(error) => self.upstream_unavailable(error.to_string()),
        }
    }

    fn upstream_unavailable(&mut self, error: String) {
        tracing::warn!(%error, "no upstream connection for the client");
        self.upstream = None;
        self.upstream_error = error;
        self.last_connect_attempt = Instant::now();
    }

    /// The library the client gave with `CLIENT SETINFO`, as Redis confirmed it.
    fn lib_info(&self) -> LibInfo {
        (self.session.lib_name.clone(), self.session.lib_ver.clone())
    }

    /// Puts a connection to pin to in the session's state before the client's command: a new
    /// one (`fresh`) gets the proxy's login, protocol and database; every one gets the library
    /// name and version Redis accepted in `CLIENT SETINFO` where it has another (`lib`:
    /// a spare carries its last client's; empty values clear them).
    ///
    /// Redis keeps the protocol and the database across `AUTH`, and a client may run as a user
    /// that may not run `HELLO` or `SELECT` in a database it chose before logging in: on a new
    /// connection that logs in, both are sent before the login (as its first user) and again
    /// after it, where only a refusal of both fails the connection.
    fn set_up_pinned(&mut self, key: &StateKey, fresh: bool, lib: &LibInfo, now: Instant) {
        let mut setup = Vec::new();
        if fresh {
            let presets = key.presets();
            let passthrough_login = match (self.ctx.config.auth.mode, &key.login) {
                (AuthMode::Passthrough, Login::As { user, password }) => {
                    Some(encode::command(&[b"AUTH", user, &password.0]))
                }
                _ => None,
            };
            let logs_in =
                passthrough_login.is_some() || self.ctx.config.auth.mode == AuthMode::Proxy;
            self.presets_before_login.clear();
            if logs_in {
                for (preset, command) in &presets {
                    self.to_upstream.push(command.clone());
                    self.pending.push(Slot::internal(Internal::BeforeLogin(*preset), now));
                }
            }
            self.login_upstream(now);
            if let Some(login) = passthrough_login {
                self.to_upstream.push(login);
                self.pending.push(Slot::internal(Internal::Setup { required: true }, now));
            }
            for (preset, command) in presets {
                self.to_upstream.push(command);
                let internal = match logs_in {
                    true => Internal::AfterLogin(preset),
                    false => Internal::Setup { required: true },
                };
                self.pending.push(Slot::internal(internal, now));
            }
        }
        let setinfo = [Bytes::from_static(b"client"), Bytes::from_static(b"setinfo")];
        if self.commands.resolve(&setinfo).is_some() {
            for (option, value, had) in [
                (&b"LIB-NAME"[..], &self.session.lib_name, &lib.0),
                (&b"LIB-VER"[..], &self.session.lib_ver, &lib.1),
            ] {
                if value != had {
                    let value = value.as_deref().unwrap_or_default();
                    setup.push((encode::command(&[b"CLIENT", b"SETINFO", option, value]), false));
                }
            }
        }
        for (command, required) in setup {
            self.to_upstream.push(command);
            self.pending.push(Slot::internal(Internal::Setup { required }, now));
        }
    }

    pub(super) fn reset_upstream_reader(&mut self) {
        self.scanner =
            crate::resp::reply::ReplyScanner::new(self.ctx.config.proxy.limits.reply_max_depth);
        self.upstream_in.clear();
        self.upstream_scanned = 0;
        self.upstream_protocol_error = false;
    }

    /// Hands what waits in `to_upstream` to the shared connection. False: the shared
    /// connection is gone with nothing of this client's on it, so the client moves.
    pub(super) fn submit_shared(&mut self) -> bool {
        let Some(Link::Shared(link)) = &self.upstream else { return true };
        let replies = self.pending.sent() - self.submitted;
        match link.submit(&mut self.to_upstream, u32::try_from(replies).unwrap_or(u32::MAX)) {
            Ok(()) => {
                self.submitted = self.pending.sent();
                true
            }
            Err(_) if !link.is_lost() => {
                self.relink = Some(Relink::Replace);
                false
            }
            Err(lost) => {
                self.link_lost(lost);
                true
            }
        }
    }

    /// The upstream connection is gone with commands of this client on it (or, dedicated,
    /// at all).
    pub(super) fn link_lost(&mut self, lost: Lost) {
        match lost {
            Lost::Closed => self.upstream_closed(),
            Lost::Failed(cause) => self.upstream_lost(&cause),
            Lost::Overflow => {
                tracing::warn!("closing client that left more replies unread than upstream.pool_unread_max_bytes");
                self.close_reason.get_or_insert("output_buffer_limit");
                self.drop_upstream();
            }
        }
    }

    /// Shared mode answers QUIT itself (it would close the connection for every client on it):
    /// the reply, when it does. `CLIENT SETINFO` is not answered here but sent on the shared
    /// connection, whose login is the client's: Redis's ACL (NOAUTH, NOPERM, its ACL LOG) and
    /// validation decide, and what it accepts is kept in the session, given to any connection
    /// the client pins to.
    pub(super) fn answer_shared(&mut self, effect: &Effect) -> Option<LocalReply> {
        if !matches!(self.upstream, Some(Link::Shared(_))) {
            return None;
        }
        match effect {
            Effect::Quit => {
                self.reading_client = false;
                Some(LocalReply {
                    bytes: Bytes::from_static(encode::OK),
                    status: ReplyStatus::Ok,
                    close_after: true,
                })
            }
            _ => None,
        }
    }
}
