//! How `audit verify` reads a file: whole lines, one at a time and bounded, a torn last line
//! told apart; each line's fields as JSON; and the small vocabulary its messages are made of.

use std::io::{self, BufRead};

use serde_json::{Map, Value};

use super::Problem;

/// Longest line accepted (the writer's lines are far shorter: keys are capped at 16 KiB).
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// A JSON line's fields.
pub(super) type Fields = Map<String, Value>;

pub(super) fn text<'f>(fields: &'f Fields, name: &str) -> Option<&'f str> {
    fields.get(name).and_then(Value::as_str)
}

pub(super) fn bad(field: &'static str, expected: &'static str) -> Problem {
    Problem::BadField { field, expected }
}

/// A value from the file, for a one-line message: escaped and at most 100 characters.
pub(super) fn clip(value: &str) -> String {
    let escaped: String = value.escape_debug().collect();
    match escaped.char_indices().nth(100) {
        Some((at, _)) => format!("{}...", &escaped[..at]),
        None => escaped,
    }
}

/// Why a line could not be read.
pub(super) enum ReadError {
    Io(io::Error),
    TooLong,
}

/// The problem of a file that cannot be opened or read (`cannot read: …`).
pub(super) fn unreadable(error: io::Error) -> Problem {
    Problem::Io(format!("cannot read: {error}"))
}

impl ReadError {
    /// The problem it is, in the words of a file being verified.
    pub(super) fn problem(self) -> Problem {
        match self {
            Self::Io(error) => unreadable(error),
            Self::TooLong => Problem::LineTooLong { max: MAX_LINE_BYTES },
        }
    }
}

/// Reads the next line into `buffer` (without its `\n`): `None` at the end of the file,
/// `Some(false)` for a last line without `\n` (torn).
pub(super) fn read_line(
    reader: &mut impl BufRead,
    buffer: &mut Vec<u8>,
) -> Result<Option<bool>, ReadError> {
    buffer.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(ReadError::Io(error)),
        };
        if available.is_empty() {
            return Ok((!buffer.is_empty()).then_some(false));
        }
        let (take, done) = match memchr::memchr(b'\n', available) {
            Some(at) => (at, true),
            None => (available.len(), false),
        };
        if buffer.len() + take > MAX_LINE_BYTES {
            return Err(ReadError::TooLong);
        }
        buffer.extend_from_slice(&available[..take]);
        reader.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Some(true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    #[test]
    fn lines_are_read_whole_and_torn_ones_flagged() {
        let data = b"one\n\ntwo\nthree";
        let mut reader = BufReader::with_capacity(2, &data[..]);
        let mut buffer = Vec::new();
        let mut lines = Vec::new();
        while let Ok(Some(terminated)) = read_line(&mut reader, &mut buffer) {
            lines.push((String::from_utf8(buffer.clone()).unwrap(), terminated));
        }
        let expected = [("one", true), ("", true), ("two", true), ("three", false)];
        let expected: Vec<(String, bool)> =
            expected.iter().map(|(text, terminated)| ((*text).to_owned(), *terminated)).collect();
        assert_eq!(lines, expected);
    }

    #[test]
    fn clip_keeps_messages_on_one_line() {
        assert_eq!(clip("a\nb"), "a\\nb");
        assert_eq!(clip(&"x".repeat(150)).len(), 103);
    }
}
