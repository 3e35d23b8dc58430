//! The random request streams: valid commands (multibulk and inline), mutated ones, and the
//! chunks they are written in.

use super::*;

/// One stream of requests, as the module documentation's grammar says.
pub(super) fn generate(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(5) {
        return (0..1 + rng.below(40)).map(|_| *rng.pick(PROTO)).collect();
    }
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(6) {
        match rng.below(100) {
            0..=3 => {
                let extra: &[&[u8]] = &[b"\r\n", b"*0\r\n", b"*-1\r\n"];
                out.extend_from_slice(extra[rng.below(extra.len())]);
            }
            4..=44 => out.extend(multibulk(&command(rng))),
            45..=69 => {
                let args = command(rng);
                out.extend(inline(rng, &args));
            }
            _ => {
                let args = command(rng);
                let request = if rng.chance(75) { multibulk(&args) } else { inline(rng, &args) };
                out.extend(mutate(rng, request));
            }
        }
    }
    out
}

/// A command from the safe list, its name in random case; sometimes of the wrong arity.
pub(super) fn command(rng: &mut Rng) -> Vec<Vec<u8>> {
    let key = |rng: &mut Rng| rng.pick(KEYS).as_bytes().to_vec();
    let mut args: Vec<Vec<u8>> = Vec::new();
    let name: &str = match rng.below(19) {
        0 => {
            if rng.chance(50) {
                args.push(arg(rng));
            }
            "ping"
        }
        1 => {
            args.push(arg(rng));
            "echo"
        }
        2 => {
            args.push(key(rng));
            args.push(arg(rng));
            match rng.below(8) {
                0 => args.extend([b"EX".to_vec(), time(rng)]),
                1 => args.extend([b"px".to_vec(), time(rng)]),
                2 => args.push(b"NX".to_vec()),
                3 => args.push(b"xx".to_vec()),
                4 => args.push(b"GET".to_vec()),
                _ => {}
            }
            "set"
        }
        3 => {
            args.push(key(rng));
            "get"
        }
        4 => {
            args.push(key(rng));
            "incr"
        }
        5..=7 => {
            for _ in 0..1 + rng.below(3) {
                args.push(key(rng));
            }
            ["del", "exists", "mget"][rng.below(3)]
        }
        8 => {
            args.push(key(rng));
            for _ in 0..1 + rng.below(3) {
                args.push(arg(rng));
            }
            "lpush"
        }
        9 => {
            args.extend([key(rng), number(rng), number(rng)]);
            "lrange"
        }
        10 => {
            args.push(key(rng));
            for _ in 0..1 + rng.below(2) {
                args.extend([arg(rng), arg(rng)]);
            }
            "hset"
        }
        11 => {
            args.extend([key(rng), arg(rng)]);
            "hget"
        }
        12 => {
            for _ in 0..1 + rng.below(2) {
                args.extend([key(rng), arg(rng)]);
            }
            "mset"
        }
        13 => {
            args.extend([key(rng), arg(rng)]);
            "append"
        }
        14..=16 => {
            args.push(key(rng));
            ["strlen", "ttl", "type"][rng.below(3)]
        }
        17 => {
            args.extend([key(rng), time(rng)]);
            "expire"
        }
        _ => {
            let letters: String =
                (0..1 + rng.below(5)).map(|_| char::from(b'a' + rng.below(26) as u8)).collect();
            args.push(arg(rng));
            return [format!("zz{letters}").into_bytes()].into_iter().chain(args).collect();
        }
    };
    if rng.chance(15) {
        if !args.is_empty() && rng.chance(50) {
            args.pop();
        } else {
            args.push(arg(rng));
        }
    }
    let name: Vec<u8> =
        name.bytes().map(|b| if rng.chance(50) { b.to_ascii_uppercase() } else { b }).collect();
    [name].into_iter().chain(args).collect()
}

pub(super) fn number(rng: &mut Rng) -> Vec<u8> {
    rng.pick(NUMBERS).as_bytes().to_vec()
}

/// An expiry (seconds or milliseconds): never one that could pass while a stream runs, which
/// would make Redis's own replies depend on timing (`SET k v PX 1` then `HGET k f`).
pub(super) fn time(rng: &mut Rng) -> Vec<u8> {
    rng.pick(TIMES).as_bytes().to_vec()
}

pub(super) fn arg(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0..=3 => rng.pick(KEYS).as_bytes().to_vec(),
        4 | 5 => number(rng),
        _ => (0..rng.below(9)).map(|_| *rng.pick(PROTO)).collect(),
    }
}

pub(super) fn multibulk(args: &[Vec<u8>]) -> Vec<u8> {
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    encode_command(&refs)
}

/// An inline request: arguments raw (separators in them split or end the line) or quoted.
pub(super) fn inline(rng: &mut Rng, args: &[Vec<u8>]) -> Vec<u8> {
    let quote = rng.chance(50);
    let mut out = args[0].clone();
    for arg in &args[1..] {
        out.push(b' ');
        if quote {
            out.push(b'"');
            for &b in arg {
                match b {
                    b'"' | b'\\' => out.extend([b'\\', b]),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b' '..=b'~' => out.push(b),
                    _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                }
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(arg);
        }
    }
    out.extend_from_slice(if rng.chance(80) { b"\r\n" } else { b"\n" });
    out
}

/// `request` with one mutation of the grammar's `mutate`.
pub(super) fn mutate(rng: &mut Rng, mut request: Vec<u8>) -> Vec<u8> {
    let positions = |request: &[u8], byte: u8| -> Vec<usize> {
        request.iter().enumerate().filter(|&(_, &b)| b == byte).map(|(i, _)| i).collect()
    };
    match rng.below(7) {
        // A bulk length: off by a little, or not a length.
        0 => {
            let dollars = positions(&request, b'$');
            if let Some(&at) = dollars.get(rng.below(dollars.len().max(1))) {
                let end = at + request[at..].iter().position(|&b| b == b'\r').unwrap_or(1);
                let len: i64 = std::str::from_utf8(&request[at + 1..end])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let new = match rng.below(6) {
                    0 => (len + 1).to_string(),
                    1 => (len + 2).to_string(),
                    2 => (len - 1).to_string(),
                    3 => "-1".to_owned(),
                    4 => rng.pick(&["abc", "", "99999999999"]).to_string(),
                    _ => (len - 2).max(0).to_string(),
                };
                request.splice(at + 1..end, new.into_bytes());
            }
        }
        // A CRLF, CR or LF removed.
        1 => {
            let crs = positions(&request, b'\r');
            if let Some(&at) = crs.get(rng.below(crs.len().max(1))) {
                let range = match rng.below(3) {
                    0 => at..at + 2,
                    1 => at..at + 1,
                    _ => at + 1..at + 2,
                };
                request.drain(range.start..range.end.min(request.len()));
            }
        }
        // The count.
        2 => {
            if request.first() == Some(&b'*') {
                let end = request.iter().position(|&b| b == b'\r').unwrap_or(1);
                let count: i64 = std::str::from_utf8(&request[1..end])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let new = match rng.below(5) {
                    0 => (count + 1).to_string(),
                    1 => (count - 1).to_string(),
                    _ => rng
                        .pick(&["-1", "-7", "0", "x", "", "1048577", "2147483648", "99999999999"])
                        .to_string(),
                };
                request.splice(1..end, new.into_bytes());
            }
        }
        // A garbage first byte.
        3 => request[0] = *rng.pick(b"#\0\xff$ \"\r"),
        // A bulk's type byte.
        4 => {
            let dollars = positions(&request, b'$');
            if let Some(&at) = dollars.get(rng.below(dollars.len().max(1))) {
                request[at] = *rng.pick(b":x");
            }
        }
        // Cut short.
        5 => request.truncate(rng.below(request.len())),
        // A random byte inserted.
        _ => {
            let at = rng.below(request.len() + 1);
            request.insert(at, *rng.pick(PROTO));
        }
    }
    request
}

/// `stream` cut into chunks, each with the pause (ms) before it: whole, single bytes, or
/// 1..16-byte pieces.
pub(super) fn split(rng: &mut Rng, stream: &[u8]) -> Vec<(Vec<u8>, u64)> {
    let mode = rng.below(10);
    if mode < 3 || stream.is_empty() {
        return vec![(stream.to_vec(), 0)];
    }
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let size = if mode == 3 && stream.len() <= 80 { 1 } else { 1 + rng.below(16) };
        let end = (at + size).min(stream.len());
        chunks.push((stream[at..end].to_vec(), rng.below(3) as u64));
        at = end;
    }
    chunks
}
