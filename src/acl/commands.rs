//! The ACL subcommands about users that the proxy answers from its users file in
//! `auth.mode = "proxy"` (WHOAMI, USERS, LIST, GETUSER, DRYRUN, SETUSER, DELUSER, LOAD, SAVE),
//! with Redis 7.2's replies. Pure: changes to the users come back as an [`Answer`] for the
//! caller to carry out.

use bytes::Bytes;

use crate::acl::user::{Selector, User};
use crate::acl::Policy;
use crate::command::CommandTable;
use crate::resp::encode::{self, bulk, header, map_header};

/// What an ACL subcommand comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Reply with these bytes; nothing changes.
    Reply(Bytes),
    /// Replace the users with the users file `text` (`ACL SETUSER`, `ACL DELUSER`), then
    /// reply `then`.
    ChangeUsers {
        /// The new users file.
        text: String,
        /// `acl setuser` or `acl deluser`, for the `policy_change` event.
        command: &'static str,
        /// The reply once the change is in force.
        then: Bytes,
    },
    /// Read the users file again (`ACL LOAD`).
    Load,
    /// Write the users in force to the users file (`ACL SAVE`).
    Save,
}

/// Answers `args` (whose full name is `name`) for a client logged in as `user`; `None` for a
/// subcommand the proxy leaves to Redis.
pub fn answer(
    policy: &Policy,
    table: &CommandTable,
    user: &[u8],
    resp3: bool,
    name: &str,
    args: &[Bytes],
) -> Option<Answer> {
    let reply = |bytes: Vec<u8>| Some(Answer::Reply(Bytes::from(bytes)));
    let error = |text: &str| Some(Answer::Reply(encode::error(text)));
    // Arity was checked by the gate; `get` keeps a wrong table from panicking here.
    let rest = args.get(2..).unwrap_or(&[]);
    match name {
        "acl|whoami" => {
            let mut out = Vec::new();
            bulk(&mut out, user);
            reply(out)
        }
        "acl|users" => {
            let mut out = Vec::new();
            header(&mut out, b'*', policy.users().len());
            for user in policy.users().iter() {
                bulk(&mut out, &user.name);
            }
            reply(out)
        }
        "acl|list" => {
            let mut out = Vec::new();
            header(&mut out, b'*', policy.users().len());
            for user in policy.users().iter() {
                let mut line = b"user ".to_vec();
                line.extend_from_slice(&user.name);
                line.push(b' ');
                line.extend_from_slice(user.describe().as_bytes());
                bulk(&mut out, &line);
            }
            reply(out)
        }
        "acl|getuser" => match rest.first().and_then(|name| policy.users().get(name)) {
            Some(user) => reply(getuser_reply(user, resp3)),
            None if resp3 => reply(b"_\r\n".to_vec()),
            None => reply(b"$-1\r\n".to_vec()),
        },
        "acl|dryrun" => match policy.dry_run(table, rest) {
            Ok(None) => reply(encode::OK.to_vec()),
            Ok(Some(text)) => {
                let mut out = Vec::new();
                bulk(&mut out, text.as_bytes());
                reply(out)
            }
            Err(text) => error(&text.0),
        },
        "acl|setuser" => match policy.setuser(args) {
            Ok(text) => Some(Answer::ChangeUsers {
                text,
                command: "acl setuser",
                then: Bytes::from_static(encode::OK),
            }),
            Err(text) => error(&text.0),
        },
        "acl|deluser" => match policy.deluser(rest) {
            Ok((_, 0)) => reply(b":0\r\n".to_vec()),
            Ok((text, removed)) => {
                let mut then = Vec::new();
                encode::integer(&mut then, removed as i64);
                Some(Answer::ChangeUsers { text, command: "acl deluser", then: Bytes::from(then) })
            }
            Err(text) => error(&text.0),
        },
        "acl|load" => Some(Answer::Load),
        "acl|save" => Some(Answer::Save),
        _ => None,
    }
}

/// Redis's reply when `ACL SAVE` fails.
pub(crate) const SAVE_FAILED: &str =
    "ERR There was an error trying to save the ACLs. Please check the server logs for more information";

/// `ACL GETUSER` for an existing user, as Redis 7.2 writes it: flags, passwords (hashes),
/// the root selector's commands, keys and channels, then the other selectors.
fn getuser_reply(user: &User, resp3: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let selector = |out: &mut Vec<u8>, selector: &Selector| {
        bulk(out, b"commands");
        bulk(out, selector.describe_commands().as_bytes());
        bulk(out, b"keys");
        bulk(out, selector.describe_keys().as_bytes());
        bulk(out, b"channels");
        bulk(out, selector.describe_channels().as_bytes());
    };
    map_header(&mut out, 6, resp3);
    bulk(&mut out, b"flags");
    let flags = user.flag_names();
    header(&mut out, if resp3 { b'~' } else { b'*' }, flags.len());
    for flag in flags {
        bulk(&mut out, flag.as_bytes());
    }
    bulk(&mut out, b"passwords");
    header(&mut out, b'*', user.password_hashes.len());
    for hash in &user.password_hashes {
        bulk(&mut out, hash.as_bytes());
    }
    selector(&mut out, user.root());
    bulk(&mut out, b"selectors");
    header(&mut out, b'*', user.selectors.len() - 1);
    for other in &user.selectors[1..] {
        map_header(&mut out, 3, resp3);
        selector(&mut out, other);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::config::AclMode;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect()
    }

    #[test]
    fn answers_and_changes() {
        let table = CommandTable::embedded();
        let policy = Policy::compile(
            b"user alice on >pw ~a* +get (~b* +set)",
            &table,
            AclMode::Enforce,
            &[],
        )
        .unwrap();
        let run = |line: &str| {
            let args = args(line);
            let name = table.resolve(&args).unwrap().name.clone();
            answer(&policy, &table, b"alice", false, &name, &args)
        };
        assert_eq!(run("ACL WHOAMI"), Some(Answer::Reply(Bytes::from_static(b"$5\r\nalice\r\n"))));
        assert_eq!(
            run("ACL USERS"),
            Some(Answer::Reply(Bytes::from_static(b"*2\r\n$5\r\nalice\r\n$7\r\ndefault\r\n")))
        );
        assert_eq!(run("ACL GETUSER nobody"), Some(Answer::Reply(Bytes::from_static(b"$-1\r\n"))));
        let Some(Answer::Reply(getuser)) = run("ACL GETUSER alice") else { panic!("a reply") };
        assert!(getuser.starts_with(b"*12\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n"));
        assert!(memchr::memmem::find(&getuser, b"*1\r\n*6\r\n$8\r\ncommands").is_some());
        let policy = Policy::compile(
            b"user bob on nopass ~a* %R~b &c* +get (~s* &* +set)",
            &table,
            AclMode::Enforce,
            &[],
        )
        .unwrap();
        let getuser =
            answer(&policy, &table, b"bob", false, "acl|getuser", &args("ACL GETUSER bob"));
        let expected = "*12\r\n$5\r\nflags\r\n*2\r\n$2\r\non\r\n$6\r\nnopass\r\n\
            $9\r\npasswords\r\n*0\r\n$8\r\ncommands\r\n$10\r\n-@all +get\r\n\
            $4\r\nkeys\r\n$8\r\n~a* %R~b\r\n$8\r\nchannels\r\n$3\r\n&c*\r\n\
            $9\r\nselectors\r\n*1\r\n*6\r\n$8\r\ncommands\r\n$10\r\n-@all +set\r\n\
            $4\r\nkeys\r\n$3\r\n~s*\r\n$8\r\nchannels\r\n$2\r\n&*\r\n";
        assert_eq!(getuser, Some(Answer::Reply(Bytes::from(expected))));
        assert_eq!(run("ACL DELUSER nobody"), Some(Answer::Reply(Bytes::from_static(b":0\r\n"))));
        let Some(Answer::ChangeUsers { text, then, .. }) = run("ACL SETUSER bob on") else {
            panic!("a change")
        };
        assert!(text.contains("user bob on"), "{text}");
        assert_eq!(&then[..], b"+OK\r\n");
        assert_eq!(
            run("ACL LIST"),
            // As Redis 7.0.15 lists the same users.
            Some(Answer::Reply(Bytes::from_static(
                b"*2\r\n$139\r\nuser alice on #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4 ~a* resetchannels -@all +get (~b* resetchannels -@all +set)\r\n$34\r\nuser default on nopass ~* &* +@all\r\n"
            )))
        );
        assert_eq!(
            run("ACL DRYRUN alice GET a1"),
            Some(Answer::Reply(Bytes::from_static(b"+OK\r\n")))
        );
        let Some(Answer::Reply(denied)) = run("ACL DRYRUN alice GET b1") else { panic!("a reply") };
        assert!(denied.starts_with(b"$") && memchr::memmem::find(&denied, b"b1").is_some());
        let Some(Answer::Reply(error)) = run("ACL DRYRUN nobody GET a") else { panic!("a reply") };
        assert_eq!(&error[..], b"-ERR User 'nobody' not found\r\n");
        let resp3 = answer(&policy, &table, b"alice", true, "acl|getuser", &args("ACL GETUSER x"));
        assert_eq!(resp3, Some(Answer::Reply(Bytes::from_static(b"_\r\n"))), "RESP3 null");
        assert_eq!(run("ACL SAVE"), Some(Answer::Save));
        assert_eq!(run("ACL LOAD"), Some(Answer::Load));
        assert_eq!(run("ACL CAT"), None, "left to Redis");
    }
}
