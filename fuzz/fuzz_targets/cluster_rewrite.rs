//! Fuzz target: the cluster sidecar rewriter, `proxy::cluster::redirect` (`-MOVED` / `-ASK`)
//! and `proxy::cluster::topology` (`CLUSTER SLOTS` / `SHARDS` / `NODES` / `REPLICAS` /
//! `SLAVES`, `ROLE`, `INFO`), under a `[cluster]` config drawn from the input (a
//! `port_offset`, some of it past the last port, and `announce` entries).
//!
//! Byte 0 picks the mode:
//! - 0–6, model-based: a reply of that shape (redirect, slots, shards, nodes, replicas, role,
//!   info; RESP2 or RESP3 where they differ) is *generated* naming known node addresses —
//!   some with a sidecar (an `announce` entry or the offset), some without, some naming no node
//!   (port 0, host `?` or empty) — encoded by **redis-protocol**, and rewritten. If a node
//!   without a sidecar is named, the result is `Unmapped` naming one of those; otherwise
//!   `Replaced(out)` where `out` is one whole reply that redis-protocol decodes to the same
//!   reply with exactly the node addresses replaced by their sidecars' and nothing else
//!   changed, or `Unchanged` only when that expected reply is the input itself;
//! - 7–8, raw: the rest of the input *as the reply* to a command picked from it: no panic, and
//!   a `Replaced(out)` of what was one whole reply (by the proxy's own `ReplyScanner`) is one
//!   whole reply too.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use redis_audit_proxy::config::cluster::{ClusterConfig, RawCluster};
use redis_audit_proxy::proxy::cluster::{redirect, topology, Rewrite, TOPOLOGY_COMMANDS};
use redis_audit_proxy::resp::reply::ReplyScanner;
use redis_audit_proxy_fuzz::Choices;
use redis_protocol::resp3::types::{FrameMap, OwnedFrame, Resp3Frame, VerbatimStringFormat};

const HOSTS: &[&str] =
    &["10.0.0.1", "10.0.0.2", "Node-A.example", "node-a.example", "::1", "fe80::2", "redis-3"];
const PORTS: &[u16] = &[6379, 6380, 7000, 30001, 65000, 65535, 1, 6000];
const OFFSETS: &[i32] = &[0, 1, 1000, -6000, 20000];
const SIDECARS: &[&str] = &["proxy-a", "Proxy-B", "::2", "10.9.9.9"];

fn pick<'a>(c: &mut Choices<'_>, from: &[&'a str]) -> &'a str {
    from[c.below(from.len())]
}

fn port(c: &mut Choices<'_>) -> u16 {
    if c.below(4) == 0 {
        u16::from_le_bytes([c.byte(), c.byte()])
    } else {
        PORTS[c.below(PORTS.len())]
    }
}

fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What the config means, written independently of `ClusterConfig::sidecar_of`.
struct Model {
    offset: i32,
    announce: BTreeMap<(String, u16), (String, u16)>,
}

impl Model {
    /// The sidecar of a node: its `announce` entry (hosts without case), else the same host at
    /// the port plus the offset — a sidecar at port 0 is none (it names no reachable node).
    fn sidecar(&self, host: &str, port: u16) -> Option<(String, u16)> {
        if let Some(sidecar) = self.announce.get(&(host.to_ascii_lowercase(), port)) {
            return Some(sidecar.clone());
        }
        if self.offset == 0 {
            return None;
        }
        let port = u16::try_from(i32::from(port) + self.offset).ok().filter(|&p| p != 0)?;
        Some((host.to_owned(), port))
    }
}

fn config(c: &mut Choices<'_>) -> (ClusterConfig, Model) {
    let mut offset = OFFSETS[c.below(OFFSETS.len())];
    let mut announce = BTreeMap::new();
    for _ in 0..c.below(4) {
        let node = (pick(c, HOSTS).to_ascii_lowercase(), port(c));
        let sidecar = (pick(c, SIDECARS).to_ascii_lowercase(), port(c).max(1));
        announce.insert(node, sidecar);
    }
    if offset == 0 && announce.is_empty() {
        offset = 1;
    }
    let mut text = format!("mode = \"sidecar\"\nport_offset = {offset}\n[announce]\n");
    for ((host, port), (sidecar, sidecar_port)) in &announce {
        text.push_str(&format!(
            "\"{}\" = \"{}\"\n",
            address(host, *port),
            address(sidecar, *sidecar_port)
        ));
    }
    let raw: RawCluster = toml::from_str(&text).expect("config text");
    let cluster = raw.validate().expect("valid config");
    (cluster, Model { offset, announce })
}

/// The model's verdict on the nodes a generated reply names.
struct Expect<'m> {
    model: &'m Model,
    unmapped: Vec<String>,
}

impl Expect<'_> {
    /// The sidecar replacing `host:port`; `None` for no node (port 0, host empty or `?`) or
    /// a node without a sidecar (remembered).
    fn map(&mut self, host: &str, port: u16) -> Option<(String, u16)> {
        if port == 0 || host.is_empty() || host == "?" {
            return None;
        }
        let sidecar = self.model.sidecar(host, port);
        if sidecar.is_none() {
            self.unmapped.push(format!("{host}:{port}"));
        }
        sidecar
    }
}

/// A node address: mostly a real node, sometimes one naming none.
fn node(c: &mut Choices<'_>) -> (String, u16) {
    match c.below(10) {
        0 => (String::new(), 0),
        1 => ("?".to_owned(), port(c)),
        2 => (pick(c, HOSTS).to_owned(), 0),
        _ => (pick(c, HOSTS).to_owned(), port(c)),
    }
}

fn bulk(text: &str) -> OwnedFrame {
    OwnedFrame::BlobString { data: text.as_bytes().to_vec(), attributes: None }
}

/// A string as Redis may write it, bulk or simple.
fn string(simple: bool, text: &str) -> OwnedFrame {
    if simple {
        OwnedFrame::SimpleString { data: text.as_bytes().to_vec(), attributes: None }
    } else {
        bulk(text)
    }
}

fn number(n: i64) -> OwnedFrame {
    OwnedFrame::Number { data: n, attributes: None }
}

fn array(items: Vec<OwnedFrame>) -> OwnedFrame {
    OwnedFrame::Array { data: items, attributes: None }
}

/// Named fields: a RESP3 map, or a RESP2 array of alternating names and values.
fn fields(resp3: bool, pairs: Vec<(&str, OwnedFrame)>) -> OwnedFrame {
    if resp3 {
        let mut map = FrameMap::default();
        for (name, value) in pairs {
            map.insert(bulk(name), value);
        }
        OwnedFrame::Map { data: map, attributes: None }
    } else {
        array(pairs.into_iter().flat_map(|(name, value)| [bulk(name), value]).collect())
    }
}

/// Text: a RESP2 bulk string, or a RESP3 verbatim one (`txt:`).
fn text_reply(resp3: bool, text: Vec<u8>) -> OwnedFrame {
    if resp3 {
        OwnedFrame::VerbatimString {
            data: text,
            format: VerbatimStringFormat::Text,
            attributes: None,
        }
    } else {
        OwnedFrame::BlobString { data: text, attributes: None }
    }
}

fn encode(frame: &OwnedFrame) -> Vec<u8> {
    let mut buf = vec![0u8; frame.encode_len(false)];
    let len =
        redis_protocol::resp3::encode::complete::encode(&mut buf, frame, false).expect("encodable");
    buf.truncate(len);
    buf
}

fn one_reply(bytes: &[u8]) -> bool {
    let mut scanner = ReplyScanner::new(64);
    matches!(scanner.scan(bytes), Ok((used, true)) if used == bytes.len())
}

/// `CLUSTER SLOTS`: `[start, end, node, replica...]`, a node `[host, port, id, metadata?]`.
fn slots(c: &mut Choices<'_>, e: &mut Expect<'_>, resp3: bool) -> (OwnedFrame, OwnedFrame) {
    let (mut input, mut expected) = (Vec::new(), Vec::new());
    for range in 0..c.below(4) {
        let start = c.below(16384) as i64;
        let (mut got, mut want) = (vec![number(start), number(start + 10)], Vec::new());
        want.extend(got.clone());
        for i in 0..1 + c.below(3) {
            let (host, port) = node(c);
            let simple = c.below(4) == 0;
            let id = format!("id{range}x{i}");
            let meta = c.below(3);
            let hostname_differs = c.below(2) == 0;
            let metadata = |host: &str, hostname: &str| match meta {
                0 => None,
                1 => Some(fields(resp3, vec![])),
                _ => Some(fields(
                    resp3,
                    vec![("ip", bulk(host)), ("hostname", bulk(hostname)), ("x", bulk("y"))],
                )),
            };
            let hostname = if hostname_differs { "name-x" } else { host.as_str() };
            let mut node_in = vec![string(simple, &host), number(i64::from(port)), bulk(&id)];
            node_in.extend(metadata(&host, hostname));
            let node_out = match e.map(&host, port) {
                Some((new_host, new_port)) => {
                    let mut out =
                        vec![string(simple, &new_host), number(i64::from(new_port)), bulk(&id)];
                    out.extend(metadata(&new_host, &new_host));
                    out
                }
                None => node_in.clone(),
            };
            got.push(array(node_in));
            want.push(array(node_out));
        }
        input.push(array(got));
        expected.push(array(want));
    }
    (array(input), array(expected))
}

/// `CLUSTER SHARDS`: `[{slots, nodes: [{id, port, tls-port, ip, endpoint, hostname, ...}]}]`.
fn shards(c: &mut Choices<'_>, e: &mut Expect<'_>, resp3: bool) -> (OwnedFrame, OwnedFrame) {
    let (mut input, mut expected) = (Vec::new(), Vec::new());
    for shard in 0..c.below(3) {
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for i in 0..c.below(4) {
            let (host, port) = node(c);
            let present = c.byte();
            let has = |bit: u8| present & (1 << bit) != 0;
            // Hosts: the rewriter takes the first non-empty of ip, endpoint, hostname; a
            // hostname other than the node's only beside a non-empty ip (else it would be
            // the address taken).
            let hostname = if has(5) && has(2) && !host.is_empty() {
                "name-x".to_owned()
            } else {
                host.clone()
            };
            let build = |host: &str, hostname: &str, port: u16| {
                let mut pairs = vec![("id", bulk(&format!("id{shard}x{i}")))];
                if has(0) {
                    pairs.push(("port", number(i64::from(port))));
                }
                if has(1) {
                    pairs.push(("tls-port", number(i64::from(port))));
                }
                if has(2) {
                    pairs.push(("ip", bulk(host)));
                }
                if has(3) {
                    pairs.push(("endpoint", bulk(host)));
                }
                if has(4) {
                    pairs.push(("hostname", bulk(hostname)));
                }
                pairs.push(("role", bulk("master")));
                pairs.push(("replication-offset", number(72156)));
                pairs.push(("health", bulk("online")));
                fields(resp3, pairs)
            };
            let names = (has(0) || has(1)) && (has(2) || has(3) || has(4));
            let node_in = build(&host, &hostname, port);
            let mapped = if names { e.map(&host, port) } else { None };
            let node_out = match mapped {
                Some((new_host, new_port)) => build(&new_host, &new_host, new_port),
                None => node_in.clone(),
            };
            got.push(node_in);
            want.push(node_out);
        }
        let slots = array(vec![number(0), number(5460)]);
        input.push(fields(resp3, vec![("slots", slots.clone()), ("nodes", array(got))]));
        expected.push(fields(resp3, vec![("slots", slots), ("nodes", array(want))]));
    }
    (array(input), array(expected))
}

/// One `CLUSTER NODES` line: `id host:port@cport[,hostname] flags master ping pong epoch
/// link slots...`, and the line expected.
fn nodes_line(c: &mut Choices<'_>, e: &mut Expect<'_>, i: usize) -> (String, String) {
    let (host, port) = node(c);
    let bus = if port == 0 { 0 } else { u32::from(port) + 10000 };
    let hostname = match c.below(3) {
        0 => None,
        1 => Some(""),
        _ => Some("redis-x"),
    };
    let rest = pick(
        c,
        &[
            "myself,master - 0 0 1 connected 0-5460",
            "slave a0 0 1 2 connected",
            "master,fail? - 1 1 3 disconnected",
            "handshake",
        ],
    );
    let line = |host: &str, port: u16, hostname: Option<&str>| {
        let hostname = hostname.map(|h| format!(",{h}")).unwrap_or_default();
        format!("a{i}b {host}:{port}@{bus}{hostname} {rest}")
    };
    let got = line(&host, port, hostname);
    let want = match e.map(&host, port) {
        Some((new_host, new_port)) => {
            line(&new_host, new_port, hostname.map(|_| new_host.as_str()))
        }
        None => got.clone(),
    };
    (got, want)
}

fn nodes(c: &mut Choices<'_>, e: &mut Expect<'_>, resp3: bool) -> (OwnedFrame, OwnedFrame) {
    let (mut got, mut want) = (String::new(), String::new());
    let count = c.below(5);
    for i in 0..count {
        let (line_in, line_out) = nodes_line(c, e, i);
        got.push_str(&line_in);
        want.push_str(&line_out);
        if i + 1 < count || c.below(4) > 0 {
            got.push('\n');
            want.push('\n');
        }
    }
    (text_reply(resp3, got.into_bytes()), text_reply(resp3, want.into_bytes()))
}

fn replicas(c: &mut Choices<'_>, e: &mut Expect<'_>) -> (OwnedFrame, OwnedFrame) {
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for i in 0..c.below(4) {
        let (line_in, line_out) = nodes_line(c, e, i);
        got.push(bulk(&line_in));
        want.push(bulk(&line_out));
    }
    (array(got), array(want))
}

/// `ROLE`: `[master, offset, [[ip, port, offset]...]]` (ports as text) or `[slave, ip, port,
/// state, offset]`.
fn role(c: &mut Choices<'_>, e: &mut Expect<'_>) -> (OwnedFrame, OwnedFrame) {
    if c.below(2) == 0 {
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for _ in 0..c.below(4) {
            let (host, port) = node(c);
            let entry = |host: &str, port: u16| {
                array(vec![bulk(host), bulk(&port.to_string()), bulk("3129")])
            };
            got.push(entry(&host, port));
            want.push(match e.map(&host, port) {
                Some((host, port)) => entry(&host, port),
                None => entry(&host, port),
            });
        }
        let reply = |replicas| array(vec![bulk("master"), number(3129), array(replicas)]);
        (reply(got), reply(want))
    } else {
        let (host, port) = node(c);
        let reply = |host: &str, port: u16| {
            array(vec![
                bulk("slave"),
                bulk(host),
                number(i64::from(port)),
                bulk("connected"),
                number(3167),
            ])
        };
        let want = match e.map(&host, port) {
            Some((new_host, new_port)) => reply(&new_host, new_port),
            None => reply(&host, port),
        };
        (reply(&host, port), want)
    }
}

/// `INFO` (replication section and other lines, whose values may be any bytes but CR / LF,
/// as a file path may be).
fn info(c: &mut Choices<'_>, e: &mut Expect<'_>, resp3: bool) -> (OwnedFrame, OwnedFrame) {
    let (mut got, mut want) = (b"# Replication\r\n".to_vec(), b"# Replication\r\n".to_vec());
    let mut both = |got_line: &[u8], want_line: &[u8]| {
        got.extend_from_slice(got_line);
        got.extend_from_slice(b"\r\n");
        want.extend_from_slice(want_line);
        want.extend_from_slice(b"\r\n");
    };
    let mut replica = 0;
    let mut primary = false;
    for i in 0..c.below(8) {
        match c.below(4) {
            // One primary per reply (the rewriter reads the first `master_host`).
            0 if !primary => {
                primary = true;
                let (host, port) = node(c);
                let (new_host, new_port) = e.map(&host, port).unwrap_or((host.clone(), port));
                both(
                    format!("master_host:{host}").as_bytes(),
                    format!("master_host:{new_host}").as_bytes(),
                );
                both(b"master_link_status:up", b"master_link_status:up");
                both(
                    format!("master_port:{port}").as_bytes(),
                    format!("master_port:{new_port}").as_bytes(),
                );
            }
            1 => {
                let (host, port) = node(c);
                let (new_host, new_port) = e.map(&host, port).unwrap_or((host.clone(), port));
                let line = |host: &str, port: u16| {
                    format!("slave{replica}:ip={host},port={port},state=online,offset=1,lag=0")
                };
                both(line(&host, port).as_bytes(), line(&new_host, new_port).as_bytes());
                replica += 1;
            }
            0 | 2 => both(b"role:slave", b"role:slave"),
            _ => {
                let mut line = format!("x{i}:").into_bytes();
                line.extend(c.take(12).iter().filter(|&&b| b != b'\r' && b != b'\n'));
                both(&line, &line);
            }
        }
    }
    (text_reply(resp3, got), text_reply(resp3, want))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut c = Choices::new(rest);
    let (cluster, model) = config(&mut c);
    let mode = mode % 9;
    if mode >= 7 {
        // 0: a redirect; then each topology command.
        let command = c.below(TOPOLOGY_COMMANDS.len() + 1).checked_sub(1);
        let command = command.map_or("redirect", |i| TOPOLOGY_COMMANDS[i]);
        let reply = c.rest();
        let result = match command {
            "redirect" => redirect(reply, &cluster),
            _ => topology(command, reply, &cluster),
        };
        if let Rewrite::Replaced(out) = result {
            if one_reply(reply) {
                assert!(one_reply(&out), "{command}: {reply:?} became {out:?}");
            }
        }
        return;
    }
    let mut e = Expect { model: &model, unmapped: Vec::new() };
    if mode == 0 {
        let kind = pick(&mut c, &["-MOVED", "-ASK"]);
        let slot = c.below(16384);
        let (host, port) = node(&mut c);
        let reply = format!("{kind} {slot} {host}:{port}\r\n");
        let expected = match e.map(&host, port) {
            Some((host, port)) => format!("{kind} {slot} {host}:{port}\r\n"),
            None => reply.clone(),
        };
        let result = redirect(reply.as_bytes(), &cluster);
        match result {
            Rewrite::Unmapped(address) => {
                assert!(e.unmapped.contains(&address), "{reply:?}: {address} has a sidecar")
            }
            _ if !e.unmapped.is_empty() => {
                panic!("{reply:?}: {:?} unmapped, got {result:?}", e.unmapped)
            }
            Rewrite::Unchanged => assert_eq!(expected, reply, "left unreplaced"),
            Rewrite::Replaced(out) => assert_eq!(&out[..], expected.as_bytes(), "{reply:?}"),
        }
        return;
    }
    let resp3 = c.below(2) == 0;
    let (command, (input, expected)) = match mode {
        1 => ("cluster|slots", slots(&mut c, &mut e, resp3)),
        2 => ("cluster|shards", shards(&mut c, &mut e, resp3)),
        3 => ("cluster|nodes", nodes(&mut c, &mut e, resp3)),
        4 => (pick(&mut c, &["cluster|replicas", "cluster|slaves"]), replicas(&mut c, &mut e)),
        5 => ("role", role(&mut c, &mut e)),
        _ => ("info", info(&mut c, &mut e, resp3)),
    };
    let reply = encode(&input);
    let result = topology(command, &reply, &cluster);
    match result {
        Rewrite::Unmapped(address) => {
            assert!(e.unmapped.contains(&address), "{command} {input:?}: {address} has a sidecar")
        }
        _ if !e.unmapped.is_empty() => {
            panic!("{command} {input:?}: {:?} unmapped, got {result:?}", e.unmapped)
        }
        Rewrite::Unchanged => assert_eq!(expected, input, "{command}: left unreplaced"),
        Rewrite::Replaced(out) => {
            assert!(one_reply(&out), "{command}: not one reply: {out:?}");
            match redis_protocol::resp3::decode::complete::decode(&out) {
                Ok(Some((frame, n))) => {
                    assert_eq!(n, out.len(), "{command}: {out:?}");
                    assert_eq!(frame, expected, "{command} {input:?}: {out:?}");
                }
                other => panic!("{command}: {out:?} does not decode: {other:?}"),
            }
        }
    }
});
