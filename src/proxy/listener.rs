//! The accept loop: never dies, skips per-connection errors, backs off when out of file
//! descriptors, enforces `max_clients` with Redis's own refusal, spawns one task per client.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::connection::Accepted;
pub use crate::proxy::tls_listener::TlsListener;
use crate::proxy::{connection, ProxyContext};
use crate::resp::encode::MAX_CLIENTS_REACHED;

/// Accepts clients on `listener` until `drain` fires; connection tasks go on `tracker`. With
/// `tls`, each client first completes a TLS handshake.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsListener>,
    ctx: Arc<ProxyContext>,
    tracker: TaskTracker,
    drain: CancellationToken,
    hard_stop: CancellationToken,
) {
    let slots = Arc::clone(&ctx.client_slots);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = drain.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // EMFILE/ENFILE and the like: wait for descriptors to free up, then go on.
                tracing::error!(%error, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = drain.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(client = %peer, "max number of clients reached");
            tracker.spawn(async move {
                let mut stream = stream;
                let _ = stream.write_all(MAX_CLIENTS_REACHED).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let ctx = Arc::clone(&ctx);
        let (drain, hard_stop) = (drain.clone(), hard_stop.clone());
        let _ = stream.set_nodelay(true);
        let local_addr = stream.local_addr().ok();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let at = tokio::time::Instant::now();
        match &tls {
            None => {
                tracker.spawn(async move {
                    let accepted = Accepted { stream, peer, local_addr, fd, tls: None, at };
                    connection::serve(ctx, accepted, drain, hard_stop).await;
                    drop(permit);
                });
            }
            Some(tls) => {
                let tls = tls.clone();
                tracker.spawn(async move {
                    if let Some(accepted) =
                        tls.handshake(&ctx, stream, peer, local_addr, fd, at).await
                    {
                        connection::serve(ctx, accepted, drain, hard_stop).await;
                    }
                    drop(permit);
                });
            }
        }
    }
}

/// Errors that concern one connection only (axum's `handle_accept_error` list).
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
