//! The command lines of the key-extraction differential test (run by [`crate::keys`]).
//!
//! Every line is checked against Redis's own `COMMAND GETKEYSANDFLAGS`, so a line needs no
//! expected answer: valid shapes, syntax errors, arity errors, unknown commands and binary
//! arguments are all welcome. Lines are written as text split on single spaces; `""` is an
//! empty argument and `\xHH` stands for any byte (`\x20` for a space inside an argument).
//!
//! The corpus is [`HAND_WRITTEN`] (the tricky cases: getkeys procedures, `numkeys` parsing,
//! keyword searches, C-string comparisons on arguments holding a NUL byte, ...) plus shapes
//! generated from the per-family tables below (each command with its key alone, in upper
//! case, with too few arguments, with one argument too many, with binary and empty keys).

mod families;
mod hand_written;

use families::*;
use hand_written::*;

/// One command line: its arguments, the command name first.
pub type Line = Vec<Vec<u8>>;

/// The whole corpus.
pub fn corpus() -> Vec<Line> {
    let mut lines: Vec<Line> = HAND_WRITTEN.iter().map(|line| parse(line)).collect();
    let mut add = |text: String| lines.push(parse(&text));

    for (n, (name, rest)) in SINGLE_KEY.iter().enumerate() {
        let odd = ODD_KEYS[n % ODD_KEYS.len()];
        add(join(&[name, "k", rest]));
        add(join(&[&name.to_uppercase(), "key:1", rest]));
        add(join(&[name, odd, rest]));
        add(join(&[name, "k", rest, "extra"]));
        add((*name).to_owned());
        if let Some((shorter, _)) = rest.rsplit_once(' ') {
            add(join(&[name, "k", shorter]));
        } else if !rest.is_empty() {
            add(join(&[name, "k"]));
        }
    }

    for (n, (container, sub, rest)) in SUBCOMMAND_KEY.iter().enumerate() {
        let odd = ODD_KEYS[n % ODD_KEYS.len()];
        add(join(&[container, sub, "k", rest]));
        add(join(&[&container.to_uppercase(), &sub.to_uppercase(), "k", rest]));
        add(join(&[container, &sub.to_uppercase(), odd, rest]));
        add(join(&[container, sub, "k", rest, "extra"]));
        add(join(&[container, sub]));
    }

    for (n, (name, tail)) in KEY_LIST.iter().enumerate() {
        let odd = ODD_KEYS[n % ODD_KEYS.len()];
        add(join(&[name, "a", tail]));
        add(join(&[&name.to_uppercase(), "a b c", tail]));
        add(join(&[name, odd, "b", odd, tail]));
        add(join(&[name, tail]));
    }

    for (n, name) in STORE_LIST.iter().enumerate() {
        let odd = ODD_KEYS[n % ODD_KEYS.len()];
        // For the numkeys ones these are syntax-error shapes (the sources are no count).
        add(join(&[name, "d", "a"]));
        add(join(&[name, "d", "a", "b"]));
        add(join(&[name, odd, "1", odd]));
        add(join(&[name, "d"]));
    }

    for (name, before, after) in NUMKEYS {
        let upper = name.to_uppercase();
        let shapes: &[&[&str]] = &[
            &[name, before, "1", "a", after],
            &[&upper, before, "2", "a", "b", after],
            &[name, before, "3", "a", "b", "c"],
            &[name, before, "2", "a"],
            &[name, before, "0", after],
            &[name, before, "-1", "a", after],
            &[name, before, "x", "a", after],
            &[name, before, "1x", "a", after],
            &[name, before, "01", "a", after],
            &[name, before, "1", "\"\"", after],
            &[name, before, "2", "\\xff", "a\\x00b", after],
            &[name, before],
        ];
        for shape in shapes {
            add(join(shape));
        }
    }

    lines
}

/// Joins the non-empty parts with single spaces.
fn join(parts: &[&str]) -> String {
    parts.iter().filter(|part| !part.is_empty()).copied().collect::<Vec<_>>().join(" ")
}

/// Splits a line on single spaces; `""` is an empty argument, `\xHH` any byte.
pub fn parse(line: &str) -> Line {
    line.split(' ').map(unescape).collect()
}

fn unescape(token: &str) -> Vec<u8> {
    if token == "\"\"" {
        return Vec::new();
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = token.get(i + 2..i + 4).expect("\\x needs two hex digits");
            out.push(u8::from_str_radix(hex, 16).expect("\\x needs two hex digits"));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}
