//! Proxy-side authentication (`auth.mode = "proxy"`): `AUTH` and `HELLO ... AUTH` checked
//! against the users file, with Redis 7's exact replies and errors. Pure: the connection
//! carries out the outcome.

use bytes::Bytes;

use crate::acl::Policy;
use crate::resp::args::string2ll;
use crate::resp::encode::{self, ErrorReply};
use crate::resp::request::{Request, RequestForm};

/// What an AUTH or HELLO comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answer `reply`; nothing changes. `failure`: a refused login, for the security event
    /// and the `ACL LOG`.
    Refused {
        /// Redis's reply.
        reply: Bytes,
        /// The login that failed, if credentials were checked.
        failure: Option<Failure>,
    },
    /// The credentials are right: the session is now `user`. Then answer `+OK` (AUTH) or
    /// send Redis the HELLO without its AUTH option (`forward`), whose reply the client gets.
    LoggedIn {
        /// The user logged in.
        user: Bytes,
        /// HELLO's protocol and SETNAME options, for Redis.
        forward: Option<Request>,
    },
    /// A HELLO without AUTH from a session that may run commands: Redis answers it as sent.
    Forward,
}

/// A login the proxy refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The user tried.
    pub username: Bytes,
    /// `auth` or `hello`.
    pub command: &'static str,
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Decides an `AUTH` or `HELLO` (`args`, arity already checked) for a session that is
/// `logged_in` or not.
pub fn authenticate(policy: &Policy, args: &[Bytes], logged_in: bool) -> Outcome {
    let refused = |text: &str| Outcome::Refused { reply: encode::error(text), failure: None };
    let is_auth = args[0].eq_ignore_ascii_case(b"auth");
    let (user, password, forward) = if is_auth {
        match args.len() {
            2 if policy.users().get(b"default").is_some_and(|u| u.nopass) => {
                return refused("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
            }
            2 => (Bytes::from_static(b"default"), &args[1], None),
            3 => (args[1].clone(), &args[2], None),
            _ => return refused("ERR syntax error"),
        }
    } else {
        let with_auth = args.iter().skip(2).any(|arg| arg.eq_ignore_ascii_case(b"auth"));
        if !with_auth && (logged_in || policy.default_is_open()) {
            // No credentials: Redis answers it (errors included) as it would the client.
            return Outcome::Forward;
        }
        match parse_hello(args) {
            Err(text) => return refused(&text.0),
            Ok(Hello { credentials: None, .. }) => {
                if logged_in || policy.default_is_open() {
                    return Outcome::Forward;
                }
                return refused(policy.hello_noauth_text());
            }
            Ok(Hello { credentials: Some((user, password)), forward }) => {
                (user.clone(), password, Some(forward))
            }
        }
    };
    if policy.users().get(&user).is_some_and(|u| u.accepts(password)) {
        return Outcome::LoggedIn { user, forward };
    }
    let command = if is_auth { "auth" } else { "hello" };
    Outcome::Refused {
        reply: encode::error(WRONGPASS),
        failure: Some(Failure { username: user, command }),
    }
}

/// A `HELLO` read as Redis 7.0 reads it.
struct Hello<'a> {
    /// The last AUTH option's user and password.
    credentials: Option<(&'a Bytes, &'a Bytes)>,
    /// The command without its AUTH options.
    forward: Request,
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]` as Redis 7.0 parses it. `Err` is
/// Redis's error.
fn parse_hello(args: &[Bytes]) -> Result<Hello<'_>, ErrorReply> {
    let mut forward: Vec<Bytes> = vec![args[0].clone()];
    if let Some(version) = args.get(1) {
        match string2ll(version) {
            None => return Err("ERR Protocol version is not an integer or out of range".into()),
            Some(v) if !(2..=3).contains(&v) => {
                return Err("NOPROTO unsupported protocol version".into())
            }
            Some(_) => forward.push(version.clone()),
        }
    }
    let mut credentials = None;
    let mut at = 2;
    while at < args.len() {
        let more = args.len() - 1 - at;
        let option = &args[at];
        if option.eq_ignore_ascii_case(b"auth") && more >= 2 {
            credentials = Some((&args[at + 1], &args[at + 2]));
            at += 3;
        } else if option.eq_ignore_ascii_case(b"setname") && more >= 1 {
            forward.push(option.clone());
            forward.push(args[at + 1].clone());
            at += 2;
        } else {
            return Err(ErrorReply(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(option)
            )));
        }
    }
    let words: Vec<&[u8]> = forward.iter().map(|arg| &arg[..]).collect();
    let raw = encode::command(&words);
    Ok(Hello { credentials, forward: Request { raw, args: forward, form: RequestForm::Multibulk } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandTable;
    use crate::config::AclMode;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect()
    }

    #[test]
    fn logins_and_redis_errors() {
        let policy = Policy::compile(
            b"user default off\nuser alice on >secret ~* +@all",
            &CommandTable::embedded(),
            AclMode::Enforce,
            &[],
        )
        .unwrap();
        let run = |line: &str| authenticate(&policy, &args(line), false);
        assert_eq!(
            run("AUTH alice secret"),
            Outcome::LoggedIn { user: Bytes::from_static(b"alice"), forward: None }
        );
        let Outcome::Refused { reply, failure } = run("AUTH alice wrong") else { panic!() };
        assert_eq!(
            &reply[..],
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        );
        assert_eq!(failure.unwrap().username, Bytes::from_static(b"alice"));
        let Outcome::LoggedIn { forward: Some(hello), .. } =
            run("HELLO 3 AUTH alice secret SETNAME app")
        else {
            panic!("logged in")
        };
        assert_eq!(
            &hello.raw[..],
            b"*4\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$7\r\nSETNAME\r\n$3\r\napp\r\n"
        );
        assert!(matches!(run("HELLO 3"), Outcome::Refused { failure: None, .. }));
        assert!(
            matches!(run("HELLO 4"), Outcome::Refused { reply, .. } if reply.starts_with(b"-NOPROTO"))
        );
        assert!(
            matches!(run("AUTH a b c"), Outcome::Refused { reply, .. } if &reply[..] == b"-ERR syntax error\r\n")
        );
        assert_eq!(authenticate(&policy, &args("HELLO 2"), true), Outcome::Forward);
    }
}
