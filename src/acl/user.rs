//! An ACL user and its selectors, changed by Redis's rule tokens (`on`, `>pw`, `~k*`,
//! `+@read`, `(...)`, ...) with Redis's semantics and Redis's error for each bad token.

use crate::acl::command_ids::CommandIds;
use crate::resp::args::split_args;

/// Why a rule token was refused; each displays as Redis's message for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// ENOENT.
    #[error("Unknown command or category name in ACL")]
    UnknownName,
    /// EINVAL.
    #[error("Syntax error")]
    Syntax,
    /// EEXIST.
    #[error(
        "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns"
    )]
    KeyAfterAllKeys,
    /// EISDIR.
    #[error(
        "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels"
    )]
    ChannelAfterAllChannels,
    /// ENODEV.
    #[error("The password you are trying to remove from the user does not exist")]
    NoSuchPassword,
    /// EBADMSG.
    #[error(
        "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters"
    )]
    BadHash,
    /// ECHILD.
    #[error("Allowing first-arg of a subcommand is not supported")]
    FirstArgOfSubcommand,
    /// The proxy's own refusal, where Redis 7.2 accepts the rule: a rule inside a selector
    /// that ends in `)` (`(~k))`, pattern `k)`) is written by `ACL SAVE` as a selector that
    /// ends early, so the users file would not load again (Redis itself then fails with
    /// "Unknown command or category name in ACL" on its next `ACL LOAD`).
    #[error("A rule inside a selector may not end with ')': ACL SAVE could not write it back")]
    SelectorRuleEndsWithParenthesis,
}

/// Read permission of a key pattern (`%R~`).
pub(crate) const KEY_READ: u8 = 1;
/// Write permission of a key pattern (`%W~`).
pub(crate) const KEY_WRITE: u8 = 2;

/// A key pattern and what it allows (`KEY_READ`, `KEY_WRITE` or both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    /// Redis glob.
    pub pattern: Vec<u8>,
    /// `KEY_READ | KEY_WRITE` bits.
    pub permissions: u8,
}

impl KeyPattern {
    /// `~p`, `%R~p` or `%W~p`.
    fn describe(&self) -> String {
        // `*` read and write that is not `allkeys` (made by `%RW~*`, or `%R~*` then `%W~*`;
        // `~*` is `allkeys`): Redis describes it `~*`, so with a later pattern its ACL SAVE
        // writes a file ACL LOAD refuses ("Adding a pattern after the * pattern", Redis 7.2.6
        // checked). Described `%RW~*`, the file loads back to the same patterns.
        if self.pattern == b"*" && self.permissions == KEY_READ | KEY_WRITE {
            return "%RW~*".to_owned();
        }
        let prefix = match self.permissions {
            KEY_READ => "%R~",
            KEY_WRITE => "%W~",
            _ => "~",
        };
        format!("{prefix}{}", String::from_utf8_lossy(&self.pattern))
    }
}

/// A rule of a `( ... )` selector as written in a description. The body is split with
/// `sdssplitargs` when read back, where a quote inside a word opens a quoted part: a pattern
/// holding `'` or `"` (a selector accepts `"&'x"`) is written double-quoted, its `"` and `\`
/// escaped, so that it reads back as itself. Redis writes it bare, and its `ACL SAVE` file
/// then loads without the pattern (found by the `acl_rules` fuzz target).
fn quoted_in_selector(token: &str) -> String {
    if !token.contains(['\'', '"']) {
        return token.to_owned();
    }
    let mut quoted = String::with_capacity(token.len() + 2);
    quoted.push('"');
    for c in token.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// One selector: the root one (rules outside parentheses) or a `( ... )` one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// `allkeys` / `~*`.
    pub all_keys: bool,
    /// `allchannels` / `&*`.
    pub all_channels: bool,
    /// `allcommands` / `+@all`, until a command is taken away.
    pub all_commands: bool,
    /// Set by `+@all` and kept until `-@all`: the user may run commands added later.
    pub future_commands: bool,
    /// One bit per command id.
    pub allowed: Vec<u64>,
    /// First arguments allowed for a command whose bit is not set (`+select|0`), by id.
    pub first_args: Vec<(u16, Vec<Vec<u8>>)>,
    /// Key patterns in the order added.
    pub keys: Vec<KeyPattern>,
    /// Channel patterns in the order added.
    pub channels: Vec<Vec<u8>>,
    /// Command and category rules as given, lower-cased, a repeated one moved to the end
    /// (Redis 7.2's `ACLUpdateCommandRules`), for describing the selector.
    pub(crate) command_rules: Vec<String>,
}

impl Selector {
    /// An empty selector: no commands, keys or channels (`acl-pubsub-default` is
    /// `resetchannels` since Redis 7.0).
    pub fn new(ids: &CommandIds) -> Self {
        Self {
            all_keys: false,
            all_channels: false,
            all_commands: false,
            future_commands: false,
            allowed: vec![0; ids.words()],
            first_args: Vec::new(),
            keys: Vec::new(),
            channels: Vec::new(),
            command_rules: Vec::new(),
        }
    }

    /// True when the command bit is set.
    pub(crate) fn allows_id(&self, id: u16) -> bool {
        let id = usize::from(id);
        self.allowed.get(id / 64).is_some_and(|word| word & (1 << (id % 64)) != 0)
    }

    fn set_bit(&mut self, id: u16, allow: bool) {
        let id = usize::from(id);
        if let Some(word) = self.allowed.get_mut(id / 64) {
            if allow {
                *word |= 1 << (id % 64);
            } else {
                *word &= !(1 << (id % 64));
                self.all_commands = false;
            }
        }
    }

    /// `ACLChangeSelectorPerm`: a container takes its subcommands with it.
    fn change_permission(&mut self, ids: &CommandIds, id: u16, allow: bool) {
        self.set_bit(id, allow);
        self.first_args.retain(|(command, _)| *command != id);
        for &child in ids.children(id) {
            self.set_bit(child, allow);
        }
    }

    /// Applies one selector token (`ACLSetSelector`).
    pub fn apply(&mut self, ids: &CommandIds, op: &[u8]) -> Result<(), RuleError> {
        // An empty token inside `( ... )` (a quoted `""`): Redis answers EINVAL.
        let Some(&first) = op.first() else { return Err(RuleError::Syntax) };
        let is = |word: &str| op.eq_ignore_ascii_case(word.as_bytes());
        if is("allkeys") || is("~*") {
            self.all_keys = true;
            self.keys.clear();
        } else if is("resetkeys") {
            self.all_keys = false;
            self.keys.clear();
        } else if is("allchannels") || is("&*") {
            self.all_channels = true;
            self.channels.clear();
        } else if is("resetchannels") {
            self.all_channels = false;
            self.channels.clear();
        } else if is("allcommands") || is("+@all") {
            self.allowed.fill(u64::MAX);
            self.all_commands = true;
            self.future_commands = true;
            self.first_args.clear();
            self.command_rules.clear();
        } else if is("nocommands") || is("-@all") {
            self.allowed.fill(0);
            self.all_commands = false;
            self.future_commands = false;
            self.first_args.clear();
            self.command_rules.clear();
        } else if first == b'~' || first == b'%' {
            self.add_key_pattern(op)?;
        } else if first == b'&' {
            if self.all_channels {
                return Err(RuleError::ChannelAfterAllChannels);
            }
            let pattern = &op[1..];
            if has_spaces(pattern) {
                return Err(RuleError::Syntax);
            }
            if !self.channels.iter().any(|c| c == pattern) {
                self.channels.push(pattern.to_vec());
            }
        } else if op.len() >= 2 && op[1] == b'@' && (first == b'+' || first == b'-') {
            let category = std::str::from_utf8(&op[2..]).map_err(|_| RuleError::UnknownName)?;
            if !ids.has_category(category) {
                return Err(RuleError::UnknownName);
            }
            let members: Vec<u16> = ids.in_category(category).collect();
            for id in members {
                self.change_permission(ids, id, first == b'+');
            }
            self.note_rule(op);
        } else if first == b'+' {
            self.allow_command(ids, &op[1..])?;
            self.note_rule(op);
        } else if first == b'-' {
            let id = ids.lookup(&op[1..]).ok_or(RuleError::UnknownName)?;
            self.change_permission(ids, id, false);
            self.note_rule(op);
        } else {
            return Err(RuleError::Syntax);
        }
        Ok(())
    }

    /// Remembers a command or category rule for describing the selector: an earlier rule for
    /// the same command or category (and, for a command, its `command|...` rules) goes.
    fn note_rule(&mut self, op: &[u8]) {
        let rule = String::from_utf8_lossy(op).to_ascii_lowercase();
        let target = rule[1..].to_owned();
        let sub_prefix = format!("{target}|");
        let is_command = !target.starts_with('@') && !target.contains('|');
        self.command_rules.retain(|existing| {
            let existing = &existing[1..];
            existing != target && !(is_command && existing.starts_with(&sub_prefix))
        });
        self.command_rules.push(rule);
    }

    /// The selector as `ACL LIST` writes it (Redis 7.2): keys, channels, then command rules.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if self.all_keys {
            parts.push("~*".to_owned());
        } else {
            parts.extend(self.keys.iter().map(KeyPattern::describe));
        }
        if self.all_channels {
            parts.push("&*".to_owned());
        } else {
            parts.push("resetchannels".to_owned());
            parts.extend(self.channels.iter().map(|c| format!("&{}", String::from_utf8_lossy(c))));
        }
        parts.push(self.describe_commands());
        parts.join(" ")
    }

    /// `+@all` or `-@all`, then the command rules in order.
    pub(crate) fn describe_commands(&self) -> String {
        let mut rules = String::from(if self.future_commands { "+@all" } else { "-@all" });
        for rule in &self.command_rules {
            rules.push(' ');
            rules.push_str(rule);
        }
        rules
    }

    /// The key patterns as `ACL GETUSER` shows them.
    pub(crate) fn describe_keys(&self) -> String {
        if self.all_keys {
            return "~*".to_owned();
        }
        self.keys.iter().map(KeyPattern::describe).collect::<Vec<_>>().join(" ")
    }

    /// The channel patterns as `ACL GETUSER` shows them.
    pub(crate) fn describe_channels(&self) -> String {
        if self.all_channels {
            return "&*".to_owned();
        }
        let channels = self.channels.iter().map(|c| format!("&{}", String::from_utf8_lossy(c)));
        channels.collect::<Vec<_>>().join(" ")
    }

    /// `~pattern` or `%R~` / `%W~` / `%RW~pattern`.
    fn add_key_pattern(&mut self, op: &[u8]) -> Result<(), RuleError> {
        if self.all_keys {
            return Err(RuleError::KeyAfterAllKeys);
        }
        let (permissions, pattern) = if op[0] == b'%' {
            let mut permissions = 0;
            let mut offset = 1;
            while offset < op.len() {
                match op[offset].to_ascii_uppercase() {
                    b'R' if permissions & KEY_READ == 0 => permissions |= KEY_READ,
                    b'W' if permissions & KEY_WRITE == 0 => permissions |= KEY_WRITE,
                    b'~' => {
                        offset += 1;
                        break;
                    }
                    _ => return Err(RuleError::Syntax),
                }
                offset += 1;
            }
            // `%~x` grants nothing and crashed ACL LIST before the CVE-2024-51741 fix.
            if permissions == 0 {
                return Err(RuleError::Syntax);
            }
            (permissions, &op[offset.min(op.len())..])
        } else {
            (KEY_READ | KEY_WRITE, &op[1..])
        };
        if has_spaces(pattern) {
            return Err(RuleError::Syntax);
        }
        match self.keys.iter_mut().find(|k| k.pattern == pattern) {
            Some(existing) => existing.permissions |= permissions,
            None => self.keys.push(KeyPattern { pattern: pattern.to_vec(), permissions }),
        }
        Ok(())
    }

    /// `+name`, `+container|sub`, or the first-argument form `+command|arg`.
    fn allow_command(&mut self, ids: &CommandIds, name: &[u8]) -> Result<(), RuleError> {
        let Some(bar) = name.iter().rposition(|&b| b == b'|') else {
            let id = ids.lookup(name).ok_or(RuleError::UnknownName)?;
            self.change_permission(ids, id, true);
            return Ok(());
        };
        let (command, first_arg) = (&name[..bar], &name[bar + 1..]);
        let id = ids.lookup(command).ok_or(RuleError::UnknownName)?;
        if ids.has_parent(id) {
            return Err(RuleError::FirstArgOfSubcommand);
        }
        // Redis takes spaces here, but a saved file then reads them as more rules
        // (`+get|x +@all` would grant everything on reload): refused.
        if first_arg.is_empty() || has_spaces(first_arg) {
            return Err(RuleError::Syntax);
        }
        if !ids.children(id).is_empty() {
            let sub = ids.lookup(name).ok_or(RuleError::UnknownName)?;
            self.change_permission(ids, sub, true);
            return Ok(());
        }
        match self.first_args.iter_mut().find(|(command, _)| *command == id) {
            Some((_, args)) => {
                if !args.iter().any(|a| a.eq_ignore_ascii_case(first_arg)) {
                    args.push(first_arg.to_vec());
                }
            }
            None => self.first_args.push((id, vec![first_arg.to_vec()])),
        }
        Ok(())
    }

    /// The first arguments allowed for `id` without its bit.
    pub(crate) fn first_args_of(&self, id: u16) -> Option<&[Vec<u8>]> {
        self.first_args.iter().find(|(command, _)| *command == id).map(|(_, args)| &args[..])
    }
}

/// `user <name> ...`: flags, password hashes and selectors (the root one first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The name, as given.
    pub name: Vec<u8>,
    /// `on` (may authenticate) or `off`.
    pub enabled: bool,
    /// `nopass`: any password works.
    pub nopass: bool,
    /// `sanitize-payload` (`Some(true)`), `skip-sanitize-payload` (`Some(false)`), or neither.
    pub(crate) sanitize_payload: Option<bool>,
    /// SHA-256 of each password, lower-case hex.
    pub password_hashes: Vec<String>,
    /// The root selector, then each `( ... )` selector in order.
    pub selectors: Vec<Selector>,
}

impl User {
    /// A new user as Redis creates one: `off`, no passwords, nothing allowed.
    pub fn new(name: &[u8], ids: &CommandIds) -> Self {
        Self {
            name: name.to_vec(),
            enabled: false,
            nopass: false,
            sanitize_payload: None,
            password_hashes: Vec::new(),
            selectors: vec![Selector::new(ids)],
        }
    }

    /// Redis's built-in default user: `on nopass ~* &* +@all`.
    pub(crate) fn default_user(ids: &CommandIds) -> Self {
        let mut user = Self::new(b"default", ids);
        for op in ["+@all", "~*", "&*", "on", "nopass"] {
            user.apply(ids, op.as_bytes()).expect("the default user's rules are valid");
        }
        user
    }

    /// The root selector.
    pub fn root(&self) -> &Selector {
        &self.selectors[0]
    }

    /// Applies one rule token (`ACLSetUser`); an empty token does nothing.
    pub fn apply(&mut self, ids: &CommandIds, op: &[u8]) -> Result<(), RuleError> {
        let Some(&first) = op.first() else { return Ok(()) };
        let is = |word: &str| op.eq_ignore_ascii_case(word.as_bytes());
        if is("on") {
            self.enabled = true;
        } else if is("off") {
            self.enabled = false;
        } else if is("skip-sanitize-payload") {
            self.sanitize_payload = Some(false);
        } else if is("sanitize-payload") {
            self.sanitize_payload = Some(true);
        } else if is("nopass") {
            self.nopass = true;
            self.password_hashes.clear();
        } else if is("resetpass") {
            self.nopass = false;
            self.password_hashes.clear();
        } else if first == b'>' || first == b'#' {
            let hash = if first == b'>' { hash_password(&op[1..]) } else { valid_hash(&op[1..])? };
            if !self.password_hashes.contains(&hash) {
                self.password_hashes.push(hash);
            }
            self.nopass = false;
        } else if first == b'<' || first == b'!' {
            let hash = if first == b'<' { hash_password(&op[1..]) } else { valid_hash(&op[1..])? };
            let at = self.password_hashes.iter().position(|h| *h == hash);
            self.password_hashes.remove(at.ok_or(RuleError::NoSuchPassword)?);
        } else if first == b'(' && op.last() == Some(&b')') {
            let mut selector = Selector::new(ids);
            let body = &op[1..op.len() - 1];
            // Redis splits the body with `sdssplitargs`; unbalanced quotes give no tokens.
            for token in split_args(body).unwrap_or_default() {
                if token.last() == Some(&b')') {
                    return Err(RuleError::SelectorRuleEndsWithParenthesis);
                }
                selector.apply(ids, &token)?;
            }
            self.selectors.push(selector);
        } else if is("clearselectors") {
            self.selectors.truncate(1);
        } else if is("reset") {
            for token in ["resetpass", "resetkeys", "resetchannels", "off", "sanitize-payload"] {
                self.apply(ids, token.as_bytes())?;
            }
            self.selectors.truncate(1);
            self.apply(ids, b"-@all")?;
        } else {
            self.selectors[0].apply(ids, op)?;
        }
        Ok(())
    }

    /// The user as `ACL LIST` and `ACL SAVE` write it after `user <name> ` (Redis 7.2): flags,
    /// password hashes, the root selector, then each other selector in parentheses.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.flag_names().into_iter().map(str::to_owned).collect();
        parts.extend(self.password_hashes.iter().map(|hash| format!("#{hash}")));
        parts.push(self.selectors[0].describe());
        for selector in &self.selectors[1..] {
            let tokens: Vec<String> =
                selector.describe().split(' ').map(quoted_in_selector).collect();
            parts.push(format!("({})", tokens.join(" ")));
        }
        parts.join(" ")
    }

    /// The flags in Redis's order (`on`/`off`, `nopass`, `skip-sanitize-payload` /
    /// `sanitize-payload`).
    pub(crate) fn flag_names(&self) -> Vec<&'static str> {
        let mut flags = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            flags.push("nopass");
        }
        match self.sanitize_payload {
            Some(false) => flags.push("skip-sanitize-payload"),
            Some(true) => flags.push("sanitize-payload"),
            None => {}
        }
        flags
    }

    /// Whether `password` is one of the user's (constant time per stored hash), or the user
    /// is `nopass`. A disabled user never matches.
    pub fn accepts(&self, password: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.nopass {
            return true;
        }
        let hash = hash_password(password);
        // Compare against every hash without stopping early.
        self.password_hashes.iter().fold(false, |found, stored| {
            constant_time_eq(stored.as_bytes(), hash.as_bytes()) | found
        })
    }
}

/// SHA-256 of a password as 64 lower-case hex digits (`ACLHashPassword`).
pub fn hash_password(password: &[u8]) -> String {
    crate::util::hex::hex_sha256(password)
}

fn valid_hash(hash: &[u8]) -> Result<String, RuleError> {
    if hash.len() == 64 && hash.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(String::from_utf8_lossy(hash).into_owned())
    } else {
        Err(RuleError::BadHash)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// `ACLStringHasSpaces`: C `isspace` or NUL.
pub(crate) fn has_spaces(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r' | 0))
}

/// `ACLMergeSelectorArguments`: a selector split over several tokens (`(~a`, `+get)`)
/// becomes one token. `Err(index)` names the token opening an unmatched parenthesis.
pub fn merge_selector_tokens(tokens: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, usize> {
    let mut merged = Vec::with_capacity(tokens.len());
    let mut open: Option<(usize, Vec<u8>)> = None;
    for (index, token) in tokens.iter().enumerate() {
        if let Some((_, selector)) = &mut open {
            selector.push(b' ');
            selector.extend_from_slice(token);
            if token.last() == Some(&b')') {
                merged.push(open.take().expect("open").1);
            }
        } else if token.first() == Some(&b'(') && token.last() != Some(&b')') {
            open = Some((index, token.clone()));
        } else {
            merged.push(token.clone());
        }
    }
    match open {
        Some((index, _)) => Err(index),
        None => Ok(merged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandTable;

    #[test]
    fn passwords_added_removed_and_compared_whole() {
        let ids = CommandIds::new(&CommandTable::embedded());
        let mut user = User::new(b"u", &ids);
        for op in ["on", ">a", ">b", "<a"] {
            user.apply(&ids, op.as_bytes()).unwrap();
        }
        assert!(user.accepts(b"b") && !user.accepts(b"a"));
        let hash_of_b = hash_password(b"b");
        assert_eq!(user.password_hashes, std::slice::from_ref(&hash_of_b));
        user.apply(&ids, format!("!{hash_of_b}").as_bytes()).unwrap();
        assert!(user.password_hashes.is_empty());
        assert_eq!(user.apply(&ids, b"<b"), Err(RuleError::NoSuchPassword));
        for bad in ["#abc", &format!("#{}", "g".repeat(64)), &format!("#{}", "A".repeat(64))] {
            assert_eq!(user.apply(&ids, bad.as_bytes()), Err(RuleError::BadHash), "{bad}");
        }
        assert!(constant_time_eq(b"ab", b"ab"));
        assert!(!constant_time_eq(b"ab", b"ba"), "differences that would cancel out");
        assert!(!constant_time_eq(b"ab", b"abc"));
    }

    #[test]
    fn a_root_rule_ending_in_a_parenthesis_is_a_pattern() {
        let ids = CommandIds::new(&CommandTable::embedded());
        let mut user = User::new(b"u", &ids);
        user.apply(&ids, b"~k)").unwrap();
        assert_eq!(user.root().keys[0].pattern, b"k)");
        assert_eq!(user.selectors.len(), 1);
    }
}
