//! Read / write / non_read_write, the `SQLType` of Alibaba Tair's audit records: from the
//! command's `write` and `readonly` flags, with Redis's dynamic cases (EXEC, scripts).

use crate::command::table::CommandInfo;

/// What a command does to data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Reads only (`readonly` flag).
    Read,
    /// May write (`write` flag).
    Write,
    /// Neither: connection, admin, pub/sub, transaction and scripting control.
    NonReadWrite,
}

impl Class {
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

    /// The class of a transaction that ran commands of `self` and `other`: write if any
    /// wrote, else read if any read.
    pub fn union(self, other: Self) -> Self {
        match (self, other) {
            (Self::Write, _) | (_, Self::Write) => Self::Write,
            (Self::Read, _) | (_, Self::Read) => Self::Read,
            _ => Self::NonReadWrite,
        }
    }

    /// The class a script declares in its shebang (`#!lua flags=no-writes,...`): `Read` with
    /// `no-writes`, else `Write` (Redis then treats it as writing); `None` without a shebang,
    /// where the command's static flags apply.
    pub fn of_script(body: &[u8]) -> Option<Self> {
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
    fn unions() {
        assert_eq!(Class::Read.union(Class::NonReadWrite), Class::Read);
        assert_eq!(Class::Read.union(Class::Write), Class::Write);
        assert_eq!(Class::NonReadWrite.union(Class::NonReadWrite), Class::NonReadWrite);
    }
}
