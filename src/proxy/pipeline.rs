//! The in-order queue of commands waiting for their reply, and the byte queues towards each
//! side.
//!
//! A [`Slot`] is either waiting for Redis or holds a reply the proxy wrote itself; slots are
//! released strictly in the order the client sent the commands, so a proxy-written reply never
//! overtakes an earlier command's reply from Redis.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::time::Instant;

use std::sync::Arc;

use crate::command::{Class, CommandInfo, Keys};
use crate::proxy::session::{Effect, PubSubFamily};
use crate::record::ReplyStatus;

/// How many replies a slot waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Redis sends none (`CLIENT REPLY OFF`/`SKIP`).
    Nothing,
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
pub struct LocalReply {
    /// The reply bytes.
    pub bytes: Bytes,
    /// Its status for the record.
    pub status: ReplyStatus,
    /// Close the connection once it is written (protocol errors, QUIT without upstream).
    pub close_after: bool,
}

/// One command in flight.
#[derive(Debug)]
pub struct Slot {
    /// Name and arguments as sent.
    pub args: Vec<Bytes>,
    /// The command as the table knows it.
    pub command: Option<Arc<CommandInfo>>,
    /// Its class (`None` when unknown).
    pub class: Option<Class>,
    /// Its keys.
    pub keys: Keys,
    /// What it does to the connection.
    pub effect: Effect,
    /// What Redis will send back.
    pub expect: Expect,
    /// Set when the proxy answers instead of Redis.
    pub local: Option<LocalReply>,
    /// Set when Redis's reply is replaced: the client gets this instead (an EXEC the proxy
    /// turned into DISCARD gets `-EXECABORT`).
    pub substitute: Option<LocalReply>,
    /// Request size on the wire.
    pub request_bytes: u64,
    /// Reply bytes seen so far.
    pub reply_bytes: u64,
    /// When the request was read.
    pub started: Instant,
}

/// Bytes waiting to be written to one side, written with vectored writes without copying.
#[derive(Debug, Default)]
pub struct WriteQueue {
    chunks: VecDeque<Bytes>,
    len: usize,
    /// Bytes ever pushed; offsets into the stream are counted in these.
    pushed: u64,
}

/// Most slices handed to one vectored write.
const MAX_IO_SLICES: usize = 64;

impl WriteQueue {
    /// Queues `bytes` behind what is already queued.
    pub fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.pushed += bytes.len() as u64;
            self.chunks.push_back(bytes);
        }
    }

    /// Stream offset just past the last byte pushed.
    pub fn pushed(&self) -> u64 {
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

    /// Writes as much as the writer takes in one call, but not more than `limit` bytes.
    pub fn poll_write_to<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        cx: &mut Context<'_>,
        limit: usize,
    ) -> Poll<io::Result<usize>> {
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
