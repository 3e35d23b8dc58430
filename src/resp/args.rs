//! Redis's helpers for text arguments, byte for byte: `string2ll` (util.c) and
//! `sdssplitargs` (sds.c), used by the inline decoder, the users file and the command table.

use bytes::Bytes;

/// Redis's `string2ll`: strict decimal, optional `-`, no `+`, no leading zeros, under 21 bytes.
pub(crate) fn string2ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut value: u64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
    }
    if negative {
        if value > i64::MAX as u64 + 1 {
            return None;
        }
        Some((value as i64).wrapping_neg())
    } else {
        i64::try_from(value).ok()
    }
}

/// Redis's `sdssplitargs`: splits an inline line into arguments, with `"..."` (C escapes and
/// `\xHH`) and `'...'` (only `\'`) quoting. `None` for unbalanced quotes.
pub(crate) fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    // `sdssplitargs` works on a C string: a NUL ends it. (A line never holds one, see above.)
    let line = match memchr::memchr(0, line) {
        Some(end) => &line[..end],
        None => line,
    };
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        // The quote of the quoted part being read, if any: `"` (with escapes) or `'`.
        let mut quote: Option<u8> = None;
        loop {
            let c = at(p);
            if let Some(open) = quote {
                let double = open == b'"';
                if double
                    && c == b'\\'
                    && at(p + 1) == b'x'
                    && at(p + 2).is_ascii_hexdigit()
                    && at(p + 3).is_ascii_hexdigit()
                {
                    current.push(hex_value(at(p + 2)) * 16 + hex_value(at(p + 3)));
                    p += 3;
                } else if double && c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    current.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if !double && c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    current.push(b'\'');
                } else if c == open {
                    // The closing quote must be followed by a space or nothing at all.
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        if c != 0 {
                            p += 1;
                        }
                        break;
                    }
                    b'"' | b'\'' => quote = Some(c),
                    other => current.push(other),
                }
            }
            p += 1;
        }
        args.push(Bytes::from(current));
    }
}

fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_args_matches_sdssplitargs() {
        let split =
            |s: &[u8]| split_args(s).map(|v| v.iter().map(|b| b.to_vec()).collect::<Vec<_>>());
        assert_eq!(split(b"  a  b\t c "), Some(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]));
        assert_eq!(
            split(b"\"\\x41\\n\\\"\" 'it\\'s'"),
            Some(vec![b"A\n\"".to_vec(), b"it's".to_vec()])
        );
        assert_eq!(split(b"foo\"bar baz\""), Some(vec![b"foobar baz".to_vec()]));
        assert_eq!(split(b"\"\\q\\xZZ\""), Some(vec![b"qxZZ".to_vec()]));
        assert_eq!(split(b"\"\\x4g\""), Some(vec![b"x4g".to_vec()]), "one hex digit: no byte");
        // Every hex digit, either case, in either place.
        assert_eq!(
            split(b"\"\\x00\\x09\\x0a\\x0F\\xaf\\xFa\\xff\\x9C\\xE5\\x1d\""),
            Some(vec![vec![0x00, 0x09, 0x0a, 0x0f, 0xaf, 0xfa, 0xff, 0x9c, 0xe5, 0x1d]])
        );
        assert_eq!(split(b"\"\""), Some(vec![Vec::new()]));
        assert_eq!(split(b"a\x0bb"), Some(vec![b"a\x0bb".to_vec()]));
        assert_eq!(split(b"\"abc"), None);
        assert_eq!(split(b"'a'b"), None);
        assert_eq!(split(b""), Some(vec![]));
    }

    #[test]
    fn string2ll_is_strict() {
        assert_eq!(string2ll(b"0"), Some(0));
        assert_eq!(string2ll(b"-5"), Some(-5));
        assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b""[..], b"-", b"-0", b"00", b"+1", b" 1", b"1 ", b"9223372036854775808"] {
            assert_eq!(string2ll(bad), None, "{bad:?}");
        }
    }
}
