//! Fuzz target: the request decoder against a model of itself: the same bytes decoded whole
//! and cut into pieces at random points give the same requests and the same error, and every
//! request's `raw` is the client's own bytes, in order.
//!
//! Input: byte 0 picks the mode (authenticated or not, default or tiny limits), bytes 1..9
//! seed the cut points, the rest is the stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use redis_audit_proxy::resp::request::{ProtocolError, Request, RequestDecoder, RequestLimits};
use redis_audit_proxy_fuzz::cut_points;

/// Requests decoded, the error that stopped decoding, and how many input bytes were split
/// off the buffer.
type Outcome = (Vec<Request>, Option<ProtocolError>, usize);

/// Feeds `input` in the pieces `cuts` makes, decoding after each, as the proxy does after
/// every read. Checks on the way that each request's `raw` is the input's own bytes, ending
/// exactly where the decoder split the buffer (skipped empty lines and `*0` may precede it).
fn decode(input: &[u8], cuts: &[usize], limits: RequestLimits, authenticated: bool) -> Outcome {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    let mut consumed = 0;
    let mut start = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        buf.extend_from_slice(&input[start..end]);
        start = end;
        loop {
            let before = buf.len();
            let result = decoder.decode(&mut buf, authenticated);
            let split = before - buf.len();
            consumed += split;
            match result {
                Ok(Some(request)) => {
                    assert!(!request.args.is_empty(), "a request without a command");
                    assert!(request.raw.len() <= split);
                    assert_eq!(&input[consumed - request.raw.len()..consumed], &request.raw[..]);
                    requests.push(request);
                }
                Ok(None) => break,
                Err(error) => {
                    // The error reply is one line, as Redis's.
                    let reply = error.to_reply();
                    assert!(reply.ends_with(b"\r\n"));
                    assert!(!reply[..reply.len() - 2].iter().any(|b| matches!(b, b'\r' | b'\n')));
                    return (requests, Some(error), consumed);
                }
            }
        }
    }
    (requests, None, consumed)
}

/// Errors that depend on how much had arrived when the decoder looked (Redis's too: it
/// checks the length of a line that has no end yet): cut differently, a longer line may end
/// in time, or be refused earlier.
fn is_length_error(error: &Option<ProtocolError>) -> bool {
    matches!(
        error,
        Some(
            ProtocolError::TooBigInline
                | ProtocolError::TooBigMultibulkCount
                | ProtocolError::TooBigBulkCount
        )
    )
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let mode = data[0];
    let seed = u64::from_le_bytes(data[1..9].try_into().unwrap());
    let input = &data[9..];
    let authenticated = mode & 1 == 0;
    let limits = if mode & 2 == 0 {
        RequestLimits::default()
    } else {
        // Tiny limits, so that every limit error is reachable with short inputs.
        RequestLimits {
            inline_max_bytes: 16 + usize::from(mode >> 4),
            bulk_max_bytes: 32,
            multibulk_max_len: 8,
            unauthenticated_multibulk_max_len: 3,
            unauthenticated_bulk_max_bytes: 8,
        }
    };
    let whole = decode(input, &[], limits, authenticated);
    let cuts = cut_points(seed, input.len());
    let pieces = decode(input, &cuts, limits, authenticated);
    if !is_length_error(&whole.1) && !is_length_error(&pieces.1) {
        assert_eq!(whole.0, pieces.0, "requests differ; cuts {cuts:?}");
        assert_eq!(whole.1, pieces.1, "errors differ; cuts {cuts:?}");
        assert_eq!(whole.2, pieces.2, "consumed bytes differ; cuts {cuts:?}");
    } else {
        // The side refused for length stopped no later than the other: it decoded a prefix
        // of the other's requests.
        let (short, long) = if is_length_error(&pieces.1) && !is_length_error(&whole.1) {
            (&pieces, &whole)
        } else if is_length_error(&whole.1) && !is_length_error(&pieces.1) {
            (&whole, &pieces)
        } else if whole.0.len() <= pieces.0.len() {
            (&whole, &pieces)
        } else {
            (&pieces, &whole)
        };
        assert!(short.0.len() <= long.0.len(), "cuts {cuts:?}");
        assert_eq!(short.0[..], long.0[..short.0.len()], "cuts {cuts:?}");
    }
});
