//! Replies: frames what Redis sends, routes each reply's bytes (to the client as they are
//! framed, dropped, or held until whole) and pairs each reply with its command by position
//! (what a paired reply then does is in `complete`).
//!
//! Replies that answer no command — pub/sub messages, invalidations, MONITOR lines — are
//! recognised only when the session is confirmed in the mode that produces them.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::Connection;
use crate::event::ReplyStatus;
use crate::proxy::pipeline::{Expect, Internal, LocalReply, Slot};
use crate::proxy::session::{Effect, PubSubFamily};
use crate::resp::encode;
use crate::resp::reply::ReplyError;
use crate::resp::summary::ReplyInfo;

/// Where the bytes of the reply being framed go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the client as they are framed (cut-through).
    Stream,
    /// Nowhere: a reply the client must not see (replaced, internal, or silenced).
    Discard,
    /// Kept until the reply is whole, when what it is decides (small replies only: a
    /// `CLIENT REPLY` probe's, or one that may be a message while the client is silenced).
    Hold,
}

/// What a whole reply turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The answer (or one confirmation) of the command at the head of the queue.
    Paired,
    /// Sent unasked: a pub/sub message or a confirmation nobody waits for, an invalidation,
    /// a MONITOR line.
    Unsolicited {
        /// Redis would withhold it from a silenced client (MONITOR lines are not pushes).
        silenceable: bool,
    },
}

impl<C> Connection<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    /// Frames the replies now in `upstream_in`, routes their bytes and pairs each. Streamed
    /// bytes of consecutive replies go to the client together, as one piece, at the end (or
    /// before anything else is queued to the client).
    pub(super) fn frame_replies(&mut self, now: Instant) -> Result<(), ReplyError> {
        loop {
            if !self.scanner.is_mid_reply() {
                if self.replicating() {
                    self.flush_streamed();
                    if self.forward_replication(now) {
                        return Ok(());
                    }
                }
                let Some(&first) = self.upstream_in.get(self.upstream_scanned) else { break };
                let route = self.route_for(first);
                if route != Route::Stream {
                    // This reply's bytes start at the front of `upstream_in`.
                    self.flush_streamed();
                }
                self.route = route;
                self.scanner.capture_children = self
                    .pending
                    .front()
                    .is_some_and(|slot| slot.effect == Effect::Exec && slot.local.is_none())
                    && !self.session.queued.is_empty();
            }
            let (used, done) = self.scanner.scan(&self.upstream_in[self.upstream_scanned..])?;
            self.upstream_scanned += used;
            if self.route == Route::Discard {
                let _ = self.upstream_in.split_to(self.upstream_scanned);
                self.upstream_scanned = 0;
            }
            if !done {
                break;
            }
            self.on_reply(now);
        }
        // Cut-through: what is framed goes now, even part of a reply.
        self.flush_streamed();
        Ok(())
    }

    /// Queues to the client the streamed bytes framed so far.
    pub(super) fn flush_streamed(&mut self) {
        if self.route == Route::Stream && self.upstream_scanned > 0 {
            let bytes = self.upstream_in.split_to(self.upstream_scanned).freeze();
            self.upstream_scanned = 0;
            self.to_client.push(bytes);
        }
    }

    /// Decides, from its first byte, where a reply's bytes go.
    fn route_for(&self, first: u8) -> Route {
        let owner = match self.pending.front() {
            None => Route::Stream,
            Some(slot) if slot.local.is_some() => Route::Stream,
            Some(slot) if slot.substitute.is_some() || slot.internal.is_some() => Route::Discard,
            Some(slot) if slot.probe_follows || slot.proxy_acl_log => Route::Hold,
            Some(slot) if self.cluster_holds(slot, first) => Route::Hold,
            Some(slot) if matches!(slot.expect, Expect::Confirmations { .. }) => Route::Stream,
            Some(slot) if self.session.silenced() => {
                // `CLIENT REPLY ON` (and RESET under OFF) answer a silenced client, unless
                // refused: only the reply tells. An EXEC reply may hold a push Redis would
                // still deliver.
                if slot.effect.answered_when(self.session.reply_mode) || slot.effect == Effect::Exec
                {
                    Route::Hold
                } else {
                    Route::Discard
                }
            }
            Some(_) => Route::Stream,
        };
        let unsolicited = match first {
            b'>' => Some(Route::Stream),
            b'*' if self.session.in_resp2_pubsub() => Some(Route::Stream),
            b'+' if self.session.monitor => {
                Some(if self.session.silenced() { Route::Discard } else { Route::Stream })
            }
            _ => None,
        };
        match unsolicited {
            Some(route) if route != owner => Route::Hold,
            _ => owner,
        }
    }

    /// One whole reply was framed: pair it with its command, or let it through unasked.
    fn on_reply(&mut self, now: Instant) {
        let kind = self.kind_of_reply();
        let info = self.scanner.reply();
        let (is_error, bytes) = (info.is_error(), info.bytes);
        if self.route == Route::Hold {
            let deliver = match kind {
                Kind::Unsolicited { silenceable } => !(silenceable && self.session.silenced()),
                Kind::Paired => self.paired_reply_delivered(is_error),
            };
            let mut held = self.upstream_in.split_to(self.upstream_scanned).freeze();
            self.upstream_scanned = 0;
            if kind == Kind::Paired {
                if let Some(slot) = self.pending.front().filter(|s| self.cluster_holds(s, held[0]))
                {
                    held = self.cluster_rewrite(slot, held);
                }
            }
            if deliver {
                self.to_client.push(held);
            } else {
                // Pushes inside a withheld reply still go out, as Redis sends them.
                for &(start, end) in &self.scanner.reply().nested_pushes {
                    self.to_client.push(held.slice(start as usize..end as usize));
                }
            }
        }
        if kind != Kind::Paired {
            self.release_ready_slots(now);
            return;
        }
        let Some(slot) = self.pending.front_mut().filter(|slot| slot.local.is_none()) else {
            // Forwarded as it came (see `route_for`), paired with nothing.
            tracing::debug!("reply from the upstream with no command waiting for it");
            self.release_ready_slots(now);
            return;
        };
        slot.reply_bytes += bytes;
        if let Expect::Confirmations { family, subscribe, named, remaining } = &mut slot.expect {
            if !is_error {
                // How many an argument-less UNSUBSCRIBE confirms is counted before the first
                // confirmation changes the subscriptions.
                let left = remaining.get_or_insert_with(|| {
                    if *named > 0 || *subscribe {
                        *named
                    } else {
                        self.session.subscriptions.confirmations_for_all(*family)
                    }
                });
                *left = left.saturating_sub(1);
                let (done, confirmed) = (*left == 0, (*family, *subscribe));
                self.apply_confirmation(confirmed);
                if !done {
                    return;
                }
            }
        }
        let Some(mut slot) = self.pending.pop_front() else { return };
        if slot.probe_follows && !is_error {
            // Redis accepted the CLIENT REPLY OFF|SKIP silently: this is the probe's `+OK`.
            if let Some(probe) = self.pending.pop_front() {
                debug_assert_eq!(probe.internal, Some(Internal::ReplyProbe));
            }
            slot.reply_bytes = 0;
            self.complete(slot, ReplyStatus::Skipped, None, now);
        } else if let Some(internal) = slot.internal {
            let fails = match internal {
                Internal::Login { .. } | Internal::Setup { required: true } => true,
                Internal::AfterLogin(preset) => !self.presets_before_login.contains(&preset),
                Internal::BeforeLogin(preset) => {
                    if !is_error {
                        self.presets_before_login.push(preset);
                    }
                    false
                }
                Internal::Setup { required: false } | Internal::ReplyProbe => false,
            };
            if is_error && fails {
                let text =
                    String::from_utf8_lossy(self.scanner.reply().head.as_bytes()).into_owned();
                tracing::error!(error = %text, "the upstream refused the proxy's login");
                self.upstream_lost("the upstream refused the proxy's login");
                return;
            }
            if internal == (Internal::Login { mirror: true }) {
                self.runs_as_mirror = true;
            }
        } else {
            let (status, code) = self.status_of(&slot);
            self.complete(slot, status, code, now);
        }
        self.release_ready_slots(now);
    }

    /// Whether a reply is the head command's (or one of its confirmations) or arrived unasked.
    fn kind_of_reply(&mut self) -> Kind {
        let info = self.scanner.reply();
        let head_wants = |wanted: (PubSubFamily, bool)| {
            matches!(
                self.pending.front(),
                Some(Slot { expect: Expect::Confirmations { family, subscribe, .. }, local: None, .. })
                    if (*family, *subscribe) == wanted
            )
        };
        let confirmation = match info.kind {
            b'>' => confirmation_of(info),
            b'*' if self.session.in_resp2_pubsub() || self.head_expects_confirmations() => {
                confirmation_of(info)
            }
            _ => None,
        };
        let kind = match info.kind {
            b'>' => match confirmation {
                Some(wanted) if head_wants(wanted) => Kind::Paired,
                _ => Kind::Unsolicited { silenceable: false },
            },
            b'*' if self.session.in_resp2_pubsub() => match confirmation {
                Some(wanted) if head_wants(wanted) => Kind::Paired,
                Some(_) => Kind::Unsolicited { silenceable: false },
                None if is_message(info) => Kind::Unsolicited { silenceable: false },
                None => Kind::Paired,
            },
            b'+' if self.session.monitor && is_monitor_line(info.head.as_bytes()) => {
                Kind::Unsolicited { silenceable: true }
            }
            _ => Kind::Paired,
        };
        if let (Some(confirmed), Kind::Unsolicited { .. }) = (confirmation, kind) {
            self.apply_confirmation(confirmed);
        }
        kind
    }

    /// Counts a (un)subscribe confirmation Redis sent into the session's subscriptions.
    fn apply_confirmation(&mut self, (family, subscribe): (PubSubFamily, bool)) {
        if let Some(total) = self.scanner.reply().children[2].head.integer() {
            self.session.subscriptions.confirm(family, subscribe, total.max(0) as u64);
        }
    }

    fn head_expects_confirmations(&self) -> bool {
        matches!(self.pending.front(), Some(Slot { expect: Expect::Confirmations { .. }, .. }))
    }

    /// Whether the head command's reply (held until whole) reaches the client.
    fn paired_reply_delivered(&self, is_error: bool) -> bool {
        let Some(slot) = self.pending.front() else { return true };
        if slot.substitute.is_some() || slot.internal.is_some() {
            return false;
        }
        if slot.probe_follows || slot.proxy_acl_log {
            // An error is the CLIENT REPLY's own refusal; anything else is the probe's. Or:
            // Redis refused the ACL LOG; anything else is replaced by the proxy's log.
            return is_error && !self.session.silenced();
        }
        let status = if is_error { ReplyStatus::Error } else { ReplyStatus::Ok };
        self.delivered_in_turn(slot, status)
    }

    /// Redis closed the connection (CLIENT KILL, its `timeout`, QUIT, a crash): a direct client
    /// would see its connection close right here, with no reply to what was still waiting, and
    /// so does ours. What was framed is forwarded first; the rest is recorded as unanswered.
    pub(super) fn upstream_closed(&mut self) {
        tracing::debug!("upstream closed the connection");
        self.close_reason.get_or_insert("upstream_closed");
        self.drop_upstream();
    }

    /// The upstream connection failed (reset, I/O error, bytes that are not RESP, a refused
    /// login): each command still waiting gets an error naming the upstream and the cause, in
    /// order, then the client is closed. A reply already partly forwarded cannot be completed:
    /// then the client is closed at once.
    pub(super) fn upstream_lost(&mut self, cause: &str) {
        tracing::debug!(cause, "upstream connection failed");
        self.close_reason.get_or_insert("upstream_error");
        let mid_reply = self.scanner.is_mid_reply() && self.route == Route::Stream;
        self.drop_upstream();
        if mid_reply || self.upstream_protocol_error {
            return;
        }
        let address = &self.ctx.config.upstream.address;
        let message = encode::error(&format!("ERR upstream {address} connection lost: {cause}"));
        for slot in self.pending.iter_mut() {
            if slot.local.is_none() {
                let bytes = if slot.internal.is_some() { Bytes::new() } else { message.clone() };
                slot.local = Some(Box::new(LocalReply {
                    bytes,
                    status: ReplyStatus::Error,
                    close_after: true,
                }));
            }
        }
        self.scanner = crate::resp::reply::ReplyScanner::new(1);
        self.release_ready_slots(Instant::now());
    }

    pub(super) fn drop_upstream(&mut self) {
        self.upstream = None;
        self.to_upstream = crate::proxy::pipeline::WriteQueue::default();
        self.flush_streamed();
        self.upstream_scanned = 0;
        self.reading_client = false;
        self.close_when_flushed = true;
    }
}

/// The password of an `AUTH [user] pass` or `HELLO ... AUTH user pass`.
pub(super) fn password_of(args: &[Bytes]) -> Option<&Bytes> {
    if args.first()?.eq_ignore_ascii_case(b"auth") {
        return args.last();
    }
    let at = args.iter().rposition(|arg| arg.eq_ignore_ascii_case(b"auth"))?;
    args.get(at + 2)
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

/// A pub/sub message (`message` and `smessage` with 3 elements, `pmessage` with 4).
fn is_message(info: &ReplyInfo) -> bool {
    match info.children[0].head.as_bytes() {
        b"message" | b"smessage" => info.child_count == 3,
        b"pmessage" => info.child_count == 4,
        _ => false,
    }
}

/// A MONITOR line as Redis writes it: `<seconds>.<6 digits> [<db> <client>] "<command>" ...`.
fn is_monitor_line(line: &[u8]) -> bool {
    let Some(dot) = line.iter().position(|&b| b == b'.') else { return false };
    let (seconds, rest) = line.split_at(dot);
    let digits = |bytes: &[u8]| !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit);
    digits(seconds)
        && rest.len() > 9
        && digits(&rest[1..7])
        && rest[7..].starts_with(b" [")
        && memchr::memchr(b' ', &rest[9..]).is_some()
}

/// The first word of a proxy-written `-ERR ...` reply.
pub(super) fn error_code_of(reply: &[u8]) -> Bytes {
    let text = reply.strip_prefix(b"-").unwrap_or(reply);
    let end = text.iter().position(|&b| b == b' ' || b == b'\r').unwrap_or(text.len());
    Bytes::copy_from_slice(&text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines_are_told_apart_from_status_replies() {
        assert!(is_monitor_line(b"1796513844.076756 [0 127.0.0.1:57654] \"PING\""));
        assert!(is_monitor_line(b"1796513844.076756 [0 lua] \"get\" \"k\""));
        for reply in [&b"1"[..], b"1.5", b"12.123456", b"123.123456 x", b"OK", b"PONG"] {
            assert!(!is_monitor_line(reply), "{}", String::from_utf8_lossy(reply));
        }
    }
}
