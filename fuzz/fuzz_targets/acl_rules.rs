//! Fuzz target: the users-file parser and `ACL SETUSER` rules. Whatever parses must describe
//! itself as a file (`ACL SAVE`, `ACL LIST`) that parses back to the same users, and
//! describing that gives the same text; an error never shows a password.
//!
//! Byte 0 picks the mode: even, the rest is a users file; odd, the rest is one `ACL SETUSER
//! alice` whose arguments are separated by NUL bytes (an argument may hold spaces there).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use redis_audit_proxy::acl::command_ids::CommandIds;
use redis_audit_proxy::acl::user::{merge_selector_tokens, Selector, User};
use redis_audit_proxy::acl::users::Users;
use redis_audit_proxy::command::CommandTable;

fn ids() -> &'static CommandIds {
    static IDS: OnceLock<CommandIds> = OnceLock::new();
    IDS.get_or_init(|| CommandIds::new(&CommandTable::embedded()))
}

/// A selector's allowed first arguments as sets: lower-cased, and sorted, since their order
/// is not kept (as in Redis: `+select|a +select|b +select|a` stores `a`, `b` and is described,
/// after the rule history, as `+select|b +select|a`; what is allowed is the same).
fn lower_first_args(selector: &Selector) -> Vec<(u16, Vec<Vec<u8>>)> {
    let lower = |args: &Vec<Vec<u8>>| {
        let mut args: Vec<Vec<u8>> = args.iter().map(|a| a.to_ascii_lowercase()).collect();
        args.sort();
        args
    };
    let mut all: Vec<_> = selector.first_args.iter().map(|(id, args)| (*id, lower(args))).collect();
    all.sort();
    all
}

/// The same users: names, flags, passwords and every selector's permissions.
fn assert_same(one: &Users, two: &Users, text: &str) {
    assert_eq!(one.len(), two.len(), "{text}");
    for (x, y) in one.iter().zip(two.iter()) {
        assert_eq!(x.name, y.name, "{text}");
        assert_eq!(
            (x.enabled, x.nopass, &x.password_hashes),
            (y.enabled, y.nopass, &y.password_hashes),
            "{text}"
        );
        assert_eq!(x.selectors.len(), y.selectors.len(), "{text}");
        for (a, b) in x.selectors.iter().zip(&y.selectors) {
            assert_eq!(
                (&a.allowed, &a.keys, &a.channels),
                (&b.allowed, &b.keys, &b.channels),
                "{text}"
            );
            // First arguments are compared without case, as the check compares them (Redis's
            // `strcasecmp`), and described lower-cased: only their lower case must survive.
            assert_eq!(lower_first_args(a), lower_first_args(b), "{text}");
            assert_eq!(
                (a.all_keys, a.all_channels, a.future_commands),
                (b.all_keys, b.all_channels, b.future_commands),
                "{text}"
            );
        }
    }
}

/// Parses the description back; it must be the same users, described the same way.
fn round_trip(users: &Users) {
    let text = users.to_file_text();
    let again = Users::parse(text.as_bytes(), ids())
        .unwrap_or_else(|error| panic!("the description does not parse: {error}\n{text}"));
    assert_same(users, &again, &text);
    assert_eq!(again.to_file_text(), text);
}

/// Descriptions are text: a name or pattern that is not UTF-8 cannot survive them (see the
/// report in docs/reliability.md), so the round trip is checked on UTF-8 input only.
fn is_utf8(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok()
}

/// A users file line trimmed of " \t\r\n", as the parser trims it: in "\r user >x..." the
/// parser's name is ">x...", which a message may show.
fn trim(line: &[u8]) -> &[u8] {
    let blank = |b: &u8| b" \t\r\n".contains(b);
    let start = line.iter().position(|b| !blank(b)).unwrap_or(line.len());
    let end = line.iter().rposition(|b| !blank(b)).map_or(start, |end| end + 1);
    &line[start..end]
}

/// Password rules' passwords in `input` (words after `user <name>`, split as the parser
/// splits them) that seeing in a message cannot be a coincidence: long enough, and found
/// nowhere else in the input.
fn passwords(input: &[u8]) -> Vec<&[u8]> {
    let count = |needle: &[u8]| input.windows(needle.len()).filter(|w| *w == needle).count();
    input
        .split(|&b| b == b'\n')
        .flat_map(|line| trim(line).split(|&b| b == b' ').skip(2))
        .filter_map(|w| match w.first() {
            Some(b'>' | b'<') => Some(&w[1..]),
            _ => None,
        })
        // A message quotes the words it shows ('<word>'): a password that is a shown word
        // with a quote around it is there by coincidence too.
        .filter(|p| {
            let unquoted = p.strip_prefix(b"'").unwrap_or(p);
            let unquoted = unquoted.strip_suffix(b"'").unwrap_or(unquoted);
            p.len() >= 12 && count(p) == 1 && count(unquoted) == 1
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    if mode % 2 == 0 {
        match Users::parse(input, ids()) {
            Ok(users) if is_utf8(input) => round_trip(&users),
            Ok(_) => {}
            Err(error) => {
                let mut message = error.to_string();
                assert!(error.line >= 1 && error.line <= input.split(|&b| b == b'\n').count());
                // A message may show a user's name (as Redis does), and a password may happen
                // to be the name with the quote the message puts before it: names are taken
                // out first, each replaced by a line break, which no password holds (taken
                // out with nothing in their place, what stood on either side of a name could
                // join into a password's bytes).
                for line in input.split(|&b| b == b'\n') {
                    if let Some(name) = trim(line).split(|&b| b == b' ').nth(1) {
                        let name = String::from_utf8_lossy(name);
                        if !name.is_empty() {
                            message = message.replace(&*name, "\n");
                        }
                    }
                }
                // Compared as text: a message shows bytes that are not UTF-8 as U+FFFD, which
                // any other such bytes (a user name's) would match.
                for password in passwords(input) {
                    if let Ok(password) = std::str::from_utf8(password) {
                        assert!(!message.contains(password), "{message}");
                    }
                }
            }
        }
    } else {
        let args: Vec<Vec<u8>> = input.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
        let Ok(rules) = merge_selector_tokens(&args) else { return };
        let mut user = User::new(b"alice", ids());
        for rule in &rules {
            if user.apply(ids(), rule).is_err() {
                // Redis applies none of a refused ACL SETUSER; nothing to describe.
                return;
            }
        }
        if !is_utf8(input) {
            return;
        }
        let mut users = Users::parse(b"", ids()).unwrap();
        users.insert(user);
        round_trip(&users);
    }
});
