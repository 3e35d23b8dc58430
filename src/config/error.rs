//! What is wrong with a configuration: [`ConfigError`] (the one line shown to the operator),
//! [`Invalid`] (one key of a section and its [`Problem`]), and the parse error's file, line and
//! key.

/// A configuration that cannot be used. Its `Display` is the one line shown to the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (a value outside a closed set
    /// among them).
    #[error("{file}:{line}: {key}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// 1-based line of the problem.
        line: usize,
        /// Dotted key at that line.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("{source_name}: {invalid}")]
    Invalid {
        /// The file, or the command-line flag the value came from.
        source_name: String,
        /// The key and what is wrong with it.
        invalid: Invalid,
    },
}

/// One value a section's validator refuses: its dotted key and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct Invalid {
    /// Dotted key (`proxy.listen`), or the flag a value outside the file came from.
    pub key: &'static str,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a value.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A count, size or duration that must not be 0.
    #[error("must be at least 1")]
    Zero,
    /// Not `IP:PORT`.
    #[error("\"{0}\" is not an address of the form IP:PORT")]
    NotIpPort(String),
    /// Not `HOST:PORT`.
    #[error("\"{0}\" is not an address of the form HOST:PORT")]
    NotHostPort(String),
    /// Set without the key it goes with.
    #[error("is needed with {0}")]
    NeededWith(&'static str),
    /// A key file cannot be read.
    #[error("cannot read \"{path}\": {error}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// Any other problem, said in full.
    #[error("{0}")]
    Other(String),
}

impl Invalid {
    /// `key` has `problem`.
    pub fn new(key: &'static str, problem: Problem) -> Self {
        Self { key, problem }
    }

    /// `key` is wrong as `message` says.
    pub fn other(key: &'static str, message: impl Into<String>) -> Self {
        Self::new(key, Problem::Other(message.into()))
    }
}

/// `value`, unless it is 0.
pub(super) fn positive(key: &'static str, value: u64) -> Result<u64, Invalid> {
    if value == 0 {
        return Err(Invalid::new(key, Problem::Zero));
    }
    Ok(value)
}

/// The parse error of `text` (from `file`) as one line naming its line and key. A type error
/// quotes the value: never a secret's. Serde's "unknown variant `x`, expected one of `a`, `b`"
/// is said as the validators say it: `"x" is not one of "a", "b"`.
pub(super) fn parse_error(text: &str, file: &str, error: &toml::de::Error) -> ConfigError {
    let offset = error.span().map_or(0, |span| span.start);
    let (line, key) = locate_key(text, offset);
    let secret = ["password", "secret", "api_key"].iter().any(|word| key.contains(word));
    let message = if secret {
        "invalid value (not shown: it holds a secret); expected a string".to_owned()
    } else {
        let message = error.message().replace('\n', " ");
        unknown_variant(&message).unwrap_or(message)
    };
    ConfigError::Parse { file: file.to_owned(), line, key, message }
}

/// Serde's message for a value outside a closed set, reworded; `None` for any other message.
fn unknown_variant(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown variant `")?;
    let (value, expected) = rest.split_once("`, expected ")?;
    let names: Vec<String> = match expected.strip_prefix("one of ") {
        Some(list) => list.split(", ").collect::<Vec<_>>(),
        None => expected.split(" or ").collect(),
    }
    .into_iter()
    .map(|name| format!("\"{}\"", name.trim_matches('`')))
    .collect();
    Some(match names.as_slice() {
        [one] => format!("\"{value}\" is not {one}"),
        _ => format!("\"{value}\" is not one of {}", names.join(", ")),
    })
}

/// The 1-based line of `offset` in `text` and the dotted key written there
/// (`[section]` or `[[array]]` header plus the key before `=`).
fn locate_key(text: &str, offset: usize) -> (usize, String) {
    let offset = offset.min(text.len());
    let line_number = text[..offset].matches('\n').count() + 1;
    let mut section = String::new();
    let mut key = String::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if index + 1 > line_number {
            break;
        }
        if line.starts_with('[') {
            section = line.trim_start_matches('[').trim_end_matches(']').trim().to_owned();
            key.clear();
        } else if index + 1 == line_number {
            key = line.split('=').next().unwrap_or("").trim().to_owned();
        }
    }
    let dotted = match (section.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => section,
        (false, false) => format!("{section}.{key}"),
    };
    (line_number, if dotted.is_empty() { "(file)".to_owned() } else { dotted })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_variants_are_reworded() {
        assert_eq!(
            unknown_variant("unknown variant `sync`, expected one of `async`, `write`, `fsync`"),
            Some("\"sync\" is not one of \"async\", \"write\", \"fsync\"".to_owned())
        );
        assert_eq!(
            unknown_variant("unknown variant `x`, expected `a` or `b`").as_deref(),
            Some("\"x\" is not one of \"a\", \"b\"")
        );
        assert_eq!(unknown_variant("invalid type: integer"), None);
    }

    #[test]
    fn keys_are_found_under_array_headers() {
        let text = "[[audit.sinks]]\ntype = \"kafka\"\n";
        assert_eq!(locate_key(text, text.find("\"kafka").unwrap()), (2, "audit.sinks.type".into()));
    }
}
