//! The RESP frames of a reply stream, walked against the model's predictions, and the
//! normalisation of what differs between any two connections.

use super::*;

#[derive(Debug, Clone)]
pub(super) struct Frame {
    pub(super) kind: u8,
    /// The first line, without the type byte.
    head: Vec<u8>,
    /// A bulk string's payload.
    payload: Option<Vec<u8>>,
    /// Elements of an aggregate (pushes written inside an aggregate are left out: Redis 7.0
    /// writes a PUBLISH's message push inside EXEC's array).
    children: Vec<Self>,
    pub(super) null: bool,
    pub(super) start: usize,
    pub(super) end: usize,
}

impl Frame {
    fn is_error(&self) -> bool {
        matches!(self.kind, b'-' | b'!')
    }

    fn error_text(&self) -> &[u8] {
        match self.kind {
            b'!' => self.payload.as_deref().unwrap_or_default(),
            _ => &self.head,
        }
    }

    fn first_word(&self) -> &[u8] {
        self.children.first().and_then(|c| c.payload.as_deref()).unwrap_or_default()
    }

    /// A MONITOR line, `+<secs>.<micros> [<db> <addr>] ...`.
    fn is_monitor_line(&self) -> bool {
        self.kind == b'+'
            && self.head.first().is_some_and(u8::is_ascii_digit)
            && memmem::find(&self.head, b" [").is_some()
    }

    /// Written unasked: a monitor line or a RESP3 message push.
    fn is_unsolicited(&self) -> bool {
        self.is_monitor_line() || (self.kind == b'>' && self.first_word() == b"message")
    }

    fn is_confirmation(&self) -> bool {
        matches!(self.kind, b'>' | b'*')
            && self.children.len() == 3
            && matches!(self.first_word(), b"subscribe" | b"unsubscribe")
    }
}

/// The frame starting at `start`: `Ok(None)` when incomplete.
fn parse_frame(buf: &[u8], start: usize) -> Result<Option<Frame>, String> {
    let Some(line_len) = memmem::find(&buf[start..], b"\r\n") else { return Ok(None) };
    let kind = buf[start];
    let head = buf[start + 1..start + line_len].to_vec();
    let mut pos = start + line_len + 2;
    let mut frame =
        Frame { kind, head, payload: None, children: Vec::new(), null: false, start, end: 0 };
    let number = |head: &[u8]| {
        parse_int(head).ok_or_else(|| format!("bad length \"{}\"", head.escape_ascii()))
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {}
        b'$' | b'=' | b'!' => {
            let len = number(&frame.head)?;
            if len < 0 {
                frame.null = true;
            } else {
                let len = len as usize;
                if buf.len() < pos + len + 2 {
                    return Ok(None);
                }
                frame.payload = Some(buf[pos..pos + len].to_vec());
                if &buf[pos + len..pos + len + 2] != b"\r\n" {
                    return Err("bulk string not ended by CRLF".to_owned());
                }
                pos += len + 2;
            }
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n = number(&frame.head)?;
            if n < 0 {
                frame.null = true;
            } else {
                let count = if kind == b'%' { 2 * n as usize } else { n as usize };
                while frame.children.len() < count {
                    let Some(child) = parse_frame(buf, pos)? else { return Ok(None) };
                    pos = child.end;
                    if child.kind != b'>' {
                        frame.children.push(child);
                    }
                }
            }
        }
        other => return Err(format!("unknown type byte 0x{other:02x}")),
    }
    frame.end = pos;
    Ok(Some(frame))
}

/// Every whole frame of `buf`, and an error if what follows them is not RESP.
pub(super) fn parse_all(buf: &[u8]) -> (Vec<Frame>, Option<String>) {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        match parse_frame(buf, pos) {
            Ok(Some(frame)) => {
                pos = frame.end;
                frames.push(frame);
            }
            Ok(None) => return (frames, Some(format!("incomplete frame at byte {pos}"))),
            Err(error) => return (frames, Some(format!("{error} at byte {pos}"))),
        }
    }
    (frames, None)
}

fn matches_expect(e: &Expect, f: &Frame) -> bool {
    match e {
        Expect::Any => !f.is_error(),
        Expect::Err(prefix) => f.is_error() && f.error_text().starts_with(prefix.as_bytes()),
        Expect::Status(text) => f.kind == b'+' && f.head == text.as_bytes(),
        Expect::Nil => (f.kind == b'*' && f.null) || f.kind == b'_',
        Expect::Bulk(Some(value)) => f.kind == b'$' && f.payload.as_ref() == Some(value),
        Expect::Bulk(None) => (f.kind == b'$' && f.null) || f.kind == b'_',
        Expect::Int(n) => f.kind == b':' && parse_int(&f.head) == Some(*n),
        Expect::Exec(elements) => {
            f.kind == b'*'
                && !f.null
                && f.children.len() == elements.len()
                && elements.iter().zip(&f.children).all(|(e, f)| matches_expect(e, f))
        }
    }
}

/// The direct stream, checked against the model, frame by frame.
#[derive(Debug)]
pub(super) struct Walk {
    /// The command each frame answers (`None`: monitor line or message push).
    pub(super) owner: Vec<Option<usize>>,
    /// Frames written once command `i` is answered (for [`Mode::Lockstep`]).
    pub(super) frames_after: Vec<usize>,
}

pub(super) fn walk(stream: &[u8], preds: &[Pred]) -> Result<Walk, String> {
    let (frames, error) = parse_all(stream);
    if let Some(error) = error {
        return Err(format!("the direct stream is not RESP: {error}"));
    }
    let mut owner = vec![None; frames.len()];
    let mut frames_after = Vec::new();
    let mut next = 0;
    for (i, pred) in preds.iter().enumerate() {
        let wanted = match &pred.out {
            Out::Reply(_) if !pred.suppressed => 1,
            Out::Confirm(n) => *n,
            _ => 0,
        };
        for _ in 0..wanted {
            while next < frames.len() && frames[next].is_unsolicited() {
                next += 1;
            }
            let Some(frame) = frames.get(next) else {
                return Err(format!("command #{i}: its reply is missing"));
            };
            owner[next] = Some(i);
            next += 1;
            let (fits, what) = match &pred.out {
                Out::Reply(e) => (matches_expect(e, frame), describe_expect(e)),
                _ => (frame.is_confirmation(), "a confirmation".to_owned()),
            };
            if !fits {
                return Err(format!(
                    "command #{i}: expected {what}, Redis wrote \"{}\"",
                    show(&stream[frame.start..frame.end])
                ));
            }
        }
        frames_after.push(next);
    }
    if let Some(extra) = frames[next..].iter().find(|f| !f.is_unsolicited()) {
        return Err(format!(
            "Redis wrote a reply nobody expected: \"{}\"",
            show(&stream[extra.start..extra.end])
        ));
    }
    Ok(Walk { owner, frames_after })
}

// ------------------------------------------------------------------------------------------
// Normalisation: only what differs between any two connections.

/// HELLO's `id` value and MONITOR's timestamp and client address replaced, and the channels
/// of consecutive UNSUBSCRIBE confirmations in sorted order (an argument-less UNSUBSCRIBE
/// confirms in the order of Redis's hash table, which differs between two servers). MONITOR
/// lines are compared as a sorted list after the rest: they arrive unasked, and a reply the
/// proxy writes itself may come before the line Redis writes just after a previous command.
pub(super) fn normalise(stream: &[u8]) -> Vec<u8> {
    let sorted = sort_unsubscribe_runs(&crate::differential::normalise(stream, &[]));
    let (frames, _) = parse_all(&sorted);
    let (mut rest, mut lines) = (Vec::new(), Vec::new());
    for frame in &frames {
        let bytes = &sorted[frame.start..frame.end];
        if bytes.starts_with(b"+<time> [") {
            lines.push(bytes.to_vec());
        } else {
            rest.extend_from_slice(bytes);
        }
    }
    let parsed: usize = frames.last().map_or(0, |frame| frame.end);
    rest.extend_from_slice(&sorted[parsed..]);
    lines.sort();
    rest.extend_from_slice(b"\n-- monitor lines --\n");
    for line in lines {
        rest.extend_from_slice(&line);
    }
    rest
}

fn sort_unsubscribe_runs(stream: &[u8]) -> Vec<u8> {
    let (frames, _) = parse_all(stream);
    let is_unsubscribe = |f: &Frame| f.is_confirmation() && f.first_word() == b"unsubscribe";
    let mut out = Vec::with_capacity(stream.len());
    let mut k = 0;
    while k < frames.len() {
        let run = frames[k..].iter().take_while(|f| is_unsubscribe(f)).count();
        if run == 0 {
            out.extend_from_slice(&stream[frames[k].start..frames[k].end]);
            k += 1;
            continue;
        }
        let run = &frames[k..k + run];
        let mut names: Vec<&[u8]> =
            run.iter().map(|f| &stream[f.children[1].start..f.children[1].end]).collect();
        names.sort_unstable();
        for (f, name) in run.iter().zip(names) {
            out.extend_from_slice(&stream[f.start..f.children[1].start]);
            out.extend_from_slice(name);
            out.extend_from_slice(&stream[f.children[1].end..f.end]);
        }
        k += run.len();
    }
    out.extend_from_slice(&stream[frames.last().map_or(0, |f| f.end)..]);
    out
}
