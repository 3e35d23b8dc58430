//! The socket pump: one poll loop over both sockets, reading what there is room for, writing
//! what is queued, and the back-pressure that bounds what one client can make the proxy hold.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::link::Link;
use super::{Connection, Exit};
use crate::config::OnFull;

/// Room kept free in a read buffer before each read.
const READ_SIZE: usize = 16 * 1024;
/// With `audit.on_full = "block"`, how often a stalled client re-checks the audit queue.
const AUDIT_RECHECK: std::time::Duration = std::time::Duration::from_millis(5);

impl<C> Connection<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    pub(super) fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Exit> {
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

            if self.relink.is_some() {
                return Poll::Ready(Exit::Relink);
            }

            if matches!(self.upstream, Some(Link::Shared(_))) {
                if !self.to_upstream.is_empty() {
                    progress = true;
                    if !self.submit_shared() {
                        return Poll::Ready(Exit::Relink);
                    }
                }
            } else if let Some(Link::Dedicated { stream, .. }) = self.upstream.as_mut() {
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
                if let Some(link) = self.upstream.as_mut() {
                    if self.upstream_in.capacity() - self.upstream_in.len() < READ_SIZE / 4 {
                        self.upstream_in.reserve(READ_SIZE);
                    }
                    match link.poll_read(cx, &mut self.upstream_in) {
                        Poll::Ready(Ok(_)) => {
                            progress = true;
                            if let Err(error) = self.frame_replies(Instant::now()) {
                                tracing::warn!(%error, "invalid reply from the upstream");
                                self.upstream_lost(&format!("invalid reply: {error}"));
                            }
                        }
                        Poll::Ready(Err(lost)) => {
                            self.link_lost(lost);
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

    /// Whether another request may be read: bounded by what is in flight, by what waits to
    /// go to Redis, and — while replies the proxy wrote itself (NOAUTH, NOPERM, ACL LOG) wait
    /// to go to the client — by what waits to go to the client, so a client that never reads
    /// cannot make the proxy queue its own replies without bound. Redis's replies alone do
    /// not stop reading (reading Redis stops instead), so a client that writes a long pipeline
    /// before reading is served as Redis serves it.
    pub(super) fn has_room_for_requests(&self) -> bool {
        let limits = &self.ctx.config.proxy.limits;
        let own_replies_waiting = self.local_end > self.to_client.written();
        self.pending.len() < limits.pipeline_max_depth
            && self.to_upstream.len() < limits.output_buffer_bytes
            && !(own_replies_waiting && self.to_client.len() >= limits.output_buffer_bytes)
            && !self.audit_blocks()
    }

    /// `on_full = "block"` and the audit queue is full.
    fn audit_blocks(&self) -> bool {
        self.ctx.config.audit.on_full == OnFull::Block && self.ctx.sink.is_full()
    }

    pub(super) fn reconnect_due(&self) -> bool {
        self.last_connect_attempt.elapsed() >= self.ctx.config.upstream.reconnect_interval
    }
}
