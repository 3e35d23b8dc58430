//! Request intake: decodes what the client sent, puts each command through the gate, and
//! forwards it, answers it, or holds it until the commands before it are answered.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::Connection;
use crate::acl::commands::{self, Answer};
use crate::command::{extract_keys, Class, CommandInfo, Keys};
use crate::config::cluster::ClusterMode;
use crate::config::{AuthMode, LogSource, OnError, OnFull};
use crate::event::ReplyStatus;
use crate::proxy::auth::{self, Outcome};
use crate::proxy::cluster::TOPOLOGY_COMMANDS;
use crate::proxy::gate::{self, Abort, Decision, Refusal, Service};
use crate::proxy::pipeline::{Expect, Internal, LocalReply, Slot};
use crate::proxy::session::{Effect, ReplyMode};
use crate::resp::encode;
use crate::resp::request::Request;

/// An unknown command Redis refuses at queue time whatever the user's permissions, which
/// makes it discard the transaction at EXEC: sent in place of a command the proxy refused
/// inside MULTI, so that the upstream transaction fails as Redis's own would.
const ABORT_TRANSACTION: &[u8] = b"*1\r\n$28\r\nredis-audit-proxy|abort-multi\r\n";
/// Sent in place of an EXEC the proxy refused inside MULTI.
const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";
/// Sent after a client's `CLIENT REPLY OFF|SKIP` (see [`Internal::ReplyProbe`]).
const REPLY_PROBE: &[u8] = b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$2\r\nON\r\n";
/// What the proxy answers while the audit trail cannot take records (`on_full = "reject"`,
/// `on_error = "reject"`): what cannot be recorded is not run.
const AUDIT_UNAVAILABLE: &[u8] = b"-ERR audit trail unavailable: the audit queue is full or the disk is failing, command not executed\r\n";

/// A decoded request with what the table says about it.
struct Classified {
    request: Request,
    command: Option<Arc<CommandInfo>>,
    keys: Keys,
    effect: Effect,
}

impl Classified {
    /// Its slot (static class, keys, effect), and the bytes the client sent.
    fn into_slot(self, now: Instant) -> (Slot, Bytes) {
        let Request { raw, args, .. } = self.request;
        let mut slot = Slot::client(args, raw.len() as u64, now);
        slot.class = self.command.as_deref().map(Class::of);
        slot.command = self.command;
        slot.keys = self.keys;
        slot.effect = self.effect;
        (slot, raw)
    }
}

impl<C> Connection<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    /// Decodes every complete request in `client_in` and forwards or answers each.
    pub(super) fn decode_requests(&mut self, now: Instant) {
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
        match &self.replication {
            Some(replication) if replication.started() => return self.forward_replica_bytes(),
            Some(_) => {
                // Nothing more until Redis answers the SYNC / PSYNC.
                self.decode_stalled = true;
                return;
            }
            None => {}
        }
        while self.reading_client && self.replication.is_none() {
            if let Some(request) = self.waiting.take() {
                if !self.handle_request(request, now) {
                    self.decode_stalled = true;
                    return;
                }
                continue;
            }
            let awaiting_auth = self.auth_in_flight > 0 && !self.session.authenticated;
            if awaiting_auth || !self.has_room_for_requests() {
                self.decode_stalled = true;
                return;
            }
            match self.decoder.decode(&mut self.client_in, self.session.authenticated) {
                Ok(Some(request)) => {
                    if !self.handle_request(request, now) {
                        self.decode_stalled = true;
                        return;
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::debug!(%error, "protocol error from client");
                    self.close_reason.get_or_insert("protocol_error");
                    // Nothing more is read; if `CLIENT REPLY OFF` swallows the error, reading
                    // resumes and ignores what comes, as Redis does (see `release_ready_slots`).
                    self.reading_client = false;
                    let args = vec![Bytes::from_static(b"(protocol-error)")];
                    let reply = LocalReply {
                        bytes: error.to_reply(),
                        status: ReplyStatus::Error,
                        close_after: true,
                    };
                    self.push_local(Slot::client(args, 0, now), reply, now);
                    return;
                }
            }
        }
    }

    /// Puts one request through the gate and carries out the decision. Returns false when
    /// the request must wait for the commands in flight (it is kept in `waiting`).
    fn handle_request(&mut self, request: Request, now: Instant) -> bool {
        let command = self.commands.resolve(&request.args).cloned();
        let mut keys = Keys::new();
        if let Some(info) = &command {
            extract_keys(info, &request.args, &mut keys);
        }
        let effect = Effect::of(&request.args);
        let item = Classified { request, command, keys, effect };
        let audit = &self.ctx.config.audit;
        if (audit.on_full == OnFull::Reject && self.ctx.sink.is_full())
            || (audit.on_error == OnError::Reject && self.ctx.sink.is_failing())
        {
            if self.pending.multi_unsettled() {
                self.waiting = Some(item.request);
                return false;
            }
            let abort = if self.session.in_multi { Abort::Queued } else { Abort::None };
            let reply = Bytes::from_static(AUDIT_UNAVAILABLE);
            self.refuse(item, Refusal { reply, denial: None, abort }, false, now);
            return true;
        }
        if self.upstream.is_none() {
            let reply = if item.effect == Effect::Quit {
                self.reading_client = false;
                LocalReply {
                    bytes: Bytes::from_static(encode::OK),
                    status: ReplyStatus::Ok,
                    close_after: true,
                }
            } else {
                LocalReply::from_bytes(encode::error(&format!("ERR {}", self.upstream_error)))
            };
            let (mut slot, _) = item.into_slot(now);
            slot.effect = Effect::None;
            self.push_local(slot, reply, now);
            return true;
        }
        let policy = self.current_policy();
        let view = gate::View {
            user: &self.session.user,
            authenticated: self.session.authenticated,
            in_multi: self.session.in_multi,
            user_unsettled: self.pending.user_unsettled(),
            multi_unsettled: self.pending.multi_unsettled(),
            resp2_subscribed: self.session.in_resp2_pubsub(),
            monitor: self.session.monitor,
            pubsub_unsettled: self.pending.pubsub_unsettled(),
            idle: self.pending.is_empty(),
            auth_mode: self.ctx.config.auth.mode,
            upstream_is_client_user: self.ctx.config.auth.mode == AuthMode::Passthrough
                || self.runs_as_mirror,
        };
        let command = gate::Command {
            info: item.command.as_deref(),
            args: &item.request.args,
            keys: &item.keys,
            effect: &item.effect,
        };
        let decision = gate::decide(&view, &command, policy.as_deref());
        let may_forward = matches!(
            decision,
            Decision::Forward { .. } | Decision::Serve(Service::AclCommand | Service::Authenticate)
        );
        // Shared mode: a command Redis will run may first need a connection of its own (the
        // gate is pure: it decides the same again once the move is made).
        if may_forward && !self.placed(item.command.as_deref(), &item.request.args) {
            self.waiting = Some(item.request);
            return false;
        }
        let topology = self.ctx.config.cluster.mode == ClusterMode::Sidecar
            && item
                .command
                .as_deref()
                .is_some_and(|c| TOPOLOGY_COMMANDS.contains(&c.name.as_str()));
        if topology && may_forward && self.pending.multi_unsettled() {
            // Refused inside MULTI (below): whether it is inside depends on the MULTI in flight.
            self.waiting = Some(item.request);
            return false;
        }
        match decision {
            Decision::Wait => {
                self.waiting = Some(item.request);
                return false;
            }
            Decision::Forward { observed } => {
                if let (Some(denial), Some(policy)) = (observed, &policy) {
                    self.record_denial(policy, &denial, &item.command, &item.request.args, false);
                }
                if topology && self.session.in_multi {
                    // EXEC's reply would carry the topology nested, past the rewrite.
                    let name = item.command.as_deref().map_or("", |c| c.name.as_str());
                    let text = format!(
                        "ERR '{name}' inside MULTI is not supported by the proxy in cluster sidecar mode"
                    );
                    let refusal =
                        Refusal { reply: encode::error(&text), denial: None, abort: Abort::Queued };
                    self.refuse(item, refusal, false, now);
                    return true;
                }
                self.forward(item, now);
            }
            Decision::Refuse(refusal) => {
                if let (Some(denial), Some(policy)) = (refusal.denial, &policy) {
                    self.record_denial(policy, &denial, &item.command, &item.request.args, true);
                }
                self.refuse(item, refusal, true, now);
            }
            Decision::Serve(service) => self.serve(service, item, now),
        }
        true
    }

    /// Sends the client's own bytes to Redis.
    fn forward(&mut self, item: Classified, now: Instant) {
        if item.command.is_some() {
            if let Some(reply) = self.answer_shared(&item.effect) {
                let (mut slot, _) = item.into_slot(now);
                slot.effect = Effect::None;
                return self.push_local(slot, reply, now);
            }
        }
        let class = item.command.as_deref().map(|info| self.class_of(info, &item.request.args));
        let effect = item.effect.clone();
        let expect = match effect {
            Effect::Subscribe(family) | Effect::Unsubscribe(family) => Expect::Confirmations {
                family,
                subscribe: matches!(effect, Effect::Subscribe(_)),
                named: item.request.args.len() as u64 - 1,
                remaining: None,
            },
            _ => Expect::One,
        };
        let probe = matches!(effect, Effect::ClientReply(ReplyMode::Off | ReplyMode::Skip))
            && !self.session.in_multi;
        match &effect {
            Effect::Quit => self.reading_client = false,
            Effect::Auth(_) | Effect::Hello { user: Some(_), .. } => self.auth_in_flight += 1,
            Effect::Replicate => {
                self.replication = Some(super::replication::Replication::Handshake);
            }
            _ => {}
        }
        let proxy_acl_log = self.policy.is_none()
            && self.ctx.config.acl.log_source == LogSource::Proxy
            && item.command.as_deref().is_some_and(|info| info.name == "acl|log");
        let (mut slot, raw) = item.into_slot(now);
        slot.class = class;
        slot.expect = expect;
        slot.probe_follows = probe;
        slot.proxy_acl_log = proxy_acl_log;
        self.to_upstream.push(raw);
        self.pending.push(slot);
        if probe {
            self.to_upstream.push(Bytes::from_static(REPLY_PROBE));
            self.pending.push(Slot::internal(Internal::ReplyProbe, now));
        }
        if effect == Effect::Reset {
            // Redis logs the connection out: log it in again as the reset session will be.
            let by_default = self.authenticated_by_default();
            self.login_upstream_as(b"default", by_default, now);
        }
    }

    /// Answers a refused command; inside MULTI Redis is sent a stand-in so that the
    /// transaction fails as Redis's own would. `grouped`: its record may count with identical
    /// refusals (the gate's, not the audit trail's own).
    fn refuse(&mut self, item: Classified, refusal: Refusal, grouped: bool, now: Instant) {
        let (mut slot, _) = item.into_slot(now);
        slot.effect = Effect::None;
        slot.refused = grouped;
        let reply = LocalReply::from_bytes(refusal.reply);
        match refusal.abort {
            Abort::None => self.push_local(slot, reply, now),
            Abort::Queued | Abort::Exec => {
                let (stand_in, effect) = if refusal.abort == Abort::Exec {
                    (DISCARD, Effect::Discard)
                } else {
                    (ABORT_TRANSACTION, Effect::None)
                };
                self.to_upstream.push(Bytes::from_static(stand_in));
                slot.effect = effect;
                slot.substitute = Some(Box::new(reply));
                self.pending.push(slot);
            }
        }
    }

    /// Commands the proxy answers itself.
    fn serve(&mut self, service: Service, item: Classified, now: Instant) {
        let reply = match service {
            Service::AclLog => {
                let resp3 = self.session.protocol == 3;
                LocalReply::from_bytes(self.ctx.acl_log_reply(&item.request.args, resp3))
            }
            Service::AclCommand => match self.acl_command(&item) {
                Some(reply) => reply,
                None => return self.forward(item, now),
            },
            Service::Authenticate => return self.authenticate(item, now),
            Service::NoReply => LocalReply::from_bytes(Bytes::new()),
        };
        let (mut slot, _) = item.into_slot(now);
        slot.effect = Effect::None;
        self.push_local(slot, reply, now);
    }

    /// An ACL subcommand about the proxy's users; `None` when Redis answers it.
    fn acl_command(&mut self, item: &Classified) -> Option<LocalReply> {
        let policy = self.current_policy()?;
        let name = item.command.as_deref().map_or("", |c| c.name.as_str());
        let resp3 = self.session.protocol == 3;
        let user = self.session.user.clone();
        let answer =
            commands::answer(&policy, &self.commands, &user, resp3, name, &item.request.args)?;
        let bytes = match answer {
            Answer::Reply(bytes) => bytes,
            Answer::ChangeUsers { text, command, then } => {
                match self.ctx.change_users(text, command) {
                    Ok(()) => then,
                    Err(error) => encode::error(&format!("ERR {error}")),
                }
            }
            Answer::Load => match self.ctx.reload_policy() {
                Ok(_) => Bytes::from_static(encode::OK),
                Err(error) => encode::error(&format!("ERR {error}")),
            },
            Answer::Save => match self.ctx.save_users() {
                Ok(()) => Bytes::from_static(encode::OK),
                Err(_) => encode::error(commands::SAVE_FAILED),
            },
        };
        Some(LocalReply::from_bytes(bytes))
    }

    /// `auth.mode = "proxy"`: AUTH and HELLO's AUTH option are checked against the users
    /// file and answered here with Redis's replies; credentials never reach Redis. The
    /// session's user changes when the proxy accepts them; with mirrored users the upstream
    /// connection logs in as the new user's mirror before anything else is sent.
    fn authenticate(&mut self, item: Classified, now: Instant) {
        let Some(policy) = self.current_policy() else { return self.forward(item, now) };
        let outcome = auth::authenticate(&policy, &item.request.args, self.session.logged_in);
        if outcome == Outcome::Forward {
            return self.forward(item, now);
        }
        let object = item.request.args[0].clone();
        let (mut slot, _) = item.into_slot(now);
        slot.effect = Effect::None;
        match outcome {
            Outcome::Refused { reply, failure } => {
                if let Some(failure) = failure {
                    self.authentication_failed(
                        "auth",
                        Some(failure.username),
                        object,
                        failure.command,
                        &policy,
                    );
                }
                self.push_local(slot, LocalReply::from_bytes(reply), now);
            }
            Outcome::LoggedIn { user, forward } => {
                self.authenticated_as(user, "auth", object, &policy);
                if self.ctx.mirrors().is_some() {
                    self.login_upstream(now);
                }
                match forward {
                    None => self.push_local(
                        slot,
                        LocalReply::from_bytes(Bytes::from_static(encode::OK)),
                        now,
                    ),
                    Some(hello) => {
                        // HELLO without its AUTH option: the protocol and name are Redis's.
                        slot.effect = Effect::of(&hello.args);
                        self.to_upstream.push(hello.raw);
                        self.pending.push(slot);
                    }
                }
            }
            Outcome::Forward => {}
        }
    }

    /// Queues a command Redis will not see, answered with `reply` in its turn.
    pub(super) fn push_local(&mut self, mut slot: Slot, reply: LocalReply, now: Instant) {
        slot.local = Some(Box::new(reply));
        self.pending.push(slot);
        self.release_ready_slots(now);
    }

    /// The command's class: static from its flags, except for scripts that declare theirs
    /// (EVAL's shebang, remembered by SHA1 once Redis ran it; SCRIPT LOAD teaches it too) and
    /// for FCALL of a function whose library Redis loaded through the proxy.
    fn class_of(&self, command: &CommandInfo, args: &[Bytes]) -> Class {
        let declared = match command.name.as_str() {
            "eval" | "eval_ro" => args.get(1).and_then(|body| Class::of_script(body)),
            "evalsha" | "evalsha_ro" => args.get(1).and_then(|sha| self.ctx.script_class(sha)),
            "fcall" | "fcall_ro" => args.get(1).and_then(|name| self.ctx.function_class(name)),
            _ => None,
        };
        declared.unwrap_or_else(|| Class::of(command))
    }
}
