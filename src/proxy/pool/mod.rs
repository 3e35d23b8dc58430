//! `upstream.pool = "shared"`: the upstream connections clients share, grouped by the state
//! Redis holds per connection (login, database, protocol), and the spare connections clients
//! are pinned to while they need one of their own.
//!
//! A login other than a new connection's is the credentials Redis accepted from a client
//! (passthrough) or the client's mirrored user (`auth.mode = "proxy"`): the pool keeps them in
//! memory, as the key of the connections it opens with them, and never prints them.

mod implicit;
mod pause;
mod shared;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use shared::{Lost, SharedLink};

use crate::config::{AuthMode, Config, Secret};
use crate::metrics::Metrics;
use crate::proxy::pipeline::Preset;
use crate::proxy::upstream::{self, Target, UpstreamError, UpstreamStream, UpstreamTls};
use crate::resp::encode;
use crate::util::sync::LockAnyway;

/// Why a client could not have a shared connection; its `Display` is the `-ERR` text the
/// client's commands get (and is never a password: Redis's refusals do not echo one).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    /// Redis could not be reached.
    #[error("{0}")]
    Connect(Arc<UpstreamError>),
    /// A connection made for clients that have not logged in was logged in as `default`: Redis
    /// logs new connections in again, and the client's login is decided anew.
    #[error("upstream {address} logs new connections in as default again")]
    Reopened {
        /// The configured address.
        address: String,
    },
    /// Putting a new connection in its state took longer than `upstream.connect_timeout`.
    #[error("upstream {address} unavailable: setup timed out")]
    SetupTimedOut {
        /// The configured address.
        address: String,
    },
    /// Redis refused the login, `HELLO 3` or `SELECT` of a new shared connection.
    #[error("upstream {address} refused the shared connection's {what}: {text}")]
    Refused {
        /// The configured address.
        address: String,
        /// `login`, `HELLO 3` or `SELECT`.
        what: &'static str,
        /// Redis's error.
        text: String,
    },
    /// The connection failed while being set up.
    #[error("upstream {address}: {source}")]
    Setup {
        /// The configured address.
        address: String,
        /// Why.
        source: Arc<upstream::FetchTableError>,
    },
}

/// The name shared connections give themselves, so that `CLIENT LIST` tells them apart.
pub(crate) const SHARED_NAME: &str = "redis-audit-proxy-shared";

/// Who a connection is logged in as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Login {
    /// As a new connection is: not logged in (passthrough), or the service login
    /// (`auth.mode = "proxy"`).
    Default,
    /// Passthrough, a client that has not logged in while Redis does not log new connections
    /// in as `default` ([`implicit`]): connections the pool checked are not logged in.
    Unauthenticated,
    /// `AUTH user password`, which Redis accepted before.
    As {
        /// The user.
        user: Bytes,
        /// The password (`Debug` hides it).
        password: Secret,
    },
}

/// What Redis holds per connection that decides which shared connections a client may use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateKey {
    /// Who the connection is logged in as.
    pub login: Login,
    /// The selected database.
    pub db: u32,
    /// The RESP version.
    pub protocol: u8,
}

impl StateKey {
    /// The commands that put a new connection in this protocol and database (none for RESP2
    /// and database 0).
    pub(crate) fn presets(&self) -> Vec<(Preset, Bytes)> {
        let mut presets = Vec::new();
        if self.protocol == 3 {
            presets.push((Preset::Protocol, encode::command(&[b"HELLO", b"3"])));
        }
        if self.db != 0 {
            let db = self.db.to_string();
            presets.push((Preset::Db, encode::command(&[b"SELECT", db.as_bytes()])));
        }
        presets
    }
}

/// The shared and spare upstream connections of one process.
#[derive(Debug)]
pub struct Pool {
    config: Arc<Config>,
    /// Where new connections go.
    target: Arc<Target>,
    metrics: Arc<Metrics>,
    groups: Mutex<HashMap<GroupKey, Group>>,
    /// `proxy.runtime = "per_core"`: each thread has connections of its own, so that a client
    /// and its shared connection are served by one thread, with no wake-up across threads.
    per_thread: bool,
    /// Held while a shared connection is being opened, so that a thousand clients arriving
    /// together open `pool_size` connections, not a thousand.
    opening: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    /// The last failure to open a shared connection: clients arriving within
    /// `upstream.reconnect_interval` of it get its error without trying again.
    last_failure: Mutex<Option<(Instant, PoolError)>>,
    /// The pool itself, for the task that closes spares idle for `pool_idle` (started with
    /// the first spare).
    me: std::sync::Weak<Self>,
    sweeping: std::sync::atomic::AtomicBool,
    /// Whether new connections are logged in as `default`, as the last probe found.
    implicit: implicit::Implicit,
    /// A write pause Redis accepted through this proxy.
    pause: pause::KnownPause,
    shared_gauge: IntGauge,
    spare_gauge: IntGauge,
}

/// A group of connections: a state, and with `per_core` the thread they are served on.
type GroupKey = (StateKey, Option<std::thread::ThreadId>);

#[derive(Debug, Default)]
struct Group {
    shared: Vec<Arc<shared::SharedConn>>,
    spares: Vec<Spare>,
}

/// The library name and version a connection was given with `CLIENT SETINFO` (`None`: none).
pub type LibInfo = (Option<Bytes>, Option<Bytes>);

/// A connection handed to a client to pin to.
#[derive(Debug)]
pub struct Dedicated {
    /// The connection.
    pub stream: UpstreamStream,
    /// New: the client must put it in its state itself (a spare already is, but for `lib`).
    pub fresh: bool,
    /// The library a spare's last client gave it (a new one has none).
    pub lib: LibInfo,
    /// Cancelled once its primary is no longer the target.
    pub moved: CancellationToken,
}

#[derive(Debug)]
struct Spare {
    stream: UpstreamStream,
    lib: LibInfo,
    since: Instant,
    /// Cancelled once its primary is no longer the target: then it is not handed out.
    moved: CancellationToken,
}

impl shared::Observer for Metrics {
    fn wrote(&self, commands: u64) {
        self.upstream_write(commands);
    }
}

impl Pool {
    /// An empty pool for `config`'s upstream.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, target: Arc<Target>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            target,
            me: me.clone(),
            sweeping: std::sync::atomic::AtomicBool::new(false),
            implicit: implicit::Implicit::default(),
            pause: pause::KnownPause::default(),
            shared_gauge: metrics.upstream_connections("shared"),
            spare_gauge: metrics.upstream_connections("spare"),
            per_thread: config.proxy.runtime == crate::config::Runtime::PerCore,
            config,
            metrics,
            groups: Mutex::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            last_failure: Mutex::new(None),
        })
    }

    fn groups(&self) -> MutexGuard<'_, HashMap<GroupKey, Group>> {
        self.groups.lock_anyway()
    }

    fn group_key(&self, key: StateKey) -> GroupKey {
        (key, self.per_thread.then(|| std::thread::current().id()))
    }

    /// Passthrough: the login of a client that has not logged in, connected (or reset) at
    /// `since`: `Default` when a probe started after that found a new connection logged in as
    /// `default`, else `Unauthenticated` ([`implicit`]).
    pub async fn implicit_login(&self, since: Instant, tls: Option<&UpstreamTls>) -> Login {
        let probe = async {
            let (address, _) = self.target.watch();
            let connect = upstream::connect(&address, &self.config.upstream, tls);
            let opened = async {
                let mut stream = connect.await.ok()?;
                let ping = encode::command(&[b"PING"]);
                let reply = upstream::read_reply(&mut stream, &ping).await.ok()?;
                Some(!reply.starts_with(b"-NOAUTH"))
            };
            // A Redis that cannot be asked is taken as asking for a login.
            let limit = self.config.upstream.connect_timeout * 2;
            tokio::time::timeout(limit, opened).await.ok().flatten().unwrap_or(false)
        };
        self.implicit.login(since, probe).await
    }

    /// Redis accepted a client's `CLIENT PAUSE` or `CLIENT UNPAUSE` (`args` as sent).
    pub(crate) fn pause_accepted(&self, args: &[Bytes]) {
        self.pause.accepted(args);
    }

    /// True while a `CLIENT PAUSE ... WRITE` Redis accepted through this proxy lasts: the
    /// commands it holds run on connections of their own (`PinReason::HeldByPause`).
    pub(crate) fn writes_paused(&self) -> bool {
        self.pause.writes_paused()
    }

    /// A link to a shared connection in state `key`: the oldest that is not busy, else a new
    /// one while the group has room, else the one owing the fewest replies (see `pick`).
    pub async fn link(
        &self,
        key: StateKey,
        tls: Option<&UpstreamTls>,
    ) -> Result<SharedLink, PoolError> {
        if let Some(link) = self.pick(&key) {
            return Ok(link);
        }
        let _opening = self.opening.lock().await;
        if let Some(link) = self.pick(&key) {
            return Ok(link);
        }
        if let Some((at, error)) = &*self.last_failure.lock_anyway() {
            if at.elapsed() < self.config.upstream.reconnect_interval {
                return Err(error.clone());
            }
        }
        let conn = match self.open_shared(&key, tls).await {
            Ok(conn) => conn,
            // Not Redis failing: the client's login is decided anew (`implicit`).
            Err(error @ PoolError::Reopened { .. }) => return Err(error),
            Err(error) => {
                *self.last_failure.lock_anyway() = Some((Instant::now(), error.clone()));
                return Err(error);
            }
        };
        let link = SharedLink::attach(&conn, self.config.upstream.pool_unread_max_bytes);
        self.groups().entry(self.group_key(key)).or_default().shared.push(conn);
        Ok(link)
    }

    /// For a client leaving shared connection `from` between replies because it is busy (owes
    /// other clients more than `upstream.pool_busy_replies`, or has been silent for
    /// `upstream.pool_stall_ms` while owing some): the oldest other connection in state `key`
    /// that is not busy, else a new one while the group has room; `None` when every one is
    /// busy (the client stays).
    pub async fn relieve(
        &self,
        key: StateKey,
        tls: Option<&UpstreamTls>,
        from: u64,
    ) -> Option<SharedLink> {
        if let Some(link) = self.pick_other(&key, from) {
            return Some(link);
        }
        let _opening = self.opening.lock().await;
        if let Some(link) = self.pick_other(&key, from) {
            return Some(link);
        }
        let full = self.groups().get(&self.group_key(key.clone())).map_or(0, |g| g.shared.len())
            >= self.config.upstream.pool_size;
        if full {
            return None;
        }
        let conn = self.open_shared(&key, tls).await.ok()?;
        let link = SharedLink::attach(&conn, self.config.upstream.pool_unread_max_bytes);
        self.groups().entry(self.group_key(key)).or_default().shared.push(conn);
        Some(link)
    }

    /// Whether shared connections in state `key` are open (for a login to join them).
    pub(crate) fn has_group(&self, key: &StateKey) -> bool {
        let groups = self.groups();
        let group = groups.get(&self.group_key(key.clone()));
        group.is_some_and(|group| group.shared.iter().any(|conn| !conn.is_dead()))
    }

    /// A link to an open shared connection in state `key` (the first that is not busy, else
    /// the one owing the fewest replies), never a new one: `None` when there is none.
    pub(crate) fn join(&self, key: &StateKey) -> Option<SharedLink> {
        let mut groups = self.groups();
        let group = groups.get_mut(&self.group_key(key.clone()))?;
        group.shared.retain(|conn| !conn.is_dead());
        let conn =
            self.first_not_busy(&group.shared, None).or_else(|| least_owing(&group.shared))?;
        Some(SharedLink::attach(conn, self.config.upstream.pool_unread_max_bytes))
    }

    fn pick_other(&self, key: &StateKey, from: u64) -> Option<SharedLink> {
        let mut groups = self.groups();
        let group = groups.entry(self.group_key(key.clone())).or_default();
        group.shared.retain(|conn| !conn.is_dead());
        let other = self.first_not_busy(&group.shared, Some(from))?;
        Some(SharedLink::attach(other, self.config.upstream.pool_unread_max_bytes))
    }

    /// Clients are packed: each joins the oldest shared connection of its state that owes at
    /// most `upstream.pool_busy_replies`, and another is opened only when every one owes more
    /// (while the group has room), so that Redis reads as many clients' commands per read as
    /// are ready and the proxy makes one write and one read for them. Spreading clients over
    /// `pool_size` connections instead cost Redis up to twice the CPU per command at pipeline
    /// 1, and the proxy a third more at 16 (docs/benchmarks.md, "Packing the shared
    /// connections"); a client behind another's deep pipeline still moves off it (`relieve`).
    ///
    /// The second client of a group opens a second connection all the same (when `pool_size`
    /// allows): a client moving off a connection held by a long script needs one already in its
    /// state, as a new one's `SELECT` gets `-BUSY` until the script ends.
    fn pick(&self, key: &StateKey) -> Option<SharedLink> {
        let mut groups = self.groups();
        let group = groups.entry(self.group_key(key.clone())).or_default();
        group.shared.retain(|conn| !conn.is_dead());
        let (open, most) = (group.shared.len(), self.config.upstream.pool_size);
        let conn = match self.first_not_busy(&group.shared, None) {
            Some(_) if open < most.min(OPENED_BEFORE_PACKING) => return None,
            Some(conn) => conn,
            None if open < most => return None,
            None => least_owing(&group.shared)?,
        };
        Some(SharedLink::attach(conn, self.config.upstream.pool_unread_max_bytes))
    }

    /// The oldest of `conns` (but `except`) that is not busy: owes at most
    /// `upstream.pool_busy_replies`, and has not been silent for `upstream.pool_stall_ms`
    /// while owing some.
    fn first_not_busy<'a>(
        &self,
        conns: &'a [Arc<shared::SharedConn>],
        except: Option<u64>,
    ) -> Option<&'a Arc<shared::SharedConn>> {
        let (replies, stall) =
            (self.config.upstream.pool_busy_replies, self.config.upstream.pool_stall);
        conns.iter().find(|conn| Some(conn.id) != except && !conn.is_busy(replies, stall))
    }

    /// Opens a connection, puts it in state `key` and starts its task.
    async fn open_shared(
        &self,
        key: &StateKey,
        tls: Option<&UpstreamTls>,
    ) -> Result<Arc<shared::SharedConn>, PoolError> {
        let config = &self.config.upstream;
        let (address, moved) = self.target.watch();
        let mut stream = upstream::connect(&address, config, tls).await.map_err(|error| {
            self.metrics.upstream_connect_error();
            PoolError::Connect(Arc::new(error))
        })?;
        tokio::time::timeout(config.connect_timeout, self.set_up(&mut stream, key))
            .await
            .map_err(|_| PoolError::SetupTimedOut { address: config.address.clone() })??;
        let conn = shared::SharedConn::new(self.next_id.fetch_add(1, Ordering::Relaxed));
        let gauge = self.shared_gauge.clone();
        gauge.inc();
        let driver = shared::Driver {
            conn: Arc::clone(&conn),
            stream,
            reply_max_depth: self.config.proxy.limits.reply_max_depth,
            idle: config.pool_idle,
            observer: Arc::clone(&self.metrics) as Arc<dyn shared::Observer>,
            moved,
        };
        tracing::debug!(
            shared = conn.id,
            db = key.db,
            protocol = key.protocol,
            "shared upstream connection opened"
        );
        tokio::spawn(async move {
            driver.run().await;
            gauge.dec();
        });
        Ok(conn)
    }

    /// The service login (`auth.mode = "proxy"`), the connection's name, the protocol and the
    /// database. Only a refused login or database fails it.
    ///
    /// Redis keeps a connection's protocol and database across `AUTH`, so a client may run as a
    /// user that may not run `HELLO` or `SELECT` in a database it chose before logging in (Redis's
    /// own tests do). For a client's login both are therefore tried first, as the connection's
    /// first user, and again after the login only when that was refused.
    async fn set_up(&self, stream: &mut UpstreamStream, key: &StateKey) -> Result<(), PoolError> {
        let address = &self.config.upstream.address;
        let refused = |what: &'static str, reply: &[u8]| {
            let text = String::from_utf8_lossy(reply.get(1..).unwrap_or_default());
            PoolError::Refused { address: address.clone(), what, text: text.trim_end().to_owned() }
        };
        let io = |error: upstream::FetchTableError| PoolError::Setup {
            address: address.clone(),
            source: Arc::new(error),
        };
        let login = match (&key.login, &self.config.auth.upstream_login) {
            (Login::As { user, password }, _) => {
                Some(encode::command(&[b"AUTH", user, &password.0]))
            }
            (Login::Default, Some((user, password)))
                if self.config.auth.mode == AuthMode::Proxy =>
            {
                Some(encode::command(&[b"AUTH", user.as_bytes(), &password.0]))
            }
            (Login::Default | Login::Unauthenticated, _) => None,
        };
        let mut presets = key.presets();
        if matches!(key.login, Login::As { .. }) {
            let mut refused_before = Vec::new();
            for (preset, command) in presets {
                let reply = upstream::read_reply(stream, &command).await.map_err(io)?;
                if reply.starts_with(b"-") {
                    refused_before.push((preset, command));
                }
            }
            presets = refused_before;
        }
        if let Some(login) = login {
            let reply = upstream::read_reply(stream, &login).await.map_err(io)?;
            if reply.starts_with(b"-") {
                // Redis's words, which never hold the password.
                return Err(refused("login", &reply));
            }
        }
        let name = encode::command(&[b"CLIENT", b"SETNAME", SHARED_NAME.as_bytes()]);
        // A service user without +client|setname leaves it unnamed; nothing else changes.
        let named = upstream::read_reply(stream, &name).await.map_err(io)?;
        if key.login == Login::Unauthenticated && !named.starts_with(b"-NOAUTH") {
            // Logged in as `default`: it would serve later clients without a password.
            self.implicit.reopened().await;
            return Err(PoolError::Reopened { address: address.clone() });
        }
        for (preset, command) in presets {
            let reply = upstream::read_reply(stream, &command).await.map_err(io)?;
            if reply.starts_with(b"-") {
                return Err(refused(preset.name(), &reply));
            }
        }
        Ok(())
    }

    /// A connection for a client to pin: a spare in state `key`, or a new one that the client
    /// must put in that state itself.
    pub async fn dedicated(
        &self,
        key: &StateKey,
        tls: Option<&UpstreamTls>,
    ) -> Result<Dedicated, UpstreamError> {
        let group = self.group_key(key.clone());
        loop {
            let spare = self.groups().get_mut(&group).and_then(|g| g.spares.pop());
            let Some(mut spare) = spare else { break };
            self.spare_gauge.dec();
            if spare.since.elapsed() < self.config.upstream.pool_idle
                && !spare.moved.is_cancelled()
                && still_open(&mut spare.stream)
            {
                let Spare { stream, lib, moved, .. } = spare;
                return Ok(Dedicated { stream, fresh: false, lib, moved });
            }
        }
        let (address, moved) = self.target.watch();
        let stream =
            upstream::connect(&address, &self.config.upstream, tls).await.inspect_err(|_| {
                self.metrics.upstream_connect_error();
            })?;
        Ok(Dedicated { stream, fresh: true, lib: LibInfo::default(), moved })
    }

    /// A client unpinned: its connection, in state `key` and with the library `lib` the client
    /// gave it, is kept as a spare while there is room, else closed.
    pub(crate) fn give_back(
        &self,
        key: &StateKey,
        stream: UpstreamStream,
        lib: LibInfo,
        moved: CancellationToken,
    ) {
        let group = self.group_key(key.clone());
        let mut groups = self.groups();
        let group = groups.entry(group).or_default();
        // A pinned connection of a client that has not logged in may have been made while
        // Redis logged new connections in: it is not kept for the next one.
        if key.login != Login::Unauthenticated
            && group.spares.len() < self.config.upstream.pool_size
        {
            group.spares.push(Spare { stream, lib, since: Instant::now(), moved });
            self.spare_gauge.inc();
        }
        drop(groups);
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            let pool = self.me.clone();
            let every =
                (self.config.upstream.pool_idle / 2).max(std::time::Duration::from_millis(10));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(pool) = pool.upgrade() else { return };
                    pool.sweep();
                }
            });
        }
    }

    /// Closes the spares no client took for `pool_idle`, and forgets empty groups.
    fn sweep(&self) {
        let idle = self.config.upstream.pool_idle;
        let now = Instant::now();
        let mut groups = self.groups();
        for group in groups.values_mut() {
            let before = group.spares.len();
            group.spares.retain(|spare| now.saturating_duration_since(spare.since) < idle);
            self.spare_gauge.sub((before - group.spares.len()) as i64);
            group.shared.retain(|conn| !conn.is_dead());
        }
        groups.retain(|_, group| !(group.spares.is_empty() && group.shared.is_empty()));
    }
}

/// Shared connections a group opens for its first clients before it packs the others onto the
/// oldest that is not busy (see `pick`).
const OPENED_BEFORE_PACKING: usize = 2;

/// The one of `conns` that owes the fewest replies.
fn least_owing(conns: &[Arc<shared::SharedConn>]) -> Option<&Arc<shared::SharedConn>> {
    conns.iter().min_by_key(|conn| conn.owed())
}

/// Whether a spare connection is still open: nothing may arrive on an idle connection but
/// its close (Redis's `timeout`, a restart, `CLIENT KILL`).
fn still_open(stream: &mut UpstreamStream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(std::pin::Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}
