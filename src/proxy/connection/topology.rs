//! `cluster.mode = "sidecar"` in the reply path: which replies are held whole to be rewritten
//! (redirect errors, the topology commands' replies), and what the client gets instead — the
//! reply with every node address replaced by its sidecar's, or, when a node has none, an error
//! and a `cluster_bypass` security event.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Connection;
use crate::config::cluster::ClusterMode;
use crate::event::{SecurityAction, SecurityEvent};
use crate::proxy::cluster::{self, Rewrite, TOPOLOGY_COMMANDS};
use crate::proxy::pipeline::Slot;
use crate::resp::encode;

impl<C> Connection<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    /// Whether the reply starting with `first` to `slot` must be held whole and rewritten.
    pub(super) fn cluster_holds(&self, slot: &Slot, first: u8) -> bool {
        self.ctx.config.cluster.mode == ClusterMode::Sidecar
            && (matches!(first, b'-' | b'!')
                || slot
                    .command
                    .as_deref()
                    .is_some_and(|c| TOPOLOGY_COMMANDS.contains(&c.name.as_str())))
    }

    /// The held reply to `slot`, as the client must see it.
    pub(super) fn cluster_rewrite(&self, slot: &Slot, held: Bytes) -> Bytes {
        let config = &self.ctx.config.cluster;
        let name = slot.command.as_deref().map_or("", |c| c.name.as_str());
        let rewrite = if TOPOLOGY_COMMANDS.contains(&name) && !held.starts_with(b"-") {
            cluster::topology(name, &held, config)
        } else {
            cluster::redirect(&held, config)
        };
        match rewrite {
            Rewrite::Unchanged => held,
            Rewrite::Replaced(bytes) => bytes,
            Rewrite::Unmapped(node) => {
                tracing::warn!(%node, "a cluster node without a sidecar was withheld from a client");
                self.ctx.sink.security(SecurityEvent {
                    action: SecurityAction::ClusterBypass,
                    time: std::time::SystemTime::now(),
                    conn_id: self.session.id,
                    client_addr: self.peer,
                    user: self.session.user.clone(),
                    username: None,
                    reason: "unmapped_node",
                    context: if self.session.in_multi { "multi" } else { "toplevel" },
                    object: Some(Bytes::from(node.clone())),
                    command: slot.command.as_ref().map(|c| c.name.clone()),
                    source: "proxy",
                    mode: None,
                    policy_version: None,
                });
                encode::error(&format!(
                    "ERR redis-audit-proxy: cluster node {node} has no sidecar (cluster.announce, \
                     cluster.port_offset): not handed to the client"
                ))
            }
        }
    }
}
