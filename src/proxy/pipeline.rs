//! The in-order queue of commands waiting for their reply ([`Pending`]), and the byte queues
//! towards each side.
//!
//! A [`Slot`] is either waiting for Redis or holds a reply the proxy wrote itself; slots are
//! released strictly in the order the client sent the commands, so a proxy-written reply never
//! overtakes an earlier command's reply from Redis. Every command sent to Redis gets exactly
//! one reply (or one confirmation per channel), so a reply is paired by position alone.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::time::Instant;

use std::sync::Arc;

use crate::command::{Class, CommandInfo, Keys};
use crate::event::ReplyStatus;
use crate::proxy::session::{Effect, PubSubFamily};

/// How many replies a slot waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// One reply.
    One,
    /// One confirmation per channel; `remaining` is worked out when the first one arrives,
    /// because an argument-less unsubscribe confirms every current subscription.
    Confirmations {
        /// Which family confirms.
        family: PubSubFamily,
        /// Subscribe (true) or unsubscribe.
        subscribe: bool,
        /// Channels named in the command.
        named: u64,
        /// Confirmations still to come, once known.
        remaining: Option<u64>,
    },
}

/// A reply the proxy writes itself in place of Redis's.
#[derive(Debug, Clone)]
pub(crate) struct LocalReply {
    /// The reply bytes.
    pub bytes: Bytes,
    /// Its status for the record.
    pub status: ReplyStatus,
    /// Close the connection once it is written (protocol errors, QUIT without upstream).
    pub(crate) close_after: bool,
}

impl LocalReply {
    /// A reply whose status is read from its first byte (`-`: an error).
    pub(crate) fn from_bytes(bytes: Bytes) -> Self {
        let status = if matches!(bytes.first(), Some(b'-' | b'!')) {
            ReplyStatus::Error
        } else {
            ReplyStatus::Ok
        };
        Self { bytes, status, close_after: false }
    }
}

/// What a command the proxy sends on its own behalf is for; its reply never reaches the
/// client and it has no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Internal {
    /// Logs the upstream connection in: as the service user, or (`mirror`) as the Redis user
    /// mirroring the client's, which changes what Redis lets the next commands do.
    Login {
        /// As a mirrored user.
        mirror: bool,
    },
    /// Puts a connection a client pins to in the state the client is in (`HELLO 3`, `SELECT`,
    /// `CLIENT SETINFO`); a `required` one refused fails the connection.
    Setup {
        /// Its refusal fails the connection.
        required: bool,
    },
    /// `CLIENT REPLY ON` after a client's `CLIENT REPLY OFF|SKIP`: Redis keeps answering
    /// everything, and its `+OK` shows the client's command was accepted.
    ReplyProbe,
    /// `HELLO 3` or `SELECT` on a new connection to pin to, sent before its login as the
    /// connection's first user: Redis keeps both across `AUTH`, and a client may run as a user
    /// that may not run them in a database it chose before logging in.
    BeforeLogin(Preset),
    /// The same after the login: its refusal fails the connection only when the one before
    /// the login was refused too.
    AfterLogin(Preset),
}

/// What a new connection is put in around its login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Preset {
    /// `HELLO 3`.
    Protocol,
    /// `SELECT db`.
    Db,
}

impl Preset {
    /// The command as an error names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Protocol => "HELLO 3",
            Self::Db => "SELECT",
        }
    }
}

/// One command in flight.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Name and arguments as sent (empty for an internal command).
    pub args: Vec<Bytes>,
    /// The command as the table knows it.
    pub command: Option<Arc<CommandInfo>>,
    /// Its class (`None` when unknown).
    pub class: Option<Class>,
    /// Its keys.
    pub keys: Keys,
    /// What it does to the connection once confirmed.
    pub(crate) effect: Effect,
    /// What Redis will send back.
    pub expect: Expect,
    /// Set when the proxy answers instead of Redis (boxed, as the next: most slots wait for
    /// Redis, and a pipeline of them should cost little each).
    pub local: Option<Box<LocalReply>>,
    /// Set when Redis's reply is replaced: the client gets this instead.
    pub(crate) substitute: Option<Box<LocalReply>>,
    /// Set for the proxy's own commands.
    pub internal: Option<Internal>,
    /// A `CLIENT REPLY OFF|SKIP`: an [`Internal::ReplyProbe`] follows it.
    pub(crate) probe_follows: bool,
    /// An `ACL LOG` without a users file (`acl.log_source = "proxy"`): Redis decides whether
    /// the client may run it, and its successful reply is replaced by the proxy's log.
    pub(crate) proxy_acl_log: bool,
    /// Refused by the proxy's policy or gate (its record may be grouped with repeats).
    pub refused: bool,
    /// Request size on the wire.
    pub request_bytes: u64,
    /// Reply bytes seen so far.
    pub reply_bytes: u64,
    /// When the request was read.
    pub started: Instant,
}

impl Slot {
    /// A client command, forwarded or answered; fill in what differs.
    pub(crate) fn client(args: Vec<Bytes>, request_bytes: u64, started: Instant) -> Self {
        Self {
            args,
            command: None,
            class: None,
            keys: Keys::new(),
            effect: Effect::None,
            expect: Expect::One,
            local: None,
            substitute: None,
            internal: None,
            probe_follows: false,
            proxy_acl_log: false,
            refused: false,
            request_bytes,
            reply_bytes: 0,
            started,
        }
    }

    /// The proxy's own command; its reply is dropped.
    pub(crate) fn internal(internal: Internal, started: Instant) -> Self {
        Self { internal: Some(internal), ..Self::client(Vec::new(), 0, started) }
    }

    /// Whether Redis's reply may change the user commands run as (or what Redis checks them
    /// as): the gate waits for it before deciding a command that depends on the user.
    fn unsettles_user(&self) -> bool {
        self.local.is_none()
            && (self.internal == Some(Internal::Login { mirror: true })
                || matches!(
                    self.effect,
                    Effect::Auth(_) | Effect::Hello { user: Some(_), .. } | Effect::Reset
                ))
    }

    /// Whether Redis's reply may change the subscriptions or the protocol (and so whether the
    /// client is in RESP2's restricted pub/sub context).
    fn unsettles_pubsub(&self) -> bool {
        self.local.is_none()
            && matches!(
                self.effect,
                Effect::Subscribe(_)
                    | Effect::Unsubscribe(_)
                    | Effect::Hello { .. }
                    | Effect::Monitor
                    | Effect::Reset
                    | Effect::Exec
            )
    }

    /// Whether Redis's reply may start or end a transaction.
    fn unsettles_multi(&self) -> bool {
        self.local.is_none()
            && matches!(self.effect, Effect::Multi | Effect::Exec | Effect::Discard | Effect::Reset)
    }
}

/// The commands in flight, in the client's order, and how many of them may still change the
/// state the gate reads.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    slots: VecDeque<Slot>,
    user_changes: usize,
    multi_changes: usize,
    pubsub_changes: usize,
    /// Replies ever expected from Redis: one per command sent, and for an (un)subscribe one per
    /// channel it names (at least one).
    sent: u64,
}

impl Pending {
    /// Queues a slot behind the others.
    pub(crate) fn push(&mut self, slot: Slot) {
        self.user_changes += usize::from(slot.unsettles_user());
        self.multi_changes += usize::from(slot.unsettles_multi());
        self.pubsub_changes += usize::from(slot.unsettles_pubsub());
        if slot.local.is_none() {
            // An UNSUBSCRIBE naming channels is answered once per channel even when nothing
            // is subscribed, the only state in which a client's commands share a connection.
            self.sent += match slot.expect {
                Expect::One => 1,
                Expect::Confirmations { named, .. } => named.max(1),
            };
        }
        self.slots.push_back(slot);
    }

    /// Takes the oldest slot.
    pub(crate) fn pop_front(&mut self) -> Option<Slot> {
        let slot = self.slots.pop_front()?;
        self.user_changes -= usize::from(slot.unsettles_user());
        self.multi_changes -= usize::from(slot.unsettles_multi());
        self.pubsub_changes -= usize::from(slot.unsettles_pubsub());
        Some(slot)
    }

    /// The oldest slot.
    pub(crate) fn front(&self) -> Option<&Slot> {
        self.slots.front()
    }

    /// The oldest slot, to count its replies (its effect and kind must not change).
    pub(crate) fn front_mut(&mut self) -> Option<&mut Slot> {
        self.slots.front_mut()
    }

    /// Every slot, oldest first, to give each a reply when the upstream is lost.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.slots.iter_mut()
    }

    /// How many replies were ever expected from Redis for the slots pushed without a local
    /// reply (what a shared connection must route to this client).
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// Commands in flight.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when nothing is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// An AUTH, HELLO AUTH, RESET or mirrored login is waiting for Redis.
    pub(crate) fn user_unsettled(&self) -> bool {
        self.user_changes > 0
    }

    /// A MULTI, EXEC, DISCARD or RESET is waiting for Redis.
    pub(crate) fn multi_unsettled(&self) -> bool {
        self.multi_changes > 0
    }

    /// A (P|S)(UN)SUBSCRIBE, HELLO, MONITOR, RESET or EXEC is waiting for Redis.
    pub(crate) fn pubsub_unsettled(&self) -> bool {
        self.pubsub_changes > 0
    }
}

/// Bytes waiting to be written to one side, written with vectored writes. Large pieces are
/// queued without copying; small ones (a pipelined command, a short reply) are copied into one
/// buffer, so that thousands of them cost one chunk each write and not one handle apiece.
#[derive(Debug, Default)]
pub struct WriteQueue {
    chunks: VecDeque<Bytes>,
    /// Small pieces gathered after the last chunk.
    tail: BytesMut,
    len: usize,
    /// Bytes ever pushed; offsets into the stream are counted in these.
    pushed: u64,
}

/// Pieces shorter than this are copied into the tail buffer.
const COPY_BELOW: usize = 1024;
/// A tail buffer this full becomes a chunk.
const TAIL_MAX: usize = 64 * 1024;

/// Most slices handed to one vectored write.
const MAX_IO_SLICES: usize = 64;

impl WriteQueue {
    /// Queues `bytes` behind what is already queued.
    pub fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        self.pushed += bytes.len() as u64;
        if bytes.len() < COPY_BELOW {
            self.tail.extend_from_slice(&bytes);
            if self.tail.len() >= TAIL_MAX {
                self.seal();
            }
        } else {
            self.seal();
            self.chunks.push_back(bytes);
        }
    }

    /// Makes the gathered small pieces a chunk.
    fn seal(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }

    /// Stream offset just past the last byte pushed.
    pub(crate) fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Stream offset of the first byte not yet written.
    pub fn written(&self) -> u64 {
        self.pushed - self.len as u64
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Moves everything queued in `other` behind what is queued here (`other` is left empty,
    /// its stream offsets counting the bytes as written).
    pub fn append(&mut self, other: &mut Self) {
        other.seal();
        other.len = 0;
        for chunk in other.chunks.drain(..) {
            self.push(chunk);
        }
    }

    /// Writes as much as the writer takes in one call, but not more than `limit` bytes.
    pub(crate) fn poll_write_to<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        cx: &mut Context<'_>,
        limit: usize,
    ) -> Poll<io::Result<usize>> {
        self.seal();
        let written = if self.chunks.len() == 1 || limit < self.chunks[0].len() {
            let chunk = &self.chunks[0];
            ready!(Pin::new(&mut *writer).poll_write(cx, &chunk[..chunk.len().min(limit)]))?
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
            let mut count = 0;
            let mut left = limit;
            for (slice, chunk) in slices.iter_mut().zip(&self.chunks) {
                if left == 0 {
                    break;
                }
                let take = chunk.len().min(left);
                *slice = IoSlice::new(&chunk[..take]);
                left -= take;
                count += 1;
            }
            ready!(Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..count]))?
        };
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.advance(written);
        Poll::Ready(Ok(written))
    }

    fn advance(&mut self, mut written: usize) {
        self.len -= written;
        while written > 0 {
            let Some(front) = self.chunks.front_mut() else { return };
            if front.len() <= written {
                written -= front.len();
                self.chunks.pop_front();
            } else {
                let _ = front.split_to(written);
                written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn partial_vectored_writes_keep_order() {
        let mut queue = WriteQueue::default();
        for part in [&b"hello "[..], b"", b"big ", b"world"] {
            queue.push(Bytes::copy_from_slice(part));
        }
        assert_eq!(queue.len(), 15);
        // A writer that takes at most 4 bytes per call.
        let (mut writer, mut reader) = tokio::io::duplex(4);
        let mut out = Vec::new();
        while !queue.is_empty() {
            std::future::poll_fn(|cx| queue.poll_write_to(&mut writer, cx, usize::MAX))
                .await
                .unwrap();
            let mut buf = [0u8; 4];
            let n = tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await.unwrap();
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, b"hello big world");
        assert_eq!((queue.pushed(), queue.written()), (15, 15));
    }

    #[tokio::test]
    async fn small_pieces_are_gathered_into_one_chunk() {
        let mut queue = WriteQueue::default();
        for _ in 0..1000 {
            queue.push(Bytes::from_static(b"PING\n"));
        }
        queue.push(Bytes::from(vec![b'x'; COPY_BELOW]));
        queue.push(Bytes::from_static(b"!"));
        assert_eq!(queue.chunks.len(), 2, "the small pieces before the large one, then it");
        let (mut writer, mut reader) = tokio::io::duplex(1 << 20);
        std::future::poll_fn(|cx| queue.poll_write_to(&mut writer, cx, usize::MAX)).await.unwrap();
        while !queue.is_empty() {
            std::future::poll_fn(|cx| queue.poll_write_to(&mut writer, cx, usize::MAX))
                .await
                .unwrap();
        }
        drop(writer);
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut out).await.unwrap();
        assert_eq!(out.len(), 5000 + COPY_BELOW + 1);
        assert!(out.starts_with(b"PING\nPING\n") && out.ends_with(b"x!"));
    }

    #[tokio::test]
    async fn a_limit_holds_the_rest_back() {
        let mut queue = WriteQueue::default();
        queue.push(Bytes::from_static(b"abc"));
        queue.push(Bytes::from_static(b"defg"));
        let (mut writer, mut reader) = tokio::io::duplex(64);
        std::future::poll_fn(|cx| queue.poll_write_to(&mut writer, cx, 5)).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"abcde");
        assert_eq!((queue.len(), queue.written()), (2, 5));
    }
}
