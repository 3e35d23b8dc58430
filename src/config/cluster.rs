//! `[cluster]`: Redis Cluster through per-node sidecars — which address clients should use for
//! each node's address Redis announces (raw and validated).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::Invalid;

/// `cluster.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMode {
    /// Replies pass as they are (a single Redis, or a cluster whose servers announce the
    /// sidecars themselves: Valkey's `cluster-announce-client-ipv4` / `-port`).
    #[default]
    Off,
    /// One proxy in front of each node: every node address in a redirect or a topology reply
    /// is replaced by its sidecar's, and one without a sidecar is never handed to a client.
    Sidecar,
}

impl ClusterMode {
    /// The name `cluster.mode` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Sidecar => "sidecar",
        }
    }
}

/// `[cluster]` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    /// `off` or `sidecar`.
    pub mode: ClusterMode,
    /// The sidecar of a node not in `announce`: the node's host, its port plus this (0: none).
    pub(crate) port_offset: i64,
    /// `"node host:port" = "sidecar host:port"`.
    pub announce: BTreeMap<String, String>,
}

/// `[cluster]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `cluster.mode`.
    pub mode: ClusterMode,
    /// `cluster.port_offset` (0: none).
    pub(crate) port_offset: i32,
    /// `cluster.announce`: node `(host, port)` → sidecar `(host, port)`, hosts lower-cased.
    pub announce: BTreeMap<(String, u16), (String, u16)>,
}

/// `host:port`, `[v6]:port`: the host (without brackets, lower-cased) and the port.
pub(crate) fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.trim().rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_ascii_lowercase(), port.parse().ok()?))
}

impl RawCluster {
    /// Checks every address and the offset.
    pub fn validate(&self) -> Result<ClusterConfig, Invalid> {
        let port_offset = i32::try_from(self.port_offset)
            .ok()
            .filter(|offset| offset.unsigned_abs() < 65_536)
            .ok_or_else(|| Invalid::other("cluster.port_offset", "must be within ±65535"))?;
        let mut announce = BTreeMap::new();
        for (node, sidecar) in &self.announce {
            let address = |text: &String| {
                split_host_port(text).ok_or_else(|| {
                    Invalid::other(
                        "cluster.announce",
                        format!("{node:?} = {sidecar:?}: {text:?} is not HOST:PORT"),
                    )
                })
            };
            announce.insert(address(node)?, address(sidecar)?);
        }
        if self.mode == ClusterMode::Sidecar && announce.is_empty() && port_offset == 0 {
            return Err(Invalid::other(
                "cluster.mode",
                "\"sidecar\" needs cluster.announce entries or a cluster.port_offset",
            ));
        }
        Ok(ClusterConfig { mode: self.mode, port_offset, announce })
    }
}

impl ClusterConfig {
    /// The sidecar clients should use for the node at `host:port`: its `announce` entry, else
    /// the same host at `port + port_offset`; `None` when neither applies.
    pub(crate) fn sidecar_of(&self, host: &str, port: u16) -> Option<(String, u16)> {
        let key = (host.to_ascii_lowercase(), port);
        if let Some(sidecar) = self.announce.get(&key) {
            return Some(sidecar.clone());
        }
        if self.port_offset == 0 {
            return None;
        }
        let port = u16::try_from(i32::from(port) + self.port_offset).ok()?;
        Some((host.to_owned(), port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_map_by_entry_then_by_offset() {
        let raw = RawCluster {
            mode: ClusterMode::Sidecar,
            port_offset: 1000,
            announce: [("10.0.0.1:6379".to_owned(), "proxy-a:7000".to_owned())].into(),
        };
        let cluster = raw.validate().unwrap();
        assert_eq!(cluster.sidecar_of("10.0.0.1", 6379), Some(("proxy-a".to_owned(), 7000)));
        assert_eq!(cluster.sidecar_of("10.0.0.2", 6379), Some(("10.0.0.2".to_owned(), 7379)));
        assert_eq!(cluster.sidecar_of("h", 65000), None, "past the last port");
        let none = RawCluster { mode: ClusterMode::Sidecar, ..RawCluster::default() };
        assert_eq!(none.validate().unwrap_err().key, "cluster.mode");
        let bad = RawCluster {
            mode: ClusterMode::Sidecar,
            announce: [("nope".to_owned(), "x:1".to_owned())].into(),
            ..RawCluster::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("HOST:PORT"));
        assert_eq!(split_host_port("[::1]:6379"), Some(("::1".to_owned(), 6379)));
    }
}
