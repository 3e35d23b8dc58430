//! What a connection tells the audit: command records (refusals grouped as `ACL LOG` groups
//! them), session events, security events, `ACL LOG` entries and the client's `CLIENT LIST`
//! line.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::Connection;
use crate::acl::config::AclMode;
use crate::acl::log::LogEvent;
use crate::acl::{Denial, Policy, Verdict};
use crate::command::CommandInfo;
use crate::config::cluster::ClusterMode;
use crate::event::{CloseStats, SecurityAction, SecurityEvent, SessionAction, SessionEvent};
use crate::event::{CommandRecord, CommandTally, ReplySource, ReplyStatus};
use crate::proxy::pipeline::Slot;
use crate::proxy::session::Effect;
use crate::util::sync::LockAnyway;
use crate::util::unix_millis;

/// Kinds of refusal (user, command, error) counted at once per connection; a new kind beyond
/// them closes the oldest group.
const GROUPS_KEPT: usize = 64;
/// Longest client name, key or channel an `ACL LOG` entry keeps (as the audit lines cut names).
const MAX_LOGGED_BYTES: usize = 256;

/// Records of refused commands held back to count identical ones: the first of a kind is
/// recorded at once, the repeats within `audit.group_refusals_secs` become one record with a
/// `count`, so a flood of refused commands cannot push evidence out through retention.
#[derive(Debug, Default)]
pub(super) struct RefusalGroup {
    groups: Vec<Group>,
}

#[derive(Debug)]
struct Group {
    command: Bytes,
    code: Option<Bytes>,
    user: Bytes,
    started: Instant,
    /// The latest repeat (its record stands for all of them), and how many there were.
    repeat: Option<CommandRecord>,
    count: u64,
}

/// The user and database a command ran with, as its record shows them.
#[derive(Debug)]
pub(super) struct RanAs {
    pub(super) user: Bytes,
    pub(super) db: u32,
}

impl<C> Connection<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    /// Who is running commands now: what a record carries unless the command changed it.
    pub(super) fn ran_as(&self) -> RanAs {
        RanAs { user: self.session.user.clone(), db: self.session.db }
    }

    /// Emits the record of `slot`, run as `ran_as` (the user and database before the command,
    /// for one that changes them).
    pub(super) fn emit(
        &mut self,
        slot: Slot,
        status: ReplyStatus,
        error_code: Option<Bytes>,
        source: ReplySource,
        now: Instant,
        ran_as: RanAs,
    ) {
        let RanAs { user, db } = ran_as;
        if slot.args.is_empty() {
            return; // the proxy's own command: not the client's
        }
        self.totals.commands += 1;
        self.totals.errors += u64::from(status == ReplyStatus::Error);
        self.totals.bytes_in += slot.request_bytes;
        self.totals.bytes_out += slot.reply_bytes;
        let refused = slot.refused && source == ReplySource::Proxy;
        if !refused && !self.ctx.sink.wants_records() {
            self.ctx.sink.tally(CommandTally {
                command: slot.command.as_deref(),
                class: slot.class,
                status,
                latency: now.saturating_duration_since(slot.started),
                count: 1,
            });
            return;
        }
        // Replies arrive on the link the command went out on: links change only when nothing
        // is in flight.
        let upstream_conn = match &self.upstream {
            Some(super::link::Link::Shared(link)) if source == ReplySource::Upstream => {
                Some(link.id())
            }
            _ => None,
        };
        // In a cluster: which slot the command's keys hash to (the node is the file's upstream).
        let key_slot = (self.ctx.config.cluster.mode == ClusterMode::Sidecar)
            .then(|| slot.keys.first().and_then(|key| slot.args.get(key.index)))
            .flatten()
            .map(|key| crate::command::slot::key_slot(key));
        let record = CommandRecord {
            upstream_conn,
            slot: key_slot,
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
            count: 1,
        };
        if refused {
            if let Some(record) = self.group_refusal(record, now) {
                self.submit(record);
            }
            return;
        }
        self.submit(record);
    }

    fn submit(&mut self, record: CommandRecord) {
        if let Some(ticket) = self.ctx.sink.record(record) {
            // The reply's bytes are framed by now: its last byte waits for the record.
            self.flush_streamed();
            self.durability_gates.push_back((self.to_client.pushed(), ticket));
        }
    }

    /// Counts a refused command into its group; returns the record to emit now, if any.
    fn group_refusal(&mut self, record: CommandRecord, now: Instant) -> Option<CommandRecord> {
        let window = self.refusal_window();
        if window.is_zero() {
            return Some(record);
        }
        self.flush_refusals_older_than(window, now);
        let command = match &record.command {
            Some(info) => Bytes::copy_from_slice(info.name.as_bytes()),
            None => Bytes::from_static(b"(unknown)"),
        };
        let groups = &mut self.refusals.groups;
        let same = |g: &&mut Group| {
            g.command == command && g.code == record.error_code && g.user == record.user
        };
        if let Some(group) = groups.iter_mut().find(same) {
            group.count += 1;
            group.repeat = Some(record);
            return None;
        }
        let evicted = if groups.len() >= GROUPS_KEPT { groups.remove(0).take() } else { None };
        let (code, user) = (record.error_code.clone(), record.user.clone());
        groups.push(Group { command, code, user, started: now, repeat: None, count: 0 });
        if let Some(evicted) = evicted {
            self.submit(evicted);
        }
        Some(record)
    }

    fn refusal_window(&self) -> Duration {
        Duration::from_secs(self.ctx.config.audit.group_refusals_secs)
    }

    /// When the oldest group of refusals closes, if any is open.
    pub(super) fn refusal_deadline(&self) -> Option<Instant> {
        let window = self.refusal_window();
        self.refusals.groups.iter().map(|group| group.started + window).min()
    }

    /// Emits the repeats of the groups opened longer than `window` ago and closes them.
    fn flush_refusals_older_than(&mut self, window: Duration, now: Instant) {
        let mut closed = Vec::new();
        self.refusals.groups.retain_mut(|group| {
            let open = now.saturating_duration_since(group.started) < window;
            if !open {
                closed.extend(group.take());
            }
            open
        });
        for record in closed {
            self.submit(record);
        }
    }

    /// Emits the repeats of every group (at close) or of the expired ones (`expired_only`).
    pub(super) fn flush_refusals(&mut self, expired_only: bool) {
        let window = if expired_only { self.refusal_window() } else { Duration::ZERO };
        self.flush_refusals_older_than(window, Instant::now());
    }

    pub(super) fn session_event(
        &self,
        action: SessionAction,
        close: Option<CloseStats>,
    ) -> SessionEvent {
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

    /// With `tls.user_from`, the client certificate's name is the connection's user when the
    /// users file has it enabled (authenticated without AUTH, as Valkey's
    /// `tls-auth-clients-user`); otherwise the connection stays unauthenticated and a
    /// `tls-cert` security event says why.
    pub(super) fn user_from_certificate(&mut self) {
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
    pub(super) fn authenticated_as(
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
        let changed = self.session.user != user;
        self.session.apply(&Effect::Auth(user), true);
        if changed {
            let event = self.session_event(SessionAction::Auth, None);
            self.ctx.sink.session(event);
        }
    }

    /// The proxy refused an authentication: the security event and the `ACL LOG` entry.
    pub(super) fn authentication_failed(
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
            username: username.map(clip),
            reason,
            context: "toplevel",
            object: Some(clip(object)),
            command: None,
            source: "proxy",
            mode: None,
            policy_version: Some(Arc::clone(&policy.version)),
        }
    }

    /// A denial the proxy decided: a security event and an `ACL LOG` entry.
    pub(super) fn record_denial(
        &self,
        policy: &Policy,
        denial: &Denial,
        command: &Option<Arc<CommandInfo>>,
        args: &[Bytes],
        enforced: bool,
    ) {
        let name = match command {
            Some(info) => info.name.clone(),
            None => String::from_utf8_lossy(&args[0]).to_ascii_lowercase(),
        };
        let object = clip(Bytes::copy_from_slice(denial.object(&name, args)));
        let context = if self.session.in_multi { "multi" } else { "toplevel" };
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
            command: Some(name.clone()),
            source: "proxy",
            mode: Some(if enforced { AclMode::Enforce } else { AclMode::Observe }.as_str()),
            policy_version: Some(Arc::clone(&policy.version)),
        });
        self.log_acl_event(
            denial.reason.as_str(),
            context,
            object,
            self.session.user.clone(),
            &name,
        );
    }

    /// Security events Redis's reply shows: an AUTH / HELLO AUTH accepted or refused, or a
    /// command refused for lack of permission (`-NOPERM`, Redis 7.0 and 7.2+ wordings).
    /// Refusals also enter the proxy's `ACL LOG`.
    pub(super) fn note_security(&mut self, slot: &Slot, status: ReplyStatus, code: Option<&[u8]>) {
        let attempted = match &slot.effect {
            Effect::Auth(user) | Effect::Hello { user: Some(user), .. } => Some(user.clone()),
            _ => None,
        };
        let text = self.scanner.reply().head;
        let contains = |needle: &[u8]| memchr::memmem::find(text.as_bytes(), needle).is_some();
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
            // finds the one Redis refused; without one, a command with a single key or
            // channel names it.
            (SecurityAction::AclDenied, Some(command)) => policy
                .as_ref()
                .and_then(|policy| {
                    match policy.decide(&self.session.user, command, &slot.args, &slot.keys) {
                        Verdict::Deny { denial, .. } if denial.reason.as_str() == reason => {
                            Some(Bytes::copy_from_slice(denial.object(&command.name, &slot.args)))
                        }
                        _ => None,
                    }
                })
                .or_else(|| {
                    let only = match reason {
                        "key" => match slot.keys.as_slice() {
                            [key] => Some(key.index),
                            _ => None,
                        },
                        _ => match crate::command::extract_channels(command, &slot.args)[..] {
                            [channel] => Some(channel.index),
                            _ => None,
                        },
                    };
                    only.and_then(|index| slot.args.get(index).cloned())
                }),
            (SecurityAction::AclDenied, None) => None,
            _ => slot.args.first().cloned(),
        }
        .map(clip);
        let context = if self.session.in_multi { "multi" } else { "toplevel" };
        self.ctx.sink.security(SecurityEvent {
            action,
            time: std::time::SystemTime::now(),
            conn_id: self.session.id,
            client_addr: self.peer,
            user: self.session.user.clone(),
            username: attempted.clone().map(clip),
            reason,
            context,
            object: object.clone(),
            command: (action == SecurityAction::AclDenied)
                .then(|| slot.command.as_ref().map(|c| c.name.clone()))
                .flatten(),
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

    /// Adds an entry to the proxy's `ACL LOG`, with this client's info.
    fn log_acl_event(
        &self,
        reason: &'static str,
        context: &'static str,
        object: Bytes,
        username: Bytes,
        command_name: &str,
    ) {
        let cut = |value: Bytes| value.slice(..value.len().min(MAX_LOGGED_BYTES));
        let event = LogEvent {
            reason,
            context,
            object: cut(object),
            username: cut(username),
            client_info: self.client_info(command_name),
            time_ms: unix_millis(),
        };
        self.ctx.acl_log.lock_anyway().add(event);
    }

    /// This client as `CLIENT LIST` describes it (Redis 7.2 fields), with the real client's
    /// address; the memory fields are the proxy's own buffers for it. Names are cut to 256
    /// bytes.
    fn client_info(&self, command_name: &str) -> String {
        let session = &self.session;
        let in_multi = session.in_multi;
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
            value
                .as_ref()
                .map(|v| String::from_utf8_lossy(&v[..v.len().min(MAX_LOGGED_BYTES)]).into_owned())
                .unwrap_or_default()
        };
        let age = self.opened.elapsed().as_secs();
        let idle = self.last_activity.elapsed().as_secs();
        let laddr = self.local_addr.map(|a| a.to_string()).unwrap_or_default();
        let qbuf = self.client_in.len();
        let qbuf_free = self.client_in.capacity().saturating_sub(qbuf);
        let omem = self.to_client.len();
        let user = &session.user[..session.user.len().min(MAX_LOGGED_BYTES)];
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
            String::from_utf8_lossy(user),
            session.protocol,
            text(&session.lib_name),
            text(&session.lib_ver),
        )
    }
}

impl Group {
    /// The record standing for the repeats, with their count; `None` without repeats.
    fn take(&mut self) -> Option<CommandRecord> {
        let mut record = self.repeat.take()?;
        record.count = std::mem::take(&mut self.count);
        Some(record)
    }
}

/// Keeps the first 257 bytes of a client-supplied name, key or channel for an event: the
/// audit line cuts it to 256 and says it did (`*_truncated`), and the ACL LOG cuts it too.
fn clip(value: Bytes) -> Bytes {
    if value.len() > MAX_LOGGED_BYTES {
        value.slice(..=MAX_LOGGED_BYTES)
    } else {
        value
    }
}
