//! The set of users, and the users file that defines it (Redis ACL file syntax:
//! `user <name> <rule> ...` per line), read as `ACLLoadFromFile` reads it.

use std::collections::BTreeMap;

use crate::acl::command_ids::CommandIds;
use crate::acl::user::{has_spaces, merge_selector_tokens, User};

/// A users file that cannot be loaded: the line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct UsersFileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, in Redis's words where Redis has them; never a password.
    pub message: String,
    /// The rule names a command or category the command table does not know (a newer
    /// Redis's table may).
    pub(crate) unknown_name: bool,
}

/// What `default` is when a users file does not define it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingDefault {
    /// Redis's rule: `on nopass ~* &* +@all`.
    Open,
    /// `off` with no rights: where the proxy authenticates clients, a file that forgets
    /// `default` must not open everything to clients that never authenticate.
    Off,
}

/// Users by name, sorted by name as Redis lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Users {
    by_name: BTreeMap<Vec<u8>, User>,
}

impl Users {
    /// Parses a users file. Lines are trimmed, blank lines and comment lines (`#` first: the
    /// proxy's one addition to Redis's format, for `audit suggest-acl`'s evidence) skipped,
    /// words split on single spaces (no quoting), and every other line must be
    /// `user <name> [rules...]`. The first error
    /// stops loading; without a `default` line Redis's built-in default user is added.
    pub fn parse(text: &[u8], ids: &CommandIds) -> Result<Self, UsersFileError> {
        Self::parse_with(text, ids, MissingDefault::Open)
    }

    /// [`parse`](Self::parse), with `missing` deciding what `default` is when the file does
    /// not define it.
    pub(crate) fn parse_with(
        text: &[u8],
        ids: &CommandIds,
        missing: MissingDefault,
    ) -> Result<Self, UsersFileError> {
        let mut by_name = BTreeMap::new();
        for (index, line) in text.split(|&b| b == b'\n').enumerate() {
            let fail =
                |message: String| UsersFileError { line: index + 1, message, unknown_name: false };
            let line = trim(line, b" \t\r\n");
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            let words: Vec<Vec<u8>> = line.split(|&b| b == b' ').map(<[u8]>::to_vec).collect();
            if words.len() < 2 || words[0] != b"user" {
                return Err(fail(
                    "should start with user keyword followed by the username".to_owned(),
                ));
            }
            let name = &words[1];
            if has_spaces(name) {
                return Err(fail(format!(
                    "username '{}' contains invalid characters",
                    String::from_utf8_lossy(name)
                )));
            }
            if by_name.contains_key(name) {
                return Err(fail(format!(
                    "Duplicate user '{}' found",
                    String::from_utf8_lossy(name)
                )));
            }
            let rules = merge_selector_tokens(&words[2..])
                .map_err(|_| fail("Unmatched parenthesis in selector definition".to_owned()))?;
            let mut user = User::new(name, ids);
            // A password with a space is split into words: the words after a password rule
            // may be the rest of it, so they are never echoed.
            let mut after_password = false;
            for rule in rules {
                let rule = trim(&rule, b"\t\r\n");
                let shown = if after_password && !looks_like_a_rule(rule) {
                    "(a word after a password, not shown)".to_owned()
                } else {
                    shown_rule(rule)
                };
                after_password |= rule.iter().any(|b| matches!(b, b'>' | b'<'));
                user.apply(ids, rule).map_err(|error| UsersFileError {
                    unknown_name: error == crate::acl::RuleError::UnknownName,
                    ..fail(format!("Error in ACL rule '{shown}': {error}"))
                })?;
            }
            by_name.insert(name.clone(), user);
        }
        by_name.entry(b"default".to_vec()).or_insert_with(|| match missing {
            MissingDefault::Open => User::default_user(ids),
            MissingDefault::Off => User::new(b"default", ids),
        });
        Ok(Self { by_name })
    }

    /// The users file that defines exactly these users (`ACL SAVE`, `ACL LIST` lines).
    pub fn to_file_text(&self) -> String {
        self.by_name
            .values()
            .map(|user| {
                format!("user {} {}\n", String::from_utf8_lossy(&user.name), user.describe())
            })
            .collect()
    }

    /// Adds or replaces a user.
    pub fn insert(&mut self, user: User) {
        self.by_name.insert(user.name.clone(), user);
    }

    /// Removes a user; true when it existed.
    pub fn remove(&mut self, name: &[u8]) -> bool {
        self.by_name.remove(name).is_some()
    }

    /// A user by exact name.
    pub fn get(&self, name: &[u8]) -> Option<&User> {
        self.by_name.get(name)
    }

    /// Every user, by name.
    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.by_name.values()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when there is no user (never, once parsed: `default` always exists).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// True for a token with a rule's shape (a prefix such as `~`, `+`, `#`, or a keyword):
/// after a password rule, anything else may be the rest of a password that had a space.
fn looks_like_a_rule(token: &[u8]) -> bool {
    const KEYWORDS: &[&str] = &[
        "on",
        "off",
        "nopass",
        "resetpass",
        "reset",
        "allkeys",
        "resetkeys",
        "allchannels",
        "resetchannels",
        "allcommands",
        "nocommands",
        "clearselectors",
        "sanitize-payload",
        "skip-sanitize-payload",
    ];
    matches!(
        token.first(),
        Some(b'~' | b'%' | b'&' | b'+' | b'-' | b'>' | b'<' | b'#' | b'!' | b'(')
    ) || KEYWORDS.iter().any(|word| token.eq_ignore_ascii_case(word.as_bytes()))
}

/// A rule as an error message may show it: password rules are never echoed.
pub(crate) fn shown_rule(rule: &[u8]) -> String {
    if rule.iter().any(|b| matches!(b, b'>' | b'<')) {
        "(password rule, not shown)".to_owned()
    } else {
        String::from_utf8_lossy(rule).into_owned()
    }
}

fn trim<'a>(bytes: &'a [u8], set: &[u8]) -> &'a [u8] {
    let start = bytes.iter().position(|b| !set.contains(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !set.contains(b)).map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandTable;

    fn ids() -> CommandIds {
        CommandIds::new(&CommandTable::embedded())
    }

    #[test]
    fn lines_users_and_the_default_user() {
        let ids = ids();
        let text = b"\n  user alice on >secret ~app:* &chan:* -@all +@read +set\r\nuser bob off\n";
        let users = Users::parse(text, &ids).unwrap();
        assert_eq!(users.len(), 3, "alice, bob and the built-in default");
        assert!(!users.is_empty());
        let alice = users.get(b"alice").unwrap();
        assert!(alice.enabled && alice.accepts(b"secret") && !alice.accepts(b"wrong"));
        assert!(users.get(b"default").unwrap().nopass);
        assert!(!users.get(b"bob").unwrap().accepts(b""), "off users never authenticate");
        let closed = Users::parse_with(b"user alice on >a", &ids, MissingDefault::Off).unwrap();
        let default = closed.get(b"default").unwrap();
        assert!(!default.enabled && !default.nopass && !default.root().all_commands);
    }

    #[test]
    fn errors_name_the_line_and_never_a_password() {
        let ids = ids();
        let error = |text: &str| Users::parse(text.as_bytes(), &ids).unwrap_err().to_string();
        assert_eq!(
            error("user a on\nusers b on\n"),
            "line 2: should start with user keyword followed by the username"
        );
        // Comment lines are the proxy's one addition to Redis's format.
        assert_eq!(Users::parse(b"# evidence\nuser a on\n  # more\n", &ids).unwrap().len(), 2);
        assert_eq!(
            error("user a +nosuchcommand"),
            "line 1: Error in ACL rule '+nosuchcommand': Unknown command or category name in ACL"
        );
        assert_eq!(error("user a on\nuser a off"), "line 2: Duplicate user 'a' found");
        assert_eq!(
            error("user"),
            "line 1: should start with user keyword followed by the username"
        );
        assert_eq!(Users::parse(b"user a", &ids).unwrap().len(), 2, "a user with no rules");
        assert_eq!(error("user a on foo"), "line 1: Error in ACL rule 'foo': Syntax error");
        // Only an unknown command or category is `unknown_name` (the config check lets such
        // files through when the table is older than Redis).
        let unknown = Users::parse(b"user a +nosuchcommand", &ids).unwrap_err();
        assert!(unknown.unknown_name);
        assert!(!Users::parse(b"user a on foo", &ids).unwrap_err().unknown_name);
        assert_eq!(
            error("user a (~x +get"),
            "line 1: Unmatched parenthesis in selector definition"
        );
        assert_eq!(error("user a on (\"\")"), "line 1: Error in ACL rule '(\"\")': Syntax error");
        assert_eq!(
            error("user a on (~x \"\")"),
            "line 1: Error in ACL rule '(~x \"\")': Syntax error"
        );
        assert_eq!(
            error("user a on +get|x\t+@all"),
            "line 1: Error in ACL rule '+get|x\t+@all': Syntax error",
            "a first-arg rule with a space would read as more rules once saved"
        );
        assert_eq!(
            error("user a on (~k))"),
            "line 1: Error in ACL rule '(~k))': A rule inside a selector may not end with ')': ACL SAVE could not write it back",
            "Redis 7.2 accepts it and saves `(~k) resetchannels -@all)`, a file it cannot load"
        );
        assert_eq!(
            error("user a on (~k) (&c))"),
            "line 1: Error in ACL rule '(&c))': A rule inside a selector may not end with ')': ACL SAVE could not write it back"
        );
        assert_eq!(
            error("user a >correct +nosuchcommand"),
            "line 1: Error in ACL rule '+nosuchcommand': Unknown command or category name in ACL",
            "after a password, a word shaped like a rule is shown"
        );
        let message = error("user a on >correct horse ~k");
        assert!(!message.contains("horse"), "{message}");
        let message = error("user a <hunter2");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(
            message.ends_with("The password you are trying to remove from the user does not exist")
        );
    }

    #[test]
    fn rules_replace_earlier_ones_and_patterns_are_checked() {
        let ids = ids();
        let describe = |text: &str| {
            let users = Users::parse(format!("user u on nopass {text}\n").as_bytes(), &ids);
            users.map(|users| users.get(b"u").unwrap().root().describe())
        };
        // A command's rule takes its subcommands' and first arguments' rules away (Redis's
        // `ACLRemoveCommandRule`); a subcommand's does not take the command's.
        assert_eq!(describe("+config|get -config").unwrap(), "resetchannels -@all -config");
        assert_eq!(describe("+select|0 +select").unwrap(), "resetchannels -@all +select");
        assert_eq!(
            describe("-config +config|get").unwrap(),
            "resetchannels -@all -config +config|get"
        );
        assert_eq!(describe("+@read -@read").unwrap(), "resetchannels -@all -@read");
        // A channel or key pattern given twice is kept once.
        assert_eq!(describe("&a &b &a ~k ~k").unwrap(), "~k resetchannels &a &b -@all");
        // `%` takes R and W once each, then `~`.
        for bad in ["%RR~x", "%WW~x", "%RX~x", "%~x", "%"] {
            assert!(describe(bad).is_err(), "{bad}");
        }
        // As Redis 7.2.6: no `~`, the empty pattern.
        assert_eq!(describe("%R").unwrap(), "%R~ resetchannels -@all");
        assert_eq!(describe("%rw~x %R~y").unwrap(), "~x %R~y resetchannels -@all");
        assert_eq!(describe("%R~x %R~x").unwrap(), "%R~x resetchannels -@all");
        assert_eq!(describe("%R~x %W~x").unwrap(), "~x resetchannels -@all");
    }

    #[test]
    fn star_read_then_star_write_is_saved_as_a_file_that_loads() {
        let ids = ids();
        // As in Redis 7.2.6, neither makes `allkeys`: a pattern may follow.
        let text = b"user u on nopass %R~* %W~* ~k +get\nuser v on nopass %RW~* ~k\n";
        let users = Users::parse(text, &ids).unwrap();
        let root = users.get(b"u").unwrap().root();
        assert!(!root.all_keys);
        assert_eq!(users.get(b"v").unwrap().root().keys, root.keys);
        let described = users.to_file_text();
        assert!(described.contains("user u on nopass %RW~* ~k resetchannels"), "{described}");
        let again = Users::parse(described.as_bytes(), &ids).unwrap();
        assert_eq!(again.get(b"u").unwrap().root().keys, root.keys);
        assert_eq!(again.to_file_text(), described);
    }

    #[test]
    fn a_selectors_pattern_with_a_quote_is_described_to_read_back_as_itself() {
        let ids = ids();
        let text = b"user u on nopass &r'oot (&\"'>&\" \"~k\\\"x\" +get)\n";
        let users = Users::parse(text, &ids).unwrap();
        let selector = &users.get(b"u").unwrap().selectors[1];
        assert_eq!(selector.channels, [b"'>&".to_vec()]);
        assert_eq!(selector.keys[0].pattern, b"k\"x");
        let described = users.to_file_text();
        assert!(described.contains("&r'oot"), "the root's as it is: {described}");
        assert!(described.contains(r#"("~k\"x" resetchannels "&'>&" -@all +get)"#), "{described}");
        let again = Users::parse(described.as_bytes(), &ids).unwrap();
        assert_eq!(again.get(b"u").unwrap().selectors, users.get(b"u").unwrap().selectors);
        assert_eq!(again.to_file_text(), described);
    }

    #[test]
    fn described_users_parse_back_to_the_same_permissions() {
        let ids = ids();
        let text = b"user a on >pw #2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b ~k* %R~r %W~w %R~x %W~x &c* -@all +@read -get +select|0 +config|get +get (~s* +@stream -xadd) (&* +publish)\n\
                     user b off nopass skip-sanitize-payload allkeys allchannels +@all -@dangerous +config|get -flushall +flushall\n\
                     user c on resetpass -@all +@all -@write +set +set\n";
        let users = Users::parse(text, &ids).unwrap();
        let described = users.to_file_text();
        assert!(described.contains("user a on #"), "flags then hashes: {described}");
        assert!(
            described.contains("~k* %R~r %W~w ~x resetchannels &c* -@all +@read +select|0 +config|get +get (~s* resetchannels -@all +@stream -xadd) (&* -@all +publish)"),
            "{described}"
        );
        assert!(
            described.contains("user b off nopass skip-sanitize-payload ~* &* +@all -@dangerous +config|get +flushall\n"),
            "a repeated rule moves to the end: {described}"
        );
        assert!(described.contains("user c on resetchannels +@all -@write +set\n"), "{described}");
        let again = Users::parse(described.as_bytes(), &ids).unwrap();
        assert_eq!(again.len(), users.len());
        for (one, two) in users.iter().zip(again.iter()) {
            assert_eq!(one.name, two.name);
            assert_eq!(
                (one.enabled, one.nopass, &one.password_hashes),
                (two.enabled, two.nopass, &two.password_hashes)
            );
            assert_eq!(one.selectors.len(), two.selectors.len());
            for (x, y) in one.selectors.iter().zip(&two.selectors) {
                assert_eq!(
                    (&x.allowed, &x.first_args, &x.keys, &x.channels),
                    (&y.allowed, &y.first_args, &y.keys, &y.channels)
                );
                assert_eq!(
                    (x.all_keys, x.all_channels, x.future_commands),
                    (y.all_keys, y.all_channels, y.future_commands)
                );
            }
        }
    }
}
