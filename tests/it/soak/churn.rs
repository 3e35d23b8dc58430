//! Waves of short-lived connections after the soak, to tell a leak from memory the allocator
//! keeps: each wave opens as many connections as the soak had, runs a command on each, and
//! closes them all; a leak grows RSS with every wave, kept memory is reused.

use std::net::SocketAddr;

use tokio::task::JoinSet;

use super::wire::{Conn, REPLY_DEADLINE};

/// Where the waves connect from: not the clients' address (their records are not the soak's).
const CHURN_IP: [u8; 4] = [127, 0, 0, 2];
use crate::support::client::encode_command;

/// Opens `connections` connections (at most 500 connecting at once), sends each a PING,
/// waits for the PONGs and closes them all. Returns how many got their PONG.
pub async fn wave(proxy: SocketAddr, connections: usize) -> usize {
    let mut open = Vec::with_capacity(connections);
    for batch in (0..connections).collect::<Vec<_>>().chunks(500) {
        let mut connecting = JoinSet::new();
        for _ in batch {
            connecting.spawn(async move {
                let mut conn = Conn::open(CHURN_IP, proxy).await.ok()?;
                conn.write(&encode_command(&[b"PING"])).await.ok()?;
                let deadline = tokio::time::Instant::now() + REPLY_DEADLINE;
                let pong = conn.read_reply(deadline).await.ok()?;
                (pong == b"+PONG\r\n").then_some(conn)
            });
        }
        while let Some(conn) = connecting.join_next().await {
            open.extend(conn.expect("a churn task"));
        }
    }
    let ponged = open.len();
    drop(open);
    ponged
}
