//! What `ACL DRYRUN` answered and what the policy decided, in the same terms, read from the
//! reply stream, and how a mismatch is shown.

use super::*;

/// What `ACL DRYRUN` answered, or what the policy decided, in the same terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    Allow,
    /// The command's full name.
    Command(String),
    Key(Vec<u8>),
    Channel(Vec<u8>),
    /// An error reply: wrong arity, unknown command (not compared).
    Error(String),
    /// A reply of no known shape.
    Unexpected(Vec<u8>),
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Allow => write!(f, "allowed"),
            Self::Command(name) => write!(f, "command '{name}' denied"),
            Self::Key(key) => write!(f, "key '{}' denied", show(key)),
            Self::Channel(channel) => write!(f, "channel '{}' denied", show(channel)),
            Self::Error(message) => write!(f, "error: {message}"),
            Self::Unexpected(reply) => write!(f, "unexpected reply {}", show(reply)),
        }
    }
}

/// `text` between `start` and `end` when it is `...<start>X<end>`.
fn between<'a>(text: &'a [u8], start: &[u8], end: &[u8]) -> Option<&'a [u8]> {
    let at = text.windows(start.len()).position(|w| w == start)? + start.len();
    text[at..].strip_suffix(end)
}

/// Reads a DRYRUN reply (type byte and payload).
pub(super) fn redis_answer(kind: u8, payload: &[u8]) -> Answer {
    match kind {
        b'+' if payload == b"OK" => Answer::Allow,
        b'-' => Answer::Error(String::from_utf8_lossy(payload).into_owned()),
        b'$' => {
            const RUN: &[u8] = b"no permissions to run the '";
            const ACCESS: &[u8] = b"no permissions to access the '";
            if let Some(name) = between(payload, RUN, b"' command") {
                Answer::Command(String::from_utf8_lossy(name).into_owned())
            } else if let Some(key) = between(payload, ACCESS, b"' key") {
                Answer::Key(key.to_vec())
            } else if let Some(channel) = between(payload, ACCESS, b"' channel") {
                Answer::Channel(channel.to_vec())
            } else {
                Answer::Unexpected(payload.to_vec())
            }
        }
        _ => Answer::Unexpected(payload.to_vec()),
    }
}

/// The policy's verdict in DRYRUN's terms.
pub(super) fn our_answer(verdict: Verdict, info: &CommandInfo, args: &[Bytes]) -> Answer {
    let Verdict::Deny { denial, .. } = verdict else { return Answer::Allow };
    let object = || match args.get(denial.arg_index) {
        Some(arg) => arg.to_vec(),
        None => format!("<argument {} of {}>", denial.arg_index, args.len()).into_bytes(),
    };
    match denial.reason {
        DenyReason::Command => Answer::Command(info.name.clone()),
        DenyReason::Key => Answer::Key(object()),
        DenyReason::Channel => Answer::Channel(object()),
    }
}

/// One reply at the start of `buf`: its type byte, payload (the line of `+`, `-`, `:`, the
/// body of `$`; the whole reply otherwise) and length; `None` until it is all there.
fn next_reply(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let kind = *buf.first()?;
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    match kind {
        b'+' | b'-' | b':' => Some((kind, &buf[1..line_end], line_end + 2)),
        b'$' => {
            let len: i64 = std::str::from_utf8(&buf[1..line_end]).ok()?.parse().ok()?;
            let start = line_end + 2;
            if len < 0 {
                return Some((b'_', &[], start));
            }
            let end = start + len as usize;
            (buf.len() >= end + 2).then(|| (kind, &buf[start..end], end + 2))
        }
        _ => reply_len(buf).map(|len| (kind, &buf[..len], len)),
    }
}

/// Reads `count` replies: type byte and payload of each.
pub(super) async fn read_replies(client: &mut RawClient, count: usize) -> Vec<(u8, Vec<u8>)> {
    let mut replies = Vec::with_capacity(count);
    let mut offset = 0;
    while replies.len() < count {
        let parsed = next_reply(&client.buffer[offset..])
            .map(|(kind, payload, len)| (kind, payload.to_vec(), len));
        match parsed {
            Some((kind, payload, len)) => {
                replies.push((kind, payload));
                offset += len;
            }
            None => {
                client.fill().await.expect("redis-server closed the connection");
            }
        }
    }
    client.buffer.drain(..offset);
    replies
}

/// A command on which `Policy::decide` and `ACL DRYRUN` disagree for a user.
pub(super) struct Mismatch {
    pub(super) user: String,
    pub(super) case: usize,
    pub(super) text: String,
}

/// Up to [`SHOWN`] mismatches, spread over users and commands: a few per user and per
/// command first, then the others in order.
pub(super) fn shown_mismatches(mismatches: &[Mismatch]) -> String {
    let mut per_user: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_case: BTreeMap<usize, usize> = BTreeMap::new();
    let mut shown: Vec<usize> = Vec::new();
    for (index, mismatch) in mismatches.iter().enumerate() {
        let user = per_user.entry(&mismatch.user).or_default();
        let case = per_case.entry(mismatch.case).or_default();
        if shown.len() < SHOWN && *user < 3 && *case < 2 {
            *user += 1;
            *case += 1;
            shown.push(index);
        }
    }
    let rest: Vec<usize> = (0..mismatches.len()).filter(|i| !shown.contains(i)).collect();
    shown.extend(rest.into_iter().take(SHOWN.saturating_sub(shown.len())));
    let mut text = format!("{} of the mismatches:", shown.len());
    for index in shown {
        text.push('\n');
        text.push_str(&mismatches[index].text);
    }
    text
}
