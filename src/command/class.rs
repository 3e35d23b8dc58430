//! Read / write / non_read_write, the `SQLType` of Alibaba Tair's audit records: from the
//! command's `write` and `readonly` flags, with Redis's dynamic cases (EXEC, scripts).

use crate::command::table::CommandInfo;

/// What a command does to data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Reads only (`readonly` flag).
    Read,
    /// May write (`write` flag).
    Write,
    /// Neither: connection, admin, pub/sub, transaction and scripting control.
    NonReadWrite,
}

impl Class {
    /// Every class, in the order labels and lists show them.
    pub(crate) const ALL: [Self; 3] = [Self::Read, Self::Write, Self::NonReadWrite];

    /// The name given to the class of a command the table does not know (`None`).
    pub(crate) const UNKNOWN: &'static str = "unknown";

    /// The command's static class.
    pub fn of(command: &CommandInfo) -> Self {
        if command.is_write {
            Self::Write
        } else if command.is_readonly {
            Self::Read
        } else {
            Self::NonReadWrite
        }
    }

    /// Stable lower-case name (`read`, `write`, `non_read_write`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::NonReadWrite => "non_read_write",
        }
    }

    /// The class named `name` (one of [`Class::as_str`]'s names).
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|class| class.as_str() == name)
    }

    /// The name of a class or, for `None`, [`Class::UNKNOWN`].
    pub(crate) fn name_of(class: Option<Self>) -> &'static str {
        class.map_or(Self::UNKNOWN, Self::as_str)
    }

    /// Every class and then `None` (unknown): the four values a record's class takes.
    pub(crate) const ALL_OR_UNKNOWN: [Option<Self>; 4] =
        [Some(Self::Read), Some(Self::Write), Some(Self::NonReadWrite), None];

    /// The position of `class` in [`Class::ALL_OR_UNKNOWN`].
    pub(crate) fn index_of(class: Option<Self>) -> usize {
        class.map_or(Self::ALL.len(), |class| class as usize)
    }

    /// The class of a transaction that ran commands of `self` and `other`: write if any
    /// wrote, else read if any read.
    pub(crate) fn union(self, other: Self) -> Self {
        match (self, other) {
            (Self::Write, _) | (_, Self::Write) => Self::Write,
            (Self::Read, _) | (_, Self::Read) => Self::Read,
            _ => Self::NonReadWrite,
        }
    }

    /// The class a script declares in its shebang (`#!lua flags=no-writes,...`): `Read` with
    /// `no-writes`, else `Write` (Redis then treats it as writing); `None` without a shebang,
    /// where the command's static flags apply.
    pub(crate) fn of_script(body: &[u8]) -> Option<Self> {
        let first_line = body.strip_prefix(b"#!")?;
        let end = memchr::memchr(b'\n', first_line).unwrap_or(first_line.len());
        let line = &first_line[..end];
        let no_writes = line.split(|&b| b == b' ').any(|word| {
            word.strip_prefix(b"flags=")
                .is_some_and(|flags| flags.split(|&b| b == b',').any(|f| f == b"no-writes"))
        });
        Some(if no_writes { Self::Read } else { Self::Write })
    }
}

/// A set of classes, [`Class::UNKNOWN`] (`None`) among them: `audit.filters.classes`. Written
/// as a list of names; a name given twice counts once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassSet(u8);

impl ClassSet {
    /// Every class and unknown.
    pub(crate) const ALL: Self = Self(0b1111);

    /// No class at all.
    pub(crate) const EMPTY: Self = Self(0);

    /// True when `class` (`None`: unknown) is in the set.
    pub fn contains(self, class: Option<Class>) -> bool {
        self.0 & (1 << Class::index_of(class)) != 0
    }

    /// The set with `class` added.
    #[must_use]
    pub fn with(self, class: Option<Class>) -> Self {
        Self(self.0 | 1 << Class::index_of(class))
    }

    /// The members, in [`Class::ALL_OR_UNKNOWN`] order.
    pub fn iter(self) -> impl Iterator<Item = Option<Class>> {
        Class::ALL_OR_UNKNOWN.into_iter().filter(move |class| self.contains(*class))
    }
}

impl Default for ClassSet {
    fn default() -> Self {
        Self::ALL
    }
}

impl serde::Serialize for ClassSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(Class::name_of))
    }
}

impl<'de> serde::Deserialize<'de> for ClassSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        names.iter().try_fold(Self::EMPTY, |set, name| {
            let class = Class::ALL_OR_UNKNOWN.into_iter().find(|c| Class::name_of(*c) == name);
            class.map(|class| set.with(class)).ok_or_else(|| {
                // Serde's own wording for an unknown enum variant.
                let expected: Vec<String> = Class::ALL_OR_UNKNOWN
                    .into_iter()
                    .map(|class| format!("`{}`", Class::name_of(class)))
                    .collect();
                serde::de::Error::custom(format_args!(
                    "unknown variant `{name}`, expected one of {}",
                    expected.join(", ")
                ))
            })
        })
    }
}

/// The functions a `FUNCTION LOAD` library registers, each with the class Redis gives an
/// FCALL of it: `Read` when registered with the `no-writes` flag, else `Write`.
///
/// Reads both forms Redis accepts: `redis.register_function('name', callback)` and
/// `redis.register_function{function_name='name', callback=..., flags={'no-writes'}}`. The
/// library is Lua, not parsed in full: each call's arguments are looked for up to the next
/// `register_function`.
pub(crate) fn functions_of_library(code: &[u8]) -> Vec<(Vec<u8>, Class)> {
    const CALL: &[u8] = b"register_function";
    let starts: Vec<usize> =
        memchr::memmem::find_iter(code, CALL).map(|at| at + CALL.len()).collect();
    let mut functions = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(code.len(), |next| next - CALL.len());
        let call = &code[start..end];
        let call = &call[call.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
        let (name, no_writes) = match call.first() {
            Some(b'(') => (first_string(&call[1..]), false),
            Some(b'{') => {
                let name = memchr::memmem::find(call, b"function_name")
                    .and_then(|at| first_string(after_equals(&call[at + 13..])?));
                let no_writes = memchr::memmem::find(call, b"flags").is_some_and(|at| {
                    let rest = &call[at + 5..];
                    let rest = after_equals(rest).unwrap_or(b"");
                    let table = rest.strip_prefix(b"{").unwrap_or(b"");
                    let close = memchr::memchr(b'}', table).unwrap_or(0);
                    memchr::memmem::find(&table[..close], b"no-writes").is_some()
                });
                (name, no_writes)
            }
            _ => (None, false),
        };
        if let Some(name) = name {
            functions.push((name.to_vec(), if no_writes { Class::Read } else { Class::Write }));
        }
    }
    functions
}

/// What follows `=` (spaces skipped), if the next thing is `=`.
fn after_equals(text: &[u8]) -> Option<&[u8]> {
    let text = &text[text.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let text = text.strip_prefix(b"=")?;
    Some(&text[text.iter().take_while(|b| b.is_ascii_whitespace()).count()..])
}

/// The contents of a Lua string literal at the start of `text` (spaces skipped).
fn first_string(text: &[u8]) -> Option<&[u8]> {
    let text = &text[text.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let quote = *text.first().filter(|q| matches!(q, b'\'' | b'"'))?;
    let body = &text[1..];
    Some(&body[..memchr::memchr(quote, body)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_shebangs() {
        assert_eq!(Class::of_script(b"return 1"), None);
        assert_eq!(Class::of_script(b"#!lua\nreturn 1"), Some(Class::Write));
        assert_eq!(
            Class::of_script(b"#!lua flags=no-writes,allow-stale\nreturn 1"),
            Some(Class::Read)
        );
        assert_eq!(Class::of_script(b"#!lua flags=allow-oom"), Some(Class::Write));
    }

    #[test]
    fn function_libraries() {
        let code = b"#!lua name=lib\n\
            redis.register_function('plain', function(keys, args) return 1 end)\n\
            redis.register_function{function_name='reader', callback=function(k, a) return 1 end, flags={ 'no-writes', 'allow-stale' }}\n\
            redis.register_function{ function_name = \"writer\", callback = function(k, a) return {} end }\n";
        assert_eq!(
            functions_of_library(code),
            [
                (b"plain".to_vec(), Class::Write),
                (b"reader".to_vec(), Class::Read),
                (b"writer".to_vec(), Class::Write)
            ]
        );
        assert!(functions_of_library(b"return 1").is_empty());
    }

    #[test]
    fn unions() {
        assert_eq!(Class::Read.union(Class::NonReadWrite), Class::Read);
        assert_eq!(Class::Read.union(Class::Write), Class::Write);
        assert_eq!(Class::NonReadWrite.union(Class::NonReadWrite), Class::NonReadWrite);
    }
}
