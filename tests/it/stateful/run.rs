//! Running a sequence directly and through the proxy, and the reports of a failing one
//! (replies and records).

use super::*;

/// What one side received.
#[derive(Debug)]
pub(super) struct Received {
    pub(super) bytes: Vec<u8>,
    pub(super) local: SocketAddr,
    /// Why reading stopped before the sentinel, if it did.
    pub(super) stalled: Option<String>,
}

/// Reads into `buf` until `done` or `deadline`; false on a timeout or a close.
async fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    mut done: impl FnMut(&[u8]) -> bool,
) -> Result<(), String> {
    let mut chunk = vec![0u8; 64 * 1024];
    while !done(buf) {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err("timed out".to_owned()),
            Ok(Ok(0)) | Ok(Err(_)) => return Err("connection closed".to_owned()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(())
}

/// Whole frames at the front of `buf` (all of them if what follows is not RESP).
fn frame_count(buf: &[u8]) -> usize {
    let (frames, error) = parse_all(buf);
    match error {
        Some(e) if !e.starts_with("incomplete") => usize::MAX,
        _ => frames.len(),
    }
}

pub(super) async fn run_direct(addr: SocketAddr, seq: &Sequence) -> Received {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the reference");
    stream.set_nodelay(true).unwrap();
    let local = stream.local_addr().unwrap();
    let bytes: Vec<u8> = seq.cmds.iter().flat_map(encode).collect();
    stream.write_all(&bytes).await.unwrap();
    let mut buf = Vec::new();
    let deadline = Instant::now() + DIRECT_WAIT;
    let stalled =
        read_until(&mut stream, &mut buf, deadline, |b| b.ends_with(&seq.sentinel)).await.err();
    Received { bytes: buf, local, stalled }
}

fn encode(c: &Cmd) -> Vec<u8> {
    let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
    encode_command(&args)
}

pub(super) async fn run_proxied(addr: SocketAddr, seq: &Sequence, walk: &Walk) -> Received {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the proxy");
    stream.set_nodelay(true).unwrap();
    let local = stream.local_addr().unwrap();
    let encoded: Vec<Vec<u8>> = seq.cmds.iter().map(encode).collect();
    let all: Vec<u8> = encoded.concat();
    let mut buf = Vec::new();
    let pause = || tokio::time::sleep(Duration::from_micros(300));
    match seq.mode {
        Mode::AtOnce => stream.write_all(&all).await.unwrap(),
        Mode::Chunks => {
            let mut i = 0;
            let mut cut = seq.cuts.iter();
            while i < encoded.len() {
                let size = 1 + cut.next().unwrap_or(&0) % 4;
                let end = (i + size).min(encoded.len());
                stream.write_all(&encoded[i..end].concat()).await.unwrap();
                pause().await;
                i = end;
            }
        }
        Mode::Bytes => {
            let mut cuts: Vec<usize> = seq.cuts.iter().map(|c| 1 + c % all.len().max(2)).collect();
            cuts.truncate(6);
            cuts.push(all.len());
            cuts.sort_unstable();
            cuts.dedup();
            let mut start = 0;
            for end in cuts {
                if end > start && end <= all.len() {
                    stream.write_all(&all[start..end]).await.unwrap();
                    pause().await;
                    start = end;
                }
            }
        }
        Mode::Lockstep => {
            for (i, bytes) in encoded.iter().enumerate() {
                stream.write_all(bytes).await.unwrap();
                let want = walk.frames_after[i];
                let deadline = Instant::now() + PROXY_WAIT;
                if let Err(why) =
                    read_until(&mut stream, &mut buf, deadline, |b| frame_count(b) >= want).await
                {
                    let stalled = format!(
                        "{why} waiting for the replies up to command #{i} ({want} frames, got {})",
                        frame_count(&buf)
                    );
                    return Received { bytes: buf, local, stalled: Some(stalled) };
                }
            }
        }
    }
    let deadline = Instant::now() + PROXY_WAIT;
    let stalled = read_until(&mut stream, &mut buf, deadline, |b| b.ends_with(&seq.sentinel))
        .await
        .err()
        .map(|why| format!("{why} waiting for the sentinel's reply"));
    Received { bytes: buf, local, stalled }
}

// ------------------------------------------------------------------------------------------
// Reports.

pub(super) fn describe_sequence(seq: &Sequence) -> String {
    let mut out =
        format!("sequence {} (seed {}, proxied side sent {:?}):\n", seq.index, seq.seed, seq.mode);
    for (i, (c, p)) in seq.cmds.iter().zip(&seq.preds).enumerate() {
        out.push_str(&format!("  #{i:02} {:<42} {}\n", show_cmd(c), p.describe()));
    }
    out
}

fn frame_label(walk: &Walk, at: usize, seq: &Sequence) -> String {
    match walk.owner.get(at) {
        Some(Some(i)) => format!("reply to #{i} {}", show_cmd(&seq.cmds[*i])),
        Some(None) => "unsolicited (monitor line or message push)".to_owned(),
        None => "past the end of the direct stream".to_owned(),
    }
}

/// Where the proxied stream first differs from the direct one, frame by frame.
/// A one-line summary and the details.
pub(super) fn describe_difference(
    seq: &Sequence,
    walk: &Walk,
    direct: &[u8],
    proxied: &[u8],
) -> (String, String) {
    let (direct, proxied) = (normalise(direct), normalise(proxied));
    let (ours, _) = parse_all(&direct);
    let (theirs, error) = parse_all(&proxied);
    let bytes = |stream: &[u8], f: &Frame| stream[f.start..f.end].to_vec();
    let at = (0..ours.len().max(theirs.len()))
        .find(|&k| match (ours.get(k), theirs.get(k)) {
            (Some(a), Some(b)) => bytes(&direct, a) != bytes(&proxied, b),
            _ => true,
        })
        .unwrap_or(0);
    let cell = |frames: &[Frame], stream: &[u8], k: usize| {
        frames.get(k).map_or_else(|| "(none)".to_owned(), |f| show(&bytes(stream, f)))
    };
    let state = match walk.owner.get(at) {
        Some(Some(i)) => format!(" [{}]", seq.preds[*i].describe()),
        _ => String::new(),
    };
    let summary = format!(
        "bytes differ at frame {at}, {}{state}: direct {}, proxied {}",
        frame_label(walk, at, seq),
        cell(&ours, &direct, at),
        cell(&theirs, &proxied, at)
    );
    let mut out = format!(
        "first difference at frame {at} ({}); proxied stream{}:\n",
        frame_label(walk, at, seq),
        error.map(|e| format!(" (then not RESP: {e})")).unwrap_or_default()
    );
    for k in at.saturating_sub(3)..(at + 4) {
        let mark = if k == at { ">>" } else { "  " };
        if k >= ours.len() && k >= theirs.len() {
            break;
        }
        out.push_str(&format!(
            "{mark} frame {k} [{}]\n     direct : {}\n     proxied: {}\n",
            frame_label(walk, k, seq),
            cell(&ours, &direct, k),
            cell(&theirs, &proxied, k),
        ));
    }
    let byte = direct
        .iter()
        .zip(proxied.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(direct.len().min(proxied.len()));
    out.push_str(&format!(
        "normalised streams first differ at byte {byte}\n  direct : {}\n  proxied: {}\n",
        show(&direct),
        show(&proxied)
    ));
    (summary, out)
}

/// HELLO without its `AUTH user pass` option: the proxy records the HELLO it forwards.
fn without_hello_auth(c: &Cmd) -> Cmd {
    if upper(&c[0]) != "HELLO" {
        return c.clone();
    }
    let mut out = c[..c.len().min(2)].to_vec();
    let mut at = 2;
    while at < c.len() {
        if upper(&c[at]) == "AUTH" && at + 2 < c.len() {
            at += 3;
        } else {
            out.push(c[at].clone());
            at += 1;
        }
    }
    out
}

pub(super) fn record_user(r: &CommandRecord) -> String {
    String::from_utf8_lossy(&r.user).into_owned()
}

/// The records of one sequence against the model's.
pub(super) fn check_records(seq: &Sequence, records: &[CommandRecord]) -> Result<(), String> {
    for (i, (c, p)) in seq.cmds.iter().zip(&seq.preds).enumerate() {
        let Some(r) = records.get(i) else {
            return Err(format!(
                "{} records for {} commands: none for #{i} {}",
                records.len(),
                seq.cmds.len(),
                show_cmd(c)
            ));
        };
        let args: Cmd = r.args.iter().map(|a| a.to_vec()).collect();
        let mut problems = Vec::new();
        if &args != c && args != without_hello_auth(c) {
            problems.push(format!("it is the record of `{}`", show_cmd(&args)));
        }
        if record_user(r) != p.record_user {
            problems.push(format!("user {} (Redis used {})", record_user(r), p.record_user));
        }
        if r.db != p.db {
            problems.push(format!("db {} (Redis used {})", r.db, p.db));
        }
        // README, known limits of pairing: a CLIENT REPLY OFF | SKIP that Redis refuses is
        // assumed to succeed; its error is forwarded but not attributed.
        let refused_reply_mode = upper(&c[0]) == "CLIENT"
            && matches!(upper(&c[2]).as_str(), "OFF" | "SKIP")
            && matches!(p.out, Out::Reply(Expect::Err(_)));
        if let Some(status) = p.status().filter(|_| !refused_reply_mode) {
            if r.status != status {
                problems.push(format!("status {:?} (expected {status:?})", r.status));
            }
        }
        if !problems.is_empty() {
            return Err(format!(
                "record #{i} (`{}`): {}; records so far: {}",
                show_cmd(c),
                problems.join(", "),
                records[..=i]
                    .iter()
                    .map(|r| format!(
                        "{}({} db{} {:?})",
                        String::from_utf8_lossy(&r.args[0]),
                        record_user(r),
                        r.db,
                        r.status
                    ))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    if records.len() != seq.cmds.len() {
        return Err(format!("{} records for {} commands", records.len(), seq.cmds.len()));
    }
    Ok(())
}
