//! A client that Redis replicates to (`SYNC` / `PSYNC`: a replica, `redis-cli --rdb`): the
//! handshake reply, the RDB payload (length or EOF-marker form, after `\n` keep-alives), then
//! the replication stream, forwarded as raw bytes, and from the replica only `REPLCONF` and
//! keep-alives; the whole is recorded as one security event.
//!
//! Until Redis answers, nothing more is read from the client; if Redis refuses (an error
//! reply), the connection goes on as an ordinary one.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::Connection;
use crate::event::{ReplySource, ReplyStatus};
use crate::event::{SecurityAction, SecurityEvent};
use crate::proxy::session::Effect;

/// Length of the marker that ends a diskless (`$EOF:<marker>`) payload.
const EOF_MARK_LEN: usize = 40;
/// Longest handshake line accepted (`+FULLRESYNC <40-char id> <offset>`).
const MAX_LINE: usize = 512;

/// Where a replication is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Replication {
    /// SYNC / PSYNC sent: waiting for Redis's answer (`\n` keep-alives may come first).
    Handshake,
    /// `+FULLRESYNC` came: the payload's header follows, after keep-alives.
    AwaitingPayload,
    /// A payload of this many bytes still to come.
    Payload(u64),
    /// A diskless payload, ended by this marker; `tail` holds the last bytes seen.
    PayloadUntil {
        /// The 40-byte marker.
        marker: Vec<u8>,
        /// The last `marker.len() - 1` bytes forwarded, to find a marker split across reads.
        tail: Vec<u8>,
    },
    /// The replication stream: raw bytes both ways.
    Stream,
}

impl Replication {
    /// Redis accepted: the client's bytes go to Redis as they are from now on.
    pub(super) fn started(&self) -> bool {
        *self != Self::Handshake
    }
}

impl<C> Connection<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    /// True when the replies now framed belong to a replication (the SYNC / PSYNC is at the
    /// head of the queue, or the stream runs).
    pub(super) fn replicating(&self) -> bool {
        match &self.replication {
            None => false,
            Some(Replication::Handshake) => {
                self.pending.front().is_some_and(|slot| slot.effect == Effect::Replicate)
            }
            Some(_) => true,
        }
    }

    /// Forwards what Redis sent a replica; returns false when a reply must be framed as an
    /// ordinary one (Redis refused the SYNC / PSYNC).
    pub(super) fn forward_replication(&mut self, now: Instant) -> bool {
        loop {
            let Some(state) = self.replication.clone() else { return false };
            match state {
                Replication::Handshake | Replication::AwaitingPayload => {
                    let keepalives =
                        self.upstream_in.iter().take_while(|&&byte| byte == b'\n').count();
                    self.forward_upstream_bytes(keepalives);
                    let Some(&first) = self.upstream_in.first() else { return true };
                    let handshake = state == Replication::Handshake;
                    if first == b'-' && handshake {
                        return false; // refused: an ordinary error reply
                    }
                    let Some(end) = memchr::memmem::find(&self.upstream_in, b"\r\n") else {
                        if self.upstream_in.len() > MAX_LINE {
                            self.upstream_lost("invalid replication handshake");
                        }
                        return true;
                    };
                    let line = self.upstream_in[..end].to_vec();
                    let next = if first == b'+' && handshake && line.starts_with(b"+FULLRESYNC") {
                        Replication::AwaitingPayload
                    } else if first == b'+' && handshake && line.starts_with(b"+CONTINUE") {
                        Replication::Stream
                    } else if first == b'$' {
                        match payload_of(&line[1..]) {
                            Some(next) => next,
                            None => {
                                self.upstream_lost("invalid replication payload header");
                                return true;
                            }
                        }
                    } else if handshake {
                        return false; // not a replication reply: framed as it is
                    } else {
                        self.upstream_lost("invalid replication payload header");
                        return true;
                    };
                    self.forward_upstream_bytes(end + 2);
                    if handshake {
                        let partial = next == Replication::Stream;
                        self.replication_started(partial, now);
                    }
                    self.replication = Some(next);
                }
                Replication::Payload(remaining) => {
                    let take = remaining.min(self.upstream_in.len() as u64);
                    self.forward_upstream_bytes(take as usize);
                    let left = remaining - take;
                    self.replication = Some(if left == 0 {
                        Replication::Stream
                    } else {
                        Replication::Payload(left)
                    });
                    if left > 0 {
                        return true;
                    }
                }
                Replication::PayloadUntil { marker, mut tail } => {
                    let seen = tail.len();
                    tail.extend_from_slice(&self.upstream_in);
                    match memchr::memmem::find(&tail, &marker) {
                        Some(at) => {
                            self.forward_upstream_bytes(at + marker.len() - seen);
                            self.replication = Some(Replication::Stream);
                        }
                        None => {
                            let all = self.upstream_in.len();
                            self.forward_upstream_bytes(all);
                            let keep = tail.len().min(marker.len() - 1);
                            let tail = tail[tail.len() - keep..].to_vec();
                            self.replication = Some(Replication::PayloadUntil { marker, tail });
                            return true;
                        }
                    }
                }
                Replication::Stream => {
                    let all = self.upstream_in.len();
                    self.forward_upstream_bytes(all);
                    return true;
                }
            }
        }
    }

    fn forward_upstream_bytes(&mut self, count: usize) {
        if count > 0 {
            let bytes: Bytes = self.upstream_in.split_to(count).freeze();
            self.to_client.push(bytes);
        }
    }

    /// Redis began replicating: the SYNC / PSYNC is recorded, with a security event saying
    /// what the client now receives.
    fn replication_started(&mut self, partial: bool, now: Instant) {
        let Some(slot) = self.pending.pop_front() else { return };
        let policy = self.current_policy();
        let event = SecurityEvent {
            command: None,
            action: SecurityAction::Replication,
            time: std::time::SystemTime::now(),
            conn_id: self.session.id,
            client_addr: self.peer,
            user: self.session.user.clone(),
            username: None,
            reason: if partial { "partial" } else { "full" },
            context: "toplevel",
            object: slot.command.as_ref().map(|c| Bytes::copy_from_slice(c.name.as_bytes())),
            source: "redis",
            mode: None,
            policy_version: policy.map(|p| std::sync::Arc::clone(&p.version)),
        };
        self.ctx.sink.security(event);
        tracing::info!(partial, "replicating to the client");
        self.close_reason.get_or_insert("replication");
        self.emit(slot, ReplyStatus::Ok, None, ReplySource::Upstream, now, self.ran_as());
    }

    /// Sends what the replica writes to Redis as it is: keep-alive newlines and `REPLCONF`
    /// (ACK, GETACK answers). Redis would still run other commands that do not touch the
    /// keyspace (CONFIG SET, ACL SETUSER, ...) from a replica, unanswered and unchecked by
    /// the gate, so anything else closes the connection.
    pub(super) fn forward_replica_bytes(&mut self) {
        loop {
            let blank = self.client_in.iter().take_while(|&&b| matches!(b, b'\r' | b'\n')).count();
            if blank > 0 {
                let newlines = self.client_in.split_to(blank).freeze();
                self.to_upstream.push(newlines);
            }
            if self.client_in.is_empty() {
                return;
            }
            match self.decoder.decode(&mut self.client_in, true) {
                Ok(Some(request)) if request.args[0].eq_ignore_ascii_case(b"replconf") => {
                    self.to_upstream.push(request.raw);
                }
                Ok(None) => return,
                Ok(Some(_)) | Err(_) => {
                    tracing::warn!("a command other than REPLCONF on a replication link: closing");
                    self.close_reason = Some("replication_misuse");
                    self.client_in.clear();
                    self.drop_upstream();
                    return;
                }
            }
        }
    }
}

/// The replication after a `$<len>` or `$EOF:<marker>` header (without its `$`).
fn payload_of(header: &[u8]) -> Option<Replication> {
    if let Some(marker) = header.strip_prefix(b"EOF:") {
        if marker.len() != EOF_MARK_LEN {
            return None;
        }
        return Some(Replication::PayloadUntil { marker: marker.to_vec(), tail: Vec::new() });
    }
    let length = crate::resp::args::string2ll(header)?;
    Some(match u64::try_from(length).ok()? {
        0 => Replication::Stream,
        length => Replication::Payload(length),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_headers() {
        assert_eq!(payload_of(b"5"), Some(Replication::Payload(5)));
        assert_eq!(payload_of(b"-1"), None);
        let marker = [b'a'; 40];
        let mut header = b"EOF:".to_vec();
        header.extend_from_slice(&marker);
        assert_eq!(
            payload_of(&header),
            Some(Replication::PayloadUntil { marker: marker.to_vec(), tail: Vec::new() })
        );
        assert_eq!(payload_of(b"EOF:short"), None);
    }
}
