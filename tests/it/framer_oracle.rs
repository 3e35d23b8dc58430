//! The reply framer against redis-protocol as the oracle: random RESP2 and RESP3 replies
//! (nested aggregates, attributes, binary payloads), encoded by redis-protocol, concatenated
//! and fed to our framer in random pieces; every reply boundary must match the encoder's.

use redis_audit_proxy::resp::reply::ReplyScanner;
use redis_protocol::resp3::types::{OwnedFrame, VerbatimStringFormat};

use crate::support::rng::Rng;

/// A small number (31 bits), for the integers and doubles of replies.
fn small(rng: &mut Rng) -> u64 {
    rng.next() >> 33
}

fn random_key(rng: &mut Rng) -> OwnedFrame {
    match rng.below(3) {
        0 => OwnedFrame::SimpleString { data: rng.text(8), attributes: None },
        1 => OwnedFrame::BlobString { data: rng.bytes(8), attributes: None },
        _ => OwnedFrame::Number { data: small(rng) as i64 - (1 << 30), attributes: None },
    }
}

/// A random reply; pushes only at the top (`top`): a push written inside an aggregate is out
/// of band, not one of its elements, as Redis writes it (see `resp::reply`'s tests).
fn random_frame(rng: &mut Rng, depth: u32, top: bool) -> OwnedFrame {
    let attributes = if depth > 0 && rng.below(10) == 0 {
        let mut map = redis_protocol::resp3::types::FrameMap::default();
        map.insert(random_key(rng), random_frame(rng, depth - 1, false));
        Some(map)
    } else {
        None
    };
    let leaf = depth == 0 || rng.below(3) > 0;
    if leaf {
        return match rng.below(10) {
            0 => OwnedFrame::BlobString { data: rng.bytes(300), attributes },
            1 => OwnedFrame::SimpleString { data: rng.text(40), attributes },
            2 => OwnedFrame::SimpleError {
                data: format!("ERR {}", String::from_utf8(rng.text(30)).unwrap()),
                attributes,
            },
            3 => OwnedFrame::Number { data: small(rng) as i64 * -7, attributes },
            4 => OwnedFrame::Double { data: small(rng) as f64 / 7.0, attributes },
            5 => OwnedFrame::Boolean { data: rng.below(2) == 0, attributes },
            6 => OwnedFrame::Null,
            7 => OwnedFrame::BlobError { data: rng.bytes(50), attributes },
            8 => OwnedFrame::BigNumber {
                data: b"123456789012345678901234567890".to_vec(),
                attributes,
            },
            _ => OwnedFrame::VerbatimString {
                data: rng.bytes(60),
                format: VerbatimStringFormat::Text,
                attributes,
            },
        };
    }
    let count = rng.below(6);
    match rng.below(4) {
        1 if top => OwnedFrame::Push {
            data: (0..count.max(1)).map(|_| random_frame(rng, depth - 1, false)).collect(),
            attributes,
        },
        0 | 1 => OwnedFrame::Array {
            data: (0..count).map(|_| random_frame(rng, depth - 1, false)).collect(),
            attributes,
        },
        2 => {
            let mut map = redis_protocol::resp3::types::FrameMap::default();
            for _ in 0..count {
                map.insert(random_key(rng), random_frame(rng, depth - 1, false));
            }
            OwnedFrame::Map { data: map, attributes }
        }
        _ => {
            let mut set = redis_protocol::resp3::types::FrameSet::default();
            for _ in 0..count {
                set.insert(random_key(rng));
            }
            OwnedFrame::Set { data: set, attributes }
        }
    }
}

fn encode(frame: &OwnedFrame) -> Vec<u8> {
    use redis_protocol::resp3::types::Resp3Frame;
    let mut buf = vec![0u8; frame.encode_len(false)];
    let len = redis_protocol::resp3::encode::complete::encode(&mut buf, frame, false).unwrap();
    buf.truncate(len);
    buf
}

#[test]
fn reply_boundaries_match_the_oracle_for_random_replies_in_random_pieces() {
    let mut rng = Rng::new(0x5eed);
    for round in 0..200 {
        let mut stream = Vec::new();
        let mut lengths = Vec::new();
        for _ in 0..20 {
            let bytes = match rng.below(12) {
                // RESP2 nulls, which the RESP3 encoder never writes but Redis sends to RESP2
                // clients.
                0 => b"$-1\r\n".to_vec(),
                1 => b"*-1\r\n".to_vec(),
                _ => {
                    let frame = random_frame(&mut rng, 4, true);
                    let bytes = encode(&frame);
                    // The oracle's own decoder agrees on the length.
                    let decoded = redis_protocol::resp3::decode::complete::decode_range(&bytes);
                    assert_eq!(decoded.unwrap().map(|(_, n)| n), Some(bytes.len()));
                    bytes
                }
            };
            lengths.push(bytes.len() as u64);
            stream.extend_from_slice(&bytes);
        }
        let mut scanner = ReplyScanner::new(64);
        let mut seen = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let piece = (1 + rng.below(200)).min(stream.len() - at);
            let chunk = &stream[at..at + piece];
            let mut used = 0;
            while used < chunk.len() {
                let (n, done) = scanner.scan(&chunk[used..]).unwrap_or_else(|e| {
                    panic!("round {round}: framer error {e} at byte {}", at + used)
                });
                used += n;
                if done {
                    seen.push(scanner.reply().bytes);
                }
            }
            at += piece;
        }
        assert_eq!(seen, lengths, "round {round}");
        assert!(!scanner.is_mid_reply());
    }
}
