//! A command's completion: the status of its reply, what the reply confirms to the session
//! and to the shared caches, and the record emitted in the command's turn.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::replies::{error_code_of, password_of, Route};
use super::Connection;
use crate::command::Class;
use crate::config::AuthMode;
use crate::event::{ReplySource, ReplyStatus};
use crate::proxy::pipeline::{Expect, Slot};
use crate::proxy::session::Effect;

impl<C> Connection<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    /// The head slot's status from the reply just framed (or its substitute).
    pub(super) fn status_of(&self, slot: &Slot) -> (ReplyStatus, Option<Bytes>) {
        let info = self.scanner.reply();
        if let Some(substitute) = &slot.substitute {
            let code =
                (substitute.status == ReplyStatus::Error).then(|| error_code_of(&substitute.bytes));
            return (substitute.status, code);
        }
        if info.is_error() {
            (ReplyStatus::Error, info.head.known_error_code().map(Bytes::copy_from_slice))
        } else if info.kind == b'+' && info.head.as_bytes() == b"QUEUED" {
            (ReplyStatus::Queued, None)
        } else {
            (ReplyStatus::Ok, None)
        }
    }

    /// The head slot got its whole reply: apply what it confirms, then emit its record.
    pub(super) fn complete(
        &mut self,
        mut slot: Slot,
        status: ReplyStatus,
        error_code: Option<Bytes>,
        now: Instant,
    ) {
        let info = self.scanner.reply();
        let (kind, is_null) = (info.kind, info.is_null());
        let protocol_error = info.head.as_bytes().starts_with(b"ERR Protocol error");
        let by_default = self.authenticated_by_default();
        let forwarded_as_sent = slot.substitute.is_none();
        let mut replaced = false;
        if slot.proxy_acl_log && status == ReplyStatus::Ok {
            let resp3 = self.session.protocol == 3;
            let bytes = self.ctx.acl_log_reply(&slot.args, resp3);
            slot.reply_bytes = bytes.len() as u64;
            if self.delivered_in_turn(&slot, ReplyStatus::Ok) {
                self.queue_own_reply(bytes);
            }
            replaced = true;
        }
        if let Some(substitute) = slot.substitute.take() {
            slot.reply_bytes = substitute.bytes.len() as u64;
            if self.delivered_in_turn(&slot, substitute.status) {
                self.queue_own_reply(substitute.bytes);
            }
        }
        if matches!(slot.effect, Effect::Auth(_) | Effect::Hello { user: Some(_), .. }) {
            self.auth_in_flight = self.auth_in_flight.saturating_sub(1);
        }
        let withheld = status != ReplyStatus::Skipped && !self.delivered_in_turn(&slot, status);
        if status == ReplyStatus::Error && forwarded_as_sent {
            self.upstream_protocol_error = protocol_error;
        }
        if forwarded_as_sent && self.ctx.config.auth.mode == AuthMode::Passthrough {
            self.learn_authentication(&slot, status, error_code.as_deref());
        }
        if forwarded_as_sent {
            self.note_security(&slot, status, error_code.as_deref());
        }
        // The record carries the user and database the command ran with.
        let ran_as = self.ran_as();
        self.session.end_of_command();
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
                    let elements = self.scanner.take_child_status();
                    self.session.apply_exec(&elements, by_default);
                } else {
                    self.session.apply(&Effect::Exec, by_default);
                }
            }
            ReplyStatus::Ok | ReplyStatus::Skipped => {
                self.session.apply(&slot.effect, by_default);
                self.learn_from(&slot);
            }
            // EXECABORT, or a DISCARD Redis refused: the transaction is over either way.
            ReplyStatus::Error
                if matches!(slot.effect, Effect::Exec | Effect::Discard)
                    && self.session.in_multi =>
            {
                self.session.apply(&slot.effect, by_default);
            }
            _ => {}
        }
        if slot.effect == Effect::Reset && status == ReplyStatus::Ok {
            self.runs_as_mirror = false;
        }
        self.track_watch(&slot);
        if forwarded_as_sent {
            self.track_login(&slot, status);
        }
        self.settle_login_trial(&slot, status);
        if slot.effect == Effect::Replicate {
            // Redis refused it: an ordinary connection again.
            self.replication = None;
        }
        if self.session.user != ran_as.user {
            let event = self.session_event(crate::event::SessionAction::Auth, None);
            self.ctx.sink.session(event);
        }
        if slot.effect == Effect::Quit {
            self.close_when_flushed = true;
            self.close_reason.get_or_insert("quit");
        }
        let status = if withheld { ReplyStatus::Skipped } else { status };
        let source =
            if forwarded_as_sent && !replaced { ReplySource::Upstream } else { ReplySource::Proxy };
        self.emit(slot, status, error_code, source, now, ran_as);
    }

    /// Whether the reply of the slot completing now went to the client.
    pub(super) fn delivered_in_turn(&self, slot: &Slot, status: ReplyStatus) -> bool {
        if matches!(slot.expect, Expect::Confirmations { .. }) {
            return true;
        }
        if status == ReplyStatus::Error {
            return !self.session.silenced();
        }
        slot.effect.answered_when(self.session.reply_mode)
    }

    /// Queues a reply the proxy wrote itself (see `has_room_for_requests`).
    pub(super) fn queue_own_reply(&mut self, bytes: Bytes) {
        self.flush_streamed();
        self.to_client.push(bytes);
        self.local_end = self.to_client.pushed();
    }

    /// Passthrough: what Redis's replies show about whether this client must AUTH first. A
    /// command Redis ran for a client that never authenticated proves no AUTH is needed;
    /// `-NOAUTH` proves one is.
    fn learn_authentication(&mut self, slot: &Slot, status: ReplyStatus, code: Option<&[u8]>) {
        if code == Some(b"NOAUTH") {
            self.session.authenticated = false;
            self.ctx.set_auth_required(true);
        } else if status != ReplyStatus::Error
            && !self.session.authenticated
            && !slot.effect.is_no_auth()
        {
            self.session.authenticated = true;
            self.ctx.set_auth_required(false);
        }
    }

    /// What a successful reply teaches the shared caches: the class a script declares (for
    /// EVALSHA), the functions a library registers (for FCALL), a new command table after
    /// MODULE LOAD, and the live table behind `requirepass` (passthrough) after an AUTH.
    fn learn_from(&self, slot: &Slot) {
        let Some(command) = &slot.command else { return };
        match command.name.as_str() {
            "eval" | "eval_ro" | "script|load" => {
                let body =
                    if command.name == "script|load" { slot.args.get(2) } else { slot.args.get(1) };
                if let Some(body) = body {
                    self.ctx.learn_script(body);
                }
            }
            "function|load" => {
                if let Some(code) = slot.args.last().filter(|_| slot.args.len() >= 3) {
                    self.ctx.learn_library(code);
                }
            }
            "module|load" | "module|loadex" | "module|unload" => self.ctx.refresh_commands(),
            "client|pause" | "client|unpause" => {
                if let Some(pool) = &self.ctx.pool {
                    pool.pause_accepted(&slot.args);
                }
            }
            "auth" | "hello" if self.ctx.config.auth.mode == AuthMode::Passthrough => {
                if let Effect::Auth(user) | Effect::Hello { user: Some(user), .. } = &slot.effect {
                    if let Some(password) = password_of(&slot.args) {
                        self.ctx.refresh_commands_as(user, password);
                    }
                }
            }
            _ => {}
        }
    }

    /// Releases the head slots the proxy answered itself, in their turn, unless a reply from
    /// Redis is part-way through being forwarded (its bytes must not be split).
    pub(super) fn release_ready_slots(&mut self, now: Instant) {
        if self.scanner.is_mid_reply() && self.route != Route::Discard {
            return;
        }
        while self.pending.front().is_some_and(|slot| slot.local.is_some()) {
            let Some(mut slot) = self.pending.pop_front() else { return };
            let Some(reply) = slot.local.take() else { continue };
            let delivered = self.delivered_in_turn(&slot, reply.status);
            self.session.end_of_command();
            if delivered {
                slot.reply_bytes = reply.bytes.len() as u64;
                self.queue_own_reply(reply.bytes.clone());
                if reply.close_after {
                    self.close_when_flushed = true;
                    self.reading_client = false;
                }
            } else if reply.close_after {
                // With replies off, Redis swallows the error, and with nothing left to
                // write it never reaches its close-after-reply: the connection stays open
                // and whatever follows is ignored. So here too.
                self.discarding_input = true;
                self.reading_client = true;
                self.client_in.clear();
            }
            if slot.internal.is_some() {
                continue;
            }
            let status = if delivered { reply.status } else { ReplyStatus::Skipped };
            let code = (status == ReplyStatus::Error).then(|| error_code_of(&reply.bytes));
            self.emit(slot, status, code, ReplySource::Proxy, now, self.ran_as());
        }
    }
}
