//! Fuzz target: the reply framer against the redis-protocol crate as the oracle, as
//! tests/it/framer_oracle.rs does with a fixed generator.
//!
//! Byte 0 picks the mode:
//! - even: replies *generated* from the input (every RESP2/RESP3 type, nested aggregates,
//!   attributes, binary payloads), encoded by redis-protocol, concatenated and fed to the
//!   framer in random pieces: every reply boundary must be the encoder's, with no error;
//! - odd: the input *as bytes*: fed whole and in random pieces the framer finds the same
//!   replies and the same error; and where the oracle decodes a first reply of `n` bytes (and
//!   it holds no push inside an aggregate, which Redis writes out of band and the framer reads
//!   so, while the oracle counts it as an element), the framer, unless it refused the bytes
//!   first, ends its first reply at `n` too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_audit_proxy::resp::reply::{ReplyError, ReplyScanner};
use redis_audit_proxy_fuzz::{cut_points, Choices};
use redis_protocol::resp3::types::{
    FrameMap, FrameSet, OwnedFrame, Resp3Frame, VerbatimStringFormat,
};

const MAX_DEPTH: usize = 64;

fn key(c: &mut Choices<'_>) -> OwnedFrame {
    match c.below(3) {
        0 => OwnedFrame::SimpleString { data: text(c, 8), attributes: None },
        1 => OwnedFrame::BlobString { data: c.take(8).to_vec(), attributes: None },
        _ => OwnedFrame::Number { data: i64::from(c.byte()) - 100, attributes: None },
    }
}

/// Printable text without CR/LF (a simple string cannot hold them).
fn text(c: &mut Choices<'_>, max: usize) -> Vec<u8> {
    c.take(max).iter().map(|b| b' ' + b % 94).collect()
}

/// A reply drawn from the input; pushes only at the top: one written inside an aggregate is
/// out of band, not one of its elements (see `resp::reply`).
fn frame(c: &mut Choices<'_>, depth: u32, top: bool) -> OwnedFrame {
    let attributes = if depth > 0 && c.below(10) == 0 {
        let mut map = FrameMap::default();
        map.insert(key(c), frame(c, depth - 1, false));
        Some(map)
    } else {
        None
    };
    if depth == 0 || c.below(3) > 0 {
        return match c.below(10) {
            0 => OwnedFrame::BlobString { data: c.take(300).to_vec(), attributes },
            1 => OwnedFrame::SimpleString { data: text(c, 40), attributes },
            2 => OwnedFrame::SimpleError {
                data: format!("ERR {}", String::from_utf8(text(c, 30)).unwrap()),
                attributes,
            },
            3 => OwnedFrame::Number {
                data: i64::from_le_bytes([
                    c.byte(),
                    c.byte(),
                    c.byte(),
                    c.byte(),
                    0,
                    0,
                    0,
                    c.byte(),
                ]),
                attributes,
            },
            4 => OwnedFrame::Double { data: f64::from(c.byte()) / 7.0, attributes },
            5 => OwnedFrame::Boolean { data: c.below(2) == 0, attributes },
            6 => OwnedFrame::Null,
            7 => OwnedFrame::BlobError { data: c.take(50).to_vec(), attributes },
            8 => OwnedFrame::BigNumber {
                data: b"123456789012345678901234567890".to_vec(),
                attributes,
            },
            _ => OwnedFrame::VerbatimString {
                data: c.take(60).to_vec(),
                format: VerbatimStringFormat::Text,
                attributes,
            },
        };
    }
    let count = c.below(6);
    match c.below(4) {
        1 if top => OwnedFrame::Push {
            data: (0..count.max(1)).map(|_| frame(c, depth - 1, false)).collect(),
            attributes,
        },
        0 | 1 => OwnedFrame::Array {
            data: (0..count).map(|_| frame(c, depth - 1, false)).collect(),
            attributes,
        },
        2 => {
            let mut map = FrameMap::default();
            for _ in 0..count {
                map.insert(key(c), frame(c, depth - 1, false));
            }
            OwnedFrame::Map { data: map, attributes }
        }
        _ => {
            let mut set = FrameSet::default();
            for _ in 0..count {
                set.insert(key(c));
            }
            OwnedFrame::Set { data: set, attributes }
        }
    }
}

fn encode(frame: &OwnedFrame) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; frame.encode_len(false)];
    let len = redis_protocol::resp3::encode::complete::encode(&mut buf, frame, false).ok()?;
    buf.truncate(len);
    Some(buf)
}

/// Scans `stream` in the pieces `cuts` makes: the length of every reply completed, and the
/// error that stopped the framer.
fn scan(stream: &[u8], cuts: &[usize]) -> (Vec<u64>, Option<ReplyError>) {
    let mut scanner = ReplyScanner::new(MAX_DEPTH);
    let mut seen = Vec::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([stream.len()]) {
        let mut at = start;
        while at < end {
            match scanner.scan(&stream[at..end]) {
                Ok((used, done)) => {
                    assert!(used > 0 && at + used <= end);
                    // "Every byte is consumed unless a reply ended first."
                    assert!(done || at + used == end);
                    at += used;
                    if done {
                        seen.push(scanner.reply().bytes);
                    }
                }
                Err(error) => return (seen, Some(error)),
            }
        }
        start = end;
    }
    (seen, None)
}

/// True when a push may sit inside the reply (see the module comment): a `>` after a line
/// feed. Read from the bytes, not the oracle's frame: its maps and sets drop a repeated key, and
/// a push that was the value of one with it (`%2 +a >1 +x +a +y`: found by this target).
fn may_nest_push(reply: &[u8]) -> bool {
    reply.get(1..).is_some_and(|rest| rest.windows(2).any(|w| w == b"\n>"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut c = Choices::new(rest);
    let seed = u64::from_le_bytes([
        c.byte(),
        c.byte(),
        c.byte(),
        c.byte(),
        c.byte(),
        c.byte(),
        c.byte(),
        c.byte(),
    ]);
    if mode % 2 == 0 {
        let mut stream = Vec::new();
        let mut lengths = Vec::new();
        while !c.is_empty() && lengths.len() < 20 {
            let bytes = match c.below(12) {
                // RESP2 nulls: the RESP3 encoder never writes them, Redis sends them to RESP2
                // clients.
                0 => b"$-1\r\n".to_vec(),
                1 => b"*-1\r\n".to_vec(),
                _ => {
                    let depth = 1 + c.below(4) as u32;
                    let Some(bytes) = encode(&frame(&mut c, depth, true)) else { continue };
                    bytes
                }
            };
            lengths.push(bytes.len() as u64);
            stream.extend_from_slice(&bytes);
        }
        let cuts = cut_points(seed, stream.len());
        let (seen, error) = scan(&stream, &cuts);
        assert_eq!(error, None, "framer refused the oracle's encoding; cuts {cuts:?}");
        assert_eq!(seen, lengths, "cuts {cuts:?}");
    } else {
        let stream = c.rest();
        let whole = scan(stream, &[]);
        let cuts = cut_points(seed, stream.len());
        assert_eq!(scan(stream, &cuts), whole, "cuts {cuts:?}");
        if let Ok(Some((frame, n))) = redis_protocol::resp3::decode::complete::decode(stream) {
            // The oracle's `complete` decoder does not assemble streamed values (`$?`, `*?`):
            // it returns their first part; those are checked by the generated mode and the
            // framer's own tests.
            let streamed = stream[..n].windows(2).any(|w| w == b"?\r");
            if !streamed && !may_nest_push(&stream[..n]) {
                match whole.0.first() {
                    Some(&first) => assert_eq!(first, n as u64, "oracle frame {frame:?}"),
                    // The framer refused the first reply: only a stricter reading (a length
                    // header Redis never writes) may do that.
                    None if whole.1.is_some() => {}
                    None => panic!("the oracle read a whole reply of {n} bytes, the framer wants more: {frame:?}"),
                }
            }
        }
    }
});
