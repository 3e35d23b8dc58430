//! One shared upstream connection: the task that writes many clients' commands to Redis in
//! one write and hands each reply back to the client whose command it answers.
//!
//! Every command sent on a shared connection gets exactly one reply (commands that get more,
//! or none, pin their client to a connection of its own first: `proxy::pin`), so replies are
//! paired with clients by position alone, as a client pairs them with its commands. A client
//! submits its commands with the number of replies they will get ([`SharedLink::submit`]);
//! the task frames what Redis sends and appends each reply's bytes, as they are framed, to
//! that client's [`Inbox`], which the client reads as it would read its own socket.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::time::Instant;

use crate::proxy::pipeline::WriteQueue;
use crate::proxy::upstream::UpstreamStream;
use crate::resp::reply::ReplyScanner;
use crate::util::sync::LockAnyway;

/// Room kept free in the read buffer before each read.
const READ_SIZE: usize = 64 * 1024;

/// Why a client's shared connection can no longer answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// Redis closed the connection.
    Closed,
    /// The connection failed (I/O error, a reply that is not RESP).
    Failed(String),
    /// The client left more than `upstream.pool_unread_max_bytes` of replies unread.
    Overflow,
}

/// What a shared connection's task reports to the pool.
pub(super) trait Observer: Send + Sync {
    /// One write to Redis carried `commands` commands.
    fn wrote(&self, commands: u64);
}

/// The part of a shared connection clients reach: the submission queue.
#[derive(Debug)]
pub(super) struct SharedConn {
    /// Its number in the pool, for logs.
    pub(super) id: u64,
    queue: Mutex<Queue>,
    /// Clients attached to it (idle detection).
    clients: AtomicUsize,
    /// Set once it failed or closed: the pool stops handing it out.
    dead: AtomicBool,
    /// Replies submitted and not yet delivered (how busy it is).
    owed: AtomicU64,
    /// Microseconds after `born` when it last delivered a reply or, idle, got a command: with
    /// replies owed, how long Redis has been silent on it (a long script, a slow command).
    progress_us: AtomicU64,
    born: Instant,
}

#[derive(Debug, Default)]
struct Queue {
    writes: WriteQueue,
    routes: Vec<Route>,
    /// Commands submitted since the task last took the queue.
    commands: u64,
    /// The task, waiting for submissions.
    waker: Option<Waker>,
    /// Set when the connection is gone: submissions are refused with it.
    lost: Option<Lost>,
}

/// Where the next `replies` replies go.
#[derive(Debug)]
struct Route {
    inbox: Arc<Inbox>,
    replies: u32,
}

/// The replies for one client, waiting for it to read them.
#[derive(Debug)]
pub(super) struct Inbox {
    state: Mutex<InboxState>,
    /// `upstream.pool_unread_max_bytes`.
    limit: usize,
}

#[derive(Debug, Default)]
struct InboxState {
    chunks: VecDeque<Bytes>,
    len: usize,
    lost: Option<Lost>,
    waker: Option<Waker>,
    /// The client is gone: what arrives for it is dropped.
    abandoned: bool,
}

impl Inbox {
    fn deliver(&self, bytes: Bytes) {
        let mut state = self.state.lock_anyway();
        if state.abandoned || state.lost.is_some() {
            return;
        }
        state.len += bytes.len();
        if state.len > self.limit {
            // The client does not read: closed, as Redis closes a client past its
            // output buffer limit, and what it was owed is dropped.
            state.chunks.clear();
            state.len = 0;
            state.lost = Some(Lost::Overflow);
        } else {
            state.chunks.push_back(bytes);
        }
        if let Some(waker) = state.waker.take() {
            drop(state);
            waker.wake();
        }
    }

    fn lose(&self, lost: &Lost) {
        let mut state = self.state.lock_anyway();
        if state.lost.is_none() {
            state.lost = Some(lost.clone());
        }
        if let Some(waker) = state.waker.take() {
            drop(state);
            waker.wake();
        }
    }
}

/// A client's handle on a shared connection.
#[derive(Debug)]
pub struct SharedLink {
    conn: Arc<SharedConn>,
    inbox: Arc<Inbox>,
}

impl SharedLink {
    pub(super) fn attach(conn: &Arc<SharedConn>, limit: usize) -> Self {
        conn.clients.fetch_add(1, Ordering::Relaxed);
        let inbox = Arc::new(Inbox { state: Mutex::new(InboxState::default()), limit });
        Self { conn: Arc::clone(conn), inbox }
    }

    /// The shared connection's number in the pool.
    pub fn id(&self) -> u64 {
        self.conn.id
    }

    /// Moves every command queued in `commands` to the shared connection; `replies` is how
    /// many replies they get. Refused, with nothing moved, once the connection is gone.
    pub fn submit(&self, commands: &mut WriteQueue, replies: u32) -> Result<(), Lost> {
        let mut queue = self.conn.queue.lock_anyway();
        if let Some(lost) = &queue.lost {
            return Err(lost.clone());
        }
        queue.writes.append(commands);
        queue.commands += u64::from(replies);
        if self.conn.owed.fetch_add(u64::from(replies), Ordering::Relaxed) == 0 {
            self.conn.progressed();
        }
        match queue.routes.last_mut() {
            // Consecutive submissions of one client share a route.
            Some(last) if Arc::ptr_eq(&last.inbox, &self.inbox) => last.replies += replies,
            _ => queue.routes.push(Route { inbox: Arc::clone(&self.inbox), replies }),
        }
        if let Some(waker) = queue.waker.take() {
            drop(queue);
            waker.wake();
        }
        Ok(())
    }

    /// Appends the reply bytes waiting for this client to `buf`; `Err` once the connection is
    /// gone and everything that arrived before was read.
    pub(crate) fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<Result<usize, Lost>> {
        let mut state = self.inbox.state.lock_anyway();
        if state.chunks.is_empty() {
            if let Some(lost) = &state.lost {
                return Poll::Ready(Err(lost.clone()));
            }
            if !state.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                state.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        buf.reserve(state.len);
        for chunk in state.chunks.drain(..) {
            buf.extend_from_slice(&chunk);
        }
        Poll::Ready(Ok(std::mem::take(&mut state.len)))
    }

    /// True when the connection owes more than `replies` replies, or owes some and delivered
    /// none for `stall` (to other clients, when this one has nothing in flight).
    pub(crate) fn is_busy(&self, replies: u64, stall: Duration) -> bool {
        self.conn.is_busy(replies, stall)
    }

    /// True when the connection failed while this client had commands on it.
    pub(crate) fn is_lost(&self) -> bool {
        self.inbox.state.lock_anyway().lost.is_some()
    }
}

impl Drop for SharedLink {
    fn drop(&mut self) {
        self.inbox.state.lock_anyway().abandoned = true;
        if self.conn.clients.fetch_sub(1, Ordering::Relaxed) == 1 {
            // The last client left: the task starts its idle timer.
            let waker = self.conn.queue.lock_anyway().waker.take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

impl SharedConn {
    pub(super) fn new(id: u64) -> Arc<Self> {
        Arc::new(Self {
            id,
            queue: Mutex::new(Queue::default()),
            clients: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
            owed: AtomicU64::new(0),
            progress_us: AtomicU64::new(0),
            born: Instant::now(),
        })
    }

    /// Clients attached.
    pub(super) fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Replies submitted and not yet delivered.
    pub(super) fn owed(&self) -> u64 {
        self.owed.load(Ordering::Relaxed)
    }

    /// Owes more than `replies` replies, or owes some and delivered none for `stall`: a client
    /// joining it would wait for others' commands, not its own (directly, Redis would answer it,
    /// `-BUSY` during a long script).
    pub(super) fn is_busy(&self, replies: u64, stall: Duration) -> bool {
        let owed = self.owed();
        owed > replies || (owed > 0 && self.silent_for() > stall)
    }

    fn silent_for(&self) -> Duration {
        let since = Duration::from_micros(self.progress_us.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(since)
    }

    fn progressed(&self) {
        let now = u64::try_from(self.born.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.progress_us.store(now, Ordering::Relaxed);
    }

    /// Failed or closed.
    pub(super) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Marks it gone: no more submissions; every client with commands on it (sent or queued)
    /// is told why.
    ///
    /// Every such client is told before a submission can see the connection gone: a client
    /// refused with its inbox not lost moves to another connection at once (`Relink::Replace`),
    /// which is right only when nothing of its was on this one — else the replies to its new
    /// commands would be paired with the old ones.
    fn fail(&self, lost: &Lost, routes: impl IntoIterator<Item = Route>) {
        self.dead.store(true, Ordering::Release);
        for route in routes {
            route.inbox.lose(lost);
        }
        let mut queue = self.queue.lock_anyway();
        queue.lost = Some(lost.clone());
        queue.writes = WriteQueue::default();
        // Under the queue's lock, which every submission takes first.
        for route in std::mem::take(&mut queue.routes) {
            route.inbox.lose(lost);
        }
    }
}

/// The task's side of a shared connection.
pub(super) struct Driver {
    pub(super) conn: Arc<SharedConn>,
    pub(super) stream: UpstreamStream,
    pub(super) reply_max_depth: usize,
    pub(super) idle: Duration,
    pub(super) observer: Arc<dyn Observer>,
    /// Cancelled when the primary moves (Sentinel): the connection closes, as Redis would
    /// have closed it.
    pub(super) moved: tokio_util::sync::CancellationToken,
}

impl Driver {
    /// Serves the connection until Redis closes it, it fails, no client used it for `idle`,
    /// or the primary moves.
    pub(super) async fn run(self) {
        let Self { conn, mut stream, reply_max_depth, idle, observer, moved } = self;
        let mut state = State {
            out: WriteQueue::default(),
            needs_flush: false,
            routes: VecDeque::new(),
            input: BytesMut::with_capacity(READ_SIZE),
            scanned: 0,
            scanner: ReplyScanner::new(reply_max_depth),
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            idle_armed: false,
            yielded: false,
            idle,
        };
        let lost = tokio::select! {
            lost = poll_fn(|cx| state.poll(cx, &conn, &mut stream, observer.as_ref())) => lost,
            () = moved.cancelled() => Lost::Closed,
        };
        tracing::debug!(shared = conn.id, ?lost, "shared upstream connection closed");
        conn.fail(&lost, state.routes.drain(..));
    }
}

struct State {
    out: WriteQueue,
    needs_flush: bool,
    /// Clients owed replies, in the order their commands were written.
    routes: VecDeque<Route>,
    input: BytesMut,
    /// Bytes at the front of `input` framed but not yet handed to a client.
    scanned: usize,
    scanner: ReplyScanner,
    idle_timer: Pin<Box<tokio::time::Sleep>>,
    /// The timer runs from the moment the connection last became idle.
    idle_armed: bool,
    /// Submissions were seen and the task yielded once before taking them.
    yielded: bool,
    idle: Duration,
}

impl State {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        conn: &SharedConn,
        stream: &mut UpstreamStream,
        observer: &dyn Observer,
    ) -> Poll<Lost> {
        loop {
            let mut progress = false;
            {
                let mut queue = conn.queue.lock_anyway();
                if queue.commands > 0 && !self.yielded {
                    // Let the other clients ready in this turn submit too, then write them all
                    // at once: a task that wakes itself goes to the back of the run queue.
                    self.yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                self.yielded = false;
                if queue.commands > 0 {
                    self.out.append(&mut queue.writes);
                    self.routes.extend(queue.routes.drain(..));
                    observer.wrote(std::mem::take(&mut queue.commands));
                } else if !queue.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    queue.waker = Some(cx.waker().clone());
                }
            }
            if !self.out.is_empty() {
                match self.out.poll_write_to(stream, cx, usize::MAX) {
                    Poll::Ready(Ok(_)) => {
                        progress = true;
                        self.needs_flush = true;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Lost::Failed(error.to_string())),
                    Poll::Pending => {}
                }
            } else if self.needs_flush {
                match Pin::new(&mut *stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.needs_flush = false,
                    Poll::Ready(Err(error)) => return Poll::Ready(Lost::Failed(error.to_string())),
                    Poll::Pending => {}
                }
            }
            if self.input.capacity() - self.input.len() < READ_SIZE / 4 {
                self.input.reserve(READ_SIZE);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, &mut self.input) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Lost::Closed),
                Poll::Ready(Ok(_)) => {
                    progress = true;
                    if let Err(lost) = self.dispatch(conn) {
                        return Poll::Ready(lost);
                    }
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Lost::Failed(error.to_string())),
                Poll::Pending => {}
            }
            if progress {
                continue;
            }
            if self.routes.is_empty() && self.out.is_empty() && conn.clients() == 0 {
                if !self.idle_armed {
                    self.idle_armed = true;
                    self.idle_timer.as_mut().reset(Instant::now() + self.idle);
                }
                if std::future::Future::poll(self.idle_timer.as_mut(), cx).is_ready() {
                    return Poll::Ready(Lost::Closed);
                }
            } else {
                self.idle_armed = false;
            }
            return Poll::Pending;
        }
    }

    /// Frames what was read and hands each reply's bytes, as they are framed, to the client
    /// it answers.
    fn dispatch(&mut self, conn: &SharedConn) -> Result<(), Lost> {
        let mut answered = 0;
        let result = self.dispatch_replies(&mut answered);
        conn.owed.fetch_sub(answered, Ordering::Relaxed);
        if answered > 0 {
            conn.progressed();
        }
        result
    }

    fn dispatch_replies(&mut self, answered: &mut u64) -> Result<(), Lost> {
        while self.scanned < self.input.len() {
            let Some(head) = self.routes.front_mut() else {
                return Err(Lost::Failed("a reply with no command waiting for it".into()));
            };
            let (used, done) = self
                .scanner
                .scan(&self.input[self.scanned..])
                .map_err(|error| Lost::Failed(format!("invalid reply: {error}")))?;
            self.scanned += used;
            if !done {
                break;
            }
            *answered += 1;
            head.replies -= 1;
            if head.replies == 0 {
                let route = self.routes.pop_front().expect("the head route");
                let same_client =
                    self.routes.front().is_some_and(|next| Arc::ptr_eq(&next.inbox, &route.inbox));
                if !same_client {
                    route.inbox.deliver(self.input.split_to(self.scanned).freeze());
                    self.scanned = 0;
                }
            }
        }
        // Cut-through: part of a reply (or whole replies of a client with more to come) goes
        // to its client now.
        if self.scanned > 0 {
            if let Some(head) = self.routes.front() {
                head.inbox.deliver(self.input.split_to(self.scanned).freeze());
                self.scanned = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox() -> Arc<Inbox> {
        Arc::new(Inbox { state: Mutex::new(InboxState::default()), limit: 1 << 20 })
    }

    fn received(inbox: &Inbox) -> Vec<u8> {
        inbox.state.lock_anyway().chunks.iter().flat_map(|chunk| chunk.iter().copied()).collect()
    }

    fn state(routes: Vec<Route>) -> State {
        State {
            out: WriteQueue::default(),
            needs_flush: false,
            routes: routes.into(),
            input: BytesMut::new(),
            scanned: 0,
            scanner: ReplyScanner::new(16),
            idle_timer: Box::pin(tokio::time::sleep(Duration::from_secs(60))),
            idle_armed: false,
            yielded: false,
            idle: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn replies_go_to_their_clients_in_order_whatever_the_cuts() {
        let stream: &[u8] = b"+OK\r\n$5\r\nhello\r\n*2\r\n:1\r\n$1\r\nx\r\n-ERR no\r\n:7\r\n";
        for cut in 1..stream.len() {
            let (a, b) = (inbox(), inbox());
            let route = |inbox: &Arc<Inbox>, replies| Route { inbox: Arc::clone(inbox), replies };
            let mut state = state(vec![route(&a, 2), route(&b, 1), route(&a, 1), route(&b, 1)]);
            let conn = SharedConn::new(1);
            conn.owed.store(5, Ordering::Relaxed);
            for (piece, owed) in [(&stream[..cut], None), (&stream[cut..], Some(0))] {
                state.input.extend_from_slice(piece);
                state.dispatch(&conn).expect("valid replies");
                if let Some(owed) = owed {
                    assert_eq!(conn.owed(), owed, "every reply delivered, cut at {cut}");
                }
            }
            assert_eq!(received(&a), b"+OK\r\n$5\r\nhello\r\n-ERR no\r\n", "cut at {cut}");
            assert_eq!(received(&b), b"*2\r\n:1\r\n$1\r\nx\r\n:7\r\n", "cut at {cut}");
            assert!(state.routes.is_empty());
        }
    }

    #[tokio::test]
    async fn a_reply_nobody_waits_for_fails_the_connection() {
        let a = inbox();
        let mut state = state(vec![Route { inbox: Arc::clone(&a), replies: 1 }]);
        state.input.extend_from_slice(b"+OK\r\n+SURPRISE\r\n");
        assert!(matches!(state.dispatch(&SharedConn::new(1)), Err(Lost::Failed(_))));
        assert_eq!(received(&a), b"+OK\r\n");
    }

    #[test]
    fn a_client_that_does_not_read_past_its_limit_is_lost_and_holds_nothing() {
        let inbox = Inbox { state: Mutex::new(InboxState::default()), limit: 10 };
        inbox.deliver(Bytes::from_static(b"+OK\r\n"));
        inbox.deliver(Bytes::from_static(b"$3\r\nabc\r\n"));
        let state = inbox.state.lock_anyway();
        assert_eq!(state.lost, Some(Lost::Overflow));
        assert!(state.chunks.is_empty() && state.len == 0);
    }
}
