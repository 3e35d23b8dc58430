//! `proxy.runtime = "per_core"`: `proxy.threads` threads, each running its own single-threaded
//! tokio runtime with its own listener on `proxy.listen` (`SO_REUSEPORT`: the kernel spreads new
//! connections over the listeners). A client accepted on a thread is served there, and so is its
//! upstream connection (both sockets are registered with that thread's reactor, its timers with
//! that thread's timer): no work stealing, no wake-up crossing threads on the forwarding path.
//!
//! What the connections share (`ProxyContext`: configuration, sink, metrics, `max_clients`, the
//! policy) is the same `Arc` as with the multi-thread runtime, and so are the drain and
//! hard-stop tokens and the task tracker, so shutdown is unchanged. The admin plane, the TLS
//! listener and the signals stay on the process's shared runtime.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::{listener, ProxyContext};

/// Backlog of each listener (what mio, and so `TcpListener::bind`, uses).
const BACKLOG: u32 = 1024;

/// The per-core threads and their listeners.
#[derive(Debug)]
pub(crate) struct Cores {
    cores: Vec<Core>,
    /// Ends every thread's runtime (once every connection has ended).
    stop: CancellationToken,
    local_addr: SocketAddr,
}

#[derive(Debug)]
struct Core {
    runtime: Handle,
    /// Until its accept loop starts.
    listener: Option<TcpListener>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Cores {
    /// Starts `threads` threads and binds one listener for each on `address`, all on the same
    /// port (with port 0, the one the first listener got). Listening starts here; accepting
    /// starts with [`accept`](Self::accept).
    pub(crate) fn start(address: SocketAddr, threads: usize) -> io::Result<Self> {
        let stop = CancellationToken::new();
        let mut cores = Self { cores: Vec::with_capacity(threads), stop, local_addr: address };
        for index in 0..threads.max(1) {
            // Pushed before binding: should binding fail, dropping `cores` ends this thread too.
            let (runtime, thread) = spawn_thread(index, cores.stop.clone())?;
            let listener = {
                // Registered with this thread's reactor, as the clients it accepts will be.
                let _context = runtime.enter();
                bind_reuseport(cores.local_addr)
            };
            cores.cores.push(Core { runtime, listener: None, thread: Some(thread) });
            let listener = listener?;
            cores.local_addr = listener.local_addr()?;
            if let Some(core) = cores.cores.last_mut() {
                core.listener = Some(listener);
            }
        }
        Ok(cores)
    }

    /// The address every listener is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts each thread's accept loop (the plain-TCP one of
    /// [`listener::accept_loop`]); each connection task runs on the thread that accepted it.
    pub(crate) fn accept(
        &mut self,
        ctx: &Arc<ProxyContext>,
        tracker: &TaskTracker,
        drain: &CancellationToken,
        hard_stop: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.cores
            .iter_mut()
            .filter_map(|core| {
                let listener = core.listener.take()?;
                Some(core.runtime.spawn(listener::accept_loop(
                    listener,
                    None,
                    Arc::clone(ctx),
                    tracker.clone(),
                    drain.clone(),
                    hard_stop.clone(),
                )))
            })
            .collect()
    }

    /// Ends the threads and waits for them. Call it once every connection has ended (anything
    /// still running on a thread is dropped).
    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        let threads: Vec<_> = self.cores.iter_mut().filter_map(|core| core.thread.take()).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

impl Drop for Cores {
    /// Without [`stop`](Self::stop) (a failed start, an `App` dropped without shutdown): the
    /// threads end, dropping their connections.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A thread running a current-thread runtime until `stop`; returns the runtime's handle.
fn spawn_thread(
    index: usize,
    stop: CancellationToken,
) -> io::Result<(Handle, std::thread::JoinHandle<()>)> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    let thread =
        std::thread::Builder::new().name(format!("rap-core-{index}")).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = sender.send(Err(error));
                    return;
                }
            };
            let _ = sender.send(Ok(runtime.handle().clone()));
            // Drives this thread's accept loop and connections until told to stop; the runtime is
            // dropped here, on its own thread.
            runtime.block_on(stop.cancelled());
        })?;
    let handle = receiver
        .recv()
        .map_err(|_| io::Error::other("a per-core thread ended before its runtime started"))??;
    Ok((handle, thread))
}

/// A listener on `address` that other sockets of this process may bind too (`SO_REUSEPORT`).
fn bind_reuseport(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}
