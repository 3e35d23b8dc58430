//! `cluster.mode = "sidecar"`: node addresses in what Redis Cluster tells clients — `-MOVED` and
//! `-ASK` redirects, `CLUSTER SLOTS`, `CLUSTER SHARDS`, `CLUSTER NODES`, `CLUSTER REPLICAS` /
//! `SLAVES`, and the primary's and replicas' addresses in `ROLE` and `INFO` — replaced by their
//! sidecars' (`cluster.announce`, `cluster.port_offset`), in RESP2
//! and RESP3, so that no cluster client is sent around the proxies. A reply naming a node
//! without a sidecar is not delivered at all ([`Rewrite::Unmapped`]).

use bytes::Bytes;

use crate::config::cluster::ClusterConfig;
use crate::resp::value::Value;

/// What becomes of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Nothing in it names a node: as it is.
    Unchanged,
    /// The reply with every node address replaced.
    Replaced(Bytes),
    /// It names this node (`host:port`), which has no sidecar.
    Unmapped(String),
}

/// A node address (`host:port`) with no sidecar: the reply naming it is not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unmapped(String);

/// The commands whose replies name nodes (full names).
pub const TOPOLOGY_COMMANDS: &[&str] = &[
    "cluster|slots",
    "cluster|shards",
    "cluster|nodes",
    "cluster|replicas",
    "cluster|slaves",
    "role",
    "info",
];

/// `-MOVED <slot> <host>:<port>` or `-ASK ...` (the whole error reply, with its `\r\n`) with
/// the sidecar's address; public for the fuzz target (`fuzz/fuzz_targets/cluster_rewrite.rs`).
pub fn redirect(reply: &[u8], cluster: &ClusterConfig) -> Rewrite {
    let Some(line) = reply.strip_suffix(b"\r\n") else { return Rewrite::Unchanged };
    let text = String::from_utf8_lossy(line);
    let mut words = text.splitn(3, ' ');
    let (Some(kind @ ("-MOVED" | "-ASK")), Some(slot), Some(address)) =
        (words.next(), words.next(), words.next())
    else {
        return Rewrite::Unchanged;
    };
    match map_address(address, cluster) {
        Ok(Some(mapped)) => Rewrite::Replaced(Bytes::from(format!("{kind} {slot} {mapped}\r\n"))),
        Ok(None) => Rewrite::Unchanged,
        Err(Unmapped(address)) => Rewrite::Unmapped(address),
    }
}

/// `host:port` (IPv6 without brackets, as Redis writes it) → the sidecar's, in the same form;
/// `Ok(None)` for an address that names no reachable node (port 0, or no host: `?`, empty).
fn map_address(address: &str, cluster: &ClusterConfig) -> Result<Option<String>, Unmapped> {
    let Some((host, port)) = address.rsplit_once(':') else { return Ok(None) };
    let Ok(port) = port.parse::<u16>() else { return Ok(None) };
    map_host_port(host, port, cluster)
        .map(|mapped| mapped.map(|(host, port)| format!("{host}:{port}")))
}

fn map_host_port(
    host: &str,
    port: u16,
    cluster: &ClusterConfig,
) -> Result<Option<(String, u16)>, Unmapped> {
    if port == 0 || host.is_empty() || host == "?" {
        return Ok(None);
    }
    // A sidecar at port 0 (the node's port plus a negative offset) is none: clients read
    // port 0 as "no address".
    cluster
        .sidecar_of(host, port)
        .filter(|&(_, sidecar_port)| sidecar_port != 0)
        .map(Some)
        .ok_or_else(|| Unmapped(format!("{host}:{port}")))
}

/// The reply of the topology command `command` (a full name of [`TOPOLOGY_COMMANDS`]) with
/// every node address replaced.
pub fn topology(command: &str, reply: &[u8], cluster: &ClusterConfig) -> Rewrite {
    let Some((mut value, used)) = Value::parse(reply) else { return Rewrite::Unchanged };
    if used != reply.len() {
        return Rewrite::Unchanged;
    }
    let outcome = match command {
        "cluster|slots" => value.items_mut().iter_mut().try_for_each(|range| {
            // [start, end, node, replica...]: a node is [host, port, id, metadata?].
            range.items_mut().iter_mut().skip(2).try_for_each(|node| slots_node(node, cluster))
        }),
        "cluster|shards" => value.items_mut().iter_mut().try_for_each(|shard| {
            let nodes = shard.field_mut("nodes").map(Value::items_mut);
            nodes.into_iter().flatten().try_for_each(|node| shards_node(node, cluster))
        }),
        "cluster|nodes" => match &mut value {
            Value::Bulk(_, text) => nodes_text(text, cluster),
            _ => Ok(()),
        },
        "cluster|replicas" | "cluster|slaves" => {
            value.items_mut().iter_mut().try_for_each(|line| match line {
                Value::Bulk(_, text) => nodes_text(text, cluster),
                _ => Ok(()),
            })
        }
        "role" => role(&mut value, cluster),
        "info" => match &mut value {
            Value::Bulk(_, text) => info_text(text, cluster),
            _ => Ok(()),
        },
        _ => return Rewrite::Unchanged,
    };
    match outcome {
        Ok(()) => {
            let mut out = Vec::with_capacity(reply.len() + 64);
            value.encode(&mut out);
            if out == reply {
                Rewrite::Unchanged
            } else {
                Rewrite::Replaced(Bytes::from(out))
            }
        }
        Err(Unmapped(address)) => Rewrite::Unmapped(address),
    }
}

/// An integer port; one outside 0..=65535 names no node (as a text port that does not parse,
/// and as in `CLUSTER SHARDS`), rather than wrapping onto a real one.
fn port_of(value: &Value) -> Option<u16> {
    value.integer().and_then(|port| u16::try_from(port).ok())
}

/// A `CLUSTER SLOTS` node: `[host, port, id, metadata]`; the metadata's `ip` and `hostname`
/// become the sidecar's host too.
fn slots_node(node: &mut Value, cluster: &ClusterConfig) -> Result<(), Unmapped> {
    let items = node.items_mut();
    let (Some(host), Some(port)) =
        (items.first().and_then(Value::text), items.get(1).and_then(port_of))
    else {
        return Ok(());
    };
    let Some((new_host, new_port)) = map_host_port(&host, port, cluster)? else {
        return Ok(());
    };
    items[0].set_text(&new_host);
    items[1] = Value::Line(b':', new_port.to_string().into_bytes());
    if let Some(metadata) = items.get_mut(3) {
        for key in ["ip", "hostname"] {
            if let Some(value) = metadata.field_mut(key) {
                value.set_text(&new_host);
            }
        }
    }
    Ok(())
}

/// A `CLUSTER SHARDS` node map: `endpoint`, `ip`, `hostname`, `port` (and `tls-port`).
fn shards_node(node: &mut Value, cluster: &ClusterConfig) -> Result<(), Unmapped> {
    let host = ["ip", "endpoint", "hostname"]
        .iter()
        .find_map(|key| node.field_mut(key).and_then(|v| v.text()).filter(|h| !h.is_empty()));
    let port =
        ["port", "tls-port"].iter().find_map(|key| node.field_mut(key).and_then(|v| v.integer()));
    let (Some(host), Some(Ok(port))) = (host, port.map(u16::try_from)) else { return Ok(()) };
    let Some((new_host, new_port)) = map_host_port(&host, port, cluster)? else {
        return Ok(());
    };
    for key in ["ip", "endpoint", "hostname"] {
        if let Some(value) = node.field_mut(key) {
            value.set_text(&new_host);
        }
    }
    for key in ["port", "tls-port"] {
        if let Some(value) = node.field_mut(key) {
            *value = Value::Line(b':', new_port.to_string().into_bytes());
        }
    }
    Ok(())
}

/// `ROLE`: a primary's replicas `[ip, port, offset]` (port as text), or a replica's primary
/// (`slave`, ip, port, ...).
fn role(value: &mut Value, cluster: &ClusterConfig) -> Result<(), Unmapped> {
    let items = value.items_mut();
    match items.first().and_then(Value::text).as_deref() {
        Some("master") => {
            for replica in items.get_mut(2).map(Value::items_mut).into_iter().flatten() {
                let entry = replica.items_mut();
                let (Some(host), Some(port)) = (
                    entry.first().and_then(Value::text),
                    entry.get(1).and_then(Value::text).and_then(|p| p.parse::<u16>().ok()),
                ) else {
                    continue;
                };
                if let Some((host, port)) = map_host_port(&host, port, cluster)? {
                    entry[0].set_text(&host);
                    entry[1].set_text(&port.to_string());
                }
            }
        }
        Some("slave") => {
            let (Some(host), Some(port)) =
                (items.get(1).and_then(Value::text), items.get(2).and_then(port_of))
            else {
                return Ok(());
            };
            if let Some((host, port)) = map_host_port(&host, port, cluster)? {
                items[1].set_text(&host);
                items[2] = Value::Line(b':', port.to_string().into_bytes());
            }
        }
        _ => {}
    }
    Ok(())
}

/// `INFO`'s replication section: `master_host` / `master_port`, and `slaveN:ip=...,port=...`.
/// Every other line is kept byte for byte (INFO's values, file paths among them, need not be
/// UTF-8).
fn info_text(text: &mut Vec<u8>, cluster: &ClusterConfig) -> Result<(), Unmapped> {
    let (prefix, body) = match text.strip_prefix(b"txt:") {
        Some(body) => (&b"txt:"[..], body),
        None => (&b""[..], &text[..]),
    };
    let field = |name: &[u8]| {
        body.split(|&b| b == b'\n')
            .find_map(|line| line.strip_prefix(name))
            .map(|v| String::from_utf8_lossy(v).trim_end().to_owned())
    };
    let primary = match (field(b"master_host:"), field(b"master_port:")) {
        (Some(host), Some(port)) => match port.parse::<u16>() {
            Ok(port) => map_host_port(&host, port, cluster)?,
            Err(_) => None,
        },
        _ => None,
    };
    let mut out = prefix.to_vec();
    out.reserve(body.len() + 64);
    for line in body.split_inclusive(|&b| b == b'\n') {
        let (content, end) = match line.strip_suffix(b"\r\n") {
            Some(content) => (content, &b"\r\n"[..]),
            None => match line.strip_suffix(b"\n") {
                Some(content) => (content, &b"\n"[..]),
                None => (line, &b""[..]),
            },
        };
        match &primary {
            Some((host, _)) if content.starts_with(b"master_host:") => {
                out.extend_from_slice(format!("master_host:{host}").as_bytes());
            }
            Some((_, port)) if content.starts_with(b"master_port:") => {
                out.extend_from_slice(format!("master_port:{port}").as_bytes());
            }
            _ if content.starts_with(b"slave")
                && memchr::memmem::find(content, b":ip=").is_some() =>
            {
                let line = String::from_utf8_lossy(content);
                let replaced = replica_line(&line, cluster)?;
                if replaced == line {
                    out.extend_from_slice(content);
                } else {
                    out.extend_from_slice(replaced.as_bytes());
                }
            }
            _ => out.extend_from_slice(content),
        }
        out.extend_from_slice(end);
    }
    *text = out;
    Ok(())
}

/// `slave0:ip=10.0.0.2,port=6379,state=online,...` with the sidecar's ip and port.
fn replica_line(line: &str, cluster: &ClusterConfig) -> Result<String, Unmapped> {
    let Some((name, fields)) = line.split_once(':') else { return Ok(line.to_owned()) };
    let value = |key: &str| fields.split(',').find_map(|f| f.strip_prefix(key)).map(str::to_owned);
    let (Some(host), Some(port)) =
        (value("ip="), value("port=").and_then(|p| p.parse::<u16>().ok()))
    else {
        return Ok(line.to_owned());
    };
    let Some((host, port)) = map_host_port(&host, port, cluster)? else {
        return Ok(line.to_owned());
    };
    let fields: Vec<String> = fields
        .split(',')
        .map(|f| {
            if f.starts_with("ip=") {
                format!("ip={host}")
            } else if f.starts_with("port=") {
                format!("port={port}")
            } else {
                f.to_owned()
            }
        })
        .collect();
    Ok(format!("{name}:{}", fields.join(",")))
}

/// `CLUSTER NODES` lines: the second field `host:port@cport[,hostname]` of each.
fn nodes_text(text: &mut Vec<u8>, cluster: &ClusterConfig) -> Result<(), Unmapped> {
    // A RESP3 verbatim string starts with its format, `txt:`.
    let (prefix, body) = match text.strip_prefix(b"txt:") {
        Some(body) => (&b"txt:"[..], body),
        None => (&b""[..], &text[..]),
    };
    let body = String::from_utf8_lossy(body).into_owned();
    let mut out = String::with_capacity(body.len() + 64);
    for line in body.split_inclusive('\n') {
        let (content, end) = match line.strip_suffix('\n') {
            Some(content) => (content, "\n"),
            None => (line, ""),
        };
        let mut fields: Vec<String> = content.split(' ').map(str::to_owned).collect();
        if let Some(address) = fields.get_mut(1) {
            let (endpoint, hostname) = match address.split_once(',') {
                Some((endpoint, hostname)) => (endpoint.to_owned(), Some(hostname.to_owned())),
                None => (address.clone(), None),
            };
            let (host_port, bus) = match endpoint.split_once('@') {
                Some((host_port, bus)) => (host_port.to_owned(), format!("@{bus}")),
                None => (endpoint.clone(), String::new()),
            };
            if let Some(mapped) = map_address(&host_port, cluster)? {
                let host = mapped.rsplit_once(':').map_or("", |(host, _)| host).to_owned();
                let hostname = hostname.map(|_| format!(",{host}")).unwrap_or_default();
                *address = format!("{mapped}{bus}{hostname}");
            }
        }
        out.push_str(&fields.join(" "));
        out.push_str(end);
    }
    let mut replaced = prefix.to_vec();
    replaced.extend_from_slice(out.as_bytes());
    *text = replaced;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cluster::{ClusterMode, RawCluster};

    fn offset(offset: i64) -> ClusterConfig {
        RawCluster { mode: ClusterMode::Sidecar, port_offset: offset, ..RawCluster::default() }
            .validate()
            .unwrap()
    }

    #[test]
    fn redirects_name_the_sidecar() {
        let cluster = offset(1000);
        assert_eq!(
            redirect(b"-MOVED 3999 127.0.0.1:6381\r\n", &cluster),
            Rewrite::Replaced(Bytes::from_static(b"-MOVED 3999 127.0.0.1:7381\r\n"))
        );
        assert_eq!(
            redirect(b"-ASK 12 ::1:6379\r\n", &cluster),
            Rewrite::Replaced(Bytes::from_static(b"-ASK 12 ::1:7379\r\n"))
        );
        assert_eq!(redirect(b"-ERR nope\r\n", &cluster), Rewrite::Unchanged);
        assert_eq!(
            redirect(b"-MOVED 1 h:65000\r\n", &cluster),
            Rewrite::Unmapped("h:65000".into())
        );
        assert_eq!(
            redirect(b"-MOVED 1 h:6000\r\n", &offset(-6000)),
            Rewrite::Unmapped("h:6000".into()),
            "a sidecar at port 0 is none"
        );
    }

    #[test]
    fn slots_shards_and_nodes_are_rewritten_and_nothing_else_changes() {
        let cluster = offset(1);
        let slots = b"*1\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:30001\r\n$2\r\nid\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:30004\r\n$2\r\nix\r\n*2\r\n$8\r\nhostname\r\n$1\r\nh\r\n";
        let Rewrite::Replaced(out) = topology("cluster|slots", slots, &cluster) else { panic!() };
        assert_eq!(
            &out[..],
            &b"*1\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:30002\r\n$2\r\nid\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:30005\r\n$2\r\nix\r\n*2\r\n$8\r\nhostname\r\n$9\r\n127.0.0.1\r\n"[..]
        );
        let shards = b"*1\r\n%2\r\n$5\r\nslots\r\n*0\r\n$5\r\nnodes\r\n*1\r\n%3\r\n$4\r\nport\r\n:30001\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n";
        let Rewrite::Replaced(out) = topology("cluster|shards", shards, &cluster) else { panic!() };
        assert!(memchr::memmem::find(&out, b":30002\r\n").is_some());
        let nodes =
            b"$65\r\nabc 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460\n\r\n";
        let Rewrite::Replaced(out) = topology("cluster|nodes", nodes, &cluster) else { panic!() };
        assert_eq!(
            &out[..],
            &b"$65\r\nabc 127.0.0.1:30002@40001 myself,master - 0 0 1 connected 0-5460\n\r\n"[..]
        );
        let info = b"$72\r\n# Replication\r\nrole:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\nx:1\r\n\r\n";
        let Rewrite::Replaced(out) = topology("info", info, &cluster) else { panic!() };
        assert!(memchr::memmem::find(&out, b"master_port:6380\r\n").is_some(), "{out:?}");
        // Not UTF-8 (a file path), no node named: as it is, not with U+FFFD in it.
        let path = b"$31\r\n# Server\r\nexecutable:/opt/\xc8d2\r\n\r\n";
        assert_eq!(topology("info", path, &cluster), Rewrite::Unchanged);
        let info = b"$45\r\nexecutable:/\xc8\r\nmaster_host:h\r\nmaster_port:1\r\n\r\n";
        let Rewrite::Replaced(out) = topology("info", info, &cluster) else { panic!() };
        assert_eq!(
            &out[..],
            &b"$45\r\nexecutable:/\xc8\r\nmaster_host:h\r\nmaster_port:2\r\n\r\n"[..]
        );
        let role = b"*3\r\n$6\r\nmaster\r\n:10\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n7000\r\n$2\r\n10\r\n";
        let Rewrite::Replaced(out) = topology("role", role, &cluster) else { panic!() };
        assert!(memchr::memmem::find(&out, b"$4\r\n7001\r\n").is_some(), "{out:?}");
        // An empty line where an element starts: not RESP, as it is (was a panic in
        // `Value::parse`).
        let empty = b"*1\r\n*4\r\n:0\r\n:5460\r\n*0\r\n\r\n$1\r\nx\r\n";
        assert_eq!(topology("cluster|slots", empty, &cluster), Rewrite::Unchanged);
        // A port past 65535 (6379 + 65536) names no node: as it is, not wrapped onto 6379's
        // sidecar.
        let wrapped = b"*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:71915\r\n";
        assert_eq!(topology("cluster|slots", wrapped, &cluster), Rewrite::Unchanged);
        let role = b"*5\r\n$5\r\nslave\r\n$1\r\nh\r\n:-1\r\n$9\r\nconnected\r\n:0\r\n";
        assert_eq!(topology("role", role, &cluster), Rewrite::Unchanged);
        let shards = b"*1\r\n%1\r\n$5\r\nnodes\r\n*1\r\n%2\r\n$4\r\nport\r\n:71915\r\n$2\r\nip\r\n$1\r\nh\r\n";
        assert_eq!(topology("cluster|shards", shards, &cluster), Rewrite::Unchanged);
        let unknown = offset(-40000);
        assert!(matches!(topology("cluster|slots", slots, &unknown), Rewrite::Unmapped(_)));
    }
}
